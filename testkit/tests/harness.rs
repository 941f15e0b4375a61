//! The harness against the real services it wraps.

use std::time::Duration;

use regindex_testkit::*;
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn push_tag_delete_and_log() {
    let registry = TestRegistry::new().await.unwrap();
    let spec = ImageSpec::flatpak("org.example.Calc", "x86_64");
    let pushed = registry
        .push_image("apps/calc", Some("latest"), &spec)
        .await
        .unwrap();
    assert_eq!(pushed.digest, sha256_digest(&pushed.manifest_bytes));
    assert_eq!(
        registry
            .manifest_digest("apps/calc", "latest")
            .await
            .unwrap(),
        Some(pushed.digest.clone())
    );

    let list = registry
        .push_list(
            "apps/calc",
            Some("multi"),
            &[
                ImageSpec::flatpak("org.example.Calc", "x86_64"),
                ImageSpec::flatpak("org.example.Calc", "aarch64"),
            ],
            ListFormat::OciIndex,
        )
        .await
        .unwrap();
    assert_eq!(list.entries.len(), 2);
    assert_eq!(
        list.entries[0].digest, pushed.digest,
        "same spec, same digest"
    );

    let pulled = registry.pull_manifest("apps/calc", "multi").await.unwrap();
    assert_eq!(pulled, list.manifest_bytes);
    registry
        .tag("apps/calc", "latest", &list.digest)
        .await
        .unwrap();
    assert_eq!(
        registry
            .manifest_digest("apps/calc", "latest")
            .await
            .unwrap(),
        Some(list.digest.clone())
    );
    registry
        .delete_manifest("apps/calc", &list.digest)
        .await
        .unwrap();
    assert_eq!(
        registry
            .manifest_digest("apps/calc", "latest")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        registry
            .manifest_digest("apps/calc", "multi")
            .await
            .unwrap(),
        None
    );

    let log = registry.request_log().await.unwrap();
    assert!(log.iter().all(|r| r.is_testkit()));
    assert!(log
        .iter()
        .any(|r| r.method == "HEAD" && r.is_manifest() && r.status == 404));
    assert!(log
        .iter()
        .any(|r| r.method == "PUT" && r.is_manifest() && r.status == 201));
    let mark = log.len();
    let http = reqwest::Client::new();
    http.get(format!(
        "{}/v2/apps/calc/blobs/{}",
        registry.url(),
        pushed.config_digest
    ))
    .send()
    .await
    .unwrap();
    let since = registry.requests_since(mark).await.unwrap();
    assert_eq!(since.len(), 1, "{since:?}");
    assert!(since[0].is_blob_get() && since[0].status == 200);
}

#[tokio::test]
async fn docker_list_and_restart_on_same_storage() {
    let mut registry = TestRegistry::new().await.unwrap();
    let specs = [
        ImageSpec::new("amd64")
            .format(ImageFormat::Docker)
            .label("a", "1"),
        ImageSpec::new("arm64")
            .format(ImageFormat::Docker)
            .label("a", "2"),
    ];
    let list = registry
        .push_list("base", Some("latest"), &specs, ListFormat::DockerList)
        .await
        .unwrap();
    let url = registry.url();
    registry.stop();
    assert!(reqwest::get(format!("{url}/v2/")).await.is_err());
    registry.start().await.unwrap();
    assert_eq!(registry.url(), url);
    assert_eq!(
        registry.manifest_digest("base", "latest").await.unwrap(),
        Some(list.digest)
    );
}

#[tokio::test]
async fn prefix_and_htpasswd() {
    let registry = TestRegistry::builder()
        .prefix("/pfx/")
        .htpasswd()
        .start()
        .await
        .unwrap();
    assert!(registry.url().ends_with("/pfx"));
    let pushed = registry
        .push_image("a", Some("t"), &ImageSpec::new("amd64"))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let anonymous = http
        .get(format!("{}/v2/_catalog", registry.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let (user, password) = registry.credentials().unwrap();
    let authed = http
        .get(format!("{}/v2/a/tags/list", registry.url()))
        .basic_auth(user, Some(password))
        .send()
        .await
        .unwrap();
    assert_eq!(authed.status(), 200);
    assert_eq!(
        registry.manifest_digest("a", "t").await.unwrap(),
        Some(pushed.digest)
    );
}

#[tokio::test]
async fn token_auth_with_a_real_token_server() {
    let registry = TestRegistry::builder().token_auth().start().await.unwrap();
    let pushed = registry
        .push_image("private/app", Some("latest"), &ImageSpec::new("amd64"))
        .await
        .unwrap();
    assert_eq!(
        registry
            .manifest_digest("private/app", "latest")
            .await
            .unwrap(),
        Some(pushed.digest)
    );
    assert_eq!(
        registry.token_requests(),
        0,
        "the testkit mints its own tokens"
    );

    // The way any client does it: 401 with a challenge, token from the realm, retry.
    let http = reqwest::Client::new();
    let url = format!("{}/v2/private/app/tags/list", registry.url());
    let challenge = http.get(&url).send().await.unwrap();
    assert_eq!(challenge.status(), 401);
    let header = challenge.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(header.starts_with("Bearer realm=\""), "{header}");
    assert!(
        header.contains("scope=\"repository:private/app:pull\""),
        "{header}"
    );
    let token_url = format!(
        "{}/token?service={TOKEN_SERVICE}&scope=repository:private/app:pull",
        registry.token_server_url().unwrap()
    );
    let refused = http.get(&token_url).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let (user, password) = registry.credentials().unwrap();
    let token: serde_json::Value = http
        .get(&token_url)
        .basic_auth(user, Some(password))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tags = http
        .get(&url)
        .bearer_auth(token["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(tags.status(), 200);
    assert_eq!(registry.token_requests(), 2);
}

#[tokio::test]
async fn notifications_reach_the_endpoint_with_the_token() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/events", listener.local_addr().unwrap());
    let registry = TestRegistry::builder()
        .notify(
            NotificationEndpoint::new(endpoint)
                .bearer_token("s3cret")
                .ignore_actions(&["pull"])
                .ignore_media_types(&["application/octet-stream"]),
        )
        .start()
        .await
        .unwrap();
    let pushed = registry
        .push_image("n", Some("latest"), &ImageSpec::new("amd64"))
        .await
        .unwrap();

    // A minimal HTTP server: read requests until a manifest push arrives.
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            loop {
                let n = socket.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            socket
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&buf).to_string();
            assert!(text.contains("Authorization: Bearer s3cret"), "{text}");
            assert!(!text.contains("\"pull\""), "pulls are ignored: {text}");
            // Blob events carry application/octet-stream in 2.8, whatever the blob is.
            assert!(!text.contains("/blobs/"), "blob events are ignored: {text}");
            if text.contains(&pushed.digest)
                && text.contains("\"push\"")
                && text.contains("manifest")
            {
                return text;
            }
        }
    })
    .await
    .expect("a push notification within 10s");
    assert!(found.contains("application/vnd.docker.distribution.events.v1+json"));
}

#[tokio::test]
async fn database_is_created_and_dropped() {
    let db = TestDatabase::create().await.unwrap();
    assert!(db.name().starts_with("regindex_test_"));
    let mut conn = sqlx::PgConnection::connect(&db.url()).await.unwrap();
    sqlx::query("CREATE TABLE t (x int)")
        .execute(&mut conn)
        .await
        .unwrap();
    let name = db.name().to_owned();
    db.drop().await.unwrap();
    let mut server = sqlx::PgConnection::connect("postgres://postgres@127.0.0.1:5432/postgres")
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_one(&mut server)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[test]
fn unique_names_differ() {
    assert_ne!(unique_name("q"), unique_name("q"));
    assert!(unique_name("queue").starts_with("queue-"));
    assert_ne!(free_port().unwrap(), 0);
}

#[tokio::test]
async fn private_postgres_stops_and_starts_with_its_data() {
    let mut pg = PrivatePostgres::new().await.unwrap();
    let url = pg.create_database("outage").await.unwrap();
    assert_eq!(url, format!("postgres://postgres@{}/outage", pg.host()));
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE kept (v int); INSERT INTO kept VALUES (7)")
        .execute(&mut conn)
        .await
        .unwrap();

    pg.stop().await.unwrap();
    assert!(!pg.is_running());
    // The open session was terminated, and new connections are refused.
    assert!(sqlx::query("SELECT 1").execute(&mut conn).await.is_err());
    assert!(sqlx::PgConnection::connect(&url).await.is_err());

    pg.start().await.unwrap();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let v: i32 = sqlx::query_scalar("SELECT v FROM kept")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(v, 7);
    let _ = conn.close().await;
    assert!(
        pg.log().contains("database system is ready"),
        "{}",
        pg.log()
    );
}

#[tokio::test]
async fn private_postgres_takes_settings() {
    let pg = PrivatePostgres::with_settings(&[("max_connections", "7")])
        .await
        .unwrap();
    let mut conn = sqlx::PgConnection::connect(&pg.url("postgres"))
        .await
        .unwrap();
    let max: String = sqlx::query_scalar("SHOW max_connections")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(max, "7");
    assert!(PrivatePostgres::with_settings(&[("work_mem", "'")])
        .await
        .is_err());
}

#[tokio::test]
async fn private_rabbitmq_stops_and_starts_with_its_data() {
    let mut broker = PrivateRabbitMq::new().await.unwrap();
    assert_eq!(
        broker.amqp_url(),
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", broker.port())
    );
    assert!(amqp_answers(broker.port()).await);
    let queue = unique_name("testkit-private");
    let definitions = serde_json::json!({
        "queues": [{"name": queue, "vhost": "/", "durable": true, "auto_delete": false, "arguments": {}}]
    });
    broker
        .import_definitions(&definitions.to_string())
        .await
        .unwrap();

    broker.stop().await.unwrap();
    assert!(!broker.is_running());
    assert!(
        !amqp_answers(broker.port()).await,
        "stopped: nothing listens"
    );
    assert!(broker.ctl(&["list_queues"]).await.is_err());

    broker.start().await.unwrap();
    assert!(amqp_answers(broker.port()).await);
    let queues = broker.ctl(&["list_queues", "name", "-q"]).await.unwrap();
    assert!(
        queues.lines().any(|l| l.trim() == queue),
        "durable queue kept: {queues}"
    );

    broker.kill().await;
    assert!(
        !amqp_answers(broker.port()).await,
        "killed: nothing listens"
    );
    broker.start().await.unwrap();
    assert!(amqp_answers(broker.port()).await);
}

/// Whether something on `port` answers the AMQP 0-9-1 header with a method frame.
async fn amqp_answers(port: u16) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if stream.write_all(b"AMQP\x00\x00\x09\x01").await.is_err() {
        return false;
    }
    let mut first = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut first)).await,
        Ok(Ok(_)) if first[0] == 1
    )
}
