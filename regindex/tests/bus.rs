//! The bus against a real RabbitMQ on 127.0.0.1:5672: each test declares its own uniquely
//! named topology and deletes it at the end.

use std::time::Duration;

use chrono::Utc;
use regindex::bus::dead_letters::{DeadLetterQueue, Filter};
use regindex::bus::definitions::{self, BrokerLogin};
use regindex::bus::publisher::republish_confirmed;
use regindex::bus::republish::{self, Received};
use regindex::bus::testing::TestBus;
use regindex::bus::topology::routing_key;
use regindex::bus::{headers, BusError, OutgoingMessage, Publisher, Topology};
use regindex::config::Config;
use regindex_testkit::rabbitmq::{rabbitmqctl, ScratchDefinitions};
use secrecy::SecretString;

const WAIT: Duration = Duration::from_secs(5);

fn refetch(bus: &TestBus, repository: &str) -> OutgoingMessage {
    OutgoingMessage::json(
        &bus.config.events_exchange,
        "regindex.refetch",
        format!(r#"{{"repository":"{repository}"}}"#).into_bytes(),
    )
}

#[tokio::test]
async fn declaring_the_topology_twice_is_idempotent() {
    TestBus::run(|bus| async move {
        bus.topology.declare(&bus.channel).await.unwrap();
        bus.topology.declare(&bus.channel).await.unwrap();
        assert_eq!(bus.count(&bus.config.work_queue).await, 0);
    })
    .await;
}

#[tokio::test]
async fn published_messages_reach_the_work_queue_once_confirmed() {
    TestBus::run(|bus| async move {
        let publisher = Publisher::new(bus.config.url.clone(), Some(bus.topology.clone()));
        publisher
            .publish(&refetch(&bus, "apps/calc"))
            .await
            .unwrap();
        // Confirmed: it is in the queue now, no waiting needed.
        let got = bus
            .get(&bus.config.work_queue, Duration::ZERO)
            .await
            .expect("message");
        assert_eq!(got.routing_key, "regindex.refetch");
        assert_eq!(got.body, br#"{"repository":"apps/calc"}"#);
        assert_eq!(got.properties.delivery_mode(), &Some(2));
        assert!(got.message_id().is_some());
        publisher.close().await;
    })
    .await;
}

#[tokio::test]
async fn unroutable_messages_are_errors() {
    TestBus::run(|bus| async move {
        let publisher = Publisher::new(bus.config.url.clone(), None);
        let message = OutgoingMessage::json(
            &bus.config.events_exchange,
            "registry.pull.manifest",
            b"{}".to_vec(),
        );
        let err = publisher.publish(&message).await.unwrap_err();
        assert!(matches!(err, BusError::Unroutable { .. }), "{err}");
        // The publisher still works afterwards.
        publisher.publish(&refetch(&bus, "a")).await.unwrap();
        publisher.close().await;
    })
    .await;
}

/// An AMQP short string holds 255 bytes; lapin does not check, so a longer value used to
/// corrupt the frame and RabbitMQ closed the connection, failing everything in flight.
#[tokio::test]
async fn values_too_long_for_amqp_never_reach_the_broker() {
    TestBus::run(|bus| async move {
        let publisher = Publisher::new(bus.config.url.clone(), Some(bus.topology.clone()));
        let mut long_id = refetch(&bus, "apps/long-id");
        long_id.message_id = Some("i".repeat(300));
        publisher.publish(&long_id).await.unwrap();
        let got = bus
            .get(&bus.config.work_queue, WAIT)
            .await
            .expect("message");
        let id = got.message_id().unwrap();
        assert!(id.starts_with("sha256:") && id.len() <= 255, "{id}");

        let mut long_key = refetch(&bus, "apps/long-key");
        long_key.routing_key = "k".repeat(300);
        let err = publisher.publish(&long_key).await.unwrap_err();
        assert!(matches!(err, BusError::Unpublishable(_)), "{err}");
        let mut long_header = refetch(&bus, "apps/long-header");
        long_header.headers.insert(
            "h".into(),
            lapin::types::AMQPValue::ShortString("v".repeat(300).into()),
        );
        let err = publisher.publish(&long_header).await.unwrap_err();
        assert!(matches!(err, BusError::Unpublishable(_)), "{err}");

        // The connection is intact.
        publisher
            .publish(&refetch(&bus, "apps/after"))
            .await
            .unwrap();
        let got = bus
            .get(&bus.config.work_queue, WAIT)
            .await
            .expect("message");
        assert_eq!(got.body, br#"{"repository":"apps/after"}"#);
        publisher.close().await;
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_broker_is_an_error_not_a_hang() {
    let publisher = Publisher::new("amqp://guest:guest@127.0.0.1:1/%2f".to_owned().into(), None);
    let message = OutgoingMessage::json("x", "regindex.refetch", b"{}".to_vec());
    let err = publisher.publish(&message).await.unwrap_err();
    assert!(
        matches!(err, BusError::Connect(_) | BusError::Timeout(_)),
        "{err}"
    );
}

#[tokio::test]
async fn retried_messages_come_back_after_the_delay_with_their_attempts() {
    TestBus::run(|bus| async move {
        let publisher = Publisher::new(bus.config.url.clone(), None);
        publisher
            .publish(&refetch(&bus, "apps/calc"))
            .await
            .unwrap();
        let first = bus.get(&bus.config.work_queue, WAIT).await.unwrap();

        let started = std::time::Instant::now();
        publisher
            .republish(&republish::retry(
                &bus.topology,
                &first,
                1,
                "registry answered 503",
            ))
            .await
            .unwrap();
        assert!(bus
            .get(&bus.config.work_queue, Duration::from_millis(50))
            .await
            .is_none());
        let again = bus
            .get(&bus.config.work_queue, WAIT)
            .await
            .expect("back after the delay");
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert_eq!(again.attempts(), 1);
        assert_eq!(again.original_routing_key(), "regindex.refetch");
        assert_eq!(again.original_exchange(), bus.config.events_exchange);
        assert_eq!(again.message_id(), first.message_id());
        assert_eq!(
            headers::get_str(again.headers(), headers::LAST_ERROR).as_deref(),
            Some("registry answered 503")
        );
        assert_eq!(again.body, first.body);
        publisher.close().await;
    })
    .await;
}

/// Puts `n` refetch messages in the dead-letter queue; returns their ids in order.
async fn dead_letter_some(bus: &TestBus, repositories: &[&str]) -> Vec<String> {
    let publisher = Publisher::new(bus.config.url.clone(), None);
    let mut ids = Vec::new();
    for (i, repository) in repositories.iter().enumerate() {
        publisher.publish(&refetch(bus, repository)).await.unwrap();
        let received = bus.get(&bus.config.work_queue, WAIT).await.unwrap();
        let reason = if i % 2 == 0 {
            "registry answered 503"
        } else {
            "bad manifest"
        };
        let dead = republish::dead_letter(&bus.topology, &received, 3, reason, Utc::now());
        republish_confirmed(&bus.channel_with_confirms().await, &dead)
            .await
            .unwrap();
        ids.push(received.message_id().unwrap());
    }
    publisher.close().await;
    ids
}

trait ConfirmChannel {
    async fn channel_with_confirms(&self) -> lapin::Channel;
}

impl ConfirmChannel for TestBus {
    async fn channel_with_confirms(&self) -> lapin::Channel {
        regindex::bus::publisher::confirm_channel(&self.connection)
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn dead_letters_list_show_replay_by_id_and_purge() {
    TestBus::run(|bus| async move {
        let ids = dead_letter_some(&bus, &["r/a", "r/b", "r/c", "r/d"]).await;
        let dlq = DeadLetterQueue::open(&bus.connection, bus.topology.clone())
            .await
            .unwrap();

        let listed = dlq.list().await.unwrap();
        let listed_ids: Vec<&str> = listed.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(
            listed_ids,
            ids.iter().map(String::as_str).collect::<Vec<_>>()
        );
        assert_eq!(listed[0].routing_key, "regindex.refetch");
        assert_eq!(listed[0].reason, "registry answered 503");
        assert_eq!(listed[0].attempts, 3);
        assert!(listed[0].age(Utc::now()).is_some());
        assert_eq!(
            dlq.count().await.unwrap(),
            4,
            "listing leaves them in place"
        );

        let shown = dlq.show(&ids[2]).await.unwrap().expect("shown");
        assert_eq!(shown.body(), br#"{"repository":"r/c"}"#);
        assert_eq!(
            shown.headers.get(headers::REASON).map(String::as_str),
            Some("registry answered 503")
        );

        let summary = dlq
            .replay(&Filter::Ids(vec![ids[1].clone()]))
            .await
            .unwrap();
        assert_eq!((summary.replayed, summary.kept), (vec![ids[1].clone()], 3));
        let replayed: Received = bus
            .get(&bus.config.work_queue, WAIT)
            .await
            .expect("replayed");
        assert_eq!(replayed.body, br#"{"repository":"r/b"}"#);
        assert_eq!(replayed.attempts(), 0);
        assert_eq!(replayed.original_routing_key(), "regindex.refetch");
        assert_eq!(replayed.message_id().as_deref(), Some(ids[1].as_str()));
        let left: Vec<String> = dlq
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.id)
            .collect();
        assert_eq!(
            left,
            [ids[0].clone(), ids[2].clone(), ids[3].clone()],
            "the others stay, in order"
        );

        let summary = dlq
            .replay(&Filter::ReasonContains("bad manifest".into()))
            .await
            .unwrap();
        assert_eq!(summary.replayed, [ids[3].clone()]);
        assert!(bus.get(&bus.config.work_queue, WAIT).await.is_some());

        assert_eq!(dlq.purge().await.unwrap(), 2);
        assert!(dlq.list().await.unwrap().is_empty());
    })
    .await;
}

/// `bus-config/definitions.json`'s format imports, and what it creates is what the
/// processes declare (RabbitMQ refuses a redeclaration with other arguments).
#[tokio::test]
async fn definitions_import_and_match_the_declared_topology() {
    TestBus::run(|bus| async move {
        bus.topology.delete(&bus.channel).await.unwrap();
        let file = tempfile::NamedTempFile::with_suffix(".json").unwrap();
        std::fs::write(
            file.path(),
            serde_json::to_vec(&bus.topology.definitions("/")).unwrap(),
        )
        .unwrap();
        // rabbitmqctl hands the path to the broker, which runs as another user.
        std::fs::set_permissions(
            file.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
        rabbitmqctl(&["import_definitions", &file.path().to_string_lossy()]).unwrap();
        bus.topology.declare(&bus.channel).await.unwrap();
        let publisher = Publisher::new(bus.config.url.clone(), None);
        publisher.publish(&refetch(&bus, "a")).await.unwrap();
        assert!(bus.get(&bus.config.work_queue, WAIT).await.is_some());
        publisher.close().await;
    })
    .await;
}

/// docker-compose.yml's RabbitMQ loads `bus-config/definitions.json` at boot, and then
/// creates neither `guest` nor `/`: the definitions must create the vhost and user of the
/// compose file's `REGINDEX_AMQP__URL`. Imported on the shared node under unique vhost and
/// user names (removed at the end; `/` and `guest` are never touched), the compose password
/// logs in, the api's own declarations match the imported topology, and a publish reaches
/// the work queue.
#[tokio::test]
async fn compose_definitions_create_the_login_the_compose_file_uses() {
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../bus-config/definitions.json"
    );
    let definitions: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let compose_url = definitions::compose_amqp_url();
    let login = BrokerLogin::from_url(&compose_url).unwrap();
    let scratch = tokio::task::spawn_blocking(move || ScratchDefinitions::import(&definitions))
        .await
        .unwrap()
        .unwrap();

    // The compose URL with its password, pointed at the scratch names on this node.
    let mut url = url::Url::parse(&compose_url).unwrap();
    url.set_host(Some("127.0.0.1")).unwrap();
    let user = scratch
        .user(&login.user)
        .expect("the definitions create the compose user");
    url.set_username(user).unwrap();
    let vhost = scratch
        .vhost(&login.vhost)
        .expect("the definitions create the compose vhost");
    url.set_path(&format!("/{vhost}"));
    let url = SecretString::from(url.to_string());

    // What the api does at start-up: declare the whole topology (RabbitMQ refuses a
    // redeclaration with other arguments), then publish with confirms.
    let config = Config::default();
    let publisher = Publisher::new(url.clone(), Some(Topology::from_config(&config)));
    publisher
        .publish(&OutgoingMessage::json(
            &config.amqp.events_exchange,
            routing_key::REFETCH,
            br#"{"repository":"apps/calc"}"#.to_vec(),
        ))
        .await
        .unwrap();
    publisher.close().await;
    let connection = regindex::bus::connect(&url).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let got = channel
        .basic_get(
            &config.amqp.work_queue,
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
        .expect("the refetch is in the work queue");
    assert_eq!(got.delivery.data, br#"{"repository":"apps/calc"}"#);
    connection.close(0, "done").await.unwrap();
    tokio::task::spawn_blocking(move || drop(scratch))
        .await
        .unwrap();
}
