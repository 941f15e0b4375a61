//! Opening a consumer: connection, channel with a prefetch, declared topology, consumer on
//! one queue. The worker's work and history consumers hold one each while the broker is
//! reachable, and open a new one after losing it.

use std::time::Duration;

use super::{connect_any, BusError, Topology};
use crate::config::BrokerUrls;
use backon::ExponentialBuilder;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};

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
