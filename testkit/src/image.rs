//! Building real image content (layer, config blob, manifests) in memory, before a push.
//!
//! Everything here is deterministic for a given `ImageSpec`, so two pushes of the same spec
//! produce the same digests (useful to test "nothing changed").

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Every manifest media type, for `Accept` headers.
pub const ALL_MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

/// Manifest flavour of a single image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageFormat {
    #[default]
    Oci,
    /// Docker image manifest v2 schema 2. It has no `annotations` field, so
    /// `ImageSpec::annotations` are not written for this format.
    Docker,
}

/// Flavour of a multi-platform list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFormat {
    OciIndex,
    DockerList,
}

impl ListFormat {
    pub fn media_type(self) -> &'static str {
        match self {
            ListFormat::OciIndex => OCI_INDEX,
            ListFormat::DockerList => DOCKER_LIST,
        }
    }
}

/// What to push: a one-layer image with the given platform, labels and annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// Go-style OS (`linux`).
    pub os: String,
    /// Go-style architecture (`amd64`, `arm64`).
    pub architecture: String,
    /// Written into the config blob as `config.Labels`.
    pub labels: BTreeMap<String, String>,
    /// Written into the manifest's `annotations` (OCI format only).
    pub annotations: BTreeMap<String, String>,
    pub format: ImageFormat,
    /// Changes the layer content, hence every digest: two specs that differ only by seed
    /// are two different images.
    pub layer_seed: u64,
}

impl Default for ImageSpec {
    fn default() -> Self {
        Self {
            os: "linux".into(),
            architecture: "amd64".into(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            format: ImageFormat::Oci,
            layer_seed: 0,
        }
    }
}

/// Go-style and Flatpak-style names of an architecture (`amd64` / `x86_64`).
fn arch_names(arch: &str) -> (String, String) {
    match arch {
        "amd64" | "x86_64" => ("amd64".into(), "x86_64".into()),
        "arm64" | "aarch64" => ("arm64".into(), "aarch64".into()),
        "ppc64le" => ("ppc64le".into(), "ppc64le".into()),
        "s390x" => ("s390x".into(), "s390x".into()),
        other => (other.into(), other.into()),
    }
}

impl ImageSpec {
    /// A plain OCI image for `linux/<architecture>`.
    pub fn new(architecture: &str) -> Self {
        Self {
            architecture: arch_names(architecture).0,
            ..Self::default()
        }
    }

    /// A Flatpak application image as Fedora builds them: `org.flatpak.ref`,
    /// `org.flatpak.metadata` and appstream labels. `arch` may be Go-style (`amd64`) or
    /// Flatpak-style (`x86_64`). Its `icon-64` is the 8-byte PNG signature and nothing
    /// else, which is not an image (nothing is extracted); [`ImageSpec::icons`] gives it
    /// real ones.
    pub fn flatpak(app_id: &str, arch: &str) -> Self {
        let (go_arch, flatpak_arch) = arch_names(arch);
        let mut labels = BTreeMap::new();
        labels.insert(
            "org.flatpak.ref".into(),
            format!("app/{app_id}/{flatpak_arch}/stable"),
        );
        labels.insert(
            "org.flatpak.metadata".into(),
            format!(
                "[Application]\nname={app_id}\nruntime=org.fedoraproject.Platform/{flatpak_arch}/f41\n"
            ),
        );
        labels.insert(
            "org.freedesktop.appstream.appdata".into(),
            format!("<?xml version=\"1.0\"?><components><component type=\"desktop\"><id>{app_id}</id></component></components>"),
        );
        labels.insert(
            "org.freedesktop.appstream.icon-64".into(),
            "data:image/png;base64,iVBORw0KGgo=".into(),
        );
        labels.insert("org.flatpak.download-size".into(), "12345".into());
        labels.insert("name".into(), app_id.to_lowercase());
        let mut annotations = BTreeMap::new();
        annotations.insert("org.opencontainers.image.title".into(), app_id.into());
        // Distinct apps and arches get distinct layers, hence distinct digests.
        let layer_seed = fnv1a(format!("{app_id}/{go_arch}").as_bytes());
        Self {
            os: "linux".into(),
            architecture: go_arch,
            labels,
            annotations,
            format: ImageFormat::Oci,
            layer_seed,
        }
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Real 64 px and 128 px PNG icons (`icon-64`, `icon-128`): solid squares of `rgb`.
    pub fn icons(self, rgb: [u8; 3]) -> Self {
        use crate::icon::{png, png_data_uri, ICON_128_LABEL, ICON_64_LABEL};
        self.label(ICON_64_LABEL, &png_data_uri(&png(rgb, 64)))
            .label(ICON_128_LABEL, &png_data_uri(&png(rgb, 128)))
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    pub fn format(mut self, format: ImageFormat) -> Self {
        self.format = format;
        self
    }

    pub fn seed(mut self, layer_seed: u64) -> Self {
        self.layer_seed = layer_seed;
        self
    }

    pub fn manifest_media_type(&self) -> &'static str {
        match self.format {
            ImageFormat::Oci => OCI_MANIFEST,
            ImageFormat::Docker => DOCKER_MANIFEST,
        }
    }

    /// Layer, config and manifest bytes of this image.
    pub fn build(&self) -> anyhow::Result<BuiltImage> {
        let tar = tar_with_one_file(
            &format!("layer-{}.txt", self.layer_seed),
            format!("regindex test layer, seed {}\n", self.layer_seed).as_bytes(),
        );
        let diff_id = sha256_digest(&tar);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar)?;
        let layer = gz.finish()?;

        let (config_type, layer_type) = match self.format {
            ImageFormat::Oci => (OCI_CONFIG, OCI_LAYER),
            ImageFormat::Docker => (DOCKER_CONFIG, DOCKER_LAYER),
        };
        let config = serde_json::to_vec(&json!({
            "created": "2024-01-01T00:00:00Z",
            "architecture": self.architecture,
            "os": self.os,
            "config": { "Labels": self.labels },
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
            "history": [{ "created": "2024-01-01T00:00:00Z", "created_by": "regindex-testkit" }],
        }))?;

        let mut manifest = json!({
            "schemaVersion": 2,
            "mediaType": self.manifest_media_type(),
            "config": {
                "mediaType": config_type,
                "digest": sha256_digest(&config),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": layer_type,
                "digest": sha256_digest(&layer),
                "size": layer.len(),
            }],
        });
        if self.format == ImageFormat::Oci && !self.annotations.is_empty() {
            manifest["annotations"] = json!(self.annotations);
        }
        let manifest = serde_json::to_vec_pretty(&manifest)?;
        Ok(BuiltImage {
            layer,
            config,
            manifest,
        })
    }
}

/// The three pieces of a one-layer image.
#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub layer: Vec<u8>,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
}

/// An image list's bytes for the given (already pushed) children.
pub fn build_list(
    format: ListFormat,
    children: &[(&ImageSpec, &str, &[u8])],
    annotations: &BTreeMap<String, String>,
) -> anyhow::Result<Vec<u8>> {
    let manifests: Vec<Value> = children
        .iter()
        .map(|(spec, media_type, bytes)| {
            json!({
                "mediaType": media_type,
                "digest": sha256_digest(bytes),
                "size": bytes.len(),
                "platform": { "architecture": spec.architecture, "os": spec.os },
            })
        })
        .collect();
    let mut list = json!({
        "schemaVersion": 2,
        "mediaType": format.media_type(),
        "manifests": manifests,
    });
    if format == ListFormat::OciIndex && !annotations.is_empty() {
        list["annotations"] = json!(annotations);
    }
    Ok(serde_json::to_vec_pretty(&list)?)
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A POSIX ustar archive holding one regular file (written by hand: one header block,
/// the content padded to 512 bytes, two zero blocks).
fn tar_with_one_file(name: &str, content: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len().min(100)].copy_from_slice(&name.as_bytes()[..name.len().min(100)]);
    header[100..108].copy_from_slice(b"0000644\0");
    header[108..116].copy_from_slice(b"0000000\0");
    header[116..124].copy_from_slice(b"0000000\0");
    header[124..136].copy_from_slice(format!("{:011o}\0", content.len()).as_bytes());
    header[136..148].copy_from_slice(b"14575360400\0"); // 2024-01-01
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field filled with spaces.
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());

    let mut out = header.to_vec();
    out.extend_from_slice(content);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.resize(out.len() + 1024, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_is_deterministic_and_seed_matters() {
        let a = ImageSpec::flatpak("org.example.App", "x86_64")
            .build()
            .unwrap();
        let b = ImageSpec::flatpak("org.example.App", "amd64")
            .build()
            .unwrap();
        assert_eq!(a.manifest, b.manifest);
        let c = ImageSpec::flatpak("org.example.App", "aarch64")
            .build()
            .unwrap();
        assert_ne!(a.manifest, c.manifest);
    }

    #[test]
    fn config_carries_labels_and_platform() {
        let spec = ImageSpec::flatpak("org.example.App", "aarch64");
        let built = spec.build().unwrap();
        let config: Value = serde_json::from_slice(&built.config).unwrap();
        assert_eq!(config["architecture"], "arm64");
        assert_eq!(
            config["config"]["Labels"]["org.flatpak.ref"],
            "app/org.example.App/aarch64/stable"
        );
        let manifest: Value = serde_json::from_slice(&built.manifest).unwrap();
        assert_eq!(manifest["config"]["digest"], sha256_digest(&built.config));
    }

    #[test]
    fn layer_is_a_gzip_tar_that_tar_reads() {
        use std::process::{Command, Stdio};
        let built = ImageSpec::new("amd64").seed(7).build().unwrap();
        let mut child = Command::new("tar")
            .args(["-tzvf", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&built.layer).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("layer-7.txt"));
    }

    #[test]
    fn tar_header_is_valid() {
        let tar = tar_with_one_file("a.txt", b"hello");
        assert_eq!(tar.len(), 512 * 4);
        assert_eq!(&tar[512..517], b"hello");
    }
}
