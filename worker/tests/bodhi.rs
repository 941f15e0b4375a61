//! Bodhi messages end to end: a real `docker-registry` (no webhooks, so only Bodhi
//! messages make the worker look), RabbitMQ, PostgreSQL and the worker process. What the
//! worker asked the registry is read from the registry's access log.

mod history_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use history_support::{stack, WAIT};
use regindex::bus::bodhi::{Nvr, UpdateTarget};
use regindex::bus::fedora_messaging::{self, UpdateSpec};
use regindex::bus::Publisher;
use regindex::model::RepositoryName;
use regindex::registry::RegistryClient;
use regindex::sync::{NoProgress, Syncer};
use regindex_testkit::app::{App, AppBuilder};
use regindex_testkit::{eventually, ImageSpec, LoggedRequest};

/// An image as OSBS builds it: `com.redhat.component`, `version`, `release`, `name`.
fn osbs_image(component: &str, version: &str, release: &str, name: &str, seed: u64) -> ImageSpec {
    ImageSpec::new("amd64")
        .label("com.redhat.component", component)
        .label("version", version)
        .label("release", release)
        .label("name", name)
        .seed(seed)
}

fn nvr(s: &str) -> Nvr {
    Nvr::parse(s).unwrap()
}

fn options() -> AppBuilder {
    stack().no_notifications()
}

/// One sample of the worker's `/metrics` (0 when absent).
async fn metric(stack: &App, sample: &str) -> f64 {
    let text = stack
        .http
        .get(format!(
            "http://{}/metrics",
            stack.config.worker.metrics_listen
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

async fn processed(stack: &App) -> f64 {
    metric(
        stack,
        r#"regindex_worker_messages_total{outcome="processed"}"#,
    )
    .await
}

/// Waits until the worker processed `n` messages in all.
async fn processed_reaches(stack: &App, n: f64) {
    eventually(&format!("{n} messages processed"), WAIT, || async {
        (processed(stack).await >= n).then_some(())
    })
    .await;
}

async fn publish(stack: &App, message: &regindex::bus::OutgoingMessage) {
    let publisher = Publisher::new(stack.config.amqp.url.clone(), None);
    publisher.publish(message).await.unwrap();
    publisher.close().await;
}

async fn publish_update(stack: &App, target: UpdateTarget, builds: &[Nvr]) {
    let message = fedora_messaging::update_complete(
        &stack.config.amqp,
        "bodhi",
        &UpdateSpec {
            target,
            alias: "FEDORA-CONTAINER-2026-0123456789",
            release: "F41C",
            content_type: "container",
            builds,
        },
    );
    publish(stack, &message).await;
}

/// Indexes the registry as it is now (a full scan in the test).
async fn scan(stack: &App) {
    let syncer = Syncer::new(
        RegistryClient::new(&stack.config.registry).unwrap(),
        stack.store.clone(),
    );
    let summary = syncer.scan(8, &NoProgress).await.unwrap();
    assert!(summary.failed.is_empty(), "{summary}");
}

/// The repositories whose tags or manifests a request touched, and whether the catalog
/// was listed.
fn touched(requests: &[LoggedRequest]) -> (BTreeSet<String>, usize) {
    let mut repositories = BTreeSet::new();
    let mut catalog = 0;
    for request in requests {
        let path = request.path().trim_start_matches("/v2/");
        if path.starts_with("_catalog") {
            catalog += 1;
        }
        for marker in ["/tags/", "/manifests/", "/blobs/"] {
            if let Some((repository, _)) = path.split_once(marker) {
                repositories.insert(repository.to_owned());
            }
        }
    }
    (repositories, catalog)
}

/// The stored tag → digest of `repository`.
async fn stored_tags(stack: &App, repository: &str) -> BTreeMap<String, String> {
    let state = stack
        .store
        .load_repository(&RepositoryName::parse(repository).unwrap())
        .await
        .unwrap();
    state
        .tags
        .into_iter()
        .map(|(tag, digest)| (tag.to_string(), digest.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_refetches_only_its_repositories_and_a_compose_still_converges() {
    options()
        .run(|s| async move {
            // 50 repositories built by OSBS, indexed.
            let mut expected: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
            for i in 0..50u64 {
                let repository = format!("containers/app-{i:02}");
                let image =
                    osbs_image(&format!("app-{i:02}-container"), "1.0", "1", &repository, i);
                let pushed = s
                    .registry
                    .push_image(&repository, Some("latest"), &image)
                    .await
                    .unwrap();
                expected.insert(repository, [("latest".into(), pushed.digest)].into());
            }
            scan(&s).await;

            // Bodhi pushed new builds of two of them to stable (no webhook reached us).
            for (i, repository) in [(7u64, "containers/app-07"), (23, "containers/app-23")] {
                let image = osbs_image(
                    &format!("app-{i:02}-container"),
                    "1.0",
                    "2",
                    repository,
                    100 + i,
                );
                let pushed = s
                    .registry
                    .push_image(repository, Some("latest"), &image)
                    .await
                    .unwrap();
                expected
                    .get_mut(repository)
                    .unwrap()
                    .insert("latest".into(), pushed.digest);
            }
            let mark = s.registry.log_mark().await.unwrap();
            publish_update(
                &s,
                UpdateTarget::Stable,
                &[nvr("app-07-container-1.0-2"), nvr("app-23-container-1.0-2")],
            )
            .await;
            // The update message and one refetch per repository.
            processed_reaches(&s, 3.0).await;
            for repository in ["containers/app-07", "containers/app-23"] {
                assert_eq!(
                    stored_tags(&s, repository).await,
                    expected[repository],
                    "{repository}"
                );
            }
            let requests = s.registry.requests_since(mark).await.unwrap();
            let (repositories, catalog) = touched(&requests);
            assert_eq!(
                repositories,
                [
                    "containers/app-07".to_owned(),
                    "containers/app-23".to_owned()
                ]
                .into(),
                "{requests:#?}"
            );
            assert_eq!(catalog, 0, "every build matched: no catalog listing");
            assert_eq!(
                metric(
                    &s,
                    r#"regindex_worker_bodhi_refetches_total{trigger="update"}"#
                )
                .await,
                2.0
            );
            assert_eq!(
                metric(
                    &s,
                    r#"regindex_worker_bodhi_build_matches_total{match="component"}"#
                )
                .await,
                2.0
            );

            // Meanwhile: a tag moved elsewhere, a tag added, a repository never indexed.
            let moved = osbs_image("app-40-container", "1.0", "2", "containers/app-40", 140);
            let moved = s
                .registry
                .push_image("containers/app-40", Some("latest"), &moved)
                .await
                .unwrap();
            expected
                .get_mut("containers/app-40")
                .unwrap()
                .insert("latest".into(), moved.digest);
            let older = expected["containers/app-41"]["latest"].clone();
            s.registry
                .tag("containers/app-41", "1.0", &older)
                .await
                .unwrap();
            expected
                .get_mut("containers/app-41")
                .unwrap()
                .insert("1.0".into(), older);
            let fresh = osbs_image("newcomer-container", "1.0", "1", "containers/newcomer", 999);
            let fresh = s
                .registry
                .push_image("containers/newcomer", Some("latest"), &fresh)
                .await
                .unwrap();
            expected.insert(
                "containers/newcomer".into(),
                [("latest".into(), fresh.digest)].into(),
            );

            // A compose: the two repositories of the update first, a warm check of the other
            // 49, and refetches of the three that changed. The whole registry converges.
            let mark = s.registry.log_mark().await.unwrap();
            publish(
                &s,
                &fedora_messaging::compose_complete(
                    &s.config.amqp,
                    "bodhi",
                    "f41-container-updates",
                    "container",
                ),
            )
            .await;
            processed_reaches(&s, 3.0 + 1.0 + 2.0 + 3.0).await;
            for (repository, tags) in &expected {
                assert_eq!(&stored_tags(&s, repository).await, tags, "{repository}");
            }
            assert_eq!(
                metric(
                    &s,
                    r#"regindex_worker_bodhi_refetches_total{trigger="compose_recent"}"#
                )
                .await,
                2.0
            );
            assert_eq!(
                metric(
                    &s,
                    r#"regindex_worker_bodhi_refetches_total{trigger="compose_changed"}"#
                )
                .await,
                3.0
            );
            assert_eq!(
                metric(&s, "regindex_worker_bodhi_warm_checked_total").await,
                49.0
            );
            // Manifests were fetched only where something changed (the history's backfill may
            // read app-41's re-tagged manifest too).
            let requests = s.registry.requests_since(mark).await.unwrap();
            let (fetched, _) = touched(
                &requests
                    .iter()
                    .filter(|r| r.is_manifest_get())
                    .cloned()
                    .collect::<Vec<_>>(),
            );
            let changed: BTreeSet<String> = [
                "containers/app-40",
                "containers/app-41",
                "containers/newcomer",
            ]
            .map(str::to_owned)
            .into();
            assert!(fetched.is_subset(&changed), "{fetched:?}");
            assert!(
                fetched.contains("containers/app-40") && fetched.contains("containers/newcomer")
            );
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_pushed_to_a_repository_never_indexed_is_found_and_indexed() {
    options()
        .run(|s| async move {
            for i in 0..3u64 {
                let repository = format!("flatpaks/known-{i}");
                let image = osbs_image(&format!("known-{i}"), "stable", "1", &repository, i);
                s.registry
                    .push_image(&repository, Some("latest"), &image)
                    .await
                    .unwrap();
            }
            scan(&s).await;
            // Pushed, its webhook lost: the index has never seen it.
            let image = osbs_image("gnome-maps", "stable", "4120261201", "flatpaks/maps", 50);
            let pushed = s
                .registry
                .push_image("flatpaks/maps", Some("testing"), &image)
                .await
                .unwrap();

            let mark = s.registry.log_mark().await.unwrap();
            publish_update(
                &s,
                UpdateTarget::Testing,
                &[nvr("gnome-maps-stable-4120261201")],
            )
            .await;
            processed_reaches(&s, 2.0).await;
            assert_eq!(
                stored_tags(&s, "flatpaks/maps").await,
                [("testing".to_owned(), pushed.digest.clone())].into()
            );
            let requests = s.registry.requests_since(mark).await.unwrap();
            let (repositories, catalog) = touched(&requests);
            assert_eq!(catalog, 1, "{requests:#?}");
            assert_eq!(
                repositories,
                ["flatpaks/maps".to_owned()].into(),
                "only the new one"
            );
            assert_eq!(
                metric(
                    &s,
                    r#"regindex_worker_bodhi_build_matches_total{match="none"}"#
                )
                .await,
                1.0
            );
            assert_eq!(
                metric(
                    &s,
                    r#"regindex_worker_bodhi_build_matches_total{match="new_repository"}"#
                )
                .await,
                1.0
            );

            // Now indexed, the same build is found by its labels: no catalog listing.
            let mark = s.registry.log_mark().await.unwrap();
            publish_update(
                &s,
                UpdateTarget::Stable,
                &[nvr("gnome-maps-stable-4120261201")],
            )
            .await;
            processed_reaches(&s, 4.0).await;
            let requests = s.registry.requests_since(mark).await.unwrap();
            assert_eq!(touched(&requests), (["flatpaks/maps".to_owned()].into(), 0));
            assert_eq!(
                metric(
                    &s,
                    r#"regindex_worker_bodhi_build_matches_total{match="label_nvr"}"#
                )
                .await,
                1.0
            );
        })
        .await;
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Registry requests by kind: total, catalog, tag lists, manifest HEADs, manifest GETs,
/// blob GETs.
fn request_counts(requests: &[LoggedRequest]) -> [usize; 6] {
    let count = |f: &dyn Fn(&LoggedRequest) -> bool| requests.iter().filter(|r| f(r)).count();
    [
        requests.len(),
        count(&|r| r.path().contains("/_catalog")),
        count(&|r| r.path().contains("/tags/list")),
        count(&|r| r.method == "HEAD" && r.is_manifest()),
        count(&|r| r.is_manifest_get()),
        count(&|r| r.is_blob_get()),
    ]
}

/// Waits until `repository:latest` is `digest` in the store (what the api reads), polling
/// every 5 ms; returns when.
async fn queryable(stack: &App, repository: &str, digest: &str) -> std::time::Instant {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        if stored_tags(stack, repository)
            .await
            .get("latest")
            .map(String::as_str)
            == Some(digest)
        {
            return std::time::Instant::now();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{repository} never updated"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Benchmark (docs/benchmarks.md): from a Bodhi message to the changed repository being
/// queryable, and the registry requests it cost, for an update message versus a compose
/// message. `BODHI_BENCH_REPOS` repositories (default 500), two tags each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run explicitly (docs/benchmarks.md)"]
async fn bench_update_versus_compose() {
    let repositories = env("BODHI_BENCH_REPOS", 500);
    options().run(|s| async move {
        let started = std::time::Instant::now();
        futures::stream::iter(0..repositories)
            .map(|i| {
                let s = s.clone();
                async move {
                    let repository = format!("bench/app-{i:04}");
                    let image = osbs_image(&format!("app-{i:04}"), "1.0", "1", &repository, i as u64);
                    let pushed = s.registry.push_image(&repository, Some("latest"), &image).await.unwrap();
                    s.registry.tag(&repository, "1.0", &pushed.digest).await.unwrap();
                }
            })
            .buffer_unordered(8)
            .collect::<Vec<()>>()
            .await;
        scan(&s).await;
        eprintln!("{repositories} repositories pushed and scanned in {:.1} s", started.elapsed().as_secs_f64());

        let mut rows = Vec::new();
        for (what, index) in [("update", 42usize), ("compose", repositories / 2 + 1)] {
            let repository = format!("bench/app-{index:04}");
            let image = osbs_image(&format!("app-{index:04}"), "1.0", "2", &repository, 10_000 + index as u64);
            let pushed = s.registry.push_image(&repository, Some("latest"), &image).await.unwrap();
            let before = processed(&s).await;
            let mark = s.registry.log_mark().await.unwrap();
            let sent = std::time::Instant::now();
            // After the update, the compose also refetches the update's repository first.
            let expected_messages = if what == "update" {
                publish_update(&s, UpdateTarget::Stable, &[nvr(&format!("app-{index:04}-1.0-2"))]).await;
                2.0
            } else {
                let compose = fedora_messaging::compose_complete(&s.config.amqp, "bodhi", "f41-container-updates", "container");
                publish(&s, &compose).await;
                3.0
            };
            let visible = queryable(&s, &repository, &pushed.digest).await - sent;
            processed_reaches(&s, before + expected_messages).await;
            let done = sent.elapsed();
            let counts = request_counts(&s.registry.requests_since(mark).await.unwrap());
            rows.push((what, visible, done, counts));
        }
        eprintln!("| message | queryable after | all work done | requests | catalog | tag lists | manifest HEADs | manifest GETs | blob GETs |");
        for (what, visible, done, [total, catalog, lists, heads, gets, blobs]) in rows {
            eprintln!(
                "| {what} | {:.0} ms | {:.0} ms | {total} | {catalog} | {lists} | {heads} | {gets} | {blobs} |",
                visible.as_secs_f64() * 1e3,
                done.as_secs_f64() * 1e3
            );
        }
    })
    .await;
}
