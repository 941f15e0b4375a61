//! The regindex API: serves the registry index protocol from the database only, so any
//! number of instances can run side by side.
//!
//! Handlers live in files named after what they serve; `routes::ROUTES` lists them all
//! (and `openapi.json` describes that list). Two listeners: `router` serves the public
//! ones (`api.listen`), `operator_router` the operator ones (`api.operator_listen`).
//! Every JSON error has one body, written in `error`.

mod cache;
mod conditional;
pub mod database;
pub mod error;
pub mod events;
mod frames;
mod health;
mod index_routes;
pub mod metrics;
mod profile_routes;
pub mod routes;
pub mod stats_routes;
pub mod web;

use std::future::IntoFuture as _;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use regindex::bus::Publisher;
use regindex::config::{ApiConfig, Config, WebhookAuth};
use regindex::store::{DataVersionWatch, DatabaseMonitor, Store};
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

pub use cache::ResponseCache;
pub use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub cache: Arc<ResponseCache>,
    /// Whether the database answers (`serve` starts one). Without it, requests find out
    /// for themselves, each waiting up to the pool's acquire timeout.
    pub database: Option<DatabaseMonitor>,
    /// The data version kept in memory from the database's notifications (`serve`
    /// starts one). Without it, or while it is not listening, every index request reads
    /// the version from the database.
    pub data_version: Option<DataVersionWatch>,
    /// The webhook publisher, whose broker connection `/readyz` reports.
    pub publisher: Option<Arc<Publisher>>,
}

impl AppState {
    pub fn new(config: Arc<Config>, store: Store) -> Self {
        let cache = ResponseCache::new(cache::DEFAULT_MAX_ENTRIES, config.api.cache_bytes);
        Self {
            config,
            store,
            cache: Arc::new(cache),
            database: None,
            data_version: None,
            publisher: None,
        }
    }

    pub fn with_database_monitor(mut self, monitor: DatabaseMonitor) -> Self {
        self.database = Some(monitor);
        self
    }

    pub fn with_data_version(mut self, watch: DataVersionWatch) -> Self {
        self.data_version = Some(watch);
        self
    }

    pub fn with_publisher(mut self, publisher: Arc<Publisher>) -> Self {
        self.publisher = Some(publisher);
        self
    }
}

impl axum::extract::FromRef<AppState> for web::WebState {
    fn from_ref(state: &AppState) -> Self {
        web::WebState::new(state.store.clone(), state.config.clone())
    }
}

/// The public routes (index protocol, health, web pages, icons, search). Unknown paths
/// answer 404 and wrong methods 405, both with the JSON error body. Other route sets join
/// with `.merge(...)` before the fallbacks; they must not set fallbacks.
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// `router` plus route sets that carry their own state (the webhook endpoint).
pub fn router_with(state: AppState, extra: Router) -> Router {
    with_fallbacks(routes::router().with_state(state).merge(extra))
}

/// The operator routes: history statistics, `/openapi.json` and `/metrics`, served on
/// `api.operator_listen` only (statistics name clients; see docs/operations.md).
pub fn operator_router(state: &AppState, metrics: metrics::ApiMetrics) -> Router {
    let stats = stats_routes::router(stats_routes::StatsState::new(&state.config, &state.store));
    with_http_metrics(
        with_fallbacks(stats.merge(metrics::router(metrics.clone()))),
        metrics,
    )
}

fn with_fallbacks(routes: Router) -> Router {
    routes
        .fallback(|| async { ApiError::NotFound(error::NO_SUCH_ROUTE) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(TraceLayer::new_for_http())
}

/// Counts and times every request of `routes` (see [`metrics::track`]).
pub fn with_http_metrics(routes: Router, metrics: metrics::ApiMetrics) -> Router {
    routes.layer(axum::middleware::from_fn_with_state(
        metrics,
        metrics::track,
    ))
}

/// The api's two sockets: `api.listen` (public) and `api.operator_listen`.
pub struct Listeners {
    pub public: tokio::net::TcpListener,
    pub operator: tokio::net::TcpListener,
}

impl Listeners {
    pub async fn bind(config: &ApiConfig) -> anyhow::Result<Self> {
        let bind = |addr| async move {
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))
        };
        Ok(Self {
            public: bind(config.listen).await?,
            operator: bind(config.operator_listen).await?,
        })
    }
}

/// Binds `api.listen` and `api.operator_listen` and serves until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> anyhow::Result<()> {
    // Refuse a configuration without webhook authentication before touching anything.
    config
        .api
        .webhook_auth()
        .context("webhook authentication")?;
    let listeners = Listeners::bind(&config.api).await?;
    serve(config, listeners, regindex::process::shutdown_signal()).await
}

/// Serves the public and the operator routes on `listeners` until `shutdown` completes,
/// then lets requests in flight finish. It does not wait for the database: until it
/// answers, `/readyz` says so and the index answers 503 (see `database`).
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let auth = config
        .api
        .webhook_auth()
        .context("webhook authentication")?;
    if matches!(auth, WebhookAuth::Open) {
        tracing::warn!(
            listen = %config.api.listen,
            "api.webhook_auth is none: POST /events accepts notifications from anyone who can reach the api"
        );
    }
    let reads = database::reads(&config).context("database configuration")?;
    let stop_monitor = CancellationToken::new();
    let _stop_monitor = stop_monitor.clone().drop_guard();
    // The monitor probes where requests read (the replica, with `database.read_url`).
    let monitor = database::monitor(&reads.store, stop_monitor.clone());
    let data_version =
        database::data_version(&config, &reads, stop_monitor).context("database configuration")?;
    let store = reads.store;
    let metrics = metrics::ApiMetrics::new();
    database::register_replica_metrics(&metrics.registry, &data_version)
        .context("replica lag metrics")?;
    let publisher = publisher(&config);
    let ingest = ingest_routes(&config, publisher.clone(), metrics.clone()).await?;
    let state = AppState::new(Arc::new(config), store)
        .with_database_monitor(monitor)
        .with_data_version(data_version)
        .with_publisher(publisher);
    let public = with_http_metrics(router_with(state.clone(), ingest), metrics.clone());
    let operator = operator_router(&state, metrics);
    let (public_addr, operator_addr) = (
        listeners.public.local_addr()?,
        listeners.operator.local_addr()?,
    );
    tracing::info!(listen = %public_addr, operator = %operator_addr, "regindex api listening");
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let stopped = |mut stopping: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    };
    tokio::try_join!(
        axum::serve(listeners.public, public)
            .with_graceful_shutdown(stopped(stopping.clone()))
            .into_future(),
        axum::serve(listeners.operator, operator)
            .with_graceful_shutdown(stopped(stopping))
            .into_future(),
    )
    .context("serving")?;
    tracing::info!("regindex api stopped");
    Ok(())
}

/// `POST /events`. The broker connection is opened now to declare the topology early,
/// but the api also starts without it: the index is served from the database, and
/// webhooks answer 503 (the registry resends them) until the broker is back.
async fn ingest_routes(
    config: &Config,
    publisher: Arc<Publisher>,
    metrics: metrics::ApiMetrics,
) -> anyhow::Result<Router> {
    if let Err(e) = publisher.ensure_connected().await {
        tracing::warn!(error = %e, "broker unreachable at start-up; POST /events answers 503 until it is back");
    }
    let events =
        events::EventsState::new(config, publisher, metrics).context("webhook authentication")?;
    Ok(events::router(events))
}

/// The webhook publisher. It declares the whole topology, history queue included: with
/// history on, pulls are published for it and would be unroutable (dropped) without it.
fn publisher(config: &Config) -> Arc<Publisher> {
    let topology = regindex::bus::Topology::from_config(config);
    Arc::new(Publisher::new(config.amqp.url.clone(), Some(topology)))
}
