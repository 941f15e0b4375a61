//! Benchmarks: push-to-queryable latency at a steady push rate, and the refetches one
//! multi-platform push causes, end to end (a real docker-registry notifying the api →
//! RabbitMQ → the worker process with its default coalescing → PostgreSQL). Ignored by
//! default; see `docs/benchmarks.md`:
//!
//! ```sh
//! cargo nextest run --release -p regindex-worker --test push_latency_bench \
//!     --run-ignored ignored-only --no-capture
//! ```
//!
//! `LATENCY_BENCH_PUSHES` (default 100), `LATENCY_BENCH_RATE` (pushes per second,
//! default 5), `LATENCY_BENCH_REPOS` (repositories the pushes go round, default one per
//! push), `LIST_BENCH_PUSHES` (20-platform lists pushed, default 5).

mod history_support;

use std::time::{Duration, Instant};

use history_support::stack;
use regindex::config::Config;
use regindex_testkit::app::{App, AppBuilder};
use regindex_testkit::{ImageSpec, ListFormat};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1e3
}

/// The worker as users run it: the default coalescing window.
fn options() -> AppBuilder {
    stack().coalesce_ms(Config::default().worker.coalesce.as_millis() as u64)
}

/// Whether `repository:tag` is stored pointing at `digest`.
async fn indexed(stack: &App, repository: &str, tag: &str, digest: &str) -> bool {
    sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM tags t JOIN repositories r ON r.id = t.repository_id
         JOIN manifests m ON m.id = t.manifest_id
         WHERE r.name = $1 AND t.tag = $2 AND m.digest = $3",
    )
    .bind(repository)
    .bind(tag)
    .bind(digest)
    .fetch_one(stack.store.pool())
    .await
    .unwrap()
        > 0
}

/// Refetches the worker process has run (`regindex_worker_refetch_duration_seconds_count`),
/// once its metrics endpoint answers.
async fn refetches(stack: &App) -> u64 {
    let url = format!("http://{}/metrics", stack.config.worker.metrics_listen);
    let started = Instant::now();
    let text = loop {
        match reqwest::get(&url).await {
            Ok(response) => break response.text().await.unwrap(),
            Err(e) => {
                assert!(started.elapsed() < Duration::from_secs(30), "{url}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    text.lines()
        .find_map(|l| l.strip_prefix("regindex_worker_refetch_duration_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run explicitly (docs/benchmarks.md)"]
async fn push_to_queryable_latency() {
    let pushes = env("LATENCY_BENCH_PUSHES", 100);
    let rate = env("LATENCY_BENCH_RATE", 5).max(1);
    let repos = env("LATENCY_BENCH_REPOS", pushes).max(1);
    let queue_type = match std::env::var("LATENCY_BENCH_QUEUE_TYPE").as_deref() {
        Ok("quorum") => regindex::config::QueueType::Quorum,
        _ => regindex::config::QueueType::Classic,
    };
    options().queue_type(queue_type).run(|s| async move {
        let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
        let mut waits = Vec::new();
        for i in 0..pushes {
            ticks.tick().await;
            let repository = format!("latency/app-{:04}", i % repos);
            let spec = ImageSpec::flatpak(&format!("org.bench.Latency{i}"), "x86_64");
            let pushed = s
                .registry
                .push_image(&repository, Some("latest"), &spec)
                .await
                .unwrap();
            // The clock starts when the registry acknowledged the manifest: from then on
            // a client can pull it, and the index should show it.
            let at = Instant::now();
            let stack = s.clone();
            waits.push(tokio::spawn(async move {
                while !indexed(&stack, &repository, "latest", &pushed.digest).await {
                    assert!(at.elapsed() < Duration::from_secs(60), "{repository} never indexed");
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                at.elapsed()
            }));
        }
        let mut latencies = Vec::new();
        for wait in waits {
            latencies.push(wait.await.unwrap());
        }
        latencies.sort();
        println!(
            "push-to-queryable latency, {queue_type} queues, {pushes} pushes at {rate}/s over {repos} repositories: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            percentile_ms(&latencies, 0.5),
            percentile_ms(&latencies, 0.99),
            percentile_ms(&latencies, 1.0),
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run explicitly (docs/benchmarks.md)"]
async fn refetches_caused_by_a_20_platform_list_push() {
    let lists = env("LIST_BENCH_PUSHES", 5);
    options()
        .run(|s| async move {
            let window = s.config.worker.coalesce;
            let mut counts = Vec::new();
            for n in 0..lists {
                let repository = format!("lists/app-{n:02}");
                let platforms: Vec<ImageSpec> = (0..20)
                    .map(|i| {
                        ImageSpec::new("amd64")
                            .seed(n * 100 + i)
                            .label("n", &i.to_string())
                    })
                    .collect();
                let before = refetches(&s).await;
                let list = s
                    .registry
                    .push_list(
                        &repository,
                        Some("latest"),
                        &platforms,
                        ListFormat::OciIndex,
                    )
                    .await
                    .unwrap();
                while !indexed(&s, &repository, "latest", &list.digest).await {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                // Any follow-up refetch starts within one window of the last event.
                tokio::time::sleep(window * 3).await;
                counts.push(refetches(&s).await - before);
            }
            println!(
                "refetches caused by one 20-platform list push (21 manifest events): {counts:?}"
            );
        })
        .await;
}
