//! Global garbage collection: what no tag reaches any more, across all repositories.

use super::{lock_key, GcSummary, Store, StoreError};

impl Store {
    /// Removes whatever no tag reaches any more, across all repositories.
    ///
    /// Works repository by repository, each in its own transaction under the repository's
    /// lock; a repository being refetched right now is skipped (the refetch cleans up
    /// itself). Removed content was invisible to index queries, so the data version stays.
    pub async fn gc(&self) -> Result<GcSummary, StoreError> {
        let sql = format!(
            "SELECT r.id, r.name FROM repositories r
             WHERE NOT EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = r.id)
                OR EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = r.id AND {UNREACHABLE})
             ORDER BY r.name"
        );
        let candidates: Vec<(i64, String)> = sqlx::query_as(&sql).fetch_all(&self.pool).await?;
        let mut summary = GcSummary::default();
        for (id, name) in candidates {
            let mut tx = self.pool.begin().await?;
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(lock_key(&name))
                .fetch_one(&mut *tx)
                .await?;
            if !locked {
                continue;
            }
            summary.manifests_removed += delete_unreachable(&mut tx, id).await?;
            let removed = sqlx::query(
                "DELETE FROM repositories r WHERE r.id = $1
                 AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = r.id)",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            summary.repositories_removed += removed.rows_affected();
            tx.commit().await?;
        }
        let icons = self.gc_icons().await?;
        summary.icons_removed = icons.removed;
        summary.icons_unreferenced = icons.unreferenced;
        Ok(summary)
    }
}

/// SQL condition on manifest `m`: no tag reaches it, directly or through a tagged list.
const UNREACHABLE: &str = "NOT EXISTS (SELECT 1 FROM tags t WHERE t.manifest_id = m.id)
    AND NOT EXISTS (SELECT 1 FROM list_entries le JOIN tags t ON t.manifest_id = le.list_id
                    WHERE le.image_id = m.id)";

/// Deletes the repository's manifests that no tag reaches; returns how many.
pub(super) async fn delete_unreachable(
    tx: &mut sqlx::PgConnection,
    repository_id: i64,
) -> Result<u64, StoreError> {
    // Lists first (their entries go with them), then the images: in one statement the
    // list_entries foreign key may be checked before the cascade has run.
    let lists = sqlx::query(&format!(
        "DELETE FROM manifests m WHERE m.repository_id = $1 AND m.is_list AND {UNREACHABLE}"
    ))
    .bind(repository_id)
    .execute(&mut *tx)
    .await?;
    let images = sqlx::query(&format!(
        "DELETE FROM manifests m WHERE m.repository_id = $1 AND NOT m.is_list AND {UNREACHABLE}"
    ))
    .bind(repository_id)
    .execute(&mut *tx)
    .await?;
    Ok(lists.rows_affected() + images.rows_affected())
}
