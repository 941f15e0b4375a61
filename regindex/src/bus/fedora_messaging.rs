//! Messages as fedora-messaging publishes them, for `regindexctl trigger-reindex` (and
//! tests): the same exchange, routing key, AMQP properties and headers Bodhi's would carry.

use chrono::Utc;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::json;

use super::headers;
use super::publisher::OutgoingMessage;
use super::topology::routing_key;
use crate::bus::bodhi::{Nvr, UpdateTarget};
use crate::config::AmqpConfig;

/// The schema of `bodhi.compose.complete` bodies.
pub const COMPOSE_COMPLETE_SCHEMA: &str = "bodhi.compose.complete.v1";
/// The schemas of `bodhi.update.complete.{stable,testing}` bodies.
pub const UPDATE_COMPLETE_STABLE_SCHEMA: &str = "bodhi.update.complete.stable.v1";
pub const UPDATE_COMPLETE_TESTING_SCHEMA: &str = "bodhi.update.complete.testing.v1";
/// `fedora_messaging_severity` of informational messages.
const SEVERITY_INFO: i64 = 20;

/// A successful `bodhi.compose.complete` for `ctype` (`container`, `flatpak`, ...),
/// routed as `<topic_prefix>.<environment>.bodhi.compose.complete` on the Bodhi exchange.
pub fn compose_complete(
    config: &AmqpConfig,
    agent: &str,
    repo: &str,
    ctype: &str,
) -> OutgoingMessage {
    let body = json!({"agent": agent, "repo": repo, "success": true, "ctype": ctype});
    bodhi_message(
        config,
        routing_key::BODHI_COMPOSE_COMPLETE,
        COMPOSE_COMPLETE_SCHEMA,
        agent,
        &body,
    )
}

/// What an update message says about its update.
#[derive(Debug, Clone)]
pub struct UpdateSpec<'a> {
    pub target: UpdateTarget,
    /// `FEDORA-FLATPAK-2026-...`.
    pub alias: &'a str,
    /// `F41F`, `F41C`.
    pub release: &'a str,
    /// `flatpak` or `container`.
    pub content_type: &'a str,
    pub builds: &'a [Nvr],
}

/// A `bodhi.update.complete.{stable,testing}` as Bodhi sends it once an update's builds
/// reached that repository (the body's `update` carries the fields of bodhi-messages'
/// `UpdateV1`, which Bodhi fills from the whole update).
pub fn update_complete(config: &AmqpConfig, agent: &str, spec: &UpdateSpec<'_>) -> OutgoingMessage {
    let (topic, schema) = match spec.target {
        UpdateTarget::Stable => (
            routing_key::BODHI_UPDATE_COMPLETE_STABLE,
            UPDATE_COMPLETE_STABLE_SCHEMA,
        ),
        UpdateTarget::Testing => (
            routing_key::BODHI_UPDATE_COMPLETE_TESTING,
            UPDATE_COMPLETE_TESTING_SCHEMA,
        ),
    };
    let builds: Vec<_> = spec
        .builds
        .iter()
        .map(|nvr| json!({"nvr": nvr.to_string(), "type": spec.content_type, "signed": true}))
        .collect();
    let title = spec
        .builds
        .iter()
        .map(Nvr::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    let body = json!({
        "agent": agent,
        "update": {
            "alias": spec.alias,
            "builds": builds,
            "content_type": spec.content_type,
            "release": {"name": spec.release},
            "request": null,
            "status": spec.target.as_str(),
            "title": title,
            "user": {"name": agent},
        }
    });
    bodhi_message(config, topic, schema, agent, &body)
}

/// A message on the Bodhi exchange with fedora-messaging's properties and headers.
fn bodhi_message(
    config: &AmqpConfig,
    topic: &str,
    schema: &str,
    agent: &str,
    body: &serde_json::Value,
) -> OutgoingMessage {
    let mut table = FieldTable::default();
    headers::set_str(&mut table, "fedora_messaging_schema", schema);
    headers::set_str(
        &mut table,
        "fedora_messaging_schema_package",
        "bodhi-messages",
    );
    table.insert(
        "fedora_messaging_severity".into(),
        AMQPValue::LongLongInt(SEVERITY_INFO),
    );
    headers::set_str(&mut table, "sent-at", &Utc::now().to_rfc3339());
    table.insert("priority".into(), AMQPValue::LongLongInt(0));
    table.insert(
        format!("fedora_messaging_user_{agent}").as_str().into(),
        AMQPValue::Boolean(true),
    );
    OutgoingMessage {
        exchange: config.bodhi_exchange.clone(),
        routing_key: format!("{}.{}.{topic}", config.topic_prefix, config.environment),
        body: body.to_string().into_bytes(),
        headers: table,
        message_id: None,
        content_type: "application/json".into(),
        content_encoding: Some("utf-8".into()),
        priority: Some(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::messages::{decode, WorkItem};

    #[test]
    fn matches_the_captured_fedora_messaging_message() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/bodhi/compose-complete-fedora-messaging.json"
        );
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let message = compose_complete(
            &AmqpConfig::default(),
            "bodhi",
            "f41-updates-container",
            "container",
        );
        assert_eq!(message.exchange, fixture["exchange"]);
        assert_eq!(message.routing_key, fixture["routing_key"]);
        let body: serde_json::Value = serde_json::from_slice(&message.body).unwrap();
        assert_eq!(body, fixture["body"]);

        let properties = message.properties();
        let expected = &fixture["properties"];
        assert_eq!(
            properties.content_type().as_ref().unwrap().as_str(),
            expected["content_type"]
        );
        assert_eq!(
            properties.content_encoding().as_ref().unwrap().as_str(),
            expected["content_encoding"]
        );
        assert_eq!(
            serde_json::json!(properties.delivery_mode().unwrap()),
            expected["delivery_mode"]
        );
        assert_eq!(
            serde_json::json!(properties.priority().unwrap()),
            expected["priority"]
        );
        assert!(uuid::Uuid::parse_str(properties.message_id().as_ref().unwrap().as_str()).is_ok());
        let table = properties.headers().clone().unwrap();
        for (name, value) in expected["headers"].as_object().unwrap() {
            let ours = table
                .inner()
                .get(name.as_str())
                .unwrap_or_else(|| panic!("header {name}"));
            if name != "sent-at" {
                assert_eq!(
                    headers::display(ours),
                    value.to_string().trim_matches('"'),
                    "{name}"
                );
            }
        }
        assert!(matches!(
            decode(&message.routing_key, &message.body).unwrap(),
            WorkItem::ReindexAll { .. }
        ));
    }

    #[test]
    fn update_complete_is_shaped_like_the_captured_one() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/bodhi/update-complete-stable-fedora-messaging.json"
        );
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let builds = [
            Nvr::parse("eog-stable-4120261118083322.1").unwrap(),
            Nvr::parse("gnome-calculator-stable-4120261118091504.1").unwrap(),
        ];
        let message = update_complete(
            &AmqpConfig::default(),
            "bodhi",
            &UpdateSpec {
                target: UpdateTarget::Stable,
                alias: "FEDORA-FLATPAK-2026-4f3c8d2a1b",
                release: "F41F",
                content_type: "flatpak",
                builds: &builds,
            },
        );
        assert_eq!(message.exchange, fixture["exchange"]);
        assert_eq!(message.routing_key, fixture["routing_key"]);
        let table = message.properties().headers().clone().unwrap();
        assert_eq!(
            headers::display(table.inner().get("fedora_messaging_schema").unwrap()),
            fixture["properties"]["headers"]["fedora_messaging_schema"]
        );
        // Every field regindex reads has the captured message's value.
        let body: serde_json::Value = serde_json::from_slice(&message.body).unwrap();
        let (ours, theirs) = (&body["update"], &fixture["body"]["update"]);
        for field in ["alias", "content_type", "request", "status"] {
            assert_eq!(ours[field], theirs[field], "{field}");
        }
        assert_eq!(ours["release"]["name"], theirs["release"]["name"]);
        let nvrs = |update: &serde_json::Value| -> Vec<serde_json::Value> {
            update["builds"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["nvr"].clone())
                .collect()
        };
        assert_eq!(nvrs(ours), nvrs(theirs));
        assert_eq!(
            decode(&message.routing_key, &message.body).unwrap(),
            decode(&message.routing_key, fixture["body"].to_string().as_bytes()).unwrap()
        );

        let testing = update_complete(
            &AmqpConfig::default(),
            "bodhi",
            &UpdateSpec {
                target: UpdateTarget::Testing,
                ..UpdateSpec {
                    target: UpdateTarget::Stable,
                    alias: "A",
                    release: "F41C",
                    content_type: "container",
                    builds: &builds[..1],
                }
            },
        );
        assert_eq!(
            testing.routing_key,
            "org.fedoraproject.prod.bodhi.update.complete.testing"
        );
    }
}
