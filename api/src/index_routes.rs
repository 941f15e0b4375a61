//! `GET /index/static` and `GET /index/dynamic`: the registry index protocol.
//!
//! Both give the same bytes for the same data and query, whatever the parameter order;
//! they differ only in caching headers. Bodies come from the response cache when the
//! data version has not moved; the version is kept in memory (`DataVersionWatch`,
//! learnt from the database's notifications), so a cached answer touches no database.
//!
//! When the database cannot answer (down, or too slow), a query answered before gets
//! that last answer, marked stale (`Warning: 110`, `X-Regindex-Stale: true`, `Age`), as
//! long as it is younger than `api.stale_if_error_secs`; other queries get 503. Neither
//! waits for the pool while the database monitor knows the database is down.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use regindex::index::render::render_parts;
use regindex::index::{IndexProfile, Query};

use crate::cache::Rendered;
use crate::conditional::{accepts_gzip, none_match};
use crate::error::ApiError;
use crate::AppState;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Flavour {
    Static,
    Dynamic,
}

pub(crate) async fn index_static(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve(state, raw, headers, Flavour::Static, None).await
}

pub(crate) async fn index_dynamic(
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
    let (rendered, stale_age) = match answer(&state, query, &key, profile.map(|(_, p)| p)).await? {
        Answer::Fresh(rendered) => (rendered, None),
        Answer::Stale(rendered, age) => (rendered, Some(age)),
    };

    let cache_control = cache_control(
        flavour,
        stale_age.is_some(),
        state.config.api.static_max_age.as_secs(),
        state.config.api.stale_if_error.as_secs(),
    );
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
    if let Some(age) = stale_age {
        response_headers.insert(
            header::WARNING,
            HeaderValue::from_static("110 - \"Response is Stale\""),
        );
        response_headers.insert(STALE_HEADER, HeaderValue::from_static("true"));
        response_headers.insert(header::AGE, HeaderValue::from(age.as_secs()));
    }

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
        rendered.gzip().body()
    } else {
        let json = match rendered.built_json() {
            Some(json) => json,
            None => tokio::task::spawn_blocking(move || rendered.json())
                .await
                .map_err(|e| ApiError::Internal(format!("assembling the body failed: {e}")))?,
        };
        Body::from(json)
    };
    Ok((StatusCode::OK, response_headers, body).into_response())
}

/// `Cache-Control` of an index answer. Fresh static answers may be reused for
/// `max_age` and, by caches that know `stale-if-error`, during errors; a stale one may be
/// kept but must be asked for again before reuse. Dynamic answers are never stored.
fn cache_control(flavour: Flavour, stale: bool, max_age: u64, stale_if_error: u64) -> String {
    match (flavour, stale) {
        (Flavour::Static, false) => {
            format!("public, max-age={max_age}, stale-if-error={stale_if_error}")
        }
        (Flavour::Static, true) => format!("public, max-age=0, stale-if-error={stale_if_error}"),
        (Flavour::Dynamic, _) => "no-store".to_owned(),
    }
}

/// An index answer taking longer than this makes the database monitor probe at once,
/// so that a request waiting on a database that just went away is answered from the
/// last good answers within about this long. Uncached answers of 250 images take about
/// 10 ms, cached ones a few (docs/benchmarks.md), so healthy traffic rarely asks.
const SLOW_ANSWER: Duration = Duration::from_millis(200);

/// Marks an answer given from before a database outage.
const STALE_HEADER: header::HeaderName = header::HeaderName::from_static("x-regindex-stale");

enum Answer {
    Fresh(Arc<Rendered>),
    /// The last good answer, confirmed current this long ago.
    Stale(Arc<Rendered>, Duration),
}

/// The current answer, or the last good one when the database cannot answer.
async fn answer(
    state: &AppState,
    query: Query,
    key: &str,
    profile: Option<&IndexProfile>,
) -> Result<Answer, ApiError> {
    let max_stale = state.config.api.stale_if_error;
    let fresh = match &state.database {
        // Known down: do not queue up for the pool.
        Some(monitor) if monitor.is_down() => Err(ApiError::DatabaseUnavailable),
        // Not known down: ask, but stop waiting once the monitor finds it down, and ask
        // the monitor to look when the answer is slow in coming.
        Some(monitor) => {
            let slow = async {
                tokio::time::sleep(SLOW_ANSWER).await;
                monitor.check_now();
                std::future::pending().await
            };
            tokio::select! {
                result = rendered(state, query, key.to_owned(), profile) => result,
                () = monitor.wait_down() => Err(ApiError::DatabaseUnavailable),
                result = slow => result,
            }
        }
        None => rendered(state, query, key.to_owned(), profile).await,
    };
    match fresh {
        Ok(rendered) => Ok(Answer::Fresh(rendered)),
        Err(e) if e.is_unavailable() => match state.cache.last_good(key, max_stale) {
            Some((rendered, age)) => {
                // A known outage was logged by the monitor; other failures were not.
                if matches!(e, ApiError::DatabaseUnavailable) {
                    tracing::debug!(?age, "database down: serving the last good answer");
                } else {
                    tracing::warn!(error = %e, ?age, "query failed: serving the last good answer");
                }
                Ok(Answer::Stale(rendered, age))
            }
            None => Err(e),
        },
        Err(e) => Err(e),
    }
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
    // The snapshot read by `query_index` is at least this version, as the cache requires:
    // the watch only learns versions already committed. A cached answer or a 304 then
    // costs no database round trip.
    let version = match state.data_version.as_ref().and_then(|w| w.current()) {
        Some(version) => version,
        None => state.store.data_version().await?,
    };
    state
        .cache
        .get_or_render(version, &key, || async {
            // The one rendering shared with the static index files (icon URLs included),
            // rebuilding only the repositories that changed since the last render.
            let previous = state.cache.parts(&key);
            let rendered = render_parts(
                &state.store,
                &query,
                state.config.public_registry_url(),
                &state.config.icons,
                profile,
                previous.as_deref(),
                true,
            )
            .await?;
            state
                .cache
                .keep_parts(&key, rendered.data_version, rendered.parts.clone());
            tokio::task::spawn_blocking(move || Rendered::from_parts(rendered))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_of_fresh_stale_and_dynamic_answers() {
        assert_eq!(
            cache_control(Flavour::Static, false, 300, 86_400),
            "public, max-age=300, stale-if-error=86400"
        );
        assert_eq!(
            cache_control(Flavour::Static, true, 300, 86_400),
            "public, max-age=0, stale-if-error=86400"
        );
        for stale in [false, true] {
            assert_eq!(
                cache_control(Flavour::Dynamic, stale, 300, 86_400),
                "no-store"
            );
        }
    }
}
