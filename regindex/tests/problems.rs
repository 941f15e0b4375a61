//! Images the index cannot use, against a real docker-registry and PostgreSQL: they are
//! recorded as problems of their tag, the rest of the repository is indexed, they are not
//! fetched again while the tag stays, and a later good push to the tag heals it. OCI
//! artifacts are not problems.

mod support;

use regindex::model::Digest;
use regindex::sync::NoProgress;
use regindex_testkit::app::App;
use regindex_testkit::ImageSpec;
use support::{repo, tags};

const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// (tag, digest, partial, reason) of the recorded problems.
async fn recorded_problems(h: &App, repository: &str) -> Vec<(String, String, bool, String)> {
    h.syncer
        .store()
        .problems(Some(&repo(repository)))
        .await
        .unwrap()
        .into_iter()
        .map(|p| {
            (
                p.problem.tag.to_string(),
                p.problem.digest.to_string(),
                p.problem.partial,
                p.problem.reason,
            )
        })
        .collect()
}

#[tokio::test]
async fn a_bad_tag_is_recorded_the_others_indexed_and_a_good_push_heals_it() {
    let h = App::builder().start().await;
    let r = &h.registry;
    let name = "apps/mixed";
    let one = r
        .push_image(name, Some("1.0"), &ImageSpec::new("amd64").seed(1))
        .await
        .unwrap();
    let two = r
        .push_image(name, Some("2.0"), &ImageSpec::new("arm64").seed(2))
        .await
        .unwrap();
    let bad = r
        .push_with_config(name, Some("broken"), OCI_CONFIG, b"this is not JSON", 3)
        .await
        .unwrap();

    let report = h.syncer.refetch(&repo(name)).await.unwrap();
    assert_eq!((report.tags, report.problems), (2, 1));
    assert_eq!(
        h.stored(name).await.tags,
        tags(&[("1.0", &one.digest), ("2.0", &two.digest)])
    );
    let problems = recorded_problems(&h, name).await;
    assert_eq!(problems.len(), 1, "{problems:?}");
    let (tag, digest, partial, reason) = &problems[0];
    assert_eq!(
        (tag.as_str(), digest.as_str(), *partial),
        ("broken", bad.as_str(), false)
    );
    assert!(reason.contains("config"), "{reason}");
    let first_seen = h.syncer.store().problems(None).await.unwrap()[0].first_seen;

    // Not fetched again while the tag stays: HEADs only.
    let mark = r.log_mark().await.unwrap();
    let again = h.syncer.refetch(&repo(name)).await.unwrap();
    let requests = r.requests_since(mark).await.unwrap();
    let gets: Vec<_> = requests
        .iter()
        .filter(|q| q.is_manifest_get() || q.is_blob_get())
        .collect();
    assert!(gets.is_empty(), "fetched again: {gets:?}");
    assert!(!again.outcome.changed);
    assert_eq!(recorded_problems(&h, name).await, problems);
    assert_eq!(
        h.syncer.store().problems(None).await.unwrap()[0].first_seen,
        first_seen
    );

    // A good push to the tag heals it.
    let fixed = r
        .push_image(name, Some("broken"), &ImageSpec::new("amd64").seed(4))
        .await
        .unwrap();
    let healed = h.syncer.refetch(&repo(name)).await.unwrap();
    assert_eq!((healed.tags, healed.problems), (3, 0));
    assert_eq!(
        h.stored(name).await.tags,
        tags(&[
            ("1.0", &one.digest),
            ("2.0", &two.digest),
            ("broken", &fixed.digest)
        ])
    );
    assert!(recorded_problems(&h, name).await.is_empty());
    h.finish().await;
}

#[tokio::test]
async fn a_repository_of_only_bad_tags_is_recorded_and_a_scan_succeeds() {
    let h = App::builder().start().await;
    let r = &h.registry;
    let bad = r
        .push_with_config("apps/bad", Some("latest"), OCI_CONFIG, b"[1, 2]", 1)
        .await
        .unwrap();
    let good = r
        .push_image("apps/good", Some("latest"), &ImageSpec::new("amd64"))
        .await
        .unwrap();
    let summary = h.syncer.scan(2, &NoProgress).await.unwrap();
    assert!(summary.failed.is_empty(), "{:?}", summary.failed);
    assert_eq!(summary.problems, 1);
    assert_eq!(
        h.stored("apps/good").await.tags,
        tags(&[("latest", &good.digest)])
    );
    assert!(h.stored("apps/bad").await.tags.is_empty());
    let problems = recorded_problems(&h, "apps/bad").await;
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].1, bad);

    // Deleting the bad image from the registry clears its problem on the next scan.
    r.delete_manifest("apps/bad", &bad).await.unwrap();
    h.syncer.scan(2, &NoProgress).await.unwrap();
    assert!(recorded_problems(&h, "apps/bad").await.is_empty());
    h.finish().await;
}

#[tokio::test]
async fn artifacts_are_indexed_without_fetching_their_config_and_are_no_problem() {
    let h = App::builder().start().await;
    let r = &h.registry;
    let name = "apps/artifacts";
    let empty = r
        .push_with_config(
            name,
            Some("sig"),
            "application/vnd.oci.empty.v1+json",
            b"{}",
            1,
        )
        .await
        .unwrap();
    let chart = r
        .push_with_config(
            name,
            Some("chart"),
            "application/vnd.cncf.helm.config.v1+json",
            br#"{"name": "demo", "version": "0.1.0", "apiVersion": "v2"}"#,
            2,
        )
        .await
        .unwrap();
    let bare = r
        .push_with_config(name, Some("bare"), OCI_CONFIG, b"{}", 3)
        .await
        .unwrap();
    let mark = r.log_mark().await.unwrap();
    let report = h.syncer.refetch(&repo(name)).await.unwrap();
    assert_eq!((report.tags, report.problems), (3, 0));
    let blob_gets = r
        .requests_since(mark)
        .await
        .unwrap()
        .into_iter()
        .filter(|q| q.is_blob_get())
        .count();
    assert_eq!(blob_gets, 1, "only the image config {{}} is read");
    let state = h.stored(name).await;
    assert_eq!(
        state.tags,
        tags(&[("sig", &empty), ("chart", &chart), ("bare", &bare)])
    );
    for image in state.images.values() {
        assert_eq!((image.os.as_str(), image.architecture.as_str()), ("", ""));
        assert!(image.labels.is_empty());
    }
    assert!(recorded_problems(&h, name).await.is_empty());
    h.finish().await;
}

#[tokio::test]
async fn a_list_with_a_bad_entry_is_indexed_in_part() {
    let h = App::builder().start().await;
    let r = &h.registry;
    let name = "base/multi";
    let good = r
        .push_image(name, None, &ImageSpec::new("amd64").seed(1))
        .await
        .unwrap();
    let bad = r
        .push_with_config(name, None, OCI_CONFIG, b"\x00\x01binary", 2)
        .await
        .unwrap();
    let bad_bytes = r.pull_manifest(name, &bad).await.unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": good.media_type, "digest": good.digest, "size": good.manifest_bytes.len(),
             "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": bad, "size": bad_bytes.len(),
             "platform": {"os": "linux", "architecture": "arm64"}},
        ],
    }))
    .unwrap();
    let list = r
        .push_manifest(
            name,
            Some("latest"),
            "application/vnd.oci.image.index.v1+json",
            &index,
        )
        .await
        .unwrap();

    h.syncer.refetch(&repo(name)).await.unwrap();
    let state = h.stored(name).await;
    assert_eq!(state.tags, tags(&[("latest", &list)]));
    let stored = &state.lists[&Digest::parse(&list).unwrap()];
    assert_eq!(stored.entries, vec![Digest::parse(&good.digest).unwrap()]);
    let problems = recorded_problems(&h, name).await;
    assert_eq!(problems.len(), 1, "{problems:?}");
    let (tag, digest, partial, reason) = &problems[0];
    assert_eq!(
        (tag.as_str(), digest.as_str(), *partial),
        ("latest", list.as_str(), true)
    );
    assert!(reason.contains(&bad), "{reason}");

    // Stored, so not fetched again; the problem stays.
    let mark = r.log_mark().await.unwrap();
    h.syncer.refetch(&repo(name)).await.unwrap();
    let gets = r
        .requests_since(mark)
        .await
        .unwrap()
        .into_iter()
        .filter(|q| q.is_manifest_get() || q.is_blob_get())
        .count();
    assert_eq!(gets, 0);
    assert_eq!(recorded_problems(&h, name).await, problems);
    h.finish().await;
}
