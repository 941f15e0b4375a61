//! Benchmark: sustained pull events per second, end to end (webhook → api → RabbitMQ →
//! history consumer → PostgreSQL). Ignored by default; see `docs/benchmarks.md`:
//!
//! ```sh
//! cargo nextest run --release -p regindex-worker \
//!     --test history_bench --run-ignored ignored-only --no-capture
//! ```
//!
//! `HISTORY_BENCH_EVENTS` (default 200000), `HISTORY_BENCH_PER_REQUEST` (events per
//! webhook envelope, default 500), `HISTORY_BENCH_CONCURRENCY` (requests in flight,
//! default 4), `HISTORY_BENCH_REPOSITORIES` (default 50, 4 tags each),
//! `HISTORY_BENCH_DRAIN=1`: post everything with no consumer running, then time the
//! history consumer alone draining the backlog (batch size and prefetch from
//! `HISTORY_BENCH_BATCH`, default 500).

mod history_support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use history_support::{pull_event, HistoryApp};
use regindex::model::Digest;
use regindex_testkit::app::App;
use regindex_testkit::eventually;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run explicitly (docs/benchmarks.md)"]
async fn history_pull_throughput() {
    let total = env("HISTORY_BENCH_EVENTS", 200_000);
    let per_request = env("HISTORY_BENCH_PER_REQUEST", 500).max(1);
    let concurrency = env("HISTORY_BENCH_CONCURRENCY", 4).max(1);
    let repositories = env("HISTORY_BENCH_REPOSITORIES", 50).max(1);
    let drain = std::env::var_os("HISTORY_BENCH_DRAIN").is_some();
    let batch = env("HISTORY_BENCH_BATCH", 500).max(1);
    let options = App::builder()
        .api()
        .workers(if drain { 0 } else { 1 })
        .no_notifications();
    options.run(|s| async move {
        let digest = Digest::sha256_of(b"bench").to_string();
        let host = s.host();
        let bodies: Vec<Vec<serde_json::Value>> = (0..total)
            .collect::<Vec<_>>()
            .chunks(per_request)
            .map(|chunk| {
                chunk
                    .iter()
                    .map(|k| {
                        let repository = format!("bench/r{}", k % repositories);
                        let tag = format!("t{}", (k / repositories) % 4);
                        pull_event(&format!("bench-{k}"), &host, &repository, &tag, &digest)
                    })
                    .collect()
            })
            .collect();
        let started = Instant::now();
        let statuses: Vec<u16> = futures::stream::iter(bodies)
            .map(|events| {
                let s = s.clone();
                async move { s.post_events(&events).await.status().as_u16() }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let published = started.elapsed();
        assert!(statuses.iter().all(|&status| status == 200));
        let (started, consumer) = if drain {
            let mut config = s.config.clone();
            config.history.batch_size = batch;
            config.history.prefetch = u16::try_from(batch * 4).unwrap_or(u16::MAX);
            let consumer = regindex_worker::HistoryConsumer::new(
                config,
                regindex::history::HistoryStore::new(s.store.pool().clone()),
                regindex_worker::HistoryMetrics::register(&prometheus::Registry::new()),
            );
            let stop = tokio_util::sync::CancellationToken::new();
            let task = tokio::spawn({
                let stop = stop.clone();
                async move { consumer.run(stop).await }
            });
            (Instant::now(), Some((stop, task)))
        } else {
            (started, None)
        };
        eventually("every event recorded", Duration::from_secs(1800), || async {
            (s.recorded_events().await == total as i64).then_some(())
        })
        .await;
        let recorded = started.elapsed();
        if let Some((stop, task)) = consumer {
            stop.cancel();
            let _ = task.await;
        }
        let pulls: i64 = sqlx::query_scalar("SELECT COALESCE(sum(pull_count), 0)::bigint FROM history_tags")
            .fetch_one(s.store.pool())
            .await
            .unwrap();
        assert_eq!(pulls, total as i64, "every pull counted once");
        println!(
            "history benchmark: {total} pull events, {per_request} per webhook, {concurrency} webhooks in flight, \
             {repositories} repositories x 4 tags"
        );
        println!(
            "  accepted by the api (published, confirmed): {:.1} s = {:.0} events/s",
            published.as_secs_f64(),
            total as f64 / published.as_secs_f64()
        );
        let what = if drain {
            "drained by the history consumer alone"
        } else {
            "recorded in PostgreSQL (end to end)"
        };
        println!(
            "  {what}: {:.1} s = {:.0} events/s",
            recorded.as_secs_f64(),
            total as f64 / recorded.as_secs_f64()
        );
    })
    .await;
}
