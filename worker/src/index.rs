//! What the worker needs from the index: refetch one repository, list them all. The
//! real one is [`Syncer`]; tests of the consumer substitute their own.

use std::collections::BTreeSet;

use futures::future::BoxFuture;
use regindex::model::RepositoryName;
use regindex::sync::Syncer;

use crate::outcome::Failure;

pub trait Index: Send + Sync + 'static {
    /// Makes the store's view of `repository` equal to the registry's.
    fn refetch<'a>(&'a self, repository: &'a RepositoryName) -> BoxFuture<'a, Result<(), Failure>>;
    /// Every repository a full reindex covers: the registry's catalog and the stored
    /// ones (so that repositories deleted from the registry are removed).
    fn repositories(&self) -> BoxFuture<'_, Result<BTreeSet<RepositoryName>, Failure>>;
}

impl Index for Syncer {
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
