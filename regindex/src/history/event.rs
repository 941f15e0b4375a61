//! What the history records, derived from the bus's [`RegistryEvent`].
//!
//! The api parses webhooks once (`bus::messages::parse_envelope`) and publishes
//! normalised [`RegistryEvent`]s; this module only interprets them for the history:
//! which activity an event is, under which canonical host, at what time, with which id.

use chrono::{DateTime, Utc};

use super::alias::AliasMap;
use crate::bus::messages::{Action, Kind, RegistryEvent};
use crate::model::{media_type, Digest, RepositoryName, Tag};

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
            && event.media_type.as_deref().is_none_or(|mt| !media_type::is_list(mt))
        {
            event
                .references
                .iter()
                .filter(|r| r.media_type.as_deref().is_none_or(|mt| !media_type::is_manifest(mt)))
                .map(|r| BlobRef {
                    digest: r.digest.clone(),
                    size: r.size.and_then(|s| i64::try_from(s).ok()),
                    media_type: r.media_type.clone(),
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
            media_type: event.media_type.clone(),
            size: event.size.and_then(|s| i64::try_from(s).ok()),
            references,
            actor: event.actor.clone(),
            addr: event.request.addr.clone(),
            method: event.request.method.clone(),
        };
        recorded.id = match event.id.as_deref() {
            Some(id) => id.to_owned(),
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
        matches!(self.activity, Activity::PushManifest | Activity::PullManifest)
    }
}
