//! Icons in PostgreSQL: written with the images that carry them, read by `/icons/...` and
//! by the index rendering, garbage-collected when no image carries them any more.

use std::collections::{BTreeMap, HashMap, HashSet};

use tracing::warn;

use super::plan::Known;
use super::{Store, StoreError};
use crate::catalog::icons::{self, Icon};
use crate::model::{Digest, Image};

/// A stored icon, as served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredIcon {
    pub content_type: String,
    pub data: Vec<u8>,
}

/// Stores the icons of `images` (just inserted, their ids in `known`) and records which
/// image carries which. Runs inside the repository's refetch transaction, so an image and
/// its icons appear together. Invalid icons are logged and skipped: the image is still
/// indexed and its label is served unchanged.
pub(super) async fn store_image_icons(
    conn: &mut sqlx::PgConnection,
    images: &[&Image],
    known: &HashMap<Digest, Known>,
    max_bytes: usize,
) -> Result<usize, StoreError> {
    let mut by_hash: BTreeMap<String, Icon> = BTreeMap::new();
    let (mut manifest_ids, mut keys, mut hashes) = (Vec::new(), Vec::new(), Vec::new());
    for image in images {
        let Some(known) = known.get(&image.digest) else {
            continue;
        };
        // Labels first: for one key, the label wins over the annotation (Flatpak reads labels).
        let mut seen_keys = HashSet::new();
        for map in [&image.labels, &image.annotations] {
            let found = icons::extract(map, max_bytes, |key, error| {
                warn!(digest = %image.digest, key, %error, "icon not extracted; the label is served unchanged");
            });
            for (key, icon) in found {
                if !seen_keys.insert(key) {
                    continue;
                }
                manifest_ids.push(known.id);
                keys.push(key);
                hashes.push(icon.sha256.clone());
                by_hash.entry(icon.sha256.clone()).or_insert(icon);
            }
        }
    }
    if by_hash.is_empty() {
        return Ok(0);
    }
    let (mut icon_hashes, mut content_types, mut data) = (Vec::new(), Vec::new(), Vec::new());
    for icon in by_hash.values() {
        icon_hashes.push(icon.sha256.as_str());
        content_types.push(icon.format.content_type());
        data.push(icon.bytes.as_slice());
    }
    sqlx::query(
        "INSERT INTO icons (sha256, content_type, data)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::bytea[])
         ON CONFLICT (sha256) DO NOTHING",
    )
    .bind(&icon_hashes)
    .bind(&content_types)
    .bind(&data)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO manifest_icons (manifest_id, key, icon_sha256)
         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[])
         ON CONFLICT (manifest_id, key) DO UPDATE SET icon_sha256 = EXCLUDED.icon_sha256",
    )
    .bind(&manifest_ids)
    .bind(&keys)
    .bind(&hashes)
    .execute(&mut *conn)
    .await?;
    // Referenced again: the grace period starts afresh the next time the icon is
    // unreferenced. After the rows above, so that a collection marking the icon
    // concurrently (it holds the row until it commits; our foreign key check waited for
    // it) is undone here. Rows locked in one order: refetches never deadlock on icons.
    sqlx::query(
        "UPDATE icons SET unreferenced_since = NULL WHERE sha256 IN (
             SELECT sha256 FROM icons WHERE sha256 = ANY($1) AND unreferenced_since IS NOT NULL
             ORDER BY sha256 FOR UPDATE)",
    )
    .bind(&icon_hashes)
    .execute(&mut *conn)
    .await?;
    Ok(by_hash.len())
}

/// What one icon collection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IconGc {
    /// Unreferenced for longer than the grace period: deleted.
    pub removed: u64,
    /// Found unreferenced for the first time: marked, deleted after the grace period.
    pub unreferenced: u64,
}

/// SQL condition on icon `i`: no image carries it.
const UNREFERENCED: &str =
    "NOT EXISTS (SELECT 1 FROM manifest_icons mi WHERE mi.icon_sha256 = i.sha256)";

impl Store {
    /// The icon named by its sha256 (lowercase hex).
    pub async fn icon(&self, sha256: &str) -> Result<Option<StoredIcon>, StoreError> {
        let row: Option<(String, Vec<u8>)> =
            sqlx::query_as("SELECT content_type, data FROM icons WHERE sha256 = $1")
                .bind(sha256)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(content_type, data)| StoredIcon { content_type, data }))
    }

    /// Which of `hashes` are stored.
    pub async fn stored_icons(&self, hashes: &[String]) -> Result<HashSet<String>, StoreError> {
        if hashes.is_empty() {
            return Ok(HashSet::new());
        }
        let found: Vec<String> =
            sqlx::query_scalar("SELECT sha256 FROM icons WHERE sha256 = ANY($1)")
                .bind(hashes)
                .fetch_all(&self.pool)
                .await?;
        Ok(found.into_iter().collect())
    }

    /// Collects icons no image carries any more, in two steps, so that an answer cached
    /// while an icon was still referenced never points at a deleted icon:
    ///
    /// 1. an unreferenced icon is marked with the time it was first found so
    ///    (`unreferenced_since`); a refetch that references it again clears the mark;
    /// 2. an icon marked longer than the grace period ago (`icons.gc_grace_secs`) and still
    ///    unreferenced is deleted.
    ///
    /// The mark is set after the icon's last image went away (and with it, by the same
    /// transaction, the data version moved on), so the grace period counts from no earlier
    /// than the last moment an answer could be rendered with the icon; it must exceed the
    /// longest max-age of such answers (checked at configuration load).
    ///
    /// Icons a concurrent refetch is attaching are locked by its foreign key check and
    /// skipped (`SKIP LOCKED`); they are reconsidered next time.
    pub async fn gc_icons(&self) -> Result<IconGc, StoreError> {
        let grace_secs = i64::try_from(self.icon_gc_grace.as_secs()).unwrap_or(i64::MAX);
        let removed = sqlx::query(&format!(
            "DELETE FROM icons WHERE sha256 IN (
                 SELECT i.sha256 FROM icons i
                 WHERE i.unreferenced_since < clock_timestamp() - make_interval(secs => $1::double precision)
                   AND {UNREFERENCED}
                 FOR UPDATE SKIP LOCKED)"
        ))
        .bind(grace_secs as f64)
        .execute(&self.pool)
        .await?
        .rows_affected();
        // Two statements in one transaction: the rows are locked first, and the second
        // statement's fresh snapshot sees every reference committed before the lock (a
        // single statement would judge references by a snapshot older than its locks).
        let mut tx = crate::store::begin(&self.pool).await?;
        let candidates: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT i.sha256 FROM icons i WHERE i.unreferenced_since IS NULL AND {UNREFERENCED}
             ORDER BY i.sha256 FOR UPDATE SKIP LOCKED"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let unreferenced = if candidates.is_empty() {
            0
        } else {
            sqlx::query(&format!(
                "UPDATE icons i SET unreferenced_since = clock_timestamp()
                 WHERE i.sha256 = ANY($1) AND {UNREFERENCED}"
            ))
            .bind(&candidates)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        };
        tx.commit().await?;
        Ok(IconGc {
            removed,
            unreferenced,
        })
    }

    /// Extracts the icons of every stored image and rewrites every repository summary:
    /// for a database filled before icons were extracted, or after `icons.max_bytes`
    /// changed. Idempotent; each repository in its own transaction under its lock.
    pub async fn backfill_icons_and_summaries(&self) -> Result<usize, StoreError> {
        let repositories = self.repositories().await?;
        let mut done = 0;
        for repository in &repositories {
            let mut tx = self.begin_repository(repository).await?;
            tx.rebuild_derived().await?;
            tx.commit().await?;
            done += 1;
        }
        Ok(done)
    }
}
