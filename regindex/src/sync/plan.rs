//! The pure decisions of a refetch: how to ask the registry about each tag, which
//! manifests to fetch, and the state to write. No I/O, unit-tested.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::model::{Digest, Image, ImageList, Tag, TagProblem};
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

/// What a fetched manifest turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Usable {
    Image(Image),
    /// A list, with the entries that could not be used (digest, reason); the list is
    /// indexed without them.
    List {
        list: ImageList,
        skipped: Vec<(Digest, String)>,
    },
    /// Not indexable, and why.
    Bad(String),
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

/// What a refetch writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// Tags that are indexed (their target is stored or among the new manifests).
    pub tags: BTreeMap<Tag, Digest>,
    pub images: Vec<Image>,
    pub lists: Vec<ImageList>,
    pub problems: Vec<TagProblem>,
}

/// The state to write, from the resolved tags and what was fetched. A tag whose target
/// is neither stored nor usable is not indexed; if a reason is known it is a problem. A
/// tag still on a digest with a recorded problem keeps it (it was not fetched again).
pub fn desired(
    stored: &StoredRepository,
    resolved: &BTreeMap<Tag, Digest>,
    usable: &HashMap<Digest, Usable>,
) -> Desired {
    let recorded: HashMap<&Digest, &TagProblem> =
        stored.problems.values().map(|p| (&p.digest, p)).collect();
    let mut desired = Desired::default();
    let mut new_images: BTreeMap<&Digest, &Image> = BTreeMap::new();
    let mut new_lists: BTreeMap<&Digest, &ImageList> = BTreeMap::new();
    for (tag, digest) in resolved {
        let problem = |reason: &str, partial: bool| TagProblem {
            tag: tag.clone(),
            digest: digest.clone(),
            reason: reason.to_owned(),
            partial,
        };
        if stored.manifests.contains_key(digest) {
            desired.tags.insert(tag.clone(), digest.clone());
            // A stored list with unusable entries keeps saying so.
            let carried = stored
                .problems
                .get(tag)
                .filter(|p| p.digest == *digest)
                .or_else(|| recorded.get(digest).copied());
            if let Some(p) = carried.filter(|p| p.partial) {
                desired.problems.push(problem(&p.reason, true));
            }
            continue;
        }
        match usable.get(digest) {
            Some(Usable::Image(image)) => {
                desired.tags.insert(tag.clone(), digest.clone());
                new_images.insert(digest, image);
            }
            Some(Usable::List { list, skipped }) => {
                desired.tags.insert(tag.clone(), digest.clone());
                new_lists.insert(digest, list);
                for entry in &list.entries {
                    if let Some(Usable::Image(image)) = usable.get(entry) {
                        if !stored.manifests.contains_key(entry) {
                            new_images.insert(entry, image);
                        }
                    }
                }
                if !skipped.is_empty() {
                    let reason = skipped
                        .iter()
                        .map(|(entry, reason)| format!("entry {entry}: {reason}"))
                        .collect::<Vec<_>>()
                        .join("; ");
                    desired.problems.push(problem(&reason, true));
                }
            }
            Some(Usable::Bad(reason)) => desired.problems.push(problem(reason, false)),
            None => {
                if let Some(p) = recorded.get(digest).filter(|p| !p.partial) {
                    desired.problems.push(problem(&p.reason, false));
                }
                // Otherwise it vanished since the listing: the next refetch sees.
            }
        }
    }
    desired.images = new_images.into_values().cloned().collect();
    desired.lists = new_lists.into_values().cloned().collect();
    desired
}

/// Whether writing `desired` would change nothing the store holds.
pub fn unchanged(stored: &StoredRepository, desired: &Desired) -> bool {
    desired.images.is_empty()
        && desired.lists.is_empty()
        && desired.tags == stored.tags
        && desired.problems.len() == stored.problems.len()
        && desired
            .problems
            .iter()
            .all(|p| stored.problems.get(&p.tag) == Some(p))
}

/// Digests the desired state relies on being stored that `known` (the store's manifests
/// as the write transaction sees them) lacks: another refetch removed them after this
/// one read the store.
pub fn missing(desired: &Desired, known: &HashSet<Digest>) -> BTreeSet<Digest> {
    let new: HashSet<&Digest> = desired
        .images
        .iter()
        .map(|i| &i.digest)
        .chain(desired.lists.iter().map(|l| &l.digest))
        .collect();
    let needed = desired
        .tags
        .values()
        .chain(desired.lists.iter().flat_map(|l| l.entries.iter()));
    needed
        .filter(|d| !known.contains(*d) && !new.contains(d))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{media_type, StringMap};

    fn d(n: u8) -> Digest {
        Digest::sha256_of(&[n])
    }
    fn t(s: &str) -> Tag {
        Tag::parse(s).unwrap()
    }
    fn image(n: u8) -> Image {
        Image {
            digest: d(n),
            media_type: media_type::OCI_MANIFEST.into(),
            os: "linux".into(),
            architecture: "amd64".into(),
            annotations: StringMap::new(),
            labels: StringMap::new(),
            config_digest: d(n + 100),
        }
    }
    fn list(n: u8, entries: &[u8]) -> ImageList {
        ImageList {
            digest: d(n),
            media_type: media_type::OCI_INDEX.into(),
            annotations: StringMap::new(),
            entries: entries.iter().map(|e| d(*e)).collect(),
        }
    }
    fn problem(tag: &str, n: u8, reason: &str, partial: bool) -> TagProblem {
        TagProblem {
            tag: t(tag),
            digest: d(n),
            reason: reason.into(),
            partial,
        }
    }
    fn stored(tags: &[(&str, u8)], manifests: &[u8], problems: &[TagProblem]) -> StoredRepository {
        StoredRepository {
            tags: tags.iter().map(|(tag, n)| (t(tag), d(*n))).collect(),
            manifests: manifests.iter().map(|n| (d(*n), false)).collect(),
            problems: problems
                .iter()
                .map(|p| (p.tag.clone(), p.clone()))
                .collect(),
            ticket: None,
        }
    }

    #[test]
    fn held_tags_are_probed_with_head_new_ones_with_get() {
        let s = stored(&[("a", 1)], &[1], &[problem("bad", 2, "x", false)]);
        assert_eq!(probe(&s, &t("a")), Probe::Head);
        assert_eq!(probe(&s, &t("bad")), Probe::Head);
        assert_eq!(probe(&s, &t("new")), Probe::Get);
    }

    #[test]
    fn fetches_only_what_is_neither_stored_nor_known_bad_nor_fetched() {
        let s = stored(&[("a", 1)], &[1], &[problem("bad", 2, "not JSON", false)]);
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

    #[test]
    fn bad_tags_are_problems_and_the_others_are_indexed() {
        let s = stored(&[("old", 1)], &[1], &[]);
        let resolved = BTreeMap::from([(t("old"), d(1)), (t("good"), d(2)), (t("broken"), d(3))]);
        let usable = HashMap::from([
            (d(2), Usable::Image(image(2))),
            (d(3), Usable::Bad("config is not JSON".into())),
        ]);
        let desired = desired(&s, &resolved, &usable);
        assert_eq!(
            desired.tags,
            BTreeMap::from([(t("old"), d(1)), (t("good"), d(2))])
        );
        assert_eq!(desired.images, vec![image(2)]);
        assert_eq!(
            desired.problems,
            vec![problem("broken", 3, "config is not JSON", false)]
        );
    }

    #[test]
    fn recorded_problems_stay_while_the_tag_stays_and_go_when_it_moves() {
        let s = stored(
            &[("multi", 5)],
            &[5, 6],
            &[
                problem("broken", 3, "not JSON", false),
                problem("moved", 4, "not JSON", false),
                problem("multi", 5, "entry x: not JSON", true),
            ],
        );
        let resolved = BTreeMap::from([
            (t("broken"), d(3)),
            (t("alias"), d(3)),
            (t("moved"), d(7)),
            (t("multi"), d(5)),
        ]);
        let usable = HashMap::from([(d(7), Usable::Image(image(7)))]);
        let desired = desired(&s, &resolved, &usable);
        assert_eq!(
            desired.tags,
            BTreeMap::from([(t("moved"), d(7)), (t("multi"), d(5))])
        );
        assert_eq!(
            desired.problems,
            vec![
                problem("alias", 3, "not JSON", false),
                problem("broken", 3, "not JSON", false),
                problem("multi", 5, "entry x: not JSON", true),
            ]
        );
    }

    #[test]
    fn a_list_with_an_unusable_entry_is_indexed_in_part() {
        let s = stored(&[], &[1], &[]);
        let usable = HashMap::from([
            (
                d(10),
                Usable::List {
                    list: list(10, &[1, 2]),
                    skipped: vec![(d(3), "not JSON".into())],
                },
            ),
            (d(2), Usable::Image(image(2))),
        ]);
        let resolved = BTreeMap::from([(t("latest"), d(10))]);
        let desired = desired(&s, &resolved, &usable);
        assert_eq!(desired.tags, BTreeMap::from([(t("latest"), d(10))]));
        assert_eq!(desired.lists, vec![list(10, &[1, 2])]);
        assert_eq!(desired.images, vec![image(2)], "entry 1 is stored already");
        assert_eq!(desired.problems.len(), 1);
        assert!(desired.problems[0].partial);
        assert!(desired.problems[0].reason.contains(d(3).as_str()));
    }

    #[test]
    fn a_vanished_target_is_left_out_silently() {
        let s = stored(&[], &[], &[]);
        let resolved = BTreeMap::from([(t("gone"), d(1))]);
        let desired = desired(&s, &resolved, &HashMap::new());
        assert_eq!(desired, Desired::default());
    }

    #[test]
    fn an_unchanged_listing_needs_no_write() {
        let s = stored(&[("a", 1)], &[1], &[problem("bad", 2, "x", false)]);
        let resolved = BTreeMap::from([(t("a"), d(1)), (t("bad"), d(2))]);
        let same = desired(&s, &resolved, &HashMap::new());
        assert!(unchanged(&s, &same));
        let moved = BTreeMap::from([(t("a"), d(3)), (t("bad"), d(2))]);
        let usable = HashMap::from([(d(3), Usable::Image(image(3)))]);
        assert!(!unchanged(&s, &desired(&s, &moved, &usable)));
        let healed = BTreeMap::from([(t("a"), d(1))]);
        assert!(!unchanged(&s, &desired(&s, &healed, &HashMap::new())));
    }

    #[test]
    fn missing_names_what_the_store_lost_meanwhile() {
        let desired = Desired {
            tags: BTreeMap::from([(t("a"), d(1)), (t("b"), d(2)), (t("l"), d(10))]),
            images: vec![image(2)],
            lists: vec![list(10, &[2, 3])],
            problems: vec![],
        };
        let known: HashSet<Digest> = [d(3)].into_iter().collect();
        assert_eq!(missing(&desired, &known), BTreeSet::from([d(1)]));
        let known: HashSet<Digest> = [d(1), d(3)].into_iter().collect();
        assert!(missing(&desired, &known).is_empty());
    }
}
