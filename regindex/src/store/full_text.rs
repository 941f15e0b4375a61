//! Full-text and name search over repository summaries (see `crate::catalog::search`).

use super::{Store, StoreError};
use crate::catalog::search::{SearchHit, SearchRequest, SearchResults};

/// Score added for name matches, above any `ts_rank` (which stays below 1 per query):
/// a repository called what was searched for comes first.
const SEARCH_SQL: &str = "
    WITH params AS (
        SELECT websearch_to_tsquery('english'::regconfig, $1) AS web,
               CASE WHEN $2::text IS NULL THEN NULL ELSE to_tsquery('simple'::regconfig, $2) END AS prefix
    ),
    matched AS (
        SELECT s.name, s.title, s.description, s.icon,
               (CASE WHEN s.name = lower($1) OR s.short_name = lower($1) THEN 8.0
                     WHEN s.short_name LIKE $3 THEN 4.0
                     WHEN s.name LIKE $4 THEN 2.0
                     ELSE 0.0 END
                + 2.0 * ts_rank(s.document, p.web)
                + COALESCE(ts_rank(s.document, p.prefix), 0.0))::real AS rank
        FROM repository_summaries s, params p
        WHERE s.document @@ p.web
           OR (p.prefix IS NOT NULL AND s.document @@ p.prefix)
           OR s.name LIKE $4
    )
    SELECT name, title, description, icon, rank, count(*) OVER () AS total
    FROM matched
    ORDER BY rank DESC, name
    LIMIT $5 OFFSET $6";

const ALL_SQL: &str = "
    SELECT name, title, description, icon, 0.0::real AS rank, count(*) OVER () AS total
    FROM repository_summaries
    ORDER BY name
    LIMIT $1 OFFSET $2";

type HitRow = (String, String, String, Option<String>, f32, i64);

/// A search hit with the summary's icon column (for the web page).
#[derive(Debug, Clone, PartialEq)]
pub struct SummaryHit {
    pub hit: SearchHit,
    /// `<sha256>.<ext>` of a stored icon, or an http(s) URL.
    pub icon: Option<String>,
}

impl Store {
    /// One page of the repositories matching `request`, best first (by name when the
    /// query is empty), and how many match in all.
    pub async fn search(&self, request: &SearchRequest) -> Result<SearchResults, StoreError> {
        let (hits, total) = self.search_summaries(request).await?;
        Ok(SearchResults {
            hits: hits.into_iter().map(|h| h.hit).collect(),
            total,
        })
    }

    /// Like [`Store::search`], with the icon of each repository.
    pub async fn search_summaries(
        &self,
        request: &SearchRequest,
    ) -> Result<(Vec<SummaryHit>, u64), StoreError> {
        let limit = i64::from(request.page_size);
        let offset = request.offset();
        let mut rows: Vec<HitRow> = if request.query.is_empty() {
            sqlx::query_as(ALL_SQL)
                .bind(limit)
                .bind(offset)
                .fetch_all(&self.pool)
                .await?
        } else {
            sqlx::query_as(SEARCH_SQL)
                .bind(&request.query)
                .bind(request.prefix_tsquery())
                .bind(request.name_prefix_pattern())
                .bind(request.name_pattern())
                .bind(limit)
                .bind(offset)
                .fetch_all(&self.pool)
                .await?
        };
        // Past the last page there is no row to carry the total: count separately.
        let total = match rows.first() {
            Some(row) => u64::try_from(row.5).unwrap_or(0),
            None if offset > 0 => self.count_matches(request).await?,
            None => 0,
        };
        let hits = rows
            .drain(..)
            .map(|(name, title, description, icon, rank, _)| SummaryHit {
                hit: SearchHit {
                    name,
                    title,
                    description,
                    rank,
                },
                icon,
            })
            .collect();
        Ok((hits, total))
    }

    async fn count_matches(&self, request: &SearchRequest) -> Result<u64, StoreError> {
        let first = SearchRequest {
            page: 1,
            page_size: 1,
            ..request.clone()
        };
        Box::pin(self.search_summaries(&first))
            .await
            .map(|(_, total)| total)
    }
}
