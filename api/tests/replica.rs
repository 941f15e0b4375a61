//! The api reading a streaming replica (`database.read_url`, issue 10): a commit on the
//! primary is served once the replica has replayed it; an answer never goes back to
//! older data, even while the replica's replay is paused or when `read_url` leads to
//! another, laggier replica; equal data gives equal ETags on an api reading the
//! primary and one reading the replica. The servers are private (testkit's
//! `PrivatePostgres` and its `start_replica`), never the shared one.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Answer;
use regindex::bus::testing::TestBus;
use regindex::config::{AmqpConfig, Config};
use regindex::model::RepositoryName;
use regindex::registry::RegistryClient;
use regindex::store::Store;
use regindex::sync::Syncer;
use regindex_testkit::app::Process;
use regindex_testkit::{eventually, ImageSpec, PrivatePostgres, TestRegistry};
use sqlx::{Connection as _, PgConnection};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Deadline of every wait on a state change.
const WAIT: Duration = Duration::from_secs(60);
const QUERY: &str =
    "/index/static?label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest";

/// A primary with the schema, its streaming replica, and a registry indexed into the
/// primary the way the worker does it.
struct Cluster {
    primary: PrivatePostgres,
    replica: PrivatePostgres,
    primary_url: String,
    replica_url: String,
    registry: TestRegistry,
    store: Store,
    syncer: Syncer,
}

impl Cluster {
    async fn start() -> Self {
        let primary = PrivatePostgres::new().await.unwrap();
        let primary_url = primary.create_database("regindex").await.unwrap();
        let mut config = Config::default();
        config.database.url = primary_url.clone().into();
        let store = Store::connect_unchecked(&config.database).await.unwrap();
        store.migrate().await.unwrap();
        // After the schema: the base backup holds it, the replica streams the rest.
        let replica = primary.start_replica().await.unwrap();
        let replica_url = replica.url("regindex");
        let registry = TestRegistry::new().await.unwrap();
        config.registry.url = registry.url().parse().unwrap();
        let syncer = Syncer::new(
            RegistryClient::new(&config.registry).unwrap(),
            store.clone(),
        );
        Self {
            primary,
            replica,
            primary_url,
            replica_url,
            registry,
            store,
            syncer,
        }
    }

    /// Pushes a Flatpak app and commits it on the primary (the worker's refetch path).
    async fn push(&self, repository: &str, app_id: &str) {
        self.registry
            .push_image(
                repository,
                Some("latest"),
                &ImageSpec::flatpak(app_id, "x86_64"),
            )
            .await
            .unwrap();
        self.syncer
            .refetch(&RepositoryName::parse(repository).unwrap())
            .await
            .unwrap();
    }

    async fn primary_version(&self) -> i64 {
        self.store.data_version().await.unwrap()
    }

    /// An api reading `read_url` (else the primary), learning versions from the
    /// primary, without a broker (the index does not need one).
    async fn api(&self, read_url: Option<String>) -> Process {
        let amqp = AmqpConfig {
            url: "amqp://guest:guest@127.0.0.1:1/%2f".to_owned().into(),
            ..AmqpConfig::default()
        };
        self.api_with_broker(read_url, amqp).await
    }

    /// As `api`, publishing webhooks to `amqp` (so that `/readyz` can say ready).
    async fn api_with_broker(&self, read_url: Option<String>, amqp: AmqpConfig) -> Process {
        let mut config = Config::default();
        config.database.url = self.primary_url.clone().into();
        config.database.read_url = read_url.map(Into::into);
        config.amqp = amqp;
        config.api.webhook_token = Some("secret".to_owned().into());
        config.history.enabled = false;
        config.api.publish_pulls = false;
        Process::api(config).await
    }

    async fn stop(self) {
        self.store.pool().close().await;
        drop(self.replica);
        drop(self.primary);
    }
}

/// A session on the replica, for pausing and resuming its replay.
async fn standby(url: &str) -> PgConnection {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(in_recovery, "{url} is a standby");
    conn
}

async fn pause_replay(conn: &mut PgConnection) {
    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(&mut *conn)
        .await
        .unwrap();
}

async fn resume_replay(conn: &mut PgConnection) {
    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&mut *conn)
        .await
        .unwrap();
}

/// GETs `url` with a client of its own.
async fn get(url: &str) -> Answer {
    common::get(&reqwest::Client::new(), url, None).await
}

/// `regindex_api_replica_lag_versions` on the api's `/metrics`.
async fn lag_versions(api: &Process) -> Option<i64> {
    let metrics = get(&format!("{}/metrics", api.operator_url())).await.body;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("regindex_api_replica_lag_versions "))
        .and_then(|value| value.trim().parse().ok())
}

/// A push committed on the primary is served by an api reading the replica once the
/// replica has replayed it; `/readyz` and `/metrics` report the replica's position.
#[tokio::test]
async fn an_api_reading_the_replica_serves_a_push_once_replayed() {
    TestBus::run(|bus| async move {
        let cluster = Cluster::start().await;
        cluster.push("apps/calc", "org.example.Calc").await;
        let api = cluster
            .api_with_broker(Some(cluster.replica_url.clone()), bus.config.clone())
            .await;
        let url = format!("{}{QUERY}", api.public_url());
        eventually("the first answer", WAIT, || async {
            (get(&url).await.names() == ["apps/calc"]).then_some(())
        })
        .await;

        cluster.push("apps/draw", "org.example.Draw").await;
        let version = cluster.primary_version().await;
        let answer = eventually("the push to be served", WAIT, || async {
            let answer = get(&url).await;
            (answer.names().len() == 2).then_some(answer)
        })
        .await;
        assert_eq!(answer.status, 200);
        assert!(!answer.stale);

        let replica = eventually(
            "readiness to report the replica caught up",
            WAIT,
            || async {
                let ready = get(&format!("{}/readyz", api.public_url())).await;
                let connections = ready.json()["database_connections"].clone();
                (ready.status == 200
                    && connections["replica"]["announced_version"] == version
                    && connections["replica"]["replayed_version"] == version)
                    .then_some(connections)
            },
        )
        .await;
        assert_eq!(replica["primary_listener"], "listening", "{replica}");
        assert_eq!(replica["replica"]["versions_behind"], 0, "{replica}");
        assert_eq!(lag_versions(&api).await, Some(0));
        let metrics = get(&format!("{}/metrics", api.operator_url())).await.body;
        assert!(
            metrics.contains("regindex_api_replica_lag_seconds"),
            "{metrics}"
        );
        api.stop().await.unwrap();
        cluster.stop().await;
    })
    .await;
}

/// While the replica's replay is paused, the api has learnt the newer version from the
/// primary but keeps serving the answer the replica can back, current and unchanged
/// (same ETag), and reports the lag; once replay resumes it serves the new answer, and
/// never the old one again.
#[tokio::test]
async fn answers_never_go_back_while_the_replica_lags() {
    let cluster = Cluster::start().await;
    cluster.push("apps/calc", "org.example.Calc").await;
    let api = cluster.api(Some(cluster.replica_url.clone())).await;
    let url = format!("{}{QUERY}", api.public_url());
    let before = eventually("the first answer", WAIT, || async {
        let answer = get(&url).await;
        (answer.names() == ["apps/calc"]).then_some(answer)
    })
    .await;

    let mut standby = standby(&cluster.replica_url).await;
    pause_replay(&mut standby).await;
    cluster.push("apps/draw", "org.example.Draw").await;
    eventually("the api to learn the newer version", WAIT, || async {
        (lag_versions(&api).await >= Some(1)).then_some(())
    })
    .await;
    // The api knows of the newer version; the replica cannot back it: the older,
    // consistent answer, as current.
    for _ in 0..20 {
        let answer = get(&url).await;
        assert_eq!(answer.status, 200);
        assert!(!answer.stale);
        assert_eq!(answer.names(), ["apps/calc"]);
        assert_eq!(answer.etag, before.etag);
    }

    resume_replay(&mut standby).await;
    eventually("the new answer", WAIT, || async {
        (get(&url).await.names().len() == 2).then_some(())
    })
    .await;
    for _ in 0..20 {
        let answer = get(&url).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.names().len(), 2, "an answer went back: {answer:?}");
    }
    let _ = standby.close().await;
    api.stop().await.unwrap();
    cluster.stop().await;
}

/// Two apis, one reading the primary and one the replica, give the same bytes and ETag
/// for the same data.
#[tokio::test]
async fn apis_on_the_primary_and_the_replica_give_equal_etags() {
    let cluster = Cluster::start().await;
    cluster.push("apps/calc", "org.example.Calc").await;
    cluster.push("apps/draw", "org.example.Draw").await;
    let on_primary = cluster.api(None).await;
    let on_replica = cluster.api(Some(cluster.replica_url.clone())).await;
    let [a, b] = [&on_primary, &on_replica].map(|api| format!("{}{QUERY}", api.public_url()));
    let (a, b) = eventually("both apis to serve both apps", WAIT, || async {
        let (a, b) = (get(&a).await, get(&b).await);
        (a.names().len() == 2 && b.names().len() == 2).then_some((a, b))
    })
    .await;
    assert!(a.etag.is_some());
    assert_eq!(a.etag, b.etag);
    assert_eq!(a.body, b.body);
    on_primary.stop().await.unwrap();
    on_replica.stop().await.unwrap();
    cluster.stop().await;
}

/// A TCP forwarder whose upstream can be switched, closing every forwarded connection:
/// `read_url` leading to another replica (a load balancer, a failover).
struct SwitchingProxy {
    addr: SocketAddr,
    upstream: Arc<Mutex<SocketAddr>>,
    connections: Arc<Mutex<JoinSet<()>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl SwitchingProxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = Arc::new(Mutex::new(upstream));
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let accept = tokio::spawn({
            let (upstream, connections) = (upstream.clone(), connections.clone());
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let to = *upstream.lock().unwrap();
                    connections.lock().unwrap().spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(to).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                }
            }
        });
        Self {
            addr,
            upstream,
            connections,
            accept,
        }
    }

    /// New connections go to `upstream`; returns once the open ones are closed.
    async fn switch_to(&self, upstream: SocketAddr) {
        *self.upstream.lock().unwrap() = upstream;
        let mut open = std::mem::take(&mut *self.connections.lock().unwrap());
        open.abort_all();
        while open.join_next().await.is_some() {}
    }
}

impl Drop for SwitchingProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.connections.lock().unwrap().abort_all();
    }
}

fn socket(pg: &PrivatePostgres) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], pg.port()))
}

/// `read_url` leads to a replica that has replayed the newest version, then to another
/// one that has not: the api does not read the laggier one (a query it has not
/// answered yet waits for it, and meanwhile is not answered from older data), and once
/// that replica catches up, answers with the newest data.
#[tokio::test]
async fn switching_to_a_laggier_replica_does_not_go_back() {
    let cluster = Cluster::start().await;
    cluster.push("apps/calc", "org.example.Calc").await;
    let laggy = cluster.primary.start_replica().await.unwrap();
    let laggy_url = laggy.url("regindex");
    let proxy = SwitchingProxy::start(socket(&cluster.replica)).await;
    let read_url = format!("postgres://postgres@{}/regindex", proxy.addr);
    let api = cluster.api(Some(read_url)).await;
    let url = format!("{}{QUERY}", api.public_url());
    eventually("the first answer", WAIT, || async {
        (get(&url).await.names() == ["apps/calc"]).then_some(())
    })
    .await;

    let mut standby = standby(&laggy_url).await;
    // Wait until the laggy replica has the first push, so that it is behind by exactly
    // the next one.
    let version = cluster.primary_version().await;
    eventually("the laggy replica to replay the first push", WAIT, || {
        let laggy_url = laggy_url.clone();
        async move {
            let mut conn = PgConnection::connect(&laggy_url).await.ok()?;
            let replayed: i64 = sqlx::query_scalar("SELECT version FROM data_version")
                .fetch_one(&mut conn)
                .await
                .ok()?;
            (replayed >= version).then_some(())
        }
    })
    .await;
    pause_replay(&mut standby).await;
    cluster.push("apps/draw", "org.example.Draw").await;
    let newest = eventually("the api to serve the second push", WAIT, || async {
        let answer = get(&url).await;
        (answer.names().len() == 2).then_some(answer)
    })
    .await;

    proxy.switch_to(socket(&laggy)).await;
    // The answer it has is still current for it; an answer it has not rendered yet
    // (another query) must not come from the laggy replica's older data.
    let other_query = format!(
        "{}/index/static?architecture=amd64&os=linux",
        api.public_url()
    );
    // Each uncached request waits for the replica up to the pool's acquire timeout.
    for _ in 0..2 {
        let answer = get(&url).await;
        assert_eq!(answer.etag, newest.etag);
        let other = get(&other_query).await;
        assert!(
            other.status != 200 || other.names().len() == 2,
            "an answer from older data: {other:?}"
        );
    }
    resume_replay(&mut standby).await;
    eventually(
        "the new query answered from the caught-up replica",
        WAIT,
        || async {
            let other = get(&other_query).await;
            (other.status == 200 && other.names().len() == 2).then_some(())
        },
    )
    .await;
    let _ = standby.close().await;
    api.stop().await.unwrap();
    drop(proxy);
    drop(laggy);
    cluster.stop().await;
}
