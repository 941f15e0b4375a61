//! The index routes against a real PostgreSQL: repository states built here are the
//! ground truth, written with `RepositoryTx::replace`, then queried through the router.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use regindex::config::Config;
use regindex::model::{
    media_type, Digest, Image, ImageList, RepositoryName, RepositoryState, StringMap, Tag,
};
use regindex::store::Store;
use regindex_api::{router, AppState};
use regindex_testkit::app::TestStore;
use serde_json::{json, Value};
use tower::ServiceExt;

const FLATPAK_QUERY: &str =
    "/index/static?label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest";
const MAX_AGE_SECS: u64 = 123;

fn d(name: &str) -> Digest {
    Digest::sha256_of(name.as_bytes())
}
fn map(pairs: &[(&str, &str)]) -> StringMap {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
fn tags(entries: &[(&str, &Digest)]) -> BTreeMap<Tag, Digest> {
    entries
        .iter()
        .map(|(t, d)| (Tag::parse(t).unwrap(), (*d).clone()))
        .collect()
}

fn img(
    name: &str,
    mt: &str,
    arch: &str,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
) -> Image {
    Image {
        digest: d(name),
        media_type: mt.into(),
        os: "linux".into(),
        architecture: arch.into(),
        annotations: map(annotations),
        labels: map(labels),
        config_digest: d(&format!("{name}-config")),
    }
}

fn state(
    tags: BTreeMap<Tag, Digest>,
    images: Vec<Image>,
    lists: Vec<ImageList>,
) -> RepositoryState {
    RepositoryState {
        tags,
        images: images.into_iter().map(|i| (i.digest.clone(), i)).collect(),
        lists: lists.into_iter().map(|l| (l.digest.clone(), l)).collect(),
    }
}

/// The ground truth: three repositories.
/// - apps/calculator: a Flatpak app image (amd64) tagged `latest` and `46.1`, an arm64
///   build tagged `latest-arm64`.
/// - apps/multi: an OCI index (amd64 + arm64 Flatpak builds) tagged `latest`, `stable`.
/// - library/base: a Docker manifest list (amd64 + s390x, no Flatpak labels) tagged
///   `latest`, `1.0`, and an older Docker image tagged `old`.
fn ground_truth() -> Vec<(RepositoryName, RepositoryState)> {
    let calc_ref = "app/org.gnome.Calculator/x86_64/stable";
    let calc = img(
        "calc-amd64",
        media_type::OCI_MANIFEST,
        "amd64",
        &[
            ("org.flatpak.ref", calc_ref),
            (
                "org.flatpak.metadata",
                "[Application]\nname=org.gnome.Calculator\n",
            ),
            ("org.flatpak.installed-size", "1000"),
        ],
        &[("org.opencontainers.image.title", "Calculator")],
    );
    let calc_arm = img(
        "calc-arm64",
        media_type::OCI_MANIFEST,
        "arm64",
        &[("org.flatpak.ref", "app/org.gnome.Calculator/aarch64/stable")],
        &[("org.opencontainers.image.title", "Calculator")],
    );
    let calculator = state(
        tags(&[
            ("latest", &calc.digest),
            ("46.1", &calc.digest),
            ("latest-arm64", &calc_arm.digest),
        ]),
        vec![calc, calc_arm],
        vec![],
    );

    let multi_amd = img(
        "multi-amd64",
        media_type::OCI_MANIFEST,
        "amd64",
        &[("org.flatpak.ref", "app/org.example.Multi/x86_64/stable")],
        &[("org.opencontainers.image.title", "Multi")],
    );
    let multi_arm = img(
        "multi-arm64",
        media_type::OCI_MANIFEST,
        "arm64",
        &[("org.flatpak.ref", "app/org.example.Multi/aarch64/stable")],
        &[("org.opencontainers.image.title", "Multi")],
    );
    let index = ImageList {
        digest: d("multi-index"),
        media_type: media_type::OCI_INDEX.into(),
        annotations: StringMap::new(),
        entries: vec![multi_amd.digest.clone(), multi_arm.digest.clone()],
    };
    let multi = state(
        tags(&[("latest", &index.digest), ("stable", &index.digest)]),
        vec![multi_amd, multi_arm],
        vec![index],
    );

    let base_amd = img(
        "base-amd64",
        media_type::DOCKER_MANIFEST,
        "amd64",
        &[("name", "base")],
        &[],
    );
    let base_s390x = img(
        "base-s390x",
        media_type::DOCKER_MANIFEST,
        "s390x",
        &[("name", "base")],
        &[],
    );
    let old = img("base-old", media_type::DOCKER_MANIFEST, "amd64", &[], &[]);
    let manifest_list = ImageList {
        digest: d("base-list"),
        media_type: media_type::DOCKER_LIST.into(),
        annotations: StringMap::new(),
        entries: vec![base_amd.digest.clone(), base_s390x.digest.clone()],
    };
    let base = state(
        tags(&[
            ("latest", &manifest_list.digest),
            ("1.0", &manifest_list.digest),
            ("old", &old.digest),
        ]),
        vec![base_amd, base_s390x, old],
        vec![manifest_list],
    );

    vec![
        (
            RepositoryName::parse("apps/calculator").unwrap(),
            calculator,
        ),
        (RepositoryName::parse("apps/multi").unwrap(), multi),
        (RepositoryName::parse("library/base").unwrap(), base),
    ]
}

async fn write(store: &Store, name: &RepositoryName, state: &RepositoryState) {
    let mut tx = store.begin_repository(name).await.unwrap();
    let known = tx.known_manifests().await.unwrap();
    let images: Vec<Image> = state
        .images
        .values()
        .filter(|i| !known.contains(&i.digest))
        .cloned()
        .collect();
    let lists: Vec<ImageList> = state
        .lists
        .values()
        .filter(|l| !known.contains(&l.digest))
        .cloned()
        .collect();
    tx.replace(&state.tags, &images, &lists).await.unwrap();
    tx.commit().await.unwrap();
}

struct TestApp {
    router: Router,
    state: AppState,
    store: Store,
    _db: Option<TestStore>,
}

async fn spawn_app() -> TestApp {
    let db = TestStore::start().await;
    let store = db.store.clone();
    for (name, state) in ground_truth() {
        write(&store, &name, &state).await;
    }
    let mut config = Config::default();
    config.registry.public_url = Some("/".into());
    config.api.static_max_age = std::time::Duration::from_secs(MAX_AGE_SECS);
    config.database = db.config.clone();
    let state = AppState::new(Arc::new(config), store.clone());
    TestApp {
        router: router(state.clone()),
        state,
        store,
        _db: Some(db),
    }
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

impl TestApp {
    async fn request(&self, method: &str, uri: &str, headers: &[(&str, &str)]) -> Answer {
        let mut builder = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let response = self
            .router
            .clone()
            .oneshot(builder.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, uri: &str) -> Answer {
        self.request("GET", uri, &[]).await
    }

    /// The `Results` of a successful query.
    async fn results(&self, uri: &str) -> Value {
        let answer = self.get(uri).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{uri}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        let json = answer.json();
        assert_eq!(json["Registry"], "/");
        json["Results"].clone()
    }
}

/// One image as the protocol shows it, from the ground truth.
fn image_json(image: &Image, tags: Option<&[&str]>) -> Value {
    let mut v = json!({
        "Digest": image.digest.to_string(),
        "MediaType": image.media_type,
        "OS": image.os,
        "Architecture": image.architecture,
        "Annotations": image.annotations,
        "Labels": image.labels,
    });
    if let Some(tags) = tags {
        v["Tags"] = json!(tags);
    }
    v
}

fn truth_image(repo: &str, name: &str) -> Image {
    let (_, state) = ground_truth()
        .into_iter()
        .find(|(r, _)| r.as_str() == repo)
        .unwrap();
    state.images[&d(name)].clone()
}

fn names(results: &Value) -> Vec<String> {
    results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn flatpak_client_query() {
    let app = spawn_app().await;
    let answer = app
        .request("GET", FLATPAK_QUERY, &[("user-agent", "Flatpak 1.14.10")])
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.header(header::CONTENT_TYPE),
        Some("application/json")
    );
    assert_eq!(
        answer.header(header::CACHE_CONTROL),
        Some(format!("public, max-age={MAX_AGE_SECS}, stale-if-error=86400").as_str())
    );
    assert!(answer.header(header::ETAG).unwrap().starts_with('"'));

    let expected = json!({
        "Registry": "/",
        "Results": [
            {
                "Name": "apps/calculator",
                "Images": [image_json(&truth_image("apps/calculator", "calc-amd64"), Some(&["46.1", "latest"]))],
                "Lists": [],
            },
            {
                "Name": "apps/multi",
                "Images": [],
                "Lists": [{
                    "Tags": ["latest", "stable"],
                    "Digest": d("multi-index").to_string(),
                    "MediaType": media_type::OCI_INDEX,
                    "Images": [image_json(&truth_image("apps/multi", "multi-amd64"), None)],
                }],
            },
        ],
    });
    assert_eq!(answer.json(), expected);
    // Field order as in the protocol's examples.
    let text = String::from_utf8(answer.body.clone()).unwrap();
    assert!(
        text.starts_with(
            r#"{"Registry":"/","Results":[{"Name":"apps/calculator","Images":[{"Tags":"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn filters_match_the_ground_truth() {
    let app = spawn_app().await;

    // Everything: repositories by name, every tagged image and list.
    let all = app.results("/index/dynamic").await;
    assert_eq!(
        names(&all),
        ["apps/calculator", "apps/multi", "library/base"]
    );
    let base = &all[2];
    assert_eq!(
        base["Images"].as_array().unwrap().len(),
        1,
        "only `old` is tagged directly"
    );
    assert_eq!(base["Images"][0]["Tags"], json!(["old"]));
    assert_eq!(base["Lists"][0]["MediaType"], media_type::DOCKER_LIST);
    assert_eq!(base["Lists"][0]["Tags"], json!(["1.0", "latest"]));
    assert_eq!(base["Lists"][0]["Images"].as_array().unwrap().len(), 2);
    // Images of a repository sorted by digest.
    let calc_digests: Vec<&str> = all[0]["Images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["Digest"].as_str().unwrap())
        .collect();
    let mut sorted = calc_digests.clone();
    sorted.sort();
    assert_eq!(calc_digests, sorted);
    assert_eq!(calc_digests.len(), 2);

    // repository=
    let r = app.results("/index/static?repository=library/base").await;
    assert_eq!(names(&r), ["library/base"]);

    // annotation:K=V
    let r = app
        .results("/index/static?annotation:org.opencontainers.image.title=Multi")
        .await;
    assert_eq!(names(&r), ["apps/multi"]);
    assert_eq!(r[0]["Lists"][0]["Images"].as_array().unwrap().len(), 2);

    // label:K=V (a real match on the value, not just on the key)
    let r = app
        .results("/index/static?label:org.flatpak.ref=app/org.example.Multi/aarch64/stable")
        .await;
    assert_eq!(names(&r), ["apps/multi"]);
    assert_eq!(
        r[0]["Lists"][0]["Images"],
        json!([image_json(&truth_image("apps/multi", "multi-arm64"), None)])
    );
    let r = app
        .results("/index/static?label:org.flatpak.ref=app/org.gnome")
        .await;
    assert_eq!(r, json!([]));

    // label:K:matches=
    let r = app
        .results("/index/static?label:org.flatpak.ref:matches=app/*/aarch64/*")
        .await;
    assert_eq!(names(&r), ["apps/calculator", "apps/multi"]);
    assert_eq!(r[0]["Images"][0]["Tags"], json!(["latest-arm64"]));
    assert_eq!(r[1]["Lists"][0]["Images"][0]["Architecture"], "arm64");

    // tag:matches=
    let r = app.results("/index/static?tag:matches=latest-*").await;
    assert_eq!(names(&r), ["apps/calculator"]);
    assert_eq!(r[0]["Images"].as_array().unwrap().len(), 1);
    let r = app.results("/index/static?tag:matches=?.?").await;
    assert_eq!(names(&r), ["library/base"]);
    assert_eq!(r[0]["Images"], json!([]));

    // Repeated key = OR; different keys = AND.
    let r = app
        .results("/index/static?architecture=s390x&architecture=arm64&tag=latest")
        .await;
    assert_eq!(names(&r), ["apps/multi", "library/base"]);
    assert_eq!(r[0]["Lists"][0]["Images"][0]["Architecture"], "arm64");
    assert_eq!(r[1]["Lists"][0]["Images"][0]["Architecture"], "s390x");
    let r = app.results("/index/static?tag=old&tag=46.1").await;
    assert_eq!(names(&r), ["apps/calculator", "library/base"]);
    assert_eq!(r[0]["Images"][0]["Tags"], json!(["46.1", "latest"]));

    // Nothing matches.
    let answer = app.get("/index/static?os=windows").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, br#"{"Registry":"/","Results":[]}"#);
}

#[tokio::test]
async fn parameter_order_does_not_matter() {
    let app = spawn_app().await;
    let params = [
        "label%3Aorg.flatpak.ref%3Aexists=1",
        "architecture=amd64",
        "os=linux",
        "tag=latest",
    ];
    let reference = app.get(FLATPAK_QUERY).await;
    let etag = reference.header(header::ETAG).unwrap().to_owned();
    // All 24 permutations, and the unencoded spelling.
    let mut orders = vec![];
    for a in 0..4 {
        for b in 0..4 {
            for c in 0..4 {
                for e in 0..4 {
                    let idx = [a, b, c, e];
                    let mut seen = idx.to_vec();
                    seen.sort();
                    seen.dedup();
                    if seen.len() == 4 {
                        orders.push(idx.iter().map(|i| params[*i]).collect::<Vec<_>>().join("&"));
                    }
                }
            }
        }
    }
    assert_eq!(orders.len(), 24);
    orders.push("tag=latest&os=linux&label:org.flatpak.ref:exists=true&architecture=amd64".into());
    for order in orders {
        let answer = app.get(&format!("/index/static?{order}")).await;
        assert_eq!(answer.body, reference.body, "{order}");
        assert_eq!(answer.header(header::ETAG), Some(etag.as_str()), "{order}");
    }
    // Dynamic: the same bytes and ETag, not cacheable.
    let dynamic = app
        .get("/index/dynamic?tag=latest&os=linux&architecture=amd64&label:org.flatpak.ref:exists=1")
        .await;
    assert_eq!(dynamic.body, reference.body);
    assert_eq!(dynamic.header(header::ETAG), Some(etag.as_str()));
    assert_eq!(dynamic.header(header::CACHE_CONTROL), Some("no-store"));
    // Every spelling of the query shares one cache entry.
    assert_eq!(app.state.cache.len(), 1);
}

#[tokio::test]
async fn etag_round_trip_and_change() {
    let app = spawn_app().await;
    let first = app.get(FLATPAK_QUERY).await;
    let etag = first.header(header::ETAG).unwrap().to_owned();
    let cache_control = first.header(header::CACHE_CONTROL).unwrap().to_owned();

    for if_none_match in [
        etag.clone(),
        format!("\"nope\", {etag}"),
        "*".into(),
        format!("W/{etag}"),
    ] {
        let again = app
            .request("GET", FLATPAK_QUERY, &[("if-none-match", &if_none_match)])
            .await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{if_none_match}");
        assert!(again.body.is_empty());
        assert_eq!(again.header(header::ETAG), Some(etag.as_str()));
        assert_eq!(
            again.header(header::CACHE_CONTROL),
            Some(cache_control.as_str())
        );
    }
    let other = app
        .request(
            "GET",
            FLATPAK_QUERY,
            &[("if-none-match", "\"something-else\"")],
        )
        .await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.body, first.body);

    // A change elsewhere leaves this answer (and its ETag) alone.
    let (_, mut base) = ground_truth().remove(2);
    base.tags.remove(&Tag::parse("old").unwrap());
    base.images.remove(&d("base-old"));
    write(
        &app.store,
        &RepositoryName::parse("library/base").unwrap(),
        &base,
    )
    .await;
    let unchanged = app.get(FLATPAK_QUERY).await;
    assert_eq!(unchanged.header(header::ETAG), Some(etag.as_str()));

    // A change to what the query returns gives a new body and ETag.
    let (name, mut calculator) = ground_truth().remove(0);
    calculator
        .tags
        .insert(Tag::parse("46").unwrap(), d("calc-amd64"));
    write(&app.store, &name, &calculator).await;
    let changed = app
        .request("GET", FLATPAK_QUERY, &[("if-none-match", &etag)])
        .await;
    assert_eq!(changed.status, StatusCode::OK);
    let new_etag = changed.header(header::ETAG).unwrap();
    assert_ne!(new_etag, etag);
    assert_eq!(
        changed.json()["Results"][0]["Images"][0]["Tags"],
        json!(["46", "46.1", "latest"])
    );
}

#[tokio::test]
async fn gzip_when_accepted() {
    let app = spawn_app().await;
    let plain = app.get(FLATPAK_QUERY).await;
    assert_eq!(plain.header(header::CONTENT_ENCODING), None);
    let gz = app
        .request("GET", FLATPAK_QUERY, &[("accept-encoding", "gzip")])
        .await;
    assert_eq!(gz.status, StatusCode::OK);
    assert_eq!(gz.header(header::CONTENT_ENCODING), Some("gzip"));
    assert_eq!(gz.header(header::VARY), Some("Accept-Encoding"));
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&gz.body[..])
        .read_to_end(&mut decoded)
        .unwrap();
    assert_eq!(decoded, plain.body);
    // The encodings have their own strong ETags; either one revalidates.
    let gz_etag = gz.header(header::ETAG).unwrap().to_owned();
    assert_ne!(Some(gz_etag.as_str()), plain.header(header::ETAG));
    let revalidated = app
        .request(
            "GET",
            FLATPAK_QUERY,
            &[("accept-encoding", "gzip"), ("if-none-match", &gz_etag)],
        )
        .await;
    assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
    assert_eq!(revalidated.header(header::ETAG), Some(gz_etag.as_str()));
}

#[tokio::test]
async fn malformed_queries_are_400_json() {
    let app = spawn_app().await;
    for (query, parameter) in [
        ("foo=bar", "foo"),
        (
            "label%3Aorg.flatpak.ref%3Aexists=0",
            "label:org.flatpak.ref:exists",
        ),
        ("repository=Not_Valid", "repository"),
        ("label:=x", "label:"),
        ("tag=", "tag"),
        ("os=%FF", "os"),
    ] {
        let answer = app.get(&format!("/index/static?{query}")).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(
            answer.header(header::CONTENT_TYPE),
            Some("application/json")
        );
        let body = answer.json();
        assert_eq!(body["error"], "bad_query", "{query}");
        assert_eq!(body["detail"]["parameter"], parameter, "{query}");
        assert!(body["message"].as_str().unwrap().contains(parameter));
    }
}

#[tokio::test]
async fn health_and_fallbacks() {
    let app = spawn_app().await;
    let healthz = app.get("/healthz").await;
    assert_eq!(healthz.status, StatusCode::OK);
    assert_eq!(healthz.json()["status"], "ok");
    let readyz = app.get("/readyz").await;
    assert_eq!(readyz.status, StatusCode::OK);

    let missing = app.get("/nope").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        missing.json(),
        serde_json::json!({"error": "not_found", "message": "no such route"})
    );
    let wrong = app.request("POST", "/index/static", &[]).await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        wrong.json(),
        serde_json::json!({"error": "method_not_allowed", "message": "method not allowed"})
    );
    let head = app.request("HEAD", FLATPAK_QUERY, &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
}

#[tokio::test]
async fn unreachable_database_is_503() {
    // Nothing listens on port 1.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_millis(500))
        .connect_lazy("postgres://postgres@127.0.0.1:1/none")
        .unwrap();
    let store = Store::from_pool(pool);
    let state = AppState::new(Arc::new(Config::default()), store.clone());
    let app = TestApp {
        router: router(state.clone()),
        state,
        store,
        _db: None,
    };
    let readyz = app.get("/readyz").await;
    assert_eq!(readyz.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(readyz.json()["error"], "unavailable");
    assert_eq!(app.get("/healthz").await.status, StatusCode::OK);
    let index = app.get(FLATPAK_QUERY).await;
    assert_eq!(index.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(index.json()["error"], "unavailable");
    assert!(app.state.cache.is_empty(), "failures are not cached");
}

/// Over a real socket, as a client sees it (reqwest decompresses gzip itself).
#[tokio::test]
async fn served_over_http() {
    let app = spawn_app().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app.router.clone();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let client = reqwest::Client::new();
    let response = client
        .get(format!("http://{addr}{FLATPAK_QUERY}"))
        .header("user-agent", "Flatpak 1.14.10")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(names(&body["Results"]), ["apps/calculator", "apps/multi"]);
    let again = client
        .get(format!("http://{addr}{FLATPAK_QUERY}"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    server.abort();
}
