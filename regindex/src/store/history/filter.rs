//! `WHERE` clauses of the statistics queries: assembled from fixed column expressions
//! and numbered placeholders, so that values are always bound, never spliced into the
//! SQL text (pure).

use chrono::{DateTime, NaiveDate, Utc};

use crate::history::query::{Page, Scope};

/// A bound value of a [`Filter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    Text(String),
    Time(DateTime<Utc>),
    Date(NaiveDate),
    Int(i64),
}

/// `WHERE` clauses with numbered placeholders and their values, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    clauses: Vec<String>,
    binds: Vec<Bind>,
}

impl Filter {
    /// Adds `<expr> <op> $n`; `expr` and `op` are fixed strings of the caller.
    pub fn compare(&mut self, expr: &'static str, op: &'static str, value: Bind) -> &mut Self {
        self.binds.push(value);
        self.clauses
            .push(format!("{expr} {op} ${}", self.binds.len()));
        self
    }

    /// Adds a fixed condition without a value.
    pub fn condition(&mut self, sql: &'static str) -> &mut Self {
        self.clauses.push(sql.to_owned());
        self
    }

    /// `registry = $n AND repository = $m` for the given columns.
    pub fn scope(
        &mut self,
        scope: &Scope,
        registry: &'static str,
        repository: &'static str,
    ) -> &mut Self {
        if let Some(r) = &scope.registry {
            self.compare(registry, "=", Bind::Text(r.clone()));
        }
        if let Some(r) = &scope.repository {
            self.compare(repository, "=", Bind::Text(r.to_string()));
        }
        self
    }

    /// ` WHERE a AND b`, or nothing.
    pub fn where_sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }

    /// ` LIMIT $n OFFSET $m` for `page`, binding both.
    pub fn page_sql(&mut self, page: Page) -> String {
        self.binds.push(Bind::Int(page.fetch_limit()));
        self.binds.push(Bind::Int(page.offset()));
        format!(
            " LIMIT ${} OFFSET ${}",
            self.binds.len() - 1,
            self.binds.len()
        )
    }

    pub fn binds(&self) -> &[Bind] {
        &self.binds
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RepositoryName;

    #[test]
    fn filters_number_their_placeholders_and_bind_values() {
        let mut f = Filter::default();
        let scope = Scope {
            registry: Some("r".into()),
            repository: Some(RepositoryName::parse("a/b").unwrap()),
        };
        f.scope(&scope, "t.registry", "t.repository")
            .condition("t.last_pulled IS NULL")
            .compare("t.first_seen", "<", Bind::Int(3));
        assert_eq!(
            f.where_sql(),
            " WHERE t.registry = $1 AND t.repository = $2 AND t.last_pulled IS NULL AND t.first_seen < $3"
        );
        let page = f.page_sql(Page {
            page: 2,
            per_page: 10,
        });
        assert_eq!(page, " LIMIT $4 OFFSET $5");
        assert_eq!(f.binds()[3..], [Bind::Int(11), Bind::Int(10)]);
        assert_eq!(Filter::default().where_sql(), "");
    }

    #[test]
    fn a_hostile_value_is_only_ever_bound() {
        let mut f = Filter::default();
        f.compare(
            "repository",
            "=",
            Bind::Text("x'; DROP TABLE tags; --".into()),
        );
        assert!(!f.where_sql().contains("DROP"));
    }
}
