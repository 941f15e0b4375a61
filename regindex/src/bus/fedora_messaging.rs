//! Messages as fedora-messaging publishes them, for `regindexctl trigger-reindex` (and
//! tests): the same exchange, routing key, AMQP properties and headers Bodhi's would carry.

use chrono::Utc;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::json;

use super::headers;
use super::publisher::OutgoingMessage;
use super::topology::routing_key;
use crate::config::AmqpConfig;

/// The schema of `bodhi.compose.complete` bodies.
pub const COMPOSE_COMPLETE_SCHEMA: &str = "bodhi.compose.complete.v1";
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
    let mut table = FieldTable::default();
    headers::set_str(
        &mut table,
        "fedora_messaging_schema",
        COMPOSE_COMPLETE_SCHEMA,
    );
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
        routing_key: format!(
            "{}.{}.{}",
            config.topic_prefix,
            config.environment,
            routing_key::BODHI_COMPOSE_COMPLETE
        ),
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
}
