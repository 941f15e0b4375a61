//! Folding a batch of events into the row changes one transaction applies.
//!
//! Pure: the consumer hands a batch of events that the database has just confirmed as
//! new (their ids were not recorded before), and gets back, per tag, manifest, blob and
//! repository-day, what to add. Keys are ordered (`BTreeMap`), so every transaction
//! upserts rows in the same order and concurrent consumers cannot deadlock on them.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};

use super::event::{Activity, ActivityEvent};

/// A tag of a repository on a registry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TagKey {
    pub registry: String,
    pub repository: String,
    pub tag: String,
}

/// A manifest or blob of a repository on a registry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub registry: String,
    pub repository: String,
    pub digest: String,
}

/// A manifest → blob link.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkKey {
    pub manifest: ObjectKey,
    pub blob: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DayKey {
    pub registry: String,
    pub repository: String,
    pub day: NaiveDate,
}

/// Push and pull times and counts, the part tags, manifests and blobs share.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub first_pushed: Option<DateTime<Utc>>,
    pub last_pushed: Option<DateTime<Utc>>,
    pub pushes: i64,
    pub last_pulled: Option<DateTime<Utc>>,
    pub pulls: i64,
}

impl Counts {
    fn push(&mut self, at: DateTime<Utc>) {
        self.first_pushed = Some(self.first_pushed.map_or(at, |t| t.min(at)));
        self.last_pushed = Some(self.last_pushed.map_or(at, |t| t.max(at)));
        self.pushes += 1;
    }

    fn pull(&mut self, at: DateTime<Utc>) {
        self.last_pulled = Some(self.last_pulled.map_or(at, |t| t.max(at)));
        self.pulls += 1;
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagDelta {
    pub counts: Counts,
    /// The digest the tag was last seen pointing at (pushed or pulled by tag), and when.
    pub digest: Option<(DateTime<Utc>, String)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestDelta {
    pub counts: Counts,
    pub media_type: Option<String>,
    pub size: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobDelta {
    pub counts: Counts,
    pub mounts: i64,
    pub size: Option<i64>,
    pub media_type: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkInfo {
    pub size: Option<i64>,
    pub media_type: Option<String>,
}

/// Per repository and UTC day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DailyDelta {
    pub manifest_pushes: i64,
    pub manifest_pulls: i64,
    pub blob_pushes: i64,
    pub blob_pulls: i64,
    pub deletes: i64,
}

/// A delete, applied after the batch's pushes and pulls (see [`Deletion::applies_to`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub event_id: String,
    pub at: DateTime<Utc>,
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
    pub actor: Option<String>,
    pub addr: Option<String>,
}

/// Everything one batch changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aggregates {
    pub tags: BTreeMap<TagKey, TagDelta>,
    pub manifests: BTreeMap<ObjectKey, ManifestDelta>,
    pub blobs: BTreeMap<ObjectKey, BlobDelta>,
    pub links: BTreeMap<LinkKey, LinkInfo>,
    pub daily: BTreeMap<DayKey, DailyDelta>,
    /// In event-time order.
    pub deletions: Vec<Deletion>,
}

impl Aggregates {
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a ActivityEvent>) -> Self {
        let mut out = Self::default();
        for event in events {
            out.add(event);
        }
        out.deletions
            .sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.event_id.cmp(&b.event_id)));
        out
    }

    fn add(&mut self, e: &ActivityEvent) {
        let registry = e.registry.clone();
        let repository = e.repository.to_string();
        let digest = e.digest.as_ref().map(|d| d.to_string());
        let object = |digest: &str| ObjectKey {
            registry: registry.clone(),
            repository: repository.clone(),
            digest: digest.to_owned(),
        };
        let day = self
            .daily
            .entry(DayKey {
                registry: registry.clone(),
                repository: repository.clone(),
                day: e.at.date_naive(),
            })
            .or_default();
        match e.activity {
            Activity::PushManifest | Activity::PullManifest => {
                let push = e.activity == Activity::PushManifest;
                if push {
                    day.manifest_pushes += 1;
                } else {
                    day.manifest_pulls += 1;
                }
                let Some(digest) = digest else { return };
                let manifest_key = object(&digest);
                let manifest = self.manifests.entry(manifest_key.clone()).or_default();
                if push {
                    manifest.counts.push(e.at);
                } else {
                    manifest.counts.pull(e.at);
                }
                manifest.media_type = e.media_type.clone().or(manifest.media_type.take());
                manifest.size = e.size.or(manifest.size);
                if let Some(tag) = &e.tag {
                    let delta = self
                        .tags
                        .entry(TagKey {
                            registry: registry.clone(),
                            repository: repository.clone(),
                            tag: tag.to_string(),
                        })
                        .or_default();
                    if push {
                        delta.counts.push(e.at);
                    } else {
                        delta.counts.pull(e.at);
                    }
                    if delta.digest.as_ref().is_none_or(|(seen, _)| *seen <= e.at) {
                        delta.digest = Some((e.at, digest.clone()));
                    }
                }
                for blob in &e.references {
                    self.links.insert(
                        LinkKey {
                            manifest: manifest_key.clone(),
                            blob: blob.digest.to_string(),
                        },
                        LinkInfo {
                            size: blob.size,
                            media_type: blob.media_type.clone(),
                        },
                    );
                }
            }
            Activity::PushBlob | Activity::MountBlob | Activity::PullBlob => {
                let Some(digest) = digest else { return };
                let blob = self.blobs.entry(object(&digest)).or_default();
                match e.activity {
                    Activity::PullBlob => {
                        day.blob_pulls += 1;
                        blob.counts.pull(e.at);
                    }
                    Activity::MountBlob => {
                        day.blob_pushes += 1;
                        blob.counts.push(e.at);
                        blob.mounts += 1;
                    }
                    _ => {
                        day.blob_pushes += 1;
                        blob.counts.push(e.at);
                    }
                }
                blob.size = e.size.or(blob.size);
                blob.media_type = e.media_type.clone().or(blob.media_type.take());
            }
            Activity::DeleteDigest | Activity::DeleteTag => {
                day.deletes += 1;
                self.deletions.push(Deletion {
                    event_id: e.id.clone(),
                    at: e.at,
                    registry,
                    repository,
                    tag: e.tag.as_ref().map(|t| t.to_string()),
                    digest,
                    actor: e.actor.clone(),
                    addr: e.addr.clone(),
                });
            }
        }
    }

    /// Manifests pushed in this batch without `references`: their blobs are learnt from
    /// the manifest itself (see `backfill`).
    pub fn manifests_without_links(&self) -> BTreeSet<ObjectKey> {
        let linked: BTreeSet<&ObjectKey> = self.links.keys().map(|l| &l.manifest).collect();
        self.manifests
            .iter()
            .filter(|(key, delta)| delta.counts.pushes > 0 && !linked.contains(key))
            .map(|(key, _)| key.clone())
            .collect()
    }
}

impl Deletion {
    /// A delete removes a row only when the row was not pushed again after it: a
    /// tag deleted and pushed again within one batch, or a redelivered old delete, must
    /// not remove the newer push.
    pub fn applies_to(&self, last_pushed: Option<DateTime<Utc>>) -> bool {
        last_pushed.is_none_or(|pushed| pushed <= self.at)
    }
}

/// Keeps the first occurrence of each event id: a message redelivered while its first
/// copy is still in the same batch must count once.
pub fn dedup_by_id(events: Vec<ActivityEvent>) -> Vec<ActivityEvent> {
    let mut seen = std::collections::HashSet::new();
    events
        .into_iter()
        .filter(|e| seen.insert(e.id.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::event::BlobRef;
    use crate::model::{Digest, RepositoryName, Tag};
    use chrono::TimeZone;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).single().unwrap()
    }

    fn digest(n: u8) -> Digest {
        Digest::sha256_of(&[n])
    }

    fn event(
        id: &str,
        activity: Activity,
        secs: i64,
        tag: Option<&str>,
        d: Option<u8>,
    ) -> ActivityEvent {
        ActivityEvent {
            id: id.into(),
            at: at(secs),
            activity,
            registry: "r".into(),
            repository: RepositoryName::parse("apps/calc").unwrap(),
            tag: tag.map(|t| Tag::parse(t).unwrap()),
            digest: d.map(digest),
            media_type: None,
            size: Some(10),
            references: vec![],
            actor: None,
            addr: None,
            method: None,
        }
    }

    fn tag_key(tag: &str) -> TagKey {
        TagKey {
            registry: "r".into(),
            repository: "apps/calc".into(),
            tag: tag.into(),
        }
    }

    fn object_key(n: u8) -> ObjectKey {
        ObjectKey {
            registry: "r".into(),
            repository: "apps/calc".into(),
            digest: digest(n).to_string(),
        }
    }

    #[test]
    fn pushes_and_pulls_fold_into_times_and_counts() {
        let events = [
            event("1", Activity::PushManifest, 5, Some("latest"), Some(1)),
            event("2", Activity::PullManifest, 7, Some("latest"), Some(1)),
            event("3", Activity::PullManifest, 6, None, Some(1)),
            event("4", Activity::PushManifest, 2, Some("latest"), Some(1)),
        ];
        let agg = Aggregates::from_events(&events);
        let tag = &agg.tags[&tag_key("latest")];
        assert_eq!(tag.counts.first_pushed, Some(at(2)));
        assert_eq!(tag.counts.last_pushed, Some(at(5)));
        assert_eq!((tag.counts.pushes, tag.counts.pulls), (2, 1));
        assert_eq!(tag.counts.last_pulled, Some(at(7)));
        assert_eq!(tag.digest, Some((at(7), digest(1).to_string())));
        let manifest = &agg.manifests[&object_key(1)];
        assert_eq!((manifest.counts.pushes, manifest.counts.pulls), (2, 2));
        assert_eq!(manifest.size, Some(10));
        let day = agg.daily.values().next().unwrap();
        assert_eq!((day.manifest_pushes, day.manifest_pulls), (2, 2));
    }

    #[test]
    fn the_latest_observation_decides_where_a_tag_points() {
        let events = [
            event("1", Activity::PushManifest, 9, Some("latest"), Some(2)),
            event("2", Activity::PushManifest, 3, Some("latest"), Some(1)),
        ];
        let agg = Aggregates::from_events(&events);
        assert_eq!(
            agg.tags[&tag_key("latest")].digest,
            Some((at(9), digest(2).to_string()))
        );
    }

    #[test]
    fn blobs_mounts_and_references() {
        let mut push = event("1", Activity::PushManifest, 1, Some("1"), Some(1));
        push.references = vec![BlobRef {
            digest: digest(7),
            size: Some(3),
            media_type: None,
        }];
        let mut unlinked = event("5", Activity::PushManifest, 1, None, Some(9));
        unlinked.references.clear();
        let events = [
            push,
            unlinked,
            event("2", Activity::PushBlob, 1, None, Some(7)),
            event("3", Activity::MountBlob, 2, None, Some(8)),
            event("4", Activity::PullBlob, 3, None, Some(7)),
        ];
        let agg = Aggregates::from_events(&events);
        assert_eq!(agg.links.len(), 1);
        assert_eq!(agg.blobs[&object_key(7)].counts.pushes, 1);
        assert_eq!(agg.blobs[&object_key(7)].counts.pulls, 1);
        assert_eq!(agg.blobs[&object_key(8)].mounts, 1);
        assert_eq!(
            agg.manifests_without_links(),
            [object_key(9)].into_iter().collect()
        );
        let day = agg.daily.values().next().unwrap();
        assert_eq!((day.blob_pushes, day.blob_pulls), (2, 1));
    }

    #[test]
    fn deletions_keep_event_order_and_spare_newer_pushes() {
        let events = [
            event("b", Activity::DeleteTag, 8, Some("1"), None),
            event("a", Activity::DeleteDigest, 4, None, Some(1)),
        ];
        let agg = Aggregates::from_events(&events);
        let ids: Vec<&str> = agg.deletions.iter().map(|d| d.event_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        let delete = &agg.deletions[0];
        assert!(delete.applies_to(None));
        assert!(delete.applies_to(Some(at(4))));
        assert!(!delete.applies_to(Some(at(5))));
    }

    #[test]
    fn duplicates_in_a_batch_count_once() {
        let events = vec![
            event("1", Activity::PullManifest, 1, Some("x"), Some(1)),
            event("1", Activity::PullManifest, 1, Some("x"), Some(1)),
            event("2", Activity::PullManifest, 1, Some("x"), Some(1)),
        ];
        let agg = Aggregates::from_events(&dedup_by_id(events));
        assert_eq!(agg.tags[&tag_key("x")].counts.pulls, 2);
    }

    fn day_key(repository: &str, day: &str) -> DayKey {
        DayKey {
            registry: "r".into(),
            repository: repository.into(),
            day: day.parse().unwrap(),
        }
    }

    #[test]
    fn days_are_per_repository_and_utc_day() {
        let mut other = event("3", Activity::PushBlob, 0, None, Some(4));
        other.repository = RepositoryName::parse("apps/edit").unwrap();
        let events = [
            // 1_700_000_000 is 2023-11-14T22:13:20Z: a day later is the next UTC day.
            event("1", Activity::PushManifest, 0, Some("1"), Some(1)),
            event("2", Activity::DeleteTag, 86_400, Some("1"), None),
            other,
        ];
        let agg = Aggregates::from_events(&events);
        assert_eq!(agg.daily.len(), 3);
        assert_eq!(
            agg.daily[&day_key("apps/calc", "2023-11-14")],
            DailyDelta {
                manifest_pushes: 1,
                ..DailyDelta::default()
            }
        );
        assert_eq!(agg.daily[&day_key("apps/calc", "2023-11-15")].deletes, 1);
        assert_eq!(
            agg.daily[&day_key("apps/edit", "2023-11-14")].blob_pushes,
            1
        );
    }

    #[test]
    fn later_events_without_details_keep_the_known_ones() {
        let mut first = event("1", Activity::PushManifest, 1, None, Some(1));
        first.media_type = Some("application/vnd.oci.image.manifest.v1+json".into());
        let mut later = event("2", Activity::PullManifest, 2, None, Some(1));
        later.size = None;
        let mut blob = event("3", Activity::PushBlob, 1, None, Some(2));
        blob.media_type = Some("application/octet-stream".into());
        let mut blob_pull = event("4", Activity::PullBlob, 2, None, Some(2));
        blob_pull.size = Some(99);
        let agg = Aggregates::from_events(&[first, later, blob, blob_pull]);
        let manifest = &agg.manifests[&object_key(1)];
        assert_eq!(
            (manifest.media_type.as_deref(), manifest.size),
            (Some("application/vnd.oci.image.manifest.v1+json"), Some(10))
        );
        let blob = &agg.blobs[&object_key(2)];
        assert_eq!(
            (blob.media_type.as_deref(), blob.size),
            (Some("application/octet-stream"), Some(99)),
            "a later size wins, a missing media type does not erase one"
        );
    }

    #[test]
    fn a_mount_is_a_push_of_the_blob_and_pulls_are_not_pushes() {
        let events = [
            event("1", Activity::MountBlob, 5, None, Some(3)),
            event("2", Activity::PullBlob, 9, None, Some(3)),
            event("3", Activity::PullManifest, 9, Some("x"), Some(1)),
        ];
        let agg = Aggregates::from_events(&events);
        let blob = &agg.blobs[&object_key(3)].counts;
        assert_eq!(
            (blob.first_pushed, blob.last_pushed, blob.last_pulled),
            (Some(at(5)), Some(at(5)), Some(at(9)))
        );
        let tag = &agg.tags[&tag_key("x")].counts;
        assert_eq!((tag.first_pushed, tag.pushes, tag.pulls), (None, 0, 1));
        assert!(
            agg.manifests_without_links().is_empty(),
            "only pushed manifests wait for their links"
        );
    }

    #[test]
    fn a_delete_by_digest_carries_who_and_where() {
        let mut delete = event("d", Activity::DeleteDigest, 3, None, Some(5));
        delete.actor = Some("alice".into());
        delete.addr = Some("10.0.0.1:1".into());
        let agg = Aggregates::from_events(&[delete]);
        assert_eq!(
            agg.deletions,
            [Deletion {
                event_id: "d".into(),
                at: at(3),
                registry: "r".into(),
                repository: "apps/calc".into(),
                tag: None,
                digest: Some(digest(5).to_string()),
                actor: Some("alice".into()),
                addr: Some("10.0.0.1:1".into()),
            }]
        );
        assert!(agg.manifests.is_empty() && agg.blobs.is_empty());
    }
}
