//! The one spawn-app harness of the integration tests: a real `docker-registry`, a fresh
//! migrated database, and on request RabbitMQ names of the test's own, the api (as its
//! binary runs it, or only its public router) and the worker, each process stoppable on
//! its own.
//!
//! ```no_run
//! # async fn example() {
//! use regindex_testkit::app::{App, TestStore};
//!
//! // Only a migrated database (store tests):
//! let db = TestStore::start().await;
//! // ... db.store, db.config, db.url() ...
//! db.finish().await;
//!
//! // Registry, database, broker names, one api and one worker; the registry notifies the
//! // api. `run` cleans up also when the test panics.
//! App::builder()
//!     .api()
//!     .worker()
//!     .coalesce_ms(100)
//!     .config(|config| config.worker.scan_interval_secs = 0)
//!     .run(|app| async move {
//!         app.registry.push_image("apps/calc", Some("1"), &regindex_testkit::ImageSpec::flatpak("org.example.Calc", "x86_64")).await.unwrap();
//!         // ... app.store, app.bus(), app.api(), app.operator(), app.stop_worker(0) ...
//!     })
//!     .await;
//! # }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use lapin::options::QueueDeleteOptions;
use regindex::bus::testing::TestBus;
use regindex::config::{Config, DatabaseConfig, QueueType};
use regindex::model::{RepositoryName, RepositoryState};
use regindex::registry::RegistryClient;
use regindex::store::Store;
use regindex::sync::{RefetchReport, SyncError, Syncer};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::{free_port, NotificationEndpoint, TestDatabase, TestRegistry, TestRegistryBuilder};

/// The bearer token of `POST /events` (`api.webhook_token`) and of the registry's
/// notifications.
pub const TOKEN: &str = "test-webhook-token";

/// The database part: a fresh PostgreSQL database with the schema applied, and a
/// [`Store`] on it. Dropped by [`TestStore::finish`] (or, best effort, when dropped).
pub struct TestStore {
    /// Connected, schema checked.
    pub store: Store,
    /// What `store` connected with: `url` is this database.
    pub config: DatabaseConfig,
    db: Option<TestDatabase>,
}

impl TestStore {
    /// A migrated database with a pool of 8 connections.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// `adjust` changes the database configuration (pool size, timeouts) before anything
    /// connects; `url` is set already.
    pub async fn start_with(adjust: impl FnOnce(&mut DatabaseConfig)) -> Self {
        let db = TestDatabase::create()
            .await
            .expect("PostgreSQL at REGINDEX_TEST_DATABASE_URL or 127.0.0.1:5432");
        let mut config = DatabaseConfig {
            url: db.url().into(),
            max_connections: 8,
            ..DatabaseConfig::default()
        };
        adjust(&mut config);
        migrate(&db.url()).await;
        let store = Store::connect(&config).await.expect("migrated schema");
        Self {
            store,
            config,
            db: Some(db),
        }
    }

    /// A fresh database without the schema (schema and migration tests); `store` is
    /// connected without checking it.
    pub async fn start_empty() -> Self {
        let db = TestDatabase::create()
            .await
            .expect("PostgreSQL at REGINDEX_TEST_DATABASE_URL or 127.0.0.1:5432");
        let config = DatabaseConfig {
            url: db.url().into(),
            max_connections: 8,
            ..DatabaseConfig::default()
        };
        let store = Store::connect_unchecked(&config)
            .await
            .expect("connecting to the test database");
        Self {
            store,
            config,
            db: Some(db),
        }
    }

    /// Connection URL of the database.
    pub fn url(&self) -> String {
        self.db.as_ref().expect("not finished").url()
    }

    /// Closes the pool and drops the database.
    pub async fn finish(mut self) {
        self.store.pool().close().await;
        if let Some(db) = self.db.take() {
            db.drop().await.expect("dropping the test database");
        }
    }
}

/// Applies the schema to the database at `url` (e.g. a [`crate::PrivatePostgres`] one)
/// through a connection of its own.
pub async fn migrate(url: &str) {
    let config = DatabaseConfig {
        url: url.to_owned().into(),
        ..DatabaseConfig::default()
    };
    let store = Store::connect_unchecked(&config)
        .await
        .expect("connecting to the test database");
    store.migrate().await.expect("applying schema.sql");
    store.pool().close().await;
}

/// How the api is run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ApiKind {
    /// `regindex_api::serve`: public and operator listeners, webhooks, monitors.
    Serve,
    /// Only `regindex_api::router` (the public routes) on one listener; no broker.
    Router,
}

/// A change of the configuration, seeing the started registry.
type ConfigTweak = Box<dyn FnOnce(&mut Config, &TestRegistry)>;

/// Options of an [`App`]; from [`App::builder`].
#[must_use]
pub struct AppBuilder {
    api: Option<(ApiKind, usize)>,
    workers: usize,
    bus: bool,
    queue_type: QueueType,
    amqp_urls: Option<Vec<String>>,
    existing_bus: Option<Arc<TestBus>>,
    notify: bool,
    endpoint: Option<Box<dyn Fn(NotificationEndpoint) -> NotificationEndpoint>>,
    registry: Option<Box<dyn FnOnce(TestRegistryBuilder) -> TestRegistryBuilder>>,
    coalesce_ms: u64,
    aliases: Option<(String, Vec<String>)>,
    tweaks: Vec<ConfigTweak>,
}

impl AppBuilder {
    /// One api run as its binary runs it (`regindex_api::serve`), with broker names.
    pub fn api(self) -> Self {
        self.apis(1)
    }

    /// `n` apis as their binary runs them, each a notification endpoint of the registry.
    /// The registry sends every event to each: safe because the work is idempotent (a
    /// refetch makes the index equal to the registry however often it runs; the history
    /// records an event id once).
    pub fn apis(mut self, n: usize) -> Self {
        self.api = Some((ApiKind::Serve, n.max(1)));
        self.bus = true;
        self
    }

    /// Only the api's public router (`regindex_api::router`) on a free port: index, web
    /// pages, icons, search. No broker; the registry does not notify it.
    pub fn router(mut self) -> Self {
        self.api = Some((ApiKind::Router, 1));
        self
    }

    /// One worker (`regindex_worker::run`), with broker names.
    pub fn worker(self) -> Self {
        self.workers(1)
    }

    /// `n` worker processes, with broker names.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self.bus = self.bus || n > 0;
        self
    }

    /// Broker names of the test's own ([`TestBus`]) even without api or worker.
    pub fn bus(mut self) -> Self {
        self.bus = true;
        self
    }

    /// `amqp.queue_type` of the test's queues (classic by default).
    pub fn queue_type(mut self, queue_type: QueueType) -> Self {
        self.queue_type = queue_type;
        self.bus = true;
        self
    }

    /// `amqp.url`: these brokers (e.g. a `RabbitMqCluster`'s nodes) instead of the local one.
    pub fn amqp_urls(mut self, urls: Vec<String>) -> Self {
        self.amqp_urls = Some(urls);
        self.bus = true;
        self
    }

    /// The broker names of `bus` (e.g. from `TestBus::run`, which deletes them) instead of
    /// names of the app's own.
    pub fn on_bus(mut self, bus: Arc<TestBus>) -> Self {
        self.existing_bus = Some(bus);
        self.bus = true;
        self
    }

    /// The registry does not notify the apis.
    pub fn no_notifications(mut self) -> Self {
        self.notify = false;
        self
    }

    /// Adjusts each notification endpoint of the registry (e.g. `ignore_actions`).
    pub fn endpoint(
        mut self,
        adjust: impl Fn(NotificationEndpoint) -> NotificationEndpoint + 'static,
    ) -> Self {
        self.endpoint = Some(Box::new(adjust));
        self
    }

    /// Adjusts the registry (`htpasswd`, `prefix`, `token_auth`, more endpoints).
    pub fn registry(
        mut self,
        adjust: impl FnOnce(TestRegistryBuilder) -> TestRegistryBuilder + 'static,
    ) -> Self {
        self.registry = Some(Box::new(adjust));
        self
    }

    /// The registry asks for basic authentication; the configuration has its credentials.
    pub fn htpasswd(self) -> Self {
        self.registry(TestRegistryBuilder::htpasswd)
    }

    /// `worker.coalesce_ms` (50 by default).
    pub fn coalesce_ms(mut self, ms: u64) -> Self {
        self.coalesce_ms = ms;
        self
    }

    /// `history.aliases`: canonical host and aliases; `{port}` stands for the registry's port.
    pub fn aliases(mut self, canonical: &str, aliases: &[&str]) -> Self {
        self.aliases = Some((
            canonical.to_owned(),
            aliases.iter().map(|a| (*a).to_owned()).collect(),
        ));
        self
    }

    /// Changes the configuration after the harness filled it in (registry, database,
    /// broker names, token, quiet periodic jobs) and before anything starts.
    pub fn config(self, tweak: impl FnOnce(&mut Config) + 'static) -> Self {
        self.config_with_registry(move |config, _| tweak(config))
    }

    /// [`AppBuilder::config`] that also sees the started registry.
    pub fn config_with_registry(
        mut self,
        tweak: impl FnOnce(&mut Config, &TestRegistry) + 'static,
    ) -> Self {
        self.tweaks.push(Box::new(tweak));
        self
    }

    /// Starts everything; panics naming what is missing.
    pub async fn start(self) -> App {
        App::start(self).await
    }

    /// Runs `test` on a fresh app and cleans up, also when it panicked.
    pub async fn run<F, Fut>(self, test: F)
    where
        F: FnOnce(Arc<App>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let app = Arc::new(self.start().await);
        let outcome = AssertUnwindSafe(test(app.clone())).catch_unwind().await;
        match Arc::try_unwrap(app) {
            Ok(app) => app.finish().await,
            Err(_) => eprintln!("app still shared; not cleaned up"),
        }
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}

/// One api or worker run in-process as its binary runs it, with its own shutdown.
pub struct Process {
    /// The api's public listener, or the worker's `/metrics` listener.
    pub addr: SocketAddr,
    /// The api's operator listener (`/metrics`, `/stats`); for a worker or a router
    /// `addr` again.
    pub operator: SocketAddr,
    shutdown: CancellationToken,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<Result<(), String>>>>,
}

impl Process {
    fn spawn(
        addr: SocketAddr,
        operator: SocketAddr,
        shutdown: CancellationToken,
        run: impl Future<Output = Result<(), String>> + Send + 'static,
    ) -> Self {
        Self {
            addr,
            operator,
            shutdown,
            task: Some(tokio::spawn(run)).into(),
        }
    }

    /// One api run from `config` alone, as its binary runs it (`regindex_api::serve`), on
    /// free ports: for tests that start apis of their own beside an [`App`] (other
    /// databases, replicas, broker nodes).
    pub async fn api(config: Config) -> Self {
        let public = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let operator = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let (addr, operator_addr) = (public.local_addr().unwrap(), operator.local_addr().unwrap());
        let stop = CancellationToken::new();
        let serving = regindex_api::serve(
            config,
            regindex_api::Listeners { public, operator },
            stop.clone().cancelled_owned(),
        );
        Self::spawn(addr, operator_addr, stop, async move {
            serving.await.map_err(|e| format!("{e:#}"))
        })
    }

    /// One worker run from `config` alone, as its binary runs it (`regindex_worker::run`);
    /// `addr` is its `/metrics` listener (`worker.metrics_listen`).
    pub fn worker(config: Config) -> Self {
        let addr = config.worker.metrics_listen;
        let stop = CancellationToken::new();
        let running = regindex_worker::run(config, stop.clone());
        Self::spawn(addr, addr, stop, async move {
            running.await.map_err(|e| format!("{e:#}"))
        })
    }

    /// `http://<addr>`.
    pub fn public_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://<operator>`.
    pub fn operator_url(&self) -> String {
        format!("http://{}", self.operator)
    }

    pub fn is_running(&self) -> bool {
        self.task.lock().unwrap().is_some()
    }

    /// Shuts it down as SIGTERM does, waits until it has ended, and returns how it ended
    /// (`Err` with the error's text; `Ok` if it was stopped before).
    pub async fn stop(&self) -> Result<(), String> {
        self.shutdown.cancel();
        let task = self.task.lock().unwrap().take();
        match task {
            Some(task) => match tokio::time::timeout(Duration::from_secs(40), task).await {
                Ok(Ok(ended)) => ended,
                Ok(Err(panicked)) => Err(format!("panicked: {panicked}")),
                Err(_) => Err("still running 40 s after its shutdown".to_owned()),
            },
            None => Ok(()),
        }
    }
}

/// Registry, migrated store and the processes asked for; see the module documentation.
pub struct App {
    /// What the api and worker run with.
    pub config: Config,
    pub registry: TestRegistry,
    /// The database part; `db.store` is `store` without the icon settings.
    pub db: TestStore,
    /// Connected, schema checked, `config.icons` applied.
    pub store: Store,
    /// Refetches from `registry` into `store` in the test's own task.
    pub syncer: Syncer,
    /// Every api (or the router), in start order; [`App::stop_api`] ends one.
    pub apis: Vec<Process>,
    /// Every worker; [`App::stop_worker`] ends one.
    pub workers: Vec<Process>,
    pub http: reqwest::Client,
    bus: Option<Arc<TestBus>>,
    owns_bus: bool,
    shutdown: CancellationToken,
}

impl App {
    /// Registry and migrated store only; add parts with the builder's methods.
    pub fn builder() -> AppBuilder {
        AppBuilder {
            api: None,
            workers: 0,
            bus: false,
            queue_type: QueueType::Classic,
            amqp_urls: None,
            existing_bus: None,
            notify: true,
            endpoint: None,
            registry: None,
            coalesce_ms: 50,
            aliases: None,
            tweaks: Vec::new(),
        }
    }

    async fn start(options: AppBuilder) -> Self {
        crate::capture_logs();
        let owns_bus = options.existing_bus.is_none();
        let bus = if let Some(bus) = options.existing_bus {
            Some(bus)
        } else if options.bus {
            Some(Arc::new(
                match options.amqp_urls {
                    Some(urls) => TestBus::on(urls.into(), options.queue_type).await,
                    None => TestBus::with_queue_type(options.queue_type).await,
                }
                .expect("RabbitMQ on 127.0.0.1:5672 or at AppBuilder::amqp_urls"),
            ))
        } else {
            None
        };
        let db = TestStore::start().await;

        let (kind, count) = options.api.unwrap_or((ApiKind::Serve, 0));
        let mut listeners = Vec::new();
        for _ in 0..count {
            let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let operator = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            listeners.push(regindex_api::Listeners { public, operator });
        }

        let mut builder = TestRegistry::builder();
        if kind == ApiKind::Serve && options.notify {
            for api in &listeners {
                let public = api.public.local_addr().unwrap();
                let mut endpoint = NotificationEndpoint::new(format!("http://{public}/events"))
                    .bearer_token(TOKEN);
                endpoint.backoff = Duration::from_millis(200);
                endpoint.timeout = Duration::from_secs(10);
                if let Some(adjust) = &options.endpoint {
                    endpoint = adjust(endpoint);
                }
                builder = builder.notify(endpoint);
            }
        }
        if let Some(adjust) = options.registry {
            builder = adjust(builder);
        }
        let registry = builder.start().await.expect("docker-registry");

        let mut config = Config::default();
        if let Some(bus) = &bus {
            config.amqp = bus.config.clone();
            config.history.queue = format!("{}.history", bus.config.work_queue);
        }
        config.history.batch_max_wait = Duration::from_millis(50);
        config.database = db.config.clone();
        config.registry.url = registry.url().parse().expect("registry url");
        if let Some((user, password)) = registry.credentials() {
            config.registry.username = Some(user.to_owned());
            config.registry.password = Some(password.to_owned().into());
        }
        config.api.webhook_token = Some(TOKEN.to_owned().into());
        config.api.body_limit_bytes = 8 << 20;
        config.worker.metrics_listen = ([127, 0, 0, 1], free_port().unwrap()).into();
        config.worker.scan_interval = None;
        config.worker.gc_interval = None;
        config.worker.coalesce = Duration::from_millis(options.coalesce_ms);
        config.history.prune_interval = None;
        if let Some((canonical, aliases)) = options.aliases {
            let port = registry.port().to_string();
            let aliases = [(
                canonical.replace("{port}", &port),
                aliases.iter().map(|a| a.replace("{port}", &port)).collect(),
            )];
            config.history.aliases =
                regindex::model::AliasMap::new(&aliases.into_iter().collect(), "", false)
                    .expect("test aliases");
        }
        for tweak in options.tweaks {
            tweak(&mut config, &registry);
        }
        config.validate().expect("test configuration");

        let store = Store::connect(&config.database)
            .await
            .expect("migrated schema")
            .with_icons(&config.icons);
        let syncer = Syncer::new(
            RegistryClient::new(&config.registry).expect("registry client"),
            store.clone(),
        );

        let shutdown = CancellationToken::new();
        let apis = listeners
            .into_iter()
            .map(|listeners| spawn_api(kind, &config, &store, listeners, shutdown.child_token()))
            .collect();
        let mut metrics_ports = vec![config.worker.metrics_listen.port()];
        let workers = (0..options.workers)
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
                let stop = shutdown.child_token();
                let run = regindex_worker::run(config, stop.clone());
                Process::spawn(addr, addr, stop, async move {
                    run.await
                        .map_err(|e| format!("worker {addr} failed: {e:#}"))
                })
            })
            .collect();
        Self {
            config,
            registry,
            db,
            store,
            syncer,
            apis,
            workers,
            http: reqwest::Client::new(),
            bus,
            owns_bus,
            shutdown,
        }
    }

    /// The test's broker names; panics unless the builder asked for a bus (or an api or
    /// worker).
    pub fn bus(&self) -> &TestBus {
        self.bus
            .as_ref()
            .expect("no broker: use App::builder().bus() (or .api(), .worker())")
    }

    /// The first api's public listener (`POST /events`, the index).
    pub fn api(&self) -> SocketAddr {
        self.apis
            .first()
            .expect("no api: use .api() or .router()")
            .addr
    }

    /// The first api's operator listener (`/stats`, `/metrics`).
    pub fn operator(&self) -> SocketAddr {
        self.apis
            .first()
            .expect("no api: use .api() or .router()")
            .operator
    }

    /// `http://<public listener of the first api>`.
    pub fn base(&self) -> String {
        format!("http://{}", self.api())
    }

    /// `host:port` of the registry (as image references name it).
    pub fn host(&self) -> String {
        self.registry.host()
    }

    /// Stops api `n` (0: the one `api()` and `operator()` point at); how it ended.
    pub async fn stop_api(&self, n: usize) -> Result<(), String> {
        self.apis[n].stop().await
    }

    /// Stops worker `n`; how it ended.
    pub async fn stop_worker(&self, n: usize) -> Result<(), String> {
        self.workers[n].stop().await
    }

    /// `GET` on the first api's public listener.
    pub async fn get(&self, path_and_query: &str) -> reqwest::Result<reqwest::Response> {
        self.http
            .get(format!("{}{path_and_query}", self.base()))
            .send()
            .await
    }

    /// `GET` on the first api's operator listener; panics unless 200 with JSON.
    pub async fn operator_json(&self, path_and_query: &str) -> Value {
        let (status, body) = self.operator_status(path_and_query).await;
        assert_eq!(status, 200, "{path_and_query}: {body}");
        body
    }

    /// `GET` on the first api's operator listener: status and JSON body (null if none).
    pub async fn operator_status(&self, path_and_query: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("http://{}{path_and_query}", self.operator()))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Posts a notification envelope of `events` as the registry does.
    pub async fn post_events(&self, events: &[Value]) -> reqwest::Response {
        self.http
            .post(format!("{}/events", self.base()))
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

    /// Refetches `repository` from the registry in the test's own task.
    pub async fn refetch(&self, repository: &str) -> Result<RefetchReport, SyncError> {
        let name = RepositoryName::parse(repository).expect("repository name");
        self.syncer.refetch(&name).await
    }

    /// What the store holds of `repository`.
    pub async fn stored(&self, repository: &str) -> RepositoryState {
        self.store
            .load_repository(&RepositoryName::parse(repository).expect("repository name"))
            .await
            .unwrap()
    }

    /// Stops every process, deletes the broker names and drops the database.
    pub async fn finish(mut self) {
        self.shutdown.cancel();
        for process in self.workers.iter().chain(&self.apis) {
            let _ = process.stop().await;
        }
        if let Some(bus) = &self.bus {
            let _ = bus
                .channel
                .queue_delete(&self.config.history.queue, QueueDeleteOptions::default())
                .await;
            if self.owns_bus {
                bus.cleanup().await;
            }
        }
        self.registry.stop();
        self.store.pool().close().await;
        self.db.finish().await;
    }
}

fn spawn_api(
    kind: ApiKind,
    config: &Config,
    store: &Store,
    listeners: regindex_api::Listeners,
    stop: CancellationToken,
) -> Process {
    let addr = listeners.public.local_addr().unwrap();
    match kind {
        ApiKind::Serve => {
            let operator = listeners.operator.local_addr().unwrap();
            let serving =
                regindex_api::serve(config.clone(), listeners, stop.clone().cancelled_owned());
            Process::spawn(addr, operator, stop, async move {
                serving.await.map_err(|e| {
                    eprintln!("api {addr} failed: {e:#}");
                    format!("{e:#}")
                })
            })
        }
        ApiKind::Router => {
            let state = regindex_api::AppState::new(Arc::new(config.clone()), store.clone());
            let app = regindex_api::router(state);
            let graceful = stop.clone().cancelled_owned();
            Process::spawn(addr, addr, stop, async move {
                axum::serve(listeners.public, app)
                    .with_graceful_shutdown(graceful)
                    .await
                    .map_err(|e| e.to_string())
            })
        }
    }
}

/// A `regindex_worker::Worker` (the work consumer alone) in the test's own task, its
/// metrics in reach: for tests of the consumer with an `Index` of their own, or one
/// started late on an [`App`] ([`App::start_consumer`]).
pub struct Consumer {
    pub metrics: regindex_worker::WorkerMetrics,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Consumer {
    pub fn start(config: Config, index: Arc<dyn regindex_worker::refetcher::Refetcher>) -> Self {
        crate::capture_logs();
        let metrics = regindex_worker::WorkerMetrics::new();
        let worker = regindex_worker::Worker::new(config, index, metrics.clone());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { worker.run(shutdown).await }
        });
        Self {
            metrics,
            shutdown,
            task,
        }
    }

    /// Messages counted with `outcome` (`processed`, `retried`, `dead_lettered`, ...).
    pub fn counted(&self, outcome: &str) -> u64 {
        self.metrics.messages.with_label_values(&[outcome]).get()
    }

    /// Ends it as a crash does: no graceful shutdown, its unacknowledged messages go back
    /// to the queue.
    pub async fn abort(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// [`Consumer::abort`], then closes `store`'s connections, as a crashed process's
    /// sockets close: a write it was in the middle of rolls back and its repository's lock
    /// goes at once, not when the pool next uses the connection.
    pub async fn crash(self, store: &Store) {
        self.abort().await;
        store.pool().close().await;
    }

    /// Shuts it down and waits (30 s at most) until it has ended.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the consumer stops")
            .expect("the consumer task");
    }
}

impl App {
    /// A [`Consumer`] refetching from the registry into the store, with `config`.
    pub fn start_consumer(&self, config: Config) -> Consumer {
        self.start_consumer_on(config, self.store.clone())
    }

    /// [`App::start_consumer`] writing through `store` (a pool of its own, for a consumer
    /// that will [`Consumer::crash`]).
    pub fn start_consumer_on(&self, config: Config, store: Store) -> Consumer {
        let registry = RegistryClient::new(&config.registry).expect("registry client");
        let syncer = Syncer::new(registry, store);
        Consumer::start(config, Arc::new(syncer))
    }
}
