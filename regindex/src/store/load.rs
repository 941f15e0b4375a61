//! Reading back one repository's full stored state (tests, tools, diffing).

use super::{rows, Store, StoreError};
use crate::model::{ImageList, RepositoryName, RepositoryState, StringMap};

const IMAGES_SQL: &str =
    "SELECT m.digest, m.media_type, m.os, m.architecture, m.labels, m.annotations, m.config_digest
     FROM manifests m JOIN repositories r ON r.id = m.repository_id
     WHERE r.name = $1 AND NOT m.is_list";

const LISTS_SQL: &str = "SELECT m.digest, m.media_type, m.annotations,
            ARRAY(SELECT i.digest FROM list_entries le JOIN manifests i ON i.id = le.image_id
                  WHERE le.list_id = m.id ORDER BY le.position)
     FROM manifests m JOIN repositories r ON r.id = m.repository_id
     WHERE r.name = $1 AND m.is_list";

const TAGS_SQL: &str = "SELECT t.tag, m.digest
     FROM tags t JOIN repositories r ON r.id = t.repository_id JOIN manifests m ON m.id = t.manifest_id
     WHERE r.name = $1";

impl Store {
    /// Everything stored for `repository` (empty when it is not stored), read from one
    /// snapshot so that tags, images and lists agree.
    pub async fn load_repository(
        &self,
        repository: &RepositoryName,
    ) -> Result<RepositoryState, StoreError> {
        let mut tx = crate::store::begin(&self.pool).await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let mut state = RepositoryState::default();

        let tags: Vec<(String, String)> = sqlx::query_as(TAGS_SQL)
            .bind(repository.as_str())
            .fetch_all(&mut *tx)
            .await?;
        for (tag, digest) in tags {
            state.tags.insert(rows::tag(&tag)?, rows::digest(&digest)?);
        }

        let images: Vec<rows::ImageRow> = sqlx::query_as(IMAGES_SQL)
            .bind(repository.as_str())
            .fetch_all(&mut *tx)
            .await?;
        for row in images {
            let image = rows::image(row)?;
            state.images.insert(image.digest.clone(), image);
        }

        type ListRow = (String, String, sqlx::types::Json<StringMap>, Vec<String>);
        let lists: Vec<ListRow> = sqlx::query_as(LISTS_SQL)
            .bind(repository.as_str())
            .fetch_all(&mut *tx)
            .await?;
        for (digest, media_type, annotations, entries) in lists {
            let list = ImageList {
                digest: rows::digest(&digest)?,
                media_type,
                annotations: annotations.0,
                entries: entries
                    .iter()
                    .map(|e| rows::digest(e))
                    .collect::<Result<_, _>>()?,
            };
            state.lists.insert(list.digest.clone(), list);
        }
        tx.commit().await?;
        Ok(state)
    }
}
