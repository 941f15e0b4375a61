//! Liveness and readiness probes.
//!
//! - `/healthz`: the process is up and serving; 200 whatever its dependencies do
//!   (restarting it would not bring them back).
//! - `/readyz`: it can do all of its work: the database answers (with the schema this
//!   build needs) and webhooks can be published (the broker connection is open). 503
//!   otherwise, with `detail` saying which part is down. During a database outage the
//!   index still answers from its cache of earlier answers (marked stale).

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::{database, AppState};

/// Longest a readiness probe spends (re)connecting to the broker.
const BROKER_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The process is up and serving.
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let (database, broker) = tokio::join!(database_readiness(&state), broker_readiness(&state));
    let connections = database::connections(state.data_version.as_ref());
    if database.is_err() || broker.is_err() {
        tracing::warn!(
            database = database.as_ref().err().map(String::as_str),
            broker = broker.as_ref().err().map(String::as_str),
            "readiness: not ready"
        );
        return Err(ApiError::NotReady {
            database: database.err(),
            broker: broker.err(),
            connections,
        });
    }
    Ok(Json(json!({
        "status": "ready",
        "database": "up",
        "broker": "up",
        "database_connections": connections,
    })))
}

/// From the monitor when one runs (no waiting), else by asking the pool.
async fn database_readiness(state: &AppState) -> Result<(), String> {
    match &state.database {
        Some(monitor) => database::readiness(monitor).await,
        None => state.store.ping().await.map_err(|e| e.to_string()),
    }
}

/// The publisher's connection is open, or can be opened now: webhooks can be accepted.
async fn broker_readiness(state: &AppState) -> Result<(), String> {
    let Some(publisher) = &state.publisher else {
        return Ok(());
    };
    match tokio::time::timeout(BROKER_CHECK_TIMEOUT, publisher.ensure_connected()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no connection to the broker within {BROKER_CHECK_TIMEOUT:?}"
        )),
    }
}
