//! What the handling of Bodhi messages reads and writes: which repositories hold a build,
//! which repositories recent updates named, and every stored tag (a compose's warm pass).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::{rows, Store, StoreError};
use crate::bus::bodhi::{label, BuildMatch, Nvr};
use crate::model::{Digest, RepositoryName, Tag};

/// How a row of [`BUILD_MATCHES_SQL`] matched.
const HOW_LABEL_NVR: &str = "label_nvr";
const HOW_NAME_LABEL: &str = "name_label";
const HOW_COMPONENT: &str = "component";
const HOW_REPOSITORY_NAME: &str = "repository_name";

/// $1 component label key, $2 the NVR as labels (jsonb), $3 the name part (as component
/// label value and as repository name), $4 the `name` label key. `@>` uses the GIN index
/// on `labels`.
const BUILD_MATCHES_SQL: &str = "
    SELECT r.name, 'label_nvr' FROM manifests m JOIN repositories r ON r.id = m.repository_id
     WHERE m.labels @> $2
    UNION
    SELECT m.labels ->> $4, 'name_label' FROM manifests m
     WHERE m.labels @> $2 AND m.labels ? $4
    UNION
    SELECT r.name, 'component' FROM manifests m JOIN repositories r ON r.id = m.repository_id
     WHERE m.labels @> jsonb_build_object($1::text, $3::text)
    UNION
    SELECT r.name, 'repository_name' FROM repositories r
     WHERE r.name = $3 OR right(r.name, length($3) + 1) = '/' || $3";

impl Store {
    /// The repositories that hold `nvr`, or an earlier build of its component, or are
    /// named after it; one row per way a repository matched. A `name` label that is not a
    /// valid repository name is skipped.
    pub async fn build_matches(
        &self,
        nvr: &Nvr,
    ) -> Result<Vec<(RepositoryName, BuildMatch)>, StoreError> {
        let as_labels = serde_json::json!({
            label::COMPONENT: nvr.name(),
            label::VERSION: nvr.version(),
            label::RELEASE: nvr.release(),
        });
        let rows: Vec<(Option<String>, String)> = sqlx::query_as(BUILD_MATCHES_SQL)
            .bind(label::COMPONENT)
            .bind(sqlx::types::Json(as_labels))
            .bind(nvr.name())
            .bind(label::NAME)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(name, how)| {
                let repository = RepositoryName::parse(&name?).ok()?;
                let how = match how.as_str() {
                    HOW_LABEL_NVR => BuildMatch::LabelNvr,
                    HOW_NAME_LABEL => BuildMatch::NameLabel,
                    HOW_COMPONENT => BuildMatch::Component,
                    HOW_REPOSITORY_NAME => BuildMatch::RepositoryName,
                    _ => return None,
                };
                Some((repository, how))
            })
            .collect())
    }

    /// Remembers that update `alias` named `repositories`, and forgets what is older than
    /// `window`.
    pub async fn record_update_repositories(
        &self,
        alias: &str,
        repositories: &[RepositoryName],
        window: Duration,
    ) -> Result<(), StoreError> {
        let names: Vec<&str> = repositories.iter().map(RepositoryName::as_str).collect();
        let mut tx = crate::store::begin(&self.pool).await?;
        sqlx::query(
            "INSERT INTO bodhi_update_repositories (repository, update_alias, seen_at)
             SELECT name, $2, now() FROM UNNEST($1::text[]) AS name
             ON CONFLICT (repository) DO UPDATE
                SET update_alias = EXCLUDED.update_alias, seen_at = EXCLUDED.seen_at",
        )
        .bind(&names)
        .bind(alias)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM bodhi_update_repositories WHERE seen_at < now() - make_interval(secs => $1)",
        )
        .bind(window.as_secs_f64())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The repositories update messages named within `window`, most recent first.
    pub async fn recent_update_repositories(
        &self,
        window: Duration,
    ) -> Result<Vec<RepositoryName>, StoreError> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT repository FROM bodhi_update_repositories
              WHERE seen_at >= now() - make_interval(secs => $1)
              ORDER BY seen_at DESC, repository",
        )
        .bind(window.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        names.iter().map(|n| rows::repository_name(n)).collect()
    }

    /// Every stored tag with its digest, per repository (repositories without tags are
    /// left out).
    pub async fn stored_tags(
        &self,
    ) -> Result<HashMap<RepositoryName, BTreeMap<Tag, Digest>>, StoreError> {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT r.name, t.tag, m.digest FROM tags t
               JOIN repositories r ON r.id = t.repository_id
               JOIN manifests m ON m.id = t.manifest_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut tags: HashMap<RepositoryName, BTreeMap<Tag, Digest>> = HashMap::new();
        for (repository, tag, digest) in rows {
            tags.entry(rows::repository_name(&repository)?)
                .or_default()
                .insert(rows::tag(&tag)?, rows::digest(&digest)?);
        }
        Ok(tags)
    }
}
