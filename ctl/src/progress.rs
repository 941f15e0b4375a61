//! The scan's progress bar for `regindexctl scan` (the library reports progress through
//! [`ScanProgress`] and draws nothing itself).

use regindex::model::RepositoryName;
use regindex::sync::{ScanProgress, ScanSummary};

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
