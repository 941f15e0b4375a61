//! The registry client against a real docker-registry 2.8, with what the test pushed as
//! ground truth and the registry's own request log as the record of what was fetched.

use std::collections::BTreeSet;

use regindex::config::RegistryConfig;
use regindex::model::{Digest, Reference, RepositoryName, Tag};
use regindex::registry::{manifest, Manifest, RegistryClient, RegistryError};
use regindex_testkit::{
    ImageFormat, ImageSpec, ListFormat, PushedImage, TestRegistry, TEST_PASSWORD, TEST_USERNAME,
};

fn config(url: String, page_size: u32) -> RegistryConfig {
    RegistryConfig {
        url: url.parse().unwrap(),
        page_size,
        request_timeout: std::time::Duration::from_secs(5),
        ..RegistryConfig::default()
    }
}

fn client(registry: &TestRegistry, page_size: u32) -> RegistryClient {
    RegistryClient::new(&config(registry.url(), page_size)).unwrap()
}

fn repo(name: &str) -> RepositoryName {
    RepositoryName::parse(name).unwrap()
}

fn tag(name: &str) -> Reference {
    Reference::Tag(Tag::parse(name).unwrap())
}

fn by_digest(digest: &str) -> Reference {
    Reference::Digest(Digest::parse(digest).unwrap())
}

/// Fetches `reference` and its config the way the worker does, and checks everything
/// against what the test pushed.
async fn assert_image_matches(
    client: &RegistryClient,
    repository: &RepositoryName,
    reference: &Reference,
    pushed: &PushedImage,
) {
    let fetched = client.manifest(repository, reference).await.unwrap();
    assert_eq!(fetched.digest.as_str(), pushed.digest);
    assert_eq!(fetched.media_type, pushed.media_type);
    assert_eq!(fetched.bytes, pushed.manifest_bytes);
    let Manifest::Image {
        config,
        layers,
        annotations,
    } = manifest::parse(&fetched.media_type, &fetched.bytes).unwrap()
    else {
        panic!("{reference} is not an image")
    };
    assert_eq!(config.digest.as_str(), pushed.config_digest);
    assert_eq!(layers.len(), 1);
    let expected_annotations = match pushed.spec.format {
        ImageFormat::Oci => pushed.spec.annotations.clone(),
        ImageFormat::Docker => Default::default(),
    };
    assert_eq!(annotations, expected_annotations);

    let blob = client.blob(repository, &config.digest).await.unwrap();
    assert_eq!(blob, pushed.config_bytes);
    let image_config = manifest::parse_config(&blob).unwrap();
    assert_eq!(image_config.os, pushed.spec.os);
    assert_eq!(image_config.architecture, pushed.spec.architecture);
    assert_eq!(image_config.labels, pushed.spec.labels);
}

#[tokio::test]
async fn catalog_follows_pagination_across_pages() {
    let registry = TestRegistry::new().await.unwrap();
    let mut expected = BTreeSet::new();
    for i in 0..7 {
        let name = format!("apps/app{i}");
        registry
            .push_image(&name, Some("latest"), &ImageSpec::new("amd64").seed(i))
            .await
            .unwrap();
        expected.insert(name);
    }
    let mark = registry.log_mark().await.unwrap();

    let names = client(&registry, 2).catalog().await.unwrap();
    let names: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
    assert_eq!(names, expected);

    let requests = registry.requests_since(mark).await.unwrap();
    let catalog_pages: Vec<_> = requests
        .iter()
        .filter(|r| r.path() == "/v2/_catalog")
        .collect();
    assert!(
        catalog_pages.len() >= 4,
        "7 names in pages of 2: {catalog_pages:?}"
    );
    assert!(catalog_pages
        .iter()
        .all(|r| r.uri.contains("n=2") && r.status == 200));
}

#[tokio::test]
async fn tags_are_complete_with_a_small_page_size() {
    // docker-registry 2.8 ignores `n` on tags/list and answers every tag at once, without
    // a Link: the client must not stop at page_size nor loop. (Link-driven tag pagination
    // is covered against a stub in registry_client_stub.rs.)
    let registry = TestRegistry::new().await.unwrap();
    let pushed = registry
        .push_image("apps/calc", Some("t0"), &ImageSpec::new("amd64"))
        .await
        .unwrap();
    let mut expected = BTreeSet::from(["t0".to_owned()]);
    for i in 1..6 {
        let t = format!("t{i}");
        registry.tag("apps/calc", &t, &pushed.digest).await.unwrap();
        expected.insert(t);
    }
    let tags = client(&registry, 2).tags(&repo("apps/calc")).await.unwrap();
    let tags: BTreeSet<String> = tags.iter().map(|t| t.to_string()).collect();
    assert_eq!(tags, expected);
}

#[tokio::test]
async fn every_manifest_kind_matches_what_was_pushed() {
    let registry = TestRegistry::new().await.unwrap();
    let client = client(&registry, 100);
    let repository = repo("apps/calc");

    let oci = ImageSpec::flatpak("org.example.Calc", "x86_64").annotation("org.example.extra", "1");
    let oci = registry
        .push_image("apps/calc", Some("oci"), &oci)
        .await
        .unwrap();
    assert_eq!(oci.media_type, regindex::model::media_type::OCI_MANIFEST);
    assert_image_matches(&client, &repository, &tag("oci"), &oci).await;

    let docker = ImageSpec::new("arm64")
        .format(ImageFormat::Docker)
        .label("com.example.kind", "docker");
    let docker = registry
        .push_image("apps/calc", Some("docker"), &docker)
        .await
        .unwrap();
    assert_eq!(
        docker.media_type,
        regindex::model::media_type::DOCKER_MANIFEST
    );
    assert_image_matches(&client, &repository, &tag("docker"), &docker).await;

    for (format, list_tag) in [
        (ListFormat::OciIndex, "index"),
        (ListFormat::DockerList, "list"),
    ] {
        let image_format = match format {
            ListFormat::OciIndex => ImageFormat::Oci,
            ListFormat::DockerList => ImageFormat::Docker,
        };
        let specs = [
            ImageSpec::flatpak("org.example.Calc", "x86_64")
                .format(image_format)
                .seed(10),
            ImageSpec::flatpak("org.example.Calc", "aarch64")
                .format(image_format)
                .seed(11),
        ];
        let annotations = [("org.example.list".to_owned(), list_tag.to_owned())].into();
        let pushed = registry
            .push_list_annotated("apps/calc", Some(list_tag), &specs, format, &annotations)
            .await
            .unwrap();

        let fetched = client.manifest(&repository, &tag(list_tag)).await.unwrap();
        assert_eq!(fetched.digest.as_str(), pushed.digest);
        assert_eq!(fetched.media_type, pushed.media_type);
        let Manifest::List {
            manifests,
            annotations: got,
        } = manifest::parse(&fetched.media_type, &fetched.bytes).unwrap()
        else {
            panic!("{list_tag} is not a list")
        };
        match format {
            ListFormat::OciIndex => assert_eq!(got, annotations),
            ListFormat::DockerList => assert!(got.is_empty()),
        }
        assert_eq!(manifests.len(), pushed.entries.len());
        for (descriptor, entry) in manifests.iter().zip(&pushed.entries) {
            assert_eq!(descriptor.digest.as_str(), entry.digest);
            assert_eq!(descriptor.media_type, entry.media_type);
            let platform = descriptor.platform.as_ref().unwrap();
            assert_eq!(platform.os, entry.spec.os);
            assert_eq!(platform.architecture, entry.spec.architecture);
            assert_image_matches(&client, &repository, &by_digest(&entry.digest), entry).await;
        }
    }
}

#[tokio::test]
async fn resolve_is_a_head_and_gives_the_pushed_digest() {
    let registry = TestRegistry::new().await.unwrap();
    let client = client(&registry, 100);
    let image = registry
        .push_image("base", Some("latest"), &ImageSpec::new("amd64"))
        .await
        .unwrap();
    let list = registry
        .push_list(
            "base",
            Some("multi"),
            &[
                ImageSpec::new("amd64").seed(1),
                ImageSpec::new("arm64").seed(2),
            ],
            ListFormat::OciIndex,
        )
        .await
        .unwrap();
    let mark = registry.log_mark().await.unwrap();

    let (digest, media_type) = client.resolve(&repo("base"), &tag("latest")).await.unwrap();
    assert_eq!(digest.as_str(), image.digest);
    assert_eq!(media_type, image.media_type);
    let (digest, media_type) = client.resolve(&repo("base"), &tag("multi")).await.unwrap();
    assert_eq!(digest.as_str(), list.digest);
    assert_eq!(media_type, list.media_type);
    let (digest, _) = client
        .resolve(&repo("base"), &by_digest(&image.digest))
        .await
        .unwrap();
    assert_eq!(digest.as_str(), image.digest);

    let requests = registry.requests_since(mark).await.unwrap();
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert!(requests
        .iter()
        .all(|r| r.method == "HEAD" && r.is_manifest() && r.status == 200));
}

#[tokio::test]
async fn unknown_things_are_not_found() {
    let registry = TestRegistry::new().await.unwrap();
    let client = client(&registry, 100);
    registry
        .push_image("known", Some("latest"), &ImageSpec::new("amd64"))
        .await
        .unwrap();

    let err = client.tags(&repo("unknown")).await.unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("unknown"), "{err}");
    assert!(!err.is_transient());

    let err = client
        .manifest(&repo("known"), &tag("nope"))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
    let err = client
        .resolve(&repo("known"), &tag("nope"))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
    let missing = Digest::sha256_of(b"missing");
    let err = client.blob(&repo("known"), &missing).await.unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
}

/// docker-registry 2.8.2 stores names up to 255 characters and answers any longer one
/// with a 500 (`UNKNOWN`, its invalid-name error as detail) on every route. Retrying that
/// cannot help: it is a permanent error, which the worker dead-letters at once.
#[tokio::test]
async fn names_the_registry_refuses_are_permanent_errors() {
    let registry = TestRegistry::new().await.unwrap();
    let client = client(&registry, 100);
    let longest = "a".repeat(RepositoryName::MAX_LEN);
    registry
        .push_image(&longest, Some("latest"), &ImageSpec::new("amd64"))
        .await
        .unwrap();
    assert_eq!(client.tags(&repo(&longest)).await.unwrap().len(), 1);

    let too_long = "a".repeat(RepositoryName::MAX_LEN + 1);
    assert!(
        RepositoryName::parse(&too_long).is_err(),
        "refused before any request"
    );
    for path in ["tags/list", "manifests/latest"] {
        let url = format!("{}/v2/{too_long}/{path}", registry.url());
        let response = reqwest::get(url).await.unwrap();
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap();
        assert_eq!(status, 500, "{path}: {}", String::from_utf8_lossy(&body));
        let err = RegistryError::from_answer(status, &body, "repository aaa...");
        assert!(
            matches!(err, RegistryError::NameRefused { .. }),
            "{path}: {err}"
        );
        assert!(!err.is_transient(), "{path}");
    }
}

#[tokio::test]
async fn repository_with_all_tags_deleted_has_no_tags() {
    let registry = TestRegistry::new().await.unwrap();
    let client = client(&registry, 100);
    let a = registry
        .push_image("gone", Some("a"), &ImageSpec::new("amd64"))
        .await
        .unwrap();
    let b = registry
        .push_image("gone", Some("b"), &ImageSpec::new("arm64"))
        .await
        .unwrap();
    registry.delete_manifest("gone", &a.digest).await.unwrap();
    registry.delete_manifest("gone", &b.digest).await.unwrap();

    // docker-registry 2.8 keeps listing the repository and answers `"tags": null`.
    assert_eq!(client.tags(&repo("gone")).await.unwrap(), Vec::<Tag>::new());
    assert!(client.catalog().await.unwrap().contains(&repo("gone")));
    let err = client
        .manifest(&repo("gone"), &by_digest(&a.digest))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn a_stopped_registry_is_a_transient_error_and_recovers() {
    let mut registry = TestRegistry::new().await.unwrap();
    let client = client(&registry, 100);
    let pushed = registry
        .push_image("base", Some("latest"), &ImageSpec::new("amd64"))
        .await
        .unwrap();
    registry.stop();

    let err = client.tags(&repo("base")).await.unwrap_err();
    assert!(matches!(err, RegistryError::Transport { .. }), "{err}");
    assert!(err.is_transient(), "{err}");
    let err = client
        .manifest(&repo("base"), &tag("latest"))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("base:latest"), "{err}");

    registry.start().await.unwrap();
    let (digest, _) = client.resolve(&repo("base"), &tag("latest")).await.unwrap();
    assert_eq!(digest.as_str(), pushed.digest);
}

#[tokio::test]
async fn path_prefix() {
    let registry = TestRegistry::builder()
        .prefix("/mirror")
        .start()
        .await
        .unwrap();
    assert!(registry.url().ends_with("/mirror"));
    for i in 0..3 {
        registry
            .push_image(
                &format!("r{i}"),
                Some("latest"),
                &ImageSpec::new("amd64").seed(i),
            )
            .await
            .unwrap();
    }
    let pushed = registry
        .push_image(
            "r0",
            Some("other"),
            &ImageSpec::flatpak("org.example.A", "amd64"),
        )
        .await
        .unwrap();
    // A trailing slash on the configured URL changes nothing.
    let client = RegistryClient::new(&config(format!("{}/", registry.url()), 2)).unwrap();
    let names: Vec<String> = client
        .catalog()
        .await
        .unwrap()
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(names, ["r0", "r1", "r2"]);
    let tags: Vec<String> = client
        .tags(&repo("r0"))
        .await
        .unwrap()
        .iter()
        .map(|t| t.to_string())
        .collect();
    assert_eq!(tags, ["latest", "other"]);
    assert_image_matches(&client, &repo("r0"), &tag("other"), &pushed).await;

    let log = registry.request_log().await.unwrap();
    let ours: Vec<_> = log.iter().filter(|r| !r.is_testkit()).collect();
    assert!(!ours.is_empty());
    assert!(
        ours.iter()
            .all(|r| r.path().starts_with("/mirror/v2/") && r.status == 200),
        "{ours:?}"
    );
}

#[tokio::test]
async fn basic_auth_from_config_and_docker_config() {
    let registry = TestRegistry::builder().htpasswd().start().await.unwrap();
    let pushed = registry
        .push_image(
            "private",
            Some("latest"),
            &ImageSpec::new("amd64").label("secret", "yes"),
        )
        .await
        .unwrap();

    let anonymous = client(&registry, 100);
    let err = anonymous.tags(&repo("private")).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(!err.is_transient());

    let wrong = RegistryClient::new(&RegistryConfig {
        username: Some(TEST_USERNAME.into()),
        password: Some("wrong".to_owned().into()),
        ..config(registry.url(), 100)
    })
    .unwrap();
    let err = wrong.catalog().await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");

    let with_password = RegistryClient::new(&RegistryConfig {
        username: Some(TEST_USERNAME.into()),
        password: Some(TEST_PASSWORD.to_owned().into()),
        ..config(registry.url(), 100)
    })
    .unwrap();
    assert_eq!(with_password.catalog().await.unwrap(), [repo("private")]);
    assert_image_matches(&with_password, &repo("private"), &tag("latest"), &pushed).await;

    let dir = tempfile::tempdir().unwrap();
    let docker_config = dir.path().join("config.json");
    let auth = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("{TEST_USERNAME}:{TEST_PASSWORD}"))
    };
    std::fs::write(
        &docker_config,
        format!(
            r#"{{"auths": {{"elsewhere.example.org": {{"auth": "eDp5"}}, "{}": {{"auth": "{auth}"}}}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    let from_docker_config = RegistryClient::new(&RegistryConfig {
        docker_config: Some(docker_config),
        ..config(registry.url(), 100)
    })
    .unwrap();
    let (digest, _) = from_docker_config
        .resolve(&repo("private"), &tag("latest"))
        .await
        .unwrap();
    assert_eq!(digest.as_str(), pushed.digest);
}

#[tokio::test]
async fn bearer_token_auth_against_the_real_registry() {
    let registry = TestRegistry::builder().token_auth().start().await.unwrap();
    let first = registry
        .push_image(
            "private/a",
            Some("latest"),
            &ImageSpec::flatpak("org.example.A", "x86_64"),
        )
        .await
        .unwrap();
    let second = registry
        .push_image("private/b", Some("latest"), &ImageSpec::new("arm64"))
        .await
        .unwrap();
    let authed = RegistryClient::new(&RegistryConfig {
        username: Some(TEST_USERNAME.into()),
        password: Some(TEST_PASSWORD.to_owned().into()),
        ..config(registry.url(), 1)
    })
    .unwrap();

    assert_eq!(
        authed.catalog().await.unwrap(),
        [repo("private/a"), repo("private/b")]
    );
    for _ in 0..2 {
        assert_image_matches(&authed, &repo("private/a"), &tag("latest"), &first).await;
        let (digest, _) = authed
            .resolve(&repo("private/b"), &tag("latest"))
            .await
            .unwrap();
        assert_eq!(digest.as_str(), second.digest);
    }
    // One token per scope (catalog, private/a, private/b), reused until it expires.
    assert_eq!(registry.token_requests(), 3);

    let anonymous = client(&registry, 100);
    let err = anonymous.tags(&repo("private/a")).await.unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    let wrong = RegistryClient::new(&RegistryConfig {
        username: Some(TEST_USERNAME.into()),
        password: Some("wrong".to_owned().into()),
        ..config(registry.url(), 100)
    })
    .unwrap();
    let err = wrong
        .manifest(&repo("private/a"), &tag("latest"))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(!err.is_transient());
}
