//! Test harness for regindex: real services, real data.
//!
//! - [`TestRegistry`]: a real `docker-registry` process on a free port, with image pushes
//!   over the distribution API and the registry's own request log as ground truth.
//! - [`TestDatabase`]: a fresh PostgreSQL database per test.
//! - [`free_port`], [`unique_name`]: for anything else a test starts or names.
//!
//! This crate must not depend on `regindex`: it is the independent side of every test.

mod database;
mod image;
mod push;
mod registry;

pub use database::TestDatabase;
pub use image::{
    sha256_digest, BuiltImage, ImageFormat, ImageSpec, ListFormat, ALL_MANIFEST_TYPES,
    DOCKER_CONFIG, DOCKER_LAYER, DOCKER_LIST, DOCKER_MANIFEST, OCI_CONFIG, OCI_INDEX, OCI_LAYER,
    OCI_MANIFEST,
};
pub use push::{PushedImage, PushedList};
pub use registry::{
    LoggedRequest, NotificationEndpoint, TestRegistry, TestRegistryBuilder, TESTKIT_USER_AGENT,
    TEST_PASSWORD, TEST_USERNAME,
};

/// A TCP port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// `<prefix>-<12 random hex digits>`: queue, exchange or repository names that no other
/// test uses.
pub fn unique_name(prefix: &str) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &random[..12])
}
