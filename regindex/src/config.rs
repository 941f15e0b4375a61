//! Configuration: one typed struct, loaded from an optional YAML file and then from
//! `REGINDEX_`-prefixed environment variables (`__` separates nesting levels, so
//! `REGINDEX_REGISTRY__URL` sets `registry.url`). Defaults run against the local stack.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

pub use crate::index::{IndexProfile, RepositoryPattern};
use crate::model::AliasMap;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The binaries say "loading the configuration" already.
    #[error("{0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key `{key}`: {problem}")]
    Invalid { key: &'static str, problem: String },
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

/// Durations written as whole numbers of the unit the key names (`_secs`, `_ms`), for
/// `#[serde(deserialize_with)]`. Errors name the key: the `config` crate appends it.
mod duration {
    use std::time::Duration;

    use serde::{de::Error as _, Deserialize, Deserializer};

    pub fn secs<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }

    pub fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }

    /// A timeout or wait that 0 would turn into "never" or "no limit".
    pub fn positive_secs<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        positive(secs(d)?)
    }

    pub fn positive_millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        positive(millis(d)?)
    }

    fn positive<E: serde::de::Error>(duration: Duration) -> Result<Duration, E> {
        if duration.is_zero() {
            return Err(E::custom("must be at least 1"));
        }
        Ok(duration)
    }

    /// An interval where 0 disables what it paces.
    pub fn secs_or_off<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Some(secs(d)?).filter(|every| !every.is_zero()))
    }

    /// At least one.
    pub fn millis_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        let list = Vec::<u64>::deserialize(d)?;
        if list.is_empty() {
            return Err(D::Error::custom("needs at least one delay"));
        }
        Ok(list.into_iter().map(Duration::from_millis).collect())
    }
}

/// `registry.url`: an `http(s)://host[:port][/prefix]` URL, kept as written for the
/// `Registry` field of index answers (parsing would add a `/` to a bare host).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct RegistryUrl {
    text: String,
    url: Url,
}

impl RegistryUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!("{text:?} must be http(s)://host[:port][/prefix]"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("{text:?} must not have a query or fragment"));
        }
        Ok(Self {
            text: text.to_owned(),
            url,
        })
    }

    /// As written in the configuration.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    /// `host` or `host:port` (the port when the URL names one).
    pub fn host_port(&self) -> String {
        let host = self.url.host_str().unwrap_or_default();
        match self.url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        }
    }
}

impl TryFrom<String> for RegistryUrl {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl std::str::FromStr for RegistryUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::parse(text)
    }
}

impl std::fmt::Display for RegistryUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::fmt::Debug for RegistryUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.text)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub registry: RegistryConfig,
    pub database: DatabaseConfig,
    pub amqp: AmqpConfig,
    pub api: ApiConfig,
    pub worker: WorkerConfig,
    pub history: HistoryConfig,
    pub icons: IconsConfig,
    pub web: WebConfig,
    /// How Bodhi's update and compose messages are handled.
    pub bodhi: BodhiConfig,
    /// Index files written to disk for serving from a CDN (regindexer style).
    pub static_indexes: Vec<StaticIndexConfig>,
    /// Named answer transformations (flatpak-indexer's per-index options), used by
    /// `static_indexes` entries and served live at `/profiles/<name>/index/...`.
    pub index_profiles: BTreeMap<String, IndexProfile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Where the worker fetches from: the only host it ever contacts. May carry a path
    /// prefix (`https://host/prefix`), under which `/v2/` is expected.
    pub url: RegistryUrl,
    /// The `Registry` value in index responses (what clients fetch manifests from).
    /// Defaults to `url`; may be relative to the index URL, e.g. `/`.
    pub public_url: Option<String>,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// A docker `config.json` to take credentials for the registry host from.
    pub docker_config: Option<PathBuf>,
    #[serde(
        rename = "request_timeout_secs",
        deserialize_with = "duration::positive_secs"
    )]
    pub request_timeout: Duration,
    /// Requests in flight to the registry at once, per process.
    pub max_concurrency: usize,
    /// Page size asked for on `_catalog` and `tags/list`.
    pub page_size: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: SecretString,
    /// Where the api reads (a streaming replica of `url`); unset: the api reads `url`.
    /// The worker and `regindexctl` always use `url`. See docs/architecture.md, "Serving".
    pub read_url: Option<SecretString>,
    pub max_connections: u32,
    /// How long a query waits for a pooled connection (all busy, or none can be opened)
    /// before it fails.
    #[serde(
        rename = "acquire_timeout_ms",
        deserialize_with = "duration::positive_millis"
    )]
    pub acquire_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpConfig {
    /// One broker URL, or several (a list, or one string of URLs separated by commas) of
    /// the nodes of one cluster: processes connect to the first that answers and move to
    /// the next when theirs goes away.
    pub url: BrokerUrls,
    /// Topic exchange the api publishes registry events to.
    pub events_exchange: String,
    /// Exchange Bodhi publishes to (fedora-messaging uses `amq.topic`).
    pub bodhi_exchange: String,
    /// The work queue the worker consumes (refetches, reindexes).
    pub work_queue: String,
    /// Where messages go after `max_attempts` failures or when they cannot be parsed.
    pub dead_letter_queue: String,
    /// fedora-messaging topic prefix and environment: topics are `<prefix>.<env>.bodhi...`.
    pub topic_prefix: String,
    pub environment: String,
    /// Delays of the retry path, one per attempt; the last repeats. Never empty.
    #[serde(rename = "retry_delays_ms", deserialize_with = "duration::millis_list")]
    pub retry_delays: Vec<Duration>,
    /// Attempts before a message is dead-lettered.
    pub max_attempts: u32,
    /// Unacknowledged messages the worker holds at once.
    pub prefetch: u16,
    /// The type of every queue regindex declares (work, retry delays, dead letters,
    /// history). Changing it on a broker that has the queues is not in-place: see
    /// `regindexctl bus migrate`.
    pub queue_type: QueueType,
}

/// `amqp.url`: the AMQP URLs of one broker's nodes, at least one, in order of preference.
/// Never printed: they carry the password.
#[derive(Clone, Deserialize)]
#[serde(try_from = "UrlsInput")]
pub struct BrokerUrls(Vec<SecretString>);

/// A YAML string or list; a string may hold several URLs separated by commas (so that
/// `REGINDEX_AMQP__URL=amqp://a,amqp://b` works), a comma in a password is written `%2C`.
#[derive(Deserialize)]
#[serde(untagged)]
enum UrlsInput {
    One(String),
    Many(Vec<String>),
}

impl TryFrom<UrlsInput> for BrokerUrls {
    type Error = String;

    fn try_from(input: UrlsInput) -> Result<Self, String> {
        let urls: Vec<String> = match input {
            UrlsInput::One(text) => text.split(',').map(str::to_owned).collect(),
            UrlsInput::Many(urls) => urls,
        };
        let urls: Vec<SecretString> = urls
            .into_iter()
            .map(|url| url.trim().to_owned())
            .filter(|url| !url.is_empty())
            .map(SecretString::from)
            .collect();
        if urls.is_empty() {
            return Err("amqp.url: no URL given".into());
        }
        Ok(Self(urls))
    }
}

impl BrokerUrls {
    /// Every URL, in order; never empty.
    pub fn all(&self) -> &[SecretString] {
        &self.0
    }

    /// The first URL (e.g. for the login the broker definitions create).
    pub fn first(&self) -> &SecretString {
        &self.0[0]
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for BrokerUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BrokerUrls([REDACTED; {}])", self.0.len())
    }
}

impl From<SecretString> for BrokerUrls {
    fn from(url: SecretString) -> Self {
        Self(vec![url])
    }
}

impl From<&SecretString> for BrokerUrls {
    fn from(url: &SecretString) -> Self {
        Self(vec![url.clone()])
    }
}

impl From<&BrokerUrls> for BrokerUrls {
    fn from(urls: &BrokerUrls) -> Self {
        urls.clone()
    }
}

impl From<String> for BrokerUrls {
    fn from(url: String) -> Self {
        Self(vec![SecretString::from(url)])
    }
}

impl From<Vec<String>> for BrokerUrls {
    fn from(urls: Vec<String>) -> Self {
        Self(urls.into_iter().map(SecretString::from).collect())
    }
}

/// `amqp.queue_type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// One node holds the queue and its messages (RabbitMQ's default).
    #[default]
    Classic,
    /// Replicated with Raft over the cluster's nodes; survives losing a minority of them.
    Quorum,
}

impl QueueType {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

impl std::fmt::Display for QueueType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// The public surface: index, icons, web page, search, `POST /events`, health.
    pub listen: SocketAddr,
    /// The operator surface: `/stats/*`, `/metrics`, `/openapi.json`. Loopback by default:
    /// statistics name clients (addresses, accounts) and must not be public.
    pub operator_listen: SocketAddr,
    /// `Cache-Control: max-age` of `/index/static`.
    #[serde(rename = "static_max_age_secs", deserialize_with = "duration::secs")]
    pub static_max_age: Duration,
    /// `POST /events` requires `Authorization: Bearer <webhook_token>` unless
    /// `webhook_auth` is `none`; the api refuses to start without a token otherwise.
    pub webhook_token: Option<SecretString>,
    pub webhook_auth: WebhookAuthMode,
    /// How long a webhook request may wait for the broker (connecting, publishing and
    /// confirming all its events) before it is answered 503. Keep it below the registry's
    /// notification `timeout`, or the registry gives up and resends while the api still
    /// publishes.
    #[serde(
        rename = "publish_timeout_ms",
        deserialize_with = "duration::positive_millis"
    )]
    pub publish_timeout: Duration,
    pub body_limit_bytes: usize,
    /// Also publish pull, mount and blob events. The activity history consumes them, so
    /// this is on by default and requires `history.enabled` (nothing else would consume
    /// them); push and delete of manifests always go.
    pub publish_pulls: bool,
    /// `statement_timeout` of every api database session: no read path (index, search,
    /// pages, icons, statistics) can hold a connection longer. Never 0, which would mean
    /// "no limit" to PostgreSQL: the opposite of what the key is for.
    #[serde(
        rename = "statement_timeout_ms",
        deserialize_with = "duration::positive_millis"
    )]
    pub statement_timeout: Duration,
    /// `stale-if-error` of `/index/static`, and how long the api keeps serving an answer
    /// from before a database outage.
    #[serde(rename = "stale_if_error_secs", deserialize_with = "duration::secs")]
    pub stale_if_error: Duration,
    /// Byte budget of the api's response cache: current and last good answers, each
    /// body (JSON and gzip) counted once. Least recently used queries go first.
    pub cache_bytes: usize,
}

/// `api.cache_bytes` by default. A Flatpak answer of 5,000 images is a few MiB (gzip
/// included); a few distinct queries (one per architecture and tag) make most traffic.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// `api.webhook_auth`: whether `POST /events` checks a bearer token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookAuthMode {
    /// `Authorization: Bearer <api.webhook_token>`; the token is required.
    #[default]
    Token,
    /// Anyone who reaches the port can post events (a warning is logged at start-up).
    None,
}

/// How `POST /events` authenticates, parsed from `api.webhook_auth` and `api.webhook_token`.
#[derive(Debug, Clone)]
pub enum WebhookAuth {
    Bearer(SecretString),
    /// The operator opted out explicitly (`api.webhook_auth: none`).
    Open,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Repositories refetched at once by one worker process.
    pub concurrency: usize,
    /// Full scan interval; `None` (0 in the file) disables the periodic scan.
    #[serde(
        rename = "scan_interval_secs",
        deserialize_with = "duration::secs_or_off"
    )]
    pub scan_interval: Option<Duration>,
    /// Garbage collection interval; `None` (0 in the file) disables it.
    #[serde(
        rename = "gc_interval_secs",
        deserialize_with = "duration::secs_or_off"
    )]
    pub gc_interval: Option<Duration>,
    /// The least time between two refetch starts of one repository. The first event of
    /// a quiet repository is refetched at once; events within this time of that start
    /// are gathered into one follow-up refetch.
    #[serde(rename = "coalesce_ms", deserialize_with = "duration::millis")]
    pub coalesce: Duration,
    /// `/metrics`, `/healthz` and `/readyz` of the worker.
    pub metrics_listen: SocketAddr,
    /// How often the dead-letter queue's depth is read for `/metrics`; `None` (0 in the
    /// file) disables it.
    #[serde(
        rename = "dead_letter_poll_secs",
        deserialize_with = "duration::secs_or_off"
    )]
    pub dead_letter_poll: Option<Duration>,
}

/// Bodhi messages (see `docs/operations.md`, "Bodhi updates and composes").
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BodhiConfig {
    /// What a container/flatpak `bodhi.compose.complete` does.
    pub compose_complete: ComposeCompleteMode,
    /// Repositories that update messages of this many seconds back named are refetched
    /// first after a compose.
    #[serde(rename = "recent_update_secs", deserialize_with = "duration::secs")]
    pub recent_update_window: Duration,
}

/// `bodhi.compose_complete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComposeCompleteMode {
    /// Refetch the repositories of recent updates, then check every other repository with
    /// one warm pass (tag lists and HEADs) and refetch those that changed.
    Full,
    /// Ignore compose messages: update messages, webhooks and the periodic scan suffice.
    Off,
}

impl Default for BodhiConfig {
    fn default() -> Self {
        Self {
            compose_complete: ComposeCompleteMode::Full,
            recent_update_window: Duration::from_secs(24 * 3600),
        }
    }
}

/// Registry activity history and statistics (see `docs/history.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "HistoryFile")]
pub struct HistoryConfig {
    /// The feature: the history queue is declared and bound, and the api publishes pull,
    /// mount and blob events for it.
    pub enabled: bool,
    /// This worker process runs a history consumer (several processes may).
    pub consume: bool,
    /// Durable queue bound to `registry.#` on the events exchange.
    pub queue: String,
    /// Unacknowledged history messages the consumer holds at once; at least `batch_size`.
    pub prefetch: u16,
    /// Events written in one transaction at most.
    pub batch_size: usize,
    /// A batch is written at the latest this long after its first event arrived
    /// (`batch_max_ms`).
    pub batch_max_wait: Duration,
    /// The canonical host of every host name an event may carry, built from the keys
    /// `aliases`, `default_host` and `merge_unlisted_hosts`.
    pub aliases: AliasMap,
    /// Deleted tags, manifests and blobs stay in the audit trail this long.
    pub audit_retention_days: u32,
    /// Raw events (and the event ids that make redeliveries harmless) are kept this long.
    pub event_retention_days: u32,
    /// How often the consumer prunes the audit trail and the raw events
    /// (`prune_interval_secs`); `None` (0 in the file): never.
    pub prune_interval: Option<Duration>,
    /// Scans and refetches record the registry's current state (tags, manifests, blobs and
    /// their links) for history that predates regindex.
    pub backfill: bool,
    /// Pulls by clients whose User-Agent starts with one of these are not counted:
    /// regindex's own refetches (HEAD of every tag) must not look like pulls.
    pub ignore_user_agents: Vec<String>,
}

/// The `history` section as written; [`HistoryConfig`] is what it means.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct HistoryFile {
    enabled: bool,
    consume: bool,
    queue: String,
    prefetch: u16,
    batch_size: usize,
    #[serde(deserialize_with = "duration::positive_millis")]
    batch_max_ms: Duration,
    /// Equivalent registry host names: canonical host → aliases. Events carry the host the
    /// client used (`request.host`); every alias is recorded under its canonical host.
    aliases: BTreeMap<String, Vec<String>>,
    /// Recorded under this host when an event names none (or an unlisted one, when
    /// `merge_unlisted_hosts` is set). Empty: the host as reported.
    default_host: String,
    /// Treat hosts not listed in `aliases` as `default_host` (a registry that only ever
    /// serves one name set, reached through load balancers with varying host headers).
    merge_unlisted_hosts: bool,
    audit_retention_days: u32,
    event_retention_days: u32,
    #[serde(deserialize_with = "duration::secs_or_off")]
    prune_interval_secs: Option<Duration>,
    backfill: bool,
    ignore_user_agents: Vec<String>,
}

impl Default for HistoryFile {
    fn default() -> Self {
        Self {
            enabled: true,
            consume: true,
            queue: "regindex.history".into(),
            prefetch: 2_000,
            batch_size: 500,
            batch_max_ms: Duration::from_millis(200),
            aliases: BTreeMap::new(),
            default_host: String::new(),
            merge_unlisted_hosts: false,
            audit_retention_days: 365,
            event_retention_days: 30,
            prune_interval_secs: Some(Duration::from_secs(3_600)),
            backfill: true,
            ignore_user_agents: vec!["regindex/".into()],
        }
    }
}

impl TryFrom<HistoryFile> for HistoryConfig {
    type Error = String;

    fn try_from(file: HistoryFile) -> Result<Self, String> {
        let aliases = AliasMap::new(&file.aliases, &file.default_host, file.merge_unlisted_hosts)
            .map_err(|e| format!("history.aliases: {e}"))?;
        Ok(Self {
            enabled: file.enabled,
            consume: file.consume,
            queue: file.queue,
            prefetch: file.prefetch,
            batch_size: file.batch_size,
            batch_max_wait: file.batch_max_ms,
            aliases,
            audit_retention_days: file.audit_retention_days,
            event_retention_days: file.event_retention_days,
            prune_interval: file.prune_interval_secs,
            backfill: file.backfill,
            ignore_user_agents: file.ignore_user_agents,
        })
    }
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self::try_from(HistoryFile::default()).expect("the default history section is valid")
    }
}

/// Icons carried as `data:` URIs in `org.freedesktop.appstream.icon-*` labels.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IconsConfig {
    /// Return icon URLs instead of the data URIs in index responses (and static index
    /// files). Off by default: answers then carry labels exactly as pushed. Icons are
    /// stored at ingest either way (the web page shows them, and enabling this needs no
    /// reindex).
    pub extract: bool,
    /// Larger decoded icons are refused (logged) and the label is returned unchanged.
    pub max_bytes: usize,
    /// Prefix of icon URLs (`<base_url>/icons/<sha256>.png`). Unset: path-absolute
    /// `/icons/...`, which clients resolve against the index URL.
    pub base_url: Option<String>,
    /// An icon no image carries any more is deleted by the garbage collection only this
    /// long after it was first found unreferenced: answers cached by HTTP caches may still
    /// point at it until their max-age ends. Must exceed `api.static_max_age_secs` and
    /// `web.max_age_secs` by `ICON_GC_MARGIN`.
    #[serde(rename = "gc_grace_secs", deserialize_with = "duration::secs")]
    pub gc_grace: Duration,
}

/// What `icons.gc_grace_secs` must exceed the longest answer max-age by: an answer may be
/// rendered from a snapshot taken just before the icon's last image went away (index
/// queries time out after 10 s), and static index files are rewritten within seconds.
pub const ICON_GC_MARGIN: Duration = Duration::from_secs(60);

/// The HTML page at `/`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Shown as the page title.
    pub title: String,
    /// Host (and optional path) in pull references (`<pull_host>/<name>:<tag>`).
    /// Unset: the host of `registry.public_url`, or of `registry.url`.
    pub pull_host: Option<String>,
    /// `Cache-Control: max-age` of the HTML pages and `/v1/search`.
    #[serde(rename = "max_age_secs", deserialize_with = "duration::secs")]
    pub max_age: Duration,
    /// Repositories per page on `/`.
    pub page_size: u32,
}

/// One static index file: the answer to a fixed query, written to `output`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticIndexConfig {
    /// Names the file in logs and errors.
    pub name: String,
    /// Where the file is written (atomically: a temporary file in the same directory,
    /// then a rename).
    pub output: PathBuf,
    /// Tag globs (`latest`, `latest-*`); an image or list matches if one of its tags
    /// matches one of them. Empty: any tag.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Labels that must be present.
    #[serde(default)]
    pub required_labels: Vec<String>,
    /// Annotations that must be present.
    #[serde(default)]
    pub required_annotations: Vec<String>,
    /// Go-style architectures (`amd64`); empty: all.
    #[serde(default)]
    pub architectures: Vec<String>,
    /// `Registry` in this file; unset: the api's (`registry.public_url`).
    #[serde(default)]
    pub registry_url: Option<String>,
    /// The `index_profiles` entry applied to this file; unset: none (the plain answer).
    #[serde(default)]
    pub profile: Option<String>,
    /// One file per architecture (flatpak-indexer's `architecture_expand`): `""` means all
    /// architectures. `@ARCH@` in `name` and `output` becomes the architecture, `@-ARCH@`
    /// becomes `-<arch>` (nothing for `""`). Excludes `architectures`.
    #[serde(default)]
    pub architecture_expand: Vec<String>,
}

impl StaticIndexConfig {
    /// The files this entry stands for: itself, or one per `architecture_expand` entry
    /// with `architectures` set and `@ARCH@` / `@-ARCH@` substituted.
    pub fn expand(&self) -> Vec<StaticIndexConfig> {
        if self.architecture_expand.is_empty() {
            return vec![self.clone()];
        }
        self.architecture_expand
            .iter()
            .map(|arch| {
                let dash_arch = if arch.is_empty() {
                    String::new()
                } else {
                    format!("-{arch}")
                };
                let template = |s: &str| s.replace("@-ARCH@", &dash_arch).replace("@ARCH@", arch);
                StaticIndexConfig {
                    name: template(&self.name),
                    output: PathBuf::from(template(&self.output.to_string_lossy())),
                    architectures: if arch.is_empty() {
                        vec![]
                    } else {
                        vec![arch.clone()]
                    },
                    architecture_expand: vec![],
                    ..self.clone()
                }
            })
            .collect()
    }
}

impl Default for IconsConfig {
    fn default() -> Self {
        Self {
            extract: false,
            max_bytes: 256 * 1024,
            base_url: None,
            gc_grace: Duration::from_secs(24 * 3600),
        }
    }
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            title: "Container and Flatpak registry".into(),
            pull_host: None,
            max_age: Duration::from_secs(60),
            page_size: 100,
        }
    }
}

impl HistoryConfig {
    fn validate(&self, publish_pulls: bool) -> Result<(), ConfigError> {
        if publish_pulls && !self.enabled {
            return Err(invalid(
                "api.publish_pulls",
                "needs history.enabled: nothing else consumes pull events",
            ));
        }
        if self.queue.is_empty() {
            return Err(invalid("history.queue", "must not be empty"));
        }
        if self.batch_size == 0 {
            return Err(invalid("history.batch_size", "must be at least 1"));
        }
        if usize::from(self.prefetch) < self.batch_size {
            return Err(invalid(
                "history.prefetch",
                "must be at least history.batch_size, or batches never fill",
            ));
        }
        Ok(())
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:5000".parse().expect("a valid URL"),
            public_url: None,
            username: None,
            password: None,
            docker_config: None,
            request_timeout: Duration::from_secs(30),
            max_concurrency: 16,
            page_size: 1000,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: SecretString::from("postgres://postgres@127.0.0.1:5432/regindex"),
            read_url: None,
            max_connections: 10,
            acquire_timeout: Duration::from_millis(5000),
        }
    }
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            url: BrokerUrls::from("amqp://guest:guest@127.0.0.1:5672/%2f".to_owned()),
            events_exchange: "regindex.events".into(),
            bodhi_exchange: "amq.topic".into(),
            work_queue: "regindex.work".into(),
            dead_letter_queue: "regindex.dead".into(),
            topic_prefix: "org.fedoraproject".into(),
            environment: "prod".into(),
            retry_delays: [1_000, 5_000, 30_000, 120_000, 600_000]
                .map(Duration::from_millis)
                .to_vec(),
            max_attempts: 8,
            prefetch: 64,
            queue_type: QueueType::Classic,
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8080).into(),
            operator_listen: ([127, 0, 0, 1], 8081).into(),
            static_max_age: Duration::from_secs(300),
            webhook_token: None,
            webhook_auth: WebhookAuthMode::Token,
            publish_timeout: Duration::from_millis(3_000),
            body_limit_bytes: 1 << 20,
            publish_pulls: true,
            statement_timeout: Duration::from_millis(10_000),
            stale_if_error: Duration::from_secs(86_400),
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 8,
            // A webhook the registry lost is repaired by the next scan: 30 min plus the
            // scan (seconds at 500 repositories, docs/benchmarks.md) stays within 1 h
            // even when one scan fails and is retried.
            scan_interval: Some(Duration::from_secs(30 * 60)),
            gc_interval: Some(Duration::from_secs(3600)),
            coalesce: Duration::from_millis(200),
            metrics_listen: ([127, 0, 0, 1], 9091).into(),
            dead_letter_poll: Some(Duration::from_secs(15)),
        }
    }
}

impl Config {
    /// Loads `path` (when given) and then the environment, and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(path, std::env::vars())
    }

    /// [`Config::load`] with these environment variables instead of the process's.
    fn load_from(
        path: Option<&Path>,
        vars: impl Iterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = path {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        let env = config::Environment::with_prefix("REGINDEX")
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("amqp.retry_delays_ms")
            .with_list_parse_key("history.ignore_user_agents")
            .source(Some(config_env_vars(vars)));
        let cfg: Config = builder.add_source(env).build()?.try_deserialize()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what parsing each key alone cannot: numbers in range, keys that must agree.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.registry.max_concurrency == 0 {
            return Err(invalid("registry.max_concurrency", "must be at least 1"));
        }
        if self.registry.page_size == 0 {
            return Err(invalid("registry.page_size", "must be at least 1"));
        }
        if self.registry.password.is_some() && self.registry.username.is_none() {
            return Err(invalid(
                "registry.username",
                "a password is set but no username",
            ));
        }
        if self.amqp.url.is_empty() {
            return Err(invalid("amqp.url", "needs at least one URL"));
        }
        for (n, url) in self.amqp.url.all().iter().enumerate() {
            use secrecy::ExposeSecret as _;
            use std::str::FromStr as _;
            // The error names the position only: the URL holds the password.
            if lapin::uri::AMQPUri::from_str(url.expose_secret()).is_err() {
                return Err(invalid(
                    "amqp.url",
                    format!("URL number {} is not a valid AMQP URL", n + 1),
                ));
            }
        }
        if self.amqp.max_attempts == 0 {
            return Err(invalid("amqp.max_attempts", "must be at least 1"));
        }
        if self.amqp.prefetch == 0 {
            return Err(invalid("amqp.prefetch", "must be at least 1"));
        }
        if self.worker.concurrency == 0 {
            return Err(invalid("worker.concurrency", "must be at least 1"));
        }
        self.validate_web()?;
        for (key, value) in [
            ("amqp.events_exchange", &self.amqp.events_exchange),
            ("amqp.work_queue", &self.amqp.work_queue),
            ("amqp.dead_letter_queue", &self.amqp.dead_letter_queue),
            ("amqp.topic_prefix", &self.amqp.topic_prefix),
            ("amqp.environment", &self.amqp.environment),
        ] {
            if value.is_empty() {
                return Err(invalid(key, "must not be empty"));
            }
        }
        // The worker republishes failures to the dead-letter queue: were it the work queue,
        // they would be consumed again at once, forever.
        if self.amqp.dead_letter_queue == self.amqp.work_queue {
            return Err(invalid(
                "amqp.dead_letter_queue",
                "must differ from amqp.work_queue",
            ));
        }
        self.api.validate()?;
        self.history.validate(self.api.publish_pulls)?;
        Ok(())
    }

    /// The `icons`, `web` and `static_indexes` sections.
    fn validate_web(&self) -> Result<(), ConfigError> {
        if self.icons.max_bytes == 0 {
            return Err(invalid("icons.max_bytes", "must be at least 1"));
        }
        if let Some(base) = &self.icons.base_url {
            let absolute = Url::parse(base).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if !absolute && !base.starts_with('/') {
                return Err(invalid(
                    "icons.base_url",
                    "must be an http(s) URL or a path starting with '/'",
                ));
            }
        }
        if self.web.page_size == 0 || self.web.page_size > 1000 {
            return Err(invalid("web.page_size", "must be between 1 and 1000"));
        }
        if let Some(host) = &self.web.pull_host {
            if host.is_empty() || host.contains("://") || host.contains(char::is_whitespace) {
                return Err(invalid(
                    "web.pull_host",
                    "must be a host[:port][/path] without scheme, e.g. registry.example.org",
                ));
            }
        }
        let longest_max_age = self.api.static_max_age.max(self.web.max_age);
        if self.icons.gc_grace <= longest_max_age + ICON_GC_MARGIN {
            return Err(invalid(
                "icons.gc_grace_secs",
                format!(
                    "must exceed the longest answer max-age ({} s, api.static_max_age_secs / web.max_age_secs) by more than {} s: cached answers may point at an icon that long",
                    longest_max_age.as_secs(),
                    ICON_GC_MARGIN.as_secs()
                ),
            ));
        }
        for name in self.index_profiles.keys() {
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !valid {
                return Err(invalid(
                    "index_profiles",
                    format!("profile name {name:?}: use letters, digits, '.', '_' and '-' (it is a URL path segment)"),
                ));
            }
        }
        self.validate_static_indexes()
    }

    fn validate_static_indexes(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::BTreeSet::new();
        let mut outputs = std::collections::BTreeSet::new();
        for index in &self.static_indexes {
            if let Some(profile) = &index.profile {
                if !self.index_profiles.contains_key(profile) {
                    return Err(invalid(
                        "static_indexes.profile",
                        format!(
                            "index {:?}: no index_profiles entry {profile:?}",
                            index.name
                        ),
                    ));
                }
            }
            if !index.architecture_expand.is_empty() && !index.architectures.is_empty() {
                return Err(invalid(
                    "static_indexes.architecture_expand",
                    format!(
                        "index {:?}: set architectures or architecture_expand, not both",
                        index.name
                    ),
                ));
            }
            for expanded in index.expand() {
                Self::validate_static_index(&expanded, &mut names)?;
                if !outputs.insert(expanded.output.clone()) {
                    return Err(invalid(
                        "static_indexes.output",
                        format!(
                            "{} is written twice (index {:?}); with architecture_expand, put @ARCH@ or @-ARCH@ in output",
                            expanded.output.display(),
                            index.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// One static index file (after `architecture_expand`).
    fn validate_static_index(
        index: &StaticIndexConfig,
        names: &mut std::collections::BTreeSet<String>,
    ) -> Result<(), ConfigError> {
        if index.name.is_empty() {
            return Err(invalid("static_indexes.name", "must not be empty"));
        }
        if !names.insert(index.name.clone()) {
            return Err(invalid(
                "static_indexes.name",
                format!("{:?} is used twice", index.name),
            ));
        }
        if index.output.as_os_str().is_empty() || index.output.file_name().is_none() {
            return Err(invalid(
                "static_indexes.output",
                format!("index {:?}: must be a file path", index.name),
            ));
        }
        let empty = index
            .tags
            .iter()
            .chain(&index.required_labels)
            .chain(&index.required_annotations)
            .chain(&index.architectures)
            .any(|v| v.is_empty());
        if empty {
            return Err(invalid(
                "static_indexes",
                format!("index {:?}: tags, labels, annotations and architectures must not be empty strings", index.name),
            ));
        }
        Ok(())
    }

    /// Host (and path) of pull references on the web page: `web.pull_host`, or the host
    /// of the public registry URL, or of `registry.url`.
    pub fn pull_host(&self) -> String {
        if let Some(host) = &self.web.pull_host {
            return host.trim_end_matches('/').to_owned();
        }
        for candidate in [
            self.registry.public_url.as_deref(),
            Some(self.registry.url.as_str()),
        ]
        .into_iter()
        .flatten()
        {
            if let Ok(url) = Url::parse(candidate) {
                if let Some(host) = url.host_str() {
                    let mut out = host.to_owned();
                    if let Some(port) = url.port() {
                        out.push_str(&format!(":{port}"));
                    }
                    let path = url.path().trim_end_matches('/');
                    out.push_str(path);
                    return out;
                }
            }
        }
        "localhost".into()
    }

    /// The `Registry` field of index responses.
    pub fn public_registry_url(&self) -> &str {
        self.registry
            .public_url
            .as_deref()
            .unwrap_or(self.registry.url.as_str())
    }
}

impl ApiConfig {
    /// How `POST /events` authenticates. Only the api needs a token, so this is checked
    /// when the api starts rather than in [`Config::validate`], which every binary runs.
    pub fn webhook_auth(&self) -> Result<WebhookAuth, ConfigError> {
        use secrecy::ExposeSecret as _;
        let token = self
            .webhook_token
            .as_ref()
            .filter(|t| !t.expose_secret().trim().is_empty());
        match (self.webhook_auth, token) {
            (WebhookAuthMode::Token, Some(token)) => Ok(WebhookAuth::Bearer(token.clone())),
            (WebhookAuthMode::Token, None) => Err(invalid(
                "api.webhook_token",
                "required: set it (REGINDEX_API__WEBHOOK_TOKEN) and send it from the registry \
                 as `Authorization: Bearer <token>`, or set api.webhook_auth: none to accept \
                 webhooks from anyone who can reach api.listen",
            )),
            (WebhookAuthMode::None, _) => Ok(WebhookAuth::Open),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.webhook_auth == WebhookAuthMode::None && self.webhook_token.is_some() {
            return Err(invalid(
                "api.webhook_auth",
                "is none but api.webhook_token is set: remove one of them",
            ));
        }
        let (public, operator) = (self.listen, self.operator_listen);
        let overlapping_ips = public.ip() == operator.ip()
            || public.ip().is_unspecified()
            || operator.ip().is_unspecified();
        if public.port() == operator.port() && overlapping_ips {
            return Err(invalid(
                "api.operator_listen",
                "must differ from api.listen: the operator surface is not public",
            ));
        }
        Ok(())
    }
}

/// The environment variables that configure: `REGINDEX_<SECTION>__<KEY>`. Every key lives
/// in a section, so variables without `__` (`REGINDEX_CONFIG`, `REGINDEX_LOG_FORMAT`, test
/// settings) are not configuration and must not be refused as unknown keys.
fn config_env_vars(
    vars: impl Iterator<Item = (String, String)>,
) -> std::collections::HashMap<String, String> {
    vars.filter(|(name, _)| {
        name.strip_prefix("REGINDEX_")
            .is_some_and(|rest| rest.contains("__"))
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn only_sectioned_environment_variables_configure() {
        let vars = [
            ("REGINDEX_REGISTRY__URL", "http://r"),
            ("REGINDEX_CONFIG", "/etc/regindex.yaml"),
            ("REGINDEX_LOG_FORMAT", "json"),
            ("PATH", "/bin"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let kept = config_env_vars(vars.into_iter());
        assert_eq!(kept.len(), 1);
        assert_eq!(kept["REGINDEX_REGISTRY__URL"], "http://r");
    }

    #[test]
    fn amqp_url_takes_one_url_a_list_or_urls_separated_by_commas() {
        use secrecy::ExposeSecret as _;
        let urls = |cfg: &Config| -> Vec<String> {
            cfg.amqp
                .url
                .all()
                .iter()
                .map(|u| u.expose_secret().to_owned())
                .collect()
        };
        let mut f = tempfile::NamedTempFile::with_suffix(".yaml").unwrap();
        writeln!(
            f,
            "amqp:\n  url: [amqp://u:p@a:5672/v, amqp://u:p@b:5672/v]\n  queue_type: quorum"
        )
        .unwrap();
        let cfg = Config::load(Some(f.path())).unwrap();
        assert_eq!(urls(&cfg), ["amqp://u:p@a:5672/v", "amqp://u:p@b:5672/v"]);
        assert_eq!(cfg.amqp.queue_type, QueueType::Quorum);

        let mut f = tempfile::NamedTempFile::with_suffix(".yaml").unwrap();
        writeln!(
            f,
            "amqp:\n  url: amqp://u:p@a/v, amqp://u:p@b/v,amqp://u:p%2C@c/v"
        )
        .unwrap();
        let cfg = Config::load(Some(f.path())).unwrap();
        assert_eq!(
            urls(&cfg),
            ["amqp://u:p@a/v", "amqp://u:p@b/v", "amqp://u:p%2C@c/v"]
        );
        assert_eq!(Config::default().amqp.url.len(), 1);
        assert!(!format!("{:?}", cfg.amqp).contains("u:p"), "never printed");

        let mut f = tempfile::NamedTempFile::with_suffix(".yaml").unwrap();
        writeln!(
            f,
            "amqp:\n  url: [amqp://u:secret@a/v, 'http://u:secret@b/']"
        )
        .unwrap();
        let err = Config::load(Some(f.path())).unwrap_err().to_string();
        assert!(err.contains("URL number 2"), "{err}");
        assert!(!err.contains("secret"), "{err}");

        let mut f = tempfile::NamedTempFile::with_suffix(".yaml").unwrap();
        writeln!(f, "amqp:\n  queue_type: mirrored").unwrap();
        let err = Config::load(Some(f.path())).unwrap_err().to_string();
        assert!(err.contains("mirrored"), "{err}");
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn yaml_file_overrides_defaults() {
        let mut f = tempfile::NamedTempFile::with_suffix(".yaml").unwrap();
        writeln!(
            f,
            "registry:\n  url: https://registry.example.org/prefix\n  public_url: /\napi:\n  static_max_age_secs: 60"
        )
        .unwrap();
        let cfg = Config::load(Some(f.path())).unwrap();
        assert_eq!(
            cfg.registry.url.as_str(),
            "https://registry.example.org/prefix"
        );
        assert_eq!(cfg.public_registry_url(), "/");
        assert_eq!(cfg.api.static_max_age, Duration::from_secs(60));
        assert_eq!(cfg.worker.concurrency, WorkerConfig::default().concurrency);
    }

    #[test]
    fn example_configuration_loads() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config.example.yaml");
        let cfg = Config::load(Some(Path::new(path))).unwrap();
        assert_eq!(cfg.history.queue, HistoryConfig::default().queue);
        assert_eq!(cfg.api.cache_bytes, DEFAULT_CACHE_BYTES);
    }

    #[test]
    fn history_section() {
        let mut f = tempfile::NamedTempFile::with_suffix(".yaml").unwrap();
        writeln!(
            f,
            "history:\n  batch_size: 10\n  prefetch: 20\n  aliases:\n    registry.example.com: [\"registry:5000\", \"10.0.0.5:5000\"]"
        )
        .unwrap();
        let cfg = Config::load(Some(f.path())).unwrap();
        assert_eq!(
            cfg.history.aliases.canonical(Some("10.0.0.5:5000")),
            "registry.example.com"
        );
        assert_eq!(cfg.history.batch_max_wait, Duration::from_millis(200));

        let mut cfg = Config::default();
        cfg.history.enabled = false;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("api.publish_pulls"), "{err}");
        cfg.api.publish_pulls = false;
        cfg.validate().unwrap();

        let mut cfg = Config::default();
        cfg.history.prefetch = 10;
        cfg.history.batch_size = 11;
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("history.prefetch"));

        let err = load_yaml("history:\n  aliases:\n    a: [x]\n    b: [X]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("history.aliases"), "{err}");
        assert!(err.contains("listed under both"), "{err}");
    }

    #[test]
    fn bodhi_section() {
        let mut f = tempfile::NamedTempFile::with_suffix(".yaml").unwrap();
        writeln!(
            f,
            "bodhi:\n  compose_complete: off\n  recent_update_secs: 60"
        )
        .unwrap();
        let cfg = Config::load(Some(f.path())).unwrap();
        assert_eq!(cfg.bodhi.compose_complete, ComposeCompleteMode::Off);
        assert_eq!(cfg.bodhi.recent_update_window, Duration::from_secs(60));
        assert_eq!(
            Config::default().bodhi.compose_complete,
            ComposeCompleteMode::Full
        );
        let mut f = tempfile::NamedTempFile::with_suffix(".yaml").unwrap();
        writeln!(f, "bodhi:\n  compose_complete: sometimes").unwrap();
        let err = Config::load(Some(f.path())).unwrap_err().to_string();
        assert!(err.contains("sometimes"), "{err}");
    }

    #[test]
    fn the_dead_letter_queue_is_not_the_work_queue() {
        let mut cfg = Config::default();
        cfg.amqp.dead_letter_queue = cfg.amqp.work_queue.clone();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("amqp.dead_letter_queue"), "{err}");
    }

    #[test]
    fn example_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.example.yaml");
        let cfg = Config::load(Some(&path)).unwrap();
        assert_eq!(cfg.icons, IconsConfig::default());
        assert_eq!(cfg.web, WebConfig::default());
        assert!(cfg.static_indexes.is_empty());
    }

    #[test]
    fn web_sections_load_and_validate() {
        let mut f = tempfile::NamedTempFile::with_suffix(".yaml").unwrap();
        writeln!(
            f,
            "icons:\n  extract: false\n  max_bytes: 1000\n  base_url: https://cdn.example.org/\nweb:\n  pull_host: registry.example.org\nstatic_indexes:\n  - name: flatpak-amd64\n    output: /tmp/x/flatpak-amd64.json\n    tags: [latest, latest-*]\n    required_labels: [org.flatpak.ref]\n    architectures: [amd64]"
        )
        .unwrap();
        let cfg = Config::load(Some(f.path())).unwrap();
        assert!(!cfg.icons.extract);
        assert_eq!(cfg.icons.max_bytes, 1000);
        assert_eq!(cfg.pull_host(), "registry.example.org");
        assert_eq!(cfg.static_indexes.len(), 1);
        assert_eq!(cfg.static_indexes[0].tags, ["latest", "latest-*"]);
        assert!(cfg.static_indexes[0].required_annotations.is_empty());

        let mut cfg = Config::default();
        assert!(
            !cfg.icons.extract,
            "index answers carry labels as pushed by default"
        );
        assert_eq!(cfg.pull_host(), "127.0.0.1:5000");
        cfg.registry.public_url = Some("https://registry.example.org/prefix/".into());
        assert_eq!(cfg.pull_host(), "registry.example.org/prefix");
        cfg.registry.public_url = Some("/".into());
        assert_eq!(cfg.pull_host(), "127.0.0.1:5000");

        let mut cfg = Config::default();
        cfg.icons.max_bytes = 0;
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("icons.max_bytes"));
        let mut cfg = Config::default();
        cfg.icons.base_url = Some("cdn.example.org".into());
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("icons.base_url"));
        let mut cfg = Config::default();
        let index = StaticIndexConfig {
            name: "a".into(),
            output: "/tmp/a.json".into(),
            tags: vec![],
            required_labels: vec![],
            required_annotations: vec![],
            architectures: vec![],
            registry_url: None,
            profile: None,
            architecture_expand: vec![],
        };
        cfg.static_indexes = vec![index.clone(), index];
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("used twice"));
    }

    fn load_yaml(text: &str) -> Result<Config, ConfigError> {
        let mut f = tempfile::NamedTempFile::with_suffix(".yaml").unwrap();
        writeln!(f, "{text}").unwrap();
        Config::load(Some(f.path()))
    }

    #[test]
    fn index_profiles_load_with_compiled_patterns() {
        let cfg = load_yaml(
            "index_profiles:\n  fedora:\n    repository_include: ['apps/.*', 'flatpaks/.*']\n    repository_exclude: ['apps/beta-.*']\n    repository_priority: ['flatpaks/.*']\n    flatpak_annotations: true\n    force_flatpak_token: true\n  plain: {}\nstatic_indexes:\n  - name: fedora@-ARCH@\n    output: /tmp/x/flatpak@-ARCH@.json\n    profile: fedora\n    tags: [latest]\n    architecture_expand: ['', amd64, arm64]",
        )
        .unwrap();
        let fedora = &cfg.index_profiles["fedora"];
        assert!(fedora.repository_include[1].matches("flatpaks/calc"));
        assert!(!fedora.repository_include[1].matches("flatpaks"));
        assert_eq!(fedora.repository_exclude[0].as_str(), "apps/beta-.*");
        assert!(fedora.flatpak_annotations && fedora.force_flatpak_token);
        assert!(cfg.index_profiles["plain"].is_identity());
        let expanded = cfg.static_indexes[0].expand();
        let files: Vec<(String, String, Vec<String>)> = expanded
            .iter()
            .map(|i| {
                (
                    i.name.clone(),
                    i.output.display().to_string(),
                    i.architectures.clone(),
                )
            })
            .collect();
        assert_eq!(
            files,
            [
                ("fedora".into(), "/tmp/x/flatpak.json".into(), vec![]),
                (
                    "fedora-amd64".into(),
                    "/tmp/x/flatpak-amd64.json".into(),
                    vec!["amd64".into()]
                ),
                (
                    "fedora-arm64".into(),
                    "/tmp/x/flatpak-arm64.json".into(),
                    vec!["arm64".into()]
                ),
            ]
        );
        assert!(expanded.iter().all(|i| i.architecture_expand.is_empty()));
    }

    #[test]
    fn bad_profiles_name_the_key() {
        let err = load_yaml("index_profiles:\n  fedora:\n    repository_priority: ['apps/(']")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("index_profiles.fedora.repository_priority"),
            "{err}"
        );
        assert!(err.contains("apps/("), "{err}");
        let err = load_yaml("index_profiles:\n  fedora:\n    repository_priorty: []")
            .unwrap_err()
            .to_string();
        assert!(err.contains("repository_priorty"), "{err}");
        let err = load_yaml("index_profiles:\n  'a/b': {}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("index_profiles"), "{err}");
        let err =
            load_yaml("static_indexes:\n  - name: x\n    output: /tmp/x.json\n    profile: nope")
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("static_indexes.profile") && err.contains("nope"),
            "{err}"
        );
        let err = load_yaml("static_indexes:\n  - name: x@ARCH@\n    output: /tmp/x.json\n    architecture_expand: [amd64, arm64]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("static_indexes.output"), "{err}");
        let err = load_yaml("static_indexes:\n  - name: x@ARCH@\n    output: /tmp/x@ARCH@.json\n    architectures: [amd64]\n    architecture_expand: [amd64]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("static_indexes.architecture_expand"), "{err}");
    }

    #[test]
    fn icon_grace_exceeds_every_max_age() {
        let mut cfg = Config::default();
        cfg.icons.gc_grace = cfg.api.static_max_age + ICON_GC_MARGIN;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("icons.gc_grace_secs"), "{err}");
        cfg.icons.gc_grace += Duration::from_secs(1);
        cfg.validate().unwrap();
        cfg.web.max_age = Duration::from_secs(10_000);
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn the_webhook_token_is_required_unless_opted_out() {
        let mut api = ApiConfig::default();
        let err = api.webhook_auth().unwrap_err().to_string();
        assert!(err.contains("api.webhook_token"), "{err}");
        assert!(err.contains("webhook_auth: none"), "{err}");
        api.webhook_token = Some(SecretString::from("  "));
        assert!(api.webhook_auth().is_err(), "a blank token is no token");
        api.webhook_token = Some(SecretString::from("s3cret"));
        assert!(matches!(api.webhook_auth(), Ok(WebhookAuth::Bearer(_))));

        let mut f = tempfile::NamedTempFile::with_suffix(".yaml").unwrap();
        writeln!(f, "api:\n  webhook_auth: none").unwrap();
        let cfg = Config::load(Some(f.path())).unwrap();
        assert!(matches!(cfg.api.webhook_auth(), Ok(WebhookAuth::Open)));

        let mut cfg = Config::default();
        cfg.api.webhook_auth = WebhookAuthMode::None;
        cfg.api.webhook_token = Some(SecretString::from("s3cret"));
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("api.webhook_auth"), "{err}");
    }

    #[test]
    fn the_operator_listener_is_apart_and_private_by_default() {
        let cfg = Config::default();
        assert!(cfg.api.operator_listen.ip().is_loopback());
        assert_ne!(cfg.api.operator_listen, cfg.api.listen);
        for operator in ["127.0.0.1:8080", "0.0.0.0:8080"] {
            let mut cfg = Config::default();
            cfg.api.operator_listen = operator.parse().unwrap();
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains("api.operator_listen"), "{operator}: {err}");
        }
    }

    /// The rule of docs/operations.md: the api answers a webhook (200 or 503) before the
    /// registry gives up on it, so the registry never resends a request still being
    /// published. Every registry configuration this repository ships or recommends must
    /// leave the default publish timeout room.
    #[test]
    fn publish_timeout_is_below_every_shipped_registry_notification_timeout() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let publish = ApiConfig::default().publish_timeout;
        for file in ["README.md", "deploy/registry.yml", "scripts/dev-up.sh"] {
            let text = std::fs::read_to_string(root.join(file)).unwrap();
            let timeouts: Vec<Duration> = text
                .lines()
                .filter_map(|l| l.trim().strip_prefix("timeout:"))
                .map(|v| {
                    let secs = v.trim().strip_suffix('s').expect("timeout in seconds");
                    Duration::from_secs(secs.parse().expect("whole seconds"))
                })
                .collect();
            assert!(!timeouts.is_empty(), "{file} names no notification timeout");
            for timeout in timeouts {
                assert!(
                    publish + Duration::from_secs(1) <= timeout,
                    "{file}: registry timeout {timeout:?} leaves no room for the api's {publish:?}"
                );
            }
        }
    }

    #[test]
    fn bad_values_name_the_key() {
        let mut f = tempfile::NamedTempFile::with_suffix(".yaml").unwrap();
        writeln!(f, "registry:\n  url: not a url").unwrap();
        let err = Config::load(Some(f.path())).unwrap_err().to_string();
        assert!(err.contains("registry.url"), "{err}");

        let mut f = tempfile::NamedTempFile::with_suffix(".yaml").unwrap();
        writeln!(f, "registry:\n  urll: http://x").unwrap();
        let err = Config::load(Some(f.path())).unwrap_err().to_string();
        assert!(err.contains("urll"), "{err}");
    }

    /// The one line a binary prints for `err` (see `error_chain`).
    fn one_line(err: ConfigError) -> String {
        crate::error_chain(&err)
    }

    #[test]
    fn durations_are_read_in_the_unit_their_key_names() {
        let cfg = load_yaml(
            "registry:\n  request_timeout_secs: 7\ndatabase:\n  acquire_timeout_ms: 250\namqp:\n  retry_delays_ms: [10, 2000]\napi:\n  static_max_age_secs: 5\n  publish_timeout_ms: 1500\n  statement_timeout_ms: 900\n  stale_if_error_secs: 3600\nworker:\n  coalesce_ms: 0\n  scan_interval_secs: 120\n  gc_interval_secs: 60\n  dead_letter_poll_secs: 2\nbodhi:\n  recent_update_secs: 90\nhistory:\n  batch_max_ms: 20\n  prune_interval_secs: 30\nicons:\n  gc_grace_secs: 100000\nweb:\n  max_age_secs: 12",
        )
        .unwrap();
        let (s, ms) = (Duration::from_secs, Duration::from_millis);
        assert_eq!(cfg.registry.request_timeout, s(7));
        assert_eq!(cfg.database.acquire_timeout, ms(250));
        assert_eq!(cfg.amqp.retry_delays, [ms(10), ms(2000)]);
        assert_eq!(cfg.api.static_max_age, s(5));
        assert_eq!(cfg.api.publish_timeout, ms(1500));
        assert_eq!(cfg.api.statement_timeout, ms(900));
        assert_eq!(cfg.api.stale_if_error, s(3600));
        assert_eq!(
            cfg.worker.coalesce,
            Duration::ZERO,
            "0: no coalescing window"
        );
        assert_eq!(cfg.worker.scan_interval, Some(s(120)));
        assert_eq!(cfg.worker.gc_interval, Some(s(60)));
        assert_eq!(cfg.worker.dead_letter_poll, Some(s(2)));
        assert_eq!(cfg.bodhi.recent_update_window, s(90));
        assert_eq!(cfg.history.batch_max_wait, ms(20));
        assert_eq!(cfg.history.prune_interval, Some(s(30)));
        assert_eq!(cfg.icons.gc_grace, s(100_000));
        assert_eq!(cfg.web.max_age, s(12));
    }

    #[test]
    fn zero_disables_the_periodic_tasks() {
        let cfg = load_yaml(
            "worker:\n  scan_interval_secs: 0\n  gc_interval_secs: 0\n  dead_letter_poll_secs: 0\nhistory:\n  prune_interval_secs: 0",
        )
        .unwrap();
        assert_eq!(cfg.worker.scan_interval, None);
        assert_eq!(cfg.worker.gc_interval, None);
        assert_eq!(cfg.worker.dead_letter_poll, None);
        assert_eq!(cfg.history.prune_interval, None);
        let defaults = Config::default();
        assert!(defaults.worker.scan_interval.is_some() && defaults.worker.gc_interval.is_some());
        assert!(defaults.history.prune_interval.is_some());
    }

    #[test]
    fn zero_timeouts_are_refused_naming_the_key() {
        for (yaml, key) in [
            (
                "registry:\n  request_timeout_secs: 0",
                "registry.request_timeout_secs",
            ),
            (
                "database:\n  acquire_timeout_ms: 0",
                "database.acquire_timeout_ms",
            ),
            ("api:\n  publish_timeout_ms: 0", "api.publish_timeout_ms"),
            (
                "api:\n  statement_timeout_ms: 0",
                "api.statement_timeout_ms",
            ),
            ("history:\n  batch_max_ms: 0", "history.batch_max_ms"),
            ("amqp:\n  retry_delays_ms: []", "amqp.retry_delays_ms"),
        ] {
            let err = one_line(load_yaml(yaml).unwrap_err());
            assert!(err.contains(key), "{yaml}: {err}");
            assert!(err.contains("at least"), "{yaml}: {err}");
        }
    }

    #[test]
    fn durations_from_the_environment() {
        let vars = [
            ("REGINDEX_WORKER__COALESCE_MS", "75"),
            ("REGINDEX_WORKER__SCAN_INTERVAL_SECS", "0"),
            ("REGINDEX_AMQP__RETRY_DELAYS_MS", "5,50"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let cfg = Config::load_from(None, vars.into_iter()).unwrap();
        assert_eq!(cfg.worker.coalesce, Duration::from_millis(75));
        assert_eq!(cfg.worker.scan_interval, None);
        assert_eq!(
            cfg.amqp.retry_delays,
            [Duration::from_millis(5), Duration::from_millis(50)]
        );
        let vars =
            [("REGINDEX_HISTORY__BATCH_MAX_MS", "0")].map(|(k, v)| (k.to_owned(), v.to_owned()));
        let err = one_line(Config::load_from(None, vars.into_iter()).unwrap_err());
        assert!(err.contains("history.batch_max_ms"), "{err}");
    }

    #[test]
    fn bad_values_give_one_error_naming_the_key() {
        for (yaml, key, says) in [
            ("worker:\n  coalesce_ms: soon", "worker.coalesce_ms", "soon"),
            (
                "worker:\n  scan_interval_secs: -1",
                "worker.scan_interval_secs",
                "-1",
            ),
            (
                "registry:\n  url: ftp://r",
                "registry.url",
                "http(s)://host",
            ),
            ("registry:\n  url: http://r/?q=1", "registry.url", "query"),
            (
                "history:\n  aliases:\n    a: [' ']",
                "history.aliases",
                "empty host",
            ),
        ] {
            let err = one_line(load_yaml(yaml).unwrap_err());
            assert!(err.contains(key) && err.contains(says), "{yaml}: {err}");
            assert_eq!(
                err.matches(says).count(),
                1,
                "{yaml}: said once, not once per cause: {err}"
            );
        }
    }

    #[test]
    fn the_registry_url_is_kept_as_written() {
        let cfg = load_yaml("registry:\n  url: http://Registry:5000").unwrap();
        assert_eq!(cfg.registry.url.as_str(), "http://Registry:5000");
        assert_eq!(cfg.public_registry_url(), "http://Registry:5000");
        assert_eq!(cfg.registry.url.host_port(), "registry:5000");
        assert_eq!(cfg.pull_host(), "registry:5000");
    }

    #[test]
    fn aliases_are_built_at_load() {
        let cfg = load_yaml(
            "history:\n  aliases:\n    registry.example.com: ['registry:5000']\n  default_host: registry:5000\n  merge_unlisted_hosts: true",
        )
        .unwrap();
        let aliases = &cfg.history.aliases;
        assert_eq!(aliases.canonical(None), "registry.example.com");
        assert_eq!(
            aliases.canonical(Some("REGISTRY:5000")),
            "registry.example.com"
        );
        assert_eq!(aliases.canonical(Some("elsewhere")), "registry.example.com");
        assert_eq!(Config::default().history.aliases.canonical(Some("A")), "a");
    }
}
