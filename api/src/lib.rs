//! The regindex API: serves the registry index protocol from the database only, so any
//! number of instances can run side by side.
//!
//! Routes live in files named after what they serve; `router` merges them.

mod cache;
mod conditional;
pub mod database;
pub mod error;
pub mod events;
mod health;
mod index_routes;
pub mod metrics;
pub mod stats_routes;
pub mod web;

use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use regindex::bus::Publisher;
use regindex::config::Config;
use regindex::store::{DatabaseMonitor, Store};
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
    /// Whether the database answers (`run` starts one). Without it, requests find out
    /// for themselves, each waiting up to the pool's acquire timeout.
    pub database: Option<DatabaseMonitor>,
    /// The webhook publisher, whose broker connection `/readyz` reports.
    pub publisher: Option<Arc<Publisher>>,
}

impl AppState {
    pub fn new(config: Arc<Config>, store: Store) -> Self {
        Self {
            config,
            store,
            cache: Arc::new(ResponseCache::default()),
            database: None,
            publisher: None,
        }
    }

    pub fn with_database_monitor(mut self, monitor: DatabaseMonitor) -> Self {
        self.database = Some(monitor);
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

/// All routes. Unknown paths answer 404 and wrong methods 405, both as JSON. Other route
/// sets join with `.merge(...)` before the fallbacks; they must not set fallbacks.
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// `router` plus route sets that carry their own state (the webhook endpoint, `/metrics`).
pub fn router_with(state: AppState, extra: Router) -> Router {
    // History statistics and /openapi.json (their own state). The configuration was
    // validated at load, so the aliases parse; should they not, the rest still serves.
    let stats = match stats_routes::StatsState::new(&state.config, &state.store) {
        Ok(stats) => stats_routes::router(stats),
        Err(e) => {
            tracing::error!(error = %e, "history statistics disabled: bad history.aliases");
            Router::new()
        }
    };
    Router::new()
        .merge(index_routes::routes())
        .merge(health::routes())
        .merge(web::routes())
        .with_state(state)
        .merge(stats)
        .merge(extra)
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(TraceLayer::new_for_http())
}

/// Serves on `config.api.listen` until SIGTERM or Ctrl-C, and lets requests in flight
/// finish. It does not wait for the database: until it answers, `/readyz` says so and
/// the index answers 503 (see `database`).
pub async fn run(config: Config) -> anyhow::Result<()> {
    let store = database::store(&config).context("database configuration")?;
    let stop = CancellationToken::new();
    let _stop_monitor = stop.clone().drop_guard();
    let monitor = database::monitor(&store, stop);
    let listen = config.api.listen;
    let publisher = publisher(&config);
    let ingest = ingest_routes(&config, publisher.clone()).await;
    let state = AppState::new(Arc::new(config), store)
        .with_database_monitor(monitor)
        .with_publisher(publisher);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(%listen, "regindex api listening");
    axum::serve(listener, router_with(state, ingest))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving")?;
    tracing::info!("regindex api stopped");
    Ok(())
}

/// `POST /events` and `/metrics`. The broker connection is opened now to declare the
/// topology early, but the api also starts without it: the index is served from the
/// database, and webhooks answer 503 (the registry resends them) until the broker is back.
async fn ingest_routes(config: &Config, publisher: Arc<Publisher>) -> Router {
    if let Err(e) = publisher.ensure_connected().await {
        tracing::warn!(error = %e, "broker unreachable at start-up; POST /events answers 503 until it is back");
    }
    let metrics = metrics::ApiMetrics::new();
    events::router(events::EventsState::new(config, publisher, metrics.clone()))
        .merge(metrics::router(metrics))
}

/// The webhook publisher. It declares the whole topology, history queue included: with
/// history on, pulls are published for it and would be unroutable (dropped) without it.
fn publisher(config: &Config) -> Arc<Publisher> {
    let topology = regindex::bus::Topology::from_config(config);
    Arc::new(Publisher::new(config.amqp.url.clone(), Some(topology)))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
