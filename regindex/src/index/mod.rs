//! The registry index protocol: query parsing and response building (pure).
//! OWNER: store helper.
