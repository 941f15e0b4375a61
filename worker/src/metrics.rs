//! The worker's Prometheus metrics and its `/metrics`, `/healthz` and `/readyz` endpoint.

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Message outcomes, the `outcome` label of `regindex_worker_messages_total`.
pub mod outcome {
    pub const PROCESSED: &str = "processed";
    pub const RETRIED: &str = "retried";
    pub const DEAD_LETTERED: &str = "dead_lettered";
    pub const IGNORED: &str = "ignored";
}

#[derive(Clone)]
pub struct WorkerMetrics {
    pub registry: Registry,
    pub messages: IntCounterVec,
    pub refetch_seconds: Histogram,
    pub last_full_scan: IntGauge,
    pub next_full_scan: IntGauge,
    pub amqp_connected: IntGauge,
    /// Tags recorded as problems (`regindexctl problems`), all repositories.
    pub tag_problems: IntGauge,
    pub database_up: IntGauge,
    /// Refetches holding their messages until the database is back.
    pub waiting_for_database: IntGauge,
    pub dead_letters: IntGauge,
    pub bodhi: BodhiMetrics,
}

/// What Bodhi messages did (`regindex_worker_bodhi_*`).
#[derive(Clone)]
pub struct BodhiMetrics {
    /// Per build and repository matched, by how (`regindex::bus::bodhi::BuildMatch`), and
    /// `none` per build that matched nothing.
    pub build_matches: IntCounterVec,
    /// Refetches requested, by trigger (`update`, `compose_recent`, `compose_changed`).
    pub refetches: IntCounterVec,
    /// Repositories a compose's warm pass checked.
    pub warm_checked: prometheus::IntCounter,
}

impl BodhiMetrics {
    fn new() -> Self {
        Self {
            build_matches: IntCounterVec::new(
                Opts::new(
                    "regindex_worker_bodhi_build_matches_total",
                    "Repositories matched by the builds of Bodhi updates, by how",
                ),
                &["match"],
            )
            .expect("valid metric"),
            refetches: IntCounterVec::new(
                Opts::new(
                    "regindex_worker_bodhi_refetches_total",
                    "Repository refetches requested by Bodhi messages, by trigger",
                ),
                &["trigger"],
            )
            .expect("valid metric"),
            warm_checked: prometheus::IntCounter::new(
                "regindex_worker_bodhi_warm_checked_total",
                "Repositories checked by the warm pass of a compose (tag lists and HEADs)",
            )
            .expect("valid metric"),
        }
    }
}

impl WorkerMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let messages = IntCounterVec::new(
            Opts::new(
                "regindex_worker_messages_total",
                "Messages handled, by outcome",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let refetch_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "regindex_worker_refetch_duration_seconds",
                "Duration of one repository refetch",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
        )
        .expect("valid metric");
        let last_full_scan = IntGauge::new(
            "regindex_worker_last_full_scan_success_timestamp_seconds",
            "Unix time the last successful full scan (of any worker) started; 0: none yet",
        )
        .expect("valid metric");
        let next_full_scan = IntGauge::new(
            "regindex_worker_next_full_scan_timestamp_seconds",
            "Unix time this worker runs the next full scan (unless another worker does)",
        )
        .expect("valid metric");
        let dead_letters = IntGauge::new(
            "regindex_worker_dead_letter_messages",
            "Messages in the dead-letter queue (polled every worker.dead_letter_poll_secs)",
        )
        .expect("valid metric");
        let amqp_connected = IntGauge::new(
            "regindex_worker_amqp_connected",
            "1 while consuming the work queue",
        )
        .expect("valid metric");
        let tag_problems = IntGauge::new(
            "regindex_worker_tag_problems",
            "Tags the index could not use, or only in part (regindexctl problems)",
        )
        .expect("valid metric");
        let database_up = IntGauge::new(
            "regindex_worker_database_up",
            "1 while the database answers with the schema this build needs",
        )
        .expect("valid metric");
        let waiting_for_database = IntGauge::new(
            "regindex_worker_refetches_waiting_for_database",
            "Refetches that failed while the database was away, holding their messages (unacknowledged, no attempt counted) until it is back",
        )
        .expect("valid metric");
        let bodhi = BodhiMetrics::new();
        for collector in [
            Box::new(messages.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(tag_problems.clone()),
            Box::new(refetch_seconds.clone()),
            Box::new(last_full_scan.clone()),
            Box::new(amqp_connected.clone()),
            Box::new(database_up.clone()),
            Box::new(waiting_for_database.clone()),
            Box::new(next_full_scan.clone()),
            Box::new(dead_letters.clone()),
            Box::new(bodhi.build_matches.clone()),
            Box::new(bodhi.refetches.clone()),
            Box::new(bodhi.warm_checked.clone()),
        ] {
            registry.register(collector).expect("unique metric");
        }
        Self {
            registry,
            messages,
            refetch_seconds,
            last_full_scan,
            next_full_scan,
            amqp_connected,
            tag_problems,
            database_up,
            waiting_for_database,
            dead_letters,
            bodhi,
        }
    }

    pub fn count(&self, outcome: &str) {
        self.messages.with_label_values(&[outcome]).inc();
    }
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

pub fn router(metrics: WorkerMetrics) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(health))
        .route("/readyz", get(health))
        .with_state(metrics)
}

/// Serves until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: WorkerMetrics,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

async fn serve_metrics(State(metrics): State<WorkerMetrics>) -> axum::http::Response<String> {
    regindex::telemetry::metrics_response(&metrics.registry)
}

/// `/healthz` and `/readyz`: 200 while the worker can do its work (it consumes the work
/// queue and the database answers), else 503; the body says which part is missing. The
/// worker serves no traffic, so both questions have one answer; it is 503 while the
/// worker waits for its dependencies at start-up, too.
async fn health(State(metrics): State<WorkerMetrics>) -> impl IntoResponse {
    let consuming = metrics.amqp_connected.get() == 1;
    let database = metrics.database_up.get() == 1;
    let (status, word) = if consuming && database {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    let body = json!({
        "status": word,
        "database": if database { "up" } else { "down" },
        "work_queue": if consuming { "consuming" } else { "not_consuming" },
        "amqp_connected": consuming,
    });
    (status, Json(body))
}
