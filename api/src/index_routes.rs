//! `GET /index/static` and `GET /index/dynamic`: the registry index protocol.
//!
//! Both give the same bytes for the same data and query, whatever the parameter order;
//! they differ only in caching headers. Bodies come from the response cache when the
//! data version has not moved.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use regindex::index::{IndexProfile, Query};
use regindex::render::render_profile_index;

use crate::cache::Rendered;
use crate::conditional::{accepts_gzip, none_match};
use crate::error::ApiError;
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/index/static", get(index_static))
        .route("/index/dynamic", get(index_dynamic))
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Flavour {
    Static,
    Dynamic,
}

async fn index_static(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve(state, raw, headers, Flavour::Static, None).await
}

async fn index_dynamic(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve(state, raw, headers, Flavour::Dynamic, None).await
}

/// Answers one index request; `profile` is `(name, profile)` for `/profiles/<name>/...`
/// (`profile_routes`), `None` for the protocol's own paths.
#[tracing::instrument(skip(state, raw, headers, profile), fields(query, profile))]
pub(crate) async fn serve(
    state: AppState,
    raw: Option<String>,
    headers: HeaderMap,
    flavour: Flavour,
    profile: Option<(&str, &IndexProfile)>,
) -> Result<Response, ApiError> {
    let query = Query::parse(raw.as_deref().unwrap_or(""))?;
    let mut key = query.canonical();
    tracing::Span::current().record("query", key.as_str());
    if let Some((name, _)) = profile {
        tracing::Span::current().record("profile", name);
        // A canonical query never starts with '@': profile answers get keys of their own.
        key = format!("@{name}?{key}");
    }
    let rendered = rendered(&state, query, key, profile.map(|(_, p)| p)).await?;

    let cache_control = match flavour {
        Flavour::Static => format!("public, max-age={}", state.config.api.static_max_age_secs),
        Flavour::Dynamic => "no-store".to_owned(),
    };
    let gzip = accepts_gzip(header_str(&headers, header::ACCEPT_ENCODING));
    let etag = if gzip {
        &rendered.gzip_etag
    } else {
        &rendered.etag
    };
    let mut response_headers = HeaderMap::new();
    response_headers.insert(header::CACHE_CONTROL, header_value(&cache_control)?);
    response_headers.insert(header::ETAG, header_value(etag)?);
    response_headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));

    // The client's copy is current when it names either encoding of this body.
    if none_match(
        header_str(&headers, header::IF_NONE_MATCH),
        &[&rendered.etag, &rendered.gzip_etag],
    ) {
        return Ok((StatusCode::NOT_MODIFIED, response_headers).into_response());
    }
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body = if gzip {
        response_headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        rendered.gzip.clone()
    } else {
        rendered.json.clone()
    };
    Ok((StatusCode::OK, response_headers, body).into_response())
}

/// The rendered answer to `query` at the current data version: from the cache, or
/// queried, built and compressed (off the executor) and cached.
async fn rendered(
    state: &AppState,
    query: Query,
    key: String,
    profile: Option<&IndexProfile>,
) -> Result<Arc<Rendered>, ApiError> {
    let default_profile = IndexProfile::default();
    let profile = profile.unwrap_or(&default_profile);
    // The snapshot read by `query_index` is at least this version, as the cache requires.
    let version = state.store.data_version().await?;
    state
        .cache
        .get_or_render(version, &key, || async {
            // The one rendering shared with the static index files (icon URLs included).
            let rendered = render_profile_index(
                &state.store,
                &query,
                state.config.public_registry_url(),
                &state.config.icons,
                profile,
            )
            .await?;
            let body = rendered.body;
            tokio::task::spawn_blocking(move || Rendered::new(body))
                .await
                .map_err(|e| ApiError::Internal(format!("rendering task failed: {e}")))
        })
        .await
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn header_value(value: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(value)
        .map_err(|e| ApiError::Internal(format!("header value {value:?}: {e}")))
}
