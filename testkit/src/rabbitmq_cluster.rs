//! A RabbitMQ cluster of [`PrivateRabbitMq`] nodes on loopback, for failover tests.

use std::time::Duration;

use anyhow::{bail, Context};
use tokio::time::Instant;

use crate::PrivateRabbitMq;

/// How long a quorum queue may take to elect a leader after a node stops.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// `n` private nodes sharing one Erlang cookie, the second and later joined to the first
/// (`rabbitmqctl join_cluster`). Quorum queues declared on it are replicated on every
/// node. Each node keeps its own AMQP port: clients list every node's URL.
///
/// ```no_run
/// # async fn example() -> anyhow::Result<()> {
/// use regindex_testkit::RabbitMqCluster;
///
/// let mut cluster = RabbitMqCluster::start(3).await?;
/// let urls = cluster.amqp_urls(); // one per node
/// let leader = cluster.queue_leader("my-quorum-queue").await?; // a node index
/// cluster.node_mut(leader).stop().await?; // the others elect a new leader
/// # let _ = urls;
/// # Ok(())
/// # }
/// ```
pub struct RabbitMqCluster {
    nodes: Vec<PrivateRabbitMq>,
}

impl RabbitMqCluster {
    /// Starts the nodes (concurrently) and joins them into one cluster.
    pub async fn start(n: usize) -> anyhow::Result<Self> {
        if n == 0 {
            bail!("a cluster needs at least one node");
        }
        let cookie = uuid::Uuid::new_v4().simple().to_string().to_uppercase();
        let mut starting = tokio::task::JoinSet::new();
        for _ in 0..n {
            let cookie = cookie.clone();
            starting.spawn(async move { PrivateRabbitMq::with_cookie(&cookie).await });
        }
        let mut nodes = Vec::new();
        while let Some(started) = starting.join_next().await {
            nodes.push(started.context("starting a node")??);
        }
        let first = nodes[0].node().to_owned();
        for node in &nodes[1..] {
            node.ctl(&["stop_app"]).await?;
            node.ctl(&["join_cluster", &first])
                .await
                .with_context(|| format!("joining {} to {first}", node.node()))?;
            node.ctl(&["start_app"]).await?;
            node.ctl(&["await_startup", "--timeout", "60"]).await?;
        }
        Ok(Self { nodes })
    }

    pub fn nodes(&self) -> &[PrivateRabbitMq] {
        &self.nodes
    }

    pub fn node_mut(&mut self, index: usize) -> &mut PrivateRabbitMq {
        &mut self.nodes[index]
    }

    /// Every node's AMQP URL, node 0 first.
    pub fn amqp_urls(&self) -> Vec<String> {
        self.nodes.iter().map(PrivateRabbitMq::amqp_url).collect()
    }

    /// Which node leads quorum queue `queue` of vhost `/`, asked of a running node; waits
    /// until one does (after a leader stops, the others elect a new one).
    pub async fn queue_leader(&self, queue: &str) -> anyhow::Result<usize> {
        let deadline = Instant::now() + LEADER_TIMEOUT;
        loop {
            let running = self
                .nodes
                .iter()
                .find(|n| n.is_running())
                .context("no node runs")?;
            let listed = running
                .ctl(&["list_queues", "-q", "--formatter", "json", "name", "leader"])
                .await?;
            let queues: Vec<serde_json::Value> =
                serde_json::from_str(&listed).context("rabbitmqctl list_queues output")?;
            let leader = queues
                .iter()
                .find(|q| q["name"] == queue)
                .and_then(|q| q["leader"].as_str())
                .and_then(|leader| {
                    self.nodes
                        .iter()
                        .position(|n| n.node() == leader && n.is_running())
                });
            if let Some(index) = leader {
                return Ok(index);
            }
            if Instant::now() > deadline {
                bail!("no running leader for queue {queue:?} within {LEADER_TIMEOUT:?}: {listed}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
