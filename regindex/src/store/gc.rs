//! Global garbage collection: what no tag reaches any more, across all repositories, and
//! the refetch tickets of repositories that are gone.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{lock_key, GcSummary, Store, StoreError};

/// When the refetch tickets of vanished repositories may be forgotten.
///
/// A repository's row in `repository_refetches` orders its refetches: it keeps a refetch
/// that listed earlier from overwriting one that listed later, also after the later one
/// removed the repository. So a row may go only once no refetch that took an older ticket
/// can still write. Refetches may not write once older than [`Store::refetch_max_age`];
/// the collection notes the ticket sequence and, at least that long after, removes the
/// rows of gone repositories with a ticket below the note.
#[derive(Debug, Default)]
pub(super) struct RefetchRows {
    /// When the sequence was noted, and its value then.
    noted: Mutex<Option<(Instant, i64)>>,
}

impl RefetchRows {
    /// The ticket below which rows may be removed now, if any; notes `current` (the
    /// sequence now) when there was no note or the note is used up.
    fn due(&self, current: i64, now: Instant, max_age: Duration) -> Option<i64> {
        let mut noted = self.noted.lock().unwrap_or_else(PoisonError::into_inner);
        match *noted {
            Some((at, ticket)) if now.duration_since(at) >= max_age => {
                *noted = Some((now, current));
                Some(ticket)
            }
            Some(_) => None,
            None => {
                *noted = Some((now, current));
                None
            }
        }
    }
}

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
            let mut tx = crate::store::begin(&self.pool).await?;
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
        summary.refetch_rows_removed = self.gc_refetch_rows().await?;
        let icons = self.gc_icons().await?;
        summary.icons_removed = icons.removed;
        summary.icons_unreferenced = icons.unreferenced;
        Ok(summary)
    }
}

impl Store {
    /// Removes the refetch tickets of repositories neither stored nor with recorded
    /// problems, when no refetch that could still write is older (see [`RefetchRows`]).
    async fn gc_refetch_rows(&self) -> Result<u64, StoreError> {
        let current: i64 = sqlx::query_scalar("SELECT nextval('refetch_tickets')")
            .fetch_one(&self.pool)
            .await?;
        let Some(below) = self
            .refetch_rows
            .due(current, Instant::now(), self.refetch_max_age)
        else {
            return Ok(0);
        };
        // A refetch writing such a repository right now holds its row (claim) until it
        // commits; the condition is then checked again against what it wrote.
        let removed = sqlx::query(
            "DELETE FROM repository_refetches rr WHERE rr.ticket < $1
             AND NOT EXISTS (SELECT 1 FROM repositories r WHERE r.name = rr.repository)
             AND NOT EXISTS (SELECT 1 FROM tag_problems p WHERE p.repository = rr.repository)",
        )
        .bind(below)
        .execute(&self.pool)
        .await?;
        Ok(removed.rows_affected())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_below_a_note_go_once_the_note_is_old_enough() {
        let rows = RefetchRows::default();
        let start = Instant::now();
        let age = Duration::from_secs(60);
        assert_eq!(rows.due(10, start, age), None, "first run only notes");
        assert_eq!(rows.due(20, start + age / 2, age), None, "too early");
        assert_eq!(rows.due(30, start + age, age), Some(10), "the first note");
        assert_eq!(rows.due(40, start + age, age), None, "noted 30 just now");
        assert_eq!(rows.due(50, start + 2 * age, age), Some(30));
    }
}
