//! PostgreSQL store: schema, per-repository replacement, garbage collection, index queries.
//!
//! The schema lives in `schema.sql` at the repository root (safe to re-apply); `migrate`
//! applies it and `connect` refuses a database whose schema is missing, older or newer.
//!
//! Files: `refetch.rs` (what a refetch reads first, and its ticket), `replace.rs` (a
//! repository's write transaction), `plan.rs` (its pure decisions), `problems.rs` (tags a
//! refetch could not use), `gc.rs`, `index_query.rs` (the SQL side of index queries),
//! `load.rs` (reading a repository back), `rows.rs` (decoding stored values), `bodhi.rs`
//! (build matches and recent updates for Bodhi messages), `data_version.rs` (the
//! data version in memory, from notifications), `jobs.rs` (when the worker's
//! periodic jobs last succeeded, and their locks), `summaries.rs` (per-repository titles and
//! descriptions), `browse.rs` (repositories as the web page lists them), `full_text.rs`
//! (search), `icon_blobs.rs` (content-addressed icon bytes), `history/` (the activity
//! history: recording, backfill state, pruning, statistics), `unnest.rs` (batch upserts
//! in one statement).

pub mod availability;
mod bodhi;
mod browse;
mod data_version;
mod error;
mod full_text;
mod gc;
pub mod history;
mod icon_blobs;
mod index_query;
mod jobs;
mod load;
pub mod plan;
mod problems;
mod refetch;
mod replace;
mod rows;
mod summaries;
mod unnest;

pub use availability::{Availability, DatabaseMonitor};
pub use browse::{RepositoryContents, RepositorySummary};
pub use data_version::{
    DataVersionWatch, ReplicaLag, VersionFloor, DATA_VERSION_CHANNEL, DATA_VERSION_POLL_INTERVAL,
    REPLICA_CATCH_UP_POLL,
};
pub use error::StoreError;
pub use full_text::SummaryHit;
pub use icon_blobs::{IconGc, StoredIcon};
pub use index_query::{IndexPartsSnapshot, IndexSnapshot, KnownParts};
pub use jobs::PeriodicJob;
pub use problems::StoredProblem;
pub use refetch::{RefetchTicket, StoredRepository};

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgConnection;

use crate::config::DatabaseConfig;
use crate::model::RepositoryName;

/// The schema version `schema.sql` creates; `connect` requires exactly this.
pub const SCHEMA_VERSION: i32 = 6;

/// The schema, applied by `migrate`.
const SCHEMA_SQL: &str = include_str!("../../../schema.sql");

/// Advisory lock key that serialises concurrent `migrate` runs. Repository locks are
/// derived from hashes (see `repository_lock_key`); a collision with this constant would
/// only make a migration wait for one refetch.
const MIGRATE_LOCK_KEY: i64 = 0x7265_6769_6e64_6578; // "regindex"

#[derive(Clone)]
pub struct Store {
    pool: sqlx::PgPool,
    /// Larger icons are not extracted (`icons.max_bytes`).
    icon_max_bytes: usize,
    /// Unreferenced icons are kept this long (`icons.gc_grace_secs`).
    icon_gc_grace: Duration,
    /// The sessions' own `statement_timeout` (see `SessionSettings`), which index
    /// queries then keep instead of their default limit.
    statement_timeout: Option<Duration>,
    /// A refetch older than this may not write; see `gc::RefetchRows`.
    refetch_max_age: Duration,
    refetch_rows: std::sync::Arc<gc::RefetchRows>,
}

/// Settings every session of a pool starts with (PostgreSQL start-up `options`, so they
/// hold from the first statement and cost no round trip).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionSettings {
    /// `default_transaction_read_only = on`: every transaction is read-only unless it
    /// asks otherwise. A guard against mistakes; a role with only SELECT rights is the
    /// stronger one (see docs/operations.md).
    pub read_only: bool,
    /// `statement_timeout` of every statement: nothing can hold a connection longer.
    pub statement_timeout: Option<Duration>,
    /// `jit = off`: JIT compilation costs more than it saves on short queries.
    pub jit_off: bool,
}

impl SessionSettings {
    /// The `-c name=value` pairs of these settings.
    fn options(&self) -> Vec<(&'static str, String)> {
        let mut options = Vec::new();
        if self.read_only {
            options.push(("default_transaction_read_only", "on".to_owned()));
        }
        if let Some(timeout) = self.statement_timeout {
            options.push(("statement_timeout", timeout.as_millis().to_string()));
        }
        if self.jit_off {
            options.push(("jit", "off".to_owned()));
        }
        options
    }
}

/// What `RepositoryTx::replace` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaceOutcome {
    /// Something visible to index queries changed (so caches must be invalidated).
    pub changed: bool,
    /// Tags created or moved to another manifest.
    pub tags_set: usize,
    /// Images and lists stored by this call.
    pub manifests_added: usize,
    /// Images and lists removed because no tag reaches them any more.
    pub manifests_removed: usize,
}

/// Default of [`Store::refetch_max_age`]: far longer than any refetch takes.
pub const REFETCH_MAX_AGE: Duration = Duration::from_secs(3600);

/// What a global garbage collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcSummary {
    /// Repositories that had no tags left.
    pub repositories_removed: u64,
    /// Images and lists no tag reached.
    pub manifests_removed: u64,
    /// Icons unreferenced for longer than the grace period, deleted.
    pub icons_removed: u64,
    /// Icons found unreferenced for the first time: deleted after the grace period.
    pub icons_unreferenced: u64,
    /// Refetch tickets (`repository_refetches`) of repositories no longer stored.
    pub refetch_rows_removed: u64,
}

impl Store {
    /// Connects and checks that the schema is present and current.
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, StoreError> {
        let store = Self::connect_unchecked(config).await?;
        store.check_schema().await?;
        Ok(store)
    }

    /// Connects without checking the schema (for `migrate`).
    pub async fn connect_unchecked(config: &DatabaseConfig) -> Result<Self, StoreError> {
        let options = connect_options(config, &SessionSettings::default())?;
        match pool_options(config).connect_with(options.clone()).await {
            Ok(pool) => Ok(Self::from_pool(pool)),
            // The pool says only that it timed out: one connection of its own says why
            // (refused, name not known, password), for the operator to read.
            Err(sqlx::Error::PoolTimedOut) => Err(availability::why_unreachable(&options).await),
            Err(e) => Err(e.into()),
        }
    }

    /// A store whose pool connects on first use: no I/O here, so a process can start
    /// while the database is down and wait for it with a [`DatabaseMonitor`] (which
    /// also checks the schema) on [`Store::connect_options`].
    pub fn connect_lazy(
        config: &DatabaseConfig,
        session: &SessionSettings,
    ) -> Result<Self, StoreError> {
        let pool = pool_options(config).connect_lazy_with(connect_options(config, session)?);
        let mut store = Self::from_pool(pool);
        store.statement_timeout = session.statement_timeout;
        Ok(store)
    }

    /// Wraps an existing pool (tests, tools); the schema is not checked.
    pub fn from_pool(pool: sqlx::PgPool) -> Self {
        Self {
            pool,
            icon_max_bytes: crate::config::IconsConfig::default().max_bytes,
            icon_gc_grace: crate::config::IconsConfig::default().gc_grace,
            statement_timeout: None,
            refetch_max_age: REFETCH_MAX_AGE,
            refetch_rows: Default::default(),
        }
    }

    /// How this store's sessions connect (URL and session settings), e.g. for a
    /// [`DatabaseMonitor`] of the same database.
    pub fn connect_options(&self) -> PgConnectOptions {
        (*self.pool.connect_options()).clone()
    }

    /// Applies the `icons` configuration (the size limit of extracted icons, the grace
    /// period of unreferenced ones).
    pub fn with_icons(mut self, icons: &crate::config::IconsConfig) -> Self {
        self.icon_max_bytes = icons.max_bytes;
        self.icon_gc_grace = icons.gc_grace;
        self
    }

    /// How old a refetch (counted from before it took its ticket) may be when it writes;
    /// an older one fails transiently instead. That bound is what lets the garbage
    /// collection forget the tickets of repositories that are gone.
    pub fn refetch_max_age(&self) -> Duration {
        self.refetch_max_age
    }

    /// Another `refetch_max_age` (tests).
    pub fn with_refetch_max_age(mut self, max_age: Duration) -> Self {
        self.refetch_max_age = max_age;
        self
    }

    /// `SchemaMissing` / `SchemaOutdated` / `SchemaTooNew` unless the database holds
    /// exactly `SCHEMA_VERSION`.
    pub async fn check_schema(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        check_schema(&mut conn).await
    }

    /// Applies `schema.sql`. Idempotent; never drops data.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = begin(&self.pool).await?;
        // Two processes migrating at once would race on CREATE ... IF NOT EXISTS.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATE_LOCK_KEY)
            .execute(&mut *tx)
            .await?;
        // Re-applying reports every existing object as a NOTICE: noise, not news.
        sqlx::query("SET LOCAL client_min_messages = warning")
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(SCHEMA_SQL).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    pub fn pool(&self) -> &sqlx::PgPool {
        &self.pool
    }

    /// Database reachable (for readiness probes).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Starts the short transaction in which a refetch writes a repository (after all
    /// its registry requests). It takes a transaction-scoped advisory lock on the
    /// repository name first, so two writes of one repository never overlap, across all
    /// worker processes.
    pub async fn begin_repository(
        &self,
        repository: &RepositoryName,
    ) -> Result<RepositoryTx, StoreError> {
        let mut tx = begin(&self.pool).await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(repository_lock_key(repository))
            .execute(&mut *tx)
            .await?;
        Ok(RepositoryTx {
            tx,
            repository: repository.clone(),
            icon_max_bytes: self.icon_max_bytes,
        })
    }

    /// Every repository the index knows.
    pub async fn repositories(&self) -> Result<Vec<RepositoryName>, StoreError> {
        let names: Vec<String> = sqlx::query_scalar("SELECT name FROM repositories ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        names.iter().map(|n| rows::repository_name(n)).collect()
    }

    /// Increases on every committed change that index queries can see; caches key on it.
    pub async fn data_version(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT version FROM data_version")
            .fetch_one(&self.pool)
            .await?)
    }
}

fn pool_options(config: &DatabaseConfig) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(config.max_connections.max(1))
        .acquire_timeout(config.acquire_timeout)
}

fn connect_options(
    config: &DatabaseConfig,
    session: &SessionSettings,
) -> Result<PgConnectOptions, StoreError> {
    let options: PgConnectOptions = config.url.expose_secret().parse()?;
    let settings = session.options();
    Ok(if settings.is_empty() {
        options
    } else {
        options.options(settings)
    })
}

/// `SchemaMissing` / `SchemaOutdated` / `SchemaTooNew` unless the database holds exactly
/// `SCHEMA_VERSION`.
async fn check_schema(conn: &mut PgConnection) -> Result<(), StoreError> {
    let present: bool = sqlx::query_scalar("SELECT to_regclass('regindex_schema') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !present {
        return Err(StoreError::SchemaMissing);
    }
    let found: Option<i32> = sqlx::query_scalar("SELECT version FROM regindex_schema")
        .fetch_optional(&mut *conn)
        .await?;
    match found {
        None => Err(StoreError::SchemaMissing),
        Some(found) if found < SCHEMA_VERSION => Err(StoreError::SchemaOutdated {
            found,
            expected: SCHEMA_VERSION,
        }),
        Some(found) if found > SCHEMA_VERSION => Err(StoreError::SchemaTooNew {
            found,
            expected: SCHEMA_VERSION,
        }),
        Some(_) => Ok(()),
    }
}

/// Starts a transaction, safely also for a caller that is dropped meanwhile (a request
/// whose client went away, a worker cancelling its work). sqlx does not roll back a
/// `BEGIN` whose future is dropped before the server answered: the connection went back
/// to the pool inside that transaction, so its next user's statements ran in it and its
/// locks outlived their work. Here the `BEGIN` runs in a task of its own that always
/// finishes it; a transaction nobody awaits any more is dropped there, which rolls it
/// back. Every transaction of the store starts here.
pub(crate) async fn begin(
    pool: &sqlx::PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let pool = pool.clone();
    tokio::spawn(async move { pool.begin().await })
        .await
        .map_err(|_| sqlx::Error::WorkerCrashed)?
}

/// The advisory lock key of a repository: the first 8 bytes of a sha256 of its name,
/// the same in every process (unlike std's randomly seeded hashers).
fn repository_lock_key(repository: &RepositoryName) -> i64 {
    lock_key(repository.as_str())
}

fn lock_key(name: &str) -> i64 {
    use sha2::{Digest as _, Sha256};
    let hash = Sha256::digest(format!("regindex repository {name}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash[..8]);
    i64::from_be_bytes(bytes)
}

/// A repository being refetched: holds the advisory lock until commit or drop.
pub struct RepositoryTx {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    repository: RepositoryName,
    icon_max_bytes: usize,
}
