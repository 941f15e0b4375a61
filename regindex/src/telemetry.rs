//! Logging set-up shared by the binaries.

use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global tracing subscriber: `RUST_LOG` filters (default `info`), and
/// `REGINDEX_LOG_FORMAT=json` switches to one JSON object per line for log shippers.
pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("REGINDEX_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
