//! Switching the queues to another `amqp.queue_type` on a broker that already has them
//! (`regindexctl bus migrate`).
//!
//! RabbitMQ cannot change a queue's type in place: the queue has to be deleted and declared
//! again, and its messages moved meanwhile. For each queue whose declaration the broker
//! refuses (it exists with other arguments):
//!
//! 1. a holding queue `<queue>.migrating` of the new type takes over the queue's bindings,
//!    so that events published meanwhile (an api still running) land there;
//! 2. the old queue's messages are moved into it (each one confirmed there before it is
//!    acknowledged in the old queue) and the old queue is deleted once empty;
//! 3. the queue is declared with the new type, takes its bindings back, and the holding
//!    queue's messages are moved into it; the holding queue is deleted.
//!
//! Step 2 runs for every queue before step 3 runs for any, delay queues first: holding
//! queues have no TTL, so a message waiting for a retry never expires into a work queue
//! that is being replaced (it is retried when its delay queue is back, its delay starting
//! over). A moved message keeps its properties and records its original exchange and
//! routing key in headers, as a retried one does. A migration that stopped half-way
//! resumes where it was: holding queues left over are emptied into their queue.
//!
//! Workers must be stopped: a worker would redeclare the old topology on reconnecting and
//! republish into queues being replaced.

use lapin::options::{
    BasicAckOptions, BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ExchangeKind};

use super::publisher::{confirm_channel, republish_confirmed};
use super::republish::{self, Received};
use super::topology::{is_precondition_failed, queue_arguments, Topology};
use super::BusError;

/// What the migration did with one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueReport {
    pub queue: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Already of the configured type: untouched.
    Unchanged,
    /// Did not exist: declared.
    Created,
    /// Replaced by a queue of the configured type, with this many messages moved.
    Migrated { messages: u64 },
}

/// `<queue>.migrating`.
pub fn holding_queue_name(queue: &str) -> String {
    format!("{queue}.migrating")
}

/// Brings every queue of `topology` to its `queue_type`, keeping their messages; then
/// declares the whole topology.
pub async fn migrate(
    connection: &Connection,
    topology: &Topology,
) -> Result<Vec<QueueReport>, BusError> {
    let channel = confirm_channel(connection).await?;
    declare_exchanges(&channel, topology).await?;
    let holding_arguments = queue_arguments(topology.queue_type);
    let mut reports = Vec::new();
    let mut to_refill = Vec::new();
    // Delay queues first (see the module's comment): they come last in `queues()`.
    for (queue, arguments) in topology.queues().into_iter().rev() {
        let holding = holding_queue_name(&queue);
        let leftover = exists(connection, &holding).await?;
        let state = probe(connection, &queue, &arguments).await?;
        if state == QueueState::Matches && !leftover {
            reports.push(QueueReport {
                queue,
                outcome: Outcome::Unchanged,
            });
            continue;
        }
        if state == QueueState::Missing && !leftover {
            reports.push(QueueReport {
                queue,
                outcome: Outcome::Created,
            });
            continue;
        }
        channel
            .queue_declare(&holding, durable(), holding_arguments.clone())
            .await
            .map_err(BusError::amqp("declaring a holding queue"))?;
        for binding in topology.bindings_of(&queue) {
            bind(&channel, &holding, &binding.exchange, &binding.routing_key).await?;
        }
        let mut moved = 0;
        if state != QueueState::Missing {
            for binding in topology.bindings_of(&queue) {
                channel
                    .queue_unbind(
                        &queue,
                        &binding.exchange,
                        &binding.routing_key,
                        FieldTable::default(),
                    )
                    .await
                    .map_err(BusError::amqp("unbinding the old queue"))?;
            }
            moved = drain_and_delete(&channel, &queue, &holding).await?;
        }
        to_refill.push((queue, arguments, moved));
    }
    // Work queue first, delay queues last, as declared.
    for (queue, arguments, moved_out) in to_refill.into_iter().rev() {
        let holding = holding_queue_name(&queue);
        // A channel that published to the old queue keeps its type in a cache, and
        // RabbitMQ 3.10 then fails publishing to the new queue of the same name (the
        // channel crashes): a fresh channel for each queue.
        let channel = confirm_channel(connection).await?;
        channel
            .queue_declare(&queue, durable(), arguments)
            .await
            .map_err(BusError::amqp("declaring the new queue"))?;
        for binding in topology.bindings_of(&queue) {
            bind(&channel, &queue, &binding.exchange, &binding.routing_key).await?;
            channel
                .queue_unbind(
                    &holding,
                    &binding.exchange,
                    &binding.routing_key,
                    FieldTable::default(),
                )
                .await
                .map_err(BusError::amqp("unbinding the holding queue"))?;
        }
        let moved_back = drain_and_delete(&channel, &holding, &queue).await?;
        tracing::info!(%queue, moved_out, moved_back, queue_type = %topology.queue_type, "queue migrated");
        let _ = channel.close(200, "migrated").await;
        reports.push(QueueReport {
            queue,
            // Events published during the migration are counted too.
            outcome: Outcome::Migrated {
                messages: moved_back,
            },
        });
    }
    let _ = channel.close(200, "drained").await;
    let channel = confirm_channel(connection).await?;
    topology.declare(&channel).await?;
    let _ = channel.close(200, "migrated").await;
    Ok(reports)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueueState {
    Missing,
    Matches,
    /// Exists with other arguments (another type).
    Differs,
}

/// Declares `queue` with `arguments` on a channel of its own (a refusal closes it).
async fn probe(
    connection: &Connection,
    queue: &str,
    arguments: &FieldTable,
) -> Result<QueueState, BusError> {
    if !exists(connection, queue).await? {
        return Ok(QueueState::Missing);
    }
    let channel = connection
        .create_channel()
        .await
        .map_err(BusError::amqp("opening a channel"))?;
    match channel
        .queue_declare(queue, durable(), arguments.clone())
        .await
    {
        Ok(_) => {
            let _ = channel.close(200, "probed").await;
            Ok(QueueState::Matches)
        }
        Err(e) if is_precondition_failed(&e) => Ok(QueueState::Differs),
        Err(source) => Err(BusError::Amqp {
            context: "declaring a queue",
            source,
        }),
    }
}

/// A passive declaration on a channel of its own (a missing queue closes it).
async fn exists(connection: &Connection, queue: &str) -> Result<bool, BusError> {
    let channel = connection
        .create_channel()
        .await
        .map_err(BusError::amqp("opening a channel"))?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    match channel
        .queue_declare(queue, passive, FieldTable::default())
        .await
    {
        Ok(_) => {
            let _ = channel.close(200, "probed").await;
            Ok(true)
        }
        Err(lapin::Error::ProtocolError(e)) if e.get_id() == 404 => Ok(false),
        Err(source) => Err(BusError::Amqp {
            context: "looking a queue up",
            source,
        }),
    }
}

/// Moves every message of `from` into `to`, then deletes `from`. Returns how many
/// messages moved.
///
/// Quorum queues do not support `if-empty` deletes, so the queue is deleted once a move
/// leaves it empty. It has no bindings then; only a process publishing straight to it
/// (a worker retrying) could add a message between the last move and the delete: the
/// broker reports how many messages went with the queue, and that is an error.
async fn drain_and_delete(channel: &Channel, from: &str, to: &str) -> Result<u64, BusError> {
    let mut moved = move_messages(channel, from, to).await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    while channel
        .queue_declare(from, passive, FieldTable::default())
        .await
        .map_err(BusError::amqp("counting a drained queue"))?
        .message_count()
        > 0
    {
        moved += move_messages(channel, from, to).await?;
    }
    let lost = channel
        .queue_delete(from, QueueDeleteOptions::default())
        .await
        .map_err(BusError::amqp("deleting a drained queue"))?;
    if lost > 0 {
        return Err(BusError::MigrationRace {
            queue: from.to_owned(),
            messages: lost,
        });
    }
    Ok(moved)
}

/// Moves messages one by one: each is confirmed in `to` before it is acknowledged in
/// `from`, so a failure leaves it in one queue at least (a duplicate at worst, which a
/// refetch tolerates).
async fn move_messages(channel: &Channel, from: &str, to: &str) -> Result<u64, BusError> {
    let mut moved = 0;
    while let Some(message) = channel
        .basic_get(from, BasicGetOptions { no_ack: false })
        .await
        .map_err(BusError::amqp("reading the queue being migrated"))?
    {
        let received = Received::from_delivery(&message.delivery);
        republish_confirmed(channel, &republish::moved(&received, to)).await?;
        channel
            .basic_ack(message.delivery.delivery_tag, BasicAckOptions::default())
            .await
            .map_err(BusError::amqp("acknowledging a moved message"))?;
        moved += 1;
    }
    Ok(moved)
}

async fn declare_exchanges(channel: &Channel, topology: &Topology) -> Result<(), BusError> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    for exchange in [&topology.events_exchange, &topology.bodhi_exchange] {
        if exchange.starts_with("amq.") {
            continue;
        }
        channel
            .exchange_declare(
                exchange,
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await
            .map_err(BusError::amqp("declaring an exchange"))?;
    }
    Ok(())
}

async fn bind(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    routing_key: &str,
) -> Result<(), BusError> {
    channel
        .queue_bind(
            queue,
            exchange,
            routing_key,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(BusError::amqp("binding a queue"))
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}
