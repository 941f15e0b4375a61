//! The regindex worker: consumes the work queue (registry events, Bodhi updates and composes,
//! internal refetches), refetches repositories into the store, retries with delays,
//! dead-letters what keeps failing, and runs the periodic full scan and GC.

mod bodhi;
pub mod coalesce;
pub mod consumer;
pub mod dead_letters;
pub mod history;
pub mod metrics;
pub mod outcome;
pub mod periodic;
pub mod refetcher;
pub mod static_files;

use std::sync::Arc;

use regindex::config::Config;
use regindex::history::backfill::Backfill;
use regindex::history::HistoryStore;
use regindex::registry::{RegistryClient, RegistryError};
use regindex::store::{Availability, DatabaseMonitor, SessionSettings, Store, StoreError};
use regindex::sync::Syncer;
use tokio_util::sync::CancellationToken;
use tracing::warn;

pub use consumer::Worker;
pub use history::{HistoryConsumer, HistoryMetrics};
pub use metrics::WorkerMetrics;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("cannot listen on {addr} for metrics: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The whole worker process: store, registry client, metrics endpoint, periodic jobs and
/// the consumer, until `shutdown`. The metrics and health endpoint comes first; the rest
/// starts once the database answers (waited for with backoff, logged).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), WorkerError> {
    let store = Store::connect_lazy(&config.database, &SessionSettings::default())?
        .with_icons(&config.icons);
    let registry = RegistryClient::new(&config.registry)?;
    let metrics = WorkerMetrics::new();
    let addr = config.worker.metrics_listen;
    let listener = metrics::bind(addr)
        .await
        .map_err(|source| WorkerError::Listen { addr, source })?;

    // Background parts stop with the consumer, and at once if this future is dropped.
    let stop = CancellationToken::new();
    let _stop_on_drop = stop.clone().drop_guard();
    let serving = tokio::spawn({
        let (metrics, stop) = (metrics.clone(), stop.clone());
        async move {
            if let Err(e) = metrics::serve(listener, metrics, stop).await {
                warn!(error = %e, "metrics endpoint failed");
            }
        }
    });
    let database = DatabaseMonitor::spawn(store.connect_options(), stop.clone());
    let reporting = tokio::spawn(report_database(
        database.clone(),
        metrics.clone(),
        stop.clone(),
    ));
    tokio::select! {
        () = shutdown.cancelled() => {
            stop.cancel();
            let _ = tokio::join!(serving, reporting);
            return Ok(());
        }
        () = database.wait_up() => {}
    }

    let history_store = HistoryStore::new(store.pool().clone());
    let mut syncer = Syncer::new(registry.clone(), store);
    if let Some(backfill) = Backfill::from_config(&config, registry, history_store.pool().clone()) {
        syncer = syncer.with_observer(Arc::new(backfill));
    }
    let periodic = tokio::spawn(periodic::run(
        syncer.clone(),
        config.worker.concurrency,
        config.worker.scan_interval,
        config.worker.gc_interval,
        metrics.clone(),
        stop.clone(),
    ));
    let dead_letters = config.worker.dead_letter_poll.map(|every| {
        tokio::spawn(dead_letters::watch(
            config.amqp.clone(),
            metrics.dead_letters.clone(),
            every,
            stop.clone(),
        ))
    });
    let history = if config.history.enabled && config.history.consume {
        let consumer = HistoryConsumer::new(
            config.clone(),
            history_store,
            HistoryMetrics::register(&metrics.registry),
        );
        let stop = stop.clone();
        Some(tokio::spawn(async move { consumer.run(stop).await }))
    } else {
        None
    };
    let static_files = tokio::spawn(static_files::run(
        syncer.store().clone(),
        Arc::new(config.clone()),
        static_files::POLL_INTERVAL,
        stop.clone(),
    ));
    Worker::new(config, Arc::new(syncer), metrics)
        .with_database(database.clone())
        .run(shutdown)
        .await;
    stop.cancel();
    let _ = tokio::join!(serving, reporting, periodic, static_files);
    if let Some(dead_letters) = dead_letters {
        let _ = dead_letters.await;
    }
    if let Some(history) = history {
        let _ = history.await;
    }
    Ok(())
}

/// Mirrors the database monitor into `regindex_worker_database_up` (which `/healthz`
/// and `/readyz` read), until `stop`.
async fn report_database(
    monitor: DatabaseMonitor,
    metrics: WorkerMetrics,
    stop: CancellationToken,
) {
    let mut state = monitor.subscribe();
    loop {
        let up = matches!(*state.borrow_and_update(), Availability::Up);
        metrics.database_up.set(i64::from(up));
        tokio::select! {
            () = stop.cancelled() => break,
            changed = state.changed() => if changed.is_err() { break },
        }
    }
}
