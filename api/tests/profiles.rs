//! Index profiles against a real registry: each option's effect on the answer, the static
//! files of a profile (one per architecture) byte-identical to the live answers at
//! `/profiles/<name>/index/static`, and `/index/static` left exactly as the protocol says.

mod common;

use base64::Engine as _;
use common::{flatpak_app, start};
use regindex::config::{IndexProfile, RepositoryPattern, StaticIndexConfig};
use regindex::index::static_index::{query_string, write_static_indexes};
use regindex::index::{FLATPAK_REF, TOKEN_TYPE_LABEL, TOKEN_TYPE_VALUE};
use regindex_testkit::app::App;
use regindex_testkit::{ImageSpec, ListFormat};
use serde_json::Value;

const FLATPAKS: &str = "label%3Aorg.flatpak.ref%3Aexists=1&tag=latest";
const ICON_64: &str = "org.freedesktop.appstream.icon-64";

fn patterns(sources: &[&str]) -> Vec<RepositoryPattern> {
    sources
        .iter()
        .map(|s| RepositoryPattern::new(s).unwrap())
        .collect()
}

fn names(body: &Value) -> Vec<String> {
    body["Results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["Name"].as_str().unwrap().to_owned())
        .collect()
}

/// Every image of an answer (direct and list entries) as (repository, digest).
fn images(body: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for r in body["Results"].as_array().unwrap() {
        let name = r["Name"].as_str().unwrap().to_owned();
        for i in r["Images"].as_array().unwrap() {
            out.push((name.clone(), i["Digest"].as_str().unwrap().to_owned()));
        }
        for l in r["Lists"].as_array().unwrap() {
            for i in l["Images"].as_array().unwrap() {
                out.push((name.clone(), i["Digest"].as_str().unwrap().to_owned()));
            }
        }
    }
    out.sort();
    out
}

/// Every image object of an answer.
fn image_objects(body: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for r in body["Results"].as_array().unwrap() {
        out.extend(r["Images"].as_array().unwrap().iter().cloned());
        for l in r["Lists"].as_array().unwrap() {
            out.extend(l["Images"].as_array().unwrap().iter().cloned());
        }
    }
    out
}

/// Decodes the token-type label: a GVariant of type `v` serialised as the child's bytes,
/// a zero byte and the child's type string; the child must be the int32 1.
fn decode_token_type(value: &str) -> (String, i32) {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value)
        .unwrap();
    let separator = bytes.iter().rposition(|&b| b == 0).unwrap();
    let signature = String::from_utf8(bytes[separator + 1..].to_vec()).unwrap();
    let child: [u8; 4] = bytes[..separator].try_into().unwrap();
    (signature, i32::from_le_bytes(child))
}

async fn json(stack: &App, path: &str) -> (Vec<u8>, Value) {
    let response = stack.get(path).await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    let bytes = response.bytes().await.unwrap().to_vec();
    let value = serde_json::from_slice(&bytes).unwrap();
    (bytes, value)
}

struct Pushed {
    main_amd64: String,
    mirror_amd64: String,
    mirror_arm64: String,
    beta: String,
    other: String,
    plain: String,
}

/// Calc in two places: `main/calc` (amd64) and `mirror/calc` (a list: amd64 and arm64);
/// Notes in `mirror/beta-notes`, Maps in `other/maps`, a non-Flatpak in `main/fedora`.
async fn seed(stack: &App) -> Pushed {
    let registry = &stack.registry;
    let main = registry
        .push_image(
            "main/calc",
            Some("latest"),
            &flatpak_app("org.example.Calc", "amd64", [200, 0, 0]),
        )
        .await
        .unwrap();
    // Another build of the same ref (different layer: another digest).
    let mirror = registry
        .push_list(
            "mirror/calc",
            Some("latest"),
            &[
                flatpak_app("org.example.Calc", "amd64", [200, 0, 0]).seed(7),
                flatpak_app("org.example.Calc", "arm64", [200, 0, 0]),
            ],
            ListFormat::OciIndex,
        )
        .await
        .unwrap();
    let beta = registry
        .push_image(
            "mirror/beta-notes",
            Some("latest"),
            &flatpak_app("org.example.Notes", "amd64", [0, 200, 0]),
        )
        .await
        .unwrap();
    let other = registry
        .push_image(
            "other/maps",
            Some("latest"),
            &flatpak_app("org.example.Maps", "amd64", [0, 0, 200]),
        )
        .await
        .unwrap();
    let plain = registry
        .push_image(
            "main/fedora",
            Some("latest"),
            &ImageSpec::new("amd64").label("org.freedesktop.x", "y"),
        )
        .await
        .unwrap();
    for r in [
        "main/calc",
        "mirror/calc",
        "mirror/beta-notes",
        "other/maps",
        "main/fedora",
    ] {
        stack.refetch(r).await.unwrap();
    }
    Pushed {
        main_amd64: main.digest,
        mirror_amd64: mirror.entries[0].digest.clone(),
        mirror_arm64: mirror.entries[1].digest.clone(),
        beta: beta.digest,
        other: other.digest,
        plain: plain.digest,
    }
}

fn fedora_profile() -> IndexProfile {
    IndexProfile {
        repository_include: patterns(&["main/.*", "mirror/.*"]),
        repository_exclude: patterns(&["mirror/beta-.*"]),
        repository_priority: patterns(&["main/.*", "mirror/.*"]),
        flatpak_annotations: true,
        force_flatpak_token: true,
    }
}

#[tokio::test]
async fn each_profile_option_shapes_the_answer() {
    let stack = start(move |c| {
        c.icons.extract = true;
        c.index_profiles.insert("fedora".into(), fedora_profile());
        for (name, profile) in [
            (
                "main-first",
                IndexProfile {
                    repository_priority: patterns(&["main/.*"]),
                    ..IndexProfile::default()
                },
            ),
            (
                "mirror-first",
                IndexProfile {
                    repository_priority: patterns(&["mirror/.*"]),
                    ..IndexProfile::default()
                },
            ),
            (
                "include",
                IndexProfile {
                    repository_include: patterns(&["main/.*", "mirror/.*"]),
                    ..IndexProfile::default()
                },
            ),
            (
                "exclude",
                IndexProfile {
                    repository_exclude: patterns(&["mirror/beta-.*", "other/.*"]),
                    ..IndexProfile::default()
                },
            ),
            (
                "token",
                IndexProfile {
                    force_flatpak_token: true,
                    ..IndexProfile::default()
                },
            ),
            (
                "annotations",
                IndexProfile {
                    flatpak_annotations: true,
                    ..IndexProfile::default()
                },
            ),
            ("plain", IndexProfile::default()),
        ] {
            c.index_profiles.insert(name.into(), profile);
        }
    })
    .await;
    let p = seed(&stack).await;
    let all_flatpaks = {
        let mut v = vec![
            ("main/calc".to_owned(), p.main_amd64.clone()),
            ("mirror/beta-notes".to_owned(), p.beta.clone()),
            ("mirror/calc".to_owned(), p.mirror_amd64.clone()),
            ("mirror/calc".to_owned(), p.mirror_arm64.clone()),
            ("other/maps".to_owned(), p.other.clone()),
        ];
        v.sort();
        v
    };

    // The protocol's own path: everything, as pushed (asked first, so a profile answer
    // sharing its cache entry would show up below).
    let (plain_bytes, plain) = json(&stack, &format!("/index/static?{FLATPAKS}")).await;
    assert_eq!(images(&plain), all_flatpaks);
    assert!(image_objects(&plain)
        .iter()
        .all(|i| i["Labels"].get(TOKEN_TYPE_LABEL).is_none()
            && i["Annotations"].get(FLATPAK_REF).is_none()));
    // A profile that changes nothing gives the same bytes.
    let (bytes, _) = json(&stack, &format!("/profiles/plain/index/static?{FLATPAKS}")).await;
    assert_eq!(bytes, plain_bytes);

    // Priority: Calc amd64 is in main and in the mirror; the first pattern wins. The
    // mirror keeps Calc arm64, where it is alone.
    let (_, main_first) = json(
        &stack,
        &format!("/profiles/main-first/index/static?{FLATPAKS}"),
    )
    .await;
    let mut expected: Vec<_> = all_flatpaks
        .iter()
        .filter(|(_, d)| *d != p.mirror_amd64)
        .cloned()
        .collect();
    expected.sort();
    assert_eq!(images(&main_first), expected);
    let (_, arm) = json(
        &stack,
        &format!("/profiles/main-first/index/static?{FLATPAKS}&architecture=arm64"),
    )
    .await;
    assert_eq!(
        images(&arm),
        [("mirror/calc".to_owned(), p.mirror_arm64.clone())]
    );
    let (_, mirror_first) = json(
        &stack,
        &format!("/profiles/mirror-first/index/static?{FLATPAKS}&architecture=amd64"),
    )
    .await;
    assert_eq!(
        names(&mirror_first),
        ["mirror/beta-notes", "mirror/calc", "other/maps"]
    );
    assert_eq!(
        images(&mirror_first)
            .iter()
            .filter(|(_, d)| *d == p.main_amd64)
            .count(),
        0
    );

    // Include / exclude.
    let (_, include) = json(
        &stack,
        &format!("/profiles/include/index/static?{FLATPAKS}"),
    )
    .await;
    assert_eq!(
        names(&include),
        ["main/calc", "mirror/beta-notes", "mirror/calc"]
    );
    let (_, exclude) = json(
        &stack,
        &format!("/profiles/exclude/index/static?{FLATPAKS}"),
    )
    .await;
    assert_eq!(names(&exclude), ["main/calc", "mirror/calc"]);

    // Token type: on every Flatpak image, a GVariant holding the int32 1; not on others.
    let (_, token) = json(&stack, "/profiles/token/index/static?tag=latest").await;
    for image in image_objects(&token) {
        let value = image["Labels"]
            .get(TOKEN_TYPE_LABEL)
            .and_then(Value::as_str);
        if image["Digest"] == p.plain.as_str() {
            assert_eq!(value, None);
        } else {
            assert_eq!(value, Some(TOKEN_TYPE_VALUE));
            assert_eq!(decode_token_type(value.unwrap()), ("i".to_owned(), 1));
        }
    }

    // Annotations: the org.flatpak.* and org.freedesktop.* labels copied (icons as URLs,
    // like the labels), other labels and annotations left alone; labels unchanged.
    let (_, annotated) = json(
        &stack,
        "/profiles/annotations/index/static?repository=main/calc&repository=main/fedora",
    )
    .await;
    let (_, unannotated) = json(
        &stack,
        "/index/static?repository=main/calc&repository=main/fedora",
    )
    .await;
    for (a, u) in image_objects(&annotated)
        .iter()
        .zip(image_objects(&unannotated))
    {
        assert_eq!(a["Labels"], u["Labels"]);
        let mut expected = u["Annotations"].as_object().unwrap().clone();
        for (k, v) in u["Labels"].as_object().unwrap() {
            if k.starts_with("org.flatpak.") || k.starts_with("org.freedesktop.") {
                expected.insert(k.clone(), v.clone());
            }
        }
        assert_eq!(a["Annotations"].as_object().unwrap(), &expected);
    }
    let calc = &image_objects(&annotated)[0];
    assert_eq!(
        calc["Annotations"][FLATPAK_REF],
        "app/org.example.Calc/x86_64/stable"
    );
    assert!(calc["Annotations"][ICON_64]
        .as_str()
        .unwrap()
        .starts_with("/icons/"));
    assert_eq!(calc["Annotations"]["name"], Value::Null);

    // Dynamic: same bytes, not cacheable; unknown profiles are unknown routes.
    let fedora_static = stack
        .get(&format!("/profiles/fedora/index/static?{FLATPAKS}"))
        .await
        .unwrap();
    assert!(fedora_static.headers()["cache-control"]
        .to_str()
        .unwrap()
        .starts_with("public, max-age="));
    let fedora_static = fedora_static.bytes().await.unwrap();
    let dynamic = stack
        .get(&format!("/profiles/fedora/index/dynamic?{FLATPAKS}"))
        .await
        .unwrap();
    assert_eq!(dynamic.headers()["cache-control"], "no-store");
    assert_eq!(dynamic.bytes().await.unwrap(), fedora_static);
    let missing = stack.get("/profiles/nope/index/static").await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
    // A bad query is refused as on /index/static.
    let bad = stack
        .get("/profiles/fedora/index/static?nope=1")
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // And the protocol path still answers exactly as before.
    let (again, _) = json(&stack, &format!("/index/static?{FLATPAKS}")).await;
    assert_eq!(again, plain_bytes);
    stack.finish().await;
}

#[tokio::test]
async fn expanded_static_files_equal_the_live_profile_answers() {
    let out = tempfile::tempdir().unwrap();
    let index = StaticIndexConfig {
        name: "fedora@-ARCH@".into(),
        output: out.path().join("fedora/flatpak-latest@-ARCH@.json"),
        tags: vec!["latest".into()],
        required_labels: vec![FLATPAK_REF.into()],
        required_annotations: vec![],
        architectures: vec![],
        registry_url: None,
        profile: Some("fedora".into()),
        architecture_expand: vec!["".into(), "amd64".into(), "arm64".into()],
    };
    let configured = index.clone();
    let stack = start(move |c| {
        c.icons.extract = true;
        c.registry.public_url = Some("/".into());
        c.index_profiles.insert("fedora".into(), fedora_profile());
        c.static_indexes = vec![configured];
    })
    .await;
    let p = seed(&stack).await;

    let written = write_static_indexes(&stack.store, &stack.config)
        .await
        .unwrap();
    let files: Vec<(&str, String)> = written
        .iter()
        .map(|w| {
            (
                w.name.as_str(),
                w.path.file_name().unwrap().to_string_lossy().into_owned(),
            )
        })
        .collect();
    assert_eq!(
        files,
        [
            ("fedora", "flatpak-latest.json".to_owned()),
            ("fedora-amd64", "flatpak-latest-amd64.json".to_owned()),
            ("fedora-arm64", "flatpak-latest-arm64.json".to_owned()),
        ]
    );

    let read = |name: &str| -> (Vec<u8>, Value) {
        let bytes = std::fs::read(out.path().join("fedora").join(name)).unwrap();
        let value = serde_json::from_slice(&bytes).unwrap();
        (bytes, value)
    };
    // All architectures: main wins Calc amd64, the mirror keeps Calc arm64 (in its list),
    // the beta repository is excluded, other/ is not included.
    let (_, all) = read("flatpak-latest.json");
    assert_eq!(
        images(&all),
        [
            ("main/calc".to_owned(), p.main_amd64.clone()),
            ("mirror/calc".to_owned(), p.mirror_arm64.clone()),
        ]
    );
    let (_, amd64) = read("flatpak-latest-amd64.json");
    assert_eq!(
        images(&amd64),
        [("main/calc".to_owned(), p.main_amd64.clone())]
    );
    let (_, arm64) = read("flatpak-latest-arm64.json");
    assert_eq!(
        images(&arm64),
        [("mirror/calc".to_owned(), p.mirror_arm64.clone())]
    );
    assert_eq!(
        arm64["Results"][0]["Lists"][0]["Images"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    for image in image_objects(&all) {
        assert_eq!(image["Labels"][TOKEN_TYPE_LABEL], TOKEN_TYPE_VALUE);
        assert_eq!(image["Annotations"][TOKEN_TYPE_LABEL], TOKEN_TYPE_VALUE);
        assert_eq!(
            image["Annotations"][FLATPAK_REF],
            image["Labels"][FLATPAK_REF]
        );
        assert_eq!(image["Annotations"][ICON_64], image["Labels"][ICON_64]);
    }
    assert!(!images(&all)
        .iter()
        .any(|(_, d)| *d == p.beta || *d == p.other));

    // Byte for byte what the api answers for the same profile and query.
    for expanded in index.expand() {
        let file = std::fs::read(&expanded.output).unwrap();
        let (live, _) = json(
            &stack,
            &format!("/profiles/fedora/index/static?{}", query_string(&expanded)),
        )
        .await;
        assert_eq!(live, file, "{}", expanded.name);
    }
    stack.finish().await;
}
