//! Headers of the retry path and the dead-letter queue.
//!
//! A message that is retried or dead-lettered is republished through the default
//! exchange, so its routing key becomes a queue name: the original exchange and routing
//! key travel in headers, and decoding uses them.

use chrono::{DateTime, Utc};
use lapin::types::{AMQPValue, FieldTable};

use super::topology::long_string;

/// Failed attempts so far (absent = 0).
pub const ATTEMPTS: &str = "regindex-attempts";
/// The error of the last failed attempt.
pub const LAST_ERROR: &str = "regindex-last-error";
/// Exchange and routing key the message was first published with.
pub const ORIGINAL_EXCHANGE: &str = "regindex-original-exchange";
pub const ORIGINAL_ROUTING_KEY: &str = "regindex-original-routing-key";
/// Why the message was dead-lettered.
pub const REASON: &str = "regindex-reason";
/// When it was dead-lettered (RFC 3339).
pub const FAILED_AT: &str = "regindex-failed-at";
/// When an operator last replayed it from the dead-letter queue (RFC 3339).
pub const REPLAYED_AT: &str = "regindex-replayed-at";

/// A header as text, when it is a string.
pub fn get_str<'a>(
    headers: Option<&'a FieldTable>,
    name: &str,
) -> Option<std::borrow::Cow<'a, str>> {
    match headers?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::ShortString(s) => Some(std::borrow::Cow::Borrowed(s.as_str())),
        _ => None,
    }
}

/// A header as an unsigned integer, whatever integer type the publisher used.
pub fn get_u32(headers: Option<&FieldTable>, name: &str) -> Option<u32> {
    let value = match headers?.inner().get(name)? {
        AMQPValue::ShortShortInt(n) => i64::from(*n),
        AMQPValue::ShortShortUInt(n) => i64::from(*n),
        AMQPValue::ShortInt(n) => i64::from(*n),
        AMQPValue::ShortUInt(n) => i64::from(*n),
        AMQPValue::LongInt(n) => i64::from(*n),
        AMQPValue::LongUInt(n) => i64::from(*n),
        AMQPValue::LongLongInt(n) => *n,
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).parse().ok()?,
        _ => return None,
    };
    u32::try_from(value).ok()
}

/// Failed attempts recorded on a message.
pub fn attempts(headers: Option<&FieldTable>) -> u32 {
    get_u32(headers, ATTEMPTS).unwrap_or(0)
}

/// The routing key to decode a message by: the original one when it was republished.
pub fn original_routing_key<'a>(
    headers: Option<&'a FieldTable>,
    delivered_with: &'a str,
) -> std::borrow::Cow<'a, str> {
    get_str(headers, ORIGINAL_ROUTING_KEY).unwrap_or(std::borrow::Cow::Borrowed(delivered_with))
}

/// The exchange the message was first published to.
pub fn original_exchange<'a>(
    headers: Option<&'a FieldTable>,
    delivered_by: &'a str,
) -> std::borrow::Cow<'a, str> {
    get_str(headers, ORIGINAL_EXCHANGE).unwrap_or(std::borrow::Cow::Borrowed(delivered_by))
}

pub fn set_str(headers: &mut FieldTable, name: &str, value: &str) {
    headers.insert(name.into(), long_string(value));
}

pub fn set_u32(headers: &mut FieldTable, name: &str, value: u32) {
    headers.insert(name.into(), AMQPValue::LongLongInt(i64::from(value)));
}

pub fn set_time(headers: &mut FieldTable, name: &str, at: DateTime<Utc>) {
    set_str(headers, name, &at.to_rfc3339());
}

/// `headers` without `names`.
pub fn without(headers: &FieldTable, names: &[&str]) -> FieldTable {
    let mut out = FieldTable::default();
    for (key, value) in headers.inner() {
        if !names.contains(&key.as_str()) {
            out.insert(key.clone(), value.clone());
        }
    }
    out
}

/// A header value as text, for display.
pub fn display(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.to_string(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_it_writes() {
        let mut headers = FieldTable::default();
        set_u32(&mut headers, ATTEMPTS, 3);
        set_str(&mut headers, ORIGINAL_ROUTING_KEY, "registry.push.manifest");
        assert_eq!(attempts(Some(&headers)), 3);
        assert_eq!(
            original_routing_key(Some(&headers), "w"),
            "registry.push.manifest"
        );
        assert_eq!(original_routing_key(None, "w"), "w");
        assert_eq!(attempts(None), 0);
        let stripped = without(&headers, &[ATTEMPTS]);
        assert_eq!(attempts(Some(&stripped)), 0);
        assert!(stripped.contains_key(ORIGINAL_ROUTING_KEY));
    }

    #[test]
    fn integer_headers_of_any_width_are_read() {
        let mut headers = FieldTable::default();
        headers.insert(ATTEMPTS.into(), AMQPValue::ShortShortUInt(2));
        assert_eq!(attempts(Some(&headers)), 2);
        headers.insert(ATTEMPTS.into(), AMQPValue::LongInt(-1));
        assert_eq!(attempts(Some(&headers)), 0);
    }
}
