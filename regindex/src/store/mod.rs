//! PostgreSQL store: schema, per-repository replacement, garbage collection, index queries.
//!
//! The schema lives in `schema.sql` at the repository root (safe to re-apply); `migrate`
//! applies it and `connect` refuses a database whose schema is missing or older.

mod error;

pub use error::StoreError;

use std::collections::{BTreeMap, HashSet};

use crate::config::DatabaseConfig;
use crate::model::{Digest, Image, ImageList, RepositoryName, Tag};

/// The schema version `schema.sql` creates; `connect` requires exactly this.
pub const SCHEMA_VERSION: i32 = 1;

#[derive(Clone)]
pub struct Store {
    pool: sqlx::PgPool,
}

/// What `RepositoryTx::replace` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaceOutcome {
    /// Something visible to index queries changed (so caches must be invalidated).
    pub changed: bool,
    pub tags_set: usize,
    pub manifests_added: usize,
    pub manifests_removed: usize,
}

/// What a global garbage collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcSummary {
    pub repositories_removed: u64,
    pub manifests_removed: u64,
}

impl Store {
    /// Connects and checks that the schema is present and current.
    pub async fn connect(_config: &DatabaseConfig) -> Result<Self, StoreError> {
        todo!()
    }

    /// Connects without checking the schema (for `migrate`).
    pub async fn connect_unchecked(_config: &DatabaseConfig) -> Result<Self, StoreError> {
        todo!()
    }

    /// Applies `schema.sql`. Idempotent; never drops data.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        todo!()
    }

    pub fn pool(&self) -> &sqlx::PgPool {
        &self.pool
    }

    /// Database reachable (for readiness probes).
    pub async fn ping(&self) -> Result<(), StoreError> {
        todo!()
    }

    /// Starts the one transaction in which a repository is refetched. It takes a
    /// transaction-scoped advisory lock on the repository name first, so two refetches
    /// of one repository never overlap, across all worker processes.
    pub async fn begin_repository(
        &self,
        _repository: &RepositoryName,
    ) -> Result<RepositoryTx, StoreError> {
        todo!()
    }

    /// Every repository the index knows.
    pub async fn repositories(&self) -> Result<Vec<RepositoryName>, StoreError> {
        todo!()
    }

    /// Removes whatever no tag reaches any more, across all repositories.
    pub async fn gc(&self) -> Result<GcSummary, StoreError> {
        todo!()
    }

    /// Increases on every committed change that index queries can see; caches key on it.
    pub async fn data_version(&self) -> Result<i64, StoreError> {
        todo!()
    }
}

/// A repository being refetched: holds the advisory lock until commit or drop.
pub struct RepositoryTx {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    repository: RepositoryName,
}

impl RepositoryTx {
    /// Digests of the images and lists stored for this repository. A stored list always
    /// has its entries stored too.
    pub async fn known_manifests(&mut self) -> Result<HashSet<Digest>, StoreError> {
        let _ = (&mut self.tx, &self.repository);
        todo!()
    }

    /// Makes the repository's state exactly `tags`: stores `new_images` and `new_lists`
    /// (manifests not known yet), sets the tag set, removes images and lists no tag
    /// reaches any more, removes the repository when it has no tags left, and bumps the
    /// data version when anything changed. Every tag target and list entry must be known
    /// or among the new manifests.
    pub async fn replace(
        &mut self,
        _tags: &BTreeMap<Tag, Digest>,
        _new_images: &[Image],
        _new_lists: &[ImageList],
    ) -> Result<ReplaceOutcome, StoreError> {
        todo!()
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }
}
