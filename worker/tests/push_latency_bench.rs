//! Benchmark: push-to-queryable latency at a steady push rate, end to end (a real
//! docker-registry notifying the api → RabbitMQ → the worker process → PostgreSQL).
//! Ignored by default; see `docs/benchmarks.md`:
//!
//! ```sh
//! cargo nextest run --release -p regindex-worker --test push_latency_bench \
//!     --run-ignored ignored-only --no-capture
//! ```
//!
//! `LATENCY_BENCH_PUSHES` (default 100), `LATENCY_BENCH_RATE` (pushes per second, default 5).

mod history_support;

use std::time::{Duration, Instant};

use history_support::{Options, Stack};
use regindex_testkit::ImageSpec;

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

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run explicitly (docs/benchmarks.md)"]
async fn push_to_queryable_latency() {
    let pushes = env("LATENCY_BENCH_PUSHES", 100);
    let rate = env("LATENCY_BENCH_RATE", 5).max(1);
    let queue_type = match std::env::var("LATENCY_BENCH_QUEUE_TYPE").as_deref() {
        Ok("quorum") => regindex::config::QueueType::Quorum,
        _ => regindex::config::QueueType::Classic,
    };
    let options = Options {
        queue_type,
        ..Options::default()
    };
    Stack::run(options, |s| async move {
        let mut ticks = tokio::time::interval(Duration::from_millis(1000 / rate));
        let mut waits = Vec::new();
        for i in 0..pushes {
            ticks.tick().await;
            let repository = format!("latency/app-{i:04}");
            let spec = ImageSpec::flatpak(&format!("org.bench.Latency{i}"), "x86_64");
            s.registry
                .push_image(&repository, Some("latest"), &spec)
                .await
                .unwrap();
            // The clock starts when the registry acknowledged the manifest: from then on
            // a client can pull it, and the index should show it.
            let pushed = Instant::now();
            let stack = s.clone();
            waits.push(tokio::spawn(async move {
                while !stack.indexed(&repository, "latest").await {
                    assert!(pushed.elapsed() < Duration::from_secs(60), "{repository} never indexed");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                pushed.elapsed()
            }));
        }
        let mut latencies = Vec::new();
        for wait in waits {
            latencies.push(wait.await.unwrap());
        }
        latencies.sort();
        println!(
            "push-to-queryable latency, {queue_type} queues, {pushes} pushes at {rate}/s: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            percentile_ms(&latencies, 0.5),
            percentile_ms(&latencies, 0.99),
            percentile_ms(&latencies, 1.0),
        );
    })
    .await;
}
