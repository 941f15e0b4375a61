//! Registry activity history and statistics (parity with regstat).
//!
//! Every registry notification (push, pull, mount, delete of manifests, blobs and tags)
//! reaches the history through its own durable queue (`history.queue`, bound to
//! `registry.#` on the events exchange), so a flood of pulls never delays indexing. The
//! worker's history consumer records batches of events in one transaction each:
//!
//! - [`event`]: what a bus event means for the history, under which canonical host;
//! - [`aggregate`]: a batch folded into row changes (pure);
//! - [`query`]: statistics query parameters and pagination (pure);
//! - [`backfill`]: records what a refetch or scan found, for history predating regindex.
//!
//! The SQL (the transaction, backfill state, pruning, the statistics) is with the rest
//! of the SQL, in [`crate::store::history`].
//!
//! The tables are in the history section of `schema.sql`; see `docs/history.md`.

pub mod aggregate;
pub mod backfill;
pub mod event;
pub mod query;

pub use crate::store::history::{HistoryStore, RecordOutcome};
pub use event::{Activity, ActivityEvent, BlobRef, UnrecordableEvent};

/// The canonical host the configured registry (`registry.url`) is recorded under: what
/// backfill scans attribute their findings to. Configure `history.aliases` so that it is
/// the same host clients use.
pub fn backfill_host(config: &crate::config::Config) -> String {
    config
        .history
        .aliases
        .canonical(Some(&config.registry.url.host_port()))
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("history backfill: {0}")]
    Registry(#[from] crate::registry::RegistryError),
}

impl HistoryError {
    /// Worth retrying the batch later: the connection, the server or a concurrent
    /// transaction (deadlock, serialization failure) is to blame, not the data.
    pub fn is_transient(&self) -> bool {
        match self {
            HistoryError::Database(sqlx::Error::Database(e)) => e.code().is_some_and(|code| {
                TRANSIENT_SQLSTATE_CLASSES
                    .iter()
                    .any(|class| code.starts_with(class))
            }),
            HistoryError::Database(e) => matches!(
                e,
                sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_)
                    | sqlx::Error::Protocol(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
            ),
            HistoryError::Registry(e) => e.is_transient(),
        }
    }
}

/// SQLSTATE classes of failures that go away: connection exceptions, transaction
/// rollbacks (serialization failure, deadlock), insufficient resources, operator
/// intervention (shutdown), system errors.
const TRANSIENT_SQLSTATE_CLASSES: [&str; 5] = ["08", "40", "53", "57", "58"];
