//! A real `docker-registry` (docker/distribution 2.8) process for tests.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tempfile::TempDir;

use crate::free_port;
use crate::token::{TokenIssuer, TokenServer, TOKEN_ISSUER, TOKEN_SERVICE};

const REGISTRY_BINARY: &str = "/usr/bin/docker-registry";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
const PORT_ATTEMPTS: usize = 3;
/// The registry writes its access-log line after the response went out; give it this long
/// to land before `request_log()` reads the file.
const LOG_SETTLE: Duration = Duration::from_millis(150);

/// User-Agent of every request the testkit itself sends, so that `request_log()` can tell
/// them apart from the requests of the code under test.
pub const TESTKIT_USER_AGENT: &str = "regindex-testkit";

/// Credentials accepted by a registry started with `htpasswd()`.
pub const TEST_USERNAME: &str = "tester";
pub const TEST_PASSWORD: &str = "regindex-test-password";
/// bcrypt of `TEST_PASSWORD` (cost 5): distribution's htpasswd only accepts bcrypt, and
/// a constant spares the testkit a bcrypt dependency.
const TEST_PASSWORD_BCRYPT: &str = "$2a$05$2vM0I8w0RDZ6n6NWhnMJb.QrvJm/Pfny43k56XKf93txgqVsKdLmu";

/// Where the registry sends its webhooks.
#[derive(Debug, Clone)]
pub struct NotificationEndpoint {
    pub url: String,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub bearer_token: Option<String>,
    /// Retry interval after a failed delivery.
    pub backoff: Duration,
    /// Failures before the endpoint is considered down (only affects its metrics/logging).
    pub threshold: u32,
    /// How long the registry waits for an answer before it resends; the README's 5 s by
    /// default, which the api's publish timeout (3 s) stays below.
    pub timeout: Duration,
    /// `notifications.events.includereferences`.
    pub include_references: bool,
    /// `ignore.actions`: e.g. `["pull"]` to get only pushes and deletes.
    pub ignored_actions: Vec<String>,
    /// `ignore.mediatypes`: `application/octet-stream` skips blob events.
    pub ignored_media_types: Vec<String>,
}

impl NotificationEndpoint {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            bearer_token: None,
            backoff: Duration::from_millis(500),
            threshold: 3,
            timeout: Duration::from_secs(5),
            include_references: false,
            ignored_actions: Vec::new(),
            ignored_media_types: Vec::new(),
        }
    }

    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(token.into());
        self
    }

    /// Drop these actions (`pull`, `push`, `delete`, `mount`) at the registry.
    pub fn ignore_actions(mut self, actions: &[&str]) -> Self {
        self.ignored_actions = actions.iter().map(|a| (*a).to_owned()).collect();
        self
    }

    /// Drop events whose target has one of these media types. docker-registry 2.8 reports
    /// every blob as `application/octet-stream`, so that one drops all blob events.
    pub fn ignore_media_types(mut self, media_types: &[&str]) -> Self {
        self.ignored_media_types = media_types.iter().map(|m| (*m).to_owned()).collect();
        self
    }
}

/// Options of a `TestRegistry`.
#[derive(Debug, Clone, Default)]
pub struct TestRegistryBuilder {
    prefix: Option<String>,
    htpasswd: bool,
    token_auth: bool,
    notifications: Vec<NotificationEndpoint>,
}

impl TestRegistryBuilder {
    /// Serve under a path prefix (`http.prefix`), e.g. `/pfx`: the API is then at `/pfx/v2/`.
    pub fn prefix(mut self, prefix: &str) -> Self {
        let trimmed = prefix.trim_matches('/');
        self.prefix = (!trimmed.is_empty()).then(|| format!("/{trimmed}"));
        self
    }

    /// Require basic auth with `TEST_USERNAME` / `TEST_PASSWORD` (distribution 2.8 accepts
    /// htpasswd without TLS).
    pub fn htpasswd(mut self) -> Self {
        self.htpasswd = true;
        self
    }

    /// Require bearer tokens (`auth.token`): the registry answers 401 with a challenge
    /// pointing at a token server started with it, which issues tokens to
    /// `TEST_USERNAME` / `TEST_PASSWORD`. Exclusive with `htpasswd()`.
    pub fn token_auth(mut self) -> Self {
        self.token_auth = true;
        self
    }

    pub fn notify(mut self, endpoint: NotificationEndpoint) -> Self {
        self.notifications.push(endpoint);
        self
    }

    pub async fn start(self) -> anyhow::Result<TestRegistry> {
        let dir = tempfile::Builder::new()
            .prefix("regindex-registry-")
            .tempdir()
            .context("creating the registry's temporary directory")?;
        if self.htpasswd && self.token_auth {
            bail!("htpasswd and token auth are exclusive in docker-registry");
        }
        let token = if self.token_auth {
            let issuer = TokenIssuer::create(dir.path())?;
            let server = TokenServer::start(issuer.clone()).await?;
            Some((issuer, server))
        } else {
            None
        };
        if self.htpasswd {
            std::fs::write(
                dir.path().join("htpasswd"),
                format!("{TEST_USERNAME}:{TEST_PASSWORD_BCRYPT}\n"),
            )?;
        }
        let http = reqwest::Client::builder()
            .user_agent(TESTKIT_USER_AGENT)
            .timeout(Duration::from_secs(30))
            .build()?;
        let mut registry = TestRegistry {
            log_path: dir.path().join("registry.log"),
            config_path: dir.path().join("config.yml"),
            dir,
            port: 0,
            prefix: self.prefix.clone(),
            htpasswd: self.htpasswd,
            token,
            child: None,
            http,
        };
        // A free port can be taken by a parallel test before the registry binds it: try
        // another one then.
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            registry.port = free_port()?;
            std::fs::write(
                &registry.config_path,
                self.config_yaml(
                    registry.dir.path(),
                    registry.port,
                    registry
                        .token
                        .as_ref()
                        .map(|(_, server)| server.url.as_str()),
                ),
            )?;
            match registry.start().await {
                Ok(()) => return Ok(registry),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("docker-registry did not start")))
    }

    fn config_yaml(&self, dir: &Path, port: u16, token_server: Option<&str>) -> String {
        // JSON is valid YAML, and serde_json quotes every string correctly.
        let mut http = serde_json::json!({
            "addr": format!("127.0.0.1:{port}"),
            // A fixed secret keeps upload state valid across restarts.
            "secret": "regindex-testkit-secret",
        });
        if let Some(prefix) = &self.prefix {
            http["prefix"] = prefix.clone().into();
        }
        let mut config = serde_json::json!({
            "version": "0.1",
            "log": { "level": "info", "formatter": "text", "accesslog": { "disabled": false } },
            "storage": {
                "filesystem": { "rootdirectory": dir.join("storage").to_string_lossy() },
                "delete": { "enabled": true },
            },
            "http": http,
        });
        if self.htpasswd {
            config["auth"] = serde_json::json!({
                "htpasswd": {
                    "realm": "regindex-test",
                    "path": dir.join("htpasswd").to_string_lossy(),
                }
            });
        }
        if let Some(token_server) = token_server {
            config["auth"] = serde_json::json!({
                "token": {
                    "realm": format!("{token_server}/token"),
                    "service": TOKEN_SERVICE,
                    "issuer": TOKEN_ISSUER,
                    "rootcertbundle": dir.join("token.crt").to_string_lossy(),
                }
            });
        }
        if !self.notifications.is_empty() {
            let include_references = self.notifications.iter().any(|e| e.include_references);
            let endpoints: Vec<_> = self
                .notifications
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let mut endpoint = serde_json::json!({
                        "name": format!("endpoint{i}"),
                        "url": e.url,
                        "timeout": format!("{}ms", e.timeout.as_millis()),
                        "threshold": e.threshold,
                        "backoff": format!("{}ms", e.backoff.as_millis()),
                    });
                    if !e.ignored_actions.is_empty() || !e.ignored_media_types.is_empty() {
                        endpoint["ignore"] = serde_json::json!({
                            "actions": e.ignored_actions,
                            "mediatypes": e.ignored_media_types,
                        });
                    }
                    if let Some(token) = &e.bearer_token {
                        endpoint["headers"] =
                            serde_json::json!({ "Authorization": [format!("Bearer {token}")] });
                    }
                    endpoint
                })
                .collect();
            config["notifications"] = serde_json::json!({
                "events": { "includereferences": include_references },
                "endpoints": endpoints,
            });
        }
        serde_json::to_string_pretty(&config).unwrap_or_default()
    }
}

/// One request as the registry logged it (its access log, Apache combined format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: String,
    /// Path and query, as requested (including any `http.prefix`).
    pub uri: String,
    pub status: u16,
    pub user_agent: String,
}

impl LoggedRequest {
    /// Path without the query string.
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or(&self.uri)
    }

    /// Sent by the testkit itself (pushes, helper HEADs), not by the code under test.
    pub fn is_testkit(&self) -> bool {
        self.user_agent.starts_with(TESTKIT_USER_AGENT)
    }

    pub fn is_manifest(&self) -> bool {
        self.path().contains("/manifests/")
    }

    /// A blob download or HEAD (not an upload).
    pub fn is_blob(&self) -> bool {
        self.path().contains("/blobs/") && !self.path().contains("/blobs/uploads")
    }

    /// A manifest GET (a HEAD does not count).
    pub fn is_manifest_get(&self) -> bool {
        self.method == "GET" && self.is_manifest()
    }

    pub fn is_blob_get(&self) -> bool {
        self.method == "GET" && self.is_blob()
    }

    /// Parses one access-log line:
    /// `127.0.0.1 - - [date] "GET /v2/ HTTP/1.1" 200 2 "referer" "user-agent"`.
    /// Other lines (the registry's own logrus messages) give `None`.
    pub fn parse_access_line(line: &str) -> Option<Self> {
        let (_, rest) = line.split_once("] \"")?;
        let (request, rest) = rest.split_once('"')?;
        let mut parts = request.split(' ');
        let method = parts.next()?.to_owned();
        let uri = parts.next()?.to_owned();
        if !parts.next()?.starts_with("HTTP/") {
            return None;
        }
        let status = rest.trim_start().split(' ').next()?.parse().ok()?;
        // The last quoted field is the user agent.
        let user_agent = rest
            .trim_end()
            .strip_suffix('"')
            .and_then(|r| r.rsplit_once('"'))
            .map(|(_, ua)| ua.to_owned())
            .unwrap_or_default();
        Some(Self {
            method,
            uri,
            status,
            user_agent,
        })
    }
}

/// A running `docker-registry`, killed on drop. Its storage and log live in a temporary
/// directory removed on drop.
pub struct TestRegistry {
    dir: TempDir,
    config_path: PathBuf,
    log_path: PathBuf,
    port: u16,
    prefix: Option<String>,
    htpasswd: bool,
    token: Option<(TokenIssuer, TokenServer)>,
    child: Option<Child>,
    pub(crate) http: reqwest::Client,
}

impl TestRegistry {
    /// A plain registry: no prefix, no auth, no notifications.
    pub async fn new() -> anyhow::Result<Self> {
        Self::builder().start().await
    }

    pub fn builder() -> TestRegistryBuilder {
        TestRegistryBuilder::default()
    }

    /// `http://127.0.0.1:PORT` plus the path prefix if any (what a client is configured with).
    pub fn url(&self) -> String {
        format!(
            "http://127.0.0.1:{}{}",
            self.port,
            self.prefix.as_deref().unwrap_or("")
        )
    }

    /// `host:port`, as image references and webhook bodies spell the registry.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `(username, password)` when started with `htpasswd()` or `token_auth()`.
    pub fn credentials(&self) -> Option<(&'static str, &'static str)> {
        (self.htpasswd || self.token.is_some()).then_some((TEST_USERNAME, TEST_PASSWORD))
    }

    /// Requests the token server answered so far (0 without `token_auth()`).
    pub fn token_requests(&self) -> usize {
        self.token
            .as_ref()
            .map_or(0, |(_, server)| server.requests.load(Ordering::SeqCst))
    }

    /// The token server's URL, with `token_auth()`.
    pub fn token_server_url(&self) -> Option<&str> {
        self.token.as_ref().map(|(_, server)| server.url.as_str())
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The registry process's id, while it runs (for the benchmarks' CPU accounting).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the process (again) on the same port and storage; waits until `/v2/` answers.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        // Append: a restart keeps the earlier requests in the log.
        let log_offset = std::fs::metadata(&self.log_path).map_or(0, |m| m.len());
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let child = Command::new(REGISTRY_BINARY)
            .arg("serve")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {REGISTRY_BINARY}"))?;
        self.child = Some(child);
        if let Err(e) = self.wait_ready(log_offset).await {
            self.stop();
            let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            bail!("{e}; registry log:\n{log}");
        }
        Ok(())
    }

    /// Kills the process; storage is kept, the port stays reserved for `start()`.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.start().await
    }

    /// Ready when this run logged that it listens (so that another server which took
    /// the port cannot pass for it) and `/v2/` answers.
    async fn wait_ready(&mut self, log_offset: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let url = format!("{}/v2/", self.url());
        let listening = format!("listening on 127.0.0.1:{}", self.port);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!("docker-registry exited at start-up: {status}");
                }
            }
            let log = std::fs::read(&self.log_path).unwrap_or_default();
            let this_run = log.get(log_offset as usize..).unwrap_or_default();
            if String::from_utf8_lossy(this_run).contains(&listening) {
                // Any HTTP answer (401 with htpasswd) means it is serving.
                if let Ok(response) = self.http.get(&url).send().await {
                    if response.status().is_success() || response.status().as_u16() == 401 {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("docker-registry did not answer on {url} within {STARTUP_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every request the registry logged so far (all runs), in order, including the
    /// testkit's own (see `LoggedRequest::is_testkit`).
    pub async fn request_log(&self) -> anyhow::Result<Vec<LoggedRequest>> {
        tokio::time::sleep(LOG_SETTLE).await;
        let text = tokio::fs::read_to_string(&self.log_path).await?;
        Ok(text
            .lines()
            .filter_map(LoggedRequest::parse_access_line)
            .collect())
    }

    /// Requests logged since `mark` (a length of an earlier `request_log()`), sent by the
    /// code under test (the testkit's own requests are left out).
    pub async fn requests_since(&self, mark: usize) -> anyhow::Result<Vec<LoggedRequest>> {
        Ok(self
            .request_log()
            .await?
            .into_iter()
            .skip(mark)
            .filter(|r| !r.is_testkit())
            .collect())
    }

    /// The current length of the request log, for `requests_since`.
    pub async fn log_mark(&self) -> anyhow::Result<usize> {
        Ok(self.request_log().await?.len())
    }

    /// The registry's whole log (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `<url>/v2/<path>`.
    pub(crate) fn v2(&self, path: &str) -> String {
        format!("{}/v2/{}", self.url(), path)
    }

    /// Adds the testkit's own credentials for `repo`: a token minted directly (not through
    /// the token server, so that `token_requests()` counts only the code under test) or
    /// basic auth.
    pub(crate) fn authed(
        &self,
        request: reqwest::RequestBuilder,
        repo: &str,
    ) -> anyhow::Result<reqwest::RequestBuilder> {
        if let Some((issuer, _)) = &self.token {
            let actions = ["pull", "push", "delete"].map(String::from).to_vec();
            let token = issuer.mint(&[
                ("repository".into(), repo.into(), actions),
                ("registry".into(), "catalog".into(), vec!["*".into()]),
            ])?;
            return Ok(request.bearer_auth(token));
        }
        Ok(match self.credentials() {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        })
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_access_log_lines() {
        let line = r#"127.0.0.1 - - [25/Nov/2026:10:16:34 +0000] "HEAD /pfx/v2/foo/manifests/latest HTTP/1.1" 404 96 "" "curl/7.88.1""#;
        let r = LoggedRequest::parse_access_line(line).unwrap();
        assert_eq!(r.method, "HEAD");
        assert_eq!(r.uri, "/pfx/v2/foo/manifests/latest");
        assert_eq!(r.status, 404);
        assert_eq!(r.user_agent, "curl/7.88.1");
        assert!(r.is_manifest() && !r.is_manifest_get());

        let logrus = r#"time="2026-11-25T10:16:34.873321975Z" level=info msg="response completed" http.request.method=GET"#;
        assert!(LoggedRequest::parse_access_line(logrus).is_none());
    }
}
