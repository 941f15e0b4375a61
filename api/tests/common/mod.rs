//! Shared by the web, icon, search and real-client tests: a real docker-registry, a fresh
//! database, the syncer that fills it, and the api served on a free port.

#![allow(dead_code)]

use std::sync::Arc;

use anyhow::Context;
use regindex::config::Config;
use regindex::model::RepositoryName;
use regindex::registry::RegistryClient;
use regindex::store::Store;
use regindex::sync::Syncer;
use regindex_testkit::{TestDatabase, TestRegistry};
use secrecy::SecretString;

pub struct Stack {
    pub registry: TestRegistry,
    pub db: TestDatabase,
    pub store: Store,
    pub config: Arc<Config>,
    pub syncer: Syncer,
    /// `http://127.0.0.1:<port>` of the api.
    pub base: String,
    pub http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Stack {
    /// Registry, database (schema applied) and api; `tweak` adjusts the configuration.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> anyhow::Result<Self> {
        let registry = TestRegistry::new().await?;
        let db = TestDatabase::create().await?;
        let mut config = Config::default();
        config.registry.url = registry.url().parse().unwrap();
        config.database.url = SecretString::from(db.url());
        config.database.max_connections = 4;
        tweak(&mut config);
        config.validate()?;
        let config = Arc::new(config);
        let store = Store::connect_unchecked(&config.database).await?;
        store.migrate().await?;
        let store = Store::connect(&config.database)
            .await?
            .with_icons(&config.icons);
        let syncer = Syncer::new(RegistryClient::new(&config.registry)?, store.clone());

        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let base = format!("http://{}", listener.local_addr()?);
        let app = app(store.clone(), config.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            registry,
            db,
            store,
            config,
            syncer,
            base,
            http: reqwest::Client::new(),
            server,
        })
    }

    pub async fn refetch(&self, repository: &str) -> anyhow::Result<()> {
        let name = RepositoryName::parse(repository)?;
        self.syncer
            .refetch(&name)
            .await
            .with_context(|| format!("refetching {repository}"))?;
        Ok(())
    }

    pub async fn get(&self, path_and_query: &str) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .http
            .get(format!("{}{path_and_query}", self.base))
            .send()
            .await?)
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.server.abort();
        self.store.pool().close().await;
        self.db.drop().await
    }
}

/// `regindex_api::serve` as the binary runs it, on two free loopback ports: the public
/// listener and the operator one. The configuration's own addresses are not bound.
pub struct RunningApi {
    /// `http://127.0.0.1:<port>` of `api.listen`.
    pub public: String,
    /// `http://127.0.0.1:<port>` of `api.operator_listen`.
    pub operator: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningApi {
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let public = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let operator = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let (public_url, operator_url) = (
            format!("http://{}", public.local_addr()?),
            format!("http://{}", operator.local_addr()?),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let listeners = regindex_api::Listeners { public, operator };
        let task = tokio::spawn(regindex_api::serve(config, listeners, async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            public: public_url,
            operator: operator_url,
            stop: Some(stop),
            task,
        })
    }

    /// Stops it (requests in flight finish) and returns how `serve` ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await?
    }
}

/// The public routes as `regindex-api` serves them.
pub fn app(store: Store, config: Arc<Config>) -> axum::Router {
    regindex_api::router(regindex_api::AppState::new(config, store))
}

/// A real `size`x`size` RGB PNG filled with one colour.
pub fn png(rgb: [u8; 3], size: u32) -> Vec<u8> {
    regindex_testkit::png(rgb, size)
}

pub fn data_uri(png: &[u8]) -> String {
    regindex_testkit::png_data_uri(png)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A Flatpak application image with real 64px and 128px icons of colour `rgb`.
pub fn flatpak_app(app_id: &str, arch: &str, rgb: [u8; 3]) -> regindex_testkit::ImageSpec {
    regindex_testkit::ImageSpec::flatpak(app_id, arch)
        .icons(rgb)
        .label("org.flatpak.installed-size", "4096000")
}
