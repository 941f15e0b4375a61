//! `GET /stats/...`: registry activity history and statistics (see `docs/history.md`).
//!
//! Handlers only parse (`regindex::history::query`, pure, 400 on bad parameters), call
//! one query and serialise the page. Every list is paginated (`page`, `per_page`) in a
//! stable order.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use chrono::Utc;
use regindex::config::Config;
use regindex::history::query::{
    ActivityQuery, CountsQuery, DeletionsQuery, ImagesQuery, Paged, QueryError, ScopedQuery,
};
use regindex::history::HistoryError;
use regindex::model::AliasMap;
use regindex::store::history::statistics::{
    BlobRow, Counts, DailyActivity, DeletionRow, HistoryQueries, ImageRow, MissingBlob,
    TaggedManifest,
};
use regindex::store::Store;
use tracing::error;

use crate::error::{ErrorAnswer, ErrorCode};

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

/// The statistics routes, state applied: merge into the api's router (whatever its
/// state type).
pub fn router<S: Clone + Send + Sync + 'static>(state: StatsState) -> Router<S> {
    crate::routes::router().with_state(state)
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
        let answer = match &self {
            StatsError::BadQuery(e) => {
                let parameter = match e {
                    QueryError::Unknown(name) | QueryError::Invalid { name, .. } => name.as_str(),
                    QueryError::Missing(name) => name,
                };
                ErrorAnswer::bad_query(e.to_string(), Some(parameter))
            }
            StatsError::BadQueryString(_) => ErrorAnswer::bad_query(self.to_string(), None),
            StatsError::History(e) => {
                error!(error = %e, "statistics query failed");
                let code = if e.is_transient() {
                    ErrorCode::Unavailable
                } else {
                    ErrorCode::Internal
                };
                // The database's own message stays in the log.
                ErrorAnswer::new(code, "the statistics are unavailable")
            }
        };
        answer.into_response()
    }
}

type Params = Result<Query<BTreeMap<String, String>>, QueryRejection>;

fn params(raw: Params) -> Result<BTreeMap<String, String>, StatsError> {
    raw.map(|Query(map)| map)
        .map_err(|e| StatsError::BadQueryString(e.body_text()))
}

pub(crate) async fn images(
    State(s): State<StatsState>,
    raw: Params,
) -> Result<Json<Paged<ImageRow>>, StatsError> {
    let q = ImagesQuery::all(params(raw)?, &s.0.aliases)?;
    Ok(Json(s.0.queries.images(&q, Utc::now()).await?))
}

pub(crate) async fn images_older_than(
    State(s): State<StatsState>,
    raw: Params,
) -> Result<Json<Paged<ImageRow>>, StatsError> {
    let q = ImagesQuery::older_than(params(raw)?, &s.0.aliases)?;
    Ok(Json(s.0.queries.images(&q, Utc::now()).await?))
}

pub(crate) async fn images_not_pulled(
    State(s): State<StatsState>,
    raw: Params,
) -> Result<Json<Paged<ImageRow>>, StatsError> {
    let q = ImagesQuery::not_pulled(params(raw)?, &s.0.aliases)?;
    Ok(Json(s.0.queries.images(&q, Utc::now()).await?))
}

pub(crate) async fn most_tagged(
    State(s): State<StatsState>,
    raw: Params,
) -> Result<Json<Paged<TaggedManifest>>, StatsError> {
    let q = ScopedQuery::parse(params(raw)?, &s.0.aliases)?;
    Ok(Json(s.0.queries.most_tagged(&q).await?))
}

pub(crate) async fn counts(
    State(s): State<StatsState>,
    raw: Params,
) -> Result<Json<Counts>, StatsError> {
    let q = CountsQuery::parse(params(raw)?, &s.0.aliases)?;
    Ok(Json(s.0.queries.counts(&q).await?))
}

pub(crate) async fn orphaned_blobs(
    State(s): State<StatsState>,
    raw: Params,
) -> Result<Json<Paged<BlobRow>>, StatsError> {
    let q = ScopedQuery::parse(params(raw)?, &s.0.aliases)?;
    Ok(Json(s.0.queries.orphaned_blobs(&q).await?))
}

pub(crate) async fn missing_blobs(
    State(s): State<StatsState>,
    raw: Params,
) -> Result<Json<Paged<MissingBlob>>, StatsError> {
    let q = ScopedQuery::parse(params(raw)?, &s.0.aliases)?;
    Ok(Json(s.0.queries.missing_blobs(&q).await?))
}

pub(crate) async fn deletions(
    State(s): State<StatsState>,
    raw: Params,
) -> Result<Json<Paged<DeletionRow>>, StatsError> {
    let q = DeletionsQuery::parse(params(raw)?, &s.0.aliases)?;
    Ok(Json(s.0.queries.deletions(&q).await?))
}

pub(crate) async fn activity(
    State(s): State<StatsState>,
    raw: Params,
) -> Result<Json<Paged<DailyActivity>>, StatsError> {
    let q = ActivityQuery::parse(params(raw)?, &s.0.aliases)?;
    Ok(Json(s.0.queries.activity(&q).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_parameters_are_400_json() {
        let response = StatsError::BadQuery(QueryError::Missing("days")).into_response();
        assert_eq!(response.status(), axum::http::StatusCode::BAD_REQUEST);
    }
}
