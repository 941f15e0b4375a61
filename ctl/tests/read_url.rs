//! `regindexctl` uses the primary (`database.url`) only, never `database.read_url`
//! (issue 10): a replica refuses writes, and its lag would show old state.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use regindex_testkit::TestDatabase;

/// `migrate` (writes) and `problems` (reads) work against the primary, and nothing
/// connects to the listener `read_url` names.
#[tokio::test]
async fn regindexctl_never_connects_to_read_url() {
    let db = TestDatabase::create().await.unwrap();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let read_url = format!(
        "postgres://postgres@{}/regindex",
        listener.local_addr().unwrap()
    );
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let accept = tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    for args in [&["migrate"][..], &["problems"][..]] {
        let output = tokio::task::spawn_blocking({
            let (url, read_url) = (db.url(), read_url.clone());
            move || {
                Command::new(env!("CARGO_BIN_EXE_regindexctl"))
                    .args(args)
                    .env_remove("REGINDEX_CONFIG")
                    .env("REGINDEX_DATABASE__URL", url)
                    .env("REGINDEX_DATABASE__READ_URL", read_url)
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        assert!(
            output.status.success(),
            "regindexctl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "connections to read_url"
    );
    accept.abort();
    db.drop().await.unwrap();
}
