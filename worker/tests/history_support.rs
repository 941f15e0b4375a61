//! Helpers of the history, scale and Bodhi tests (`mod history_support;`) on testkit's
//! `App`: the whole pipeline is `stack()`, a real `docker-registry` sending its
//! notifications to the api (`POST /events` + `/stats`), RabbitMQ with unique names, a
//! fresh PostgreSQL database, and the worker (work consumer and history consumer).

#![allow(dead_code)]

use std::time::Duration;

use regindex_testkit::app::{App, AppBuilder};
use serde_json::Value;

pub const WAIT: Duration = Duration::from_secs(30);

/// Registry notifying one api, and one worker.
pub fn stack() -> AppBuilder {
    App::builder().api().worker()
}

/// What these tests ask of an [`App`] beyond the harness.
#[allow(async_fn_in_trait)]
pub trait HistoryApp {
    async fn image(&self, repository: &str, tag: &str) -> Option<Value>;
    async fn recorded_events(&self) -> i64;
    async fn indexed(&self, repository: &str, tag: &str) -> bool;
    async fn skopeo_copy(&self, from: &str, to: &str);
}

impl HistoryApp for App {
    /// The one image row of `repository:tag`, if listed.
    async fn image(&self, repository: &str, tag: &str) -> Option<Value> {
        let page = self
            .operator_json(&format!(
                "/stats/images?repository={repository}&per_page=1000"
            ))
            .await;
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["tag"] == tag)
            .cloned()
    }

    /// Rows of the history's raw event log (every recorded event).
    async fn recorded_events(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM history_events")
            .fetch_one(self.store.pool())
            .await
            .unwrap()
    }

    /// Whether the index (not the history) holds `repository:tag`.
    async fn indexed(&self, repository: &str, tag: &str) -> bool {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM tags t JOIN repositories r ON r.id = t.repository_id
             WHERE r.name = $1 AND t.tag = $2",
        )
        .bind(repository)
        .bind(tag)
        .fetch_one(self.store.pool())
        .await
        .unwrap()
            > 0
    }

    /// `skopeo copy` between two references (TLS off, the registry's credentials).
    async fn skopeo_copy(&self, from: &str, to: &str) {
        let mut command = tokio::process::Command::new("skopeo");
        command.args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ]);
        if let Some((user, password)) = self.registry.credentials() {
            let creds = format!("{user}:{password}");
            if from.starts_with("docker://") {
                command.arg(format!("--src-creds={creds}"));
            }
            if to.starts_with("docker://") {
                command.arg(format!("--dest-creds={creds}"));
            }
        }
        let output = command.args([from, to]).output().await.expect("skopeo");
        assert!(
            output.status.success(),
            "skopeo copy {from} {to}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// A registry pull event as docker/distribution sends it.
pub fn pull_event(id: &str, host: &str, repository: &str, tag: &str, digest: &str) -> Value {
    serde_json::json!({
        "id": id,
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        "action": "pull",
        "target": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "size": 483,
            "digest": digest,
            "length": 483,
            "repository": repository,
            "url": format!("http://{host}/v2/{repository}/manifests/{digest}"),
            "tag": tag,
        },
        "request": {
            "id": uuid_like(id),
            "addr": "10.1.2.3:40090",
            "host": host,
            "method": "GET",
            "useragent": "containerd/1.7",
        },
        "actor": {},
        "source": {"addr": "vm:5000", "instanceID": "00000000-0000-0000-0000-000000000000"},
    })
}

fn uuid_like(id: &str) -> String {
    format!("req-{id}")
}
