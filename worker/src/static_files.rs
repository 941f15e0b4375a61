//! Keeps the configured static index files (regindexer style) in step with the index:
//! whenever the store's data version moves (a refetch or scan changed something), the
//! files are rewritten. Every worker process may do it: writes are atomic and files
//! whose bytes did not change are left alone.

use std::sync::Arc;
use std::time::Duration;

use regindex::config::Config;
use regindex::index::static_index::write_static_indexes;
use regindex::store::Store;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often the data version is looked at; bounds how stale a file can be.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

pub async fn run(store: Store, config: Arc<Config>, poll: Duration, stop: CancellationToken) {
    if config.static_indexes.is_empty() {
        return;
    }
    let mut written_version = None;
    let mut ticks = tokio::time::interval(poll);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let version = match store.data_version().await {
            Ok(version) => version,
            Err(e) => {
                warn!(error = %e, "static index files: cannot read the data version");
                continue;
            }
        };
        if written_version == Some(version) {
            continue;
        }
        match write_static_indexes(&store, &config).await {
            Ok(written) => {
                info!(version, files = written.len(), "static index files written");
                written_version = Some(version);
            }
            // Retried at the next tick: the version is not recorded as written.
            Err(e) => warn!(error = %e, "static index files not written"),
        }
    }
}
