//! The one diff of a repository: from what the store holds ([`StoredRepository`]) and
//! what the registry said ([`Listing`]), the [`Changes`] to write. No I/O, unit-tested.
//!
//! A refetch runs it twice on the same listing: on the state it read before asking the
//! registry (nothing to write? then no write transaction at all), and in the write
//! transaction on the state read there under the repository's lock, which is what gets
//! written. `RepositoryTx::apply` only carries the changes out.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::{StoreError, StoredRepository};
use crate::model::{media_type, Digest, Image, ImageList, RepositoryName, Tag, TagProblem};

/// A manifest the store holds for the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    pub id: i64,
    pub is_list: bool,
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

/// What the registry said about a repository during one refetch.
#[derive(Debug, Clone, Copy)]
pub struct Listing<'a> {
    /// Every listed tag that resolved, and where it points.
    pub tags: &'a BTreeMap<Tag, Digest>,
    /// What the fetched tag targets and list entries turned out to be.
    pub usable: &'a HashMap<Digest, Usable>,
    /// Manifests the registry no longer had when they were fetched.
    pub vanished: &'a BTreeSet<Digest>,
}

/// What to write to make the store hold what the registry said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// The tag set after the write: tags whose target is stored or among the new
    /// manifests.
    pub tags: BTreeMap<Tag, Digest>,
    /// Tags to create or move.
    pub set: Vec<(Tag, Digest)>,
    /// Tags to delete.
    pub removed: Vec<Tag>,
    /// Manifests to insert: not stored yet, and reachable from a tag.
    pub images: Vec<Image>,
    pub lists: Vec<ImageList>,
    /// The problems to record (all of them, not a difference).
    pub problems: Vec<TagProblem>,
    pub problems_changed: bool,
    /// Manifests the listing relies on being stored that the store does not hold (another
    /// refetch removed them meanwhile): nothing else is planned, they must be fetched.
    pub missing: BTreeSet<Digest>,
}

impl Changes {
    /// Writing would change nothing.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
            && self.removed.is_empty()
            && self.images.is_empty()
            && self.lists.is_empty()
            && !self.problems_changed
            && self.missing.is_empty()
    }

    /// Whether writing may leave manifests of `stored` that no tag reaches: a tag moved or
    /// deleted.
    pub fn orphans_possible(&self, stored: &StoredRepository) -> bool {
        !self.removed.is_empty()
            || self
                .set
                .iter()
                .any(|(tag, _)| stored.tags.contains_key(tag))
    }
}

/// The diff. A tag whose target is neither stored nor usable is not indexed; if a reason
/// is known it is a problem. A tag still on a digest with a recorded problem keeps it (it
/// was not fetched again). A target that vanished from the registry is left out
/// silently; one that was neither fetched nor is stored is `missing`.
pub fn diff(
    repository: &RepositoryName,
    stored: &StoredRepository,
    listing: Listing<'_>,
) -> Result<Changes, StoreError> {
    let wanted = wanted(stored, listing);
    if !wanted.missing.is_empty() {
        return Ok(Changes {
            missing: wanted.missing,
            ..Changes::default()
        });
    }
    let problems_changed = wanted.problems.len() != stored.problems.len()
        || wanted
            .problems
            .iter()
            .any(|p| stored.problems.get(&p.tag) != Some(p));
    let mut changes = plan(
        repository,
        stored,
        wanted.tags,
        &wanted.images,
        &wanted.lists,
    )?;
    changes.problems = wanted.problems;
    changes.problems_changed = problems_changed;
    Ok(changes)
}

/// The state the listing asks for, before it is compared with the store.
#[derive(Default)]
struct Wanted {
    tags: BTreeMap<Tag, Digest>,
    images: Vec<Image>,
    lists: Vec<ImageList>,
    problems: Vec<TagProblem>,
    missing: BTreeSet<Digest>,
}

fn wanted(stored: &StoredRepository, listing: Listing<'_>) -> Wanted {
    let recorded: HashMap<&Digest, &TagProblem> =
        stored.problems.values().map(|p| (&p.digest, p)).collect();
    let mut wanted = Wanted::default();
    let mut new_images: BTreeMap<&Digest, &Image> = BTreeMap::new();
    let mut new_lists: BTreeMap<&Digest, &ImageList> = BTreeMap::new();
    for (tag, digest) in listing.tags {
        let problem = |reason: &str, partial: bool| TagProblem {
            tag: tag.clone(),
            digest: digest.clone(),
            reason: reason.to_owned(),
            partial,
        };
        if stored.manifests.contains_key(digest) {
            wanted.tags.insert(tag.clone(), digest.clone());
            // A stored list with unusable entries keeps saying so.
            let carried = stored
                .problems
                .get(tag)
                .filter(|p| p.digest == *digest)
                .or_else(|| recorded.get(digest).copied());
            if let Some(p) = carried.filter(|p| p.partial) {
                wanted.problems.push(problem(&p.reason, true));
            }
            continue;
        }
        match listing.usable.get(digest) {
            Some(Usable::Image(image)) => {
                wanted.tags.insert(tag.clone(), digest.clone());
                new_images.insert(digest, image);
            }
            Some(Usable::List { list, skipped }) => {
                wanted.tags.insert(tag.clone(), digest.clone());
                new_lists.insert(digest, list);
                for entry in &list.entries {
                    if stored.manifests.contains_key(entry) {
                        continue;
                    }
                    match listing.usable.get(entry) {
                        Some(Usable::Image(image)) => {
                            new_images.insert(entry, image);
                        }
                        // Judged stored when the list was read; the store lost it since.
                        _ => {
                            wanted.missing.insert(entry.clone());
                        }
                    }
                }
                if !skipped.is_empty() {
                    let reason = skipped
                        .iter()
                        .map(|(entry, reason)| format!("entry {entry}: {reason}"))
                        .collect::<Vec<_>>()
                        .join("; ");
                    wanted.problems.push(problem(&reason, true));
                }
            }
            Some(Usable::Bad(reason)) => wanted.problems.push(problem(reason, false)),
            None => {
                if let Some(p) = recorded.get(digest).filter(|p| !p.partial) {
                    wanted.problems.push(problem(&p.reason, false));
                } else if !listing.vanished.contains(digest) {
                    // Not fetched because it was stored when the refetch read the store.
                    wanted.missing.insert(digest.clone());
                }
                // A vanished target: the next refetch sees where the tag points now.
            }
        }
    }
    wanted.images = new_images.into_values().cloned().collect();
    wanted.lists = new_lists.into_values().cloned().collect();
    wanted
}

fn inconsistent(repository: &RepositoryName, detail: String) -> StoreError {
    StoreError::Inconsistent {
        repository: repository.to_string(),
        detail,
    }
}

/// The changes that make the repository's tag set exactly `tags`, given the manifests
/// not stored yet (`new_images`, `new_lists`; others are ignored). Checks that every tag
/// target and list entry is stored or new, and that images are images and lists are
/// lists. Leaves the problems alone.
pub fn plan(
    repository: &RepositoryName,
    stored: &StoredRepository,
    tags: BTreeMap<Tag, Digest>,
    new_images: &[Image],
    new_lists: &[ImageList],
) -> Result<Changes, StoreError> {
    let known = &stored.manifests;
    let images: HashMap<&Digest, &Image> = new_images.iter().map(|i| (&i.digest, i)).collect();
    let lists: HashMap<&Digest, &ImageList> = new_lists.iter().map(|l| (&l.digest, l)).collect();
    for image in new_images {
        if !media_type::is_image(&image.media_type) {
            return Err(inconsistent(
                repository,
                format!(
                    "image {} has media type {:?}",
                    image.digest, image.media_type
                ),
            ));
        }
        if known.get(&image.digest).is_some_and(|k| k.is_list) || lists.contains_key(&image.digest)
        {
            return Err(inconsistent(
                repository,
                format!("{} is given as an image but is a list", image.digest),
            ));
        }
    }
    for list in new_lists {
        if !media_type::is_list(&list.media_type) {
            return Err(inconsistent(
                repository,
                format!("list {} has media type {:?}", list.digest, list.media_type),
            ));
        }
        if known.get(&list.digest).is_some_and(|k| !k.is_list) {
            return Err(inconsistent(
                repository,
                format!(
                    "{} is given as a list but is stored as an image",
                    list.digest
                ),
            ));
        }
        for entry in &list.entries {
            let is_image =
                images.contains_key(entry) || known.get(entry).is_some_and(|k| !k.is_list);
            if !is_image {
                return Err(inconsistent(
                    repository,
                    format!(
                        "list {} has entry {entry}, which is neither a known nor a new image",
                        list.digest
                    ),
                ));
            }
        }
    }
    for (tag, digest) in &tags {
        if !known.contains_key(digest)
            && !images.contains_key(digest)
            && !lists.contains_key(digest)
        {
            return Err(inconsistent(
                repository,
                format!("tag {tag} points to {digest}, which is neither known nor new"),
            ));
        }
    }

    // Only what a tag reaches is stored: anything else would be removed again at once.
    let targets: HashSet<&Digest> = tags.values().collect();
    let mut changes = Changes::default();
    let mut wanted_images: HashSet<&Digest> = HashSet::new();
    let mut seen_lists: HashSet<&Digest> = HashSet::new();
    for list in new_lists {
        if targets.contains(&list.digest)
            && !known.contains_key(&list.digest)
            && seen_lists.insert(&list.digest)
        {
            wanted_images.extend(list.entries.iter());
            changes.lists.push(list.clone());
        }
    }
    let mut seen_images: HashSet<&Digest> = HashSet::new();
    for image in new_images {
        let reachable = targets.contains(&image.digest) || wanted_images.contains(&image.digest);
        if reachable && !known.contains_key(&image.digest) && seen_images.insert(&image.digest) {
            changes.images.push(image.clone());
        }
    }
    changes.set = tags
        .iter()
        .filter(|(tag, digest)| stored.tags.get(*tag) != Some(*digest))
        .map(|(tag, digest)| (tag.clone(), digest.clone()))
        .collect();
    changes.removed = stored
        .tags
        .keys()
        .filter(|tag| !tags.contains_key(*tag))
        .cloned()
        .collect();
    changes.tags = tags;
    Ok(changes)
}

/// Small values for the plan tests here and in `sync::plan`.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::model::StringMap;

    pub fn d(n: u8) -> Digest {
        Digest::sha256_of(&[n])
    }
    pub fn t(s: &str) -> Tag {
        Tag::parse(s).unwrap()
    }
    pub fn repo() -> RepositoryName {
        RepositoryName::parse("r").unwrap()
    }
    pub fn image(n: u8) -> Image {
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
    pub fn list(n: u8, entries: &[u8]) -> ImageList {
        ImageList {
            digest: d(n),
            media_type: media_type::OCI_INDEX.into(),
            annotations: StringMap::new(),
            entries: entries.iter().map(|e| d(*e)).collect(),
        }
    }
    pub fn problem(tag: &str, n: u8, reason: &str, partial: bool) -> TagProblem {
        TagProblem {
            tag: t(tag),
            digest: d(n),
            reason: reason.into(),
            partial,
        }
    }
    /// `manifests`: stored images; `lists`: stored lists.
    pub fn stored(
        tags: &[(&str, u8)],
        manifests: &[u8],
        lists: &[u8],
        problems: &[TagProblem],
    ) -> StoredRepository {
        let known = |n: &u8, is_list| {
            (
                d(*n),
                Known {
                    id: i64::from(*n),
                    is_list,
                },
            )
        };
        StoredRepository {
            repository_id: (!tags.is_empty() || !manifests.is_empty()).then_some(1),
            tags: tags.iter().map(|(tag, n)| (t(tag), d(*n))).collect(),
            manifests: manifests
                .iter()
                .map(|n| known(n, false))
                .chain(lists.iter().map(|n| known(n, true)))
                .collect(),
            problems: problems
                .iter()
                .map(|p| (p.tag.clone(), p.clone()))
                .collect(),
            ticket: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    fn tags(pairs: &[(&str, u8)]) -> BTreeMap<Tag, Digest> {
        pairs.iter().map(|(tag, n)| (t(tag), d(*n))).collect()
    }

    /// One row of the diff table: the store, what the registry said, and the expected
    /// changes.
    struct Case {
        name: &'static str,
        stored: StoredRepository,
        listed: &'static [(&'static str, u8)],
        usable: Vec<(u8, Usable)>,
        vanished: &'static [u8],
        set: &'static [(&'static str, u8)],
        removed: &'static [&'static str],
        images: &'static [u8],
        lists: &'static [u8],
        problems: Vec<TagProblem>,
        missing: &'static [u8],
    }

    fn bad(reason: &str) -> Usable {
        Usable::Bad(reason.into())
    }
    fn img(n: u8) -> Usable {
        Usable::Image(image(n))
    }
    fn lst(n: u8, entries: &[u8], skipped: &[u8]) -> Usable {
        Usable::List {
            list: list(n, entries),
            skipped: skipped
                .iter()
                .map(|s| (d(*s), "not JSON".to_owned()))
                .collect(),
        }
    }

    fn cases() -> Vec<Case> {
        vec![
            Case {
                name: "nothing changed",
                stored: stored(&[("a", 1), ("b", 1)], &[1], &[], &[]),
                listed: &[("a", 1), ("b", 1)],
                usable: vec![],
                vanished: &[],
                set: &[],
                removed: &[],
                images: &[],
                lists: &[],
                problems: vec![],
                missing: &[],
            },
            Case {
                name: "new repository, tags sharing a digest",
                stored: stored(&[], &[], &[], &[]),
                listed: &[("latest", 1), ("1", 1), ("1.0", 1), ("0.9", 2)],
                usable: vec![(1, img(1)), (2, img(2))],
                vanished: &[],
                set: &[("0.9", 2), ("1", 1), ("1.0", 1), ("latest", 1)],
                removed: &[],
                images: &[1, 2],
                lists: &[],
                problems: vec![],
                missing: &[],
            },
            Case {
                name: "moved tag",
                stored: stored(&[("a", 1), ("b", 2)], &[1, 2], &[], &[]),
                listed: &[("a", 3), ("b", 2)],
                usable: vec![(3, img(3))],
                vanished: &[],
                set: &[("a", 3)],
                removed: &[],
                images: &[3],
                lists: &[],
                problems: vec![],
                missing: &[],
            },
            Case {
                name: "moved to a digest another tag holds already",
                stored: stored(&[("a", 1), ("b", 2)], &[1, 2], &[], &[]),
                listed: &[("a", 2), ("b", 2)],
                usable: vec![],
                vanished: &[],
                set: &[("a", 2)],
                removed: &[],
                images: &[],
                lists: &[],
                problems: vec![],
                missing: &[],
            },
            Case {
                name: "deleted tag",
                stored: stored(&[("a", 1), ("b", 2)], &[1, 2], &[], &[]),
                listed: &[("a", 1)],
                usable: vec![],
                vanished: &[],
                set: &[],
                removed: &["b"],
                images: &[],
                lists: &[],
                problems: vec![],
                missing: &[],
            },
            Case {
                name: "every tag deleted",
                stored: stored(&[("a", 1)], &[1], &[], &[]),
                listed: &[],
                usable: vec![],
                vanished: &[],
                set: &[],
                removed: &["a"],
                images: &[],
                lists: &[],
                problems: vec![],
                missing: &[],
            },
            Case {
                name: "new list: a stored entry, a new entry, an unusable entry",
                stored: stored(&[("old", 1)], &[1], &[], &[]),
                listed: &[("old", 1), ("multi", 10)],
                usable: vec![(10, lst(10, &[1, 2], &[3])), (2, img(2)), (3, bad("x"))],
                vanished: &[],
                set: &[("multi", 10)],
                removed: &[],
                images: &[2],
                lists: &[10],
                problems: vec![problem(
                    "multi",
                    10,
                    &format!("entry {}: not JSON", d(3)),
                    true,
                )],
                missing: &[],
            },
            Case {
                name: "new entry of a stored list's successor shares the stored images",
                stored: stored(&[("multi", 10)], &[1, 2], &[10], &[]),
                listed: &[("multi", 11)],
                usable: vec![(11, lst(11, &[1, 2, 4], &[])), (4, img(4))],
                vanished: &[],
                set: &[("multi", 11)],
                removed: &[],
                images: &[4],
                lists: &[11],
                problems: vec![],
                missing: &[],
            },
            Case {
                name: "malformed manifest: a problem, the other tags indexed",
                stored: stored(&[("old", 1)], &[1], &[], &[]),
                listed: &[("old", 1), ("good", 2), ("broken", 3)],
                usable: vec![(2, img(2)), (3, bad("config is not JSON"))],
                vanished: &[],
                set: &[("good", 2)],
                removed: &[],
                images: &[2],
                lists: &[],
                problems: vec![problem("broken", 3, "config is not JSON", false)],
                missing: &[],
            },
            Case {
                name: "recorded problems stay while the tag stays and go when it moves",
                stored: stored(
                    &[("multi", 5)],
                    &[6],
                    &[5],
                    &[
                        problem("broken", 3, "not JSON", false),
                        problem("moved", 4, "not JSON", false),
                        problem("multi", 5, "entry x: not JSON", true),
                    ],
                ),
                listed: &[("broken", 3), ("alias", 3), ("moved", 7), ("multi", 5)],
                usable: vec![(7, img(7))],
                vanished: &[],
                set: &[("moved", 7)],
                removed: &[],
                images: &[7],
                lists: &[],
                problems: vec![
                    problem("alias", 3, "not JSON", false),
                    problem("broken", 3, "not JSON", false),
                    problem("multi", 5, "entry x: not JSON", true),
                ],
                missing: &[],
            },
            Case {
                name: "a healed tag loses its problem",
                stored: stored(&[("a", 1)], &[1], &[], &[problem("bad", 2, "x", false)]),
                listed: &[("a", 1), ("bad", 4)],
                usable: vec![(4, img(4))],
                vanished: &[],
                set: &[("bad", 4)],
                removed: &[],
                images: &[4],
                lists: &[],
                problems: vec![],
                missing: &[],
            },
            Case {
                name: "a vanished target is left out silently",
                stored: stored(&[], &[], &[], &[]),
                listed: &[("gone", 1)],
                usable: vec![],
                vanished: &[1],
                set: &[],
                removed: &[],
                images: &[],
                lists: &[],
                problems: vec![],
                missing: &[],
            },
            Case {
                name: "the store lost a target and a list entry: missing, nothing else",
                stored: stored(&[("a", 1)], &[], &[], &[]),
                listed: &[("a", 1), ("b", 2), ("l", 10)],
                usable: vec![(2, img(2)), (10, lst(10, &[2, 3], &[]))],
                vanished: &[],
                set: &[],
                removed: &[],
                images: &[],
                lists: &[],
                problems: vec![],
                missing: &[1, 3],
            },
        ]
    }

    #[test]
    fn the_diff_table() {
        for case in cases() {
            let usable: HashMap<Digest, Usable> =
                case.usable.into_iter().map(|(n, u)| (d(n), u)).collect();
            let vanished: BTreeSet<Digest> = case.vanished.iter().map(|n| d(*n)).collect();
            let listed = tags(case.listed);
            let listing = Listing {
                tags: &listed,
                usable: &usable,
                vanished: &vanished,
            };
            let changes = diff(&repo(), &case.stored, listing)
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            let name = case.name;
            let set: Vec<(Tag, Digest)> = tags(case.set).into_iter().collect();
            assert_eq!(changes.set, set, "{name}: set");
            let removed: Vec<Tag> = case.removed.iter().map(|s| t(s)).collect();
            assert_eq!(changes.removed, removed, "{name}: removed");
            let images: Vec<Image> = case.images.iter().map(|n| image(*n)).collect();
            assert_eq!(changes.images, images, "{name}: images");
            let lists: Vec<Digest> = case.lists.iter().map(|n| d(*n)).collect();
            let got: Vec<Digest> = changes.lists.iter().map(|l| l.digest.clone()).collect();
            assert_eq!(got, lists, "{name}: lists");
            assert_eq!(changes.problems, case.problems, "{name}: problems");
            let missing: BTreeSet<Digest> = case.missing.iter().map(|n| d(*n)).collect();
            assert_eq!(changes.missing, missing, "{name}: missing");
            if missing.is_empty() {
                let expected_tags: BTreeMap<Tag, Digest> = listed
                    .iter()
                    .filter(|(_, digest)| {
                        case.stored.manifests.contains_key(*digest)
                            || matches!(
                                usable.get(*digest),
                                Some(Usable::Image(_) | Usable::List { .. })
                            )
                    })
                    .map(|(tag, digest)| (tag.clone(), digest.clone()))
                    .collect();
                assert_eq!(changes.tags, expected_tags, "{name}: tags");
            }
            let same_problems = case.problems.len() == case.stored.problems.len()
                && case
                    .problems
                    .iter()
                    .all(|p| case.stored.problems.get(&p.tag) == Some(p));
            let unchanged = case.set.is_empty()
                && case.removed.is_empty()
                && case.images.is_empty()
                && case.lists.is_empty()
                && case.missing.is_empty()
                && same_problems;
            assert_eq!(changes.is_empty(), unchanged, "{name}: is_empty");
        }
    }

    #[test]
    fn only_moved_or_deleted_tags_can_orphan_manifests() {
        let s = stored(&[("a", 1), ("b", 2)], &[1, 2], &[], &[]);
        let orphans = |listed: &[(&str, u8)]| {
            plan(&repo(), &s, tags(listed), &[image(3)], &[])
                .unwrap()
                .orphans_possible(&s)
        };
        assert!(!orphans(&[("a", 1), ("b", 2)]), "unchanged");
        assert!(!orphans(&[("a", 1), ("b", 2), ("c", 3)]), "a new tag");
        assert!(orphans(&[("a", 1), ("b", 3)]), "moved");
        assert!(orphans(&[("a", 1)]), "deleted");
    }

    #[test]
    fn plan_stores_only_reachable_unknown_manifests() {
        let s = stored(&[], &[1], &[], &[]);
        let tags = tags(&[("a", 1), ("b", 2), ("c", 10)]);
        let images = [image(1), image(2), image(3), image(4), image(5)];
        let lists = [list(10, &[1, 3]), list(11, &[5])];
        let changes = plan(&repo(), &s, tags, &images, &lists).unwrap();
        let got: Vec<_> = changes.images.iter().map(|i| i.digest.clone()).collect();
        // 1 is known, 4 and 5 are unreachable (list 11 is not tagged).
        assert_eq!(got, [d(2), d(3)]);
        assert_eq!(changes.lists.len(), 1);
        assert_eq!(changes.lists[0].digest, d(10));
    }

    #[test]
    fn plan_refuses_inconsistent_input() {
        let s = stored(&[], &[], &[20], &[]);
        let err = plan(&repo(), &s, tags(&[("a", 9)]), &[image(1)], &[]).unwrap_err();
        assert!(matches!(err, StoreError::Inconsistent { .. }), "{err}");
        assert!(err.to_string().contains("tag a"), "{err}");

        let to_list = || tags(&[("a", 10)]);
        let err = plan(&repo(), &s, to_list(), &[], &[list(10, &[7])]).unwrap_err();
        assert!(err.to_string().contains("entry"), "{err}");
        // An entry that is a list.
        let err = plan(&repo(), &s, to_list(), &[], &[list(10, &[20])]).unwrap_err();
        assert!(err.to_string().contains("entry"), "{err}");
        // Wrong media types.
        let mut bad = image(1);
        bad.media_type = media_type::OCI_INDEX.into();
        assert!(plan(&repo(), &s, tags(&[("a", 1)]), &[bad], &[]).is_err());
        let mut bad_list = list(10, &[]);
        bad_list.media_type = media_type::OCI_MANIFEST.into();
        assert!(plan(&repo(), &s, to_list(), &[], &[bad_list]).is_err());
        // An image that is stored as a list.
        assert!(plan(&repo(), &s, tags(&[("a", 20)]), &[image(20)], &[]).is_err());
    }
}
