//! What the worker needs from the sync: refetch one repository, list them all, and what
//! Bodhi messages need (which repositories hold a build, a warm pass). The real one is
//! [`Syncer`].
//!
//! Why a trait: it is the seam between the consumer loop (coalescing, retry, dead
//! letters, Bodhi fan-outs) and the refetch itself. The consumer's tests put a
//! [`Refetcher`] there that fails, blocks or records on demand, which a real registry
//! cannot do at a chosen moment; and every sync, store and registry error becomes a
//! [`Failure`] (transient or permanent, with its cause chain) here, in one place.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::future::{self, BoxFuture};
use futures::{stream, StreamExt, TryStreamExt};
use regindex::bus::bodhi::{self, BuildMatch, Nvr};
use regindex::model::{Digest, Reference, RepositoryName, Tag};
use regindex::registry::{RegistryClient, RegistryError};
use regindex::store::StoreError;
use regindex::sync::{SyncError, Syncer};
use tracing::warn;

use crate::outcome::Failure;

/// HEAD requests in flight per repository during a warm pass (the registry client's own
/// semaphore bounds the total).
const WARM_RESOLVE_CONCURRENCY: usize = 8;

pub trait Refetcher: Send + Sync + 'static {
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

    // Bodhi. The defaults are those of an index that knows no labels and cannot compare
    // tags cheaply: nothing matches, and every repository counts as changed.

    /// The repositories that hold `nvr` (or its component, or are named after it), with how.
    fn build_matches<'a>(
        &'a self,
        _nvr: &'a Nvr,
    ) -> BoxFuture<'a, Result<Vec<(RepositoryName, BuildMatch)>, Failure>> {
        Box::pin(future::ready(Ok(Vec::new())))
    }

    /// The repositories of the registry's catalog the index does not hold yet.
    fn not_indexed(&self) -> BoxFuture<'_, Result<BTreeSet<RepositoryName>, Failure>> {
        Box::pin(future::ready(Ok(BTreeSet::new())))
    }

    /// Remembers the repositories update `alias` named (for the next compose's order).
    fn record_update<'a>(
        &'a self,
        _alias: &'a str,
        _repositories: &'a [RepositoryName],
        _window: Duration,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(future::ready(Ok(())))
    }

    /// The repositories updates named within `window`, most recent first.
    fn recent_updates(
        &self,
        _window: Duration,
    ) -> BoxFuture<'_, Result<Vec<RepositoryName>, Failure>> {
        Box::pin(future::ready(Ok(Vec::new())))
    }

    /// A warm pass: of `repositories`, those whose tags in the registry (tag lists and
    /// HEADs, no manifest fetched) differ from the stored ones.
    fn changed(
        &self,
        repositories: BTreeSet<RepositoryName>,
        _concurrency: usize,
    ) -> BoxFuture<'_, Result<BTreeSet<RepositoryName>, Failure>> {
        Box::pin(future::ready(Ok(repositories)))
    }
}

fn store_failure(error: StoreError) -> Failure {
    Failure::from(&SyncError::from(error))
}

impl Refetcher for Syncer {
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

    fn build_matches<'a>(
        &'a self,
        nvr: &'a Nvr,
    ) -> BoxFuture<'a, Result<Vec<(RepositoryName, BuildMatch)>, Failure>> {
        Box::pin(async move { self.store().build_matches(nvr).await.map_err(store_failure) })
    }

    fn not_indexed(&self) -> BoxFuture<'_, Result<BTreeSet<RepositoryName>, Failure>> {
        Box::pin(async move {
            let catalog = self
                .registry()
                .catalog()
                .await
                .map_err(|e| Failure::from(&e.into()))?;
            let stored: BTreeSet<RepositoryName> = self
                .store()
                .repositories()
                .await
                .map_err(store_failure)?
                .into_iter()
                .collect();
            Ok(bodhi::not_indexed(catalog, &stored))
        })
    }

    fn record_update<'a>(
        &'a self,
        alias: &'a str,
        repositories: &'a [RepositoryName],
        window: Duration,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(async move {
            self.store()
                .record_update_repositories(alias, repositories, window)
                .await
                .map_err(store_failure)
        })
    }

    fn recent_updates(
        &self,
        window: Duration,
    ) -> BoxFuture<'_, Result<Vec<RepositoryName>, Failure>> {
        Box::pin(async move {
            self.store()
                .recent_update_repositories(window)
                .await
                .map_err(store_failure)
        })
    }

    fn changed(
        &self,
        repositories: BTreeSet<RepositoryName>,
        concurrency: usize,
    ) -> BoxFuture<'_, Result<BTreeSet<RepositoryName>, Failure>> {
        Box::pin(async move {
            let stored = self.store().stored_tags().await.map_err(store_failure)?;
            let stored = &stored;
            let changed = stream::iter(repositories)
                .map(|repository| async move {
                    match registry_tags(self.registry(), &repository).await {
                        Ok(tags) => bodhi::tags_differ(stored.get(&repository), &tags)
                            .then_some(repository),
                        // Its own refetch retries or dead-letters it; the pass goes on.
                        Err(e) => {
                            warn!(repository = %repository, error = %e, "warm check failed; refetching the repository");
                            Some(repository)
                        }
                    }
                })
                .buffer_unordered(concurrency.max(1))
                .filter_map(future::ready)
                .collect()
                .await;
            Ok(changed)
        })
    }
}

/// A repository's tags as the registry resolves them now (a tag deleted meanwhile is left
/// out; a repository the registry does not know has none).
async fn registry_tags(
    registry: &RegistryClient,
    repository: &RepositoryName,
) -> Result<BTreeMap<Tag, Digest>, RegistryError> {
    let tags = match registry.tags(repository).await {
        Ok(tags) => tags,
        Err(RegistryError::NotFound { .. }) => return Ok(BTreeMap::new()),
        Err(e) => return Err(e),
    };
    let resolved: Vec<Option<(Tag, Digest)>> = stream::iter(tags)
        .map(|tag| async move {
            match registry
                .resolve(repository, &Reference::Tag(tag.clone()))
                .await
            {
                Ok((digest, _)) => Ok(Some((tag, digest))),
                Err(RegistryError::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(WARM_RESOLVE_CONCURRENCY)
        .try_collect()
        .await?;
    Ok(resolved.into_iter().flatten().collect())
}
