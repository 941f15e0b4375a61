//! Benchmark: size and time of the Flatpak client's query with and without icon
//! extraction, on N Flatpak-like images (one per repository, amd64, tagged `latest`)
//! carrying distinct 64 px and 128 px PNG icons as data URIs.
//!
//! Needs `docker-registry` and PostgreSQL on 127.0.0.1:5432, like the tests:
//!
//! ```sh
//! cargo bench -p regindex-api --bench icons      # BENCH_IMAGES=500 by default
//! ```
//!
//! Prints a Markdown table (docs/benchmarks.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine as _;
use regindex::config::Config;
use regindex::index::render::render_index;
use regindex::index::Query;
use regindex::registry::RegistryClient;
use regindex::store::Store;
use regindex::sync::{NoProgress, Syncer};
use regindex_testkit::{ImageSpec, TestDatabase, TestRegistry};
use secrecy::SecretString;
use support::icon_png;

mod support;

/// What Flatpak 1.14 sends (PROTOCOL.md).
const FLATPAK_QUERY: &str =
    "label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest";
const WARM_REQUESTS: usize = 30;
const RENDERS: usize = 5;

fn data_uri(png: &[u8]) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    )
}

struct Measure {
    body: usize,
    gzip: usize,
    render_ms: f64,
    cold_ms: f64,
    warm_ms: f64,
    warm_gzip_ms: f64,
}

fn median(mut values: Vec<Duration>) -> f64 {
    values.sort();
    values[values.len() / 2].as_secs_f64() * 1000.0
}

async fn measure(store: &Store, config: Arc<Config>) -> anyhow::Result<Measure> {
    let query = Query::parse(FLATPAK_QUERY)?;
    let mut renders = Vec::new();
    for _ in 0..RENDERS {
        let started = Instant::now();
        render_index(store, &query, config.public_registry_url(), &config.icons).await?;
        renders.push(started.elapsed());
    }

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let url = format!(
        "http://{}/index/static?{FLATPAK_QUERY}",
        listener.local_addr()?
    );
    let app = regindex_api::router(regindex_api::AppState::new(config, store.clone()));
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    // No automatic decompression: the sizes are what travels.
    let http = reqwest::Client::builder().no_gzip().build()?;

    let started = Instant::now();
    let body = http
        .get(&url)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let cold_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (mut warm, mut warm_gzip, mut gzip) = (Vec::new(), Vec::new(), 0);
    for _ in 0..WARM_REQUESTS {
        let started = Instant::now();
        http.get(&url)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        warm.push(started.elapsed());
        let started = Instant::now();
        let compressed = http
            .get(&url)
            .header("Accept-Encoding", "gzip")
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        warm_gzip.push(started.elapsed());
        gzip = compressed.len();
    }
    server.abort();
    Ok(Measure {
        body: body.len(),
        gzip,
        render_ms: median(renders),
        cold_ms,
        warm_ms: median(warm),
        warm_gzip_ms: median(warm_gzip),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let images: usize = match std::env::var("BENCH_IMAGES") {
        Ok(n) => n.parse().context("BENCH_IMAGES")?,
        Err(_) => 500,
    };
    let registry = TestRegistry::new().await?;
    let db = TestDatabase::create().await?;
    let mut config = Config::default();
    config.registry.url = registry.url().parse().unwrap();
    config.registry.public_url = Some("/".into());
    config.database.url = SecretString::from(db.url());
    let store = Store::connect_unchecked(&config.database).await?;
    store.migrate().await?;
    let store = Store::connect(&config.database)
        .await?
        .with_icons(&config.icons);

    eprintln!("pushing {images} flatpak-like images to {}", registry.url());
    let (mut bytes64, mut bytes128) = (0, 0);
    for i in 0..images {
        let (small, large) = (icon_png(i as u64, 64), icon_png(i as u64, 128));
        bytes64 += small.len();
        bytes128 += large.len();
        let spec = ImageSpec::flatpak(&format!("org.example.App{i:04}"), "amd64")
            .label("org.freedesktop.appstream.icon-64", &data_uri(&small))
            .label("org.freedesktop.appstream.icon-128", &data_uri(&large));
        registry
            .push_image(&format!("apps/app{i:04}"), Some("latest"), &spec)
            .await
            .with_context(|| format!("pushing image {i}"))?;
    }
    let syncer = Syncer::new(RegistryClient::new(&config.registry)?, store.clone());
    let started = Instant::now();
    let scan = syncer.scan(8, &NoProgress).await?;
    eprintln!(
        "{scan} (indexing with icon extraction: {:.1} s)",
        started.elapsed().as_secs_f64()
    );

    config.icons.extract = true;
    let with = Arc::new(config.clone());
    let mut without = config.clone();
    without.icons.extract = false;
    let without = Arc::new(without);
    let off = measure(&store, without).await?;
    let on = measure(&store, with).await?;

    println!(
        "{images} images; icons: 64 px {:.1} KB, 128 px {:.1} KB on average (PNG bytes, before base64)\n",
        bytes64 as f64 / images as f64 / 1000.0,
        bytes128 as f64 / images as f64 / 1000.0
    );
    println!("| icons | body | gzip | render (median of {RENDERS}) | first request | cached request (median of {WARM_REQUESTS}) | cached request, gzip |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, m) in [
        ("data: URIs (`icons.extract: false`)", &off),
        ("URLs (`icons.extract: true`)", &on),
    ] {
        println!(
            "| {name} | {:.2} MB | {:.1} KB | {:.1} ms | {:.1} ms | {:.2} ms | {:.2} ms |",
            m.body as f64 / 1e6,
            m.gzip as f64 / 1e3,
            m.render_ms,
            m.cold_ms,
            m.warm_ms,
            m.warm_gzip_ms
        );
    }
    store.pool().close().await;
    db.drop().await?;
    Ok(())
}
