//! Pushes the sample images of [`regindex_testkit::samples`] to a registry with `skopeo
//! copy` (a real client): two Flatpak applications with real icons (one multi-arch), a
//! plain Docker image and a multi-arch Docker manifest list. Used by `make up`.
//!
//! Usage: regindex-seed --registry http://127.0.0.1:5000

use anyhow::bail;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let registry = match args.as_slice() {
        [_, flag, url] if flag == "--registry" => url.clone(),
        _ => bail!("usage: regindex-seed --registry http://HOST:PORT"),
    };
    let host = registry
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    for pushed in regindex_testkit::samples::push_samples(host)? {
        println!("pushed {pushed}");
    }
    Ok(())
}
