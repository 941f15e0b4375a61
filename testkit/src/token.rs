//! Token authentication for a `TestRegistry`: an RS256 key and self-signed certificate made
//! with the `openssl` command, JWTs in the shape docker/distribution's token auth expects
//! (`x5c` header, `access` claim), and a small token server speaking the distribution token
//! protocol (`GET /token?service=...&scope=...` with basic credentials).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::registry::{TEST_PASSWORD, TEST_USERNAME};

pub const TOKEN_SERVICE: &str = "regindex-test";
pub const TOKEN_ISSUER: &str = "regindex-testkit";
/// Lifetime of issued tokens.
const TOKEN_LIFETIME_SECS: u64 = 300;

/// Signs tokens with a key the registry trusts (its `rootcertbundle` holds the certificate).
#[derive(Clone)]
pub(crate) struct TokenIssuer {
    key_path: PathBuf,
    /// The certificate, DER in standard base64, for the `x5c` header.
    cert_b64: String,
}

impl TokenIssuer {
    pub(crate) fn create(dir: &Path) -> anyhow::Result<Self> {
        let key_path = dir.join("token.key");
        let cert_path = dir.join("token.crt");
        let status = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .arg("-subj")
            .arg("/CN=regindex-testkit-token")
            .arg("-keyout")
            .arg(&key_path)
            .arg("-out")
            .arg(&cert_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("running openssl to make the token signing key")?;
        if !status.success() {
            bail!("openssl req failed: {status}");
        }
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert_path)
            .output()?;
        if !der.status.success() {
            bail!("openssl x509 failed: {}", der.status);
        }
        Ok(Self {
            key_path,
            cert_b64: base64::engine::general_purpose::STANDARD.encode(der.stdout),
        })
    }

    /// A token granting `access`: `(type, name, actions)`, e.g.
    /// `("repository", "apps/calc", ["pull"])` or `("registry", "catalog", ["*"])`.
    pub(crate) fn mint(&self, access: &[(String, String, Vec<String>)]) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let header = serde_json::json!({ "typ": "JWT", "alg": "RS256", "x5c": [self.cert_b64] });
        let access: Vec<_> = access
            .iter()
            .map(|(kind, name, actions)| {
                serde_json::json!({ "type": kind, "name": name, "actions": actions })
            })
            .collect();
        let claims = serde_json::json!({
            "iss": TOKEN_ISSUER,
            "sub": TEST_USERNAME,
            "aud": TOKEN_SERVICE,
            "iat": now,
            "nbf": now.saturating_sub(10),
            "exp": now + TOKEN_LIFETIME_SECS,
            "jti": uuid::Uuid::new_v4().to_string(),
            "access": access,
        });
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let signing_input = format!(
            "{}.{}",
            b64.encode(serde_json::to_vec(&header)?),
            b64.encode(serde_json::to_vec(&claims)?)
        );
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.key_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("running openssl to sign a token")?;
        child
            .stdin
            .take()
            .context("openssl stdin")?
            .write_all(signing_input.as_bytes())?;
        let output = child.wait_with_output()?;
        if !output.status.success() {
            bail!("openssl dgst failed: {}", output.status);
        }
        Ok(format!("{signing_input}.{}", b64.encode(output.stdout)))
    }
}

/// Parses `scope` values (`repository:apps/calc:pull,push`, `registry:catalog:*`).
pub(crate) fn parse_scope(scope: &str) -> Option<(String, String, Vec<String>)> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    Some((
        kind.to_owned(),
        name.to_owned(),
        actions.split(',').map(str::to_owned).collect(),
    ))
}

/// The token endpoint: issues tokens for whatever scope is asked, to `TEST_USERNAME` /
/// `TEST_PASSWORD` only. Runs as a task of the test's runtime.
pub(crate) struct TokenServer {
    pub(crate) url: String,
    pub(crate) requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TokenServer {
    pub(crate) async fn start(issuer: TokenIssuer) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{TEST_USERNAME}:{TEST_PASSWORD}"))
        );
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let (issuer, expected) = (issuer.clone(), expected.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let (status, body) = answer(&issuer, &expected, &String::from_utf8_lossy(&buf));
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Ok(Self {
            url,
            requests,
            task,
        })
    }
}

/// Status line and body for one token request.
fn answer(issuer: &TokenIssuer, expected_auth: &str, request: &str) -> (&'static str, String) {
    let mut lines = request.split("\r\n");
    let target = lines.next().and_then(|l| l.split(' ').nth(1)).unwrap_or("");
    let authorized = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("authorization") && v.trim() == expected_auth
        })
    });
    if !authorized {
        return (
            "401 Unauthorized",
            r#"{"details": "bad credentials"}"#.into(),
        );
    }
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let access: Vec<_> = reqwest::Url::parse(&format!("http://x/?{query}"))
        .map(|u| {
            u.query_pairs()
                .filter(|(k, _)| k == "scope")
                .filter_map(|(_, v)| parse_scope(&v))
                .collect()
        })
        .unwrap_or_default();
    match issuer.mint(&access) {
        Ok(token) => (
            "200 OK",
            serde_json::json!({
                "token": token,
                "access_token": token,
                "expires_in": TOKEN_LIFETIME_SECS,
            })
            .to_string(),
        ),
        Err(e) => (
            "500 Internal Server Error",
            serde_json::json!({ "error": e.to_string() }).to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        assert_eq!(
            parse_scope("repository:apps/calc:pull,push"),
            Some((
                "repository".into(),
                "apps/calc".into(),
                vec!["pull".into(), "push".into()]
            ))
        );
        assert_eq!(
            parse_scope("registry:catalog:*"),
            Some(("registry".into(), "catalog".into(), vec!["*".into()]))
        );
        assert_eq!(parse_scope("nonsense"), None);
    }
}
