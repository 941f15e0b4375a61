//! Whether the database answers: one probe loop per process, watched by whoever needs it
//! (readiness probes, the api's stale answers, the worker's start-up).
//!
//! The probe holds its own connection, outside the pool: a pool busy with slow queries is
//! not an outage, and a probe must not wait out the pool's acquire timeout. It reads the
//! schema version, so "up" means "reachable, and the schema this build needs is there".

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection as _, PgConnection};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{check_schema, StoreError};

/// Between probes while the database answers: how late an outage is noticed at most.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// A probe that takes longer counts as a failure (an unreachable host may not refuse).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Probes asked for with [`DatabaseMonitor::check_now`] come at most this often.
const MIN_PROBE_GAP: Duration = Duration::from_millis(100);

/// What the last probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// Not probed yet.
    Unknown,
    Up,
    /// `reason` names the server (`PostgreSQL at host:port`) and the error.
    Down {
        reason: String,
    },
}

/// A handle on the probe loop; cheap to clone. The loop stops when `stop` is cancelled
/// or every handle is gone.
#[derive(Debug, Clone)]
pub struct DatabaseMonitor {
    state: watch::Receiver<Availability>,
    target: String,
    check: Arc<Notify>,
}

impl DatabaseMonitor {
    /// Starts probing the database `options` connect to, at once.
    pub fn spawn(options: PgConnectOptions, stop: CancellationToken) -> Self {
        let target = target(&options);
        let (sender, state) = watch::channel(Availability::Unknown);
        let check = Arc::new(Notify::new());
        tokio::spawn(probe_loop(
            options,
            target.clone(),
            sender,
            check.clone(),
            stop,
        ));
        Self {
            state,
            target,
            check,
        }
    }

    /// Probes now rather than at the next interval (e.g. when a query takes unusually
    /// long: the database may just have gone). Requests made while a probe is due are
    /// merged into one.
    pub fn check_now(&self) {
        self.check.notify_one();
    }

    /// `PostgreSQL at <host>:<port> (database <name>)`, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    pub fn current(&self) -> Availability {
        self.state.borrow().clone()
    }

    pub fn is_up(&self) -> bool {
        matches!(*self.state.borrow(), Availability::Up)
    }

    pub fn is_down(&self) -> bool {
        matches!(*self.state.borrow(), Availability::Down { .. })
    }

    /// Every change of state, starting with the current one.
    pub fn subscribe(&self) -> watch::Receiver<Availability> {
        let mut state = self.state.clone();
        state.mark_changed();
        state
    }

    /// The state once the first probe has answered (at once after that).
    pub async fn known(&self) -> Availability {
        let mut state = self.state.clone();
        let known = match state
            .wait_for(|s| !matches!(s, Availability::Unknown))
            .await
        {
            Ok(known) => known.clone(),
            // The loop stopped before its first probe.
            Err(_) => Availability::Unknown,
        };
        known
    }

    /// Returns once a probe succeeded (at once if the last one did).
    pub async fn wait_up(&self) {
        let mut state = self.state.clone();
        // An error means the loop stopped: nothing will change any more.
        if state
            .wait_for(|s| matches!(s, Availability::Up))
            .await
            .is_err()
        {
            std::future::pending::<()>().await;
        }
    }

    /// Returns once a probe failed (at once if the last one did).
    pub async fn wait_down(&self) {
        let mut state = self.state.clone();
        if state
            .wait_for(|s| matches!(s, Availability::Down { .. }))
            .await
            .is_err()
        {
            std::future::pending::<()>().await;
        }
    }
}

/// Why the database `options` connect to cannot be reached, found by connecting once
/// as a probe does (same time limit, same wording), naming the server.
pub(super) async fn why_unreachable(options: &PgConnectOptions) -> StoreError {
    let connected = within_probe_timeout(async {
        PgConnection::connect_with(options)
            .await
            .map_err(|e| describe(&e))
    })
    .await;
    let reason = match connected {
        Err(reason) => reason,
        // Reached now: the pool's own attempts failed, and this one may not last.
        Ok(connection) => {
            let _ = connection.close().await;
            sqlx::Error::PoolTimedOut.to_string()
        }
    };
    StoreError::Unreachable {
        target: target(options),
        reason,
    }
}

/// `probe` or a connection attempt, failing after [`PROBE_TIMEOUT`] (an unreachable host
/// may not refuse).
async fn within_probe_timeout<T>(
    attempt: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(PROBE_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {PROBE_TIMEOUT:?}")))
}

/// `PostgreSQL at 127.0.0.1:5432 (database regindex)`; never the password.
pub fn target(options: &PgConnectOptions) -> String {
    let database = options.get_database().unwrap_or("default");
    format!(
        "PostgreSQL at {}:{} (database {database})",
        options.get_host(),
        options.get_port()
    )
}

async fn probe_loop(
    options: PgConnectOptions,
    target: String,
    sender: watch::Sender<Availability>,
    check: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut connection: Option<PgConnection> = None;
    let mut backoff = retry_backoff();
    let mut failures: u32 = 0;
    loop {
        let probed_at = tokio::time::Instant::now();
        let outcome = within_probe_timeout(probe(&mut connection, &options)).await;
        let delay = match outcome {
            Ok(()) => {
                if failures > 0 {
                    info!(database = %target, failures, "{target} is reachable again");
                } else if matches!(*sender.borrow(), Availability::Unknown) {
                    info!(database = %target, "{target} is reachable");
                }
                failures = 0;
                backoff = retry_backoff();
                sender.send_replace(Availability::Up);
                PROBE_INTERVAL
            }
            Err(error) => {
                // A failed session may be half-closed: the next probe starts afresh.
                if let Some(old) = connection.take() {
                    drop(old);
                }
                failures += 1;
                let delay = backoff.next().unwrap_or(PROBE_INTERVAL);
                warn!(
                    database = %target,
                    %error,
                    attempt = failures,
                    retry_in = ?delay,
                    "waiting for {target}: {error}; next attempt in {delay:.1?}"
                );
                sender.send_replace(Availability::Down {
                    reason: format!("{target}: {error}"),
                });
                delay
            }
        };
        let next = tokio::time::Instant::now() + delay;
        tokio::select! {
            () = stop.cancelled() => break,
            () = sender.closed() => break,
            () = tokio::time::sleep_until(next) => {}
            () = check.notified() => {
                tokio::time::sleep_until((probed_at + MIN_PROBE_GAP).min(next)).await;
            }
        }
    }
    if let Some(connection) = connection {
        let _ = connection.close().await;
    }
}

/// One probe: (re)connect when needed, then read the schema version.
async fn probe(
    connection: &mut Option<PgConnection>,
    options: &PgConnectOptions,
) -> Result<(), String> {
    if connection.is_none() {
        *connection = Some(
            PgConnection::connect_with(options)
                .await
                .map_err(|e| describe(&e))?,
        );
    }
    let Some(conn) = connection.as_mut() else {
        return Err("no connection".to_owned());
    };
    check_schema(conn).await.map_err(|e| match e {
        StoreError::Database(e) => describe(&e),
        other => other.to_string(),
    })
}

/// The error without sqlx's generic prefixes ("error communicating with database").
fn describe(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Io(e) => e.to_string(),
        sqlx::Error::Database(e) => e.message().to_owned(),
        other => other.to_string(),
    }
}

/// From 250 ms to 5 s between probes of a database that does not answer: quick to notice
/// it is back, without hammering one that is starting up.
pub(super) fn retry_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_host_port_and_database_but_not_the_password() {
        let options: PgConnectOptions = "postgres://u:secret@db.example.org:6543/regindex"
            .parse()
            .unwrap();
        let target = target(&options);
        assert_eq!(
            target,
            "PostgreSQL at db.example.org:6543 (database regindex)"
        );
        assert!(!target.contains("secret"));
    }

    #[test]
    fn backoff_grows_to_its_cap() {
        let delays: Vec<Duration> = retry_backoff().take(12).collect();
        assert_eq!(delays.len(), 12, "never gives up");
        assert!(delays[0] < Duration::from_secs(1));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(10)));
        assert!(delays[11] >= Duration::from_secs(5));
    }
}
