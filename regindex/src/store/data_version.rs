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
//! With a read replica (`database.read_url`), the version the primary announces is not
//! the one to serve: the replica may not have replayed it yet, and NOTIFY does not reach
//! a standby. The watch then also follows the replica's own `data_version` row (the
//! *replayed* version), polling it quickly while it is behind the announced one, and
//! [`current`](DataVersionWatch::current) is the replayed version. Every connection of
//! the api's replica pool checks, when handed out, that its server has replayed at least
//! the highest version the watch has seen there (the [`VersionFloor`]): a replica that
//! restarted behind, or another replica behind the same address, is waited for rather
//! than read. See docs/architecture.md, "Serving".

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgConnection, PgPool};
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

/// While the replica is behind the announced version, it is polled this often: how much
/// later than the replica itself the api serves a version.
pub const REPLICA_CATCH_UP_POLL: Duration = Duration::from_millis(10);

/// What the watch knows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Known {
    /// Highest version the primary announced; 0 before the first read (versions start
    /// at 1).
    version: i64,
    /// The listening connection is up and listened before `version` was read.
    listening: bool,
    /// Highest version seen on the replica (0: none yet, or no replica).
    replayed: i64,
    /// The replica's last reported replay delay, in seconds (0 when it has replayed all
    /// it received).
    replay_lag_secs: f64,
}

/// The replica's position as the api sees it, for metrics and `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplicaLag {
    /// Highest version the primary announced.
    pub announced: i64,
    /// Highest version read on the replica.
    pub replayed: i64,
    /// `announced - replayed`, never negative.
    pub versions_behind: i64,
    /// `now() - pg_last_xact_replay_timestamp()` on the replica while it has WAL left to
    /// replay, else 0.
    pub seconds_behind: f64,
    /// The primary's listener is connected (announcements arrive).
    pub listening: bool,
}

/// The lowest data version the api's replica connections may show: the highest one it
/// has seen there, so keyed and served with. Only rises. Shared by the watch (which
/// raises it) and the replica pool (which checks every connection against it).
#[derive(Debug, Clone, Default)]
pub struct VersionFloor(Arc<AtomicI64>);

impl VersionFloor {
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Acquire)
    }

    /// Raises the floor to `version` if that is higher.
    pub fn raise(&self, version: i64) {
        self.0.fetch_max(version, Ordering::AcqRel);
    }
}

/// A handle on the watch's tasks; cheap to clone. They stop when `stop` is cancelled or
/// every handle is gone.
#[derive(Debug, Clone)]
pub struct DataVersionWatch {
    state: watch::Receiver<Known>,
    /// Set when following a replica.
    replica: Option<VersionFloor>,
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
        Self {
            state,
            replica: None,
        }
    }

    /// As [`spawn`](Self::spawn) on the `primary`, and also follows the `replica` the
    /// api reads from: polls its `data_version` row every `poll_interval`, and every
    /// [`REPLICA_CATCH_UP_POLL`] while it is behind the primary's announcement. Every
    /// version seen on the replica raises `floor` (see [`Store::connect_lazy_replica`]).
    ///
    /// [`Store::connect_lazy_replica`]: super::Store::connect_lazy_replica
    pub fn spawn_with_replica(
        primary: PgConnectOptions,
        replica: PgConnectOptions,
        floor: VersionFloor,
        poll_interval: Duration,
        stop: CancellationToken,
    ) -> Self {
        let mut watch = Self::spawn(primary, poll_interval, stop.clone());
        // The watch's own sender is inside the primary tasks; the replica task reports
        // through a second channel merged into the first by `follow_replica`.
        let (sender, state) = watch::channel(Known::default());
        let primary_state = watch.state.clone();
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(replica.clone());
        tokio::spawn(replica_loop(
            pool,
            target(&replica),
            primary_state,
            sender,
            floor.clone(),
            poll_interval,
            stop,
        ));
        watch.state = state;
        watch.replica = Some(floor);
        watch
    }

    /// The data version to key answers with, when it can be trusted without asking the
    /// database: the listener on the primary is connected, so every later commit will
    /// be announced to it. With a replica, the version the replica has replayed.
    pub fn current(&self) -> Option<i64> {
        let known = *self.state.borrow();
        let version = if self.replica.is_some() {
            known.replayed
        } else {
            known.version
        };
        (known.listening && version > 0).then_some(version)
    }

    /// The listener on the primary is connected: announcements arrive.
    pub fn is_listening(&self) -> bool {
        self.state.borrow().listening
    }

    /// Where the replica stands against the primary; `None` without a replica.
    pub fn replica_lag(&self) -> Option<ReplicaLag> {
        self.replica.as_ref()?;
        let known = *self.state.borrow();
        Some(ReplicaLag {
            announced: known.version,
            replayed: known.replayed,
            versions_behind: (known.version - known.replayed).max(0),
            seconds_behind: known.replay_lag_secs,
            listening: known.listening,
        })
    }

    /// Waits until [`current`](Self::current) is at least `version`.
    pub async fn wait_for(&self, version: i64) {
        let mut state = self.state.clone();
        let replica = self.replica.is_some();
        let _ = state
            .wait_for(|k| k.listening && if replica { k.replayed } else { k.version } >= version)
            .await;
    }
}

/// Follows the replica: copies the primary's state into `sender` and adds the
/// replica's replayed version, polled every `interval`, or every
/// [`REPLICA_CATCH_UP_POLL`] while behind the announced version.
async fn replica_loop(
    pool: PgPool,
    target: String,
    mut primary: watch::Receiver<Known>,
    sender: watch::Sender<Known>,
    floor: VersionFloor,
    interval: Duration,
    stop: CancellationToken,
) {
    let run = async {
        loop {
            match read_replica(&pool).await {
                Ok((version, lag)) => {
                    floor.raise(version);
                    sender.send_if_modified(|k| {
                        let before = *k;
                        advance(&mut k.replayed, version);
                        k.replay_lag_secs = lag;
                        *k != before
                    });
                }
                Err(e) => debug!(database = %target, error = %e, "replica poll failed"),
            }
            let behind = {
                let p = *primary.borrow_and_update();
                sender.send_if_modified(|k| {
                    let before = *k;
                    k.version = p.version;
                    k.listening = p.listening;
                    *k != before
                });
                p.version > sender.borrow().replayed
            };
            if behind {
                tokio::time::sleep(REPLICA_CATCH_UP_POLL).await;
            } else {
                // An announcement wakes the poll at once.
                let _ = tokio::time::timeout(interval, primary.changed()).await;
            }
        }
    };
    tokio::select! {
        () = run => {}
        () = stop.cancelled() => {}
        () = sender.closed() => {}
    }
}

/// The replica's `data_version` and its replay delay in seconds (0 when it has replayed
/// everything it received, or is not a standby).
async fn read_replica(pool: &PgPool) -> Result<(i64, f64), sqlx::Error> {
    sqlx::query_as(
        "SELECT (SELECT version FROM data_version), \
                COALESCE(CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 \
                    ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())::float8 END, 0)",
    )
    .fetch_one(pool)
    .await
}

/// Waits until the server behind `conn` has replayed at least `floor`'s version,
/// polling every [`REPLICA_CATCH_UP_POLL`]. The pool's acquire timeout bounds the wait.
async fn wait_for_floor(conn: &mut PgConnection, floor: &VersionFloor) -> Result<(), sqlx::Error> {
    loop {
        let version = read_version(&mut *conn).await?;
        if version >= floor.get() {
            return Ok(());
        }
        tokio::time::sleep(REPLICA_CATCH_UP_POLL).await;
    }
}

impl super::Store {
    /// The api's store on a read replica: as [`connect_lazy`](super::Store::connect_lazy)
    /// on `read_url`, except that a connection is only handed out once its server has
    /// replayed `floor` (checked on connect and on every acquire, in place of sqlx's
    /// ping). A read then never sees data older than an answer already served, even when
    /// the replica restarted behind or `read_url` leads to another, laggier replica;
    /// instead it waits, at most `database.acquire_timeout_ms`.
    pub fn connect_lazy_replica(
        config: &crate::config::DatabaseConfig,
        read_url: &SecretString,
        session: &super::SessionSettings,
        floor: VersionFloor,
    ) -> Result<Self, super::StoreError> {
        let replica = crate::config::DatabaseConfig {
            url: read_url.clone(),
            read_url: None,
            ..config.clone()
        };
        let on_connect = floor.clone();
        let pool = super::pool_options(&replica)
            .test_before_acquire(false)
            .after_connect(move |conn, _| {
                let floor = on_connect.clone();
                Box::pin(async move { wait_for_floor(conn, &floor).await })
            })
            .before_acquire(move |conn, _| {
                let floor = floor.clone();
                Box::pin(async move { wait_for_floor(conn, &floor).await.map(|()| true) })
            })
            .connect_lazy_with(super::connect_options(&replica, session)?);
        let mut store = Self::from_pool(pool);
        store.statement_timeout = session.statement_timeout;
        Ok(store)
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
    fn the_floor_only_rises() {
        let floor = VersionFloor::default();
        floor.raise(4);
        floor.clone().raise(2);
        assert_eq!(floor.get(), 4);
        floor.raise(9);
        assert_eq!(floor.get(), 9);
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
