//! The dead-letter queue's depth, for `/metrics`. Polled from the broker (a passive
//! declare reports the queue's message count) rather than counted here: replays and
//! purges by `regindexctl`, and other workers' dead letters, change it too.

use std::time::Duration;

use backon::Retryable;
use lapin::Connection;
use prometheus::IntGauge;
use regindex::bus::dead_letters::DeadLetterQueue;
use regindex::bus::{self as bus, BusError, Topology};
use regindex::config::AmqpConfig;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Sets `gauge` to the dead-letter queue's depth every `every`, reconnecting after losing
/// the broker (the gauge keeps its last value meanwhile), until `stop`.
pub async fn watch(amqp: AmqpConfig, gauge: IntGauge, every: Duration, stop: CancellationToken) {
    let topology = Topology::new(&amqp);
    loop {
        let opening = (|| open(&amqp, &topology))
            .retry(bus::reconnect_backoff())
            .notify(|e, delay| {
                warn!(error = %regindex::error_chain(e), ?delay, "cannot watch the dead-letter queue; retrying");
            });
        let (connection, queue) = tokio::select! {
            _ = stop.cancelled() => return,
            opened = opening => match opened {
                Ok(opened) => opened,
                Err(_) => return, // the backoff never gives up
            },
        };
        loop {
            match queue.count().await {
                Ok(depth) => gauge.set(i64::from(depth)),
                Err(e) => {
                    warn!(error = %regindex::error_chain(&e), "cannot count dead letters; reconnecting");
                    break;
                }
            }
            tokio::select! {
                _ = stop.cancelled() => {
                    let _ = connection.close(200, "shutting down").await;
                    return;
                }
                _ = tokio::time::sleep(every) => {}
            }
        }
        let _ = connection.close(200, "reconnecting").await;
    }
}

async fn open(
    amqp: &AmqpConfig,
    topology: &Topology,
) -> Result<(Connection, DeadLetterQueue), BusError> {
    let connection = bus::connect_named(&amqp.url, "regindex-worker dead-letter depth").await?;
    let queue = DeadLetterQueue::open(&connection, topology.clone()).await?;
    Ok((connection, queue))
}
