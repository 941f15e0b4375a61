//! The worker's periodic jobs: when each last succeeded (table `periodic_jobs`), kept in
//! the database so that a job's schedule survives restarts and is shared by every worker,
//! and the session advisory lock that lets one process at a time run it.

use std::future::Future;

use chrono::{DateTime, Utc};

use super::{Store, StoreError};

/// A job the worker runs periodically, in one process at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodicJob {
    FullScan,
    GarbageCollection,
}

impl PeriodicJob {
    /// Its key in `periodic_jobs`.
    pub fn name(self) -> &'static str {
        match self {
            PeriodicJob::FullScan => "full_scan",
            PeriodicJob::GarbageCollection => "gc",
        }
    }

    /// Second key of its advisory lock.
    fn lock_key(self) -> i32 {
        match self {
            PeriodicJob::FullScan => 1,
            PeriodicJob::GarbageCollection => 2,
        }
    }
}

/// First key of the periodic jobs' advisory locks (the two-key form, apart from the
/// one-key repository and migration locks); the second names the job.
const LOCK_CLASS: i32 = 0x7267_6978; // "rgix"

impl std::fmt::Display for PeriodicJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Store {
    /// When `job` last succeeded (the start of that run); `None` if it never did.
    pub async fn last_success(
        &self,
        job: PeriodicJob,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT last_success_at FROM periodic_jobs WHERE job = $1")
                .bind(job.name())
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Records that a run of `job` started at `started_at` succeeded. A run that started
    /// earlier than the recorded one (a slow run finishing late) leaves the newer mark.
    pub async fn record_success(
        &self,
        job: PeriodicJob,
        started_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO periodic_jobs AS p (job, last_success_at) VALUES ($1, $2)
             ON CONFLICT (job) DO UPDATE
             SET last_success_at = GREATEST(p.last_success_at, EXCLUDED.last_success_at)",
        )
        .bind(job.name())
        .bind(started_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Runs `job` if this process gets `which`'s advisory lock; `None` when another
    /// process (or task) holds it.
    pub async fn exclusively<T>(
        &self,
        which: PeriodicJob,
        job: impl Future<Output = T>,
    ) -> Result<Option<T>, StoreError> {
        let mut connection = self.pool.acquire().await?;
        // The lock lives as long as the session: if this future is dropped (shutdown,
        // or while the lock query itself runs) or the unlock fails, the session ends
        // instead of idling in the pool with the lock held.
        connection.close_on_drop();
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(LOCK_CLASS)
            .bind(which.lock_key())
            .fetch_one(&mut *connection)
            .await?;
        if !locked {
            return Ok(None);
        }
        let output = job.await;
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
            .bind(LOCK_CLASS)
            .bind(which.lock_key())
            .execute(&mut *connection)
            .await;
        if let Err(e) = unlocked {
            tracing::warn!(job = %which, error = %e, "advisory unlock failed; closing the connection");
        }
        Ok(Some(output))
    }
}
