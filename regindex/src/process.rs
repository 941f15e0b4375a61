//! The edges every binary shares: the signals that ask it to stop, and how it reports
//! the error it stops on.

use std::error::Error;
use std::process::ExitCode;

/// Completes at the first Ctrl-C (SIGINT) or SIGTERM. A signal that cannot be listened
/// for is logged and left out, so that the other still stops the process.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested");
}

/// Prints `error` as `<program>: <error and its causes>` on one line, each cause once
/// (see [`crate::error_chain`]; an error that prints its cause would otherwise show it
/// twice), and returns the failure exit code.
pub fn fail(program: &str, error: &(dyn Error + 'static)) -> ExitCode {
    eprintln!("{program}: {}", crate::error_chain(error));
    ExitCode::FAILURE
}
