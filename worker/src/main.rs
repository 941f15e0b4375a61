//! The regindex worker.

use std::path::PathBuf;

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
async fn main() -> anyhow::Result<()> {
    regindex::telemetry::init_tracing();
    let args = Args::parse();
    let config = Config::load(args.config.as_deref()).context("loading the configuration")?;
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested");
            shutdown.cancel();
        }
    });
    regindex_worker::run(config, shutdown).await?;
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn wait_for_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
