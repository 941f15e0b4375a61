//! Static index files (regindexer style): the answers to fixed queries, written to disk
//! for sites that serve their index from a CDN or a plain web server.
//!
//! Each configured index is turned into an ordinary index query string (so a file holds
//! exactly what `/index/static?<that query>` returns: same function, same bytes) and
//! written atomically: a temporary file in the same directory, then a rename, so readers
//! never see a partial file.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tracing::info;

use crate::config::{Config, StaticIndexConfig};
use crate::index::render::render_profile_index;
use crate::index::IndexProfile;
use crate::index::{Query, QueryError};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StaticIndexError {
    #[error("static index {name:?}: its query is invalid: {source}")]
    Query {
        name: String,
        #[source]
        source: QueryError,
    },
    #[error("static index {name:?}: no index profile {profile:?}")]
    UnknownProfile { name: String, profile: String },
    #[error("static index {name:?}: {source}")]
    Store {
        name: String,
        #[source]
        source: StoreError,
    },
    #[error("static index {name:?}: writing {path}: {source}")]
    Write {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What writing one index did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenIndex {
    pub name: String,
    pub path: PathBuf,
    pub bytes: usize,
    /// False when the file already held exactly these bytes (left untouched, so its
    /// modification time and the CDN's copy stay valid).
    pub changed: bool,
}

/// Everything but unreserved characters is percent-encoded in query values.
const VALUE_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn encode(value: &str) -> String {
    utf8_percent_encode(value, VALUE_ENCODE).to_string()
}

/// The index query string equivalent to a static index definition:
/// `tag:matches=<glob>` per tag (any of them), `label:<K>:exists=1` and
/// `annotation:<K>:exists=1` per required key (all of them), `architecture=<A>` (any).
/// A tag without wildcards matches only itself, so `tag:matches` serves both.
pub fn query_string(index: &StaticIndexConfig) -> String {
    let mut parts = Vec::new();
    for tag in &index.tags {
        parts.push(format!("tag%3Amatches={}", encode(tag)));
    }
    for label in &index.required_labels {
        parts.push(format!("label%3A{}%3Aexists=1", encode(label)));
    }
    for annotation in &index.required_annotations {
        parts.push(format!("annotation%3A{}%3Aexists=1", encode(annotation)));
    }
    for architecture in &index.architectures {
        parts.push(format!("architecture={}", encode(architecture)));
    }
    parts.join("&")
}

/// The parsed query of a static index definition.
pub fn query(index: &StaticIndexConfig) -> Result<Query, StaticIndexError> {
    Query::parse(&query_string(index)).map_err(|source| StaticIndexError::Query {
        name: index.name.clone(),
        source,
    })
}

/// Writes `bytes` to `path` atomically (temporary file in the same directory, fsync,
/// rename). Leaves the file alone when it already holds these bytes.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    if std::fs::read(path).is_ok_and(|current| current == bytes) {
        return Ok(false);
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "index".into());
    let temp = dir.join(format!(
        ".{file_name}.{}.{}.tmp",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map(|()| true)
}

/// Renders and writes one static index file (an entry of `static_indexes` after
/// [`StaticIndexConfig::expand`]).
pub async fn write_static_index(
    store: &Store,
    config: &Config,
    index: &StaticIndexConfig,
) -> Result<WrittenIndex, StaticIndexError> {
    let query = query(index)?;
    let registry = index
        .registry_url
        .as_deref()
        .unwrap_or_else(|| config.public_registry_url());
    let default_profile = IndexProfile::default();
    let profile = match &index.profile {
        None => &default_profile,
        // Checked at load (`Config::validate`); a hand-built configuration may not be.
        Some(name) => {
            config
                .index_profiles
                .get(name)
                .ok_or_else(|| StaticIndexError::UnknownProfile {
                    name: index.name.clone(),
                    profile: name.clone(),
                })?
        }
    };
    let rendered = render_profile_index(store, &query, registry, &config.icons, profile)
        .await
        .map_err(|source| StaticIndexError::Store {
            name: index.name.clone(),
            source,
        })?;
    let path = index.output.clone();
    let body = rendered.body;
    let bytes = body.len();
    let write_path = path.clone();
    // File I/O off the async runtime's worker threads.
    let changed = tokio::task::spawn_blocking(move || write_atomically(&write_path, &body))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|r| r)
        .map_err(|source| StaticIndexError::Write {
            name: index.name.clone(),
            path: path.clone(),
            source,
        })?;
    if changed {
        info!(index = %index.name, path = %path.display(), bytes, data_version = rendered.data_version, "static index written");
    }
    Ok(WrittenIndex {
        name: index.name.clone(),
        path,
        bytes,
        changed,
    })
}

/// Writes every configured static index (`static_indexes`). Call it after refetches that
/// changed something and after each full scan. One failing index does not stop the
/// others; the first error is returned after all were tried.
pub async fn write_static_indexes(
    store: &Store,
    config: &Config,
) -> Result<Vec<WrittenIndex>, StaticIndexError> {
    let mut written = Vec::new();
    let mut first_error = None;
    for index in config.static_indexes.iter().flat_map(|i| i.expand()) {
        match write_static_index(store, config, &index).await {
            Ok(done) => written.push(done),
            Err(e) => {
                tracing::warn!(error = %e, "static index not written");
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(written),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> StaticIndexConfig {
        StaticIndexConfig {
            name: "flatpak".into(),
            output: "/tmp/flatpak.json".into(),
            tags: vec!["latest".into(), "latest-*".into()],
            required_labels: vec!["org.flatpak.ref".into()],
            required_annotations: vec!["org.example/x y".into()],
            architectures: vec!["amd64".into()],
            registry_url: None,
            profile: None,
            architecture_expand: vec![],
        }
    }

    #[test]
    fn query_string_is_an_index_query() {
        let index = index();
        assert_eq!(
            query_string(&index),
            "tag%3Amatches=latest&tag%3Amatches=latest-%2A&label%3Aorg.flatpak.ref%3Aexists=1\
             &annotation%3Aorg.example%2Fx%20y%3Aexists=1&architecture=amd64"
        );
        let parsed = query(&index).unwrap();
        assert_eq!(parsed.tag_patterns.len(), 2);
        assert!(parsed.labels["org.flatpak.ref"].exists);
        assert!(parsed.annotations["org.example/x y"].exists);
        assert_eq!(parsed.architectures.len(), 1);
        // Same as what a client would write by hand for /index/static.
        let by_hand = Query::parse(
            "architecture=amd64&label:org.flatpak.ref:exists=1&tag:matches=latest-*\
             &tag:matches=latest&annotation:org.example%2Fx%20y:exists=1",
        )
        .unwrap();
        assert_eq!(parsed, by_hand);
        assert_eq!(
            query_string(&StaticIndexConfig {
                tags: vec![],
                required_labels: vec![],
                required_annotations: vec![],
                architectures: vec![],
                ..index
            }),
            ""
        );
    }

    #[test]
    fn writes_atomically_and_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/index.json");
        assert!(write_atomically(&path, b"one").unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        assert!(!write_atomically(&path, b"one").unwrap());
        assert!(write_atomically(&path, b"two").unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, [std::ffi::OsString::from("index.json")]);
    }
}
