//! Icons: extracted at refetch, served content-addressed, returned as URLs in index
//! responses, garbage-collected; malformed ones never break anything.

mod common;

use common::{data_uri, flatpak_app, png, sha256_hex, start};
use regindex::config::IconsConfig;
use regindex::index::render::render_index;
use regindex::index::Query;
use regindex_testkit::app::App;
use regindex_testkit::ImageSpec;

const ICON_64: &str = "org.freedesktop.appstream.icon-64";
const ICON_128: &str = "org.freedesktop.appstream.icon-128";

async fn labels_of(stack: &App, repository: &str, icons: &IconsConfig) -> serde_json::Value {
    let query = Query::parse(&format!("repository={repository}")).unwrap();
    let rendered = render_index(&stack.store, &query, "/", icons)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&rendered.body).unwrap();
    body["Results"][0]["Images"][0]["Labels"].clone()
}

#[tokio::test]
async fn icons_are_extracted_served_and_referenced() {
    let stack = start(move |c| c.icons.extract = true).await;
    let blue64 = png([0, 0, 255], 64);
    let blue128 = png([0, 0, 255], 128);
    stack
        .registry
        .push_image(
            "apps/calculator",
            Some("latest"),
            &flatpak_app("org.example.Calculator", "amd64", [0, 0, 255]),
        )
        .await
        .unwrap();
    stack.refetch("apps/calculator").await.unwrap();

    // Index responses carry URLs named by the sha256 of the pushed bytes.
    let labels = labels_of(&stack, "apps/calculator", &stack.config.icons).await;
    assert_eq!(
        labels[ICON_64],
        format!("/icons/{}.png", sha256_hex(&blue64))
    );
    assert_eq!(
        labels[ICON_128],
        format!("/icons/{}.png", sha256_hex(&blue128))
    );

    // Without extraction the data URI is returned as pushed.
    let off = IconsConfig {
        extract: false,
        ..stack.config.icons.clone()
    };
    let labels = labels_of(&stack, "apps/calculator", &off).await;
    assert_eq!(labels[ICON_64], data_uri(&blue64));

    // A configured base URL prefixes the path.
    let cdn = IconsConfig {
        base_url: Some("https://cdn.example.org/index/".into()),
        ..stack.config.icons.clone()
    };
    let labels = labels_of(&stack, "apps/calculator", &cdn).await;
    assert_eq!(
        labels[ICON_64],
        format!(
            "https://cdn.example.org/index/icons/{}.png",
            sha256_hex(&blue64)
        )
    );

    // The icon itself: bytes, type, immutable caching, ETag and 304.
    let path = format!("/icons/{}.png", sha256_hex(&blue128));
    let response = stack.get(&path).await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(
        headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let etag = headers["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", sha256_hex(&blue128)));
    assert_eq!(response.bytes().await.unwrap().as_ref(), blue128.as_slice());
    let again = stack
        .http
        .get(format!("{}{path}", stack.base()))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"], etag.as_str());

    // Unknown hash, wrong extension, garbage names.
    for missing in [
        format!("/icons/{}.png", "0".repeat(64)),
        format!("/icons/{}.jpg", sha256_hex(&blue128)),
        "/icons/..%2F..%2Fetc%2Fpasswd".to_owned(),
        "/icons/abc.png".to_owned(),
    ] {
        let response = stack.get(&missing).await.unwrap();
        assert_eq!(response.status(), 404, "{missing}");
        assert_eq!(response.headers()["cache-control"], "public, max-age=60");
        assert_eq!(
            response.json::<serde_json::Value>().await.unwrap(),
            serde_json::json!({"error": "not_found", "message": "no such icon"}),
            "{missing}"
        );
    }
    stack.finish().await;
}

#[tokio::test]
async fn malformed_and_oversized_icons_are_left_alone() {
    let stack = start(move |c| {
        c.icons.extract = true;
        c.icons.max_bytes = 20_000;
    })
    .await;
    let html_as_png = format!("data:image/png;base64,{}", {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(b"<html><script>alert(1)</script></html>")
    });
    let not_base64 = "data:image/png;base64,%%%not-base64%%%".to_owned();
    let big = data_uri(&png([1, 2, 3], 128)); // 49 KB decoded > 20 000
    let spec = ImageSpec::flatpak("org.example.Broken", "amd64")
        .label(ICON_64, &html_as_png)
        .label(ICON_128, &not_base64);
    stack
        .registry
        .push_image("apps/broken", Some("latest"), &spec)
        .await
        .unwrap();
    let spec = ImageSpec::flatpak("org.example.Big", "amd64")
        .label(ICON_64, &big)
        .label(ICON_128, &big);
    stack
        .registry
        .push_image("apps/big", Some("latest"), &spec)
        .await
        .unwrap();
    stack.refetch("apps/broken").await.unwrap();
    stack.refetch("apps/big").await.unwrap();

    let labels = labels_of(&stack, "apps/broken", &stack.config.icons).await;
    assert_eq!(labels[ICON_64], html_as_png);
    assert_eq!(labels[ICON_128], not_base64);
    let labels = labels_of(&stack, "apps/big", &stack.config.icons).await;
    assert_eq!(labels[ICON_64], big);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM icons")
        .fetch_one(stack.store.pool())
        .await
        .unwrap();
    assert_eq!(stored, 0);
    // The web page still renders, without icons.
    let page = stack.get("/").await.unwrap().text().await.unwrap();
    assert!(page.contains("apps/broken") && page.contains("apps/big"));
    assert!(!page.contains("<script>alert"));
    stack.finish().await;
}

/// Moves every unreferenced icon's mark back by `secs`: the clock of the grace period,
/// without waiting a day.
async fn age_unreferenced_icons(stack: &App, secs: u64) {
    sqlx::query(
        "UPDATE icons SET unreferenced_since = unreferenced_since - make_interval(secs => $1::double precision)
         WHERE unreferenced_since IS NOT NULL",
    )
    .bind(secs as f64)
    .execute(stack.store.pool())
    .await
    .unwrap();
}

async fn icon_status(stack: &App, url: &str) -> u16 {
    stack.get(url).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn icons_no_image_carries_are_collected_after_the_grace_period() {
    let stack = start(move |c| c.icons.extract = true).await;
    let grace = stack.config.icons.gc_grace.as_secs();
    assert!(grace > stack.config.api.static_max_age.as_secs());
    let red = png([255, 0, 0], 64);
    let green = png([0, 255, 0], 64);
    let red_spec = ImageSpec::flatpak("org.example.A", "amd64").label(ICON_64, &data_uri(&red));
    let green_spec = ImageSpec::flatpak("org.example.B", "amd64").label(ICON_64, &data_uri(&green));
    // The red icon is carried by two repositories; the green one by one.
    stack
        .registry
        .push_image("apps/a", Some("latest"), &red_spec)
        .await
        .unwrap();
    stack
        .registry
        .push_image("apps/a2", Some("latest"), &red_spec)
        .await
        .unwrap();
    stack
        .registry
        .push_image("apps/b", Some("latest"), &green_spec)
        .await
        .unwrap();
    for r in ["apps/a", "apps/a2", "apps/b"] {
        stack.refetch(r).await.unwrap();
    }
    let stored = |stack: &App| {
        let pool = stack.store.pool().clone();
        async move {
            let rows: Vec<String> = sqlx::query_scalar("SELECT sha256 FROM icons ORDER BY sha256")
                .fetch_all(&pool)
                .await
                .unwrap();
            rows
        }
    };
    let mut expected = vec![sha256_hex(&red), sha256_hex(&green)];
    expected.sort();
    assert_eq!(stored(&stack).await, expected);

    // A live answer (cacheable for api.static_max_age_secs) points at the green icon.
    let answer: serde_json::Value = stack
        .get("/index/static?repository=apps/b")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let green_url = answer["Results"][0]["Images"][0]["Labels"][ICON_64]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(green_url, format!("/icons/{}.png", sha256_hex(&green)));
    // Referenced icons are never collected, however old.
    let summary = stack.store.gc().await.unwrap();
    assert_eq!((summary.icons_removed, summary.icons_unreferenced), (0, 0));

    // apps/b now points at the red icon image, apps/a is deleted: green is unreferenced,
    // red is still carried by apps/a2 and apps/b.
    let pushed = stack
        .registry
        .push_image("apps/b", Some("latest"), &red_spec)
        .await
        .unwrap();
    assert!(!pushed.digest.is_empty());
    let old = stack
        .registry
        .manifest_digest("apps/a", "latest")
        .await
        .unwrap()
        .unwrap();
    stack
        .registry
        .delete_manifest("apps/a", &old)
        .await
        .unwrap();
    for r in ["apps/a", "apps/b"] {
        stack.refetch(r).await.unwrap();
    }
    // Found unreferenced: marked, not deleted. The answer cached above still resolves.
    let summary = stack.store.gc().await.unwrap();
    assert_eq!((summary.icons_removed, summary.icons_unreferenced), (0, 1));
    assert_eq!(stored(&stack).await, expected);
    assert_eq!(icon_status(&stack, &green_url).await, 200);
    // Still within the grace period (one second short of it): kept.
    age_unreferenced_icons(&stack, grace - 1).await;
    let summary = stack.store.gc().await.unwrap();
    assert_eq!((summary.icons_removed, summary.icons_unreferenced), (0, 0));
    assert_eq!(icon_status(&stack, &green_url).await, 200);
    // Past it: deleted.
    age_unreferenced_icons(&stack, 2).await;
    let summary = stack.store.gc().await.unwrap();
    assert_eq!(summary.icons_removed, 1);
    assert_eq!(stored(&stack).await, vec![sha256_hex(&red)]);
    assert_eq!(icon_status(&stack, &green_url).await, 404);
    assert_eq!(
        icon_status(&stack, &format!("/icons/{}.png", sha256_hex(&red))).await,
        200
    );
    stack.finish().await;
}

#[tokio::test]
async fn an_icon_referenced_again_starts_its_grace_period_afresh() {
    let stack = start(|_| {}).await;
    let grace = stack.config.icons.gc_grace.as_secs();
    let blue = png([0, 0, 200], 64);
    let spec = ImageSpec::flatpak("org.example.C", "amd64").label(ICON_64, &data_uri(&blue));
    let pushed = stack
        .registry
        .push_image("apps/c", Some("latest"), &spec)
        .await
        .unwrap();
    stack.refetch("apps/c").await.unwrap();
    stack
        .registry
        .delete_manifest("apps/c", &pushed.digest)
        .await
        .unwrap();
    stack.refetch("apps/c").await.unwrap();
    assert_eq!(stack.store.gc().await.unwrap().icons_unreferenced, 1);
    age_unreferenced_icons(&stack, grace - 10).await;
    // Pushed again (another repository): the mark goes with the refetch that references it.
    stack
        .registry
        .push_image("apps/c2", Some("latest"), &spec)
        .await
        .unwrap();
    stack.refetch("apps/c2").await.unwrap();
    let marked: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT unreferenced_since FROM icons WHERE sha256 = $1")
            .bind(sha256_hex(&blue))
            .fetch_one(stack.store.pool())
            .await
            .unwrap();
    assert_eq!(marked, None);
    // Unreferenced once more: a new mark, so 20 s later (past the first mark's grace
    // period) it is still kept.
    let again = stack
        .registry
        .manifest_digest("apps/c2", "latest")
        .await
        .unwrap()
        .unwrap();
    stack
        .registry
        .delete_manifest("apps/c2", &again)
        .await
        .unwrap();
    stack.refetch("apps/c2").await.unwrap();
    assert_eq!(stack.store.gc().await.unwrap().icons_unreferenced, 1);
    age_unreferenced_icons(&stack, 20).await;
    let summary = stack.store.gc().await.unwrap();
    assert_eq!(summary.icons_removed, 0);
    stack.finish().await;
}

#[tokio::test]
async fn backfill_extracts_icons_of_images_stored_without_them() {
    // Indexed with a limit below the icon's size: nothing extracted.
    let stack = start(move |c| c.icons.max_bytes = 100).await;
    let teal = png([0, 128, 128], 64);
    let spec = ImageSpec::flatpak("org.example.Teal", "amd64").label(ICON_64, &data_uri(&teal));
    stack
        .registry
        .push_image("apps/teal", Some("latest"), &spec)
        .await
        .unwrap();
    stack.refetch("apps/teal").await.unwrap();
    assert_eq!(
        stack
            .store
            .stored_icons(&[sha256_hex(&teal)])
            .await
            .unwrap()
            .len(),
        0
    );

    // The limit raised, the backfill extracts it and points the summary at it.
    let extracting = IconsConfig {
        extract: true,
        ..IconsConfig::default()
    };
    let store = stack.store.clone().with_icons(&extracting);
    assert_eq!(store.backfill_icons_and_summaries().await.unwrap(), 1);
    assert_eq!(
        store
            .stored_icons(&[sha256_hex(&teal)])
            .await
            .unwrap()
            .len(),
        1
    );
    let summary = store
        .repository_summary("apps/teal")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.icon, Some(format!("{}.png", sha256_hex(&teal))));
    assert_eq!(summary.title, "org.example.Teal");
    let labels = labels_of(&stack, "apps/teal", &extracting).await;
    assert_eq!(labels[ICON_64], format!("/icons/{}.png", sha256_hex(&teal)));
    stack.finish().await;
}

/// The `<li class="card">` of `repository` on a page.
fn card<'a>(page: &'a str, repository: &str) -> &'a str {
    page.split("<li class=\"card\">")
        .find(|card| card.contains(&format!("href=\"/repository/{repository}\"")))
        .unwrap_or_else(|| panic!("no card for {repository} in:\n{page}"))
}

/// Magic bytes are not an image. The 8-byte PNG signature alone (what the sample images
/// carried) and a PNG cut inside its pixel data are neither stored nor served: the page
/// shows the placeholder and index answers keep the label as pushed. A real PNG next to
/// them is stored, linked and served.
#[tokio::test]
async fn only_real_images_are_stored_served_and_shown() {
    let stack = start(move |c| c.icons.extract = true).await;
    let signature_only = b"\x89PNG\r\n\x1a\n".to_vec();
    let real = png([200, 40, 40], 64);
    // Header intact, pixel data cut short.
    let cut = real[..real.len() - 100].to_vec();
    let pushed = [
        ("apps/signature", "org.example.Signature", &signature_only),
        ("apps/cut", "org.example.Cut", &cut),
        ("apps/real", "org.example.Real", &real),
    ];
    for (repository, app_id, icon) in pushed {
        let spec = ImageSpec::flatpak(app_id, "amd64").label(ICON_64, &data_uri(icon));
        stack
            .registry
            .push_image(repository, Some("latest"), &spec)
            .await
            .unwrap();
        stack.refetch(repository).await.unwrap();
    }
    // A broken 128 px icon beside a real 64 px one: the page falls back to the 64 px one.
    let spec = ImageSpec::flatpak("org.example.Fallback", "amd64")
        .label(ICON_128, &data_uri(&signature_only))
        .label(ICON_64, &data_uri(&real));
    stack
        .registry
        .push_image("apps/fallback", Some("latest"), &spec)
        .await
        .unwrap();
    stack.refetch("apps/fallback").await.unwrap();

    let stored: Vec<String> = sqlx::query_scalar("SELECT sha256 FROM icons")
        .fetch_all(stack.store.pool())
        .await
        .unwrap();
    assert_eq!(stored, [sha256_hex(&real)]);

    let page = stack.get("/").await.unwrap().text().await.unwrap();
    for (repository, _, icon) in &pushed[..2] {
        let path = format!("/icons/{}.png", sha256_hex(icon));
        assert_eq!(stack.get(&path).await.unwrap().status(), 404, "{path}");
        let card = card(&page, repository);
        assert!(
            card.contains("class=\"noicon\"") && !card.contains("<img"),
            "{card}"
        );
        let labels = labels_of(&stack, repository, &stack.config.icons).await;
        assert_eq!(labels[ICON_64], data_uri(icon), "{repository}");
    }

    let path = format!("/icons/{}.png", sha256_hex(&real));
    for repository in ["apps/real", "apps/fallback"] {
        assert!(
            card(&page, repository).contains(&format!("src=\"{path}\"")),
            "{repository}: {page}"
        );
    }
    let response = stack.get(&path).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/png");
    let served = response.bytes().await.unwrap();
    assert_eq!(&served[..], &real[..]);
    let labels = labels_of(&stack, "apps/real", &stack.config.icons).await;
    assert_eq!(labels[ICON_64], path);
    stack.finish().await;
}
