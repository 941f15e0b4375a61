//! The registry client against a scripted HTTP server, for behaviour docker-registry 2.8
//! cannot show: tag pagination by Link (2.8 ignores `n` on tags/list), token auth, hostile
//! links, oversized or corrupted manifests, blob redirects, overload answers and the
//! concurrency bound.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use regindex::config::RegistryConfig;
use regindex::model::{media_type, Digest, Reference, RepositoryName, Tag};
use regindex::registry::{RegistryClient, RegistryError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A request as the stub received it.
#[derive(Debug, Clone)]
struct StubRequest {
    method: String,
    /// Path and query.
    target: String,
    headers: HashMap<String, String>,
}

impl StubRequest {
    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or(&self.target)
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

#[derive(Debug, Clone, Default)]
struct StubResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Leave out Content-Length: the body ends when the connection closes.
    no_content_length: bool,
    delay: Duration,
}

fn respond(status: u16, body: impl Into<Vec<u8>>) -> StubResponse {
    StubResponse {
        status,
        body: body.into(),
        ..StubResponse::default()
    }
}

impl StubResponse {
    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

type Handler = Arc<dyn Fn(&StubRequest) -> StubResponse + Send + Sync>;

/// A one-request-per-connection HTTP/1.1 server that records what it was asked.
struct Stub {
    url: String,
    requests: Arc<Mutex<Vec<StubRequest>>>,
    max_in_flight: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stub {
    async fn start(handler: impl Fn(&StubRequest) -> StubResponse + Send + Sync + 'static) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let max_in_flight = Arc::new(AtomicUsize::new(0));
        let handler: Handler = Arc::new(handler);
        let (log, max) = (requests.clone(), max_in_flight.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let (handler, log, in_flight, max) =
                    (handler.clone(), log.clone(), in_flight.clone(), max.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(now, Ordering::SeqCst);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let mut lines = text.split("\r\n");
                    let mut first = lines.next().unwrap_or("").split(' ');
                    let request = StubRequest {
                        method: first.next().unwrap_or("").to_owned(),
                        target: first.next().unwrap_or("").to_owned(),
                        headers: lines
                            .filter_map(|l| l.split_once(':'))
                            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                            .collect(),
                    };
                    log.lock().unwrap().push(request.clone());
                    let response = handler(&request);
                    tokio::time::sleep(response.delay).await;
                    // Before answering: the client may send its next request as soon as
                    // it has this response.
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    let mut head =
                        format!("HTTP/1.1 {} Stub\r\nConnection: close\r\n", response.status);
                    if !response.no_content_length {
                        head.push_str(&format!("Content-Length: {}\r\n", response.body.len()));
                    }
                    for (k, v) in &response.headers {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    head.push_str("\r\n");
                    let _ = socket.write_all(head.as_bytes()).await;
                    if request.method != "HEAD" {
                        let _ = socket.write_all(&response.body).await;
                    }
                    let _ = socket.shutdown().await;
                });
            }
        });
        Stub {
            url,
            requests,
            max_in_flight,
            task,
        }
    }

    fn requests(&self) -> Vec<StubRequest> {
        self.requests.lock().unwrap().clone()
    }
}

fn client(url: &str) -> RegistryClient {
    RegistryClient::new(&RegistryConfig {
        url: url.parse().unwrap(),
        page_size: 2,
        request_timeout: Duration::from_secs(5),
        ..RegistryConfig::default()
    })
    .unwrap()
}

fn repo(name: &str) -> RepositoryName {
    RepositoryName::parse(name).unwrap()
}

fn tag(name: &str) -> Reference {
    Reference::Tag(Tag::parse(name).unwrap())
}

fn tags_page(tags: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "name": "apps/calc", "tags": tags })).unwrap()
}

#[tokio::test]
async fn tags_follow_link_pagination_but_never_another_host() {
    let stub = Stub::start(|r| {
        let query = r.target.split_once('?').map_or("", |(_, q)| q);
        match query {
            "n=2" => respond(200, tags_page(&["a", "b"])).header(
                "Link",
                r#"</v2/apps/calc/tags/list?n=2&last=b>; rel="next""#,
            ),
            // An absolute link to another host: only its query may be used.
            "n=2&last=b" => respond(200, tags_page(&["c", "d"])).header(
                "Link",
                r#"<http://evil.invalid:1/v2/apps/calc/tags/list?n=2&last=d>; rel="next""#,
            ),
            // The last page repeats an entry and has an invalid tag.
            "n=2&last=d" => respond(200, tags_page(&["d", "e", ".bad"])),
            other => respond(500, format!("unexpected query {other}")),
        }
    })
    .await;
    let tags = client(&stub.url).tags(&repo("apps/calc")).await.unwrap();
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    assert_eq!(tags, ["a", "b", "c", "d", "e"]);
    let targets: Vec<String> = stub.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(
        targets,
        [
            "/v2/apps/calc/tags/list?n=2",
            "/v2/apps/calc/tags/list?n=2&last=b",
            "/v2/apps/calc/tags/list?n=2&last=d"
        ]
    );
}

#[tokio::test]
async fn catalog_without_links_continues_from_the_last_name() {
    let stub = Stub::start(|r| {
        let body = match r.target.as_str() {
            "/pfx/v2/_catalog?n=2" => r#"{"repositories": ["a", "b"]}"#,
            "/pfx/v2/_catalog?n=2&last=b" => r#"{"repositories": ["c", "Not_Valid"]}"#,
            "/pfx/v2/_catalog?n=2&last=Not_Valid" => r#"{"repositories": null}"#,
            _ => return respond(404, "no"),
        };
        respond(200, body)
    })
    .await;
    let names = client(&format!("{}/pfx", stub.url))
        .catalog()
        .await
        .unwrap();
    assert_eq!(names, [repo("a"), repo("b"), repo("c")]);
    assert_eq!(stub.requests().len(), 3);
}

#[tokio::test]
async fn a_registry_repeating_the_same_page_does_not_loop() {
    let stub = Stub::start(|_| {
        respond(200, r#"{"repositories": ["a", "b"]}"#)
            .header("Link", r#"</v2/_catalog?n=2&last=b>; rel="next""#)
    })
    .await;
    assert_eq!(
        client(&stub.url).catalog().await.unwrap(),
        [repo("a"), repo("b")]
    );
    assert_eq!(stub.requests().len(), 2);
}

#[tokio::test]
async fn bearer_token_is_fetched_cached_per_scope_and_retried_once() {
    let token_calls = Arc::new(AtomicUsize::new(0));
    let calls = token_calls.clone();
    let stub_url = Arc::new(Mutex::new(String::new()));
    let realm = stub_url.clone();
    let stub = Stub::start(move |r| {
        if r.path() == "/token" {
            calls.fetch_add(1, Ordering::SeqCst);
            // Basic credentials must reach the token server.
            if r.header("authorization") != Some("Basic dTpw") {
                return respond(401, "who are you");
            }
            let scope = r.target.split("scope=").nth(1).unwrap_or("").to_owned();
            return respond(
                200,
                format!(r#"{{"token": "tok-{scope}", "expires_in": 300}}"#),
            );
        }
        let expected = "Bearer tok-repository%3Aapps%2Fcalc%3Apull";
        if r.header("authorization") == Some(expected) {
            return respond(200, tags_page(&["latest"]));
        }
        let challenge = format!(
            r#"Bearer realm="{}/token",service="stub",scope="repository:apps/calc:pull""#,
            realm.lock().unwrap()
        );
        respond(401, "{}").header("WWW-Authenticate", &challenge)
    })
    .await;
    *stub_url.lock().unwrap() = stub.url.clone();

    let client = RegistryClient::new(&RegistryConfig {
        url: stub.url.parse().unwrap(),
        username: Some("u".into()),
        password: Some("p".to_owned().into()),
        ..RegistryConfig::default()
    })
    .unwrap();
    for _ in 0..3 {
        let tags = client.tags(&repo("apps/calc")).await.unwrap();
        assert_eq!(tags, [Tag::parse("latest").unwrap()]);
    }
    assert_eq!(token_calls.load(Ordering::SeqCst), 1, "token cached");
    let requests = stub.requests();
    // 401, token, retry; then two requests that carry the cached token at once.
    assert_eq!(requests.len(), 5, "{requests:#?}");
    let token_request = &requests[1];
    assert!(
        token_request.target.contains("service=stub"),
        "{token_request:?}"
    );
    assert!(token_request
        .target
        .contains("scope=repository%3Aapps%2Fcalc%3Apull"));

    // Wrong credentials: the token server refuses, and that is not transient.
    let anonymous = client_for_token_test(&stub.url);
    let err = anonymous.tags(&repo("apps/calc")).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(!err.is_transient());
}

fn client_for_token_test(url: &str) -> RegistryClient {
    RegistryClient::new(&RegistryConfig {
        url: url.parse().unwrap(),
        username: Some("u".into()),
        password: Some("wrong".to_owned().into()),
        ..RegistryConfig::default()
    })
    .unwrap()
}

const MANIFEST: &str = r#"{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:1111111111111111111111111111111111111111111111111111111111111111", "size": 2}, "layers": []}"#;

#[tokio::test]
async fn manifest_digests_are_verified() {
    let real = Digest::sha256_of(MANIFEST.as_bytes());
    let other = Digest::sha256_of(b"something else");
    let (real_s, other_s) = (real.to_string(), other.to_string());
    let stub = Stub::start(move |r| {
        let reported = if r.path().ends_with("/lying") {
            &other_s
        } else {
            &real_s
        };
        respond(200, MANIFEST)
            // A registry serving manifests as plain JSON: the body's mediaType counts.
            .header("Content-Type", "application/json")
            .header("Docker-Content-Digest", reported)
    })
    .await;
    let client = client(&stub.url);

    let fetched = client.manifest(&repo("a"), &tag("honest")).await.unwrap();
    assert_eq!(fetched.digest, real);
    assert_eq!(fetched.media_type, media_type::OCI_MANIFEST);

    let err = client
        .manifest(&repo("a"), &tag("lying"))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains("a:lying"), "{err}");

    let err = client
        .manifest(&repo("a"), &Reference::Digest(other.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");

    let err = client.blob(&repo("a"), &other).await.unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
}

#[tokio::test]
async fn oversized_manifests_and_blobs_are_refused() {
    let stub = Stub::start(|r| {
        // Just over each limit: 4 MiB for manifests, 16 MiB for config blobs.
        let size = if r.path().contains("/blobs/") {
            17 << 20
        } else {
            5 << 20
        };
        let big = vec![b' '; size];
        let mut response = respond(200, big).header("Content-Type", media_type::OCI_MANIFEST);
        // Without Content-Length the limit must hold while streaming.
        response.no_content_length = r.path().contains("streamed");
        response
    })
    .await;
    let client = client(&stub.url);
    for reference in ["declared", "streamed"] {
        let err = client
            .manifest(&repo("a"), &tag(reference))
            .await
            .unwrap_err();
        assert!(
            matches!(err, RegistryError::BadManifest { .. }),
            "{reference}: {err}"
        );
        assert!(!err.is_transient());
    }
    let err = client
        .blob(&repo("a"), &Digest::sha256_of(b"x"))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::BadManifest { .. }), "{err}");
    assert!(err.to_string().contains("blob a@sha256:"), "{err}");
}

#[tokio::test]
async fn blob_redirects_are_followed_manifest_redirects_are_not() {
    let config = br#"{"os": "linux", "architecture": "amd64"}"#.to_vec();
    let digest = Digest::sha256_of(&config);
    let storage = Stub::start(move |_| respond(200, config.clone())).await;
    let storage_url = storage.url.clone();
    let registry = Stub::start(move |r| {
        respond(307, "").header("Location", &format!("{storage_url}/blob-store{}", r.path()))
    })
    .await;
    let client = RegistryClient::new(&RegistryConfig {
        url: registry.url.parse().unwrap(),
        username: Some("u".into()),
        password: Some("p".to_owned().into()),
        ..RegistryConfig::default()
    })
    .unwrap();

    let bytes = client.blob(&repo("a"), &digest).await.unwrap();
    assert_eq!(Digest::sha256_of(&bytes), digest);
    assert!(registry.requests()[0].header("authorization").is_some());
    let stored = storage.requests();
    assert_eq!(stored.len(), 1);
    assert!(stored[0].path().starts_with("/blob-store/v2/a/blobs/"));
    // The storage is another origin: registry credentials must not follow the redirect.
    assert_eq!(stored[0].header("authorization"), None);

    let err = client
        .manifest(&repo("a"), &tag("latest"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Status { status: 307, .. }),
        "{err}"
    );
    assert_eq!(
        storage.requests().len(),
        1,
        "manifest redirect not followed"
    );
}

#[tokio::test]
async fn overload_answers_are_transient() {
    let stub = Stub::start(|r| match r.path() {
        p if p.contains("busy") => respond(429, "slow down"),
        _ => respond(503, "maintenance"),
    })
    .await;
    let client = client(&stub.url);
    for name in ["busy", "down"] {
        let err = client.tags(&repo(name)).await.unwrap_err();
        assert!(matches!(err, RegistryError::Status { .. }), "{err}");
        assert!(err.is_transient(), "{err}");
    }
}

#[tokio::test]
async fn concurrency_is_bounded() {
    let stub = Stub::start(|_| {
        let mut response = respond(200, tags_page(&["latest"]));
        response.delay = Duration::from_millis(100);
        response
    })
    .await;
    let client = RegistryClient::new(&RegistryConfig {
        url: stub.url.parse().unwrap(),
        max_concurrency: 2,
        ..RegistryConfig::default()
    })
    .unwrap();
    let calls = (0..8).map(|i| {
        let client = client.clone();
        async move { client.tags(&repo(&format!("r{i}"))).await }
    });
    for result in futures::future::join_all(calls).await {
        result.unwrap();
    }
    assert_eq!(stub.requests().len(), 8);
    assert_eq!(stub.max_in_flight.load(Ordering::SeqCst), 2);
    assert_eq!(client.stats().requests, 8);
}

#[tokio::test]
async fn timeouts_are_transient() {
    let stub = Stub::start(|_| {
        let mut response = respond(200, tags_page(&[]));
        response.delay = Duration::from_secs(3);
        response
    })
    .await;
    let client = RegistryClient::new(&RegistryConfig {
        url: stub.url.parse().unwrap(),
        request_timeout: Duration::from_secs(1),
        ..RegistryConfig::default()
    })
    .unwrap();
    let err = client.tags(&repo("slow")).await.unwrap_err();
    assert!(matches!(err, RegistryError::Transport { .. }), "{err}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn resolve_falls_back_to_get_when_head_says_nothing_useful() {
    let stub = Stub::start(|r| match r.method.as_str() {
        // No Docker-Content-Digest, generic type.
        "HEAD" => respond(200, MANIFEST).header("Content-Type", "application/json"),
        _ => respond(200, MANIFEST).header("Content-Type", "text/plain"),
    })
    .await;
    let (digest, media) = client(&stub.url)
        .resolve(&repo("a"), &tag("latest"))
        .await
        .unwrap();
    assert_eq!(digest, Digest::sha256_of(MANIFEST.as_bytes()));
    assert_eq!(media, media_type::OCI_MANIFEST);
    let methods: Vec<String> = stub.requests().into_iter().map(|r| r.method).collect();
    assert_eq!(methods, ["HEAD", "GET"]);
}

#[tokio::test]
async fn resolve_by_digest_checks_the_registry_answer() {
    let other = Digest::sha256_of(b"other").to_string();
    let stub = Stub::start(move |_| {
        respond(200, "")
            .header("Content-Type", media_type::OCI_MANIFEST)
            .header("Docker-Content-Digest", &other)
    })
    .await;
    let asked = Digest::sha256_of(b"asked");
    let err = client(&stub.url)
        .resolve(&repo("a"), &Reference::Digest(asked))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
}
