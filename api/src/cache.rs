//! In-memory cache of rendered index bodies, keyed by (data version, canonical query).
//!
//! A repeated query costs one `SELECT version FROM data_version` and a map lookup; the
//! body, its gzip form and the ETags are computed once per version and query. When the
//! data version moves on, everything older is dropped at once (it can never be served
//! again). Size is bounded in entries and bytes; the oldest entries go first.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest as _, Sha256};

pub const DEFAULT_MAX_ENTRIES: usize = 1024;
pub const DEFAULT_MAX_BYTES: usize = 256 << 20;

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

#[derive(Debug, Default)]
struct Inner {
    version: i64,
    entries: HashMap<String, Arc<Rendered>>,
    /// Insertion order, for eviction.
    order: VecDeque<String>,
    bytes: usize,
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

    pub fn get(&self, version: i64, key: &str) -> Option<Arc<Rendered>> {
        let inner = self.lock();
        if inner.version != version {
            return None;
        }
        inner.entries.get(key).cloned()
    }

    pub fn insert(&self, version: i64, key: String, rendered: Arc<Rendered>) {
        let size = rendered.size();
        if size > self.max_bytes || self.max_entries == 0 {
            return;
        }
        let mut inner = self.lock();
        if version < inner.version {
            return; // rendered from an older snapshot than what we already serve
        }
        if version > inner.version {
            *inner = Inner {
                version,
                ..Inner::default()
            };
        }
        if let Some(old) = inner.entries.insert(key.clone(), rendered) {
            inner.bytes -= old.size();
            inner.order.retain(|k| k != &key);
        }
        inner.bytes += size;
        inner.order.push_back(key);
        while inner.entries.len() > self.max_entries || inner.bytes > self.max_bytes {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(old) = inner.entries.remove(&oldest) {
                inner.bytes -= old.size();
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(body: &str) -> Arc<Rendered> {
        Arc::new(Rendered::new(body.as_bytes().to_vec()))
    }

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

    #[test]
    fn keyed_by_version() {
        let cache = ResponseCache::new(10, 1 << 20);
        cache.insert(1, "q".into(), r("one"));
        assert!(cache.get(1, "q").is_some());
        assert!(cache.get(2, "q").is_none());
        assert!(cache.get(1, "other").is_none());
        cache.insert(2, "q".into(), r("two"));
        assert_eq!(&cache.get(2, "q").unwrap().json[..], b"two");
        assert!(cache.get(1, "q").is_none());
        // An older snapshot never replaces a newer one.
        cache.insert(1, "p".into(), r("old"));
        assert!(cache.get(1, "p").is_none());
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn bounded() {
        let cache = ResponseCache::new(3, 1 << 20);
        for i in 0..5 {
            cache.insert(1, format!("q{i}"), r("x"));
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.get(1, "q0").is_none());
        assert!(cache.get(1, "q4").is_some());

        let big = r(&"y".repeat(1000));
        let cache = ResponseCache::new(100, big.size() * 2 + 10);
        for i in 0..5 {
            cache.insert(1, format!("q{i}"), big.clone());
        }
        assert_eq!(cache.len(), 2);
        let tiny = ResponseCache::new(100, 10);
        tiny.insert(1, "q".into(), big);
        assert!(tiny.is_empty());
    }
}
