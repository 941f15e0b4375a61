//! Prometheus metrics of the api, served on `GET /metrics` (operator listener), and the
//! middleware that counts and times every HTTP request.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

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
    /// HTTP requests answered, by route template and status.
    pub http_requests: IntCounterVec,
    /// Time to the response head, by route template and status.
    pub http_duration: HistogramVec,
}

/// The `route` label of requests no route matched: raw paths would make the label set
/// unbounded (anyone can request any path).
pub const UNMATCHED_ROUTE: &str = "unmatched";

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
        let http_labels = ["route", "status"];
        let http_requests = IntCounterVec::new(
            Opts::new(
                "regindex_api_http_requests_total",
                "HTTP requests answered, by route template and status",
            ),
            &http_labels,
        )
        .expect("valid metric");
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "regindex_api_http_request_duration_seconds",
                "Time from request to response head, by route template and status",
            )
            .buckets(vec![
                0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &http_labels,
        )
        .expect("valid metric");
        registry
            .register(Box::new(http_requests.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(http_duration.clone()))
            .expect("unique metric");
        Self {
            http_requests,
            http_duration,
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

/// Middleware (`axum::middleware::from_fn_with_state`) counting and timing each request
/// by its matched route template (`/repository/{*name}`, not the raw path) and status,
/// 304s included. Add it with `Router::layer`, under which the matched path is known.
pub async fn track(State(metrics): State<ApiMetrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
    let response = next.run(request).await;
    let status = response.status();
    let labels = [route.as_str(), status.as_str()];
    metrics.http_requests.with_label_values(&labels).inc();
    metrics
        .http_duration
        .with_label_values(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics` and `GET /openapi.json`.
pub fn router(metrics: ApiMetrics) -> Router {
    crate::routes::router().with_state(metrics)
}

pub(crate) async fn serve(State(metrics): State<ApiMetrics>) -> axum::http::Response<String> {
    regindex::telemetry::metrics_response(&metrics.registry)
}
