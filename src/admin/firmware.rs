//! `/api/v1/models/{model}/firmware`, `.../{version}` (images) and
//! `/api/v1/groups/{group}/firmware`, `.../{model}`, `.../{model}/resume` (targets).
//!
//! An image is uploaded as the raw body, streamed to disk while hashed (see `crate::firmware`);
//! images are the platform's (platform tokens write them, any token reads them). A target is a
//! group's: `{version, percent?, pilots?}`; its view counts the group's devices of the model by
//! state (`current`, `upgrading`, `behind`, `failed`).

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{id, Caller, Json, Path, Query};
use super::problem::{ApiError, ApiResult, Problem};
use super::views::DeviceFirmware;
use super::{blocking, created, no_content};
use crate::domain::firmware::FirmwareState;
use crate::domain::rules::FirmwareTargetInput;
use crate::domain::state::State as DomainState;
use crate::domain::{ErrorCode, FirmwareImage, FirmwarePause, FirmwareTarget, GroupId};
use crate::firmware::UploadError;
use crate::SharedApp;

pub(super) fn routes() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new()
        .routes(routes!(list_images))
        .routes(routes!(get_image, put_image, delete_image))
        .routes(routes!(group_summary))
        .routes(routes!(get_target, put_target, delete_target))
        .routes(routes!(resume_target))
}

/// The header that carries the expected SHA-256 of an upload (or `?sha256=`).
const EXPECTED: &str = "deskprov-expected-sha256";

#[derive(Serialize, ToSchema)]
pub(crate) struct ImageView {
    model: String,
    version: String,
    /// Lowercase hex SHA-256 (the download's ETag).
    sha256: String,
    size: u64,
    uploaded_at: String,
    /// Groups whose target it is (a targeted image cannot be deleted).
    #[schema(value_type = Vec<String>)]
    targeted_by: Vec<GroupId>,
}

impl ImageView {
    fn of(s: &DomainState, f: &FirmwareImage) -> ImageView {
        ImageView {
            model: f.model.clone(),
            version: f.version.clone(),
            sha256: f.sha256.clone(),
            size: f.size,
            uploaded_at: f.uploaded_at.clone(),
            targeted_by: s
                .firmware_targets
                .values()
                .filter(|t| t.model == f.model && t.version == f.version)
                .map(|t| t.group.clone())
                .collect(),
        }
    }
}

/// Devices by firmware state.
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub(crate) struct FirmwareCounts {
    current: usize,
    upgrading: usize,
    behind: usize,
    failed: usize,
}

impl FirmwareCounts {
    fn add(&mut self, st: FirmwareState) {
        match st {
            FirmwareState::Current => self.current += 1,
            FirmwareState::Upgrading => self.upgrading += 1,
            FirmwareState::Behind => self.behind += 1,
            FirmwareState::Failed => self.failed += 1,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct TargetView {
    #[schema(value_type = String)]
    group: GroupId,
    model: String,
    version: String,
    percent: u8,
    #[schema(value_type = Vec<String>)]
    pilots: Vec<crate::domain::Mac>,
    /// Set while the roll-out is paused (by the failure guard); `POST .../resume` clears it.
    paused: Option<FirmwarePause>,
    updated_at: String,
    /// The group's devices of the model, by state.
    devices: FirmwareCounts,
}

/// One model of a group: its target (if any) and what its devices run.
#[derive(Serialize, ToSchema)]
pub(crate) struct ModelFirmware {
    model: String,
    target: Option<TargetView>,
    /// Devices by reported version (`unknown`: not seen, or the UA names none).
    running: BTreeMap<String, usize>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct GroupFirmware {
    #[schema(value_type = String)]
    group: GroupId,
    models: Vec<ModelFirmware>,
}

fn target_view(app: &SharedApp, s: &DomainState, t: &FirmwareTarget) -> TargetView {
    let mut devices = FirmwareCounts::default();
    for d in s.devices_of(&t.group).filter(|d| d.model == t.model) {
        if let Some(st) = DeviceFirmware::of(s, app, d).state {
            devices.add(st);
        }
    }
    TargetView {
        group: t.group.clone(),
        model: t.model.clone(),
        version: t.version.clone(),
        percent: t.percent,
        pilots: t.pilots.clone(),
        paused: t.paused.clone(),
        updated_at: t.updated_at.clone(),
        devices,
    }
}

fn known_model(app: &SharedApp, model: &str) -> ApiResult<()> {
    match app.store.catalog().get(model) {
        Some(m) if m.firmware.is_some() => Ok(()),
        Some(_) => Err(ApiError::not_found(format!(
            "model {model} takes no firmware from deskprov (its model.toml has no [firmware])"
        ))),
        None => Err(ApiError::not_found(format!("model {model} does not exist"))),
    }
}

fn group_path(caller: &Caller, app: &SharedApp, g: &str) -> ApiResult<GroupId> {
    let g = id(g, "group", GroupId::parse)?;
    caller.see(&g)?;
    if !app.store.read().groups.contains_key(&g) {
        return Err(ApiError::not_found(format!("group {g} does not exist")));
    }
    Ok(g)
}

/// The images of a model, by version.
#[utoipa::path(get, path = "/models/{model}/firmware", operation_id = "listFirmwareImages", tag = "firmware",
    responses((status = 200, body = Vec<ImageView>), (status = 404, body = Problem)))]
async fn list_images(
    State(app): State<SharedApp>,
    _caller: Caller,
    Path(model): Path<String>,
) -> ApiResult<axum::Json<Vec<ImageView>>> {
    known_model(&app, &model)?;
    let s = app.store.read();
    Ok(axum::Json(
        s.firmware_of(&model)
            .map(|f| ImageView::of(&s, f))
            .collect(),
    ))
}

#[utoipa::path(get, path = "/models/{model}/firmware/{version}", operation_id = "getFirmwareImage", tag = "firmware",
    responses((status = 200, body = ImageView), (status = 404, body = Problem)))]
async fn get_image(
    State(app): State<SharedApp>,
    _caller: Caller,
    Path((model, version)): Path<(String, String)>,
) -> ApiResult<axum::Json<ImageView>> {
    known_model(&app, &model)?;
    let s = app.store.read();
    let f = s
        .firmware
        .get(&(model.clone(), version.clone()))
        .ok_or_else(|| ApiError::not_found(format!("model {model} has no firmware {version}")))?;
    Ok(axum::Json(ImageView::of(&s, f)))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct UploadQuery {
    /// The SHA-256 (hex) the image must have; also `Deskprov-Expected-Sha256:`.
    sha256: Option<String>,
}

/// Uploads an image (the raw bytes as the body, streamed to disk, at most `[firmware]
/// max_bytes`). With an expected SHA-256 (header `Deskprov-Expected-Sha256` or `?sha256=`) a
/// different image is refused 422 `digest_mismatch`. The same version with other bytes is 409
/// `already_exists`. Platform tokens only.
#[utoipa::path(put, path = "/models/{model}/firmware/{version}", operation_id = "uploadFirmwareImage", tag = "firmware", params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = ImageView), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 413, body = Problem), (status = 422, body = Problem)))]
async fn put_image(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((model, version)): Path<(String, String)>,
    Query(q): Query<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    caller.platform()?;
    known_model(&app, &model)?;
    if !crate::domain::firmware::valid_version(&version) {
        return Err(ApiError::validation(
            Some("version".into()),
            format!("version '{version}' is not 1–64 letters, digits, '.', '-' or '_'"),
        ));
    }
    let expected = match headers.get(EXPECTED).and_then(|v| v.to_str().ok()) {
        Some(h) => Some(h.trim().to_ascii_lowercase()),
        None => q.sha256.map(|x| x.trim().to_ascii_lowercase()),
    };
    if let Some(x) = &expected {
        if x.len() != 64 || !x.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::validation(
                Some("sha256".into()),
                "the expected SHA-256 is 64 hex digits",
            ));
        }
    }
    let stored = app
        .firmware
        .receive(body, expected)
        .await
        .map_err(|e| match e {
            UploadError::TooLarge(_) => ApiError::code(ErrorCode::PayloadTooLarge, e.to_string()),
            UploadError::Mismatch { .. } => {
                ApiError::code(ErrorCode::DigestMismatch, e.to_string())
            }
            UploadError::Body(_) => ApiError::code(ErrorCode::BadRequest, e.to_string()),
            UploadError::Io(e) => ApiError::internal(e),
        })?;
    let actor = caller.actor();
    let img = FirmwareImage {
        model: model.clone(),
        version: version.clone(),
        sha256: stored.sha256.clone(),
        size: stored.size,
        uploaded_at: crate::store::now_rfc3339(),
        actor: actor.clone(),
    };
    let r = blocking(&app, move |s| s.put_firmware_image(&actor, img)).await;
    let (img, _) = match r {
        Ok(x) => x,
        Err(e) => {
            app.firmware
                .remove_unreferenced(&app.store.read(), &stored.sha256);
            return Err(e);
        }
    };
    let view = ImageView::of(&app.store.read(), &img);
    Ok(created(
        format!("/api/v1/models/{model}/firmware/{version}"),
        view,
    ))
}

/// Deletes an image (409 `in_use` while a group targets it); its file goes when no other version
/// has the same bytes. Platform tokens only.
#[utoipa::path(delete, path = "/models/{model}/firmware/{version}", operation_id = "deleteFirmwareImage", tag = "firmware",
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn delete_image(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((model, version)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.platform()?;
    known_model(&app, &model)?;
    let actor = caller.actor();
    let sha = blocking(&app, move |s| {
        s.delete_firmware_image(&actor, &model, &version)
    })
    .await?;
    app.firmware.remove_unreferenced(&app.store.read(), &sha);
    Ok(no_content())
}

/// Every model of the group's devices (and every model it targets): its target with the devices
/// counted by state, and the versions they run.
#[utoipa::path(get, path = "/groups/{group}/firmware", operation_id = "getGroupFirmware", tag = "firmware",
    responses((status = 200, body = GroupFirmware), (status = 404, body = Problem)))]
async fn group_summary(
    State(app): State<SharedApp>,
    caller: Caller,
    Path(g): Path<String>,
) -> ApiResult<axum::Json<GroupFirmware>> {
    let g = group_path(&caller, &app, &g)?;
    let s = app.store.read();
    let mut models: BTreeMap<String, ModelFirmware> = BTreeMap::new();
    let entry = |models: &mut BTreeMap<String, ModelFirmware>, m: &str| {
        models
            .entry(m.to_string())
            .or_insert_with(|| ModelFirmware {
                model: m.to_string(),
                target: s
                    .firmware_targets
                    .get(&(g.clone(), m.to_string()))
                    .map(|t| target_view(&app, &s, t)),
                running: BTreeMap::new(),
            })
            .model
            .clone()
    };
    for t in s.firmware_targets_of(&g) {
        entry(&mut models, &t.model);
    }
    for d in s.devices_of(&g) {
        let m = entry(&mut models, &d.model);
        let running = app
            .store
            .checkin(&d.mac)
            .and_then(|c| c.firmware)
            .unwrap_or_else(|| "unknown".into());
        if let Some(x) = models.get_mut(&m) {
            *x.running.entry(running).or_default() += 1;
        }
    }
    Ok(axum::Json(GroupFirmware {
        group: g.clone(),
        models: models.into_values().collect(),
    }))
}

#[utoipa::path(get, path = "/groups/{group}/firmware/{model}", operation_id = "getFirmwareTarget", tag = "firmware",
    responses((status = 200, body = TargetView), (status = 404, body = Problem)))]
async fn get_target(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((g, model)): Path<(String, String)>,
) -> ApiResult<axum::Json<TargetView>> {
    let g = group_path(&caller, &app, &g)?;
    let s = app.store.read();
    let t = s
        .firmware_targets
        .get(&(g.clone(), model.clone()))
        .ok_or_else(|| {
            ApiError::not_found(format!("group {g} has no firmware target for {model}"))
        })?;
    Ok(axum::Json(target_view(&app, &s, t)))
}

/// Sets the group's target version for a model: `{version, percent?, pilots?}`. The devices
/// whose offer changes (in or out of the roll-out, or a new version) are told to re-sync.
#[utoipa::path(put, path = "/groups/{group}/firmware/{model}", operation_id = "setFirmwareTarget", tag = "firmware", request_body = FirmwareTargetInput,
    responses((status = 200, body = TargetView), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn put_target(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((g, model)): Path<(String, String)>,
    Json(input): Json<FirmwareTargetInput>,
) -> ApiResult<axum::Json<TargetView>> {
    let g = group_path(&caller, &app, &g)?;
    known_model(&app, &model)?;
    let actor = caller.actor();
    let (t, _) = blocking(&app, move |s| {
        s.set_firmware_target(&actor, &g, &model, input)
    })
    .await?;
    let s = app.store.read();
    Ok(axum::Json(target_view(&app, &s, &t)))
}

#[utoipa::path(delete, path = "/groups/{group}/firmware/{model}", operation_id = "deleteFirmwareTarget", tag = "firmware",
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete_target(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((g, model)): Path<(String, String)>,
) -> ApiResult<Response> {
    let g = group_path(&caller, &app, &g)?;
    let actor = caller.actor();
    let (g2, m2) = (g.clone(), model.clone());
    blocking(&app, move |s| s.delete_firmware_target(&actor, &g2, &m2)).await?;
    app.firmware.forget(&g, &model);
    Ok(no_content())
}

/// Resumes a paused roll-out: its failed phones get a new upgrade window.
#[utoipa::path(post, path = "/groups/{group}/firmware/{model}/resume", operation_id = "resumeFirmwareTarget", tag = "firmware",
    responses((status = 200, body = TargetView), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn resume_target(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((g, model)): Path<(String, String)>,
) -> ApiResult<axum::Json<TargetView>> {
    let g = group_path(&caller, &app, &g)?;
    let actor = caller.actor();
    let (g2, m2) = (g.clone(), model.clone());
    let t = blocking(&app, move |s| s.resume_firmware_target(&actor, &g2, &m2)).await?;
    app.firmware.forget(&g, &model);
    let s = app.store.read();
    Ok(axum::Json(target_view(&app, &s, &t)))
}
