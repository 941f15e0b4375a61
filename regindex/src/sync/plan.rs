//! The pure decisions of a refetch about what to ask the registry: how to learn where
//! each tag points, and which manifests to fetch. What to write is the store's diff
//! ([`crate::store::plan::diff`]). No I/O, unit-tested.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::model::{Digest, Tag};
pub use crate::store::plan::Usable;
use crate::store::StoredRepository;

/// How to learn where a listed tag points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// The store holds something for the tag: a HEAD tells whether it moved.
    Head,
    /// The store holds nothing for it: a GET gives the digest and the body at once.
    Get,
}

pub fn probe(stored: &StoredRepository, tag: &Tag) -> Probe {
    if stored.tags.contains_key(tag) || stored.problems.contains_key(tag) {
        Probe::Head
    } else {
        Probe::Get
    }
}

/// The tag targets a refetch still has to fetch: neither stored, nor known to be
/// unusable (a recorded problem for the same digest), nor fetched already.
pub fn to_fetch(
    stored: &StoredRepository,
    resolved: &BTreeMap<Tag, Digest>,
    usable: &HashMap<Digest, Usable>,
) -> BTreeSet<Digest> {
    let known_bad = known_bad(stored);
    resolved
        .values()
        .filter(|d| {
            !stored.manifests.contains_key(*d)
                && !known_bad.contains(*d)
                && !usable.contains_key(*d)
        })
        .cloned()
        .collect()
}

/// Digests whose recorded problem says they cannot be indexed at all.
fn known_bad(stored: &StoredRepository) -> HashSet<&Digest> {
    stored
        .problems
        .values()
        .filter(|p| !p.partial)
        .map(|p| &p.digest)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::plan::fixtures::{d, image, problem, stored, t};

    #[test]
    fn held_tags_are_probed_with_head_new_ones_with_get() {
        let s = stored(&[("a", 1)], &[1], &[], &[problem("bad", 2, "x", false)]);
        assert_eq!(probe(&s, &t("a")), Probe::Head);
        assert_eq!(probe(&s, &t("bad")), Probe::Head);
        assert_eq!(probe(&s, &t("new")), Probe::Get);
    }

    #[test]
    fn fetches_only_what_is_neither_stored_nor_known_bad_nor_fetched() {
        let s = stored(
            &[("a", 1)],
            &[1],
            &[],
            &[problem("bad", 2, "not JSON", false)],
        );
        let resolved = BTreeMap::from([
            (t("a"), d(1)),
            (t("bad"), d(2)),
            (t("bad-too"), d(2)),
            (t("b"), d(3)),
            (t("c"), d(3)),
            (t("got"), d(4)),
        ]);
        let usable = HashMap::from([(d(4), Usable::Image(image(4)))]);
        assert_eq!(to_fetch(&s, &resolved, &usable), BTreeSet::from([d(3)]));
    }
}
