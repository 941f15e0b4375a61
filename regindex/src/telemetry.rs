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

/// The answer to `GET /metrics`: the Prometheus text exposition of every metric in
/// `registry` (or a 500 naming the encoding error).
pub fn metrics_response(registry: &prometheus::Registry) -> http::Response<String> {
    use prometheus::Encoder as _;
    let mut buffer = Vec::new();
    let (status, content_type, body) =
        match prometheus::TextEncoder::new().encode(&registry.gather(), &mut buffer) {
            Ok(()) => (
                http::StatusCode::OK,
                "text/plain; version=0.0.4",
                String::from_utf8_lossy(&buffer).into_owned(),
            ),
            Err(e) => (
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                e.to_string(),
            ),
        };
    let mut response = http::Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}
