//! Registry authentication: credentials from the configuration or a docker `config.json`,
//! `WWW-Authenticate` challenges, and bearer tokens cached per scope.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::RegistryError;

/// Tokens are dropped this long before they expire, so that a request never leaves with a
/// token that expires on the way.
const TOKEN_EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// The distribution token spec's default lifetime when `expires_in` is missing.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: SecretString,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Lowercased (`bearer`, `basic`).
    pub scheme: String,
    /// Parameter names lowercased, values unquoted.
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn is_bearer(&self) -> bool {
        self.scheme == "bearer"
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Parses a `WWW-Authenticate` value (RFC 7235): one or more challenges, each a scheme
/// followed by comma-separated `name=value` parameters whose values may be quoted strings
/// (containing commas, as in `scope="repository:a:pull,push"`) with backslash escapes.
/// Malformed trailing input is ignored rather than failing the whole header.
pub fn parse_www_authenticate(value: &str) -> Vec<Challenge> {
    let mut challenges: Vec<Challenge> = Vec::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        let token_end = rest.find([' ', '\t', ',', '=']).unwrap_or(rest.len());
        let token = &rest[..token_end];
        if token.is_empty() {
            break;
        }
        let after = rest[token_end..].trim_start_matches([' ', '\t']);
        if let (Some(value_part), Some(current)) = (after.strip_prefix('='), challenges.last_mut())
        {
            // A parameter of the current challenge.
            let (value, remaining) = parse_param_value(value_part.trim_start());
            current.params.insert(token.to_ascii_lowercase(), value);
            rest = remaining;
        } else {
            // A new challenge (a scheme name).
            challenges.push(Challenge {
                scheme: token.to_ascii_lowercase(),
                params: BTreeMap::new(),
            });
            rest = after;
        }
    }
    challenges
}

/// A quoted string or a token; returns the value and what follows it.
fn parse_param_value(input: &str) -> (String, &str) {
    if let Some(quoted) = input.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                '"' => return (value, &quoted[i + 1..]),
                c => value.push(c),
            }
        }
        (value, "")
    } else {
        let end = input.find([',', ' ', '\t']).unwrap_or(input.len());
        (input[..end].to_owned(), &input[end..])
    }
}

/// The docker `config.json` shape we read: `{"auths": {"host": {"auth": "base64(user:pass)"}}}`.
#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Credentials for `host` (`host[:port]`) from a docker `config.json`, if it has an entry.
pub fn credentials_from_docker_config(
    path: &Path,
    host: &str,
) -> Result<Option<Credentials>, RegistryError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        RegistryError::Config(format!("reading docker config {}: {e}", path.display()))
    })?;
    credentials_from_docker_config_json(&text, host)
        .map_err(|e| RegistryError::Config(format!("docker config {}: {e}", path.display())))
}

/// Pure part of `credentials_from_docker_config`. Entry keys may be a bare `host:port` or a
/// URL (`https://host/v1/`): both are compared by their host and port only.
pub fn credentials_from_docker_config_json(
    json: &str,
    host: &str,
) -> Result<Option<Credentials>, String> {
    let config: DockerConfig = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let Some(entry) = config
        .auths
        .iter()
        .find(|(key, _)| auth_key_host(key).eq_ignore_ascii_case(host))
        .map(|(_, entry)| entry)
    else {
        return Ok(None);
    };
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| format!("`auth` of {host} is not base64: {e}"))?;
        let decoded =
            String::from_utf8(decoded).map_err(|_| format!("`auth` of {host} is not UTF-8"))?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| format!("`auth` of {host} is not user:password"))?;
        return Ok(Some(Credentials {
            username: username.to_owned(),
            password: SecretString::from(password.to_owned()),
        }));
    }
    match (&entry.username, &entry.password) {
        (Some(username), Some(password)) => Ok(Some(Credentials {
            username: username.clone(),
            password: SecretString::from(password.clone()),
        })),
        _ => Ok(None),
    }
}

fn auth_key_host(key: &str) -> &str {
    let without_scheme = key.split_once("://").map_or(key, |(_, rest)| rest);
    without_scheme.split('/').next().unwrap_or(without_scheme)
}

/// The token endpoint's answer (`token` per the distribution spec, `access_token` per OAuth2).
#[derive(Deserialize)]
pub struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl TokenResponse {
    pub fn into_token(self) -> Option<(SecretString, Duration)> {
        let token = self.token.or(self.access_token).filter(|t| !t.is_empty())?;
        let lifetime = self
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        Some((SecretString::from(token), lifetime))
    }
}

/// Bearer tokens per scope (`repository:apps/calc:pull`, `registry:catalog:*`).
#[derive(Default)]
pub struct TokenCache {
    tokens: Mutex<HashMap<String, (SecretString, Instant)>>,
}

impl TokenCache {
    pub fn get(&self, scope: &str) -> Option<SecretString> {
        let tokens = self.tokens.lock().ok()?;
        let (token, expires_at) = tokens.get(scope)?;
        (Instant::now() < *expires_at).then(|| token.clone())
    }

    pub fn insert(&self, scope: &str, token: SecretString, lifetime: Duration) {
        let expires_at = Instant::now() + lifetime.saturating_sub(TOKEN_EXPIRY_MARGIN);
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.retain(|_, (_, expiry)| Instant::now() < *expiry);
            tokens.insert(scope.to_owned(), (token, expires_at));
        }
    }

    /// Forgets a token the registry refused.
    pub fn remove(&self, scope: &str) {
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.remove(scope);
        }
    }
}

/// `Authorization` value for basic credentials.
pub fn basic_header(credentials: &Credentials) -> String {
    let raw = format!(
        "{}:{}",
        credentials.username,
        credentials.password.expose_secret()
    );
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_with_quoted_commas() {
        let c = parse_www_authenticate(
            r#"Bearer realm="https://auth.example.org/token",service="registry.example.org",scope="repository:apps/calc:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert!(c[0].is_bearer());
        assert_eq!(c[0].param("realm"), Some("https://auth.example.org/token"));
        assert_eq!(c[0].param("service"), Some("registry.example.org"));
        assert_eq!(c[0].param("scope"), Some("repository:apps/calc:pull,push"));
    }

    #[test]
    fn basic_challenge_and_case() {
        let c = parse_www_authenticate(r#"basic Realm="regindex-test""#);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some("regindex-test"));
        assert!(!c[0].is_bearer());
    }

    #[test]
    fn several_challenges_tokens_and_escapes() {
        let c = parse_www_authenticate(
            r#"Basic realm="a", Bearer realm="https://x/t", service=reg, error="invalid_token", error_description="say \"hi\"""#,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].param("realm"), Some("a"));
        assert!(c[1].is_bearer());
        assert_eq!(c[1].param("service"), Some("reg"));
        assert_eq!(c[1].param("error"), Some("invalid_token"));
        assert_eq!(c[1].param("error_description"), Some(r#"say "hi""#));
    }

    #[test]
    fn malformed_headers_do_not_panic() {
        for bad in [
            "",
            "Bearer",
            "Bearer realm=\"unterminated",
            "=x",
            ",,,",
            "Bearer ,realm=",
            "Bearer realm=\"a\\",
        ] {
            let _ = parse_www_authenticate(bad);
        }
        assert_eq!(parse_www_authenticate("Bearer")[0].params.len(), 0);
        assert_eq!(
            parse_www_authenticate("Bearer realm=\"unterminated")[0].param("realm"),
            Some("unterminated")
        );
    }

    #[test]
    fn docker_config_auth_entries() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:pa:ss");
        let json = format!(
            r#"{{"auths": {{"https://registry.example.org/v1/": {{"auth": "{auth}"}},
                 "127.0.0.1:5000": {{"username": "bob", "password": "pw"}},
                 "other.example.org": {{"auth": ""}}}}}}"#
        );
        let c = credentials_from_docker_config_json(&json, "registry.example.org")
            .unwrap()
            .unwrap();
        assert_eq!(c.username, "alice");
        assert_eq!(c.password.expose_secret(), "pa:ss");
        let c = credentials_from_docker_config_json(&json, "127.0.0.1:5000")
            .unwrap()
            .unwrap();
        assert_eq!(c.username, "bob");
        assert!(
            credentials_from_docker_config_json(&json, "other.example.org")
                .unwrap()
                .is_none()
        );
        assert!(credentials_from_docker_config_json(&json, "127.0.0.1:5001")
            .unwrap()
            .is_none());
        assert!(credentials_from_docker_config_json("{", "x").is_err());
        assert!(credentials_from_docker_config_json(
            r#"{"auths": {"x": {"auth": "bm9jb2xvbg=="}}}"#,
            "x"
        )
        .is_err());
    }

    #[test]
    fn token_cache_expires() {
        let cache = TokenCache::default();
        cache.insert("s", SecretString::from("t"), Duration::from_secs(300));
        assert_eq!(cache.get("s").unwrap().expose_secret(), "t");
        assert!(cache.get("other").is_none());
        // Shorter than the safety margin: never served.
        cache.insert("short", SecretString::from("t"), Duration::from_secs(5));
        assert!(cache.get("short").is_none());
        cache.remove("s");
        assert!(cache.get("s").is_none());
    }

    #[test]
    fn token_response_fields() {
        let r: TokenResponse = serde_json::from_str(r#"{"access_token": "a"}"#).unwrap();
        let (t, lifetime) = r.into_token().unwrap();
        assert_eq!(t.expose_secret(), "a");
        assert_eq!(lifetime, DEFAULT_TOKEN_LIFETIME);
        let r: TokenResponse =
            serde_json::from_str(r#"{"token": "b", "expires_in": 300}"#).unwrap();
        assert_eq!(r.into_token().unwrap().1, Duration::from_secs(300));
        let r: TokenResponse = serde_json::from_str(r#"{}"#).unwrap();
        assert!(r.into_token().is_none());
    }
}
