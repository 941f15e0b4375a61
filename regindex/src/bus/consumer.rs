//! Opening a consumer: connection, channel with a prefetch, declared topology, consumer on
//! one queue. The worker's work and history consumers hold one each while the broker is
//! reachable, and open a new one after losing it.

use std::future::Future;
use std::time::Duration;

use super::{connect_any, BusError, Topology};
use crate::config::BrokerUrls;
use backon::{ExponentialBuilder, Retryable};
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

pub struct ConsumerSession {
    pub connection: Connection,
    pub channel: Channel,
    pub consumer: Consumer,
}

impl ConsumerSession {
    /// `name` labels the connection (and, with a random suffix, the consumer tag) in the
    /// broker's management views. Connects to the first node of `urls` that answers (a
    /// consumer that lost its node thus resumes on another).
    pub async fn open(
        urls: &BrokerUrls,
        name: &str,
        topology: &Topology,
        queue: &str,
        prefetch: u16,
    ) -> Result<Self, BusError> {
        let (connection, _) = connect_any(urls, &format!("{name} {queue}"), 0).await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(BusError::amqp("opening a channel"))?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(BusError::amqp("setting the prefetch"))?;
        topology.declare(&channel).await?;
        let consumer = channel
            .basic_consume(
                queue,
                &format!("{name}-{}", uuid::Uuid::new_v4()),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(BusError::amqp("consuming"))?;
        Ok(Self {
            connection,
            channel,
            consumer,
        })
    }
}

/// How consumers reopen their session after losing the broker: from 100 ms to 30 s,
/// with jitter so that many workers do not reconnect in step, and without giving up.
pub fn reconnect_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
}

/// How a consumer's session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// Shutdown was asked for: stop.
    Stopped,
    /// The broker was lost (or cancelled the consumer), with why: open a new session.
    Lost(String),
}

/// The reconnect loop of a consumer: opens a session with `open` (retried with
/// [`reconnect_backoff`]), hands it to `consume` until that returns, and opens a new one
/// after [`SessionEnd::Lost`], until `shutdown` or [`SessionEnd::Stopped`]. `queue` names
/// the queue in the logs. `consume` owns the session: it closes it the way it needs to.
pub async fn consume_reconnecting<O, OF, C, CF>(
    queue: &str,
    shutdown: &CancellationToken,
    open: O,
    mut consume: C,
) where
    O: FnMut() -> OF,
    OF: Future<Output = Result<ConsumerSession, BusError>>,
    C: FnMut(ConsumerSession) -> CF,
    CF: Future<Output = SessionEnd>,
{
    let mut open = open;
    while !shutdown.is_cancelled() {
        let opening = (&mut open)
            .retry(reconnect_backoff())
            .notify(|e, delay| warn!(error = %e, ?delay, %queue, "cannot consume; retrying"));
        let session = tokio::select! {
            _ = shutdown.cancelled() => break,
            session = opening => match session {
                Ok(session) => session,
                Err(e) => {
                    error!(error = %e, %queue, "giving up connecting");
                    break;
                }
            },
        };
        info!(%queue, "consuming");
        match consume(session).await {
            SessionEnd::Stopped => break,
            SessionEnd::Lost(reason) => warn!(%reason, %queue, "lost the broker; reconnecting"),
        }
    }
}
