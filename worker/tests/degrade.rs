//! The worker when its dependencies are away: it waits for the database at start-up,
//! and `/healthz` and `/readyz` report the database and the work queue consumption.
//! Outages use private PostgreSQL and RabbitMQ servers (testkit), never the shared ones.

use std::process::Stdio;
use std::time::Duration;

use regindex::bus::testing::TestBus;
use regindex::config::Config;
use regindex_testkit::app::{migrate, Process, TestStore};
use regindex_testkit::{
    eventually, free_port, ImageSpec, PrivatePostgres, PrivateRabbitMq, TestRegistry,
};
use serde_json::Value;

/// Deadline of every wait on a state change. Generous: after a broker outage the
/// consumer reconnects with a backoff of up to 30 s (plus jitter).
const WAIT: Duration = Duration::from_secs(120);

/// `GET http://<addr><path>`: status and JSON body, `None` when nothing answers.
async fn probe(addr: &str, path: &str) -> Option<(u16, Value)> {
    let response = reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.unwrap_or(Value::Null)))
}

/// Waits until `/healthz` and `/readyz` both answer `status` and report `database` and
/// `work_queue` as given.
async fn wait_health(addr: &str, status: u16, database: &str, work_queue: &str) {
    eventually(
        &format!("health {status}, database {database}, work queue {work_queue}"),
        WAIT,
        || async {
            for path in ["/healthz", "/readyz"] {
                let (got, body) = probe(addr, path).await?;
                let matches = got == status
                    && body["database"] == database
                    && body["work_queue"] == work_queue;
                if !matches {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}

/// A worker configuration without periodic jobs or history, against `database_url`.
fn config(database_url: &str, bus: Option<&TestBus>) -> Config {
    let mut config = Config::default();
    if let Some(bus) = bus {
        config.amqp = bus.config.clone();
    }
    config.database.url = database_url.to_owned().into();
    // Never contacted: no work is sent in these tests.
    config.registry.url = "http://127.0.0.1:1".parse().unwrap();
    config.worker.scan_interval = None;
    config.worker.gc_interval = None;
    config.worker.metrics_listen = ([127, 0, 0, 1], free_port().unwrap()).into();
    config.history.enabled = false;
    config.api.publish_pulls = false;
    config
}

/// Item 9: the worker starts while PostgreSQL is down, says what it waits for (naming
/// the server), reports it on `/healthz` and `/readyz`, and starts working once the
/// database is up.
#[tokio::test]
async fn the_worker_binary_waits_for_the_database_at_start_up() {
    TestBus::run(|bus| async move {
        let mut pg = PrivatePostgres::new().await.unwrap();
        let url = pg.create_database("regindex").await.unwrap();
        migrate(&url).await;
        pg.stop().await.unwrap();

        let config = config(&url, Some(&bus));
        let addr = config.worker.metrics_listen.to_string();
        let amqp = &bus.config;
        let delays: Vec<String> = amqp
            .retry_delays
            .iter()
            .map(|d| d.as_millis().to_string())
            .collect();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_regindex-worker"))
            .env_remove("REGINDEX_CONFIG")
            .env("REGINDEX_DATABASE__URL", &url)
            .env("REGINDEX_REGISTRY__URL", config.registry.url.as_str())
            .env("REGINDEX_WORKER__METRICS_LISTEN", &addr)
            .env("REGINDEX_WORKER__SCAN_INTERVAL_SECS", "0")
            .env("REGINDEX_WORKER__GC_INTERVAL_SECS", "0")
            .env("REGINDEX_HISTORY__ENABLED", "false")
            .env("REGINDEX_API__PUBLISH_PULLS", "false")
            .env("REGINDEX_AMQP__EVENTS_EXCHANGE", &amqp.events_exchange)
            .env("REGINDEX_AMQP__WORK_QUEUE", &amqp.work_queue)
            .env("REGINDEX_AMQP__DEAD_LETTER_QUEUE", &amqp.dead_letter_queue)
            .env("REGINDEX_AMQP__ENVIRONMENT", &amqp.environment)
            .env("REGINDEX_AMQP__RETRY_DELAYS_MS", delays.join(","))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let log = regindex_testkit::capture_stderr(child.stderr.take().unwrap());

        let host = pg.host();
        eventually("a log line naming the database server", WAIT, || async {
            log.lock().unwrap().contains(&host).then_some(())
        })
        .await;
        assert!(
            child.try_wait().unwrap().is_none(),
            "the worker exited:\n{}",
            log.lock().unwrap()
        );
        wait_health(&addr, 503, "down", "not_consuming").await;

        pg.start().await.unwrap();
        wait_health(&addr, 200, "up", "consuming").await;
        assert!(child.try_wait().unwrap().is_none());
        let _ = child.kill().await;
    })
    .await;
}

/// Item 10: a database outage shows on `/healthz` and `/readyz`, and so does its end.
#[tokio::test]
async fn health_reports_a_database_outage() {
    TestBus::run(|bus| async move {
        let mut pg = PrivatePostgres::new().await.unwrap();
        let url = pg.create_database("regindex").await.unwrap();
        migrate(&url).await;
        let config = config(&url, Some(&bus));
        let addr = config.worker.metrics_listen.to_string();
        let worker = Process::worker(config);
        wait_health(&addr, 200, "up", "consuming").await;

        pg.stop().await.unwrap();
        wait_health(&addr, 503, "down", "consuming").await;
        let (_, metrics) = probe_text(&addr, "/metrics").await;
        assert!(
            metrics.contains("regindex_worker_database_up 0"),
            "{metrics}"
        );

        pg.start().await.unwrap();
        wait_health(&addr, 200, "up", "consuming").await;
        worker.stop().await.expect("the worker ran");
    })
    .await;
}

/// A refetch that fails while the database is away holds its message until the
/// database is back, and then indexes the repository. It does not spend the message's
/// attempts: with one attempt allowed, a counted failure would dead-letter it at once.
#[tokio::test]
async fn a_database_outage_holds_messages_instead_of_dead_lettering_them() {
    TestBus::run(|bus| async move {
        let mut pg = PrivatePostgres::new().await.unwrap();
        let url = pg.create_database("regindex").await.unwrap();
        migrate(&url).await;
        let registry = TestRegistry::new().await.unwrap();
        let image = ImageSpec::new("amd64");
        registry
            .push_image("apps/held", Some("latest"), &image)
            .await
            .unwrap();
        let mut config = config(&url, Some(&bus));
        config.registry.url = registry.url().parse().unwrap();
        config.amqp.max_attempts = 1;
        let addr = config.worker.metrics_listen.to_string();
        let worker = Process::worker(config);
        wait_health(&addr, 200, "up", "consuming").await;

        pg.stop().await.unwrap();
        wait_health(&addr, 503, "down", "consuming").await;
        bus.publish_event("registry.push.manifest", "apps/held")
            .await;
        wait_metrics(&addr, "regindex_worker_refetches_waiting_for_database 1").await;

        pg.start().await.unwrap();
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        eventually("apps/held indexed", WAIT, || async {
            let tags: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM tags t JOIN repositories r ON r.id = t.repository_id
                 WHERE r.name = 'apps/held'",
            )
            .fetch_one(&pool)
            .await
            .ok()?;
            (tags == 1).then_some(())
        })
        .await;
        wait_metrics(&addr, "regindex_worker_refetches_waiting_for_database 0").await;
        let (_, metrics) = probe_text(&addr, "/metrics").await;
        assert!(!metrics.contains("outcome=\"dead_lettered\""), "{metrics}");
        assert_eq!(bus.count(&bus.config.dead_letter_queue).await, 0);
        pool.close().await;
        worker.stop().await.expect("the worker ran");
    })
    .await;
}

/// Waits until `/metrics` has the line `line`.
async fn wait_metrics(addr: &str, line: &str) {
    eventually(&format!("metrics line {line}"), WAIT, || async {
        let (_, metrics) = probe_text(addr, "/metrics").await;
        metrics.lines().any(|l| l == line).then_some(())
    })
    .await;
}

/// Item 10: a broker outage (no consumption of the work queue) shows on `/healthz` and
/// `/readyz`, and so does its end.
#[tokio::test]
async fn health_reports_a_broker_outage() {
    let mut broker = PrivateRabbitMq::new().await.unwrap();
    let db = TestStore::start().await;
    let mut config = config(&db.url(), None);
    config.amqp.url = broker.amqp_url().into();
    let addr = config.worker.metrics_listen.to_string();
    let worker = Process::worker(config);
    wait_health(&addr, 200, "up", "consuming").await;

    broker.stop().await.unwrap();
    wait_health(&addr, 503, "up", "not_consuming").await;

    broker.start().await.unwrap();
    wait_health(&addr, 200, "up", "consuming").await;
    worker.stop().await.expect("the worker ran");
    db.finish().await;
}

async fn probe_text(addr: &str, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}
