//! The query of `/index/static` and `/index/dynamic`, parsed once from the raw query string.
//!
//! Grammar (PROTOCOL.md): `repository=R`, `tag=T`, `os=O`, `architecture=A`, `label:K=V`,
//! `label:K:exists=1`, `annotation:K=V`, `annotation:K:exists=1`, and the regindex
//! extension `tag:matches=GLOB`, `label:K:matches=GLOB`, `annotation:K:matches=GLOB`
//! (`*` and `?` wildcards, see [`Glob`]). Names and values are percent-decoded, `+` is a
//! space. The same parameter name repeated means OR, different names mean AND; the order
//! of parameters never matters.

use std::collections::{BTreeMap, BTreeSet};

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::glob::Glob;
use crate::model::{RepositoryName, StringMap, Tag};

/// More parameters than any real client sends; bounds the work one request can cause.
pub const MAX_PARAMETERS: usize = 64;
/// Longest accepted value or label/annotation key, in bytes.
pub const MAX_VALUE_LEN: usize = 1024;

/// Why a query string was refused. Every variant names the offending parameter as the
/// client wrote it (decoded), so the API can say exactly what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("unknown query parameter `{parameter}`")]
    UnknownParameter { parameter: String },
    #[error("query parameter `{parameter}` has an invalid value {value:?}: {reason}")]
    InvalidValue {
        parameter: String,
        value: String,
        reason: String,
    },
    #[error("query parameter `{parameter}` has an empty key")]
    EmptyKey { parameter: String },
    #[error("query parameter `{parameter}` is not valid percent-encoded UTF-8")]
    Encoding { parameter: String },
    #[error("the query has more than {max} parameters")]
    TooManyParameters { max: usize },
}

impl QueryError {
    /// The parameter at fault, when one is.
    pub fn parameter(&self) -> Option<&str> {
        match self {
            QueryError::UnknownParameter { parameter }
            | QueryError::InvalidValue { parameter, .. }
            | QueryError::EmptyKey { parameter }
            | QueryError::Encoding { parameter } => Some(parameter),
            QueryError::TooManyParameters { .. } => None,
        }
    }
}

/// Conditions on one label or annotation key. Each non-empty part is one condition;
/// all of them must hold (they come from different parameter names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFilter {
    /// `K=V` (repeated: any of the values).
    pub equals: BTreeSet<String>,
    /// `K:exists=1`.
    pub exists: bool,
    /// `K:matches=GLOB` (repeated: any of the patterns).
    pub matches: BTreeSet<Glob>,
}

impl KeyFilter {
    fn accepts(&self, value: Option<&str>) -> bool {
        if self.exists && value.is_none() {
            return false;
        }
        if !self.equals.is_empty() && !value.is_some_and(|v| self.equals.contains(v)) {
            return false;
        }
        if !self.matches.is_empty()
            && !value.is_some_and(|v| self.matches.iter().any(|g| g.matches(v)))
        {
            return false;
        }
        true
    }
}

/// A parsed index query. Empty sets mean "no condition"; `Query::default()` matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub repositories: BTreeSet<RepositoryName>,
    /// The image or list carries one of these tags.
    pub tags: BTreeSet<Tag>,
    /// The image or list carries a tag matching one of these patterns.
    pub tag_patterns: BTreeSet<Glob>,
    pub os: BTreeSet<String>,
    pub architectures: BTreeSet<String>,
    pub labels: BTreeMap<String, KeyFilter>,
    pub annotations: BTreeMap<String, KeyFilter>,
}

/// Characters left as they are in the canonical form; everything else is percent-encoded,
/// so the canonical string is unambiguous (no raw `&`, `=`, `+` or `%` inside a part).
const CANONICAL_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b':');

impl Query {
    /// Parses a raw query string (what follows `?`, still percent-encoded; may be empty).
    pub fn parse(raw: &str) -> Result<Self, QueryError> {
        let mut query = Query::default();
        let mut count = 0;
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            count += 1;
            if count > MAX_PARAMETERS {
                return Err(QueryError::TooManyParameters {
                    max: MAX_PARAMETERS,
                });
            }
            let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(raw_name).ok_or_else(|| QueryError::Encoding {
                parameter: raw_name.chars().take(100).collect(),
            })?;
            let value = decode(raw_value).ok_or_else(|| QueryError::Encoding {
                parameter: name.clone(),
            })?;
            // PostgreSQL text cannot hold NUL: refuse it here rather than fail in SQL.
            if name.contains('\0') {
                return Err(QueryError::Encoding {
                    parameter: name.replace('\0', "\\0"),
                });
            }
            if value.contains('\0') {
                return Err(QueryError::InvalidValue {
                    parameter: name,
                    value: value.replace('\0', "\\0"),
                    reason: "must not contain NUL characters".into(),
                });
            }
            query.add(&name, value)?;
        }
        Ok(query)
    }

    fn add(&mut self, name: &str, value: String) -> Result<(), QueryError> {
        let bad = |reason: &str| QueryError::InvalidValue {
            parameter: name.to_owned(),
            value: value.chars().take(100).collect(),
            reason: reason.to_owned(),
        };
        if value.len() > MAX_VALUE_LEN {
            return Err(bad("too long"));
        }
        match name {
            "repository" => {
                let repository = RepositoryName::parse(&value).map_err(|e| bad(e.reason))?;
                self.repositories.insert(repository);
            }
            "tag" => {
                let tag = Tag::parse(&value).map_err(|e| bad(e.reason))?;
                self.tags.insert(tag);
            }
            "tag:matches" => {
                self.tag_patterns
                    .insert(non_empty_glob(&value).map_err(bad)?);
            }
            "os" => {
                self.os.insert(non_empty(value.clone()).map_err(bad)?);
            }
            "architecture" => {
                self.architectures
                    .insert(non_empty(value.clone()).map_err(bad)?);
            }
            _ => {
                let (map, rest) = if let Some(rest) = name.strip_prefix("label:") {
                    (&mut self.labels, rest)
                } else if let Some(rest) = name.strip_prefix("annotation:") {
                    (&mut self.annotations, rest)
                } else {
                    return Err(QueryError::UnknownParameter {
                        parameter: name.chars().take(100).collect(),
                    });
                };
                let empty_key = || QueryError::EmptyKey {
                    parameter: name.to_owned(),
                };
                if let Some(key) = rest.strip_suffix(":exists") {
                    if key.is_empty() {
                        return Err(empty_key());
                    }
                    if value != "1" && value != "true" {
                        return Err(bad("must be 1 or true"));
                    }
                    map.entry(key.to_owned()).or_default().exists = true;
                } else if let Some(key) = rest.strip_suffix(":matches") {
                    if key.is_empty() {
                        return Err(empty_key());
                    }
                    let glob = non_empty_glob(&value).map_err(bad)?;
                    map.entry(key.to_owned()).or_default().matches.insert(glob);
                } else {
                    if rest.is_empty() {
                        return Err(empty_key());
                    }
                    // An empty value is legal: a label can be set to "".
                    map.entry(rest.to_owned()).or_default().equals.insert(value);
                }
            }
        }
        Ok(())
    }

    /// An order-independent string form: equal queries give equal strings, whatever the
    /// order, repetition or encoding of their parameters. It is itself a valid query
    /// string that parses back to the same query. Used as the response cache key.
    pub fn canonical(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut push = |name: &str, value: &str| {
            parts.push(format!(
                "{}={}",
                utf8_percent_encode(name, CANONICAL_ENCODE),
                utf8_percent_encode(value, CANONICAL_ENCODE)
            ));
        };
        for r in &self.repositories {
            push("repository", r.as_str());
        }
        for t in &self.tags {
            push("tag", t.as_str());
        }
        for g in &self.tag_patterns {
            push("tag:matches", g.as_str());
        }
        for o in &self.os {
            push("os", o);
        }
        for a in &self.architectures {
            push("architecture", a);
        }
        for (prefix, map) in [("label", &self.labels), ("annotation", &self.annotations)] {
            for (key, filter) in map {
                for v in &filter.equals {
                    push(&format!("{prefix}:{key}"), v);
                }
                if filter.exists {
                    push(&format!("{prefix}:{key}:exists"), "1");
                }
                for g in &filter.matches {
                    push(&format!("{prefix}:{key}:matches"), g.as_str());
                }
            }
        }
        parts.join("&")
    }

    pub fn matches_repository(&self, repository: &RepositoryName) -> bool {
        self.repositories.is_empty() || self.repositories.contains(repository)
    }

    /// Whether an image or list carrying exactly `tags` is selected by the tag conditions.
    pub fn matches_tags<'a>(&self, tags: impl IntoIterator<Item = &'a Tag> + Clone) -> bool {
        let exact = self.tags.is_empty() || tags.clone().into_iter().any(|t| self.tags.contains(t));
        let pattern = self.tag_patterns.is_empty()
            || tags
                .into_iter()
                .any(|t| self.tag_patterns.iter().any(|g| g.matches(t.as_str())));
        exact && pattern
    }

    /// Whether one image (tagged directly or a list entry) passes the os, architecture,
    /// label and annotation conditions.
    pub fn matches_image(
        &self,
        os: &str,
        architecture: &str,
        labels: &StringMap,
        annotations: &StringMap,
    ) -> bool {
        (self.os.is_empty() || self.os.contains(os))
            && (self.architectures.is_empty() || self.architectures.contains(architecture))
            && self
                .labels
                .iter()
                .all(|(k, f)| f.accepts(labels.get(k).map(String::as_str)))
            && self
                .annotations
                .iter()
                .all(|(k, f)| f.accepts(annotations.get(k).map(String::as_str)))
    }
}

/// Percent-decodes one name or value (`+` is a space); `None` when not UTF-8.
fn decode(raw: &str) -> Option<String> {
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

fn non_empty(value: String) -> Result<String, &'static str> {
    if value.is_empty() {
        Err("must not be empty")
    } else {
        Ok(value)
    }
}

fn non_empty_glob(value: &str) -> Result<Glob, &'static str> {
    if value.is_empty() {
        Err("must not be empty")
    } else {
        Ok(Glob::new(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> StringMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn flatpak_client_query() {
        let q = Query::parse(
            "label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest",
        )
        .unwrap();
        assert!(q.labels["org.flatpak.ref"].exists);
        assert_eq!(q.architectures, BTreeSet::from(["amd64".to_string()]));
        assert_eq!(q.os, BTreeSet::from(["linux".to_string()]));
        assert_eq!(q.tags, BTreeSet::from([Tag::parse("latest").unwrap()]));
        assert!(q.repositories.is_empty());
    }

    #[test]
    fn empty_query_matches_everything() {
        assert_eq!(Query::parse("").unwrap(), Query::default());
        assert_eq!(Query::parse("&&").unwrap(), Query::default());
        let q = Query::default();
        assert!(q.matches_image("", "", &StringMap::new(), &StringMap::new()));
        assert!(q.matches_tags(&[Tag::parse("x").unwrap()]));
    }

    #[test]
    fn order_repetition_and_encoding_do_not_matter() {
        let a = Query::parse("os=linux&tag=latest&architecture=amd64&architecture=arm64&label:a=b")
            .unwrap();
        let b = Query::parse(
            "label%3Aa=b&architecture=arm64&tag=latest&architecture=amd64&os=linux&os=linux",
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.canonical(), b.canonical());
        assert_eq!(
            a.canonical(),
            "tag=latest&os=linux&architecture=amd64&architecture=arm64&label:a=b"
        );
    }

    #[test]
    fn canonical_round_trips_and_is_unambiguous() {
        let q = Query::parse(
            "label:k%26x=a%3Db&annotation:n=hello+world&annotation:n:exists=true&tag:matches=1.*&label:k:matches=%25%2B",
        )
        .unwrap();
        assert_eq!(
            q.annotations["n"].equals,
            BTreeSet::from(["hello world".to_string()])
        );
        assert_eq!(q.labels["k&x"].equals, BTreeSet::from(["a=b".to_string()]));
        let again = Query::parse(&q.canonical()).unwrap();
        assert_eq!(q, again);
        assert_eq!(q.canonical(), again.canonical());
        // Different queries never share a canonical form through escaping tricks.
        let x = Query::parse("label:a=b%26label:c=d").unwrap();
        let y = Query::parse("label:a=b&label:c=d").unwrap();
        assert_ne!(x.canonical(), y.canonical());
    }

    #[test]
    fn errors_name_the_parameter() {
        let cases = [
            ("foo=bar", "foo"),
            ("label:=x", "label:"),
            ("label::exists=1", "label::exists"),
            ("annotation::matches=x", "annotation::matches"),
            ("label:a:exists=0", "label:a:exists"),
            ("label:a:exists=yes", "label:a:exists"),
            ("label:a:exists", "label:a:exists"),
            ("repository=Not/Valid", "repository"),
            ("repository=", "repository"),
            ("tag=.bad", "tag"),
            ("tag=", "tag"),
            ("os=", "os"),
            ("architecture=", "architecture"),
            ("tag:matches=", "tag:matches"),
            ("label:a:matches=", "label:a:matches"),
            ("os=%FF", "os"),
            ("Tag=latest", "Tag"),
            ("label:org.flatpak.ref=a%00b", "label:org.flatpak.ref"),
            ("os=linux%00", "os"),
        ];
        for (raw, parameter) in cases {
            let err = Query::parse(raw).unwrap_err();
            assert_eq!(err.parameter(), Some(parameter), "{raw}: {err}");
            assert!(err.to_string().contains(parameter), "{raw}: {err}");
        }
        let many = vec!["os=linux"; MAX_PARAMETERS + 1].join("&");
        assert!(matches!(
            Query::parse(&many),
            Err(QueryError::TooManyParameters { .. })
        ));
        assert!(Query::parse(&format!("os={}", "x".repeat(MAX_VALUE_LEN + 1))).is_err());
    }

    #[test]
    fn label_key_with_colons() {
        let q = Query::parse("label:io.x:y=1&label:io.x:y:exists=1").unwrap();
        let f = &q.labels["io.x:y"];
        assert!(f.exists);
        assert!(f.equals.contains("1"));
    }

    #[test]
    fn tag_conditions() {
        let t = |s: &str| Tag::parse(s).unwrap();
        let q = Query::parse("tag=latest&tag=stable").unwrap();
        assert!(q.matches_tags(&[t("1.0"), t("stable")]));
        assert!(!q.matches_tags(&[t("1.0")]));
        let q = Query::parse("tag:matches=1.*&tag:matches=f??").unwrap();
        assert!(q.matches_tags(&[t("f40")]));
        assert!(q.matches_tags(&[t("x"), t("1.2")]));
        assert!(!q.matches_tags(&[t("2.0"), t("f100")]));
        // Different names AND: both conditions must be met by the tag set.
        let q = Query::parse("tag=latest&tag:matches=1.*").unwrap();
        assert!(q.matches_tags(&[t("latest"), t("1.4")]));
        assert!(!q.matches_tags(&[t("latest")]));
        assert!(!q.matches_tags(&[]));
    }

    #[test]
    fn image_conditions() {
        let labels = map(&[
            ("org.flatpak.ref", "app/org.gnome.Calculator/x86_64/stable"),
            ("empty", ""),
        ]);
        let annotations = map(&[("org.opencontainers.image.title", "Calculator")]);
        let check = |raw: &str| {
            Query::parse(raw)
                .unwrap()
                .matches_image("linux", "amd64", &labels, &annotations)
        };
        assert!(check("os=linux&architecture=amd64"));
        assert!(check("architecture=arm64&architecture=amd64"));
        assert!(!check("architecture=arm64"));
        assert!(!check("os=windows"));
        assert!(check("label:org.flatpak.ref:exists=1"));
        assert!(!check("label:org.flatpak.metadata:exists=1"));
        assert!(check(
            "label:org.flatpak.ref=app/org.gnome.Calculator/x86_64/stable"
        ));
        assert!(!check("label:org.flatpak.ref=app/org.gnome.Calculator"));
        assert!(check(
            "label:org.flatpak.ref=x&label:org.flatpak.ref=app/org.gnome.Calculator/x86_64/stable"
        ));
        assert!(check("label:org.flatpak.ref:matches=app/*/x86_64/*"));
        assert!(!check("label:org.flatpak.ref:matches=runtime/*"));
        assert!(check("label:empty="));
        assert!(check("label:empty:exists=1"));
        assert!(!check("label:missing="));
        assert!(check(
            "annotation:org.opencontainers.image.title=Calculator"
        ));
        assert!(!check(
            "annotation:org.opencontainers.image.title=calculator"
        ));
        assert!(!check("annotation:org.flatpak.ref:exists=1"));
        assert!(check(
            "annotation:org.opencontainers.image.title:matches=Calc*"
        ));
        // AND of different names on the same key.
        assert!(!check(
            "label:org.flatpak.ref:exists=1&label:org.flatpak.ref:matches=runtime/*"
        ));
    }
}
