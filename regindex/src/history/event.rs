//! What the history records, derived from the bus's [`RegistryEvent`].
//!
//! The api parses webhooks once (`bus::messages::parse_envelope`) and publishes
//! normalised [`RegistryEvent`]s; this module only interprets them for the history:
//! which activity an event is, under which canonical host, at what time, with which id.

use chrono::{DateTime, Utc};

use crate::bus::messages::{Action, Kind, RegistryEvent};
use crate::model::{media_type, AliasMap, Digest, RepositoryName, Tag};

/// What an event means for the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Activity {
    /// A manifest was put (by tag or by digest).
    PushManifest,
    /// A layer or config blob was uploaded.
    PushBlob,
    /// A blob was mounted into the repository from another one (cross-repository push).
    MountBlob,
    /// A manifest was fetched (GET or HEAD, by tag or digest).
    PullManifest,
    /// A blob was fetched (GET or HEAD).
    PullBlob,
    /// A manifest or blob was deleted by digest.
    DeleteDigest,
    /// A tag was removed (the untag events that follow a manifest delete, or a tag delete).
    DeleteTag,
}

impl Activity {
    pub fn as_str(self) -> &'static str {
        match self {
            Activity::PushManifest => "push_manifest",
            Activity::PushBlob => "push_blob",
            Activity::MountBlob => "mount_blob",
            Activity::PullManifest => "pull_manifest",
            Activity::PullBlob => "pull_blob",
            Activity::DeleteDigest => "delete_digest",
            Activity::DeleteTag => "delete_tag",
        }
    }
}

/// Why an event cannot be recorded (it is acknowledged and logged, never retried).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnrecordableEvent {
    #[error("{activity} event for {repository} carries no digest")]
    NoDigest {
        activity: &'static str,
        repository: String,
    },
    #[error("tag delete for {repository} carries no tag")]
    NoTag { repository: String },
}

/// A blob a manifest points to (its config or a layer).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlobRef {
    pub digest: Digest,
    pub size: Option<i64>,
    pub media_type: Option<String>,
}

/// One event, ready to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityEvent {
    /// The registry's event id; events without one get a content hash, so that a
    /// redelivery still has the same id.
    pub id: String,
    pub at: DateTime<Utc>,
    pub activity: Activity,
    /// The canonical registry host (see [`AliasMap`]).
    pub registry: String,
    pub repository: RepositoryName,
    pub tag: Option<Tag>,
    pub digest: Option<Digest>,
    pub media_type: Option<String>,
    pub size: Option<i64>,
    /// Blobs of a pushed image manifest, when the registry sent `references`.
    pub references: Vec<BlobRef>,
    pub actor: Option<String>,
    pub addr: Option<String>,
    pub method: Option<String>,
}

impl ActivityEvent {
    /// Interprets a bus event. `received_at` stands in for a missing or unparsable
    /// timestamp.
    pub fn from_registry_event(
        event: &RegistryEvent,
        aliases: &AliasMap,
        received_at: DateTime<Utc>,
    ) -> Result<Self, UnrecordableEvent> {
        let activity = match (event.action, event.kind) {
            (Action::Push, Kind::Manifest) => Activity::PushManifest,
            (Action::Push, _) => Activity::PushBlob,
            (Action::Mount, _) => Activity::MountBlob,
            (Action::Pull, Kind::Manifest) => Activity::PullManifest,
            (Action::Pull, _) => Activity::PullBlob,
            (Action::Delete, _) if event.digest.is_some() => Activity::DeleteDigest,
            (Action::Delete, _) => Activity::DeleteTag,
        };
        let repository = event.repository.to_string();
        if activity == Activity::DeleteTag && event.tag.is_none() {
            return Err(UnrecordableEvent::NoTag { repository });
        }
        if activity != Activity::DeleteTag && event.digest.is_none() {
            return Err(UnrecordableEvent::NoDigest {
                activity: activity.as_str(),
                repository,
            });
        }
        let at = event
            .timestamp
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(received_at);
        // Only image manifests have blobs; an index's references are manifests.
        let references = if activity == Activity::PushManifest
            && event
                .media_type
                .as_deref()
                .is_none_or(|mt| !media_type::is_list(mt))
        {
            event
                .references
                .iter()
                .filter(|r| {
                    r.media_type
                        .as_deref()
                        .is_none_or(|mt| !media_type::is_manifest(mt))
                })
                .map(|r| BlobRef {
                    digest: r.digest.clone(),
                    size: r.size.and_then(|s| i64::try_from(s).ok()),
                    media_type: clean(r.media_type.as_deref()),
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut recorded = Self {
            id: String::new(),
            at,
            activity,
            registry: aliases.canonical(event.request.host.as_deref()),
            repository: event.repository.clone(),
            tag: event.tag.clone(),
            digest: event.digest.clone(),
            media_type: clean(event.media_type.as_deref()),
            size: event.size.and_then(|s| i64::try_from(s).ok()),
            references,
            actor: clean(event.actor.as_deref()),
            addr: clean(event.request.addr.as_deref()),
            method: clean(event.request.method.as_deref()),
        };
        recorded.id = match clean(event.id.as_deref()) {
            Some(id) => id,
            None => recorded.content_id(event.timestamp.as_deref().unwrap_or("")),
        };
        Ok(recorded)
    }

    /// A stable id for an event the registry sent without one: the same event
    /// redelivered hashes the same.
    fn content_id(&self, timestamp: &str) -> String {
        let text = format!(
            "{timestamp}\n{}\n{}\n{}\n{}\n{}\n{}",
            self.activity.as_str(),
            self.repository,
            self.digest.as_ref().map(Digest::as_str).unwrap_or(""),
            self.tag.as_ref().map(Tag::as_str).unwrap_or(""),
            self.addr.as_deref().unwrap_or(""),
            self.registry,
        );
        format!("content:{}", Digest::sha256_of(text.as_bytes()).as_str())
    }

    pub fn is_manifest(&self) -> bool {
        matches!(
            self.activity,
            Activity::PushManifest | Activity::PullManifest
        )
    }
}

/// Longest free-text value recorded (ids, actors, addresses, media types).
const MAX_TEXT_CHARS: usize = 512;

/// Free text from the registry, made storable: PostgreSQL refuses NUL characters in
/// text, and an unbounded value must not bloat every row. A value that is not storable
/// would otherwise fail its whole batch again on every redelivery.
fn clean(value: Option<&str>) -> Option<String> {
    let cleaned: String = value?
        .chars()
        .filter(|&c| c != '\0')
        .take(MAX_TEXT_CHARS)
        .collect();
    (!cleaned.is_empty()).then_some(cleaned)
}

/// A pull by one of `prefixes` (regindex's own refetches): not a client's pull.
pub fn is_ignored_pull(event: &RegistryEvent, prefixes: &[String]) -> bool {
    event.action == Action::Pull
        && event.request.useragent.as_deref().is_some_and(|agent| {
            prefixes
                .iter()
                .any(|p| !p.is_empty() && agent.starts_with(p.as_str()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::messages::parse_envelope;

    fn fixture(name: &str) -> RegistryEvent {
        let path = format!(
            "{}/../fixtures/webhooks/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let body = serde_json::to_vec(&fixture["body"]).unwrap();
        parse_envelope(&body).unwrap().remove(0).unwrap()
    }

    fn aliases() -> AliasMap {
        let aliases = [(
            "registry.example.com".to_owned(),
            vec!["127.0.0.1:5055".to_owned()],
        )]
        .into_iter()
        .collect();
        AliasMap::new(&aliases, "", false).unwrap()
    }

    fn interpret(name: &str) -> ActivityEvent {
        ActivityEvent::from_registry_event(&fixture(name), &aliases(), Utc::now()).unwrap()
    }

    #[test]
    fn fixtures_map_to_activities() {
        for (name, activity) in [
            ("blob-push", Activity::PushBlob),
            ("manifest-push-oci", Activity::PushManifest),
            ("manifest-push-docker-v2", Activity::PushManifest),
            ("index-push-oci", Activity::PushManifest),
            ("manifest-push-untagged-index-child", Activity::PushManifest),
            ("manifest-pull", Activity::PullManifest),
            ("manifest-delete-by-digest", Activity::DeleteDigest),
            ("manifest-delete-untag", Activity::DeleteTag),
        ] {
            assert_eq!(interpret(name).activity, activity, "{name}");
        }
    }

    #[test]
    fn host_time_and_id_come_from_the_event() {
        let pull = interpret("manifest-pull");
        assert_eq!(pull.registry, "registry.example.com");
        assert_eq!(pull.id, "62f66fd6-05ff-4733-ab25-ab6d9282d939");
        assert_eq!(pull.at.to_rfc3339(), "2026-11-25T02:30:10.409889587+00:00");
        assert_eq!(pull.addr.as_deref(), Some("127.0.0.1:40090"));
        assert_eq!(pull.tag.as_ref().map(Tag::as_str), Some("latest"));
    }

    #[test]
    fn events_without_id_get_a_stable_content_id() {
        let mut event = fixture("manifest-pull");
        event.id = None;
        let now = Utc::now();
        let a = ActivityEvent::from_registry_event(&event, &aliases(), now).unwrap();
        let b = ActivityEvent::from_registry_event(&event, &aliases(), now).unwrap();
        assert!(a.id.starts_with("content:sha256:"));
        assert_eq!(a.id, b.id);
        event.request.addr = Some("10.0.0.1:1".into());
        assert_ne!(
            ActivityEvent::from_registry_event(&event, &aliases(), now)
                .unwrap()
                .id,
            a.id
        );
    }

    #[test]
    fn references_of_images_become_blob_links() {
        let body = br#"{"events":[{"id":"x","action":"push","timestamp":"2026-11-25T02:29:58Z",
            "target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"a","tag":"1",
              "digest":"sha256:7bdd2ae44a165c15bce2833726ea6a9b0998cab5c147a621eb4aa9db2ed93864",
              "references":[
                {"mediaType":"application/vnd.oci.image.config.v1+json","size":2,"digest":"sha256:527fe2fcc5b8aeed8a24e8123220fe409ce62d3f2afbfdf4e0ba445d38f35cd0"},
                {"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","size":3,"digest":"not-a-digest"}]}}]}"#;
        let event = parse_envelope(body).unwrap().remove(0).unwrap();
        let recorded = ActivityEvent::from_registry_event(&event, &aliases(), Utc::now()).unwrap();
        assert_eq!(
            recorded.references.len(),
            1,
            "the invalid reference is dropped alone"
        );
        assert_eq!(recorded.references[0].size, Some(2));
        assert_eq!(recorded.registry, "", "no host, no default host");
    }

    #[test]
    fn free_text_is_made_storable() {
        let mut event = fixture("manifest-pull");
        event.actor = Some("ali\0ce".into());
        event.request.method = Some("\0".into());
        event.id = Some("x".repeat(10_000));
        let recorded = ActivityEvent::from_registry_event(&event, &aliases(), Utc::now()).unwrap();
        assert_eq!(recorded.actor.as_deref(), Some("alice"));
        assert_eq!(recorded.method, None);
        assert_eq!(recorded.id.len(), MAX_TEXT_CHARS);
    }

    #[test]
    fn regindex_own_pulls_are_ignored() {
        let mut pull = fixture("manifest-pull");
        let prefixes = vec!["regindex/".to_owned()];
        assert!(!is_ignored_pull(&pull, &prefixes));
        pull.request.useragent = Some("regindex/0.1.0".into());
        assert!(is_ignored_pull(&pull, &prefixes));
        assert!(!is_ignored_pull(&pull, &[]));
        let mut push = fixture("manifest-push-oci");
        push.request.useragent = Some("regindex/0.1.0".into());
        assert!(!is_ignored_pull(&push, &prefixes));
    }

    #[test]
    fn deletes_without_what_they_delete_are_unrecordable() {
        let mut untag = fixture("manifest-delete-untag");
        untag.tag = None;
        assert!(matches!(
            ActivityEvent::from_registry_event(&untag, &aliases(), Utc::now()),
            Err(UnrecordableEvent::NoTag { .. })
        ));
        let mut pull = fixture("manifest-pull");
        pull.digest = None;
        assert!(ActivityEvent::from_registry_event(&pull, &aliases(), Utc::now()).is_err());
    }

    fn interpret_event(event: &RegistryEvent) -> ActivityEvent {
        ActivityEvent::from_registry_event(event, &aliases(), Utc::now()).unwrap()
    }

    #[test]
    fn blob_pulls_and_mounts_are_blob_activities() {
        let mut event = fixture("blob-push");
        event.action = Action::Pull;
        assert_eq!(interpret_event(&event).activity, Activity::PullBlob);
        event.action = Action::Mount;
        let mount = interpret_event(&event);
        assert_eq!(mount.activity, Activity::MountBlob);
        assert!(!mount.is_manifest());
        assert!(interpret("manifest-pull").is_manifest());
    }

    #[test]
    fn a_missing_or_unreadable_timestamp_is_the_reception_time() {
        let received = chrono::DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut event = fixture("manifest-pull");
        for timestamp in [None, Some("yesterday".to_owned())] {
            event.timestamp = timestamp;
            let recorded =
                ActivityEvent::from_registry_event(&event, &aliases(), received).unwrap();
            assert_eq!(recorded.at, received);
        }
    }

    #[test]
    fn an_index_and_its_manifest_references_are_not_blobs() {
        let reference = |media_type: &str, n: u8| crate::bus::messages::EventReference {
            digest: Digest::sha256_of(&[n]),
            media_type: Some(media_type.into()),
            size: Some(u64::MAX),
        };
        let mut push = fixture("manifest-push-oci");
        push.references = vec![
            reference("application/vnd.oci.image.manifest.v1+json", 1),
            reference("application/vnd.oci.image.layer.v1.tar+gzip", 2),
        ];
        let recorded = interpret_event(&push);
        assert_eq!(
            recorded.references.len(),
            1,
            "the manifest reference is left out"
        );
        assert_eq!(recorded.references[0].digest, Digest::sha256_of(&[2]));
        assert_eq!(
            recorded.references[0].size, None,
            "a size beyond i64 is unknown"
        );
        let mut index = fixture("index-push-oci");
        index.references = push.references.clone();
        assert!(interpret_event(&index).references.is_empty());
        let mut pull = fixture("manifest-pull");
        pull.references = push.references;
        assert!(
            interpret_event(&pull).references.is_empty(),
            "only pushes link"
        );
    }

    #[test]
    fn content_ids_differ_by_activity() {
        let mut event = fixture("manifest-pull");
        event.id = None;
        let pull = interpret_event(&event);
        event.action = Action::Push;
        assert_ne!(interpret_event(&event).id, pull.id);
        assert_eq!(Activity::DeleteTag.as_str(), "delete_tag");
    }
}
