//! What the worker needs from the index: refetch one repository, list them all. The
//! real one is [`Syncer`]; tests of the consumer substitute their own.

use std::collections::BTreeSet;

use futures::future::BoxFuture;
use regindex::model::{Digest, RepositoryName, Tag};
use regindex::sync::Syncer;

use crate::outcome::Failure;

pub trait Index: Send + Sync + 'static {
    /// Makes the store's view of `repository` equal to the registry's.
    fn refetch<'a>(&'a self, repository: &'a RepositoryName) -> BoxFuture<'a, Result<(), Failure>>;
    /// `refetch` for push events that announced these tags at these digests; `Ok(false)`
    /// when the registry still did not show one of them (worth one more refetch later).
    fn refetch_announced<'a>(
        &'a self,
        repository: &'a RepositoryName,
        announced: &'a [(Tag, Digest)],
    ) -> BoxFuture<'a, Result<bool, Failure>> {
        let _ = announced;
        Box::pin(async move { self.refetch(repository).await.map(|()| true) })
    }
    /// Every repository a full reindex covers: the registry's catalog and the stored
    /// ones (so that repositories deleted from the registry are removed).
    fn repositories(&self) -> BoxFuture<'_, Result<BTreeSet<RepositoryName>, Failure>>;
    /// How many tags have a recorded problem, when that may have changed since the last
    /// call (`None`: unchanged, or not known).
    fn problem_count(&self) -> BoxFuture<'_, Option<i64>> {
        Box::pin(async { None })
    }
}

impl Index for Syncer {
    fn refetch_announced<'a>(
        &'a self,
        repository: &'a RepositoryName,
        announced: &'a [(Tag, Digest)],
    ) -> BoxFuture<'a, Result<bool, Failure>> {
        Box::pin(async move {
            Syncer::refetch_expecting(self, repository, announced)
                .await
                .map(|report| !report.announced_unseen)
                .map_err(|e| Failure::from(&e))
        })
    }

    fn problem_count(&self) -> BoxFuture<'_, Option<i64>> {
        Box::pin(async move {
            if !self.take_problems_changed() {
                return None;
            }
            match self.store().problem_count().await {
                Ok(count) => Some(count),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot count tag problems");
                    None
                }
            }
        })
    }

    fn refetch<'a>(&'a self, repository: &'a RepositoryName) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(async move {
            Syncer::refetch(self, repository)
                .await
                .map(|_| ())
                .map_err(|e| Failure::from(&e))
        })
    }

    fn repositories(&self) -> BoxFuture<'_, Result<BTreeSet<RepositoryName>, Failure>> {
        Box::pin(async move {
            let mut all: BTreeSet<RepositoryName> = self
                .registry()
                .catalog()
                .await
                .map_err(|e| Failure::from(&e.into()))?
                .into_iter()
                .collect();
            all.extend(
                self.store()
                    .repositories()
                    .await
                    .map_err(|e| Failure::from(&e.into()))?,
            );
            Ok(all)
        })
    }
}
