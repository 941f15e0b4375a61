//! A private PostgreSQL server for fault tests: its own data directory and port, so a test
//! can stop and start it without touching the shared server on 5432.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use sqlx::{Connection, PgConnection};
use tempfile::TempDir;
use tokio::time::Instant;

use crate::free_port;
use crate::service_user::RunAs;

/// `pg_ctl start -w` waits up to this long for the server to accept connections.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Settings for a throwaway server: nothing has to survive a crash of the machine.
const DEFAULT_SETTINGS: &[(&str, &str)] = &[
    ("listen_addresses", "127.0.0.1"),
    // TCP only: a socket path under a long temp dir could exceed the 107-byte limit.
    ("unix_socket_directories", ""),
    ("fsync", "off"),
    ("full_page_writes", "off"),
    ("synchronous_commit", "off"),
    ("shared_buffers", "16MB"),
    ("max_connections", "50"),
];

/// A PostgreSQL server of its own: `initdb` into a temporary directory, `pg_ctl` on a
/// free port of 127.0.0.1, trust authentication for user `postgres`. It runs as the
/// system user `postgres` when the tests run as root (PostgreSQL refuses root), else as
/// the current user. Stopped and deleted on drop.
///
/// ```no_run
/// # async fn example() -> anyhow::Result<()> {
/// use regindex_testkit::PrivatePostgres;
///
/// let mut pg = PrivatePostgres::new().await?;
/// let url = pg.create_database("regindex").await?; // postgres://postgres@127.0.0.1:<port>/regindex
/// // ... point the code under test at `url` ...
/// pg.stop().await?;  // outage: connections are closed, the port refuses
/// pg.start().await?; // back, same port and data
/// # let _ = url;
/// # Ok(())
/// # }
/// ```
pub struct PrivatePostgres {
    dir: TempDir,
    bin_dir: PathBuf,
    run_as: RunAs,
    port: u16,
    settings: Vec<(String, String)>,
    running: bool,
}

impl PrivatePostgres {
    /// Initialises a cluster and starts it; ready to accept connections on return.
    pub async fn new() -> anyhow::Result<Self> {
        Self::with_settings(&[]).await
    }

    /// As `new`, with extra server settings (`-c name=value`), e.g.
    /// `[("max_connections", "5")]`.
    pub async fn with_settings(settings: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut pg = Self::unstarted(settings)?;
        pg.initdb().await?;
        pg.start().await?;
        Ok(pg)
    }

    /// A hot-standby streaming replica of this server (which must be running): a
    /// `pg_basebackup -R` into a directory of its own, started on a free port; ready to
    /// accept (read-only) connections on return. It runs with this server's extra
    /// settings. Pause and resume its replay with `SELECT pg_wal_replay_pause()` /
    /// `pg_wal_replay_resume()` on it; `stop`/`start` it like any server.
    pub async fn start_replica(&self) -> anyhow::Result<PrivatePostgres> {
        let extra: Vec<(&str, &str)> = self.settings[DEFAULT_SETTINGS.len()..]
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut replica = Self::unstarted(&extra)?;
        let mut command = tokio::process::Command::new(self.bin_dir.join("pg_basebackup"));
        command
            .arg("-D")
            .arg(replica.data_dir())
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            // -R writes standby.signal and primary_conninfo; -X stream copies the WAL
            // written during the backup; a fast checkpoint starts it at once (a spread one
            // takes minutes).
            .args(["-R", "-X", "stream", "--no-sync", "--checkpoint=fast"]);
        replica.run(command, "pg_basebackup").await?;
        replica.start().await?;
        Ok(replica)
    }

    /// A server directory and port, not initialised yet.
    fn unstarted(settings: &[(&str, &str)]) -> anyhow::Result<Self> {
        if let Some((k, _)) = settings.iter().find(|(_, v)| v.contains('\'')) {
            bail!("setting {k}: values with a single quote are not supported");
        }
        let bin_dir = bin_dir()?;
        let run_as = RunAs::service("postgres")?;
        let dir = tempfile::Builder::new()
            .prefix("regindex-pg-")
            .tempdir()
            .context("creating the PostgreSQL directory")?;
        run_as.own(dir.path())?;
        let mut all: Vec<(String, String)> = DEFAULT_SETTINGS
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        all.extend(
            settings
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        Ok(Self {
            dir,
            bin_dir,
            run_as,
            port: free_port()?,
            settings: all,
            running: false,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`, as the code under test should name it in messages.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// URL of `database` on this server (which need not exist yet).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates `database` and returns its URL. The server must be running.
    pub async fn create_database(&self, database: &str) -> anyhow::Result<String> {
        let mut conn = PgConnection::connect(&self.url("postgres"))
            .await
            .with_context(|| format!("connecting to the private PostgreSQL at {}", self.host()))?;
        let quoted = database.replace('"', "\"\"");
        sqlx::query(&format!("CREATE DATABASE \"{quoted}\""))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating database {database}"))?;
        let _ = conn.close().await;
        Ok(self.url(database))
    }

    pub fn is_running(&self) -> bool {
        self.running
    }

    /// The server's log (all runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the server (again) on the same port and data; returns once it accepts
    /// connections. Does nothing when it runs.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        if self.running {
            return Ok(());
        }
        // pg_ctl hands `-o` to a shell: single quotes keep each value whole.
        let options: Vec<String> = std::iter::once(format!("-p {}", self.port))
            .chain(self.settings.iter().map(|(k, v)| format!("-c {k}='{v}'")))
            .collect();
        let timeout = STARTUP_TIMEOUT.as_secs().to_string();
        let result = self
            .pg_ctl(&[
                "start",
                "-w",
                "-t",
                &timeout,
                "-l",
                &self.log_path().display().to_string(),
                "-o",
                &options.join(" "),
            ])
            .await;
        if let Err(e) = result {
            bail!("{e:#}; server log:\n{}", self.log());
        }
        self.running = true;
        // `pg_ctl -w` saw the postmaster ready; make sure it is this server on this port
        // (another process could have taken the port between free_port and start).
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            match PgConnection::connect(&self.url("postgres")).await {
                Ok(conn) => {
                    let _ = conn.close().await;
                    return Ok(());
                }
                Err(e) if Instant::now() > deadline => {
                    bail!(
                        "private PostgreSQL on {} does not accept connections: {e}",
                        self.host()
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Stops the server (`pg_ctl stop -m fast`): open sessions are terminated, new
    /// connections are refused. Returns once it has exited. Data is kept for `start`.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if !self.running {
            return Ok(());
        }
        self.pg_ctl(&["stop", "-w", "-m", "fast"]).await?;
        self.running = false;
        Ok(())
    }

    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.start().await
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    async fn initdb(&self) -> anyhow::Result<()> {
        let mut command = tokio::process::Command::new(self.bin_dir.join("initdb"));
        command
            .arg("-D")
            .arg(self.data_dir())
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"]);
        self.run(command, "initdb").await
    }

    async fn pg_ctl(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut command = tokio::process::Command::new(self.bin_dir.join("pg_ctl"));
        command.arg("-D").arg(self.data_dir()).args(args);
        self.run(command, &format!("pg_ctl {}", args[0])).await
    }

    async fn run(&self, mut command: tokio::process::Command, what: &str) -> anyhow::Result<()> {
        // The service user may not be allowed into the test's working directory.
        command
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.run_as.apply(&mut command);
        let output = command
            .output()
            .await
            .with_context(|| format!("running {what}"))?;
        if !output.status.success() {
            bail!(
                "{what} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if !self.running {
            return;
        }
        // Immediate: the directory is deleted next, nothing needs to be flushed.
        let mut command = std::process::Command::new(self.bin_dir.join("pg_ctl"));
        command
            .arg("-D")
            .arg(self.data_dir())
            .args(["stop", "-w", "-m", "immediate"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.run_as.apply_std(&mut command);
        let _ = command.status();
    }
}

/// The directory of `initdb` and `pg_ctl`: `REGINDEX_TEST_PG_BIN` when set, else the
/// newest `/usr/lib/postgresql/<version>/bin` (Debian keeps them off `PATH`), else the
/// `PATH` entry that has `initdb`.
fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("REGINDEX_TEST_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin);
    if let Some(bin) = debian {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| Path::new(dir).join("initdb").is_file())
        .context(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: install the postgresql \
             package or set REGINDEX_TEST_PG_BIN",
        )
}
