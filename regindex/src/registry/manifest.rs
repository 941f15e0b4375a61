//! Pure parsing of manifests, indexes and image configs.

use serde::{Deserialize, Deserializer};

use super::RegistryError;
use crate::model::{media_type, Digest, StringMap};

/// Docker schema 1 (signed and unsigned): deprecated, and without a config blob to read
/// labels from, so it is refused rather than half-supported.
const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// `null` and a missing field both mean "empty": registries and build tools write either.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Platform {
    #[serde(default, deserialize_with = "null_as_default")]
    pub os: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default, deserialize_with = "null_as_default")]
    pub media_type: String,
    pub digest: Digest,
    #[serde(default)]
    pub size: i64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default, deserialize_with = "null_as_default")]
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

/// Every field any supported manifest kind may carry; which ones must be present depends
/// on the kind.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    schema_version: Option<i64>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default, deserialize_with = "null_as_default")]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default, deserialize_with = "null_as_default")]
    annotations: StringMap,
}

/// `type/subtype` without parameters, lowercased.
pub fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// A Content-Type that says nothing about which manifest kind this is.
pub fn is_generic(media_type: &str) -> bool {
    matches!(
        media_type,
        "" | "application/json" | "text/plain" | "application/octet-stream"
    )
}

/// The media type a manifest declares in its body (`mediaType`), for registries that
/// serve manifests with a generic Content-Type. `None` when the body does not say or is
/// not JSON.
pub fn declared_media_type(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Declared {
        #[serde(default)]
        media_type: Option<String>,
    }
    serde_json::from_slice::<Declared>(bytes)
        .ok()?
        .media_type
        .filter(|m| !m.is_empty())
}

/// Parses a manifest of the given media type (falling back to the body's `mediaType`
/// when the registry's Content-Type is generic).
pub fn parse(media_type: &str, bytes: &[u8]) -> Result<Manifest, RegistryError> {
    let header_type = essence(media_type);
    let raw: RawManifest = serde_json::from_slice(bytes).map_err(|e| bad(&header_type, e))?;
    let body_type = raw.media_type.as_deref().map(essence);

    let kind = if is_generic(&header_type) {
        match body_type.clone() {
            Some(t) => t,
            // Old OCI writers omit `mediaType`; the shape tells which kind it is.
            None if raw.schema_version == Some(2) && raw.manifests.is_some() => {
                media_type::OCI_INDEX.to_owned()
            }
            None if raw.schema_version == Some(2) && raw.config.is_some() => {
                media_type::OCI_MANIFEST.to_owned()
            }
            None if raw.schema_version == Some(1) => DOCKER_SCHEMA1.to_owned(),
            None => {
                return Err(RegistryError::UnsupportedMediaType {
                    what: "manifest without a media type".into(),
                    media_type: header_type,
                })
            }
        }
    } else {
        header_type
    };

    if kind == DOCKER_SCHEMA1 || kind == DOCKER_SCHEMA1_SIGNED || !media_type::is_manifest(&kind) {
        return Err(RegistryError::UnsupportedMediaType {
            what: "manifest".into(),
            media_type: kind,
        });
    }
    // A body that claims another kind than the registry served is not trustworthy: the
    // OCI spec requires them to match.
    if let Some(body_type) = body_type.filter(|b| *b != kind) {
        return Err(RegistryError::BadManifest {
            what: format!("manifest ({kind})"),
            detail: format!("served as {kind} but its body declares {body_type}"),
        });
    }
    if raw.schema_version != Some(2) {
        return Err(RegistryError::BadManifest {
            what: format!("manifest ({kind})"),
            detail: format!("schemaVersion {:?}, expected 2", raw.schema_version),
        });
    }

    if media_type::is_image(&kind) {
        let config = raw.config.ok_or_else(|| RegistryError::BadManifest {
            what: format!("manifest ({kind})"),
            detail: "no config descriptor".into(),
        })?;
        Ok(Manifest::Image {
            config,
            layers: raw.layers,
            annotations: raw.annotations,
        })
    } else {
        let manifests = raw.manifests.ok_or_else(|| RegistryError::BadManifest {
            what: format!("manifest ({kind})"),
            detail: "no manifests array".into(),
        })?;
        Ok(Manifest::List {
            manifests,
            annotations: raw.annotations,
        })
    }
}

fn bad(kind: &str, e: serde_json::Error) -> RegistryError {
    RegistryError::BadManifest {
        what: format!("manifest ({kind})"),
        detail: e.to_string(),
    }
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default, deserialize_with = "null_as_default")]
    os: String,
    #[serde(default, deserialize_with = "null_as_default")]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    config: Option<RawContainerConfig>,
}

#[derive(Deserialize)]
struct RawContainerConfig {
    #[serde(rename = "Labels", default)]
    labels: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Parses an image config blob.
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfig, RegistryError> {
    // serde would read a struct from a JSON array too; an image config is an object.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err(RegistryError::BadManifest {
            what: "image config".into(),
            detail: "not a JSON object".into(),
        });
    }
    let raw: RawConfig = serde_json::from_slice(bytes).map_err(|e| RegistryError::BadManifest {
        what: "image config".into(),
        detail: e.to_string(),
    })?;
    let mut labels = StringMap::new();
    for (key, value) in raw.config.and_then(|c| c.labels).unwrap_or_default() {
        match value {
            serde_json::Value::String(s) => {
                labels.insert(key, s);
            }
            // Labels are strings by definition; a tool that wrote something else loses
            // only that label, not the image.
            other => tracing::warn!(label = %key, value = %other, "non-string label skipped"),
        }
    }
    Ok(ImageConfig {
        os: raw.os,
        architecture: raw.architecture,
        variant: raw.variant.filter(|v| !v.is_empty()),
        labels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn oci_manifest(media_type_field: Option<&str>) -> String {
        let mt = media_type_field
            .map(|m| format!(r#""mediaType": "{m}","#))
            .unwrap_or_default();
        format!(
            r#"{{"schemaVersion": 2, {mt}
                "config": {{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "{D1}", "size": 10}},
                "layers": [{{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "{D2}", "size": 20}}],
                "annotations": {{"org.opencontainers.image.title": "Calc"}}}}"#
        )
    }

    #[test]
    fn oci_manifest_parses() {
        let m = parse(
            media_type::OCI_MANIFEST,
            oci_manifest(Some(media_type::OCI_MANIFEST)).as_bytes(),
        )
        .unwrap();
        let Manifest::Image {
            config,
            layers,
            annotations,
        } = m
        else {
            panic!("not an image")
        };
        assert_eq!(config.digest.as_str(), D1);
        assert_eq!(config.size, 10);
        assert_eq!(layers.len(), 1);
        assert_eq!(annotations["org.opencontainers.image.title"], "Calc");
    }

    #[test]
    fn docker_schema2_parses_without_annotations() {
        let body = format!(
            r#"{{"schemaVersion": 2, "mediaType": "{}",
                "config": {{"mediaType": "{}", "digest": "{D1}", "size": 1}},
                "layers": []}}"#,
            media_type::DOCKER_MANIFEST,
            media_type::DOCKER_CONFIG
        );
        let m = parse(
            "application/vnd.docker.distribution.manifest.v2+json; charset=utf-8",
            body.as_bytes(),
        )
        .unwrap();
        assert!(matches!(m, Manifest::Image { ref annotations, .. } if annotations.is_empty()));
    }

    #[test]
    fn oci_index_and_docker_list_parse_with_platforms() {
        for (mt, child) in [
            (media_type::OCI_INDEX, media_type::OCI_MANIFEST),
            (media_type::DOCKER_LIST, media_type::DOCKER_MANIFEST),
        ] {
            let body = format!(
                r#"{{"schemaVersion": 2, "mediaType": "{mt}",
                    "manifests": [
                      {{"mediaType": "{child}", "digest": "{D1}", "size": 5, "platform": {{"os": "linux", "architecture": "arm64", "variant": "v8"}}}},
                      {{"mediaType": "{child}", "digest": "{D2}", "size": 6, "platform": {{"os": "linux", "architecture": "amd64", "os.features": ["x"]}}}}
                    ],
                    "annotations": null}}"#
            );
            let Manifest::List {
                manifests,
                annotations,
            } = parse(mt, body.as_bytes()).unwrap()
            else {
                panic!("not a list")
            };
            assert!(annotations.is_empty());
            assert_eq!(manifests.len(), 2);
            let p = manifests[0].platform.as_ref().unwrap();
            assert_eq!(
                (p.os.as_str(), p.architecture.as_str(), p.variant.as_deref()),
                ("linux", "arm64", Some("v8"))
            );
            assert_eq!(manifests[1].digest.as_str(), D2);
            assert_eq!(manifests[1].media_type, child);
        }
    }

    #[test]
    fn generic_content_type_falls_back_to_body() {
        for generic in [
            "application/json",
            "",
            "text/plain; charset=utf-8",
            "application/octet-stream",
        ] {
            let m = parse(
                generic,
                oci_manifest(Some(media_type::OCI_MANIFEST)).as_bytes(),
            )
            .unwrap();
            assert!(matches!(m, Manifest::Image { .. }), "{generic}");
        }
        // No mediaType anywhere: the shape decides.
        assert!(matches!(
            parse("application/json", oci_manifest(None).as_bytes()).unwrap(),
            Manifest::Image { .. }
        ));
        let index = r#"{"schemaVersion": 2, "manifests": []}"#;
        assert!(matches!(
            parse("", index.as_bytes()).unwrap(),
            Manifest::List { .. }
        ));
        assert_eq!(
            declared_media_type(oci_manifest(Some(media_type::OCI_MANIFEST)).as_bytes()).as_deref(),
            Some(media_type::OCI_MANIFEST)
        );
    }

    #[test]
    fn schema1_and_unknown_types_are_unsupported() {
        let schema1 = r#"{"schemaVersion": 1, "name": "a", "tag": "b", "fsLayers": []}"#;
        for mt in [DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED, "application/json"] {
            let err = parse(mt, schema1.as_bytes()).unwrap_err();
            assert!(
                matches!(err, RegistryError::UnsupportedMediaType { .. }),
                "{mt}: {err}"
            );
        }
        let err = parse(
            "application/vnd.example.thing+json",
            oci_manifest(None).as_bytes(),
        )
        .unwrap_err();
        assert!(
            matches!(err, RegistryError::UnsupportedMediaType { .. }),
            "{err}"
        );
        let err = parse("application/json", br#"{"hello": 1}"#).unwrap_err();
        assert!(
            matches!(err, RegistryError::UnsupportedMediaType { .. }),
            "{err}"
        );
    }

    #[test]
    fn malformed_manifests_are_bad() {
        let cases = [
            b"not json".to_vec(),
            br#"{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}"#.to_vec(),
            br#"{"schemaVersion": 2, "config": {"digest": "sha256:short"}}"#.to_vec(),
            br#"{"schemaVersion": 3, "config": {"digest": "sha256:1111111111111111111111111111111111111111111111111111111111111111"}}"#.to_vec(),
        ];
        for body in cases {
            let err = parse(media_type::OCI_MANIFEST, &body).unwrap_err();
            assert!(matches!(err, RegistryError::BadManifest { .. }), "{err}");
        }
        // Served as an index, body says manifest.
        let err = parse(
            media_type::OCI_INDEX,
            oci_manifest(Some(media_type::OCI_MANIFEST)).as_bytes(),
        )
        .unwrap_err();
        assert!(matches!(err, RegistryError::BadManifest { .. }), "{err}");
    }

    #[test]
    fn config_with_labels() {
        let c = parse_config(
            br#"{"os": "linux", "architecture": "arm64", "variant": "v8",
                 "config": {"Labels": {"org.flatpak.ref": "app/a/aarch64/stable", "n": 1}, "Env": []},
                 "rootfs": {"type": "layers", "diff_ids": []}}"#,
        )
        .unwrap();
        assert_eq!(c.os, "linux");
        assert_eq!(c.architecture, "arm64");
        assert_eq!(c.variant.as_deref(), Some("v8"));
        assert_eq!(c.labels.len(), 1);
        assert_eq!(c.labels["org.flatpak.ref"], "app/a/aarch64/stable");
    }

    #[test]
    fn config_without_labels() {
        for body in [
            r#"{"os": "linux", "architecture": "amd64"}"#,
            r#"{"os": "linux", "architecture": "amd64", "config": null}"#,
            r#"{"os": "linux", "architecture": "amd64", "config": {"Labels": null}}"#,
            r#"{"os": "linux", "architecture": "amd64", "config": {}}"#,
        ] {
            let c = parse_config(body.as_bytes()).unwrap();
            assert!(c.labels.is_empty(), "{body}");
            assert_eq!(c.architecture, "amd64");
        }
        assert_eq!(parse_config(b"{}").unwrap(), ImageConfig::default());
        for bad in [&b"[1]"[..], b"[]", b"not JSON", b"", b"\x00\x01"] {
            assert!(matches!(
                parse_config(bad).unwrap_err(),
                RegistryError::BadManifest { .. }
            ));
        }
        assert!(parse_config(b" \n{}").is_ok());
    }
}
