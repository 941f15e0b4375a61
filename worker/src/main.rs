//! The regindex worker.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use regindex::config::Config;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    about = "Consumes registry events and Bodhi messages, refetches repositories into the index"
)]
struct Args {
    /// Configuration file (YAML); the environment (REGINDEX_*) overrides it.
    #[arg(long, env = "REGINDEX_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    regindex::telemetry::init_tracing();
    let args = Args::parse();
    let run = async {
        let config = Config::load(args.config.as_deref()).context("loading the configuration")?;
        let shutdown = CancellationToken::new();
        tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                regindex::process::shutdown_signal().await;
                shutdown.cancel();
            }
        });
        regindex_worker::run(config, shutdown).await?;
        anyhow::Ok(())
    };
    match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => regindex::process::fail("regindex-worker", e.as_ref()),
    }
}
