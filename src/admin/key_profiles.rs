//! `/api/v1/groups/{group}/key-profiles`, `.../{name}`, `.../{name}/keys/move` and
//! `/api/v1/devices/{mac}/keys/move`.

use axum::extract::State;
use axum::response::Response;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{id, merge, Caller, Json, Page, PageQuery, Path, Query, RawJson};
use super::problem::{ApiError, ApiResult, Problem};
use super::views::{key_profile_input, DeviceView, KeyProfileView};
use super::{blocking, created, devices, no_content};
use crate::domain::rules::{KeyMove, KeyProfileInput};
use crate::domain::{GroupId, KeyProfile, ProfileName};
use crate::SharedApp;

pub(super) fn routes() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one, patch, delete))
        .routes(routes!(move_profile_key))
        .routes(routes!(move_device_key))
}

fn profile_path(caller: &Caller, g: &str, n: &str) -> ApiResult<(GroupId, ProfileName)> {
    let g = id(g, "group", GroupId::parse)?;
    caller.see(&g)?;
    Ok((g, id(n, "key profile", ProfileName::parse)?))
}

fn current(app: &SharedApp, g: &GroupId, n: &ProfileName) -> ApiResult<KeyProfile> {
    let p = app.store.read().key_profile(g, n).cloned();
    p.ok_or_else(|| ApiError::not_found(format!("key profile '{n}' does not exist in group {g}")))
}

fn view(app: &SharedApp, p: &KeyProfile) -> KeyProfileView {
    KeyProfileView::of(&app.store.read(), p)
}

fn location(p: &KeyProfile) -> String {
    // Names may hold spaces: the Location is percent-encoded.
    let name = p.name.as_str().replace(' ', "%20");
    format!("/api/v1/groups/{}/key-profiles/{name}", p.group)
}

#[utoipa::path(get, operation_id = "listKeyProfiles", path = "/groups/{group}/key-profiles", tag = "key profiles", params(PageQuery),
    responses((status = 200, body = Page<KeyProfileView>), (status = 404, body = Problem)))]
async fn list(
    State(app): State<SharedApp>,
    caller: Caller,
    Path(g): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<KeyProfileView>>> {
    let g = id(&g, "group", GroupId::parse)?;
    caller.see(&g)?;
    let s = app.store.read();
    if !s.groups.contains_key(&g) {
        return Err(ApiError::not_found(format!("group {g} does not exist")));
    }
    let items = s.key_profiles_of(&g).map(|p| KeyProfileView::of(&s, p));
    Ok(axum::Json(q.page(items, |p| p.name.to_string())?))
}

/// Creates a key profile: `{name, keys: [{key, type, value, label?}]}` (`type` as for device keys
/// plus `blf_all`).
#[utoipa::path(post, operation_id = "createKeyProfile", path = "/groups/{group}/key-profiles", tag = "key profiles", request_body = KeyProfileInput,
    responses((status = 201, body = KeyProfileView), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create(
    State(app): State<SharedApp>,
    caller: Caller,
    Path(g): Path<String>,
    Json(input): Json<KeyProfileInput>,
) -> ApiResult<Response> {
    let g = id(&g, "group", GroupId::parse)?;
    caller.see(&g)?;
    let actor = caller.actor();
    let p = blocking(&app, move |s| s.create_key_profile(&actor, &g, input)).await?;
    Ok(created(location(&p), view(&app, &p)))
}

#[utoipa::path(get, operation_id = "getKeyProfile", path = "/groups/{group}/key-profiles/{name}", tag = "key profiles",
    responses((status = 200, body = KeyProfileView), (status = 404, body = Problem)))]
async fn get_one(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((g, n)): Path<(String, String)>,
) -> ApiResult<axum::Json<KeyProfileView>> {
    let (g, n) = profile_path(&caller, &g, &n)?;
    Ok(axum::Json(view(&app, &current(&app, &g, &n)?)))
}

/// Changes a profile's keys (JSON merge patch; `keys` is replaced as a whole). Refused naming
/// the device when an assigned device's layout would break; one change touching them all.
#[utoipa::path(patch, operation_id = "updateKeyProfile", path = "/groups/{group}/key-profiles/{name}", tag = "key profiles", request_body(content = KeyProfileInput, content_type = "application/merge-patch+json"),
    responses((status = 200, body = KeyProfileView), (status = 404, body = Problem), (status = 422, body = Problem), (status = 409, body = Problem)))]
async fn patch(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((g, n)): Path<(String, String)>,
    RawJson(body): RawJson,
) -> ApiResult<axum::Json<KeyProfileView>> {
    let (g, n) = profile_path(&caller, &g, &n)?;
    let input: KeyProfileInput = merge(&key_profile_input(&current(&app, &g, &n)?), body)?;
    let actor = caller.actor();
    let p = blocking(&app, move |s| s.update_key_profile(&actor, &g, &n, input)).await?;
    Ok(axum::Json(view(&app, &p)))
}

/// Deletes a profile no device uses (else 409 `in_use`).
#[utoipa::path(delete, operation_id = "deleteKeyProfile", path = "/groups/{group}/key-profiles/{name}", tag = "key profiles",
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn delete(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((g, n)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (g, n) = profile_path(&caller, &g, &n)?;
    let actor = caller.actor();
    blocking(&app, move |s| s.delete_key_profile(&actor, &g, &n)).await?;
    Ok(no_content())
}

/// Moves a profile key: `{from, to, mode?: swap|shift}`; validated on every assigned device.
#[utoipa::path(post, operation_id = "moveKeyProfileKey", path = "/groups/{group}/key-profiles/{name}/keys/move", tag = "key profiles",
    request_body = KeyMove,
    responses((status = 200, body = KeyProfileView), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn move_profile_key(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((g, n)): Path<(String, String)>,
    Json(mv): Json<KeyMove>,
) -> ApiResult<axum::Json<KeyProfileView>> {
    let (g, n) = profile_path(&caller, &g, &n)?;
    let actor = caller.actor();
    let p = blocking(&app, move |s| s.move_profile_key(&actor, &g, &n, mv)).await?;
    Ok(axum::Json(view(&app, &p)))
}

/// Moves one of the device's own keys: `{from, to, mode?: swap|shift}`.
#[utoipa::path(post, operation_id = "moveDeviceKey", path = "/devices/{mac}/keys/move", tag = "devices", request_body = KeyMove,
    responses((status = 200, body = DeviceView), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn move_device_key(
    State(app): State<SharedApp>,
    caller: Caller,
    Path(mac): Path<String>,
    Json(mv): Json<KeyMove>,
) -> ApiResult<axum::Json<DeviceView>> {
    let d = devices::current(&app, &caller, &mac)?;
    let actor = caller.actor();
    let m = d.mac.clone();
    blocking(&app, move |s| s.move_device_key(&actor, &m, mv)).await?;
    Ok(axum::Json(devices::reread(&app, &d.mac)?))
}
