//! The api when its dependencies misbehave: read-only, time-limited database sessions;
//! stale answers during a database outage; start-up without the database; readiness
//! that reports the database and the broker. Outages use private PostgreSQL and
//! RabbitMQ servers (testkit), never the shared ones.

use std::future::IntoFuture as _;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use regindex::bus::testing::TestBus;
use regindex::config::Config;
use regindex::model::RepositoryName;
use regindex::registry::RegistryClient;
use regindex::store::{DataVersionWatch, Store};
use regindex::sync::Syncer;
use regindex_api::metrics::ApiMetrics;
use regindex_api::AppState;
use regindex_testkit::app::{migrate, Process, TestStore};
use regindex_testkit::{
    eventually, free_port, ImageSpec, PrivatePostgres, PrivateRabbitMq, TestRegistry,
};
use serde_json::Value;
use sqlx::Connection;
use tokio::time::Instant;

/// Deadline of every wait on a state change (outages, restarts, reconnections).
const WAIT: Duration = Duration::from_secs(90);
const QUERY: &str =
    "/index/static?label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest";
/// The pool's acquire timeout in the outage tests: far longer than any client waits, so
/// an answer proves the api did not queue up for the pool.
const LONG_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a client waits for one answer in the outage tests.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// The api as its binary runs it (testkit's `Process::api`), once it listens.
async fn start_api(config: Config) -> Process {
    let api = Process::api(config).await;
    eventually("the api to listen", WAIT, || async {
        try_get(&api, "/healthz", &[]).await.ok()
    })
    .await;
    api
}

/// One GET of the api's public listener that gives up after `CLIENT_TIMEOUT`.
async fn try_get(api: &Process, path: &str, headers: &[(&str, &str)]) -> reqwest::Result<Answer> {
    let client = reqwest::Client::builder()
        .timeout(CLIENT_TIMEOUT)
        .build()
        .unwrap();
    let mut request = client.get(format!("{}{path}", api.public_url()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await?;
    Ok(Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.bytes().await?.to_vec(),
    })
}

/// Fails the test when no answer comes within `CLIENT_TIMEOUT`.
async fn get(api: &Process, path: &str, headers: &[(&str, &str)]) -> Answer {
    try_get(api, path, headers)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// A configuration for the api against `database_url`, broker unreachable unless set.
fn config(database_url: String) -> Config {
    let mut config = Config::default();
    config.database.url = database_url.into();
    config.amqp.url = "amqp://guest:guest@127.0.0.1:1/%2f".to_owned().into();
    config.api.webhook_token = Some("secret".to_owned().into());
    config.history.enabled = false;
    config.api.publish_pulls = false;
    config
}

/// Pushes a Flatpak app to a fresh registry and indexes it into `url`.
async fn index_an_app(url: &str) -> TestRegistry {
    let registry = TestRegistry::new().await.unwrap();
    registry
        .push_image(
            "apps/calc",
            Some("latest"),
            &ImageSpec::flatpak("org.example.Calc", "x86_64"),
        )
        .await
        .unwrap();
    let mut config = Config::default();
    config.registry.url = registry.url().parse().unwrap();
    config.database.url = url.to_owned().into();
    let store = Store::connect(&config.database).await.unwrap();
    Syncer::new(
        RegistryClient::new(&config.registry).unwrap(),
        store.clone(),
    )
    .refetch(&RepositoryName::parse("apps/calc").unwrap())
    .await
    .unwrap();
    store.pool().close().await;
    registry
}

/// Item 3: the api's sessions cannot write, and no read path can run longer than
/// `api.statement_timeout_ms`.
#[tokio::test]
async fn api_sessions_are_read_only_and_every_read_path_is_time_limited() {
    let db = TestStore::start().await;
    let mut config = config(db.url());
    config.api.statement_timeout = Duration::from_millis(300);
    let store = regindex_api::database::store(&config).unwrap();

    let write = sqlx::query("UPDATE data_version SET version = version + 1")
        .execute(store.pool())
        .await
        .unwrap_err();
    let code = write
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    assert_eq!(
        code.as_deref(),
        Some("25006"),
        "read-only transaction: {write}"
    );
    for (setting, expected) in [("statement_timeout", "300ms"), ("jit", "off")] {
        let value: String = sqlx::query_scalar(&format!("SHOW {setting}"))
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(value, expected, "{setting}");
    }

    // Every table locked by another session: each read path waits on the lock until its
    // statement is cancelled. Without a limit the requests would wait for the lock.
    let mut locker = sqlx::PgConnection::connect(&db.url()).await.unwrap();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
            .fetch_all(&mut locker)
            .await
            .unwrap();
    let quoted: Vec<String> = tables.iter().map(|t| format!("\"{t}\"")).collect();
    sqlx::raw_sql(&format!(
        "BEGIN; LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        quoted.join(", ")
    ))
    .execute(&mut locker)
    .await
    .unwrap();

    let state = AppState::new(Arc::new(config), store.clone());
    let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let operator = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", public.local_addr().unwrap());
    let operator_base = format!("http://{}", operator.local_addr().unwrap());
    let servers = [
        tokio::spawn(axum::serve(public, regindex_api::router(state.clone())).into_future()),
        tokio::spawn(
            axum::serve(
                operator,
                regindex_api::operator_router(&state, ApiMetrics::new()),
            )
            .into_future(),
        ),
    ];
    // Generous: a time-limited path answers within ~300 ms; an unlimited one never.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let icon = format!("/icons/{}.png", "a".repeat(64));
    for (base, path) in [
        (&base, QUERY),
        (&base, "/index/dynamic?tag=latest"),
        (&base, "/"),
        (&base, "/repository/apps/calc"),
        (&base, "/v1/search?q=calc"),
        (&base, icon.as_str()),
        (&operator_base, "/stats/counts"),
    ] {
        let response = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path} did not answer: {e}"));
        // Too slow is unavailable, on every listener and page alike.
        assert_eq!(response.status(), 503, "{path}");
        if path.starts_with("/index/") {
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"], "unavailable", "{path}");
        }
    }
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut locker)
        .await
        .unwrap();
    let _ = locker.close().await;
    assert_eq!(
        client
            .get(format!("{base}{QUERY}"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    for server in servers {
        server.abort();
    }
    store.pool().close().await;
    db.finish().await;
}

/// Item 8: while PostgreSQL is down, a query answered before gets that answer again,
/// marked stale, without waiting for the pool; a new query gets 503 at once.
#[tokio::test]
async fn a_database_outage_serves_the_last_good_answers() {
    let mut pg = PrivatePostgres::new().await.unwrap();
    let url = pg.create_database("regindex").await.unwrap();
    migrate(&url).await;
    let _registry = index_an_app(&url).await;
    let mut config = config(url);
    config.database.acquire_timeout = LONG_ACQUIRE_TIMEOUT;
    let api = start_api(config).await;
    eventually("the database to be up", WAIT, || async {
        let ready = get(&api, "/readyz", &[]).await;
        (ready.status == 200 || ready.json()["detail"]["database"] == "up").then_some(())
    })
    .await;

    let fresh = get(&api, QUERY, &[]).await;
    assert_eq!(fresh.status, 200);
    assert_eq!(fresh.json()["Results"][0]["Name"], "apps/calc");
    assert!(fresh.header("x-regindex-stale").is_none());
    let cache_control = fresh.header("cache-control").unwrap();
    assert!(
        cache_control.contains("stale-if-error=86400"),
        "{cache_control}"
    );
    let etag = fresh.header("etag").unwrap().to_owned();

    pg.stop().await.unwrap();
    // Every answer is immediate (the client gives up long before the pool would): first
    // from memory, as current, until the api notices that it no longer hears of changes;
    // then marked stale.
    let stale = eventually("the answer to be marked stale", WAIT, || async {
        let answer = get(&api, QUERY, &[]).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, fresh.body);
        (answer.header("x-regindex-stale") == Some("true")).then_some(answer)
    })
    .await;
    assert_eq!(stale.header("warning"), Some("110 - \"Response is Stale\""));
    assert_eq!(stale.header("etag"), Some(etag.as_str()));
    assert!(stale.header("age").is_some());
    let cache_control = stale.header("cache-control").unwrap();
    assert!(cache_control.contains("max-age=0"), "{cache_control}");

    // Once the outage is known, every answer is immediate.
    let ready = eventually("readiness to report the database down", WAIT, || async {
        let ready = get(&api, "/readyz", &[]).await;
        (ready.status == 503 && ready.json()["detail"]["database"] == "down").then_some(ready)
    })
    .await;
    assert_eq!(ready.json()["error"], "unavailable");
    // What an operator needs most when not ready: the database connections' state.
    let connections = &ready.json()["detail"]["database_connections"];
    assert!(connections["primary_listener"].is_string(), "{connections}");
    let not_modified = get(&api, QUERY, &[("if-none-match", &etag)]).await;
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.header("x-regindex-stale"), Some("true"));
    let never_asked = get(&api, "/index/static?tag=other", &[]).await;
    assert_eq!(never_asked.status, 503);
    assert_eq!(never_asked.json()["error"], "unavailable");
    // The same query on /index/dynamic: the same last answer, still never cached.
    let dynamic = get(&api, &QUERY.replace("static", "dynamic"), &[]).await;
    assert_eq!(dynamic.status, 200);
    assert_eq!(dynamic.body, fresh.body);
    assert_eq!(dynamic.header("x-regindex-stale"), Some("true"));
    assert_eq!(dynamic.header("cache-control"), Some("no-store"));

    pg.start().await.unwrap();
    let fresh_again = eventually("fresh answers once the database is back", WAIT, || async {
        let answer = get(&api, QUERY, &[]).await;
        (answer.status == 200 && answer.header("x-regindex-stale").is_none()).then_some(answer)
    })
    .await;
    assert_eq!(fresh_again.body, fresh.body);
    // Outage tests end with the database down: how the api ends is not what they test.
    let _ = api.stop().await;
}

/// Item 9: the api starts while PostgreSQL is down, says what it waits for (naming the
/// server), answers liveness meanwhile, and becomes ready once the database is up.
#[tokio::test]
async fn the_api_binary_waits_for_the_database_at_start_up() {
    TestBus::run(|bus| async move {
        let mut pg = PrivatePostgres::new().await.unwrap();
        let url = pg.create_database("regindex").await.unwrap();
        migrate(&url).await;
        pg.stop().await.unwrap();

        let port = free_port().unwrap();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_regindex-api"));
        command
            .env_remove("REGINDEX_CONFIG")
            .env("REGINDEX_DATABASE__URL", &url)
            .env("REGINDEX_API__LISTEN", format!("127.0.0.1:{port}"))
            .env(
                "REGINDEX_API__OPERATOR_LISTEN",
                format!("127.0.0.1:{}", free_port().unwrap()),
            )
            .env("REGINDEX_API__WEBHOOK_TOKEN", "secret")
            .env("REGINDEX_API__PUBLISH_PULLS", "false")
            .env("REGINDEX_HISTORY__ENABLED", "false")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in amqp_env(&bus) {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();
        let log = regindex_testkit::capture_stderr(child.stderr.take().unwrap());

        let host = pg.host();
        eventually("a log line naming the database server", WAIT, || async {
            log.lock().unwrap().contains(&host).then_some(())
        })
        .await;
        assert!(
            child.try_wait().unwrap().is_none(),
            "the api exited:\n{}",
            log.lock().unwrap()
        );
        let client = reqwest::Client::new();
        let get = |path: &'static str| {
            let client = client.clone();
            async move {
                client
                    .get(format!("http://127.0.0.1:{port}{path}"))
                    .send()
                    .await
                    .ok()
            }
        };
        let healthz = eventually("/healthz", WAIT, || get("/healthz")).await;
        assert_eq!(healthz.status(), 200);
        let readyz = get("/readyz").await.unwrap();
        assert_eq!(readyz.status(), 503);
        let body: Value = readyz.json().await.unwrap();
        assert_eq!(body["detail"]["database"], "down");

        pg.start().await.unwrap();
        eventually("/readyz to say ready", WAIT, || async {
            let ready = get("/readyz").await?;
            (ready.status() == 200).then_some(())
        })
        .await;
        assert!(child.try_wait().unwrap().is_none());
        let index = get(QUERY).await.unwrap();
        assert_eq!(index.status(), 200);
        let _ = child.kill().await;
    })
    .await;
}

/// Item 10: `/readyz` is 503 while webhooks cannot be published (broker down), and 200
/// again once the broker is back.
#[tokio::test]
async fn readiness_reports_the_broker() {
    let mut broker = PrivateRabbitMq::new().await.unwrap();
    let db = TestStore::start().await;
    let mut config = config(db.url());
    config.amqp.url = broker.amqp_url().into();
    let api = start_api(config).await;
    let ready = |status: u16, broker: &'static str| {
        let api = &api;
        async move {
            let answer = get(api, "/readyz", &[]).await;
            let reported = if answer.status == 200 {
                answer.json()["broker"].clone()
            } else {
                answer.json()["detail"]["broker"].clone()
            };
            (answer.status == status && reported == broker).then_some(())
        }
    };
    eventually("ready", WAIT, || ready(200, "up")).await;

    broker.stop().await.unwrap();
    eventually("not ready: broker down", WAIT, || ready(503, "down")).await;
    let answer = get(&api, "/readyz", &[]).await;
    assert_eq!(answer.json()["detail"]["database"], "up");
    // The index does not need the broker.
    assert_eq!(get(&api, QUERY, &[]).await.status, 200);

    broker.start().await.unwrap();
    eventually("ready again", WAIT, || ready(200, "up")).await;
    // Outage tests end with the database down: how the api ends is not what they test.
    let _ = api.stop().await;
    db.finish().await;
}

/// The `REGINDEX_AMQP__*` variables of `bus`'s uniquely named topology.
fn amqp_env(bus: &TestBus) -> Vec<(&'static str, String)> {
    let amqp = &bus.config;
    let delays: Vec<String> = amqp
        .retry_delays
        .iter()
        .map(|d| d.as_millis().to_string())
        .collect();
    vec![
        (
            "REGINDEX_AMQP__EVENTS_EXCHANGE",
            amqp.events_exchange.clone(),
        ),
        ("REGINDEX_AMQP__WORK_QUEUE", amqp.work_queue.clone()),
        (
            "REGINDEX_AMQP__DEAD_LETTER_QUEUE",
            amqp.dead_letter_queue.clone(),
        ),
        ("REGINDEX_AMQP__ENVIRONMENT", amqp.environment.clone()),
        ("REGINDEX_AMQP__RETRY_DELAYS_MS", delays.join(",")),
    ]
}

fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1e3
}

/// Times `count` requests of `path`, each expected to answer `status`; sorted.
async fn timed(api: &Process, path: &str, status: u16, count: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let answer = get(api, path, &[]).await;
        times.push(started.elapsed());
        assert_eq!(answer.status, status, "{path}");
    }
    times.sort();
    times
}

/// Benchmark (docs/benchmarks.md): answer times of the index during a database outage,
/// with the default pool acquire timeout (5 s).
///
/// ```sh
/// cargo nextest run --release -p regindex-api --test degrade outage_answer_times \
///     --run-ignored ignored-only --no-capture    # OUTAGE_BENCH_ROUNDS=5
/// ```
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run explicitly (docs/benchmarks.md)"]
async fn outage_answer_times() {
    let rounds: usize = std::env::var("OUTAGE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    const REQUESTS: usize = 200;
    let mut pg = PrivatePostgres::new().await.unwrap();
    let url = pg.create_database("regindex").await.unwrap();
    migrate(&url).await;
    let _registry = index_an_app(&url).await;
    let api = start_api(config(url)).await;
    let report = |what: &str, times: &[Duration]| {
        println!(
            "{what}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} requests",
            percentile_ms(times, 0.5),
            percentile_ms(times, 0.99),
            percentile_ms(times, 1.0),
            times.len()
        );
    };

    let mut first = Vec::new();
    for round in 0..rounds {
        eventually("a fresh answer", WAIT, || async {
            let answer = get(&api, QUERY, &[]).await;
            (answer.status == 200 && answer.header("x-regindex-stale").is_none()).then_some(())
        })
        .await;
        if round == 0 {
            report(
                "database up, cached answer",
                &timed(&api, QUERY, 200, REQUESTS).await,
            );
        }
        pg.stop().await.unwrap();
        let started = Instant::now();
        let answer = get(&api, QUERY, &[]).await;
        first.push(started.elapsed());
        // Stale, or current from memory if the api has not noticed the outage yet.
        assert_eq!(answer.status, 200);
        if round == 0 {
            eventually("the outage to be known", WAIT, || async {
                (get(&api, "/readyz", &[]).await.json()["detail"]["database"] == "down")
                    .then_some(())
            })
            .await;
            report(
                "database down, stale answer",
                &timed(&api, QUERY, 200, REQUESTS).await,
            );
            report(
                "database down, query never answered before (503)",
                &timed(&api, "/index/static?tag=never", 503, REQUESTS).await,
            );
        }
        pg.start().await.unwrap();
    }
    first.sort();
    report(
        "first request right after the database stopped (stale, or from memory)",
        &first,
    );
    // Outage tests end with the database down: how the api ends is not what they test.
    let _ = api.stop().await;
}

/// Issue 13: the data version watch stops trusting its version when its connection is
/// lost, and after the database is back it listens again and re-reads the row: changes
/// committed meanwhile and afterwards are seen, without the safety-net poll.
#[tokio::test]
async fn the_data_version_watch_recovers_after_a_database_restart() {
    let mut pg = PrivatePostgres::new().await.unwrap();
    let url = pg.create_database("regindex").await.unwrap();
    migrate(&url).await;
    let registry = index_an_app(&url).await;
    let mut config = config(url);
    config.registry.url = registry.url().parse().unwrap();
    let store = Store::connect(&config.database).await.unwrap();
    let syncer = Syncer::new(
        RegistryClient::new(&config.registry).unwrap(),
        store.clone(),
    );
    let commit = |repository: &'static str, app_id: &'static str| {
        let (registry, syncer, store) = (&registry, &syncer, &store);
        async move {
            registry
                .push_image(
                    repository,
                    Some("latest"),
                    &ImageSpec::flatpak(app_id, "x86_64"),
                )
                .await
                .unwrap();
            syncer
                .refetch(&RepositoryName::parse(repository).unwrap())
                .await
                .unwrap();
            store.data_version().await.unwrap()
        }
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let watch = DataVersionWatch::spawn(store.connect_options(), Duration::from_secs(86_400), stop);
    let first = store.data_version().await.unwrap();
    tokio::time::timeout(WAIT, watch.wait_for(first))
        .await
        .expect("the watch to listen");

    pg.stop().await.unwrap();
    eventually("the watch to stop trusting its version", WAIT, || async {
        watch.current().is_none().then_some(())
    })
    .await;
    pg.start().await.unwrap();
    let second = commit("apps/draw", "org.example.Draw").await;
    assert!(second > first);
    tokio::time::timeout(WAIT, watch.wait_for(second))
        .await
        .expect("the version committed around the reconnection");
    let third = commit("apps/write", "org.example.Write").await;
    tokio::time::timeout(WAIT, watch.wait_for(third))
        .await
        .expect("the next notification");
    assert_eq!(watch.current(), Some(third));
    store.pool().close().await;
}
