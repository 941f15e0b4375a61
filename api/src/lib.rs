//! The regindex API.

pub mod events;
pub mod metrics;
pub mod stats_routes;
