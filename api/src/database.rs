//! The api's database sessions and what it knows of the database's health.
//!
//! The api only reads, so every session is read-only and every statement time-limited
//! (`api.statement_timeout_ms`). The pool connects lazily: the api starts, listens and
//! answers `/healthz` while the database is still down, and a [`DatabaseMonitor`] logs
//! what it waits for until the database (with the right schema) answers.
//!
//! With `database.read_url`, requests read the replica there; the data version is still
//! learnt from the primary (`database.url`), whose notifications a standby never gets,
//! and answers are keyed with the version the replica has replayed (see
//! `regindex::store::data_version` and docs/architecture.md, "Serving").

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, IntGauge, Registry};
use regindex::config::Config;
use regindex::store::availability::PROBE_TIMEOUT;
use regindex::store::{
    Availability, DataVersionWatch, DatabaseMonitor, SessionSettings, Store, StoreError,
    VersionFloor, DATA_VERSION_POLL_INTERVAL,
};
use serde_json::{json, Value};
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
    Ok(reads(config)?.store)
}

/// Where the api reads: `database.read_url` when set (a replica), else `database.url`.
pub struct Reads {
    /// Every route's store.
    pub store: Store,
    /// With a replica: the version below which its connections are not used.
    floor: Option<VersionFloor>,
}

/// The api's reading side; no I/O.
pub fn reads(config: &Config) -> Result<Reads, StoreError> {
    let session = session_settings(config);
    let (store, floor) = match &config.database.read_url {
        Some(read_url) => {
            let floor = VersionFloor::default();
            let store =
                Store::connect_lazy_replica(&config.database, read_url, &session, floor.clone())?;
            (store, Some(floor))
        }
        None => (Store::connect_lazy(&config.database, &session)?, None),
    };
    Ok(Reads {
        store: store.with_icons(&config.icons),
        floor,
    })
}

/// Starts watching the database `store` connects to, until `stop`.
pub fn monitor(store: &Store, stop: CancellationToken) -> DatabaseMonitor {
    DatabaseMonitor::spawn(store.connect_options(), stop)
}

/// Starts following the data version (its own connections, with the api's session
/// settings), until `stop`: announced by the primary (`database.url`) and, with a
/// replica, as replayed there.
pub fn data_version(
    config: &Config,
    reads: &Reads,
    stop: CancellationToken,
) -> Result<DataVersionWatch, StoreError> {
    let Some(floor) = &reads.floor else {
        return Ok(DataVersionWatch::spawn(
            reads.store.connect_options(),
            DATA_VERSION_POLL_INTERVAL,
            stop,
        ));
    };
    // Lazy: only its connect options are used, by the watch's own connections.
    let primary = Store::connect_lazy(&config.database, &session_settings(config))?;
    Ok(DataVersionWatch::spawn_with_replica(
        primary.connect_options(),
        reads.store.connect_options(),
        floor.clone(),
        DATA_VERSION_POLL_INTERVAL,
        stop,
    ))
}

/// What `/readyz` adds about the database connections: the primary's listener and,
/// with a replica, how far behind it is. Reads memory only.
pub fn connections(watch: Option<&DataVersionWatch>) -> Value {
    let Some(watch) = watch else {
        return json!({});
    };
    let listener = if watch.is_listening() {
        "listening"
    } else {
        "not listening"
    };
    match watch.replica_lag() {
        None => json!({ "primary_listener": listener }),
        Some(lag) => json!({
            "primary_listener": listener,
            "replica": {
                "announced_version": lag.announced,
                "replayed_version": lag.replayed,
                "versions_behind": lag.versions_behind,
                "seconds_behind": lag.seconds_behind,
            },
        }),
    }
}

/// `regindex_api_replica_lag_versions` and `regindex_api_replica_lag_seconds`, read
/// from `watch` at every scrape; registered only when the api reads a replica.
pub fn register_replica_metrics(
    registry: &Registry,
    watch: &DataVersionWatch,
) -> prometheus::Result<()> {
    if watch.replica_lag().is_none() {
        return Ok(());
    }
    let versions = IntGauge::new(
        "regindex_api_replica_lag_versions",
        "Data versions the primary announced that the read replica has not replayed yet",
    )?;
    let seconds = Gauge::new(
        "regindex_api_replica_lag_seconds",
        "now() - pg_last_xact_replay_timestamp() on the read replica while it has WAL to replay, else 0",
    )?;
    registry.register(Box::new(ReplicaLagCollector {
        watch: watch.clone(),
        versions,
        seconds,
    }))
}

/// Sets the lag gauges from the watch when scraped.
struct ReplicaLagCollector {
    watch: DataVersionWatch,
    versions: IntGauge,
    seconds: Gauge,
}

impl Collector for ReplicaLagCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = self.versions.desc();
        descs.extend(self.seconds.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if let Some(lag) = self.watch.replica_lag() {
            self.versions.set(lag.versions_behind);
            self.seconds.set(lag.seconds_behind);
        }
        let mut families = self.versions.collect();
        families.extend(self.seconds.collect());
        families
    }
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
