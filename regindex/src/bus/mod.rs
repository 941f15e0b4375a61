//! RabbitMQ: topology, publishing with confirms, message formats, dead letters.
//!
//! - [`topology`]: every exchange, queue and binding, named from [`crate::config::AmqpConfig`]
//!   and declared idempotently by each process at start-up (mirrored in `bus-config/`).
//! - [`definitions`]: the topology with the vhost and user `amqp.url` logs in with, as
//!   RabbitMQ definitions for provisioning a broker.
//! - [`messages`]: pure parsing of what arrives (registry webhooks, Bodhi messages, internal
//!   refetches) into the events the api publishes and the work items the worker runs.
//! - [`headers`]: the headers the retry path and the dead-letter queue carry.
//! - [`publisher`]: persistent, mandatory publishes that return once the broker confirmed.
//! - [`dead_letters`]: list, show, replay and purge the dead-letter queue.
//! - [`migrate`]: switch existing queues to another `amqp.queue_type`, keeping their messages.

pub mod bodhi;
mod consumer;
pub mod dead_letters;
pub mod definitions;
mod error;
pub mod fedora_messaging;
pub mod headers;
pub mod messages;
pub mod migrate;
pub mod publisher;
pub mod republish;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod topology;

pub use consumer::{consume_reconnecting, reconnect_backoff, ConsumerSession, SessionEnd};
pub use error::BusError;
pub use publisher::{OutgoingMessage, Publisher};
pub use topology::Topology;

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};

use crate::config::BrokerUrls;

/// How long connecting to the broker may take before it counts as unreachable (a
/// black-holed host would otherwise hang a webhook request).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a connection to the broker: to the first of its URLs that answers.
pub async fn connect(urls: impl Into<BrokerUrls>) -> Result<Connection, BusError> {
    let urls = urls.into();
    connect_any(&urls, "regindex", 0)
        .await
        .map(|(connection, _)| connection)
}

/// Opens a connection shown as `name` in the broker's connection list (operators can tell
/// processes apart, and close one), to the first of `urls` that answers.
pub async fn connect_named(urls: &BrokerUrls, name: &str) -> Result<Connection, BusError> {
    connect_any(urls, name, 0)
        .await
        .map(|(connection, _)| connection)
}

/// [`connect_named`], trying the URLs in order
/// from number `start` (wrapping round). Returns the connection and the number of its URL.
/// With several nodes, a node that is down costs a refused connection (or, black-holed,
/// [`CONNECT_TIMEOUT`]) before the next is tried.
pub async fn connect_any(
    urls: &BrokerUrls,
    name: &str,
    start: usize,
) -> Result<(Connection, usize), BusError> {
    let mut last_error = None;
    for index in failover_order(urls.len(), start) {
        match connect_one(&urls.all()[index], name).await {
            Ok(connection) => return Ok((connection, index)),
            Err(e) => {
                if urls.len() > 1 {
                    tracing::warn!(node = index + 1, error = %e, "broker node unreachable; trying the next");
                }
                last_error = Some(e);
            }
        }
    }
    Err(last_error.unwrap_or(BusError::Timeout("connecting to the broker (no URL)")))
}

/// The URL numbers to try, from `start`, each once.
pub fn failover_order(count: usize, start: usize) -> impl Iterator<Item = usize> {
    (0..count).map(move |offset| (start + offset) % count.max(1))
}

async fn connect_one(url: &SecretString, name: &str) -> Result<Connection, BusError> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let connecting = Connection::connect(url.expose_secret(), properties);
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(source)) => Err(BusError::Connect(source)),
        Err(_) => Err(BusError::Timeout("connecting to the broker")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_tries_every_node_once_from_the_start() {
        assert_eq!(failover_order(3, 0).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(failover_order(3, 2).collect::<Vec<_>>(), [2, 0, 1]);
        assert_eq!(failover_order(3, 4).collect::<Vec<_>>(), [1, 2, 0]);
        assert_eq!(failover_order(1, 1).collect::<Vec<_>>(), [0]);
    }
}
