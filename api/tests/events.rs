//! `POST /events` with the captured registry notifications, against a real RabbitMQ.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use regindex::bus::testing::TestBus;
use regindex::bus::{Publisher, Topology};
use regindex::config::Config;
use regindex_api::events::{self, EventsState};
use regindex_api::metrics::{self, ApiMetrics};
use regindex_testkit::app::TestStore;
use serde_json::Value;

const TOKEN: &str = "secret";
const WAIT: Duration = Duration::from_secs(2);

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/../fixtures/webhooks/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

struct App {
    addr: SocketAddr,
    client: reqwest::Client,
}

impl App {
    /// The events and metrics routers on a free port.
    async fn spawn(config: Config) -> Self {
        let publisher = Arc::new(Publisher::new(
            config.amqp.url.clone(),
            Some(Topology::new(&config.amqp)),
        ));
        let metrics = ApiMetrics::new();
        let events = EventsState::new(&config, publisher, metrics.clone()).expect("webhook token");
        let app = events::router(events).merge(metrics::router(metrics));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            addr,
            client: reqwest::Client::new(),
        }
    }

    /// Posts a fixture as the registry sent it (its headers, its body).
    async fn post_fixture(&self, name: &str) -> reqwest::Response {
        let fixture = fixture(name);
        let mut request = self.client.post(format!("http://{}/events", self.addr));
        for (name, value) in fixture["headers"].as_object().unwrap() {
            request = request.header(name, value.as_str().unwrap());
        }
        request
            .body(serde_json::to_vec(&fixture["body"]).unwrap())
            .send()
            .await
            .unwrap()
    }

    async fn post(&self, token: &str, content_type: &str, body: Vec<u8>) -> reqwest::Response {
        self.client
            .post(format!("http://{}/events", self.addr))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.addr);
        self.client
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

fn config(bus: &TestBus) -> Config {
    let mut config = Config::default();
    config.amqp = bus.config.clone();
    config.api.webhook_token = Some(TOKEN.to_owned().into());
    config
}

async fn json(response: reqwest::Response) -> Value {
    response.json().await.unwrap()
}

#[tokio::test]
async fn pushes_and_deletes_reach_the_work_queue() {
    TestBus::run(|bus| async move {
        let app = App::spawn(config(&bus)).await;
        for (name, routing_key) in [
            ("manifest-push-oci", "registry.push.manifest"),
            ("manifest-push-docker-v2", "registry.push.manifest"),
            ("index-push-oci", "registry.push.manifest"),
            (
                "manifest-push-untagged-index-child",
                "registry.push.manifest",
            ),
            ("manifest-delete-by-digest", "registry.delete.manifest"),
            ("manifest-delete-untag", "registry.delete.tag"),
        ] {
            let response = app.post_fixture(name).await;
            assert_eq!(response.status(), 200, "{name}");
            assert_eq!(
                json(response).await,
                serde_json::json!({"published": 1, "ignored": 0})
            );
            // Answered 200 only once confirmed: the message is already in the queue.
            let message = bus
                .get(&bus.config.work_queue, Duration::ZERO)
                .await
                .expect(name);
            assert_eq!(message.routing_key, routing_key, "{name}");
            let sent = &fixture(name)["body"]["events"][0];
            assert_eq!(message.message_id().as_deref(), sent["id"].as_str());
            let body: Value = serde_json::from_slice(&message.body).unwrap();
            assert_eq!(body["repository"], sent["target"]["repository"]);
            assert!(
                !String::from_utf8_lossy(&message.body).contains("http://"),
                "no URL is forwarded"
            );
        }
        let metrics = app.metrics().await;
        assert!(
            metrics.contains(
                r#"regindex_api_events_published_total{routing_key="registry.push.manifest"} 4"#
            ),
            "{metrics}"
        );
    })
    .await;
}

#[tokio::test]
async fn pulls_and_blob_pushes_are_not_work() {
    TestBus::run(|bus| async move {
        let app = App::spawn(config(&bus)).await;
        for name in ["manifest-pull", "blob-push"] {
            let response = app.post_fixture(name).await;
            assert_eq!(response.status(), 200, "{name}");
            assert_eq!(
                json(response).await,
                serde_json::json!({"published": 0, "ignored": 1}),
                "{name}"
            );
        }
        assert!(bus
            .get(&bus.config.work_queue, Duration::from_millis(200))
            .await
            .is_none());
    })
    .await;
}

#[tokio::test]
async fn with_publish_pulls_a_history_queue_gets_everything() {
    TestBus::run(|bus| async move {
        let history = format!("{}.history", bus.config.work_queue);
        bus.channel
            .queue_declare(
                &history,
                // Exclusive: gone with the test's connection even if the test fails.
                QueueDeclareOptions {
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        bus.channel
            .queue_bind(
                &history,
                &bus.config.events_exchange,
                "registry.#",
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let mut config = config(&bus);
        config.api.publish_pulls = true;
        let app = App::spawn(config).await;
        for (name, routing_key) in [
            ("manifest-pull", "registry.pull.manifest"),
            ("blob-push", "registry.push.blob"),
        ] {
            let response = app.post_fixture(name).await;
            assert_eq!(
                json(response).await,
                serde_json::json!({"published": 1, "ignored": 0}),
                "{name}"
            );
            let message = bus.get(&history, WAIT).await.expect(name);
            assert_eq!(message.routing_key, routing_key);
        }
        assert!(bus
            .get(&bus.config.work_queue, Duration::from_millis(200))
            .await
            .is_none());
        bus.channel
            .queue_delete(&history, QueueDeleteOptions::default())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test]
async fn refused_requests_publish_nothing() {
    TestBus::run(|bus| async move {
        let mut config = config(&bus);
        config.api.body_limit_bytes = 4096;
        let app = App::spawn(config).await;
        let body = serde_json::to_vec(&fixture("manifest-push-oci")["body"]).unwrap();
        let v1 = "application/vnd.docker.distribution.events.v1+json";

        let response = app.post("wrong", v1, body.clone()).await;
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let answer = json(response).await;
        assert_eq!(answer["error"], "unauthorized");
        assert_eq!(answer["message"], "missing or wrong bearer token");
        let response = app
            .client
            .post(format!("http://{}/events", app.addr))
            .header("content-type", v1)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "no token");

        let response = app.post(TOKEN, "text/plain", body.clone()).await;
        assert_eq!(response.status(), 415);
        let answer = json(response).await;
        assert_eq!(answer["error"], "unsupported_media_type");
        assert!(
            answer["message"].as_str().unwrap().contains("text/plain"),
            "{answer}"
        );

        let response = app.post(TOKEN, v1, b"{\"events\": [".to_vec()).await;
        assert_eq!(response.status(), 400);
        let answer = json(response).await;
        assert_eq!(answer["error"], "bad_request");
        assert!(
            answer["message"].as_str().unwrap().contains("malformed"),
            "{answer}"
        );

        let mut big = br#"{"events": [], "padding": ""#.to_vec();
        big.extend(std::iter::repeat_n(b'x', 5000));
        big.extend(br#""}"#);
        let response = app.post(TOKEN, v1, big).await;
        assert_eq!(response.status(), 413);
        let answer = json(response).await;
        assert_eq!(answer["error"], "payload_too_large");
        assert_eq!(answer["detail"], serde_json::json!({"limit_bytes": 4096}));

        // v2 and plain JSON are accepted.
        for content_type in [
            "application/vnd.docker.distribution.events.v2+json",
            "application/json",
        ] {
            assert_eq!(
                app.post(TOKEN, content_type, body.clone()).await.status(),
                200
            );
        }
        assert_eq!(bus.count(&bus.config.work_queue).await, 2);
        let metrics = app.metrics().await;
        for reason in ["unauthorized", "media_type", "malformed", "too_large"] {
            assert!(
                metrics.contains(&format!(
                    r#"regindex_api_webhook_requests_rejected_total{{reason="{reason}"}}"#
                )),
                "{reason}: {metrics}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_broker_is_a_503_so_the_registry_retries() {
    let mut config = Config::default();
    config.amqp.url = "amqp://guest:guest@127.0.0.1:1/%2f".to_owned().into();
    config.api.webhook_token = Some(TOKEN.to_owned().into());
    let app = App::spawn(config).await;
    let response = app.post_fixture("manifest-push-oci").await;
    assert_eq!(response.status(), 503);
    let body = json(response).await;
    assert_eq!(body["error"], "unavailable");
    assert!(
        body["message"].as_str().unwrap().contains("broker"),
        "{body}"
    );
}

/// The api's own router (index routes, fallbacks) with the webhook and metrics routes in it.
#[tokio::test]
async fn the_api_router_serves_events_metrics_and_json_fallbacks() {
    TestBus::run(|bus| async move {
        let db = TestStore::start().await;
        let mut config = config(&bus);
        config.database = db.config.clone();
        let store = db.store.clone();

        let publisher = Arc::new(Publisher::new(
            config.amqp.url.clone(),
            Some(Topology::new(&config.amqp)),
        ));
        let metrics = ApiMetrics::new();
        let events = EventsState::new(&config, publisher, metrics.clone()).unwrap();
        let ingest = events::router(events).merge(metrics::router(metrics));
        let state = regindex_api::AppState::new(Arc::new(config), store.clone());
        let app = regindex_api::router_with(state, ingest);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let app = App {
            addr,
            client: reqwest::Client::new(),
        };

        assert_eq!(app.post_fixture("manifest-push-oci").await.status(), 200);
        assert!(bus
            .get(&bus.config.work_queue, Duration::ZERO)
            .await
            .is_some());
        let wrong_method = app
            .client
            .get(format!("http://{addr}/events"))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong_method.status(), 405);
        assert_eq!(json(wrong_method).await["error"], "method_not_allowed");
        assert!(app
            .metrics()
            .await
            .contains("regindex_api_events_published_total"));
        let index = app
            .client
            .get(format!("http://{addr}/index/static"))
            .send()
            .await
            .unwrap();
        assert_eq!(index.status(), 200);

        db.finish().await;
    })
    .await;
}

/// The api process starts and serves the index while the broker is down; webhooks get 503
/// until it is back.
#[tokio::test]
async fn the_api_runs_without_the_broker() {
    let db = TestStore::start().await;
    let mut config = Config::default();
    config.database = db.config.clone();
    config.amqp.url = "amqp://guest:guest@127.0.0.1:1/%2f".to_owned().into();
    config.api.webhook_token = Some("secret".to_owned().into()); // the fixtures' token
    let port = regindex_testkit::free_port().unwrap();
    config.api.listen = ([127, 0, 0, 1], port).into();
    config.api.operator_listen = ([127, 0, 0, 1], regindex_testkit::free_port().unwrap()).into();

    let server = tokio::spawn(regindex_api::run(config));
    let app = App {
        addr: ([127, 0, 0, 1], port).into(),
        client: reqwest::Client::new(),
    };
    let index = format!("http://{}/index/static", app.addr);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        match app.client.get(&index).send().await {
            Ok(response) => break response.status(),
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("the api did not start: {e}"),
        }
    };
    assert_eq!(status, 200);
    let refused = app.post_fixture("manifest-push-oci").await;
    assert_eq!(refused.status(), 503);
    let body = json(refused).await;
    assert_eq!(body["error"], "unavailable");
    assert!(
        body["message"].as_str().unwrap().contains("broker"),
        "{body}"
    );
    server.abort();
    let _ = server.await;
    db.finish().await;
}
