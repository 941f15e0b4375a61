//! The refetch harness of the sync and problems tests (`mod support;`): a real
//! docker-registry, a fresh migrated PostgreSQL database, and a `Syncer` between them.

#![allow(dead_code)]

use std::collections::BTreeMap;

use regindex::config::{Config, DatabaseConfig};
use regindex::model::{Digest, RepositoryName, RepositoryState, Tag};
use regindex::registry::RegistryClient;
use regindex::store::Store;
use regindex::sync::Syncer;
use regindex_testkit::{TestDatabase, TestRegistry};
use secrecy::SecretString;

pub struct Harness {
    pub registry: TestRegistry,
    pub db: TestDatabase,
    pub syncer: Syncer,
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// `adjust` changes the configuration (registry page size, ...) before anything
    /// connects.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let registry = TestRegistry::new().await.unwrap();
        let db = TestDatabase::create().await.unwrap();
        let mut config = Config::default();
        config.registry.url = registry.url().parse().unwrap();
        config.database = DatabaseConfig {
            url: SecretString::from(db.url()),
            max_connections: 8,
            ..DatabaseConfig::default()
        };
        adjust(&mut config);
        let store = Store::connect_unchecked(&config.database).await.unwrap();
        store.migrate().await.unwrap();
        let client = RegistryClient::new(&config.registry).unwrap();
        Self {
            registry,
            db,
            syncer: Syncer::new(client, store),
        }
    }

    pub async fn state(&self, repository: &str) -> RepositoryState {
        self.syncer
            .store()
            .load_repository(&repo(repository))
            .await
            .unwrap()
    }

    pub async fn finish(self) {
        self.db.drop().await.unwrap();
    }
}

pub fn repo(name: &str) -> RepositoryName {
    RepositoryName::parse(name).unwrap()
}

pub fn tags(pairs: &[(&str, &str)]) -> BTreeMap<Tag, Digest> {
    pairs
        .iter()
        .map(|(t, d)| (Tag::parse(t).unwrap(), Digest::parse(d).unwrap()))
        .collect()
}
