//! Benchmark: the Flatpak query at registry scale while pushes arrive (issue 13).
//!
//! Seeds BENCH_REPOS repositories (5,000 by default) × 2 tags of Flatpak-like images,
//! each app with distinct realistic 64 px and 128 px PNG icons, **directly through the
//! Store API** (the refetch's write transaction, without a registry: only rendering and
//! serving are measured here). Then, each figure beside its baseline in the same run:
//!
//! 1. the first Flatpak query after one push (uncached), icons off and on: the api
//!    (assembled from cached per-repository parts) against a full render as before
//!    (render everything, gzip and hash the whole body);
//! 2. cached Flatpak queries over HTTP (16 connections, gzip), quiet against 4 pushes/s;
//! 3. the process's RSS after 30 s of mixed load (two Flatpak queries, a dynamic
//!    `tag=latest` query and 304s, with icon extraction on) with 4 pushes/s.
//!
//! 2 and 3 run first, so that the RSS figure does not include what the large data-URI
//! answers of 1 left behind (all in one process: the RSS includes the load generator).
//!
//! ```sh
//! cargo bench -p regindex-api --bench parts   # BENCH_REPOS=5000 BENCH_SECONDS=10
//! BENCH_PROFILE_FIRST=1 cargo bench ...      # only figure 1, without its baseline: to profile it
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use base64::Engine as _;
use futures::{stream, StreamExt};
use regindex::config::Config;
use regindex::index::render::render_profile_index;
use regindex::index::{IndexProfile, Query};
use regindex::model::{Digest, Image, RepositoryName, StringMap, Tag};
use regindex::store::{DataVersionWatch, Store, DATA_VERSION_POLL_INTERVAL};
use regindex_api::{router, AppState};
use regindex_testkit::TestDatabase;
use secrecy::{ExposeSecret, SecretString};
use sha2::Digest as _;
use support::icon_png;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

mod support;

const FLATPAK_QUERY: &str =
    "label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest";
const PUSHES_PER_SECOND: u64 = 4;
const CONNECTIONS: usize = 16;
const SAMPLES: usize = 10;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn digest_of(text: &str) -> Digest {
    let hash = hex::encode(sha2::Sha256::digest(text.as_bytes()));
    Digest::parse(&format!("sha256:{hash}")).unwrap()
}

fn data_uri(png: &[u8]) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    )
}

/// A Flatpak-like image of app `i`, build `build` (its digest and one label change
/// with the build; the icons belong to the app).
fn image(i: usize, build: u64, icons: &(String, String)) -> Image {
    let app_id = format!("org.example.App{i:05}");
    let labels: StringMap = [
        ("org.flatpak.ref", format!("app/{app_id}/x86_64/stable")),
        (
            "org.flatpak.metadata",
            format!("[Application]\nname={app_id}\nruntime=org.fedoraproject.Platform/x86_64/f41\nsdk=org.fedoraproject.Sdk/x86_64/f41\n\n[Context]\nshared=network;ipc;\nsockets=x11;wayland;pulseaudio;\ndevices=dri;\n"),
        ),
        (
            "org.freedesktop.appstream.appdata",
            format!("<?xml version=\"1.0\"?><components><component type=\"desktop\"><id>{app_id}</id><name>App {i}</name><summary>An application</summary><releases><release version=\"{build}\"/></releases></component></components>"),
        ),
        ("org.freedesktop.appstream.icon-64", icons.0.clone()),
        ("org.freedesktop.appstream.icon-128", icons.1.clone()),
        ("org.flatpak.download-size", (10_000_000 + build).to_string()),
        ("org.flatpak.installed-size", "40960000".to_owned()),
        ("name", app_id.to_lowercase()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Image {
        digest: digest_of(&format!("{i}/{build}")),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        os: "linux".into(),
        architecture: "amd64".into(),
        annotations: StringMap::from([(
            "org.opencontainers.image.title".to_owned(),
            app_id.clone(),
        )]),
        labels,
        config_digest: digest_of(&format!("config {i}/{build}")),
    }
}

fn icons_of(i: usize) -> (String, String) {
    (
        data_uri(&icon_png(i as u64, 64)),
        data_uri(&icon_png(i as u64, 128)),
    )
}

/// Writes repository `apps/app<i>` as a refetch would: `latest` on build `build`, `1.0`
/// on the build before.
async fn write(store: &Store, i: usize, build: u64) -> anyhow::Result<()> {
    let icons = icons_of(i);
    let images = [image(i, build, &icons), image(i, build - 1, &icons)];
    let tags = BTreeMap::from([
        (Tag::parse("latest")?, images[0].digest.clone()),
        (Tag::parse("1.0")?, images[1].digest.clone()),
    ]);
    let name = RepositoryName::parse(&format!("apps/app{i:05}"))?;
    let mut tx = store.begin_repository(&name).await?;
    let known = tx.known_manifests().await?;
    let new: Vec<Image> = images
        .into_iter()
        .filter(|i| !known.contains(&i.digest))
        .collect();
    tx.replace(&tags, &new, &[]).await?;
    tx.commit().await?;
    Ok(())
}

fn profile_first() -> bool {
    env_or("BENCH_PROFILE_FIRST", 0) == 1
}

fn median(mut values: Vec<Duration>) -> f64 {
    values.sort();
    values[values.len() / 2].as_secs_f64() * 1e3
}

/// Resident memory of process `pid` (`self` for this one), in MB.
fn rss_mb(pid: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The api binary as deployed, on `database_url` with icon extraction: its RSS is the
/// api's alone. Returns once it is ready, with its base URL.
async fn api_process(database_url: &str) -> anyhow::Result<(tokio::process::Child, String)> {
    let port = regindex_testkit::free_port()?;
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_regindex-api"))
        .env_remove("REGINDEX_CONFIG")
        .env("REGINDEX_DATABASE__URL", database_url)
        .env("REGINDEX_API__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "REGINDEX_API__OPERATOR_LISTEN",
            format!("127.0.0.1:{}", regindex_testkit::free_port()?),
        )
        .env("REGINDEX_API__WEBHOOK_TOKEN", "bench")
        .env("REGINDEX_API__PUBLISH_PULLS", "false")
        .env("REGINDEX_HISTORY__ENABLED", "false")
        .env("REGINDEX_ICONS__EXTRACT", "true")
        .env("REGINDEX_REGISTRY__PUBLIC_URL", "/")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = reqwest::get(format!("{base}/readyz")).await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            return Ok((child, base));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the api process did not get ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pushes to random repositories at PUSHES_PER_SECOND until `stop`.
fn pusher(store: Store, repos: usize, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut build = 1_000u64;
        let mut ticker = tokio::time::interval(Duration::from_millis(1000 / PUSHES_PER_SECOND));
        let mut pushes = 0;
        while !stop.load(Ordering::Relaxed) {
            ticker.tick().await;
            build += 1;
            let i = (build as usize * 7919) % repos;
            write(&store, i, build).await.unwrap();
            pushes += 1;
        }
        pushes
    })
}

/// CONNECTIONS clients asking `urls` in turn for `seconds`: (requests/s, p50, p99 ms).
async fn load(urls: &[(String, Option<String>)], seconds: u64) -> (f64, f64, f64) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .no_gzip()
        .build()
        .unwrap();
    support::load(&client, urls, CONNECTIONS, seconds).await
}

/// The api's first answer after each of SAMPLES pushes, against a full render as before
/// parts (everything rendered, the whole body gzipped and hashed): medians in ms.
async fn first_after_push(
    store: &Store,
    config: Arc<Config>,
    repos: usize,
    build: &mut u64,
) -> anyhow::Result<(f64, f64, usize)> {
    let app = router(AppState::new(config.clone(), store.clone()));
    let uri = format!("/index/static?{FLATPAK_QUERY}");
    let get = || async {
        let response = app
            .clone()
            .oneshot(
                Request::get(&uri)
                    .header("Accept-Encoding", "gzip")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert!(response.status().is_success());
        // Read as a client streams it into its inflater: frame by frame, not copied into
        // one buffer (which alone took ~30 ms for the 58 MB icons-off answer).
        let mut body = response.into_body().into_data_stream();
        let mut len = 0;
        while let Some(frame) = body.next().await {
            len += frame.unwrap().len();
        }
        len
    };
    get().await;
    let (mut parts, mut full) = (Vec::new(), Vec::new());
    let mut gzip_bytes = 0;
    let query = Query::parse(FLATPAK_QUERY)?;
    // More samples when profiling, so that the profile is the render's.
    let samples = if profile_first() {
        10 * SAMPLES
    } else {
        SAMPLES
    };
    for _ in 0..samples {
        *build += 1;
        write(store, (*build as usize * 7919) % repos, *build).await?;
        let started = Instant::now();
        gzip_bytes = get().await;
        parts.push(started.elapsed());
        if profile_first() {
            continue;
        }

        let started = Instant::now();
        let rendered = render_profile_index(
            store,
            &query,
            config.public_registry_url(),
            &config.icons,
            &IndexProfile::default(),
        )
        .await?;
        tokio::task::spawn_blocking(move || {
            use std::io::Write as _;
            let hash = sha2::Sha256::digest(&rendered.body);
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(&rendered.body).unwrap();
            (hash, encoder.finish().unwrap().len())
        })
        .await?;
        full.push(started.elapsed());
    }
    full.push(Duration::ZERO);
    Ok((median(parts), median(full), gzip_bytes))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let repos = env_or("BENCH_REPOS", 5000);
    let seconds = env_or("BENCH_SECONDS", 10) as u64;
    let db = TestDatabase::create().await?;
    let mut config = Config::default();
    config.registry.public_url = Some("/".into());
    config.database.url = SecretString::from(db.url());
    config.database.max_connections = 8;
    let store = Store::connect_unchecked(&config.database).await?;
    store.migrate().await?;
    let store = Store::connect(&config.database)
        .await?
        .with_icons(&config.icons);

    let started = Instant::now();
    stream::iter(0..repos)
        .map(|i| {
            let store = store.clone();
            async move { write(&store, i, 2).await }
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    sqlx::query("ANALYZE").execute(store.pool()).await?;
    eprintln!(
        "seeded {repos} repositories × 2 tags in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let load_avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("machine load (1/5/15 min) before: {}", load_avg.trim());

    let mut icons_on = config.clone();
    icons_on.icons.extract = true;
    // 2. and 3. Over HTTP, as the api binary serves (data version from notifications).
    let stop = CancellationToken::new();
    let options = config.database.url.expose_secret().parse()?;
    let watch = DataVersionWatch::spawn(options, DATA_VERSION_POLL_INTERVAL, stop.clone());
    let state = AppState::new(Arc::new(icons_on.clone()), store.clone()).with_data_version(watch);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = router(state);
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let flatpak = format!("{base}/index/static?{FLATPAK_QUERY}");
    let http = reqwest::Client::builder().no_gzip().build()?;
    http.get(&flatpak).send().await?.error_for_status()?;

    if !profile_first() {
        let quiet = load(&[(flatpak.clone(), None)], seconds).await;
        let running = Arc::new(AtomicBool::new(false));
        let pushes = pusher(store.clone(), repos, running.clone());
        let pushing = load(&[(flatpak.clone(), None)], seconds).await;
        running.store(true, Ordering::Relaxed);
        let pushed = pushes.await?;
        println!(
            "\n| cached Flatpak query, {CONNECTIONS} connections, gzip | requests/s | p50 | p99 |"
        );
        println!("| --- | ---: | ---: | ---: |");
        println!(
            "| quiet | {:.0} | {:.2} ms | {:.2} ms |",
            quiet.0, quiet.1, quiet.2
        );
        println!(
            "| {PUSHES_PER_SECOND} pushes/s ({pushed} pushes) | {:.0} ({:.0} % of quiet) | {:.2} ms | {:.2} ms |",
            pushing.0,
            pushing.0 / quiet.0 * 100.0,
            pushing.1,
            pushing.2
        );

        let rss_before = rss_mb("self");
        let etag = http
            .get(format!("{base}/index/static?tag=latest"))
            .send()
            .await?
            .headers()["etag"]
            .to_str()?
            .to_owned();
        let mixed = [
            (flatpak.clone(), None),
            (
                format!("{base}/index/static?{FLATPAK_QUERY}&architecture=arm64"),
                None,
            ),
            (format!("{base}/index/dynamic?tag=latest"), None),
            (format!("{base}/index/static?tag=latest"), Some(etag)),
        ];
        let running = Arc::new(AtomicBool::new(false));
        let pushes = pusher(store.clone(), repos, running.clone());
        let mixed_load = load(&mixed, 30).await;
        running.store(true, Ordering::Relaxed);
        pushes.await?;
        let rss_after = rss_mb("self");
        tokio::time::sleep(Duration::from_secs(5)).await;
        println!(
            "\nRSS of the bench process (api, its client and load generator): {rss_before:.0} MB after seeding and the runs above, {rss_after:.0} MB after 30 s of mixed load with {PUSHES_PER_SECOND} pushes/s ({:.0} req/s, p99 {:.1} ms), {:.0} MB 5 s later",
            mixed_load.0,
            mixed_load.2,
            rss_mb("self")
        );
        // The same load on the api binary in a process of its own.
        let (api, api_base) = api_process(config.database.url.expose_secret()).await?;
        let pid = api.id().map(|p| p.to_string()).unwrap_or_default();
        let ready_rss = rss_mb(&pid);
        let mixed: Vec<(String, Option<String>)> = mixed
            .iter()
            .map(|(url, etag)| (url.replacen(&base, &api_base, 1), etag.clone()))
            .collect();
        let running = Arc::new(AtomicBool::new(false));
        let pushes = pusher(store.clone(), repos, running.clone());
        let mixed_load = load(&mixed, 30).await;
        running.store(true, Ordering::Relaxed);
        pushes.await?;
        let loaded_rss = rss_mb(&pid);
        tokio::time::sleep(Duration::from_secs(5)).await;
        println!(
            "RSS of the api binary in its own process (icons on): {ready_rss:.0} MB when ready, {loaded_rss:.0} MB after 30 s of the same mixed load with {PUSHES_PER_SECOND} pushes/s ({:.0} req/s, p99 {:.1} ms), {:.0} MB 5 s later",
            mixed_load.0,
            mixed_load.2,
            rss_mb(&pid)
        );
        drop(api);
    }
    let load_avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("machine load (1/5/15 min) after: {}", load_avg.trim());
    // 1. First query after a push (after the RSS figure: data URI answers are large).
    let mut build = 100u64;
    let mut icons_off = config.clone();
    icons_off.icons.extract = false;
    // With data URIs the answer is larger than the default budget (64 MiB), which would
    // keep nothing, parts included.
    icons_off.api.cache_bytes = 1 << 30;
    println!("\n| icons | first Flatpak query after one push (parts) | full render + gzip + hash (as before) | gzip body |");
    println!("| --- | ---: | ---: | ---: |");
    for (name, config) in [("off", &icons_off), ("on", &icons_on)] {
        let (parts, full, gzip) =
            first_after_push(&store, Arc::new(config.clone()), repos, &mut build).await?;
        println!(
            "| {name} | {parts:.1} ms | {full:.1} ms | {:.2} MB |",
            gzip as f64 / 1e6
        );
    }

    stop.cancel();
    server.abort();
    store.pool().close().await;
    db.drop().await?;
    Ok(())
}
