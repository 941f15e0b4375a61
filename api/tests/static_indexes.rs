//! Static index files: the configured queries written to disk, byte-identical to what
//! `/index/static` answers for the same query.

mod common;

use common::{flatpak_app, start};
use regindex::config::StaticIndexConfig;
use regindex::index::static_index::{query_string, write_static_indexes};
use regindex_testkit::{ImageSpec, ListFormat};
use serde_json::Value;

#[tokio::test]
async fn files_hold_what_index_static_answers() {
    let out = tempfile::tempdir().unwrap();
    let flatpak_index = StaticIndexConfig {
        name: "flatpak-amd64".into(),
        output: out.path().join("flatpak/amd64.json"),
        tags: vec!["latest".into(), "latest-*".into()],
        required_labels: vec!["org.flatpak.ref".into()],
        required_annotations: vec![],
        architectures: vec!["amd64".into()],
        registry_url: None,
        profile: None,
        architecture_expand: vec![],
    };
    let containers = StaticIndexConfig {
        name: "containers".into(),
        output: out.path().join("containers.json"),
        tags: vec!["latest".into()],
        required_labels: vec![],
        required_annotations: vec!["org.opencontainers.image.title".into()],
        architectures: vec![],
        registry_url: Some("https://registry.example.org/".into()),
        profile: None,
        architecture_expand: vec![],
    };
    let indexes = vec![flatpak_index.clone(), containers.clone()];
    let stack = start(move |c| {
        c.icons.extract = true;
        c.registry.public_url = Some("/".into());
        c.static_indexes = indexes;
    })
    .await;

    let calculator = stack
        .registry
        .push_image(
            "apps/calculator",
            Some("latest"),
            &flatpak_app("org.example.Calculator", "amd64", [9, 9, 9]),
        )
        .await
        .unwrap();
    // Tagged latest-40 only: matches the glob.
    let maps = stack
        .registry
        .push_image(
            "apps/maps",
            Some("latest-40"),
            &flatpak_app("org.example.Maps", "amd64", [8, 8, 8]),
        )
        .await
        .unwrap();
    // Excluded: wrong tag, wrong architecture, not a Flatpak.
    stack
        .registry
        .push_image(
            "apps/testing",
            Some("testing"),
            &flatpak_app("org.example.Testing", "amd64", [7, 7, 7]),
        )
        .await
        .unwrap();
    stack
        .registry
        .push_image(
            "apps/arm",
            Some("latest"),
            &flatpak_app("org.example.Arm", "arm64", [6, 6, 6]),
        )
        .await
        .unwrap();
    let fedora = stack
        .registry
        .push_list(
            "library/fedora",
            Some("latest"),
            &[
                ImageSpec::new("amd64").annotation("org.opencontainers.image.title", "Fedora"),
                ImageSpec::new("arm64").annotation("org.opencontainers.image.title", "Fedora"),
            ],
            ListFormat::OciIndex,
        )
        .await
        .unwrap();
    for r in [
        "apps/calculator",
        "apps/maps",
        "apps/testing",
        "apps/arm",
        "library/fedora",
    ] {
        stack.refetch(r).await.unwrap();
    }

    let written = write_static_indexes(&stack.store, &stack.config)
        .await
        .unwrap();
    assert_eq!(written.len(), 2);
    assert!(written.iter().all(|w| w.changed));

    // Ground truth: what was pushed.
    let file = std::fs::read(&flatpak_index.output).unwrap();
    let body: Value = serde_json::from_slice(&file).unwrap();
    assert_eq!(body["Registry"], "/");
    let names: Vec<&str> = body["Results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["apps/calculator", "apps/maps"]);
    assert_eq!(
        body["Results"][0]["Images"][0]["Digest"],
        calculator.digest.as_str()
    );
    assert_eq!(
        body["Results"][1]["Images"][0]["Digest"],
        maps.digest.as_str()
    );
    assert_eq!(
        body["Results"][1]["Images"][0]["Tags"],
        serde_json::json!(["latest-40"])
    );
    let icon = body["Results"][0]["Images"][0]["Labels"]["org.freedesktop.appstream.icon-64"]
        .as_str()
        .unwrap();
    assert!(
        icon.starts_with("/icons/") && icon.ends_with(".png"),
        "{icon}"
    );

    let file2 = std::fs::read(&containers.output).unwrap();
    let body2: Value = serde_json::from_slice(&file2).unwrap();
    assert_eq!(body2["Registry"], "https://registry.example.org/");
    // The Flatpaks carry the title annotation too (all tagged latest, any architecture).
    let names: Vec<&str> = body2["Results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["apps/arm", "apps/calculator", "library/fedora"]);
    assert_eq!(
        body2["Results"][2]["Lists"][0]["Digest"],
        fedora.digest.as_str()
    );
    assert_eq!(
        body2["Results"][2]["Lists"][0]["Images"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Byte for byte what /index/static answers for the equivalent query (same Registry).
    let served = stack
        .get(&format!("/index/static?{}", query_string(&flatpak_index)))
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.bytes().await.unwrap().as_ref(), file.as_slice());

    // Unchanged data: files left alone. Changed data: rewritten.
    let again = write_static_indexes(&stack.store, &stack.config)
        .await
        .unwrap();
    assert!(again.iter().all(|w| !w.changed));
    let old = stack
        .registry
        .manifest_digest("apps/maps", "latest-40")
        .await
        .unwrap()
        .unwrap();
    stack
        .registry
        .delete_manifest("apps/maps", &old)
        .await
        .unwrap();
    stack.refetch("apps/maps").await.unwrap();
    let third = write_static_indexes(&stack.store, &stack.config)
        .await
        .unwrap();
    assert!(third[0].changed && !third[1].changed);
    let body: Value =
        serde_json::from_slice(&std::fs::read(&flatpak_index.output).unwrap()).unwrap();
    assert_eq!(body["Results"].as_array().unwrap().len(), 1);
    stack.finish().await;
}
