//! The registry index protocol (PROTOCOL.md), as pure logic: parsing a query string into a
//! [`Query`] and building the [`IndexResponse`] from what the store hands over. No I/O here;
//! the store runs the SQL pre-filter, the API does HTTP.

mod glob;
pub mod gzip;
mod profile;
mod query;
pub mod render;
mod response;
pub mod static_index;

pub use glob::Glob;
pub use profile::{
    copy_flatpak_annotations, force_token, includes, priority_rank, select_by_priority,
    IndexProfile, RepositoryPattern, FLATPAK_PREFIXES, FLATPAK_REF, TOKEN_TYPE_LABEL,
    TOKEN_TYPE_VALUE,
};
pub use query::{KeyFilter, Query, QueryError, MAX_PARAMETERS, MAX_VALUE_LEN};
pub use response::{
    build_response, ImageFields, ImageResult, IndexResponse, ListResult, Listing, RepositoryResult,
    TaggedImage, TaggedList,
};
