//! Store tests against a real PostgreSQL (127.0.0.1:5432, user postgres), one fresh
//! database per test.

use std::collections::BTreeMap;
use std::time::Duration;

use regindex::index::{build_response, Query};
use regindex::model::{
    media_type, Digest, Image, ImageList, RepositoryName, RepositoryState, StringMap, Tag,
};
use regindex::store::{KnownParts, Store, StoreError, SCHEMA_VERSION};
use regindex_testkit::app::TestStore;

fn d(n: u8) -> Digest {
    Digest::sha256_of(&[n])
}
fn t(s: &str) -> Tag {
    Tag::parse(s).unwrap()
}
fn repo(s: &str) -> RepositoryName {
    RepositoryName::parse(s).unwrap()
}
fn map(pairs: &[(&str, &str)]) -> StringMap {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
fn image(n: u8, arch: &str, labels: &[(&str, &str)]) -> Image {
    Image {
        digest: d(n),
        media_type: media_type::OCI_MANIFEST.into(),
        os: "linux".into(),
        architecture: arch.into(),
        annotations: map(&[("org.opencontainers.image.title", &format!("image {n}"))]),
        labels: map(labels),
        config_digest: d(n.wrapping_add(128)),
    }
}
fn list(n: u8, entries: &[u8]) -> ImageList {
    ImageList {
        digest: d(n),
        media_type: media_type::OCI_INDEX.into(),
        annotations: StringMap::new(),
        entries: entries.iter().map(|e| d(*e)).collect(),
    }
}

/// Ground truth: an app image (amd64), an OCI index (amd64 + arm64), an old image.
fn app_state() -> RepositoryState {
    let app = [("org.flatpak.ref", "app/org.example.App/x86_64/stable")];
    let images = [
        image(1, "amd64", &app),
        image(2, "amd64", &app),
        image(3, "arm64", &app),
        image(4, "amd64", &[]),
    ];
    RepositoryState {
        tags: BTreeMap::from([
            (t("latest"), d(1)),
            (t("1.0"), d(1)),
            (t("multi"), d(20)),
            (t("old"), d(4)),
        ]),
        images: images.into_iter().map(|i| (i.digest.clone(), i)).collect(),
        lists: BTreeMap::from([(d(20), list(20, &[2, 3]))]),
    }
}

/// Writes `state` as a refetch would: everything not stored yet is new.
async fn write(
    store: &Store,
    name: &RepositoryName,
    state: &RepositoryState,
) -> regindex::store::ReplaceOutcome {
    let mut tx = store.begin_repository(name).await.unwrap();
    let known = tx.known_manifests().await.unwrap();
    let images: Vec<Image> = state
        .images
        .values()
        .filter(|i| !known.contains(&i.digest))
        .cloned()
        .collect();
    let lists: Vec<ImageList> = state
        .lists
        .values()
        .filter(|l| !known.contains(&l.digest))
        .cloned()
        .collect();
    let outcome = tx.replace(&state.tags, &images, &lists).await.unwrap();
    tx.commit().await.unwrap();
    outcome
}

#[tokio::test]
async fn schema_checks() {
    let db = TestStore::start_empty().await;
    let err = Store::connect(&db.config).await.err().unwrap();
    assert!(matches!(err, StoreError::SchemaMissing), "{err}");
    assert!(err.to_string().contains("migrate"), "{err}");

    db.store.migrate().await.unwrap();
    let store = Store::connect(&db.config).await.unwrap();
    // Re-applying is harmless and keeps data.
    write(&store, &repo("apps/app"), &app_state()).await;
    store.migrate().await.unwrap();
    assert_eq!(
        store.load_repository(&repo("apps/app")).await.unwrap(),
        app_state()
    );
    Store::connect(&db.config).await.unwrap();

    sqlx::query("UPDATE regindex_schema SET version = 0")
        .execute(store.pool())
        .await
        .unwrap();
    let err = Store::connect(&db.config).await.err().unwrap();
    assert!(
        matches!(
            err,
            StoreError::SchemaOutdated {
                found: 0,
                expected: SCHEMA_VERSION
            }
        ),
        "{err}"
    );
    // migrate brings it back up.
    store.migrate().await.unwrap();
    Store::connect(&db.config).await.unwrap();

    sqlx::query("UPDATE regindex_schema SET version = $1")
        .bind(SCHEMA_VERSION + 1)
        .execute(store.pool())
        .await
        .unwrap();
    let err = Store::connect(&db.config).await.err().unwrap();
    assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
    store.pool().close().await;
}

#[tokio::test]
async fn replace_is_exact_and_idempotent() {
    let db = TestStore::start().await;
    let store = db.store.clone();
    let name = repo("apps/app");
    let v0 = store.data_version().await.unwrap();

    let first = write(&store, &name, &app_state()).await;
    assert!(first.changed);
    assert_eq!(first.manifests_added, 5);
    assert_eq!(first.tags_set, 4);
    assert_eq!(first.manifests_removed, 0);
    let v1 = store.data_version().await.unwrap();
    assert!(v1 > v0);
    assert_eq!(store.load_repository(&name).await.unwrap(), app_state());
    assert_eq!(store.repositories().await.unwrap(), vec![name.clone()]);

    // The same state again: nothing changes, the version stays.
    let second = write(&store, &name, &app_state()).await;
    assert_eq!(second, Default::default());
    assert_eq!(store.data_version().await.unwrap(), v1);

    // A caller that passes known manifests as new again changes nothing either.
    let state = app_state();
    let mut tx = store.begin_repository(&name).await.unwrap();
    let images: Vec<Image> = state.images.values().cloned().collect();
    let lists: Vec<ImageList> = state.lists.values().cloned().collect();
    let third = tx.replace(&state.tags, &images, &lists).await.unwrap();
    tx.commit().await.unwrap();
    assert!(!third.changed, "{third:?}");
    assert_eq!(store.data_version().await.unwrap(), v1);
    assert_eq!(store.load_repository(&name).await.unwrap(), app_state());

    // Unreachable new manifests are not stored.
    let mut tx = store.begin_repository(&name).await.unwrap();
    let stray = [image(99, "amd64", &[])];
    let fourth = tx.replace(&state.tags, &stray, &[]).await.unwrap();
    tx.commit().await.unwrap();
    assert!(!fourth.changed);
    assert_eq!(store.load_repository(&name).await.unwrap(), app_state());

    store.pool().close().await;
}

#[tokio::test]
async fn tag_moves_and_untagged_manifests_go() {
    let db = TestStore::start().await;
    let store = db.store.clone();
    let name = repo("apps/app");
    write(&store, &name, &app_state()).await;
    let v1 = store.data_version().await.unwrap();

    // `old` moves to image 1; image 4 is no longer reached.
    let mut state = app_state();
    state.tags.insert(t("old"), d(1));
    state.images.remove(&d(4));
    let outcome = write(&store, &name, &state).await;
    assert!(outcome.changed);
    assert_eq!(outcome.tags_set, 1);
    assert_eq!(outcome.manifests_removed, 1);
    assert_eq!(store.load_repository(&name).await.unwrap(), state);
    let v2 = store.data_version().await.unwrap();
    assert!(v2 > v1);

    // Untag the list: the list and the images only it reached go; a new image comes.
    state.tags.remove(&t("multi"));
    state.lists.clear();
    state.images.remove(&d(2));
    state.images.remove(&d(3));
    state.tags.insert(t("new"), d(5));
    state.images.insert(d(5), image(5, "s390x", &[]));
    let outcome = write(&store, &name, &state).await;
    assert_eq!(outcome.manifests_removed, 3);
    assert_eq!(outcome.manifests_added, 1);
    assert_eq!(store.load_repository(&name).await.unwrap(), state);

    // An image both tagged and in a list stays when only the list goes.
    let mut shared = state.clone();
    shared.tags.insert(t("multi"), d(21));
    shared.lists.insert(d(21), list(21, &[1, 6]));
    shared.images.insert(d(6), image(6, "arm64", &[]));
    write(&store, &name, &shared).await;
    assert_eq!(store.load_repository(&name).await.unwrap(), shared);
    let outcome = write(&store, &name, &state).await;
    assert_eq!(outcome.manifests_removed, 2);
    assert_eq!(store.load_repository(&name).await.unwrap(), state);

    store.pool().close().await;
}

/// A render after a change reads only the repositories changed since its parts' data
/// version, plus a count; all versions only when a repository is gone or the snapshot is
/// older than the parts (a replica behind the one read before).
#[tokio::test]
async fn index_parts_read_what_changed_since_the_parts() {
    let db = TestStore::start().await;
    let store = db.store.clone();
    for name in ["apps/a", "apps/b", "apps/c"] {
        write(&store, &repo(name), &app_state()).await;
    }
    let query = Query::default();
    let first = store.query_index_parts(&query, None, false).await.unwrap();
    let versions = first.versions.clone().expect("all versions without parts");
    assert_eq!(first.read, versions);
    let version_of = |name: &RepositoryName| versions.get(name).copied();
    let known = |data_version| KnownParts {
        data_version,
        count: versions.len(),
        version_of: &version_of,
    };

    let unchanged = store
        .query_index_parts(&query, Some(&known(first.data_version)), false)
        .await
        .unwrap();
    assert_eq!((unchanged.versions, unchanged.read.len()), (None, 0));

    write(&store, &repo("apps/b"), &single(7, &[])).await;
    let changed = store
        .query_index_parts(&query, Some(&known(first.data_version)), false)
        .await
        .unwrap();
    assert_eq!(changed.versions, None);
    assert_eq!(changed.read.keys().collect::<Vec<_>>(), [&repo("apps/b")]);
    assert_eq!(changed.listings.len(), 1);

    // apps/c goes and apps/d arrives: the count is the same as before.
    write(&store, &repo("apps/c"), &RepositoryState::default()).await;
    write(&store, &repo("apps/d"), &app_state()).await;
    let swapped = store
        .query_index_parts(&query, Some(&known(first.data_version)), false)
        .await
        .unwrap();
    let all = swapped.versions.expect("a repository went: all versions");
    assert_eq!(
        all.keys().collect::<Vec<_>>(),
        [&repo("apps/a"), &repo("apps/b"), &repo("apps/d")]
    );
    assert_eq!(
        swapped.read.keys().collect::<Vec<_>>(),
        [&repo("apps/b"), &repo("apps/d")]
    );

    // Parts newer than the snapshot: every version is compared.
    let ahead = store
        .query_index_parts(&query, Some(&known(swapped.data_version + 10)), false)
        .await
        .unwrap();
    assert!(ahead.versions.is_some());
    store.pool().close().await;
}

#[tokio::test]
async fn repository_without_tags_is_removed() {
    let db = TestStore::start().await;
    let store = db.store.clone();
    write(&store, &repo("apps/app"), &app_state()).await;
    write(&store, &repo("apps/other"), &app_state()).await;
    let v1 = store.data_version().await.unwrap();

    let outcome = write(&store, &repo("apps/app"), &RepositoryState::default()).await;
    assert!(outcome.changed);
    assert_eq!(outcome.manifests_removed, 5);
    assert!(store.data_version().await.unwrap() > v1);
    assert_eq!(
        store.repositories().await.unwrap(),
        vec![repo("apps/other")]
    );
    assert_eq!(
        store.load_repository(&repo("apps/app")).await.unwrap(),
        RepositoryState::default()
    );
    // The other repository, holding the same digests, is untouched.
    assert_eq!(
        store.load_repository(&repo("apps/other")).await.unwrap(),
        app_state()
    );

    // Removing what is not there changes nothing.
    let v2 = store.data_version().await.unwrap();
    let outcome = write(&store, &repo("apps/app"), &RepositoryState::default()).await;
    assert!(!outcome.changed);
    assert_eq!(store.data_version().await.unwrap(), v2);

    store.pool().close().await;
}

#[tokio::test]
async fn inconsistent_input_is_refused_and_writes_nothing() {
    let db = TestStore::start().await;
    let store = db.store.clone();
    let name = repo("apps/app");
    write(&store, &name, &app_state()).await;
    let v1 = store.data_version().await.unwrap();

    let mut tx = store.begin_repository(&name).await.unwrap();
    let tags = BTreeMap::from([(t("latest"), d(77))]);
    let err = tx.replace(&tags, &[], &[]).await.unwrap_err();
    assert!(matches!(err, StoreError::Inconsistent { .. }), "{err}");
    assert!(!err.is_transient());
    drop(tx);

    let mut tx = store.begin_repository(&name).await.unwrap();
    let tags = BTreeMap::from([(t("latest"), d(30))]);
    let err = tx
        .replace(&tags, &[], &[list(30, &[1, 88])])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Inconsistent { .. }), "{err}");
    drop(tx);

    assert_eq!(store.load_repository(&name).await.unwrap(), app_state());
    assert_eq!(store.data_version().await.unwrap(), v1);
    store.pool().close().await;
}

#[tokio::test]
async fn nul_characters_do_not_break_a_repository() {
    let db = TestStore::start().await;
    let store = db.store.clone();
    let name = repo("apps/odd");
    let mut odd = image(1, "amd64", &[("key\0x", "value\0y")]);
    odd.annotations.insert("a".into(), "\0".into());
    let state = RepositoryState {
        tags: BTreeMap::from([(t("latest"), d(1))]),
        images: BTreeMap::from([(d(1), odd)]),
        lists: BTreeMap::new(),
    };
    assert!(write(&store, &name, &state).await.changed);
    let stored = store.load_repository(&name).await.unwrap();
    let image = &stored.images[&d(1)];
    assert_eq!(image.labels["key\u{FFFD}x"], "value\u{FFFD}y");
    assert_eq!(image.annotations["a"], "\u{FFFD}");
    store.pool().close().await;
}

#[tokio::test]
async fn repository_lock_is_exclusive_across_connections() {
    let db = TestStore::start().await;
    let first = db.store.clone();
    // A second pool: as another worker process would have.
    let second = Store::connect(&db.config).await.unwrap();
    let name = repo("apps/app");

    let held = first.begin_repository(&name).await.unwrap();
    let waiter = {
        let second = second.clone();
        let name = name.clone();
        tokio::spawn(async move {
            let tx = second.begin_repository(&name).await.unwrap();
            tx.commit().await.unwrap();
        })
    };
    // The second one queues for the lock (PostgreSQL shows it waiting), and stays there.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(first.pool())
        .await
        .unwrap();
        if waiting == 1 {
            break;
        }
        assert!(
            !waiter.is_finished(),
            "second refetch of the same repository did not wait"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second refetch never queued for the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !waiter.is_finished(),
        "second refetch of the same repository did not wait"
    );

    // Another repository is not blocked.
    let other = tokio::time::timeout(
        Duration::from_secs(5),
        second.begin_repository(&repo("apps/other")),
    )
    .await
    .expect("other repository blocked")
    .unwrap();
    other.commit().await.unwrap();

    held.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("lock not released on commit")
        .unwrap();

    // Dropping a transaction (a failed refetch) releases the lock too.
    let held = first.begin_repository(&name).await.unwrap();
    drop(held);
    let again = tokio::time::timeout(Duration::from_secs(5), second.begin_repository(&name))
        .await
        .expect("lock not released on drop")
        .unwrap();
    again.commit().await.unwrap();

    first.pool().close().await;
    second.pool().close().await;
}

#[tokio::test]
async fn gc_removes_unreachable_manifests_and_empty_repositories() {
    let db = TestStore::start().await;
    let store = db.store.clone();
    write(&store, &repo("apps/app"), &app_state()).await;
    // Leftovers as a crash or a hand edit could leave them: an untagged image and list
    // in a live repository, and a repository without tags.
    sqlx::raw_sql(&format!(
        "INSERT INTO manifests (repository_id, digest, media_type, is_list, config_digest)
           SELECT id, '{img}', '{mt}', false, '{cfg}' FROM repositories WHERE name = 'apps/app';
         INSERT INTO manifests (repository_id, digest, media_type, is_list)
           SELECT id, '{lst}', '{lmt}', true FROM repositories WHERE name = 'apps/app';
         INSERT INTO list_entries (list_id, position, image_id)
           SELECT l.id, 0, i.id FROM manifests l, manifests i WHERE l.digest = '{lst}' AND i.digest = '{img}';
         INSERT INTO repositories (name) VALUES ('apps/empty');",
        img = d(200),
        cfg = d(201),
        lst = d(202),
        mt = media_type::OCI_MANIFEST,
        lmt = media_type::OCI_INDEX,
    ))
    .execute(store.pool())
    .await
    .unwrap();
    let v1 = store.data_version().await.unwrap();

    let summary = store.gc().await.unwrap();
    assert_eq!(summary.manifests_removed, 2);
    assert_eq!(summary.repositories_removed, 1);
    assert_eq!(store.repositories().await.unwrap(), vec![repo("apps/app")]);
    assert_eq!(
        store.load_repository(&repo("apps/app")).await.unwrap(),
        app_state()
    );
    // Nothing visible to queries changed.
    assert_eq!(store.data_version().await.unwrap(), v1);
    assert_eq!(store.gc().await.unwrap(), Default::default());

    store.pool().close().await;
}

/// The SQL pre-filter agrees with the pure matcher: for every query, filtering in SQL and
/// then in Rust gives the same response as filtering everything in Rust.
#[tokio::test]
async fn sql_prefilter_agrees_with_pure_matching() {
    let db = TestStore::start().await;
    let store = db.store.clone();
    write(&store, &repo("apps/app"), &app_state()).await;
    let mut other = app_state();
    other.tags.insert(t("latest"), d(20));
    for image in other.images.values_mut() {
        image.labels.insert("100%_real\\".into(), "a_b%c".into());
    }
    write(&store, &repo("runtimes/platform"), &other).await;

    let everything = store.query_index(&Query::default()).await.unwrap();
    let queries = [
        "",
        "label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest",
        "repository=apps/app",
        "repository=apps/app&repository=runtimes/platform&tag=multi",
        "tag=1.0",
        "tag:matches=1.*",
        "tag:matches=*t&tag=old",
        "architecture=arm64",
        "architecture=arm64&architecture=amd64&os=linux",
        "os=windows",
        "label:org.flatpak.ref=app/org.example.App/x86_64/stable",
        "label:org.flatpak.ref=nope&label:org.flatpak.ref=app/org.example.App/x86_64/stable",
        "label:org.flatpak.ref:matches=app/*/x86_64/*",
        "label:org.flatpak.ref:matches=app/%",
        "label:100%25_real%5C=a_b%25c",
        "label:100%25_real%5C:matches=a?b%25c",
        "label:100%25_real%5C:matches=axb*",
        "annotation:org.opencontainers.image.title=image+2",
        "annotation:org.opencontainers.image.title:exists=1&label:org.flatpak.ref:exists=1",
        "annotation:missing:exists=1",
    ];
    for raw in queries {
        let query = Query::parse(raw).unwrap();
        let filtered = store.query_index(&query).await.unwrap();
        assert_eq!(filtered.data_version, everything.data_version);
        let sql = build_response("/", &query, filtered.listings);
        let pure = build_response("/", &query, everything.listings.clone());
        assert_eq!(sql, pure, "{raw}");
    }

    // And a few against the ground truth directly.
    let flatpak =
        Query::parse("label:org.flatpak.ref:exists=1&architecture=amd64&os=linux&tag=latest")
            .unwrap();
    let r = build_response(
        "/",
        &flatpak,
        store.query_index(&flatpak).await.unwrap().listings,
    );
    assert_eq!(r.results.len(), 2);
    assert_eq!(r.results[0].name, "apps/app");
    assert_eq!(r.results[0].images.len(), 1);
    assert_eq!(r.results[0].images[0].tags, ["1.0", "latest"]);
    assert!(r.results[0].lists.is_empty());
    assert_eq!(r.results[1].name, "runtimes/platform");
    assert!(r.results[1].images.is_empty());
    assert_eq!(r.results[1].lists[0].images.len(), 1);
    assert_eq!(r.results[1].lists[0].images[0].digest, d(2).to_string());
    assert_eq!(r.results[1].lists[0].tags, ["latest", "multi"]);

    let glob = Query::parse("label:100%25_real%5C:matches=axb*").unwrap();
    let r = build_response("/", &glob, store.query_index(&glob).await.unwrap().listings);
    assert!(
        r.results.is_empty(),
        "LIKE metacharacters must match literally"
    );

    store.pool().close().await;
}

/// Timing of the Flatpak query over a few thousand manifests. Ignored by default (it
/// measures, it does not check behaviour): `cargo nextest run --run-ignored all index_query_timing`.
#[tokio::test]
#[ignore]
async fn index_query_timing() {
    let db = TestStore::start().await;
    let store = db.store.clone();
    let metadata =
        "[Application]\nname=org.example.App\nruntime=org.example.Platform/x86_64/45\n".repeat(20);
    let mut n: u32 = 0;
    let mut next = || {
        n += 1;
        Digest::sha256_of(&n.to_be_bytes())
    };
    for r in 0..300 {
        let name = repo(&format!("apps/app{r}"));
        let mut state = RepositoryState::default();
        for i in 0..5 {
            let mut amd = image(
                0,
                "amd64",
                &[
                    (
                        "org.flatpak.ref",
                        &format!("app/org.example.App{r}/x86_64/stable"),
                    ),
                    ("org.flatpak.metadata", &metadata),
                ],
            );
            amd.digest = next();
            let mut arm = amd.clone();
            arm.digest = next();
            arm.architecture = "arm64".into();
            let mut l = list(0, &[]);
            l.digest = next();
            l.entries = vec![amd.digest.clone(), arm.digest.clone()];
            let tag = if i == 0 {
                t("latest")
            } else {
                t(&format!("v{i}"))
            };
            state.tags.insert(tag, l.digest.clone());
            state.images.insert(amd.digest.clone(), amd);
            state.images.insert(arm.digest.clone(), arm);
            state.lists.insert(l.digest.clone(), l);
            let mut plain = image(0, "amd64", &[]);
            plain.digest = next();
            state
                .tags
                .insert(t(&format!("plain{i}")), plain.digest.clone());
            state.images.insert(plain.digest.clone(), plain);
        }
        write(&store, &name, &state).await;
    }
    sqlx::query("ANALYZE").execute(store.pool()).await.unwrap();
    let query =
        Query::parse("label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest")
            .unwrap();
    for _ in 0..3 {
        let start = std::time::Instant::now();
        let snapshot = store.query_index(&query).await.unwrap();
        let sql = start.elapsed();
        let body = build_response("/", &query, snapshot.listings).to_json();
        eprintln!(
            "flatpak query: sql {sql:?}, total {:?}, {} bytes",
            start.elapsed(),
            body.len()
        );
    }
    let query = Query::parse("label:org.flatpak.ref:matches=app/org.example.App1*").unwrap();
    let start = std::time::Instant::now();
    let snapshot = store.query_index(&query).await.unwrap();
    eprintln!(
        "matches query: {:?}, {} repositories",
        start.elapsed(),
        snapshot.listings.len()
    );
    store.pool().close().await;
}

/// A repository holding one image tagged `latest`.
fn single(n: u8, labels: &[(&str, &str)]) -> RepositoryState {
    let image = image(n, "amd64", labels);
    RepositoryState {
        tags: [(t("latest"), image.digest.clone())].into(),
        images: [(image.digest.clone(), image)].into(),
        ..RepositoryState::default()
    }
}

#[tokio::test]
async fn bodhi_builds_are_matched_by_labels_and_names() {
    use regindex::bus::bodhi::{BuildMatch, Nvr};
    let db = TestStore::start().await;
    let store = db.store.clone();
    let osbs = |component: &str, release: &str, name: &str| {
        vec![
            ("com.redhat.component", component.to_owned()),
            ("version", "1.0".to_owned()),
            ("release", release.to_owned()),
            ("name", name.to_owned()),
        ]
    };
    let labels = |pairs: &[(&str, String)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    };
    for (n, repository, pairs) in [
        // The build itself, whose `name` label names another repository.
        (
            1,
            "mirror/cockpit",
            labels(&osbs("cockpit-container", "3", "fedora/cockpit")),
        ),
        // An earlier build of the component.
        (
            2,
            "fedora/cockpit",
            labels(&osbs("cockpit-container", "2", "fedora/cockpit")),
        ),
        // Named after the NVR's name, no labels.
        (3, "tools/cockpit-container", vec![]),
        // Unrelated, with a component whose name contains the other's.
        (
            4,
            "fedora/cockpit-ws",
            labels(&osbs("cockpit-container-ws", "3", "fedora/cockpit-ws")),
        ),
        // A `name` label that is no repository name is skipped.
        (5, "odd/labels", labels(&osbs("odd", "1", "Not A Name"))),
    ] {
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        write(&store, &repo(repository), &single(n, &pairs)).await;
    }
    let mut found = store
        .build_matches(&Nvr::parse("cockpit-container-1.0-3").unwrap())
        .await
        .unwrap();
    found.sort();
    assert_eq!(
        found,
        [
            (repo("fedora/cockpit"), BuildMatch::NameLabel),
            (repo("fedora/cockpit"), BuildMatch::Component),
            (repo("mirror/cockpit"), BuildMatch::LabelNvr),
            (repo("mirror/cockpit"), BuildMatch::Component),
            (repo("tools/cockpit-container"), BuildMatch::RepositoryName),
        ]
    );
    assert!(store
        .build_matches(&Nvr::parse("odd-1.0-1").unwrap())
        .await
        .unwrap()
        .iter()
        .all(|(r, _)| r == &repo("odd/labels")));
    assert!(store
        .build_matches(&Nvr::parse("nothing_like_it-1-1").unwrap())
        .await
        .unwrap()
        .is_empty());

    // Stored tags for the warm pass.
    let tags = store.stored_tags().await.unwrap();
    assert_eq!(tags.len(), 5);
    assert_eq!(tags[&repo("fedora/cockpit")], [(t("latest"), d(2))].into());

    // Recent updates: most recent first, re-recording moves a repository up, the window
    // forgets.
    let window = Duration::from_secs(3600);
    store
        .record_update_repositories("U-1", &[repo("a"), repo("b")], window)
        .await
        .unwrap();
    store
        .record_update_repositories("U-2", &[repo("a")], window)
        .await
        .unwrap();
    assert_eq!(
        store.recent_update_repositories(window).await.unwrap(),
        [repo("a"), repo("b")]
    );
    sqlx::query("UPDATE bodhi_update_repositories SET seen_at = now() - interval '2 hours' WHERE repository = 'b'")
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(
        store.recent_update_repositories(window).await.unwrap(),
        [repo("a")]
    );
    store
        .record_update_repositories("U-3", &[], window)
        .await
        .unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM bodhi_update_repositories")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(rows, 1, "older rows are deleted when new ones are recorded");
}

/// The periodic jobs' last successes: absent at first, kept across migrations, and a run
/// that started earlier than the recorded one (finishing late) never moves it back.
#[tokio::test]
async fn periodic_job_successes_only_move_forward() {
    use regindex::store::PeriodicJob::{FullScan, GarbageCollection};
    let db = TestStore::start().await;
    let store = db.store.clone();
    assert_eq!(store.last_success(FullScan).await.unwrap(), None);

    // Whole microseconds: what PostgreSQL keeps.
    let at = chrono::DateTime::from_timestamp(1_800_000_000, 123_456_000).unwrap();
    store.record_success(FullScan, at).await.unwrap();
    let earlier = at - chrono::Duration::hours(1);
    store.record_success(FullScan, earlier).await.unwrap();
    assert_eq!(store.last_success(FullScan).await.unwrap(), Some(at));
    assert_eq!(store.last_success(GarbageCollection).await.unwrap(), None);

    let later = at + chrono::Duration::seconds(1);
    store.record_success(FullScan, later).await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.last_success(FullScan).await.unwrap(), Some(later));
    store.pool().close().await;
}

/// A database of the previous schema version (no `periodic_jobs`) is refused until
/// `migrate`, which adds what is missing and keeps the data.
#[tokio::test]
async fn migrate_upgrades_a_version_2_database() {
    let db = TestStore::start().await;
    let store = db.store.clone();
    write(&store, &repo("apps/app"), &app_state()).await;
    sqlx::query("DROP TABLE periodic_jobs")
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE regindex_schema SET version = 2")
        .execute(store.pool())
        .await
        .unwrap();
    let err = Store::connect(&db.config).await.err().unwrap();
    assert!(
        matches!(err, StoreError::SchemaOutdated { found: 2, .. }),
        "{err}"
    );
    store.migrate().await.unwrap();
    let upgraded = Store::connect(&db.config).await.unwrap();
    assert_eq!(
        upgraded
            .last_success(regindex::store::PeriodicJob::FullScan)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        upgraded.load_repository(&repo("apps/app")).await.unwrap(),
        app_state()
    );
    upgraded.pool().close().await;
    db.finish().await;
}

/// A version 5 database (no `repositories.changed_version`) is refused until `migrate`,
/// which adds the column and keeps the data; from then on each change records the data
/// version of its commit as the repository's own version, and only for that repository.
#[tokio::test]
async fn migrate_upgrades_a_version_5_database_with_repository_versions() {
    let db = TestStore::start().await;
    let store = db.store.clone();
    write(&store, &repo("apps/app"), &app_state()).await;
    write(&store, &repo("apps/other"), &app_state()).await;
    sqlx::query("ALTER TABLE repositories DROP COLUMN changed_version")
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE regindex_schema SET version = 5")
        .execute(store.pool())
        .await
        .unwrap();
    let err = Store::connect(&db.config).await.err().unwrap();
    assert!(
        matches!(err, StoreError::SchemaOutdated { found: 5, .. }),
        "{err}"
    );
    store.migrate().await.unwrap();
    let upgraded = Store::connect(&db.config).await.unwrap();
    assert_eq!(
        upgraded.load_repository(&repo("apps/app")).await.unwrap(),
        app_state()
    );
    let versions = |store: Store| async move {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT name, changed_version FROM repositories ORDER BY name")
                .fetch_all(store.pool())
                .await
                .unwrap();
        rows
    };
    assert_eq!(
        versions(upgraded.clone()).await,
        [("apps/app".to_owned(), 0), ("apps/other".to_owned(), 0)]
    );
    let mut changed = app_state();
    changed.tags.remove(&t("old"));
    write(&upgraded, &repo("apps/app"), &changed).await;
    let data_version = upgraded.data_version().await.unwrap();
    assert_eq!(
        versions(upgraded.clone()).await,
        [
            ("apps/app".to_owned(), data_version),
            ("apps/other".to_owned(), 0)
        ]
    );
    // Writing the same state again changes nothing, so neither version moves.
    write(&upgraded, &repo("apps/app"), &changed).await;
    assert_eq!(upgraded.data_version().await.unwrap(), data_version);
    assert_eq!(versions(upgraded.clone()).await[0].1, data_version);
    upgraded.pool().close().await;
    db.finish().await;
}

/// A change announces its new data version on `DATA_VERSION_CHANNEL` at commit (not
/// before), and a write that changes nothing announces nothing.
#[tokio::test]
async fn a_change_notifies_its_data_version_at_commit() {
    let db = TestStore::start().await;
    let store = db.store.clone();
    let mut listener = sqlx::postgres::PgListener::connect_with(store.pool())
        .await
        .unwrap();
    listener
        .listen(regindex::store::DATA_VERSION_CHANNEL)
        .await
        .unwrap();
    let name = repo("apps/app");

    let state = app_state();
    let images: Vec<Image> = state.images.values().cloned().collect();
    let lists: Vec<ImageList> = state.lists.values().cloned().collect();
    let mut tx = store.begin_repository(&name).await.unwrap();
    assert!(
        tx.replace(&state.tags, &images, &lists)
            .await
            .unwrap()
            .changed
    );
    assert!(
        listener.next_buffered().is_none(),
        "nothing is announced before the commit"
    );
    tx.commit().await.unwrap();
    let notification = tokio::time::timeout(Duration::from_secs(30), listener.recv())
        .await
        .expect("a notification")
        .unwrap();
    let version = store.data_version().await.unwrap();
    assert_eq!(notification.payload(), version.to_string());

    // Unchanged: no notification; the next change's comes next.
    write(&store, &name, &app_state()).await;
    let mut changed = app_state();
    changed.tags.remove(&t("old"));
    write(&store, &name, &changed).await;
    let next = tokio::time::timeout(Duration::from_secs(30), listener.recv())
        .await
        .expect("a notification")
        .unwrap();
    assert_eq!(next.payload(), (version + 1).to_string());
    assert_eq!(store.data_version().await.unwrap(), version + 1);
}

/// A caller dropped while its transaction's `BEGIN` is unanswered (a request whose
/// client went away, a cancelled refetch) leaves no transaction open on the pooled
/// connection. sqlx alone returned the connection inside that transaction: its next user
/// read an old snapshot, failed on `SET TRANSACTION`, and its locks outlived its work.
#[tokio::test]
async fn a_caller_dropped_while_beginning_leaves_no_transaction_behind() {
    let db = TestStore::start().await;
    let proxy = regindex_testkit::TcpProxy::start("127.0.0.1:5432".parse().unwrap())
        .await
        .unwrap();
    let mut url = url::Url::parse(&db.url()).unwrap();
    url.set_port(Some(proxy.addr().port())).unwrap();
    // One connection, so the check below gets the one the dropped caller had; not
    // pinged on acquire, so what the proxy holds is the `BEGIN`.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .connect(url.as_str())
        .await
        .unwrap();
    let store = Store::from_pool(pool.clone());

    proxy.freeze();
    let dropped = tokio::time::timeout(
        Duration::from_millis(300),
        store.load_repository(&repo("a/b")),
    )
    .await;
    assert!(dropped.is_err(), "the BEGIN was held by the proxy");
    proxy.thaw();

    // The connection back in the pool, as its next user finds it.
    let mut connection = pool.acquire().await.unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *connection)
        .await
        .unwrap();
    let state: String = sqlx::query_scalar("SELECT state FROM pg_stat_activity WHERE pid = $1")
        .bind(pid)
        .fetch_one(db.store.pool())
        .await
        .unwrap();
    assert_eq!(
        state, "idle",
        "the connection came back inside the dropped caller's transaction"
    );
    drop(connection);
    pool.close().await;
    db.finish().await;
}
