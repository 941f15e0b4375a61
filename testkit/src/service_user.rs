//! Running a private server process as its system user.
//!
//! PostgreSQL refuses to run as root, and a second RabbitMQ node is best run as the user
//! that owns the packaged one. When the tests run as root, private servers run as that
//! service user; otherwise as the current user (who then owns everything anyway).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};

/// The uid and gid a private server runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunAs {
    uid: u32,
    gid: u32,
    /// False when running as the current user: nothing to switch or chown.
    switch: bool,
}

impl RunAs {
    /// `user` when running as root, else the current user.
    pub(crate) fn service(user: &str) -> anyhow::Result<Self> {
        // SAFETY: geteuid/getegid have no preconditions and cannot fail.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        if euid != 0 {
            return Ok(Self {
                uid: euid,
                gid: egid,
                switch: false,
            });
        }
        Ok(Self {
            uid: id(user, "-u")?,
            gid: id(user, "-g")?,
            switch: true,
        })
    }

    /// Applies the user to a command about to be spawned (supplementary groups are
    /// dropped by std when switching from root).
    pub(crate) fn apply(&self, command: &mut tokio::process::Command) {
        if self.switch {
            command.uid(self.uid).gid(self.gid);
        }
    }

    /// The same for a blocking command (used from `Drop`).
    pub(crate) fn apply_std(&self, command: &mut Command) {
        use std::os::unix::process::CommandExt as _;
        if self.switch {
            command.uid(self.uid).gid(self.gid);
        }
    }

    /// Gives `path` (not recursively) to the user.
    pub(crate) fn own(&self, path: &Path) -> anyhow::Result<()> {
        if self.switch {
            std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
                .with_context(|| format!("chown {}", path.display()))?;
        }
        Ok(())
    }
}

fn id(user: &str, flag: &str) -> anyhow::Result<u32> {
    let output = Command::new("id")
        .args([flag, user])
        .output()
        .with_context(|| format!("running `id {flag} {user}`"))?;
    if !output.status.success() {
        bail!(
            "system user {user:?} not found (`id {flag} {user}`: {}); is its server package installed?",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("`id {flag} {user}` printed {text:?}"))
}
