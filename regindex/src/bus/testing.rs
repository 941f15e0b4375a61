//! Helpers for tests against a real RabbitMQ (feature `test-support`): every test gets
//! its own exchange, queues and Bodhi environment, so tests run in parallel, and
//! [`TestBus::cleanup`] deletes them.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use lapin::options::BasicGetOptions;
use lapin::{Channel, Connection};

use super::republish::Received;
use super::{connect, BusError, Topology};
use crate::config::{AmqpConfig, BrokerUrls, QueueType};

/// A uniquely named topology on the local broker.
pub struct TestBus {
    pub config: AmqpConfig,
    pub topology: Topology,
    pub connection: Connection,
    pub channel: Channel,
}

impl TestBus {
    /// Unique names, short retry delays, classic queues; declared.
    pub async fn new() -> Result<Self, BusError> {
        Self::with_queue_type(QueueType::Classic).await
    }

    /// Unique names, short retry delays, queues of `queue_type`; declared.
    pub async fn with_queue_type(queue_type: QueueType) -> Result<Self, BusError> {
        Self::on(AmqpConfig::default().url, queue_type).await
    }

    /// [`TestBus::with_queue_type`] on the broker(s) at `url` (e.g. a test cluster's
    /// nodes), declared through the first one that answers.
    pub async fn on(url: BrokerUrls, queue_type: QueueType) -> Result<Self, BusError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let id = &id[..12];
        let config = AmqpConfig {
            events_exchange: format!("test-{id}.events"),
            work_queue: format!("test-{id}.work"),
            dead_letter_queue: format!("test-{id}.dead"),
            environment: format!("test{id}"),
            retry_delays: [100, 200].map(std::time::Duration::from_millis).to_vec(),
            max_attempts: 3,
            queue_type,
            url,
            ..AmqpConfig::default()
        };
        let topology = Topology::new(&config);
        let connection = connect(&config.url).await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(BusError::amqp("opening a channel"))?;
        topology.declare(&channel).await?;
        Ok(Self {
            config,
            topology,
            connection,
            channel,
        })
    }

    /// Runs `test`, then deletes the topology even when it panicked.
    pub async fn run<F, Fut>(test: F)
    where
        F: FnOnce(Arc<TestBus>) -> Fut,
        Fut: Future<Output = ()>,
    {
        Self::run_on(QueueType::Classic, test).await
    }

    /// [`TestBus::run`] with queues of `queue_type`.
    pub async fn run_on<F, Fut>(queue_type: QueueType, test: F)
    where
        F: FnOnce(Arc<TestBus>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let bus = Arc::new(
            Self::with_queue_type(queue_type)
                .await
                .expect("RabbitMQ on 127.0.0.1:5672"),
        );
        let outcome = AssertUnwindSafe(test(bus.clone())).catch_unwind().await;
        bus.cleanup().await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }

    pub async fn cleanup(&self) {
        if let Err(e) = self.topology.delete(&self.channel).await {
            eprintln!("cleaning up the test topology: {e}");
        }
        let _ = self.connection.close(200, "test done").await;
    }

    /// Takes (and acks) one message from `queue`, waiting up to `timeout`.
    pub async fn get(&self, queue: &str, timeout: Duration) -> Option<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self
                .channel
                .basic_get(queue, BasicGetOptions { no_ack: true })
                .await
                .expect("basic_get");
            if let Some(message) = got {
                return Some(Received::from_delivery(&message.delivery));
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Publishes `body` (JSON) to `exchange` with `routing_key`, confirmed.
    pub async fn publish(&self, exchange: &str, routing_key: &str, body: &str) {
        let publisher = super::Publisher::new(self.config.url.clone(), None);
        publisher
            .publish(&super::OutgoingMessage::json(
                exchange,
                routing_key,
                body.as_bytes().to_vec(),
            ))
            .await
            .expect("publishing a message");
        publisher.close().await;
    }

    /// Publishes `{"repository": <repository>}` on the events exchange with
    /// `routing_key` (what registry events and internal refetches carry), confirmed.
    pub async fn publish_event(&self, routing_key: &str, repository: &str) {
        let body = serde_json::json!({ "repository": repository }).to_string();
        self.publish(&self.config.events_exchange, routing_key, &body)
            .await;
    }

    /// Messages ready in `queue`.
    pub async fn count(&self, queue: &str) -> u32 {
        self.channel
            .queue_declare(
                queue,
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .expect("passive declare")
            .message_count()
    }
}
