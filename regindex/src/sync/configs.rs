//! Image configs by digest, fetched once: a digest names one content, so what one
//! repository's config said holds for every repository that links the same blob (cross-
//! repository mounts, the same base pushed twice). Concurrent refetches asking for one
//! digest share one request. Bounded by the configs' size; the oldest go first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OnceCell;

use super::is_item_problem;
use crate::model::{Digest, RepositoryName};
use crate::registry::{ImageConfig, RegistryClient, RegistryError};

/// What a config blob gave: its contents, or why it cannot be used (not JSON, missing).
pub type ConfigOutcome = Result<Arc<ImageConfig>, String>;

/// Configs kept, in bytes of the blobs they were parsed from.
pub const CONFIG_CACHE_BYTES: usize = 32 << 20;
/// The least an entry counts for, so that tiny or failed configs are bounded too.
const MIN_WEIGHT: usize = 256;

pub struct ConfigCache {
    state: Mutex<State>,
    max_bytes: usize,
}

type Cell = Arc<OnceCell<(ConfigOutcome, usize)>>;

#[derive(Default)]
struct State {
    cells: HashMap<Digest, Cell>,
    /// Filled cells, oldest first, with their weight.
    order: VecDeque<(Digest, usize)>,
    bytes: usize,
}

impl ConfigCache {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The config `digest` of `repository`, and whether this call fetched it. Errors the
    /// registry may recover from (and refused access) are returned, not kept.
    pub async fn get(
        &self,
        registry: &RegistryClient,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> Result<(ConfigOutcome, bool), RegistryError> {
        let cell: Cell = self.lock().cells.entry(digest.clone()).or_default().clone();
        let mut fetched = false;
        let result = cell
            .get_or_try_init(|| {
                fetched = true;
                async {
                    match registry.blob(repository, digest).await {
                        Ok(bytes) => {
                            let parsed = crate::registry::manifest::parse_config(&bytes)
                                .map(Arc::new)
                                .map_err(|e| format!("config {digest}: {e}"));
                            Ok((parsed, bytes.len().max(MIN_WEIGHT)))
                        }
                        Err(e) if is_item_problem(&e) => {
                            Ok((Err(format!("config {e}")), MIN_WEIGHT))
                        }
                        Err(e) => Err(e),
                    }
                }
            })
            .await;
        match result {
            Ok((outcome, weight)) => {
                let outcome = outcome.clone();
                if fetched {
                    self.admit(digest, *weight);
                }
                Ok((outcome, fetched))
            }
            Err(e) => {
                let mut state = self.lock();
                if state
                    .cells
                    .get(digest)
                    .is_some_and(|c| Arc::ptr_eq(c, &cell) && c.get().is_none())
                {
                    state.cells.remove(digest);
                }
                Err(e)
            }
        }
    }

    fn admit(&self, digest: &Digest, weight: usize) {
        let mut state = self.lock();
        state.order.push_back((digest.clone(), weight));
        state.bytes += weight;
        while state.bytes > self.max_bytes {
            let Some((old, weight)) = state.order.pop_front() else {
                break;
            };
            state.bytes -= weight;
            state.cells.remove(&old);
        }
    }

    /// Configs held (for tests).
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for ConfigCache {
    fn default() -> Self {
        Self::new(CONFIG_CACHE_BYTES)
    }
}
