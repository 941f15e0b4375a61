//! What the api serves to people and to search tools: the HTML pages (`/`,
//! `/repository/<name>`), the extracted icons (`/icons/<sha256>.<ext>`) and the Docker
//! registry v1 search (`/v1/search`), routed by `routes::ROUTES`.
//!
//! The pages are for browsers: their errors are HTML pages (400, 404) or plain text
//! (500). Icons and search answer errors with the api's JSON error body.

mod html;
mod icon_routes;
mod pages;
mod search_routes;

use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use regindex::catalog::search::SearchRequest;
use regindex::config::Config;
use regindex::index::{build_response, Query as IndexQuery};
use regindex::model::RepositoryName;
use regindex::store::{Store, StoreError};
use serde::Deserialize;
use tracing::error;

pub(crate) use icon_routes::icon;
use pages::{Card, Site};
pub(crate) use search_routes::v1_search;

/// What the web routes need.
#[derive(Clone)]
pub struct WebState {
    pub store: Store,
    pub config: Arc<Config>,
}

impl WebState {
    pub fn new(store: Store, config: Arc<Config>) -> Self {
        Self { store, config }
    }

    fn site(&self) -> Site {
        Site {
            title: self.config.web.title.clone(),
            pull_host: self.config.pull_host(),
            icon_base: self.config.icons.base_url.clone(),
        }
    }

    fn cache_control(&self) -> HeaderValue {
        HeaderValue::from_str(&format!(
            "public, max-age={}",
            self.config.web.max_age.as_secs()
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("no-cache"))
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct PageParams {
    q: Option<String>,
    page: Option<String>,
}

/// The pages run no script and submit only the search form: the policy says so, which
/// also contains the damage of any escaping mistake.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; img-src * data:; style-src 'unsafe-inline'; \
     form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

fn html(state: &WebState, status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, state.cache_control()),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

/// A page the database could not give: 503 while the database is away or too slow (a
/// state to wait out, as the JSON routes say it), 500 otherwise.
fn server_error(e: &StoreError) -> Response {
    let status = if e.is_transient() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    error!(error = %e, %status, "web page failed");
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        "The index is not available right now.\n",
    )
        .into_response()
}

fn bad_request(state: &WebState, query: &str, problem: &str) -> Response {
    let body = html::layout(
        &state.config.web.title,
        "Bad request",
        query,
        &format!("<p class=\"count\">{}</p>", html::esc(problem)),
    );
    html(state, StatusCode::BAD_REQUEST, body)
}

pub(crate) async fn index(
    State(state): State<WebState>,
    params: Result<Query<PageParams>, QueryRejection>,
) -> Response {
    let params = match params {
        Ok(Query(params)) => params,
        Err(e) => return bad_request(&state, "", &e.body_text()),
    };
    // The page size is the configured one (it may exceed the API's limit on `n`).
    let parsed =
        SearchRequest::parse(params.q.as_deref(), None, params.page.as_deref()).map(|request| {
            SearchRequest {
                page_size: state.config.web.page_size,
                ..request
            }
        });
    let request = match parsed {
        Ok(request) => request,
        Err(e) => {
            return bad_request(&state, params.q.as_deref().unwrap_or(""), &e.to_string());
        }
    };
    let (hits, total) = match state.store.search_summaries(&request).await {
        Ok(found) => found,
        Err(e) => return server_error(&e),
    };
    let names: Vec<String> = hits.iter().map(|h| h.hit.name.clone()).collect();
    let mut contents = match state.store.repository_contents(&names).await {
        Ok(contents) => contents,
        Err(e) => return server_error(&e),
    };
    let cards: Vec<Card> = hits
        .into_iter()
        .map(|h| {
            let c = contents.remove(&h.hit.name).unwrap_or_default();
            Card {
                name: h.hit.name,
                title: h.hit.title,
                description: h.hit.description,
                icon: h.icon,
                tags: c.tags,
                architectures: c.architectures,
            }
        })
        .collect();
    let body = pages::index_page(
        &state.site(),
        &request.query,
        &cards,
        total,
        request.page,
        request.page_size,
    );
    html(&state, StatusCode::OK, body)
}

pub(crate) async fn repository(
    State(state): State<WebState>,
    name: Result<Path<String>, PathRejection>,
) -> Response {
    let site = state.site();
    // A name that does not decode (not UTF-8) names no repository.
    let name = name.map(|Path(name)| name).unwrap_or_default();
    let not_found = || {
        html(
            &state,
            StatusCode::NOT_FOUND,
            pages::not_found_page(&site, &name),
        )
    };
    let Ok(repository) = RepositoryName::parse(&name) else {
        return not_found();
    };
    let problems = match state.store.problems(Some(&repository)).await {
        Ok(problems) => problems,
        Err(e) => return server_error(&e),
    };
    let summary = match state.store.repository_summary(repository.as_str()).await {
        Ok(Some(summary)) => summary,
        Ok(None) if !problems.is_empty() => {
            let page = pages::problems_page(&site, repository.as_str(), &problems);
            return html(&state, StatusCode::OK, page);
        }
        Ok(None) => return not_found(),
        Err(e) => return server_error(&e),
    };
    let mut contents = match state
        .store
        .repository_contents(std::slice::from_ref(&summary.name))
        .await
    {
        Ok(mut contents) => contents.remove(&summary.name).unwrap_or_default(),
        Err(e) => return server_error(&e),
    };
    let query = IndexQuery {
        repositories: [repository.clone()].into_iter().collect(),
        ..IndexQuery::default()
    };
    let snapshot = match state.store.query_index(&query).await {
        Ok(snapshot) => snapshot,
        Err(e) => return server_error(&e),
    };
    let response = build_response(
        state.config.public_registry_url(),
        &query,
        snapshot.listings,
    );
    let Some(result) = response.results.into_iter().next() else {
        return not_found();
    };
    let card = Card {
        name: summary.name,
        title: summary.title,
        description: summary.description,
        icon: summary.icon,
        tags: std::mem::take(&mut contents.tags),
        architectures: std::mem::take(&mut contents.architectures),
    };
    html(
        &state,
        StatusCode::OK,
        pages::repository_page(&site, &card, &result, &problems),
    )
}
