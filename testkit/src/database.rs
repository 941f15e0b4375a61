//! Fresh PostgreSQL databases, one per test.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use sqlx::{Connection, PgConnection, Row};

/// Server used when `REGINDEX_TEST_DATABASE_URL` is not set.
pub const DEFAULT_SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const NAME_PREFIX: &str = "regindex_test_";
/// Test databases older than this are dropped when a new one is created: they were left
/// behind by tests that crashed or were killed.
const STALE_AFTER: Duration = Duration::from_secs(3 * 3600);

/// A database named `regindex_test_<unix seconds>_<random>`, dropped by `drop()` (or,
/// best effort, when the value is dropped).
pub struct TestDatabase {
    name: String,
    server_url: reqwest::Url,
    dropped: bool,
}

impl TestDatabase {
    pub async fn create() -> anyhow::Result<Self> {
        let server = std::env::var("REGINDEX_TEST_DATABASE_URL")
            .unwrap_or_else(|_| DEFAULT_SERVER_URL.to_owned());
        let mut server_url = reqwest::Url::parse(&server)
            .with_context(|| format!("REGINDEX_TEST_DATABASE_URL {server:?} is not a URL"))?;
        server_url.set_path("/postgres");

        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let random = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("{NAME_PREFIX}{now}_{}", &random[..12]);

        let mut conn = PgConnection::connect(server_url.as_str())
            .await
            .with_context(|| format!("connecting to PostgreSQL at {server_url}"))?;
        drop_stale(&mut conn, now).await;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating database {name}"))?;
        let _ = conn.close().await;
        Ok(Self {
            name,
            server_url,
            dropped: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connection URL of this database.
    pub fn url(&self) -> String {
        let mut url = self.server_url.clone();
        url.set_path(&format!("/{}", self.name));
        url.to_string()
    }

    /// Drops the database, closing any connection still open to it.
    pub async fn drop(mut self) -> anyhow::Result<()> {
        self.dropped = true;
        drop_database(self.server_url.as_str(), &self.name).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // No async in Drop: drop it from a thread with its own runtime.
        let server = self.server_url.to_string();
        let name = self.name.clone();
        let handle = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                let _ = rt.block_on(drop_database(&server, &name));
            }
        });
        let _ = handle.join();
    }
}

async fn drop_database(server_url: &str, name: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(server_url).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .with_context(|| format!("dropping database {name}"))?;
    let _ = conn.close().await;
    Ok(())
}

/// Best effort: failures only mean some old databases stay a little longer.
async fn drop_stale(conn: &mut PgConnection, now: u64) {
    let Ok(rows) =
        sqlx::query("SELECT datname FROM pg_database WHERE datname LIKE 'regindex\\_test\\_%'")
            .fetch_all(&mut *conn)
            .await
    else {
        return;
    };
    for row in rows {
        let Ok(name) = row.try_get::<String, _>(0) else {
            continue;
        };
        let created = name
            .strip_prefix(NAME_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        if created.is_some_and(|created| now.saturating_sub(created) > STALE_AFTER.as_secs()) {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut *conn)
                .await;
        }
    }
}
