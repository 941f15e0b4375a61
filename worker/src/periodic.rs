//! The periodic full scan and garbage collection. Each runs in one worker process at a
//! time: the process that gets a PostgreSQL session advisory lock runs it, the others
//! skip that round (the lock goes with the connection if the process dies).

use std::future::Future;
use std::time::Duration;

use regindex::store::Store;
use regindex::sync::{NoProgress, Syncer};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::WorkerMetrics;

/// First key of the advisory locks (the two-key form, apart from the store's per-repository
/// locks); the second key names the job.
const LOCK_CLASS: i32 = 0x7267_6978; // "rgix"
pub const SCAN_LOCK: i32 = 1;
pub const GC_LOCK: i32 = 2;

/// Scans every `scan_interval` and collects garbage every `gc_interval` (`None`: never),
/// first one interval after start-up, until `stop`.
pub async fn run(
    syncer: Syncer,
    concurrency: usize,
    scan_interval: Option<Duration>,
    gc_interval: Option<Duration>,
    metrics: WorkerMetrics,
    stop: CancellationToken,
) {
    let scan = async {
        let Some(period) = scan_interval else { return };
        every(period, &stop, || async {
            match exclusively(
                syncer.store(),
                SCAN_LOCK,
                syncer.scan(concurrency, &NoProgress),
            )
            .await
            {
                Ok(Some(Ok(summary))) => {
                    info!(%summary, "full scan done");
                    metrics.last_full_scan.set(chrono::Utc::now().timestamp());
                    if let Some(count) = crate::index::Index::problem_count(&syncer).await {
                        metrics.tag_problems.set(count);
                    }
                }
                Ok(Some(Err(e))) => warn!(error = %e, "full scan failed"),
                Ok(None) => info!("full scan skipped: another worker runs it"),
                Err(e) => warn!(error = %e, "full scan not started: database"),
            }
        })
        .await
    };
    let gc = async {
        let Some(period) = gc_interval else { return };
        every(period, &stop, || async {
            match exclusively(syncer.store(), GC_LOCK, syncer.store().gc()).await {
                Ok(Some(Ok(summary))) => info!(?summary, "garbage collected"),
                Ok(Some(Err(e))) => warn!(error = %e, "garbage collection failed"),
                Ok(None) => info!("garbage collection skipped: another worker runs it"),
                Err(e) => warn!(error = %e, "garbage collection not started: database"),
            }
        })
        .await
    };
    tokio::join!(scan, gc);
}

async fn every<F, Fut>(period: Duration, stop: &CancellationToken, mut job: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => job().await,
        }
    }
}

/// Runs `job` if this process gets the advisory lock `key`; `None` when another process
/// (or task) holds it.
pub async fn exclusively<T>(
    store: &Store,
    key: i32,
    job: impl Future<Output = T>,
) -> Result<Option<T>, sqlx::Error> {
    let mut connection = store.pool().acquire().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(LOCK_CLASS)
        .bind(key)
        .fetch_one(&mut *connection)
        .await?;
    if !locked {
        return Ok(None);
    }
    let output = job.await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
        .bind(LOCK_CLASS)
        .bind(key)
        .execute(&mut *connection)
        .await;
    if let Err(e) = unlocked {
        // The lock lives as long as the session: closing this connection releases it.
        warn!(error = %e, "advisory unlock failed; dropping the connection");
        let _ = connection.detach();
    }
    Ok(Some(output))
}
