//! `GET /v1/search?q=&n=&page=`: the Docker registry v1 search answer, so `docker search`
//! style tools and scripts can search the index. Bad parameters are a 400 with the api's
//! JSON error body (`{"error": "bad_query", "message": ..., "detail": {"parameter": ...}}`).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use regindex::catalog::search::{SearchError, SearchRequest, V1SearchResponse};
use serde::Deserialize;

use super::WebState;
use crate::error::ApiError;

#[derive(Debug, Deserialize)]
pub(crate) struct SearchParams {
    q: Option<String>,
    n: Option<String>,
    page: Option<String>,
}

pub(crate) async fn v1_search(
    State(state): State<WebState>,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| SearchError::Malformed(e.body_text()))?;
    let request = SearchRequest::parse(
        params.q.as_deref(),
        params.n.as_deref(),
        params.page.as_deref(),
    )?;
    let results = state.store.search(&request).await?;
    let body = serde_json::to_vec(&V1SearchResponse::new(&request, results))
        .map_err(|e| ApiError::Internal(format!("serialising search results: {e}")))?;
    Ok((
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, state.cache_control()),
        ],
        body,
    )
        .into_response())
}
