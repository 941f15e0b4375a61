//! Shared by the web, icon, search and real-client tests: `start` is testkit's `App` with
//! the api's public router (registry, migrated store, syncer); and real icons.

#![allow(dead_code)]

use regindex::config::Config;
use regindex_testkit::app::App;

/// Registry, migrated store and the api's public router; `tweak` adjusts the
/// configuration.
pub async fn start(tweak: impl FnOnce(&mut Config) + 'static) -> App {
    App::builder().router().config(tweak).start().await
}

/// The api's public router on `app`'s store and configuration, for requests sent
/// straight into it (each call is another api process: its own, empty cache).
pub fn router(app: &App) -> axum::Router {
    regindex_api::router(regindex_api::AppState::new(
        std::sync::Arc::new(app.config.clone()),
        app.store.clone(),
    ))
}

/// A real `size`x`size` RGB PNG filled with one colour.
pub fn png(rgb: [u8; 3], size: u32) -> Vec<u8> {
    regindex_testkit::png(rgb, size)
}

pub fn data_uri(png: &[u8]) -> String {
    regindex_testkit::png_data_uri(png)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A Flatpak application image with real 64px and 128px icons of colour `rgb`.
pub fn flatpak_app(app_id: &str, arch: &str, rgb: [u8; 3]) -> regindex_testkit::ImageSpec {
    regindex_testkit::ImageSpec::flatpak(app_id, arch)
        .icons(rgb)
        .label("org.flatpak.installed-size", "4096000")
}

/// An index answer as a client sees it: status, ETag, whether it is marked stale, body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub etag: Option<String>,
    pub stale: bool,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The repositories of an index answer, in order.
    pub fn names(&self) -> Vec<String> {
        self.json()["Results"]
            .as_array()
            .map(|results| {
                results
                    .iter()
                    .filter_map(|r| r["Name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// GETs `url`, with `If-None-Match` when given.
pub async fn get(client: &reqwest::Client, url: &str, if_none_match: Option<&str>) -> Answer {
    let mut request = client.get(url);
    if let Some(etag) = if_none_match {
        request = request.header("if-none-match", etag);
    }
    let response = request.send().await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Answer {
        status: response.status().as_u16(),
        etag: header("etag"),
        stale: header("x-regindex-stale").as_deref() == Some("true"),
        body: response.text().await.unwrap(),
    }
}
