//! What the web page shows of repositories: summaries, tags, architectures.

use std::collections::HashMap;

use super::{Store, StoreError};

/// A repository's stored summary (see `describe`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositorySummary {
    pub name: String,
    pub title: String,
    pub description: String,
    pub flatpak_id: Option<String>,
    /// `<sha256>.<ext>` of a stored icon, or an http(s) URL.
    pub icon: Option<String>,
}

/// Tags and architectures of one repository.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepositoryContents {
    /// Sorted.
    pub tags: Vec<String>,
    /// Go-style architectures of the tagged images and list entries, sorted.
    pub architectures: Vec<String>,
}

impl Store {
    /// The summary of one repository; `None` when the index does not hold it.
    pub async fn repository_summary(
        &self,
        name: &str,
    ) -> Result<Option<RepositorySummary>, StoreError> {
        type Row = (String, String, String, Option<String>, Option<String>);
        let row: Option<Row> = sqlx::query_as(
            "SELECT name, title, description, flatpak_id, icon FROM repository_summaries WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(
            |(name, title, description, flatpak_id, icon)| RepositorySummary {
                name,
                title,
                description,
                flatpak_id,
                icon,
            },
        ))
    }

    /// Tags and architectures of the named repositories (absent ones are left out).
    pub async fn repository_contents(
        &self,
        names: &[String],
    ) -> Result<HashMap<String, RepositoryContents>, StoreError> {
        let mut out: HashMap<String, RepositoryContents> = HashMap::new();
        if names.is_empty() {
            return Ok(out);
        }
        let tags: Vec<(String, Vec<String>)> = sqlx::query_as(
            "SELECT r.name, array_agg(t.tag ORDER BY t.tag)
             FROM tags t JOIN repositories r ON r.id = t.repository_id
             WHERE r.name = ANY($1) GROUP BY r.name",
        )
        .bind(names)
        .fetch_all(&self.pool)
        .await?;
        for (name, tags) in tags {
            out.entry(name).or_default().tags = tags;
        }
        let architectures: Vec<(String, Option<Vec<String>>)> = sqlx::query_as(
            "SELECT r.name,
                    array_agg(DISTINCT im.architecture ORDER BY im.architecture)
                        FILTER (WHERE im.architecture <> '')
             FROM tags t JOIN repositories r ON r.id = t.repository_id
             JOIN manifests m ON m.id = t.manifest_id
             LEFT JOIN list_entries le ON le.list_id = m.id
             JOIN manifests im ON im.id = COALESCE(le.image_id, m.id)
             WHERE r.name = ANY($1) AND NOT im.is_list
             GROUP BY r.name",
        )
        .bind(names)
        .fetch_all(&self.pool)
        .await?;
        for (name, architectures) in architectures {
            out.entry(name).or_default().architectures = architectures.unwrap_or_default();
        }
        Ok(out)
    }
}
