//! The whole read path against real services: images pushed to a real docker-registry,
//! a scan into a real PostgreSQL, then index queries through the api router. Expected
//! answers are built from what the test pushed.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use regindex::sync::NoProgress;
use regindex_api::{router, AppState};
use regindex_testkit::app::App;
use regindex_testkit::{ImageFormat, ImageSpec, ListFormat, PushedImage};
use serde_json::{json, Value};
use tower::ServiceExt;

const FLATPAK_QUERY: &str =
    "label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=latest";

/// An image as the protocol shows it, from what was pushed.
fn image_json(pushed: &PushedImage, tags: Option<&[&str]>) -> Value {
    let annotations = match pushed.spec.format {
        ImageFormat::Oci => json!(pushed.spec.annotations),
        ImageFormat::Docker => json!({}),
    };
    let mut image = json!({
        "Digest": pushed.digest,
        "MediaType": pushed.media_type,
        "OS": pushed.spec.os,
        "Architecture": pushed.spec.architecture,
        "Annotations": annotations,
        "Labels": pushed.spec.labels,
    });
    if let Some(tags) = tags {
        image["Tags"] = json!(tags);
    }
    image
}

async fn get(
    app: &axum::Router,
    uri: &str,
    etag: Option<&str>,
) -> (StatusCode, Option<String>, Vec<u8>) {
    let mut request = Request::get(uri);
    if let Some(etag) = etag {
        request = request.header(header::IF_NONE_MATCH, etag);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let etag = response
        .headers()
        .get(header::ETAG)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    (status, etag, body)
}

async fn query(app: &axum::Router, q: &str) -> Value {
    let (status, _, body) = get(app, &format!("/index/static?{q}"), None).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn index_queries_answer_what_was_pushed() {
    let test = App::builder()
        .config(|config| {
            config.registry.public_url = Some("https://registry.example.org/".into());
            config.database.max_connections = 4;
        })
        .start()
        .await;
    let registry = &test.registry;

    let calc = registry
        .push_image(
            "apps/calc",
            Some("latest"),
            &ImageSpec::flatpak("org.example.Calc", "x86_64"),
        )
        .await
        .unwrap();
    registry
        .tag("apps/calc", "1.0", &calc.digest)
        .await
        .unwrap();
    // An arm-only Flatpak tagged latest: must not match architecture=amd64.
    registry
        .push_image(
            "apps/armonly",
            Some("latest"),
            &ImageSpec::flatpak("org.example.Arm", "aarch64"),
        )
        .await
        .unwrap();
    let multi = registry
        .push_list(
            "apps/multi",
            Some("latest"),
            &[
                ImageSpec::flatpak("org.example.Multi", "x86_64"),
                ImageSpec::flatpak("org.example.Multi", "aarch64"),
            ],
            ListFormat::OciIndex,
        )
        .await
        .unwrap();
    let plain = registry
        .push_image(
            "base/plain",
            Some("latest"),
            &ImageSpec::new("amd64")
                .label("name", "plain")
                .format(ImageFormat::Docker),
        )
        .await
        .unwrap();
    let annotated = registry
        .push_image(
            "base/annotated",
            Some("41"),
            &ImageSpec::new("amd64").annotation("org.opencontainers.image.vendor", "Fedora"),
        )
        .await
        .unwrap();

    let summary = test.syncer.scan(4, &NoProgress).await.unwrap();
    assert!(summary.failed.is_empty(), "{:?}", summary.failed);
    let app = router(AppState::new(
        Arc::new(test.config.clone()),
        test.store.clone(),
    ));

    // The query a real Flatpak 1.14 client sends, in its own parameter order.
    let amd_entry = &multi.entries[0];
    assert_eq!(amd_entry.spec.architecture, "amd64");
    let expected = json!({
        "Registry": "https://registry.example.org/",
        "Results": [
            { "Name": "apps/calc", "Images": [image_json(&calc, Some(&["1.0", "latest"]))], "Lists": [] },
            { "Name": "apps/multi", "Images": [], "Lists": [{
                "Tags": ["latest"], "Digest": multi.digest, "MediaType": multi.media_type,
                "Images": [image_json(amd_entry, None)],
            }]},
        ]
    });
    assert_eq!(query(&app, FLATPAK_QUERY).await, expected);

    // Every order of the same parameters: the same bytes and ETag.
    let params: Vec<&str> = FLATPAK_QUERY.split('&').collect();
    let (_, first_etag, first_body) =
        get(&app, &format!("/index/static?{FLATPAK_QUERY}"), None).await;
    for rotation in 1..params.len() {
        let mut rotated = params.clone();
        rotated.rotate_left(rotation);
        rotated.swap(0, 1);
        let (status, etag, body) =
            get(&app, &format!("/index/static?{}", rotated.join("&")), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!((etag, body), (first_etag.clone(), first_body.clone()));
    }

    assert_eq!(
        query(&app, "repository=base/plain").await["Results"],
        json!([{ "Name": "base/plain", "Images": [image_json(&plain, Some(&["latest"]))], "Lists": [] }])
    );
    assert_eq!(
        query(&app, "annotation:org.opencontainers.image.vendor=Fedora").await["Results"],
        json!([{ "Name": "base/annotated", "Images": [image_json(&annotated, Some(&["41"]))], "Lists": [] }])
    );
    assert_eq!(
        query(&app, "label%3Aname=plain").await["Results"],
        json!([{ "Name": "base/plain", "Images": [image_json(&plain, Some(&["latest"]))], "Lists": [] }])
    );
    assert_eq!(
        query(&app, "label:org.flatpak.ref=app/none/x86_64/stable").await,
        json!({ "Registry": "https://registry.example.org/", "Results": [] })
    );
    // Architecture OR: both entries of the list, and the arm-only app.
    let both = query(
        &app,
        "architecture=amd64&architecture=arm64&repository=apps/multi",
    )
    .await;
    assert_eq!(
        both["Results"][0]["Lists"][0]["Images"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // ETag round trip: 304 while nothing changes, 200 with a new ETag after a push.
    let uri = format!("/index/static?{FLATPAK_QUERY}");
    let etag = first_etag.expect("an ETag");
    let (status, same, body) = get(&app, &uri, Some(&etag)).await;
    assert_eq!(
        (status, same.as_deref(), body.len()),
        (StatusCode::NOT_MODIFIED, Some(etag.as_str()), 0)
    );
    let newer = registry
        .push_image(
            "apps/calc",
            Some("latest"),
            &ImageSpec::flatpak("org.example.Calc", "x86_64").seed(99),
        )
        .await
        .unwrap();
    test.syncer
        .refetch(&"apps/calc".parse().unwrap())
        .await
        .unwrap();
    let (status, changed, body) = get(&app, &uri, Some(&etag)).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(changed.as_deref(), Some(etag.as_str()));
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body["Results"][0]["Images"],
        json!([image_json(&newer, Some(&["latest"]))])
    );
    test.finish().await;
}
