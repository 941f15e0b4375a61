//! Per-unit database costs for the capacity model (docs/scaling.md): loads N
//! repositories × M tags through the Store API (the worker's write path) into a scratch
//! database on the local server, then prints the database and table sizes and the time
//! of the uncached Flatpak index query, at each size. Prints figures; asserts nothing.
//!
//!   cargo nextest run --release -p regindex-api --test capacity_bench \
//!       --run-ignored ignored-only --no-capture
//!
//! Knobs: CAPACITY_SIZES (repositories per step, comma-separated; default
//! 1000,3000,6000), CAPACITY_TAGS (tags per repository, default 10; each tag its own
//! image, half the repositories Flatpak apps with realistic labels).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{stream, StreamExt};
use regindex::config::{Config, IconsConfig};
use regindex::index::render::render_index;
use regindex::index::Query;
use regindex::model::{Digest, Image, RepositoryName, Tag};
use regindex::store::Store;
use regindex_testkit::TestDatabase;

const FLATPAK_QUERY: &str =
    "label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest";

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

fn digest(repository: usize, tag: usize, salt: u8) -> Digest {
    let hex = format!("{salt:02x}{repository:030x}{tag:032x}");
    Digest::parse(&format!("sha256:{hex}")).unwrap()
}

/// One repository's images: tag `latest` and `v1`..: each its own image.
fn images(repository: usize, tags: usize) -> (BTreeMap<Tag, Digest>, Vec<Image>) {
    let flatpak = repository.is_multiple_of(2);
    let mut map = BTreeMap::new();
    let mut images = Vec::new();
    for t in 0..tags {
        let name = if t == 0 {
            "latest".to_owned()
        } else {
            format!("v{t}")
        };
        let d = digest(repository, t, 1);
        let mut labels = BTreeMap::new();
        if flatpak {
            let app = format!("org.example.App{repository}");
            labels.insert("org.flatpak.ref".into(), format!("app/{app}/x86_64/stable"));
            labels.insert(
                "org.flatpak.metadata".into(),
                format!("[Application]\nname={app}\nruntime=org.fedoraproject.Platform/x86_64/f41\nsdk=org.fedoraproject.Sdk/x86_64/f41\n\n[Context]\nshared=network;ipc;\nsockets=x11;wayland;pulseaudio;\n"),
            );
            labels.insert("org.flatpak.download-size".into(), "52428800".into());
            labels.insert("org.flatpak.installed-size".into(), "157286400".into());
            labels.insert(
                "org.freedesktop.appstream.appdata".into(),
                format!("<?xml version=\"1.0\"?><components><component type=\"desktop\"><id>{app}</id><name>App {repository}</name><summary>An application for the capacity benchmark</summary><description><p>{}</p></description></component></components>", "Lorem ipsum dolor sit amet. ".repeat(10)),
            );
        }
        labels.insert("name".into(), format!("example/repo{repository}"));
        labels.insert("version".into(), format!("{t}"));
        images.push(Image {
            digest: d.clone(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            os: "linux".into(),
            architecture: "amd64".into(),
            annotations: BTreeMap::new(),
            labels,
            config_digest: digest(repository, t, 2),
        });
        map.insert(Tag::parse(&name).unwrap(), d);
    }
    (map, images)
}

async fn load(store: &Store, from: usize, to: usize, tags: usize) {
    stream::iter(from..to)
        .for_each_concurrent(8, |r| async move {
            let name = RepositoryName::parse(&format!("bench/repo{r}")).unwrap();
            let (map, images) = images(r, tags);
            let mut tx = store.begin_repository(&name).await.unwrap();
            tx.replace(&map, &images, &[]).await.unwrap();
            tx.commit().await.unwrap();
        })
        .await;
}

async fn sizes(store: &Store) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT 'database', pg_database_size(current_database())
         UNION ALL
         SELECT relname::text, pg_total_relation_size(oid) FROM pg_class
         WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace
           AND pg_total_relation_size(oid) > 1048576
         ORDER BY 2 DESC",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
}

#[tokio::test]
#[ignore = "benchmark: run with --run-ignored ignored-only --no-capture"]
async fn database_size_and_index_query_cost() {
    let steps = env_list("CAPACITY_SIZES", &[1000, 3000, 6000]);
    let tags = env_list("CAPACITY_TAGS", &[10])[0];
    let db = TestDatabase::create().await.unwrap();
    let mut config = Config::default();
    config.database.url = db.url().into();
    let store = Store::connect_unchecked(&config.database).await.unwrap();
    store.migrate().await.unwrap();
    let query = Query::parse(FLATPAK_QUERY).unwrap();
    let icons = IconsConfig::default();
    let mut loaded = 0;
    for step in steps {
        let started = Instant::now();
        load(&store, loaded, step, tags).await;
        let load_time = started.elapsed();
        sqlx::query("VACUUM ANALYZE")
            .execute(store.pool())
            .await
            .unwrap();
        let per_repo = load_time.as_secs_f64() * 1e3 / (step - loaded) as f64;
        loaded = step;
        let mut times: Vec<Duration> = Vec::new();
        let mut body_bytes = 0;
        for _ in 0..7 {
            let started = Instant::now();
            let rendered = render_index(&store, &query, "https://registry.example", &icons)
                .await
                .unwrap();
            times.push(started.elapsed());
            body_bytes = rendered.body.len();
        }
        times.sort();
        let mut query_times: Vec<Duration> = Vec::new();
        for _ in 0..7 {
            let started = Instant::now();
            store.query_index(&query).await.unwrap();
            query_times.push(started.elapsed());
        }
        query_times.sort();
        println!(
            "    query_index alone (SQL + row decoding) p50 {:.0} ms",
            query_times[3].as_secs_f64() * 1e3
        );
        println!(
            "{step} repositories × {tags} tags ({} images): load {per_repo:.2} ms/repository (8 writers); \
             Flatpak index query + render p50 {:.0} ms, min {:.0} ms, body {} KiB",
            step * tags,
            times[3].as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            body_bytes / 1024
        );
        for (name, bytes) in sizes(&store).await {
            println!(
                "    {name}: {:.1} MiB ({:.0} bytes/tag)",
                bytes as f64 / 1048576.0,
                bytes as f64 / (step * tags) as f64
            );
        }
    }
    store.pool().close().await;
    db.drop().await.unwrap();
}
