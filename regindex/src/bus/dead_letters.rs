//! The dead-letter queue, for operators: list, show, replay, purge.
//!
//! Messages are read with `basic_get` without acknowledging them, then handed back with
//! one `basic_nack(multiple, requeue)`: the broker puts requeued messages back at their
//! original position, so listing changes nothing, and a replay removes (acks) only the
//! messages it has republished to the work queue with a confirm. A crash half-way
//! returns every unacknowledged message to the queue.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::{DeliveryTag, FieldTable};
use lapin::{Channel, Connection};

use super::publisher::{confirm_channel, republish_confirmed};
use super::republish::{self, Received};
use super::{headers, BusError, Topology};

/// How long the broker may take to put messages handed back into the queue again.
const REQUEUE_TIMEOUT: Duration = Duration::from_secs(10);

/// One dead-lettered message.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The `message_id` it was first published with (stable across retries and replays).
    pub id: String,
    pub exchange: String,
    pub routing_key: String,
    pub reason: String,
    pub attempts: u32,
    pub failed_at: Option<DateTime<Utc>>,
    /// Every header, as text.
    pub headers: BTreeMap<String, String>,
    pub received: Received,
}

impl DeadLetter {
    pub fn from_received(received: Received) -> Self {
        let h = received.headers();
        let table_as_text = h
            .map(|table| {
                table
                    .inner()
                    .iter()
                    .map(|(key, value)| (key.to_string(), headers::display(value)))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            id: received.message_id().unwrap_or_else(|| "-".into()),
            exchange: received.original_exchange(),
            routing_key: received.original_routing_key(),
            reason: headers::get_str(h, headers::REASON)
                .map(|s| s.into_owned())
                .unwrap_or_default(),
            attempts: headers::attempts(h),
            failed_at: headers::get_str(h, headers::FAILED_AT)
                .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
                .map(|t| t.to_utc()),
            headers: table_as_text,
            received,
        }
    }

    /// Time since it was dead-lettered.
    pub fn age(&self, now: DateTime<Utc>) -> Option<Duration> {
        (now - self.failed_at?).to_std().ok()
    }

    pub fn body(&self) -> &[u8] {
        &self.received.body
    }
}

/// Which dead letters a replay takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    All,
    Ids(Vec<String>),
    RoutingKey(String),
    ReasonContains(String),
}

impl Filter {
    pub fn matches(&self, letter: &DeadLetter) -> bool {
        match self {
            Filter::All => true,
            Filter::Ids(ids) => ids.contains(&letter.id),
            Filter::RoutingKey(key) => letter.routing_key == *key,
            Filter::ReasonContains(s) => letter.reason.contains(s.as_str()),
        }
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    pub replayed: Vec<String>,
    pub kept: usize,
}

/// The dead-letter queue, on its own confirm-mode channel.
pub struct DeadLetterQueue {
    channel: Channel,
    topology: Topology,
}

impl DeadLetterQueue {
    /// Opens a channel and declares the topology (so the queues exist).
    pub async fn open(connection: &Connection, topology: Topology) -> Result<Self, BusError> {
        let channel = confirm_channel(connection).await?;
        topology.declare(&channel).await?;
        Ok(Self { channel, topology })
    }

    /// Every dead letter, oldest first; the queue is left as it was.
    pub async fn list(&self) -> Result<Vec<DeadLetter>, BusError> {
        let fetched = self.fetch_all().await?;
        self.requeue(&fetched, &[]).await?;
        Ok(fetched.into_iter().map(|(_, letter)| letter).collect())
    }

    /// One dead letter by id.
    pub async fn show(&self, id: &str) -> Result<Option<DeadLetter>, BusError> {
        Ok(self
            .list()
            .await?
            .into_iter()
            .find(|letter| letter.id == id))
    }

    /// Republishes the matching dead letters to the work queue (attempts reset) and
    /// removes them from the dead-letter queue; the others stay, in order.
    pub async fn replay(&self, filter: &Filter) -> Result<ReplaySummary, BusError> {
        let fetched = self.fetch_all().await?;
        let mut summary = ReplaySummary::default();
        let mut acked = Vec::new();
        let mut result = Ok(());
        for (tag, letter) in &fetched {
            if !filter.matches(letter) {
                summary.kept += 1;
                continue;
            }
            let message = republish::replay(&self.topology, &letter.received, Utc::now());
            result = republish_confirmed(&self.channel, &message).await;
            if result.is_err() {
                break;
            }
            // Only once the work queue holds it: a crash before this leaves it in both
            // queues (at least once), never in neither.
            result = self
                .channel
                .basic_ack(*tag, BasicAckOptions::default())
                .await
                .map_err(BusError::amqp("acknowledging a replayed dead letter"));
            if result.is_err() {
                break;
            }
            acked.push(*tag);
            summary.replayed.push(letter.id.clone());
        }
        self.requeue(&fetched, &acked).await?;
        result.map(|()| summary)
    }

    /// Deletes every dead letter; returns how many.
    pub async fn purge(&self) -> Result<u32, BusError> {
        self.channel
            .queue_purge(
                &self.topology.dead_letter_queue,
                QueuePurgeOptions::default(),
            )
            .await
            .map_err(BusError::amqp("purging the dead-letter queue"))
    }

    /// Messages in the dead-letter queue now.
    pub async fn count(&self) -> Result<u32, BusError> {
        let queue = self
            .channel
            .queue_declare(
                &self.topology.dead_letter_queue,
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(BusError::amqp("counting dead letters"))?;
        Ok(queue.message_count())
    }

    /// Gets (without acknowledging) as many messages as the queue held when called, so
    /// that messages dead-lettered meanwhile cannot keep it looping.
    async fn fetch_all(&self) -> Result<Vec<(DeliveryTag, DeadLetter)>, BusError> {
        let count = self.count().await?;
        let mut fetched = Vec::new();
        while fetched.len() < count as usize {
            let got = self
                .channel
                .basic_get(
                    &self.topology.dead_letter_queue,
                    BasicGetOptions { no_ack: false },
                )
                .await;
            let message = match got {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(source) => {
                    self.requeue(&fetched, &[]).await?;
                    return Err(BusError::Amqp {
                        context: "reading the dead-letter queue",
                        source,
                    });
                }
            };
            let received = Received::from_delivery(&message.delivery);
            fetched.push((
                message.delivery.delivery_tag,
                DeadLetter::from_received(received),
            ));
        }
        Ok(fetched)
    }

    /// Hands back every fetched message not acknowledged yet, in one call, and waits
    /// until the queue holds them again: the broker requeues asynchronously, and the next
    /// operation must see them (a `list` right after a `replay`, say).
    async fn requeue(
        &self,
        fetched: &[(DeliveryTag, DeadLetter)],
        acked: &[DeliveryTag],
    ) -> Result<(), BusError> {
        // `multiple` covers every unacknowledged tag up to this one; naming an acked tag
        // would be a channel error.
        let unacked = fetched
            .iter()
            .map(|(tag, _)| *tag)
            .filter(|tag| !acked.contains(tag));
        let Some(last) = unacked.max() else {
            return Ok(());
        };
        self.channel
            .basic_nack(
                last,
                BasicNackOptions {
                    multiple: true,
                    requeue: true,
                },
            )
            .await
            .map_err(BusError::amqp("returning dead letters to their queue"))?;
        let expected = (fetched.len() - acked.len()) as u32;
        let deadline = tokio::time::Instant::now() + REQUEUE_TIMEOUT;
        while self.count().await? < expected {
            if tokio::time::Instant::now() >= deadline {
                return Err(BusError::Timeout("waiting for dead letters to be requeued"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::BasicProperties;

    fn letter(id: &str, routing_key: &str, reason: &str) -> DeadLetter {
        let mut table = FieldTable::default();
        headers::set_str(&mut table, headers::ORIGINAL_ROUTING_KEY, routing_key);
        headers::set_str(&mut table, headers::REASON, reason);
        headers::set_u32(&mut table, headers::ATTEMPTS, 3);
        headers::set_str(&mut table, headers::FAILED_AT, "2026-11-25T10:00:00+00:00");
        DeadLetter::from_received(Received {
            exchange: String::new(),
            routing_key: "d".into(),
            properties: BasicProperties::default()
                .with_message_id(id.into())
                .with_headers(table),
            body: b"{}".to_vec(),
        })
    }

    #[test]
    fn dead_letters_read_their_headers() {
        let l = letter("a", "registry.push.manifest", "registry down");
        assert_eq!(
            (l.id.as_str(), l.routing_key.as_str(), l.attempts),
            ("a", "registry.push.manifest", 3)
        );
        assert_eq!(l.reason, "registry down");
        let now = DateTime::parse_from_rfc3339("2026-11-25T10:01:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(l.age(now), Some(Duration::from_secs(60)));
        assert_eq!(
            l.headers.get(headers::ATTEMPTS).map(String::as_str),
            Some("3")
        );
    }

    #[test]
    fn filters() {
        let l = letter("a", "registry.push.manifest", "registry answered 503");
        assert!(Filter::All.matches(&l));
        assert!(Filter::Ids(vec!["b".into(), "a".into()]).matches(&l));
        assert!(!Filter::Ids(vec!["b".into()]).matches(&l));
        assert!(Filter::RoutingKey("registry.push.manifest".into()).matches(&l));
        assert!(!Filter::RoutingKey("registry.delete.tag".into()).matches(&l));
        assert!(Filter::ReasonContains("503".into()).matches(&l));
        assert!(!Filter::ReasonContains("404".into()).matches(&l));
    }
}
