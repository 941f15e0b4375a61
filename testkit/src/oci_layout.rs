//! Writing images into an OCI image layout directory, so that a real client (`skopeo copy
//! oci:DIR:REF docker://...`) can push them.

use std::path::Path;

use anyhow::Context;
use serde_json::{json, Value};

use crate::image::{build_list, sha256_digest, ImageSpec, ListFormat};

/// An OCI image layout being filled: blobs under `blobs/sha256/`, one `index.json` entry
/// per reference name.
pub struct OciLayout {
    dir: std::path::PathBuf,
    refs: Vec<Value>,
}

impl OciLayout {
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir.join("blobs/sha256"))?;
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let layout = Self {
            dir: dir.to_owned(),
            refs: Vec::new(),
        };
        layout.write_index()?;
        Ok(layout)
    }

    fn write_blob(&self, bytes: &[u8]) -> anyhow::Result<String> {
        let digest = sha256_digest(bytes);
        let hex = digest.trim_start_matches("sha256:");
        std::fs::write(self.dir.join("blobs/sha256").join(hex), bytes)
            .with_context(|| format!("writing blob {digest}"))?;
        Ok(digest)
    }

    fn write_index(&self) -> anyhow::Result<()> {
        let index = json!({ "schemaVersion": 2, "manifests": self.refs });
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec_pretty(&index)?,
        )?;
        Ok(())
    }

    fn add_ref(&mut self, name: &str, media_type: &str, bytes: &[u8]) -> anyhow::Result<String> {
        let digest = self.write_blob(bytes)?;
        self.refs.push(json!({
            "mediaType": media_type,
            "digest": digest,
            "size": bytes.len(),
            "annotations": { "org.opencontainers.image.ref.name": name },
        }));
        self.write_index()?;
        Ok(digest)
    }

    /// Adds one image under reference `name`; returns the manifest digest.
    pub fn add_image(&mut self, name: &str, spec: &ImageSpec) -> anyhow::Result<String> {
        let built = spec.build()?;
        self.write_blob(&built.layer)?;
        self.write_blob(&built.config)?;
        self.add_ref(name, spec.manifest_media_type(), &built.manifest)
    }

    /// Adds a multi-platform list of `specs` under reference `name`; returns its digest.
    pub fn add_list(
        &mut self,
        name: &str,
        specs: &[ImageSpec],
        format: ListFormat,
    ) -> anyhow::Result<String> {
        let mut children = Vec::new();
        for spec in specs {
            let built = spec.build()?;
            self.write_blob(&built.layer)?;
            self.write_blob(&built.config)?;
            self.write_blob(&built.manifest)?;
            children.push((spec, spec.manifest_media_type(), built.manifest));
        }
        let refs: Vec<(&ImageSpec, &str, &[u8])> = children
            .iter()
            .map(|(spec, media_type, bytes)| (*spec, *media_type, bytes.as_slice()))
            .collect();
        let list = build_list(format, &refs, &Default::default())?;
        self.add_ref(name, format.media_type(), &list)
    }
}
