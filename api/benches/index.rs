//! Scan and query benchmark (issue: index a real registry). Prints figures; asserts nothing.
//!
//!   cargo bench -p regindex-api --bench index
//!
//! Pushes 500 repositories × 4 tags (2 images each: `latest`, `1`, `1.0` on one, `0.9` on
//! the other; every other repository is a Flatpak app) to a real docker-registry, then
//! measures a cold scan and a warm scan (with the history backfill on; BENCH_HISTORY=0
//! turns it off), each with the requests the registry logged and the time a plain
//! concurrent client takes for exactly those requests (the registry's raw serve time),
//! the uncached Flatpak query, and requests/second and latency of `/index/static` on the
//! 200 and 304 paths over HTTP. Sizes: BENCH_REPOS, BENCH_SECONDS, BENCH_CONNECTIONS;
//! BENCH_SCAN_ONLY=1 stops after the scans. The scans run with the registry alone on core
//! 0 (see `CpuLayout`; BENCH_SHARED_CPUS=1 lets everything share all cores).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{stream, StreamExt};
use regindex::config::{Config, DatabaseConfig};
use regindex::registry::RegistryClient;
use regindex::store::Store;
use regindex::sync::{NoProgress, Syncer};
use regindex_api::{router, AppState};
use regindex_testkit::{ImageSpec, LoggedRequest, TestDatabase, TestRegistry, ALL_MANIFEST_TYPES};
use secrecy::SecretString;
use support::processes_named;
use tower::ServiceExt;

mod support;

const FLATPAK_QUERY: &str =
    "/index/static?label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `connections` clients on `url` for `seconds`; returns (requests/s, p50 ms, p99 ms).
async fn load(
    url: &str,
    etag: Option<&str>,
    connections: usize,
    seconds: usize,
) -> (f64, f64, f64) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .unwrap();
    let urls = [(url.to_owned(), etag.map(str::to_owned))];
    support::load(&client, &urls, connections, seconds as u64).await
}

/// Sends `requests` again (same methods and URLs, bodies read), `concurrency` at a time,
/// with a plain HTTP client: how long the registry itself needs to serve them.
async fn replay(base: &str, requests: &[LoggedRequest], concurrency: usize) -> Duration {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    let started = Instant::now();
    stream::iter(requests)
        .map(|r| {
            let client = client.clone();
            async move {
                let method = reqwest::Method::from_bytes(r.method.as_bytes()).unwrap();
                let response = client
                    .request(method, format!("{base}{}", r.uri))
                    .header("Accept", ALL_MANIFEST_TYPES)
                    .send()
                    .await
                    .unwrap();
                response.bytes().await.unwrap();
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
    started.elapsed()
}

/// Where the scans run. By default the registry has core 0 to itself and this process
/// and PostgreSQL share the others, as when the registry runs on hosts of its own (as a
/// public registry's does): the scan and the plain client then meet the same registry
/// capacity, and the ratio shows what the scan adds. `BENCH_SHARED_CPUS=1` leaves
/// everything on all cores, where the registry also competes with the scan and
/// PostgreSQL for CPU. Undone on drop (PostgreSQL is shared with other work).
enum CpuLayout {
    RegistryAlone { cores: usize },
    Shared { cores: usize },
}

impl CpuLayout {
    fn apply(registry: &TestRegistry) -> anyhow::Result<Self> {
        let cores = online_cores();
        if env_or("BENCH_SHARED_CPUS", 0) == 1 || cores < 2 {
            return Ok(Self::Shared { cores });
        }
        let pid = registry.pid().context("the registry is not running")?;
        let others = format!("1-{}", cores - 1);
        pin(pid, "0")?;
        pin(std::process::id(), &others)?;
        for pid in processes_named("postgres") {
            pin(pid, &others)?;
        }
        Ok(Self::RegistryAlone { cores })
    }
}

impl std::fmt::Display for CpuLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::RegistryAlone { cores } => write!(
                f,
                "the registry alone on core 0; the scan, the plain client and PostgreSQL on the other {} (BENCH_SHARED_CPUS=1: all share)",
                cores - 1
            ),
            Self::Shared { cores } => write!(f, "everything shares all {cores} cores"),
        }
    }
}

impl Drop for CpuLayout {
    fn drop(&mut self) {
        if let Self::RegistryAlone { cores } = self {
            let all = format!("0-{}", *cores - 1);
            let _ = pin(std::process::id(), &all);
            for pid in processes_named("postgres") {
                let _ = pin(pid, &all);
            }
        }
    }
}

/// Sets the CPU affinity of every thread of `pid` (new threads and forked processes
/// inherit it).
fn pin(pid: u32, cores: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cores, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("taskset (util-linux)")?;
    anyhow::ensure!(status.success(), "taskset -c {cores} {pid}: {status}");
    Ok(())
}

/// The machine's online cores (not this process's affinity).
fn online_cores() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| c.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(1)
        .max(1)
}

/// CPU time used by the registry, this process (the scan or the plain client) and
/// PostgreSQL: on a small machine the three share the cores, so a scan is only as fast as
/// what the registry gets of them.
struct Cpu {
    registry: f64,
    this: f64,
    postgres: f64,
}

impl Cpu {
    fn now(registry: &TestRegistry) -> Self {
        Self {
            registry: registry.pid().map_or(0.0, support::cpu_seconds),
            this: support::cpu_seconds(std::process::id()),
            postgres: processes_named("postgres").map(support::cpu_seconds).sum(),
        }
    }

    fn since(&self, start: &Self) -> Self {
        Self {
            registry: self.registry - start.registry,
            this: self.this - start.this,
            postgres: self.postgres - start.postgres,
        }
    }

    /// `registry R, <this> T, PostgreSQL P = N cores busy over the wall time`.
    fn describe(&self, wall: Duration, this: &str) -> String {
        let total = self.registry + self.this + self.postgres;
        format!(
            "registry {:.2}, {this} {:.2}, PostgreSQL {:.2} = {:.2} cores busy of {}",
            self.registry,
            self.this,
            self.postgres,
            total / wall.as_secs_f64(),
            online_cores(),
        )
    }
}

/// `<n> requests (<HEADs> HEAD, <GETs> manifest GET, <GETs> blob GET, <n> tag lists)`.
fn describe(requests: &[LoggedRequest]) -> String {
    let count = |f: &dyn Fn(&LoggedRequest) -> bool| requests.iter().filter(|r| f(r)).count();
    format!(
        "{} registry requests ({} catalog, {} tag lists, {} manifest HEAD, {} manifest GET, {} blob GET)",
        requests.len(),
        count(&|r| r.path().ends_with("/_catalog")),
        count(&|r| r.path().ends_with("/tags/list")),
        count(&|r| r.method == "HEAD"),
        count(&|r| r.is_manifest_get()),
        count(&|r| r.is_blob_get()),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let repos = env_or("BENCH_REPOS", 500);
    let seconds = env_or("BENCH_SECONDS", 10);
    let connections = env_or("BENCH_CONNECTIONS", 16);

    let registry = TestRegistry::new().await?;
    let db = TestDatabase::create().await?;
    let t = Instant::now();
    let pushes = stream::iter(0..repos)
        .map(|i| {
            let registry = &registry;
            async move {
                let name = format!("bench/app-{i:04}");
                let spec = |seed: u64| {
                    let spec = if i % 2 == 0 {
                        ImageSpec::flatpak(&format!("org.bench.App{i}"), "x86_64")
                    } else {
                        ImageSpec::new("amd64").label("name", &name)
                    };
                    spec.seed(seed * 100_000 + i as u64)
                };
                let current = registry.push_image(&name, Some("latest"), &spec(1)).await?;
                registry.tag(&name, "1", &current.digest).await?;
                registry.tag(&name, "1.0", &current.digest).await?;
                registry.push_image(&name, Some("0.9"), &spec(2)).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    for push in pushes {
        push?;
    }
    println!(
        "setup: pushed {repos} repositories x 4 tags ({} images) in {:.1} s",
        repos * 2,
        t.elapsed().as_secs_f64()
    );

    let mut config = Config::default();
    config.registry.url = registry.url().parse().unwrap();
    config.database = DatabaseConfig {
        url: SecretString::from(db.url()),
        max_connections: 20,
        ..DatabaseConfig::default()
    };
    let store = Store::connect_unchecked(&config.database).await?;
    store.migrate().await?;
    let client = RegistryClient::new(&config.registry)?;
    let sampled = client.clone();
    let mut syncer = Syncer::new(client.clone(), store.clone());
    if env_or("BENCH_HISTORY", 1) == 1 {
        let backfill = regindex::history::backfill::Backfill::new(
            client,
            regindex::history::HistoryStore::new(store.pool().clone()),
            registry.host(),
        );
        syncer = syncer.with_observer(Arc::new(backfill));
    }
    let concurrency = config.worker.concurrency;
    let base = format!("http://{}", registry.host());

    let layout = CpuLayout::apply(&registry)?;
    println!("CPU layout of the scans: {layout}");
    // The warm scan is what the periodic scan costs on an unchanged registry
    // (worker.scan_interval_secs).
    for which in ["cold", "warm"] {
        let mark = registry.log_mark().await?;
        // Samples the registry requests in flight every millisecond: a scan that keeps
        // the registry as busy as the plain client has `max_concurrency` in flight.
        let sampling = tokio_util::sync::CancellationToken::new();
        let sampler = tokio::spawn({
            let (client, sampling) = (sampled.clone(), sampling.clone());
            async move {
                let mut samples = Vec::new();
                while !sampling.is_cancelled() {
                    samples.push(client.in_flight());
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                samples
            }
        });
        let cpu = Cpu::now(&registry);
        let summary = syncer.scan(concurrency, &NoProgress).await?;
        let scan_cpu = Cpu::now(&registry).since(&cpu);
        sampling.cancel();
        let samples = sampler.await?;
        let full = samples
            .iter()
            .filter(|n| **n >= config.registry.max_concurrency)
            .count();
        let requests = registry.requests_since(mark).await?;
        let cpu = Cpu::now(&registry);
        let raw = replay(&base, &requests, config.registry.max_concurrency).await;
        let raw_cpu = Cpu::now(&registry).since(&cpu);
        println!(
            "{which} scan: {summary}\n  {}; the same requests from a plain client ({} at a time): {:.2} s; scan / raw = {:.2}",
            describe(&requests),
            config.registry.max_concurrency,
            raw.as_secs_f64(),
            summary.elapsed.as_secs_f64() / raw.as_secs_f64(),
        );
        println!(
            "  registry requests in flight during the scan: mean {:.1} of {}, all {} busy {:.0} % of the time",
            samples.iter().sum::<usize>() as f64 / samples.len().max(1) as f64,
            config.registry.max_concurrency,
            config.registry.max_concurrency,
            100.0 * full as f64 / samples.len().max(1) as f64,
        );
        println!(
            "  CPU seconds, scan: {}; raw replay: {}",
            scan_cpu.describe(summary.elapsed, "scan"),
            raw_cpu.describe(raw, "client"),
        );
    }
    drop(layout);
    if env_or("BENCH_SCAN_ONLY", 0) == 1 {
        db.drop().await?;
        return Ok(());
    }

    let config = Arc::new(config);
    // Uncached: a fresh api state per request, so every answer comes from PostgreSQL.
    let mut uncached = Vec::new();
    let mut body_len = 0;
    let mut images = 0;
    for _ in 0..30 {
        let app = router(AppState::new(config.clone(), store.clone()));
        let t = Instant::now();
        let response = app
            .oneshot(axum::http::Request::get(FLATPAK_QUERY).body(axum::body::Body::empty())?)
            .await?;
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
        uncached.push(t.elapsed());
        body_len = body.len();
        let value: serde_json::Value = serde_json::from_slice(&body)?;
        images = value["Results"]
            .as_array()
            .map(|r| {
                r.iter()
                    .map(|r| r["Images"].as_array().map_or(0, Vec::len))
                    .sum()
            })
            .unwrap_or(0);
    }
    uncached.sort();
    println!(
        "flatpak query, uncached (PostgreSQL + rendering): {images} images, {body_len} bytes; p50 {:.2} ms, p99 {:.2} ms over {} runs",
        support::percentile(&uncached, 0.5),
        support::percentile(&uncached, 0.99),
        uncached.len()
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    // As `serve` wires it: the data version in memory, learnt from notifications.
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let watch = regindex::store::DataVersionWatch::spawn(
        store.connect_options(),
        regindex::store::DATA_VERSION_POLL_INTERVAL,
        stop,
    );
    watch.wait_for(store.data_version().await?).await;
    let app = router(AppState::new(config.clone(), store.clone()).with_data_version(watch));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://{address}{FLATPAK_QUERY}");
    let etag = reqwest::get(&url)
        .await?
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);

    // The gzip body as served (compressed in chunks, index/render.rs) against the same
    // JSON compressed at once: what the chunks cost every client in bytes and inflating.
    {
        use std::io::Read as _;
        let raw = reqwest::Client::builder().no_gzip().build()?;
        let served = raw
            .get(&url)
            .header("Accept-Encoding", "gzip")
            .send()
            .await?
            .bytes()
            .await?;
        let mut json = Vec::new();
        flate2::read::GzDecoder::new(&served[..]).read_to_end(&mut json)?;
        let mut whole = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut whole, &json)?;
        let whole = whole.finish()?;
        let inflate = |gzip: &[u8]| -> anyhow::Result<f64> {
            let t = Instant::now();
            for _ in 0..20 {
                flate2::read::GzDecoder::new(gzip).read_to_end(&mut Vec::new())?;
            }
            Ok(t.elapsed().as_secs_f64() * 1000.0 / 20.0)
        };
        println!(
            "gzip body: {} bytes, inflated in {:.2} ms; the JSON gzipped whole: {} bytes, {:.2} ms; served / whole = {:.2}",
            served.len(),
            inflate(&served)?,
            whole.len(),
            inflate(&whole)?,
            served.len() as f64 / whole.len() as f64
        );
    }
    let (rps, p50, p99) = load(&url, None, connections, seconds).await;
    println!("GET /index/static 200 (gzip, {connections} connections, {seconds} s): {rps:.0} req/s, p50 {p50:.2} ms, p99 {p99:.2} ms");
    let (rps, p50, p99) = load(&url, etag.as_deref(), connections, seconds).await;
    println!("GET /index/static 304 (If-None-Match, {connections} connections, {seconds} s): {rps:.0} req/s, p50 {p50:.2} ms, p99 {p99:.2} ms");

    // The same 304 when every request reads the data version from PostgreSQL (an api
    // state without the watch, as before issue 13).
    let reading = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let reading_address = reading.local_addr()?;
    let reading_app = router(AppState::new(config.clone(), store.clone()));
    tokio::spawn(async move { axum::serve(reading, reading_app).await });
    let (reading_rps, p50, p99) = load(
        &format!("http://{reading_address}{FLATPAK_QUERY}"),
        etag.as_deref(),
        connections,
        seconds,
    )
    .await;
    println!("GET /index/static 304, version read from PostgreSQL per request ({connections} connections, {seconds} s): {reading_rps:.0} req/s, p50 {p50:.2} ms, p99 {p99:.2} ms");

    // Baseline in the same run: an axum hello-world on the same runtime and client.
    let hello = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hello_address = hello.local_addr()?;
    let hello_app = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
    tokio::spawn(async move { axum::serve(hello, hello_app).await });
    let (hello_rps, p50, p99) = load(
        &format!("http://{hello_address}/"),
        None,
        connections,
        seconds,
    )
    .await;
    println!("axum hello-world ({connections} connections, {seconds} s): {hello_rps:.0} req/s, p50 {p50:.2} ms, p99 {p99:.2} ms; 304 path = {:.0} % of it (reading the version: {:.0} %)", 100.0 * rps / hello_rps, 100.0 * reading_rps / hello_rps);

    db.drop().await?;
    Ok(())
}
