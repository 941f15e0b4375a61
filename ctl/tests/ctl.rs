//! `regindexctl` as operators run it, against a real RabbitMQ.

use std::process::{Command, Output};
use std::time::Duration;

use chrono::Utc;
use regindex::bus::publisher::confirm_channel;
use regindex::bus::republish::{self, Received};
use regindex::bus::testing::TestBus;
use regindex::bus::{headers, OutgoingMessage, Publisher, Topology};
use regindex::config::QueueType;

const WAIT: Duration = Duration::from_secs(5);

/// Runs the binary with the test's queue names in the environment.
fn ctl(bus: &TestBus, args: &[&str]) -> Output {
    ctl_with(bus, args, &[])
}

/// [`ctl`] with more environment variables.
fn ctl_with(bus: &TestBus, args: &[&str], env: &[(&str, &str)]) -> Output {
    let c = &bus.config;
    Command::new(env!("CARGO_BIN_EXE_regindexctl"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("REGINDEX_CONFIG")
        .env("REGINDEX_AMQP__EVENTS_EXCHANGE", &c.events_exchange)
        .env("REGINDEX_AMQP__WORK_QUEUE", &c.work_queue)
        .env("REGINDEX_AMQP__DEAD_LETTER_QUEUE", &c.dead_letter_queue)
        .env("REGINDEX_AMQP__ENVIRONMENT", &c.environment)
        .env(
            "REGINDEX_AMQP__RETRY_DELAYS_MS",
            c.retry_delays
                .iter()
                .map(|d| d.as_millis().to_string())
                .collect::<Vec<_>>()
                .join(","),
        )
        .output()
        .expect("run regindexctl")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Dead-letters a refetch of each repository; returns the message ids.
async fn dead_letter(bus: &TestBus, repositories: &[&str]) -> Vec<String> {
    let publisher = Publisher::new(bus.config.url.clone(), None);
    let channel = confirm_channel(&bus.connection).await.unwrap();
    let mut ids = Vec::new();
    for repository in repositories {
        let body = format!(r#"{{"repository":"{repository}"}}"#).into_bytes();
        publisher
            .publish(&OutgoingMessage::json(
                &bus.config.events_exchange,
                "regindex.refetch",
                body,
            ))
            .await
            .unwrap();
        let received: Received = bus.get(&bus.config.work_queue, WAIT).await.unwrap();
        let dead = republish::dead_letter(
            &bus.topology,
            &received,
            3,
            &format!("{repository} is broken"),
            Utc::now(),
        );
        regindex::bus::publisher::republish_confirmed(&channel, &dead)
            .await
            .unwrap();
        ids.push(received.message_id().unwrap());
    }
    publisher.close().await;
    ids
}

#[tokio::test]
async fn dlq_list_show_replay_and_purge() {
    TestBus::run(|bus| async move {
        let ids = dead_letter(&bus, &["r/a", "r/b", "r/c"]).await;

        let list = stdout(&ctl(&bus, &["dlq", "list"]));
        let lines: Vec<&str> = list.lines().collect();
        assert_eq!(lines.len(), 4, "{list}");
        assert!(lines[0].starts_with("ID"));
        for (line, id) in lines[1..].iter().zip(&ids) {
            assert!(
                line.starts_with(id.as_str()) && line.contains("regindex.refetch"),
                "{line}"
            );
        }
        assert!(lines[2].contains("r/b is broken"));

        let show = stdout(&ctl(&bus, &["dlq", "show", &ids[1]]));
        assert!(
            show.contains(&format!("{}: r/b is broken", headers::REASON)),
            "{show}"
        );
        assert!(show.contains(r#""repository": "r/b""#), "{show}");
        assert!(!ctl(&bus, &["dlq", "show", "nope"]).status.success());

        let replay = stdout(&ctl(&bus, &["dlq", "replay", "--id", &ids[1]]));
        assert_eq!(replay, "replayed 1 dead letters, 2 left\n");
        let replayed = bus.get(&bus.config.work_queue, WAIT).await.unwrap();
        assert_eq!(replayed.body, br#"{"repository":"r/b"}"#);
        assert_eq!(replayed.attempts(), 0);

        let replay = stdout(&ctl(
            &bus,
            &["dlq", "replay", "--reason-contains", "r/c is"],
        ));
        assert_eq!(replay, "replayed 1 dead letters, 1 left\n");
        assert!(bus.get(&bus.config.work_queue, WAIT).await.is_some());
        assert!(
            !ctl(&bus, &["dlq", "replay"]).status.success(),
            "a selection is required"
        );
        assert!(!ctl(&bus, &["dlq", "replay", "--id", "unknown"])
            .status
            .success());

        let refused = ctl(&bus, &["dlq", "purge"]);
        assert!(
            !refused.status.success(),
            "no terminal, no --yes: nothing purged"
        );
        assert_eq!(bus.count(&bus.config.dead_letter_queue).await, 1);
        assert_eq!(
            stdout(&ctl(&bus, &["dlq", "purge", "--yes"])),
            "purged 1 dead letters\n"
        );
        assert_eq!(stdout(&ctl(&bus, &["dlq", "list"])), "no dead letters\n");
    })
    .await;
}

#[tokio::test]
async fn trigger_reindex_publishes_a_compose_complete_or_a_refetch() {
    TestBus::run(|bus| async move {
        stdout(&ctl(&bus, &["trigger-reindex"]));
        let message = bus
            .get(&bus.config.work_queue, WAIT)
            .await
            .expect("compose-complete");
        assert_eq!(message.exchange, "amq.topic");
        assert_eq!(
            message.routing_key,
            format!(
                "org.fedoraproject.{}.bodhi.compose.complete",
                bus.config.environment
            )
        );
        let body: serde_json::Value = serde_json::from_slice(&message.body).unwrap();
        assert_eq!(
            (body["ctype"].as_str(), body["success"].as_bool()),
            (Some("flatpak"), Some(true))
        );
        assert_eq!(
            headers::get_str(message.headers(), "fedora_messaging_schema").as_deref(),
            Some("bodhi.compose.complete.v1")
        );
        assert_eq!(
            message
                .properties
                .content_encoding()
                .as_ref()
                .map(|s| s.as_str()),
            Some("utf-8")
        );

        stdout(&ctl(&bus, &["trigger-reindex", "--ctype", "container"]));
        let message = bus.get(&bus.config.work_queue, WAIT).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&message.body).unwrap();
        assert_eq!(body["ctype"], "container");

        stdout(&ctl(
            &bus,
            &["trigger-reindex", "--repository", "apps/calc"],
        ));
        let message = bus.get(&bus.config.work_queue, WAIT).await.unwrap();
        assert_eq!(message.routing_key, "regindex.refetch");
        assert_eq!(message.body, br#"{"repository":"apps/calc"}"#);

        let bad = ctl(&bus, &["trigger-reindex", "--repository", "Not Valid"]);
        assert!(!bad.status.success());
        assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid repository name"));
    })
    .await;
}

#[tokio::test]
async fn trigger_reindex_publishes_an_update_complete_and_refuses_what_workers_ignore() {
    TestBus::run(|bus| async move {
        let said = stdout(&ctl(
            &bus,
            &[
                "trigger-reindex",
                "--update-nvr",
                "eog-stable-4120261118083322.1",
                "flatpak-runtime-f41-4120241101.1",
                "--update-target",
                "testing",
            ],
        ));
        assert!(
            said.contains("refetch the repositories holding these builds"),
            "{said}"
        );
        let message = bus.get(&bus.config.work_queue, WAIT).await.expect("update");
        assert_eq!(message.exchange, "amq.topic");
        assert_eq!(
            message.routing_key,
            format!(
                "org.fedoraproject.{}.bodhi.update.complete.testing",
                bus.config.environment
            )
        );
        assert_eq!(
            headers::get_str(message.headers(), "fedora_messaging_schema").as_deref(),
            Some("bodhi.update.complete.testing.v1")
        );
        let body: serde_json::Value = serde_json::from_slice(&message.body).unwrap();
        assert_eq!(body["update"]["status"], "testing");
        assert_eq!(body["update"]["content_type"], "flatpak");
        assert_eq!(
            body["update"]["builds"][1]["nvr"],
            "flatpak-runtime-f41-4120241101.1"
        );

        // What the workers would ignore is refused, and nothing is published.
        for args in [
            &["trigger-reindex", "--ctype", "rpm"][..],
            &[
                "trigger-reindex",
                "--ctype",
                "rpm",
                "--update-nvr",
                "bash-5.2.37-1.fc41",
            ],
            &["trigger-reindex", "--update-nvr", "no_version_or_release"],
        ] {
            let refused = ctl(&bus, args);
            assert!(!refused.status.success(), "{args:?}");
            let said = String::from_utf8_lossy(&refused.stderr);
            assert!(
                said.contains("ignore") || said.contains("NVR"),
                "{args:?}: {said}"
            );
        }
        let off = Command::new(env!("CARGO_BIN_EXE_regindexctl"))
            .args(["trigger-reindex"])
            .env_remove("REGINDEX_CONFIG")
            .env("REGINDEX_AMQP__ENVIRONMENT", &bus.config.environment)
            .env("REGINDEX_BODHI__COMPOSE_COMPLETE", "off")
            .output()
            .unwrap();
        assert!(!off.status.success());
        assert!(String::from_utf8_lossy(&off.stderr).contains("bodhi.compose_complete is off"));
        assert_eq!(bus.count(&bus.config.work_queue).await, 0);
    })
    .await;
}

#[test]
fn an_unreachable_broker_is_a_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_regindexctl"))
        .args(["dlq", "list"])
        .env_remove("REGINDEX_CONFIG")
        .env("REGINDEX_AMQP__URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("regindexctl: cannot connect to the broker"),
        "{stderr}"
    );
}

/// The pool alone would say "pool timed out": the error names the server and the cause.
#[test]
fn an_unreachable_database_is_a_clear_error() {
    let port = regindex_testkit::free_port().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_regindexctl"))
        .arg("problems")
        .env_remove("REGINDEX_CONFIG")
        .env(
            "REGINDEX_DATABASE__URL",
            format!("postgres://postgres@127.0.0.1:{port}/regindex"),
        )
        .env("REGINDEX_DATABASE__ACQUIRE_TIMEOUT_MS", "500")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot reach PostgreSQL at 127.0.0.1:{port} (database regindex)"
        )) && stderr.contains("Connection refused"),
        "{stderr}"
    );
}

fn broker_definitions(amqp_url: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_regindexctl"))
        .arg("broker-definitions")
        .env_remove("REGINDEX_CONFIG")
        .env("REGINDEX_AMQP__URL", amqp_url)
        .output()
        .expect("run regindexctl")
}

/// How an operator provisions a broker with a secret of their own: `broker-definitions`
/// for an `amqp.url` with their user and password. Imported on the shared node (under
/// scratch names, removed at the end), the password logs in and the topology matches the
/// processes' declarations; the password is nowhere in the output in clear, each run salts
/// it afresh, and the well-known guest/guest login is refused.
#[tokio::test]
async fn broker_definitions_provision_the_configured_login() {
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let url = format!("amqp://operator:{password}@127.0.0.1:5672/index");
    let text = stdout(&broker_definitions(&url));
    assert!(!text.contains(&password), "{text}");
    assert_ne!(
        text,
        stdout(&broker_definitions(&url)),
        "a fresh salt each run"
    );
    let definitions: serde_json::Value = serde_json::from_str(&text).unwrap();
    let scratch = tokio::task::spawn_blocking(move || {
        regindex_testkit::rabbitmq::ScratchDefinitions::import(&definitions)
    })
    .await
    .unwrap()
    .unwrap();
    let (user, vhost) = (
        scratch.user("operator").unwrap(),
        scratch.vhost("index").unwrap(),
    );

    let login = |password: &str| {
        secrecy::SecretString::from(format!("amqp://{user}:{password}@127.0.0.1:5672/{vhost}"))
    };
    assert!(regindex::bus::connect(&login("wrong")).await.is_err());
    let connection = regindex::bus::connect(&login(&password)).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    regindex::bus::Topology::from_config(&regindex::config::Config::default())
        .declare(&channel)
        .await
        .unwrap();
    connection.close(0, "done").await.unwrap();
    tokio::task::spawn_blocking(move || drop(scratch))
        .await
        .unwrap();

    let refused = broker_definitions("amqp://guest:guest@127.0.0.1:5672/%2f");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("guest/guest"), "{stderr}");
}

/// `migrate` then `scan`, against a real registry and a fresh database; an image the
/// index cannot use is listed by `problems` and does not fail the scan.
#[tokio::test]
async fn migrate_then_scan_indexes_the_registry() {
    // No schema: `migrate` applies it.
    let db = regindex_testkit::app::TestStore::start_empty().await;
    let registry = regindex_testkit::TestRegistry::new().await.unwrap();
    let pushed = registry
        .push_image(
            "apps/calc",
            Some("latest"),
            &regindex_testkit::ImageSpec::flatpak("org.example.Calc", "x86_64"),
        )
        .await
        .unwrap();
    let broken = registry
        .push_with_config(
            "apps/broken",
            Some("nightly"),
            "application/vnd.oci.image.config.v1+json",
            b"not JSON",
            1,
        )
        .await
        .unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_regindexctl"))
            .args(args)
            .env_remove("REGINDEX_CONFIG")
            .env("REGINDEX_DATABASE__URL", db.url())
            .env("REGINDEX_REGISTRY__URL", registry.url())
            .output()
            .unwrap()
    };
    let scan_before_migrate = run(&["scan"]);
    assert!(!scan_before_migrate.status.success());
    assert!(String::from_utf8_lossy(&scan_before_migrate.stderr).contains("regindexctl migrate"));

    assert_eq!(stdout(&run(&["migrate"])), "schema is up to date\n");
    assert_eq!(
        stdout(&run(&["migrate"])),
        "schema is up to date\n",
        "idempotent"
    );
    let summary = stdout(&run(&["scan"]));
    assert!(summary.starts_with("scanned 2 repositories, 1 tags: 2 manifests and 2 config blobs fetched, 1 repositories changed, 1 tags with problems, 0 failed"), "{summary}");

    let problems = stdout(&run(&["problems"]));
    let lines: Vec<&str> = problems.lines().collect();
    assert_eq!(lines.len(), 2, "{problems}");
    assert!(lines[0].starts_with("REPOSITORY"), "{problems}");
    assert!(
        lines[1].starts_with("apps/broken  nightly") && lines[1].contains(&broken),
        "{problems}"
    );
    assert!(
        lines[1].contains("not indexed") || lines[1].contains("config"),
        "{problems}"
    );
    assert_eq!(
        stdout(&run(&["problems", "--repository", "apps/calc"])),
        "no problems\n"
    );

    let store = regindex::store::Store::connect(&db.config).await.unwrap();
    let state = store
        .load_repository(&regindex::model::RepositoryName::parse("apps/calc").unwrap())
        .await
        .unwrap();
    let latest = regindex::model::Tag::parse("latest").unwrap();
    assert_eq!(state.tags[&latest].as_str(), pushed.digest);
    // It counts as the workers' periodic scan.
    assert!(store
        .last_success(regindex::store::PeriodicJob::FullScan)
        .await
        .unwrap()
        .is_some());
    store.pool().close().await;
    db.finish().await;
}

/// `regindexctl bus migrate` switches classic queues holding messages (work, delay,
/// dead-letter, history) to quorum queues and back: every message is kept, with the
/// routing key it was first published with, and a second run changes nothing.
#[tokio::test]
async fn bus_migrate_switches_the_queue_type_and_keeps_every_message() {
    TestBus::run(|bus| async move {
        let history = format!("{}.history", bus.config.work_queue);
        let topology = |queue_type| {
            let mut config = bus.config.clone();
            config.queue_type = queue_type;
            Topology::new(&config).with_history(&history)
        };
        topology(QueueType::Classic)
            .declare(&bus.channel)
            .await
            .unwrap();
        let publisher = Publisher::new(bus.config.url.clone(), None);
        for repository in ["r/a", "r/b", "r/c"] {
            let body = format!(r#"{{"repository":"{repository}"}}"#).into_bytes();
            let push =
                OutgoingMessage::json(&bus.config.events_exchange, "registry.push.manifest", body);
            publisher.publish(&push).await.unwrap();
        }
        publisher.close().await;
        // One dead letter (taken from the work queue), two waiting in the history queue.
        let received = bus.get(&bus.config.work_queue, WAIT).await.unwrap();
        let dead = republish::dead_letter(&bus.topology, &received, 3, "broken", Utc::now());
        let channel = confirm_channel(&bus.connection).await.unwrap();
        regindex::bus::publisher::republish_confirmed(&channel, &dead)
            .await
            .unwrap();
        assert_eq!(
            bus.get(&history, WAIT).await.unwrap().routing_key,
            "registry.push.manifest"
        );
        let env = |queue_type: &'static str| {
            [
                ("REGINDEX_AMQP__QUEUE_TYPE", queue_type),
                ("REGINDEX_HISTORY__QUEUE", history.as_str()),
            ]
        };

        let out = stdout(&ctl_with(&bus, &["bus", "migrate"], &env("quorum")));
        assert!(
            out.contains(&format!(
                "{}: migrated to quorum, 2 messages",
                bus.config.work_queue
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "{}: migrated to quorum, 1 messages",
                bus.config.dead_letter_queue
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!("{history}: migrated to quorum, 2 messages")),
            "{out}"
        );
        // The broker accepts the quorum declarations now, and refuses a classic one.
        let fresh = bus.connection.create_channel().await.unwrap();
        topology(QueueType::Quorum).declare(&fresh).await.unwrap();
        let mut classic = lapin::types::FieldTable::default();
        classic.insert(
            "x-queue-type".into(),
            lapin::types::AMQPValue::LongString("classic".into()),
        );
        let durable = lapin::options::QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let refused = fresh
            .queue_declare(&bus.config.work_queue, durable, classic)
            .await;
        assert!(refused.is_err(), "the work queue is a quorum queue now");

        // The api publishes to the new queues; running again changes nothing.
        let publisher = Publisher::new(bus.config.url.clone(), Some(topology(QueueType::Quorum)));
        let push = OutgoingMessage::json(
            &bus.config.events_exchange,
            "registry.push.manifest",
            br#"{"repository":"r/d"}"#.to_vec(),
        );
        publisher.publish(&push).await.unwrap();
        publisher.close().await;
        let out = stdout(&ctl_with(&bus, &["bus", "migrate"], &env("quorum")));
        assert!(
            out.contains(&format!("{}: already quorum", bus.config.work_queue)),
            "{out}"
        );

        // And back to classic, still with every message.
        let out = stdout(&ctl_with(&bus, &["bus", "migrate"], &env("classic")));
        assert!(
            out.contains(&format!(
                "{}: migrated to classic, 3 messages",
                bus.config.work_queue
            )),
            "{out}"
        );
        let mut repositories = Vec::new();
        while let Some(message) = bus.get(&bus.config.work_queue, Duration::ZERO).await {
            assert_eq!(message.original_routing_key(), "registry.push.manifest");
            assert_eq!(message.original_exchange(), bus.config.events_exchange);
            repositories.push(String::from_utf8(message.body).unwrap());
        }
        repositories.sort();
        assert_eq!(
            repositories,
            [
                r#"{"repository":"r/b"}"#,
                r#"{"repository":"r/c"}"#,
                r#"{"repository":"r/d"}"#
            ]
        );
        let letters = ctl_with(&bus, &["dlq", "list"], &env("classic"));
        assert!(stdout(&letters).contains("broken"));
        assert_eq!(bus.count(&history).await, 3);
        assert_eq!(bus.count(&bus.config.dead_letter_queue).await, 1);
        bus.channel
            .queue_delete(&history, Default::default())
            .await
            .unwrap();
    })
    .await;
}
