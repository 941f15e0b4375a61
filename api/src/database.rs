//! The api's database sessions and what it knows of the database's health.
//!
//! The api only reads, so every session is read-only and every statement time-limited
//! (`api.statement_timeout_ms`). The pool connects lazily: the api starts, listens and
//! answers `/healthz` while the database is still down, and a [`DatabaseMonitor`] logs
//! what it waits for until the database (with the right schema) answers.

use regindex::config::Config;
use regindex::store::availability::PROBE_TIMEOUT;
use regindex::store::{
    Availability, DataVersionWatch, DatabaseMonitor, SessionSettings, Store, StoreError,
    DATA_VERSION_POLL_INTERVAL,
};
use tokio_util::sync::CancellationToken;

/// Session settings of the api: read-only, every statement time-limited, no JIT (index
/// and page queries are short; compiling them costs more than it saves).
pub fn session_settings(config: &Config) -> SessionSettings {
    SessionSettings {
        read_only: true,
        statement_timeout: Some(config.api.statement_timeout),
        jit_off: true,
    }
}

/// The api's store: a lazily connecting pool of read-only sessions. No I/O.
pub fn store(config: &Config) -> Result<Store, StoreError> {
    Ok(Store::connect_lazy(&config.database, &session_settings(config))?.with_icons(&config.icons))
}

/// Starts watching the database `store` connects to, until `stop`.
pub fn monitor(store: &Store, stop: CancellationToken) -> DatabaseMonitor {
    DatabaseMonitor::spawn(store.connect_options(), stop)
}

/// Starts following the data version of the database `store` connects to (its own
/// connections, with the api's session settings), until `stop`.
pub fn data_version(store: &Store, stop: CancellationToken) -> DataVersionWatch {
    DataVersionWatch::spawn(store.connect_options(), DATA_VERSION_POLL_INTERVAL, stop)
}

/// What `/readyz` says of the database: `Ok` when the last probe succeeded. Right after
/// start-up, it waits for the first probe (a few milliseconds when the database
/// answers) rather than calling a healthy api not ready.
pub async fn readiness(monitor: &DatabaseMonitor) -> Result<(), String> {
    let known = tokio::time::timeout(PROBE_TIMEOUT, monitor.known()).await;
    match known.unwrap_or(Availability::Unknown) {
        Availability::Up => Ok(()),
        Availability::Unknown => Err(format!("{}: not reached yet", monitor.target())),
        Availability::Down { reason } => Err(reason),
    }
}
