//! Real clients against the real api: Debian's `flatpak` lists the applications pushed to
//! a real registry, and headless Chromium renders the front page with their icons.
//!
//! Both binaries come from Debian packages (`flatpak`, `chromium`); a missing one fails
//! the test with the package to install.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{flatpak_app, start};
use regindex_testkit::app::App;
use regindex_testkit::samples::{push_samples, SAMPLES};
use regindex_testkit::ImageSpec;

/// Applications pushed for the clients, with the colour of their icons.
const APPS: [(&str, &str, [u8; 3]); 3] = [
    ("apps/calculator", "org.example.Calculator", [230, 30, 60]),
    ("apps/notes", "org.example.Notes", [30, 160, 70]),
    ("apps/maps", "org.example.Maps", [40, 90, 220]),
];

fn require(binary: &str, package: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let candidate = Path::new(dir).join(binary);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("`{binary}` is not installed: this test needs the Debian package `{package}` (apt-get install -y {package})");
}

/// The flatpak applications of `APPS` (amd64 and arm64, tagged `latest`), one runtime-like
/// image that is not an app for amd64 only under another tag, and a plain container.
async fn seeded(stack: &App) {
    for (repository, app_id, rgb) in APPS {
        stack
            .registry
            .push_image(
                repository,
                Some("latest"),
                &flatpak_app(app_id, "amd64", rgb),
            )
            .await
            .unwrap();
        stack.refetch(repository).await.unwrap();
    }
    // Not for x86_64 clients: arm64 only.
    stack
        .registry
        .push_image(
            "apps/armonly",
            Some("latest"),
            &flatpak_app("org.example.ArmOnly", "arm64", [1, 2, 3]),
        )
        .await
        .unwrap();
    // Not tagged latest.
    stack
        .registry
        .push_image(
            "apps/testing",
            Some("testing"),
            &flatpak_app("org.example.Testing", "amd64", [4, 5, 6]),
        )
        .await
        .unwrap();
    // Not a Flatpak.
    stack
        .registry
        .push_image(
            "library/fedora",
            Some("latest"),
            &ImageSpec::new("amd64").label("name", "fedora"),
        )
        .await
        .unwrap();
    for repository in ["apps/armonly", "apps/testing", "library/fedora"] {
        stack.refetch(repository).await.unwrap();
    }
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flatpak_lists_the_pushed_applications() {
    let flatpak = require("flatpak", "flatpak");
    // Labels as pushed, and with icon data URIs replaced by /icons/ URLs.
    for extract in [false, true] {
        flatpak_lists(&flatpak, extract).await;
    }
}

async fn flatpak_lists(flatpak: &Path, extract: bool) {
    let stack = start(move |c| c.icons.extract = extract).await;
    seeded(&stack).await;

    let home = tempfile::tempdir().unwrap();
    let url = format!("oci+{}", stack.base());
    let flatpak_run = |args: &[&str]| flatpak_in(flatpak, home.path(), args);
    flatpak_run(&[
        "remote-add",
        "--user",
        "--no-gpg-verify",
        "regindex-test",
        &url,
    ]);
    let listed = tokio::task::block_in_place(|| {
        flatpak_run(&[
            "remote-ls",
            "--user",
            "--arch=x86_64",
            "--columns=ref",
            "regindex-test",
        ])
    });
    let mut refs: Vec<&str> = listed
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    refs.sort();
    let mut expected: Vec<String> = APPS
        .iter()
        .map(|(_, id, _)| format!("app/{id}/x86_64/stable"))
        .collect();
    expected.sort();
    assert_eq!(
        refs, expected,
        "flatpak remote-ls output (icons.extract {extract}):\n{listed}"
    );

    // Flatpak shows the sizes and runtime from the labels.
    let details = tokio::task::block_in_place(|| {
        flatpak_run(&[
            "remote-ls",
            "--user",
            "--arch=x86_64",
            "--columns=application,runtime,installed-size,download-size",
            "regindex-test",
        ])
    });
    // Pushed: installed-size 4096000, download-size 12345, runtime .../x86_64/f41.
    for (_, app_id, _) in APPS {
        let line = details
            .lines()
            .find(|l| l.starts_with(app_id))
            .unwrap_or_else(|| panic!("{app_id} missing from:\n{details}"));
        // GLib formats sizes with a no-break space.
        let line = line.replace('\u{a0}', " ");
        let columns: Vec<&str> = line.split('\t').map(str::trim).collect();
        assert_eq!(
            columns,
            [
                app_id,
                "org.fedoraproject.Platform/x86_64/f41",
                "4.1 MB",
                "12.3 kB"
            ],
            "{details}"
        );
    }
    stack.finish().await;
}

/// Runs `flatpak` with a private home (user and system installations under `home`).
fn flatpak_in(flatpak: &Path, home: &Path, args: &[&str]) -> String {
    std::fs::create_dir_all(home.join("runtime")).unwrap();
    let mut command = Command::new(flatpak);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("XDG_STATE_HOME", home.join("state"))
        .env("XDG_RUNTIME_DIR", home.join("runtime"))
        .env("FLATPAK_SYSTEM_DIR", home.join("system"))
        .env("LANG", "C.UTF-8");
    run(&mut command)
}

/// Fedora's registry tags what is in Bodhi's testing repository `testing` (and stable
/// `latest`); a remote whose URL ends in `#testing` asks the index for `tag=testing`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_testing_remote_lists_the_testing_set() {
    let flatpak = require("flatpak", "flatpak");
    let stack = start(|_| {}).await;
    seeded(&stack).await;
    // An update of the calculator in testing: its new build is tagged `testing` only.
    let update = flatpak_app("org.example.Calculator", "amd64", [231, 31, 61]).seed(7);
    stack
        .registry
        .push_image("apps/calculator", Some("testing"), &update)
        .await
        .unwrap();
    stack.refetch("apps/calculator").await.unwrap();

    let home = tempfile::tempdir().unwrap();
    let list = |remote: &str| {
        let listed = tokio::task::block_in_place(|| {
            flatpak_in(
                &flatpak,
                home.path(),
                &[
                    "remote-ls",
                    "--user",
                    "--arch=x86_64",
                    "--columns=ref",
                    remote,
                ],
            )
        });
        let mut refs: Vec<String> = listed
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        refs.sort();
        refs
    };
    for (name, url) in [
        ("stable", format!("oci+{}", stack.base())),
        ("testing", format!("oci+{}#testing", stack.base())),
    ] {
        flatpak_in(
            &flatpak,
            home.path(),
            &["remote-add", "--user", "--no-gpg-verify", name, &url],
        );
    }
    assert_eq!(
        list("testing"),
        [
            "app/org.example.Calculator/x86_64/stable",
            "app/org.example.Testing/x86_64/stable"
        ]
    );
    assert_eq!(list("stable").len(), APPS.len());
    // The index was asked for the testing set.
    let response = stack
        .get("/index/static?label%3Aorg.flatpak.ref%3Aexists=1&architecture=amd64&os=linux&tag=testing")
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    assert!(body.contains("org.example.Testing") && !body.contains("org.example.Notes"));
    stack.finish().await;
}

fn artifacts_dir() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// True when the screenshot holds a `min`x`min` square of colour `rgb` (± 4 per channel).
fn find_square(
    pixels: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    rgb: [u8; 3],
    min: usize,
) -> bool {
    let close = |x: usize, y: usize| {
        let i = (y * width + x) * channels;
        (0..3).all(|c| pixels[i + c].abs_diff(rgb[c]) <= 4)
    };
    (0..height.saturating_sub(min)).step_by(4).any(|y0| {
        (0..width.saturating_sub(min))
            .step_by(4)
            .any(|x0| (y0..y0 + min).all(|y| (x0..x0 + min).all(|x| close(x, y))))
    })
}

/// Headless Chromium with a throw-away profile.
struct Chromium {
    binary: PathBuf,
    profile: tempfile::TempDir,
}

/// A decoded screenshot.
struct Screenshot {
    path: PathBuf,
    pixels: Vec<u8>,
    width: usize,
    height: usize,
    channels: usize,
}

impl Screenshot {
    fn has_square(&self, rgb: [u8; 3], min: usize) -> bool {
        find_square(
            &self.pixels,
            self.width,
            self.height,
            self.channels,
            rgb,
            min,
        )
    }
}

impl Chromium {
    fn new() -> Self {
        Self {
            binary: require("chromium", "chromium"),
            profile: tempfile::tempdir().unwrap(),
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        command.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--virtual-time-budget=5000",
        ]);
        command.arg(format!("--user-data-dir={}", self.profile.path().display()));
        command
    }

    fn dump_dom(&self, url: &str) -> String {
        tokio::task::block_in_place(|| run(self.command().arg("--dump-dom").arg(url)))
    }

    /// A 1000x1200 screenshot of `url`, kept as `target/test-artifacts/<name>`.
    fn screenshot(&self, url: &str, name: &str) -> Screenshot {
        let path = artifacts_dir().join(name);
        let _ = std::fs::remove_file(&path);
        tokio::task::block_in_place(|| {
            run(self
                .command()
                .arg(format!("--screenshot={}", path.display()))
                .arg("--window-size=1000,1200")
                .arg(url))
        });
        let decoder =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut pixels).unwrap();
        let channels = info.color_type.samples();
        assert!(channels >= 3, "{:?}", info.color_type);
        Screenshot {
            path,
            pixels,
            width: info.width as usize,
            height: info.height as usize,
            channels,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_renders_the_front_page_with_titles_and_icons() {
    let chromium = Chromium::new();
    let stack = start(|_| {}).await;
    seeded(&stack).await;

    let dom = chromium.dump_dom(&format!("{}/", stack.base()));
    for (repository, app_id, _) in APPS {
        assert!(
            dom.contains(&format!(">{app_id}</a>")),
            "title of {repository} in the DOM"
        );
        assert!(
            dom.contains(&format!("/repository/{repository}\"")),
            "{repository} linked"
        );
    }

    let screenshot = chromium.screenshot(&format!("{}/", stack.base()), "web-front-page.png");
    // Each app's icon (a solid square of its colour) is on screen, at least 40 px wide.
    for (repository, _, rgb) in APPS {
        assert!(
            screenshot.has_square(rgb, 40),
            "icon of {repository} (rgb {rgb:?}) not visible in {}",
            screenshot.path.display()
        );
    }
    stack.finish().await;
}

/// What a newcomer sees after `make up`: the samples `regindex-seed` pushes (with skopeo)
/// show their icons, and every image on the page is served and decodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_shows_the_icons_of_the_make_up_samples() {
    let chromium = Chromium::new();
    require("skopeo", "skopeo");
    let stack = start(|_| {}).await;
    let host = stack.registry.host();
    tokio::task::spawn_blocking(move || push_samples(&host))
        .await
        .unwrap()
        .unwrap();
    for sample in &SAMPLES {
        stack.refetch(sample.repository).await.unwrap();
    }

    let page = stack.get("/").await.unwrap().text().await.unwrap();
    let sources: Vec<&str> = page
        .split("<img class=\"icon\" src=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect();
    let with_icons = SAMPLES.iter().filter(|s| s.icon_rgb.is_some()).count();
    assert_eq!(sources.len(), with_icons, "{page}");
    for source in sources {
        let response = stack.get(source).await.unwrap();
        assert_eq!(response.status(), 200, "{source}");
        let bytes = response.bytes().await.unwrap();
        let mut reader = png::Decoder::new(&bytes[..]).read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size()];
        reader
            .next_frame(&mut pixels)
            .unwrap_or_else(|e| panic!("{source} does not decode: {e}"));
    }

    let screenshot = chromium.screenshot(&format!("{}/", stack.base()), "web-make-up-samples.png");
    for sample in &SAMPLES {
        if let Some(rgb) = sample.icon_rgb {
            assert!(
                screenshot.has_square(rgb, 40),
                "icon of {} (rgb {rgb:?}) not visible in {}",
                sample.repository,
                screenshot.path.display()
            );
        }
    }
    stack.finish().await;
}

/// A Flatpak remote pointing at a profile (`oci+<api>/profiles/<name>`): the client lists
/// what the profile keeps, with icon URLs and `Registry` resolved as for `/index/static`.
/// (Whether the client then asks for a token, `force_flatpak_token`, shows only when
/// installing, which needs a session bus and an authenticator: `api/tests/profiles.rs`
/// decodes the label instead.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flatpak_uses_a_profile_as_its_remote() {
    use regindex::config::{IndexProfile, RepositoryPattern};
    let flatpak = require("flatpak", "flatpak");
    let pattern = |s: &str| RepositoryPattern::new(s).unwrap();
    let stack = start(move |c| {
        c.icons.extract = true;
        c.index_profiles.insert(
            "fedora".into(),
            IndexProfile {
                repository_include: vec![pattern("apps/.*")],
                repository_exclude: vec![pattern("apps/notes")],
                flatpak_annotations: true,
                force_flatpak_token: true,
                ..IndexProfile::default()
            },
        );
    })
    .await;
    seeded(&stack).await;
    let home = tempfile::tempdir().unwrap();
    let url = format!("oci+{}/profiles/fedora", stack.base());
    flatpak_in(
        &flatpak,
        home.path(),
        &["remote-add", "--user", "--no-gpg-verify", "fedora", &url],
    );
    let listed = tokio::task::block_in_place(|| {
        flatpak_in(
            &flatpak,
            home.path(),
            &[
                "remote-ls",
                "--user",
                "--arch=x86_64",
                "--columns=ref",
                "fedora",
            ],
        )
    });
    let mut refs: Vec<&str> = listed
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    refs.sort();
    // apps/notes is excluded; the plain container and the testing tag never matched.
    assert_eq!(
        refs,
        [
            "app/org.example.Calculator/x86_64/stable",
            "app/org.example.Maps/x86_64/stable"
        ],
        "{listed}"
    );
    stack.finish().await;
}
