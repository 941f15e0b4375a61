//! The index response (PROTOCOL.md "Response") and the one function that builds it.
//!
//! Order, so that equal data gives equal bytes:
//! - `Results`: repositories by name (bytewise);
//! - `Images` and `Lists` of a repository: by digest (bytewise);
//! - `Images` inside a list: in the order of the image index (first occurrence of a digest);
//! - `Tags`: bytewise;
//! - `Labels` and `Annotations`: keys sorted bytewise (they are `BTreeMap`s).
//!
//! Every field is always present (empty `[]`/`{}`/`""` rather than omitted or null):
//! newer Flatpak clients reject answers with missing or null fields.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::query::Query;
use crate::model::{Digest, Image, RepositoryName, StringMap, Tag};

/// A directly tagged image, as the store hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedImage {
    /// All the tags pointing at the image.
    pub tags: Vec<Tag>,
    pub image: Image,
}

/// A tagged image list with its entries (in index order), as the store hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedList {
    pub tags: Vec<Tag>,
    pub digest: Digest,
    pub media_type: String,
    pub entries: Vec<Image>,
}

/// Candidate content of one repository. The store may hand over more than the query
/// selects (its SQL is a pre-filter); [`build_response`] applies the exact conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub name: RepositoryName,
    pub images: Vec<TaggedImage>,
    pub lists: Vec<TaggedList>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexResponse {
    #[serde(rename = "Registry")]
    pub registry: String,
    #[serde(rename = "Results")]
    pub results: Vec<RepositoryResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepositoryResult {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Images")]
    pub images: Vec<ImageResult>,
    #[serde(rename = "Lists")]
    pub lists: Vec<ListResult>,
}

/// An image tagged directly in the repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageResult {
    #[serde(rename = "Tags")]
    pub tags: Vec<String>,
    #[serde(flatten)]
    pub image: ImageFields,
}

/// The fields every image carries (a list entry carries only these, no `Tags`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageFields {
    #[serde(rename = "Digest")]
    pub digest: String,
    #[serde(rename = "MediaType")]
    pub media_type: String,
    #[serde(rename = "OS")]
    pub os: String,
    #[serde(rename = "Architecture")]
    pub architecture: String,
    #[serde(rename = "Annotations")]
    pub annotations: StringMap,
    #[serde(rename = "Labels")]
    pub labels: StringMap,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListResult {
    #[serde(rename = "Tags")]
    pub tags: Vec<String>,
    #[serde(rename = "Digest")]
    pub digest: String,
    #[serde(rename = "MediaType")]
    pub media_type: String,
    /// Only the entries that match the query.
    #[serde(rename = "Images")]
    pub images: Vec<ImageFields>,
}

impl IndexResponse {
    /// The response body. Compact JSON; equal responses give equal bytes.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings, vectors and string maps cannot fail.
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
    }
}

impl From<&Image> for ImageFields {
    fn from(image: &Image) -> Self {
        Self {
            digest: image.digest.to_string(),
            media_type: image.media_type.clone(),
            os: image.os.clone(),
            architecture: image.architecture.clone(),
            annotations: image.annotations.clone(),
            labels: image.labels.clone(),
        }
    }
}

fn image_matches(query: &Query, image: &Image) -> bool {
    query.matches_image(
        &image.os,
        &image.architecture,
        &image.labels,
        &image.annotations,
    )
}

fn sorted_tags<'a>(tags: impl IntoIterator<Item = &'a Tag>) -> Vec<String> {
    tags.into_iter()
        .map(|t| t.as_str().to_owned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Applies `query` to the candidates and builds the response in the documented order.
///
/// - a tagged image is returned when its tags and the image itself match;
/// - a tagged list is returned when its tags match and at least one entry matches, with
///   only the matching entries; images reached only through lists are not repeated in
///   the repository's `Images`;
/// - repositories with nothing to return are left out.
pub fn build_response(
    registry: &str,
    query: &Query,
    listings: impl IntoIterator<Item = Listing>,
) -> IndexResponse {
    // Keyed maps give the order and merge duplicates (one repository handed over twice,
    // one digest listed twice).
    type Images = BTreeMap<Digest, (BTreeSet<String>, ImageFields)>;
    type Lists = BTreeMap<Digest, ListResult>;
    let mut repositories: BTreeMap<RepositoryName, (Images, Lists)> = BTreeMap::new();
    for listing in listings {
        if !query.matches_repository(&listing.name) {
            continue;
        }
        let (images, lists) = repositories.entry(listing.name).or_default();
        for tagged in listing.images {
            if !query.matches_tags(&tagged.tags) || !image_matches(query, &tagged.image) {
                continue;
            }
            let (tags, _) = images
                .entry(tagged.image.digest.clone())
                .or_insert_with(|| (BTreeSet::new(), ImageFields::from(&tagged.image)));
            tags.extend(tagged.tags.iter().map(|t| t.as_str().to_owned()));
        }
        for tagged in listing.lists {
            if !query.matches_tags(&tagged.tags) {
                continue;
            }
            let mut seen = BTreeSet::new();
            let entries: Vec<ImageFields> = tagged
                .entries
                .iter()
                .filter(|image| image_matches(query, image) && seen.insert(image.digest.clone()))
                .map(ImageFields::from)
                .collect();
            if entries.is_empty() {
                continue;
            }
            lists.insert(
                tagged.digest.clone(),
                ListResult {
                    tags: sorted_tags(&tagged.tags),
                    digest: tagged.digest.to_string(),
                    media_type: tagged.media_type,
                    images: entries,
                },
            );
        }
    }
    let results = repositories
        .into_iter()
        .filter(|(_, (images, lists))| !images.is_empty() || !lists.is_empty())
        .map(|(name, (images, lists))| RepositoryResult {
            name: name.to_string(),
            images: images
                .into_values()
                .map(|(tags, image)| ImageResult {
                    tags: tags.into_iter().collect(),
                    image,
                })
                .collect(),
            lists: lists.into_values().collect(),
        })
        .collect();
    IndexResponse {
        registry: registry.to_owned(),
        results,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::media_type;

    fn digest(n: u8) -> Digest {
        Digest::sha256_of(&[n])
    }

    fn tag(s: &str) -> Tag {
        Tag::parse(s).unwrap()
    }

    fn image(n: u8, arch: &str, labels: &[(&str, &str)]) -> Image {
        Image {
            digest: digest(n),
            media_type: media_type::OCI_MANIFEST.into(),
            os: "linux".into(),
            architecture: arch.into(),
            annotations: StringMap::from([("n".to_string(), n.to_string())]),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            config_digest: digest(n + 100),
        }
    }

    fn fixture() -> Vec<Listing> {
        let app = [("org.flatpak.ref", "app/org.example.App/x86_64/stable")];
        vec![
            Listing {
                name: RepositoryName::parse("zz/last").unwrap(),
                images: vec![TaggedImage {
                    tags: vec![tag("latest")],
                    image: image(9, "amd64", &[]),
                }],
                lists: vec![],
            },
            Listing {
                name: RepositoryName::parse("apps/app").unwrap(),
                images: vec![
                    TaggedImage {
                        tags: vec![tag("v2"), tag("latest"), tag("2")],
                        image: image(2, "amd64", &app),
                    },
                    TaggedImage {
                        tags: vec![tag("old")],
                        image: image(1, "amd64", &app),
                    },
                ],
                lists: vec![TaggedList {
                    tags: vec![tag("multi")],
                    digest: digest(50),
                    media_type: media_type::OCI_INDEX.into(),
                    entries: vec![image(3, "arm64", &app), image(2, "amd64", &app)],
                }],
            },
        ]
    }

    #[test]
    fn everything_in_documented_order() {
        let r = build_response("/", &Query::default(), fixture());
        let names: Vec<_> = r.results.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["apps/app", "zz/last"]);
        let app = &r.results[0];
        let mut digests: Vec<_> = app.images.iter().map(|i| i.image.digest.clone()).collect();
        let sorted = {
            let mut d = digests.clone();
            d.sort();
            d
        };
        assert_eq!(digests, sorted);
        digests.dedup();
        assert_eq!(digests.len(), 2);
        let v2 = app
            .images
            .iter()
            .find(|i| i.image.digest == digest(2).to_string())
            .unwrap();
        assert_eq!(v2.tags, ["2", "latest", "v2"]);
        // List entries stay in index order.
        let entries: Vec<_> = app.lists[0]
            .images
            .iter()
            .map(|i| i.digest.clone())
            .collect();
        assert_eq!(entries, [digest(3).to_string(), digest(2).to_string()]);
    }

    #[test]
    fn list_entries_filtered_and_empty_lists_dropped() {
        let q = Query::parse("architecture=arm64").unwrap();
        let r = build_response("/", &q, fixture());
        assert_eq!(r.results.len(), 1);
        assert!(r.results[0].images.is_empty());
        assert_eq!(r.results[0].lists[0].images.len(), 1);
        assert_eq!(r.results[0].lists[0].images[0].architecture, "arm64");

        let q = Query::parse("architecture=s390x").unwrap();
        assert!(build_response("/", &q, fixture()).results.is_empty());
    }

    #[test]
    fn tags_select_but_all_tags_are_returned() {
        let q = Query::parse("tag=v2").unwrap();
        let r = build_response("/", &q, fixture());
        assert_eq!(r.results.len(), 1);
        assert_eq!(r.results[0].images.len(), 1);
        assert_eq!(r.results[0].images[0].tags, ["2", "latest", "v2"]);
        assert!(r.results[0].lists.is_empty());

        // An image tagged only through a list appears only inside the list.
        let q = Query::parse("tag=multi").unwrap();
        let r = build_response("/", &q, fixture());
        assert!(r.results[0].images.is_empty());
        assert_eq!(r.results[0].lists[0].images.len(), 2);
    }

    #[test]
    fn serialises_exactly() {
        let q = Query::parse("repository=zz/last").unwrap();
        let r = build_response("https://registry.example.org", &q, fixture());
        let json = String::from_utf8(r.to_json()).unwrap();
        let expected = format!(
            concat!(
                r#"{{"Registry":"https://registry.example.org","Results":[{{"Name":"zz/last","Images":[{{"#,
                r#""Tags":["latest"],"Digest":"{}","MediaType":"application/vnd.oci.image.manifest.v1+json","#,
                r#""OS":"linux","Architecture":"amd64","Annotations":{{"n":"9"}},"Labels":{{}}}}],"Lists":[]}}]}}"#
            ),
            digest(9)
        );
        assert_eq!(json, expected);

        let r = build_response("/", &Query::parse("tag=multi").unwrap(), fixture());
        let v: serde_json::Value = serde_json::from_slice(&r.to_json()).unwrap();
        let list = &v["Results"][0]["Lists"][0];
        assert_eq!(list["MediaType"], media_type::OCI_INDEX);
        assert!(list["Images"][0].get("Tags").is_none());
        for field in [
            "Digest",
            "MediaType",
            "OS",
            "Architecture",
            "Annotations",
            "Labels",
        ] {
            assert!(!list["Images"][0][field].is_null(), "{field}");
        }
        assert_eq!(v["Results"][0]["Images"], serde_json::json!([]));

        let empty = build_response("/", &Query::parse("tag=nope").unwrap(), fixture());
        assert_eq!(empty.to_json(), br#"{"Registry":"/","Results":[]}"#);
    }

    #[test]
    fn input_order_does_not_change_bytes() {
        let mut reversed = fixture();
        reversed.reverse();
        for l in &mut reversed {
            l.images.reverse();
        }
        let q = Query::default();
        assert_eq!(
            build_response("/", &q, fixture()).to_json(),
            build_response("/", &q, reversed).to_json()
        );
    }
}
