//! The worker keeps static index files in step with the index: after a refetch changes
//! something, the file holds the pushed images (real registry and PostgreSQL).

use std::sync::Arc;
use std::time::Duration;

use regindex::config::StaticIndexConfig;
use regindex_testkit::app::App;
use regindex_testkit::ImageSpec;
use regindex_worker::static_files;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

/// The digests of the images the file lists, once it lists `expected` many.
async fn file_digests(path: &std::path::Path, expected: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(bytes) = tokio::fs::read(path).await {
            let value: Value = serde_json::from_slice(&bytes).expect("the file is JSON");
            let mut digests: Vec<String> = value["Results"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|r| r["Images"].as_array().unwrap().clone())
                .map(|i| i["Digest"].as_str().unwrap().to_owned())
                .collect();
            if digests.len() == expected {
                digests.sort();
                return digests;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never listed {expected} images",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn static_index_files_follow_refetches() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("flatpak-latest.json");
    let file = output.clone();
    let app = App::builder()
        .config(move |config| {
            config.static_indexes = vec![StaticIndexConfig {
                name: "flatpak".into(),
                output: file,
                tags: vec!["latest".into()],
                required_labels: vec!["org.flatpak.ref".into()],
                required_annotations: vec![],
                architectures: vec!["amd64".into()],
                registry_url: None,
                profile: None,
                architecture_expand: vec![],
            }];
        })
        .start()
        .await;
    let (registry, store, syncer) = (&app.registry, &app.store, &app.syncer);

    let stop = CancellationToken::new();
    let task = tokio::spawn(static_files::run(
        store.clone(),
        Arc::new(app.config.clone()),
        Duration::from_millis(100),
        stop.clone(),
    ));

    let calc = registry
        .push_image(
            "apps/calc",
            Some("latest"),
            &ImageSpec::flatpak("org.example.Calc", "x86_64"),
        )
        .await
        .unwrap();
    // Not in the file: not a Flatpak, and an arm64 Flatpak.
    registry
        .push_image("base/plain", Some("latest"), &ImageSpec::new("amd64"))
        .await
        .unwrap();
    registry
        .push_image(
            "apps/arm",
            Some("latest"),
            &ImageSpec::flatpak("org.example.Arm", "aarch64"),
        )
        .await
        .unwrap();
    for name in ["apps/calc", "base/plain", "apps/arm"] {
        syncer.refetch(&name.parse().unwrap()).await.unwrap();
    }
    assert_eq!(file_digests(&output, 1).await, vec![calc.digest.clone()]);

    let edit = registry
        .push_image(
            "apps/edit",
            Some("latest"),
            &ImageSpec::flatpak("org.example.Edit", "x86_64"),
        )
        .await
        .unwrap();
    syncer.refetch(&"apps/edit".parse().unwrap()).await.unwrap();
    let mut expected = vec![calc.digest, edit.digest];
    expected.sort();
    assert_eq!(file_digests(&output, 2).await, expected);

    stop.cancel();
    task.await.unwrap();
    app.finish().await;
}
