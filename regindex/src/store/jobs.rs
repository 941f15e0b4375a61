//! When the worker's periodic jobs last succeeded (table `periodic_jobs`): kept in the
//! database so that a job's schedule survives restarts and is shared by every worker.

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
}

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
}
