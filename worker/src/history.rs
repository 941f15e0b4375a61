//! The history consumer: registry events from the history queue, recorded in batches.
//!
//! It runs beside the work-queue consumer, on its own connection, channel and prefetch,
//! so a flood of pulls never delays a refetch. Deliveries are gathered until
//! `history.batch_size` events or `history.batch_max_ms` after the first one, recorded in
//! one transaction (idempotent on the event id), and acknowledged with one `multiple` ack
//! after the commit. A batch that cannot be written is retried, then handed back to the
//! broker (nack, requeue): nothing is acknowledged before it is durable.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use chrono::Utc;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use lapin::Channel;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts};
use regindex::bus::messages::RegistryEvent;
use regindex::bus::{self as bus, BusError, SessionEnd, Topology};
use regindex::config::Config;
use regindex::history::event::is_ignored_pull;
use regindex::history::{ActivityEvent, HistoryError, HistoryStore, RecordOutcome};
use regindex::model::AliasMap;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Attempts at writing one batch before it goes back to the broker.
const WRITE_ATTEMPTS: usize = 5;
/// Pause after handing a batch back, so a failing database is not hammered.
const REQUEUE_PAUSE: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum HistoryConsumerError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("history queue: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker cancelled the history consumer")]
    Cancelled,
}

/// Counters of the history consumer, registered in the worker's metrics registry.
#[derive(Clone)]
pub struct HistoryMetrics {
    /// Events by outcome: `recorded`, `duplicate`, `unrecordable`, `undecodable`,
    /// `ignored_agent`, `failed` (refused by the database for good; dropped).
    pub events: IntCounterVec,
    pub batch_seconds: Histogram,
}

impl HistoryMetrics {
    pub fn register(registry: &prometheus::Registry) -> Self {
        let events = IntCounterVec::new(
            Opts::new(
                "regindex_history_events_total",
                "History events, by outcome",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let batch_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "regindex_history_batch_duration_seconds",
                "Time to record one history batch",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )
        .expect("valid metric");
        // Registering twice (a second consumer in one process) keeps the first.
        let _ = registry.register(Box::new(events.clone()));
        let _ = registry.register(Box::new(batch_seconds.clone()));
        Self {
            events,
            batch_seconds,
        }
    }
}

pub struct HistoryConsumer {
    config: Config,
    store: HistoryStore,
    metrics: HistoryMetrics,
}

type Session = bus::ConsumerSession;

/// What became of one delivery before writing.
enum Decoded {
    Event(Box<ActivityEvent>),
    /// Acknowledged without recording (logged): it cannot feed any statistic.
    Skip(&'static str),
}

/// Decodes a history message: the bus's normalised event, interpreted for the history.
fn decode(body: &[u8], aliases: &AliasMap, ignored_agents: &[String]) -> Decoded {
    let event: RegistryEvent = match serde_json::from_slice(body) {
        Ok(event) => event,
        Err(e) => {
            warn!(error = %e, "history message is not a registry event; dropped");
            return Decoded::Skip("undecodable");
        }
    };
    if is_ignored_pull(&event, ignored_agents) {
        return Decoded::Skip("ignored_agent");
    }
    match ActivityEvent::from_registry_event(&event, aliases, Utc::now()) {
        Ok(event) => Decoded::Event(Box::new(event)),
        Err(e) => {
            debug!(reason = %e, "event not recorded");
            Decoded::Skip("unrecordable")
        }
    }
}

impl HistoryConsumer {
    pub fn new(config: Config, store: HistoryStore, metrics: HistoryMetrics) -> Self {
        Self {
            config,
            store,
            metrics,
        }
    }

    /// Consumes until `shutdown`, reconnecting after broker failures. The batch being
    /// gathered when `shutdown` comes is written first.
    pub async fn run(&self, shutdown: CancellationToken) {
        let prune = tokio::spawn(prune_loop(
            self.store.clone(),
            self.config.history.clone(),
            shutdown.clone(),
        ));
        let shutdown = &shutdown;
        bus::consume_reconnecting(
            &self.config.history.queue,
            shutdown,
            || self.open_session(),
            |mut session| async move {
                let result = self.consume(&mut session, shutdown).await;
                let _ = session.channel.close(200, "closing").await;
                let _ = session.connection.close(200, "closing").await;
                match result {
                    Ok(()) => SessionEnd::Stopped,
                    Err(e) => SessionEnd::Lost(e.to_string()),
                }
            },
        )
        .await;
        let _ = prune.await;
    }

    async fn open_session(&self) -> Result<Session, BusError> {
        Session::open(
            &self.config.amqp.url,
            "regindex-history",
            &Topology::from_config(&self.config),
            &self.config.history.queue,
            self.config.history.prefetch,
        )
        .await
    }

    async fn consume(
        &self,
        session: &mut Session,
        shutdown: &CancellationToken,
    ) -> Result<(), HistoryConsumerError> {
        let batch_size = self.config.history.batch_size;
        let max_wait = self.config.history.batch_max_wait;
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                next = session.consumer.next() => next,
            };
            let mut batch = vec![first.ok_or(HistoryConsumerError::Cancelled)??];
            let deadline = Instant::now() + max_wait;
            let mut lost = None;
            while batch.len() < batch_size {
                match tokio::time::timeout_at(deadline, session.consumer.next()).await {
                    Ok(Some(Ok(delivery))) => batch.push(delivery),
                    Ok(Some(Err(e))) => {
                        lost = Some(HistoryConsumerError::Amqp(e));
                        break;
                    }
                    Ok(None) => {
                        lost = Some(HistoryConsumerError::Cancelled);
                        break;
                    }
                    Err(_) => break,
                }
            }
            // What was received is written even when the connection just failed: the
            // ack may not reach the broker then, and the redelivery is a duplicate that
            // changes nothing.
            self.process(&session.channel, batch).await?;
            if let Some(e) = lost {
                return Err(e);
            }
        }
    }

    /// Records one batch and acknowledges it; or hands it back to the broker.
    async fn process(
        &self,
        channel: &Channel,
        batch: Vec<Delivery>,
    ) -> Result<(), HistoryConsumerError> {
        let Some(last_tag) = batch.last().map(|d| d.delivery_tag) else {
            return Ok(());
        };
        let mut events = Vec::with_capacity(batch.len());
        for delivery in &batch {
            match decode(
                &delivery.data,
                &self.config.history.aliases,
                &self.config.history.ignore_user_agents,
            ) {
                Decoded::Event(event) => events.push(*event),
                Decoded::Skip(outcome) => self.metrics.events.with_label_values(&[outcome]).inc(),
            }
        }
        let timer = self.metrics.batch_seconds.start_timer();
        let written = match self.write(events.clone()).await {
            Err(e) if !e.is_transient() => {
                // Something in the batch cannot be stored, and never will: record the
                // events one by one so the rest goes in and the culprit is dropped,
                // instead of handing the same batch back forever.
                warn!(error = %e, "history batch refused; recording its events one by one");
                self.write_one_by_one(events).await
            }
            other => other,
        };
        timer.observe_duration();
        match written {
            Ok(outcome) => {
                self.count(&outcome);
                debug!(
                    messages = batch.len(),
                    recorded = outcome.recorded,
                    duplicates = outcome.duplicates,
                    "history batch recorded"
                );
                channel
                    .basic_ack(last_tag, BasicAckOptions { multiple: true })
                    .await?;
            }
            Err(e) => {
                warn!(error = %e, messages = batch.len(), "history batch not recorded; handing it back");
                channel
                    .basic_nack(
                        last_tag,
                        BasicNackOptions {
                            multiple: true,
                            requeue: true,
                        },
                    )
                    .await?;
                tokio::time::sleep(REQUEUE_PAUSE).await;
            }
        }
        Ok(())
    }

    /// One transaction, retried while the failure is transient.
    async fn write(&self, events: Vec<ActivityEvent>) -> Result<RecordOutcome, HistoryError> {
        (|| self.store.record(events.clone()))
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(50))
                    .with_max_delay(Duration::from_secs(2))
                    .with_max_times(WRITE_ATTEMPTS),
            )
            .when(HistoryError::is_transient)
            .notify(|e, delay| warn!(error = %e, ?delay, "recording history failed; retrying"))
            .await
    }

    /// Each event in its own transaction; the ones refused for good are dropped (logged,
    /// counted as `failed`). A transient failure stops and hands the batch back: what was
    /// already recorded is a harmless duplicate on redelivery.
    async fn write_one_by_one(
        &self,
        events: Vec<ActivityEvent>,
    ) -> Result<RecordOutcome, HistoryError> {
        let mut total = RecordOutcome::default();
        for event in events {
            let id = event.id.clone();
            match self.write(vec![event]).await {
                Ok(outcome) => {
                    total.recorded += outcome.recorded;
                    total.duplicates += outcome.duplicates;
                    total.unlinked_manifests.extend(outcome.unlinked_manifests);
                }
                Err(e) if !e.is_transient() => {
                    error!(event = %id, error = %e, "history event cannot be recorded; dropped");
                    self.metrics.events.with_label_values(&["failed"]).inc();
                }
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    fn count(&self, outcome: &RecordOutcome) {
        self.metrics
            .events
            .with_label_values(&["recorded"])
            .inc_by(outcome.recorded as u64);
        self.metrics
            .events
            .with_label_values(&["duplicate"])
            .inc_by(outcome.duplicates as u64);
    }
}

/// Prunes the audit trail and the raw events every `history.prune_interval_secs`.
async fn prune_loop(
    store: HistoryStore,
    config: regindex::config::HistoryConfig,
    shutdown: CancellationToken,
) {
    let Some(interval) = config.prune_interval else {
        return;
    };
    loop {
        match store
            .prune(config.audit_retention_days, config.event_retention_days)
            .await
        {
            Ok(outcome) if outcome.deletions + outcome.events > 0 => {
                info!(
                    deletions = outcome.deletions,
                    events = outcome.events,
                    "history pruned"
                )
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "pruning the history failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}
