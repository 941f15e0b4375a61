//! `GET /v1/search?q=&n=&page=`: the Docker registry v1 search answer, so `docker search`
//! style tools and scripts can search the index.

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use regindex::search::{SearchRequest, V1SearchResponse};
use serde::Deserialize;

use super::{server_error, WebState};

#[derive(Debug, Deserialize)]
pub(super) struct SearchParams {
    q: Option<String>,
    n: Option<String>,
    page: Option<String>,
}

fn json(status: StatusCode, cache_control: HeaderValue, body: Vec<u8>) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, cache_control),
        ],
        body,
    )
        .into_response()
}

/// The 400 answer: which parameter, and why.
pub(super) fn bad_request(parameter: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "error": {"code": "BAD_REQUEST", "parameter": parameter, "message": message}
    });
    json(
        StatusCode::BAD_REQUEST,
        HeaderValue::from_static("no-store"),
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

pub(super) async fn v1_search(
    State(state): State<WebState>,
    params: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(params)) = params else {
        return bad_request("", "the query string is not valid");
    };
    let request = match SearchRequest::parse(
        params.q.as_deref(),
        params.n.as_deref(),
        params.page.as_deref(),
    ) {
        Ok(request) => request,
        Err(e) => return bad_request(e.parameter(), &e.to_string()),
    };
    match state.store.search(&request).await {
        Ok(results) => {
            let body =
                serde_json::to_vec(&V1SearchResponse::new(&request, results)).unwrap_or_default();
            json(StatusCode::OK, state.cache_control(), body)
        }
        Err(e) => server_error(&e),
    }
}
