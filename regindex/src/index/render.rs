//! The index response as served: the one function that turns a query into the bytes of
//! `/index/static`, `/index/dynamic` and the static index files, so that they can never
//! differ.

use std::collections::{HashMap, HashSet};

use crate::catalog::icons;
use crate::config::IconsConfig;
use crate::index::{build_response, ImageFields, IndexProfile, IndexResponse, Query};
use crate::store::{Store, StoreError};

/// A rendered index response and the data version it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedIndex {
    pub data_version: i64,
    pub body: Vec<u8>,
}

/// Runs `query`, builds the response with `registry` as its `Registry`, replaces icon
/// data URIs by icon URLs when `icons.extract` is on, and serialises it. The CPU work
/// (building, decoding and hashing icons, serialising) runs off the async executor.
pub async fn render_index(
    store: &Store,
    query: &Query,
    registry: &str,
    icons: &IconsConfig,
) -> Result<RenderedIndex, StoreError> {
    render_profile_index(store, query, registry, icons, &IndexProfile::default()).await
}

/// [`render_index`] with an index profile applied to the built response, before icon
/// URLs are substituted (so copied icon annotations get URLs too). Static files and
/// `/profiles/<name>/index/...` both come from here.
pub async fn render_profile_index(
    store: &Store,
    query: &Query,
    registry: &str,
    icons: &IconsConfig,
    profile: &IndexProfile,
) -> Result<RenderedIndex, StoreError> {
    let snapshot = store.query_index(query).await?;
    let data_version = snapshot.data_version;
    let (query, registry, config) = (query.clone(), registry.to_owned(), icons.clone());
    let profile = profile.clone();
    let (mut response, files) = blocking(move || {
        let mut response = build_response(&registry, &query, snapshot.listings);
        profile.apply(&mut response);
        let files = if config.extract {
            icon_files(&response, config.max_bytes)
        } else {
            HashMap::new()
        };
        (response, files)
    })
    .await?;
    let urls = if files.is_empty() {
        HashMap::new()
    } else {
        icon_urls(store, files, icons).await?
    };
    let body = blocking(move || {
        rewrite_response(&mut response, &urls);
        response.to_json()
    })
    .await?;
    Ok(RenderedIndex { data_version, body })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Inconsistent {
            repository: String::new(),
            detail: format!("index rendering task failed: {e}"),
        })
}

/// Each distinct icon data URI of `response` with the file name of its icon (`None`
/// when it is not a valid icon). The same icon appears in every image of an app (all
/// arches, all tags): each distinct value is decoded and hashed once. Only the header is
/// checked here: a URL is only given for a stored icon, and those were checked fully.
fn icon_files(response: &IndexResponse, max_bytes: usize) -> HashMap<String, Option<String>> {
    let mut files: HashMap<String, Option<String>> = HashMap::new();
    let mut visit = |image: &ImageFields| {
        for map in [&image.labels, &image.annotations] {
            for key in icons::ICON_KEYS {
                if let Some(value) = map.get(key) {
                    if icons::is_data_uri(value) && !files.contains_key(value) {
                        let file = icons::parse_data_uri(value, max_bytes, icons::Check::Header)
                            .ok()
                            .map(|icon| icon.file_name());
                        files.insert(value.clone(), file);
                    }
                }
            }
        }
    };
    for repository in &response.results {
        repository.images.iter().for_each(|i| visit(&i.image));
        repository
            .lists
            .iter()
            .flat_map(|l| &l.images)
            .for_each(&mut visit);
    }
    files
}

/// Data URI -> icon URL, for the icons that are stored. An icon that is not stored
/// (invalid, too large, or ingested before extraction and not backfilled) keeps its data
/// URI, so the answer is never worse than without extraction.
async fn icon_urls(
    store: &Store,
    files: HashMap<String, Option<String>>,
    config: &IconsConfig,
) -> Result<HashMap<String, String>, StoreError> {
    let hashes: Vec<String> = files
        .values()
        .flatten()
        .filter_map(|file| file.split_once('.').map(|(hash, _)| hash.to_owned()))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let stored = store.stored_icons(&hashes).await?;
    Ok(files
        .into_iter()
        .filter_map(|(value, file)| {
            let file = file?;
            let hash = file.split_once('.').map(|(hash, _)| hash)?;
            stored
                .contains(hash)
                .then(|| (value, icons::icon_url(config.base_url.as_deref(), &file)))
        })
        .collect())
}

fn for_each_image(response: &mut IndexResponse, mut f: impl FnMut(&mut ImageFields)) {
    for repository in &mut response.results {
        for image in &mut repository.images {
            f(&mut image.image);
        }
        for list in &mut repository.lists {
            for image in &mut list.images {
                f(image);
            }
        }
    }
}

/// Replaces icon values found in `urls` (data URI -> URL) in every image's labels and
/// annotations.
pub fn rewrite_response(response: &mut IndexResponse, urls: &HashMap<String, String>) {
    if urls.is_empty() {
        return;
    }
    for_each_image(response, |image| {
        for map in [&mut image.labels, &mut image.annotations] {
            icons::rewrite(map, |value| urls.get(value).cloned());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::{ImageResult, ListResult, RepositoryResult};
    use crate::model::StringMap;

    fn fields(icon: &str) -> ImageFields {
        ImageFields {
            digest: "sha256:x".into(),
            media_type: "m".into(),
            os: "linux".into(),
            architecture: "amd64".into(),
            annotations: StringMap::from([(icons::ICON_KEYS[1].to_owned(), icon.to_owned())]),
            labels: StringMap::from([
                (icons::ICON_KEYS[0].to_owned(), icon.to_owned()),
                ("other".to_owned(), icon.to_owned()),
            ]),
        }
    }

    #[test]
    fn rewrites_images_and_list_entries_only_for_known_values() {
        let mut response = IndexResponse {
            registry: "/".into(),
            results: vec![RepositoryResult {
                name: "a".into(),
                images: vec![ImageResult {
                    tags: vec!["latest".into()],
                    image: fields("data:known"),
                }],
                lists: vec![ListResult {
                    tags: vec![],
                    digest: "sha256:l".into(),
                    media_type: "m".into(),
                    images: vec![fields("data:known"), fields("data:unknown")],
                }],
            }],
        };
        let urls = HashMap::from([("data:known".to_owned(), "/icons/h.png".to_owned())]);
        rewrite_response(&mut response, &urls);
        let repo = &response.results[0];
        assert_eq!(
            repo.images[0].image.labels[icons::ICON_KEYS[0]],
            "/icons/h.png"
        );
        assert_eq!(
            repo.images[0].image.annotations[icons::ICON_KEYS[1]],
            "/icons/h.png"
        );
        assert_eq!(repo.images[0].image.labels["other"], "data:known");
        assert_eq!(
            repo.lists[0].images[0].labels[icons::ICON_KEYS[0]],
            "/icons/h.png"
        );
        assert_eq!(
            repo.lists[0].images[1].labels[icons::ICON_KEYS[0]],
            "data:unknown"
        );
    }
}
