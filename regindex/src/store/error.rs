#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
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
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(e) => !matches!(
                e,
                sqlx::Error::RowNotFound
                    | sqlx::Error::ColumnNotFound(_)
                    | sqlx::Error::TypeNotFound { .. }
                    | sqlx::Error::ColumnDecode { .. }
                    | sqlx::Error::Decode(_)
            ),
            _ => false,
        }
    }
}
