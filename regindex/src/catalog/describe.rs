//! What to call a repository and how to describe it to people (pure).
//!
//! Images name themselves through many conventions: OCI annotations, the same keys as
//! labels, OpenShift's `io.k8s.*`, label-schema, the bare `name` / `description` labels of
//! OSBS builds, and Flatpaks through their `org.flatpak.ref`. The web page and the search
//! index both take a repository's title and description from here, so they agree.

use crate::model::{Image, StringMap};

/// Keys tried, in order, for a title (annotations first, then labels).
pub const TITLE_KEYS: [&str; 5] = [
    "org.opencontainers.image.title",
    "io.k8s.display-name",
    "name",
    "org.label-schema.name",
    "summary",
];

/// Keys tried, in order, for a description.
pub const DESCRIPTION_KEYS: [&str; 5] = [
    "org.opencontainers.image.description",
    "io.k8s.description",
    "description",
    "org.label-schema.description",
    "summary",
];

/// Longest title / description kept (characters): labels are untrusted and unbounded.
pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_DESCRIPTION_CHARS: usize = 2000;

/// A repository's human-facing summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Never empty: falls back to the repository name.
    pub title: String,
    pub description: String,
    /// The Flatpak application or runtime id (`org.gnome.Calculator`), when a Flatpak.
    pub flatpak_id: Option<String>,
    /// Icon label values (data URIs or URLs) of the first image that has any, 128 px
    /// before 64 px: the first one that is a usable icon is shown.
    pub icons: Vec<String>,
}

/// The id part of a Flatpak ref: `app/org.gnome.Calculator/x86_64/stable` gives
/// `org.gnome.Calculator`.
pub fn flatpak_id(flatpak_ref: &str) -> Option<&str> {
    let mut parts = flatpak_ref.split('/');
    let kind = parts.next()?;
    let id = parts.next()?;
    if !matches!(kind, "app" | "runtime") || id.is_empty() {
        return None;
    }
    Some(id)
}

fn lookup<'a>(maps: &[&'a StringMap], keys: &[&str]) -> Option<&'a str> {
    for key in keys {
        for map in maps {
            if let Some(value) = map.get(*key) {
                let value = value.trim();
                if !value.is_empty() {
                    return Some(value);
                }
            }
        }
    }
    None
}

/// Keeps at most `max_chars` characters of `value`, marking a cut with `…` (titles and
/// descriptions here, long values on the web pages).
pub fn truncate(value: &str, max_chars: usize) -> String {
    match value.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}…", &value[..end]),
        None => value.to_owned(),
    }
}

/// What [`summarize`] reads of an image: its annotations and its labels.
pub trait Described {
    fn annotations(&self) -> &StringMap;
    fn labels(&self) -> &StringMap;
}

impl Described for Image {
    fn annotations(&self) -> &StringMap {
        &self.annotations
    }
    fn labels(&self) -> &StringMap {
        &self.labels
    }
}

impl Described for (StringMap, StringMap) {
    fn annotations(&self) -> &StringMap {
        &self.0
    }
    fn labels(&self) -> &StringMap {
        &self.1
    }
}

/// Summarises a repository from its images, most representative first (the caller puts
/// the images tagged `latest` first). The first image that says something wins for each
/// field; the title falls back to the Flatpak id and then to the repository name.
pub fn summarize<'a, D: Described + 'a>(
    repository: &str,
    images: impl IntoIterator<Item = &'a D>,
) -> Summary {
    let mut title = None;
    let mut description = None;
    let mut flatpak = None;
    let mut icons: Vec<&str> = Vec::new();
    for image in images {
        let maps = [image.annotations(), image.labels()];
        title = title.or_else(|| lookup(&maps, &TITLE_KEYS));
        description = description.or_else(|| lookup(&maps, &DESCRIPTION_KEYS));
        flatpak = flatpak.or_else(|| lookup(&maps, &["org.flatpak.ref"]).and_then(flatpak_id));
        if icons.is_empty() {
            for key in [
                "org.freedesktop.appstream.icon-128",
                "org.freedesktop.appstream.icon-64",
            ] {
                icons.extend(lookup(&maps, &[key]));
            }
        }
        if title.is_some() && description.is_some() && flatpak.is_some() && !icons.is_empty() {
            break;
        }
    }
    let title = title.or(flatpak).unwrap_or(repository);
    Summary {
        title: truncate(title, MAX_TITLE_CHARS),
        description: truncate(description.unwrap_or(""), MAX_DESCRIPTION_CHARS),
        flatpak_id: flatpak.map(str::to_owned),
        icons: icons.into_iter().map(str::to_owned).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{media_type, Digest};

    fn image(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Image {
        let map = |kv: &[(&str, &str)]| -> StringMap {
            kv.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        Image {
            digest: Digest::sha256_of(format!("{labels:?}{annotations:?}").as_bytes()),
            media_type: media_type::OCI_MANIFEST.into(),
            os: "linux".into(),
            architecture: "amd64".into(),
            annotations: map(annotations),
            labels: map(labels),
            config_digest: Digest::sha256_of(b"config"),
        }
    }

    #[test]
    fn flatpak_ids() {
        assert_eq!(
            flatpak_id("app/org.gnome.Calculator/x86_64/stable"),
            Some("org.gnome.Calculator")
        );
        assert_eq!(
            flatpak_id("runtime/org.fedoraproject.Platform/x86_64/f40"),
            Some("org.fedoraproject.Platform")
        );
        assert_eq!(flatpak_id("nonsense"), None);
        assert_eq!(flatpak_id("app//x86_64"), None);
    }

    #[test]
    fn annotations_win_over_labels_and_keys_keep_their_order() {
        let img = image(
            &[
                ("org.opencontainers.image.title", "Label title"),
                ("name", "fedora"),
            ],
            &[("org.opencontainers.image.title", "Annotation title")],
        );
        assert_eq!(summarize("r", [&img]).title, "Annotation title");
        let img = image(
            &[("name", "fedora"), ("io.k8s.display-name", "Fedora Base")],
            &[],
        );
        assert_eq!(summarize("r", [&img]).title, "Fedora Base");
        let img = image(
            &[
                ("org.label-schema.name", "Schema"),
                ("org.label-schema.description", "D"),
            ],
            &[],
        );
        let summary = summarize("r", [&img]);
        assert_eq!(
            (summary.title.as_str(), summary.description.as_str()),
            ("Schema", "D")
        );
    }

    #[test]
    fn flatpaks_fall_back_to_their_id_and_then_the_repository_name() {
        let img = image(
            &[
                ("org.flatpak.ref", "app/org.gnome.Calculator/x86_64/stable"),
                ("org.freedesktop.appstream.icon-64", "data:64"),
                ("org.freedesktop.appstream.icon-128", "data:128"),
            ],
            &[],
        );
        let summary = summarize("apps/calculator", [&img]);
        assert_eq!(summary.title, "org.gnome.Calculator");
        assert_eq!(summary.flatpak_id.as_deref(), Some("org.gnome.Calculator"));
        assert_eq!(summary.icons, ["data:128", "data:64"]);
        assert_eq!(summary.description, "");

        let bare = image(&[("name", "   ")], &[]);
        assert_eq!(summarize("library/fedora", [&bare]).title, "library/fedora");
        assert_eq!(
            summarize::<Image>("library/fedora", []).title,
            "library/fedora"
        );
    }

    #[test]
    fn earlier_images_win_field_by_field() {
        let first = image(&[("name", "First")], &[]);
        let second = image(&[("name", "Second"), ("description", "From second")], &[]);
        let summary = summarize("r", [&first, &second]);
        assert_eq!(summary.title, "First");
        assert_eq!(summary.description, "From second");
    }

    #[test]
    fn truncate_cuts_on_characters_and_marks_the_cut() {
        assert_eq!(truncate("ééé", 2), "éé…");
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("", 0), "");
    }

    #[test]
    fn long_values_are_truncated_on_char_boundaries() {
        let long = "é".repeat(MAX_TITLE_CHARS + 10);
        let img = image(&[("name", &long)], &[]);
        let title = summarize("r", [&img]).title;
        assert_eq!(title.chars().count(), MAX_TITLE_CHARS + 1);
        assert!(title.ends_with('…'));
    }
}
