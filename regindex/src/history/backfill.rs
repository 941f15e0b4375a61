//! Backfill: what a refetch or scan found, recorded in the history.
//!
//! The history starts when regindex starts listening; images pushed before have no
//! events. After every refetch (so also during every full scan), [`Backfill`] records the
//! repository's tags and, for each manifest whose blobs the history does not know yet,
//! records its config and layers, read from the manifest the refetch fetched. Only a
//! manifest the refetch did not need (already indexed before the history was turned on)
//! is fetched here, once. Later events refine the
//! rows (push and pull times, counts). It also learns the blobs of manifests pushed
//! without `references`, since every manifest push triggers a refetch.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tracing::{debug, warn};

use super::event::BlobRef;
use super::HistoryError;
use crate::model::{Digest, Reference, RepositoryName, Tag};
use crate::registry::{FetchedManifest, Manifest, RegistryClient, RegistryError};
use crate::store::history::{HistoryStore, ScannedManifest};
use crate::sync::{RefetchObserver, Refetched};

/// Records refetched state into the history.
pub struct Backfill {
    registry: RegistryClient,
    store: HistoryStore,
    /// The canonical host the configured registry URL is recorded under.
    host: String,
}

impl Backfill {
    /// The backfill the configuration asks for (`history.enabled` and
    /// `history.backfill`), recording under the registry URL's canonical host.
    pub fn from_config(
        config: &crate::config::Config,
        registry: RegistryClient,
        pool: sqlx::PgPool,
    ) -> Option<Self> {
        if !(config.history.enabled && config.history.backfill) {
            return None;
        }
        let host = super::backfill_host(config);
        Some(Self::new(registry, HistoryStore::new(pool), host))
    }

    pub fn new(registry: RegistryClient, store: HistoryStore, host: String) -> Self {
        Self {
            registry,
            store,
            host,
        }
    }

    /// Records `tags` as listed at `listed_at`; `fetched` holds manifests the caller has
    /// fetched already (they are not asked for again).
    pub async fn record(
        &self,
        repository: &RepositoryName,
        tags: &BTreeMap<Tag, Digest>,
        listed_at: DateTime<Utc>,
        fetched: &BTreeMap<Digest, FetchedManifest>,
    ) -> Result<(), HistoryError> {
        let tagged: BTreeSet<Digest> = tags.values().cloned().collect();
        let tagged: Vec<Digest> = tagged.into_iter().collect();
        let mut todo: Vec<Digest> = self
            .store
            .manifests_needing_links(&self.host, repository, &tagged)
            .await?
            .into_iter()
            .collect();
        todo.sort();
        let mut manifests = Vec::new();
        let mut seen = BTreeSet::new();
        while let Some(digest) = todo.pop() {
            if !seen.insert(digest.clone()) {
                continue;
            }
            let Some((scanned, children)) = self.fetch(repository, &digest, fetched).await? else {
                continue;
            };
            manifests.push(scanned);
            if !children.is_empty() {
                // An index's entries are manifests too (pushed by digest).
                let needing = self
                    .store
                    .manifests_needing_links(&self.host, repository, &children)
                    .await?;
                todo.extend(needing);
            }
        }
        let tags: Vec<(Tag, Digest)> = tags.iter().map(|(t, d)| (t.clone(), d.clone())).collect();
        self.store
            .record_state(&self.host, repository, &tags, &manifests, listed_at)
            .await?;
        debug!(%repository, tags = tags.len(), manifests = manifests.len(), "history backfilled");
        Ok(())
    }

    /// The manifest with its blobs (an index: no blobs, its entries to look at next).
    /// `None` when it vanished or is not a manifest regindex parses.
    async fn fetch(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        already: &BTreeMap<Digest, FetchedManifest>,
    ) -> Result<Option<(ScannedManifest, Vec<Digest>)>, HistoryError> {
        let fetched = match already.get(digest) {
            Some(fetched) => fetched.clone(),
            None => match self
                .registry
                .manifest(repository, &Reference::Digest(digest.clone()))
                .await
            {
                Ok(fetched) => fetched,
                Err(RegistryError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e.into()),
            },
        };
        let parsed = match crate::registry::manifest::parse(&fetched.media_type, &fetched.bytes) {
            Ok(parsed) => parsed,
            Err(e) => {
                debug!(%digest, error = %e, "manifest not recorded by the history backfill");
                return Ok(None);
            }
        };
        let size = i64::try_from(fetched.bytes.len()).ok();
        let (blobs, children) = match parsed {
            Manifest::Image { config, layers, .. } => {
                let blobs = std::iter::once(config)
                    .chain(layers)
                    .map(|d| BlobRef {
                        digest: d.digest,
                        size: Some(d.size).filter(|s| *s > 0),
                        media_type: Some(d.media_type).filter(|m| !m.is_empty()),
                    })
                    .collect();
                (blobs, Vec::new())
            }
            Manifest::List { manifests, .. } => (
                Vec::new(),
                manifests.into_iter().map(|d| d.digest).collect(),
            ),
        };
        Ok(Some((
            ScannedManifest {
                digest: digest.clone(),
                media_type: fetched.media_type,
                size,
                blobs: Some(blobs),
            },
            children,
        )))
    }
}

impl RefetchObserver for Backfill {
    fn refetched<'a>(
        &'a self,
        repository: &'a RepositoryName,
        refetched: Refetched<'a>,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Refetched {
                tags,
                listed_at,
                manifests,
            } = refetched;
            if let Err(e) = self.record(repository, tags, listed_at, manifests).await {
                // Statistics only: the next refetch or scan tries again.
                warn!(%repository, error = %e, "history backfill failed");
            }
        })
    }
}
