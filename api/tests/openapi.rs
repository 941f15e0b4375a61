//! `/openapi.json` against the real api: a sample of answers of every route of both
//! listeners (successes and errors, fallbacks included), from the api as the binary runs
//! it on data pushed to a real registry and indexed into real PostgreSQL, each found in
//! the document (path, method, status, content type) and its JSON body valid against the
//! documented schema. That every route is documented, and only those, is checked by the
//! unit tests of `routes.rs`; here every route must also have been sampled.

mod common;

use std::collections::BTreeSet;

use common::{flatpak_app, png, sha256_hex};
use regindex::config::{Config, IndexProfile};
use regindex_api::routes::{Listener, Method, ROUTES};
use regindex_testkit::app::Process;
use serde_json::{json, Value};

const TOKEN: &str = "openapi-token";
const EVENTS_V1: &str = "application/vnd.docker.distribution.events.v1+json";
const DIGEST: &str = "sha256:7bdd2ae44a165c15bce2833726ea6a9b0998cab5c147a621eb4aa9db2ed93864";

fn configure(config: &mut Config) {
    config.icons.extract = true;
    config
        .index_profiles
        .insert("plain".into(), IndexProfile::default());
    config.api.webhook_token = Some(TOKEN.to_owned().into());
    config.api.body_limit_bytes = 4096;
    // No broker: readiness and publishing answer their 503s.
    config.amqp.url = "amqp://guest:guest@127.0.0.1:1/%2f".to_owned().into();
    config.api.publish_timeout = std::time::Duration::from_millis(500);
    config.history.enabled = false;
    config.api.publish_pulls = false;
}

/// One request and the status it must get.
struct Sample {
    listener: Listener,
    method: Method,
    /// The route's OpenAPI path, `None` for requests no route matches.
    template: Option<&'static str>,
    path_and_query: String,
    headers: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    status: u16,
}

fn get(template: &'static str, path_and_query: impl Into<String>, status: u16) -> Sample {
    let route = ROUTES
        .iter()
        .find(|r| r.openapi_path() == template)
        .unwrap_or_else(|| panic!("no route {template}"));
    Sample {
        listener: route.listener(),
        method: Method::Get,
        template: Some(template),
        path_and_query: path_and_query.into(),
        headers: Vec::new(),
        body: None,
        status,
    }
}

fn events(headers: &[(&'static str, &str)], body: Vec<u8>, status: u16) -> Sample {
    Sample {
        listener: Listener::Public,
        method: Method::Post,
        template: Some("/events"),
        path_and_query: "/events".into(),
        headers: headers.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        body: Some(body),
        status,
    }
}

fn unmatched(listener: Listener, method: Method, path: &str, status: u16) -> Sample {
    Sample {
        listener,
        method,
        template: None,
        path_and_query: path.into(),
        headers: Vec::new(),
        body: None,
        status,
    }
}

fn push_event() -> Value {
    json!({
        "id": "openapi-1",
        "timestamp": "2026-12-01T10:00:00.000000000Z",
        "action": "push",
        "target": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "size": 483,
            "digest": DIGEST,
            "repository": "apps/calculator",
            "url": format!("http://registry.example.org/v2/apps/calculator/manifests/{DIGEST}"),
            "tag": "latest",
        },
        "request": {"addr": "10.0.0.1:4000", "host": "127.0.0.1:5000", "method": "PUT", "useragent": "skopeo"},
        "actor": {},
    })
}

fn samples(icon: &str) -> Vec<Sample> {
    let bearer = format!("Bearer {TOKEN}");
    let envelope = |events: Value| serde_json::to_vec(&json!({ "events": events })).unwrap();
    let authorised = [
        ("authorization", bearer.as_str()),
        ("content-type", EVENTS_V1),
    ];
    let mut samples = vec![
        get("/index/static", "/index/static?tag=latest&label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux", 200),
        get("/index/static", "/index/static?colour=blue", 400),
        get("/index/dynamic", "/index/dynamic?repository=apps/calculator", 200),
        get("/index/dynamic", "/index/dynamic?label:x:exists=maybe", 400),
        get("/profiles/{profile}/index/static", "/profiles/plain/index/static?tag=latest", 200),
        get("/profiles/{profile}/index/static", "/profiles/nosuch/index/static?tag=latest", 404),
        get("/profiles/{profile}/index/static", "/profiles/%FF/index/static", 404),
        get("/profiles/{profile}/index/dynamic", "/profiles/plain/index/dynamic?tag=latest", 200),
        get("/profiles/{profile}/index/dynamic", "/profiles/plain/index/dynamic?tag=", 400),
        get("/", "/", 200),
        get("/", "/?q=calc&q=calc", 400),
        get("/repository/{name}", "/repository/apps/calculator", 200),
        get("/repository/{name}", "/repository/apps/nosuch", 404),
        get("/repository/{name}", "/repository/%FF", 404),
        get("/icons/{file}", format!("/icons/{icon}"), 200),
        get("/icons/{file}", format!("/icons/{}.png", "0".repeat(64)), 404),
        get("/icons/{file}", "/icons/%FF.png", 404),
        get("/v1/search", "/v1/search?q=calculator", 200),
        get("/v1/search", "/v1/search?n=1000", 400),
        get("/v1/search", "/v1/search?q=a&q=b", 400),
        get("/healthz", "/healthz", 200),
        get("/readyz", "/readyz", 503),
        events(&authorised, envelope(json!([])), 200),
        events(&authorised, envelope(json!([push_event()])), 503),
        events(&authorised, b"{\"events\": 1}".to_vec(), 400),
        events(&[("content-type", EVENTS_V1)], envelope(json!([])), 401),
        events(&[("authorization", &bearer), ("content-type", "text/plain")], envelope(json!([])), 415),
        events(&authorised, vec![b' '; 5000], 413),
        get("/stats/images", "/stats/images", 200),
        get("/stats/images", "/stats/images?per_page=0", 400),
        get("/stats/images", "/stats/images?page=x", 400),
        get("/stats/images/older-than", "/stats/images/older-than?days=30", 200),
        get("/stats/images/older-than", "/stats/images/older-than", 400),
        get("/stats/images/not-pulled", "/stats/images/not-pulled?days=30", 200),
        get("/stats/images/most-tags", "/stats/images/most-tags", 200),
        get("/stats/counts", "/stats/counts", 200),
        get("/stats/counts", "/stats/counts?colour=blue", 400),
        get("/stats/blobs/orphaned", "/stats/blobs/orphaned", 200),
        get("/stats/manifests/missing-blobs", "/stats/manifests/missing-blobs", 200),
        get("/stats/deletions", "/stats/deletions", 200),
        get("/stats/activity", "/stats/activity?repository=apps/calculator", 200),
        get("/stats/activity", "/stats/activity", 400),
        get("/metrics", "/metrics", 200),
        get("/openapi.json", "/openapi.json", 200),
        unmatched(Listener::Public, Method::Get, "/nosuch", 404),
        unmatched(Listener::Public, Method::Post, "/index/static", 405),
        unmatched(Listener::Public, Method::Get, "/events", 405),
        unmatched(Listener::Operator, Method::Get, "/nosuch", 404),
        unmatched(Listener::Operator, Method::Post, "/stats/counts", 405),
    ];
    // Each route is served on its own listener only.
    for route in ROUTES {
        let other = match route.listener() {
            Listener::Public => Listener::Operator,
            Listener::Operator => Listener::Public,
        };
        let path = route
            .path
            .replace("{profile}", "plain")
            .replace("{*name}", "apps/calculator")
            .replace("{file}", icon);
        samples.push(unmatched(other, route.method, &path, 404));
    }
    samples
}

/// A validator for the schema at `pointer` in the document (`$ref`s resolve inside it).
fn validator(document: &Value, pointer: &str) -> jsonschema::Validator {
    let mut root = document.clone();
    root["$ref"] = json!(format!("#{pointer}"));
    jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("schema {pointer}: {e}"))
}

/// A JSON pointer segment, as a URI fragment may hold it (`{` and `}` percent-encoded).
fn escape(segment: &str) -> String {
    segment
        .replace('~', "~0")
        .replace('/', "~1")
        .replace('{', "%7B")
        .replace('}', "%7D")
}

#[tokio::test]
async fn sampled_answers_match_the_document() {
    let stack = common::start(configure).await;
    stack
        .registry
        .push_image(
            "apps/calculator",
            Some("latest"),
            &flatpak_app("org.example.Calculator", "amd64", [0, 0, 255]),
        )
        .await
        .unwrap();
    stack.refetch("apps/calculator").await.unwrap();
    let icon = format!("{}.png", sha256_hex(&png([0, 0, 255], 64)));
    let api = Process::api(stack.config.clone()).await;
    let http = reqwest::Client::new();

    let served: Value = http
        .get(format!("{}/openapi.json", api.operator_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let document: Value = serde_json::from_str(regindex_api::routes::OPENAPI_JSON).unwrap();
    assert_eq!(served, document);

    let mut sampled = BTreeSet::new();
    let mut failures = Vec::new();
    for sample in samples(&icon) {
        let base = match sample.listener {
            Listener::Public => &api.public_url(),
            Listener::Operator => &api.operator_url(),
        };
        let url = format!("{base}{}", sample.path_and_query);
        let mut request = match sample.method {
            Method::Get => http.get(&url),
            Method::Post => http.post(&url),
        };
        for (name, value) in &sample.headers {
            request = request.header(*name, value);
        }
        if let Some(body) = sample.body.clone() {
            request = request.body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap().trim().to_owned());
        let body = response.bytes().await.unwrap();
        let what = format!(
            "{:?} {} on {:?} ({status}, {content_type:?}): {}",
            sample.method,
            sample.path_and_query,
            sample.listener,
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
        if status != sample.status {
            failures.push(format!("expected {}: {what}", sample.status));
            continue;
        }
        let schema_pointer = match sample.template {
            // No route: the fallbacks' answer, always the error body.
            None => {
                assert_eq!(content_type.as_deref(), Some("application/json"), "{what}");
                "/components/schemas/Error".to_owned()
            }
            Some(template) => {
                sampled.insert((template.to_owned(), sample.method));
                let method = sample.method.openapi_key();
                let responses = &document["paths"][template][method]["responses"];
                let Some(documented) = responses.get(status.to_string()) else {
                    failures.push(format!("status not documented: {what}"));
                    continue;
                };
                let Some(content_type) = content_type else {
                    if documented.get("content").is_some() {
                        failures.push(format!("no content type: {what}"));
                    }
                    continue;
                };
                if documented["content"].get(&content_type).is_none() {
                    failures.push(format!("content type not documented: {what}"));
                    continue;
                }
                if content_type != "application/json" {
                    continue;
                }
                format!(
                    "/paths/{}/{method}/responses/{status}/content/{}/schema",
                    escape(template),
                    escape(&content_type)
                )
            }
        };
        let Ok(instance) = serde_json::from_slice::<Value>(&body) else {
            failures.push(format!("not JSON: {what}"));
            continue;
        };
        let validator = validator(&document, &schema_pointer);
        let errors: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if !errors.is_empty() {
            failures.push(format!("{errors:?}: {what}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let routes: BTreeSet<(String, Method)> = ROUTES
        .iter()
        .map(|r| (r.openapi_path(), r.method))
        .collect();
    let unsampled: Vec<_> = routes.difference(&sampled).collect();
    assert!(unsampled.is_empty(), "routes not sampled: {unsampled:?}");

    api.stop().await.unwrap();
    stack.finish().await;
}
