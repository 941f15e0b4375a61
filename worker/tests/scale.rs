//! Several apis and several workers at once (docs/scaling.md): a docker-registry notifying
//! 2 apis, 3 workers on one work queue, a burst of pushes. Then the same with one worker and
//! one api stopped a third of the way through a burst. The index must end equal to the
//! registry, every push recorded once in the history, nothing dead-lettered, and the full
//! scan run by one worker only. The cluster variant stops the broker node leading the
//! work queue during a burst instead.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use regindex::config::QueueType;
use regindex::store::PeriodicJob;
use regindex_testkit::app::App;
use regindex_testkit::{eventually, ImageSpec, RabbitMqCluster};

const REPOSITORIES: usize = 40;
/// Pushes of each phase; a repository gets tags `t0`..`t2`, so later pushes move tags.
const FIRST_BURST: usize = 80;
const SECOND_BURST: usize = 120;
/// Pushes in flight at once (a CI pipeline pushing in parallel).
const PARALLEL: usize = 6;
/// Generous: 2 loaded cores run the registry, 2 apis, 3 workers and the pushes.
const CONVERGE: Duration = Duration::from_secs(45);

/// Pushes `n` (a distinct image each) to `burst/rNN:tK`.
async fn push(stack: &App, n: usize) {
    let repository = format!("burst/r{:02}", n % REPOSITORIES);
    let tag = format!("t{}", (n / REPOSITORIES) % 3);
    stack
        .registry
        .push_image(
            &repository,
            Some(&tag),
            &ImageSpec::new("amd64").seed(n as u64),
        )
        .await
        .unwrap();
}

/// Pushes `range` with `PARALLEL` pushes in flight; `done` counts the finished ones.
async fn burst(stack: &App, range: std::ops::Range<usize>, done: &AtomicUsize) {
    futures::stream::iter(range)
        .for_each_concurrent(PARALLEL, |n| async move {
            push(stack, n).await;
            done.fetch_add(1, Ordering::SeqCst);
        })
        .await;
}

/// Pushes the first third of `range`, the second third while `stop` runs, and the rest
/// after it: pushes land before, during and after the loss, however long it takes.
async fn burst_around(stack: &App, range: std::ops::Range<usize>, stop: impl Future<Output = ()>) {
    let third = range.len() / 3;
    let (before, during) = (range.start + third, range.start + 2 * third);
    let done = AtomicUsize::new(0);
    burst(stack, range.start..before, &done).await;
    let started = Instant::now();
    tokio::join!(stop, burst(stack, before..during, &done));
    eprintln!("stopped within {:?}", started.elapsed());
    burst(stack, during..range.end, &done).await;
}

/// `(repository, tag) -> digest` as the index holds it.
async fn indexed(stack: &App) -> BTreeMap<(String, String), String> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT r.name, t.tag, m.digest FROM tags t
         JOIN repositories r ON r.id = t.repository_id
         JOIN manifests m ON m.id = t.manifest_id",
    )
    .fetch_all(stack.store.pool())
    .await
    .unwrap();
    rows.into_iter().map(|(r, t, d)| ((r, t), d)).collect()
}

/// Waits until the index equals the registry and the history holds `pushes` manifest
/// pushes (each delivered to every api, recorded once).
async fn wait_converged(stack: &App, pushes: usize, phase: &str) {
    let truth = stack.registry.tagged().await.unwrap();
    assert_eq!(
        truth
            .keys()
            .map(|(r, _)| r)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        REPOSITORIES
    );
    let started = Instant::now();
    loop {
        let index = indexed(stack).await;
        if index == truth {
            break;
        }
        if started.elapsed() > CONVERGE {
            let wrong: Vec<_> = truth
                .iter()
                .filter(|(key, digest)| index.get(*key) != Some(*digest))
                .map(|((r, t), _)| format!("{r}:{t}"))
                .collect();
            let extra = index.keys().filter(|k| !truth.contains_key(*k)).count();
            panic!(
                "{phase}: the index differs from the registry after {CONVERGE:?}: {} of {} \
                 tags missing or stale ({}), {extra} extra",
                wrong.len(),
                truth.len(),
                wrong.iter().take(5).cloned().collect::<Vec<_>>().join(" ")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eventually(
        &format!("{phase}: {pushes} pushes in the history"),
        CONVERGE,
        || async {
            let recorded: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM history_events WHERE activity = 'push_manifest'",
            )
            .fetch_one(stack.store.pool())
            .await
            .unwrap();
            assert!(
                recorded <= pushes as i64,
                "{recorded} pushes recorded, {pushes} made"
            );
            (recorded == pushes as i64).then_some(())
        },
    )
    .await;
    // Both apis published every event: the aggregates count each push once all the same.
    let counted: i64 =
        sqlx::query_scalar("SELECT coalesce(sum(push_count), 0)::bigint FROM history_tags")
            .fetch_one(stack.store.pool())
            .await
            .unwrap();
    assert_eq!(
        counted, pushes as i64,
        "{phase}: pushes counted by the history"
    );
    // Every running api got every push, and had the broker confirm it: the registry resends
    // a notification the api refused (503: not confirmed) until it is taken.
    for api in stack.apis.iter().filter(|api| api.is_running()) {
        eventually(
            &format!("{phase}: every push published by api {}", api.addr),
            CONVERGE,
            || async {
                let published = counter(
                    stack,
                    api.operator,
                    "regindex_api_events_published_total{",
                    "push.manifest\"",
                    None,
                )
                .await;
                (published >= pushes as f64).then_some(())
            },
        )
        .await;
    }
    // docs/scaling.md quotes this.
    eprintln!(
        "{phase}: converged {:?} after the last push",
        started.elapsed()
    );
}

/// The sum of the series on a `/metrics` page whose line starts with `name` (e.g. with
/// some labels) and contains `with` but not `without`.
async fn counter(
    stack: &App,
    addr: std::net::SocketAddr,
    name: &str,
    with: &str,
    without: Option<&str>,
) -> f64 {
    let text = stack
        .http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(with))
        .filter(|l| without.is_none_or(|without| !l.contains(without)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Dead letters and work left on the broker: none. Asked on a new connection, which fails
/// over as the processes' do (the stack's own one may be on a stopped node).
async fn assert_queues_drained(stack: &App) {
    let connection = regindex::bus::connect(&stack.config.amqp.url)
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let count = |queue: String| {
        let channel = channel.clone();
        async move {
            let passive = lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            channel
                .queue_declare(&queue, passive, Default::default())
                .await
                .unwrap()
                .message_count()
        }
    };
    eventually("the work queue drained", CONVERGE, || async {
        (count(stack.config.amqp.work_queue.clone()).await == 0).then_some(())
    })
    .await;
    assert_eq!(
        count(stack.config.amqp.dead_letter_queue.clone()).await,
        0,
        "dead letters"
    );
    let _ = connection.close(200, "checked").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_and_two_apis_index_a_burst_and_survive_losing_one_of_each() {
    let options = App::builder().apis(2).workers(3).config(|config| {
        // Longer than the test: all three workers find the never-run scan due at start,
        // and exactly one may run it (advisory lock, then the due check under it).
        config.worker.scan_interval = Some(std::time::Duration::from_secs(3600));
    });
    options
        .run(|stack| async move {
            eventually("the first full scan recorded", CONVERGE, || async {
                stack
                    .store
                    .last_success(PeriodicJob::FullScan)
                    .await
                    .unwrap()
            })
            .await;

            // Phase 1: everything up.
            let done = AtomicUsize::new(0);
            let started = Instant::now();
            burst(&stack, 0..FIRST_BURST, &done).await;
            eprintln!("phase 1: {FIRST_BURST} pushes in {:?}", started.elapsed());
            wait_converged(&stack, FIRST_BURST, "phase 1").await;
            assert_queues_drained(&stack).await;
            for api in &stack.apis {
                let received = counter(
                    &stack,
                    api.operator,
                    "regindex_api_events_received_total",
                    "",
                    None,
                )
                .await;
                assert!(received > 0.0, "api {} got no event", api.addr);
            }

            // Phase 2: a worker and an api stop (SIGTERM) mid-burst.
            burst_around(&stack, FIRST_BURST..FIRST_BURST + SECOND_BURST, async {
                let _ = tokio::join!(stack.stop_worker(1), stack.stop_api(1));
            })
            .await;
            wait_converged(&stack, FIRST_BURST + SECOND_BURST, "phase 2").await;
            assert_queues_drained(&stack).await;

            // One full scan in all: the other workers skipped it (the lock was held) or found
            // it done. A scan starts with `_catalog`; nothing else in this test lists it.
            let scans = stack
                .registry
                .request_log()
                .await
                .unwrap()
                .into_iter()
                .filter(|r| {
                    !r.is_testkit() && r.path().ends_with("/_catalog") && !r.uri.contains("last=")
                })
                .count();
            assert_eq!(scans, 1, "full scans run");
        })
        .await;
}

/// Quorum queues on a 3-node cluster; the apis and workers are given every node's URL.
/// The node leading the work queue stops a third of the way through a burst. Every webhook
/// the apis refused while failing over (the api answers 2xx only after the broker
/// confirmed) is retried by the registry until stored: the end state is as above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_work_queues_leader_node_during_a_burst_loses_no_webhook() {
    // The processes' failover warnings, shown when the test fails.
    regindex::telemetry::init_tracing();
    let mut cluster = RabbitMqCluster::start(3).await.unwrap();
    let options = App::builder()
        .apis(2)
        .workers(3)
        .queue_type(QueueType::Quorum)
        .amqp_urls(cluster.amqp_urls());
    let cluster = &mut cluster;
    options
        .run(|stack| async move {
            let leader = cluster
                .queue_leader(&stack.config.amqp.work_queue)
                .await
                .unwrap();
            let mut stopped = None;
            burst_around(&stack, 0..SECOND_BURST, async {
                stopped = Some(Instant::now());
                cluster.node_mut(leader).stop().await.unwrap();
            })
            .await;
            let stopped = stopped.unwrap();
            wait_converged(&stack, SECOND_BURST, "leader node lost").await;
            eprintln!("converged {:?} after the node stopped", stopped.elapsed());
            assert_queues_drained(&stack).await;
            assert_ne!(
                cluster
                    .queue_leader(&stack.config.amqp.work_queue)
                    .await
                    .unwrap(),
                leader
            );

            // Refused webhooks (a failed publish answers 503) were resent by the registry: each
            // failure it saw is a `retryingsink` line, and the history above holds every push
            // exactly once, so each refused event was delivered again and stored.
            let mut refused = 0.0;
            for api in &stack.apis {
                refused += counter(
                    &stack,
                    api.operator,
                    "regindex_api_http_requests_total{",
                    "route=\"/events\"",
                    Some("status=\"2"),
                )
                .await;
            }
            let retries = stack
                .registry
                .log_text()
                .matches("retryingsink: error writing events")
                .count();
            eprintln!(
                "webhooks refused during the failover: {refused}; registry retries: {retries}"
            );
            assert!(
                retries as f64 >= refused,
                "{refused} refused, {retries} retried"
            );
        })
        .await;
}
