//! Pushes a small sample of realistic images to a registry with `skopeo copy` (a real
//! client): two Flatpak applications (one multi-arch), a plain Docker image and a
//! multi-arch Docker manifest list. Used by `make up`.
//!
//! Usage: regindex-seed --registry http://127.0.0.1:5000

use std::process::Command;

use anyhow::{bail, Context};
use regindex_testkit::{ImageFormat, ImageSpec, ListFormat, OciLayout};

struct Sample {
    repository: &'static str,
    tags: &'static [&'static str],
    reference: &'static str,
    /// Converted to Docker schema 2 on push.
    docker: bool,
    list: bool,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let registry = match args.as_slice() {
        [_, flag, url] if flag == "--registry" => url.clone(),
        _ => bail!("usage: regindex-seed --registry http://HOST:PORT"),
    };
    let host = registry
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_owned();

    let dir = tempfile::tempdir()?;
    let mut layout = OciLayout::create(dir.path())?;
    let calculator = |arch| {
        ImageSpec::flatpak("org.gnome.Calculator", arch).label(
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

    let samples = [
        Sample {
            repository: "apps/calculator",
            tags: &["latest", "47.1"],
            reference: "calculator",
            docker: false,
            list: true,
        },
        Sample {
            repository: "apps/texteditor",
            tags: &["latest", "46.3"],
            reference: "texteditor",
            docker: false,
            list: false,
        },
        Sample {
            repository: "base/fedora",
            tags: &["latest", "41"],
            reference: "fedora",
            docker: true,
            list: false,
        },
        Sample {
            repository: "base/toolbox",
            tags: &["latest"],
            reference: "toolbox",
            docker: true,
            list: true,
        },
    ];
    for sample in &samples {
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
            println!("pushed {destination}");
        }
    }
    Ok(())
}
