//! `RepositoryTx`: the one transaction in which a repository's stored state is replaced.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::types::Json;

use super::gc::delete_unreachable;
use super::plan::{self, Changes, Known};
use super::{rows, ReplaceOutcome, RepositoryTx, StoreError, StoredRepository};
use crate::model::{Digest, Image, ImageList, RepositoryName, StringMap, Tag};

impl RepositoryTx {
    /// The repository whose lock this transaction holds.
    pub fn repository(&self) -> &RepositoryName {
        &self.repository
    }

    /// Digests of the images and lists stored for this repository. A stored list always
    /// has its entries stored too.
    pub async fn known_manifests(&mut self) -> Result<HashSet<Digest>, StoreError> {
        Ok(self.stored().await?.manifests.into_keys().collect())
    }

    /// Makes the repository's state exactly `tags`: stores `new_images` and `new_lists`
    /// (manifests not known yet), sets the tag set, removes images and lists no tag
    /// reaches any more, removes the repository when it has no tags left, and bumps the
    /// data version when anything changed. Every tag target and list entry must be known
    /// or among the new manifests.
    ///
    /// New manifests that are already stored are left as they are (a digest names one
    /// content); new manifests no tag reaches are not stored at all.
    pub async fn replace(
        &mut self,
        tags: &BTreeMap<Tag, Digest>,
        new_images: &[Image],
        new_lists: &[ImageList],
    ) -> Result<ReplaceOutcome, StoreError> {
        let stored = self.stored().await?;
        let changes = plan::plan(
            &self.repository,
            &stored,
            tags.clone(),
            new_images,
            new_lists,
        )?;
        self.apply(&stored, &changes).await
    }

    /// Carries out `changes`, planned ([`plan::diff`] or [`plan::plan`]) against `stored`
    /// as read in this transaction ([`RepositoryTx::stored`]); see [`Self::replace`].
    /// Leaves the problems alone.
    pub async fn apply(
        &mut self,
        stored: &StoredRepository,
        changes: &Changes,
    ) -> Result<ReplaceOutcome, StoreError> {
        let mut known = stored.manifests.clone();
        let mut outcome = ReplaceOutcome::default();

        let existing_id = stored.repository_id;
        let repository_id = match (existing_id, changes.tags.is_empty()) {
            (None, true) => return Ok(outcome),
            (Some(id), true) => {
                // Tags first: they reference the manifests.
                let removed = sqlx::query("DELETE FROM tags WHERE repository_id = $1")
                    .bind(id)
                    .execute(&mut *self.tx)
                    .await?;
                outcome.manifests_removed = delete_unreachable(&mut self.tx, id).await? as usize;
                sqlx::query("DELETE FROM repositories WHERE id = $1")
                    .bind(id)
                    .execute(&mut *self.tx)
                    .await?;
                outcome.changed = removed.rows_affected() > 0 || outcome.manifests_removed > 0;
                self.finish(&outcome).await?;
                return Ok(outcome);
            }
            (Some(id), false) => id,
            (None, false) => {
                sqlx::query_scalar("INSERT INTO repositories (name) VALUES ($1) RETURNING id")
                    .bind(self.repository.as_str())
                    .fetch_one(&mut *self.tx)
                    .await?
            }
        };

        let images: Vec<&Image> = changes.images.iter().collect();
        let lists: Vec<&ImageList> = changes.lists.iter().collect();
        self.insert_images(repository_id, &images, &mut known)
            .await?;
        super::icon_blobs::store_image_icons(&mut self.tx, &images, &known, self.icon_max_bytes)
            .await?;
        self.insert_lists(repository_id, &lists, &mut known).await?;
        outcome.manifests_added = images.len() + lists.len();

        if !changes.removed.is_empty() {
            let removed: Vec<&str> = changes.removed.iter().map(|t| t.as_str()).collect();
            sqlx::query("DELETE FROM tags WHERE repository_id = $1 AND tag = ANY($2)")
                .bind(repository_id)
                .bind(&removed)
                .execute(&mut *self.tx)
                .await?;
        }
        if !changes.set.is_empty() {
            let mut names = Vec::with_capacity(changes.set.len());
            let mut ids = Vec::with_capacity(changes.set.len());
            for (tag, digest) in &changes.set {
                let known = known.get(digest).ok_or_else(|| StoreError::Inconsistent {
                    repository: self.repository.to_string(),
                    detail: format!("tag {tag} points to {digest}, which was not stored"),
                })?;
                names.push(tag.as_str());
                ids.push(known.id);
            }
            sqlx::query(
                "INSERT INTO tags (repository_id, tag, manifest_id)
                 SELECT $1, tag, manifest_id FROM UNNEST($2::text[], $3::bigint[]) AS u (tag, manifest_id)
                 ON CONFLICT (repository_id, tag) DO UPDATE SET manifest_id = EXCLUDED.manifest_id",
            )
            .bind(repository_id)
            .bind(&names)
            .bind(&ids)
            .execute(&mut *self.tx)
            .await?;
        }
        outcome.tags_set = changes.set.len();
        // Only a tag that moved or went can leave a manifest unreachable (a committed state
        // holds none; the garbage collection is the backstop).
        if changes.orphans_possible(stored) {
            outcome.manifests_removed =
                delete_unreachable(&mut self.tx, repository_id).await? as usize;
        }
        outcome.changed = existing_id.is_none()
            || !changes.set.is_empty()
            || !changes.removed.is_empty()
            || outcome.manifests_added > 0
            || outcome.manifests_removed > 0;
        if outcome.changed {
            self.refresh_summary(repository_id, self.icon_max_bytes)
                .await?;
        }
        self.finish(&outcome).await?;
        Ok(outcome)
    }

    /// Bumps the data version when the outcome is visible to queries.
    async fn finish(&mut self, outcome: &ReplaceOutcome) -> Result<(), StoreError> {
        if outcome.changed {
            self.mark_changed().await?;
        }
        Ok(())
    }

    /// Bumps the data version, records it as the repository's own version
    /// (`repositories.changed_version`, what per-repository answer parts are keyed on)
    /// and announces it to the apis (`NOTIFY`, delivered at commit, see
    /// `data_version.rs`). Done last: the counter row is the one row every writer
    /// shares, so it stays locked only briefly.
    pub(super) async fn mark_changed(&mut self) -> Result<(), StoreError> {
        sqlx::query(
            "WITH bumped AS (UPDATE data_version SET version = version + 1 RETURNING version),
                  marked AS (UPDATE repositories SET changed_version = (SELECT version FROM bumped)
                             WHERE name = $2)
             SELECT pg_notify($1, version::text) FROM bumped",
        )
        .bind(super::DATA_VERSION_CHANNEL)
        .bind(self.repository.as_str())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn insert_images(
        &mut self,
        repository_id: i64,
        images: &[&Image],
        known: &mut HashMap<Digest, Known>,
    ) -> Result<(), StoreError> {
        if images.is_empty() {
            return Ok(());
        }
        let digests: Vec<&str> = images.iter().map(|i| i.digest.as_str()).collect();
        let media_types: Vec<&str> = images.iter().map(|i| i.media_type.as_str()).collect();
        let oses: Vec<Cow<str>> = images.iter().map(|i| without_nul(&i.os)).collect();
        let architectures: Vec<Cow<str>> = images
            .iter()
            .map(|i| without_nul(&i.architecture))
            .collect();
        let labels: Vec<Json<Cow<StringMap>>> = images
            .iter()
            .map(|i| Json(map_without_nul(&i.labels)))
            .collect();
        let annotations: Vec<Json<Cow<StringMap>>> = images
            .iter()
            .map(|i| Json(map_without_nul(&i.annotations)))
            .collect();
        let configs: Vec<&str> = images.iter().map(|i| i.config_digest.as_str()).collect();
        let inserted: Vec<(i64, String)> = sqlx::query_as(
            "INSERT INTO manifests
                 (repository_id, digest, media_type, is_list, os, architecture, labels, annotations, config_digest)
             SELECT $1, u.digest, u.media_type, false, u.os, u.architecture, u.labels, u.annotations, u.config_digest
             FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::jsonb[], $8::text[])
                  AS u (digest, media_type, os, architecture, labels, annotations, config_digest)
             RETURNING id, digest",
        )
        .bind(repository_id)
        .bind(&digests)
        .bind(&media_types)
        .bind(&oses)
        .bind(&architectures)
        .bind(&labels)
        .bind(&annotations)
        .bind(&configs)
        .fetch_all(&mut *self.tx)
        .await?;
        for (id, digest) in inserted {
            known.insert(rows::digest(&digest)?, Known { id, is_list: false });
        }
        Ok(())
    }

    async fn insert_lists(
        &mut self,
        repository_id: i64,
        lists: &[&ImageList],
        known: &mut HashMap<Digest, Known>,
    ) -> Result<(), StoreError> {
        if lists.is_empty() {
            return Ok(());
        }
        let digests: Vec<&str> = lists.iter().map(|l| l.digest.as_str()).collect();
        let media_types: Vec<&str> = lists.iter().map(|l| l.media_type.as_str()).collect();
        let annotations: Vec<Json<Cow<StringMap>>> = lists
            .iter()
            .map(|l| Json(map_without_nul(&l.annotations)))
            .collect();
        let inserted: Vec<(i64, String)> = sqlx::query_as(
            "INSERT INTO manifests (repository_id, digest, media_type, is_list, annotations)
             SELECT $1, u.digest, u.media_type, true, u.annotations
             FROM UNNEST($2::text[], $3::text[], $4::jsonb[]) AS u (digest, media_type, annotations)
             RETURNING id, digest",
        )
        .bind(repository_id)
        .bind(&digests)
        .bind(&media_types)
        .bind(&annotations)
        .fetch_all(&mut *self.tx)
        .await?;
        for (id, digest) in inserted {
            known.insert(rows::digest(&digest)?, Known { id, is_list: true });
        }

        let (mut list_ids, mut positions, mut image_ids) = (Vec::new(), Vec::new(), Vec::new());
        for list in lists {
            let list_id = known.get(&list.digest).map(|k| k.id);
            for (position, entry) in list.entries.iter().enumerate() {
                let image_id = known.get(entry).map(|k| k.id);
                let (Some(list_id), Some(image_id)) = (list_id, image_id) else {
                    return Err(StoreError::Inconsistent {
                        repository: self.repository.to_string(),
                        detail: format!("list {} entry {entry} was not stored", list.digest),
                    });
                };
                list_ids.push(list_id);
                positions.push(i32::try_from(position).unwrap_or(i32::MAX));
                image_ids.push(image_id);
            }
        }
        sqlx::query(
            "INSERT INTO list_entries (list_id, position, image_id)
             SELECT * FROM UNNEST($1::bigint[], $2::int[], $3::bigint[])",
        )
        .bind(&list_ids)
        .bind(&positions)
        .bind(&image_ids)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }
}

/// PostgreSQL text and jsonb cannot hold NUL characters; an image config that has them
/// (they are legal in JSON) must not make its repository unrefetchable forever, so they
/// are stored as U+FFFD.
fn without_nul(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(s)
    }
}

fn map_without_nul(map: &StringMap) -> Cow<'_, StringMap> {
    if map
        .iter()
        .any(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        Cow::Owned(
            map.iter()
                .map(|(k, v)| (without_nul(k).into_owned(), without_nul(v).into_owned()))
                .collect(),
        )
    } else {
        Cow::Borrowed(map)
    }
}
