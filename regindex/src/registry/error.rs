use crate::model::InvalidValue;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{what} not found in the registry")]
    NotFound { what: String },
    #[error("registry refused access to {what}: {detail}")]
    Unauthorized { what: String, detail: String },
    #[error("bad manifest {what}: {detail}")]
    BadManifest { what: String, detail: String },
    #[error("unsupported media type {media_type:?} for {what}")]
    UnsupportedMediaType { what: String, media_type: String },
    #[error("digest mismatch for {what}: got {actual}")]
    DigestMismatch { what: String, actual: String },
    #[error("registry answered {status} for {what}")]
    Status { what: String, status: u16 },
    #[error("registry request for {what} failed: {source}")]
    Transport {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    /// A catalog or tag list page that is not the JSON the distribution spec describes.
    #[error("unexpected registry response for {what}: {detail}")]
    BadResponse { what: String, detail: String },
    #[error("registry returned an invalid value: {0}")]
    InvalidValue(#[from] InvalidValue),
    #[error("registry client configuration: {0}")]
    Config(String),
}

impl RegistryError {
    /// Worth retrying later: the registry or the network may recover.
    pub fn is_transient(&self) -> bool {
        match self {
            // Connection refused, resets, timeouts, truncated bodies.
            RegistryError::Transport { .. } => true,
            RegistryError::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors() {
        let status = |status| RegistryError::Status {
            what: "x".into(),
            status,
        };
        assert!(status(500).is_transient());
        assert!(status(503).is_transient());
        assert!(status(429).is_transient());
        assert!(!status(400).is_transient());
        assert!(!RegistryError::NotFound { what: "x".into() }.is_transient());
        assert!(!RegistryError::Unauthorized {
            what: "x".into(),
            detail: String::new()
        }
        .is_transient());
        assert!(!RegistryError::DigestMismatch {
            what: "x".into(),
            actual: String::new()
        }
        .is_transient());
    }
}
