//! OCI distribution client: catalog, tags, manifests and config blobs from the one
//! configured registry. The worker never follows URLs from messages: every request
//! is built from the configured base URL plus a validated repository name and reference.

mod error;
pub mod manifest;

pub use error::RegistryError;
pub use manifest::{Descriptor, ImageConfig, Manifest, Platform};

use crate::config::RegistryConfig;
use crate::model::{Digest, Reference, RepositoryName, Tag};

/// A manifest as fetched: its verified digest, the media type the registry reported
/// (or the one its body declares) and the raw bytes.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

#[derive(Clone)]
pub struct RegistryClient {
    // filled in by the registry implementation
}

impl RegistryClient {
    pub fn new(_config: &RegistryConfig) -> Result<Self, RegistryError> {
        todo!()
    }

    /// Every repository in `/v2/_catalog`, following pagination. Names that are not valid
    /// repository names are logged and skipped.
    pub async fn catalog(&self) -> Result<Vec<RepositoryName>, RegistryError> {
        todo!()
    }

    /// Every tag of `repository`, following pagination. An unknown repository is
    /// `RegistryError::NotFound`; a known one without tags is an empty list.
    pub async fn tags(&self, _repository: &RepositoryName) -> Result<Vec<Tag>, RegistryError> {
        todo!()
    }

    /// The digest and media type a reference points at, by HEAD (no body transferred).
    pub async fn resolve(
        &self,
        _repository: &RepositoryName,
        _reference: &Reference,
    ) -> Result<(Digest, String), RegistryError> {
        todo!()
    }

    /// GET a manifest; the digest is verified against the bytes.
    pub async fn manifest(
        &self,
        _repository: &RepositoryName,
        _reference: &Reference,
    ) -> Result<FetchedManifest, RegistryError> {
        todo!()
    }

    /// GET a blob (image configs); the digest is verified against the bytes.
    pub async fn blob(
        &self,
        _repository: &RepositoryName,
        _digest: &Digest,
    ) -> Result<Vec<u8>, RegistryError> {
        todo!()
    }
}
