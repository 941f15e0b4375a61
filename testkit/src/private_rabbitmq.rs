//! A private RabbitMQ node for fault tests: its own node name, ports and data, so a test
//! can stop and start it without touching the shared broker on 5672.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;
use tokio::time::Instant;

use crate::free_port;
use crate::service_user::RunAs;

/// The packaged scripts; `/usr/sbin/rabbitmq*` are wrappers that force the packaged
/// node's environment.
const RABBITMQ_BIN: &str = "/usr/lib/rabbitmq/bin";
/// A cold node boots in a few seconds; a loaded CI machine may take much longer.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(90);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// AMQP 0-9-1 protocol header: a broker that accepts clients answers with Connection.Start.
const AMQP_HEADER: &[u8] = b"AMQP\x00\x00\x09\x01";

/// A RabbitMQ node of its own (`regindex-<random>@localhost`): AMQP on a free port of
/// 127.0.0.1, Erlang distribution on another, mnesia and logs in a temporary directory,
/// no plugins, user `guest`/`guest` (loopback only) on vhost `/`. It runs as the system
/// user `rabbitmq` when the tests run as root, else as the current user. Durable queues
/// and messages survive `stop` + `start`. Killed and deleted on drop.
///
/// ```no_run
/// # async fn example() -> anyhow::Result<()> {
/// use regindex_testkit::PrivateRabbitMq;
///
/// let mut broker = PrivateRabbitMq::new().await?;
/// let url = broker.amqp_url(); // amqp://guest:guest@127.0.0.1:<port>/%2f
/// broker.stop().await?;  // outage: connections are closed, the port refuses
/// broker.start().await?; // back, same port and data
/// let vhosts = broker.ctl(&["list_vhosts"]).await?; // any rabbitmqctl command
/// broker.import_definitions(r#"{"vhosts": [{"name": "scratch"}]}"#).await?;
/// # let _ = (url, vhosts);
/// # Ok(())
/// # }
/// ```
pub struct PrivateRabbitMq {
    dir: TempDir,
    run_as: RunAs,
    node: String,
    port: u16,
    dist_port: u16,
    child: Option<Child>,
}

impl PrivateRabbitMq {
    /// Starts a new node; it accepts AMQP clients on return.
    pub async fn new() -> anyhow::Result<Self> {
        Self::create(None).await
    }

    /// A new node with this Erlang cookie (nodes of one cluster share one; see
    /// [`crate::RabbitMqCluster`]).
    pub async fn with_cookie(cookie: &str) -> anyhow::Result<Self> {
        Self::create(Some(cookie)).await
    }

    async fn create(cookie: Option<&str>) -> anyhow::Result<Self> {
        let run_as = RunAs::service("rabbitmq")?;
        let dir = tempfile::Builder::new()
            .prefix("regindex-rabbitmq-")
            .tempdir()
            .context("creating the RabbitMQ directory")?;
        let port = free_port()?;
        let dist_port = free_port()?;
        let random = uuid::Uuid::new_v4().simple().to_string();
        let node = format!("regindex-{}@localhost", &random[..12]);
        let files = [
            // Only this listener: the packaged rabbitmq.conf names port 5672.
            (
                "rabbitmq.conf",
                format!("listeners.tcp.local = 127.0.0.1:{port}\n"),
            ),
            // No plugins: the management plugin would want the shared node's port 15672.
            ("enabled_plugins", "[].\n".to_owned()),
            // Not the packaged rabbitmq-env.conf, which sets NODENAME.
            ("rabbitmq-env.conf", String::new()),
        ];
        for (name, content) in files {
            let path = dir.path().join(name);
            std::fs::write(&path, content).with_context(|| format!("writing {name}"))?;
            run_as.own(&path)?;
        }
        if let Some(cookie) = cookie {
            // In HOME, where both the node and rabbitmqctl read it; Erlang refuses a
            // cookie file that others can read.
            let path = dir.path().join(".erlang.cookie");
            std::fs::write(&path, cookie).context("writing the Erlang cookie")?;
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o400))?;
            run_as.own(&path)?;
        }
        run_as.own(dir.path())?;
        let mut broker = Self {
            dir,
            run_as,
            node,
            port,
            dist_port,
            child: None,
        };
        broker.start().await?;
        Ok(broker)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Erlang node name, for `rabbitmqctl -n`.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The node's own log and its console output (all runs).
    pub fn log(&self) -> String {
        let mut text = String::new();
        for path in [self.dir.path().join("console.log"), self.node_log_path()] {
            text.push_str(&std::fs::read_to_string(path).unwrap_or_default());
        }
        text
    }

    /// Starts the node (again) on the same ports and data; returns once it has booted
    /// (`rabbitmqctl await_startup`) and answers the AMQP protocol header. Does nothing
    /// when it runs.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let console = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("console.log"))?;
        let dir = self.dir.path();
        let mut command = tokio::process::Command::new(format!("{RABBITMQ_BIN}/rabbitmq-server"));
        self.environment(&mut command);
        command
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", dir.join("advanced.config"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            // Distribution on loopback only, like the packaged node.
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            // The script then execs the VM instead of staying as a signal proxy, so the
            // child is the node itself (kill means kill). It has no other effect.
            .env("RUNNING_UNDER_SYSTEMD", "true")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(console.try_clone()?)
            .stderr(console)
            .kill_on_drop(true);
        self.child = Some(command.spawn().context("starting rabbitmq-server")?);
        if let Err(e) = self.wait_ready().await {
            self.kill().await;
            bail!("{e:#}; node log:\n{}", self.log());
        }
        Ok(())
    }

    /// Stops the node (`rabbitmqctl stop`): client connections are closed, the port
    /// refuses. Returns once the node process has exited. Data is kept for `start`.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let stopped = self.ctl(&["stop"]).await;
        match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
            Ok(Ok(_)) => stopped.map(|_| ()),
            Ok(Err(e)) => Err(e).context("waiting for the RabbitMQ node to exit"),
            Err(_) => {
                let _ = child.kill().await;
                bail!(
                    "the RabbitMQ node did not stop within {STOP_TIMEOUT:?} ({stopped:?}); killed it"
                )
            }
        }
    }

    /// Kills the node process (a crash, not a clean stop). Data is kept for `start`.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.start().await
    }

    /// Runs `rabbitmqctl -n <node> <args>` and returns its standard output; an error
    /// (with the output) when it exits unsuccessfully. Files handed to the node (e.g. for
    /// `import_definitions`) must be readable by the service user.
    pub async fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut command = tokio::process::Command::new(format!("{RABBITMQ_BIN}/rabbitmqctl"));
        self.environment(&mut command);
        command
            .arg("-n")
            .arg(&self.node)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let output = command
            .output()
            .await
            .with_context(|| format!("running rabbitmqctl {}", args.join(" ")))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            bail!(
                "rabbitmqctl {} failed ({}): {stdout}{}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(stdout)
    }

    /// Imports RabbitMQ definitions (JSON, as `rabbitmqctl export_definitions` writes
    /// them) into the running node.
    pub async fn import_definitions(&self, json: &str) -> anyhow::Result<()> {
        // The node reads the file itself, as the service user: put it in the node's dir.
        let path = self.dir.path().join(format!(
            "definitions-{}.json",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(&path, json).context("writing the definitions")?;
        self.run_as.own(&path)?;
        let result = self
            .ctl(&["import_definitions", &path.display().to_string()])
            .await;
        let _ = std::fs::remove_file(&path);
        result.map(|_| ())
    }

    /// What the server and the CLI share: user, home (the Erlang cookie is created
    /// there), node name.
    fn environment(&self, command: &mut tokio::process::Command) {
        let dir = self.dir.path();
        command
            .current_dir(dir)
            .env("HOME", dir)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_CONF_ENV_FILE", dir.join("rabbitmq-env.conf"));
        self.run_as.apply(command);
    }

    fn node_log_path(&self) -> PathBuf {
        self.dir
            .path()
            .join("log")
            .join(format!("{}.log", self.node))
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!("rabbitmq-server exited at start-up: {status}");
                }
            }
            // Fails at once while the node is not registered yet; waits for the boot
            // to complete once it is.
            let booted = self.ctl(&["await_startup", "--timeout", "10"]).await;
            if booted.is_ok() && self.answers_amqp().await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "RabbitMQ node {} not ready within {STARTUP_TIMEOUT:?}: {booted:?}",
                    self.node
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The listener answers a protocol header with a Connection.Start method frame.
    async fn answers_amqp(&self) -> bool {
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
            stream.write_all(AMQP_HEADER).await?;
            let mut frame_type = [0u8; 1];
            stream.read_exact(&mut frame_type).await?;
            Ok::<_, std::io::Error>(frame_type[0] == 1)
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(5), exchange).await,
            Ok(Ok(true))
        )
    }
}

impl Drop for PrivateRabbitMq {
    fn drop(&mut self) {
        // The data directory goes next: no clean stop needed. `start_kill` signals
        // without waiting; the runtime reaps the process.
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
        }
    }
}
