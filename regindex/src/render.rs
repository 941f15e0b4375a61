//! The index response as served: the one function that turns a query into the bytes of
//! `/index/static`, `/index/dynamic` and the static index files, so that they can never
//! differ.

use std::collections::{HashMap, HashSet};

use crate::config::IconsConfig;
use crate::icons;
use crate::index::{build_response, ImageFields, IndexResponse, Query};
use crate::store::{Store, StoreError};

/// A rendered index response and the data version it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedIndex {
    pub data_version: i64,
    pub body: Vec<u8>,
}

/// Runs `query`, builds the response with `registry` as its `Registry`, replaces icon
/// data URIs by icon URLs when `icons.extract` is on, and serialises it.
pub async fn render_index(
    store: &Store,
    query: &Query,
    registry: &str,
    icons: &IconsConfig,
) -> Result<RenderedIndex, StoreError> {
    let snapshot = store.query_index(query).await?;
    let mut response = build_response(registry, query, snapshot.listings);
    if icons.extract {
        extract_icon_urls(store, &mut response, icons).await?;
    }
    Ok(RenderedIndex {
        data_version: snapshot.data_version,
        body: response.to_json(),
    })
}

/// Replaces every icon data URI of `response` whose icon is stored by its URL. An icon
/// that is not stored (invalid, too large, or stored before extraction was enabled and
/// not backfilled) keeps its data URI, so the answer is never worse than without
/// extraction.
async fn extract_icon_urls(
    store: &Store,
    response: &mut IndexResponse,
    config: &IconsConfig,
) -> Result<(), StoreError> {
    // The same icon appears in every image of an app (all arches, all tags): decode and
    // hash each distinct value once.
    let mut parsed: HashMap<String, Option<String>> = HashMap::new();
    for_each_image(response, |image| {
        for map in [&image.labels, &image.annotations] {
            for key in icons::ICON_KEYS {
                if let Some(value) = map.get(key) {
                    if icons::is_data_uri(value) && !parsed.contains_key(value) {
                        let file = icons::parse_data_uri(value, config.max_bytes)
                            .ok()
                            .map(|icon| icon.file_name());
                        parsed.insert(value.clone(), file);
                    }
                }
            }
        }
    });
    let hashes: Vec<String> = parsed
        .values()
        .flatten()
        .filter_map(|file| file.split_once('.').map(|(hash, _)| hash.to_owned()))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let stored = store.stored_icons(&hashes).await?;
    let urls: HashMap<String, String> = parsed
        .into_iter()
        .filter_map(|(value, file)| {
            let file = file?;
            let hash = file.split_once('.').map(|(hash, _)| hash)?;
            stored
                .contains(hash)
                .then(|| (value, icons::icon_url(config.base_url.as_deref(), &file)))
        })
        .collect();
    rewrite_response(response, &urls);
    Ok(())
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
