//! The regindex API.

pub mod events;
pub mod metrics;
