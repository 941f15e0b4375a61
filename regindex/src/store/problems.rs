//! Tags a refetch could not use (`tag_problems`): written in the refetch's transaction,
//! read by `regindexctl problems`, the web page and the worker's gauge.

use chrono::{DateTime, Utc};

use super::{rows, RepositoryTx, Store, StoreError};
use crate::model::{RepositoryName, TagProblem};

/// Reasons are error messages of the registry client; longer ones are cut here.
const MAX_REASON_CHARS: usize = 2000;

/// A recorded problem with its repository and since when it is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredProblem {
    pub repository: RepositoryName,
    pub problem: TagProblem,
    pub first_seen: DateTime<Utc>,
}

impl RepositoryTx {
    /// Makes the repository's recorded problems exactly `problems`; a problem whose tag,
    /// digest and reason are unchanged keeps its `first_seen`. True when anything changed.
    pub async fn set_problems(&mut self, problems: &[TagProblem]) -> Result<bool, StoreError> {
        let tags: Vec<&str> = problems.iter().map(|p| p.tag.as_str()).collect();
        let removed = sqlx::query(
            "DELETE FROM tag_problems WHERE repository = $1 AND NOT (tag = ANY($2::text[]))",
        )
        .bind(self.repository.as_str())
        .bind(&tags)
        .execute(&mut *self.tx)
        .await?
        .rows_affected();
        if problems.is_empty() {
            return Ok(removed > 0);
        }
        let digests: Vec<&str> = problems.iter().map(|p| p.digest.as_str()).collect();
        let reasons: Vec<String> = problems
            .iter()
            .map(|p| p.reason.chars().take(MAX_REASON_CHARS).collect())
            .collect();
        let partial: Vec<bool> = problems.iter().map(|p| p.partial).collect();
        let written = sqlx::query(
            "INSERT INTO tag_problems AS p (repository, tag, digest, reason, partial)
             SELECT $1, u.tag, u.digest, u.reason, u.partial
             FROM UNNEST($2::text[], $3::text[], $4::text[], $5::bool[]) AS u (tag, digest, reason, partial)
             ON CONFLICT (repository, tag) DO UPDATE SET
                 digest = EXCLUDED.digest, reason = EXCLUDED.reason, partial = EXCLUDED.partial,
                 first_seen = CASE WHEN p.digest = EXCLUDED.digest THEN p.first_seen ELSE now() END
             WHERE (p.digest, p.reason, p.partial) IS DISTINCT FROM
                   (EXCLUDED.digest, EXCLUDED.reason, EXCLUDED.partial)",
        )
        .bind(self.repository.as_str())
        .bind(&tags)
        .bind(&digests)
        .bind(&reasons)
        .bind(&partial)
        .execute(&mut *self.tx)
        .await?
        .rows_affected();
        Ok(removed > 0 || written > 0)
    }
}

type ProblemRow = (String, String, String, String, bool, DateTime<Utc>);

const PROBLEMS_OF_REPOSITORY: &str =
    "SELECT repository, tag, digest, reason, partial, first_seen FROM tag_problems
     WHERE repository = $1 ORDER BY tag";

fn problem(row: ProblemRow) -> Result<StoredProblem, StoreError> {
    let (repository, tag, digest, reason, partial, first_seen) = row;
    Ok(StoredProblem {
        repository: rows::repository_name(&repository)?,
        problem: TagProblem {
            tag: rows::tag(&tag)?,
            digest: rows::digest(&digest)?,
            reason,
            partial,
        },
        first_seen,
    })
}

impl Store {
    /// Recorded problems, of one repository or of all, by repository and tag.
    pub async fn problems(
        &self,
        repository: Option<&RepositoryName>,
    ) -> Result<Vec<StoredProblem>, StoreError> {
        let rows: Vec<ProblemRow> =
            match repository {
                Some(repository) => {
                    sqlx::query_as(PROBLEMS_OF_REPOSITORY)
                        .bind(repository.as_str())
                        .fetch_all(&self.pool)
                        .await?
                }
                None => sqlx::query_as(
                    "SELECT repository, tag, digest, reason, partial, first_seen FROM tag_problems
                     ORDER BY repository, tag",
                )
                .fetch_all(&self.pool)
                .await?,
            };
        rows.into_iter().map(problem).collect()
    }

    /// How many tags have a recorded problem.
    pub async fn problem_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM tag_problems")
            .fetch_one(&self.pool)
            .await?)
    }
}
