//! `/api/v1/groups/{group}/shared-lines`, `.../{number}`, `.../{number}/members`.

use axum::extract::State;
use axum::response::Response;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{id, merge, Caller, Json, Page, PageQuery, Path, Query, RawJson};
use super::problem::{ApiError, ApiResult, Problem};
use super::views::{shared_line_input, SharedLineView};
use super::{blocking, created, no_content};
use crate::domain::rules::SharedLineInput;
use crate::domain::{GroupId, Member, SharedLine, SharedNumber};
use crate::SharedApp;

pub(super) fn routes() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one, patch, delete))
        .routes(routes!(get_members, put_members))
}

fn line_path(caller: &Caller, g: &str, n: &str) -> ApiResult<(GroupId, SharedNumber)> {
    let g = id(g, "group", GroupId::parse)?;
    caller.see(&g)?;
    Ok((g, id(n, "shared line", SharedNumber::parse)?))
}

fn current(app: &SharedApp, g: &GroupId, n: &SharedNumber) -> ApiResult<SharedLine> {
    let l = app
        .store
        .read()
        .shared_lines
        .get(&(g.clone(), n.clone()))
        .cloned();
    l.ok_or_else(|| ApiError::not_found(format!("shared line {n} does not exist in group {g}")))
}

#[utoipa::path(get, operation_id = "listSharedLines", path = "/groups/{group}/shared-lines", tag = "shared lines", params(PageQuery),
    responses((status = 200, body = Page<SharedLineView>), (status = 404, body = Problem)))]
async fn list(
    State(app): State<SharedApp>,
    caller: Caller,
    Path(g): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<SharedLineView>>> {
    let g = id(&g, "group", GroupId::parse)?;
    caller.see(&g)?;
    let s = app.store.read();
    if !s.groups.contains_key(&g) {
        return Err(ApiError::not_found(format!("group {g} does not exist")));
    }
    let items = s.shared_lines_of(&g).map(SharedLineView::of);
    Ok(axum::Json(q.page(items, |l| l.number.to_string())?))
}

/// Creates a shared line (uses one of the group's `shared_line_licenses`); the response shows
/// its SIP password once.
#[utoipa::path(post, operation_id = "createSharedLine", path = "/groups/{group}/shared-lines", tag = "shared lines", request_body = SharedLineInput,
    responses((status = 201, body = SharedLineView), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create(
    State(app): State<SharedApp>,
    caller: Caller,
    Path(g): Path<String>,
    Json(input): Json<SharedLineInput>,
) -> ApiResult<Response> {
    let g = id(&g, "group", GroupId::parse)?;
    caller.see(&g)?;
    let actor = caller.actor();
    let gg = g.clone();
    let l = blocking(&app, move |s| s.create_shared_line(&actor, &gg, input)).await?;
    let mut v = SharedLineView::of(&l);
    v.password = Some(l.password.expose().to_string());
    Ok(created(
        format!("/api/v1/groups/{g}/shared-lines/{}", l.number),
        v,
    ))
}

#[utoipa::path(get, operation_id = "getSharedLine", path = "/groups/{group}/shared-lines/{number}", tag = "shared lines",
    responses((status = 200, body = SharedLineView), (status = 404, body = Problem)))]
async fn get_one(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((g, n)): Path<(String, String)>,
) -> ApiResult<axum::Json<SharedLineView>> {
    let (g, n) = line_path(&caller, &g, &n)?;
    Ok(axum::Json(SharedLineView::of(&current(&app, &g, &n)?)))
}

#[utoipa::path(patch, operation_id = "updateSharedLine", path = "/groups/{group}/shared-lines/{number}", tag = "shared lines", request_body(content = SharedLineInput, content_type = "application/merge-patch+json"),
    responses((status = 200, body = SharedLineView), (status = 404, body = Problem), (status = 422, body = Problem), (status = 409, body = Problem)))]
async fn patch(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((g, n)): Path<(String, String)>,
    RawJson(body): RawJson,
) -> ApiResult<axum::Json<SharedLineView>> {
    let (g, n) = line_path(&caller, &g, &n)?;
    let input: SharedLineInput = merge(&shared_line_input(&current(&app, &g, &n)?), body)?;
    let actor = caller.actor();
    let l = blocking(&app, move |s| s.update_shared_line(&actor, &g, &n, input)).await?;
    Ok(axum::Json(SharedLineView::of(&l)))
}

#[utoipa::path(delete, operation_id = "deleteSharedLine", path = "/groups/{group}/shared-lines/{number}", tag = "shared lines",
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((g, n)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (g, n) = line_path(&caller, &g, &n)?;
    let actor = caller.actor();
    blocking(&app, move |s| s.delete_shared_line(&actor, &g, &n)).await?;
    Ok(no_content())
}

#[utoipa::path(get, operation_id = "listSharedLineMembers", path = "/groups/{group}/shared-lines/{number}/members", tag = "shared lines",
    responses((status = 200, body = Vec<Member>), (status = 404, body = Problem)))]
async fn get_members(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((g, n)): Path<(String, String)>,
) -> ApiResult<axum::Json<Vec<Member>>> {
    let (g, n) = line_path(&caller, &g, &n)?;
    Ok(axum::Json(current(&app, &g, &n)?.members))
}

/// Replaces the member list (`[{extension, button?, ring}]`).
#[utoipa::path(put, operation_id = "replaceSharedLineMembers", path = "/groups/{group}/shared-lines/{number}/members", tag = "shared lines",
    request_body = Vec<Member>,
    responses((status = 200, body = Vec<Member>), (status = 404, body = Problem), (status = 422, body = Problem), (status = 409, body = Problem)))]
async fn put_members(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((g, n)): Path<(String, String)>,
    Json(members): Json<Vec<Member>>,
) -> ApiResult<axum::Json<Vec<Member>>> {
    let (g, n) = line_path(&caller, &g, &n)?;
    let actor = caller.actor();
    let l = blocking(&app, move |s| {
        s.set_shared_line_members(&actor, &g, &n, members)
    })
    .await?;
    Ok(axum::Json(l.members))
}
