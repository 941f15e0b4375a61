//! What a refetch reads before it asks the registry anything, and how concurrent
//! refetches of one repository are ordered.
//!
//! A refetch takes a ticket (a database sequence) before it lists the tags, reads the
//! stored state without any lock, does all its HTTP, and only then opens the short write
//! transaction. There, [`RepositoryTx::claim`] lets it write only if no refetch with a
//! later ticket has written: that one listed the tags after this one started, so its
//! state is at least as new, and this refetch has nothing left to do.

use std::collections::{BTreeMap, HashMap};

use super::plan::Known;
use super::{rows, RepositoryTx, Store, StoreError};
use crate::model::{Digest, RepositoryName, Tag, TagProblem};

/// Orders the listings of refetches: a greater ticket was taken later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RefetchTicket(i64);

/// A repository as stored, as far as a refetch needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredRepository {
    /// None when the store holds no row for it.
    pub repository_id: Option<i64>,
    pub tags: BTreeMap<Tag, Digest>,
    /// Every stored image and list.
    pub manifests: HashMap<Digest, Known>,
    pub problems: BTreeMap<Tag, TagProblem>,
    /// The ticket of the refetch whose listing this is (none before the first).
    pub ticket: Option<RefetchTicket>,
}

impl Store {
    /// A ticket for a refetch about to list a repository's tags.
    pub async fn refetch_ticket(&self) -> Result<RefetchTicket, StoreError> {
        let ticket: i64 = sqlx::query_scalar("SELECT nextval('refetch_tickets')")
            .fetch_one(&self.pool)
            .await?;
        Ok(RefetchTicket(ticket))
    }

    /// The stored tags, manifests and problems of `repository`, from one snapshot. Takes
    /// no lock: the write transaction reads again.
    pub async fn stored_repository(
        &self,
        repository: &RepositoryName,
    ) -> Result<StoredRepository, StoreError> {
        let mut connection = self.pool.acquire().await?;
        read_stored(&mut connection, repository).await
    }

    /// For a refetch whose listing matches the stored state exactly: records its ticket
    /// without a write transaction, if no refetch has written since `seen` (the ticket
    /// read with that state). False when one has: the caller writes the usual way.
    pub async fn confirm_unchanged(
        &self,
        repository: &RepositoryName,
        ticket: RefetchTicket,
        seen: Option<RefetchTicket>,
    ) -> Result<bool, StoreError> {
        // A writer holding the row waits here until it commits; then the condition fails.
        let done = match seen {
            Some(seen) => sqlx::query(
                "UPDATE repository_refetches SET ticket = $2 WHERE repository = $1 AND ticket = $3",
            )
            .bind(repository.as_str())
            .bind(ticket.0)
            .bind(seen.0)
            .execute(&self.pool)
            .await?,
            None => {
                sqlx::query(
                    "INSERT INTO repository_refetches (repository, ticket) VALUES ($1, $2)
                 ON CONFLICT (repository) DO NOTHING",
                )
                .bind(repository.as_str())
                .bind(ticket.0)
                .execute(&self.pool)
                .await?
            }
        };
        Ok(done.rows_affected() == 1)
    }
}

/// What the store holds for `repository`, as `conn` sees it: one statement, so one
/// snapshot and one round trip (a warm scan reads this for every repository).
pub(super) async fn read_stored(
    conn: &mut sqlx::PgConnection,
    repository: &RepositoryName,
) -> Result<StoredRepository, StoreError> {
    type Row = (
        Option<i64>,
        Vec<String>,
        Vec<String>,
        Vec<i64>,
        Vec<String>,
        Vec<bool>,
        Vec<String>,
        Vec<String>,
        Vec<String>,
        Vec<bool>,
        Option<i64>,
    );
    let (
        repository_id,
        tags,
        tag_digests,
        manifest_ids,
        manifest_digests,
        is_lists,
        problem_tags,
        problem_digests,
        reasons,
        partials,
        ticket,
    ): Row = sqlx::query_as(
        "SELECT r.id,
                COALESCE(t.tags, '{}'), COALESCE(t.digests, '{}'),
                COALESCE(m.ids, '{}'), COALESCE(m.digests, '{}'), COALESCE(m.is_lists, '{}'),
                COALESCE(p.tags, '{}'), COALESCE(p.digests, '{}'), COALESCE(p.reasons, '{}'),
                COALESCE(p.partials, '{}'),
                (SELECT ticket FROM repository_refetches WHERE repository = $1)
         FROM (SELECT $1::text AS name) n
         LEFT JOIN repositories r ON r.name = n.name
         LEFT JOIN LATERAL (
             SELECT array_agg(t.tag) AS tags, array_agg(m.digest) AS digests
             FROM tags t JOIN manifests m ON m.id = t.manifest_id WHERE t.repository_id = r.id
         ) t ON true
         LEFT JOIN LATERAL (
             SELECT array_agg(id) AS ids, array_agg(digest) AS digests, array_agg(is_list) AS is_lists
             FROM manifests WHERE repository_id = r.id
         ) m ON true
         LEFT JOIN LATERAL (
             SELECT array_agg(tag) AS tags, array_agg(digest) AS digests,
                    array_agg(reason) AS reasons, array_agg(partial) AS partials
             FROM tag_problems WHERE repository = n.name
         ) p ON true",
    )
    .bind(repository.as_str())
    .fetch_one(&mut *conn)
    .await?;
    let mut stored = StoredRepository {
        repository_id,
        ticket: ticket.map(RefetchTicket),
        ..StoredRepository::default()
    };
    for (tag, digest) in tags.iter().zip(&tag_digests) {
        stored.tags.insert(rows::tag(tag)?, rows::digest(digest)?);
    }
    for ((id, digest), is_list) in manifest_ids.iter().zip(&manifest_digests).zip(&is_lists) {
        stored.manifests.insert(
            rows::digest(digest)?,
            Known {
                id: *id,
                is_list: *is_list,
            },
        );
    }
    let problems = problem_tags
        .iter()
        .zip(&problem_digests)
        .zip(reasons.into_iter().zip(partials));
    for ((tag, digest), (reason, partial)) in problems {
        let tag = rows::tag(tag)?;
        stored.problems.insert(
            tag.clone(),
            TagProblem {
                tag,
                digest: rows::digest(digest)?,
                reason,
                partial,
            },
        );
    }
    Ok(stored)
}

impl RepositoryTx {
    /// What the store holds for the repository, under its lock: the state a write
    /// transaction compares the listing with.
    pub async fn stored(&mut self) -> Result<StoredRepository, StoreError> {
        read_stored(&mut self.tx, &self.repository).await
    }

    /// Records that the stored state will be the listing of `ticket`; false (nothing
    /// recorded) when a refetch with a later ticket has written already.
    pub async fn claim(&mut self, ticket: RefetchTicket) -> Result<bool, StoreError> {
        let claimed: Option<i64> = sqlx::query_scalar(
            "INSERT INTO repository_refetches AS r (repository, ticket) VALUES ($1, $2)
             ON CONFLICT (repository) DO UPDATE SET ticket = EXCLUDED.ticket
             WHERE r.ticket < EXCLUDED.ticket
             RETURNING ticket",
        )
        .bind(self.repository.as_str())
        .bind(ticket.0)
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(claimed.is_some())
    }
}
