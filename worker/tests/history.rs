//! The activity history end to end: a real `docker-registry` notifying the api, RabbitMQ,
//! the worker's history consumer, PostgreSQL, and the statistics endpoints. Ground truth
//! is what each test did, checked against the registry's own access log.

mod history_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use history_support::{pull_event, stack, HistoryApp, WAIT};
use regindex::bus::messages::parse_envelope;
use regindex::bus::OutgoingMessage;
use regindex::history::{ActivityEvent, HistoryStore};
use regindex::model::AliasMap;
use regindex::model::Digest;
use regindex_testkit::app::{App, TestStore};
use regindex_testkit::{eventually, ImageSpec, ListFormat, LoggedRequest};
use serde_json::Value;

/// A request of a client (not the testkit, not regindex's own refetches) that the
/// registry answered with success: exactly the requests that fire `pull` events.
fn client_success(r: &LoggedRequest) -> bool {
    !r.is_testkit()
        && !r.user_agent.starts_with("regindex/")
        && (r.method == "GET" || r.method == "HEAD")
        && (200..300).contains(&r.status)
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(regindex_testkit::unique_name(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn i(v: &Value) -> i64 {
    v.as_i64().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn skopeo_pushes_and_pulls_are_counted() {
    stack().run(|s| async move {
        let pushed = s
            .registry
            .push_image("hist/a", Some("1"), &ImageSpec::new("amd64"))
            .await
            .unwrap();
        let host = s.host();
        let mark = s.registry.log_mark().await.unwrap();
        s.skopeo_copy(&format!("docker://{host}/hist/a:1"), &format!("docker://{host}/hist/b:1"))
            .await;
        let dir = temp_dir("skopeo-pull");
        for n in 0..3 {
            s.skopeo_copy(
                &format!("docker://{host}/hist/a:1"),
                &format!("oci:{}:pull{n}", dir.display()),
            )
            .await;
        }
        let _ = std::fs::remove_dir_all(&dir);

        // Ground truth: the registry's access log of what skopeo did.
        let log = s.registry.requests_since(mark).await.unwrap();
        let client: Vec<&LoggedRequest> = log.iter().filter(|r| client_success(r)).collect();
        let by_tag = client.iter().filter(|r| r.path() == "/v2/hist/a/manifests/1").count() as i64;
        let by_digest = client
            .iter()
            .filter(|r| r.path() == format!("/v2/hist/a/manifests/{}", pushed.digest))
            .count() as i64;
        let blob_pulls = client
            .iter()
            .filter(|r| r.path().starts_with("/v2/hist/a/blobs/sha256:"))
            .count() as i64;
        let mounts = log
            .iter()
            .filter(|r| r.method == "POST" && r.uri.starts_with("/v2/hist/b/blobs/uploads/?") && r.uri.contains("mount=") && r.status == 201)
            .count() as i64;
        assert!(by_tag >= 3, "three pulls by tag at least: {log:#?}");

        let a = eventually("the pulls of hist/a:1", WAIT, || async {
            let image = s.image("hist/a", "1").await?;
            (i(&image["pull_count"]) == by_tag && i(&image["manifest_pull_count"]) == by_tag + by_digest)
                .then_some(image)
        })
        .await;
        assert_eq!(a["digest"], pushed.digest.as_str());
        assert_eq!(i(&a["push_count"]), 1);
        assert!(a["first_pushed"].is_string() && a["last_pulled"].is_string());

        let b = eventually("the push of hist/b:1", WAIT, || async { s.image("hist/b", "1").await }).await;
        assert_eq!(b["digest"], pushed.digest.as_str(), "skopeo keeps the manifest");
        assert_eq!(i(&b["push_count"]), 1);
        assert_eq!(i(&b["pull_count"]), 0);

        // Blobs: pulled from a, mounted (or pushed) into b.
        let blob = |repo: &'static str| {
            let pool = s.store.pool().clone();
            async move {
                sqlx::query_as::<_, (i64, i64, i64)>(
                    "SELECT COALESCE(sum(pull_count), 0)::bigint, COALESCE(sum(push_count), 0)::bigint,
                            COALESCE(sum(mount_count), 0)::bigint
                     FROM history_blobs WHERE repository = $1 AND source = 'event'",
                )
                .bind(repo)
                .fetch_one(&pool)
                .await
                .unwrap()
            }
        };
        eventually("blob pulls and mounts", WAIT, || async {
            let (a_pulls, a_pushes, _) = blob("hist/a").await;
            let (_, b_pushes, b_mounts) = blob("hist/b").await;
            (a_pulls == blob_pulls && a_pushes == 2 && b_mounts == mounts && b_pushes == 2).then_some(())
        })
        .await;

        // Nothing counted twice once everything arrived.
        tokio::time::sleep(Duration::from_millis(700)).await;
        let a = s.image("hist/a", "1").await.unwrap();
        assert_eq!(i(&a["pull_count"]), by_tag);
        assert_eq!(i(&a["manifest_pull_count"]), by_tag + by_digest);

        // Counts: two repositories, two tags, the same manifest in each, one config and
        // one layer; bytes count each digest once.
        let manifest: Value = serde_json::from_slice(&pushed.manifest_bytes).unwrap();
        let bytes = pushed.manifest_bytes.len() as i64
            + i(&manifest["config"]["size"])
            + manifest["layers"].as_array().unwrap().iter().map(|l| i(&l["size"])).sum::<i64>();
        let counts = eventually("blob links from the backfill", WAIT, || async {
            let counts = s.operator_json("/stats/counts").await;
            (counts["blobs"] == 2 && i(&counts["bytes"]) == bytes).then_some(counts)
        })
        .await;
        assert_eq!(
            counts,
            serde_json::json!({"repositories": 2, "tags": 2, "manifests": 2, "blobs": 2, "bytes": bytes})
        );
        // Same view under the repository filter.
        assert_eq!(s.operator_json("/stats/counts?repository=hist/b").await["tags"], 1);

        // Every blob a manifest references was reported; no blob is unreferenced.
        eventually("links of both manifests", WAIT, || async {
            let missing = s.operator_json("/stats/manifests/missing-blobs").await;
            let orphans = s.operator_json("/stats/blobs/orphaned").await;
            (missing["items"].as_array()?.is_empty() && orphans["items"].as_array()?.is_empty()).then_some(())
        })
        .await;

        // Per-day activity.
        let today = chrono::Utc::now().date_naive().to_string();
        let activity = s.operator_json(&format!("/stats/activity?repository=hist/a&since={today}")).await;
        let day = &activity["items"][0];
        assert_eq!(day["day"], today.as_str());
        assert_eq!(i(&day["manifest_pushes"]), 1);
        assert_eq!(i(&day["manifest_pulls"]), by_tag + by_digest);
        assert_eq!(i(&day["blob_pulls"]), blob_pulls);
        let activity = s.operator_json("/stats/activity?repository=hist/b").await;
        assert_eq!(i(&activity["items"][0]["manifest_pushes"]), 1);

        // Not pulled, most tags, older than.
        let never = s.operator_json("/stats/images/not-pulled?never_pulled=true").await;
        let never: Vec<(&str, &str)> = never["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (i["repository"].as_str().unwrap(), i["tag"].as_str().unwrap()))
            .collect();
        // Pulls count per repository: hist/b's manifest is hist/a's, yet never pulled there.
        assert_eq!(never, [("hist/b", "1")]);
        s.registry.tag("hist/b", "also", &pushed.digest).await.unwrap();
        let most = eventually("the second tag of hist/b", WAIT, || async {
            let most = s.operator_json("/stats/images/most-tags").await;
            (most["items"][0]["tag_count"] == 2).then_some(most)
        })
        .await;
        assert_eq!(most["items"][0]["repository"], "hist/b");
        assert_eq!(most["items"][0]["tags"], serde_json::json!(["1", "also"]));
        // (The testkit's tag() GETs the manifest: from now on hist/b was pulled too.)
        let stale = s.operator_json("/stats/images/not-pulled?days=0").await;
        assert_eq!(stale["items"].as_array().unwrap().len(), 3, "days=0: everything");
        assert!(s.operator_json("/stats/images/older-than?days=1").await["items"].as_array().unwrap().is_empty());
        assert_eq!(s.operator_json("/stats/images/older-than?days=0").await["items"].as_array().unwrap().len(), 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deletes_land_in_the_audit_trail_with_who_and_where() {
    stack()
        .htpasswd()
        .run(|s| async move {
            let before = chrono::Utc::now() - chrono::Duration::seconds(5);
            let pushed = s
                .registry
                .push_image("hist/c", Some("1"), &ImageSpec::new("arm64"))
                .await
                .unwrap();
            s.registry.tag("hist/c", "2", &pushed.digest).await.unwrap();
            let kept = s
                .registry
                .push_image("hist/c", Some("kept"), &ImageSpec::new("amd64"))
                .await
                .unwrap();
            eventually("the three tags", WAIT, || async {
                let page = s.operator_json("/stats/images?repository=hist/c").await;
                (page["items"].as_array()?.len() == 3).then_some(())
            })
            .await;

            s.registry
                .delete_manifest("hist/c", &pushed.digest)
                .await
                .unwrap();
            // Complete: a refetch's backfill may audit the tags first, without a who or
            // where, and their delete events fill that in later.
            let trail = eventually("the audit trail, with who and where", WAIT, || async {
                let page = s.operator_json("/stats/deletions?repository=hist/c").await;
                let items = page["items"].as_array()?;
                let complete = items
                    .iter()
                    .all(|d| d["actor"].is_string() && d["event_id"].is_string());
                (items.len() == 3 && complete).then_some(page)
            })
            .await;
            let items = trail["items"].as_array().unwrap();
            let mut kinds: Vec<(&str, Option<&str>)> = items
                .iter()
                .map(|d| (d["kind"].as_str().unwrap(), d["tag"].as_str()))
                .collect();
            kinds.sort();
            assert_eq!(
                kinds,
                [("manifest", None), ("tag", Some("1")), ("tag", Some("2"))]
            );
            for deletion in items {
                assert_eq!(deletion["actor"], "tester", "{deletion}");
                assert!(
                    deletion["addr"].as_str().unwrap().starts_with("127.0.0.1:"),
                    "{deletion}"
                );
                assert!(
                    deletion["record"].is_object(),
                    "the deleted row is kept: {deletion}"
                );
                assert!(deletion["event_id"].is_string());
            }
            let manifest = items.iter().find(|d| d["kind"] == "manifest").unwrap();
            assert_eq!(manifest["digest"], pushed.digest.as_str());
            // Pushed, then pushed again under the second tag (a tag is a manifest PUT).
            assert_eq!(manifest["record"]["push_count"], 2);

            // Gone from the images; the other tag stays. Written by other transactions than
            // the audit rows (each delete event, a refetch's backfill): waited for on its own.
            let images = eventually("only the kept tag in the images", WAIT, || async {
                let images = s.operator_json("/stats/images?repository=hist/c").await;
                let tags: Vec<&str> = images["items"]
                    .as_array()?
                    .iter()
                    .filter_map(|i| i["tag"].as_str())
                    .collect();
                (tags == ["kept"]).then_some(images)
            })
            .await;
            assert_eq!(images["items"][0]["digest"], kept.digest.as_str());

            // Time range filters.
            let since = before.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let later = (chrono::Utc::now() + chrono::Duration::hours(1))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let s2 = &s;
            let q = |query: String| async move {
                s2.operator_json(&format!("/stats/deletions?{query}")).await["items"]
                    .as_array()
                    .unwrap()
                    .len()
            };
            assert_eq!(q(format!("repository=hist/c&since={since}")).await, 3);
            assert_eq!(q(format!("since={later}")).await, 0);
            assert_eq!(q("until=2000-01-01".to_owned()).await, 0);
            assert_eq!(q("repository=hist/other".to_owned()).await, 0);
            // Paginated, stable.
            let first = s
                .operator_json("/stats/deletions?repository=hist/c&per_page=2")
                .await;
            let second = s
                .operator_json("/stats/deletions?repository=hist/c&per_page=2&page=2")
                .await;
            assert_eq!(first["next_page"], 2);
            assert_eq!(second["next_page"], Value::Null);
            let ids: Vec<i64> = first["items"]
                .as_array()
                .unwrap()
                .iter()
                .chain(second["items"].as_array().unwrap())
                .map(|d| i(&d["id"]))
                .collect();
            let mut sorted = ids.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), 3, "{ids:?}");
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_parameters_are_400_json() {
    App::builder().api().no_notifications().run(|s| async move {
        for path in [
            "/stats/images?per_page=0",
            "/stats/images?per_page=1001",
            "/stats/images?page=-1",
            "/stats/images?bogus=1",
            "/stats/images?repository=Not%20A%20Name",
            "/stats/images/older-than",
            "/stats/images/older-than?days=abc",
            "/stats/images/not-pulled",
            "/stats/images/not-pulled?never_pulled=perhaps",
            "/stats/deletions?since=yesterday",
            "/stats/deletions?since=2026-12-01&until=2026-11-01",
            "/stats/activity",
            "/stats/activity?repository=a&since=2026-02-30",
            "/stats/counts?page=1",
        ] {
            let (status, body) = s.operator_status(path).await;
            assert_eq!(status, 400, "{path}: {body}");
            assert_eq!(body["error"], "bad_query", "{path}: {body}");
            assert!(body["message"].is_string(), "{path}: {body}");
        }
        let (status, doc) = s.operator_status("/openapi.json").await;
        assert_eq!(status, 200);
        assert!(doc["paths"]["/stats/deletions"].is_object());
        // An empty history answers with empty pages and zero counts.
        assert_eq!(
            s.operator_json("/stats/counts").await,
            serde_json::json!({"repositories": 0, "tags": 0, "manifests": 0, "blobs": 0, "bytes": 0})
        );
        assert_eq!(s.operator_json("/stats/images").await["items"], serde_json::json!([]));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alias_hosts_are_merged() {
    let options = stack().aliases("registry.test", &["127.0.0.1:{port}", "localhost:{port}"]);
    options
        .run(|s| async move {
            let pushed = s
                .registry
                .push_image("hist/d", Some("1"), &ImageSpec::new("amd64"))
                .await
                .unwrap();
            let port = s.registry.port();
            let mark = s.registry.log_mark().await.unwrap();
            let dir = temp_dir("alias-pull");
            for (n, host) in [
                format!("127.0.0.1:{port}"),
                format!("localhost:{port}"),
                format!("localhost:{port}"),
            ]
            .iter()
            .enumerate()
            {
                s.skopeo_copy(
                    &format!("docker://{host}/hist/d:1"),
                    &format!("oci:{}:p{n}", dir.display()),
                )
                .await;
            }
            let _ = std::fs::remove_dir_all(&dir);
            let log = s.registry.requests_since(mark).await.unwrap();
            let by_tag = log
                .iter()
                .filter(|r| client_success(r) && r.path() == "/v2/hist/d/manifests/1")
                .count() as i64;
            assert!(by_tag >= 3);

            let image = eventually("pulls under both host names", WAIT, || async {
                let image = s.image("hist/d", "1").await?;
                (i(&image["pull_count"]) == by_tag).then_some(image)
            })
            .await;
            assert_eq!(image["registry"], "registry.test");
            assert_eq!(image["digest"], pushed.digest.as_str());
            // One row, whatever name the filter uses.
            for host in [
                "registry.test",
                &format!("localhost:{port}"),
                &format!("127.0.0.1:{port}"),
            ] {
                let page = s
                    .operator_json(&format!("/stats/images?registry={host}"))
                    .await;
                assert_eq!(page["items"].as_array().unwrap().len(), 1, "{host}");
            }
            assert_eq!(s.operator_json("/stats/counts").await["tags"], 1);
            let hosts: Vec<String> =
                sqlx::query_scalar("SELECT DISTINCT registry FROM history_events")
                    .fetch_all(s.store.pool())
                    .await
                    .unwrap();
            assert_eq!(hosts, ["registry.test"]);
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redelivered_events_do_not_double_count() {
    stack()
        .no_notifications()
        .run(|s| async move {
            let digest = Digest::sha256_of(b"redelivered").to_string();
            let host = "registry.example.org";
            let events: Vec<Value> = ["r1", "r2", "r3"]
                .iter()
                .map(|id| pull_event(id, host, "hist/e", "1", &digest))
                .collect();
            // The registry resends a request it thinks failed: same events, same ids.
            for _ in 0..3 {
                let response = s.post_events(&events).await;
                assert_eq!(response.status(), 200);
            }
            // A broker redelivery: the same messages again, straight into the history queue.
            let publisher = regindex::bus::Publisher::new(s.config.amqp.url.clone(), None);
            for event in parse_envelope(
                &serde_json::to_vec(&serde_json::json!({ "events": events })).unwrap(),
            )
            .unwrap()
            {
                let body = serde_json::to_vec(&event.unwrap()).unwrap();
                publisher
                    .publish(&OutgoingMessage::json("", &s.config.history.queue, body))
                    .await
                    .unwrap();
            }
            let marker = pull_event("r4", host, "hist/e", "1", &digest);
            assert_eq!(s.post_events(&[marker]).await.status(), 200);
            let image = eventually("the marker event", WAIT, || async {
                (s.recorded_events().await == 4).then_some(())?;
                s.image("hist/e", "1").await
            })
            .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let image = s.image("hist/e", "1").await.unwrap_or(image);
            assert_eq!(i(&image["pull_count"]), 4);
            assert_eq!(i(&image["manifest_pull_count"]), 4);
            let activity = s.operator_json("/stats/activity?repository=hist/e").await;
            assert_eq!(i(&activity["items"][0]["manifest_pulls"]), 4);
            publisher.close().await;
        })
        .await;
}

/// The store alone: recording the same batch twice changes nothing the second time.
#[tokio::test]
async fn recording_a_batch_twice_is_idempotent() {
    let db = TestStore::start().await;
    let store = db.store.clone();
    let history = HistoryStore::new(store.pool().clone());
    let digest = Digest::sha256_of(b"x").to_string();
    let envelope = serde_json::json!({ "events": (0..20).map(|n| pull_event(&format!("id{n}"), "h", "hist/f", "1", &digest)).collect::<Vec<_>>() });
    let aliases = AliasMap::default();
    let batch: Vec<ActivityEvent> = parse_envelope(&serde_json::to_vec(&envelope).unwrap())
        .unwrap()
        .into_iter()
        .map(|e| {
            ActivityEvent::from_registry_event(&e.unwrap(), &aliases, chrono::Utc::now()).unwrap()
        })
        .collect();
    let first = history.record(batch.clone()).await.unwrap();
    assert_eq!((first.recorded, first.duplicates), (20, 0));
    let second = history.record(batch.clone()).await.unwrap();
    assert_eq!((second.recorded, second.duplicates), (0, 20));
    // Half old, half new.
    let mut mixed = batch[10..].to_vec();
    let mut new_one = batch[0].clone();
    new_one.id = "fresh".into();
    mixed.push(new_one);
    let third = history.record(mixed).await.unwrap();
    assert_eq!((third.recorded, third.duplicates), (1, 10));
    let pulls: i64 =
        sqlx::query_scalar("SELECT pull_count FROM history_tags WHERE repository = 'hist/f'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(pulls, 21);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_50000_pulls_is_absorbed_and_does_not_delay_indexing() {
    const ENVELOPES: usize = 100;
    const PER_ENVELOPE: usize = 500;
    const TAGS: usize = 5;
    stack().run(|s| async move {
        let digest = Digest::sha256_of(b"burst").to_string();
        let host = s.host();
        let envelopes: Vec<Vec<Value>> = (0..ENVELOPES)
            .map(|e| {
                (0..PER_ENVELOPE)
                    .map(|n| {
                        let k = e * PER_ENVELOPE + n;
                        pull_event(&format!("burst-{k}"), &host, "hist/burst", &format!("t{}", k % TAGS), &digest)
                    })
                    .collect()
            })
            .collect();
        let started = Instant::now();
        let burst = {
            let s = s.clone();
            tokio::spawn(async move {
                use futures::StreamExt;
                futures::stream::iter(envelopes)
                    .map(|events| {
                        let s = s.clone();
                        async move { s.post_events(&events).await.status().as_u16() }
                    })
                    .buffer_unordered(4)
                    .collect::<Vec<u16>>()
                    .await
            })
        };
        // A push in the middle of the burst.
        eventually("the burst to start", WAIT, || async { (s.recorded_events().await > 0).then_some(()) }).await;
        let pushed_at = Instant::now();
        s.registry.push_image("hist/fresh", Some("1"), &ImageSpec::new("amd64")).await.unwrap();
        // Indexing has its own queue, so the push is not queued behind the burst's history.
        // How long it took is a figure for docs/benchmarks.md, not an assertion here.
        eventually("the push to be indexed", WAIT, || async {
            s.indexed("hist/fresh", "1").await.then_some(())
        })
        .await;
        let indexed_after = pushed_at.elapsed();
        let recorded_then = s.recorded_events().await;

        let statuses = burst.await.unwrap();
        assert!(statuses.iter().all(|&status| status == 200), "{statuses:?}");
        let posted_after = started.elapsed();
        eventually("all 50000 pulls", Duration::from_secs(180), || async {
            let total: i64 = sqlx::query_scalar(
                "SELECT COALESCE(sum(pull_count), 0)::bigint FROM history_tags WHERE repository = 'hist/burst'",
            )
            .fetch_one(s.store.pool())
            .await
            .unwrap();
            assert!(total <= (ENVELOPES * PER_ENVELOPE) as i64, "over-counted: {total}");
            (total == (ENVELOPES * PER_ENVELOPE) as i64).then_some(())
        })
        .await;
        let recorded_after = started.elapsed();
        eprintln!(
            "burst: {} pulls posted in {posted_after:?}, recorded in {recorded_after:?}; a push was indexed {indexed_after:?} after it, with {recorded_then} events recorded by then",
            ENVELOPES * PER_ENVELOPE
        );
        let page = s.operator_json("/stats/images?repository=hist/burst").await;
        let per_tag: BTreeMap<String, i64> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (i["tag"].as_str().unwrap().to_owned(), i["pull_count"].as_i64().unwrap()))
            .collect();
        assert_eq!(per_tag.len(), TAGS);
        assert!(per_tag.values().all(|&n| n == (ENVELOPES * PER_ENVELOPE / TAGS) as i64), "{per_tag:?}");
        let activity = s.operator_json("/stats/activity?repository=hist/burst").await;
        let pulls: i64 = activity["items"].as_array().unwrap().iter().map(|d| i(&d["manifest_pulls"])).sum();
        assert_eq!(pulls, (ENVELOPES * PER_ENVELOPE) as i64);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scan_backfills_history_that_predates_regindex() {
    let options = App::builder().api().no_notifications();
    options
        .run(|s| async move {
            let old = s
                .registry
                .push_image("hist/old", Some("1"), &ImageSpec::new("amd64"))
                .await
                .unwrap();
            s.registry
                .tag("hist/old", "same", &old.digest)
                .await
                .unwrap();
            let gone = s
                .registry
                .push_image("hist/old", Some("gone"), &ImageSpec::new("s390x"))
                .await
                .unwrap();
            let list = s
                .registry
                .push_list(
                    "hist/old",
                    Some("multi"),
                    &[
                        ImageSpec::new("amd64").seed(7),
                        ImageSpec::new("arm64").seed(8),
                    ],
                    ListFormat::OciIndex,
                )
                .await
                .unwrap();

            let store = regindex::store::Store::connect(&s.config.database)
                .await
                .unwrap();
            let client = regindex::registry::RegistryClient::new(&s.config.registry).unwrap();
            let host = regindex::history::backfill_host(&s.config);
            let backfill = regindex::history::backfill::Backfill::new(
                client.clone(),
                HistoryStore::new(store.pool().clone()),
                host,
            );
            let syncer = regindex::sync::Syncer::new(client, store)
                .with_observer(std::sync::Arc::new(backfill));
            let summary = syncer.scan(2, &regindex::sync::NoProgress).await.unwrap();
            assert!(summary.failed.is_empty(), "{summary}");

            let images = s.operator_json("/stats/images?repository=hist/old").await;
            let rows: Vec<(&str, &str)> = images["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| (i["tag"].as_str().unwrap(), i["digest"].as_str().unwrap()))
                .collect();
            assert_eq!(
                rows,
                [
                    ("1", old.digest.as_str()),
                    ("gone", gone.digest.as_str()),
                    ("multi", list.digest.as_str()),
                    ("same", old.digest.as_str())
                ]
            );
            for image in images["items"].as_array().unwrap() {
                assert_eq!(image["first_pushed"], Value::Null, "no event: {image}");
                assert!(image["first_seen"].is_string());
                assert_eq!(image["pull_count"], 0);
            }
            // Manifests: the two images, the list and its two entries. Blobs: one config per
            // image (4) and one layer per layer seed (3: the first two images share theirs).
            let counts = s.operator_json("/stats/counts").await;
            assert_eq!(
                (
                    i(&counts["tags"]),
                    i(&counts["manifests"]),
                    i(&counts["blobs"])
                ),
                (4, 5, 7),
                "{counts}"
            );
            // The registry never reported those blobs: every link is listed.
            let missing = s
                .operator_json("/stats/manifests/missing-blobs?per_page=1000")
                .await;
            assert_eq!(missing["items"].as_array().unwrap().len(), 8);
            let never = s
                .operator_json("/stats/images/not-pulled?never_pulled=true")
                .await;
            assert_eq!(never["items"].as_array().unwrap().len(), 4);
            let most = s.operator_json("/stats/images/most-tags?per_page=1").await;
            assert_eq!(most["items"][0]["digest"], old.digest.as_str());
            assert_eq!(most["next_page"], 2);

            // A delete the history never heard of: the next scan moves the tag to the trail.
            s.registry
                .delete_manifest("hist/old", &gone.digest)
                .await
                .unwrap();
            let summary = syncer.scan(2, &regindex::sync::NoProgress).await.unwrap();
            assert!(summary.failed.is_empty(), "{summary}");
            let trail = s
                .operator_json("/stats/deletions?repository=hist/old")
                .await;
            let items = trail["items"].as_array().unwrap();
            assert_eq!(items.len(), 1, "{trail}");
            assert_eq!(items[0]["kind"], "tag");
            assert_eq!(items[0]["tag"], "gone");
            assert_eq!(items[0]["actor"], Value::Null);
            assert_eq!(s.operator_json("/stats/counts").await["tags"], 3);
            syncer.store().pool().close().await;
        })
        .await;
}

/// A backfill that listed the tags before a delete was recorded must not bring the
/// deleted tag and manifest back.
#[tokio::test]
async fn a_stale_backfill_does_not_resurrect_deleted_rows() {
    let db = TestStore::start().await;
    let store = db.store.clone();
    let history = HistoryStore::new(store.pool().clone());
    let aliases = AliasMap::default();
    let digest = Digest::sha256_of(b"deleted");
    let repository = regindex::model::RepositoryName::parse("hist/g").unwrap();
    let tag = regindex::model::Tag::parse("1").unwrap();
    let listed_at = chrono::Utc::now() - chrono::Duration::seconds(2);
    let deletes = serde_json::json!({"events": [
        {"id": "d1", "timestamp": chrono::Utc::now().to_rfc3339(), "action": "delete",
         "target": {"repository": "hist/g", "digest": digest.as_str()}, "request": {"host": "h", "addr": "1.2.3.4:5"}},
        {"id": "d2", "timestamp": chrono::Utc::now().to_rfc3339(), "action": "delete",
         "target": {"repository": "hist/g", "tag": "1"}, "request": {"host": "h", "addr": "1.2.3.4:5"}}
    ]});
    let batch: Vec<ActivityEvent> = parse_envelope(&serde_json::to_vec(&deletes).unwrap())
        .unwrap()
        .into_iter()
        .map(|e| {
            ActivityEvent::from_registry_event(&e.unwrap(), &aliases, chrono::Utc::now()).unwrap()
        })
        .collect();
    history.record(batch).await.unwrap();
    let manifest = regindex::store::history::ScannedManifest {
        digest: digest.clone(),
        media_type: regindex::model::media_type::OCI_MANIFEST.into(),
        size: Some(10),
        blobs: Some(vec![regindex::history::BlobRef {
            digest: Digest::sha256_of(b"layer"),
            size: Some(5),
            media_type: None,
        }]),
    };
    history
        .record_state("h", &repository, &[(tag, digest)], &[manifest], listed_at)
        .await
        .unwrap();
    for table in [
        "history_tags",
        "history_manifests",
        "history_manifest_blobs",
    ] {
        let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(rows, 0, "{table}");
    }
    // Both deletes are in the trail, though the history never held the rows.
    let kinds: Vec<String> = sqlx::query_scalar("SELECT kind FROM history_deletions ORDER BY kind")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(kinds, ["tag", "unknown"]);
    db.finish().await;
}

/// Retention: audit rows and raw events older than their retention are pruned, newer
/// ones stay.
#[tokio::test]
async fn pruning_keeps_only_what_retention_allows() {
    let db = TestStore::start().await;
    let store = db.store.clone();
    let pool = store.pool();
    for (days, id) in [(10, "old"), (0, "new")] {
        sqlx::query(
            "INSERT INTO history_deletions (deleted_at, registry, repository, kind, tag)
             VALUES (now() - make_interval(days => $1), 'h', 'r', 'tag', $2)",
        )
        .bind(days)
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO history_events (event_id, occurred_at, received_at, activity, registry, repository)
             VALUES ($2, now(), now() - make_interval(days => $1), 'pull_manifest', 'h', 'r')",
        )
        .bind(days)
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
    }
    let outcome = HistoryStore::new(pool.clone()).prune(5, 5).await.unwrap();
    assert_eq!((outcome.deletions, outcome.events), (1, 1));
    let left: Vec<String> = sqlx::query_scalar("SELECT tag FROM history_deletions")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(left, ["new"]);
    let left: Vec<String> = sqlx::query_scalar("SELECT event_id FROM history_events")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(left, ["new"]);
    db.finish().await;
}

/// A scan that finds a tag gone before its delete event is recorded audits it without a
/// who; the delete event then completes that row rather than auditing the delete twice,
/// also when the scan's listing started before the delete.
#[tokio::test]
async fn a_delete_event_completes_the_audit_row_of_a_scan() {
    let db = TestStore::start().await;
    let store = db.store.clone();
    let history = HistoryStore::new(store.pool().clone());
    let repository = regindex::model::RepositoryName::parse("hist/h").unwrap();
    let tag = regindex::model::Tag::parse("1").unwrap();
    let digest = Digest::sha256_of(b"h");
    let t0 = chrono::Utc::now() - chrono::Duration::seconds(10);
    history
        .record_state("h", &repository, &[(tag, digest)], &[], t0)
        .await
        .unwrap();
    let deleted_at = chrono::Utc::now() - chrono::Duration::seconds(5);
    // The listing that found the tag gone started before the delete and answered after
    // it (a slow registry): still the same delete.
    let listed_during = deleted_at - chrono::Duration::seconds(1);
    history
        .record_state("h", &repository, &[], &[], listed_during)
        .await
        .unwrap();
    let untag = serde_json::json!({"events": [
        {"id": "u1", "timestamp": deleted_at.to_rfc3339(), "action": "delete",
         "target": {"repository": "hist/h", "tag": "1"},
         "request": {"host": "h", "addr": "10.9.8.7:6"}, "actor": {"name": "alice"}}
    ]});
    let batch: Vec<ActivityEvent> = parse_envelope(&serde_json::to_vec(&untag).unwrap())
        .unwrap()
        .into_iter()
        .map(|e| {
            ActivityEvent::from_registry_event(
                &e.unwrap(),
                &AliasMap::default(),
                chrono::Utc::now(),
            )
            .unwrap()
        })
        .collect();
    history.record(batch).await.unwrap();
    let rows: Vec<(Option<String>, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT actor, addr, event_id FROM history_deletions")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(
        rows,
        [(
            Some("alice".into()),
            Some("10.9.8.7:6".into()),
            Some("u1".into())
        )]
    );
    db.finish().await;
}
