//! Test harness for regindex: real services, real data.
//!
//! - [`app::App`]: the one spawn-app harness of the integration tests: a registry, a
//!   migrated store, and on request broker names, the api and workers (builder options
//!   for each); [`app::TestStore`] is its database part alone.
//! - [`TestRegistry`]: a real `docker-registry` process on a free port, with image pushes
//!   over the distribution API and the registry's own request log as ground truth.
//! - [`TestDatabase`]: a fresh PostgreSQL database per test.
//! - [`RegistryGate`]: an HTTP forwarder that holds chosen registry requests until released.
//! - [`TcpProxy`]: a proxy in front of a real service that can stall (a network partition).
//! - [`PrivatePostgres`], [`PrivateRabbitMq`]: servers of a test's own, on free ports, for
//!   outage tests (`stop()` / `start()`); never stop the shared ones on 5432 / 5672.
//! - [`RabbitMqCluster`]: several [`PrivateRabbitMq`] nodes joined into one cluster.
//! - [`free_port`], [`unique_name`]: for anything else a test starts or names.
//! - [`png`], [`ImageSpec::icons`]: real icons; [`samples`]: what `make up` pushes.
//! - [`rabbitmq::ScratchDefinitions`]: RabbitMQ definitions imported under unique vhost and
//!   user names on the shared node, removed afterwards.
//!
//! Only [`app`] depends on the regindex crates (it runs them); everything else here is
//! the independent side of every test: expected values come from what the test pushed.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use regindex_testkit::{ImageSpec, ListFormat, NotificationEndpoint, TestDatabase, TestRegistry};
//!
//! let db = TestDatabase::create().await?; // db.url() -> postgres://.../regindex_test_...
//! let mut registry = TestRegistry::builder()
//!     .notify(NotificationEndpoint::new("http://127.0.0.1:8080/events").bearer_token("t"))
//!     .start()
//!     .await?;
//! let image = registry
//!     .push_image("apps/calc", Some("latest"), &ImageSpec::flatpak("org.example.Calc", "x86_64"))
//!     .await?;
//! let list = registry
//!     .push_list(
//!         "apps/calc",
//!         Some("multi"),
//!         &[ImageSpec::flatpak("org.example.Calc", "x86_64"), ImageSpec::flatpak("org.example.Calc", "aarch64")],
//!         ListFormat::OciIndex,
//!     )
//!     .await?;
//! registry.tag("apps/calc", "stable", &image.digest).await?; // tag move if it existed
//!
//! // Ground truth of what the code under test fetched: the registry's own access log.
//! let mark = registry.log_mark().await?;
//! // ... run a scan against registry.url() ...
//! let fetched = registry.requests_since(mark).await?; // testkit requests left out
//! assert!(!fetched.iter().any(|r| r.is_manifest_get() || r.is_blob_get()));
//!
//! registry.stop(); // outage; registry.start().await? brings it back on the same port
//! db.drop().await?;
//! # let _ = list;
//! # Ok(())
//! # }
//! ```

pub mod app;
mod database;
mod gate;
mod icon;
mod image;
mod oci_layout;
mod private_postgres;
mod private_rabbitmq;
mod proxy;
mod push;
pub mod rabbitmq;
mod rabbitmq_cluster;
mod registry;
pub mod samples;
mod service_user;
mod token;

pub use database::TestDatabase;
pub use gate::RegistryGate;
pub use icon::{png, png_data_uri, ICON_128_LABEL, ICON_64_LABEL};
pub use image::{
    sha256_digest, BuiltImage, ImageFormat, ImageSpec, ListFormat, ALL_MANIFEST_TYPES,
    DOCKER_CONFIG, DOCKER_LAYER, DOCKER_LIST, DOCKER_MANIFEST, OCI_CONFIG, OCI_INDEX, OCI_LAYER,
    OCI_MANIFEST,
};
pub use oci_layout::OciLayout;
pub use private_postgres::PrivatePostgres;
pub use private_rabbitmq::PrivateRabbitMq;
pub use proxy::TcpProxy;
pub use push::{PushedImage, PushedList};
pub use rabbitmq_cluster::RabbitMqCluster;
pub use registry::{
    LoggedRequest, NotificationEndpoint, TestRegistry, TestRegistryBuilder, TESTKIT_USER_AGENT,
    TEST_PASSWORD, TEST_USERNAME,
};
pub use token::{TOKEN_ISSUER, TOKEN_SERVICE};

/// A TCP port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// `<prefix>-<12 random hex digits>`: queue, exchange or repository names that no other
/// test uses.
pub fn unique_name(prefix: &str) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &random[..12])
}

/// Polls `probe` every 100 ms until it returns `Some`, and panics naming `what` once
/// `timeout` has passed: the one way tests wait for a condition they then assert.
pub async fn eventually<T, F, Fut>(what: &str, timeout: std::time::Duration, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    eventually_every(what, timeout, std::time::Duration::from_millis(100), probe).await
}

/// [`eventually`] polling every `every`, for tests that time how soon something shows.
pub async fn eventually_every<T, F, Fut>(
    what: &str,
    timeout: std::time::Duration,
    every: std::time::Duration,
    mut probe: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(every).await;
    }
}

/// Sends the logs of the api and worker run in-process (at `RUST_LOG`, else `info`) to
/// the test's captured output, so that a failing test shows what its processes did.
pub fn capture_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,lapin=warn"));
    // A second call in the same test binary finds the subscriber already set.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_test_writer()
        .try_init();
}

/// Collects a child process's stderr as it comes, for tests that wait on its log lines.
pub fn capture_stderr(
    stream: tokio::process::ChildStderr,
) -> std::sync::Arc<std::sync::Mutex<String>> {
    use tokio::io::AsyncBufReadExt as _;
    let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = text.clone();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut text = sink.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    });
    text
}
