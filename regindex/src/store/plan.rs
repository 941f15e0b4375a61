//! Pure decisions of `RepositoryTx::replace`: is the input consistent, which new
//! manifests are worth storing, which tags change. No I/O, unit-tested.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::StoreError;
use crate::model::{media_type, Digest, Image, ImageList, RepositoryName, Tag};

/// What the database already holds for a manifest of the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Known {
    pub id: i64,
    pub is_list: bool,
}

/// The new manifests to insert: only those not stored yet and reachable from a tag.
#[derive(Debug, Default)]
pub(super) struct NewManifests<'a> {
    pub images: Vec<&'a Image>,
    pub lists: Vec<&'a ImageList>,
}

fn inconsistent(repository: &RepositoryName, detail: String) -> StoreError {
    StoreError::Inconsistent {
        repository: repository.to_string(),
        detail,
    }
}

/// Checks that every tag target and list entry is known or new, that images are images
/// and lists are lists, and picks the new manifests to insert.
pub(super) fn plan_new_manifests<'a>(
    repository: &RepositoryName,
    tags: &BTreeMap<Tag, Digest>,
    known: &HashMap<Digest, Known>,
    new_images: &'a [Image],
    new_lists: &'a [ImageList],
) -> Result<NewManifests<'a>, StoreError> {
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
    for (tag, digest) in tags {
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
    let mut plan = NewManifests::default();
    let mut wanted_images: HashSet<&Digest> = HashSet::new();
    let mut seen_lists: HashSet<&Digest> = HashSet::new();
    for list in new_lists {
        if targets.contains(&list.digest)
            && !known.contains_key(&list.digest)
            && seen_lists.insert(&list.digest)
        {
            wanted_images.extend(list.entries.iter());
            plan.lists.push(list);
        }
    }
    let mut seen_images: HashSet<&Digest> = HashSet::new();
    for image in new_images {
        let reachable = targets.contains(&image.digest) || wanted_images.contains(&image.digest);
        if reachable && !known.contains_key(&image.digest) && seen_images.insert(&image.digest) {
            plan.images.push(image);
        }
    }
    Ok(plan)
}

/// How the stored tag set becomes the desired one.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct TagDiff<'a> {
    /// Tags to create or move.
    pub set: Vec<(&'a Tag, &'a Digest)>,
    /// Tags to delete.
    pub removed: Vec<&'a Tag>,
}

impl TagDiff<'_> {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.removed.is_empty()
    }
}

pub(super) fn diff_tags<'a>(
    current: &'a BTreeMap<Tag, Digest>,
    desired: &'a BTreeMap<Tag, Digest>,
) -> TagDiff<'a> {
    TagDiff {
        set: desired
            .iter()
            .filter(|(tag, digest)| current.get(*tag) != Some(*digest))
            .collect(),
        removed: current
            .keys()
            .filter(|tag| !desired.contains_key(*tag))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StringMap;

    fn d(n: u8) -> Digest {
        Digest::sha256_of(&[n])
    }
    fn t(s: &str) -> Tag {
        Tag::parse(s).unwrap()
    }
    fn repo() -> RepositoryName {
        RepositoryName::parse("r").unwrap()
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

    #[test]
    fn picks_reachable_unknown_manifests() {
        let known = HashMap::from([(
            d(1),
            Known {
                id: 1,
                is_list: false,
            },
        )]);
        let tags = BTreeMap::from([(t("a"), d(1)), (t("b"), d(2)), (t("c"), d(10))]);
        let images = [image(1), image(2), image(3), image(4), image(5)];
        let lists = [list(10, &[1, 3]), list(11, &[5])];
        let plan = plan_new_manifests(&repo(), &tags, &known, &images, &lists).unwrap();
        let got: Vec<_> = plan.images.iter().map(|i| i.digest.clone()).collect();
        // 1 is known, 4 and 5 are unreachable (list 11 is not tagged).
        assert_eq!(got, [d(2), d(3)]);
        assert_eq!(plan.lists.len(), 1);
        assert_eq!(plan.lists[0].digest, d(10));
    }

    #[test]
    fn refuses_inconsistent_input() {
        let known = HashMap::from([(
            d(20),
            Known {
                id: 1,
                is_list: true,
            },
        )]);
        let unknown_target = BTreeMap::from([(t("a"), d(9))]);
        let err =
            plan_new_manifests(&repo(), &unknown_target, &known, &[image(1)], &[]).unwrap_err();
        assert!(matches!(err, StoreError::Inconsistent { .. }), "{err}");
        assert!(err.to_string().contains("tag a"), "{err}");

        let tags = BTreeMap::from([(t("a"), d(10))]);
        let err = plan_new_manifests(&repo(), &tags, &known, &[], &[list(10, &[7])]).unwrap_err();
        assert!(err.to_string().contains("entry"), "{err}");
        // An entry that is a list.
        let err = plan_new_manifests(&repo(), &tags, &known, &[], &[list(10, &[20])]).unwrap_err();
        assert!(err.to_string().contains("entry"), "{err}");
        // Wrong media types.
        let mut bad = image(1);
        bad.media_type = media_type::OCI_INDEX.into();
        let tags1 = BTreeMap::from([(t("a"), d(1))]);
        assert!(plan_new_manifests(&repo(), &tags1, &known, &[bad], &[]).is_err());
        let mut bad_list = list(10, &[]);
        bad_list.media_type = media_type::OCI_MANIFEST.into();
        assert!(plan_new_manifests(&repo(), &tags, &known, &[], &[bad_list]).is_err());
        // An image that is stored as a list.
        let tags20 = BTreeMap::from([(t("a"), d(20))]);
        assert!(plan_new_manifests(&repo(), &tags20, &known, &[image(20)], &[]).is_err());
    }

    #[test]
    fn tag_diff() {
        let current = BTreeMap::from([(t("a"), d(1)), (t("b"), d(2)), (t("c"), d(3))]);
        let desired = BTreeMap::from([(t("a"), d(1)), (t("b"), d(4)), (t("d"), d(5))]);
        let diff = diff_tags(&current, &desired);
        assert_eq!(diff.set, vec![(&t("b"), &d(4)), (&t("d"), &d(5))]);
        assert_eq!(diff.removed, vec![&t("c")]);
        assert!(diff_tags(&current, &current).is_empty());
    }
}
