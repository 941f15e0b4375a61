//! The sample images `make up` pushes (`regindex-seed`), pushed with `skopeo copy` (a
//! real client): two Flatpak applications with real icons (one multi-arch), a plain Docker
//! image and a multi-arch Docker manifest list.

use std::process::Command;

use anyhow::{bail, Context};

use crate::{ImageFormat, ImageSpec, ListFormat, OciLayout};

/// A sample repository.
pub struct Sample {
    pub repository: &'static str,
    pub tags: &'static [&'static str],
    /// The colour of its icons (solid squares), for Flatpak applications.
    pub icon_rgb: Option<[u8; 3]>,
    /// Reference name in the OCI layout.
    reference: &'static str,
    /// Converted to Docker schema 2 on push.
    docker: bool,
    list: bool,
}

/// GNOME's blue and yellow.
const CALCULATOR_RGB: [u8; 3] = [0x35, 0x84, 0xe4];
const TEXT_EDITOR_RGB: [u8; 3] = [0xf6, 0xd3, 0x2d];

pub const SAMPLES: [Sample; 4] = [
    Sample {
        repository: "apps/calculator",
        tags: &["latest", "47.1"],
        icon_rgb: Some(CALCULATOR_RGB),
        reference: "calculator",
        docker: false,
        list: true,
    },
    Sample {
        repository: "apps/texteditor",
        tags: &["latest", "46.3"],
        icon_rgb: Some(TEXT_EDITOR_RGB),
        reference: "texteditor",
        docker: false,
        list: false,
    },
    Sample {
        repository: "base/fedora",
        tags: &["latest", "41"],
        icon_rgb: None,
        reference: "fedora",
        docker: true,
        list: false,
    },
    Sample {
        repository: "base/toolbox",
        tags: &["latest"],
        icon_rgb: None,
        reference: "toolbox",
        docker: true,
        list: true,
    },
];

fn layout(dir: &std::path::Path) -> anyhow::Result<()> {
    let mut layout = OciLayout::create(dir)?;
    let calculator = |arch| {
        ImageSpec::flatpak("org.gnome.Calculator", arch)
            .icons(CALCULATOR_RGB)
            .label(
                "org.opencontainers.image.description",
                "Perform arithmetic, scientific or financial calculations",
            )
    };
    layout.add_list(
        "calculator",
        &[calculator("x86_64"), calculator("aarch64")],
        ListFormat::OciIndex,
    )?;
    layout.add_image(
        "texteditor",
        &ImageSpec::flatpak("org.gnome.TextEditor", "x86_64")
            .icons(TEXT_EDITOR_RGB)
            .label("org.opencontainers.image.description", "Edit text files"),
    )?;
    let fedora = |arch: &str| {
        ImageSpec::new(arch)
            .label("name", "fedora")
            .label("io.k8s.display-name", "Fedora base image")
            .label(
                "description",
                "The Fedora base image, for building containers",
            )
            .format(ImageFormat::Oci)
    };
    layout.add_image("fedora", &fedora("amd64"))?;
    layout.add_list(
        "toolbox",
        &[
            fedora("amd64").label("name", "fedora-toolbox"),
            fedora("arm64").label("name", "fedora-toolbox"),
        ],
        ListFormat::OciIndex,
    )?;
    Ok(())
}

/// Pushes every sample to the registry at `host` (`HOST:PORT`, plain HTTP) with
/// `skopeo copy`; returns the references pushed. Blocking.
pub fn push_samples(host: &str) -> anyhow::Result<Vec<String>> {
    let dir = tempfile::tempdir()?;
    layout(dir.path())?;
    let mut pushed = Vec::new();
    for sample in &SAMPLES {
        for tag in sample.tags {
            let destination = format!("docker://{host}/{}:{tag}", sample.repository);
            let mut skopeo = Command::new("skopeo");
            skopeo.args(["copy", "--quiet", "--dest-tls-verify=false"]);
            if sample.list {
                skopeo.arg("--all");
            }
            if sample.docker {
                skopeo.args(["--format", "v2s2"]);
            }
            skopeo
                .arg(format!("oci:{}:{}", dir.path().display(), sample.reference))
                .arg(&destination);
            let status = skopeo
                .status()
                .context("running skopeo (apt-get install skopeo)")?;
            if !status.success() {
                bail!("skopeo copy to {destination} failed: {status}");
            }
            pushed.push(destination);
        }
    }
    Ok(pushed)
}
