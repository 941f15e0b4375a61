//! The consumer against a real RabbitMQ, with an index that records what it is asked to
//! do (the end-to-end tests in `e2e.rs` use the real registry and store).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use regindex::bus::dead_letters::DeadLetterQueue;
use regindex::bus::testing::TestBus;
use regindex::config::{Config, QueueType};
use regindex::model::RepositoryName;
use regindex_testkit::app::Consumer;
use regindex_testkit::rabbitmq::rabbitmqctl;
use regindex_worker::outcome::Failure;
use regindex_worker::refetcher::Refetcher;
use regindex_worker::WorkerMetrics;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

/// Runs the test function `$name(QueueType)` once on classic and once on quorum queues,
/// as the tests `$name::classic` and `$name::quorum`.
macro_rules! on_both_queue_types {
    ($name:ident) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn classic() {
                super::$name(QueueType::Classic).await
            }

            #[tokio::test]
            async fn quorum() {
                super::$name(QueueType::Quorum).await
            }
        }
    };
}

/// Records refetches; fails them while `failing` holds a failure.
#[derive(Default)]
struct FakeIndex {
    /// Refetches begun (finished or not).
    started: AtomicUsize,
    refetched: Mutex<Vec<String>>,
    failing: Mutex<Option<Failure>>,
    repositories: BTreeSet<RepositoryName>,
    refetch_time: Duration,
}

impl FakeIndex {
    fn refetched(&self) -> Vec<String> {
        self.refetched.lock().unwrap().clone()
    }
}

impl Refetcher for FakeIndex {
    fn refetch<'a>(&'a self, repository: &'a RepositoryName) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(async move {
            self.started.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.refetch_time).await;
            self.refetched.lock().unwrap().push(repository.to_string());
            match self.failing.lock().unwrap().clone() {
                Some(failure) => Err(failure),
                None => Ok(()),
            }
        })
    }

    fn repositories(&self) -> BoxFuture<'_, Result<BTreeSet<RepositoryName>, Failure>> {
        Box::pin(async move { Ok(self.repositories.clone()) })
    }
}

fn config(bus: &TestBus) -> Config {
    let mut config = Config::default();
    config.amqp = bus.config.clone();
    config.worker.coalesce = std::time::Duration::from_millis(50);
    config
}

fn start(config: Config, index: Arc<FakeIndex>) -> Consumer {
    Consumer::start(config, index)
}

/// Waits until `check` holds, looking every 20 ms: the retry tests change the index
/// between two attempts 100 ms apart.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    regindex_testkit::eventually_every(what, WAIT, Duration::from_millis(20), || {
        std::future::ready(check().then_some(()))
    })
    .await
}

fn counted(metrics: &WorkerMetrics, outcome: &str) -> u64 {
    metrics.messages.with_label_values(&[outcome]).get()
}

on_both_queue_types!(events_for_one_repository_coalesce_into_one_refetch_and_are_all_acked);
async fn events_for_one_repository_coalesce_into_one_refetch_and_are_all_acked(
    queue_type: QueueType,
) {
    TestBus::run_on(queue_type, |bus| async move {
        let index = Arc::new(FakeIndex::default());
        let mut config = config(&bus);
        config.worker.coalesce = std::time::Duration::from_millis(300);
        // Queued before the worker starts, so they all arrive within the window: the
        // first is refetched at once, the others at most once more.
        for _ in 0..5 {
            bus.publish_event("registry.push.manifest", "apps/calc")
                .await;
        }
        bus.publish_event("registry.delete.tag", "base/plain").await;
        let worker = start(config, index.clone());
        eventually("6 messages processed", || {
            counted(&worker.metrics, "processed") == 6
        })
        .await;
        let refetched = index.refetched();
        let calc = refetched.iter().filter(|r| *r == "apps/calc").count();
        assert!((1..=2).contains(&calc), "{refetched:?}");
        assert_eq!(refetched.iter().filter(|r| *r == "base/plain").count(), 1);
        worker.stop().await;
        assert_eq!(bus.count(&bus.config.work_queue).await, 0, "all acked");
    })
    .await;
}

on_both_queue_types!(
    transient_failures_retry_then_dead_letter_with_reason_attempts_and_routing_key
);
async fn transient_failures_retry_then_dead_letter_with_reason_attempts_and_routing_key(
    queue_type: QueueType,
) {
    TestBus::run_on(queue_type, |bus| async move {
        let index = Arc::new(FakeIndex::default());
        *index.failing.lock().unwrap() = Some(Failure::transient("registry answered 503"));
        let worker = start(config(&bus), index.clone()); // max_attempts 3, delays 100 and 200 ms
        bus.publish_event("registry.push.manifest", "apps/calc")
            .await;
        eventually("dead-lettered", || {
            counted(&worker.metrics, "dead_lettered") == 1
        })
        .await;
        assert_eq!(index.refetched().len(), 3, "one try per attempt");
        assert_eq!(counted(&worker.metrics, "retried"), 2);
        worker.stop().await;

        let dlq = DeadLetterQueue::open(&bus.connection, bus.topology.clone())
            .await
            .unwrap();
        let letters = dlq.list().await.unwrap();
        assert_eq!(letters.len(), 1);
        let letter = &letters[0];
        assert_eq!(letter.routing_key, "registry.push.manifest");
        assert_eq!(letter.exchange, bus.config.events_exchange);
        assert_eq!(letter.attempts, 3);
        assert!(
            letter.reason.contains("registry answered 503"),
            "{}",
            letter.reason
        );
        assert!(letter.failed_at.is_some());
        assert_eq!(letter.body(), br#"{"repository":"apps/calc"}"#);
    })
    .await;
}

#[tokio::test]
async fn a_retry_succeeds_once_the_cause_is_gone() {
    TestBus::run(|bus| async move {
        let index = Arc::new(FakeIndex::default());
        *index.failing.lock().unwrap() = Some(Failure::transient("database restarting"));
        let worker = start(config(&bus), index.clone());
        bus.publish_event("regindex.refetch", "apps/calc").await;
        eventually("first failure", || counted(&worker.metrics, "retried") == 1).await;
        *index.failing.lock().unwrap() = None;
        eventually("processed on retry", || {
            counted(&worker.metrics, "processed") == 1
        })
        .await;
        assert_eq!(index.refetched(), ["apps/calc", "apps/calc"]);
        assert_eq!(counted(&worker.metrics, "dead_lettered"), 0);
        worker.stop().await;
    })
    .await;
}

on_both_queue_types!(unparseable_messages_go_straight_to_the_dead_letter_queue);
async fn unparseable_messages_go_straight_to_the_dead_letter_queue(queue_type: QueueType) {
    TestBus::run_on(queue_type, |bus| async move {
        let index = Arc::new(FakeIndex::default());
        let worker = start(config(&bus), index.clone());
        bus.publish_event("regindex.refetch", "NOT VALID").await;
        eventually("dead-lettered", || {
            counted(&worker.metrics, "dead_lettered") == 1
        })
        .await;
        assert_eq!(counted(&worker.metrics, "retried"), 0);
        worker.stop().await;
        let dlq = DeadLetterQueue::open(&bus.connection, bus.topology.clone())
            .await
            .unwrap();
        let letters = dlq.list().await.unwrap();
        assert_eq!(letters[0].attempts, 1);
        assert!(
            letters[0].reason.contains("cannot decode"),
            "{}",
            letters[0].reason
        );
        assert!(index.refetched().is_empty());
    })
    .await;
}

fn fixture(path: &str) -> serde_json::Value {
    let full = format!("{}/../fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(full).unwrap()).unwrap()
}

#[tokio::test]
async fn a_compose_complete_fans_out_one_refetch_per_repository() {
    TestBus::run(|bus| async move {
        let repositories: BTreeSet<RepositoryName> = ["apps/calc", "base/multi", "base/plain"]
            .iter()
            .map(|r| RepositoryName::parse(r).unwrap())
            .collect();
        let index = Arc::new(FakeIndex {
            repositories,
            ..FakeIndex::default()
        });
        let worker = start(config(&bus), index.clone());
        let body = fixture("bodhi/compose-complete-fedora-messaging.json")["body"].to_string();
        let topic = format!(
            "{}.{}.bodhi.compose.complete",
            bus.config.topic_prefix, bus.config.environment
        );
        bus.publish("amq.topic", &topic, &body).await;
        // The compose message and the three refetches.
        eventually("all processed", || {
            counted(&worker.metrics, "processed") == 4
        })
        .await;
        let mut refetched = index.refetched();
        refetched.sort();
        assert_eq!(refetched, ["apps/calc", "base/multi", "base/plain"]);

        // The legacy fedmsg topic too; an rpm compose is ignored.
        let legacy = fixture("bodhi/mashtask-complete-fedmsg-legacy.json").to_string();
        let topic = format!(
            "{}.{}.bodhi.mashtask.complete",
            bus.config.topic_prefix, bus.config.environment
        );
        bus.publish("amq.topic", &topic, &legacy).await;
        eventually("legacy processed", || {
            counted(&worker.metrics, "processed") == 8
        })
        .await;
        let rpm = r#"{"agent":"bodhi","repo":"f41-updates","success":true,"ctype":"rpm"}"#;
        let topic = format!(
            "{}.{}.bodhi.compose.complete",
            bus.config.topic_prefix, bus.config.environment
        );
        bus.publish("amq.topic", &topic, rpm).await;
        eventually("rpm ignored", || counted(&worker.metrics, "ignored") == 1).await;
        assert_eq!(index.refetched().len(), 6);
        worker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn with_compose_complete_off_a_compose_is_ignored() {
    TestBus::run(|bus| async move {
        let index = Arc::new(FakeIndex {
            repositories: [RepositoryName::parse("apps/calc").unwrap()].into(),
            ..FakeIndex::default()
        });
        let mut config = config(&bus);
        config.bodhi.compose_complete = regindex::config::ComposeCompleteMode::Off;
        let worker = start(config, index.clone());
        let body = fixture("bodhi/compose-complete-fedora-messaging.json")["body"].to_string();
        let topic = format!(
            "{}.{}.bodhi.compose.complete",
            bus.config.topic_prefix, bus.config.environment
        );
        bus.publish("amq.topic", &topic, &body).await;
        eventually("compose ignored", || {
            counted(&worker.metrics, "ignored") == 1
        })
        .await;
        assert_eq!(counted(&worker.metrics, "processed"), 0);
        worker.stop().await;
        assert!(index.refetched().is_empty());
    })
    .await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_the_work_in_flight() {
    TestBus::run(|bus| async move {
        let index = Arc::new(FakeIndex {
            refetch_time: Duration::from_millis(500),
            ..FakeIndex::default()
        });
        let worker = start(config(&bus), index.clone());
        bus.publish_event("registry.push.manifest", "apps/calc")
            .await;
        eventually("the 500 ms refetch in flight", || {
            index.started.load(Ordering::SeqCst) == 1
        })
        .await;
        let metrics = worker.metrics.clone();
        worker.stop().await;
        assert_eq!(counted(&metrics, "processed"), 1);
        assert_eq!(bus.count(&bus.config.work_queue).await, 0);
    })
    .await;
}

on_both_queue_types!(a_dropped_worker_leaves_its_messages_to_the_next_one);
async fn a_dropped_worker_leaves_its_messages_to_the_next_one(queue_type: QueueType) {
    TestBus::run_on(queue_type, |bus| async move {
        let slow = Arc::new(FakeIndex {
            refetch_time: Duration::from_secs(30),
            ..FakeIndex::default()
        });
        let first = start(config(&bus), slow.clone());
        bus.publish_event("registry.push.manifest", "apps/calc")
            .await;
        eventually("refetching now", || {
            slow.started.load(Ordering::SeqCst) == 1
        })
        .await;
        first.abort().await;

        let index = Arc::new(FakeIndex::default());
        let second = start(config(&bus), index.clone());
        eventually("redelivered and processed", || {
            counted(&second.metrics, "processed") == 1
        })
        .await;
        assert_eq!(index.refetched(), ["apps/calc"]);
        assert!(
            slow.refetched().is_empty(),
            "the dropped worker did not finish"
        );
        second.stop().await;
    })
    .await;
}

/// Closes the broker connections whose client-provided name is `name` (as an operator or a
/// broker restart would).
fn close_connections_named(name: &str) {
    let listing = rabbitmqctl(&[
        "list_connections",
        "-q",
        "--no-table-headers",
        "pid",
        "client_properties",
    ])
    .unwrap();
    let mut closed = false;
    for line in listing.lines().filter(|line| line.contains(name)) {
        let pid = line.split('\t').next().unwrap();
        rabbitmqctl(&["close_connection", pid, "closed by a test"]).unwrap();
        closed = true;
    }
    assert!(closed, "no connection named {name} in {listing}");
}

#[tokio::test]
async fn the_worker_reconnects_when_its_connection_drops() {
    TestBus::run(|bus| async move {
        let index = Arc::new(FakeIndex::default());
        let worker = start(config(&bus), index.clone());
        bus.publish_event("regindex.refetch", "r/one").await;
        eventually("first processed", || {
            counted(&worker.metrics, "processed") == 1
        })
        .await;

        close_connections_named(&format!("regindex-worker {}", bus.config.work_queue));
        bus.publish_event("regindex.refetch", "r/two").await;
        eventually("processed after reconnecting", || {
            counted(&worker.metrics, "processed") == 2
        })
        .await;
        assert_eq!(index.refetched(), ["r/one", "r/two"]);
        worker.stop().await;
    })
    .await;
}

#[tokio::test]
async fn metrics_and_healthz_report_the_consumer() {
    TestBus::run(|bus| async move {
        let index = Arc::new(FakeIndex::default());
        let worker = start(config(&bus), index);
        // This consumer has a fake index and no database: report the database as up.
        worker.metrics.database_up.set(1);
        let listener = regindex_worker::metrics::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(regindex_worker::metrics::serve(
            listener,
            worker.metrics.clone(),
            stop.clone(),
        ));
        bus.publish_event("regindex.refetch", "r/one").await;
        eventually("processed", || counted(&worker.metrics, "processed") == 1).await;

        let health = reqwest::get(format!("http://{addr}/healthz"))
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
        let text = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            text.contains(r#"regindex_worker_messages_total{outcome="processed"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("regindex_worker_refetch_duration_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains("regindex_worker_last_full_scan_success_timestamp_seconds"),
            "{text}"
        );

        let metrics = worker.metrics.clone();
        worker.stop().await;
        assert_eq!(metrics.amqp_connected.get(), 0);
        let health = reqwest::get(format!("http://{addr}/healthz"))
            .await
            .unwrap();
        assert_eq!(health.status(), 503);
        stop.cancel();
    })
    .await;
}
