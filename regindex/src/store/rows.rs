//! Turning stored text back into model types. The store only ever writes valid values,
//! so a failure here means the database was edited by hand: reported, never a panic.

use super::StoreError;
use crate::model::{Digest, Image, RepositoryName, StringMap, Tag};

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Inconsistent {
        repository: String::new(),
        detail: format!("stored {what} {value:?} is not valid"),
    }
}

pub(super) fn digest(value: &str) -> Result<Digest, StoreError> {
    Digest::parse(value).map_err(|_| corrupt("digest", value))
}

pub(super) fn tag(value: &str) -> Result<Tag, StoreError> {
    Tag::parse(value).map_err(|_| corrupt("tag", value))
}

pub(super) fn repository_name(value: &str) -> Result<RepositoryName, StoreError> {
    RepositoryName::parse(value).map_err(|_| corrupt("repository name", value))
}

/// The columns of an image row, in this order: digest, media_type, os, architecture,
/// labels, annotations, config_digest.
pub(super) type ImageRow = (
    String,
    String,
    String,
    String,
    sqlx::types::Json<StringMap>,
    sqlx::types::Json<StringMap>,
    Option<String>,
);

pub(super) fn image(row: ImageRow) -> Result<Image, StoreError> {
    let (digest_text, media_type, os, architecture, labels, annotations, config) = row;
    let config = config.ok_or_else(|| corrupt("image without config digest", &digest_text))?;
    Ok(Image {
        digest: digest(&digest_text)?,
        media_type,
        os,
        architecture,
        labels: labels.0,
        annotations: annotations.0,
        config_digest: digest(&config)?,
    })
}
