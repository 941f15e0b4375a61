//! Bodhi updates: which builds an update carries, and how a build is found in the
//! registry. Pure logic; the SQL is in `store/bodhi.rs`, the handling in the worker.
//!
//! Bodhi names builds by their Koji NVR (`name-version-release`). Images built the Fedora
//! way (OSBS) carry the same NVR as labels (`com.redhat.component`, `version`, `release`)
//! and a `name` label the registry repository is usually named after, so the labels the
//! index already holds map a build to the repositories that hold it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::model::{Digest, InvalidValue, RepositoryName, Tag};

/// Labels OSBS writes into every image it builds.
pub mod label {
    pub const COMPONENT: &str = "com.redhat.component";
    pub const VERSION: &str = "version";
    pub const RELEASE: &str = "release";
    pub const NAME: &str = "name";
}

/// A Koji build id, `name-version-release`. The name may contain dashes, the version and
/// the release may not (Koji's own rule), so the last two dashes split it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "String")]
pub struct Nvr {
    name: String,
    version: String,
    release: String,
}

impl Nvr {
    /// Koji limits build names to 255 characters; an NVR a little more.
    pub const MAX_LEN: usize = 512;

    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let invalid = |reason| InvalidValue {
            kind: "build NVR",
            value: s.chars().take(300).collect(),
            reason,
        };
        if s.len() > Self::MAX_LEN {
            return Err(invalid("longer than 512 characters"));
        }
        let mut parts = s.rsplitn(3, '-');
        let (Some(release), Some(version), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not name-version-release"));
        };
        if name.is_empty() || version.is_empty() || release.is_empty() {
            return Err(invalid("empty name, version or release"));
        }
        // Koji's characters: letters, digits and `._+~^` (`-` only in the name).
        let allowed = |c: char| c.is_ascii_alphanumeric() || "._+~^".contains(c);
        if !name.chars().all(|c| allowed(c) || c == '-')
            || !version.chars().all(allowed)
            || !release.chars().all(allowed)
            || name.starts_with('-')
        {
            return Err(invalid("characters other than letters, digits and ._+~^-"));
        }
        Ok(Self {
            name: name.to_owned(),
            version: version.to_owned(),
            release: release.to_owned(),
        })
    }

    /// The package (component) name: `flatpak-runtime` of `flatpak-runtime-f41-4120241101.1`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn release(&self) -> &str {
        &self.release
    }

    /// The repository named after the build's name part, when that is a valid
    /// repository name (repository names are lowercase; Koji names need not be).
    pub fn repository_name(&self) -> Option<RepositoryName> {
        RepositoryName::parse(&self.name).ok()
    }
}

impl fmt::Display for Nvr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.name, self.version, self.release)
    }
}

impl From<Nvr> for String {
    fn from(nvr: Nvr) -> String {
        nvr.to_string()
    }
}

/// Which repository Bodhi pushed an update to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdateTarget {
    Stable,
    Testing,
}

impl UpdateTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateTarget::Stable => "stable",
            UpdateTarget::Testing => "testing",
        }
    }
}

/// A `bodhi.update.complete.{stable,testing}` message, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateComplete {
    /// The topic as received (after the fedmsg envelope was taken off).
    pub topic: String,
    pub target: UpdateTarget,
    /// `FEDORA-CONTAINER-2024-1a2b3c4d5e`.
    pub alias: String,
    /// `F41C`, `F41F`, ...
    pub release: String,
    pub status: Option<String>,
    pub request: Option<String>,
    /// `container`, `flatpak`, `rpm`, `module`; absent in minimal messages.
    pub content_type: Option<String>,
    pub builds: Vec<Nvr>,
    /// Builds left out, with the reason (an NVR that does not parse).
    pub skipped_builds: Vec<String>,
}

impl UpdateComplete {
    /// Only container and flatpak updates change what the registry holds. An update
    /// without a content type is treated as one that may (matching it costs only queries).
    pub fn touches_registry(&self) -> bool {
        matches!(
            self.content_type.as_deref(),
            None | Some("container" | "flatpak")
        )
    }
}

/// How a build was found in the index, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BuildMatch {
    /// The repository holds an image whose `com.redhat.component-version-release` is the NVR.
    LabelNvr,
    /// The `name` label of an image carrying the NVR names this repository.
    NameLabel,
    /// The repository holds an earlier build of the component (same `com.redhat.component`).
    Component,
    /// The repository is named after the NVR's name part (`name` or `<namespace>/name`).
    RepositoryName,
    /// The build matched nothing: the repository is in the registry's catalog but not in
    /// the index yet.
    NewRepository,
}

impl BuildMatch {
    /// The `match` label of the worker's metric and the field of the log line.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildMatch::LabelNvr => "label_nvr",
            BuildMatch::NameLabel => "name_label",
            BuildMatch::Component => "component",
            BuildMatch::RepositoryName => "repository_name",
            BuildMatch::NewRepository => "new_repository",
        }
    }
}

/// Keeps, per repository, the strongest way it matched.
pub fn strongest(
    matches: Vec<(RepositoryName, BuildMatch)>,
) -> BTreeMap<RepositoryName, BuildMatch> {
    let mut best: BTreeMap<RepositoryName, BuildMatch> = BTreeMap::new();
    for (repository, how) in matches {
        best.entry(repository)
            .and_modify(|b| *b = (*b).min(how))
            .or_insert(how);
    }
    best
}

/// The repositories of the catalog the index does not hold yet: where a build that
/// matched nothing may have gone.
pub fn not_indexed(
    catalog: impl IntoIterator<Item = RepositoryName>,
    stored: &BTreeSet<RepositoryName>,
) -> BTreeSet<RepositoryName> {
    catalog
        .into_iter()
        .filter(|r| !stored.contains(r))
        .collect()
}

/// The order of a compose's refetches: repositories named by recent updates first (most
/// recent first, each once), then the others.
pub fn compose_order(
    recent: Vec<RepositoryName>,
    all: BTreeSet<RepositoryName>,
) -> (Vec<RepositoryName>, BTreeSet<RepositoryName>) {
    let mut first = Vec::new();
    let mut seen = BTreeSet::new();
    for repository in recent {
        if seen.insert(repository.clone()) {
            first.push(repository);
        }
    }
    let rest = all.into_iter().filter(|r| !seen.contains(r)).collect();
    (first, rest)
}

/// Whether the registry's tags of a repository (listed and resolved by HEAD) differ from
/// the stored ones, so that the repository needs a refetch. A repository the store does
/// not hold differs when the registry has tags for it.
pub fn tags_differ(
    stored: Option<&BTreeMap<Tag, Digest>>,
    registry: &BTreeMap<Tag, Digest>,
) -> bool {
    match stored {
        Some(stored) => stored != registry,
        None => !registry.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nvr(s: &str) -> Nvr {
        Nvr::parse(s).unwrap()
    }

    fn repo(s: &str) -> RepositoryName {
        RepositoryName::parse(s).unwrap()
    }

    #[test]
    fn nvr_splits_at_the_last_two_dashes() {
        let n = nvr("flatpak-runtime-f41-4120241101.1");
        assert_eq!(
            (n.name(), n.version(), n.release()),
            ("flatpak-runtime", "f41", "4120241101.1")
        );
        let n = nvr("eog-stable-4120241104083322.1");
        assert_eq!(
            (n.name(), n.version(), n.release()),
            ("eog", "stable", "4120241104083322.1")
        );
        let n = nvr("python-requests-toolbelt-1.0.0~rc1-3.fc41");
        assert_eq!(n.name(), "python-requests-toolbelt");
        assert_eq!(n.version(), "1.0.0~rc1");
        assert_eq!(n.to_string(), "python-requests-toolbelt-1.0.0~rc1-3.fc41");
        assert_eq!(n.repository_name(), Some(repo("python-requests-toolbelt")));
    }

    #[test]
    fn bad_nvrs_are_refused() {
        for bad in [
            "",
            "name",
            "name-1",
            "-1-2",
            "name--2",
            "name-1-",
            "name 1-2-3",
            "name-1-2;drop",
            "../etc-1-2",
        ] {
            assert!(Nvr::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Nvr::parse(&format!("{}-1-1", "a".repeat(600))).is_err());
    }

    #[test]
    fn uppercase_names_have_no_repository_name() {
        let n = nvr("GConf2-3.2.6-1.fc41");
        assert_eq!(n.repository_name(), None);
    }

    #[test]
    fn content_types() {
        let mut update = UpdateComplete {
            topic: "t".into(),
            target: UpdateTarget::Stable,
            alias: "a".into(),
            release: "F41C".into(),
            status: None,
            request: None,
            content_type: Some("container".into()),
            builds: vec![],
            skipped_builds: vec![],
        };
        assert!(update.touches_registry());
        update.content_type = Some("flatpak".into());
        assert!(update.touches_registry());
        update.content_type = None;
        assert!(update.touches_registry());
        update.content_type = Some("rpm".into());
        assert!(!update.touches_registry());
    }

    #[test]
    fn strongest_match_wins_per_repository() {
        let best = strongest(vec![
            (repo("a"), BuildMatch::RepositoryName),
            (repo("a"), BuildMatch::LabelNvr),
            (repo("b"), BuildMatch::Component),
        ]);
        assert_eq!(best[&repo("a")], BuildMatch::LabelNvr);
        assert_eq!(best[&repo("b")], BuildMatch::Component);
    }

    #[test]
    fn new_repositories_are_the_catalog_minus_the_store() {
        let stored: BTreeSet<_> = [repo("a"), repo("gone")].into();
        let fresh = not_indexed([repo("a"), repo("b")], &stored);
        assert_eq!(fresh, [repo("b")].into());
    }

    #[test]
    fn recent_update_repositories_come_first_once() {
        let all: BTreeSet<_> = [repo("a"), repo("b"), repo("c")].into();
        let (first, rest) = compose_order(vec![repo("c"), repo("x"), repo("c")], all);
        assert_eq!(first, [repo("c"), repo("x")]);
        assert_eq!(rest, [repo("a"), repo("b")].into());
    }

    #[test]
    fn tag_differences() {
        let d1 = Digest::parse(&format!("sha256:{}", "1".repeat(64))).unwrap();
        let d2 = Digest::parse(&format!("sha256:{}", "2".repeat(64))).unwrap();
        let latest = Tag::parse("latest").unwrap();
        let one: BTreeMap<_, _> = [(latest.clone(), d1.clone())].into();
        let moved: BTreeMap<_, _> = [(latest.clone(), d2)].into();
        let empty = BTreeMap::new();
        assert!(!tags_differ(Some(&one), &one));
        assert!(tags_differ(Some(&one), &moved));
        assert!(tags_differ(Some(&one), &empty), "every tag deleted");
        assert!(tags_differ(None, &one), "never indexed");
        assert!(!tags_differ(None, &empty));
        let two: BTreeMap<_, _> = [(latest, d1.clone()), (Tag::parse("1").unwrap(), d1)].into();
        assert!(tags_differ(Some(&one), &two), "a tag added");
    }
}
