//! Index profiles: named answer transformations for sites moving from flatpak-indexer
//! (`index_profiles` in the configuration). A profile is applied to a built
//! [`IndexResponse`], before icon URLs are substituted, by the one rendering function that
//! serves `/profiles/<name>/index/...` and writes static index files, so both give the
//! same bytes.
//!
//! In order: repositories are kept by `repository_include` / `repository_exclude`; then
//! `repository_priority` keeps, for each `(architecture, org.flatpak.ref)`, only the images
//! of the best repository; then the token-type label is added (`force_flatpak_token`);
//! then Flatpak labels are copied into annotations (`flatpak_annotations`), the token
//! label included, as flatpak-indexer does.
//!
//! All of it is pure (no I/O) and unit-tested here.

use std::collections::BTreeMap;

use regex::Regex;
use serde::Deserialize;

use super::response::{ImageFields, IndexResponse, RepositoryResult};
use crate::model::StringMap;

/// The label that makes Flatpak ask for a token before pulling (flatpak-indexer's
/// `force_flatpak_token`).
pub const TOKEN_TYPE_LABEL: &str = "org.flatpak.commit-metadata.xa.token-type";
/// Its value: a serialised GVariant of type `v` holding the int32 1 (token type 1), in
/// base64: `01 00 00 00` (1, little-endian), `00` (separator), `69` (type string `i`).
pub const TOKEN_TYPE_VALUE: &str = "AQAAAABp";
/// The label that names a Flatpak, and the second half of the priority key.
pub const FLATPAK_REF: &str = "org.flatpak.ref";
/// Label prefixes copied into annotations by `flatpak_annotations` (Flatpak 1.4 and older
/// read only annotations).
pub const FLATPAK_PREFIXES: [&str; 2] = ["org.flatpak.", "org.freedesktop."];

/// A regular expression on repository names that must match the whole name (like
/// flatpak-indexer's `re.fullmatch`): `apps/.*` matches `apps/calc`, `apps` does not.
/// Compiled once, when the configuration is loaded.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct RepositoryPattern {
    source: String,
    regex: Regex,
}

impl RepositoryPattern {
    pub fn new(source: &str) -> Result<Self, regex::Error> {
        Ok(Self {
            source: source.to_owned(),
            regex: Regex::new(&format!("^(?:{source})$"))?,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn matches(&self, repository: &str) -> bool {
        self.regex.is_match(repository)
    }
}

impl TryFrom<String> for RepositoryPattern {
    type Error = String;

    fn try_from(source: String) -> Result<Self, String> {
        Self::new(&source).map_err(|e| format!("invalid regular expression {source:?}: {e}"))
    }
}

impl PartialEq for RepositoryPattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for RepositoryPattern {}

/// One named profile (`index_profiles.<name>`). The default changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndexProfile {
    /// Only repositories matching one of these (empty: all).
    pub repository_include: Vec<RepositoryPattern>,
    /// Repositories matching one of these are left out (wins over include).
    pub repository_exclude: Vec<RepositoryPattern>,
    /// For one `(architecture, org.flatpak.ref)` carried by several repositories, only the
    /// repository matching the earliest pattern keeps it. Empty: no selection.
    pub repository_priority: Vec<RepositoryPattern>,
    /// Copy `org.flatpak.*` and `org.freedesktop.*` labels into annotations.
    pub flatpak_annotations: bool,
    /// Add the token-type label ([`TOKEN_TYPE_LABEL`] = [`TOKEN_TYPE_VALUE`]) to every
    /// Flatpak image, so clients ask for a token before pulling.
    pub force_flatpak_token: bool,
}

impl IndexProfile {
    /// True when applying the profile can change an answer.
    pub fn is_identity(&self) -> bool {
        self == &Self::default()
    }

    /// Applies the profile to a built response (see the module documentation for the order).
    pub fn apply(&self, response: &mut IndexResponse) {
        if self.is_identity() {
            return;
        }
        response
            .results
            .retain(|r| includes(&self.repository_include, &self.repository_exclude, &r.name));
        if !self.repository_priority.is_empty() {
            select_by_priority(&mut response.results, &self.repository_priority);
        }
        if self.force_flatpak_token || self.flatpak_annotations {
            for_each_image(&mut response.results, |image| {
                if self.force_flatpak_token {
                    force_token(image);
                }
                if self.flatpak_annotations {
                    copy_flatpak_annotations(&image.labels, &mut image.annotations);
                }
            });
        }
    }
}

/// `repository_include` / `repository_exclude`: excluded when an exclude pattern matches;
/// otherwise included when there are no include patterns or one matches.
pub fn includes(
    include: &[RepositoryPattern],
    exclude: &[RepositoryPattern],
    repository: &str,
) -> bool {
    if exclude.iter().any(|p| p.matches(repository)) {
        return false;
    }
    include.is_empty() || include.iter().any(|p| p.matches(repository))
}

/// Priority rank of a repository: the index of the first matching pattern; repositories
/// no pattern matches come after all of them (`patterns.len()`). Lower wins; between equal
/// ranks the bytewise smaller repository name wins (flatpak-indexer's tie-break), so the
/// choice never depends on input order.
pub fn priority_rank<'a>(patterns: &[RepositoryPattern], repository: &'a str) -> (usize, &'a str) {
    let rank = patterns
        .iter()
        .position(|p| p.matches(repository))
        .unwrap_or(patterns.len());
    (rank, repository)
}

/// The `(architecture, org.flatpak.ref)` of an image, when it is a Flatpak (the label, or
/// the annotation for images built for Flatpak 1.4 and older).
fn ref_key(image: &ImageFields) -> Option<(&str, &str)> {
    let flatpak_ref = image
        .labels
        .get(FLATPAK_REF)
        .or_else(|| image.annotations.get(FLATPAK_REF))?;
    Some((image.architecture.as_str(), flatpak_ref.as_str()))
}

/// Keeps, for each `(architecture, org.flatpak.ref)`, only the images of the best-ranked
/// repository that carries it ([`priority_rank`]). Images that are not Flatpaks are not
/// affected; images of the winning repository are all kept (several tags may carry
/// different builds). List entries are filtered the same way; lists left without entries
/// and repositories left without images and lists are dropped, as for any answer.
pub fn select_by_priority(results: &mut Vec<RepositoryResult>, patterns: &[RepositoryPattern]) {
    let mut winners: BTreeMap<(String, String), (usize, String)> = BTreeMap::new();
    for repository in results.iter() {
        let (rank, name) = priority_rank(patterns, &repository.name);
        let images = repository
            .images
            .iter()
            .map(|i| &i.image)
            .chain(repository.lists.iter().flat_map(|l| &l.images));
        for image in images {
            let Some((arch, flatpak_ref)) = ref_key(image) else {
                continue;
            };
            let candidate = (rank, name.to_owned());
            winners
                .entry((arch.to_owned(), flatpak_ref.to_owned()))
                .and_modify(|best| {
                    if candidate < *best {
                        *best = candidate.clone();
                    }
                })
                .or_insert(candidate);
        }
    }
    let keeps = |repository: &str, image: &ImageFields| match ref_key(image) {
        None => true,
        Some((arch, flatpak_ref)) => winners
            .get(&(arch.to_owned(), flatpak_ref.to_owned()))
            .is_none_or(|(_, winner)| winner == repository),
    };
    for repository in results.iter_mut() {
        let name = repository.name.clone();
        repository.images.retain(|i| keeps(&name, &i.image));
        for list in &mut repository.lists {
            list.images.retain(|i| keeps(&name, i));
        }
        repository.lists.retain(|l| !l.images.is_empty());
    }
    results.retain(|r| !r.images.is_empty() || !r.lists.is_empty());
}

/// Sets the token-type label on a Flatpak image (replacing any other value).
pub fn force_token(image: &mut ImageFields) {
    if ref_key(image).is_some() {
        image
            .labels
            .insert(TOKEN_TYPE_LABEL.to_owned(), TOKEN_TYPE_VALUE.to_owned());
    }
}

/// Copies the `org.flatpak.*` and `org.freedesktop.*` labels into `annotations`. The label
/// wins over an annotation of the same key: labels are what Flatpak 1.6 and later read, so
/// old and new clients see the same values. Labels are kept (flatpak-indexer moves them;
/// copying serves both kinds of client from one answer).
pub fn copy_flatpak_annotations(labels: &StringMap, annotations: &mut StringMap) {
    for (key, value) in labels {
        if FLATPAK_PREFIXES.iter().any(|p| key.starts_with(p)) {
            annotations.insert(key.clone(), value.clone());
        }
    }
}

fn for_each_image(results: &mut [RepositoryResult], mut f: impl FnMut(&mut ImageFields)) {
    for repository in results {
        for image in &mut repository.images {
            f(&mut image.image);
        }
        for list in &mut repository.lists {
            list.images.iter_mut().for_each(&mut f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{ImageResult, ListResult};
    use base64::Engine as _;

    fn patterns(sources: &[&str]) -> Vec<RepositoryPattern> {
        sources
            .iter()
            .map(|s| RepositoryPattern::new(s).unwrap())
            .collect()
    }

    fn image(digest: &str, arch: &str, flatpak_ref: Option<&str>) -> ImageFields {
        ImageFields {
            digest: digest.into(),
            media_type: "m".into(),
            os: "linux".into(),
            architecture: arch.into(),
            annotations: StringMap::new(),
            labels: flatpak_ref
                .map(|r| StringMap::from([(FLATPAK_REF.to_owned(), r.to_owned())]))
                .unwrap_or_default(),
        }
    }

    fn repository(
        name: &str,
        images: Vec<ImageFields>,
        lists: Vec<Vec<ImageFields>>,
    ) -> RepositoryResult {
        RepositoryResult {
            name: name.into(),
            images: images
                .into_iter()
                .map(|image| ImageResult {
                    tags: vec!["latest".into()],
                    image,
                })
                .collect(),
            lists: lists
                .into_iter()
                .enumerate()
                .map(|(n, images)| ListResult {
                    tags: vec!["latest".into()],
                    digest: format!("list{n}"),
                    media_type: "l".into(),
                    images,
                })
                .collect(),
        }
    }

    /// Digests left per repository, images then list entries.
    fn digests(results: &[RepositoryResult]) -> Vec<(String, Vec<String>)> {
        results
            .iter()
            .map(|r| {
                let mut d: Vec<String> = r.images.iter().map(|i| i.image.digest.clone()).collect();
                d.extend(
                    r.lists
                        .iter()
                        .flat_map(|l| l.images.iter().map(|i| i.digest.clone())),
                );
                (r.name.clone(), d)
            })
            .collect()
    }

    #[test]
    fn patterns_match_whole_names() {
        let p = RepositoryPattern::new("apps/.*").unwrap();
        assert!(p.matches("apps/calc"));
        assert!(!p.matches("x/apps/calc"));
        assert!(!RepositoryPattern::new("apps").unwrap().matches("apps/calc"));
        // Alternation stays inside the anchors.
        let alt = RepositoryPattern::new("a|b").unwrap();
        assert!(alt.matches("a") && alt.matches("b") && !alt.matches("ab"));
        let err = RepositoryPattern::try_from("apps/(".to_owned()).unwrap_err();
        assert!(err.contains("apps/("), "{err}");
    }

    #[test]
    fn include_exclude_table() {
        let cases: &[(&[&str], &[&str], &str, bool)] = &[
            (&[], &[], "anything", true),
            (&["apps/.*"], &[], "apps/calc", true),
            (&["apps/.*"], &[], "library/fedora", false),
            (&[], &["apps/beta-.*"], "apps/beta-calc", false),
            (&[], &["apps/beta-.*"], "apps/calc", true),
            // Exclude wins over include.
            (&["apps/.*"], &["apps/beta-.*"], "apps/beta-calc", false),
            (&["apps/.*", "tools/.*"], &[], "tools/bc", true),
        ];
        for (include, exclude, name, expected) in cases {
            assert_eq!(
                includes(&patterns(include), &patterns(exclude), name),
                *expected,
                "include {include:?} exclude {exclude:?} {name}"
            );
        }
    }

    #[test]
    fn priority_rank_table() {
        let p = patterns(&["main/.*", "mirror/.*"]);
        assert_eq!(priority_rank(&p, "main/calc"), (0, "main/calc"));
        assert_eq!(priority_rank(&p, "mirror/calc"), (1, "mirror/calc"));
        assert_eq!(priority_rank(&p, "other/calc"), (2, "other/calc"));
        assert!(priority_rank(&p, "a/calc") > priority_rank(&p, "mirror/calc"));
    }

    #[test]
    fn priority_selection_table() {
        let calc_x86 = Some("app/org.example.Calc/x86_64/stable");
        let calc_arm = Some("app/org.example.Calc/aarch64/stable");
        let input = || {
            vec![
                repository(
                    "main/calc",
                    vec![image("m-amd64", "amd64", calc_x86)],
                    vec![],
                ),
                // The mirror has both arches in a list, and a plain container.
                repository(
                    "mirror/calc",
                    vec![image("m-plain", "amd64", None)],
                    vec![vec![
                        image("x-amd64", "amd64", calc_x86),
                        image("x-arm64", "arm64", calc_arm),
                    ]],
                ),
                repository(
                    "zzz/calc",
                    vec![image("z-amd64", "amd64", calc_x86)],
                    vec![],
                ),
            ]
        };
        // (priority patterns, expected (repository, digests) left).
        type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a [&'a str])]);
        let cases: &[Case] = &[
            // main wins amd64; the mirror keeps arm64 (alone there) and its non-Flatpak.
            (
                &["main/.*", "mirror/.*"],
                &[
                    ("main/calc", &["m-amd64"]),
                    ("mirror/calc", &["m-plain", "x-arm64"]),
                ],
            ),
            (
                &["mirror/.*"],
                &[("mirror/calc", &["m-plain", "x-amd64", "x-arm64"])],
            ),
            // Unmatched repositories compete after all matched ones: zzz ranks 1, main and
            // mirror 2 (tie broken by name).
            (
                &["zzz/.*"],
                &[
                    ("mirror/calc", &["m-plain", "x-arm64"]),
                    ("zzz/calc", &["z-amd64"]),
                ],
            ),
            // Nothing matches: ties everywhere, the smallest name wins.
            (
                &["nope"],
                &[
                    ("main/calc", &["m-amd64"]),
                    ("mirror/calc", &["m-plain", "x-arm64"]),
                ],
            ),
        ];
        for (priority, expected) in cases {
            let mut results = input();
            select_by_priority(&mut results, &patterns(priority));
            let expected: Vec<(String, Vec<String>)> = expected
                .iter()
                .map(|(n, d)| (n.to_string(), d.iter().map(|s| s.to_string()).collect()))
                .collect();
            assert_eq!(digests(&results), expected, "priority {priority:?}");
            // Input order does not matter.
            let mut reversed = input();
            reversed.reverse();
            select_by_priority(&mut reversed, &patterns(priority));
            reversed.sort_by(|a, b| a.name.cmp(&b.name));
            assert_eq!(
                digests(&reversed),
                expected,
                "reversed, priority {priority:?}"
            );
        }
    }

    #[test]
    fn lists_emptied_by_priority_are_dropped() {
        let r = Some("app/a/x86_64/stable");
        let mut results = vec![
            repository("a/app", vec![image("a", "amd64", r)], vec![]),
            repository("b/app", vec![], vec![vec![image("b", "amd64", r)]]),
        ];
        select_by_priority(&mut results, &patterns(&["a/.*"]));
        assert_eq!(
            digests(&results),
            [("a/app".to_owned(), vec!["a".to_owned()])]
        );
    }

    /// Decodes a serialised GVariant of type `v` (a variant): the child's bytes, a zero
    /// byte, then the child's type string (GVariant specification, "Variants").
    fn decode_variant_int32(bytes: &[u8]) -> (String, i32) {
        let separator = bytes.iter().rposition(|&b| b == 0).unwrap();
        let signature = std::str::from_utf8(&bytes[separator + 1..])
            .unwrap()
            .to_owned();
        let value = i32::from_le_bytes(bytes[..separator].try_into().unwrap());
        (signature, value)
    }

    #[test]
    fn token_type_is_a_variant_holding_int32_one() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(TOKEN_TYPE_VALUE)
            .unwrap();
        assert_eq!(bytes, [1, 0, 0, 0, 0, b'i']);
        assert_eq!(decode_variant_int32(&bytes), ("i".to_owned(), 1));
    }

    #[test]
    fn token_only_on_flatpaks_and_copied_with_the_labels() {
        let mut flatpak = image("f", "amd64", Some("app/a/x86_64/stable"));
        flatpak
            .labels
            .insert(TOKEN_TYPE_LABEL.into(), "other".into());
        let mut plain = image("p", "amd64", None);
        force_token(&mut flatpak);
        force_token(&mut plain);
        assert_eq!(flatpak.labels[TOKEN_TYPE_LABEL], TOKEN_TYPE_VALUE);
        assert!(!plain.labels.contains_key(TOKEN_TYPE_LABEL));

        let mut response = IndexResponse {
            registry: "/".into(),
            results: vec![repository(
                "a/app",
                vec![image("f", "amd64", Some("app/a/x86_64/stable"))],
                vec![vec![image("g", "arm64", Some("app/a/aarch64/stable"))]],
            )],
        };
        let profile = IndexProfile {
            force_flatpak_token: true,
            flatpak_annotations: true,
            ..IndexProfile::default()
        };
        profile.apply(&mut response);
        let entry = &response.results[0].lists[0].images[0];
        assert_eq!(entry.labels[TOKEN_TYPE_LABEL], TOKEN_TYPE_VALUE);
        assert_eq!(entry.annotations[TOKEN_TYPE_LABEL], TOKEN_TYPE_VALUE);
        assert_eq!(entry.annotations[FLATPAK_REF], "app/a/aarch64/stable");
    }

    #[test]
    fn annotation_copy_table() {
        // (labels, annotations before, annotations after).
        type Pairs<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Pairs, Pairs, Pairs)] = &[
            (&[], &[], &[]),
            (
                &[
                    ("org.flatpak.ref", "r"),
                    ("org.freedesktop.appstream.icon-64", "i"),
                    ("name", "n"),
                ],
                &[("org.opencontainers.image.title", "t")],
                &[
                    ("org.flatpak.ref", "r"),
                    ("org.freedesktop.appstream.icon-64", "i"),
                    ("org.opencontainers.image.title", "t"),
                ],
            ),
            // The label wins over an annotation of the same key; others stay.
            (
                &[("org.flatpak.ref", "label")],
                &[("org.flatpak.ref", "annotation"), ("org.flatpak.x", "kept")],
                &[("org.flatpak.ref", "label"), ("org.flatpak.x", "kept")],
            ),
            // Prefixes, not substrings.
            (&[("x.org.flatpak.y", "v"), ("org.flatpakx", "v")], &[], &[]),
        ];
        let map = |pairs: &[(&str, &str)]| -> StringMap {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        for (labels, annotations, expected) in cases {
            let labels = map(labels);
            let mut out = map(annotations);
            copy_flatpak_annotations(&labels, &mut out);
            assert_eq!(out, map(expected), "labels {labels:?}");
        }
    }

    #[test]
    fn include_exclude_in_apply_and_identity() {
        let base = IndexResponse {
            registry: "/".into(),
            results: vec![
                repository("apps/beta-calc", vec![image("b", "amd64", None)], vec![]),
                repository("apps/calc", vec![image("c", "amd64", None)], vec![]),
                repository("library/fedora", vec![image("f", "amd64", None)], vec![]),
            ],
        };
        let mut response = base.clone();
        IndexProfile::default().apply(&mut response);
        assert_eq!(response, base);
        let profile = IndexProfile {
            repository_include: patterns(&["apps/.*"]),
            repository_exclude: patterns(&["apps/beta-.*"]),
            ..IndexProfile::default()
        };
        assert!(!profile.is_identity());
        profile.apply(&mut response);
        let names: Vec<_> = response.results.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["apps/calc"]);
    }
}
