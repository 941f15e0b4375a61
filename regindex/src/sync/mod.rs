//! Refetch one repository from the registry into the store; scan them all.
//!
//! A refetch asks the registry first and writes after, so no database connection is held
//! while the registry answers:
//!
//! 1. take a ticket (orders concurrent refetches) and read what the store holds;
//! 2. list the tags; GET each tag the store holds nothing for (digest and body in one
//!    request), HEAD the others; fetch only manifests not stored, the entries of new
//!    lists, and each config blob once per digest ([`configs::ConfigCache`]);
//! 3. in one short transaction under the repository's advisory lock, write the new state
//!    unless a refetch that listed later has written already; if the store lost a manifest
//!    this refetch counted on meanwhile, fetch it and write again.
//!
//! A tag the index cannot use (an image config that is not JSON, a manifest it cannot
//! parse) is recorded as a problem of that tag, and the rest of the repository is indexed:
//! one bad image never blocks its repository. A recorded problem is not fetched again
//! while its tag stays on the same digest.

mod configs;
mod fetch;
pub mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::{stream, StreamExt};
use tracing::{debug, info, warn};

pub use configs::{ConfigCache, CONFIG_CACHE_BYTES};
use fetch::{Fetch, Fetched};
use plan::Usable;

use crate::model::{Digest, RepositoryName, Tag};
use crate::registry::{FetchedManifest, RegistryClient, RegistryError};
use crate::store::plan::{Changes, Listing};
use crate::store::{RefetchTicket, ReplaceOutcome, Store, StoreError, StoredRepository};

/// Pauses before listing the tags again when they do not show yet what a push event
/// announced: docker/distribution sends the manifest push event just before it links
/// the tag, so a refetch right on the event can list the tags a moment too early.
const ANNOUNCED_TAG_RETRIES: [Duration; 6] = [
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(20),
    Duration::from_millis(40),
    Duration::from_millis(80),
    Duration::from_millis(160),
];

/// Write attempts of one refetch when other refetches keep removing manifests it counted
/// on; after that it fails (transiently) and the queue retries it later.
const MAX_WRITE_ROUNDS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{repository} kept changing in the store while it was refetched")]
    KeptChanging { repository: String },
    /// The refetch took longer than `Store::refetch_max_age`: its listing may be older
    /// than what the garbage collection forgot, so it does not write.
    #[error("the refetch of {repository} took too long to write what it listed")]
    TooSlow { repository: String },
}

impl SyncError {
    /// Worth retrying later: the registry or the database may recover.
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::Registry(e) => e.is_transient(),
            SyncError::Store(e) => e.is_transient(),
            SyncError::KeptChanging { .. } | SyncError::TooSlow { .. } => true,
        }
    }
}

/// Errors that concern one manifest or blob, not the repository or the registry: that
/// tag is recorded as a problem and the refetch goes on.
pub(crate) fn is_item_problem(error: &RegistryError) -> bool {
    match error {
        RegistryError::NotFound { .. }
        | RegistryError::BadManifest { .. }
        | RegistryError::UnsupportedMediaType { .. }
        | RegistryError::DigestMismatch { .. }
        | RegistryError::BadResponse { .. }
        | RegistryError::InvalidValue(_) => true,
        RegistryError::Status { .. } => !error.is_transient(),
        RegistryError::Unauthorized { .. }
        | RegistryError::NameRefused { .. }
        | RegistryError::Transport { .. }
        | RegistryError::Config(_) => false,
    }
}

/// What one refetch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefetchReport {
    /// Tags indexed.
    pub tags: usize,
    /// Manifest and config blob GETs sent.
    pub manifests_fetched: usize,
    pub blobs_fetched: usize,
    pub outcome: ReplaceOutcome,
    /// Tags recorded as problems.
    pub problems: usize,
    /// A refetch that listed the tags later had written already: nothing was written.
    pub superseded: bool,
    /// A tag the caller expected (announced by a push event) did not point at the
    /// announced digest even after listing again for a while: moved or deleted since, or
    /// the registry is slow to show it. Worth one more refetch later.
    pub announced_unseen: bool,
}

/// What a scan did.
#[derive(Debug, Clone, Default)]
pub struct ScanSummary {
    pub repositories: usize,
    pub tags: usize,
    pub manifests_fetched: usize,
    pub blobs_fetched: usize,
    pub changed: usize,
    /// Tags recorded as problems (not indexed, or only in part).
    pub problems: usize,
    /// Repositories whose refetch failed, with the reason; the others were still indexed.
    pub failed: Vec<(RepositoryName, String)>,
    pub elapsed: Duration,
}

impl std::fmt::Display for ScanSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "scanned {} repositories, {} tags: {} manifests and {} config blobs fetched, {} repositories changed, {} tags with problems, {} failed, in {:.1} s",
            self.repositories,
            self.tags,
            self.manifests_fetched,
            self.blobs_fetched,
            self.changed,
            self.problems,
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
    configs: Arc<ConfigCache>,
    /// Set when a refetch changed the recorded problems (the worker's gauge re-counts).
    problems_changed: Arc<AtomicBool>,
}

/// What a committed refetch saw, for its observer.
pub struct Refetched<'a> {
    /// Every tag that resolved, indexed or not.
    pub tags: &'a BTreeMap<Tag, Digest>,
    /// When the tag listing started.
    pub listed_at: DateTime<Utc>,
    /// The manifests this refetch fetched, by digest (tag targets and list entries).
    pub manifests: &'a BTreeMap<Digest, FetchedManifest>,
}

/// Told, after each committed refetch, what the registry holds for a repository. The
/// activity history records that state (backfill, lost deletes) from the manifests the
/// refetch fetched; the observer handles its own errors, so it never fails a refetch.
pub trait RefetchObserver: Send + Sync {
    fn refetched<'a>(
        &'a self,
        repository: &'a RepositoryName,
        refetched: Refetched<'a>,
    ) -> BoxFuture<'a, ()>;
}

/// How many refetches of a scan may be in each stage at once. A refetch holds a
/// `fetching` place while it lists and fetches (the registry client's own limit bounds
/// the requests; this keeps enough repositories ready to keep that limit busy), and a
/// `writing` place while it writes and reports to its observer. Writers queue on one
/// another's commits (they share the data version's row), so a few are enough, and the
/// pool's other connections stay free for the reads that start the next refetches.
/// Waiting for a place holds neither a connection nor a registry request.
struct Stages {
    fetching: tokio::sync::Semaphore,
    writing: tokio::sync::Semaphore,
}

/// How a refetch's write ended.
enum Written {
    Written {
        outcome: ReplaceOutcome,
        problems_changed: bool,
    },
    Superseded,
}

/// How a write attempt ended.
enum Write {
    Done(Box<Changes>, Written),
    Superseded,
    /// The store lost manifests the listing relies on since it was read: the state read
    /// under the lock, to fetch them against.
    Missing(Box<StoredRepository>),
}

impl Syncer {
    pub fn new(registry: RegistryClient, store: Store) -> Self {
        Self {
            registry,
            store,
            observer: None,
            configs: Arc::new(ConfigCache::default()),
            problems_changed: Arc::new(AtomicBool::new(true)),
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

    /// True (once) when a refetch changed the recorded problems since the last call, and
    /// on the first call.
    pub fn take_problems_changed(&self) -> bool {
        self.problems_changed.swap(false, Ordering::Relaxed)
    }

    /// Makes the store's view of `repository` equal to the registry's.
    pub async fn refetch(&self, repository: &RepositoryName) -> Result<RefetchReport, SyncError> {
        self.refetch_expecting(repository, &[]).await
    }

    /// `refetch`, for push events that announced `announced` (tag, digest) pairs: while
    /// the listing does not show them yet, it lists again after a short pause (see
    /// [`ANNOUNCED_TAG_RETRIES`]).
    pub async fn refetch_expecting(
        &self,
        repository: &RepositoryName,
        announced: &[(Tag, Digest)],
    ) -> Result<RefetchReport, SyncError> {
        self.refetch_staged(repository, announced, None).await
    }

    /// A refetch; within a scan, its registry part and its database part each wait for
    /// a place in the scan's [`Stages`].
    #[tracing::instrument(skip(self, announced, stages), fields(repository = %repository))]
    async fn refetch_staged(
        &self,
        repository: &RepositoryName,
        announced: &[(Tag, Digest)],
        stages: Option<&Stages>,
    ) -> Result<RefetchReport, SyncError> {
        let started = Instant::now();
        let ticket = self.store.refetch_ticket().await?;
        let mut stored = self.store.stored_repository(repository).await?;
        let fetching = match stages {
            Some(stages) => Some(stages.fetching.acquire().await),
            None => None,
        };

        let fetch = Fetch {
            registry: &self.registry,
            configs: &self.configs,
            repository,
        };
        let mut fetched = Fetched::default();
        let shows_announced = |resolved: &BTreeMap<Tag, Digest>| {
            announced
                .iter()
                .all(|(tag, digest)| resolved.get(tag) == Some(digest))
        };
        let mut listed_at = Utc::now();
        let mut resolved = self.list(&fetch, &stored, &mut fetched).await?;
        for pause in ANNOUNCED_TAG_RETRIES {
            if shows_announced(&resolved) {
                break;
            }
            debug!(
                ?pause,
                "the tags do not show the pushed tag yet; listing again"
            );
            tokio::time::sleep(pause).await;
            listed_at = Utc::now();
            resolved = self.list(&fetch, &stored, &mut fetched).await?;
        }
        let announced_unseen = !shows_announced(&resolved);

        let mut rounds = 0;
        let mut fetching = fetching;
        let mut writing = None;
        let (changes, written) = loop {
            let targets = plan::to_fetch(&stored, &resolved, &fetched.usable);
            fetch.complete(&targets, &stored, &mut fetched).await?;
            // The registry part is done: make room for another repository's.
            drop(fetching.take());
            if let (Some(stages), None) = (stages, &writing) {
                writing = Some(stages.writing.acquire().await);
            }
            let listing = Listing {
                tags: &resolved,
                usable: &fetched.usable,
                vanished: &fetched.vanished,
            };
            let changes = crate::store::plan::diff(repository, &stored, listing)?;
            // Most refetches (every one of a warm scan) find nothing new: one statement
            // records that, without a write transaction.
            if changes.is_empty()
                && self
                    .store
                    .confirm_unchanged(repository, ticket, stored.ticket)
                    .await?
            {
                break (
                    changes,
                    Written::Written {
                        outcome: ReplaceOutcome::default(),
                        problems_changed: false,
                    },
                );
            }
            match self.write(repository, ticket, started, listing).await? {
                Write::Missing(now) => {
                    rounds += 1;
                    if rounds >= MAX_WRITE_ROUNDS {
                        return Err(SyncError::KeptChanging {
                            repository: repository.to_string(),
                        });
                    }
                    debug!("the store lost manifests this refetch counted on; fetching them");
                    // Lists are judged against the store; judge them again.
                    fetched
                        .usable
                        .retain(|_, usable| !matches!(usable, Usable::List { .. }));
                    stored = *now;
                }
                Write::Done(changes, written) => break (*changes, written),
                // What this refetch would have written, for its report.
                Write::Superseded => break (changes, Written::Superseded),
            }
        };

        let mut report = RefetchReport {
            tags: changes.tags.len(),
            manifests_fetched: fetched.manifests,
            blobs_fetched: fetched.blobs,
            problems: changes.problems.len(),
            announced_unseen,
            ..RefetchReport::default()
        };
        match written {
            Written::Written {
                outcome,
                problems_changed,
            } => {
                if problems_changed {
                    self.problems_changed.store(true, Ordering::Relaxed);
                    for problem in &changes.problems {
                        warn!(tag = %problem.tag, digest = %problem.digest, reason = %problem.reason, partial = problem.partial, "tag not fully indexed");
                    }
                }
                if let Some(observer) = &self.observer {
                    let refetched = Refetched {
                        tags: &resolved,
                        listed_at,
                        manifests: &fetched.bodies,
                    };
                    observer.refetched(repository, refetched).await;
                    drop(writing);
                }
                if outcome.changed {
                    info!(
                        tags = changes.tags.len(),
                        manifests = fetched.manifests,
                        blobs = fetched.blobs,
                        "repository updated"
                    );
                }
                report.outcome = outcome;
            }
            Written::Superseded => {
                debug!("a refetch that listed later has written already");
                report.superseded = true;
            }
        }
        Ok(report)
    }

    /// The tags and where they point (an unknown repository has none).
    async fn list(
        &self,
        fetch: &Fetch<'_>,
        stored: &StoredRepository,
        fetched: &mut Fetched,
    ) -> Result<BTreeMap<Tag, Digest>, SyncError> {
        let tags = match self.registry.tags(fetch.repository).await {
            Ok(tags) => tags,
            Err(RegistryError::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        fetch.resolve(tags, stored, fetched).await
    }

    /// The short write: under the repository's lock, unless a later listing was written.
    /// The stored state is read once more here, under the lock, and the listing is
    /// diffed against it: that is what gets written.
    async fn write(
        &self,
        repository: &RepositoryName,
        ticket: RefetchTicket,
        started: Instant,
        listing: Listing<'_>,
    ) -> Result<Write, SyncError> {
        let mut tx = self.store.begin_repository(repository).await?;
        let mut stored = tx.stored().await?;
        let seen = stored.ticket;
        if !tx.claim(ticket).await? {
            return Ok(Write::Superseded);
        }
        // Checked once the claim holds the ticket's row (see `store::gc`).
        if started.elapsed() >= self.store.refetch_max_age() {
            return Err(SyncError::TooSlow {
                repository: repository.to_string(),
            });
        }
        let changes = crate::store::plan::diff(repository, &stored, listing)?;
        if !changes.missing.is_empty() {
            debug!(missing = ?changes.missing, "the store changed meanwhile");
            stored.ticket = seen;
            return Ok(Write::Missing(Box::new(stored)));
        }
        let outcome = tx.apply(&stored, &changes).await?;
        let problems_changed =
            changes.problems_changed && tx.set_problems(&changes.problems).await?;
        tx.commit().await?;
        Ok(Write::Done(
            Box::new(changes),
            Written::Written {
                outcome,
                problems_changed,
            },
        ))
    }

    /// Refetches every repository of the catalog and every repository the store knows
    /// (so that repositories gone from the registry are removed). The refetches share
    /// [`Stages`]: twice the registry client's request limit may list and fetch at once,
    /// half the pool's connections may write at once, and enough repositories (at least
    /// `concurrency`) are under way that the registry is never left waiting for a
    /// repository's database work. One failing repository does not stop the scan; it is
    /// reported in `failed`. Listing the catalog failing does.
    pub async fn scan(
        &self,
        concurrency: usize,
        progress: &dyn ScanProgress,
    ) -> Result<ScanSummary, SyncError> {
        let started = Instant::now();
        let mut repositories: BTreeSet<RepositoryName> =
            self.registry.catalog().await?.into_iter().collect();
        repositories.extend(self.store.repositories().await?);
        repositories.extend(
            self.store
                .problems(None)
                .await?
                .into_iter()
                .map(|p| p.repository),
        );
        progress.start(repositories.len());

        let mut summary = ScanSummary {
            repositories: repositories.len(),
            ..ScanSummary::default()
        };
        let requests = self.registry.max_concurrency();
        let connections = self.store.pool().options().get_max_connections() as usize;
        let stages = Stages {
            fetching: tokio::sync::Semaphore::new(2 * requests),
            writing: tokio::sync::Semaphore::new((connections / 2).max(1)),
        };
        // Enough repositories under way that some wait for each stage.
        let width = (4 * requests + connections).max(concurrency);
        let stages = &stages;
        let mut results = stream::iter(repositories)
            .map(|repository| async move {
                let result = self.refetch_staged(&repository, &[], Some(stages)).await;
                (repository, result)
            })
            .buffer_unordered(width);
        while let Some((repository, result)) = results.next().await {
            match result {
                Ok(report) => {
                    summary.tags += report.tags;
                    summary.manifests_fetched += report.manifests_fetched;
                    summary.blobs_fetched += report.blobs_fetched;
                    summary.changed += usize::from(report.outcome.changed);
                    summary.problems += report.problems;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line_names_the_figures() {
        let summary = ScanSummary {
            repositories: 3,
            tags: 7,
            manifests_fetched: 5,
            blobs_fetched: 4,
            changed: 2,
            problems: 1,
            failed: vec![],
            elapsed: Duration::from_millis(1500),
        };
        assert_eq!(
            summary.to_string(),
            "scanned 3 repositories, 7 tags: 5 manifests and 4 config blobs fetched, 2 repositories changed, 1 tags with problems, 0 failed, in 1.5 s"
        );
    }
}
