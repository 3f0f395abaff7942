//! `/api/v1/groups`, `/api/v1/groups/{group}`.

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{id, merge, Caller, Json, Page, PageQuery, Path, Query, RawJson};
use super::problem::{ApiError, ApiResult, Problem};
use super::views::GroupView;
use super::{blocking, blocking_app, created, no_content};
use crate::domain::{Group, GroupId};
use crate::SharedApp;
use axum::response::IntoResponse;

pub(super) fn routes() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one, patch, delete))
        .routes(routes!(sync))
}

/// Rebuilds the group's files and tells every phone of the group to re-sync now (failed
/// devices start over).
#[utoipa::path(post, operation_id = "syncGroup", path = "/groups/{group}/sync", tag = "sync",
    responses((status = 202, body = GroupView), (status = 404, body = Problem)))]
async fn sync(
    State(app): State<SharedApp>,
    caller: Caller,
    Path(g): Path<String>,
) -> ApiResult<Response> {
    let g = group_id(&g)?;
    caller.see(&g)?;
    // One snapshot throughout: a concurrent DELETE cannot pull the group from under us.
    let s = app.store.read();
    let group = s
        .groups
        .get(&g)
        .ok_or_else(|| ApiError::not_found(format!("group {g} does not exist")))?;
    app.renderer.clear_cache();
    let devices: Vec<_> = s
        .devices_of(&g)
        .map(|d| (d.mac.clone(), d.revision))
        .collect();
    // With a shared store the request is a database round trip.
    blocking_app(&app, move |app| app.sync.request(app, &devices, false)).await?;
    let view = GroupView::of(&s, &app, group);
    Ok((axum::http::StatusCode::ACCEPTED, axum::Json(view)).into_response())
}

fn group_id(s: &str) -> ApiResult<GroupId> {
    id(s, "group", GroupId::parse)
}

/// Lists groups (a group token sees its own only).
#[utoipa::path(get, operation_id = "listGroups", path = "/groups", tag = "groups", params(PageQuery),
    responses((status = 200, body = Page<Group>), (status = 401, body = Problem)))]
async fn list(
    State(app): State<SharedApp>,
    caller: Caller,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<Group>>> {
    let s = app.store.read();
    let items = s
        .groups
        .values()
        .filter(|g| caller.see(&g.id).is_ok())
        .cloned();
    Ok(axum::Json(q.page(items, |g| g.id.to_string())?))
}

/// Creates a group (platform tokens only).
#[utoipa::path(post, operation_id = "createGroup", path = "/groups", tag = "groups", request_body = Group,
    responses((status = 201, body = Group), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create(
    State(app): State<SharedApp>,
    caller: Caller,
    Json(g): Json<Group>,
) -> ApiResult<Response> {
    caller.platform()?;
    let id = g.id.clone();
    blocking(&app, {
        let actor = caller.actor();
        move |s| s.create_group(&actor, g)
    })
    .await?;
    let g = app
        .store
        .read()
        .groups
        .get(&id)
        .cloned()
        .ok_or_else(|| ApiError::not_found("gone"))?;
    Ok(created(format!("/api/v1/groups/{id}"), g))
}

#[utoipa::path(get, operation_id = "getGroup", path = "/groups/{group}", tag = "groups",
    responses((status = 200, body = GroupView), (status = 404, body = Problem)))]
async fn get_one(
    State(app): State<SharedApp>,
    caller: Caller,
    Path(g): Path<String>,
) -> ApiResult<axum::Json<GroupView>> {
    let g = group_id(&g)?;
    caller.see(&g)?;
    let s = app.store.read();
    s.groups
        .get(&g)
        .map(|grp| axum::Json(GroupView::of(&s, &app, grp)))
        .ok_or_else(|| ApiError::not_found(format!("group {g} does not exist")))
}

/// Changes a group (JSON merge patch). Touches every device of the group.
#[utoipa::path(patch, operation_id = "updateGroup", path = "/groups/{group}", tag = "groups", request_body(content = Group, content_type = "application/merge-patch+json"),
    responses((status = 200, body = Group), (status = 404, body = Problem), (status = 422, body = Problem), (status = 409, body = Problem)))]
async fn patch(
    State(app): State<SharedApp>,
    caller: Caller,
    Path(g): Path<String>,
    RawJson(body): RawJson,
) -> ApiResult<axum::Json<Group>> {
    let g = group_id(&g)?;
    caller.see(&g)?;
    let current = app.store.read().groups.get(&g).cloned();
    let current =
        current.ok_or_else(|| ApiError::not_found(format!("group {g} does not exist")))?;
    let next: Group = merge(&current, body)?;
    let actor = caller.actor();
    let id = g.clone();
    blocking(&app, move |s| s.update_group(&actor, &id, next)).await?;
    let out = app.store.read().groups.get(&g).cloned();
    out.map(axum::Json)
        .ok_or_else(|| ApiError::not_found("gone"))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    /// Delete the group's users, devices, SCA endpoints, shared lines and tokens too.
    #[serde(default)]
    cascade: bool,
}

/// Deletes a group; 409 `not_empty` unless `?cascade=true`.
#[utoipa::path(delete, operation_id = "deleteGroup", path = "/groups/{group}", tag = "groups", params(DeleteQuery),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn delete(
    State(app): State<SharedApp>,
    caller: Caller,
    Path(g): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> ApiResult<Response> {
    let g = group_id(&g)?;
    caller.see(&g)?;
    caller.platform()?;
    let actor = caller.actor();
    blocking(&app, move |s| s.delete_group(&actor, &g, q.cascade)).await?;
    Ok(no_content())
}
