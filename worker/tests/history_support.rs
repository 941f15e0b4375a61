//! The whole history pipeline for tests: a real `docker-registry` sending its
//! notifications to the api (`POST /events` + `/stats`), RabbitMQ with unique names, a
//! fresh PostgreSQL database, and the worker (work consumer and history consumer).
//! Optionally several apis (the registry notifies each) and several workers, each one
//! stoppable on its own. Included by the history and scale test files
//! (`mod history_support;`).

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use lapin::options::QueueDeleteOptions;
use regindex::bus::testing::TestBus;
use regindex::config::Config;
use regindex::store::Store;
use regindex_testkit::{
    free_port, NotificationEndpoint, TestDatabase, TestRegistry, TestRegistryBuilder,
};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "history-test-token";
pub const WAIT: Duration = Duration::from_secs(30);

pub struct Stack {
    pub bus: TestBus,
    pub db: Option<TestDatabase>,
    pub config: Config,
    /// The first api's public listener (`POST /events`).
    pub api: SocketAddr,
    /// The first api's operator listener (`/stats`, `/openapi.json`).
    pub operator: SocketAddr,
    pub registry: TestRegistry,
    pub store: Store,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    /// Every api process, the first one included; `stop_api` ends one.
    pub apis: Vec<Process>,
    /// Every worker process (none with `no_worker`); `stop_worker` ends one.
    pub workers: Vec<Process>,
}

/// One api or worker run in-process as its binary runs it, with its own shutdown.
pub struct Process {
    /// The api's public listener, or the worker's `/metrics` listener.
    pub addr: SocketAddr,
    /// The api's operator listener (`/metrics`, `/stats`); the worker's `/metrics` too.
    pub operator: SocketAddr,
    shutdown: CancellationToken,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Process {
    pub fn is_running(&self) -> bool {
        self.task.lock().unwrap().is_some()
    }

    /// Shuts it down as SIGTERM does, and waits until it has ended.
    async fn stop(&self) {
        self.shutdown.cancel();
        let task = self.task.lock().unwrap().take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(Duration::from_secs(40), task).await;
        }
    }
}

/// Options of a stack.
#[derive(Default)]
pub struct Options {
    pub htpasswd: bool,
    /// `history.aliases`: canonical host and aliases; `{port}` stands for the registry's port.
    pub aliases: Option<(String, Vec<String>)>,
    /// No worker (backfill tests drive the scan themselves).
    pub no_worker: bool,
    /// The registry does not notify the api.
    pub no_notifications: bool,
    /// `worker.coalesce_ms`; 50 when `None`.
    pub coalesce_ms: Option<u64>,
    /// `amqp.queue_type` of the stack's queues.
    pub queue_type: regindex::config::QueueType,
    /// Api processes, each a notification endpoint of the registry; at least one.
    pub apis: usize,
    /// Worker processes unless `no_worker`; at least one.
    pub workers: usize,
    /// `worker.scan_interval_secs`; 0 (no scan) when `None`.
    pub scan_interval_secs: Option<u64>,
    /// `amqp.url`: these brokers (e.g. a `RabbitMqCluster`'s nodes) instead of the local one.
    pub amqp_urls: Option<Vec<String>>,
}

impl Stack {
    pub async fn start(options: Options) -> Self {
        let bus = match options.amqp_urls {
            Some(urls) => TestBus::on(urls.into(), options.queue_type).await,
            None => TestBus::with_queue_type(options.queue_type).await,
        }
        .expect("RabbitMQ on 127.0.0.1:5672 or at Options::amqp_urls");
        let db = TestDatabase::create()
            .await
            .expect("PostgreSQL on 127.0.0.1:5432");
        let mut api_listeners = Vec::new();
        for _ in 0..options.apis.max(1) {
            let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let operator = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            api_listeners.push(regindex_api::Listeners { public, operator });
        }
        let api = api_listeners[0].public.local_addr().unwrap();
        let operator = api_listeners[0].operator.local_addr().unwrap();

        let mut builder: TestRegistryBuilder = TestRegistry::builder();
        // Several apis: the registry sends every event to each of them (an endpoint per
        // api, each with its own retry queue). Safe because the work is idempotent: a
        // refetch makes the index equal to the registry however often it runs, and the
        // history records an event id once (`ON CONFLICT (event_id) DO NOTHING`, the
        // aggregates from the new ids only). An api that is down only delays its own copy.
        for listeners in api_listeners.iter().filter(|_| !options.no_notifications) {
            let public = listeners.public.local_addr().unwrap();
            let mut endpoint =
                NotificationEndpoint::new(format!("http://{public}/events")).bearer_token(TOKEN);
            endpoint.backoff = Duration::from_millis(200);
            endpoint.timeout = Duration::from_secs(10);
            builder = builder.notify(endpoint);
        }
        if options.htpasswd {
            builder = builder.htpasswd();
        }
        let registry = builder.start().await.expect("docker-registry");

        let mut config = Config::default();
        config.amqp = bus.config.clone();
        config.history.queue = format!("{}.history", bus.config.work_queue);
        config.history.batch_max_wait = std::time::Duration::from_millis(50);
        config.database.url = db.url().into();
        config.registry.url = registry.url().parse().unwrap();
        if let Some((user, password)) = registry.credentials() {
            config.registry.username = Some(user.to_owned());
            config.registry.password = Some(password.to_owned().into());
        }
        config.api.webhook_token = Some(TOKEN.to_owned().into());
        config.api.body_limit_bytes = 8 << 20;
        config.worker.metrics_listen = ([127, 0, 0, 1], free_port().unwrap()).into();
        config.worker.scan_interval = options
            .scan_interval_secs
            .filter(|&secs| secs > 0)
            .map(std::time::Duration::from_secs);
        config.worker.gc_interval = None;
        config.worker.coalesce =
            std::time::Duration::from_millis(options.coalesce_ms.unwrap_or(50));
        config.history.prune_interval = None;
        if let Some((canonical, aliases)) = options.aliases {
            let port = registry.port().to_string();
            let aliases = [(
                canonical.replace("{port}", &port),
                aliases.iter().map(|a| a.replace("{port}", &port)).collect(),
            )];
            config.history.aliases =
                regindex::model::AliasMap::new(&aliases.into_iter().collect(), "", false).unwrap();
        }
        config.validate().unwrap();

        let store = Store::connect_unchecked(&config.database).await.unwrap();
        store.migrate().await.unwrap();

        let shutdown = CancellationToken::new();
        // The api as the binary runs it: events on the public listener, the statistics on
        // the operator one.
        let apis = api_listeners
            .into_iter()
            .map(|listeners| {
                let process_shutdown = shutdown.child_token();
                let addr = listeners.public.local_addr().unwrap();
                let operator = listeners.operator.local_addr().unwrap();
                let serving = regindex_api::serve(
                    config.clone(),
                    listeners,
                    process_shutdown.clone().cancelled_owned(),
                );
                let task = tokio::spawn(async move {
                    if let Err(e) = serving.await {
                        eprintln!("api {addr} failed: {e:#}");
                    }
                });
                Process {
                    addr,
                    operator,
                    shutdown: process_shutdown,
                    task: Some(task).into(),
                }
            })
            .collect();
        let worker_count = if options.no_worker {
            0
        } else {
            options.workers.max(1)
        };
        let mut metrics_ports = vec![config.worker.metrics_listen.port()];
        let workers = (0..worker_count)
            .map(|n| {
                let mut config = config.clone();
                // The first worker's `/metrics` is `config.worker.metrics_listen`. A port
                // just released may come back from the next `free_port`: draw again.
                if n > 0 {
                    let port = std::iter::repeat_with(|| free_port().unwrap())
                        .find(|port| !metrics_ports.contains(port))
                        .unwrap();
                    metrics_ports.push(port);
                    config.worker.metrics_listen = ([127, 0, 0, 1], port).into();
                }
                let addr = config.worker.metrics_listen;
                let process_shutdown = shutdown.child_token();
                let stop = process_shutdown.clone();
                let task =
                    tokio::spawn(async move { regindex_worker::run(config, stop).await.unwrap() });
                Process {
                    addr,
                    operator: addr,
                    shutdown: process_shutdown,
                    task: Some(task).into(),
                }
            })
            .collect();
        Self {
            bus,
            db: Some(db),
            config,
            api,
            operator,
            registry,
            store,
            http: reqwest::Client::new(),
            shutdown,
            apis,
            workers,
        }
    }

    /// Stops api process `n` (0: the one `api` and `operator` point at).
    pub async fn stop_api(&self, n: usize) {
        self.apis[n].stop().await;
    }

    /// Stops worker process `n`.
    pub async fn stop_worker(&self, n: usize) {
        self.workers[n].stop().await;
    }

    /// Runs `test` on a fresh stack and cleans up, also when it panicked.
    pub async fn run<F, Fut>(options: Options, test: F)
    where
        F: FnOnce(Arc<Stack>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let stack = Arc::new(Stack::start(options).await);
        let outcome = AssertUnwindSafe(test(stack.clone())).catch_unwind().await;
        match Arc::try_unwrap(stack) {
            Ok(stack) => stack.cleanup().await,
            Err(_) => eprintln!("stack still shared; not cleaned up"),
        }
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    async fn cleanup(mut self) {
        self.shutdown.cancel();
        for process in self.workers.iter().chain(&self.apis) {
            process.stop().await;
        }
        let _ = self
            .bus
            .channel
            .queue_delete(&self.config.history.queue, QueueDeleteOptions::default())
            .await;
        self.bus.cleanup().await;
        self.store.pool().close().await;
        if let Some(db) = self.db.take() {
            let _ = db.drop().await;
        }
    }

    pub fn host(&self) -> String {
        self.registry.host()
    }

    /// `GET` on the api's operator listener; panics unless 200.
    pub async fn get(&self, path_and_query: &str) -> Value {
        let response = self
            .http
            .get(format!("http://{}{path_and_query}", self.operator))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "{path_and_query}: {body}");
        body
    }

    /// `GET` on the api's operator listener.
    pub async fn get_status(&self, path_and_query: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("http://{}{path_and_query}", self.operator))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Posts a notification envelope as the registry does.
    pub async fn post_events(&self, events: &[Value]) -> reqwest::Response {
        self.http
            .post(format!("http://{}/events", self.api))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .header(
                "Content-Type",
                "application/vnd.docker.distribution.events.v1+json",
            )
            .json(&serde_json::json!({ "events": events }))
            .send()
            .await
            .unwrap()
    }

    /// The one image row of `repository:tag`, if listed.
    pub async fn image(&self, repository: &str, tag: &str) -> Option<Value> {
        let page = self
            .get(&format!(
                "/stats/images?repository={repository}&per_page=1000"
            ))
            .await;
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["tag"] == tag)
            .cloned()
    }

    /// Rows of the history's raw event log (every recorded event).
    pub async fn recorded_events(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM history_events")
            .fetch_one(self.store.pool())
            .await
            .unwrap()
    }

    /// Whether the index (not the history) holds `repository:tag`.
    pub async fn indexed(&self, repository: &str, tag: &str) -> bool {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM tags t JOIN repositories r ON r.id = t.repository_id
             WHERE r.name = $1 AND t.tag = $2",
        )
        .bind(repository)
        .bind(tag)
        .fetch_one(self.store.pool())
        .await
        .unwrap()
            > 0
    }

    /// `skopeo copy` between two references (TLS off, the registry's credentials).
    pub async fn skopeo_copy(&self, from: &str, to: &str) {
        let mut command = tokio::process::Command::new("skopeo");
        command.args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ]);
        if let Some((user, password)) = self.registry.credentials() {
            let creds = format!("{user}:{password}");
            if from.starts_with("docker://") {
                command.arg(format!("--src-creds={creds}"));
            }
            if to.starts_with("docker://") {
                command.arg(format!("--dest-creds={creds}"));
            }
        }
        let output = command.args([from, to]).output().await.expect("skopeo");
        assert!(
            output.status.success(),
            "skopeo copy {from} {to}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// A registry pull event as docker/distribution sends it.
pub fn pull_event(id: &str, host: &str, repository: &str, tag: &str, digest: &str) -> Value {
    serde_json::json!({
        "id": id,
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "action": "pull",
        "target": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "size": 483,
            "digest": digest,
            "length": 483,
            "repository": repository,
            "url": format!("http://{host}/v2/{repository}/manifests/{digest}"),
            "tag": tag,
        },
        "request": {
            "id": uuid_like(id),
            "addr": "10.1.2.3:40090",
            "host": host,
            "method": "GET",
            "useragent": "containerd/1.7",
        },
        "actor": {},
        "source": {"addr": "vm:5000", "instanceID": "00000000-0000-0000-0000-000000000000"},
    })
}

fn uuid_like(id: &str) -> String {
    format!("req-{id}")
}
