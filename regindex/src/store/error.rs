#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Connecting failed; `target` names the server (`PostgreSQL at host:port
    /// (database name)`), `reason` says why as the database probe words it (the pool
    /// alone says only that it timed out).
    #[error("cannot reach {target}: {reason}")]
    Unreachable { target: String, reason: String },
    #[error("the database has no regindex schema: run `regindexctl migrate`")]
    SchemaMissing,
    #[error("the database schema is version {found}, this build needs {expected}: run `regindexctl migrate`")]
    SchemaOutdated { found: i32, expected: i32 },
    #[error("the database schema is version {found}, newer than the {expected} this build knows: upgrade regindex")]
    SchemaTooNew { found: i32, expected: i32 },
    #[error("inconsistent data for {repository}: {detail}")]
    Inconsistent { repository: String, detail: String },
}

impl StoreError {
    /// Worth retrying later (connection lost, serialization failure, database restarting).
    /// Errors the same request would meet again (bad data, constraint violations, schema
    /// problems) are not.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(db)) => db.code().is_none_or(|code| {
                // SQLSTATE classes: 08 connection, 40 serialization failure / deadlock,
                // 53 insufficient resources, 57 operator intervention (shutdown, statement
                // timeout), 58 system error; 55P03 lock not available.
                matches!(&code[..code.len().min(2)], "08" | "40" | "53" | "57" | "58")
                    || code == "55P03"
            }),
            StoreError::Database(e) => !matches!(
                e,
                sqlx::Error::RowNotFound
                    | sqlx::Error::ColumnNotFound(_)
                    | sqlx::Error::TypeNotFound { .. }
                    | sqlx::Error::ColumnDecode { .. }
                    | sqlx::Error::Decode(_)
                    | sqlx::Error::Configuration(_)
                    | sqlx::Error::ColumnIndexOutOfBounds { .. }
            ),
            StoreError::Unreachable { .. } => true,
            _ => false,
        }
    }
}
