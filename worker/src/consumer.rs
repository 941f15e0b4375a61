//! The consumer: receive → decode → dispatch → ack / retry / dead-letter.
//!
//! A message is acknowledged only once its outcome is durable: the work is done, or the
//! message was republished, with a broker confirm, to a delay queue (retry) or to the
//! dead-letter queue. Anything else (a crash, a lost connection) leaves it unacknowledged
//! and the broker delivers it again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::future::BoxFuture;
use futures::{stream, StreamExt, TryStreamExt};
use lapin::acker::Acker;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions, BasicNackOptions};
use regindex::bus::messages::{self, WorkItem};
use regindex::bus::republish::{self, Received};
use regindex::bus::{self as bus, BusError, Publisher, SessionEnd, Topology};
use regindex::config::{BodhiConfig, ComposeCompleteMode, Config};
use regindex::model::RepositoryName;
use regindex::store::DatabaseMonitor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, info_span, warn, Instrument};

use crate::coalesce::{Coalescer, Job, Ran, Urgency};
use crate::metrics::{outcome as counted, WorkerMetrics};
use crate::outcome::{decide, Failure, Outcome};
use crate::refetcher::Refetcher;

/// How long a graceful shutdown waits for work in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Publishes in flight while fanning a reindex out.
const FAN_OUT_IN_FLIGHT: usize = 64;
/// Pause before handing a message back when even its retry could not be published (the
/// broker is failing), so it does not spin.
const REQUEUE_PAUSE: Duration = Duration::from_secs(1);

/// Consumes the work queue, reconnecting until told to stop.
pub struct Worker {
    config: Config,
    refetcher: Arc<dyn Refetcher>,
    metrics: WorkerMetrics,
    database: Option<DatabaseMonitor>,
}

/// The handlers of work-queue messages (refetch, compose, update) and how they settle
/// them (ack, retry, dead letter), with what they need for that.
pub(crate) struct Handlers {
    pub(crate) refetcher: Arc<dyn Refetcher>,
    publisher: Publisher,
    topology: Topology,
    max_attempts: u32,
    pub(crate) metrics: WorkerMetrics,
    pub(crate) bodhi: BodhiConfig,
    /// Repositories a warm pass checks at once.
    pub(crate) concurrency: usize,
    /// See [`Worker::with_database`].
    database: Option<DatabaseMonitor>,
}

/// A work-queue delivery, taken apart once ([`Received::open`]): the message that the
/// decoder, the refetch and the retry path read, and the acker that settles it.
pub(crate) struct Message {
    received: Received,
    acker: Acker,
}

type Session = bus::ConsumerSession;

/// What dispatching needs across sessions: the handlers, the coalescer, the tasks in
/// flight and the token that kills them.
type Work<'a> = (
    &'a Arc<Handlers>,
    &'a Coalescer<Message>,
    &'a TaskTracker,
    &'a CancellationToken,
);

impl Worker {
    pub fn new(config: Config, refetcher: Arc<dyn Refetcher>, metrics: WorkerMetrics) -> Self {
        Self {
            config,
            refetcher,
            metrics,
            database: None,
        }
    }

    /// A refetch that fails while `database` reports the database down holds its
    /// messages until it is back and then runs again, instead of spending their retry
    /// attempts on an outage (which, outlasting the retry schedule, would dead-letter
    /// every message). Unacknowledged messages are bounded by the prefetch, so
    /// consumption pauses; the broker redelivers them if the worker stops meanwhile.
    pub fn with_database(mut self, database: DatabaseMonitor) -> Self {
        self.database = Some(database);
        self
    }

    /// Runs until `shutdown` is cancelled, then stops consuming and waits (up to
    /// [`SHUTDOWN_GRACE`]) for the work in flight. Dropping the future instead stops
    /// everything at once, acknowledging nothing more (the broker redelivers).
    pub async fn run(&self, shutdown: CancellationToken) {
        let topology = Topology::new(&self.config.amqp);
        let handlers = Arc::new(Handlers {
            refetcher: self.refetcher.clone(),
            publisher: Publisher::new(self.config.amqp.url.clone(), Some(topology.clone())),
            topology,
            max_attempts: self.config.amqp.max_attempts,
            metrics: self.metrics.clone(),
            bodhi: self.config.bodhi.clone(),
            concurrency: self.config.worker.concurrency,
            database: self.database.clone(),
        });
        let tracker = TaskTracker::new();
        let kill = CancellationToken::new();
        let _kill_on_drop = kill.clone().drop_guard();
        let coalescer = Coalescer::new(
            handlers.clone() as Arc<dyn Job<Message>>,
            self.config.worker.coalesce,
            self.config.worker.concurrency,
            tracker.clone(),
            kill.clone(),
        );

        let (work, shutdown) = ((&handlers, &coalescer, &tracker, &kill), &shutdown);
        bus::consume_reconnecting(
            &handlers.topology.work_queue,
            shutdown,
            || self.open_session(),
            |session| self.consume(session, work, shutdown),
        )
        .await;
        handlers.publisher.close().await;
    }

    /// Dispatches the deliveries of one session until the broker is lost or `shutdown`
    /// (then stops gracefully).
    async fn consume(
        &self,
        mut session: Session,
        (handlers, coalescer, tracker, kill): Work<'_>,
        shutdown: &CancellationToken,
    ) -> SessionEnd {
        self.metrics.amqp_connected.set(1);
        let lost = loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => break None,
                next = session.consumer.next() => next,
            };
            match next {
                Some(Ok(delivery)) => handlers.dispatch(delivery, coalescer, tracker, kill).await,
                Some(Err(e)) => break Some(e.to_string()),
                None => break Some("consumer cancelled by the broker".to_owned()),
            }
        };
        self.metrics.amqp_connected.set(0);
        match lost {
            Some(reason) => SessionEnd::Lost(reason),
            None => {
                self.stop(session, tracker).await;
                SessionEnd::Stopped
            }
        }
    }

    async fn open_session(&self) -> Result<Session, BusError> {
        let amqp = &self.config.amqp;
        Session::open(
            &amqp.url,
            "regindex-worker",
            &Topology::new(amqp),
            &amqp.work_queue,
            amqp.prefetch,
        )
        .await
    }

    /// Graceful stop: no new deliveries, finish what is in flight, close.
    async fn stop(&self, session: Session, tracker: &TaskTracker) {
        info!("stopping: finishing the work in flight");
        let _ = session
            .channel
            .basic_cancel(
                session.consumer.tag().as_str(),
                BasicCancelOptions::default(),
            )
            .await;
        tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
            .await
            .is_err()
        {
            warn!("work still in flight after the grace period; the broker will redeliver it");
        }
        let _ = session.channel.close(200, "shutting down").await;
        let _ = session.connection.close(200, "shutting down").await;
    }
}

impl Handlers {
    async fn dispatch(
        self: &Arc<Self>,
        delivery: Delivery,
        coalescer: &Coalescer<Message>,
        tracker: &TaskTracker,
        kill: &CancellationToken,
    ) {
        let (received, acker) = Received::open(delivery);
        let key = received.original_routing_key();
        let span = info_span!(
            "message",
            routing_key = %key,
            message_id = received.message_id().unwrap_or_default(),
            attempts = received.attempts(),
        );
        let item = messages::decode(&key, &received.body);
        let delivery = Message { received, acker };
        async move {
            match item {
                Ok(WorkItem::Refetch(repository)) => {
                    let urgency = if messages::is_untagged_push(&key, &delivery.received.body) {
                        Urgency::Quiet
                    } else {
                        Urgency::Now
                    };
                    coalescer.submit(repository, delivery, urgency)
                }
                Ok(WorkItem::ReindexAll { source })
                    if self.bodhi.compose_complete == ComposeCompleteMode::Off =>
                {
                    info!(%source, "ignored: bodhi.compose_complete is off");
                    if ack(&delivery).await {
                        self.metrics.count(counted::IGNORED);
                    }
                }
                Ok(WorkItem::ReindexAll { source }) => {
                    info!(%source, "reindexing after a compose");
                    let handlers = self.clone();
                    self.spawn_settled(
                        delivery,
                        tracker,
                        kill,
                        async move { handlers.compose().await },
                    );
                }
                Ok(WorkItem::Update(update)) => {
                    let handlers = self.clone();
                    self.spawn_settled(delivery, tracker, kill, async move {
                        handlers.update(&update).await
                    });
                }
                Ok(WorkItem::Ignore(reason)) => {
                    info!(%reason, "ignored");
                    if ack(&delivery).await {
                        self.metrics.count(counted::IGNORED);
                    }
                }
                Err(e) => {
                    let failure = Failure::permanent(format!("cannot decode the message: {e}"));
                    self.settle(delivery, Err(failure)).await;
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Runs `work` for a message that is not one repository's, then settles the message
    /// with its result; stops at once when the worker is dropped (the broker redelivers).
    fn spawn_settled(
        self: &Arc<Self>,
        delivery: Message,
        tracker: &TaskTracker,
        kill: &CancellationToken,
        work: impl std::future::Future<Output = Result<(), Failure>> + Send + 'static,
    ) {
        let (handlers, kill) = (self.clone(), kill.clone());
        let work = async move {
            let result = work.await;
            handlers.settle(delivery, result).await;
        };
        tracker.spawn(
            async move {
                tokio::select! {
                    _ = kill.cancelled() => {}
                    _ = work => {}
                }
            }
            .instrument(tracing::Span::current()),
        );
    }

    /// Publishes one `regindex.refetch` per repository, each confirmed, and returns how
    /// many: the refetches are spread over every worker process (and coalesced with other
    /// events for the same repository), and no message is held for a whole scan.
    pub(crate) async fn publish_refetches(
        &self,
        repositories: impl IntoIterator<Item = RepositoryName>,
    ) -> Result<usize, Failure> {
        let repositories: Vec<RepositoryName> = repositories.into_iter().collect();
        let count = repositories.len();
        stream::iter(repositories)
            .map(|repository| async move {
                let message = messages::refetch_message(&self.topology.events_exchange, repository)
                    .map_err(|e| Failure::permanent(e.to_string()))?;
                self.publisher.publish(&message).await.map_err(|e| {
                    Failure::transient(format!(
                        "publishing refetches: {}",
                        regindex::error_chain(&e)
                    ))
                })
            })
            .buffer_unordered(FAN_OUT_IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(count)
    }

    /// Acks on success; otherwise republishes to retry or dead-letter (confirmed), then acks.
    async fn settle(&self, delivery: Message, result: Result<(), Failure>) {
        let failure = match result {
            Ok(()) => {
                if ack(&delivery).await {
                    self.metrics.count(counted::PROCESSED);
                }
                return;
            }
            Err(failure) => failure,
        };
        let received = &delivery.received;
        let (message, counter) = match decide(&failure, received.attempts(), self.max_attempts) {
            Outcome::Retry { attempts } => {
                warn!(attempts, error = %failure.reason, "failed; will retry");
                (
                    republish::retry(&self.topology, received, attempts, &failure.reason),
                    counted::RETRIED,
                )
            }
            Outcome::DeadLetter { attempts, reason } => {
                error!(attempts, %reason, "failed; dead-lettered");
                let message =
                    republish::dead_letter(&self.topology, received, attempts, &reason, Utc::now());
                (message, counted::DEAD_LETTERED)
            }
        };
        match self.publisher.republish(&message).await {
            Ok(()) => {
                if ack(&delivery).await {
                    self.metrics.count(counter);
                }
            }
            Err(e) => {
                error!(error = %e, "cannot republish a failed message; handing it back to the broker");
                tokio::time::sleep(REQUEUE_PAUSE).await;
                let requeue = BasicNackOptions {
                    multiple: false,
                    requeue: true,
                };
                if let Err(e) = delivery.acker.nack(requeue).await {
                    warn!(error = %e, "nack failed; the broker redelivers once the channel closes");
                }
            }
        }
    }
}

impl Job<Message> for Handlers {
    fn run<'a>(
        &'a self,
        repository: &'a RepositoryName,
        deliveries: &'a [Message],
    ) -> BoxFuture<'a, Result<Ran, Failure>> {
        Box::pin(async move {
            // The tags the push events announce: the refetch makes sure it sees them.
            let announced: Vec<_> = deliveries
                .iter()
                .filter_map(|delivery| {
                    let received = &delivery.received;
                    messages::pushed_tag(&received.original_routing_key(), &received.body)
                })
                .collect();
            let result = loop {
                let started = Instant::now();
                let result = self
                    .refetcher
                    .refetch_announced(repository, &announced)
                    .await;
                self.metrics
                    .refetch_seconds
                    .observe(started.elapsed().as_secs_f64());
                match (&result, &self.database) {
                    (Err(failure), Some(database)) if failure.transient => {
                        if !database.is_down() {
                            // The next failures know sooner if the database just went.
                            database.check_now();
                            break result;
                        }
                        warn!(
                            error = %failure.reason,
                            database = database.target(),
                            "the database is away: holding the messages until it is back (no attempt counted)"
                        );
                        let _waiting = Raised::new(&self.metrics.waiting_for_database);
                        database.wait_up().await;
                        info!("the database is back: refetching again");
                    }
                    _ => break result,
                }
            };
            if let Some(count) = self.refetcher.problem_count().await {
                self.metrics.tag_problems.set(count);
            }
            match result {
                Ok(true) => Ok(Ran::Done),
                Ok(false) => {
                    warn!(
                        ?announced,
                        "the registry does not show a pushed tag yet; refetching again"
                    );
                    Ok(Ran::Again)
                }
                Err(failure) => Err(failure),
            }
        })
    }

    fn settle<'a>(
        &'a self,
        repository: &'a RepositoryName,
        deliveries: Vec<Message>,
        result: Result<(), Failure>,
    ) -> BoxFuture<'a, ()> {
        let span = info_span!("settle", repository = %repository, messages = deliveries.len());
        Box::pin(
            async move {
                for delivery in deliveries {
                    Handlers::settle(self, delivery, result.clone()).await;
                }
            }
            .instrument(span),
        )
    }
}

/// A gauge raised by one while this lives: a held refetch may be dropped (killed at
/// shutdown) as well as finish.
struct Raised<'a>(&'a prometheus::IntGauge);

impl<'a> Raised<'a> {
    fn new(gauge: &'a prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Raised<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Acks; false (logged) when the channel is gone, in which case the broker redelivers.
async fn ack(delivery: &Message) -> bool {
    match delivery.acker.ack(BasicAckOptions::default()).await {
        Ok(()) => true,
        Err(e) => {
            warn!(error = %e, "ack failed; the message will be delivered again");
            false
        }
    }
}
