//! `GET /icons/<sha256>.<ext>`: extracted icons, immutable by construction (the name is
//! the hash of the bytes), so caches may keep them forever.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use regindex::catalog::icons::parse_file_name;

use super::WebState;
use crate::conditional::none_match;
use crate::error::{ApiError, ErrorAnswer, ErrorCode};

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

fn not_found() -> Response {
    ErrorAnswer::new(ErrorCode::NotFound, "no such icon")
        .with_header(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=60"),
        )
        .into_response()
}

pub(crate) async fn icon(
    State(state): State<WebState>,
    file: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let Some((sha256, format)) = file.ok().and_then(|Path(file)| parse_file_name(&file)) else {
        return not_found();
    };
    let etag = format!("\"{sha256}\"");
    let stored = match state.store.icon(&sha256).await {
        Ok(Some(stored)) => stored,
        Ok(None) => return not_found(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    // One name per icon: `<hash>.jpg` for a PNG is not this icon.
    if stored.content_type != format.content_type() {
        return not_found();
    }
    let etag_value =
        HeaderValue::from_str(&etag).unwrap_or_else(|_| HeaderValue::from_static("\"\""));
    let common = [
        (header::ETAG, etag_value),
        (header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE)),
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    if none_match(if_none_match, &[&etag]) {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (StatusCode::OK, common, stored.data).into_response()
}
