//! The one place where failures become HTTP answers. Every JSON error of both listeners
//! has one body, `{"error": "<code>", "message": "<text>", "detail": {...}}` (`detail`
//! only where there is more to say), documented in docs/protocol.md and as the `Error`
//! schema of `openapi.json`. Each route's own error type ([`ApiError`] here,
//! `events::WebhookError`, `stats_routes::StatsError`) converts into an [`ErrorAnswer`],
//! which alone writes the body.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use regindex::catalog::search::SearchError;
use regindex::index::QueryError;
use regindex::store::StoreError;
use serde::Serialize;
use serde_json::{json, Value};

/// What went wrong, for programs: the `error` field. Each code has one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A query parameter (or the query string itself) is not acceptable.
    BadQuery,
    /// The request body cannot be read (a malformed webhook envelope).
    BadRequest,
    Unauthorized,
    /// No such route, or no such thing on a route (a profile, an icon).
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
    /// A dependency (database, broker) cannot answer now: retry later.
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// Every code, in the order of the `Error` schema's enum in openapi.json.
    pub const ALL: [ErrorCode; 9] = [
        ErrorCode::BadQuery,
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadQuery | ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// One error answer: the body every JSON error has, and the headers some add.
#[derive(Debug, Serialize)]
pub struct ErrorAnswer {
    error: ErrorCode,
    /// For people: what happened, and what to change when it is the client's to change.
    message: String,
    /// Machine-readable particulars (the parameter at fault, which dependency is down).
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<serde_json::Value>,
    #[serde(skip)]
    headers: Vec<(axum::http::HeaderName, HeaderValue)>,
}

impl ErrorAnswer {
    pub fn new(error: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error,
            message: message.into(),
            detail: None,
            headers: Vec::new(),
        }
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    pub fn with_header(mut self, name: axum::http::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// A bad query parameter, named when known.
    pub fn bad_query(message: impl Into<String>, parameter: Option<&str>) -> Self {
        let answer = Self::new(ErrorCode::BadQuery, message);
        match parameter {
            Some(parameter) if !parameter.is_empty() => {
                answer.with_detail(json!({ "parameter": parameter }))
            }
            _ => answer,
        }
    }
}

impl IntoResponse for ErrorAnswer {
    fn into_response(self) -> Response {
        let mut response = (self.error.status(), Json(&self)).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// Failures of the public JSON routes (index protocol, profiles, search, icons, health,
/// fallbacks).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("bad query: {0}")]
    BadQuery(#[from] QueryError),
    #[error("bad search: {0}")]
    BadSearch(#[from] SearchError),
    /// The query string is not `key=value&...` as the route's parameters need
    /// (axum's rejection, e.g. `q` given twice).
    #[error("bad query string: {0}")]
    BadQueryString(String),
    /// No route for this path, or nothing of that name (what) on it.
    #[error("{0}")]
    NotFound(&'static str),
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Not ready (readiness probe): the reasons why the database or the broker cannot
    /// be used, `None` for the parts that are fine, and the database connections' state
    /// (`database::connections`: a lagging replica is what an operator looks for then).
    #[error("not ready: database {database:?}, broker {broker:?}")]
    NotReady {
        database: Option<String>,
        broker: Option<String>,
        connections: Value,
    },
    /// The database is known to be unreachable, and there is no earlier answer to give.
    #[error("the database is unavailable")]
    DatabaseUnavailable,
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// What the router's fallback says.
pub const NO_SUCH_ROUTE: &str = "no such route";

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::BadQueryString(rejection.body_text())
    }
}

/// A path segment that does not decode (not UTF-8) names nothing there is.
impl From<PathRejection> for ApiError {
    fn from(_: PathRejection) -> Self {
        ApiError::NotFound(NO_SUCH_ROUTE)
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        self.code().status()
    }

    fn code(&self) -> ErrorCode {
        match self {
            ApiError::BadQuery(_) | ApiError::BadSearch(_) | ApiError::BadQueryString(_) => {
                ErrorCode::BadQuery
            }
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            ApiError::NotReady { .. } | ApiError::DatabaseUnavailable => ErrorCode::Unavailable,
            // The database being away is a state to wait out (load balancers retry elsewhere).
            ApiError::Store(e) if e.is_transient() => ErrorCode::Unavailable,
            ApiError::Store(_) | ApiError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The database cannot answer now (down, overloaded, too slow): an earlier answer may
    /// stand in.
    pub fn is_unavailable(&self) -> bool {
        match self {
            ApiError::DatabaseUnavailable => true,
            ApiError::Store(e) => e.is_transient(),
            _ => false,
        }
    }
}

impl From<&ApiError> for ErrorAnswer {
    fn from(e: &ApiError) -> Self {
        let code = e.code();
        match e {
            // The parser's own words: they name the parameter and what is wrong with it.
            ApiError::BadQuery(q) => ErrorAnswer::bad_query(q.to_string(), q.parameter()),
            ApiError::BadSearch(s) => ErrorAnswer::bad_query(s.to_string(), Some(s.parameter())),
            ApiError::BadQueryString(_) | ApiError::NotFound(_) | ApiError::MethodNotAllowed => {
                ErrorAnswer::new(code, e.to_string())
            }
            // Database and broker messages stay in the log, not in answers to anonymous
            // clients: only which part is down.
            ApiError::NotReady {
                database,
                broker,
                connections,
            } => ErrorAnswer::new(code, "not ready").with_detail(json!({
                "database": if database.is_some() { "down" } else { "up" },
                "broker": if broker.is_some() { "down" } else { "up" },
                "database_connections": connections,
            })),
            ApiError::DatabaseUnavailable | ApiError::Store(_)
                if code == ErrorCode::Unavailable =>
            {
                ErrorAnswer::new(code, "the database is unavailable")
            }
            ApiError::DatabaseUnavailable | ApiError::Store(_) | ApiError::Internal(_) => {
                ErrorAnswer::new(code, "internal error")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Outages are logged where they are noticed, once, not per request.
        if self.status().is_server_error()
            && !matches!(
                self,
                ApiError::NotReady { .. } | ApiError::DatabaseUnavailable
            )
        {
            tracing::error!(error = %self, "request failed");
        }
        ErrorAnswer::from(&self).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn the_body_has_code_message_and_optional_detail() {
        let bad = ApiError::BadQuery(QueryError::UnknownParameter {
            parameter: "colour".into(),
        })
        .into_response();
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            body(bad).await,
            json!({
                "error": "bad_query",
                "message": "unknown query parameter `colour`",
                "detail": {"parameter": "colour"},
            })
        );
        let missing = ApiError::NotFound(NO_SUCH_ROUTE).into_response();
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            body(missing).await,
            json!({"error": "not_found", "message": "no such route"})
        );
    }

    #[test]
    fn codes_serialise_as_their_snake_case_names() {
        let names: Vec<String> = ErrorCode::ALL
            .iter()
            .map(|code| {
                serde_json::to_value(code)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            names,
            [
                "bad_query",
                "bad_request",
                "unauthorized",
                "not_found",
                "method_not_allowed",
                "payload_too_large",
                "unsupported_media_type",
                "unavailable",
                "internal"
            ]
        );
        for code in ErrorCode::ALL {
            assert!(code.status().is_client_error() || code.status().is_server_error());
        }
    }
}
