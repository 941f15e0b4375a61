//! The regindex worker.
