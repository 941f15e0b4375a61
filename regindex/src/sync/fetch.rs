//! The HTTP side of a refetch: resolving tags, fetching manifests and config blobs. It
//! never touches the database, so no connection is held while the registry answers.
//!
//! A manifest or config the index cannot use (not JSON, not a kind it knows, digest
//! mismatch, a config blob missing) becomes [`Usable::Bad`] with the reason, for its tag
//! only; errors the registry may recover from, or refused access, fail the refetch.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::{stream, StreamExt, TryStreamExt};
use tracing::{debug, warn};

use super::configs::{ConfigCache, ConfigOutcome};
use super::plan::{self, Probe, Usable};
use super::{is_item_problem, SyncError};
use crate::model::{
    media_type, Digest, Image, ImageList, Reference, RepositoryName, StringMap, Tag,
};
use crate::registry::{Descriptor, FetchedManifest, Manifest, RegistryClient, RegistryError};
use crate::store::StoredRepository;

/// Requests in flight at once for one repository (the registry client's own semaphore
/// bounds the total).
const CONCURRENCY: usize = 8;

/// What the registry said, gathered over a refetch.
#[derive(Debug, Default)]
pub struct Fetched {
    /// Every manifest body fetched, by digest (the history records their blobs).
    pub bodies: BTreeMap<Digest, FetchedManifest>,
    /// What the fetched tag targets and list entries turned out to be.
    pub usable: HashMap<Digest, Usable>,
    /// Manifests gone since they were listed or referenced.
    pub vanished: BTreeSet<Digest>,
    /// Manifest GETs and config blob GETs this refetch sent.
    pub manifests: usize,
    pub blobs: usize,
}

pub struct Fetch<'a> {
    pub registry: &'a RegistryClient,
    pub configs: &'a ConfigCache,
    pub repository: &'a RepositoryName,
}

/// What a tag probe returned besides the digest.
enum Body {
    None,
    Fetched(FetchedManifest),
    Bad(String),
}

/// A parsed image manifest waiting for its config.
struct PendingImage {
    digest: Digest,
    media_type: String,
    config: Descriptor,
    annotations: StringMap,
}

impl Fetch<'_> {
    /// Where each listed tag points: a HEAD for tags the store holds, a GET (digest and
    /// body at once) for the others. Tags deleted since the listing are left out.
    pub async fn resolve(
        &self,
        tags: Vec<Tag>,
        stored: &StoredRepository,
        fetched: &mut Fetched,
    ) -> Result<BTreeMap<Tag, Digest>, SyncError> {
        // Futures built first, then polled: a closure that builds borrowing futures
        // inside the stream makes the refetch future not provably `Send`.
        let probes: Vec<_> = tags
            .into_iter()
            .map(|tag| {
                let probe = plan::probe(stored, &tag);
                self.probe(tag, probe)
            })
            .collect();
        let probes: Vec<Option<(Tag, Digest, Body)>> = stream::iter(probes)
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        let mut resolved = BTreeMap::new();
        for (tag, digest, body) in probes.into_iter().flatten() {
            match body {
                Body::None => {}
                Body::Fetched(manifest) => {
                    fetched.manifests += 1;
                    fetched.bodies.insert(digest.clone(), manifest);
                }
                Body::Bad(reason) => {
                    fetched.usable.insert(digest.clone(), Usable::Bad(reason));
                }
            }
            resolved.insert(tag, digest);
        }
        Ok(resolved)
    }

    async fn probe(
        &self,
        tag: Tag,
        probe: Probe,
    ) -> Result<Option<(Tag, Digest, Body)>, SyncError> {
        let reference = Reference::Tag(tag.clone());
        if probe == Probe::Get {
            match self.registry.manifest(self.repository, &reference).await {
                Ok(manifest) => {
                    let digest = manifest.digest.clone();
                    return Ok(Some((tag, digest, Body::Fetched(manifest))));
                }
                Err(RegistryError::NotFound { .. }) => return Ok(None),
                Err(e) if is_item_problem(&e) => {
                    // The body is unusable; a HEAD still names the digest the problem is
                    // recorded under.
                    return Ok(self
                        .head(tag)
                        .await?
                        .map(|(tag, digest)| (tag, digest, Body::Bad(e.to_string()))));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(self
            .head(tag)
            .await?
            .map(|(tag, digest)| (tag, digest, Body::None)))
    }

    async fn head(&self, tag: Tag) -> Result<Option<(Tag, Digest)>, SyncError> {
        let reference = Reference::Tag(tag.clone());
        match self.registry.resolve(self.repository, &reference).await {
            Ok((digest, _)) => Ok(Some((tag, digest))),
            Err(RegistryError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Fetches and reads `targets` (tag targets not stored yet): their manifests, the
    /// entries of lists the store does not hold, and the config blobs of new images.
    pub async fn complete(
        &self,
        targets: &BTreeSet<Digest>,
        stored: &StoredRepository,
        fetched: &mut Fetched,
    ) -> Result<(), SyncError> {
        self.get_manifests(targets, fetched).await?;

        let mut pending = Vec::new();
        let mut lists = Vec::new();
        for digest in targets {
            match self.parse(digest, fetched) {
                Some(Manifest::Image {
                    config,
                    annotations,
                    ..
                }) => pending.push(PendingImage {
                    media_type: media_type_of(&fetched.bodies[digest], true),
                    digest: digest.clone(),
                    config,
                    annotations,
                }),
                Some(Manifest::List {
                    manifests,
                    annotations,
                }) => lists.push((digest.clone(), manifests, annotations)),
                None => {}
            }
        }

        // Entries of new lists that are images the store does not hold yet.
        let mut entries = BTreeSet::new();
        for (_, manifests, _) in &lists {
            for entry in manifests {
                let is_image_entry =
                    entry.media_type.is_empty() || media_type::is_image(&entry.media_type);
                if is_image_entry
                    && !stored.manifests.contains_key(&entry.digest)
                    && !fetched.usable.contains_key(&entry.digest)
                {
                    entries.insert(entry.digest.clone());
                }
            }
        }
        self.get_manifests(&entries, fetched).await?;
        for digest in &entries {
            match self.parse(digest, fetched) {
                Some(Manifest::Image {
                    config,
                    annotations,
                    ..
                }) => pending.push(PendingImage {
                    media_type: media_type_of(&fetched.bodies[digest], true),
                    digest: digest.clone(),
                    config,
                    annotations,
                }),
                Some(Manifest::List { .. }) => {
                    debug!(entry = %digest, "nested image index entry skipped");
                }
                None => {}
            }
        }

        self.configs(pending, fetched).await?;

        for (digest, manifests, annotations) in lists {
            let list = assemble_list(
                &digest,
                media_type_of(&fetched.bodies[&digest], false),
                annotations,
                &manifests,
                stored,
                fetched,
            );
            fetched.usable.insert(digest, list);
        }
        Ok(())
    }

    /// GETs, by digest, the manifests of `digests` not fetched yet.
    async fn get_manifests(
        &self,
        digests: &BTreeSet<Digest>,
        fetched: &mut Fetched,
    ) -> Result<(), SyncError> {
        let wanted: Vec<&Digest> = digests
            .iter()
            .filter(|d| {
                !fetched.bodies.contains_key(*d)
                    && !fetched.usable.contains_key(*d)
                    && !fetched.vanished.contains(*d)
            })
            .collect();
        let gets: Vec<_> = wanted
            .into_iter()
            .map(|digest| self.get_manifest(digest.clone()))
            .collect();
        let results: Vec<(Digest, Result<FetchedManifest, RegistryError>)> = stream::iter(gets)
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (digest, result) in results {
            match result {
                Ok(manifest) => {
                    fetched.manifests += 1;
                    fetched.bodies.insert(digest, manifest);
                }
                Err(RegistryError::NotFound { .. }) => {
                    warn!(%digest, "manifest vanished while refetching");
                    fetched.vanished.insert(digest);
                }
                Err(e) if is_item_problem(&e) => {
                    fetched.usable.insert(digest, Usable::Bad(e.to_string()));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn get_manifest(
        &self,
        digest: Digest,
    ) -> (Digest, Result<FetchedManifest, RegistryError>) {
        let reference = Reference::Digest(digest.clone());
        let result = self.registry.manifest(self.repository, &reference).await;
        (digest, result)
    }

    /// The parsed manifest of `digest`; `None` when it vanished, was judged already, or
    /// cannot be parsed (then recorded as unusable).
    fn parse(&self, digest: &Digest, fetched: &mut Fetched) -> Option<Manifest> {
        if fetched.usable.contains_key(digest) {
            return None;
        }
        let body = fetched.bodies.get(digest)?;
        match crate::registry::manifest::parse(&body.media_type, &body.bytes) {
            Ok(manifest) => Some(manifest),
            Err(e) => {
                warn!(%digest, error = %e, "manifest not indexed");
                fetched
                    .usable
                    .insert(digest.clone(), Usable::Bad(e.to_string()));
                None
            }
        }
    }

    /// Reads the configs of `pending` images (each digest once, through the cache) and
    /// records the images. Artifacts (a config type that is not an image config) are
    /// indexed without one.
    async fn configs(
        &self,
        pending: Vec<PendingImage>,
        fetched: &mut Fetched,
    ) -> Result<(), SyncError> {
        let reads: Vec<_> = pending
            .into_iter()
            .map(|image| self.config(image))
            .collect();
        let results: Vec<(PendingImage, ConfigOutcome, bool)> = stream::iter(reads)
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        for (image, outcome, requested) in results {
            fetched.blobs += usize::from(requested);
            let usable = match outcome {
                Ok(config) => Usable::Image(Image {
                    digest: image.digest.clone(),
                    media_type: image.media_type,
                    os: config.os.clone(),
                    architecture: config.architecture.clone(),
                    annotations: image.annotations,
                    labels: config.labels.clone(),
                    config_digest: image.config.digest,
                }),
                Err(reason) => Usable::Bad(reason),
            };
            fetched.usable.insert(image.digest, usable);
        }
        Ok(())
    }
}

impl Fetch<'_> {
    /// The config of `image` and whether it was requested; none for artifacts.
    async fn config(
        &self,
        image: PendingImage,
    ) -> Result<(PendingImage, ConfigOutcome, bool), RegistryError> {
        if !media_type::is_image_config(&image.config.media_type) {
            return Ok((image, Ok(Default::default()), false));
        }
        let (outcome, requested) = self
            .configs
            .get(self.registry, self.repository, &image.config.digest)
            .await?;
        Ok((image, outcome, requested))
    }
}

/// The list with the entries the index can hold: images stored or fetched, in the order
/// of the index, each once. Entries that are unusable are named; nested indexes and
/// artifacts are not images, and left out silently.
fn assemble_list(
    digest: &Digest,
    media_type: String,
    annotations: StringMap,
    manifests: &[Descriptor],
    stored: &StoredRepository,
    fetched: &Fetched,
) -> Usable {
    let mut entries: Vec<Digest> = Vec::new();
    let mut skipped: Vec<(Digest, String)> = Vec::new();
    for entry in manifests {
        let child = &entry.digest;
        if entries.contains(child) || skipped.iter().any(|(d, _)| d == child) {
            continue;
        }
        if !entry.media_type.is_empty() && !media_type::is_image(&entry.media_type) {
            continue;
        }
        match (
            stored.manifests.get(child).map(|k| k.is_list),
            fetched.usable.get(child),
        ) {
            (Some(false), _) | (None, Some(Usable::Image(_))) => entries.push(child.clone()),
            (None, Some(Usable::Bad(reason))) => skipped.push((child.clone(), reason.clone())),
            (None, None) if fetched.vanished.contains(child) => {
                skipped.push((child.clone(), "not found in the registry".into()))
            }
            _ => {} // a nested list
        }
    }
    Usable::List {
        list: ImageList {
            digest: digest.clone(),
            media_type,
            annotations,
            entries,
        },
        skipped,
    }
}

/// The media type to record: the registry's, or the kind the body turned out to be when
/// the registry's Content-Type was generic.
fn media_type_of(body: &FetchedManifest, is_image: bool) -> String {
    if media_type::is_manifest(&body.media_type) {
        body.media_type.clone()
    } else if is_image {
        media_type::OCI_MANIFEST.to_owned()
    } else {
        media_type::OCI_INDEX.to_owned()
    }
}
