//! `/api/v1/models/{model}/templates/{file}` (+ `/versions`, `/versions/{v}`, `/rollback`).
//!
//! An upload goes live only after it parses, renders against a sample device and every device
//! of the model, and (for XML types) gives well-formed XML; otherwise 422 `invalid_template`
//! with line and column, and the current version keeps serving. Each change is a change-log
//! entry touching every device of the model.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Caller, Json, Path, RawBody};
use super::problem::{ApiError, ApiResult, Problem};
use super::{blocking, created, no_content};
use crate::catalog::Model;
use crate::domain::ErrorCode;
use crate::SharedApp;

pub(super) fn routes() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new()
        .routes(routes!(get_live, put, reset))
        .routes(routes!(versions))
        .routes(routes!(version))
        .routes(routes!(rollback))
}

/// The model and one of its template file names, or 404.
fn target(app: &SharedApp, model: &str, file: &str) -> ApiResult<Model> {
    let m = app
        .store
        .catalog()
        .get(model)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("model {model} does not exist")))?;
    if !m.files.iter().any(|f| f.template == file) {
        return Err(ApiError::not_found(format!(
            "model {model} has no template {file}"
        )));
    }
    Ok(m)
}

/// Validates `body` for (model, file) against the current state, off the async workers.
async fn validate(app: &SharedApp, m: &Model, file: &str, body: &str) -> ApiResult<usize> {
    let (app2, m, file, body) = (app.clone(), m.clone(), file.to_string(), body.to_string());
    tokio::task::spawn_blocking(move || {
        let overrides = app2.store.template_overrides();
        let state = app2.store.read();
        app2.renderer.validate(&state, &overrides, &m, &file, &body)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::from)
}

fn reload(app: &SharedApp) -> ApiResult<()> {
    app.renderer
        .reload(&app.store.template_overrides())
        .map_err(ApiError::internal)
}

/// The stored override of (model, file), if any.
fn override_of(
    app: &SharedApp,
    model: &str,
    file: &str,
) -> Option<crate::domain::TemplateOverride> {
    let state = app.store.read();
    state
        .templates
        .get(&(model.to_string(), file.to_string()))
        .cloned()
}

/// The source of `version` (0 = the built-in template).
fn version_body(app: &SharedApp, m: &Model, file: &str, version: u32) -> ApiResult<String> {
    if version == 0 {
        return Ok(m.templates.get(file).cloned().unwrap_or_default());
    }
    override_of(app, &m.id, file)
        .and_then(|o| o.versions.into_iter().find(|v| v.version == version))
        .map(|v| v.body)
        .ok_or_else(|| ApiError::not_found(format!("{}/{file} has no version {version}", m.id)))
}

/// The live template source; `Deskprov-Template-Version` says which (0 = built-in).
#[utoipa::path(get, operation_id = "getTemplate", path = "/models/{model}/templates/{file}", tag = "templates",
    responses((status = 200, content_type = "text/plain"), (status = 404, body = Problem)))]
async fn get_live(
    State(app): State<SharedApp>,
    _caller: Caller,
    Path((model, file)): Path<(String, String)>,
) -> ApiResult<Response> {
    let m = target(&app, &model, &file)?;
    let live = override_of(&app, &model, &file)
        .and_then(|o| o.active)
        .unwrap_or(0);
    Ok(source(version_body(&app, &m, &file, live)?, live))
}

fn source(body: String, version: u32) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
            (
                header::HeaderName::from_static("deskprov-template-version"),
                version.to_string(),
            ),
        ],
        body,
    )
        .into_response()
}

#[derive(Serialize, ToSchema)]
pub(super) struct Uploaded {
    model: String,
    template: String,
    version: u32,
    /// Files rendered to validate it (sample device + every device of the model).
    validated_renders: usize,
    /// Devices the change touches (they will be told to re-sync).
    devices: usize,
}

/// Uploads a new version (the raw template as the body). It goes live only if it validates.
#[utoipa::path(put, operation_id = "putTemplate", path = "/models/{model}/templates/{file}", tag = "templates", request_body(content = String, content_type = "text/plain"),
    responses((status = 201, body = Uploaded), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn put(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((model, file)): Path<(String, String)>,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    caller.platform()?;
    let m = target(&app, &model, &file)?;
    let body = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::code(ErrorCode::InvalidTemplate, "a template is UTF-8 text"))?;
    let validated_renders = validate(&app, &m, &file, &body).await?;
    let actor = caller.actor();
    let (mm, ff) = (model.clone(), file.clone());
    let version = blocking(&app, move |s| s.put_template(&actor, &mm, &ff, body)).await?;
    reload(&app)?;
    let devices = app
        .store
        .read()
        .devices
        .values()
        .filter(|d| d.model == model)
        .count();
    let location = format!("/api/v1/models/{model}/templates/{file}/versions/{version}");
    Ok(created(
        location,
        Uploaded {
            model,
            template: file,
            version,
            validated_renders,
            devices,
        },
    ))
}

/// Removes the override: the built-in template serves again (versions are kept for rollback).
#[utoipa::path(delete, operation_id = "resetTemplate", path = "/models/{model}/templates/{file}", tag = "templates",
    responses((status = 204), (status = 404, body = Problem)))]
async fn reset(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((model, file)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.platform()?;
    target(&app, &model, &file)?;
    let actor = caller.actor();
    blocking(&app, move |s| {
        s.activate_template(&actor, &model, &file, None)
    })
    .await?;
    reload(&app)?;
    Ok(no_content())
}

#[derive(Serialize, ToSchema)]
pub(super) struct VersionInfo {
    /// 0 is the built-in template.
    version: u32,
    created_at: Option<String>,
    actor: Option<String>,
    active: bool,
}

/// Every version: the built-in (0) and each upload.
#[utoipa::path(get, operation_id = "listTemplateVersions", path = "/models/{model}/templates/{file}/versions", tag = "templates",
    responses((status = 200, body = Vec<VersionInfo>), (status = 404, body = Problem)))]
async fn versions(
    State(app): State<SharedApp>,
    _caller: Caller,
    Path((model, file)): Path<(String, String)>,
) -> ApiResult<axum::Json<Vec<VersionInfo>>> {
    target(&app, &model, &file)?;
    let o = override_of(&app, &model, &file);
    let active = o.as_ref().and_then(|o| o.active);
    let mut out = vec![VersionInfo {
        version: 0,
        created_at: None,
        actor: None,
        active: active.is_none(),
    }];
    for v in o.iter().flat_map(|o| o.versions.iter()) {
        out.push(VersionInfo {
            version: v.version,
            created_at: Some(v.created_at.clone()),
            actor: Some(v.actor.clone()),
            active: active == Some(v.version),
        });
    }
    Ok(axum::Json(out))
}

/// The source of one version (0 = built-in).
#[utoipa::path(get, operation_id = "getTemplateVersion", path = "/models/{model}/templates/{file}/versions/{version}", tag = "templates",
    responses((status = 200, content_type = "text/plain"), (status = 404, body = Problem)))]
async fn version(
    State(app): State<SharedApp>,
    _caller: Caller,
    Path((model, file, version)): Path<(String, String, u32)>,
) -> ApiResult<Response> {
    let m = target(&app, &model, &file)?;
    Ok(source(version_body(&app, &m, &file, version)?, version))
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Rollback {
    /// The version to make live; 0 = the built-in template.
    version: u32,
}

/// Makes an earlier version live again, after validating it against today's devices.
#[utoipa::path(post, operation_id = "rollbackTemplate", path = "/models/{model}/templates/{file}/rollback", tag = "templates", request_body = Rollback,
    responses((status = 204), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn rollback(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((model, file)): Path<(String, String)>,
    Json(r): Json<Rollback>,
) -> ApiResult<Response> {
    caller.platform()?;
    let m = target(&app, &model, &file)?;
    let body = version_body(&app, &m, &file, r.version)?;
    validate(&app, &m, &file, &body).await?;
    let actor = caller.actor();
    let target_version = (r.version != 0).then_some(r.version);
    blocking(&app, move |s| {
        s.activate_template(&actor, &model, &file, target_version)
    })
    .await?;
    reload(&app)?;
    Ok(no_content())
}
