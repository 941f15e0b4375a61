//! Refetch one repository from the registry into the store; scan them all.
//!
//! A refetch lists the repository's tags, resolves each to a digest with a HEAD request,
//! fetches only the manifests and config blobs whose digest is not stored yet, and
//! replaces the repository's state in one transaction. The transaction holds an advisory
//! lock on the repository, so refetches of one repository never overlap, in any process.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::{stream, StreamExt, TryStreamExt};
use tracing::{info, warn};

use crate::model::{media_type, Digest, Image, ImageList, Reference, RepositoryName, Tag};
use crate::registry::{Manifest, RegistryClient, RegistryError};
use crate::store::{ReplaceOutcome, Store, StoreError};

/// HEAD requests in flight at once while resolving one repository's tags (the registry
/// client's own semaphore bounds the total).
const RESOLVE_CONCURRENCY: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SyncError {
    /// Worth retrying later: the registry or the database may recover.
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::Registry(e) => e.is_transient(),
            SyncError::Store(e) => e.is_transient(),
        }
    }
}

/// What one refetch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefetchReport {
    pub tags: usize,
    pub manifests_fetched: usize,
    pub blobs_fetched: usize,
    pub outcome: ReplaceOutcome,
}

/// What a scan did.
#[derive(Debug, Clone, Default)]
pub struct ScanSummary {
    pub repositories: usize,
    pub tags: usize,
    pub manifests_fetched: usize,
    pub blobs_fetched: usize,
    pub changed: usize,
    /// Repositories whose refetch failed, with the reason; the others were still indexed.
    pub failed: Vec<(RepositoryName, String)>,
    pub elapsed: Duration,
}

impl std::fmt::Display for ScanSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "scanned {} repositories, {} tags: {} manifests and {} config blobs fetched, {} repositories changed, {} failed, in {:.1} s",
            self.repositories,
            self.tags,
            self.manifests_fetched,
            self.blobs_fetched,
            self.changed,
            self.failed.len(),
            self.elapsed.as_secs_f64()
        )
    }
}

/// Ties the registry to the store.
#[derive(Clone)]
pub struct Syncer {
    registry: RegistryClient,
    store: Store,
    observer: Option<Arc<dyn RefetchObserver>>,
}

/// Told, after each committed refetch, which tags the registry holds for a repository
/// (every tag that resolved, indexed or not) and when the listing started. The activity
/// history records that state (backfill, lost deletes); the observer handles its own
/// errors, so it never fails a refetch.
pub trait RefetchObserver: Send + Sync {
    fn refetched<'a>(
        &'a self,
        repository: &'a RepositoryName,
        tags: &'a BTreeMap<Tag, Digest>,
        listed_at: DateTime<Utc>,
    ) -> BoxFuture<'a, ()>;
}

impl Syncer {
    pub fn new(registry: RegistryClient, store: Store) -> Self {
        Self {
            registry,
            store,
            observer: None,
        }
    }

    /// Reports every refetch to `observer` (the activity history's backfill).
    pub fn with_observer(mut self, observer: Arc<dyn RefetchObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn registry(&self) -> &RegistryClient {
        &self.registry
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Makes the store's view of `repository` equal to the registry's.
    #[tracing::instrument(skip(self), fields(repository = %repository))]
    pub async fn refetch(&self, repository: &RepositoryName) -> Result<RefetchReport, SyncError> {
        let mut tx = self.store.begin_repository(repository).await?;
        let known = tx.known_manifests().await?;

        let listed_at = Utc::now();
        let tags = match self.registry.tags(repository).await {
            Ok(tags) => tags,
            Err(RegistryError::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let resolved = self.resolve_tags(repository, tags).await?;
        let observed = self.observer.as_ref().map(|_| resolved.clone());

        let plan = Plan::new(&known, &resolved);
        let mut fetched = Fetched::default();
        for digest in &plan.to_fetch {
            self.fetch_manifest(repository, digest, &known, &mut fetched)
                .await?;
        }
        // A tag whose manifest turned out unusable (schema1, unknown type) is not indexed.
        let tags: BTreeMap<Tag, Digest> = resolved
            .into_iter()
            .filter(|(_, digest)| {
                known.contains(digest)
                    || fetched.images.contains_key(digest)
                    || fetched.lists.contains_key(digest)
            })
            .collect();

        let images: Vec<Image> = fetched.images.into_values().collect();
        let lists: Vec<ImageList> = fetched.lists.into_values().collect();
        let outcome = tx.replace(&tags, &images, &lists).await?;
        tx.commit().await?;
        if let (Some(observer), Some(observed)) = (&self.observer, &observed) {
            observer.refetched(repository, observed, listed_at).await;
        }
        if outcome.changed {
            info!(
                tags = tags.len(),
                manifests = fetched.manifests,
                blobs = fetched.blobs,
                "repository updated"
            );
        }
        Ok(RefetchReport {
            tags: tags.len(),
            manifests_fetched: fetched.manifests,
            blobs_fetched: fetched.blobs,
            outcome,
        })
    }

    /// Refetches every repository of the catalog and every repository the store knows
    /// (so that repositories gone from the registry are removed). One failing repository
    /// does not stop the scan; it is reported in `failed`. Listing the catalog failing does.
    pub async fn scan(
        &self,
        concurrency: usize,
        progress: &dyn ScanProgress,
    ) -> Result<ScanSummary, SyncError> {
        let started = Instant::now();
        let mut repositories: BTreeSet<RepositoryName> =
            self.registry.catalog().await?.into_iter().collect();
        repositories.extend(self.store.repositories().await?);
        progress.start(repositories.len());

        let mut summary = ScanSummary {
            repositories: repositories.len(),
            ..ScanSummary::default()
        };
        let mut results = stream::iter(repositories)
            .map(|repository| async move {
                let result = self.refetch(&repository).await;
                (repository, result)
            })
            .buffer_unordered(concurrency.max(1));
        while let Some((repository, result)) = results.next().await {
            match result {
                Ok(report) => {
                    summary.tags += report.tags;
                    summary.manifests_fetched += report.manifests_fetched;
                    summary.blobs_fetched += report.blobs_fetched;
                    summary.changed += usize::from(report.outcome.changed);
                }
                Err(e) => {
                    warn!(repository = %repository, error = %e, "refetch failed during scan");
                    summary.failed.push((repository.clone(), e.to_string()));
                }
            }
            progress.advance(&repository);
        }
        summary.elapsed = started.elapsed();
        progress.finish(&summary);
        Ok(summary)
    }

    /// Resolves tags to digests with HEAD requests. A tag deleted since the listing
    /// (404) is skipped.
    async fn resolve_tags(
        &self,
        repository: &RepositoryName,
        tags: Vec<Tag>,
    ) -> Result<BTreeMap<Tag, Digest>, SyncError> {
        let resolved: Vec<Option<(Tag, Digest)>> = stream::iter(tags)
            .map(|tag| async move {
                let reference = Reference::Tag(tag.clone());
                match self.registry.resolve(repository, &reference).await {
                    Ok((digest, _)) => Ok(Some((tag, digest))),
                    Err(RegistryError::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(RESOLVE_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(resolved.into_iter().flatten().collect())
    }

    /// Fetches a tagged manifest (and, for a list, its entries not known yet).
    async fn fetch_manifest(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        known: &HashSet<Digest>,
        fetched: &mut Fetched,
    ) -> Result<(), SyncError> {
        let manifest = match self.fetch_parsed(repository, digest, fetched).await? {
            Some(manifest) => manifest,
            None => return Ok(()),
        };
        match manifest {
            Manifest::Image {
                config,
                annotations,
                ..
            } => {
                let media_type = fetched.media_types.remove(digest).unwrap_or_default();
                let image = self
                    .build_image(
                        repository,
                        digest,
                        media_type,
                        config.digest,
                        annotations,
                        fetched,
                    )
                    .await?;
                fetched.images.insert(digest.clone(), image);
            }
            Manifest::List {
                manifests,
                annotations,
            } => {
                let media_type = fetched.media_types.remove(digest).unwrap_or_default();
                let mut entries = Vec::new();
                for entry in manifests {
                    if !entry.media_type.is_empty() && !media_type::is_image(&entry.media_type) {
                        continue; // nested index or an artifact: not an image
                    }
                    let child = entry.digest;
                    if entries.contains(&child) {
                        continue;
                    }
                    if known.contains(&child) || fetched.images.contains_key(&child) {
                        entries.push(child);
                        continue;
                    }
                    match self.fetch_parsed(repository, &child, fetched).await? {
                        Some(Manifest::Image {
                            config,
                            annotations,
                            ..
                        }) => {
                            let child_type = fetched.media_types.remove(&child).unwrap_or_default();
                            let image = self
                                .build_image(
                                    repository,
                                    &child,
                                    child_type,
                                    config.digest,
                                    annotations,
                                    fetched,
                                )
                                .await?;
                            fetched.images.insert(child.clone(), image);
                            entries.push(child);
                        }
                        Some(Manifest::List { .. }) => {
                            warn!(list = %digest, entry = %child, "nested image index entry skipped");
                        }
                        None => {}
                    }
                }
                fetched.lists.insert(
                    digest.clone(),
                    ImageList {
                        digest: digest.clone(),
                        media_type,
                        annotations,
                        entries,
                    },
                );
            }
        }
        Ok(())
    }

    /// GETs and parses one manifest. `None` when the registry no longer has it or its
    /// type is not one the index holds (logged): the rest of the repository still goes in.
    async fn fetch_parsed(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        fetched: &mut Fetched,
    ) -> Result<Option<Manifest>, SyncError> {
        let reference = Reference::Digest(digest.clone());
        let raw = match self.registry.manifest(repository, &reference).await {
            Ok(raw) => raw,
            Err(RegistryError::NotFound { .. }) => {
                warn!(%digest, "manifest vanished while refetching");
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        fetched.manifests += 1;
        match crate::registry::manifest::parse(&raw.media_type, &raw.bytes) {
            Ok(manifest) => {
                let media_type = if media_type::is_manifest(&raw.media_type) {
                    raw.media_type
                } else {
                    body_media_type(&manifest)
                };
                fetched.media_types.insert(digest.clone(), media_type);
                Ok(Some(manifest))
            }
            Err(
                e
                @ (RegistryError::UnsupportedMediaType { .. } | RegistryError::BadManifest { .. }),
            ) => {
                warn!(%digest, error = %e, "manifest not indexed");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn build_image(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
        media_type: String,
        config_digest: Digest,
        annotations: crate::model::StringMap,
        fetched: &mut Fetched,
    ) -> Result<Image, SyncError> {
        let bytes = self.registry.blob(repository, &config_digest).await?;
        fetched.blobs += 1;
        let config = crate::registry::manifest::parse_config(&bytes)?;
        Ok(Image {
            digest: digest.clone(),
            media_type,
            os: config.os,
            architecture: config.architecture,
            annotations,
            labels: config.labels,
            config_digest,
        })
    }
}

/// The media type to record when the registry's Content-Type was generic.
fn body_media_type(manifest: &Manifest) -> String {
    match manifest {
        Manifest::Image { .. } => media_type::OCI_MANIFEST.to_owned(),
        Manifest::List { .. } => media_type::OCI_INDEX.to_owned(),
    }
}

/// What a refetch has to fetch: the tagged digests the store does not hold yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub to_fetch: BTreeSet<Digest>,
}

impl Plan {
    pub fn new(known: &HashSet<Digest>, tags: &BTreeMap<Tag, Digest>) -> Self {
        Self {
            to_fetch: tags
                .values()
                .filter(|digest| !known.contains(*digest))
                .cloned()
                .collect(),
        }
    }
}

/// What one refetch has fetched so far.
#[derive(Default)]
struct Fetched {
    images: BTreeMap<Digest, Image>,
    lists: BTreeMap<Digest, ImageList>,
    media_types: BTreeMap<Digest, String>,
    manifests: usize,
    blobs: usize,
}

/// Progress reporting for scans (a terminal progress bar, or nothing).
pub trait ScanProgress: Send + Sync {
    fn start(&self, _repositories: usize) {}
    fn advance(&self, _repository: &RepositoryName) {}
    fn finish(&self, _summary: &ScanSummary) {}
}

/// Reports nothing.
pub struct NoProgress;
impl ScanProgress for NoProgress {}

/// A progress bar on stderr when it is a terminal; hidden otherwise.
pub struct TerminalProgress(indicatif::ProgressBar);

impl TerminalProgress {
    pub fn new() -> Self {
        let bar =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        Self(bar)
    }
}

impl Default for TerminalProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl ScanProgress for TerminalProgress {
    fn start(&self, repositories: usize) {
        self.0.set_length(repositories as u64);
    }
    fn advance(&self, repository: &RepositoryName) {
        self.0.set_message(repository.to_string());
        self.0.inc(1);
    }
    fn finish(&self, _summary: &ScanSummary) {
        self.0.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::sha256_of(&[n])
    }

    fn tag(s: &str) -> Tag {
        Tag::parse(s).unwrap()
    }

    #[test]
    fn plan_fetches_only_unknown_digests_once() {
        let known: HashSet<Digest> = [digest(1)].into_iter().collect();
        let tags: BTreeMap<Tag, Digest> = [
            (tag("latest"), digest(2)),
            (tag("2.0"), digest(2)),
            (tag("1.0"), digest(1)),
            (tag("3.0"), digest(3)),
        ]
        .into_iter()
        .collect();
        let plan = Plan::new(&known, &tags);
        assert_eq!(plan.to_fetch, [digest(2), digest(3)].into_iter().collect());
    }

    #[test]
    fn plan_for_unchanged_repository_is_empty() {
        let known: HashSet<Digest> = [digest(1), digest(2)].into_iter().collect();
        let tags: BTreeMap<Tag, Digest> = [(tag("latest"), digest(1)), (tag("old"), digest(2))]
            .into_iter()
            .collect();
        assert!(Plan::new(&known, &tags).to_fetch.is_empty());
    }

    #[test]
    fn summary_line_names_the_figures() {
        let summary = ScanSummary {
            repositories: 3,
            tags: 7,
            manifests_fetched: 5,
            blobs_fetched: 4,
            changed: 2,
            failed: vec![],
            elapsed: Duration::from_millis(1500),
        };
        assert_eq!(
            summary.to_string(),
            "scanned 3 repositories, 7 tags: 5 manifests and 4 config blobs fetched, 2 repositories changed, 0 failed, in 1.5 s"
        );
    }
}
