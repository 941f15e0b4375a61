//! Pure parsing of manifests, indexes and image configs.

use serde::Deserialize;

use crate::model::{Digest, StringMap};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: Digest,
    #[serde(default)]
    pub size: i64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub annotations: StringMap,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
        annotations: StringMap,
    },
    List {
        manifests: Vec<Descriptor>,
        annotations: StringMap,
    },
}

/// What regindex reads from an image config blob.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageConfig {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
    pub labels: StringMap,
}

/// Parses a manifest of the given media type (falling back to the body's `mediaType`
/// when the registry's Content-Type is generic).
pub fn parse(_media_type: &str, _bytes: &[u8]) -> Result<Manifest, super::RegistryError> {
    todo!()
}

/// Parses an image config blob.
pub fn parse_config(_bytes: &[u8]) -> Result<ImageConfig, super::RegistryError> {
    todo!()
}
