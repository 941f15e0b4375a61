//! The data version in memory (issue 13, item 2): a commit reaches the api through
//! `NOTIFY` within milliseconds, and a cached answer or a 304 is served without reading
//! anything from the database.

mod common;

use std::future::IntoFuture as _;
use std::sync::Arc;
use std::time::Duration;

use common::{get, start};
use regindex::config::{Config, DatabaseConfig};
use regindex::store::{DataVersionWatch, SessionSettings, Store};
use regindex_api::AppState;
use regindex_testkit::app::App;
use regindex_testkit::{eventually_every, free_port, ImageSpec};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);
/// A poll interval longer than any test: what a watch learns, it learns from `NOTIFY`.
const NO_POLL: Duration = Duration::from_secs(86_400);
const QUERY: &str =
    "/index/static?label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest";

/// What `serve` needs besides the stack: webhook authentication, and a broker that is
/// not there (the index does not need it).
fn servable(config: &mut Config) {
    config.api.webhook_token = Some("secret".to_owned().into());
    config.amqp.url = "amqp://guest:guest@127.0.0.1:1/%2f".to_owned().into();
    config.history.enabled = false;
    config.api.publish_pulls = false;
}

async fn push_app(stack: &App, repository: &str, app_id: &str) {
    stack
        .registry
        .push_image(
            repository,
            Some("latest"),
            &ImageSpec::flatpak(app_id, "x86_64"),
        )
        .await
        .unwrap();
    stack.refetch(repository).await.unwrap();
}

/// The api as the binary runs it: a commit made through the store (the worker's path)
/// is served as soon as the api sees its notification. The elapsed time is printed, not
/// asserted (speed goals live in docs/benchmarks.md).
#[tokio::test]
async fn a_commit_is_served_as_soon_as_it_is_announced() {
    // The api as its binary runs it (data version watch, database monitor).
    let stack = App::builder()
        .api()
        .no_notifications()
        .config(servable)
        .start()
        .await;
    push_app(&stack, "apps/calc", "org.example.Calc").await;
    let client = reqwest::Client::new();
    let url = format!("{}{QUERY}", stack.base());
    eventually_every(
        "the first answer",
        WAIT,
        Duration::from_millis(1),
        || async {
            let answer = get(&client, &url, None).await;
            (answer.status == 200 && answer.body.contains("org.example.Calc")).then_some(())
        },
    )
    .await;

    for (i, app) in ["org.example.Draw", "org.example.Write", "org.example.Play"]
        .iter()
        .enumerate()
    {
        push_app(&stack, &format!("apps/app{i}"), app).await;
        let committed = Instant::now();
        let answer = eventually_every("the new answer", WAIT, Duration::from_millis(1), || async {
            let answer = get(&client, &url, None).await;
            answer.body.contains(app).then_some(answer)
        })
        .await;
        println!("{app} served {:?} after its commit", committed.elapsed());
        assert_eq!(answer.status, 200);
        assert!(!answer.stale);
    }
    stack.stop_api(0).await.unwrap();
    stack.finish().await;
}

/// Deterministic proof that a cached answer and a 304 do not read the database: the
/// same cache and data version watch, behind a store whose database does not exist,
/// still serve them as current (the old code read the version per request, failed, and
/// served the answer marked stale). Once a commit moves the version, that api knows its
/// answer is outdated without asking anyone, and marks it stale; the api with a working
/// store serves the new answer.
#[tokio::test]
async fn cached_answers_and_304s_are_served_from_memory() {
    let stack = start(|_| {}).await;
    push_app(&stack, "apps/calc", "org.example.Calc").await;
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    // No poll within the test: the watch learns only from notifications.
    let watch = DataVersionWatch::spawn(stack.store.connect_options(), NO_POLL, stop);
    let version = stack.store.data_version().await.unwrap();
    tokio::time::timeout(WAIT, watch.wait_for(version))
        .await
        .expect("the watch to listen");

    let live = AppState::new(Arc::new(stack.config.clone()), stack.store.clone())
        .with_data_version(watch.clone());
    let nowhere = DatabaseConfig {
        url: format!(
            "postgres://postgres@127.0.0.1:{}/nowhere",
            free_port().unwrap()
        )
        .into(),
        acquire_timeout: std::time::Duration::from_millis(500),
        ..DatabaseConfig::default()
    };
    let cut_off = AppState {
        store: Store::connect_lazy(&nowhere, &SessionSettings::default()).unwrap(),
        ..live.clone()
    };
    let (live_url, cut_off_url) = (serve(live).await, serve(cut_off).await);
    let client = reqwest::Client::new();

    let first = get(&client, &live_url, None).await;
    assert_eq!(first.status, 200);
    assert!(first.body.contains("org.example.Calc"));
    let etag = first.etag.clone().unwrap();

    let cached = get(&client, &cut_off_url, None).await;
    assert_eq!(
        (cached.status, cached.stale),
        (200, false),
        "{}",
        cached.body
    );
    assert_eq!(cached.body, first.body);
    assert_eq!(cached.etag.as_deref(), Some(etag.as_str()));
    let not_modified = get(&client, &cut_off_url, Some(&etag)).await;
    assert_eq!((not_modified.status, not_modified.stale), (304, false));

    push_app(&stack, "apps/draw", "org.example.Draw").await;
    let newer = stack.store.data_version().await.unwrap();
    assert!(newer > version);
    tokio::time::timeout(WAIT, watch.wait_for(newer))
        .await
        .expect("the notification");
    assert_eq!(watch.current(), Some(newer));

    let outdated = get(&client, &cut_off_url, Some(&etag)).await;
    assert!(outdated.stale, "the cached answer is known to be outdated");
    let fresh = get(&client, &live_url, Some(&etag)).await;
    assert_eq!((fresh.status, fresh.stale), (200, false));
    assert!(fresh.body.contains("org.example.Draw"));
    stack.finish().await;
}

/// Serves `state`'s public routes on a free port; the URL of `QUERY` there.
async fn serve(state: AppState) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}{QUERY}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, regindex_api::router(state)).into_future());
    url
}
