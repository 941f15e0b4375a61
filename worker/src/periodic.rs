//! The periodic full scan and garbage collection. Each runs in one worker process at a
//! time: the process that gets a PostgreSQL session advisory lock
//! ([`Store::exclusively`]) runs it, the others skip that round (the lock goes with the
//! connection if the process dies).
//!
//! When a job last succeeded is kept in the database (`periodic_jobs`), so the schedule
//! survives restarts: a worker that starts when a job is overdue, or never ran, runs it at
//! once, and one that starts a minute after the last run waits for the rest of the
//! interval. Redeploying workers more often than the interval therefore never postpones
//! the scan that repairs lost webhooks.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use regindex::store::{PeriodicJob, Store};
use regindex::sync::{NoProgress, Syncer};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::WorkerMetrics;

/// After a failed run, a database error, or a round another process held the lock for:
/// look again this much later (or after the interval, if shorter).
pub const RETRY_AFTER: Duration = Duration::from_secs(60);

/// Scans every `scan_interval` and collects garbage every `gc_interval` (`None`: never),
/// counted from the last success any worker recorded, until `stop`.
pub async fn run(
    syncer: Syncer,
    concurrency: usize,
    scan_interval: Option<Duration>,
    gc_interval: Option<Duration>,
    metrics: WorkerMetrics,
    stop: CancellationToken,
) {
    let store = syncer.store();
    let scan = async {
        let Some(period) = scan_interval else { return };
        let report = |last: Option<DateTime<Utc>>, next: DateTime<Utc>| {
            metrics
                .last_full_scan
                .set(last.map_or(0, |last| last.timestamp()));
            metrics.next_full_scan.set(next.timestamp());
        };
        let scan = || async {
            let summary = syncer
                .scan(concurrency, &NoProgress)
                .await
                .map_err(|e| regindex::error_chain(&e))?;
            info!(%summary, "full scan done");
            if let Some(count) = crate::refetcher::Refetcher::problem_count(&syncer).await {
                metrics.tag_problems.set(count);
            }
            Ok(())
        };
        let job = Scheduled {
            job: PeriodicJob::FullScan,
            period,
        };
        job.run(store, &stop, report, scan).await
    };
    let gc = async {
        let Some(period) = gc_interval else { return };
        let collect = || async {
            let summary = store.gc().await.map_err(|e| regindex::error_chain(&e))?;
            info!(?summary, "garbage collected");
            Ok(())
        };
        let job = Scheduled {
            job: PeriodicJob::GarbageCollection,
            period,
        };
        job.run(store, &stop, |_, _| {}, collect).await
    };
    tokio::join!(scan, gc);
}

/// How long to wait before running a job that last succeeded at `last` (`None`: never):
/// nothing when it is due. Never more than `period`, so that a last run stamped in the
/// future (a clock set wrong) cannot hold the job back for longer.
pub fn due_in(last: Option<DateTime<Utc>>, period: Duration, now: DateTime<Utc>) -> Duration {
    let Some(last) = last else {
        return Duration::ZERO;
    };
    let due = chrono::Duration::from_std(period)
        .ok()
        .and_then(|period| last.checked_add_signed(period));
    match due {
        Some(due) => (due - now).to_std().unwrap_or(Duration::ZERO).min(period),
        None => period,
    }
}

/// The retry delay: [`RETRY_AFTER`], or the interval when that is shorter.
fn retry_delay(period: Duration) -> Duration {
    RETRY_AFTER.min(period)
}

/// A job with its persisted schedule.
struct Scheduled {
    job: PeriodicJob,
    period: Duration,
}

/// What one round did.
enum Round {
    Ran,
    /// Another process ran it since this one looked.
    NotDue,
}

impl Scheduled {
    /// Until `stop`: waits until the job is due, runs it under its lock, records the
    /// success. `report(last success, next run)` whenever the schedule was read.
    async fn run<F, Fut>(
        &self,
        store: &Store,
        stop: &CancellationToken,
        report: impl Fn(Option<DateTime<Utc>>, DateTime<Utc>),
        mut work: F,
    ) where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let job = self.job;
        loop {
            let wait = match store.last_success(job).await {
                Ok(last) => {
                    let now = Utc::now();
                    let wait = due_in(last, self.period, now);
                    report(last, now + wait);
                    wait
                }
                Err(e) => {
                    warn!(%job, error = %regindex::error_chain(&e), "cannot read when the job last ran");
                    retry_delay(self.period)
                }
            };
            if !pause(wait, stop).await {
                return;
            }
            let started = Utc::now();
            let round = async {
                // Another process may have run it while this one waited.
                let last = store
                    .last_success(job)
                    .await
                    .map_err(|e| regindex::error_chain(&e))?;
                if !due_in(last, self.period, started).is_zero() {
                    return Ok::<_, String>(Round::NotDue);
                }
                work().await?;
                store
                    .record_success(job, started)
                    .await
                    .map_err(|e| format!("recording the success: {}", regindex::error_chain(&e)))?;
                Ok(Round::Ran)
            };
            let outcome = tokio::select! {
                _ = stop.cancelled() => return,
                outcome = store.exclusively(job, round) => outcome,
            };
            match outcome {
                Ok(Some(Ok(Round::Ran | Round::NotDue))) => continue,
                Ok(Some(Err(reason))) => warn!(%job, %reason, "periodic job failed"),
                Ok(None) => info!(%job, "periodic job skipped: another worker runs it"),
                Err(e) => {
                    warn!(%job, error = %regindex::error_chain(&e), "periodic job not started: database")
                }
            }
            if !pause(retry_delay(self.period), stop).await {
                return;
            }
        }
    }
}

/// Sleeps `wait`; false when `stop` came first.
async fn pause(wait: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_job_that_never_ran_is_due_at_once() {
        assert_eq!(due_in(None, HOUR, at(0)), Duration::ZERO);
    }

    #[test]
    fn a_recent_run_leaves_the_rest_of_the_interval() {
        assert_eq!(
            due_in(Some(at(0)), HOUR, at(600)),
            Duration::from_secs(3000)
        );
        assert_eq!(due_in(Some(at(0)), HOUR, at(0)), HOUR);
    }

    #[test]
    fn an_overdue_job_is_due_at_once() {
        assert_eq!(due_in(Some(at(0)), HOUR, at(3600)), Duration::ZERO);
        assert_eq!(due_in(Some(at(0)), HOUR, at(86_400)), Duration::ZERO);
    }

    #[test]
    fn a_run_stamped_in_the_future_waits_one_interval_at_most() {
        assert_eq!(due_in(Some(at(86_400)), HOUR, at(0)), HOUR);
        assert_eq!(due_in(Some(DateTime::<Utc>::MAX_UTC), HOUR, at(0)), HOUR);
    }
}
