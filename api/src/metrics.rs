//! Prometheus metrics of the api, served on `GET /metrics`.

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use prometheus::{IntCounterVec, Opts, Registry};

/// The api's counters, registered in their own registry.
#[derive(Clone)]
pub struct ApiMetrics {
    pub registry: Registry,
    /// Webhook events received, by action.
    pub events_received: IntCounterVec,
    /// Events published to the broker (confirmed), by routing key.
    pub events_published: IntCounterVec,
    /// Events not published, by reason.
    pub events_ignored: IntCounterVec,
    /// Webhook requests refused, by reason (`unauthorized`, `media_type`, `too_large`,
    /// `malformed`, `broker`).
    pub requests_rejected: IntCounterVec,
}

impl ApiMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, label: &str| {
            let counter =
                IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
            registry
                .register(Box::new(counter.clone()))
                .expect("unique metric");
            counter
        };
        Self {
            events_received: counter(
                "regindex_api_events_received_total",
                "Webhook events received",
                "action",
            ),
            events_published: counter(
                "regindex_api_events_published_total",
                "Webhook events published and confirmed by the broker",
                "routing_key",
            ),
            events_ignored: counter(
                "regindex_api_events_ignored_total",
                "Webhook events not published",
                "reason",
            ),
            requests_rejected: counter(
                "regindex_api_webhook_requests_rejected_total",
                "Webhook requests refused",
                "reason",
            ),
            registry,
        }
    }
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `GET /metrics`.
pub fn router(metrics: ApiMetrics) -> Router {
    Router::new()
        .route("/metrics", get(serve))
        .with_state(metrics)
}

async fn serve(State(metrics): State<ApiMetrics>) -> axum::http::Response<String> {
    regindex::telemetry::metrics_response(&metrics.registry)
}
