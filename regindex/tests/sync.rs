//! Refetch and scan against a real docker-registry and PostgreSQL: the images the test
//! pushes are the ground truth the store must hold; the registry's own access log is the
//! ground truth of what regindex fetched.

mod support;

use std::collections::BTreeMap;

use regindex::model::{Digest, RepositoryState};
use regindex::sync::{NoProgress, Syncer};
use regindex_testkit::app::App;
use regindex_testkit::{ImageFormat, ImageSpec, ListFormat, PushedImage};
use support::{repo, tags};

/// The harness with a catalog page of 2: pagination on every catalog walk.
async fn start() -> App {
    App::builder()
        .config(|config| config.registry.page_size = 2)
        .start()
        .await
}

fn digest(s: &str) -> Digest {
    Digest::parse(s).unwrap()
}

/// The stored image equals what was pushed: media type, platform from the config,
/// labels from the config, annotations from the manifest.
fn assert_image(state: &RepositoryState, pushed: &PushedImage) {
    let image = state
        .images
        .get(&digest(&pushed.digest))
        .unwrap_or_else(|| panic!("image {} not stored", pushed.digest));
    assert_eq!(image.media_type, pushed.media_type);
    assert_eq!(image.os, pushed.spec.os);
    assert_eq!(image.architecture, pushed.spec.architecture);
    assert_eq!(image.labels, pushed.spec.labels);
    let expected_annotations = match pushed.spec.format {
        ImageFormat::Oci => pushed.spec.annotations.clone(),
        ImageFormat::Docker => BTreeMap::new(), // schema 2 has no annotations
    };
    assert_eq!(image.annotations, expected_annotations);
    assert_eq!(image.config_digest.as_str(), pushed.config_digest);
}

#[tokio::test]
async fn scan_indexes_every_kind_and_a_second_scan_fetches_nothing() {
    let h = start().await;
    let r = &h.registry;
    let oci = r
        .push_image(
            "apps/calc",
            Some("latest"),
            &ImageSpec::flatpak("org.example.Calc", "x86_64").annotation("org.example.note", "hi"),
        )
        .await
        .unwrap();
    r.tag("apps/calc", "1.0", &oci.digest).await.unwrap();
    let docker = r
        .push_image(
            "base/plain",
            Some("1.0"),
            &ImageSpec::new("amd64")
                .label("name", "plain")
                .format(ImageFormat::Docker),
        )
        .await
        .unwrap();
    let index = r
        .push_list(
            "base/multi",
            Some("latest"),
            &[
                ImageSpec::new("amd64").label("name", "multi"),
                ImageSpec::new("arm64").label("name", "multi"),
            ],
            ListFormat::OciIndex,
        )
        .await
        .unwrap();
    let docker_list = r
        .push_list(
            "base/dlist",
            Some("stable"),
            &[
                ImageSpec::new("amd64").format(ImageFormat::Docker).seed(7),
                ImageSpec::new("arm64").format(ImageFormat::Docker).seed(8),
            ],
            ListFormat::DockerList,
        )
        .await
        .unwrap();

    let summary = h.syncer.scan(4, &NoProgress).await.unwrap();
    assert!(summary.failed.is_empty(), "{:?}", summary.failed);
    assert_eq!(summary.repositories, 4);
    assert_eq!(summary.tags, 5);

    let calc = h.stored("apps/calc").await;
    assert_eq!(
        calc.tags,
        tags(&[("latest", &oci.digest), ("1.0", &oci.digest)])
    );
    assert_image(&calc, &oci);
    assert!(calc.lists.is_empty());

    let plain = h.stored("base/plain").await;
    assert_eq!(plain.tags, tags(&[("1.0", &docker.digest)]));
    assert_image(&plain, &docker);

    for (name, tag, list) in [
        ("base/multi", "latest", &index),
        ("base/dlist", "stable", &docker_list),
    ] {
        let state = h.stored(name).await;
        assert_eq!(state.tags, tags(&[(tag, &list.digest)]));
        let stored = &state.lists[&digest(&list.digest)];
        assert_eq!(stored.media_type, list.media_type);
        let expected: Vec<Digest> = list.entries.iter().map(|e| digest(&e.digest)).collect();
        assert_eq!(stored.entries, expected);
        for entry in &list.entries {
            assert_image(&state, entry);
        }
    }

    // Unchanged registry: tag listings and HEADs only, per the registry's own log.
    let mark = r.log_mark().await.unwrap();
    let version = h.syncer.store().data_version().await.unwrap();
    let again = h.syncer.scan(4, &NoProgress).await.unwrap();
    let requests = r.requests_since(mark).await.unwrap();
    let fetched: Vec<_> = requests
        .iter()
        .filter(|req| req.is_manifest_get() || req.is_blob_get())
        .collect();
    assert!(fetched.is_empty(), "second scan fetched {fetched:?}");
    assert!(
        requests.iter().any(|req| req.method == "HEAD"),
        "the second scan must still resolve tags"
    );
    assert_eq!(again.changed, 0);
    assert_eq!(h.syncer.store().data_version().await.unwrap(), version);
    h.finish().await;
}

#[tokio::test]
async fn tag_move_tag_removal_and_manifest_delete_converge() {
    let h = start().await;
    let r = &h.registry;
    let name = "apps/editor";
    let v1 = r
        .push_image(
            name,
            Some("latest"),
            &ImageSpec::flatpak("org.example.Editor", "x86_64"),
        )
        .await
        .unwrap();
    r.tag(name, "1", &v1.digest).await.unwrap();
    h.syncer.refetch(&repo(name)).await.unwrap();
    assert_eq!(
        h.stored(name).await.tags,
        tags(&[("latest", &v1.digest), ("1", &v1.digest)])
    );

    // A new version takes `latest`; `1` stays on the old one.
    let v2 = r
        .push_image(
            name,
            Some("latest"),
            &ImageSpec::flatpak("org.example.Editor", "x86_64").seed(2),
        )
        .await
        .unwrap();
    r.tag(name, "2", &v2.digest).await.unwrap();
    let report = h.syncer.refetch(&repo(name)).await.unwrap();
    assert!(report.outcome.changed);
    let state = h.stored(name).await;
    assert_eq!(
        state.tags,
        tags(&[("latest", &v2.digest), ("2", &v2.digest), ("1", &v1.digest)])
    );
    assert_image(&state, &v2);

    // Deleting the old manifest removes its tag and the image.
    r.delete_manifest(name, &v1.digest).await.unwrap();
    h.syncer.refetch(&repo(name)).await.unwrap();
    let state = h.stored(name).await;
    assert_eq!(
        state.tags,
        tags(&[("latest", &v2.digest), ("2", &v2.digest)])
    );
    assert!(!state.images.contains_key(&digest(&v1.digest)));

    // Deleting the last manifest empties the repository (it stays in the catalog with
    // no tags); a scan removes it from the index.
    r.delete_manifest(name, &v2.digest).await.unwrap();
    h.syncer.scan(2, &NoProgress).await.unwrap();
    assert_eq!(h.stored(name).await, RepositoryState::default());
    assert!(!h
        .syncer
        .store()
        .repositories()
        .await
        .unwrap()
        .contains(&repo(name)));
    h.finish().await;
}

#[tokio::test]
async fn list_entries_already_known_are_not_fetched_again() {
    let h = start().await;
    let r = &h.registry;
    let name = "base/multi";
    let amd = ImageSpec::new("amd64");
    let arm = ImageSpec::new("arm64");
    let first = r
        .push_list(
            name,
            Some("v1"),
            &[amd.clone(), arm.clone()],
            ListFormat::OciIndex,
        )
        .await
        .unwrap();
    h.syncer.refetch(&repo(name)).await.unwrap();

    // A second list reusing the same children plus a new one: only the list and the new
    // child (manifest + config) are fetched.
    let ppc = ImageSpec::new("ppc64le");
    let second = r
        .push_list(name, Some("v2"), &[amd, arm, ppc], ListFormat::OciIndex)
        .await
        .unwrap();
    let mark = r.log_mark().await.unwrap();
    let report = h.syncer.refetch(&repo(name)).await.unwrap();
    let requests = r.requests_since(mark).await.unwrap();
    let manifest_gets = requests.iter().filter(|q| q.is_manifest_get()).count();
    let blob_gets = requests.iter().filter(|q| q.is_blob_get()).count();
    assert_eq!((manifest_gets, blob_gets), (2, 1), "{requests:?}");
    assert_eq!((report.manifests_fetched, report.blobs_fetched), (2, 1));

    let state = h.stored(name).await;
    assert_eq!(state.lists.len(), 2);
    assert_eq!(state.lists[&digest(&first.digest)].entries.len(), 2);
    assert_eq!(state.lists[&digest(&second.digest)].entries.len(), 3);
    assert_eq!(state.images.len(), 3);
    h.finish().await;
}

/// Issue 9: a cold scan asks the registry for each thing once — the catalog, each tag
/// list, one GET per tag (no HEAD: the store holds nothing), one GET per distinct config
/// across repositories — and the history backfill adds nothing. A warm scan: the catalog,
/// tag lists and one HEAD per tag.
#[tokio::test]
async fn a_cold_scan_asks_the_registry_nothing_twice_with_history_on() {
    let h = App::builder()
        .config(|config| config.registry.page_size = 100)
        .start()
        .await;
    let registry = &h.registry;
    let (client, store) = (h.syncer.registry().clone(), h.syncer.store().clone());
    let backfill = regindex::history::backfill::Backfill::new(
        client.clone(),
        regindex::history::HistoryStore::new(store.pool().clone()),
        registry.host(),
    );
    let syncer = Syncer::new(client, store.clone()).with_observer(std::sync::Arc::new(backfill));

    const REPOSITORIES: u64 = 20;
    // Tags t0 and t1 are the same two images in every repository (as after cross-
    // repository mounts); t2 and t3 are each repository's own.
    for i in 0..REPOSITORIES {
        let name = format!("scan/r{i:02}");
        for t in 0..4u64 {
            let seed = if t < 2 { t } else { 100 + i * 10 + t };
            let spec = ImageSpec::new("amd64")
                .seed(seed)
                .label("n", &seed.to_string());
            registry
                .push_image(&name, Some(&format!("t{t}")), &spec)
                .await
                .unwrap();
        }
    }
    let distinct_configs = 2 + 2 * REPOSITORIES as usize;
    let tags = 4 * REPOSITORIES as usize;

    let mark = registry.log_mark().await.unwrap();
    let summary = syncer.scan(4, &NoProgress).await.unwrap();
    assert!(summary.failed.is_empty(), "{:?}", summary.failed);
    assert_eq!(summary.tags, tags);
    let requests = registry.requests_since(mark).await.unwrap();
    let count = |f: &dyn Fn(&regindex_testkit::LoggedRequest) -> bool| {
        requests.iter().filter(|q| f(q)).count()
    };
    assert_eq!(count(&|q| q.path().ends_with("/_catalog")), 1);
    assert_eq!(
        count(&|q| q.path().ends_with("/tags/list")),
        REPOSITORIES as usize
    );
    assert_eq!(
        count(&|q| q.method == "HEAD"),
        0,
        "nothing stored: GET by tag"
    );
    assert_eq!(count(&|q| q.is_manifest_get()), tags);
    assert_eq!(count(&|q| q.is_blob_get()), distinct_configs);
    assert_eq!(
        requests.len(),
        1 + REPOSITORIES as usize + tags + distinct_configs,
        "{requests:#?}"
    );
    // The history learned every manifest's blobs from the refetch's own requests.
    let linked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM history_manifests WHERE links_known")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(linked as usize, tags);

    let mark = registry.log_mark().await.unwrap();
    let warm = syncer.scan(4, &NoProgress).await.unwrap();
    assert_eq!(warm.changed, 0);
    let requests = registry.requests_since(mark).await.unwrap();
    let heads = requests.iter().filter(|q| q.method == "HEAD").count();
    assert_eq!(heads, tags);
    assert_eq!(
        requests.len(),
        1 + REPOSITORIES as usize + tags,
        "{requests:#?}"
    );
    store.pool().close().await;
    h.finish().await;
}
