//! The phone-facing server (SPEC §2). Phones fetch their files here over HTTPS.
//!
//! For now it answers `/healthz` and 404 for every file: the model files, templates and device
//! authentication come with the template engine.

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use crate::SharedApp;

pub fn router(app: SharedApp) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
        .with_state(app)
}
