//! `POST /events` of the real api (`regindex_api::serve`) against a real RabbitMQ: no
//! webhook content can break the publisher, names clients cannot pull are refused, one
//! request makes one refetch per repository, and a stalled broker is answered before the
//! registry's notification timeout.

mod common;

use std::time::Duration;

use regindex::config::Config;
use regindex_testkit::app::{App, AppBuilder};
use regindex_testkit::TcpProxy;
use serde_json::{json, Value};

const TOKEN: &str = "ingest-token";
const V1: &str = "application/vnd.docker.distribution.events.v1+json";
const DIGEST: &str = "sha256:7bdd2ae44a165c15bce2833726ea6a9b0998cab5c147a621eb4aa9db2ed93864";
/// What README.md recommends for the registry's notification endpoint (`timeout: 5s`):
/// the registry gives up on a request after this long and sends it again.
const REGISTRY_NOTIFICATION_TIMEOUT: Duration = Duration::from_secs(5);

/// What these tests ask of testkit's `App` (one api with its own database, publishing to
/// the test bus, history queue included).
#[allow(async_fn_in_trait)]
trait Ingest {
    fn request(&self, events: &[Value]) -> reqwest::RequestBuilder;
    async fn post(&self, events: &[Value]) -> (u16, Value);
    async fn metrics(&self) -> String;
    async fn work_repositories(&self) -> Vec<String>;
}

/// The api as its binary runs it; the registry does not notify it.
fn ingest(tweak: impl FnOnce(&mut Config) + 'static) -> AppBuilder {
    App::builder()
        .api()
        .no_notifications()
        .config(move |config| {
            // The default registry host (`127.0.0.1:5000`, 14 characters), which the name
            // length test counts with; the registry is never asked.
            config.registry.url = Config::default().registry.url;
            config.api.webhook_token = Some(TOKEN.to_owned().into());
            tweak(config);
        })
}

impl Ingest for App {
    fn request(&self, events: &[Value]) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/events", self.base()))
            .bearer_auth(TOKEN)
            .header("content-type", V1)
            .body(serde_json::to_vec(&json!({ "events": events })).unwrap())
    }

    async fn post(&self, events: &[Value]) -> (u16, Value) {
        let response = self.request(events).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.operator());
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The repositories of every message in the work queue (taken).
    async fn work_repositories(&self) -> Vec<String> {
        let bus = self.bus();
        let mut repositories = Vec::new();
        while let Some(message) = bus.get(&bus.config.work_queue, Duration::ZERO).await {
            let body: Value = serde_json::from_slice(&message.body).unwrap();
            repositories.push(body["repository"].as_str().unwrap().to_owned());
        }
        repositories.sort();
        repositories
    }
}

/// A manifest push as docker/distribution notifies it.
fn push(id: &str, repository: &str, tag: &str) -> Value {
    json!({
        "id": id,
        "timestamp": "2026-12-01T10:00:00.000000000Z",
        "action": "push",
        "target": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "size": 483,
            "digest": DIGEST,
            "repository": repository,
            "url": format!("http://registry.example.org/v2/{repository}/manifests/{DIGEST}"),
            "tag": tag,
        },
        "request": {"addr": "10.0.0.1:4000", "host": "127.0.0.1:5000", "method": "PUT", "useragent": "skopeo"},
        "actor": {},
    })
}

fn pull(id: &str, repository: &str) -> Value {
    let mut event = push(id, repository, "latest");
    event["action"] = json!("pull");
    event["request"]["method"] = json!("GET");
    event
}

/// Item: an event id longer than an AMQP short string (255 bytes) used to corrupt the
/// publisher's frame; RabbitMQ closed the shared connection, and this request and a
/// concurrent one both got 503, forever (the registry resends the same request).
#[tokio::test]
async fn an_overlong_event_id_is_skipped_alone_and_the_publisher_survives() {
    ingest(|_| {})
        .run(|ingest| async move {
            let bad = push(&"i".repeat(300), "apps/bad", "latest");
            let mixed = [bad, push("good-1", "apps/good", "latest")];
            let alone = [push("good-2", "apps/other", "latest")];
            let (mixed, concurrent) = tokio::join!(ingest.post(&mixed), ingest.post(&alone));
            assert_eq!(mixed, (200, json!({"published": 1, "ignored": 1})));
            assert_eq!(concurrent, (200, json!({"published": 1, "ignored": 0})));
            assert_eq!(
                ingest.work_repositories().await,
                ["apps/good", "apps/other"]
            );

            // The broker connection survived: a later request is published as usual.
            let later = [push("good-3", "apps/later", "latest")];
            assert_eq!(ingest.post(&later).await.0, 200);
            assert_eq!(ingest.work_repositories().await, ["apps/later"]);
            let metrics = ingest.metrics().await;
            assert!(
                metrics.contains(r#"regindex_api_events_ignored_total{reason="invalid"} 1"#),
                "{metrics}"
            );
        })
        .await;
}

/// Item: the distribution spec says clients limit `<registry host>/<name>` to 255
/// characters, so a longer name can never be pulled; it used to be published (and the
/// worker retried it). The default pull host here is `127.0.0.1:5000` (14 characters).
#[tokio::test]
async fn names_clients_cannot_pull_are_refused() {
    ingest(|_| {})
        .run(|ingest| async move {
            let too_long = "a".repeat(252); // 14 + 1 + 252 = 267
            let longest = "b".repeat(240); // 14 + 1 + 240 = 255
            let events = [
                push("long", &too_long, "latest"),
                push("fits", &longest, "latest"),
            ];
            assert_eq!(
                ingest.post(&events).await,
                (200, json!({"published": 1, "ignored": 1}))
            );
            assert_eq!(ingest.work_repositories().await, [longest]);
        })
        .await;
}

/// Item: a 10,000-event notification used to make 10,000 work messages. Events of one
/// request for one repository now make one; the history still gets every event.
#[tokio::test]
async fn one_request_makes_one_refetch_per_repository_and_the_history_gets_every_event() {
    ingest(|_| {})
        .run(|ingest| async move {
            let bus = ingest.bus();
            let mut events: Vec<Value> = (0..30)
                .map(|i| push(&format!("many-{i}"), "apps/many", &format!("t{i}")))
                .collect();
            events.extend((0..5).map(|i| push(&format!("other-{i}"), "apps/other", "latest")));
            events.push(pull("pull-1", "apps/many"));
            assert_eq!(
                ingest.post(&events).await,
                (200, json!({"published": 36, "ignored": 0}))
            );
            // Answered once confirmed: every message is in its queue already.
            assert_eq!(
                ingest.work_repositories().await,
                ["apps/many", "apps/other"]
            );
            assert_eq!(bus.count(&ingest.config.history.queue).await, 36);
        })
        .await;
}

/// Item: the api waited up to 10 s for a broker confirm while the registry gives up after
/// 5 s and resends. With the broker stalled (a frozen link), the api must answer 503
/// within the registry's timeout, and publish again once the link is back.
#[tokio::test]
async fn a_stalled_broker_is_answered_503_before_the_registry_gives_up() {
    let proxy = TcpProxy::start("127.0.0.1:5672".parse().unwrap())
        .await
        .unwrap();
    let url = format!("amqp://guest:guest@{}/%2f", proxy.addr());
    ingest(move |config| config.amqp.url = url.into())
        .run(|ingest| async move {
            let event = |id: &str| [push(id, "apps/stalled", "latest")];
            assert_eq!(ingest.post(&event("before")).await.0, 200);
            assert_eq!(ingest.work_repositories().await, ["apps/stalled"]);

            proxy.freeze();
            // The registry's HTTP client: it stops waiting after its notification timeout.
            let answer = ingest
                .request(&event("during"))
                .timeout(REGISTRY_NOTIFICATION_TIMEOUT)
                .send()
                .await
                .expect("an answer before the registry's notification timeout");
            assert_eq!(answer.status(), 503);

            proxy.thaw();
            // The registry resends until it gets a 2xx.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let (status, _) = ingest.post(&event("during")).await;
                if status == 200 {
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "never published again"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let metrics = ingest.metrics().await;
            assert!(
                metrics
                    .contains(r#"regindex_api_webhook_requests_rejected_total{reason="broker"}"#),
                "{metrics}"
            );
        })
        .await;
}

/// Measurement, not a test (docs/benchmarks.md): one envelope of 10,000 pushes to one
/// repository; prints the answer time and what reached each queue.
#[tokio::test]
#[ignore = "measurement; run with --run-ignored only --no-capture"]
async fn bench_a_10000_event_envelope() {
    ingest(|c| c.api.body_limit_bytes = 16 << 20)
        .run(|ingest| async move {
            let bus = ingest.bus();
            let events: Vec<Value> = (0..10_000)
                .map(|i| push(&format!("e-{i}"), "apps/flood", &format!("t{i}")))
                .collect();
            let started = std::time::Instant::now();
            let (status, body) = ingest.post(&events).await;
            eprintln!("answered {status} {body} in {:?}", started.elapsed());
            eprintln!("work messages: {}", bus.count(&bus.config.work_queue).await);
            eprintln!(
                "history messages: {}",
                bus.count(&ingest.config.history.queue).await
            );
        })
        .await;
}
