//! regindex: keeps a queryable index of what a container registry holds.
//!
//! The library holds everything the binaries share: the domain model, configuration,
//! the registry client, the PostgreSQL store, the index query model, the RabbitMQ bus
//! and the refetch/scan logic that ties the registry to the store.

pub mod bus;
pub mod catalog;
pub mod config;
mod error_chain;
pub mod history;
pub mod index;
pub mod model;
pub mod process;
pub mod registry;
pub mod store;
pub mod sync;
pub mod telemetry;

pub use error_chain::error_chain;
