//! The index response as served: the one function that turns a query into the bytes of
//! `/index/static`, `/index/dynamic` and the static index files, so that they can never
//! differ.
//!
//! An answer is assembled from per-repository parts: `{"Registry":…,"Results":[` (the
//! head), each repository's `Results` entry serialised on its own and joined by commas,
//! and `]}`. A part is keyed on its repository's own version (`changed_version`, written
//! by the commit that last changed the repository), so rendering again after a push reads
//! and builds only the repositories whose version moved, and reuses every other part's
//! bytes. A fresh render is the same code with no parts to reuse.
//!
//! The gzip body is compressed in chunks of about 64 KiB of consecutive parts (deflate
//! looks back 32 KiB at most, so this compresses nearly as well as the whole answer at
//! once), joined without compressing again (`gzip.rs`). A chunk is keyed by the hashes
//! of what it holds, and its boundaries depend on the parts next to them alone, so a
//! render after a push compresses again only the chunk around each changed part.
//!
//! Icon URLs replace a data URI only for icons stored for the repository's own images,
//! so a part depends on its repository's data alone (an icon stored for another
//! repository may be garbage-collected once that repository moves on).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use crate::catalog::icons;
use crate::config::IconsConfig;
use crate::index::gzip::{self, Piece};
use crate::index::{
    build_response, ImageFields, IndexProfile, IndexResponse, Query, RepositoryResult,
};
use crate::model::RepositoryName;
use crate::store::{KnownParts, Store, StoreError};

/// A rendered index response and the data version it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedIndex {
    pub data_version: i64,
    pub body: Vec<u8>,
}

/// One repository's part of an answer.
#[derive(Debug)]
pub struct Part {
    /// The repository's own version the part was built at.
    pub version: i64,
    /// Its `Results` entry as JSON; empty when the repository contributes nothing.
    pub json: Vec<u8>,
    /// SHA-256 of `json`.
    hash: [u8; 32],
}

impl Part {
    fn new(version: i64, json: Vec<u8>) -> Self {
        Self {
            version,
            hash: Sha256::digest(&json).into(),
            json,
        }
    }
}

/// The parts of one query's answer, by repository (every repository the query can
/// select, including those that contribute nothing), and its compressed chunks in order
/// (none when the render was not asked for gzip): what the next render reuses.
#[derive(Debug, Default)]
pub struct Parts {
    /// The data version the parts were read at: no repository changed after it has a
    /// part here.
    data_version: i64,
    by_repository: BTreeMap<RepositoryName, Arc<Part>>,
    chunks: Vec<Chunk>,
}

impl Parts {
    /// Bytes held (shared parts and chunks counted in each set that holds them).
    pub fn size(&self) -> usize {
        self.by_repository
            .values()
            .map(|p| p.json.len())
            .sum::<usize>()
            + self.chunks.iter().map(|c| c.piece.len()).sum::<usize>()
    }
}

/// Consecutive bytes of the answer compressed as one gzip piece, keyed by what they hold.
#[derive(Debug, Clone)]
struct Chunk {
    key: [u8; 32],
    piece: Arc<Piece>,
}

/// The uncompressed size chunks average: twice deflate's window, so that a chunk loses
/// little against compressing the whole answer (on the 500×4 bench answer the body is
/// 1.16 times the whole-compressed size; 1.27 at 32 KiB, 6.6 with a piece per
/// repository), while a change costs compressing about this much again.
const CHUNK_TARGET: u64 = 64 * 1024;

/// A chunk ends at the first part boundary past this size, whatever the parts' hashes.
const CHUNK_MAX: usize = 4 * CHUNK_TARGET as usize;

/// Whether a chunk ends after a part of `part_len` bytes hashed `hash`, the chunk being
/// `chunk_len` bytes long with it. A chunk ends after a part with probability
/// `part_len / CHUNK_TARGET`, drawn from the part's hash: chunks average the target
/// whatever the parts' sizes, and each boundary depends on its own part alone, so a
/// changed, added or removed part moves only the boundaries beside it.
fn ends_chunk(hash: &[u8; 32], part_len: usize, chunk_len: usize) -> bool {
    let draw = u64::from(u32::from_le_bytes([hash[0], hash[1], hash[2], hash[3]]));
    chunk_len >= CHUNK_MAX || draw * CHUNK_TARGET < (part_len as u64) << 32
}

/// The answer's gzip chunks: `head`, the non-empty `parts` joined by commas, and the
/// tail, cut by [`ends_chunk`]. A chunk found in `reuse` (by key) is not compressed again
/// (CPU work: call it off the async executor).
fn compress(head: &[u8], parts: &[&Part], reuse: &HashMap<[u8; 32], Arc<Piece>>) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let mut bytes: Vec<&[u8]> = Vec::new();
    // The key tags each member, so that different member lists cannot hash alike.
    let mut key = Sha256::new();
    key.update(b"h");
    key.update(Sha256::digest(head));
    bytes.push(head);
    let mut len = head.len();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            bytes.push(SEPARATOR);
            len += SEPARATOR.len();
        }
        key.update(if i > 0 { b"c" } else { b"p" });
        key.update(part.hash);
        bytes.push(&part.json);
        len += part.json.len();
        if i + 1 < parts.len() && ends_chunk(&part.hash, part.json.len(), len) {
            let full = std::mem::replace(&mut key, Sha256::new());
            chunks.push(chunk(
                full.finalize().into(),
                &std::mem::take(&mut bytes),
                reuse,
            ));
            len = 0;
        }
    }
    key.update(b"t");
    bytes.push(TAIL);
    chunks.push(chunk(key.finalize().into(), &bytes, reuse));
    chunks
}

fn chunk(key: [u8; 32], bytes: &[&[u8]], reuse: &HashMap<[u8; 32], Arc<Piece>>) -> Chunk {
    let piece = match reuse.get(&key) {
        Some(piece) => piece.clone(),
        None => Arc::new(Piece::new(&bytes.concat())),
    };
    Chunk { key, piece }
}

/// An answer as parts: the bytes are [`RenderedParts::json`] and [`RenderedParts::gzip`].
#[derive(Debug)]
pub struct RenderedParts {
    pub data_version: i64,
    /// `{"Registry":<registry>,"Results":[`.
    head: Vec<u8>,
    pub parts: Arc<Parts>,
    /// Parts rebuilt by this render (the others were reused).
    pub rebuilt: usize,
}

const TAIL: &[u8] = b"]}";
const SEPARATOR: &[u8] = b",";

impl RenderedParts {
    fn non_empty(&self) -> impl Iterator<Item = &Part> + Clone {
        non_empty(&self.parts.by_repository)
    }

    /// Length of [`RenderedParts::json`].
    pub fn json_len(&self) -> usize {
        let parts: usize = self
            .non_empty()
            .map(|p| p.json.len() + SEPARATOR.len())
            .sum();
        // One separator fewer than parts.
        self.head.len() + parts.saturating_sub(SEPARATOR.len()) + TAIL.len()
    }

    /// The answer's JSON: head, non-empty parts joined by commas, tail.
    pub fn json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.json_len());
        out.extend_from_slice(&self.head);
        for (i, part) in self.non_empty().enumerate() {
            if i > 0 {
                out.extend_from_slice(SEPARATOR);
            }
            out.extend_from_slice(&part.json);
        }
        out.extend_from_slice(TAIL);
        out
    }

    /// The answer gzipped (the same bytes as [`RenderedParts::json`]) as the slices to
    /// send in order, sharing its chunks' compressed bytes; `None` when the render was
    /// not asked for gzip.
    pub fn gzip_member(&self) -> Option<Vec<Bytes>> {
        let chunks = &self.parts.chunks;
        (!chunks.is_empty()).then(|| gzip::member(chunks.iter().map(|c| &*c.piece)))
    }

    /// [`RenderedParts::gzip_member`] in one buffer.
    pub fn gzip(&self) -> Option<Vec<u8>> {
        self.gzip_member().map(|member| member.concat())
    }

    /// A strong validator of the answer's bytes without hashing them all again: SHA-256
    /// over the head, each non-empty part's SHA-256 in order, and the tail. Equal data
    /// gives equal parts, so equal hashes in every process.
    pub fn hash(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(b"regindex parts v1\n");
        hasher.update(Sha256::digest(&self.head));
        for part in self.non_empty() {
            hasher.update(part.hash);
        }
        hasher.update(TAIL);
        hasher.finalize().into()
    }
}

/// Runs `query`, builds the response with `registry` as its `Registry`, replaces icon
/// data URIs by icon URLs when `icons.extract` is on, and serialises it. The CPU work
/// (building, decoding and hashing icons, serialising) runs off the async executor.
pub async fn render_index(
    store: &Store,
    query: &Query,
    registry: &str,
    icons: &IconsConfig,
) -> Result<RenderedIndex, StoreError> {
    render_profile_index(store, query, registry, icons, &IndexProfile::default()).await
}

/// [`render_index`] with an index profile applied to the built response, before icon
/// URLs are substituted (so copied icon annotations get URLs too). Static files and
/// `/profiles/<name>/index/...` both come from here.
pub async fn render_profile_index(
    store: &Store,
    query: &Query,
    registry: &str,
    icons: &IconsConfig,
    profile: &IndexProfile,
) -> Result<RenderedIndex, StoreError> {
    let rendered = render_parts(store, query, registry, icons, profile, None, false).await?;
    let data_version = rendered.data_version;
    let body = blocking(move || rendered.json()).await?;
    Ok(RenderedIndex { data_version, body })
}

/// The answer to `query` as parts, reusing the parts of `previous` (an earlier render of
/// the same query, registry, icon settings and profile) whose repository has not changed
/// since. With `gzip`, the answer is compressed as well, reusing `previous`'s chunks.
pub async fn render_parts(
    store: &Store,
    query: &Query,
    registry: &str,
    icons: &IconsConfig,
    profile: &IndexProfile,
    previous: Option<&Parts>,
    gzip: bool,
) -> Result<RenderedParts, StoreError> {
    // Priority selection weighs repositories against each other: a change in one can
    // change another's part, so nothing is reused.
    let previous = previous.filter(|_| profile.repository_priority.is_empty());
    let version_of = |name: &RepositoryName| {
        previous
            .and_then(|p| p.by_repository.get(name))
            .map(|part| part.version)
    };
    let known = previous.map(|p| KnownParts {
        data_version: p.data_version,
        count: p.by_repository.len(),
        version_of: &version_of,
    });
    let snapshot = store
        .query_index_parts(query, known.as_ref(), icons.extract)
        .await?;
    let chunks: HashMap<[u8; 32], Arc<Piece>> = previous
        .filter(|_| gzip)
        .map(|p| p.chunks.iter().map(|c| (c.key, c.piece.clone())).collect())
        .unwrap_or_default();
    // The parts kept: the previous render's, less those read again and, when not every
    // repository it had is still there, those gone.
    let kept: BTreeMap<RepositoryName, Arc<Part>> = match (previous, &snapshot.versions) {
        (None, _) => BTreeMap::new(),
        (Some(previous), None) => previous.by_repository.clone(),
        (Some(previous), Some(versions)) => previous
            .by_repository
            .iter()
            .filter(|(name, _)| versions.contains_key(*name))
            .map(|(name, part)| (name.clone(), part.clone()))
            .collect(),
    };
    let (query, registry, config, profile) = (
        query.clone(),
        registry.to_owned(),
        icons.clone(),
        profile.clone(),
    );
    blocking(move || {
        let mut response = build_response(&registry, &query, snapshot.listings);
        profile.apply(&mut response);
        if config.extract {
            let files = icon_files(&response, config.max_bytes);
            for repository in &mut response.results {
                let stored = RepositoryName::parse(&repository.name)
                    .ok()
                    .and_then(|name| snapshot.icons.get(&name));
                if let Some(stored) = stored {
                    rewrite_repository(repository, &icon_urls(&files, stored, &config));
                }
            }
        }
        let mut built: HashMap<String, Vec<u8>> = response
            .results
            .iter()
            .map(|r| (r.name.clone(), serialise(r)))
            .collect();
        let rebuilt = snapshot.read.len();
        let mut by_repository = kept;
        for (name, version) in snapshot.read {
            let json = built.remove(name.as_str()).unwrap_or_default();
            by_repository.insert(name, Arc::new(Part::new(version, json)));
        }
        let head = head(&response.registry);
        let chunks = if gzip {
            let non_empty: Vec<&Part> = non_empty(&by_repository).collect();
            compress(&head, &non_empty, &chunks)
        } else {
            Vec::new()
        };
        RenderedParts {
            data_version: snapshot.data_version,
            head,
            parts: Arc::new(Parts {
                data_version: snapshot.data_version,
                by_repository,
                chunks,
            }),
            rebuilt,
        }
    })
    .await
}

/// The parts that contribute to the answer, in its order.
fn non_empty(parts: &BTreeMap<RepositoryName, Arc<Part>>) -> impl Iterator<Item = &Part> + Clone {
    parts.values().map(|p| &**p).filter(|p| !p.json.is_empty())
}

/// `{"Registry":<registry>,"Results":[`, as `IndexResponse::to_json` writes it.
fn head(registry: &str) -> Vec<u8> {
    let mut out = b"{\"Registry\":".to_vec();
    out.extend_from_slice(&serde_json::to_vec(registry).unwrap_or_default());
    out.extend_from_slice(b",\"Results\":[");
    out
}

/// One `Results` entry, as `IndexResponse::to_json` writes it.
fn serialise(repository: &RepositoryResult) -> Vec<u8> {
    // Serialising plain strings, vectors and string maps cannot fail.
    serde_json::to_vec(repository).unwrap_or_default()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Inconsistent {
            repository: String::new(),
            detail: format!("index rendering task failed: {e}"),
        })
}

/// Each distinct icon data URI of `response` with the file name of its icon (`None`
/// when it is not a valid icon). The same icon appears in every image of an app (all
/// arches, all tags): each distinct value is decoded and hashed once. Only the header is
/// checked here: a URL is only given for a stored icon, and those were checked fully.
fn icon_files(response: &IndexResponse, max_bytes: usize) -> HashMap<String, Option<String>> {
    let mut files: HashMap<String, Option<String>> = HashMap::new();
    let mut visit = |image: &ImageFields| {
        for map in [&image.labels, &image.annotations] {
            for key in icons::ICON_KEYS {
                if let Some(value) = map.get(key) {
                    if icons::is_data_uri(value) && !files.contains_key(value) {
                        let file = icons::parse_data_uri(value, max_bytes, icons::Check::Header)
                            .ok()
                            .map(|icon| icon.file_name());
                        files.insert(value.clone(), file);
                    }
                }
            }
        }
    };
    for repository in &response.results {
        repository.images.iter().for_each(|i| visit(&i.image));
        repository
            .lists
            .iter()
            .flat_map(|l| &l.images)
            .for_each(&mut visit);
    }
    files
}

/// Data URI -> icon URL, for the icons in `stored` (those stored for the repository's
/// images). An icon that is not stored (invalid, too large, or ingested before extraction
/// and not backfilled) keeps its data URI, so the answer is never worse than without
/// extraction.
fn icon_urls(
    files: &HashMap<String, Option<String>>,
    stored: &HashSet<String>,
    config: &IconsConfig,
) -> HashMap<String, String> {
    files
        .iter()
        .filter_map(|(value, file)| {
            let file = file.as_ref()?;
            let hash = file.split_once('.').map(|(hash, _)| hash)?;
            stored.contains(hash).then(|| {
                (
                    value.clone(),
                    icons::icon_url(config.base_url.as_deref(), file),
                )
            })
        })
        .collect()
}

/// Replaces icon values found in `urls` (data URI -> URL) in every image's labels and
/// annotations.
pub fn rewrite_response(response: &mut IndexResponse, urls: &HashMap<String, String>) {
    for repository in &mut response.results {
        rewrite_repository(repository, urls);
    }
}

fn rewrite_repository(repository: &mut RepositoryResult, urls: &HashMap<String, String>) {
    if urls.is_empty() {
        return;
    }
    let mut rewrite = |image: &mut ImageFields| {
        for map in [&mut image.labels, &mut image.annotations] {
            icons::rewrite(map, |value| urls.get(value).cloned());
        }
    };
    for image in &mut repository.images {
        rewrite(&mut image.image);
    }
    for list in &mut repository.lists {
        list.images.iter_mut().for_each(&mut rewrite);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::gzip::tests::gunzip;
    use crate::index::{ImageResult, ListResult, RepositoryResult};
    use crate::model::StringMap;

    fn fields(icon: &str) -> ImageFields {
        ImageFields {
            digest: "sha256:x".into(),
            media_type: "m".into(),
            os: "linux".into(),
            architecture: "amd64".into(),
            annotations: StringMap::from([(icons::ICON_KEYS[1].to_owned(), icon.to_owned())]),
            labels: StringMap::from([
                (icons::ICON_KEYS[0].to_owned(), icon.to_owned()),
                ("other".to_owned(), icon.to_owned()),
            ]),
        }
    }

    fn repository(name: &str, icon: &str) -> RepositoryResult {
        RepositoryResult {
            name: name.into(),
            images: vec![ImageResult {
                tags: vec!["latest".into(), "é\"\u{1}".into()],
                image: fields(icon),
            }],
            lists: vec![],
        }
    }

    fn as_parts(response: &IndexResponse, empty: &[&str]) -> RenderedParts {
        let mut by_repository: BTreeMap<RepositoryName, Arc<Part>> = response
            .results
            .iter()
            .map(|r| {
                let name = RepositoryName::parse(&r.name).unwrap();
                (name, Arc::new(Part::new(1, serialise(r))))
            })
            .collect();
        for name in empty {
            by_repository.insert(
                RepositoryName::parse(name).unwrap(),
                Arc::new(Part::new(1, Vec::new())),
            );
        }
        let head = head(&response.registry);
        let non_empty: Vec<&Part> = non_empty(&by_repository).collect();
        let chunks = compress(&head, &non_empty, &HashMap::new());
        RenderedParts {
            data_version: 1,
            head,
            parts: Arc::new(Parts {
                data_version: 1,
                by_repository,
                chunks,
            }),
            rebuilt: 0,
        }
    }

    /// `n` similar repositories (as a registry's apps are), one of them changed by `seed`.
    fn many(n: usize, changed: usize, seed: &str) -> IndexResponse {
        IndexResponse {
            registry: "/".into(),
            results: (0..n)
                .map(|i| {
                    let icon = if i == changed { seed } else { "data:icon" };
                    let mut repository = repository(&format!("apps/app{i:04}"), icon);
                    // Digests differ per image, as they do in a registry.
                    let digest = hex::encode(Sha256::digest(repository.name.as_bytes()));
                    repository.images[0].image.digest = format!("sha256:{digest}");
                    repository
                })
                .collect(),
        }
    }

    /// A large answer is cut into several chunks that compress about as well as the whole
    /// answer at once; changing one repository compresses one or two chunks again, and
    /// gives the bytes a fresh compression gives.
    #[test]
    fn chunks_compress_like_the_whole_and_a_change_recompresses_few() {
        let before = as_parts(&many(2000, 0, "data:icon"), &[]);
        let json = before.json();
        assert!(
            before.parts.chunks.len() > 4,
            "{} chunks",
            before.parts.chunks.len()
        );
        let gzip = before.gzip().unwrap();
        assert_eq!(gunzip(&gzip), json);
        let mut whole = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut whole, &json).unwrap();
        let whole = whole.finish().unwrap();
        assert!(
            gzip.len() * 10 <= whole.len() * 12,
            "chunked {} bytes, whole {} bytes",
            gzip.len(),
            whole.len()
        );

        let after = as_parts(&many(2000, 1000, "data:other"), &[]);
        let reuse: HashMap<[u8; 32], Arc<Piece>> = before
            .parts
            .chunks
            .iter()
            .map(|c| (c.key, c.piece.clone()))
            .collect();
        let head = head("/");
        let non_empty: Vec<&Part> = non_empty(&after.parts.by_repository).collect();
        let incremental = compress(&head, &non_empty, &reuse);
        let new = incremental
            .iter()
            .filter(|c| !reuse.contains_key(&c.key))
            .count();
        assert!(
            (1..=2).contains(&new),
            "{new} of {} chunks new",
            incremental.len()
        );
        let assembled = gzip::assemble(incremental.iter().map(|c| &*c.piece));
        assert_eq!(assembled, after.gzip().unwrap());
        assert_eq!(gunzip(&assembled), after.json());
    }

    /// Parts joined give exactly the bytes of the whole response serialised at once,
    /// and their gzip decompresses to those bytes.
    #[test]
    fn parts_assemble_into_the_serialised_response() {
        for results in [
            vec![],
            vec![repository("a", "data:x")],
            vec![
                repository("a", "data:x"),
                repository("b/c", "y"),
                repository("z", "\"quoted\"\n"),
            ],
        ] {
            let response = IndexResponse {
                registry: "https://r.example/\"x\"".into(),
                results,
            };
            let parts = as_parts(&response, &["m/empty", "0"]);
            assert_eq!(parts.json(), response.to_json());
            assert_eq!(parts.json_len(), parts.json().len());
            assert_eq!(gunzip(&parts.gzip().unwrap()), response.to_json());
            // The validator follows the bytes, not the empty parts.
            assert_eq!(parts.hash(), as_parts(&response, &[]).hash());
        }
        let one = IndexResponse {
            registry: "/".into(),
            results: vec![repository("a", "x")],
        };
        let other = IndexResponse {
            registry: "/".into(),
            results: vec![repository("a", "y")],
        };
        assert_ne!(as_parts(&one, &[]).hash(), as_parts(&other, &[]).hash());
    }

    #[test]
    fn rewrites_images_and_list_entries_only_for_known_values() {
        let mut response = IndexResponse {
            registry: "/".into(),
            results: vec![RepositoryResult {
                name: "a".into(),
                images: vec![ImageResult {
                    tags: vec!["latest".into()],
                    image: fields("data:known"),
                }],
                lists: vec![ListResult {
                    tags: vec![],
                    digest: "sha256:l".into(),
                    media_type: "m".into(),
                    images: vec![fields("data:known"), fields("data:unknown")],
                }],
            }],
        };
        let urls = HashMap::from([("data:known".to_owned(), "/icons/h.png".to_owned())]);
        rewrite_response(&mut response, &urls);
        let repo = &response.results[0];
        assert_eq!(
            repo.images[0].image.labels[icons::ICON_KEYS[0]],
            "/icons/h.png"
        );
        assert_eq!(
            repo.images[0].image.annotations[icons::ICON_KEYS[1]],
            "/icons/h.png"
        );
        assert_eq!(repo.images[0].image.labels["other"], "data:known");
        assert_eq!(
            repo.lists[0].images[0].labels[icons::ICON_KEYS[0]],
            "/icons/h.png"
        );
        assert_eq!(
            repo.lists[0].images[1].labels[icons::ICON_KEYS[0]],
            "data:unknown"
        );
    }
}
