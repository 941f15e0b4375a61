//! `GET /profiles/<name>/index/static` and `/profiles/<name>/index/dynamic`: the index
//! protocol with an index profile (`index_profiles.<name>`) applied, byte for byte what a
//! static index file with that profile and query holds.
//!
//! A profile is chosen by path, not by a query parameter, so that `/index/static` stays
//! exactly the protocol, and so that HTTP caches (which key on the URL) and Flatpak
//! remotes (`oci+https://host/profiles/<name>`) keep the answers apart without any `Vary`.
//! The response cache keys profile answers by name as well (`index_routes::serve`).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;

use crate::error::ApiError;
use crate::index_routes::{serve, Flavour};
use crate::AppState;

pub(crate) async fn profile_static(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve_profile(state, name?.0, raw, headers, Flavour::Static).await
}

pub(crate) async fn profile_dynamic(
    State(state): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve_profile(state, name?.0, raw, headers, Flavour::Dynamic).await
}

async fn serve_profile(
    state: AppState,
    name: String,
    raw: Option<String>,
    headers: HeaderMap,
    flavour: Flavour,
) -> Result<Response, ApiError> {
    // Only configured profiles: an unknown name is an unknown route.
    let config = state.config.clone();
    let profile = config
        .index_profiles
        .get(&name)
        .ok_or(ApiError::NotFound("no such index profile"))?;
    serve(state, raw, headers, flavour, Some((&name, profile))).await
}
