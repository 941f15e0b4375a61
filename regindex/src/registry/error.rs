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
    /// The registry will never serve this name (distribution's `NAME_INVALID`, or the 500
    /// docker-registry 2.8 answers for names longer than it stores): retrying cannot help.
    #[error("registry refuses the repository name of {what} (answered {status}): {detail}")]
    NameRefused {
        what: String,
        status: u16,
        detail: String,
    },
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

/// docker/distribution's error body: `{"errors": [{"code", "message", "detail"}]}`.
#[derive(serde::Deserialize)]
struct ErrorBody {
    errors: Vec<ErrorEntry>,
}

#[derive(serde::Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    detail: serde_json::Value,
}

/// Error bodies are short; a longer one is read only this far.
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

impl RegistryError {
    /// The error for a non-success answer with status `status` and (the start of) its body.
    pub fn from_answer(status: u16, body: &[u8], what: &str) -> Self {
        let what = what.to_owned();
        match status {
            404 => return RegistryError::NotFound { what },
            401 | 403 => {
                return RegistryError::Unauthorized {
                    what,
                    detail: format!("registry answered {status}"),
                }
            }
            _ => {}
        }
        match name_refusal(body) {
            Some(detail) => RegistryError::NameRefused {
                what,
                status,
                detail,
            },
            None => RegistryError::Status { what, status },
        }
    }

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

/// Why the registry refuses a repository name, when its error body says so.
fn name_refusal(body: &[u8]) -> Option<String> {
    let body: ErrorBody = serde_json::from_slice(body).ok()?;
    body.errors
        .into_iter()
        .find_map(|error| match error.code.as_str() {
            "NAME_INVALID" => Some(format!("NAME_INVALID: {}", error.message)),
            // docker-registry 2.8 wraps its ErrRepositoryNameInvalid (fields `Name`, `Reason`)
            // as an UNKNOWN 500, e.g. for a name longer than 255 characters.
            "UNKNOWN"
                if error.detail.get("Name").is_some() && error.detail.get("Reason").is_some() =>
            {
                Some("invalid repository name (UNKNOWN error with the name as detail)".into())
            }
            _ => None,
        })
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
        // As docker-registry 2.8.2 answers GET /v2/<256 characters>/tags/list.
        let long_name = br#"{"errors":[{"code":"UNKNOWN","message":"unknown error","detail":{"Name":"aaaa","Reason":{}}}]}"#;
        let refused = RegistryError::from_answer(500, long_name, "repository aaaa");
        assert!(matches!(
            refused,
            RegistryError::NameRefused { status: 500, .. }
        ));
        assert!(!refused.is_transient());
        let invalid =
            br#"{"errors":[{"code":"NAME_INVALID","message":"invalid repository name"}]}"#;
        assert!(!RegistryError::from_answer(400, invalid, "x").is_transient());
        // Any other 500 (a storage hiccup) is still worth retrying.
        let storage = br#"{"errors":[{"code":"UNKNOWN","message":"unknown error","detail":{"Path":"/x","Op":"open"}}]}"#;
        assert!(RegistryError::from_answer(500, storage, "x").is_transient());
        assert!(RegistryError::from_answer(502, b"<html>bad gateway</html>", "x").is_transient());
        assert!(matches!(
            RegistryError::from_answer(404, long_name, "x"),
            RegistryError::NotFound { .. }
        ));
        assert!(!RegistryError::DigestMismatch {
            what: "x".into(),
            actual: String::new()
        }
        .is_transient());
    }
}
