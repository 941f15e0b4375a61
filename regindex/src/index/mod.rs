//! The registry index protocol (PROTOCOL.md), as pure logic: parsing a query string into a
//! [`Query`] and building the [`IndexResponse`] from what the store hands over. No I/O here;
//! the store runs the SQL pre-filter, the API does HTTP.

mod glob;
mod query;
mod response;

pub use glob::Glob;
pub use query::{KeyFilter, Query, QueryError, MAX_PARAMETERS, MAX_VALUE_LEN};
pub use response::{
    build_response, ImageFields, ImageResult, IndexResponse, ListResult, Listing, RepositoryResult,
    TaggedImage, TaggedList,
};
