//! What travels on the bus, parsed once at the edge.
//!
//! - [`parse_envelope`]: a docker/distribution notification (`{"events": [...]}`) into
//!   [`RegistryEvent`]s, the normalised body the api publishes. Only names, digests, tags,
//!   media types and request metadata are kept: no URL from a message is ever used, since
//!   the worker only talks to the configured registry.
//! - [`decode`]: what the worker receives (routing key + body) into a [`WorkItem`].

use serde::{Deserialize, Serialize};

use super::publisher::OutgoingMessage;
use super::topology::routing_key;
use crate::bus::bodhi::{Nvr, UpdateComplete, UpdateTarget};
use crate::model::{media_type, Digest, InvalidValue, RepositoryName, Tag};

/// A message that cannot be understood; it goes straight to the dead-letter queue.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("body is not valid JSON of the expected shape: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Invalid(#[from] InvalidValue),
    #[error("no handler for routing key {0:?}")]
    UnknownRoutingKey(String),
}

/// The action of a registry event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Push,
    Pull,
    Delete,
    Mount,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Push => "push",
            Action::Pull => "pull",
            Action::Delete => "delete",
            Action::Mount => "mount",
        }
    }

    /// Push and delete change what the registry holds; pull and mount do not.
    pub fn changes_registry(self) -> bool {
        matches!(self, Action::Push | Action::Delete)
    }
}

/// What a registry event is about, which decides its routing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A manifest (by media type), or a delete by digest.
    Manifest,
    /// A layer or config blob (`application/octet-stream`, layer media types).
    Blob,
    /// A delete naming only a tag: the untag events that follow a manifest delete.
    Tag,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Manifest => "manifest",
            Kind::Blob => "blob",
            Kind::Tag => "tag",
        }
    }
}

/// Where the request that caused the event came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub useragent: Option<String>,
    /// The host the client addressed (`request.host`): the history merges aliases by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// A blob or manifest a pushed manifest points to (`target.references`, sent when the
/// registry sets `notifications.events.includereferences`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventReference {
    pub digest: Digest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// A registry event, normalised: the body the api publishes on `registry.<action>.<kind>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryEvent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    pub action: Action,
    pub kind: Kind,
    pub repository: RepositoryName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<Tag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default)]
    pub request: RequestInfo,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<EventReference>,
}

impl RegistryEvent {
    pub fn routing_key(&self) -> String {
        routing_key::registry(self.action.as_str(), self.kind.as_str())
    }

    /// The routing key for `delivery`.
    pub fn routing_key_for(&self, delivery: Delivery) -> String {
        match delivery {
            Delivery::Full => self.routing_key(),
            Delivery::HistoryOnly => {
                routing_key::registry_coalesced(self.action.as_str(), self.kind.as_str())
            }
        }
    }

    /// The worker acts on it (the work queue is bound to its routing key).
    pub fn needs_refetch(&self) -> bool {
        REFETCHING_EVENTS
            .iter()
            .any(|rule| rule.matches(self.action.as_str(), self.kind.as_str()))
    }
}

/// Registry events that change what the registry holds, as (action, kind) with `None`
/// for any kind: the one place that decides which events make the worker refetch. The
/// work queue's bindings ([`RefetchingEvent::binding_key`]), [`RegistryEvent::needs_refetch`]
/// (which the api uses to coalesce a notification) and [`decode`] all read it.
pub const REFETCHING_EVENTS: [RefetchingEvent; 2] = [
    // A tag or a manifest changed.
    RefetchingEvent {
        action: Action::Push,
        kind: Some(Kind::Manifest),
    },
    // Every delete: a manifest by digest, an untag, a blob.
    RefetchingEvent {
        action: Action::Delete,
        kind: None,
    },
];

/// One entry of [`REFETCHING_EVENTS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefetchingEvent {
    pub action: Action,
    /// `None`: every kind.
    pub kind: Option<Kind>,
}

impl RefetchingEvent {
    /// The work queue's binding: `registry.<action>.<kind>`, `#` for any kind.
    pub fn binding_key(&self) -> String {
        routing_key::registry(self.action.as_str(), self.kind.map_or("#", Kind::as_str))
    }

    /// Whether the event `registry.<action>.<kind>` is one of these. Compared as text so
    /// that a kind this version does not know still matches an any-kind entry, as the
    /// broker's `#` binding does.
    fn matches(&self, action: &str, kind: &str) -> bool {
        self.action.as_str() == action && self.kind.is_none_or(|k| k.as_str() == kind)
    }
}

/// Whether a registry event's routing key (`registry.<action>.<kind>`) makes the worker
/// refetch; false for anything else (a coalesced copy, another prefix).
pub fn refetches(routing_key: &str) -> bool {
    let Some((action, kind)) = routing_key
        .strip_prefix(routing_key::REGISTRY_PREFIX)
        .and_then(|rest| rest.split_once('.'))
    else {
        return false;
    };
    REFETCHING_EVENTS
        .iter()
        .any(|rule| rule.matches(action, kind))
}

/// Where one event of a notification is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// `registry.<action>.<kind>`: the history, and the work queue when it needs a refetch.
    Full,
    /// An earlier event of the same notification already makes the worker refetch this
    /// repository: published on [`routing_key::registry_coalesced`], which only the
    /// history receives.
    HistoryOnly,
}

/// How to publish the events of one notification: the first event of each repository
/// that needs a refetch goes to the work queue, the repository's later ones only to the
/// history. One refetch reads the registry after every event of the request happened,
/// so it covers them all; a burst of 10,000 events makes one message per repository.
pub fn deliveries(events: &[RegistryEvent]) -> Vec<Delivery> {
    let mut refetched = std::collections::HashSet::new();
    events
        .iter()
        .map(|event| {
            if event.needs_refetch() && !refetched.insert(&event.repository) {
                Delivery::HistoryOnly
            } else {
                Delivery::Full
            }
        })
        .collect()
}

/// Longest event id kept: it becomes the AMQP `message-id`, a short string.
pub const MAX_EVENT_ID_BYTES: usize = 255;

/// Why one event of an envelope was not published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkippedEvent {
    #[error("unknown action {0:?}")]
    UnknownAction(String),
    #[error("{0}")]
    Invalid(#[from] InvalidValue),
}

// The wire shape of docker/distribution notifications. Every field is optional because
// distribution 3 sends empty strings for absent values and older ones omit them.
#[derive(Deserialize)]
struct WireEnvelope {
    events: Vec<WireEvent>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireEvent {
    id: String,
    timestamp: String,
    action: String,
    target: WireTarget,
    request: WireRequest,
    actor: WireActor,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct WireTarget {
    media_type: String,
    size: Option<u64>,
    digest: String,
    repository: String,
    tag: String,
    references: Vec<WireReference>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct WireReference {
    media_type: String,
    size: Option<u64>,
    digest: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireRequest {
    addr: String,
    host: String,
    method: String,
    useragent: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireActor {
    name: String,
}

fn present(s: String) -> Option<String> {
    Some(s).filter(|s| !s.is_empty())
}

/// Parses a notification body. Malformed JSON is an error (the whole request is refused);
/// an event with an unknown action or an invalid name is skipped on its own, so one odd
/// event cannot block the registry's notification queue.
pub fn parse_envelope(
    body: &[u8],
) -> Result<Vec<Result<RegistryEvent, SkippedEvent>>, MessageError> {
    let envelope: WireEnvelope = serde_json::from_slice(body)?;
    Ok(envelope.events.into_iter().map(normalise).collect())
}

fn normalise(event: WireEvent) -> Result<RegistryEvent, SkippedEvent> {
    let action = match event.action.as_str() {
        "push" => Action::Push,
        "pull" => Action::Pull,
        "delete" => Action::Delete,
        "mount" => Action::Mount,
        _ => return Err(SkippedEvent::UnknownAction(event.action)),
    };
    let id = present(event.id).map(check_event_id).transpose()?;
    let target = event.target;
    let repository = RepositoryName::parse(&target.repository)?;
    let digest = present(target.digest)
        .map(|d| Digest::parse(&d))
        .transpose()?;
    let tag = present(target.tag).map(|t| Tag::parse(&t)).transpose()?;
    let media_type = present(target.media_type);
    let kind = kind_of(
        action,
        media_type.as_deref(),
        digest.is_some(),
        tag.is_some(),
    );
    // A reference with an unusable digest is dropped alone: it only feeds statistics.
    let references = target
        .references
        .into_iter()
        .filter_map(|r| {
            Some(EventReference {
                digest: Digest::parse(&r.digest).ok()?,
                media_type: present(r.media_type),
                size: r.size,
            })
        })
        .collect();
    Ok(RegistryEvent {
        id,
        timestamp: present(event.timestamp),
        action,
        kind,
        repository,
        digest,
        tag,
        media_type,
        size: target.size.filter(|&s| s > 0),
        actor: present(event.actor.name),
        request: RequestInfo {
            addr: present(event.request.addr),
            method: present(event.request.method),
            useragent: present(event.request.useragent),
            host: present(event.request.host),
        },
        references,
    })
}

/// The id becomes the AMQP `message-id` (a short string, at most 255 bytes) and appears in
/// logs: a longer one or one with control characters is refused, not cut.
fn check_event_id(id: String) -> Result<String, InvalidValue> {
    let reason = if id.len() > MAX_EVENT_ID_BYTES {
        "longer than 255 bytes"
    } else if id.chars().any(char::is_control) {
        "contains control characters"
    } else {
        return Ok(id);
    };
    Err(InvalidValue {
        kind: "event id",
        value: id.chars().take(64).collect(),
        reason,
    })
}

fn kind_of(action: Action, media_type: Option<&str>, has_digest: bool, has_tag: bool) -> Kind {
    match media_type {
        Some(mt) if media_type::is_manifest(mt) || mt.contains(".manifest.") => Kind::Manifest,
        Some(_) => Kind::Blob,
        // Deletes carry no media type: by digest it is a manifest delete (the registry
        // sends blob deletes the same way; refetching is harmless), by tag alone an untag.
        None if action == Action::Delete && !has_digest && has_tag => Kind::Tag,
        None if action == Action::Delete || has_tag => Kind::Manifest,
        None => Kind::Blob,
    }
}

/// What the worker does with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkItem {
    /// Make the store's view of this repository equal to the registry's.
    Refetch(RepositoryName),
    /// Something changed everywhere (a Bodhi container/flatpak compose): refetch every
    /// repository.
    ReindexAll { source: String },
    /// A Bodhi update reached stable or testing: refetch the repositories of its builds.
    Update(UpdateComplete),
    /// Nothing to do; acknowledged and logged with the reason.
    Ignore(String),
}

/// The internal `regindex.refetch` body (registry events carry `repository` too).
#[derive(Debug, Serialize, Deserialize)]
pub struct RefetchRequest {
    pub repository: RepositoryName,
}

/// The `regindex.refetch` message for `repository`, on the events exchange: what the
/// worker's fan-outs and `regindexctl trigger-reindex --repository` publish.
pub fn refetch_message(
    events_exchange: &str,
    repository: RepositoryName,
) -> Result<OutgoingMessage, MessageError> {
    let body = serde_json::to_vec(&RefetchRequest { repository })?;
    Ok(OutgoingMessage::json(
        events_exchange,
        routing_key::REFETCH,
        body,
    ))
}

/// A Bodhi compose message body (fedora-messaging ComposeCompleteV1 / legacy mashtask).
#[derive(Deserialize)]
struct ComposeComplete {
    #[serde(default)]
    repo: String,
    success: bool,
    #[serde(default)]
    ctype: Option<String>,
}

/// Fedmsg (ZeroMQ era) wraps the body: `{"topic": ..., "msg": {...}}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum BodhiBody<T> {
    Legacy { topic: String, msg: T },
    Current(T),
}

impl<T> BodhiBody<T> {
    /// The topic (the envelope's, or the routing key) and the message.
    fn open(self, routing_key: &str) -> (String, T) {
        match self {
            BodhiBody::Legacy { topic, msg } => (topic, msg),
            BodhiBody::Current(msg) => (routing_key.to_owned(), msg),
        }
    }
}

/// A Bodhi update message body (bodhi-messages `UpdateCompleteStableV1` /
/// `UpdateCompleteTestingV1`: `{"update": UpdateV1, "agent": ...}`). Bodhi sends the whole
/// update; only what regindex uses is read.
#[derive(Deserialize)]
struct UpdateMessage {
    update: WireUpdate,
}

#[derive(Deserialize)]
struct WireUpdate {
    alias: String,
    builds: Vec<WireBuild>,
    release: WireRelease,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    request: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
}

#[derive(Deserialize)]
struct WireBuild {
    nvr: String,
}

#[derive(Deserialize)]
struct WireRelease {
    name: String,
}

/// Longest alias or release name kept (they are only logged and recorded).
const MAX_UPDATE_FIELD: usize = 200;

/// Decodes a delivery. `routing_key` is the original one (see
/// [`super::headers::original_routing_key`]).
pub fn decode(routing_key: &str, body: &[u8]) -> Result<WorkItem, MessageError> {
    if routing_key == routing_key::REFETCH {
        let request: RefetchRequest = serde_json::from_slice(body)?;
        return Ok(WorkItem::Refetch(request.repository));
    }
    if routing_key.starts_with(routing_key::REGISTRY_PREFIX) {
        let event: RefetchRequest = serde_json::from_slice(body)?;
        return Ok(if refetches(routing_key) {
            WorkItem::Refetch(event.repository)
        } else {
            WorkItem::Ignore(format!("{routing_key} does not change the index"))
        });
    }
    if is_bodhi_compose_topic(routing_key) {
        return decode_compose(routing_key, body);
    }
    if let Some(target) = bodhi_update_target(routing_key) {
        return decode_update(routing_key, target, body);
    }
    Err(MessageError::UnknownRoutingKey(routing_key.to_owned()))
}

/// The tag and digest a `registry.push.manifest` delivery announces, if it names both: a
/// refetch on it should see that tag there. `None` for anything else, or a body that
/// does not say.
pub fn pushed_tag(routing_key: &str, body: &[u8]) -> Option<(Tag, Digest)> {
    #[derive(Deserialize)]
    struct Pushed {
        tag: Option<Tag>,
        digest: Option<Digest>,
    }
    if routing_key != routing_key::registry("push", "manifest") {
        return None;
    }
    let pushed: Pushed = serde_json::from_slice(body).ok()?;
    Some((pushed.tag?, pushed.digest?))
}

/// A `registry.push.manifest` delivery whose body says it names no tag: a manifest pushed
/// by digest (an entry of a list about to be pushed), which changes no tag by itself.
/// False for anything else, or a body that cannot be read (treated as a tag change).
pub fn is_untagged_push(routing_key: &str, body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Pushed {
        tag: Option<Tag>,
    }
    routing_key == routing_key::registry("push", "manifest")
        && serde_json::from_slice::<Pushed>(body).is_ok_and(|p| p.tag.is_none())
}

fn is_bodhi_compose_topic(key: &str) -> bool {
    [
        routing_key::BODHI_COMPOSE_COMPLETE,
        routing_key::BODHI_MASHTASK_COMPLETE,
    ]
    .iter()
    .any(|topic| key == *topic || key.ends_with(&format!(".{topic}")))
}

fn bodhi_update_target(key: &str) -> Option<UpdateTarget> {
    let is = |topic: &str| key == topic || key.ends_with(&format!(".{topic}"));
    if is(routing_key::BODHI_UPDATE_COMPLETE_STABLE) {
        Some(UpdateTarget::Stable)
    } else if is(routing_key::BODHI_UPDATE_COMPLETE_TESTING) {
        Some(UpdateTarget::Testing)
    } else {
        None
    }
}

/// An update message. A build with an unusable NVR is left out alone (with the reason in
/// `skipped_builds`); an update of other content than containers or flatpaks is ignored.
fn decode_update(
    routing_key: &str,
    target: UpdateTarget,
    body: &[u8],
) -> Result<WorkItem, MessageError> {
    let (topic, message) =
        serde_json::from_slice::<BodhiBody<UpdateMessage>>(body)?.open(routing_key);
    let wire = message.update;
    let bounded = |s: String| s.chars().take(MAX_UPDATE_FIELD).collect::<String>();
    let mut builds = Vec::new();
    let mut skipped_builds = Vec::new();
    for build in wire.builds {
        match Nvr::parse(&build.nvr) {
            Ok(nvr) => builds.push(nvr),
            Err(e) => skipped_builds.push(e.to_string()),
        }
    }
    let update = UpdateComplete {
        topic,
        target,
        alias: bounded(wire.alias),
        release: bounded(wire.release.name),
        status: wire.status.map(bounded),
        request: wire.request.map(bounded),
        content_type: wire.content_type.map(bounded),
        builds,
        skipped_builds,
    };
    if !update.touches_registry() {
        return Ok(WorkItem::Ignore(format!(
            "{}: {:?} update {} does not touch the registry",
            update.topic,
            update.content_type.as_deref().unwrap_or_default(),
            update.alias
        )));
    }
    if update.builds.is_empty() {
        return Ok(WorkItem::Ignore(format!(
            "{}: update {} names no usable build ({})",
            update.topic,
            update.alias,
            update.skipped_builds.join("; ")
        )));
    }
    Ok(WorkItem::Update(update))
}

fn decode_compose(routing_key: &str, body: &[u8]) -> Result<WorkItem, MessageError> {
    let (topic, compose) =
        serde_json::from_slice::<BodhiBody<ComposeComplete>>(body)?.open(routing_key);
    let ctype = compose.ctype.as_deref().unwrap_or("");
    if !compose.success {
        return Ok(WorkItem::Ignore(format!(
            "{topic}: compose of {} failed",
            compose.repo
        )));
    }
    if !matches!(ctype, "container" | "flatpak") {
        return Ok(WorkItem::Ignore(format!(
            "{topic}: {ctype:?} compose of {} does not touch the registry",
            compose.repo
        )));
    }
    Ok(WorkItem::ReindexAll {
        source: format!("{topic}: {ctype} compose of {}", compose.repo),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(path: &str) -> serde_json::Value {
        let full = format!("{}/../fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    fn webhook(name: &str) -> RegistryEvent {
        let body = serde_json::to_vec(&fixture(&format!("webhooks/{name}.json"))["body"]).unwrap();
        let mut events = parse_envelope(&body).unwrap();
        assert_eq!(events.len(), 1);
        events.remove(0).unwrap()
    }

    #[test]
    fn a_tagged_manifest_push_announces_its_tag() {
        let event = webhook("manifest-push-oci");
        let body = serde_json::to_vec(&event).unwrap();
        let (tag, digest) = pushed_tag("registry.push.manifest", &body).unwrap();
        assert_eq!(Some(tag), event.tag);
        assert_eq!(Some(digest), event.digest);
        assert_eq!(pushed_tag("registry.delete.tag", &body), None);
        let child = serde_json::to_vec(&webhook("manifest-push-untagged-index-child")).unwrap();
        assert_eq!(pushed_tag("registry.push.manifest", &child), None);
        assert_eq!(pushed_tag("registry.push.manifest", b"not json"), None);
        assert!(is_untagged_push("registry.push.manifest", &child));
        assert!(!is_untagged_push("registry.push.manifest", &body));
        assert!(!is_untagged_push("registry.delete.manifest", &child));
        assert!(!is_untagged_push("registry.push.manifest", b"not json"));
    }

    #[test]
    fn manifest_push_by_tag() {
        let event = webhook("manifest-push-oci");
        assert_eq!(event.routing_key(), "registry.push.manifest");
        assert_eq!(event.repository.as_str(), "apps/calc");
        assert_eq!(event.tag.as_ref().map(Tag::as_str), Some("latest"));
        assert_eq!(
            event.digest.as_ref().map(Digest::as_str),
            Some("sha256:7bdd2ae44a165c15bce2833726ea6a9b0998cab5c147a621eb4aa9db2ed93864")
        );
        assert_eq!(event.size, Some(483));
        assert_eq!(event.request.method.as_deref(), Some("PUT"));
        assert_eq!(event.actor, None, "an empty actor is absent");
        assert!(event.needs_refetch());
        assert_eq!(
            webhook("manifest-push-docker-v2").routing_key(),
            "registry.push.manifest"
        );
        assert_eq!(
            webhook("index-push-oci").routing_key(),
            "registry.push.manifest"
        );
        let child = webhook("manifest-push-untagged-index-child");
        assert_eq!(
            (child.routing_key().as_str(), child.tag),
            ("registry.push.manifest", None)
        );
    }

    #[test]
    fn blob_push_and_pull_do_not_need_a_refetch() {
        let blob = webhook("blob-push");
        assert_eq!(blob.routing_key(), "registry.push.blob");
        assert!(!blob.needs_refetch());
        let pull = webhook("manifest-pull");
        assert_eq!(pull.routing_key(), "registry.pull.manifest");
        assert!(!pull.needs_refetch());
    }

    #[test]
    fn deletes_by_digest_and_untags() {
        let by_digest = webhook("manifest-delete-by-digest");
        assert_eq!(by_digest.routing_key(), "registry.delete.manifest");
        assert_eq!(by_digest.media_type, None);
        let untag = webhook("manifest-delete-untag");
        assert_eq!(untag.routing_key(), "registry.delete.tag");
        assert_eq!(untag.tag.as_ref().map(Tag::as_str), Some("1.0"));
        assert!(by_digest.needs_refetch() && untag.needs_refetch());
    }

    #[test]
    fn distribution_3_empty_strings_are_absent() {
        let body = br#"{"events":[{"id":"x","action":"delete","target":{"mediaType":"","size":0,"digest":"","repository":"base/plain","tag":"1.0","url":""}}]}"#;
        let event = parse_envelope(body).unwrap().remove(0).unwrap();
        assert_eq!(event.routing_key(), "registry.delete.tag");
        assert_eq!(
            (event.digest, event.media_type, event.size),
            (None, None, None)
        );
    }

    #[test]
    fn odd_events_are_skipped_alone_and_urls_are_not_kept() {
        let body = br#"{"events":[
            {"action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"Bad Name","tag":"x"}},
            {"action":"teleport","target":{"repository":"a"}},
            {"action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"a","tag":"x","url":"http://evil.example/v2/a"}}
        ]}"#;
        let events = parse_envelope(body).unwrap();
        assert!(matches!(events[0], Err(SkippedEvent::Invalid(_))));
        assert_eq!(
            events[1],
            Err(SkippedEvent::UnknownAction("teleport".into()))
        );
        let published = serde_json::to_string(events[2].as_ref().unwrap()).unwrap();
        assert!(!published.contains("evil"), "{published}");
    }

    #[test]
    fn event_ids_fit_an_amqp_short_string() {
        let event = |id: &str| {
            format!(r#"{{"id":"{id}","action":"delete","target":{{"repository":"a","tag":"x"}}}}"#)
        };
        let body = format!(
            r#"{{"events":[{},{},{}]}}"#,
            event(&"i".repeat(256)),
            event(&"i".repeat(255)),
            event("a\\u0007b")
        );
        let events = parse_envelope(body.as_bytes()).unwrap();
        assert!(matches!(&events[0], Err(SkippedEvent::Invalid(e)) if e.kind == "event id"));
        assert_eq!(
            events[1].as_ref().unwrap().id.as_deref().map(str::len),
            Some(255)
        );
        assert!(events[2].is_err(), "control characters");
    }

    #[test]
    fn one_refetch_per_repository_and_notification() {
        let body = br#"{"events":[
            {"action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"a","tag":"1","digest":"sha256:7bdd2ae44a165c15bce2833726ea6a9b0998cab5c147a621eb4aa9db2ed93864"}},
            {"action":"pull","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"a","tag":"1"}},
            {"action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"b","tag":"1"}},
            {"action":"delete","target":{"repository":"a","tag":"1"}},
            {"action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"a","tag":"2"}}
        ]}"#;
        let events: Vec<RegistryEvent> = parse_envelope(body)
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        use Delivery::{Full, HistoryOnly};
        let deliveries = deliveries(&events);
        assert_eq!(deliveries, [Full, Full, Full, HistoryOnly, HistoryOnly]);
        let keys: Vec<String> = events
            .iter()
            .zip(&deliveries)
            .map(|(e, d)| e.routing_key_for(*d))
            .collect();
        assert_eq!(keys[3], "registry.coalesced.delete.tag");
        // Were a coalesced copy ever delivered to the worker, it would do nothing.
        let body = serde_json::to_vec(&events[4]).unwrap();
        assert!(matches!(
            decode(&keys[4], &body).unwrap(),
            WorkItem::Ignore(_)
        ));
    }

    #[test]
    fn malformed_envelopes_are_errors() {
        assert!(parse_envelope(b"{").is_err());
        assert!(parse_envelope(br#"{"event": []}"#).is_err());
    }

    #[test]
    fn published_events_decode_to_refetches() {
        for name in [
            "manifest-push-oci",
            "manifest-delete-by-digest",
            "manifest-delete-untag",
        ] {
            let event = webhook(name);
            let body = serde_json::to_vec(&event).unwrap();
            assert_eq!(
                decode(&event.routing_key(), &body).unwrap(),
                WorkItem::Refetch(event.repository.clone()),
                "{name}"
            );
        }
        let pull = webhook("manifest-pull");
        let body = serde_json::to_vec(&pull).unwrap();
        assert!(matches!(
            decode(&pull.routing_key(), &body).unwrap(),
            WorkItem::Ignore(_)
        ));
    }

    #[test]
    fn the_bindings_and_the_decoder_agree_on_what_refetches() {
        let keys: Vec<String> = REFETCHING_EVENTS
            .iter()
            .map(RefetchingEvent::binding_key)
            .collect();
        assert_eq!(keys, ["registry.push.manifest", "registry.delete.#"]);
        for (key, refetch) in [
            ("registry.push.manifest", true),
            ("registry.delete.manifest", true),
            ("registry.delete.tag", true),
            ("registry.delete.blob", true),
            ("registry.push.blob", false),
            ("registry.pull.manifest", false),
            ("registry.mount.blob", false),
            ("registry.coalesced.delete.tag", false),
            ("registry.push", false),
            ("regindex.refetch", false),
        ] {
            assert_eq!(refetches(key), refetch, "{key}");
        }
    }

    #[test]
    fn a_refetch_message_decodes_to_its_refetch() {
        let repository = RepositoryName::parse("apps/calc").unwrap();
        let message = refetch_message("events", repository.clone()).unwrap();
        assert_eq!(
            (message.exchange.as_str(), message.routing_key.as_str()),
            ("events", "regindex.refetch")
        );
        assert_eq!(
            decode(&message.routing_key, &message.body).unwrap(),
            WorkItem::Refetch(repository)
        );
    }

    #[test]
    fn internal_refetch() {
        assert_eq!(
            decode("regindex.refetch", br#"{"repository": "apps/calc"}"#).unwrap(),
            WorkItem::Refetch(RepositoryName::parse("apps/calc").unwrap())
        );
        assert!(matches!(
            decode("regindex.refetch", br#"{"repository": "../etc"}"#),
            Err(MessageError::Json(_))
        ));
    }

    #[test]
    fn bodhi_compose_complete_fedora_messaging() {
        let message = fixture("bodhi/compose-complete-fedora-messaging.json");
        let key = message["routing_key"].as_str().unwrap();
        let body = serde_json::to_vec(&message["body"]).unwrap();
        assert!(matches!(
            decode(key, &body).unwrap(),
            WorkItem::ReindexAll { .. }
        ));
    }

    #[test]
    fn bodhi_mashtask_complete_legacy_fedmsg() {
        let message = fixture("bodhi/mashtask-complete-fedmsg-legacy.json");
        let body = serde_json::to_vec(&message).unwrap();
        let key = message["topic"].as_str().unwrap();
        assert!(matches!(
            decode(key, &body).unwrap(),
            WorkItem::ReindexAll { .. }
        ));
        assert!(matches!(
            decode("bodhi.mashtask.complete", &body).unwrap(),
            WorkItem::ReindexAll { .. }
        ));
    }

    #[test]
    fn rpm_composes_and_failures_are_ignored() {
        let key = "org.fedoraproject.prod.bodhi.compose.complete";
        let rpm = br#"{"agent":"bodhi","repo":"f41-updates","success":true,"ctype":"rpm"}"#;
        let failed = br#"{"agent":"bodhi","repo":"f41-flatpak","success":false,"ctype":"flatpak"}"#;
        assert!(matches!(decode(key, rpm).unwrap(), WorkItem::Ignore(_)));
        assert!(matches!(decode(key, failed).unwrap(), WorkItem::Ignore(_)));
        assert!(decode(key, b"not json").is_err());
        assert!(
            decode(key, br#"{"agent":"bodhi"}"#).is_err(),
            "success is required"
        );
    }

    fn update(item: WorkItem) -> UpdateComplete {
        match item {
            WorkItem::Update(update) => update,
            other => panic!("not an update: {other:?}"),
        }
    }

    #[test]
    fn bodhi_update_complete_stable_fedora_messaging() {
        let message = fixture("bodhi/update-complete-stable-fedora-messaging.json");
        let key = message["routing_key"].as_str().unwrap();
        let body = serde_json::to_vec(&message["body"]).unwrap();
        let update = update(decode(key, &body).unwrap());
        assert_eq!(update.target, UpdateTarget::Stable);
        assert_eq!(update.alias, "FEDORA-FLATPAK-2026-4f3c8d2a1b");
        assert_eq!(update.release, "F41F");
        assert_eq!(update.content_type.as_deref(), Some("flatpak"));
        assert_eq!(update.status.as_deref(), Some("stable"));
        assert_eq!(update.request, None);
        let nvrs: Vec<String> = update.builds.iter().map(|b| b.to_string()).collect();
        assert_eq!(
            nvrs,
            [
                "eog-stable-4120261118083322.1",
                "gnome-calculator-stable-4120261118091504.1"
            ]
        );
        assert_eq!(update.builds[1].name(), "gnome-calculator");
    }

    #[test]
    fn bodhi_update_complete_testing_legacy_fedmsg() {
        let message = fixture("bodhi/update-complete-testing-fedmsg-legacy.json");
        let body = serde_json::to_vec(&message).unwrap();
        let key = message["topic"].as_str().unwrap();
        let update = update(decode(key, &body).unwrap());
        assert_eq!(update.target, UpdateTarget::Testing);
        assert_eq!(update.topic, key);
        assert_eq!(update.content_type.as_deref(), Some("container"));
        assert_eq!(update.builds[0].name(), "fedora-toolbox");
        assert_eq!(update.builds[0].version(), "41");
    }

    #[test]
    fn bodhi_updates_of_other_content_or_without_builds_are_ignored() {
        let key = "org.fedoraproject.prod.bodhi.update.complete.stable";
        let rpm = br#"{"update":{"alias":"FEDORA-2026-1","builds":[{"nvr":"bash-5.2.37-1.fc41"}],"release":{"name":"F41"},"request":null,"status":"stable","user":{"name":"u"},"content_type":"rpm"}}"#;
        match decode(key, rpm).unwrap() {
            WorkItem::Ignore(reason) => assert!(reason.contains("\"rpm\""), "{reason}"),
            other => panic!("{other:?}"),
        }
        let bad = br#"{"update":{"alias":"A","builds":[{"nvr":"no dashes"}],"release":{"name":"F41C"},"content_type":"container"}}"#;
        match decode(key, bad).unwrap() {
            WorkItem::Ignore(reason) => assert!(reason.contains("no usable build"), "{reason}"),
            other => panic!("{other:?}"),
        }
        // One bad NVR is left out; the others go on. No content type: treated as maybe ours.
        let mixed = br#"{"update":{"alias":"A","builds":[{"nvr":"x y"},{"nvr":"app-1-2"}],"release":{"name":"F41C"}}}"#;
        let mixed = update(decode(key, mixed).unwrap());
        assert_eq!(mixed.builds.len(), 1);
        assert_eq!(mixed.skipped_builds.len(), 1);
        assert!(
            decode(key, br#"{"update":{"alias":"A"}}"#).is_err(),
            "builds and release are required"
        );
        assert!(decode(key, b"[]").is_err());
    }

    #[test]
    fn unknown_routing_keys_are_errors() {
        assert!(matches!(
            decode("something.else", b"{}"),
            Err(MessageError::UnknownRoutingKey(_))
        ));
        assert!(matches!(
            decode("org.fedoraproject.prod.bodhi.update.request.stable", b"{}"),
            Err(MessageError::UnknownRoutingKey(_))
        ));
    }
}
