//! The data version in memory: what the api's caches key on, without a database round
//! trip per request.
//!
//! Every commit that changes what index queries see bumps the `data_version` row and, in
//! the same transaction, sends `NOTIFY regindex_data_version, '<version>'` (see
//! `replace.rs`); PostgreSQL delivers it at commit. A [`DataVersionWatch`] listens on a
//! connection of its own and keeps the highest version seen. The version is only
//! trusted while that connection listens: after it is lost, the watch reconnects,
//! listens again and only then re-reads the row, so no commit falls in between. A slow
//! poll of the row on another connection is the safety net for a connection that died
//! without anyone noticing (no notification arrives, yet no error either).
//!
//! The version never goes backwards: notifications may arrive out of order with the
//! polls, and only a higher version replaces the current one.
//!
//! Read replicas (`database.read_url`, not built yet) do not receive notifications, and
//! a replica may not have replayed a version the primary announced; see
//! docs/architecture.md, "Serving", for how this watch should combine with them.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::availability::{retry_backoff, target};

/// The channel of the notification sent with every data version bump; its payload is
/// the new version in decimal.
pub const DATA_VERSION_CHANNEL: &str = "regindex_data_version";

/// Between polls of the `data_version` row: how late a change is seen at most when its
/// notification is lost without the connection reporting an error.
pub const DATA_VERSION_POLL_INTERVAL: Duration = Duration::from_secs(3);

/// What the watch knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Known {
    /// Highest version seen; 0 before the first read (versions start at 1).
    version: i64,
    /// The listening connection is up and listened before `version` was read.
    listening: bool,
}

/// A handle on the watch's tasks; cheap to clone. They stop when `stop` is cancelled or
/// every handle is gone.
#[derive(Debug, Clone)]
pub struct DataVersionWatch {
    state: watch::Receiver<Known>,
}

impl DataVersionWatch {
    /// Starts listening to the database `options` connect to, and polling it every
    /// `poll_interval` (normally [`DATA_VERSION_POLL_INTERVAL`]).
    pub fn spawn(
        options: PgConnectOptions,
        poll_interval: Duration,
        stop: CancellationToken,
    ) -> Self {
        let (sender, state) = watch::channel(Known::default());
        // Two connections of its own: the listener's, which waits, and the poll's. The
        // request pool keeps all of its connections.
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_lazy_with(options.clone());
        tokio::spawn(listen_loop(
            pool.clone(),
            target(&options),
            sender.clone(),
            stop.clone(),
        ));
        tokio::spawn(poll_loop(pool, poll_interval, sender, stop));
        Self { state }
    }

    /// The current data version, when it can be trusted without asking the database:
    /// the listener is connected, so every later commit will be announced to it.
    pub fn current(&self) -> Option<i64> {
        let known = *self.state.borrow();
        (known.listening && known.version > 0).then_some(known.version)
    }

    /// Waits until [`current`](Self::current) is at least `version`.
    pub async fn wait_for(&self, version: i64) {
        let mut state = self.state.clone();
        let _ = state
            .wait_for(|k| k.listening && k.version >= version)
            .await;
    }
}

/// Raises `known` to `seen` if that is newer; whether it changed. Never lowers it.
fn advance(known: &mut i64, seen: i64) -> bool {
    if seen > *known {
        *known = seen;
        true
    } else {
        false
    }
}

/// The version a notification announces, if its payload is one.
fn parse_payload(payload: &str) -> Option<i64> {
    payload.trim().parse().ok().filter(|v: &i64| *v > 0)
}

fn publish(sender: &watch::Sender<Known>, seen: i64) {
    sender.send_if_modified(|k| advance(&mut k.version, seen));
}

fn set_listening(sender: &watch::Sender<Known>, listening: bool) {
    sender.send_if_modified(|k| std::mem::replace(&mut k.listening, listening) != listening);
}

async fn read_version<'e>(executor: impl sqlx::PgExecutor<'e>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT version FROM data_version")
        .fetch_one(executor)
        .await
}

async fn listen_loop(
    pool: PgPool,
    target: String,
    sender: watch::Sender<Known>,
    stop: CancellationToken,
) {
    let run = async {
        let mut backoff = retry_backoff();
        loop {
            match listen(&pool, &sender).await {
                Ok(()) => {}
                Err(e) => {
                    let delay = backoff.next().unwrap_or(DATA_VERSION_POLL_INTERVAL);
                    debug!(database = %target, error = %e, retry_in = ?delay, "data version listener: {e}");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            }
            // The connection was lost after working: retry at once.
            backoff = retry_backoff();
            info!(database = %target, "data version listener lost its connection; reconnecting");
        }
    };
    tokio::select! {
        () = run => {}
        () = stop.cancelled() => {}
        () = sender.closed() => {}
    }
    set_listening(&sender, false);
}

/// One listening session: connect, listen, read the version, then follow notifications
/// until the connection is lost (`Ok`) or fails (`Err`). Either way it is not listening
/// afterwards.
async fn listen(pool: &PgPool, sender: &watch::Sender<Known>) -> Result<(), sqlx::Error> {
    let outcome = async {
        let mut listener = PgListener::connect_with(pool).await?;
        // A lost connection is reported (`None`) and reconnected by the next session,
        // which then re-reads the version.
        listener.eager_reconnect(false);
        listener.listen(DATA_VERSION_CHANNEL).await?;
        // Read after LISTEN: a commit after the read is announced, one before is read.
        let version = read_version(&mut listener).await?;
        publish(sender, version);
        set_listening(sender, true);
        loop {
            match listener.try_recv().await? {
                Some(notification) => match parse_payload(notification.payload()) {
                    Some(version) => publish(sender, version),
                    None => warn!(
                        payload = notification.payload(),
                        "ignoring a {DATA_VERSION_CHANNEL} notification that is not a version"
                    ),
                },
                None => return Ok(()),
            }
        }
    }
    .await;
    set_listening(sender, false);
    outcome
}

async fn poll_loop(
    pool: PgPool,
    interval: Duration,
    sender: watch::Sender<Known>,
    stop: CancellationToken,
) {
    let run = async {
        loop {
            tokio::time::sleep(interval).await;
            match read_version(&pool).await {
                Ok(version) => publish(&sender, version),
                Err(e) => debug!(error = %e, "data version poll failed"),
            }
        }
    };
    tokio::select! {
        () = run => {}
        () = stop.cancelled() => {}
        () = sender.closed() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_never_goes_backwards() {
        let mut known = 0;
        assert!(advance(&mut known, 5));
        assert!(!advance(&mut known, 3), "an older poll or notification");
        assert!(!advance(&mut known, 5));
        assert_eq!(known, 5);
        assert!(advance(&mut known, 6));
        assert_eq!(known, 6);
    }

    #[test]
    fn payloads() {
        assert_eq!(parse_payload("42"), Some(42));
        assert_eq!(parse_payload(" 7\n"), Some(7));
        for bad in ["", "x", "-1", "0", "1.5", "99999999999999999999"] {
            assert_eq!(parse_payload(bad), None, "{bad:?}");
        }
    }
}
