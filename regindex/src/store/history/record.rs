//! PostgreSQL side of the history: recording batches, backfilling, pruning.
//! (The read side, the statistics queries, is in [`super::statistics`].)

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};

use crate::history::aggregate::{
    dedup_by_id, Aggregates, Counts, DailyDelta, Deletion, ObjectKey, TagDelta, TagKey,
};
use crate::history::event::{ActivityEvent, BlobRef};
use crate::history::HistoryError;
use crate::model::{Digest, RepositoryName, Tag};
use crate::store::unnest::UnnestInsert;

type Tx<'a> = Transaction<'a, Postgres>;

#[derive(Clone)]
pub struct HistoryStore {
    pool: PgPool,
}

/// What recording one batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordOutcome {
    /// Events recorded for the first time.
    pub recorded: usize,
    /// Events whose id was already recorded (redeliveries): they changed nothing.
    pub duplicates: usize,
    /// Manifests pushed without `references`: their blobs are still to be learnt.
    pub unlinked_manifests: Vec<ObjectKey>,
}

/// What pruning removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneOutcome {
    pub deletions: u64,
    pub events: u64,
}

/// A manifest as a refetch or backfill found it in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedManifest {
    pub digest: Digest,
    pub media_type: String,
    pub size: Option<i64>,
    /// Config and layers; `None` when the manifest was not fetched (its blobs are
    /// already recorded, or it is an index).
    pub blobs: Option<Vec<BlobRef>>,
}

/// Pruning deletes at most this many rows per statement.
const ROWS_PER_PRUNE: i64 = 10_000;

impl HistoryStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Records a batch in one transaction: the event ids first (a redelivered event's id
    /// is already there and is dropped), then the aggregates of only the new events.
    pub async fn record(&self, events: Vec<ActivityEvent>) -> Result<RecordOutcome, HistoryError> {
        let mut events = dedup_by_id(events);
        if events.is_empty() {
            return Ok(RecordOutcome::default());
        }
        // Ids in one order in every transaction: two consumers holding overlapping
        // (redelivered) ids then wait for each other instead of deadlocking.
        events.sort_by(|a, b| a.id.cmp(&b.id));
        let mut tx = crate::store::begin(&self.pool).await?;
        let new_ids = insert_events(&mut tx, &events).await?;
        let fresh: Vec<&ActivityEvent> = events
            .iter()
            .filter(|e| new_ids.contains(e.id.as_str()))
            .collect();
        let aggregates = Aggregates::from_events(fresh.iter().copied());
        apply(&mut tx, &aggregates).await?;
        tx.commit().await?;
        Ok(RecordOutcome {
            recorded: fresh.len(),
            duplicates: events.len() - fresh.len(),
            unlinked_manifests: aggregates.manifests_without_links().into_iter().collect(),
        })
    }

    /// Records the current state of one repository as a scan found it at `seen_at` (when
    /// its tags were listed): its tags, its manifests and, for the manifests fetched,
    /// their blobs. Counts and push times are left alone (events own them); rows only get
    /// `first_seen`. Tags and manifests deleted after `seen_at` are not brought back. Tags
    /// the history holds that the registry no longer has (their delete events were lost)
    /// move to the audit trail, attributed to no one.
    pub async fn record_state(
        &self,
        registry: &str,
        repository: &RepositoryName,
        tags: &[(Tag, Digest)],
        manifests: &[ScannedManifest],
        seen_at: DateTime<Utc>,
    ) -> Result<(), HistoryError> {
        let repository = repository.as_str();
        let mut tx = crate::store::begin(&self.pool).await?;
        let tag_names: Vec<&str> = tags.iter().map(|(t, _)| t.as_str()).collect();
        let tag_digests: Vec<&str> = tags.iter().map(|(_, d)| d.as_str()).collect();
        sqlx::query(
            "INSERT INTO history_tags AS t (registry, repository, tag, digest, digest_seen_at, first_seen)
             SELECT $1, $2, u.tag, u.digest, $5, $5 FROM UNNEST($3::text[], $4::text[]) AS u (tag, digest)
             -- A delete recorded since the listing wins: the listing is older news.
             WHERE NOT EXISTS (SELECT 1 FROM history_deletions d WHERE d.registry = $1
                 AND d.repository = $2 AND d.tag = u.tag AND d.deleted_at >= $5)
             ORDER BY u.tag
             ON CONFLICT (registry, repository, tag) DO UPDATE SET
                digest = CASE WHEN t.digest_seen_at IS NULL OR EXCLUDED.digest_seen_at >= t.digest_seen_at
                              THEN EXCLUDED.digest ELSE t.digest END,
                digest_seen_at = GREATEST(t.digest_seen_at, EXCLUDED.digest_seen_at)",
        )
        .bind(registry)
        .bind(repository)
        .bind(&tag_names)
        .bind(&tag_digests)
        .bind(seen_at)
        .execute(&mut *tx)
        .await?;
        // Tags gone from the registry; a tag pushed after the scan looked is kept. They
        // are audited as gone now, not at `seen_at`: the listing (which started at
        // `seen_at`) saw a delete that may have come while it ran, and the delete's event
        // completes only a row audited at or after its own time.
        sqlx::query(
            "WITH gone AS (
                DELETE FROM history_tags t
                WHERE registry = $1 AND repository = $2 AND NOT (tag = ANY($3::text[]))
                  AND (t.digest_seen_at IS NULL OR t.digest_seen_at < $4)
                  AND (t.last_pushed IS NULL OR t.last_pushed < $4)
                RETURNING t.*
             )
             INSERT INTO history_deletions (deleted_at, registry, repository, kind, tag, digest, record)
             SELECT GREATEST(now(), $4), registry, repository, 'tag', tag, digest, to_jsonb(gone) FROM gone",
        )
        .bind(registry)
        .bind(repository)
        .bind(&tag_names)
        .bind(seen_at)
        .execute(&mut *tx)
        .await?;

        let mut manifests: Vec<&ScannedManifest> = manifests.iter().collect();
        manifests.sort_by(|a, b| a.digest.cmp(&b.digest));
        let digests: Vec<&str> = manifests.iter().map(|m| m.digest.as_str()).collect();
        let media_types: Vec<&str> = manifests.iter().map(|m| m.media_type.as_str()).collect();
        let sizes: Vec<Option<i64>> = manifests.iter().map(|m| m.size).collect();
        let linked: Vec<bool> = manifests.iter().map(|m| m.blobs.is_some()).collect();
        sqlx::query(
            "INSERT INTO history_manifests AS m (registry, repository, digest, media_type, size, links_known, first_seen)
             SELECT $1, $2, u.digest, u.media_type, u.size, u.linked, $7
             FROM UNNEST($3::text[], $4::text[], $5::bigint[], $6::bool[]) AS u (digest, media_type, size, linked)
             WHERE NOT EXISTS (SELECT 1 FROM history_deletions d WHERE d.registry = $1
                 AND d.repository = $2 AND d.digest = u.digest AND d.kind IN ('manifest', 'unknown')
                 AND d.deleted_at >= $7)
             ON CONFLICT (registry, repository, digest) DO UPDATE SET
                media_type = COALESCE(m.media_type, EXCLUDED.media_type),
                size = COALESCE(m.size, EXCLUDED.size),
                links_known = m.links_known OR EXCLUDED.links_known",
        )
        .bind(registry)
        .bind(repository)
        .bind(&digests)
        .bind(&media_types)
        .bind(&sizes)
        .bind(&linked)
        .bind(seen_at)
        .execute(&mut *tx)
        .await?;

        let mut links: Vec<(&str, &BlobRef)> = manifests
            .iter()
            .flat_map(|m| {
                m.blobs
                    .iter()
                    .flatten()
                    .map(move |b| (m.digest.as_str(), b))
            })
            .collect();
        links.sort_by(|a, b| (a.0, &a.1.digest).cmp(&(b.0, &b.1.digest)));
        links.dedup_by(|a, b| a.0 == b.0 && a.1.digest == b.1.digest);
        insert_links(
            &mut tx,
            registry,
            repository,
            links
                .iter()
                .map(|(m, b)| (*m, b.digest.as_str(), b.size, b.media_type.as_deref())),
        )
        .await?;
        // Blobs only a manifest names: known to exist, never reported by an event.
        let mut blobs: Vec<&BlobRef> = links.iter().map(|(_, b)| *b).collect();
        blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
        blobs.dedup_by(|a, b| a.digest == b.digest);
        let blob_digests: Vec<&str> = blobs.iter().map(|b| b.digest.as_str()).collect();
        let blob_sizes: Vec<Option<i64>> = blobs.iter().map(|b| b.size).collect();
        let blob_types: Vec<Option<&str>> = blobs.iter().map(|b| b.media_type.as_deref()).collect();
        sqlx::query(
            "INSERT INTO history_blobs (registry, repository, digest, size, media_type, source, first_seen)
             SELECT $1, $2, u.digest, u.size, u.media_type, 'scan', $6
             FROM UNNEST($3::text[], $4::bigint[], $5::text[]) AS u (digest, size, media_type)
             ON CONFLICT (registry, repository, digest) DO NOTHING",
        )
        .bind(registry)
        .bind(repository)
        .bind(&blob_digests)
        .bind(&blob_sizes)
        .bind(&blob_types)
        .bind(seen_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Of `digests` (manifests of one repository), those whose blobs are not recorded yet.
    pub async fn manifests_needing_links(
        &self,
        registry: &str,
        repository: &RepositoryName,
        digests: &[Digest],
    ) -> Result<HashSet<Digest>, HistoryError> {
        let wanted: Vec<&str> = digests.iter().map(Digest::as_str).collect();
        let known: Vec<String> = sqlx::query_scalar(
            "SELECT digest FROM history_manifests
             WHERE registry = $1 AND repository = $2 AND digest = ANY($3::text[]) AND links_known",
        )
        .bind(registry)
        .bind(repository.as_str())
        .bind(&wanted)
        .fetch_all(&self.pool)
        .await?;
        let known: HashSet<&str> = known.iter().map(String::as_str).collect();
        Ok(digests
            .iter()
            .filter(|d| !known.contains(d.as_str()))
            .cloned()
            .collect())
    }

    /// Drops audit rows and raw events older than their retention, in chunks so that a
    /// large backlog never holds one long transaction.
    pub async fn prune(
        &self,
        audit_retention_days: u32,
        event_retention_days: u32,
    ) -> Result<PruneOutcome, HistoryError> {
        let deletions = prune_chunked(
            &self.pool,
            "DELETE FROM history_deletions WHERE id IN (
                SELECT id FROM history_deletions
                WHERE deleted_at < now() - make_interval(days => $1) LIMIT $2)",
            audit_retention_days,
        )
        .await?;
        let events = prune_chunked(
            &self.pool,
            "DELETE FROM history_events WHERE event_id IN (
                SELECT event_id FROM history_events
                WHERE received_at < now() - make_interval(days => $1) LIMIT $2)",
            event_retention_days,
        )
        .await?;
        let outcome = PruneOutcome { deletions, events };
        Ok(outcome)
    }
}

/// Runs `delete` (`$1`: the retention in days, `$2`: the most rows at once) until it
/// removes less than a chunk; returns the rows removed.
async fn prune_chunked(
    pool: &PgPool,
    delete: &str,
    retention_days: u32,
) -> Result<u64, HistoryError> {
    let mut total = 0;
    loop {
        let removed = sqlx::query(delete)
            .bind(i32::try_from(retention_days).unwrap_or(i32::MAX))
            .bind(ROWS_PER_PRUNE)
            .execute(pool)
            .await?
            .rows_affected();
        total += removed;
        if removed < ROWS_PER_PRUNE as u64 {
            return Ok(total);
        }
    }
}

/// Inserts the events' ids and details; returns the ids that were new.
async fn insert_events(
    tx: &mut Tx<'_>,
    events: &[ActivityEvent],
) -> Result<HashSet<String>, HistoryError> {
    let column = |f: fn(&ActivityEvent) -> Option<&str>| events.iter().map(f).collect::<Vec<_>>();
    let inserted = UnnestInsert::into_table("history_events")
        .column("event_id", "text[]", column(|e| Some(e.id.as_str())))
        .column(
            "occurred_at",
            "timestamptz[]",
            events.iter().map(|e| e.at).collect(),
        )
        .column("activity", "text[]", column(|e| Some(e.activity.as_str())))
        .column("registry", "text[]", column(|e| Some(e.registry.as_str())))
        .column(
            "repository",
            "text[]",
            column(|e| Some(e.repository.as_str())),
        )
        .column("tag", "text[]", column(|e| e.tag.as_ref().map(Tag::as_str)))
        .column(
            "digest",
            "text[]",
            column(|e| e.digest.as_ref().map(Digest::as_str)),
        )
        .column("media_type", "text[]", column(|e| e.media_type.as_deref()))
        .column("size", "bigint[]", events.iter().map(|e| e.size).collect())
        .column("actor", "text[]", column(|e| e.actor.as_deref()))
        .column("addr", "text[]", column(|e| e.addr.as_deref()))
        .column("method", "text[]", column(|e| e.method.as_deref()))
        .returning_text(
            "ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
            &mut **tx,
        )
        .await?;
    Ok(inserted.into_iter().collect())
}

async fn insert_links<'a>(
    tx: &mut Tx<'_>,
    registry: &str,
    repository: &str,
    links: impl Iterator<Item = (&'a str, &'a str, Option<i64>, Option<&'a str>)>,
) -> Result<(), HistoryError> {
    let (mut manifests, mut blobs, mut sizes, mut types) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (manifest, blob, size, media_type) in links {
        manifests.push(manifest);
        blobs.push(blob);
        sizes.push(size);
        types.push(media_type);
    }
    if manifests.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO history_manifest_blobs (registry, repository, manifest_digest, blob_digest, size, media_type)
         SELECT $1, $2, u.m, u.b, u.size, u.media_type
         FROM UNNEST($3::text[], $4::text[], $5::bigint[], $6::text[]) AS u (m, b, size, media_type)
         -- Only for manifests the history holds (a backfill may have been overtaken by a delete).
         WHERE EXISTS (SELECT 1 FROM history_manifests x WHERE x.registry = $1 AND x.repository = $2
             AND x.digest = u.m)
         ON CONFLICT DO NOTHING",
    )
    .bind(registry)
    .bind(repository)
    .bind(&manifests)
    .bind(&blobs)
    .bind(&sizes)
    .bind(&types)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Applies a batch's aggregates: upserts in key order, then the deletes in time order.
async fn apply(tx: &mut Tx<'_>, agg: &Aggregates) -> Result<(), HistoryError> {
    if !agg.tags.is_empty() {
        let rows: Vec<_> = agg.tags.iter().collect();
        let seen = |(_, d): &(&TagKey, &TagDelta)| d.digest.as_ref().map(|(at, _)| *at);
        UnnestInsert::into_table("history_tags AS t")
            .places(rows.iter().map(|(k, _)| (&k.registry, &k.repository)))
            .column("tag", "text[]", map(&rows, |(k, _)| k.tag.as_str()))
            .column("digest", "text[]", map(&rows, |(_, d)| d.digest.as_ref().map(|(_, d)| d.as_str())))
            .column("digest_seen_at", "timestamptz[]", map(&rows, seen))
            .counts(rows.iter().map(|(_, d)| &d.counts))
            .execute(
                &format!(
                    "ON CONFLICT (registry, repository, tag) DO UPDATE SET
                    digest = CASE WHEN t.digest_seen_at IS NULL OR EXCLUDED.digest_seen_at >= t.digest_seen_at
                                  THEN COALESCE(EXCLUDED.digest, t.digest) ELSE t.digest END,
                    digest_seen_at = GREATEST(t.digest_seen_at, EXCLUDED.digest_seen_at),
                    {}",
                    counts_update("t")
                ),
                &mut **tx,
            )
            .await?;
    }

    if !agg.manifests.is_empty() {
        let with_links: HashSet<&ObjectKey> = agg.links.keys().map(|l| &l.manifest).collect();
        let rows: Vec<_> = agg.manifests.iter().collect();
        UnnestInsert::into_table("history_manifests AS m")
            .objects(rows.iter().map(|(k, _)| *k))
            .column(
                "media_type",
                "text[]",
                map(&rows, |(_, d)| d.media_type.as_deref()),
            )
            .column("size", "bigint[]", map(&rows, |(_, d)| d.size))
            .column(
                "links_known",
                "bool[]",
                map(&rows, |(k, _)| with_links.contains(k)),
            )
            .counts(rows.iter().map(|(_, d)| &d.counts))
            .execute(
                &format!(
                    "ON CONFLICT (registry, repository, digest) DO UPDATE SET
                    media_type = COALESCE(EXCLUDED.media_type, m.media_type),
                    size = COALESCE(EXCLUDED.size, m.size),
                    links_known = m.links_known OR EXCLUDED.links_known,
                    {}",
                    counts_update("m")
                ),
                &mut **tx,
            )
            .await?;
    }

    if !agg.blobs.is_empty() {
        let rows: Vec<_> = agg.blobs.iter().collect();
        UnnestInsert::into_table("history_blobs AS b")
            .objects(rows.iter().map(|(k, _)| *k))
            .column(
                "media_type",
                "text[]",
                map(&rows, |(_, d)| d.media_type.as_deref()),
            )
            .column("size", "bigint[]", map(&rows, |(_, d)| d.size))
            .column("mount_count", "bigint[]", map(&rows, |(_, d)| d.mounts))
            .counts(rows.iter().map(|(_, d)| &d.counts))
            .execute(
                &format!(
                    "ON CONFLICT (registry, repository, digest) DO UPDATE SET
                    media_type = COALESCE(EXCLUDED.media_type, b.media_type),
                    size = COALESCE(EXCLUDED.size, b.size),
                    source = 'event',
                    mount_count = b.mount_count + EXCLUDED.mount_count,
                    {}",
                    counts_update("b")
                ),
                &mut **tx,
            )
            .await?;
    }

    // Links are per repository; one batch may span several.
    let mut by_repository: std::collections::BTreeMap<(&str, &str), Vec<_>> = Default::default();
    for (link, info) in &agg.links {
        by_repository
            .entry((
                link.manifest.registry.as_str(),
                link.manifest.repository.as_str(),
            ))
            .or_default()
            .push((
                link.manifest.digest.as_str(),
                link.blob.as_str(),
                info.size,
                info.media_type.as_deref(),
            ));
    }
    for ((registry, repository), links) in by_repository {
        insert_links(tx, registry, repository, links.into_iter()).await?;
    }

    if !agg.daily.is_empty() {
        let rows: Vec<_> = agg.daily.iter().collect();
        let count = |f: fn(&DailyDelta) -> i64| map(&rows, move |(_, d)| f(d));
        UnnestInsert::into_table("history_daily AS d")
            .places(rows.iter().map(|(k, _)| (&k.registry, &k.repository)))
            .column("day", "date[]", map(&rows, |(k, _)| k.day))
            .column("manifest_pushes", "bigint[]", count(|d| d.manifest_pushes))
            .column("manifest_pulls", "bigint[]", count(|d| d.manifest_pulls))
            .column("blob_pushes", "bigint[]", count(|d| d.blob_pushes))
            .column("blob_pulls", "bigint[]", count(|d| d.blob_pulls))
            .column("deletes", "bigint[]", count(|d| d.deletes))
            .execute(
                "ON CONFLICT (registry, repository, day) DO UPDATE SET
                    manifest_pushes = d.manifest_pushes + EXCLUDED.manifest_pushes,
                    manifest_pulls = d.manifest_pulls + EXCLUDED.manifest_pulls,
                    blob_pushes = d.blob_pushes + EXCLUDED.blob_pushes,
                    blob_pulls = d.blob_pulls + EXCLUDED.blob_pulls,
                    deletes = d.deletes + EXCLUDED.deletes",
                &mut **tx,
            )
            .await?;
    }

    for deletion in &agg.deletions {
        apply_deletion(tx, deletion).await?;
    }
    Ok(())
}

/// Moves what a delete removed into the audit trail. A delete of something the history
/// never recorded is audited too (kind `unknown`, or `tag`), without a previous record.
async fn apply_deletion(tx: &mut Tx<'_>, d: &Deletion) -> Result<(), HistoryError> {
    // `$4` is the delete's time: rows pushed after it (a tag pushed again) stay.
    const MOVE: &str = "INSERT INTO history_deletions
            (deleted_at, registry, repository, kind, tag, digest, actor, addr, event_id, record)";
    let mut moved = 0;
    let statements: Vec<String> = match (&d.tag, &d.digest) {
        (_, Some(_)) => vec![
            format!(
                    "WITH gone AS (DELETE FROM history_manifests x WHERE registry = $1 AND repository = $2
                        AND digest = $3 AND (x.last_pushed IS NULL OR x.last_pushed <= $4) RETURNING x.*)
                     {MOVE} SELECT $4, registry, repository, 'manifest', NULL, digest, $5, $6, $7, to_jsonb(gone)
                     FROM gone"
            ),
            format!(
                    "WITH gone AS (DELETE FROM history_blobs x WHERE registry = $1 AND repository = $2
                        AND digest = $3 AND (x.last_pushed IS NULL OR x.last_pushed <= $4) RETURNING x.*)
                     {MOVE} SELECT $4, registry, repository, 'blob', NULL, digest, $5, $6, $7, to_jsonb(gone)
                     FROM gone"
            ),
        ],
        (Some(_), None) => vec![format!(
                "WITH gone AS (DELETE FROM history_tags x WHERE registry = $1 AND repository = $2
                    AND tag = $3 AND (x.last_pushed IS NULL OR x.last_pushed <= $4) RETURNING x.*)
                 {MOVE} SELECT $4, registry, repository, 'tag', tag, digest, $5, $6, $7, to_jsonb(gone)
                 FROM gone"
        )],
        (None, None) => return Ok(()),
    };
    for sql in &statements {
        moved += sqlx::query(sql)
            .bind(&d.registry)
            .bind(&d.repository)
            .bind(d.digest.as_deref().or(d.tag.as_deref()))
            .bind(d.at)
            .bind(d.actor.as_deref())
            .bind(d.addr.as_deref())
            .bind(&d.event_id)
            .execute(&mut **tx)
            .await?
            .rows_affected();
    }
    if let Some(digest) = &d.digest {
        // A deleted manifest's blob links go with it (the blobs themselves stay until
        // the registry reports their deletion).
        sqlx::query(
            "DELETE FROM history_manifest_blobs WHERE registry = $1 AND repository = $2
                AND manifest_digest = $3
                AND NOT EXISTS (SELECT 1 FROM history_manifests m WHERE m.registry = $1
                    AND m.repository = $2 AND m.digest = $3)",
        )
        .bind(&d.registry)
        .bind(&d.repository)
        .bind(digest)
        .execute(&mut **tx)
        .await?;
    }
    if moved == 0 && d.digest.is_none() {
        // A scan may have found the tag gone first (its listing ran between the delete
        // and this event) and audited it without a who or where: this event completes
        // that row instead of auditing the same delete twice.
        moved += sqlx::query(
            "UPDATE history_deletions SET deleted_at = $4, actor = $5, addr = $6, event_id = $7
             WHERE id = (SELECT id FROM history_deletions WHERE registry = $1 AND repository = $2
                 AND kind = 'tag' AND tag = $3 AND event_id IS NULL AND deleted_at >= $4
                 ORDER BY deleted_at, id LIMIT 1)",
        )
        .bind(&d.registry)
        .bind(&d.repository)
        .bind(d.tag.as_deref())
        .bind(d.at)
        .bind(d.actor.as_deref())
        .bind(d.addr.as_deref())
        .bind(&d.event_id)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    }
    if moved == 0 {
        let kind = if d.digest.is_some() { "unknown" } else { "tag" };
        sqlx::query(&format!(
            "{MOVE} VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL)"
        ))
        .bind(d.at)
        .bind(&d.registry)
        .bind(&d.repository)
        .bind(kind)
        .bind(d.tag.as_deref())
        .bind(d.digest.as_deref())
        .bind(d.actor.as_deref())
        .bind(d.addr.as_deref())
        .bind(&d.event_id)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// One column of a batch: `f` of every row.
fn map<'a, R, T>(rows: &'a [R], f: impl Fn(&'a R) -> T) -> Vec<T> {
    rows.iter().map(f).collect()
}

/// The `SET` clauses of the activity columns of table alias `alias` (tags, manifests,
/// blobs): times widen, counts add up.
fn counts_update(alias: &str) -> String {
    format!(
        "first_pushed = LEAST({alias}.first_pushed, EXCLUDED.first_pushed),
        last_pushed = GREATEST({alias}.last_pushed, EXCLUDED.last_pushed),
        push_count = {alias}.push_count + EXCLUDED.push_count,
        last_pulled = GREATEST({alias}.last_pulled, EXCLUDED.last_pulled),
        pull_count = {alias}.pull_count + EXCLUDED.pull_count"
    )
}

/// The columns the history's tables share, added to a batch.
trait HistoryColumns: Sized {
    /// `registry` and `repository`.
    fn places<'a>(self, places: impl Iterator<Item = (&'a String, &'a String)> + Clone) -> Self;
    /// `registry`, `repository` and `digest` of manifests or blobs.
    fn objects<'a>(self, keys: impl Iterator<Item = &'a ObjectKey> + Clone) -> Self;
    /// `first_pushed`, `last_pushed`, `push_count`, `last_pulled`, `pull_count`.
    fn counts<'a>(self, counts: impl Iterator<Item = &'a Counts> + Clone) -> Self;
}

impl HistoryColumns for UnnestInsert {
    fn places<'a>(self, places: impl Iterator<Item = (&'a String, &'a String)> + Clone) -> Self {
        let registries: Vec<&str> = places.clone().map(|(r, _)| r.as_str()).collect();
        let repositories: Vec<&str> = places.map(|(_, r)| r.as_str()).collect();
        self.column("registry", "text[]", registries)
            .column("repository", "text[]", repositories)
    }

    fn objects<'a>(self, keys: impl Iterator<Item = &'a ObjectKey> + Clone) -> Self {
        let digests: Vec<&str> = keys.clone().map(|k| k.digest.as_str()).collect();
        self.places(keys.map(|k| (&k.registry, &k.repository)))
            .column("digest", "text[]", digests)
    }

    fn counts<'a>(self, counts: impl Iterator<Item = &'a Counts> + Clone) -> Self {
        let time =
            |f: fn(&Counts) -> Option<DateTime<Utc>>| counts.clone().map(f).collect::<Vec<_>>();
        let count = |f: fn(&Counts) -> i64| counts.clone().map(f).collect::<Vec<_>>();
        self.column("first_pushed", "timestamptz[]", time(|c| c.first_pushed))
            .column("last_pushed", "timestamptz[]", time(|c| c.last_pushed))
            .column("push_count", "bigint[]", count(|c| c.pushes))
            .column("last_pulled", "timestamptz[]", time(|c| c.last_pulled))
            .column("pull_count", "bigint[]", count(|c| c.pulls))
    }
}
