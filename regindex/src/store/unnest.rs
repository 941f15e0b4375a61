//! Batch inserts and upserts in one statement: one array parameter per column,
//! `INSERT INTO <table> (<columns>) SELECT * FROM UNNEST(<arrays>) <tail>`.
//!
//! One round trip writes any number of rows, and the statement text depends only on the
//! columns, so PostgreSQL prepares it once. The caller says what a conflict does (the
//! tail: `ON CONFLICT ...`, `RETURNING ...`); values are always bound, never spliced.

use sqlx::encode::Encode;
use sqlx::postgres::{PgArguments, PgExecutor};
use sqlx::{Arguments, Postgres, Type};

/// The rows of one batch insert, gathered column by column.
pub(crate) struct UnnestInsert {
    /// `history_tags AS t`: the table, with the alias the tail refers to.
    table: &'static str,
    columns: Vec<&'static str>,
    /// The PostgreSQL array type of each column's parameter (`text[]`, `bigint[]`).
    array_types: Vec<&'static str>,
    arguments: PgArguments,
    /// The first value that could not be encoded; reported when the statement runs.
    error: Option<sqlx::error::BoxDynError>,
}

impl UnnestInsert {
    pub(crate) fn into_table(table: &'static str) -> Self {
        Self {
            table,
            columns: Vec::new(),
            array_types: Vec::new(),
            arguments: PgArguments::default(),
            error: None,
        }
    }

    /// Adds a column: its name, its array type, and its values, one per row (every
    /// column of a batch has as many).
    pub(crate) fn column<'q, T>(
        mut self,
        name: &'static str,
        array_type: &'static str,
        values: Vec<T>,
    ) -> Self
    where
        Vec<T>: Encode<'q, Postgres> + Type<Postgres> + 'q,
    {
        if let Err(e) = self.arguments.add(values) {
            self.error.get_or_insert(e);
        }
        self.columns.push(name);
        self.array_types.push(array_type);
        self
    }

    /// The statement, `tail` after the `SELECT`.
    pub(crate) fn sql(&self, tail: &str) -> String {
        let arrays: Vec<String> = self
            .array_types
            .iter()
            .enumerate()
            .map(|(i, array_type)| format!("${}::{array_type}", i + 1))
            .collect();
        format!(
            "INSERT INTO {} ({}) SELECT * FROM UNNEST({}) {tail}",
            self.table,
            self.columns.join(", "),
            arrays.join(", ")
        )
    }

    /// Runs the statement; returns the rows it wrote.
    pub(crate) async fn execute<'e>(
        self,
        tail: &str,
        executor: impl PgExecutor<'e>,
    ) -> Result<u64, sqlx::Error> {
        let (sql, arguments) = self.into_parts(tail)?;
        Ok(sqlx::query_with(&sql, arguments)
            .execute(executor)
            .await?
            .rows_affected())
    }

    /// Runs the statement, whose tail ends in `RETURNING <one text column>`, and returns
    /// that column of the rows written.
    pub(crate) async fn returning_text<'e>(
        self,
        tail: &str,
        executor: impl PgExecutor<'e>,
    ) -> Result<Vec<String>, sqlx::Error> {
        let (sql, arguments) = self.into_parts(tail)?;
        sqlx::query_scalar_with(&sql, arguments)
            .fetch_all(executor)
            .await
    }

    fn into_parts(self, tail: &str) -> Result<(String, PgArguments), sqlx::Error> {
        let sql = self.sql(tail);
        match self.error {
            Some(e) => Err(sqlx::Error::Encode(e)),
            None => Ok((sql, self.arguments)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_numbered_array_per_column_in_order() {
        let insert = UnnestInsert::into_table("history_daily AS d")
            .column("registry", "text[]", vec!["r"])
            .column("day", "date[]", vec![chrono::NaiveDate::MIN])
            .column("deletes", "bigint[]", vec![1_i64]);
        assert_eq!(
            insert.sql("ON CONFLICT DO NOTHING"),
            "INSERT INTO history_daily AS d (registry, day, deletes) \
             SELECT * FROM UNNEST($1::text[], $2::date[], $3::bigint[]) ON CONFLICT DO NOTHING"
        );
        assert_eq!(insert.arguments.len(), 3);
    }
}
