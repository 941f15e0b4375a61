//! How a refetch meets the database and other refetches, against a real docker-registry
//! and PostgreSQL: no connection or lock is held while the registry answers, a refetch
//! that listed the tags earlier never overwrites one that listed them later, and a
//! manifest the store lost meanwhile is fetched again.

mod support;

use std::time::Duration;

use regindex::registry::RegistryClient;
use regindex::sync::{SyncError, Syncer};
use regindex_testkit::app::App;
use regindex_testkit::{ImageSpec, RegistryGate};
use support::{repo, tags};

const WAIT: Duration = Duration::from_secs(10);

/// A syncer on the app's store asking the registry at `url` (the registry itself, or a
/// gate before it).
fn syncer(app: &App, url: &str) -> Syncer {
    let mut config = app.config.registry.clone();
    config.url = url.parse().unwrap();
    Syncer::new(RegistryClient::new(&config).unwrap(), app.store.clone())
}

/// While the registry is slow to answer, the refetch holds no database connection and
/// not the repository's lock: another writer gets the lock at once.
#[tokio::test]
async fn no_connection_or_lock_is_held_while_the_registry_answers() {
    let h = App::builder()
        .config(|c| c.database.max_connections = 4)
        .start()
        .await;
    let name = "apps/slow";
    let pushed = h
        .registry
        .push_image(name, Some("latest"), &ImageSpec::new("amd64"))
        .await
        .unwrap();
    let gate = RegistryGate::start(&h.registry.url()).await.unwrap();

    for held in ["/tags/list", "/manifests/", "/blobs/"] {
        gate.hold(held);
        // A fresh syncer each round: its config cache would spare the blob request.
        let refetch = tokio::spawn({
            let syncer = syncer(&h, gate.url());
            async move { syncer.refetch(&repo(name)).await }
        });
        gate.until_held(1, WAIT).await.unwrap();
        // The refetch is held at the gate; a connection it used before goes back to the
        // pool asynchronously (sqlx), so wait for that, not for a fixed time.
        let pool = h.store.pool();
        regindex_testkit::eventually(
            &format!("no connection in use while waiting for {held}"),
            Duration::from_secs(5),
            || async { (pool.size() as usize == pool.num_idle()).then_some(()) },
        )
        .await;
        let other = tokio::time::timeout(
            Duration::from_secs(2),
            h.store.begin_repository(&repo(name)),
        )
        .await
        .unwrap_or_else(|_| panic!("the repository is locked while waiting for {held}"))
        .unwrap();
        drop(other);
        gate.release();
        refetch.await.unwrap().unwrap();
        // Next round starts cold, so that every kind of request happens again.
        sqlx::query("DELETE FROM repositories")
            .execute(h.store.pool())
            .await
            .unwrap();
    }
    syncer(&h, &h.registry.url())
        .refetch(&repo(name))
        .await
        .unwrap();
    assert_eq!(
        h.stored(name).await.tags,
        tags(&[("latest", &pushed.digest)])
    );
    h.finish().await;
}

/// Refetch A lists the tags, then waits for the registry; meanwhile the repository
/// changes and refetch B, started later, writes the new state. A must not write its
/// older listing over it.
#[tokio::test]
async fn a_refetch_that_listed_earlier_does_not_overwrite_a_later_one() {
    let h = App::builder()
        .config(|c| c.database.max_connections = 4)
        .start()
        .await;
    let name = "apps/raced";
    let r = &h.registry;
    r.push_image(name, Some("latest"), &ImageSpec::new("amd64").seed(1))
        .await
        .unwrap();
    let gate = RegistryGate::start(&r.url()).await.unwrap();
    gate.hold("/manifests/");
    let early = tokio::spawn({
        let syncer = syncer(&h, gate.url());
        async move { syncer.refetch(&repo(name)).await }
    });
    gate.until_held(1, WAIT).await.unwrap(); // A listed [latest]

    let v2 = r
        .push_image(name, Some("latest"), &ImageSpec::new("amd64").seed(2))
        .await
        .unwrap();
    r.tag(name, "new", &v2.digest).await.unwrap();
    let late = syncer(&h, &r.url()).refetch(&repo(name)).await.unwrap();
    assert!(!late.superseded);
    let expected = tags(&[("latest", &v2.digest), ("new", &v2.digest)]);
    assert_eq!(h.stored(name).await.tags, expected);

    gate.release();
    let early = early.await.unwrap().unwrap();
    assert!(early.superseded, "{early:?}");
    assert_eq!(
        h.stored(name).await.tags,
        expected,
        "the later listing stays"
    );
    h.finish().await;
}

/// Refetch A read the store (image X stored) and waits; refetch B, which listed earlier,
/// writes a state without X (so X is deleted). A's write finds X missing, fetches it,
/// and writes the registry's latest state.
#[tokio::test]
async fn a_manifest_the_store_lost_meanwhile_is_fetched_again() {
    let h = App::builder()
        .config(|c| c.database.max_connections = 4)
        .start()
        .await;
    let name = "apps/lost";
    let r = &h.registry;
    let x = r
        .push_image(name, Some("a"), &ImageSpec::new("amd64").seed(1))
        .await
        .unwrap();
    syncer(&h, &r.url()).refetch(&repo(name)).await.unwrap();

    // The registry loses `a`, gains `b`; B lists that, then waits.
    r.delete_manifest(name, &x.digest).await.unwrap();
    let y = r
        .push_image(name, Some("b"), &ImageSpec::new("amd64").seed(2))
        .await
        .unwrap();
    let gate_b = RegistryGate::start(&r.url()).await.unwrap();
    gate_b.hold("/manifests/");
    let b = tokio::spawn({
        let syncer = syncer(&h, gate_b.url());
        async move { syncer.refetch(&repo(name)).await }
    });
    gate_b.until_held(1, WAIT).await.unwrap();

    // `a` comes back (same content, same digest); A reads the store (X stored), lists
    // [a, b] and waits.
    r.push_image(name, Some("a"), &ImageSpec::new("amd64").seed(1))
        .await
        .unwrap();
    let gate_a = RegistryGate::start(&r.url()).await.unwrap();
    gate_a.hold("/manifests/");
    let a = tokio::spawn({
        let syncer = syncer(&h, gate_a.url());
        async move { syncer.refetch(&repo(name)).await }
    });
    gate_a.until_held(1, WAIT).await.unwrap();

    // B writes its (older) listing: only `b`, so X is dropped from the store.
    gate_b.release();
    let b = b.await.unwrap().unwrap();
    assert!(!b.superseded);
    assert_eq!(h.stored(name).await.tags, tags(&[("b", &y.digest)]));

    // A finds X gone at write time, fetches it, and writes [a, b].
    let mark = r.log_mark().await.unwrap();
    gate_a.release();
    let a = a.await.unwrap().unwrap();
    assert!(!a.superseded);
    assert_eq!(
        h.stored(name).await.tags,
        tags(&[("a", &x.digest), ("b", &y.digest)])
    );
    let refetched_x = r
        .requests_since(mark)
        .await
        .unwrap()
        .into_iter()
        .filter(|q| q.is_manifest_get() && q.path().ends_with(&x.digest))
        .count();
    assert_eq!(refetched_x, 1, "X fetched again by digest, once");
    h.finish().await;
}

/// The garbage collection forgets the refetch ticket of a repository that is gone once no
/// refetch that took an older ticket may still write, and a refetch older than that bound
/// does not write what it listed.
#[tokio::test]
async fn the_gc_forgets_the_tickets_of_gone_repositories() {
    let h = App::builder()
        .config(|c| c.database.max_connections = 4)
        .start()
        .await;
    let r = &h.registry;
    let spec = |seed| ImageSpec::new("amd64").seed(seed);
    r.push_image("apps/kept", Some("a"), &spec(1))
        .await
        .unwrap();
    let gone = r
        .push_image("apps/gone", Some("a"), &spec(2))
        .await
        .unwrap();
    let syncer = syncer(&h, &r.url());
    syncer.refetch(&repo("apps/kept")).await.unwrap();
    syncer.refetch(&repo("apps/gone")).await.unwrap();
    r.delete_manifest("apps/gone", &gone.digest).await.unwrap();
    syncer.refetch(&repo("apps/gone")).await.unwrap();
    assert_eq!(h.store.repositories().await.unwrap(), [repo("apps/kept")]);
    let rows = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT repository FROM repository_refetches ORDER BY repository",
        )
        .fetch_all(h.store.pool())
        .await
        .unwrap()
    };
    assert_eq!(rows().await, ["apps/gone", "apps/kept"]);

    // With no age bound, the first collection notes the tickets and the next one removes
    // the rows of gone repositories below that note.
    let unbounded = h.store.clone().with_refetch_max_age(Duration::ZERO);
    assert_eq!(unbounded.gc().await.unwrap().refetch_rows_removed, 0);
    assert_eq!(rows().await, ["apps/gone", "apps/kept"]);
    assert_eq!(unbounded.gc().await.unwrap().refetch_rows_removed, 1);
    assert_eq!(rows().await, ["apps/kept"]);

    // A refetch older than the bound fails (to be retried) and writes nothing.
    let pushed = r
        .push_image("apps/gone", Some("b"), &spec(3))
        .await
        .unwrap();
    let mut config = h.config.registry.clone();
    config.url = r.url().parse().unwrap();
    let too_slow = Syncer::new(RegistryClient::new(&config).unwrap(), unbounded);
    let err = too_slow.refetch(&repo("apps/gone")).await.unwrap_err();
    assert!(
        matches!(err, SyncError::TooSlow { .. }) && err.is_transient(),
        "{err}"
    );
    assert_eq!(h.store.repositories().await.unwrap(), [repo("apps/kept")]);
    // Within the bound, it writes.
    syncer.refetch(&repo("apps/gone")).await.unwrap();
    assert_eq!(
        h.stored("apps/gone").await.tags,
        tags(&[("b", &pushed.digest)])
    );
    h.finish().await;
}
