//! Pushing images to a `TestRegistry` over the distribution API, the way a client such as
//! skopeo does: blobs by monolithic upload (POST then PUT), then the manifest.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use reqwest::{header, StatusCode};

use crate::image::{
    build_list, sha256_digest, ImageSpec, ListFormat, ALL_MANIFEST_TYPES, OCI_MANIFEST,
};
use crate::registry::TestRegistry;

/// An image as pushed: the ground truth tests compare against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedImage {
    pub digest: String,
    pub config_digest: String,
    pub media_type: String,
    pub manifest_bytes: Vec<u8>,
    pub config_bytes: Vec<u8>,
    pub spec: ImageSpec,
}

/// A list as pushed, with its children in list order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedList {
    pub digest: String,
    pub media_type: String,
    pub manifest_bytes: Vec<u8>,
    pub entries: Vec<PushedImage>,
}

impl TestRegistry {
    /// Pushes a one-layer image; tagged with `tag`, or by digest only when `None`.
    pub async fn push_image(
        &self,
        repo: &str,
        tag: Option<&str>,
        spec: &ImageSpec,
    ) -> anyhow::Result<PushedImage> {
        let built = spec.build()?;
        self.upload_blob(repo, &built.layer).await?;
        self.upload_blob(repo, &built.config).await?;
        let media_type = spec.manifest_media_type();
        let digest = self
            .push_manifest(repo, tag, media_type, &built.manifest)
            .await?;
        Ok(PushedImage {
            digest,
            config_digest: sha256_digest(&built.config),
            media_type: media_type.into(),
            manifest_bytes: built.manifest,
            config_bytes: built.config,
            spec: spec.clone(),
        })
    }

    /// Pushes each spec by digest (untagged), then a list of them under `tag`.
    pub async fn push_list(
        &self,
        repo: &str,
        tag: Option<&str>,
        specs: &[ImageSpec],
        format: ListFormat,
    ) -> anyhow::Result<PushedList> {
        self.push_list_annotated(repo, tag, specs, format, &BTreeMap::new())
            .await
    }

    /// `push_list` with list-level annotations (written for OCI indexes only: Docker
    /// manifest lists have no such field).
    pub async fn push_list_annotated(
        &self,
        repo: &str,
        tag: Option<&str>,
        specs: &[ImageSpec],
        format: ListFormat,
        annotations: &BTreeMap<String, String>,
    ) -> anyhow::Result<PushedList> {
        let mut entries = Vec::with_capacity(specs.len());
        for spec in specs {
            entries.push(self.push_image(repo, None, spec).await?);
        }
        let children: Vec<_> = entries
            .iter()
            .map(|e| (&e.spec, e.media_type.as_str(), e.manifest_bytes.as_slice()))
            .collect();
        let bytes = build_list(format, &children, annotations)?;
        let media_type = format.media_type();
        let digest = self.push_manifest(repo, tag, media_type, &bytes).await?;
        Ok(PushedList {
            digest,
            media_type: media_type.into(),
            manifest_bytes: bytes,
            entries,
        })
    }

    /// Points `tag` at an existing manifest (a tag move when the tag existed).
    pub async fn tag(&self, repo: &str, tag: &str, digest: &str) -> anyhow::Result<()> {
        let response = self
            .authed(
                self.http
                    .get(self.v2(&format!("{repo}/manifests/{digest}"))),
                repo,
            )?
            .header(header::ACCEPT, ALL_MANIFEST_TYPES)
            .send()
            .await?;
        if response.status() != StatusCode::OK {
            bail!("GET manifest {repo}@{digest}: {}", response.status());
        }
        let media_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .context("manifest without Content-Type")?
            .to_owned();
        let bytes = response.bytes().await?;
        let pushed = self
            .push_manifest(repo, Some(tag), &media_type, &bytes)
            .await?;
        if pushed != digest {
            bail!("re-tagging {repo}@{digest} gave digest {pushed}");
        }
        Ok(())
    }

    /// GETs a manifest as a client would (a `pull` event for webhooks); returns its bytes.
    pub async fn pull_manifest(&self, repo: &str, reference: &str) -> anyhow::Result<Vec<u8>> {
        let response = self
            .authed(
                self.http
                    .get(self.v2(&format!("{repo}/manifests/{reference}"))),
                repo,
            )?
            .header(header::ACCEPT, ALL_MANIFEST_TYPES)
            .send()
            .await?;
        if response.status() != StatusCode::OK {
            bail!("GET manifest {repo}:{reference}: {}", response.status());
        }
        Ok(response.bytes().await?.to_vec())
    }

    /// Deletes a manifest by digest (which removes every tag pointing at it).
    pub async fn delete_manifest(&self, repo: &str, digest: &str) -> anyhow::Result<()> {
        let response = self
            .authed(
                self.http
                    .delete(self.v2(&format!("{repo}/manifests/{digest}"))),
                repo,
            )?
            .send()
            .await?;
        if response.status() != StatusCode::ACCEPTED {
            bail!(
                "DELETE {repo}@{digest}: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// What the registry holds: `(repository, tag) -> digest` for every tag of every
    /// repository in `_catalog` (one page of up to 1000: enough for a test's registry). The ground
    /// truth an index is compared with.
    pub async fn tagged(&self) -> anyhow::Result<BTreeMap<(String, String), String>> {
        #[derive(serde::Deserialize)]
        struct Catalog {
            repositories: Vec<String>,
        }
        #[derive(serde::Deserialize)]
        struct TagList {
            tags: Option<Vec<String>>,
        }
        let catalog: Catalog = self
            .authed(self.http.get(self.v2("_catalog?n=1000")), "")?
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let mut tagged = BTreeMap::new();
        for repo in catalog.repositories {
            let list: TagList = self
                .authed(self.http.get(self.v2(&format!("{repo}/tags/list"))), &repo)?
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            for tag in list.tags.unwrap_or_default() {
                // A tag deleted between the listing and the HEAD is not there any more.
                if let Some(digest) = self.manifest_digest(&repo, &tag).await? {
                    tagged.insert((repo.clone(), tag), digest);
                }
            }
        }
        Ok(tagged)
    }

    /// The digest `tag` points at (HEAD), `None` when the tag or repository is unknown.
    pub async fn manifest_digest(&self, repo: &str, tag: &str) -> anyhow::Result<Option<String>> {
        let response = self
            .authed(
                self.http.head(self.v2(&format!("{repo}/manifests/{tag}"))),
                repo,
            )?
            .header(header::ACCEPT, ALL_MANIFEST_TYPES)
            .send()
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::OK => Ok(Some(
                response
                    .headers()
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .context("HEAD manifest without Docker-Content-Digest")?
                    .to_owned(),
            )),
            other => bail!("HEAD {repo}:{tag}: {other}"),
        }
    }

    /// Pushes one OCI image manifest whose config blob is `config`, verbatim, of type
    /// `config_media_type`, with one layer made from `seed`: images the index must cope
    /// with (a config that is not JSON) and OCI artifacts (an empty `{}` config, Helm
    /// charts). Returns the manifest's digest.
    pub async fn push_with_config(
        &self,
        repo: &str,
        tag: Option<&str>,
        config_media_type: &str,
        config: &[u8],
        seed: u64,
    ) -> anyhow::Result<String> {
        let layer = format!("regindex testkit raw layer {seed}\n").into_bytes();
        self.upload_blob(repo, &layer).await?;
        self.upload_blob(repo, config).await?;
        let manifest = serde_json::to_vec_pretty(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": config_media_type,
                "digest": sha256_digest(config),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/octet-stream",
                "digest": sha256_digest(&layer),
                "size": layer.len(),
            }],
        }))?;
        self.push_manifest(repo, tag, OCI_MANIFEST, &manifest).await
    }

    /// Uploads a blob (monolithic); returns its digest.
    pub async fn upload_blob(&self, repo: &str, bytes: &[u8]) -> anyhow::Result<String> {
        let digest = sha256_digest(bytes);
        let start = self
            .authed(
                self.http.post(self.v2(&format!("{repo}/blobs/uploads/"))),
                repo,
            )?
            .send()
            .await?;
        if start.status() != StatusCode::ACCEPTED {
            bail!("starting a blob upload to {repo}: {}", start.status());
        }
        let location = start
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .context("blob upload without Location")?;
        // Location may be absolute or relative, and already carries a query (`_state`).
        let mut url = reqwest::Url::parse(&self.url())?.join(location)?;
        url.query_pairs_mut().append_pair("digest", &digest);
        let put = self
            .authed(self.http.put(url), repo)?
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await?;
        if put.status() != StatusCode::CREATED {
            bail!(
                "finishing a blob upload to {repo}: {} {}",
                put.status(),
                put.text().await.unwrap_or_default()
            );
        }
        Ok(digest)
    }

    /// PUTs a manifest, verbatim, under `tag` or under its own digest; returns the digest.
    pub async fn push_manifest(
        &self,
        repo: &str,
        tag: Option<&str>,
        media_type: &str,
        bytes: &[u8],
    ) -> anyhow::Result<String> {
        let digest = sha256_digest(bytes);
        let reference = tag.unwrap_or(&digest);
        let response = self
            .authed(
                self.http
                    .put(self.v2(&format!("{repo}/manifests/{reference}"))),
                repo,
            )?
            .header(header::CONTENT_TYPE, media_type)
            .body(bytes.to_vec())
            .send()
            .await?;
        if response.status() != StatusCode::CREATED {
            bail!(
                "PUT manifest {repo}:{reference}: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        let returned = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok());
        if let Some(returned) = returned {
            if returned != digest {
                bail!("registry computed {returned} for a manifest whose digest is {digest}");
            }
        }
        Ok(digest)
    }
}
