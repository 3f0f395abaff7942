//! `/api/v1/groups/{group}/devices`, `/api/v1/devices/{mac}`, `/credentials`, `/hot-desk`.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{
    body_is_absent, id, json_body, merge, Caller, Json, Page, PageQuery, Path, Query, RawBody,
    RawJson,
};
use super::problem::{ApiError, ApiResult, Problem};
use super::views::{device_input, CredentialsView, DeviceView, ProvisioningLinkView};
use super::{blocking, blocking_app, created, no_content};
use crate::domain::rules::DeviceInput;
use crate::domain::{Device, ErrorCode, Extension, GroupId, Mac};
use crate::SharedApp;

pub(super) fn routes() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one, patch, delete))
        .routes(routes!(credentials))
        .routes(routes!(provisioning_link))
        .routes(routes!(hot_desk_login, hot_desk_logout))
        .routes(routes!(sync))
        .routes(routes!(preview))
        .routes(routes!(uploads))
        .routes(routes!(unprovisioned))
}

#[derive(Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct SyncRequest {
    /// Send the model's reboot event instead of its re-sync event.
    #[serde(default)]
    reboot: bool,
}

/// Tells the phone to re-sync (or reboot) now: no debounce, no same-hash skip.
#[utoipa::path(post, operation_id = "syncDevice", path = "/devices/{mac}/sync", tag = "sync", request_body = Option<SyncRequest>,
    responses((status = 202, body = DeviceView), (status = 404, body = Problem)))]
async fn sync(
    State(app): State<SharedApp>,
    caller: Caller,
    Path(mac): Path<String>,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    let d = current(&app, &caller, &mac)?;
    // The body is optional: none means {"reboot": false}.
    let req: SyncRequest = if body_is_absent(&body) {
        SyncRequest::default()
    } else {
        json_body(&body)?
    };
    let (reboot, target) = (req.reboot, [(d.mac.clone(), d.revision)]);
    // With a shared store the request is a database round trip.
    blocking_app(&app, move |app| app.sync.request(app, &target, reboot)).await?;
    Ok((
        axum::http::StatusCode::ACCEPTED,
        axum::Json(reread(&app, &d.mac)?),
    )
        .into_response())
}

/// Exactly what the phone would receive for `{file}` (secrets included: admin only).
#[utoipa::path(get, operation_id = "previewDeviceFile", path = "/devices/{mac}/files/{file}", tag = "devices",
    responses((status = 200, description = "The file, with the content type its model declares for it.", content((String = "application/xml"), (String = "text/plain"))), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn preview(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((mac, file)): Path<(String, String)>,
) -> ApiResult<Response> {
    let d = current(&app, &caller, &mac)?;
    let state = app.store.read();
    let r =
        crate::render::device_file(&app.renderer, &state, &d.mac, &file).map_err(|e| match e {
            crate::render::Preview::NotFound => ApiError::not_found(format!(
                "device {} does not request a file named {file}",
                d.mac
            )),
            crate::render::Preview::Failed(e) => {
                tracing::warn!(mac = %d.mac, file = %file, error = %e, "preview failed to render");
                ApiError::new(
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::RenderFailed,
                    "the file could not be rendered; see the server log",
                )
            }
        })?;
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, r.content_type.clone()),
            (axum::http::header::ETAG, r.etag.clone()),
        ],
        r.bytes.clone(),
    )
        .into_response())
}

/// Files the phone uploaded (Polycom-style PUT), by name.
#[utoipa::path(get, operation_id = "listDeviceUploads", path = "/devices/{mac}/uploads", tag = "devices",
    responses((status = 200, body = Vec<crate::store::UploadMeta>), (status = 404, body = Problem)))]
async fn uploads(
    State(app): State<SharedApp>,
    caller: Caller,
    Path(mac): Path<String>,
) -> ApiResult<axum::Json<Vec<crate::store::UploadMeta>>> {
    let d = current(&app, &caller, &mac)?;
    Ok(axum::Json(
        blocking(&app, move |s| s.uploads_of(&d.mac)).await?,
    ))
}

/// Well-formed MACs that asked for files but are not provisioned, newest first (bounded).
#[utoipa::path(get, operation_id = "listUnprovisioned", path = "/unprovisioned", tag = "devices",
    responses((status = 200, body = Vec<crate::store::Unprovisioned>), (status = 403, body = Problem)))]
async fn unprovisioned(
    State(app): State<SharedApp>,
    caller: Caller,
) -> ApiResult<axum::Json<Vec<crate::store::Unprovisioned>>> {
    caller.platform()?;
    Ok(axum::Json(blocking(&app, |s| s.unprovisioned()).await?))
}

/// The device at `{mac}`, if the caller may see it.
pub(super) fn current(app: &SharedApp, caller: &Caller, mac: &str) -> ApiResult<Device> {
    let m = id(mac, "device", Mac::parse)?;
    let d = app.store.read().devices.get(&m).cloned();
    let d = d.ok_or_else(|| ApiError::not_found(format!("device {m} does not exist")))?;
    caller
        .see(&d.group)
        .map_err(|_| ApiError::not_found(format!("device {m} does not exist")))?;
    Ok(d)
}

fn view(app: &SharedApp, d: &Device) -> DeviceView {
    DeviceView::of(&app.store.read(), app, d)
}

/// The stored device after a write (its revision was set by the commit).
pub(super) fn reread(app: &SharedApp, mac: &Mac) -> ApiResult<DeviceView> {
    let d = app.store.read().devices.get(mac).cloned();
    d.map(|d| view(app, &d))
        .ok_or_else(|| ApiError::not_found(format!("device {mac} does not exist")))
}

#[utoipa::path(get, operation_id = "listDevices", path = "/groups/{group}/devices", tag = "devices", params(PageQuery),
    responses((status = 200, body = Page<DeviceView>), (status = 404, body = Problem)))]
async fn list(
    State(app): State<SharedApp>,
    caller: Caller,
    Path(g): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<DeviceView>>> {
    let g = id(&g, "group", GroupId::parse)?;
    caller.see(&g)?;
    let s = app.store.read();
    if !s.groups.contains_key(&g) {
        return Err(ApiError::not_found(format!("group {g} does not exist")));
    }
    let items = s.devices_of(&g).map(|d| DeviceView::of(&s, &app, d));
    Ok(axum::Json(q.page(items, |d| d.mac.to_string())?))
}

/// Adds a device; the response shows its provisioning credentials once.
#[utoipa::path(post, operation_id = "createDevice", path = "/groups/{group}/devices", tag = "devices", request_body = DeviceInput,
    responses((status = 201, body = DeviceView), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create(
    State(app): State<SharedApp>,
    caller: Caller,
    Path(g): Path<String>,
    Json(input): Json<DeviceInput>,
) -> ApiResult<Response> {
    let g = id(&g, "group", GroupId::parse)?;
    caller.see(&g)?;
    let actor = caller.actor();
    let d = blocking(&app, move |s| s.create_device(&actor, &g, input)).await?;
    let body = reread(&app, &d.mac)?.with_credentials(&d);
    Ok(created(format!("/api/v1/devices/{}", d.mac), body))
}

#[utoipa::path(get, operation_id = "getDevice", path = "/devices/{mac}", tag = "devices",
    responses((status = 200, body = DeviceView), (status = 404, body = Problem)))]
async fn get_one(
    State(app): State<SharedApp>,
    caller: Caller,
    Path(mac): Path<String>,
) -> ApiResult<axum::Json<DeviceView>> {
    let d = current(&app, &caller, &mac)?;
    Ok(axum::Json(view(&app, &d)))
}

/// Changes a device (JSON merge patch): name, model, owner, keys, settings, notify_target,
/// expansion_modules.
#[utoipa::path(patch, operation_id = "updateDevice", path = "/devices/{mac}", tag = "devices", request_body(content = DeviceInput, content_type = "application/merge-patch+json"),
    responses((status = 200, body = DeviceView), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn patch(
    State(app): State<SharedApp>,
    caller: Caller,
    Path(mac): Path<String>,
    RawJson(body): RawJson,
) -> ApiResult<axum::Json<DeviceView>> {
    let d = current(&app, &caller, &mac)?;
    let mut base = device_input(&d);
    // Compare MACs in canonical form: the body may spell it in any accepted form.
    base.mac = Some(d.mac.clone());
    let input: DeviceInput = merge(&base, body)?;
    let actor = caller.actor();
    let m = d.mac.clone();
    blocking(&app, move |s| s.update_device(&actor, &m, input)).await?;
    Ok(axum::Json(reread(&app, &d.mac)?))
}

/// Deletes a device and the SCA endpoints on it.
#[utoipa::path(delete, operation_id = "deleteDevice", path = "/devices/{mac}", tag = "devices",
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete(
    State(app): State<SharedApp>,
    caller: Caller,
    Path(mac): Path<String>,
) -> ApiResult<Response> {
    let d = current(&app, &caller, &mac)?;
    let actor = caller.actor();
    blocking(&app, move |s| s.delete_device(&actor, &d.mac)).await?;
    Ok(no_content())
}

/// Rotates the provisioning password; the response is the only place it is shown.
#[utoipa::path(post, operation_id = "rotateDeviceCredentials", path = "/devices/{mac}/credentials", tag = "devices",
    responses((status = 200, body = CredentialsView), (status = 404, body = Problem)))]
async fn credentials(
    State(app): State<SharedApp>,
    caller: Caller,
    Path(mac): Path<String>,
) -> ApiResult<axum::Json<CredentialsView>> {
    let d = current(&app, &caller, &mac)?;
    let actor = caller.actor();
    let m = d.mac.clone();
    let password = blocking(&app, move |s| s.rotate_device_credentials(&actor, &m)).await?;
    Ok(axum::Json(CredentialsView {
        username: d.mac.to_string(),
        password,
    }))
}

/// A softphone's one-time provisioning link: rotates its provisioning password and returns
/// `https://<id>:<password>@<phone listener>/<main file>`, which Linphone (app or linphonec
/// `[misc] config-uri`) uses as is; the console shows it with a QR code. 422 `validation` for a
/// desk phone.
#[utoipa::path(post, operation_id = "createProvisioningLink", path = "/devices/{mac}/provisioning-link", tag = "devices",
    responses((status = 200, body = ProvisioningLinkView), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn provisioning_link(
    State(app): State<SharedApp>,
    caller: Caller,
    Path(mac): Path<String>,
) -> ApiResult<axum::Json<ProvisioningLinkView>> {
    let d = current(&app, &caller, &mac)?;
    let actor = caller.actor();
    let m = d.mac.clone();
    let password = blocking(&app, move |s| s.softphone_link_credentials(&actor, &m)).await?;
    let file = app
        .renderer
        .catalog()
        .get(&d.model)
        .and_then(|model| Some(model.main_file()?.name_for(&d.mac, model.mac_case)))
        .ok_or_else(|| ApiError::not_found(format!("model {} has no per-device file", d.model)))?;
    Ok(axum::Json(ProvisioningLinkView::new(
        app.renderer.base_url(),
        &d.mac,
        &file,
        password,
    )))
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct HotDeskLogin {
    /// A hot_desk user of the device's group.
    extension: Extension,
}

/// Logs a hot-desk user in (out of any other device first).
#[utoipa::path(put, operation_id = "hotDeskLogin", path = "/devices/{mac}/hot-desk", tag = "devices", request_body = HotDeskLogin,
    responses((status = 200, body = DeviceView), (status = 404, body = Problem), (status = 422, body = Problem), (status = 409, body = Problem)))]
async fn hot_desk_login(
    State(app): State<SharedApp>,
    caller: Caller,
    Path(mac): Path<String>,
    Json(body): Json<HotDeskLogin>,
) -> ApiResult<axum::Json<DeviceView>> {
    let d = current(&app, &caller, &mac)?;
    let actor = caller.actor();
    let m = d.mac.clone();
    blocking(&app, move |s| s.hot_desk_login(&actor, &m, &body.extension)).await?;
    Ok(axum::Json(reread(&app, &d.mac)?))
}

/// Logs the hot-desk user out; the owner's line comes back.
#[utoipa::path(delete, operation_id = "hotDeskLogout", path = "/devices/{mac}/hot-desk", tag = "devices",
    responses((status = 204), (status = 404, body = Problem)))]
async fn hot_desk_logout(
    State(app): State<SharedApp>,
    caller: Caller,
    Path(mac): Path<String>,
) -> ApiResult<Response> {
    let d = current(&app, &caller, &mac)?;
    let actor = caller.actor();
    blocking(&app, move |s| s.hot_desk_logout(&actor, &d.mac)).await?;
    Ok(no_content())
}
