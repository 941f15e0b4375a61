//! The statistics, read from the history tables. Each function takes a parsed query
//! (see [`crate::history::query`]) and returns one page in a stable order (every ORDER BY ends
//! with the row's key).

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Serialize;
use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;
use sqlx::{PgPool, Postgres};

use super::filter::{Bind, Filter};
use crate::history::query::{
    ActivityQuery, CountsQuery, DeletionsQuery, ImageSelection, ImagesQuery, Page, Paged,
    ScopedQuery,
};
use crate::history::HistoryError;

/// A tagged image: a tag, the manifest it points at, and their activity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ImageRow {
    pub registry: String,
    pub repository: String,
    pub tag: String,
    pub digest: Option<String>,
    pub media_type: Option<String>,
    pub size: Option<i64>,
    /// When the manifest was first pushed (`null` when it predates the history).
    pub first_pushed: Option<DateTime<Utc>>,
    /// When the tag was last pushed.
    pub last_pushed: Option<DateTime<Utc>>,
    pub push_count: i64,
    /// Last pull of the tag, or of its manifest by digest.
    pub last_pulled: Option<DateTime<Utc>>,
    /// Pulls by tag.
    pub pull_count: i64,
    /// Pulls of the manifest, by tag or digest.
    pub manifest_pull_count: Option<i64>,
    /// When the history first saw the tag (an event or a backfill scan).
    pub first_seen: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Counts {
    pub repositories: i64,
    pub tags: i64,
    pub manifests: i64,
    pub blobs: i64,
    /// Manifests and blobs, each distinct digest once.
    pub bytes: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct TaggedManifest {
    pub registry: String,
    pub repository: String,
    pub digest: String,
    pub tag_count: i64,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct BlobRow {
    pub registry: String,
    pub repository: String,
    pub digest: String,
    pub media_type: Option<String>,
    pub size: Option<i64>,
    pub first_seen: DateTime<Utc>,
    pub first_pushed: Option<DateTime<Utc>>,
    pub last_pushed: Option<DateTime<Utc>>,
    pub push_count: i64,
    pub mount_count: i64,
    pub last_pulled: Option<DateTime<Utc>>,
    pub pull_count: i64,
    /// `event` (the registry reported it) or `scan` (only a manifest names it).
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct MissingBlob {
    pub registry: String,
    pub repository: String,
    pub manifest_digest: String,
    pub blob_digest: String,
    pub media_type: Option<String>,
    pub size: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct DeletionRow {
    pub id: i64,
    pub deleted_at: DateTime<Utc>,
    pub registry: String,
    pub repository: String,
    /// `tag`, `manifest`, `blob`, or `unknown` (a digest the history never recorded).
    pub kind: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
    /// The registry's `actor.name` (`null`: anonymous, or a scan found it gone).
    pub actor: Option<String>,
    /// The client's address (`request.addr`).
    pub addr: Option<String>,
    pub event_id: Option<String>,
    /// The deleted row as it was.
    pub record: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct DailyActivity {
    pub day: NaiveDate,
    pub manifest_pushes: i64,
    pub manifest_pulls: i64,
    pub blob_pushes: i64,
    pub blob_pulls: i64,
    pub deletes: i64,
}

/// Binds a filter's values in placeholder order.
fn bind_all<'q, O>(
    mut query: QueryAs<'q, Postgres, O, PgArguments>,
    binds: &'q [Bind],
) -> QueryAs<'q, Postgres, O, PgArguments> {
    for bind in binds {
        query = match bind {
            Bind::Text(s) => query.bind(s.as_str()),
            Bind::Time(t) => query.bind(*t),
            Bind::Date(d) => query.bind(*d),
            Bind::Int(n) => query.bind(*n),
        };
    }
    query
}

impl HistoryQueries {
    /// One page of `sql` (whose `LIMIT` fetches one row more than the page, to tell
    /// whether there is a next one), with the filter's values bound.
    async fn page<T>(&self, sql: &str, f: &Filter, page: Page) -> Result<Paged<T>, HistoryError>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        let rows = bind_all(sqlx::query_as::<_, T>(sql), f.binds())
            .fetch_all(&self.pool)
            .await?;
        Ok(Paged::from_rows(rows, page))
    }
}

fn days_ago(now: DateTime<Utc>, days: u32) -> DateTime<Utc> {
    now - Duration::days(i64::from(days))
}

#[derive(Clone)]
pub struct HistoryQueries {
    pool: PgPool,
}

impl HistoryQueries {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub async fn images(
        &self,
        q: &ImagesQuery,
        now: DateTime<Utc>,
    ) -> Result<Paged<ImageRow>, HistoryError> {
        let mut f = Filter::default();
        f.scope(&q.scope, "t.registry", "t.repository");
        let order = match q.selection {
            ImageSelection::All => "t.registry, t.repository, t.tag",
            ImageSelection::OlderThan { days } => {
                f.compare(
                    "COALESCE(m.first_pushed, t.first_pushed, LEAST(m.first_seen, t.first_seen))",
                    "<",
                    Bind::Time(days_ago(now, days)),
                );
                "COALESCE(m.first_pushed, t.first_pushed, LEAST(m.first_seen, t.first_seen)), t.registry, t.repository, t.tag"
            }
            ImageSelection::NotPulledFor {
                never_only: true, ..
            } => {
                f.condition("t.last_pulled IS NULL AND m.last_pulled IS NULL");
                "t.registry, t.repository, t.tag"
            }
            ImageSelection::NotPulledFor { days, .. } => {
                f.compare(
                    "COALESCE(GREATEST(t.last_pulled, m.last_pulled), '-infinity'::timestamptz)",
                    "<",
                    Bind::Time(days_ago(now, days)),
                );
                "GREATEST(t.last_pulled, m.last_pulled) NULLS FIRST, t.registry, t.repository, t.tag"
            }
        };
        let sql = format!(
            "SELECT t.registry, t.repository, t.tag, t.digest, m.media_type, m.size,
                    COALESCE(m.first_pushed, t.first_pushed) AS first_pushed, t.last_pushed, t.push_count,
                    GREATEST(t.last_pulled, m.last_pulled) AS last_pulled, t.pull_count,
                    m.pull_count AS manifest_pull_count, t.first_seen
             FROM history_tags t
             LEFT JOIN history_manifests m
               ON m.registry = t.registry AND m.repository = t.repository AND m.digest = t.digest
             {} ORDER BY {order} {}",
            f.where_sql(),
            f.page_sql(q.page)
        );
        self.page(&sql, &f, q.page).await
    }

    pub async fn counts(&self, q: &CountsQuery) -> Result<Counts, HistoryError> {
        let mut f = Filter::default();
        f.scope(&q.scope, "registry", "repository");
        let w = f.where_sql();
        let sql = format!(
            "SELECT
                (SELECT count(*) FROM (SELECT registry, repository FROM history_tags {w}
                                       UNION SELECT registry, repository FROM history_manifests {w}) r) AS repositories,
                (SELECT count(*) FROM history_tags {w}) AS tags,
                (SELECT count(*) FROM history_manifests {w}) AS manifests,
                (SELECT count(DISTINCT digest) FROM (SELECT digest FROM history_blobs {w}
                                       UNION ALL SELECT blob_digest FROM history_manifest_blobs {w}) b) AS blobs,
                (SELECT COALESCE(sum(size), 0)::bigint FROM (
                    SELECT digest, max(size) AS size FROM (
                        SELECT digest, size FROM history_blobs {w}
                        UNION ALL SELECT blob_digest, size FROM history_manifest_blobs {w}
                        UNION ALL SELECT digest, size FROM history_manifests {w}) s
                    GROUP BY digest) d) AS bytes"
        );
        Ok(bind_all(sqlx::query_as::<_, Counts>(&sql), f.binds())
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn most_tagged(
        &self,
        q: &ScopedQuery,
    ) -> Result<Paged<TaggedManifest>, HistoryError> {
        let mut f = Filter::default();
        f.scope(&q.scope, "registry", "repository")
            .condition("digest IS NOT NULL");
        let sql = format!(
            "SELECT registry, repository, digest, count(*) AS tag_count, array_agg(tag ORDER BY tag) AS tags
             FROM history_tags {} GROUP BY registry, repository, digest
             ORDER BY tag_count DESC, registry, repository, digest {}",
            f.where_sql(),
            f.page_sql(q.page)
        );
        self.page(&sql, &f, q.page).await
    }

    /// Blobs no recorded manifest of their repository references.
    pub async fn orphaned_blobs(&self, q: &ScopedQuery) -> Result<Paged<BlobRow>, HistoryError> {
        let mut f = Filter::default();
        f.scope(&q.scope, "b.registry", "b.repository").condition(
            "NOT EXISTS (SELECT 1 FROM history_manifest_blobs l WHERE l.registry = b.registry
                AND l.repository = b.repository AND l.blob_digest = b.digest)",
        );
        let sql = format!(
            "SELECT b.registry, b.repository, b.digest, b.media_type, b.size, b.first_seen, b.first_pushed,
                    b.last_pushed, b.push_count, b.mount_count, b.last_pulled, b.pull_count, b.source
             FROM history_blobs b {} ORDER BY b.registry, b.repository, b.digest {}",
            f.where_sql(),
            f.page_sql(q.page)
        );
        self.page(&sql, &f, q.page).await
    }

    /// Manifest → blob links whose blob the registry never reported (no push, mount or
    /// pull event for it in that repository).
    pub async fn missing_blobs(&self, q: &ScopedQuery) -> Result<Paged<MissingBlob>, HistoryError> {
        let mut f = Filter::default();
        f.scope(&q.scope, "l.registry", "l.repository").condition(
            "NOT EXISTS (SELECT 1 FROM history_blobs b WHERE b.registry = l.registry
                AND b.repository = l.repository AND b.digest = l.blob_digest AND b.source = 'event')",
        );
        let sql = format!(
            "SELECT l.registry, l.repository, l.manifest_digest, l.blob_digest, l.media_type, l.size
             FROM history_manifest_blobs l {}
             ORDER BY l.registry, l.repository, l.manifest_digest, l.blob_digest {}",
            f.where_sql(),
            f.page_sql(q.page)
        );
        self.page(&sql, &f, q.page).await
    }

    pub async fn deletions(&self, q: &DeletionsQuery) -> Result<Paged<DeletionRow>, HistoryError> {
        let mut f = Filter::default();
        f.scope(&q.scope, "registry", "repository");
        if let Some(since) = q.since {
            f.compare("deleted_at", ">=", Bind::Time(since));
        }
        if let Some(until) = q.until {
            f.compare("deleted_at", "<", Bind::Time(until));
        }
        let sql = format!(
            "SELECT id, deleted_at, registry, repository, kind, tag, digest, actor, addr, event_id, record
             FROM history_deletions {} ORDER BY deleted_at, id {}",
            f.where_sql(),
            f.page_sql(q.page)
        );
        self.page(&sql, &f, q.page).await
    }

    /// Per UTC day, summed over the registry's aliases (and over registries unless one
    /// is given).
    pub async fn activity(&self, q: &ActivityQuery) -> Result<Paged<DailyActivity>, HistoryError> {
        let mut f = Filter::default();
        f.compare("repository", "=", Bind::Text(q.repository.to_string()));
        if let Some(registry) = &q.registry {
            f.compare("registry", "=", Bind::Text(registry.clone()));
        }
        if let Some(since) = q.since {
            f.compare("day", ">=", Bind::Date(since));
        }
        if let Some(until) = q.until {
            f.compare("day", "<=", Bind::Date(until));
        }
        let sql = format!(
            "SELECT day, sum(manifest_pushes)::bigint AS manifest_pushes,
                    sum(manifest_pulls)::bigint AS manifest_pulls, sum(blob_pushes)::bigint AS blob_pushes,
                    sum(blob_pulls)::bigint AS blob_pulls, sum(deletes)::bigint AS deletes
             FROM history_daily {} GROUP BY day ORDER BY day {}",
            f.where_sql(),
            f.page_sql(q.page)
        );
        self.page(&sql, &f, q.page).await
    }
}
