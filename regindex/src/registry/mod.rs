//! OCI distribution client: catalog, tags, manifests and config blobs from the one
//! configured registry. The worker never follows URLs from messages: every request
//! is built from the configured base URL plus a validated repository name and reference.

mod auth;
mod error;
pub mod manifest;
mod pagination;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use auth::{parse_www_authenticate, Challenge};
pub use error::RegistryError;
pub use manifest::{Descriptor, ImageConfig, Manifest, Platform};

use reqwest::header::{
    HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LINK, WWW_AUTHENTICATE,
};
use reqwest::{Method, Response, StatusCode};
use secrecy::ExposeSecret;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use url::Url;

use crate::config::RegistryConfig;
use crate::model::{media_type, Digest, Reference, RepositoryName, Tag};
use auth::{Credentials, TokenCache, TokenResponse};
use pagination::{next_link, next_page, NextPage};

/// Manifests are small JSON documents; anything bigger is broken or hostile.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Image configs carry labels (Flatpak metadata, appdata XML, icons) but stay far below this.
pub const MAX_CONFIG_BLOB_BYTES: u64 = 16 << 20;
/// One page of `_catalog` or `tags/list`.
const MAX_PAGE_BYTES: u64 = 16 << 20;
const MAX_TOKEN_RESPONSE_BYTES: u64 = 1 << 20;
/// Stops pagination of a registry that keeps inventing new pages.
const MAX_PAGES: usize = 100_000;
/// Blob GETs may be redirected to the storage backend (S3, CDN).
const MAX_BLOB_REDIRECTS: usize = 5;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const USER_AGENT: &str = concat!("regindex/", env!("CARGO_PKG_VERSION"));
/// Every manifest kind regindex parses; without this docker-registry answers 404 for OCI
/// manifests and converts Docker ones to schema 1.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json";
const CATALOG_SCOPE: &str = "registry:catalog:*";

/// A manifest as fetched: its verified digest, the media type the registry reported
/// (or the one its body declares) and the raw bytes.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// Counters of what this client did, for progress displays and metrics. Tests take their
/// ground truth from the registry's own log instead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistryStats {
    /// HTTP requests sent, token requests and retries included.
    pub requests: u64,
    pub manifests_fetched: u64,
    pub blobs_fetched: u64,
    pub bytes_fetched: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    manifests_fetched: AtomicU64,
    blobs_fetched: AtomicU64,
    bytes_fetched: AtomicU64,
}

#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// The configured URL without a trailing slash: `/v2/...` is appended to it.
    base: String,
    page_size: u32,
    /// Never follows redirects: every API request stays on the configured host.
    api: reqwest::Client,
    blobs: reqwest::Client,
    permits: Arc<Semaphore>,
    max_concurrency: usize,
    credentials: Option<Credentials>,
    tokens: TokenCache,
    counters: Counters,
}

/// One request, kept so that it can be sent again after fetching a token.
struct Request<'a> {
    method: Method,
    url: Url,
    accept: &'static str,
    /// Token scope the request needs.
    scope: String,
    /// What the request is about, for errors and logs.
    what: &'a str,
    follow_redirects: bool,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("base", &self.inner.base)
            .field("authenticated", &self.inner.credentials.is_some())
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    pub fn new(config: &RegistryConfig) -> Result<Self, RegistryError> {
        // `RegistryUrl` is an http(s) URL with a host and neither query nor fragment.
        let base = config.url.url().as_str().trim_end_matches('/').to_owned();
        let host = config.url.host_port();

        let credentials = match (&config.username, &config.password, &config.docker_config) {
            (Some(username), password, _) => Some(Credentials {
                username: username.clone(),
                password: password.clone().unwrap_or_else(|| "".into()),
            }),
            (None, _, Some(path)) => auth::credentials_from_docker_config(path, &host)?,
            (None, _, None) => None,
        };

        let build = |redirects: reqwest::redirect::Policy| {
            reqwest::Client::builder()
                .user_agent(USER_AGENT)
                .timeout(config.request_timeout)
                .connect_timeout(CONNECT_TIMEOUT.min(config.request_timeout))
                .redirect(redirects)
                .build()
                .map_err(|e| RegistryError::Config(format!("building the HTTP client: {e}")))
        };
        Ok(Self {
            inner: Arc::new(Inner {
                base,
                page_size: config.page_size.max(1),
                api: build(reqwest::redirect::Policy::none())?,
                blobs: build(reqwest::redirect::Policy::limited(MAX_BLOB_REDIRECTS))?,
                permits: Arc::new(Semaphore::new(config.max_concurrency.max(1))),
                max_concurrency: config.max_concurrency.max(1),
                credentials,
                tokens: TokenCache::default(),
                counters: Counters::default(),
            }),
        })
    }

    /// The configured URL (without trailing slash), for logs.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// Requests in flight at most (`registry.max_concurrency`).
    pub fn max_concurrency(&self) -> usize {
        self.inner.max_concurrency
    }

    /// Requests in flight right now (sent and not yet read to the end), for profiling.
    pub fn in_flight(&self) -> usize {
        self.inner.max_concurrency - self.inner.permits.available_permits()
    }

    pub fn stats(&self) -> RegistryStats {
        let c = &self.inner.counters;
        RegistryStats {
            requests: c.requests.load(Ordering::Relaxed),
            manifests_fetched: c.manifests_fetched.load(Ordering::Relaxed),
            blobs_fetched: c.blobs_fetched.load(Ordering::Relaxed),
            bytes_fetched: c.bytes_fetched.load(Ordering::Relaxed),
        }
    }

    /// Every repository in `/v2/_catalog`, following pagination. Names that are not valid
    /// repository names are logged and skipped.
    #[tracing::instrument(skip(self))]
    pub async fn catalog(&self) -> Result<Vec<RepositoryName>, RegistryError> {
        let raw = self
            .paginate("_catalog", "repositories", CATALOG_SCOPE.into(), "catalog")
            .await?;
        let mut names: Vec<RepositoryName> = raw
            .into_iter()
            .filter_map(|name| match RepositoryName::parse(&name) {
                Ok(name) => Some(name),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping an invalid repository name from the catalog");
                    None
                }
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// Every tag of `repository`, following pagination. An unknown repository is
    /// `RegistryError::NotFound`; a known one without tags is an empty list.
    #[tracing::instrument(skip(self), fields(repository = %repository))]
    pub async fn tags(&self, repository: &RepositoryName) -> Result<Vec<Tag>, RegistryError> {
        let what = format!("repository {repository}");
        let raw = self
            .paginate(
                &format!("{repository}/tags/list"),
                "tags",
                pull_scope(repository),
                &what,
            )
            .await?;
        let mut tags: Vec<Tag> = raw
            .into_iter()
            .filter_map(|tag| match Tag::parse(&tag) {
                Ok(tag) => Some(tag),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping an invalid tag");
                    None
                }
            })
            .collect();
        tags.sort();
        Ok(tags)
    }

    /// The digest and media type a reference points at, by HEAD (no body transferred).
    #[tracing::instrument(skip(self), fields(repository = %repository, reference = %reference))]
    pub async fn resolve(
        &self,
        repository: &RepositoryName,
        reference: &Reference,
    ) -> Result<(Digest, String), RegistryError> {
        let what = manifest_what(repository, reference);
        let request = Request {
            method: Method::HEAD,
            url: self.url(&format!("{repository}/manifests/{reference}"))?,
            accept: MANIFEST_ACCEPT,
            scope: pull_scope(repository),
            what: &what,
            follow_redirects: false,
        };
        let (response, permit) = self.send(&request).await?;
        let response = check_status(response, &what).await?;
        drop(permit);
        let content_type = header_str(&response, CONTENT_TYPE).map(manifest::essence);
        let digest =
            header_str(&response, "docker-content-digest").and_then(|d| Digest::parse(d).ok());
        match (digest, content_type) {
            // Anything but a generic type is final, even a kind regindex does not parse
            // (schema 1): `manifest::parse` refuses it later without a GET per scan.
            (Some(digest), Some(content_type)) if !manifest::is_generic(&content_type) => {
                if let Reference::Digest(expected) = reference {
                    if *expected != digest {
                        return Err(RegistryError::DigestMismatch {
                            what,
                            actual: digest.to_string(),
                        });
                    }
                }
                Ok((digest, content_type))
            }
            // A registry that does not say (or says `application/json`): the manifest
            // itself tells, at the price of a GET.
            _ => {
                tracing::debug!("HEAD without digest or manifest media type; falling back to GET");
                let fetched = self.manifest(repository, reference).await?;
                Ok((fetched.digest, fetched.media_type))
            }
        }
    }

    /// GET a manifest; the digest is verified against the bytes.
    #[tracing::instrument(skip(self), fields(repository = %repository, reference = %reference))]
    pub async fn manifest(
        &self,
        repository: &RepositoryName,
        reference: &Reference,
    ) -> Result<FetchedManifest, RegistryError> {
        let what = manifest_what(repository, reference);
        let request = Request {
            method: Method::GET,
            url: self.url(&format!("{repository}/manifests/{reference}"))?,
            accept: MANIFEST_ACCEPT,
            scope: pull_scope(repository),
            what: &what,
            follow_redirects: false,
        };
        let (response, _permit) = self.send(&request).await?;
        let response = check_status(response, &what).await?;
        let content_type = header_str(&response, CONTENT_TYPE)
            .map(manifest::essence)
            .unwrap_or_default();
        let header_digest = header_str(&response, "docker-content-digest").map(str::to_owned);
        let bytes = self
            .read_limited(response, MAX_MANIFEST_BYTES, &what, "manifest")
            .await?;
        self.inner
            .counters
            .manifests_fetched
            .fetch_add(1, Ordering::Relaxed);

        let digest = match (reference, header_digest.as_deref().map(Digest::parse)) {
            (Reference::Digest(expected), _) => expected.clone(),
            (Reference::Tag(_), Some(Ok(reported))) => reported,
            (Reference::Tag(_), Some(Err(e))) => {
                tracing::warn!(error = %e, "ignoring an unusable Docker-Content-Digest");
                Digest::sha256_of(&bytes)
            }
            (Reference::Tag(_), None) => Digest::sha256_of(&bytes),
        };
        if !digest.verify(&bytes) {
            return Err(RegistryError::DigestMismatch {
                what,
                actual: Digest::sha256_of(&bytes).to_string(),
            });
        }
        let media_type = if media_type::is_manifest(&content_type) {
            content_type
        } else {
            manifest::declared_media_type(&bytes).unwrap_or(content_type)
        };
        Ok(FetchedManifest {
            digest,
            media_type,
            bytes,
        })
    }

    /// GET a blob (image configs); the digest is verified against the bytes.
    #[tracing::instrument(skip(self), fields(repository = %repository, digest = %digest))]
    pub async fn blob(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> Result<Vec<u8>, RegistryError> {
        let what = format!("blob {repository}@{digest}");
        let request = Request {
            method: Method::GET,
            url: self.url(&format!("{repository}/blobs/{digest}"))?,
            accept: "*/*",
            scope: pull_scope(repository),
            what: &what,
            follow_redirects: true,
        };
        let (response, _permit) = self.send(&request).await?;
        let response = check_status(response, &what).await?;
        let bytes = self
            .read_limited(response, MAX_CONFIG_BLOB_BYTES, &what, "blob")
            .await?;
        self.inner
            .counters
            .blobs_fetched
            .fetch_add(1, Ordering::Relaxed);
        if !digest.verify(&bytes) {
            return Err(RegistryError::DigestMismatch {
                what,
                actual: Digest::sha256_of(&bytes).to_string(),
            });
        }
        Ok(bytes)
    }

    /// `<base>/v2/<path>`. Callers only pass validated names, tags and digests, which
    /// contain nothing that needs escaping.
    fn url(&self, path: &str) -> Result<Url, RegistryError> {
        let url = format!("{}/v2/{}", self.inner.base, path);
        Url::parse(&url).map_err(|e| RegistryError::Config(format!("request URL {url:?}: {e}")))
    }

    /// All entries of a paginated list endpoint (`field` holds the page's array).
    async fn paginate(
        &self,
        endpoint: &str,
        field: &str,
        scope: String,
        what: &str,
    ) -> Result<Vec<String>, RegistryError> {
        let page_size = self.inner.page_size;
        let mut query = format!("n={page_size}");
        let mut seen = HashSet::new();
        let mut entries = Vec::new();
        for _ in 0..MAX_PAGES {
            let request = Request {
                method: Method::GET,
                url: self.url(&format!("{endpoint}?{query}"))?,
                accept: "application/json",
                scope: scope.clone(),
                what,
                follow_redirects: false,
            };
            let (response, permit) = self.send(&request).await?;
            let response = check_status(response, what).await?;
            let link = header_str(&response, LINK)
                .and_then(next_link)
                .map(str::to_owned);
            let bytes = self
                .read_limited(response, MAX_PAGE_BYTES, what, "page")
                .await?;
            drop(permit);
            let page = parse_page(&bytes, field).map_err(|detail| RegistryError::BadResponse {
                what: what.to_owned(),
                detail,
            })?;
            let added = page.iter().filter(|e| seen.insert((*e).clone())).count();
            let next = next_page(
                link.as_deref(),
                page.len(),
                added,
                page_size,
                page.last().map(String::as_str),
            );
            entries.extend(page);
            match next {
                NextPage::Query(next) => query = next,
                NextPage::Done => break,
            }
        }
        // Pages may overlap (a registry answering the same page twice): keep first sightings.
        let mut unique = HashSet::new();
        entries.retain(|e| unique.insert(e.clone()));
        Ok(entries)
    }

    /// Sends `request` while holding a concurrency permit; on a bearer challenge, fetches
    /// a token and sends it once more. The permit is returned so that the caller holds it
    /// while it reads the body.
    async fn send(
        &self,
        request: &Request<'_>,
    ) -> Result<(Response, OwnedSemaphorePermit), RegistryError> {
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| RegistryError::Config("request semaphore closed".into()))?;
        let response = self
            .send_once(request, self.authorization(&request.scope))
            .await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok((response, permit));
        }
        let challenges: Vec<Challenge> = response
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_www_authenticate)
            .collect();
        let Some(bearer) = challenges.iter().find(|c| c.is_bearer()) else {
            return Err(RegistryError::Unauthorized {
                what: request.what.to_owned(),
                detail: match &self.inner.credentials {
                    Some(c) => format!("credentials of {:?} refused", c.username),
                    None => "authentication required and no credentials configured".into(),
                },
            });
        };
        self.inner.tokens.remove(&request.scope);
        let token = self
            .fetch_token(bearer, &request.scope, request.what)
            .await?;
        let response = self
            .send_once(request, Some(format!("Bearer {token}")))
            .await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(RegistryError::Unauthorized {
                what: request.what.to_owned(),
                detail: "a freshly issued token was refused".into(),
            });
        }
        Ok((response, permit))
    }

    async fn send_once(
        &self,
        request: &Request<'_>,
        authorization: Option<String>,
    ) -> Result<Response, RegistryError> {
        let client = if request.follow_redirects {
            &self.inner.blobs
        } else {
            &self.inner.api
        };
        let mut builder = client
            .request(request.method.clone(), request.url.clone())
            .header(ACCEPT, request.accept);
        if let Some(value) = authorization.and_then(|v| HeaderValue::from_str(&v).ok()) {
            let mut value = value;
            value.set_sensitive(true);
            builder = builder.header(AUTHORIZATION, value);
        }
        self.inner.counters.requests.fetch_add(1, Ordering::Relaxed);
        builder
            .send()
            .await
            .map_err(|source| RegistryError::Transport {
                what: request.what.to_owned(),
                source,
            })
    }

    /// A cached token for the scope, else basic credentials, else nothing.
    fn authorization(&self, scope: &str) -> Option<String> {
        if let Some(token) = self.inner.tokens.get(scope) {
            return Some(format!("Bearer {}", token.expose_secret()));
        }
        self.inner.credentials.as_ref().map(auth::basic_header)
    }

    /// Asks the challenge's realm for a token (with basic credentials when configured)
    /// and caches it under `scope`.
    async fn fetch_token(
        &self,
        challenge: &Challenge,
        scope: &str,
        what: &str,
    ) -> Result<String, RegistryError> {
        let unauthorized = |detail: String| RegistryError::Unauthorized {
            what: what.to_owned(),
            detail,
        };
        let realm = challenge
            .param("realm")
            .ok_or_else(|| unauthorized("bearer challenge without a realm".into()))?;
        let mut url = Url::parse(realm)
            .map_err(|e| unauthorized(format!("bearer realm {realm:?} is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(unauthorized(format!(
                "bearer realm {realm:?} is not http(s)"
            )));
        }
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = challenge.param("service") {
                query.append_pair("service", service);
            }
            query.append_pair("scope", challenge.param("scope").unwrap_or(scope));
        }
        let mut builder = self.inner.api.get(url).header(ACCEPT, "application/json");
        if let Some(credentials) = &self.inner.credentials {
            builder = builder.header(AUTHORIZATION, auth::basic_header(credentials));
        }
        self.inner.counters.requests.fetch_add(1, Ordering::Relaxed);
        let response = builder
            .send()
            .await
            .map_err(|source| RegistryError::Transport {
                what: format!("token for {what}"),
                source,
            })?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(unauthorized(format!("token server answered {status}")));
        }
        if !status.is_success() {
            return Err(RegistryError::Status {
                what: format!("token for {what}"),
                status: status.as_u16(),
            });
        }
        let bytes = self
            .read_limited(response, MAX_TOKEN_RESPONSE_BYTES, what, "token response")
            .await?;
        let (token, lifetime) = serde_json::from_slice::<TokenResponse>(&bytes)
            .ok()
            .and_then(TokenResponse::into_token)
            .ok_or_else(|| unauthorized("token server sent no token".into()))?;
        let value = token.expose_secret().to_owned();
        self.inner.tokens.insert(scope, token, lifetime);
        Ok(value)
    }

    /// Reads a body, refusing more than `limit` bytes without buffering them: first by
    /// Content-Length, then while streaming (the header may be absent or lie).
    async fn read_limited(
        &self,
        mut response: Response,
        limit: u64,
        what: &str,
        kind: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        let too_large = || {
            let detail = format!("{kind} larger than {limit} bytes");
            if kind == "page" || kind == "token response" {
                RegistryError::BadResponse {
                    what: what.to_owned(),
                    detail,
                }
            } else {
                RegistryError::BadManifest {
                    what: what.to_owned(),
                    detail,
                }
            }
        };
        let declared = header_str(&response, CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit) {
            return Err(too_large());
        }
        let mut body = Vec::with_capacity(declared.unwrap_or(0).min(limit) as usize);
        while let Some(chunk) =
            response
                .chunk()
                .await
                .map_err(|source| RegistryError::Transport {
                    what: what.to_owned(),
                    source,
                })?
        {
            if body.len() as u64 + chunk.len() as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        self.inner
            .counters
            .bytes_fetched
            .fetch_add(body.len() as u64, Ordering::Relaxed);
        Ok(body)
    }
}

fn pull_scope(repository: &RepositoryName) -> String {
    format!("repository:{repository}:pull")
}

fn manifest_what(repository: &RepositoryName, reference: &Reference) -> String {
    match reference {
        Reference::Tag(tag) => format!("manifest {repository}:{tag}"),
        Reference::Digest(digest) => format!("manifest {repository}@{digest}"),
    }
}

fn header_str(response: &Response, name: impl reqwest::header::AsHeaderName) -> Option<&str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Maps the status of a response to the error it means, if any.
async fn check_status(mut response: Response, what: &str) -> Result<Response, RegistryError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    // The error body says whether retrying can help (a name the registry refuses).
    let mut body = Vec::new();
    while body.len() < error::MAX_ERROR_BODY_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = error::MAX_ERROR_BODY_BYTES - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    Err(RegistryError::from_answer(status.as_u16(), &body, what))
}

/// The string array `field` of a list page; `null` or missing is empty (docker-registry
/// 2.8 answers `"tags": null` for a repository whose tags were all deleted).
fn parse_page(bytes: &[u8], field: &str) -> Result<Vec<String>, String> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    match value.get_mut(field).map(serde_json::Value::take) {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(array) => serde_json::from_value(array).map_err(|e| format!("`{field}`: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages() {
        assert_eq!(
            parse_page(br#"{"name": "a", "tags": null}"#, "tags").unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            parse_page(br#"{"name": "a"}"#, "tags").unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            parse_page(br#"{"repositories": ["a", "b"]}"#, "repositories").unwrap(),
            ["a", "b"]
        );
        assert!(parse_page(br#"{"tags": "x"}"#, "tags").is_err());
        assert!(parse_page(b"<html>", "tags").is_err());
    }

    #[test]
    fn base_url_with_prefix() {
        let config = RegistryConfig {
            url: "https://registry.example.org/prefix/".parse().unwrap(),
            ..RegistryConfig::default()
        };
        let client = RegistryClient::new(&config).unwrap();
        assert_eq!(
            client.url("_catalog?n=2").unwrap().as_str(),
            "https://registry.example.org/prefix/v2/_catalog?n=2"
        );
        for bad in ["ftp://x", "not a url", "http://x/?q=1", "http://x/#f"] {
            assert!(bad.parse::<crate::config::RegistryUrl>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn status_mapping() {
        let response = |status: u16| -> Response {
            http::Response::builder()
                .status(status)
                .body(Vec::<u8>::new())
                .unwrap()
                .into()
        };
        assert!(matches!(
            check_status(response(404), "x").await,
            Err(RegistryError::NotFound { .. })
        ));
        assert!(matches!(
            check_status(response(403), "x").await,
            Err(RegistryError::Unauthorized { .. })
        ));
        let err = check_status(response(503), "x").await.unwrap_err();
        assert!(err.is_transient());
        assert!(!check_status(response(400), "x")
            .await
            .unwrap_err()
            .is_transient());
        assert!(check_status(response(200), "x").await.is_ok());
    }
}
