//! The domain model: names, digests and what a repository holds.
//!
//! Every value here is parsed once at the edge (`parse`), so the rest of the code only
//! ever handles names and digests that are already valid.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

mod host_aliases;
pub use host_aliases::{AliasError, AliasMap};

/// Media types regindex understands.
pub mod media_type {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

    /// True for single-image manifests.
    pub fn is_image(media_type: &str) -> bool {
        media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
    }

    /// True for image indexes and manifest lists.
    pub fn is_list(media_type: &str) -> bool {
        media_type == OCI_INDEX || media_type == DOCKER_LIST
    }

    /// True for the config blob types of container images, whose `os`, `architecture`
    /// and `config.Labels` the index reads; an empty type is an old writer's image
    /// config. Anything else (`application/vnd.oci.empty.v1+json`, Helm chart configs,
    /// other artifacts) says nothing the index uses, so it is not fetched.
    pub fn is_image_config(media_type: &str) -> bool {
        media_type.is_empty() || media_type == OCI_CONFIG || media_type == DOCKER_CONFIG
    }

    /// True for anything that is a manifest (as opposed to a blob).
    pub fn is_manifest(media_type: &str) -> bool {
        is_image(media_type) || is_list(media_type)
    }
}

/// Why a name, tag or digest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {reason}")]
pub struct InvalidValue {
    pub kind: &'static str,
    pub value: String,
    pub reason: &'static str,
}

fn invalid(kind: &'static str, value: &str, reason: &'static str) -> InvalidValue {
    InvalidValue {
        kind,
        value: value.chars().take(300).collect(),
        reason,
    }
}

macro_rules! string_newtype {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl std::str::FromStr for $name {
            type Err = InvalidValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
        impl TryFrom<String> for $name {
            type Error = InvalidValue;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(&s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
    };
}

/// A repository name as the distribution spec defines it (`library/fedora`, `apps/calc`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RepositoryName(String);

static REPOSITORY_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$",
    )
    .expect("static regex")
});

impl RepositoryName {
    /// docker-registry 2.8 answers 500 for longer names (its `NameTotalLengthMax`).
    pub const MAX_LEN: usize = 255;
    /// The distribution spec: clients limit `<registry host>/<name>` to this many characters.
    pub const MAX_REFERENCE_LEN: usize = 255;

    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        if s.is_empty() {
            return Err(invalid("repository name", s, "empty"));
        }
        if s.len() > Self::MAX_LEN {
            return Err(invalid("repository name", s, "longer than 255 characters"));
        }
        if !REPOSITORY_RE.is_match(s) {
            return Err(invalid(
                "repository name",
                s,
                "must be lowercase path components [a-z0-9] separated by '/', '.', '_', '__' or '-'",
            ));
        }
        Ok(Self(s.to_owned()))
    }
}
string_newtype!(RepositoryName);

impl RepositoryName {
    /// Whether clients can pull this name from `host` (`registry.example.org[:port][/path]`):
    /// the distribution spec says they limit `<host>/<name>` to 255 characters, so a
    /// longer name can be pushed to some registries but never pulled.
    pub fn check_reference_length(&self, host: &str) -> Result<(), InvalidValue> {
        if host.len() + 1 + self.0.len() > Self::MAX_REFERENCE_LEN {
            return Err(invalid(
                "repository name",
                &self.0,
                "too long: <registry host>/<name> must not exceed 255 characters",
            ));
        }
        Ok(())
    }
}

/// A tag (`latest`, `1.2-3`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tag(String);

static TAG_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$").expect("static regex"));

impl Tag {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        if !TAG_RE.is_match(s) {
            return Err(invalid(
                "tag",
                s,
                "must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}",
            ));
        }
        Ok(Self(s.to_owned()))
    }
}
string_newtype!(Tag);

/// A content digest (`sha256:<64 hex>`). Only sha256 and sha512 are accepted, lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let (algorithm, hex) = s
            .split_once(':')
            .ok_or_else(|| invalid("digest", s, "must be <algorithm>:<hex>"))?;
        let expected_len = match algorithm {
            "sha256" => 64,
            "sha512" => 128,
            _ => return Err(invalid("digest", s, "algorithm must be sha256 or sha512")),
        };
        if hex.len() != expected_len
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(invalid(
                "digest",
                s,
                "hex part has the wrong length or characters",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The sha256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        use sha2::{Digest as _, Sha256};
        Self(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    pub fn algorithm(&self) -> &str {
        self.0.split_once(':').map(|(a, _)| a).unwrap_or("sha256")
    }

    /// True when `bytes` hash to this digest.
    pub fn verify(&self, bytes: &[u8]) -> bool {
        use sha2::{Digest as _, Sha256, Sha512};
        let actual = match self.algorithm() {
            "sha512" => format!("sha512:{}", hex::encode(Sha512::digest(bytes))),
            _ => format!("sha256:{}", hex::encode(Sha256::digest(bytes))),
        };
        actual == self.0
    }
}
string_newtype!(Digest);

/// A manifest reference: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

/// String-to-string maps (labels, annotations) keep a sorted order so that equal data
/// serialises to equal bytes.
pub type StringMap = BTreeMap<String, String>;

/// One single-platform image: a manifest plus what its config blob says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub digest: Digest,
    pub media_type: String,
    /// Go-style OS from the image config (`linux`); empty when the config does not say.
    pub os: String,
    /// Go-style architecture from the image config (`amd64`, `arm64`).
    pub architecture: String,
    /// The manifest's `annotations`.
    pub annotations: StringMap,
    /// The config's `config.Labels`.
    pub labels: StringMap,
    pub config_digest: Digest,
}

/// An OCI image index or Docker manifest list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageList {
    pub digest: Digest,
    pub media_type: String,
    pub annotations: StringMap,
    /// The entries' image digests, in the order of the index. Entries that are not
    /// images regindex understands (nested indexes, attestations) are left out.
    pub entries: Vec<Digest>,
}

/// A tag a refetch could not index, or indexed only in part, and why. Recorded so that
/// operators see it; the tag's other siblings are indexed regardless.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagProblem {
    pub tag: Tag,
    /// The manifest the tag points at.
    pub digest: Digest,
    pub reason: String,
    /// The tag is indexed without the parts the reason names (an image list with
    /// unusable entries); otherwise it is not indexed at all.
    pub partial: bool,
}

/// Everything the registry currently holds for one repository, as far as the index cares:
/// which tag points where, and the manifests those tags reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepositoryState {
    pub tags: BTreeMap<Tag, Digest>,
    /// Images reachable from the tags, directly or through lists.
    pub images: BTreeMap<Digest, Image>,
    pub lists: BTreeMap<Digest, ImageList>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        for ok in [
            "a",
            "apps/calc",
            "library/fedora-toolbox",
            "a__b/c.d",
            "a--b",
        ] {
            assert!(RepositoryName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "A",
            "/a",
            "a/",
            "a//b",
            "a_",
            "-a",
            "a b",
            "../etc",
            &"a".repeat(256),
        ] {
            assert!(RepositoryName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reference_length_counts_the_host() {
        let host = "registry.example.org"; // 20 characters, + '/' = 21
        let fits = RepositoryName::parse(&"a".repeat(234)).unwrap();
        assert!(fits.check_reference_length(host).is_ok());
        let long = RepositoryName::parse(&"a".repeat(235)).unwrap();
        let err = long.check_reference_length(host).unwrap_err();
        assert!(err.reason.contains("255"), "{err}");
    }

    #[test]
    fn tags() {
        assert!(Tag::parse("latest").is_ok());
        assert!(Tag::parse("1.2-3_x").is_ok());
        assert!(Tag::parse(".hidden").is_err());
        assert!(Tag::parse("").is_err());
        assert!(Tag::parse(&"a".repeat(129)).is_err());
    }

    #[test]
    fn digests() {
        let d = Digest::sha256_of(b"hello");
        assert_eq!(
            d.as_str(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert!(d.verify(b"hello"));
        assert!(!d.verify(b"hellO"));
        assert!(Digest::parse(d.as_str()).is_ok());
        assert!(Digest::parse("sha256:ABC").is_err());
        assert!(Digest::parse("md5:00").is_err());
        assert!(Digest::parse("nocolon").is_err());
    }
}
