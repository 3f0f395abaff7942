//! `/api/v1/groups/{group}/users/{ext}/shared-call-appearances` and `.../{line_port}`.

use axum::extract::State;
use axum::response::Response;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{merge, Caller, Json, Page, PageQuery, Path, Query, RawJson};
use super::problem::{ApiError, ApiResult, Problem};
use super::users::user_path;
use super::views::{sca_input, ScaView};
use super::{blocking, created, no_content};
use crate::domain::rules::{self, ScaInput};
use crate::domain::{Extension, GroupId, LinePort, ScaEndpoint};
use crate::SharedApp;

pub(super) fn routes() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one, patch, delete))
}

fn current(app: &SharedApp, g: &GroupId, e: &Extension, port: &str) -> ApiResult<ScaEndpoint> {
    let s = app.store.read();
    if s.user(g, e).is_none() {
        return Err(ApiError::not_found(format!(
            "user {e} does not exist in group {g}"
        )));
    }
    LinePort::parse(port)
        .ok()
        .and_then(|p| s.scas.get(&p))
        .filter(|x| &x.group == g && &x.extension == e)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("user {e} has no SCA endpoint {port}")))
}

/// Lists the endpoints sharing this user's line, by line port.
#[utoipa::path(get, operation_id = "listScaEndpoints", path = "/groups/{group}/users/{ext}/shared-call-appearances", tag = "shared call appearances",
    params(PageQuery), responses((status = 200, body = Page<ScaView>), (status = 404, body = Problem)))]
async fn list(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((g, e)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<ScaView>>> {
    let (g, e) = user_path(&caller, &g, &e)?;
    let s = app.store.read();
    if s.user(&g, &e).is_none() {
        return Err(ApiError::not_found(format!(
            "user {e} does not exist in group {g}"
        )));
    }
    let items = s.scas_of_user(&g, &e).map(|x| ScaView::of(&s, x));
    Ok(axum::Json(q.page(items, |x| x.line_port.to_string())?))
}

/// Adds an endpoint: the user's line appears on another device of the group.
#[utoipa::path(post, operation_id = "createScaEndpoint", path = "/groups/{group}/users/{ext}/shared-call-appearances", tag = "shared call appearances",
    request_body = ScaInput,
    responses((status = 201, body = ScaView), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((g, e)): Path<(String, String)>,
    Json(input): Json<ScaInput>,
) -> ApiResult<Response> {
    let (g, e) = user_path(&caller, &g, &e)?;
    let actor = caller.actor();
    let (gg, ee, reference) = (g.clone(), e.clone(), input.device.clone());
    let x = blocking(&app, move |s| s.create_sca(&actor, &gg, &ee, input))
        .await
        .map_err(|err| caller.blind(err, || rules::no_device(&g, &reference).into()))?;
    let location = format!(
        "/api/v1/groups/{g}/users/{e}/shared-call-appearances/{}",
        x.line_port
    );
    Ok(created(location, ScaView::of(&app.store.read(), &x)))
}

#[utoipa::path(get, operation_id = "getScaEndpoint", path = "/groups/{group}/users/{ext}/shared-call-appearances/{line_port}", tag = "shared call appearances",
    responses((status = 200, body = ScaView), (status = 404, body = Problem)))]
async fn get_one(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((g, e, port)): Path<(String, String, String)>,
) -> ApiResult<axum::Json<ScaView>> {
    let (g, e) = user_path(&caller, &g, &e)?;
    let x = current(&app, &g, &e, &port)?;
    Ok(axum::Json(ScaView::of(&app.store.read(), &x)))
}

/// Edits an endpoint (device, key, label, active, allow_*); the line port is its identity.
#[utoipa::path(patch, operation_id = "updateScaEndpoint", path = "/groups/{group}/users/{ext}/shared-call-appearances/{line_port}", tag = "shared call appearances",
    request_body(content = ScaInput, content_type = "application/merge-patch+json"),
    responses((status = 200, body = ScaView), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn patch(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((g, e, port)): Path<(String, String, String)>,
    RawJson(body): RawJson,
) -> ApiResult<axum::Json<ScaView>> {
    let (g, e) = user_path(&caller, &g, &e)?;
    let mut body = body;
    // Moving an endpoint without naming a key takes the first free key on the new device.
    if let Some(o) = body.as_object_mut() {
        if o.contains_key("device") && !o.contains_key("key") {
            o.insert("key".into(), serde_json::Value::Null);
        }
    }
    let input: ScaInput = merge(&sca_input(&current(&app, &g, &e, &port)?), body)?;
    let actor = caller.actor();
    let (gg, reference) = (g.clone(), input.device.clone());
    let x = blocking(&app, move |s| s.update_sca(&actor, &g, &e, &port, input))
        .await
        .map_err(|err| caller.blind(err, || rules::no_device(&gg, &reference).into()))?;
    Ok(axum::Json(ScaView::of(&app.store.read(), &x)))
}

#[utoipa::path(delete, operation_id = "deleteScaEndpoint", path = "/groups/{group}/users/{ext}/shared-call-appearances/{line_port}", tag = "shared call appearances",
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((g, e, port)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let (g, e) = user_path(&caller, &g, &e)?;
    let actor = caller.actor();
    blocking(&app, move |s| s.delete_sca(&actor, &g, &e, &port)).await?;
    Ok(no_content())
}
