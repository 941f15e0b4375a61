//! regindex-api: parses arguments, loads the configuration, runs the API.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use regindex::config::Config;

/// glibc's allocator kept what answers and renders had used (the api reached 619 MB under
/// the 5,000-repository bench's mixed load, docs/benchmarks.md); mimalloc returns freed
/// memory to the system.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "regindex-api",
    about = "Serves the registry index protocol from the regindex database"
)]
struct Args {
    /// YAML configuration file; `REGINDEX_*` environment variables override it.
    #[arg(long, env = "REGINDEX_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    regindex::telemetry::init_tracing();
    let run = async {
        let config = Config::load(args.config.as_deref()).context("loading the configuration")?;
        regindex_api::run(config).await
    };
    match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => regindex::process::fail("regindex-api", e.as_ref()),
    }
}
