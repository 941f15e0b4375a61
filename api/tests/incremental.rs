//! Answers assembled from cached per-repository parts (issue 13) against fresh full
//! renders: after each of many pushes, deletions and moved tags, refetched from a real
//! docker-registry into a real PostgreSQL, every answer the api gives (plain and gzip,
//! decompressed) equals byte for byte what a fresh render gives, and its ETag equals the
//! one a fresh api process gives.

mod common;

use std::io::Read;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use common::flatpak_app;
use regindex::config::{IndexProfile, RepositoryPattern};
use regindex::index::render::{render_parts, render_profile_index, Parts, RenderedParts};
use regindex::index::Query;
use regindex_testkit::app::App;
use regindex_testkit::{ImageSpec, ListFormat};
use tower::ServiceExt;

/// (path, query) of each answer compared; `shaped` and `ranked` are profiles.
const QUERIES: &[(&str, &str)] = &[
    ("/index/static", ""),
    (
        "/index/static",
        "label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest",
    ),
    ("/index/dynamic", "tag%3Amatches=v*&architecture=arm64"),
    ("/index/static", "repository=apps/a1&repository=apps/a2"),
    ("/profiles/shaped/index/static", "tag=latest"),
    ("/profiles/ranked/index/static", ""),
];

const REPOSITORIES: &[&str] = &[
    "apps/a0", "apps/a1", "apps/a2", "apps/a3", "apps/a4", "tools/t0", "tools/t1",
];
const TAGS: &[&str] = &["latest", "v1", "v2"];

/// A small deterministic generator (the steps must be the same in every run).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

fn profiles() -> Vec<(String, IndexProfile)> {
    vec![
        (
            "shaped".into(),
            IndexProfile {
                repository_exclude: vec![RepositoryPattern::new("tools/.*").unwrap()],
                flatpak_annotations: true,
                force_flatpak_token: true,
                ..IndexProfile::default()
            },
        ),
        (
            "ranked".into(),
            IndexProfile {
                repository_priority: vec![RepositoryPattern::new("apps/a3").unwrap()],
                ..IndexProfile::default()
            },
        ),
    ]
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Status, ETag and body of one request to `app`.
async fn get(app: &axum::Router, uri: &str, gzip: bool) -> (StatusCode, String, Vec<u8>) {
    let mut request = Request::get(uri);
    if gzip {
        request = request.header(header::ACCEPT_ENCODING, "gzip");
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let etag = response.headers()[header::ETAG]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        response.headers().contains_key(header::CONTENT_ENCODING),
        gzip,
        "{uri}"
    );
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    (status, etag, body)
}

/// One image spec per step: a Flatpak app (icons of one of a few colours, so that
/// repositories share icons) or a plain image, for amd64 or arm64.
fn spec(rng: &mut Lcg, repository: &str, step: usize) -> ImageSpec {
    let arch = ["amd64", "arm64"][rng.below(2)];
    let colour = [[200, 0, 0], [0, 200, 0], [0, 0, 200]][rng.below(3)];
    let spec = if repository.starts_with("apps/") {
        let app_id = format!("org.example.{}", repository.replace('/', "_"));
        flatpak_app(&app_id, arch, colour)
    } else {
        ImageSpec::new(arch).label("step", &step.to_string())
    };
    spec.seed(step as u64 * 1000 + rng.below(1000) as u64)
}

#[tokio::test]
async fn incremental_answers_equal_fresh_renders_after_many_changes() {
    let stack = common::start(|config| {
        config.icons.extract = true;
        config.index_profiles = profiles().into_iter().collect();
    })
    .await;
    // One api whose cache lives through all the steps.
    let app = common::router(&stack);
    let mut rng = Lcg(13);
    const STEPS: usize = 40;
    for step in 0..STEPS {
        let repository = REPOSITORIES[rng.below(REPOSITORIES.len())];
        let tagged = stack.registry.tagged().await.unwrap();
        let tags_of: Vec<(String, String)> = tagged
            .iter()
            .filter(|((r, _), _)| r == repository)
            .map(|((_, t), d)| (t.clone(), d.clone()))
            .collect();
        let action = if step < REPOSITORIES.len() {
            0
        } else {
            rng.below(10)
        };
        let tag = TAGS[rng.below(TAGS.len())];
        match action {
            // Delete a manifest (every tag on it goes).
            7 | 8 if !tags_of.is_empty() => {
                let (_, digest) = &tags_of[rng.below(tags_of.len())];
                stack
                    .registry
                    .delete_manifest(repository, digest)
                    .await
                    .unwrap();
            }
            // Move a tag onto another tag's manifest.
            5 | 6 if tags_of.len() > 1 => {
                let (_, digest) = &tags_of[rng.below(tags_of.len())];
                stack.registry.tag(repository, tag, digest).await.unwrap();
            }
            // Push an image list.
            9 => {
                let specs = [
                    spec(&mut rng, repository, step),
                    spec(&mut rng, repository, step + STEPS),
                ];
                stack
                    .registry
                    .push_list(repository, Some(tag), &specs, ListFormat::OciIndex)
                    .await
                    .unwrap();
            }
            // Push an image.
            _ => {
                let image = spec(&mut rng, repository, step);
                stack
                    .registry
                    .push_image(repository, Some(tag), &image)
                    .await
                    .unwrap();
            }
        }
        stack.refetch(repository).await.unwrap();

        // A fresh api (empty cache) stands for another api process.
        let fresh_app = common::router(&stack);
        for (path, raw) in QUERIES {
            let uri = format!("{path}?{raw}");
            let profile = path
                .strip_prefix("/profiles/")
                .and_then(|p| p.split('/').next())
                .map(|name| stack.config.index_profiles[name].clone())
                .unwrap_or_default();
            let expected = render_profile_index(
                &stack.store,
                &Query::parse(raw).unwrap(),
                stack.config.public_registry_url(),
                &stack.config.icons,
                &profile,
            )
            .await
            .unwrap()
            .body;
            let (status, etag, plain) = get(&app, &uri, false).await;
            assert_eq!(status, StatusCode::OK);
            assert!(
                plain == expected,
                "step {step}: {uri} differs from a fresh render:\n{}\n{}",
                String::from_utf8_lossy(&plain),
                String::from_utf8_lossy(&expected)
            );
            let (_, gzip_etag, gzipped) = get(&app, &uri, true).await;
            assert!(gunzip(&gzipped) == expected, "step {step}: gzip {uri}");
            let (_, fresh_etag, _) = get(&fresh_app, &uri, false).await;
            let (_, fresh_gzip_etag, fresh_gzipped) = get(&fresh_app, &uri, true).await;
            assert_eq!(etag, fresh_etag, "step {step}: {uri}");
            assert_eq!(gzip_etag, fresh_gzip_etag, "step {step}: {uri}");
            assert!(fresh_gzipped == gzipped, "step {step}: gzip bytes of {uri}");
        }
    }
    stack.finish().await;
}

/// A push re-renders its own repository's part only; the answer still equals a fresh
/// render, and a priority profile (which weighs repositories against each other)
/// re-renders everything.
/// The answer to every repository's images, reusing `previous`'s parts.
async fn render_all(stack: &App, previous: Option<&Parts>, profile: IndexProfile) -> RenderedParts {
    render_parts(
        &stack.store,
        &Query::default(),
        stack.config.public_registry_url(),
        &stack.config.icons,
        &profile,
        previous,
        true,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_push_rebuilds_only_its_repository() {
    let stack = common::start(|config| config.icons.extract = true).await;
    let push = |repository: &'static str, app: String| {
        let stack = &stack;
        async move {
            let image = flatpak_app(&app, "amd64", [9, 9, 9]);
            stack
                .registry
                .push_image(repository, Some("latest"), &image)
                .await
                .unwrap();
            stack.refetch(repository).await.unwrap();
        }
    };
    // Deletes the repository's only manifest: the repository goes from the store.
    let remove = |repository: &'static str| {
        let stack = &stack;
        async move {
            let tagged = stack.registry.tagged().await.unwrap();
            let digest = &tagged[&(repository.to_owned(), "latest".to_owned())];
            stack
                .registry
                .delete_manifest(repository, digest)
                .await
                .unwrap();
            stack.refetch(repository).await.unwrap();
        }
    };
    for (i, repository) in REPOSITORIES.iter().enumerate() {
        push(repository, format!("org.example.App{i}")).await;
    }
    let render = |previous, profile| render_all(&stack, previous, profile);
    let first = render(None, IndexProfile::default()).await;
    assert_eq!(first.rebuilt, REPOSITORIES.len());
    let again = render(Some(&*first.parts), IndexProfile::default()).await;
    assert_eq!(again.rebuilt, 0, "nothing changed");
    assert_eq!(again.json(), first.json());

    // Renders again on `previous`'s parts, checks the answer against a fresh render
    // (bytes, gzip bytes and ETag hash) and how many parts were rebuilt.
    let render_again = |previous: RenderedParts, rebuilt: usize| {
        let stack = &stack;
        async move {
            let render = |previous, profile| render_all(stack, previous, profile);
            let again = render(Some(&*previous.parts), IndexProfile::default()).await;
            let fresh = render(None, IndexProfile::default()).await;
            assert_eq!(again.rebuilt, rebuilt);
            assert_eq!(again.json(), fresh.json());
            assert_eq!(again.gzip(), fresh.gzip());
            assert_eq!(again.hash(), fresh.hash());
            again
        }
    };
    push("apps/a2", "org.example.Changed".to_owned()).await;
    let after = render_again(again, 1).await;
    assert_ne!(after.json(), first.json());

    // A repository goes while another arrives: the number of repositories stays the
    // same, and still only the new one is read.
    remove("apps/a0").await;
    push("apps/new", "org.example.New".to_owned()).await;
    let swapped = render_again(after, 1).await;
    assert!(!swapped.json().windows(7).any(|w| w == b"apps/a0"));
    // One goes and none arrives.
    remove("apps/a1").await;
    render_again(swapped, 0).await;

    let ranked = IndexProfile {
        repository_priority: vec![RepositoryPattern::new("apps/.*").unwrap()],
        ..IndexProfile::default()
    };
    let ranked_first = render(None, ranked.clone()).await;
    let ranked_again = render(Some(&*ranked_first.parts), ranked).await;
    assert_eq!(
        ranked_again.rebuilt,
        REPOSITORIES.len() - 1,
        "a0 and a1 went, new came"
    );
    stack.finish().await;
}
