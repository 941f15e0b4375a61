//! End to end: a real `docker-registry` whose notifications point at the api's
//! `POST /events` (bearer token), RabbitMQ, the worker and PostgreSQL. Assertions compare
//! the store with what the test pushed to the registry.

use std::sync::Arc;
use std::time::Duration;

use regindex::bus::dead_letters::{DeadLetterQueue, Filter};
use regindex::bus::testing::TestBus;
use regindex::bus::topology::routing_key;
use regindex::bus::{fedora_messaging, OutgoingMessage, Publisher};
use regindex::config::Config;
use regindex::model::{Digest, RepositoryName, RepositoryState, Tag};
use regindex::store::{PeriodicJob, Store};
use regindex_testkit::app::{App, Consumer, Process, TestStore};
use regindex_testkit::{eventually, ImageSpec, ListFormat, PushedImage};

const WAIT: Duration = Duration::from_secs(30);

/// Registry, api (its notifications without pulls) and database for one test, on the
/// test's broker names; the worker is started on demand.
async fn start(bus: Arc<TestBus>, notify: bool) -> App {
    let mut builder = App::builder()
        .on_bus(bus)
        .api()
        .endpoint(|endpoint| endpoint.ignore_actions(&["pull"]))
        // The test topology's retry delays (100, 200 ms), so its cleanup deletes every queue.
        .config(|config| config.amqp.max_attempts = 20);
    if !notify {
        builder = builder.no_notifications();
    }
    builder.start().await
}

/// What these tests ask of testkit's `App` beyond the harness.
#[allow(async_fn_in_trait)]
trait E2e {
    fn start_worker(&self) -> Consumer;
    async fn converges(&self, repository: &str, expected: &[(&str, &str)]) -> RepositoryState;
    async fn queued(&self, n: u32);
}

impl E2e for App {
    fn start_worker(&self) -> Consumer {
        self.start_consumer(self.config.clone())
    }

    async fn converges(&self, repository: &str, expected: &[(&str, &str)]) -> RepositoryState {
        let expected: Vec<(Tag, Digest)> = expected
            .iter()
            .map(|(tag, digest)| (Tag::parse(tag).unwrap(), Digest::parse(digest).unwrap()))
            .collect();
        eventually(
            &format!("{repository} converges to {expected:?}"),
            WAIT,
            || async {
                let state = self.stored(repository).await;
                let tags: Vec<(Tag, Digest)> = state.tags.clone().into_iter().collect();
                (tags == expected).then_some(state)
            },
        )
        .await
    }

    /// Waits until the registry's webhooks have put `n` messages in the work queue.
    async fn queued(&self, n: u32) {
        let queue = self.bus().config.work_queue.clone();
        eventually(&format!("{n} messages queued"), WAIT, || async {
            (self.bus().count(&queue).await >= n).then_some(())
        })
        .await
    }
}

/// The stored image equals what was pushed.
fn assert_indexed_as_pushed(state: &RepositoryState, pushed: &PushedImage) {
    let image = state
        .images
        .get(&Digest::parse(&pushed.digest).unwrap())
        .unwrap_or_else(|| panic!("{} not stored", pushed.digest));
    assert_eq!(image.media_type, pushed.media_type);
    assert_eq!(image.architecture, pushed.spec.architecture);
    assert_eq!(image.os, pushed.spec.os);
    assert_eq!(image.labels, pushed.spec.labels);
    assert_eq!(image.config_digest.as_str(), pushed.config_digest);
}

#[tokio::test]
async fn a_push_is_indexed_from_its_webhook_without_a_scan() {
    TestBus::run(|bus| async move {
        let stack = start(bus, true).await;
        let worker = stack.start_worker();

        let calc = stack
            .registry
            .push_image(
                "apps/calc",
                Some("latest"),
                &ImageSpec::flatpak("org.example.Calc", "x86_64"),
            )
            .await
            .unwrap();
        let state = stack
            .converges("apps/calc", &[("latest", &calc.digest)])
            .await;
        assert_indexed_as_pushed(&state, &calc);

        let specs = [
            ImageSpec::flatpak("org.example.Multi", "x86_64"),
            ImageSpec::flatpak("org.example.Multi", "aarch64"),
        ];
        let list = stack
            .registry
            .push_list("base/multi", Some("latest"), &specs, ListFormat::OciIndex)
            .await
            .unwrap();
        let state = stack
            .converges("base/multi", &[("latest", &list.digest)])
            .await;
        let stored = &state.lists[&Digest::parse(&list.digest).unwrap()];
        let entries: Vec<&str> = stored.entries.iter().map(Digest::as_str).collect();
        let pushed: Vec<&str> = list.entries.iter().map(|e| e.digest.as_str()).collect();
        assert_eq!(entries, pushed);
        for entry in &list.entries {
            assert_indexed_as_pushed(&state, entry);
        }
        assert_eq!(worker.counted("dead_lettered"), 0);
        worker.stop().await;
        stack.finish().await;
    })
    .await;
}

/// Issue 8, item 4: one malformed image must not freeze its repository. Its tag is
/// recorded as a problem, the good tags are indexed, the message is acked (no retry, no
/// dead letter), and a later good push to the tag heals it.
#[tokio::test]
async fn a_malformed_image_does_not_freeze_its_repository() {
    TestBus::run(|bus| async move {
        let stack = start(bus, true).await;
        let worker = stack.start_worker();
        let name = "apps/mixed";
        let r = &stack.registry;
        let bad = r
            .push_with_config(
                name,
                Some("broken"),
                "application/vnd.oci.image.config.v1+json",
                b"this is not JSON",
                1,
            )
            .await
            .unwrap();
        let one = r
            .push_image(name, Some("1.0"), &ImageSpec::new("amd64").seed(1))
            .await
            .unwrap();
        let two = r
            .push_image(name, Some("2.0"), &ImageSpec::new("amd64").seed(2))
            .await
            .unwrap();
        stack
            .converges(name, &[("1.0", &one.digest), ("2.0", &two.digest)])
            .await;
        let problems = stack
            .store
            .problems(Some(&RepositoryName::parse(name).unwrap()))
            .await
            .unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].problem.tag.as_str(), "broken");
        assert_eq!(problems[0].problem.digest.as_str(), bad);
        eventually("the problem gauge counts it", WAIT, || async {
            (worker.metrics.tag_problems.get() == 1).then_some(())
        })
        .await;

        let fixed = r
            .push_image(name, Some("broken"), &ImageSpec::new("arm64").seed(3))
            .await
            .unwrap();
        stack
            .converges(
                name,
                &[
                    ("1.0", &one.digest),
                    ("2.0", &two.digest),
                    ("broken", &fixed.digest),
                ],
            )
            .await;
        assert!(stack.store.problems(None).await.unwrap().is_empty());
        eventually("the problem gauge is back to 0", WAIT, || async {
            (worker.metrics.tag_problems.get() == 0).then_some(())
        })
        .await;
        assert_eq!(worker.counted("dead_lettered"), 0);
        assert_eq!(worker.counted("retried"), 0);
        assert_eq!(
            stack
                .bus()
                .count(&stack.bus().config.dead_letter_queue)
                .await,
            0
        );
        worker.stop().await;
        stack.finish().await;
    })
    .await;
}

/// Issue 9: the worker refetches at once on a repository's first event, yet loses no
/// push. A real push sends blob events, then one manifest event per manifest (the 20
/// children of a list before the tagged list); refetches that ran on the early events
/// saw no tag, and later events must still be covered. Pushes follow each other without
/// pause, with the default coalescing window.
#[tokio::test]
async fn rapid_pushes_with_blob_events_first_are_never_lost() {
    TestBus::run(|bus| async move {
        let stack = start(bus, true).await;
        let mut config = stack.config.clone();
        config.worker.coalesce = Config::default().worker.coalesce;
        let worker = stack.start_consumer(config);
        let name = "apps/busy";
        let r = &stack.registry;
        let platforms: Vec<ImageSpec> = (0..20)
            .map(|i| {
                ImageSpec::new("amd64")
                    .seed(1000 + i)
                    .label("n", &i.to_string())
            })
            .collect();
        let list = r
            .push_list(name, Some("multi"), &platforms, ListFormat::OciIndex)
            .await
            .unwrap();
        let mut expected = vec![("multi".to_owned(), list.digest.clone())];
        for i in 0..10u64 {
            let tag = format!("v{i}");
            let pushed = r
                .push_image(name, Some(&tag), &ImageSpec::new("arm64").seed(i))
                .await
                .unwrap();
            expected.push((tag, pushed.digest));
        }
        // A tag moved right after its first push.
        let moved = r
            .push_image(name, Some("v0"), &ImageSpec::new("arm64").seed(99))
            .await
            .unwrap();
        expected[1].1 = moved.digest.clone();
        expected.sort();
        let expected: Vec<(&str, &str)> = expected
            .iter()
            .map(|(t, d)| (t.as_str(), d.as_str()))
            .collect();
        let state = stack.converges(name, &expected).await;
        assert_eq!(
            state.lists[&Digest::parse(&list.digest).unwrap()]
                .entries
                .len(),
            20
        );
        assert_eq!(worker.counted("dead_lettered"), 0);
        worker.stop().await;
        stack.finish().await;
    })
    .await;
}

/// docker/distribution sends a manifest push event just before it links the tag. A
/// worker that refetches at once on the event can list the tags a moment too early; it
/// must still index the push (listing again until the announced tag shows, then once
/// more after the window), with no later event to help. Many single pushes, each to a
/// fresh repository, make that race happen.
#[tokio::test]
async fn single_pushes_are_indexed_although_the_event_precedes_the_tag() {
    TestBus::run(|bus| async move {
        let stack = start(bus, true).await;
        let mut config = stack.config.clone();
        config.worker.coalesce = Config::default().worker.coalesce;
        let worker = stack.start_consumer(config);
        let mut pushed = Vec::new();
        // Paced, so that the worker is idle and reacts to each event at once.
        let mut pace = tokio::time::interval(Duration::from_millis(250));
        for i in 0..40u64 {
            pace.tick().await;
            let name = format!("single/app-{i:02}");
            let image = stack
                .registry
                .push_image(&name, Some("latest"), &ImageSpec::new("amd64").seed(i))
                .await
                .unwrap();
            pushed.push((name, image.digest));
        }
        for (name, digest) in &pushed {
            stack.converges(name, &[("latest", digest)]).await;
        }
        assert_eq!(worker.counted("dead_lettered"), 0);
        worker.stop().await;
        stack.finish().await;
    })
    .await;
}

#[tokio::test]
async fn tag_and_manifest_deletes_converge() {
    TestBus::run(|bus| async move {
        let stack = start(bus, true).await;
        let worker = stack.start_worker();
        let one = stack
            .registry
            .push_image("base/plain", Some("1.0"), &ImageSpec::new("amd64").seed(1))
            .await
            .unwrap();
        let two = stack
            .registry
            .push_image("base/plain", Some("2.0"), &ImageSpec::new("amd64").seed(2))
            .await
            .unwrap();
        stack
            .registry
            .tag("base/plain", "latest", &two.digest)
            .await
            .unwrap();
        stack
            .converges(
                "base/plain",
                &[
                    ("1.0", &one.digest),
                    ("2.0", &two.digest),
                    ("latest", &two.digest),
                ],
            )
            .await;

        // Deleting a manifest fires a delete by digest, then one untag per tag.
        stack
            .registry
            .delete_manifest("base/plain", &two.digest)
            .await
            .unwrap();
        let state = stack.converges("base/plain", &[("1.0", &one.digest)]).await;
        assert!(!state
            .images
            .contains_key(&Digest::parse(&two.digest).unwrap()));

        stack
            .registry
            .delete_manifest("base/plain", &one.digest)
            .await
            .unwrap();
        let state = stack.converges("base/plain", &[]).await;
        assert!(state.images.is_empty());
        worker.stop().await;
        stack.finish().await;
    })
    .await;
}

#[tokio::test]
async fn a_registry_outage_is_retried_until_indexed() {
    TestBus::run(|bus| async move {
        let mut stack = start(bus, true).await;
        let pushed = stack
            .registry
            .push_image(
                "apps/outage",
                Some("latest"),
                &ImageSpec::new("amd64").seed(7),
            )
            .await
            .unwrap();
        stack.queued(1).await;
        stack.registry.stop();

        let worker = stack.start_worker();
        eventually("a retry", WAIT, || async {
            (worker.counted("retried") >= 1).then_some(())
        })
        .await;
        stack.registry.start().await.unwrap();
        let state = stack
            .converges("apps/outage", &[("latest", &pushed.digest)])
            .await;
        assert_indexed_as_pushed(&state, &pushed);
        assert_eq!(worker.counted("dead_lettered"), 0);
        worker.stop().await;
        stack.finish().await;
    })
    .await;
}

#[tokio::test]
async fn a_message_that_keeps_failing_is_dead_lettered_then_replayed() {
    TestBus::run(|bus| async move {
        let mut stack = start(bus, true).await;
        stack.config.amqp.retry_delays = vec![std::time::Duration::from_millis(100)];
        stack.config.amqp.max_attempts = 2;
        let pushed = stack
            .registry
            .push_image(
                "apps/dead",
                Some("latest"),
                &ImageSpec::new("amd64").seed(9),
            )
            .await
            .unwrap();
        stack.queued(1).await;
        stack.registry.stop();

        let worker = stack.start_worker();
        eventually("dead-lettered", WAIT, || async {
            (worker.counted("dead_lettered") == 1).then_some(())
        })
        .await;
        let dlq = DeadLetterQueue::open(&stack.bus().connection, stack.bus().topology.clone())
            .await
            .unwrap();
        let letters = dlq.list().await.unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].routing_key, "registry.push.manifest");
        assert_eq!(letters[0].attempts, 2);
        assert!(
            letters[0].reason.contains("gave up after 2 attempts"),
            "{}",
            letters[0].reason
        );
        assert!(stack.stored("apps/dead").await.tags.is_empty());

        stack.registry.start().await.unwrap();
        let summary = dlq
            .replay(&Filter::Ids(vec![letters[0].id.clone()]))
            .await
            .unwrap();
        assert_eq!(summary.replayed.len(), 1);
        let state = stack
            .converges("apps/dead", &[("latest", &pushed.digest)])
            .await;
        assert_indexed_as_pushed(&state, &pushed);
        assert_eq!(dlq.count().await.unwrap(), 0);
        worker.stop().await;
        stack.finish().await;
    })
    .await;
}

#[tokio::test]
async fn a_compose_complete_indexes_everything() {
    TestBus::run(|bus| async move {
        // No webhooks: only the compose message can make the worker look.
        let stack = start(bus, false).await;
        let mut pushed = Vec::new();
        for (i, repository) in ["flatpaks/a", "flatpaks/b", "containers/c"]
            .into_iter()
            .enumerate()
        {
            let image = stack
                .registry
                .push_image(
                    repository,
                    Some("latest"),
                    &ImageSpec::new("amd64").seed(100 + i as u64),
                )
                .await
                .unwrap();
            pushed.push((repository, image));
        }
        let worker = stack.start_worker();
        let publisher = Publisher::new(stack.config.amqp.url.clone(), None);
        let compose = fedora_messaging::compose_complete(
            &stack.config.amqp,
            "bodhi",
            "f41-flatpak-updates",
            "flatpak",
        );
        publisher.publish(&compose).await.unwrap();
        publisher.close().await;
        for (repository, image) in &pushed {
            let state = stack
                .converges(repository, &[("latest", &image.digest)])
                .await;
            assert_indexed_as_pushed(&state, image);
        }
        worker.stop().await;
        stack.finish().await;
    })
    .await;
}

#[tokio::test]
async fn a_worker_killed_mid_batch_is_taken_over() {
    TestBus::run(|bus| async move {
        let stack = start(bus, true).await;
        let mut pushed = Vec::new();
        for i in 0..6u64 {
            let repository = format!("batch/r{i}");
            let image = stack
                .registry
                .push_image(
                    &repository,
                    Some("latest"),
                    &ImageSpec::new("amd64").seed(200 + i),
                )
                .await
                .unwrap();
            pushed.push((repository, image));
        }
        stack.queued(6).await;

        // One refetch at a time, so the first worker is killed with work done and work pending.
        let mut serial = stack.config.clone();
        serial.worker.concurrency = 1;
        serial.worker.coalesce = std::time::Duration::ZERO;
        // Its own connections, closed when it is killed, as a process's are.
        let pool = Store::connect(&serial.database)
            .await
            .unwrap()
            .with_icons(&serial.icons);
        let first = stack.start_consumer_on(serial, pool.clone());
        let deadline = tokio::time::Instant::now() + WAIT;
        while first.counted("processed") == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the first worker processed nothing"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let metrics = first.metrics.clone();
        first.crash(&pool).await;
        let done_by_first = metrics.messages.with_label_values(&["processed"]).get();
        assert!(
            done_by_first < 6,
            "killed mid-batch ({done_by_first} of 6 done)"
        );

        let second = stack.start_worker();
        for (repository, image) in &pushed {
            stack
                .converges(repository, &[("latest", &image.digest)])
                .await;
        }
        let queue = stack.bus().config.work_queue.clone();
        eventually("the work queue drained", WAIT, || async {
            (stack.bus().count(&queue).await == 0).then_some(())
        })
        .await;
        assert_eq!(second.counted("dead_lettered"), 0);
        second.stop().await;
        stack.finish().await;
    })
    .await;
}

#[tokio::test]
async fn the_worker_process_scans_periodically_and_reports_it() {
    TestBus::run(|bus| async move {
        // No webhooks: only the periodic scan can find the image.
        let stack = start(bus, false).await;
        let pushed = stack
            .registry
            .push_image(
                "apps/scanned",
                Some("latest"),
                &ImageSpec::new("amd64").seed(300),
            )
            .await
            .unwrap();
        let mut config = stack.config.clone();
        config.worker.scan_interval = Some(std::time::Duration::from_secs(1));
        config.worker.gc_interval = Some(std::time::Duration::from_secs(1));
        let process = worker_process(config);

        let state = stack
            .converges("apps/scanned", &[("latest", &pushed.digest)])
            .await;
        assert_indexed_as_pushed(&state, &pushed);
        let scanned_at = eventually("the scan is reported", WAIT, || async {
            metric(
                &process,
                "regindex_worker_last_full_scan_success_timestamp_seconds",
            )
            .await
            .filter(|value| *value > 0)
        })
        .await;
        assert!((chrono::Utc::now().timestamp() - scanned_at).abs() < 60);

        process.stop().await.expect("the worker ran");
        stack.finish().await;
    })
    .await;
}

/// Scans and GC run in one worker process at a time: a second taker of the lock skips.
#[tokio::test]
async fn periodic_jobs_are_exclusive_across_processes() {
    use regindex::store::PeriodicJob::{FullScan, GarbageCollection};
    let db = TestStore::start().await;
    let store = db.store.clone();
    // Another process: a pool of its own.
    let other = Store::connect(&db.config).await.unwrap();

    let (started, started_rx) = tokio::sync::oneshot::channel();
    let (release, release_rx) = tokio::sync::oneshot::channel::<()>();
    let holder = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .exclusively(FullScan, async move {
                    started.send(()).unwrap();
                    release_rx.await.unwrap();
                })
                .await
                .unwrap()
        }
    });
    started_rx.await.unwrap();
    assert_eq!(
        other.exclusively(FullScan, async { 1 }).await.unwrap(),
        None,
        "the scan is running elsewhere"
    );
    assert_eq!(
        other
            .exclusively(GarbageCollection, async { 2 })
            .await
            .unwrap(),
        Some(2),
        "another job is not blocked"
    );
    release.send(()).unwrap();
    assert_eq!(holder.await.unwrap(), Some(()));
    assert_eq!(
        other.exclusively(FullScan, async { 3 }).await.unwrap(),
        Some(3),
        "released after the job"
    );

    // A job dropped half-way (a worker shutting down) does not keep the lock.
    let (started, started_rx) = tokio::sync::oneshot::channel();
    let dropped = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .exclusively(FullScan, async move {
                    started.send(()).unwrap();
                    std::future::pending::<()>().await
                })
                .await
        }
    });
    started_rx.await.unwrap();
    dropped.abort();
    let _ = dropped.await;
    eventually("the dropped job's lock released", WAIT, || async {
        other.exclusively(FullScan, async { 4 }).await.unwrap()
    })
    .await;

    other.pool().close().await;
    db.finish().await;
}

/// A whole worker process (`regindex_worker::run`) with its `/metrics` on a free port.
fn worker_process(mut config: Config) -> Process {
    config.worker.metrics_listen = ([127, 0, 0, 1], regindex_testkit::free_port().unwrap()).into();
    Process::worker(config)
}

/// A gauge or counter without labels of `worker`'s `/metrics`, once it answers.
async fn metric(worker: &Process, name: &str) -> Option<i64> {
    let text = reqwest::get(format!("http://{}/metrics", worker.addr))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let line = text
        .lines()
        .find(|line| line.split(' ').next() == Some(name))?;
    line.rsplit(' ').next()?.parse().ok()
}

/// Waits until `worker` reports the metric `name` as `expected`.
async fn reports(worker: &Process, name: &str, expected: i64) {
    eventually(&format!("{name} is {expected}"), WAIT, || async {
        (metric(worker, name).await == Some(expected)).then_some(())
    })
    .await
}

const LAST_SCAN: &str = "regindex_worker_last_full_scan_success_timestamp_seconds";
const NEXT_SCAN: &str = "regindex_worker_next_full_scan_timestamp_seconds";

/// The last full scan, as the store recorded it.
async fn recorded_scan(store: &Store) -> Option<chrono::DateTime<chrono::Utc>> {
    store.last_success(PeriodicJob::FullScan).await.unwrap()
}

/// The schedule of the full scan is kept in PostgreSQL: a worker scans at start-up when no
/// scan (or only an old one) is recorded, not when a recent one is, and reports the
/// recorded time from the start.
#[tokio::test]
async fn the_scan_runs_at_start_up_unless_a_recent_one_is_recorded() {
    TestBus::run(|bus| async move {
        // No webhooks: only a scan can find the images.
        let stack = start(bus, false).await;
        let mut config = stack.config.clone();
        // Far longer than the test: only a start-up scan can happen.
        config.worker.scan_interval = Some(std::time::Duration::from_secs(3600));
        let first = stack
            .registry
            .push_image(
                "apps/first",
                Some("latest"),
                &ImageSpec::new("amd64").seed(400),
            )
            .await
            .unwrap();

        // Never scanned: the first worker scans at once.
        let worker = worker_process(config.clone());
        stack
            .converges("apps/first", &[("latest", &first.digest)])
            .await;
        let scanned =
            eventually("the scan is recorded", WAIT, || recorded_scan(&stack.store)).await;
        reports(&worker, LAST_SCAN, scanned.timestamp()).await;
        reports(&worker, NEXT_SCAN, scanned.timestamp() + 3600).await;
        worker.stop().await.expect("the worker ran");

        // Restarted within the interval: no scan, the recorded one reported at once.
        let second = stack
            .registry
            .push_image(
                "apps/second",
                Some("latest"),
                &ImageSpec::new("amd64").seed(401),
            )
            .await
            .unwrap();
        let mark = stack.registry.log_mark().await.unwrap();
        let worker = worker_process(config.clone());
        reports(&worker, LAST_SCAN, scanned.timestamp()).await;
        // The next scan is scheduled an interval after the recorded one: the decision is made.
        reports(&worker, NEXT_SCAN, scanned.timestamp() + 3600).await;
        let requests = stack.registry.requests_since(mark).await.unwrap();
        assert!(
            requests.is_empty(),
            "the restarted worker asked the registry: {requests:?}"
        );
        assert!(stack.stored("apps/second").await.tags.is_empty());
        assert_eq!(recorded_scan(&stack.store).await, Some(scanned));
        worker.stop().await.expect("the worker ran");

        // The recorded scan is older than the interval: the next worker scans at once.
        sqlx::query("UPDATE periodic_jobs SET last_success_at = now() - interval '2 days'")
            .execute(stack.store.pool())
            .await
            .unwrap();
        let worker = worker_process(config);
        stack
            .converges("apps/second", &[("latest", &second.digest)])
            .await;
        let rescanned = eventually("the new scan is recorded", WAIT, || async {
            recorded_scan(&stack.store).await.filter(|at| *at > scanned)
        })
        .await;
        reports(&worker, LAST_SCAN, rescanned.timestamp()).await;
        worker.stop().await.expect("the worker ran");
        stack.finish().await;
    })
    .await;
}

/// `/metrics` reports how many messages wait in the dead-letter queue, as the broker
/// counts them: a purge brings it back to 0.
#[tokio::test]
async fn the_dead_letter_queue_depth_is_exported() {
    TestBus::run(|bus| async move {
        let stack = start(bus, false).await;
        let mut config = stack.config.clone();
        config.worker.dead_letter_poll = Some(std::time::Duration::from_secs(1));
        let worker = worker_process(config);
        const DEPTH: &str = "regindex_worker_dead_letter_messages";
        reports(&worker, DEPTH, 0).await;

        // Not a refetch request: dead-lettered at once.
        let publisher = Publisher::new(stack.config.amqp.url.clone(), None);
        let message = OutgoingMessage::json(
            &stack.config.amqp.events_exchange,
            routing_key::REFETCH,
            b"not json".to_vec(),
        );
        publisher.publish(&message).await.unwrap();
        publisher.close().await;
        reports(&worker, DEPTH, 1).await;

        let dlq = DeadLetterQueue::open(&stack.bus().connection, stack.bus().topology.clone())
            .await
            .unwrap();
        assert_eq!(dlq.purge().await.unwrap(), 1);
        reports(&worker, DEPTH, 0).await;
        worker.stop().await.expect("the worker ran");
        stack.finish().await;
    })
    .await;
}

/// A dead letter says why the request failed, down to the operating system's words.
#[tokio::test]
async fn a_refetch_against_a_closed_port_is_dead_lettered_with_the_cause() {
    TestBus::run(|bus| async move {
        let stack = start(bus, false).await;
        let mut config = stack.config.clone();
        // Nothing listens there.
        config.registry.url = format!(
            "http://127.0.0.1:{}",
            regindex_testkit::free_port().unwrap()
        )
        .parse()
        .unwrap();
        config.amqp.max_attempts = 1;
        let worker = stack.start_consumer(config);
        let body = serde_json::json!({ "repository": "apps/unreachable" }).to_string();
        let publisher = Publisher::new(stack.config.amqp.url.clone(), None);
        let message = OutgoingMessage::json(
            &stack.config.amqp.events_exchange,
            routing_key::REFETCH,
            body.into_bytes(),
        );
        publisher.publish(&message).await.unwrap();
        publisher.close().await;
        eventually("dead-lettered", WAIT, || async {
            (worker.counted("dead_lettered") == 1).then_some(())
        })
        .await;
        let dlq = DeadLetterQueue::open(&stack.bus().connection, stack.bus().topology.clone())
            .await
            .unwrap();
        let letters = dlq.list().await.unwrap();
        assert_eq!(letters.len(), 1);
        let reason = &letters[0].reason;
        assert!(reason.contains("apps/unreachable"), "{reason}");
        assert!(
            reason.to_lowercase().contains("connection refused"),
            "the reason names the cause: {reason}"
        );
        worker.stop().await;
        stack.finish().await;
    })
    .await;
}
