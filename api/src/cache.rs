//! In-memory cache of rendered index bodies, keyed by (data version, canonical query).
//!
//! A repeated query costs one `SELECT version FROM data_version` and a map lookup; the
//! body, its gzip form and the ETags are computed once per version and query. When the
//! data version moves on, everything older is dropped at once (it can never be served
//! again). Size is bounded in entries and bytes; the oldest entries go first.
//!
//! Apart from that, the cache remembers the last answer it gave to each query, whatever
//! its version, and when that answer was last confirmed current: while the database is
//! unreachable, that is what the api serves (marked stale) instead of an error. It has
//! the same bounds; bodies still current are shared with the main entries, not copied.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest as _, Sha256};
use tokio::sync::OnceCell;

pub const DEFAULT_MAX_ENTRIES: usize = 1024;
/// A Flatpak answer is typically well under 1 MiB (gzip included); a few distinct queries
/// (one per architecture and tag) make most of the traffic.
pub const DEFAULT_MAX_BYTES: usize = 64 << 20;

/// One rendered answer in both encodings. ETags are strong and differ per encoding (the
/// bytes differ); both derive from the hash of the JSON body.
#[derive(Debug)]
pub struct Rendered {
    pub json: Bytes,
    pub gzip: Bytes,
    pub etag: String,
    pub gzip_etag: String,
}

impl Rendered {
    /// Hashes and compresses `json` (CPU work: call it off the async executor).
    pub fn new(json: Vec<u8>) -> Self {
        let hash = hex::encode(&Sha256::digest(&json)[..16]);
        let mut encoder =
            GzEncoder::new(Vec::with_capacity(json.len() / 4), Compression::default());
        // Writing into a Vec cannot fail.
        let gzip = encoder
            .write_all(&json)
            .and_then(|()| encoder.finish())
            .unwrap_or_default();
        Self {
            json: Bytes::from(json),
            gzip: Bytes::from(gzip),
            etag: format!("\"{hash}\""),
            gzip_etag: format!("\"{hash}-gzip\""),
        }
    }

    fn size(&self) -> usize {
        self.json.len() + self.gzip.len()
    }
}

#[derive(Debug)]
pub struct ResponseCache {
    max_entries: usize,
    max_bytes: usize,
    inner: Mutex<Inner>,
}

/// One cache entry; empty while its first request renders it. Later requests for the
/// same query wait for that render instead of querying the database themselves, which
/// matters right after a data change, when every client's next request misses at once.
type Slot = Arc<OnceCell<Arc<Rendered>>>;

#[derive(Debug, Default)]
struct Inner {
    version: i64,
    entries: HashMap<String, Slot>,
    /// Filled entries in insertion order, for eviction.
    order: VecDeque<String>,
    bytes: usize,
    last_good: LastGood,
}

/// The last answer served for each query, for serving during an outage.
#[derive(Debug, Default)]
struct LastGood {
    answers: HashMap<String, Remembered>,
    /// Keys in first-remembered order, for eviction.
    order: VecDeque<String>,
    bytes: usize,
}

#[derive(Debug)]
struct Remembered {
    rendered: Arc<Rendered>,
    /// When this answer was last served as current.
    confirmed: Instant,
}

impl Default for ResponseCache {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_ENTRIES, DEFAULT_MAX_BYTES)
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
            let mut inner = self.lock();
            if version > inner.version {
                // Older entries can never be served again (fresh).
                inner.version = version;
                inner.entries.clear();
                inner.order.clear();
                inner.bytes = 0;
            }
            (version == inner.version && self.max_entries > 0)
                .then(|| inner.entries.entry(key.to_owned()).or_default().clone())
        };
        // A reader that saw an older version than the cache holds: serve, do not cache.
        let Some(slot) = slot else {
            return render().await.map(Arc::new);
        };
        let mut rendered_here = false;
        let result = slot
            .get_or_try_init(|| async {
                rendered_here = true;
                render().await.map(Arc::new)
            })
            .await
            .cloned();
        match &result {
            Ok(rendered) => {
                if rendered_here {
                    self.account(version, key, &slot, rendered.size());
                }
                self.remember(key, rendered);
            }
            Err(_) => self.forget_empty(version, key, &slot),
        }
        result
    }

    /// The last answer given to `key`, if it was confirmed current at most `max_age` ago,
    /// with the time since then (its `Age`).
    pub fn last_good(&self, key: &str, max_age: Duration) -> Option<(Arc<Rendered>, Duration)> {
        let inner = self.lock();
        let remembered = inner.last_good.answers.get(key)?;
        let age = remembered.confirmed.elapsed();
        (age <= max_age).then(|| (remembered.rendered.clone(), age))
    }

    /// Records `rendered` as the current answer to `key`, within the same bounds as the
    /// main entries.
    fn remember(&self, key: &str, rendered: &Arc<Rendered>) {
        if self.max_entries == 0 {
            return;
        }
        let mut inner = self.lock();
        let last_good = &mut inner.last_good;
        let fresh = Remembered {
            rendered: rendered.clone(),
            confirmed: Instant::now(),
        };
        match last_good.answers.insert(key.to_owned(), fresh) {
            Some(old) => {
                last_good.bytes = last_good.bytes - old.rendered.size() + rendered.size();
            }
            None => {
                last_good.bytes += rendered.size();
                last_good.order.push_back(key.to_owned());
            }
        }
        while last_good.order.len() > self.max_entries || last_good.bytes > self.max_bytes {
            let Some(oldest) = last_good.order.pop_front() else {
                break;
            };
            if let Some(old) = last_good.answers.remove(&oldest) {
                last_good.bytes -= old.rendered.size();
            }
        }
    }

    /// Counts a freshly filled slot and evicts the oldest entries beyond the bounds.
    fn account(&self, version: i64, key: &str, slot: &Slot, size: usize) {
        let mut inner = self.lock();
        let current = inner.entries.get(key).is_some_and(|s| Arc::ptr_eq(s, slot));
        if inner.version != version || !current {
            return;
        }
        inner.bytes += size;
        inner.order.push_back(key.to_owned());
        while inner.order.len() > self.max_entries || inner.bytes > self.max_bytes {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(old) = inner.entries.remove(&oldest) {
                inner.bytes -= old.get().map_or(0, |r| r.size());
            }
        }
    }

    fn forget_empty(&self, version: i64, key: &str, slot: &Slot) {
        let mut inner = self.lock();
        let current = inner.entries.get(key).is_some_and(|s| Arc::ptr_eq(s, slot));
        if inner.version == version && current && slot.get().is_none() {
            inner.entries.remove(key);
        }
    }

    /// Filled entries.
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&a.gzip[..]), &mut out)
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
        assert_eq!(&fill(&cache, 1, "q", "one").await.json[..], b"one");
        assert_eq!(&fill(&cache, 1, "q", "ignored").await.json[..], b"one");
        assert_eq!(&fill(&cache, 1, "other", "other").await.json[..], b"other");
        assert_eq!(&fill(&cache, 2, "q", "two").await.json[..], b"two");
        assert_eq!(cache.len(), 1, "older versions are dropped");
        // A reader behind the times gets its own render, which is not cached.
        assert_eq!(&fill(&cache, 1, "q", "old").await.json[..], b"old");
        assert_eq!(&fill(&cache, 2, "q", "ignored").await.json[..], b"two");
    }

    #[tokio::test]
    async fn failures_are_not_cached() {
        let cache = ResponseCache::new(10, 1 << 20);
        let failed = cache
            .get_or_render(1, "q", || async { Err::<Rendered, _>("database down") })
            .await;
        assert!(failed.is_err());
        assert!(cache.is_empty());
        assert_eq!(&fill(&cache, 1, "q", "ok").await.json[..], b"ok");
    }

    #[tokio::test]
    async fn concurrent_misses_render_once() {
        let cache = Arc::new(ResponseCache::new(10, 1 << 20));
        let renders = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (cache, renders) = (cache.clone(), renders.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_render::<(), _>(1, "q", || async move {
                        renders.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        Ok(Rendered::new(b"x".to_vec()))
                    })
                    .await
                    .unwrap()
            }));
        }
        for task in tasks {
            assert_eq!(&task.await.unwrap().json[..], b"x");
        }
        assert_eq!(renders.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn last_good_answers_outlive_their_version() {
        let cache = ResponseCache::new(10, 1 << 20);
        assert!(cache.last_good("q", Duration::from_secs(60)).is_none());
        fill(&cache, 1, "q", "one").await;
        fill(&cache, 2, "other", "other").await;
        assert_eq!(cache.len(), 1, "version 1 entries are gone");
        let (stale, age) = cache.last_good("q", Duration::from_secs(60)).unwrap();
        assert_eq!(&stale.json[..], b"one");
        assert!(age < Duration::from_secs(60));
        fill(&cache, 2, "q", "two").await;
        assert_eq!(
            &cache
                .last_good("q", Duration::from_secs(60))
                .unwrap()
                .0
                .json[..],
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
                .json[..],
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
            &fill(&cache, 1, "q0", "again").await.json[..],
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
