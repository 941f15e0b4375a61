//! `POST /events`: docker/distribution notifications, published to the broker.
//!
//! The answer is 200 only once the broker has confirmed every published event. Any
//! other answer makes the registry resend the same request later, so a broker outage
//! (503, within `api.publish_timeout_ms`) delays events but never loses them. Pulls and
//! mounts are published only when `api.publish_pulls` is set; events nothing is bound to
//! and the index does not need (blob pushes, pulls without a history queue) are counted
//! as ignored. So is an event with an unusable value (a name clients could not pull, an
//! id too long for AMQP): it is skipped alone, and the rest of the request goes on.
//! Several events of one request for one repository make one refetch (see
//! [`deliveries`]); the history still gets each.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use regindex::bus::messages::{deliveries, parse_envelope, Delivery, RegistryEvent, SkippedEvent};
use regindex::bus::{BusError, OutgoingMessage, Publisher};
use regindex::config::{Config, ConfigError, WebhookAuth};
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;
use tracing::{info_span, warn, Instrument};

use crate::error::{ErrorAnswer, ErrorCode};
use crate::metrics::ApiMetrics;

/// Content types registries send notifications with.
const ACCEPTED_CONTENT_TYPES: [&str; 3] = [
    "application/vnd.docker.distribution.events.v1+json",
    "application/vnd.docker.distribution.events.v2+json",
    "application/json",
];

/// What the endpoint needs.
#[derive(Clone)]
pub struct EventsState(Arc<Inner>);

struct Inner {
    publisher: Arc<Publisher>,
    exchange: String,
    /// SHA-256 of the expected bearer token: comparing fixed-length hashes in constant
    /// time leaks neither the token nor its length. `None` only with `api.webhook_auth: none`.
    token_sha256: Option<[u8; 32]>,
    body_limit_bytes: usize,
    publish_pulls: bool,
    /// The history queue exists: coalesced copies of events are published for it.
    history: bool,
    /// Host (and path) clients pull from: `<pull_host>/<name>` must fit 255 characters.
    pull_host: String,
    publish_timeout: Duration,
    metrics: ApiMetrics,
}

impl EventsState {
    /// Fails when `api.webhook_token` is missing and `api.webhook_auth` is not `none`:
    /// the endpoint is never open by accident.
    pub fn new(
        config: &Config,
        publisher: Arc<Publisher>,
        metrics: ApiMetrics,
    ) -> Result<Self, ConfigError> {
        let token_sha256 = match config.api.webhook_auth()? {
            WebhookAuth::Bearer(token) => Some(sha256(token.expose_secret().as_bytes())),
            WebhookAuth::Open => None,
        };
        Ok(Self(Arc::new(Inner {
            publisher,
            exchange: config.amqp.events_exchange.clone(),
            token_sha256,
            body_limit_bytes: config.api.body_limit_bytes,
            publish_pulls: config.api.publish_pulls,
            history: config.history.enabled,
            pull_host: config.pull_host(),
            publish_timeout: config.api.publish_timeout,
            metrics,
        })))
    }
}

/// `POST /events`, state applied: merge it into the api's router.
pub fn router(state: EventsState) -> Router {
    crate::routes::router().with_state(state)
}

/// The answer once every event is published.
#[derive(Debug, Serialize)]
pub struct Published {
    pub published: usize,
    pub ignored: usize,
}

/// Why a notification was refused; each maps to one error code (and so one status).
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error(
        "unsupported content type {0:?}: send application/vnd.docker.distribution.events.v1+json"
    )]
    UnsupportedMediaType(String),
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    #[error("malformed notification: {0}")]
    Malformed(String),
    #[error("the broker did not take the events, retry later: {0}")]
    Broker(#[from] BusError),
}

impl WebhookError {
    fn code(&self) -> ErrorCode {
        match self {
            WebhookError::Unauthorized => ErrorCode::Unauthorized,
            WebhookError::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            WebhookError::TooLarge(_) => ErrorCode::PayloadTooLarge,
            WebhookError::Malformed(_) => ErrorCode::BadRequest,
            WebhookError::Broker(_) => ErrorCode::Unavailable,
        }
    }

    /// The `reason` label of the rejection metric.
    fn reason(&self) -> &'static str {
        match self {
            WebhookError::Unauthorized => "unauthorized",
            WebhookError::UnsupportedMediaType(_) => "media_type",
            WebhookError::TooLarge(_) => "too_large",
            WebhookError::Malformed(_) => "malformed",
            WebhookError::Broker(_) => "broker",
        }
    }
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        let answer = ErrorAnswer::new(self.code(), self.to_string());
        match self {
            WebhookError::Unauthorized => {
                answer.with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
            }
            WebhookError::TooLarge(limit) => answer.with_detail(json!({ "limit_bytes": limit })),
            _ => answer,
        }
        .into_response()
    }
}

pub(crate) async fn receive(
    State(state): State<EventsState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Published>, WebhookError> {
    let result = handle(&state.0, &headers, body).await;
    if let Err(e) = &result {
        state
            .0
            .metrics
            .requests_rejected
            .with_label_values(&[e.reason()])
            .inc();
        if matches!(e, WebhookError::Broker(_)) {
            warn!(error = %e, "webhook refused: broker unavailable");
        }
    }
    result.map(Json)
}

async fn handle(state: &Inner, headers: &HeaderMap, body: Body) -> Result<Published, WebhookError> {
    check_token(state, headers)?;
    check_content_type(headers)?;
    let declared_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared_length.is_some_and(|n| n > state.body_limit_bytes) {
        return Err(WebhookError::TooLarge(state.body_limit_bytes));
    }
    let bytes = axum::body::to_bytes(body, state.body_limit_bytes)
        .await
        .map_err(|_| WebhookError::TooLarge(state.body_limit_bytes))?;
    let events = parse_envelope(&bytes).map_err(|e| WebhookError::Malformed(e.to_string()))?;

    let mut outcome = Published {
        published: 0,
        ignored: 0,
    };
    let mut wanted = Vec::new();
    for event in events {
        let event = event.and_then(|event| {
            event
                .repository
                .check_reference_length(&state.pull_host)
                .map_err(SkippedEvent::from)?;
            Ok(event)
        });
        match event {
            Ok(event) => {
                state
                    .metrics
                    .events_received
                    .with_label_values(&[event.action.as_str()])
                    .inc();
                if event.action.changes_registry() || state.publish_pulls {
                    wanted.push(event);
                } else {
                    ignore(state, &mut outcome, "pull_or_mount");
                }
            }
            Err(skipped) => {
                warn!(reason = %skipped, "webhook event skipped");
                state
                    .metrics
                    .events_received
                    .with_label_values(&["invalid"])
                    .inc();
                ignore(state, &mut outcome, "invalid");
            }
        }
    }
    let mut to_publish = Vec::new();
    for (event, delivery) in wanted.iter().zip(deliveries(&wanted)) {
        match delivery {
            Delivery::HistoryOnly if !state.history => ignore(state, &mut outcome, "coalesced"),
            delivery => to_publish.push((event, delivery)),
        }
    }
    let publishing = futures::future::join_all(
        to_publish
            .iter()
            .map(|(event, delivery)| publish(state, event, *delivery)),
    );
    // Answer (503) before the registry's notification timeout: otherwise it gives up and
    // resends the request while this one may still be published.
    let results = tokio::time::timeout(state.publish_timeout, publishing)
        .await
        .map_err(|_| BusError::Timeout("publishing the webhook's events"))?;
    for ((event, delivery), result) in to_publish.iter().zip(results) {
        match result {
            Ok(()) => outcome.published += 1,
            // Nothing is bound to it and the index does not need it (blob pushes; pulls
            // without a history queue): not an error, or the registry would resend it forever.
            Err(BusError::Unroutable { .. })
                if !event.needs_refetch() || *delivery == Delivery::HistoryOnly =>
            {
                ignore(state, &mut outcome, "unroutable")
            }
            // A value AMQP cannot carry: this event alone is dropped (logged), so one
            // odd notification cannot block the registry's queue.
            Err(BusError::Unpublishable(reason)) => {
                warn!(repository = %event.repository, %reason, "webhook event not publishable");
                ignore(state, &mut outcome, "unpublishable")
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(outcome)
}

fn ignore(state: &Inner, outcome: &mut Published, reason: &str) {
    state
        .metrics
        .events_ignored
        .with_label_values(&[reason])
        .inc();
    outcome.ignored += 1;
}

async fn publish(state: &Inner, event: &RegistryEvent, delivery: Delivery) -> Result<(), BusError> {
    let routing_key = event.routing_key_for(delivery);
    let span = info_span!(
        "publish_event",
        repository = %event.repository,
        digest = event.digest.as_ref().map(|d| d.as_str()).unwrap_or(""),
        tag = event.tag.as_ref().map(|t| t.as_str()).unwrap_or(""),
        routing_key = %routing_key,
    );
    async {
        let body = serde_json::to_vec(event).expect("events serialise");
        let mut message = OutgoingMessage::json(&state.exchange, &routing_key, body);
        // The registry's event id identifies the message: a resent request keeps it.
        message.message_id = event.id.clone();
        state.publisher.publish(&message).await?;
        state
            .metrics
            .events_published
            .with_label_values(&[&routing_key])
            .inc();
        tracing::debug!("published");
        Ok(())
    }
    .instrument(span)
    .await
}

fn check_token(state: &Inner, headers: &HeaderMap) -> Result<(), WebhookError> {
    let Some(expected) = &state.token_sha256 else {
        return Ok(());
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(WebhookError::Unauthorized)?;
    if bool::from(sha256(presented.trim().as_bytes()).ct_eq(expected)) {
        Ok(())
    } else {
        Err(WebhookError::Unauthorized)
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), WebhookError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if ACCEPTED_CONTENT_TYPES.contains(&essence.as_str()) {
        Ok(())
    } else {
        Err(WebhookError::UnsupportedMediaType(value.to_owned()))
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), value.parse().unwrap());
        }
        map
    }

    fn state(token: Option<&str>) -> Inner {
        Inner {
            publisher: Arc::new(Publisher::new("amqp://127.0.0.1:1".to_owned().into(), None)),
            exchange: "e".into(),
            token_sha256: token.map(|t| sha256(t.as_bytes())),
            body_limit_bytes: 10,
            publish_pulls: false,
            history: true,
            pull_host: "registry.example.org".into(),
            publish_timeout: Duration::from_secs(3),
            metrics: ApiMetrics::new(),
        }
    }

    #[test]
    fn bearer_token_must_match_exactly() {
        let s = state(Some("secret"));
        assert!(check_token(&s, &headers(&[(header::AUTHORIZATION, "Bearer secret")])).is_ok());
        for wrong in ["Bearer secre", "Bearer secret2", "Basic secret", "secret"] {
            assert!(
                check_token(&s, &headers(&[(header::AUTHORIZATION, wrong)])).is_err(),
                "{wrong}"
            );
        }
        assert!(check_token(&s, &HeaderMap::new()).is_err());
        assert!(check_token(&state(None), &HeaderMap::new()).is_ok());
    }

    #[test]
    fn content_types() {
        for ok in [
            "application/vnd.docker.distribution.events.v1+json",
            "application/vnd.docker.distribution.events.v2+json",
            "application/json; charset=utf-8",
        ] {
            assert!(
                check_content_type(&headers(&[(header::CONTENT_TYPE, ok)])).is_ok(),
                "{ok}"
            );
        }
        assert!(check_content_type(&headers(&[(header::CONTENT_TYPE, "text/plain")])).is_err());
        assert!(check_content_type(&HeaderMap::new()).is_err());
    }
}
