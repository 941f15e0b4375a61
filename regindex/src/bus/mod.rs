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

mod consumer;
pub mod dead_letters;
pub mod definitions;
mod error;
pub mod fedora_messaging;
pub mod headers;
pub mod messages;
pub mod publisher;
pub mod republish;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod topology;

pub use consumer::{reconnect_backoff, ConsumerSession};
pub use error::BusError;
pub use publisher::{OutgoingMessage, Publisher};
pub use topology::Topology;

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};

/// How long connecting to the broker may take before it counts as unreachable (a
/// black-holed host would otherwise hang a webhook request).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens a connection to the broker.
pub async fn connect(url: &SecretString) -> Result<Connection, BusError> {
    connect_named(url, "regindex").await
}

/// Opens a connection shown as `name` in the broker's connection list (operators can tell
/// processes apart, and close one).
pub async fn connect_named(url: &SecretString, name: &str) -> Result<Connection, BusError> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let connecting = Connection::connect(url.expose_secret(), properties);
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(source)) => Err(BusError::Connect(source)),
        Err(_) => Err(BusError::Timeout("connecting to the broker")),
    }
}
