//! `GET /stats/...`: registry activity history and statistics (see `docs/history.md`),
//! and `GET /openapi.json`, the OpenAPI 3 description of the api.
//!
//! Handlers only parse (`regindex::history::query`, pure, 400 on bad parameters), call
//! one query and serialise the page. Every list is paginated (`page`, `per_page`) in a
//! stable order.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use regindex::config::Config;
use regindex::history::queries::{
    BlobRow, Counts, DailyActivity, DeletionRow, HistoryQueries, ImageRow, MissingBlob,
    TaggedManifest,
};
use regindex::history::query::{
    ActivityQuery, CountsQuery, DeletionsQuery, ImagesQuery, Paged, QueryError, ScopedQuery,
};
use regindex::history::HistoryError;
use regindex::model::AliasMap;
use regindex::store::Store;
use serde_json::json;
use tracing::error;

/// The OpenAPI 3 description served at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

#[derive(Clone)]
pub struct StatsState(Arc<Inner>);

struct Inner {
    queries: HistoryQueries,
    aliases: AliasMap,
}

impl StatsState {
    pub fn new(config: &Config, store: &Store) -> Self {
        Self(Arc::new(Inner {
            queries: HistoryQueries::new(store.pool().clone()),
            aliases: config.history.aliases.clone(),
        }))
    }
}

/// The statistics routes and `/openapi.json`, state applied: merge into the api's router
/// (whatever its state type).
pub fn router<S: Clone + Send + Sync + 'static>(state: StatsState) -> Router<S> {
    Router::new()
        .route("/stats/images", get(images))
        .route("/stats/images/older-than", get(images_older_than))
        .route("/stats/images/not-pulled", get(images_not_pulled))
        .route("/stats/images/most-tags", get(most_tagged))
        .route("/stats/counts", get(counts))
        .route("/stats/blobs/orphaned", get(orphaned_blobs))
        .route("/stats/manifests/missing-blobs", get(missing_blobs))
        .route("/stats/deletions", get(deletions))
        .route("/stats/activity", get(activity))
        .route("/openapi.json", get(openapi))
        .with_state(state)
}

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error(transparent)]
    BadQuery(#[from] QueryError),
    #[error("query string: {0}")]
    BadQueryString(String),
    #[error(transparent)]
    History(#[from] HistoryError),
}

impl IntoResponse for StatsError {
    fn into_response(self) -> Response {
        let status = match &self {
            StatsError::BadQuery(_) | StatsError::BadQueryString(_) => StatusCode::BAD_REQUEST,
            StatsError::History(e) => {
                error!(error = %e, "statistics query failed");
                if e.is_transient() {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            }
        };
        let message = match &self {
            // The database's own message stays in the log.
            StatsError::History(_) => "the statistics are unavailable".to_owned(),
            other => other.to_string(),
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}

type Params = Result<Query<BTreeMap<String, String>>, QueryRejection>;

fn params(raw: Params) -> Result<BTreeMap<String, String>, StatsError> {
    raw.map(|Query(map)| map)
        .map_err(|e| StatsError::BadQueryString(e.body_text()))
}

async fn images(
    State(s): State<StatsState>,
    raw: Params,
) -> Result<Json<Paged<ImageRow>>, StatsError> {
    let q = ImagesQuery::all(params(raw)?, &s.0.aliases)?;
    Ok(Json(s.0.queries.images(&q, Utc::now()).await?))
}

async fn images_older_than(
    State(s): State<StatsState>,
    raw: Params,
) -> Result<Json<Paged<ImageRow>>, StatsError> {
    let q = ImagesQuery::older_than(params(raw)?, &s.0.aliases)?;
    Ok(Json(s.0.queries.images(&q, Utc::now()).await?))
}

async fn images_not_pulled(
    State(s): State<StatsState>,
    raw: Params,
) -> Result<Json<Paged<ImageRow>>, StatsError> {
    let q = ImagesQuery::not_pulled(params(raw)?, &s.0.aliases)?;
    Ok(Json(s.0.queries.images(&q, Utc::now()).await?))
}

async fn most_tagged(
    State(s): State<StatsState>,
    raw: Params,
) -> Result<Json<Paged<TaggedManifest>>, StatsError> {
    let q = ScopedQuery::parse(params(raw)?, &s.0.aliases)?;
    Ok(Json(s.0.queries.most_tagged(&q).await?))
}

async fn counts(State(s): State<StatsState>, raw: Params) -> Result<Json<Counts>, StatsError> {
    let q = CountsQuery::parse(params(raw)?, &s.0.aliases)?;
    Ok(Json(s.0.queries.counts(&q).await?))
}

async fn orphaned_blobs(
    State(s): State<StatsState>,
    raw: Params,
) -> Result<Json<Paged<BlobRow>>, StatsError> {
    let q = ScopedQuery::parse(params(raw)?, &s.0.aliases)?;
    Ok(Json(s.0.queries.orphaned_blobs(&q).await?))
}

async fn missing_blobs(
    State(s): State<StatsState>,
    raw: Params,
) -> Result<Json<Paged<MissingBlob>>, StatsError> {
    let q = ScopedQuery::parse(params(raw)?, &s.0.aliases)?;
    Ok(Json(s.0.queries.missing_blobs(&q).await?))
}

async fn deletions(
    State(s): State<StatsState>,
    raw: Params,
) -> Result<Json<Paged<DeletionRow>>, StatsError> {
    let q = DeletionsQuery::parse(params(raw)?, &s.0.aliases)?;
    Ok(Json(s.0.queries.deletions(&q).await?))
}

async fn activity(
    State(s): State<StatsState>,
    raw: Params,
) -> Result<Json<Paged<DailyActivity>>, StatsError> {
    let q = ActivityQuery::parse(params(raw)?, &s.0.aliases)?;
    Ok(Json(s.0.queries.activity(&q).await?))
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_describes_every_statistics_route() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let source = include_str!("stats_routes.rs");
        for line in source
            .lines()
            .filter(|l| l.trim_start().starts_with(".route(\"/"))
        {
            let path = line.split('"').nth(1).unwrap();
            assert!(
                doc["paths"].get(path).is_some(),
                "{path} missing from openapi.json"
            );
        }
    }

    #[test]
    fn bad_parameters_are_400_json() {
        let response = StatsError::BadQuery(QueryError::Missing("days")).into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
}
