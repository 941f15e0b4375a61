//! Bodhi messages in the worker.
//!
//! - `bodhi.update.complete.{stable,testing}`: each build's NVR is looked up in the
//!   stored labels; only the repositories that matched are refetched. Builds that matched
//!   nothing make the worker list the catalog and refetch the repositories not indexed yet.
//!   The repositories are remembered for the next compose.
//! - `bodhi.compose.complete` (container/flatpak, `bodhi.compose_complete: full`): the
//!   repositories of recent updates are refetched first; every other repository gets one
//!   warm check (tag list and HEADs) and only those that changed are refetched.
//!
//! Refetches are `regindex.refetch` messages, so they spread over the worker processes
//! and retry or dead-letter one repository at a time.

use std::collections::BTreeMap;

use regindex::bus::bodhi::{self, BuildMatch, UpdateComplete};
use regindex::model::RepositoryName;
use tracing::{info, warn};

use crate::consumer::Handlers;
use crate::outcome::Failure;

/// The `match` metric label of a build that matched nothing.
const NO_MATCH: &str = "none";

impl Handlers {
    pub(crate) async fn update(&self, update: &UpdateComplete) -> Result<(), Failure> {
        for reason in &update.skipped_builds {
            warn!(alias = %update.alias, %reason, "build left out of the update");
        }
        let metrics = &self.metrics.bodhi;
        let mut targets: BTreeMap<RepositoryName, BuildMatch> = BTreeMap::new();
        let mut unmatched = Vec::new();
        for nvr in &update.builds {
            let matches = bodhi::strongest(self.refetcher.build_matches(nvr).await?);
            if matches.is_empty() {
                metrics.build_matches.with_label_values(&[NO_MATCH]).inc();
                unmatched.push(nvr.to_string());
            }
            for (repository, how) in matches {
                info!(build = %nvr, repository = %repository, r#match = how.as_str(), "build matched");
                metrics
                    .build_matches
                    .with_label_values(&[how.as_str()])
                    .inc();
                let best = targets.entry(repository).or_insert(how);
                *best = (*best).min(how);
            }
        }
        if !unmatched.is_empty() {
            // A build no label or name leads to: perhaps pushed to a repository the index
            // has not seen (its webhook lost). Only those are worth a look.
            let fresh = self.refetcher.not_indexed().await?;
            if fresh.is_empty() {
                warn!(builds = ?unmatched, "builds matched no repository, and every repository of the catalog is indexed");
            }
            for repository in fresh {
                info!(builds = ?unmatched, repository = %repository, "repository not indexed yet");
                metrics
                    .build_matches
                    .with_label_values(&[BuildMatch::NewRepository.as_str()])
                    .inc();
                targets
                    .entry(repository)
                    .or_insert(BuildMatch::NewRepository);
            }
        }
        let repositories: Vec<RepositoryName> = targets.into_keys().collect();
        self.refetcher
            .record_update(
                &update.alias,
                &repositories,
                self.bodhi.recent_update_window,
            )
            .await?;
        let requested = self.publish_refetches(repositories).await?;
        metrics
            .refetches
            .with_label_values(&["update"])
            .inc_by(requested as u64);
        info!(
            topic = %update.topic,
            alias = %update.alias,
            release = %update.release,
            content_type = update.content_type.as_deref().unwrap_or("unknown"),
            status = update.status.as_deref().unwrap_or("unknown"),
            request = update.request.as_deref().unwrap_or("none"),
            builds = update.builds.len(),
            refetches = requested,
            "update handled"
        );
        Ok(())
    }

    pub(crate) async fn compose(&self) -> Result<(), Failure> {
        let recent = self
            .refetcher
            .recent_updates(self.bodhi.recent_update_window)
            .await?;
        let all = self.refetcher.repositories().await?;
        let (first, rest) = bodhi::compose_order(recent, all);
        let recent = self.publish_refetches(first).await?;
        let checked = rest.len();
        let changed = self.refetcher.changed(rest, self.concurrency).await?;
        let changed = self.publish_refetches(changed).await?;
        let metrics = &self.metrics.bodhi;
        metrics
            .refetches
            .with_label_values(&["compose_recent"])
            .inc_by(recent as u64);
        metrics
            .refetches
            .with_label_values(&["compose_changed"])
            .inc_by(changed as u64);
        metrics.warm_checked.inc_by(checked as u64);
        info!(
            recent_updates = recent,
            checked, changed, "compose handled: recent updates first, then what changed"
        );
        Ok(())
    }
}
