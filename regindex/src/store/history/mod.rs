//! The history's SQL: recording batches of events, backfilling what scans found,
//! pruning, and the statistics. What the events mean and how a batch folds into row
//! changes is pure and lives in [`crate::history`]; the tables are in the history
//! section of `schema.sql`.
//!
//! - [`record`]: a batch in one transaction (idempotent on the event id), scan state,
//!   pruning;
//! - [`statistics`]: the statistics read back, one page per query;
//! - [`filter`]: the statistics queries' `WHERE` clauses and their bound values (pure).

pub mod filter;
pub mod record;
pub mod statistics;

pub use record::{HistoryStore, PruneOutcome, RecordOutcome, ScannedManifest};
pub use statistics::HistoryQueries;
