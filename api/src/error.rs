//! The one place where failures become HTTP answers: a status and a JSON body
//! `{"error": "<code>", "detail": ...}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use regindex::catalog::search::SearchError;
use regindex::index::QueryError;
use regindex::store::StoreError;
use serde::Serialize;
use serde_json::json;

/// The JSON body of every error answer; a struct so that `error` comes first.
#[derive(Debug, Serialize)]
struct ErrorBody {
    error: &'static str,
    detail: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("bad query: {0}")]
    BadQuery(#[from] QueryError),
    #[error("bad search: {0}")]
    BadSearch(#[from] SearchError),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Not ready (readiness probe): the reasons why the database or the broker cannot
    /// be used, `None` for the parts that are fine.
    #[error("not ready: database {database:?}, broker {broker:?}")]
    NotReady {
        database: Option<String>,
        broker: Option<String>,
    },
    /// The database is known to be unreachable, and there is no earlier answer to give.
    #[error("the database is unavailable")]
    DatabaseUnavailable,
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadQuery(_) | ApiError::BadSearch(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotReady { .. } | ApiError::DatabaseUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            // The database being away is a state to wait out (load balancers retry elsewhere).
            ApiError::Store(e) if e.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadQuery(_) | ApiError::BadSearch(_) => "bad_query",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::NotReady { .. } | ApiError::DatabaseUnavailable => "unavailable",
            ApiError::Store(e) if e.is_transient() => "unavailable",
            ApiError::Store(_) | ApiError::Internal(_) => "internal",
        }
    }

    fn detail(&self) -> serde_json::Value {
        match self {
            ApiError::BadQuery(e) => {
                json!({ "parameter": e.parameter(), "message": e.to_string() })
            }
            ApiError::BadSearch(e) => {
                json!({ "parameter": e.parameter(), "message": e.to_string() })
            }
            ApiError::NotFound => json!("no such route"),
            ApiError::MethodNotAllowed => json!("method not allowed on this route"),
            // Database and broker messages stay in the log, not in answers to anonymous
            // clients: only which part is down.
            ApiError::NotReady { database, broker } => json!({
                "database": if database.is_some() { "down" } else { "up" },
                "broker": if broker.is_some() { "down" } else { "up" },
            }),
            ApiError::DatabaseUnavailable => json!("the database is unavailable"),
            ApiError::Store(e) if e.is_transient() => json!("the database is unavailable"),
            ApiError::Store(_) | ApiError::Internal(_) => json!("internal error"),
        }
    }
}

impl ApiError {
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        // Outages are logged where they are noticed, once, not per request.
        if status.is_server_error()
            && !matches!(
                self,
                ApiError::NotReady { .. } | ApiError::DatabaseUnavailable
            )
        {
            tracing::error!(error = %self, "request failed");
        }
        let body = ErrorBody {
            error: self.code(),
            detail: self.detail(),
        };
        (status, Json(body)).into_response()
    }
}
