//! The HTML pages: what people see of the pushed images.

mod common;

use common::{flatpak_app, png, sha256_hex, start};
use regindex_testkit::{ImageSpec, ListFormat};

#[tokio::test]
async fn front_page_lists_repositories_with_titles_icons_tags_and_pull_references() {
    let stack = start(move |c| {
        c.web.title = "Test <Registry>".into();
        c.web.pull_host = Some("registry.example.org".into());
        c.web.max_age = std::time::Duration::from_secs(42);
    })
    .await;
    let app = flatpak_app("org.example.Calculator", "amd64", [10, 20, 30]);
    stack
        .registry
        .push_image("apps/calculator", Some("latest"), &app)
        .await
        .unwrap();
    stack
        .registry
        .push_image("apps/calculator", Some("1.0"), &app)
        .await
        .unwrap();
    let multi = [
        ImageSpec::new("amd64")
            .label("io.k8s.display-name", "Fedora Toolbox")
            .label("io.k8s.description", "Tools & <things>"),
        ImageSpec::new("arm64").label("io.k8s.display-name", "Fedora Toolbox"),
    ];
    stack
        .registry
        .push_list("fedora/toolbox", Some("40"), &multi, ListFormat::OciIndex)
        .await
        .unwrap();
    // A Flatpak without a title annotation or name label: titled by its app id.
    let bare =
        ImageSpec::new("amd64").label("org.flatpak.ref", "app/org.example.Bare/x86_64/stable");
    stack
        .registry
        .push_image("apps/bare", Some("latest"), &bare)
        .await
        .unwrap();
    for r in ["apps/calculator", "fedora/toolbox", "apps/bare"] {
        stack.refetch(r).await.unwrap();
    }

    let response = stack.get("/").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    assert_eq!(response.headers()["cache-control"], "public, max-age=42");
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = response.text().await.unwrap();
    assert!(html.contains("<title>Test &lt;Registry&gt;</title>"));
    assert!(html.contains("3 repositories"));
    // Titles from the annotation, io.k8s.display-name and the Flatpak ref.
    assert!(html.contains(">org.example.Calculator</a>"));
    assert!(html.contains(">Fedora Toolbox</a>"));
    assert!(html.contains(">org.example.Bare</a>"));
    assert!(html.contains("Tools &amp; &lt;things&gt;"));
    // The 128px icon, served by the api.
    assert!(html.contains(&format!(
        "src=\"/icons/{}.png\"",
        sha256_hex(&png([10, 20, 30], 128))
    )));
    // Tags, architectures of list entries, pull references.
    assert!(
        html.contains("<code class=\"pull\">registry.example.org/apps/calculator:latest</code>")
    );
    assert!(html.contains("<code class=\"pull\">registry.example.org/fedora/toolbox:40</code>"));
    assert!(html.contains(">arm64<") && html.contains(">1.0<"));
    // Alphabetical.
    let positions: Vec<usize> = ["apps/bare", "apps/calculator", "fedora/toolbox"]
        .iter()
        .map(|n| html.find(&format!("/repository/{n}\"")).unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    stack.finish().await;
}

#[tokio::test]
async fn repository_page_and_not_found() {
    let stack = start(move |c| c.web.pull_host = Some("registry.example.org".into())).await;
    let pushed = stack
        .registry
        .push_image(
            "apps/calculator",
            Some("latest"),
            &flatpak_app("org.example.Calculator", "amd64", [1, 1, 1]),
        )
        .await
        .unwrap();
    let list = stack
        .registry
        .push_list(
            "apps/calculator",
            Some("multi"),
            &[ImageSpec::new("arm64"), ImageSpec::new("s390x")],
            ListFormat::DockerList,
        )
        .await
        .unwrap();
    stack.refetch("apps/calculator").await.unwrap();

    let response = stack.get("/repository/apps/calculator").await.unwrap();
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    assert!(html.contains(&format!(
        "registry.example.org/apps/calculator@{}",
        pushed.digest
    )));
    assert!(html.contains(&list.digest));
    for entry in &list.entries {
        assert!(html.contains(&entry.digest));
    }
    assert!(
        html.contains("linux/arm64")
            && html.contains("linux/s390x")
            && html.contains("linux/amd64")
    );
    assert!(html.contains("org.flatpak.ref"));
    // Labels with data URIs are summarised, not dumped.
    assert!(html.contains("(data URI, "));
    assert!(!html.contains("data:image/png;base64"));

    for missing in [
        "/repository/apps/nothing",
        "/repository/NOT..valid",
        "/repository/apps/calculator/x",
    ] {
        let response = stack.get(missing).await.unwrap();
        assert_eq!(response.status(), 404, "{missing}");
        assert!(response
            .text()
            .await
            .unwrap()
            .contains("There is no repository"));
    }
    stack.finish().await;
}

#[tokio::test]
async fn pages_of_the_configured_size() {
    let stack = start(move |c| c.web.page_size = 2).await;
    for name in ["a/one", "a/two", "a/three"] {
        stack
            .registry
            .push_image(name, Some("latest"), &ImageSpec::new("amd64"))
            .await
            .unwrap();
        stack.refetch(name).await.unwrap();
    }
    let first = stack.get("/").await.unwrap().text().await.unwrap();
    assert!(first.contains("/repository/a/one\"") && first.contains("/repository/a/three\""));
    assert!(!first.contains("/repository/a/two\""));
    assert!(first.contains("Page 1 of 2") && first.contains("href=\"/?page=2\""));
    let second = stack.get("/?page=2").await.unwrap().text().await.unwrap();
    assert!(second.contains("/repository/a/two\"") && !second.contains("/repository/a/one\""));
    stack.finish().await;

    // A page size above the search API's limit on `n` is fine for the page.
    let stack = start(move |c| c.web.page_size = 500).await;
    assert_eq!(stack.get("/").await.unwrap().status(), 200);
    stack.finish().await;
}

/// A tag the index could not use is shown on its repository's page, with the reason; a
/// repository with no usable tag still has a page that says why.
#[tokio::test]
async fn repository_page_shows_tags_that_could_not_be_indexed() {
    let stack = start(|_| {}).await;
    const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    stack
        .registry
        .push_image("apps/mixed", Some("latest"), &ImageSpec::new("amd64"))
        .await
        .unwrap();
    let bad = stack
        .registry
        .push_with_config("apps/mixed", Some("broken"), OCI_CONFIG, b"not JSON", 1)
        .await
        .unwrap();
    let only_bad = stack
        .registry
        .push_with_config("apps/allbad", Some("1.0"), OCI_CONFIG, b"[]", 2)
        .await
        .unwrap();
    stack.refetch("apps/mixed").await.unwrap();
    stack.refetch("apps/allbad").await.unwrap();

    let response = stack.get("/repository/apps/mixed").await.unwrap();
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    assert!(html.contains("<h2>Tags not indexed</h2>"), "{html}");
    assert!(html.contains("<td>broken</td>"), "{html}");
    assert!(html.contains(&bad), "{html}");

    let response = stack.get("/repository/apps/allbad").await.unwrap();
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    assert!(
        html.contains("No tag of “apps/allbad” could be indexed."),
        "{html}"
    );
    assert!(html.contains(&only_bad), "{html}");
    assert_eq!(
        stack.get("/repository/apps/none").await.unwrap().status(),
        404
    );
    stack.finish().await;
}
