//! Repository summaries (title, description, icon) and everything else derived from a
//! repository's images, rewritten in the refetch transaction that changed them.

use std::collections::{HashMap, HashSet};

use sqlx::types::Json;

use super::plan::Known;
use super::{rows, RepositoryTx, StoreError};
use crate::catalog::describe::{self, Summary};
use crate::catalog::icons;
use crate::model::{Digest, StringMap};

/// Images read to summarise a repository: the first ones in preference order are enough,
/// and a repository may have thousands of tags.
const SUMMARY_IMAGES: i64 = 16;

/// One tag's way to an image: directly (`position` 0) or as entry `position` of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TagPath {
    pub tag: String,
    pub position: i32,
    pub image_id: i64,
}

/// Orders images for summarising: reached by `latest` first, then by tag, greater
/// (usually newer) first, then by position in a list; each image once.
pub(super) fn preferred_images(mut paths: Vec<TagPath>) -> Vec<i64> {
    paths.sort_by(|a, b| {
        let latest = (b.tag == "latest").cmp(&(a.tag == "latest"));
        latest
            .then_with(|| b.tag.cmp(&a.tag))
            .then_with(|| a.position.cmp(&b.position))
            .then_with(|| a.image_id.cmp(&b.image_id))
    });
    let mut seen = HashSet::new();
    paths
        .into_iter()
        .filter(|p| seen.insert(p.image_id))
        .map(|p| p.image_id)
        .collect()
}

/// The `icon` column: of the candidates in order, the first that is a valid data URI (as
/// the stored icon's file name: checked as fully as the icons that are stored, so the page
/// never links an icon that is not) or an http(s) URL (as it is); nothing otherwise (the
/// page shows its placeholder).
pub(super) fn icon_column(candidates: &[String], max_bytes: usize) -> Option<String> {
    candidates
        .iter()
        .find_map(|value| usable_icon(value, max_bytes))
}

fn usable_icon(value: &str, max_bytes: usize) -> Option<String> {
    if icons::is_data_uri(value) {
        return icons::parse_data_uri(value, max_bytes, icons::Check::Full)
            .ok()
            .map(|icon| icon.file_name());
    }
    let lower = value.get(..8).unwrap_or(value).to_ascii_lowercase();
    (lower.starts_with("https://") || lower.starts_with("http://")).then(|| value.to_owned())
}

impl RepositoryTx {
    /// Rewrites the repository's summary from its current tags and images.
    pub(super) async fn refresh_summary(
        &mut self,
        repository_id: i64,
        max_bytes: usize,
    ) -> Result<(), StoreError> {
        let summary = self.summarize(repository_id).await?;
        let icon = icon_column(&summary.icons, max_bytes);
        sqlx::query(
            "INSERT INTO repository_summaries (repository_id, name, title, description, flatpak_id, icon)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (repository_id) DO UPDATE SET name = EXCLUDED.name, title = EXCLUDED.title,
                 description = EXCLUDED.description, flatpak_id = EXCLUDED.flatpak_id, icon = EXCLUDED.icon",
        )
        .bind(repository_id)
        .bind(self.repository.as_str())
        .bind(&summary.title)
        .bind(&summary.description)
        .bind(&summary.flatpak_id)
        .bind(&icon)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn summarize(&mut self, repository_id: i64) -> Result<Summary, StoreError> {
        let paths: Vec<(String, i32, i64)> = sqlx::query_as(
            "SELECT t.tag, COALESCE(le.position, 0), COALESCE(le.image_id, m.id)
             FROM tags t JOIN manifests m ON m.id = t.manifest_id
             LEFT JOIN list_entries le ON le.list_id = m.id
             WHERE t.repository_id = $1 AND (NOT m.is_list OR le.image_id IS NOT NULL)",
        )
        .bind(repository_id)
        .fetch_all(&mut *self.tx)
        .await?;
        let paths = paths
            .into_iter()
            .map(|(tag, position, image_id)| TagPath {
                tag,
                position,
                image_id,
            })
            .collect();
        let mut ids = preferred_images(paths);
        ids.truncate(usize::try_from(SUMMARY_IMAGES).unwrap_or(16));
        let rows: Vec<(i64, Json<StringMap>, Json<StringMap>)> =
            sqlx::query_as("SELECT id, annotations, labels FROM manifests WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_all(&mut *self.tx)
                .await?;
        let mut by_id: HashMap<i64, (StringMap, StringMap)> = rows
            .into_iter()
            .map(|(id, annotations, labels)| (id, (annotations.0, labels.0)))
            .collect();
        let images: Vec<(StringMap, StringMap)> =
            ids.iter().filter_map(|id| by_id.remove(id)).collect();
        Ok(describe::summarize(self.repository.as_str(), &images))
    }

    /// Re-extracts the icons of every image of the repository and rewrites its summary
    /// (backfill; refetches do this for new images only).
    pub(super) async fn rebuild_derived(&mut self) -> Result<(), StoreError> {
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1")
            .bind(self.repository.as_str())
            .fetch_optional(&mut *self.tx)
            .await?;
        let Some(repository_id) = id else {
            return Ok(());
        };
        let images = self.load_images(repository_id).await?;
        let known: HashMap<Digest, Known> = images
            .iter()
            .map(|(id, image)| {
                (
                    image.digest.clone(),
                    Known {
                        id: *id,
                        is_list: false,
                    },
                )
            })
            .collect();
        let refs: Vec<&crate::model::Image> = images.iter().map(|(_, image)| image).collect();
        let max_bytes = self.icon_max_bytes;
        super::icon_blobs::store_image_icons(&mut self.tx, &refs, &known, max_bytes).await?;
        self.refresh_summary(repository_id, max_bytes).await?;
        // Newly stored icons change the repository's index answer (icon URLs instead of
        // data URIs): cached answers and answer parts must not outlive this.
        self.mark_changed().await
    }

    async fn load_images(
        &mut self,
        repository_id: i64,
    ) -> Result<Vec<(i64, crate::model::Image)>, StoreError> {
        type Row = (
            i64,
            String,
            String,
            String,
            String,
            Json<StringMap>,
            Json<StringMap>,
            Option<String>,
        );
        let found: Vec<Row> = sqlx::query_as(
            "SELECT id, digest, media_type, os, architecture, labels, annotations, config_digest
             FROM manifests WHERE repository_id = $1 AND NOT is_list",
        )
        .bind(repository_id)
        .fetch_all(&mut *self.tx)
        .await?;
        found
            .into_iter()
            .map(|(id, d, mt, os, arch, labels, annotations, config)| {
                Ok((
                    id,
                    rows::image((d, mt, os, arch, labels, annotations, config))?,
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(tag: &str, position: i32, image_id: i64) -> TagPath {
        TagPath {
            tag: tag.into(),
            position,
            image_id,
        }
    }

    #[test]
    fn latest_first_then_greater_tags_then_list_order() {
        let ids = preferred_images(vec![
            path("1.0", 0, 1),
            path("2.0", 0, 2),
            path("latest", 1, 4),
            path("latest", 0, 3),
            path("2.0", 0, 2),
            path("old", 0, 3),
        ]);
        assert_eq!(ids, [3, 4, 2, 1]);
    }

    #[test]
    fn icon_column_takes_the_first_valid_icon_or_url() {
        use base64::Engine as _;
        let data_uri = |bytes: &[u8]| {
            format!(
                "data:image/png;base64,{}",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            )
        };
        let column = |values: &[&str], max_bytes| {
            let values: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
            icon_column(&values, max_bytes)
        };
        let uri = data_uri(crate::catalog::icons::tests::PNG_1X1);
        let file = column(&[&uri], 1024).unwrap();
        assert!(file.ends_with(".png") && file.len() == 68, "{file}");
        assert_eq!(column(&[&uri], 4), None);
        // PNG magic bytes with no image behind them: not an icon, the next one is taken.
        let signature_only = data_uri(b"\x89PNG\r\n\x1a\nrest");
        assert_eq!(column(&[&signature_only], 1024), None);
        assert_eq!(column(&[&signature_only, &uri], 1024), Some(file));
        assert_eq!(
            column(&["https://example.org/i.png"], 1024).as_deref(),
            Some("https://example.org/i.png")
        );
        assert_eq!(column(&["javascript:alert(1)"], 1024), None);
        assert_eq!(column(&["data:image/png;base64,@@"], 1024), None);
        assert_eq!(column(&[], 1024), None);
    }
}
