//! Helpers of the sync and problems tests (`mod support;`); their registry, database and
//! syncer are testkit's `App`.

#![allow(dead_code)]

use std::collections::BTreeMap;

use regindex::model::{Digest, RepositoryName, Tag};

pub fn repo(name: &str) -> RepositoryName {
    RepositoryName::parse(name).unwrap()
}

pub fn tags(pairs: &[(&str, &str)]) -> BTreeMap<Tag, Digest> {
    pairs
        .iter()
        .map(|(t, d)| (Tag::parse(t).unwrap(), Digest::parse(d).unwrap()))
        .collect()
}
