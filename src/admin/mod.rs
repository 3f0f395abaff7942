//! The admin API (SPEC §4): JSON over HTTPS, bearer tokens, RFC 9457 errors, OpenAPI.
//!
//! One module per resource. A handler parses its input, makes one store call (on the blocking
//! pool: the store flushes to disk before it answers) and maps the result to a response.

mod changes;
mod devices;
pub(crate) mod extract;
mod firmware;
mod groups;
mod key_profiles;
mod models;
mod openapi;
pub(crate) mod problem;
mod provlog;
mod sca;
mod shared_lines;
mod strict;
mod templates;
mod tokens;
mod transfer;
mod users;
pub(crate) mod views;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::ErrorCode;
use crate::store::{Store, StoreError};
use crate::SharedApp;
use problem::{ApiError, ApiResult};

/// Largest request body the admin API reads.
pub(crate) const BODY_LIMIT: usize = 1 << 20;

#[derive(OpenApi)]
#[openapi(
    info(title = "deskprov admin API", description = "Groups, users, devices, shared call appearances, shared lines, change log."),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;
impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API routes under `/api/v1`, `/healthz`, `/metrics` and `/api/v1/openapi.json`, and the
/// OpenAPI document of all of them (finished by [`openapi::finish`]).
fn api() -> (Router<SharedApp>, serde_json::Value) {
    let api = OpenApiRouter::<SharedApp>::new()
        .merge(groups::routes())
        .merge(users::routes())
        .merge(sca::routes())
        .merge(devices::routes())
        .merge(key_profiles::routes())
        .merge(shared_lines::routes())
        .merge(changes::routes())
        .merge(tokens::routes())
        .merge(models::routes())
        .merge(templates::routes())
        .merge(firmware::routes())
        .merge(transfer::routes())
        .merge(provlog::routes())
        .routes(routes!(openapi_json));
    let (api, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", api)
        .routes(routes!(healthz))
        .routes(routes!(metrics))
        .split_for_parts();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    (api, openapi::finish(&doc))
}

/// The admin router: `/api/v1/...`, `/api/v1/openapi.json`, `/healthz` and `/metrics`.
pub(crate) fn router(app: SharedApp) -> Router {
    let (api, doc) = api();
    api.fallback(|| async { ApiError::not_found("no such resource") })
        .method_not_allowed_fallback(|| async {
            ApiError::code(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this resource",
            )
        })
        .layer(axum::Extension(OpenApiDoc(std::sync::Arc::new(doc))))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(crate::metrics::admin_requests))
        .with_state(app)
}

/// The finished OpenAPI document, built once at start.
#[derive(Clone)]
struct OpenApiDoc(std::sync::Arc<serde_json::Value>);

/// This document (OpenAPI 3.1); no token needed.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", operation_id = "getOpenApi",
    security(()), responses((status = 200, description = "The OpenAPI 3.1 document of this API.", content_type = "application/json", body = Object)))]
async fn openapi_json(axum::Extension(doc): axum::Extension<OpenApiDoc>) -> Response {
    axum::Json(doc.0.as_ref()).into_response()
}

#[derive(Serialize, utoipa::ToSchema)]
struct Health {
    status: &'static str,
    /// The last committed change-log seq: platform tokens only, since it counts every tenant's
    /// writes (a group token or anyone unauthenticated could watch other tenants' activity).
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
}

/// `{"status": "ok"}` for anyone (load balancers send no token); with a platform token also
/// the `seq`. A missing or wrong token is not an error here.
#[utoipa::path(get, path = "/healthz", tag = "meta", operation_id = "getHealth", security(()),
    responses((status = 200, description = "The server is up.", body = Health)))]
async fn healthz(State(app): State<SharedApp>, headers: HeaderMap) -> axum::Json<Health> {
    let platform = extract::Caller::of(&headers, &app).is_some_and(|c| c.group.is_none());
    axum::Json(Health {
        status: "ok",
        seq: platform.then(|| app.store.last_seq()),
    })
}

/// Prometheus metrics (OpenMetrics text); platform tokens only: the counters span every tenant.
#[utoipa::path(get, path = "/metrics", tag = "meta", operation_id = "getMetrics",
    responses((status = 200, description = "OpenMetrics text.", content_type = "application/openmetrics-text", body = String)))]
async fn metrics(State(app): State<SharedApp>, caller: extract::Caller) -> ApiResult<Response> {
    caller.platform()?;
    let text = crate::metrics::render(&app);
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

/// Runs a store operation on the blocking pool (it writes and flushes to disk).
pub(crate) async fn blocking<T: Send + 'static>(
    app: &SharedApp,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> ApiResult<T> {
    blocking_app(app, move |app| f(&app.store)).await
}

/// Runs work that reaches the store's engine (a write, or a shared store's round trip) on the
/// blocking pool.
pub(crate) async fn blocking_app<T: Send + 'static>(
    app: &SharedApp,
    f: impl FnOnce(&SharedApp) -> Result<T, StoreError> + Send + 'static,
) -> ApiResult<T> {
    let app = app.clone();
    tokio::task::spawn_blocking(move || f(&app))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)
}

/// 201 Created with `Location` and the resource.
pub(crate) fn created<T: Serialize>(location: String, body: T) -> Response {
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(body),
    )
        .into_response()
}

/// 204 No Content.
pub(crate) fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use crate::domain::{Action, ChangeKind, ErrorCode};

    fn names(v: &serde_json::Value) -> Vec<String> {
        let mut n: Vec<String> = v["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("not an enum: {v}"))
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn openapi_types_problem_codes_actions_and_kinds_as_enums() {
        let doc = serde_json::to_value(super::api().1).unwrap();
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["Problem"]["properties"]["code"]["$ref"],
            "#/components/schemas/ErrorCode"
        );
        let mut want: Vec<String> = ErrorCode::ALL.iter().map(|c| c.to_string()).collect();
        want.sort();
        assert_eq!(names(&schemas["ErrorCode"]), want);
        let mut want: Vec<String> = Action::ALL.iter().map(|a| a.to_string()).collect();
        want.sort();
        assert_eq!(names(&schemas["Action"]), want);
        let mut want: Vec<String> = ChangeKind::ALL.iter().map(|k| k.to_string()).collect();
        want.sort();
        assert_eq!(names(&schemas["ChangeKind"]), want);
    }
}
