//! What every phone request leaves behind: the metrics counter by status and model, and one
//! log line `phone fetch` with the MAC, model, file, status, bytes and latency (never the
//! query string, which may carry credentials, nor any header).

use std::time::Duration;

use axum::http::Method;
use axum::response::Response;

use crate::domain::Mac;

/// The device and model a response was for, set by the fetch path on the response.
#[derive(Clone)]
pub(super) struct Served {
    mac: Option<Mac>,
    model: String,
}

/// Marks `r` as served for `mac` (per-device files) and `model`.
pub(super) fn mark(r: &mut Response, mac: Option<&Mac>, model: &str) {
    r.extensions_mut().insert(Served {
        mac: mac.cloned(),
        model: model.to_string(),
    });
}

/// Counts the request and logs its line.
pub(super) fn fetched(method: &Method, path: &str, r: &Response, took: Duration) {
    let served = r.extensions().get::<Served>();
    let model = served.map(|s| s.model.as_str()).unwrap_or("-");
    let status = r.status().as_u16();
    crate::metrics::phone_request(status, model);
    let bytes = axum::body::HttpBody::size_hint(r.body())
        .exact()
        .unwrap_or(0);
    let mac = served
        .and_then(|s| s.mac.as_ref())
        .map(|m| m.to_string())
        .unwrap_or_else(|| "-".into());
    // The file name only: a phone's path has no secrets, its query string might.
    let file = path.trim_start_matches('/');
    let file: String = file.chars().take(128).collect();
    tracing::info!(
        target: "deskprov::phone::fetch",
        method = %method,
        mac = %mac,
        model = %model,
        file = %file,
        status,
        bytes,
        latency_ms = took.as_secs_f64() * 1000.0,
        "phone fetch"
    );
}
