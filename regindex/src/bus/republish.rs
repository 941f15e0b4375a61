//! Building the messages of the retry path, the dead-letter queue and replays (pure).
//!
//! All three go through the default exchange straight to a queue, keep the message's
//! properties (its `message_id` above all, the id operators see) and body, and record the
//! original exchange and routing key in headers so the worker decodes them as first sent.

use chrono::{DateTime, Utc};
use lapin::types::{FieldTable, ShortString};
use lapin::BasicProperties;

use super::headers;
use super::Topology;

/// A message as received (from a delivery or a `basic_get`).
#[derive(Debug, Clone)]
pub struct Received {
    pub exchange: String,
    pub routing_key: String,
    pub properties: BasicProperties,
    pub body: Vec<u8>,
}

impl Received {
    pub fn from_delivery(delivery: &lapin::message::Delivery) -> Self {
        Self {
            exchange: delivery.exchange.to_string(),
            routing_key: delivery.routing_key.to_string(),
            properties: delivery.properties.clone(),
            body: delivery.data.clone(),
        }
    }

    /// Takes a delivery apart without copying its body or properties: the message, and
    /// the acker that settles it (a consumer that keeps the message until it settles).
    pub fn open(delivery: lapin::message::Delivery) -> (Self, lapin::acker::Acker) {
        let received = Self {
            exchange: delivery.exchange.to_string(),
            routing_key: delivery.routing_key.to_string(),
            properties: delivery.properties,
            body: delivery.data,
        };
        (received, delivery.acker)
    }

    pub fn headers(&self) -> Option<&FieldTable> {
        self.properties.headers().as_ref()
    }

    /// Failed attempts so far.
    pub fn attempts(&self) -> u32 {
        headers::attempts(self.headers())
    }

    /// The routing key it was first published with.
    pub fn original_routing_key(&self) -> String {
        headers::original_routing_key(self.headers(), &self.routing_key).into_owned()
    }

    pub fn original_exchange(&self) -> String {
        headers::original_exchange(self.headers(), &self.exchange).into_owned()
    }

    pub fn message_id(&self) -> Option<String> {
        self.properties
            .message_id()
            .as_ref()
            .map(|id| id.to_string())
    }
}

/// A message to put straight into `queue` through the default exchange.
#[derive(Debug, Clone)]
pub struct Republish {
    pub queue: String,
    pub body: Vec<u8>,
    pub properties: BasicProperties,
}

/// Into the delay queue for retry number `attempts` (the failed attempts so far,
/// including the one that just failed).
pub fn retry(topology: &Topology, received: &Received, attempts: u32, error: &str) -> Republish {
    let mut table = with_origin(received);
    headers::set_u32(&mut table, headers::ATTEMPTS, attempts);
    headers::set_str(&mut table, headers::LAST_ERROR, &truncate(error));
    Republish {
        queue: topology.delay_queue_for_attempt(attempts),
        body: received.body.clone(),
        properties: properties(received, table),
    }
}

/// Into the dead-letter queue.
pub fn dead_letter(
    topology: &Topology,
    received: &Received,
    attempts: u32,
    reason: &str,
    failed_at: DateTime<Utc>,
) -> Republish {
    let mut table = with_origin(received);
    headers::set_u32(&mut table, headers::ATTEMPTS, attempts);
    headers::set_str(&mut table, headers::REASON, &truncate(reason));
    headers::set_time(&mut table, headers::FAILED_AT, failed_at);
    Republish {
        queue: topology.dead_letter_queue.clone(),
        body: received.body.clone(),
        properties: properties(received, table),
    }
}

/// From the dead-letter queue back into the work queue, attempts reset.
pub fn replay(topology: &Topology, received: &Received, replayed_at: DateTime<Utc>) -> Republish {
    let mut table = headers::without(
        &with_origin(received),
        &[
            headers::ATTEMPTS,
            headers::REASON,
            headers::FAILED_AT,
            headers::LAST_ERROR,
        ],
    );
    headers::set_time(&mut table, headers::REPLAYED_AT, replayed_at);
    Republish {
        queue: topology.work_queue.clone(),
        body: received.body.clone(),
        properties: properties(received, table),
    }
}

/// Into `queue` unchanged but for its origin, recorded in headers (migrating queues).
pub fn moved(received: &Received, queue: &str) -> Republish {
    Republish {
        queue: queue.to_owned(),
        body: received.body.clone(),
        properties: properties(received, with_origin(received)),
    }
}

/// The message's headers with the original exchange and routing key recorded (only once:
/// a retried message's delivery routing key is the work queue's name).
fn with_origin(received: &Received) -> FieldTable {
    let mut table = received.headers().cloned().unwrap_or_default();
    let exchange = received.original_exchange();
    let routing_key = received.original_routing_key();
    headers::set_str(&mut table, headers::ORIGINAL_EXCHANGE, &exchange);
    headers::set_str(&mut table, headers::ORIGINAL_ROUTING_KEY, &routing_key);
    table
}

fn properties(received: &Received, table: FieldTable) -> BasicProperties {
    let id = received
        .message_id()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    received
        .properties
        .clone()
        .with_delivery_mode(2)
        .with_message_id(ShortString::from(id))
        .with_headers(table)
}

/// Header values stay small (AMQP frames, log lines).
fn truncate(s: &str) -> String {
    const MAX_CHARS: usize = 1000;
    s.chars().take(MAX_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AmqpConfig;

    fn topology() -> Topology {
        Topology::new(&AmqpConfig {
            work_queue: "w".into(),
            dead_letter_queue: "d".into(),
            retry_delays: [10, 20].map(std::time::Duration::from_millis).to_vec(),
            ..AmqpConfig::default()
        })
    }

    fn received() -> Received {
        Received {
            exchange: "regindex.events".into(),
            routing_key: "registry.push.manifest".into(),
            properties: BasicProperties::default().with_message_id("m-1".into()),
            body: b"{}".to_vec(),
        }
    }

    #[test]
    fn retries_keep_the_origin_and_count_attempts() {
        let first = retry(&topology(), &received(), 1, "registry down");
        assert_eq!(first.queue, "w.retry.10ms");
        // As the broker delivers it after the delay: through the default exchange.
        let again = Received {
            exchange: String::new(),
            routing_key: "w".into(),
            properties: first.properties.clone(),
            body: first.body.clone(),
        };
        assert_eq!(again.attempts(), 1);
        assert_eq!(again.original_routing_key(), "registry.push.manifest");
        assert_eq!(again.original_exchange(), "regindex.events");
        assert_eq!(again.message_id().as_deref(), Some("m-1"));
        let second = retry(&topology(), &again, 2, "still down");
        assert_eq!(second.queue, "w.retry.20ms");
        let h = second.properties.headers().clone().unwrap();
        assert_eq!(
            headers::get_str(Some(&h), headers::LAST_ERROR).unwrap(),
            "still down"
        );
        assert_eq!(
            headers::get_str(Some(&h), headers::ORIGINAL_ROUTING_KEY).unwrap(),
            "registry.push.manifest"
        );
    }

    #[test]
    fn dead_letters_carry_reason_and_replays_reset_attempts() {
        let at = DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
            .unwrap()
            .to_utc();
        let dead = dead_letter(&topology(), &received(), 8, "gave up", at);
        assert_eq!(dead.queue, "d");
        let h = dead.properties.headers().clone().unwrap();
        assert_eq!(headers::attempts(Some(&h)), 8);
        assert_eq!(
            headers::get_str(Some(&h), headers::REASON).unwrap(),
            "gave up"
        );
        assert_eq!(
            headers::get_str(Some(&h), headers::FAILED_AT).unwrap(),
            "2026-11-25T10:00:00+00:00"
        );
        assert_eq!(dead.properties.delivery_mode(), &Some(2));

        let in_dlq = Received {
            exchange: String::new(),
            routing_key: "d".into(),
            properties: dead.properties,
            body: dead.body,
        };
        let replayed = replay(&topology(), &in_dlq, at);
        assert_eq!(replayed.queue, "w");
        let h = replayed.properties.headers().clone().unwrap();
        assert_eq!(headers::attempts(Some(&h)), 0);
        assert!(!h.contains_key(headers::REASON));
        assert_eq!(
            headers::get_str(Some(&h), headers::ORIGINAL_ROUTING_KEY).unwrap(),
            "registry.push.manifest"
        );
        assert_eq!(
            replayed
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.as_str()),
            Some("m-1")
        );
    }

    #[test]
    fn messages_without_an_id_get_one() {
        let mut r = received();
        r.properties = BasicProperties::default();
        let dead = dead_letter(&topology(), &r, 1, "x", Utc::now());
        assert!(dead.properties.message_id().is_some());
    }
}
