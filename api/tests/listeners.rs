//! The api as the binary runs it: webhook authentication required at start-up, the
//! public and the operator listeners, and the HTTP request metrics.

mod common;

use std::time::Duration;

use regindex::config::{Config, WebhookAuthMode};
use regindex_testkit::app::{App, AppBuilder};
use serde_json::json;

const V1: &str = "application/vnd.docker.distribution.events.v1+json";

/// The api as its binary runs it, with its database and broker; history off, so no
/// queue but the test bus's is declared.
fn listening(tweak: impl FnOnce(&mut Config) + 'static) -> AppBuilder {
    App::builder()
        .api()
        .no_notifications()
        .config(move |config| {
            config.history.enabled = false;
            config.api.publish_pulls = false;
            tweak(config);
        })
}

fn push_event() -> serde_json::Value {
    json!({"events": [{
        "id": "forged-1",
        "action": "push",
        "target": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": "sha256:7bdd2ae44a165c15bce2833726ea6a9b0998cab5c147a621eb4aa9db2ed93864",
            "repository": "apps/calc",
            "tag": "latest",
        },
    }]})
}

/// Item: without `api.webhook_token` the api used to start and publish forged events.
/// It now refuses to start, naming the key and the explicit opt-out.
#[tokio::test]
async fn the_api_refuses_to_start_without_a_webhook_token() {
    let mut config = Config::default();
    config.api.listen = ([127, 0, 0, 1], regindex_testkit::free_port().unwrap()).into();
    config.api.operator_listen = ([127, 0, 0, 1], regindex_testkit::free_port().unwrap()).into();
    // Bounded: the old api would serve forever.
    let outcome = tokio::time::timeout(Duration::from_secs(20), regindex_api::run(config))
        .await
        .expect("the api must refuse to start, not serve");
    let error = format!("{:#}", outcome.unwrap_err());
    assert!(error.contains("api.webhook_token"), "{error}");
    assert!(error.contains("webhook_auth: none"), "{error}");
}

/// The explicit opt-out: `api.webhook_auth: none` accepts webhooks without a token.
#[tokio::test]
async fn webhook_auth_none_is_an_explicit_opt_out() {
    listening(move |config| {
        config.api.webhook_auth = WebhookAuthMode::None;
        config.api.webhook_token = None;
    })
    .run(|app| async move {
        let bus = app.bus();
        let api = app.base();
        let response = reqwest::Client::new()
            .post(format!("{api}/events"))
            .header("content-type", V1)
            .json(&push_event())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(bus.count(&bus.config.work_queue).await, 1);
        app.stop_api(0).await.unwrap();
    })
    .await;
}

/// Item: `/stats/*` (client addresses, accounts), `/metrics` and `/openapi.json` were
/// served beside the index. They are on the operator listener only now; the public one
/// serves the index, the web page, search, webhooks and health.
#[tokio::test]
async fn operator_routes_are_only_on_the_operator_listener() {
    listening(move |config| {
        config.api.webhook_token = Some("t".to_owned().into());
    })
    .run(|app| async move {
        let api = app.base();
        let operator = format!("http://{}", app.operator());
        let http = reqwest::Client::new();
        let status = |base: String, path: &'static str| {
            let http = http.clone();
            async move {
                http.get(format!("{base}{path}"))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        };
        for path in [
            "/stats/deletions",
            "/stats/counts",
            "/metrics",
            "/openapi.json",
        ] {
            assert_eq!(status(api.clone(), path).await, 404, "public {path}");
            assert_eq!(status(operator.clone(), path).await, 200, "operator {path}");
        }
        for path in [
            "/index/static",
            "/",
            "/v1/search?q=x",
            "/healthz",
            "/readyz",
        ] {
            assert_eq!(status(api.clone(), path).await, 200, "public {path}");
            assert_eq!(status(operator.clone(), path).await, 404, "operator {path}");
        }
        let webhook = http
            .post(format!("{api}/events"))
            .bearer_auth("t")
            .header("content-type", V1)
            .json(&push_event())
            .send()
            .await
            .unwrap();
        assert_eq!(webhook.status(), 200);
        app.stop_api(0).await.unwrap();
    })
    .await;
}

/// Item (monitoring): requests are counted and timed by route template and status, 304s
/// included, and paths no route matches share one label.
#[tokio::test]
async fn http_requests_are_counted_by_route_and_status() {
    listening(move |config| {
        config.api.webhook_token = Some("t".to_owned().into());
    })
    .run(|app| async move {
        let api = app.base();
        let operator = format!("http://{}", app.operator());
        let http = reqwest::Client::new();
        let index = format!("{api}/index/static?tag=latest");
        let first = http.get(&index).send().await.unwrap();
        assert_eq!(first.status(), 200);
        let etag = first.headers()["etag"].to_str().unwrap().to_owned();
        let again = http
            .get(&index)
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304);
        for path in ["/repository/apps/calc", "/no/such/path-1", "/no/such/path-2"] {
            http.get(format!("{api}{path}")).send().await.unwrap();
        }

        let metrics = http
            .get(format!("{operator}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for line in [
            r#"regindex_api_http_requests_total{route="/index/static",status="200"} 1"#,
            r#"regindex_api_http_requests_total{route="/index/static",status="304"} 1"#,
            r#"regindex_api_http_requests_total{route="/repository/{*name}",status="404"} 1"#,
            r#"regindex_api_http_requests_total{route="unmatched",status="404"} 2"#,
            r#"regindex_api_http_request_duration_seconds_count{route="/index/static",status="304"} 1"#,
        ] {
            assert!(metrics.contains(line), "{line} missing from\n{metrics}");
        }
        assert!(!metrics.contains("path-1"), "raw paths are not labels");
        app.stop_api(0).await.unwrap();
    })
    .await;
}
