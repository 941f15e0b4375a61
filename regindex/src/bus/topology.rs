//! Every exchange, queue and binding regindex uses, named from the configuration.
//!
//! The api and the worker both declare the whole topology at start-up: declarations are
//! idempotent, so whichever process starts first creates it and a broker reset heals on
//! the next start. `bus-config/definitions.json` is the same topology for the default
//! configuration, with the login docker-compose.yml uses ([`super::definitions`]; a unit
//! test keeps them equal).

use std::collections::BTreeSet;

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};
use serde_json::json;

use super::messages::REFETCHING_EVENTS;
use super::BusError;
use crate::config::{AmqpConfig, Config, QueueType};

/// Routing keys regindex publishes and binds.
pub mod routing_key {
    /// Internal: refetch one repository, body `{"repository": "..."}`.
    pub const REFETCH: &str = "regindex.refetch";
    /// Every registry event (the history queue's binding).
    pub const REGISTRY_ALL: &str = "registry.#";
    /// Prefix of registry events: `registry.<action>.<kind>`.
    pub const REGISTRY_PREFIX: &str = "registry.";
    /// Bodhi topics (after `<topic_prefix>.<environment>.`).
    pub const BODHI_COMPOSE_COMPLETE: &str = "bodhi.compose.complete";
    pub const BODHI_MASHTASK_COMPLETE: &str = "bodhi.mashtask.complete";
    /// An update's builds reached the stable / testing repository (bodhi-messages
    /// `UpdateCompleteStableV1`, `UpdateCompleteTestingV1`).
    pub const BODHI_UPDATE_COMPLETE_STABLE: &str = "bodhi.update.complete.stable";
    pub const BODHI_UPDATE_COMPLETE_TESTING: &str = "bodhi.update.complete.testing";

    /// `registry.<action>.<kind>`.
    pub fn registry(action: &str, kind: &str) -> String {
        format!("{REGISTRY_PREFIX}{action}.{kind}")
    }

    /// `registry.coalesced.<action>.<kind>`: an event whose refetch another event of the
    /// same notification already asks for. `registry.#` (the history) matches it; the
    /// work queue's bindings (`registry.push.manifest`, `registry.delete.#`, from
    /// [`super::super::messages::REFETCHING_EVENTS`]) do not.
    pub fn registry_coalesced(action: &str, kind: &str) -> String {
        format!("{REGISTRY_PREFIX}coalesced.{action}.{kind}")
    }
}

/// A binding of a queue to an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub exchange: String,
    pub queue: String,
    pub routing_key: String,
}

/// A delay queue of the retry path: messages wait `delay_ms` there, then the broker
/// dead-letters them back to the work queue through the default exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayQueue {
    pub name: String,
    pub delay_ms: u64,
}

/// The names and bindings derived from one [`AmqpConfig`].
#[derive(Debug, Clone)]
pub struct Topology {
    pub events_exchange: String,
    pub bodhi_exchange: String,
    pub work_queue: String,
    pub dead_letter_queue: String,
    /// One per distinct configured delay, shortest first.
    pub delay_queues: Vec<DelayQueue>,
    /// `retry_delays_ms` as configured: attempt n waits `retry_delays_ms[n - 1]` (the last repeats).
    pub retry_delays_ms: Vec<u64>,
    pub bindings: Vec<Binding>,
    /// The activity history's queue (bound to every registry event), when history is on.
    pub history_queue: Option<String>,
    /// The type of every queue above.
    pub queue_type: QueueType,
}

impl Topology {
    /// The whole topology of a configuration: [`Topology::new`] plus the history queue
    /// when `history.enabled`. The api must declare this one: with history on it
    /// publishes pulls, which are unroutable (an error) without the history queue.
    pub fn from_config(config: &Config) -> Self {
        let topology = Self::new(&config.amqp);
        if config.history.enabled {
            topology.with_history(&config.history.queue)
        } else {
            topology
        }
    }

    /// Adds the history queue, bound to `registry.#`: it gets every registry event,
    /// pulls included, apart from the work queue so a flood of pulls never delays a
    /// refetch.
    pub fn with_history(mut self, queue: &str) -> Self {
        self.bindings.push(Binding {
            exchange: self.events_exchange.clone(),
            queue: queue.to_owned(),
            routing_key: routing_key::REGISTRY_ALL.to_owned(),
        });
        self.history_queue = Some(queue.to_owned());
        self
    }

    pub fn new(config: &AmqpConfig) -> Self {
        let work = &config.work_queue;
        let bind = |exchange: &str, routing_key: String| Binding {
            exchange: exchange.to_owned(),
            queue: work.clone(),
            routing_key,
        };
        let bodhi_topic =
            |topic: &str| format!("{}.{}.{topic}", config.topic_prefix, config.environment);
        // The registry events that make the worker refetch, as `messages` decides.
        let mut bindings: Vec<Binding> = REFETCHING_EVENTS
            .iter()
            .map(|event| bind(&config.events_exchange, event.binding_key()))
            .collect();
        bindings.extend([
            bind(&config.events_exchange, routing_key::REFETCH.into()),
            bind(
                &config.bodhi_exchange,
                bodhi_topic(routing_key::BODHI_COMPOSE_COMPLETE),
            ),
            bind(
                &config.bodhi_exchange,
                bodhi_topic(routing_key::BODHI_MASHTASK_COMPLETE),
            ),
            bind(
                &config.bodhi_exchange,
                bodhi_topic(routing_key::BODHI_UPDATE_COMPLETE_STABLE),
            ),
            bind(
                &config.bodhi_exchange,
                bodhi_topic(routing_key::BODHI_UPDATE_COMPLETE_TESTING),
            ),
        ]);
        // Whole milliseconds: they name the delay queues and set their message TTLs.
        let retry_delays_ms: Vec<u64> = config
            .retry_delays
            .iter()
            .map(|delay| delay.as_millis() as u64)
            .collect();
        let delays: BTreeSet<u64> = retry_delays_ms.iter().copied().collect();
        Self {
            events_exchange: config.events_exchange.clone(),
            bodhi_exchange: config.bodhi_exchange.clone(),
            work_queue: work.clone(),
            dead_letter_queue: config.dead_letter_queue.clone(),
            delay_queues: delays
                .into_iter()
                .map(|delay_ms| DelayQueue {
                    name: delay_queue_name(work, delay_ms),
                    delay_ms,
                })
                .collect(),
            retry_delays_ms,
            bindings,
            history_queue: None,
            queue_type: config.queue_type,
        }
    }

    /// The delay before retry number `attempt` (1 = first retry); the last delay repeats.
    pub fn retry_delay_ms(&self, attempt: u32) -> u64 {
        let index = (attempt.max(1) as usize - 1).min(self.retry_delays_ms.len().saturating_sub(1));
        self.retry_delays_ms.get(index).copied().unwrap_or(0)
    }

    /// The delay queue a message waits in before retry number `attempt`.
    pub fn delay_queue_for_attempt(&self, attempt: u32) -> String {
        delay_queue_name(&self.work_queue, self.retry_delay_ms(attempt))
    }

    /// Declares everything; safe to call any number of times, from any process.
    pub async fn declare(&self, channel: &Channel) -> Result<(), BusError> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                &self.events_exchange,
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await
            .map_err(BusError::amqp("declaring the events exchange"))?;
        if !self.bodhi_exchange.starts_with("amq.") {
            // `amq.*` exchanges always exist and cannot be declared with other flags.
            channel
                .exchange_declare(
                    &self.bodhi_exchange,
                    ExchangeKind::Topic,
                    durable,
                    FieldTable::default(),
                )
                .await
                .map_err(BusError::amqp("declaring the bodhi exchange"))?;
        }
        for (queue, arguments) in self.queues() {
            channel
                .queue_declare(&queue, durable_queue(), arguments)
                .await
                .map_err(|source| declare_error(&queue, self.queue_type, source))?;
        }
        for binding in &self.bindings {
            channel
                .queue_bind(
                    &binding.queue,
                    &binding.exchange,
                    &binding.routing_key,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(BusError::amqp("binding the work queue"))?;
        }
        Ok(())
    }

    /// Deletes the queues and the events exchange (tests, which use unique names).
    pub async fn delete(&self, channel: &Channel) -> Result<(), BusError> {
        for (queue, _) in self.queues() {
            channel
                .queue_delete(&queue, QueueDeleteOptions::default())
                .await
                .map_err(BusError::amqp("deleting a queue"))?;
        }
        channel
            .exchange_delete(&self.events_exchange, ExchangeDeleteOptions::default())
            .await
            .map_err(BusError::amqp("deleting the events exchange"))?;
        if !self.bodhi_exchange.starts_with("amq.") {
            channel
                .exchange_delete(&self.bodhi_exchange, ExchangeDeleteOptions::default())
                .await
                .map_err(BusError::amqp("deleting the bodhi exchange"))?;
        }
        Ok(())
    }

    /// Every queue with its declaration arguments, the work queue first and the delay
    /// queues (which dead-letter into it) last.
    pub fn queues(&self) -> Vec<(String, FieldTable)> {
        let plain = queue_arguments(self.queue_type);
        let mut queues = vec![
            (self.work_queue.clone(), plain.clone()),
            (self.dead_letter_queue.clone(), plain.clone()),
        ];
        if let Some(history) = &self.history_queue {
            queues.push((history.clone(), plain));
        }
        for delay in &self.delay_queues {
            queues.push((delay.name.clone(), self.delay_queue_arguments(delay)));
        }
        queues
    }

    /// The bindings of `queue`.
    pub fn bindings_of<'a>(&'a self, queue: &'a str) -> impl Iterator<Item = &'a Binding> + 'a {
        self.bindings.iter().filter(move |b| b.queue == queue)
    }

    fn delay_queue_arguments(&self, delay: &DelayQueue) -> FieldTable {
        let mut arguments = queue_arguments(self.queue_type);
        arguments.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(i64::try_from(delay.delay_ms).unwrap_or(i64::MAX)),
        );
        arguments.insert("x-dead-letter-exchange".into(), long_string(""));
        arguments.insert(
            "x-dead-letter-routing-key".into(),
            long_string(&self.work_queue),
        );
        if self.queue_type == QueueType::Quorum {
            // A quorum queue dead-letters at most once by default: a message expiring while
            // the work queue's leader changes would be lost. At-least-once keeps it until the
            // work queue confirms it, and RabbitMQ requires reject-publish overflow for that.
            arguments.insert(
                "x-dead-letter-strategy".into(),
                long_string("at-least-once"),
            );
            arguments.insert("x-overflow".into(), long_string("reject-publish"));
        }
        arguments
    }

    /// The topology as RabbitMQ definitions (`rabbitmqctl import_definitions`) in `vhost`:
    /// exchanges, queues and bindings only. [`super::definitions`] adds the vhost and the
    /// user that logs in.
    pub fn definitions(&self, vhost: &str) -> serde_json::Value {
        let mut exchanges = vec![json!({
            "name": self.events_exchange, "vhost": vhost, "type": "topic", "durable": true,
            "auto_delete": false, "internal": false, "arguments": {}
        })];
        if !self.bodhi_exchange.starts_with("amq.") {
            exchanges.push(json!({
                "name": self.bodhi_exchange, "vhost": vhost, "type": "topic", "durable": true,
                "auto_delete": false, "internal": false, "arguments": {}
            }));
        }
        let queues: Vec<_> = self
            .queues()
            .into_iter()
            .map(|(name, arguments)| {
                let arguments: serde_json::Map<String, serde_json::Value> = arguments
                    .inner()
                    .iter()
                    .map(|(key, value)| (key.to_string(), amqp_value_json(value)))
                    .collect();
                json!({"name": name, "vhost": vhost, "durable": true, "auto_delete": false, "arguments": arguments})
            })
            .collect();
        let bindings: Vec<_> = self
            .bindings
            .iter()
            .map(|b| {
                json!({
                    "source": b.exchange, "vhost": vhost, "destination": b.queue,
                    "destination_type": "queue", "routing_key": b.routing_key, "arguments": {}
                })
            })
            .collect();
        json!({"exchanges": exchanges, "queues": queues, "bindings": bindings})
    }
}

/// The arguments every queue of `queue_type` carries. Classic queues carry none, as
/// before the setting existed, so that existing deployments declare them unchanged.
pub fn queue_arguments(queue_type: QueueType) -> FieldTable {
    let mut arguments = FieldTable::default();
    if queue_type == QueueType::Quorum {
        arguments.insert("x-queue-type".into(), long_string("quorum"));
    }
    arguments
}

/// A queue declaration refused with PRECONDITION_FAILED exists with other arguments,
/// typically another `amqp.queue_type`: say so, and how to switch.
fn declare_error(queue: &str, queue_type: QueueType, source: lapin::Error) -> BusError {
    if is_precondition_failed(&source) {
        BusError::QueueMismatch {
            queue: queue.to_owned(),
            queue_type,
            source,
        }
    } else {
        BusError::Amqp {
            context: "declaring a queue",
            source,
        }
    }
}

/// The broker closed the channel with 406 PRECONDITION_FAILED.
pub(crate) fn is_precondition_failed(error: &lapin::Error) -> bool {
    matches!(
        error,
        lapin::Error::ProtocolError(e) if e.get_id() == 406
    )
}

/// `<work queue>.retry.<delay>ms`.
fn delay_queue_name(work_queue: &str, delay_ms: u64) -> String {
    format!("{work_queue}.retry.{delay_ms}ms")
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

pub(crate) fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn amqp_value_json(value: &AMQPValue) -> serde_json::Value {
    match value {
        AMQPValue::LongLongInt(n) => json!(n),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        other => json!(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_bindings_come_from_the_config() {
        let config = AmqpConfig {
            work_queue: "w".into(),
            events_exchange: "e".into(),
            topic_prefix: "org.example".into(),
            environment: "stg".into(),
            retry_delays: [100, 50, 100]
                .map(std::time::Duration::from_millis)
                .to_vec(),
            ..AmqpConfig::default()
        };
        let topology = Topology::new(&config);
        let keys: Vec<(&str, &str)> = topology
            .bindings
            .iter()
            .map(|b| (b.exchange.as_str(), b.routing_key.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("e", "registry.push.manifest"),
                ("e", "registry.delete.#"),
                ("e", "regindex.refetch"),
                ("amq.topic", "org.example.stg.bodhi.compose.complete"),
                ("amq.topic", "org.example.stg.bodhi.mashtask.complete"),
                ("amq.topic", "org.example.stg.bodhi.update.complete.stable"),
                ("amq.topic", "org.example.stg.bodhi.update.complete.testing"),
            ]
        );
        let delays: Vec<&str> = topology
            .delay_queues
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        assert_eq!(delays, ["w.retry.50ms", "w.retry.100ms"]);
    }

    #[test]
    fn retry_delays_follow_the_attempts_and_the_last_repeats() {
        let topology = Topology::new(&AmqpConfig {
            work_queue: "w".into(),
            retry_delays: [10, 20].map(std::time::Duration::from_millis).to_vec(),
            ..AmqpConfig::default()
        });
        assert_eq!(topology.retry_delay_ms(1), 10);
        assert_eq!(topology.retry_delay_ms(2), 20);
        assert_eq!(topology.retry_delay_ms(7), 20);
        assert_eq!(topology.delay_queue_for_attempt(3), "w.retry.20ms");
    }

    #[test]
    fn history_queue_gets_every_registry_event() {
        let mut config = Config::default();
        config.history.queue = "h".into();
        let topology = Topology::from_config(&config);
        assert_eq!(topology.history_queue.as_deref(), Some("h"));
        assert!(topology
            .bindings
            .iter()
            .any(|b| b.queue == "h" && b.routing_key == "registry.#"));
        assert!(topology.queues().iter().any(|(q, _)| q == "h"));
        config.history.enabled = false;
        assert_eq!(Topology::from_config(&config).history_queue, None);
    }
}
