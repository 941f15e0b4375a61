//! In-memory cache of rendered index bodies, keyed by (data version, canonical query).
//!
//! The body, its gzip form and the ETags are computed once per version and query;
//! concurrent misses for the same (version, query) wait for that one render
//! (single-flight). When the data version moves on, every older body stops being served
//! as current at once.
//!
//! Apart from that, the cache remembers the last answer it gave to each query, whatever
//! its version, and when that answer was last confirmed current: while the database is
//! unreachable, that is what the api serves (marked stale) instead of an error.
//!
//! Memory is bounded by one byte budget (`api.cache_bytes`) and an entry count, over
//! both kinds of body: a query's current body and its last good one are usually the same
//! allocation and then count once; after a data change, the last good body counts until
//! the query is rendered again. Beyond the bounds, the least recently used queries go
//! first, current and last good body together.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use regindex::index::render::{Parts, RenderedParts};
use tokio::sync::OnceCell;

use crate::frames::Frames;

pub const DEFAULT_MAX_ENTRIES: usize = 1024;
/// One rendered answer in both encodings. ETags are strong and differ per encoding (the
/// bytes differ); both derive from the hash of the JSON body.
///
/// The gzip body is kept as the slices it was assembled from (shared with the render's
/// parts, see `index/render.rs`), so a new version costs no copy of the whole answer.
/// The plain JSON body is built on its first request: clients ask for gzip.
#[derive(Debug)]
pub struct Rendered {
    gzip: Frames,
    json: std::sync::OnceLock<Bytes>,
    /// What `json` is built from; `None` when it was given at once.
    parts: Option<RenderedParts>,
    json_len: usize,
    pub etag: String,
    pub gzip_etag: String,
}

impl Rendered {
    /// The answer from its parts: the ETags derive from the parts' hashes, and the gzip
    /// body is their compressed chunks (CPU work: call it off the async executor).
    pub fn from_parts(parts: RenderedParts) -> Self {
        let hash = hex::encode(&parts.hash()[..16]);
        let gzip = match parts.gzip_member() {
            Some(member) => member,
            None => vec![Bytes::from(gzip_whole(&parts.json()))],
        };
        Self {
            gzip: Frames::new(gzip),
            json: std::sync::OnceLock::new(),
            json_len: parts.json_len(),
            parts: Some(parts),
            etag: format!("\"{hash}\""),
            gzip_etag: format!("\"{hash}-gzip\""),
        }
    }

    /// Hashes and compresses `json` whole.
    #[cfg(test)]
    pub fn new(json: Vec<u8>) -> Self {
        use sha2::{Digest as _, Sha256};
        let hash = hex::encode(&Sha256::digest(&json)[..16]);
        let gzip = gzip_whole(&json);
        Self {
            gzip: Frames::new(vec![Bytes::from(gzip)]),
            json_len: json.len(),
            json: std::sync::OnceLock::from(Bytes::from(json)),
            parts: None,
            etag: format!("\"{hash}\""),
            gzip_etag: format!("\"{hash}-gzip\""),
        }
    }

    /// The gzip body.
    pub fn gzip(&self) -> &Frames {
        &self.gzip
    }

    /// The plain JSON body, if built already.
    pub fn built_json(&self) -> Option<Bytes> {
        self.json.get().cloned()
    }

    /// The plain JSON body, built from the parts the first time (CPU work then: call it
    /// off the async executor unless [`Rendered::built_json`] has it).
    pub fn json(&self) -> Bytes {
        self.json
            .get_or_init(|| Bytes::from(self.parts.as_ref().map(|p| p.json()).unwrap_or_default()))
            .clone()
    }

    /// Bytes charged: the JSON body whether built yet or not, and the gzip body (whose
    /// slices the render's parts share).
    fn size(&self) -> usize {
        self.json_len + self.gzip.len()
    }
}

fn gzip_whole(json: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(json.len() / 4), Compression::default());
    // Writing into a Vec cannot fail.
    encoder
        .write_all(json)
        .and_then(|()| encoder.finish())
        .unwrap_or_default()
}

#[derive(Debug)]
pub struct ResponseCache {
    max_entries: usize,
    max_bytes: usize,
    inner: Mutex<Inner>,
}

/// A query's body at one version; empty while its first request renders it. Later
/// requests for the same query wait for that render instead of querying the database
/// themselves, which matters right after a data change, when every client's next
/// request misses at once.
type Slot = Arc<OnceCell<Arc<Rendered>>>;

#[derive(Debug, Default)]
struct Inner {
    version: i64,
    entries: HashMap<String, Entry>,
    /// Keys by last use (a tick from `clock`), least recent first.
    lru: BTreeMap<u64, String>,
    clock: u64,
    /// Sum of the entries' `charged`.
    bytes: usize,
}

#[derive(Debug, Default)]
struct Entry {
    /// The body at `Inner::version`; `None` once the version moved on.
    current: Option<Slot>,
    /// The last answer served as current, for serving during an outage.
    last_good: Option<Remembered>,
    /// The per-repository parts of the newest render, reused by the next one.
    parts: Option<KeptParts>,
    /// Tick of the last use (its key in `Inner::lru`).
    used: u64,
    /// Bytes this entry holds, counted in `Inner::bytes`.
    charged: usize,
}

#[derive(Debug)]
struct KeptParts {
    parts: Arc<Parts>,
    /// The data version they were rendered at: an older render finishing late keeps its
    /// parts to itself.
    version: i64,
    /// `parts.size()`, counted once.
    bytes: usize,
}

impl Entry {
    /// Bytes held, each distinct body once.
    fn size(&self) -> usize {
        let last_good = self.last_good.as_ref().map(|r| &r.rendered);
        let current = self.current.as_ref().and_then(|slot| slot.get());
        let shared = matches!((current, last_good), (Some(a), Some(b)) if Arc::ptr_eq(a, b));
        last_good.map_or(0, |r| r.size())
            + current.filter(|_| !shared).map_or(0, |r| r.size())
            + self.parts.as_ref().map_or(0, |p| p.bytes)
    }
}

#[derive(Debug)]
struct Remembered {
    rendered: Arc<Rendered>,
    /// The data version it was rendered for: an older render finishing late must not
    /// replace a newer last good answer.
    version: i64,
    /// When this answer was last served as current.
    confirmed: Instant,
}

impl Inner {
    /// Marks `key` as just used.
    fn touch(&mut self, key: &str) {
        self.clock += 1;
        let tick = self.clock;
        if let Some(entry) = self.entries.get_mut(key) {
            self.lru.remove(&entry.used);
            entry.used = tick;
            self.lru.insert(tick, key.to_owned());
        }
    }

    /// Recounts `key`'s bytes after a change, dropping the entry when it holds nothing.
    fn recharge(&mut self, key: &str) {
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        self.bytes -= entry.charged;
        entry.charged = entry.size();
        self.bytes += entry.charged;
        if entry.current.is_none() && entry.last_good.is_none() && entry.parts.is_none() {
            let used = entry.used;
            self.entries.remove(key);
            self.lru.remove(&used);
        }
    }

    /// Drops least recently used entries until within the bounds.
    fn evict(&mut self, max_entries: usize, max_bytes: usize) {
        while self.entries.len() > max_entries || self.bytes > max_bytes {
            let Some((_, oldest)) = self.lru.pop_first() else {
                break;
            };
            if let Some(old) = self.entries.remove(&oldest) {
                self.bytes -= old.charged;
            }
        }
    }

    /// The slot of `key` if it is still `slot` at `version` (not evicted or outdated).
    fn is_current(&self, version: i64, key: &str, slot: &Slot) -> bool {
        self.version == version
            && self
                .entries
                .get(key)
                .and_then(|e| e.current.as_ref())
                .is_some_and(|s| Arc::ptr_eq(s, slot))
    }
}

impl Default for ResponseCache {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_ENTRIES, regindex::config::DEFAULT_CACHE_BYTES)
    }
}

impl ResponseCache {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            max_entries,
            max_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps inconsistent in a way
        // that matters for a cache; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The body for `key` at data `version`: cached, or rendered by `render` once however
    /// many requests ask at the same time. `render` must read a snapshot at least as new
    /// as `version`. A failed render caches nothing.
    pub async fn get_or_render<E, Fut>(
        &self,
        version: i64,
        key: &str,
        render: impl FnOnce() -> Fut,
    ) -> Result<Arc<Rendered>, E>
    where
        Fut: Future<Output = Result<Rendered, E>>,
    {
        let slot = {
            let mut guard = self.lock();
            let inner = &mut *guard;
            if version > inner.version {
                // Older bodies can never be served as current again; last good ones stay.
                inner.version = version;
                let keys: Vec<String> = inner.entries.keys().cloned().collect();
                for k in keys {
                    if let Some(entry) = inner.entries.get_mut(&k) {
                        entry.current = None;
                    }
                    inner.recharge(&k);
                }
            }
            if version == inner.version && self.max_entries > 0 {
                let slot = inner
                    .entries
                    .entry(key.to_owned())
                    .or_default()
                    .current
                    .get_or_insert_with(Slot::default)
                    .clone();
                inner.touch(key);
                Some(slot)
            } else {
                None
            }
        };
        // A reader that saw an older version than the cache holds: serve, do not cache.
        let Some(slot) = slot else {
            return render().await.map(Arc::new);
        };
        let result = slot
            .get_or_try_init(|| async { render().await.map(Arc::new) })
            .await
            .cloned();
        match &result {
            Ok(rendered) => self.settle(version, key, &slot, rendered),
            Err(_) => self.forget_empty(version, key, &slot),
        }
        result
    }

    /// The last answer given to `key`, if it was confirmed current at most `max_age` ago,
    /// with the time since then (its `Age`).
    pub fn last_good(&self, key: &str, max_age: Duration) -> Option<(Arc<Rendered>, Duration)> {
        let mut inner = self.lock();
        let remembered = inner.entries.get(key)?.last_good.as_ref()?;
        let age = remembered.confirmed.elapsed();
        let found = (age <= max_age).then(|| (remembered.rendered.clone(), age));
        if found.is_some() {
            inner.touch(key);
        }
        found
    }

    /// Records `rendered`, just served as `key`'s answer at `version`, as its last good
    /// answer, counts it and evicts beyond the bounds.
    fn settle(&self, version: i64, key: &str, slot: &Slot, rendered: &Arc<Rendered>) {
        let mut inner = self.lock();
        if !inner.is_current(version, key, slot) {
            // Evicted or outdated meanwhile: still the newest answer seen, unless a
            // newer render was remembered already.
            let Some(entry) = inner.entries.get_mut(key) else {
                return;
            };
            if entry
                .last_good
                .as_ref()
                .is_some_and(|r| r.version > version)
            {
                return;
            }
        }
        let Some(entry) = inner.entries.get_mut(key) else {
            return;
        };
        entry.last_good = Some(Remembered {
            rendered: rendered.clone(),
            version,
            confirmed: Instant::now(),
        });
        inner.recharge(key);
        inner.evict(self.max_entries, self.max_bytes);
    }

    fn forget_empty(&self, version: i64, key: &str, slot: &Slot) {
        let mut inner = self.lock();
        if inner.is_current(version, key, slot) && slot.get().is_none() {
            if let Some(entry) = inner.entries.get_mut(key) {
                entry.current = None;
            }
            inner.recharge(key);
        }
    }

    /// The parts of `key`'s newest render, for the next render to reuse.
    pub fn parts(&self, key: &str) -> Option<Arc<Parts>> {
        let inner = self.lock();
        Some(inner.entries.get(key)?.parts.as_ref()?.parts.clone())
    }

    /// Keeps `parts`, rendered for `key` at data `version`, for the next render, unless
    /// newer parts are kept already or the entry is gone (evicted meanwhile).
    pub fn keep_parts(&self, key: &str, version: i64, parts: Arc<Parts>) {
        let bytes = parts.size();
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get_mut(key) else {
            return;
        };
        if entry.parts.as_ref().is_some_and(|p| p.version > version) {
            return;
        }
        entry.parts = Some(KeptParts {
            parts,
            version,
            bytes,
        });
        inner.recharge(key);
        inner.evict(self.max_entries, self.max_bytes);
    }

    /// Queries with a current body.
    pub fn len(&self) -> usize {
        let inner = self.lock();
        inner
            .entries
            .values()
            .filter(|e| e.current.as_ref().is_some_and(|s| s.get().is_some()))
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held (current and last good bodies, each counted once).
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_etags_and_gzip() {
        let a = Rendered::new(b"{\"a\":1}".to_vec());
        let b = Rendered::new(b"{\"a\":1}".to_vec());
        let c = Rendered::new(b"{\"a\":2}".to_vec());
        assert_eq!(a.etag, b.etag);
        assert_ne!(a.etag, c.etag);
        assert!(a.etag.starts_with('"') && a.etag.ends_with('"'));
        assert_ne!(a.etag, a.gzip_etag);
        let mut out = String::new();
        let gzip = a.gzip().to_vec();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gzip[..]), &mut out)
            .unwrap();
        assert_eq!(out, "{\"a\":1}");
    }

    async fn fill(cache: &ResponseCache, version: i64, key: &str, body: &str) -> Arc<Rendered> {
        let body = body.to_owned();
        cache
            .get_or_render::<(), _>(version, key, || async move {
                Ok(Rendered::new(body.into_bytes()))
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn keyed_by_version() {
        let cache = ResponseCache::new(10, 1 << 20);
        assert_eq!(&fill(&cache, 1, "q", "one").await.json()[..], b"one");
        assert_eq!(&fill(&cache, 1, "q", "ignored").await.json()[..], b"one");
        assert_eq!(
            &fill(&cache, 1, "other", "other").await.json()[..],
            b"other"
        );
        assert_eq!(&fill(&cache, 2, "q", "two").await.json()[..], b"two");
        assert_eq!(cache.len(), 1, "older versions are dropped");
        // A reader behind the times gets its own render, which is not cached.
        assert_eq!(&fill(&cache, 1, "q", "old").await.json()[..], b"old");
        assert_eq!(&fill(&cache, 2, "q", "ignored").await.json()[..], b"two");
    }

    #[tokio::test]
    async fn failures_are_not_cached() {
        let cache = ResponseCache::new(10, 1 << 20);
        let failed = cache
            .get_or_render(1, "q", || async { Err::<Rendered, _>("database down") })
            .await;
        assert!(failed.is_err());
        assert!(cache.is_empty());
        assert_eq!(&fill(&cache, 1, "q", "ok").await.json()[..], b"ok");
    }

    /// Real threads: every task misses at once (they pass a barrier first, and the one
    /// render waits for all of them to be released), yet only one renders.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_misses_render_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        const TASKS: usize = 32;
        let cache = Arc::new(ResponseCache::new(10, 1 << 20));
        let renders = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
        let mut tasks = Vec::new();
        for _ in 0..TASKS {
            let (cache, renders, barrier) = (cache.clone(), renders.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                cache
                    .get_or_render::<(), _>(1, "q", || async move {
                        renders.fetch_add(1, Ordering::SeqCst);
                        // Let the other tasks reach the cache while this one renders.
                        for _ in 0..100 {
                            tokio::task::yield_now().await;
                        }
                        Ok(Rendered::new(b"x".to_vec()))
                    })
                    .await
                    .unwrap()
            }));
        }
        let mut bodies = Vec::new();
        for task in tasks {
            bodies.push(task.await.unwrap());
        }
        assert_eq!(renders.load(Ordering::SeqCst), 1);
        assert!(
            bodies.iter().all(|b| Arc::ptr_eq(b, &bodies[0])),
            "one shared body"
        );
        assert_eq!(cache.bytes(), bodies[0].size(), "counted once");
        // The next version renders once more, however many ask.
        let again = cache
            .get_or_render::<(), _>(2, "q", || async { Ok(Rendered::new(b"y".to_vec())) })
            .await
            .unwrap();
        assert_eq!(&again.json()[..], b"y");
    }

    #[tokio::test]
    async fn least_recently_used_go_first() {
        let cache = ResponseCache::new(3, 1 << 20);
        for key in ["a", "b", "c"] {
            fill(&cache, 1, key, key).await;
        }
        // "a" is used again, so "b" is now the least recently used.
        assert_eq!(&fill(&cache, 1, "a", "ignored").await.json()[..], b"a");
        fill(&cache, 1, "d", "d").await;
        assert_eq!(&fill(&cache, 1, "a", "ignored").await.json()[..], b"a");
        assert_eq!(&fill(&cache, 1, "c", "ignored").await.json()[..], b"c");
        assert_eq!(
            &fill(&cache, 1, "b", "again").await.json()[..],
            b"again",
            "b was evicted"
        );
    }

    #[tokio::test]
    async fn byte_budget_counts_current_and_last_good_bodies_once() {
        let big = |c: char| c.to_string().repeat(1000);
        let size = Rendered::new(big('a').into_bytes()).size();
        let cache = ResponseCache::new(100, size * 3);
        fill(&cache, 1, "a", &big('a')).await;
        fill(&cache, 1, "b", &big('b')).await;
        assert_eq!(cache.bytes(), 2 * size, "current = last good: counted once");
        // A data change: the bodies are no longer current, but still held as last good.
        fill(&cache, 2, "c", &big('c')).await;
        assert_eq!(cache.bytes(), 3 * size);
        // Re-rendered: the new body replaces the last good one.
        fill(&cache, 2, "a", &big('A')).await;
        assert_eq!(cache.bytes(), 3 * size);
        let day = Duration::from_secs(86_400);
        assert_eq!(
            &cache.last_good("a", day).unwrap().0.json()[..],
            big('A').as_bytes()
        );
        // Over budget: the least recently used query ("b", last good only) goes.
        fill(&cache, 2, "d", &big('d')).await;
        assert!(cache.bytes() <= 3 * size);
        assert!(cache.last_good("b", day).is_none());
        for key in ["a", "c", "d"] {
            assert!(cache.last_good(key, day).is_some(), "{key}");
        }
    }

    #[tokio::test]
    async fn a_late_older_render_does_not_replace_a_newer_last_good_answer() {
        let cache = ResponseCache::new(10, 1 << 20);
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let slow = cache.get_or_render::<(), _>(1, "q", || async move {
            let _ = started_tx.send(());
            let _ = release_rx.await;
            Ok(Rendered::new(b"old".to_vec()))
        });
        let newer = async {
            let _ = started_rx.await;
            fill(&cache, 2, "q", "new").await;
            let _ = release_tx.send(());
        };
        let (old, ()) = tokio::join!(slow, newer);
        assert_eq!(&old.unwrap().json()[..], b"old");
        let day = Duration::from_secs(86_400);
        assert_eq!(&cache.last_good("q", day).unwrap().0.json()[..], b"new");
        assert_eq!(cache.bytes(), Rendered::new(b"new".to_vec()).size());
    }

    #[tokio::test]
    async fn last_good_answers_outlive_their_version() {
        let cache = ResponseCache::new(10, 1 << 20);
        assert!(cache.last_good("q", Duration::from_secs(60)).is_none());
        fill(&cache, 1, "q", "one").await;
        fill(&cache, 2, "other", "other").await;
        assert_eq!(cache.len(), 1, "version 1 entries are gone");
        let (stale, age) = cache.last_good("q", Duration::from_secs(60)).unwrap();
        assert_eq!(&stale.json()[..], b"one");
        assert!(age < Duration::from_secs(60));
        fill(&cache, 2, "q", "two").await;
        assert_eq!(
            &cache
                .last_good("q", Duration::from_secs(60))
                .unwrap()
                .0
                .json()[..],
            b"two"
        );
        // A failed render leaves the last good answer in place.
        let failed = cache
            .get_or_render(3, "q", || async { Err::<Rendered, _>("database down") })
            .await;
        assert!(failed.is_err());
        assert_eq!(
            &cache
                .last_good("q", Duration::from_secs(60))
                .unwrap()
                .0
                .json()[..],
            b"two"
        );
    }

    #[tokio::test]
    async fn last_good_is_bounded() {
        let cache = ResponseCache::new(3, 1 << 20);
        for i in 0..5 {
            fill(&cache, i, &format!("q{i}"), "x").await;
        }
        let day = Duration::from_secs(86_400);
        assert!(cache.last_good("q0", day).is_none());
        assert!(cache.last_good("q1", day).is_none());
        assert!(cache.last_good("q4", day).is_some());
        let tiny = ResponseCache::new(100, 10);
        fill(&tiny, 1, "q", &"y".repeat(1000)).await;
        assert!(tiny.last_good("q", day).is_none());
    }

    #[tokio::test]
    async fn bounded() {
        let cache = ResponseCache::new(3, 1 << 20);
        for i in 0..5 {
            fill(&cache, 1, &format!("q{i}"), "x").await;
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(
            &fill(&cache, 1, "q0", "again").await.json()[..],
            b"again",
            "q0 was evicted"
        );

        let big = "y".repeat(1000);
        let size = Rendered::new(big.clone().into_bytes()).size();
        let cache = ResponseCache::new(100, size * 2 + 10);
        for i in 0..5 {
            fill(&cache, 1, &format!("q{i}"), &big).await;
        }
        assert_eq!(cache.len(), 2);
        let tiny = ResponseCache::new(100, 10);
        fill(&tiny, 1, "q", &big).await;
        assert!(tiny.is_empty());
    }
}
