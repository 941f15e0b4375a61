//! Publishing with publisher confirms.
//!
//! Every publish is persistent and `mandatory`, and returns only once the broker has
//! confirmed it: an `Ack` means the message sits in every queue bound to it (on disk for
//! durable queues), a `Nack` or a return (no queue bound) is an error. The connection is
//! opened lazily and reopened after a failure, so a process that publishes can start and
//! keep serving while the broker is down.

use std::time::Duration;

use chrono::Utc;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldArray, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection};
use tokio::sync::Mutex;
use tracing::{debug, warn};

use super::republish::Republish;
use super::{connect_any, BusError, Topology};
use crate::config::BrokerUrls;

/// How long the broker may take to confirm one message.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest AMQP short string: names, routing keys, most properties, header names. lapin
/// writes the length in one byte without checking it, so a longer value corrupts the
/// frame and the broker closes the connection with everything in flight on it.
pub const MAX_SHORT_STRING_BYTES: usize = 255;

/// The `message-id` for `id`: itself when it fits a short string, else `sha256:<hex>` of
/// it, so an id stays stable (a resent notification keeps its message id).
pub fn message_id(id: &str) -> String {
    if id.len() <= MAX_SHORT_STRING_BYTES {
        id.to_owned()
    } else {
        use sha2::Digest as _;
        format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(id.as_bytes()))
        )
    }
}

/// A message to publish.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    pub headers: FieldTable,
    /// Kept across retries and dead-lettering, so a message has one id for its whole life;
    /// a new uuid when `None`.
    pub message_id: Option<String>,
    pub content_type: String,
    /// Extra AMQP properties (`content_encoding`, `priority`) for messages that imitate
    /// another publisher (fedora-messaging).
    pub content_encoding: Option<String>,
    pub priority: Option<u8>,
}

impl OutgoingMessage {
    /// A JSON message with no headers.
    pub fn json(exchange: &str, routing_key: &str, body: Vec<u8>) -> Self {
        Self {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            body,
            headers: FieldTable::default(),
            message_id: None,
            content_type: "application/json".into(),
            content_encoding: None,
            priority: None,
        }
    }

    pub fn properties(&self) -> BasicProperties {
        let message_id = self
            .message_id
            .as_deref()
            .map(message_id)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ShortString::from(self.content_type.as_str()))
            .with_message_id(ShortString::from(message_id))
            .with_timestamp(u64::try_from(Utc::now().timestamp()).unwrap_or(0))
            .with_headers(self.headers.clone());
        if let Some(encoding) = &self.content_encoding {
            properties = properties.with_content_encoding(ShortString::from(encoding.as_str()));
        }
        if let Some(priority) = self.priority {
            properties = properties.with_priority(priority);
        }
        properties
    }
}

/// Publishes on one confirm-mode channel, (re)connecting on demand.
///
/// With several broker URLs (the nodes of a cluster), a publish that fails because the
/// connection went away is sent again once through another node. A message is only ever
/// reported published once a node confirmed it; the retry may store it twice (when the
/// lost node had stored it but its confirm was lost), which every consumer tolerates.
pub struct Publisher {
    urls: BrokerUrls,
    /// Declared on every (re)connection, so the first publish after a broker reset
    /// finds its queues.
    topology: Option<Topology>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    channel: Option<(Connection, Channel)>,
    /// The URL number to try first on the next connection: the one in use, or the next
    /// after it failed.
    node: usize,
}

impl Publisher {
    /// A publisher that does not connect until the first publish.
    pub fn new(urls: BrokerUrls, topology: Option<Topology>) -> Self {
        Self {
            urls,
            topology,
            state: Mutex::new(State::default()),
        }
    }

    /// Connects now (to fail early at start-up when the broker is required).
    pub async fn ensure_connected(&self) -> Result<(), BusError> {
        self.channel().await.map(|_| ())
    }

    /// Publishes and waits for the broker's confirmation.
    #[tracing::instrument(skip_all, fields(exchange = %message.exchange, routing_key = %message.routing_key))]
    pub async fn publish(&self, message: &OutgoingMessage) -> Result<(), BusError> {
        self.send(
            &message.exchange,
            &message.routing_key,
            &message.body,
            message.properties(),
        )
        .await
    }

    /// Republishes a received message (retry, dead letter, replay), keeping its properties.
    #[tracing::instrument(skip_all, fields(queue = %message.queue))]
    pub async fn republish(&self, message: &Republish) -> Result<(), BusError> {
        self.send(
            "",
            &message.queue,
            &message.body,
            message.properties.clone(),
        )
        .await
    }

    async fn send(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BusError> {
        // Another node is only worth a try when there is one.
        let tries = if self.urls.len() > 1 { 2 } else { 1 };
        let mut result = Ok(());
        for _ in 0..tries {
            let channel = self.channel().await?;
            result = publish_with(&channel, exchange, routing_key, body, properties.clone()).await;
            match &result {
                Ok(()) | Err(BusError::Unroutable { .. } | BusError::Unpublishable(_)) => {
                    return result
                }
                Err(BusError::Nacked { .. }) => {
                    // A channel that published to a quorum queue while its leader was lost
                    // can go on nacking every publish to it (RabbitMQ 3.10) while other
                    // channels publish fine: the next publish opens a new one, on the same
                    // node. The caller reports this failure (the registry resends).
                    warn!("publish nacked; reopening the channel");
                    self.state.lock().await.channel.take();
                    return result;
                }
                Err(e) => {
                    // The channel may be dead: start afresh, on the next node.
                    warn!(error = %e, "publish failed; reconnecting");
                    let mut state = self.state.lock().await;
                    if state.channel.take().is_some() {
                        state.node = (state.node + 1) % self.urls.len();
                    }
                    // A confirm that never came already used the caller's time.
                    if matches!(e, BusError::Timeout(_)) {
                        return result;
                    }
                }
            }
        }
        result
    }

    /// Closes the connection (when shutting down).
    pub async fn close(&self) {
        if let Some((connection, _)) = self.state.lock().await.channel.take() {
            let _ = connection.close(200, "shutting down").await;
        }
    }

    async fn channel(&self) -> Result<Channel, BusError> {
        let mut state = self.state.lock().await;
        if let Some((connection, channel)) = state.channel.as_ref() {
            if connection.status().connected() && channel.status().connected() {
                return Ok(channel.clone());
            }
            // Lost (the node went away): prefer the next node.
            state.node = (state.node + 1) % self.urls.len();
        }
        state.channel = None;
        debug!("connecting to the broker");
        let (connection, node) = connect_any(&self.urls, "regindex", state.node).await?;
        state.node = node;
        let channel = confirm_channel(&connection).await?;
        if let Some(topology) = &self.topology {
            topology.declare(&channel).await?;
        }
        state.channel = Some((connection, channel.clone()));
        Ok(channel)
    }
}

/// A channel in confirm mode.
pub async fn confirm_channel(connection: &Connection) -> Result<Channel, BusError> {
    let channel = connection
        .create_channel()
        .await
        .map_err(BusError::amqp("opening a channel"))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(BusError::amqp("enabling publisher confirms"))?;
    Ok(channel)
}

/// Publishes `message` on `channel` (in confirm mode) and waits for the confirmation.
pub async fn publish_confirmed(
    channel: &Channel,
    message: &OutgoingMessage,
) -> Result<(), BusError> {
    let OutgoingMessage {
        exchange,
        routing_key,
        body,
        ..
    } = message;
    publish_with(channel, exchange, routing_key, body, message.properties()).await
}

/// Republishes through the default exchange straight to `message.queue`.
pub async fn republish_confirmed(channel: &Channel, message: &Republish) -> Result<(), BusError> {
    publish_with(
        channel,
        "",
        &message.queue,
        &message.body,
        message.properties.clone(),
    )
    .await
}

/// Publishes with explicit properties and waits for the confirmation.
pub async fn publish_with(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), BusError> {
    check_short_strings(exchange, routing_key, &properties)?;
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let confirming = async {
        channel
            .basic_publish(exchange, routing_key, options, body, properties)
            .await
            .map_err(BusError::amqp("publishing"))?
            .await
            .map_err(BusError::amqp("waiting for the publisher confirm"))
    };
    let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirming)
        .await
        .map_err(|_| BusError::Timeout("confirming a publish"))??;
    let (exchange, routing_key) = (exchange.to_owned(), routing_key.to_owned());
    match confirmation {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(_returned)) => Err(BusError::Unroutable {
            exchange,
            routing_key,
        }),
        Confirmation::Nack(_) => Err(BusError::Nacked {
            exchange,
            routing_key,
        }),
    }
}

/// Refuses a message whose short strings do not fit (see [`MAX_SHORT_STRING_BYTES`]), so
/// that one bad value fails alone instead of taking the connection down.
pub fn check_short_strings(
    exchange: &str,
    routing_key: &str,
    properties: &BasicProperties,
) -> Result<(), BusError> {
    let check = |field: &str, value: &str| {
        if value.len() > MAX_SHORT_STRING_BYTES {
            Err(BusError::Unpublishable(format!(
                "{field} is {} bytes, more than {MAX_SHORT_STRING_BYTES}",
                value.len()
            )))
        } else {
            Ok(())
        }
    };
    check("exchange", exchange)?;
    check("routing key", routing_key)?;
    let p = properties;
    for (field, value) in [
        ("content-type", p.content_type()),
        ("content-encoding", p.content_encoding()),
        ("correlation-id", p.correlation_id()),
        ("reply-to", p.reply_to()),
        ("expiration", p.expiration()),
        ("message-id", p.message_id()),
        ("type", p.kind()),
        ("user-id", p.user_id()),
        ("app-id", p.app_id()),
        ("cluster-id", p.cluster_id()),
    ] {
        if let Some(value) = value {
            check(field, value.as_str())?;
        }
    }
    if let Some(headers) = p.headers() {
        check_table(headers)?;
    }
    Ok(())
}

fn check_table(table: &FieldTable) -> Result<(), BusError> {
    for (name, value) in table.inner() {
        if name.as_str().len() > MAX_SHORT_STRING_BYTES {
            return Err(BusError::Unpublishable(format!(
                "a header name is {} bytes, more than {MAX_SHORT_STRING_BYTES}",
                name.as_str().len()
            )));
        }
        check_value(name.as_str(), value)?;
    }
    Ok(())
}

fn check_value(name: &str, value: &AMQPValue) -> Result<(), BusError> {
    match value {
        AMQPValue::ShortString(s) if s.as_str().len() > MAX_SHORT_STRING_BYTES => {
            Err(BusError::Unpublishable(format!(
                "header {name:?} is a short string of {} bytes",
                s.as_str().len()
            )))
        }
        AMQPValue::FieldTable(table) => check_table(table),
        AMQPValue::FieldArray(array) => check_array(name, array),
        _ => Ok(()),
    }
}

fn check_array(name: &str, array: &FieldArray) -> Result<(), BusError> {
    array
        .as_slice()
        .iter()
        .try_for_each(|value| check_value(name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_message_ids_are_hashed_stably() {
        assert_eq!(message_id("abc"), "abc");
        let long = "i".repeat(300);
        assert_eq!(message_id(&long), message_id(&long));
        assert!(message_id(&long).starts_with("sha256:"));
        assert!(message_id(&long).len() <= MAX_SHORT_STRING_BYTES);
        let mut message = OutgoingMessage::json("e", "k", Vec::new());
        message.message_id = Some(long);
        let properties = message.properties();
        check_short_strings("e", "k", &properties).unwrap();
    }

    #[test]
    fn oversized_short_strings_are_refused() {
        let long = "x".repeat(256);
        let plain = BasicProperties::default();
        assert!(check_short_strings(&long, "k", &plain).is_err());
        assert!(check_short_strings("e", &long, &plain).is_err());
        let typed = BasicProperties::default().with_type(ShortString::from(long.clone()));
        assert!(check_short_strings("e", "k", &typed).is_err());
        let mut inner = FieldTable::default();
        inner.insert("v".into(), AMQPValue::ShortString(long.clone().into()));
        let mut headers = FieldTable::default();
        headers.insert("nested".into(), AMQPValue::FieldTable(inner));
        let nested = BasicProperties::default().with_headers(headers);
        assert!(check_short_strings("e", "k", &nested).is_err());
        let mut headers = FieldTable::default();
        headers.insert("fine".into(), AMQPValue::LongString(long.into()));
        let fine = BasicProperties::default().with_headers(headers);
        check_short_strings("e", "k", &fine).unwrap();
    }
}
