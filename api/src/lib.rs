//! The regindex API: serves the registry index protocol from the database only, so any
//! number of instances can run side by side.
//!
//! Routes live in files named after what they serve; `router` merges them.

mod cache;
mod conditional;
pub mod error;
pub mod events;
mod health;
mod index_routes;
pub mod metrics;
pub mod stats_routes;

use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use regindex::config::Config;
use regindex::store::Store;
use tower_http::trace::TraceLayer;

pub use cache::ResponseCache;
pub use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub cache: Arc<ResponseCache>,
}

impl AppState {
    pub fn new(config: Arc<Config>, store: Store) -> Self {
        Self {
            config,
            store,
            cache: Arc::new(ResponseCache::default()),
        }
    }
}

/// All routes. Unknown paths answer 404 and wrong methods 405, both as JSON. Other route
/// sets join with `.merge(...)` before the fallbacks; they must not set fallbacks.
pub fn router(state: AppState) -> Router {
    let router = Router::new()
        .merge(index_routes::routes())
        .merge(health::routes());
    // History statistics and /openapi.json (their own state). The configuration was
    // validated at load, so the aliases parse; should they not, the rest still serves.
    let router = match stats_routes::StatsState::new(&state.config, &state.store) {
        Ok(stats) => router.merge(stats_routes::router(stats)),
        Err(e) => {
            tracing::error!(error = %e, "history statistics disabled: bad history.aliases");
            router
        }
    };
    router
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Connects to the database, serves on `config.api.listen` until SIGTERM or Ctrl-C, and
/// lets requests in flight finish.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let store = Store::connect(&config.database)
        .await
        .context("connecting to the database")?;
    let listen = config.api.listen;
    let state = AppState::new(Arc::new(config), store);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(%listen, "regindex api listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving")?;
    tracing::info!("regindex api stopped");
    Ok(())
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
