//! `/api/v1/groups/{group}/users`, `.../users/{ext}`, `/duplicate`, `/sip-password`.

use axum::extract::State;
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{id, merge, Caller, Json, Page, PageQuery, Path, Query, RawJson};
use super::problem::{ApiError, ApiResult, Problem};
use super::views::{user_input, UserView};
use super::{blocking, created, no_content};
use crate::domain::rules::{DuplicateInput, UserInput};
use crate::domain::{Extension, GroupId, User};
use crate::SharedApp;

pub(super) fn routes() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one, patch, delete))
        .routes(routes!(duplicate))
        .routes(routes!(sip_password))
        .routes(routes!(third_party_credentials))
        .routes(routes!(unregister))
}

/// Parses and authorises `{group}/users/{ext}` path parts.
pub(super) fn user_path(caller: &Caller, g: &str, e: &str) -> ApiResult<(GroupId, Extension)> {
    let g = id(g, "group", GroupId::parse)?;
    caller.see(&g)?;
    let e = id(e, "user", Extension::parse)?;
    Ok((g, e))
}

fn group_path(caller: &Caller, g: &str) -> ApiResult<GroupId> {
    let g = id(g, "group", GroupId::parse)?;
    caller.see(&g)?;
    Ok(g)
}

fn current(app: &SharedApp, g: &GroupId, e: &Extension) -> ApiResult<User> {
    app.store
        .read()
        .user(g, e)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("user {e} does not exist in group {g}")))
}

fn view(app: &SharedApp, u: &User) -> UserView {
    UserView::of(&app.store.read(), u)
}

#[utoipa::path(get, operation_id = "listUsers", path = "/groups/{group}/users", tag = "users", params(PageQuery),
    responses((status = 200, body = Page<UserView>), (status = 404, body = Problem)))]
async fn list(
    State(app): State<SharedApp>,
    caller: Caller,
    Path(g): Path<String>,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<UserView>>> {
    let g = group_path(&caller, &g)?;
    let s = app.store.read();
    if !s.groups.contains_key(&g) {
        return Err(ApiError::not_found(format!("group {g} does not exist")));
    }
    let items = s.users_of(&g).map(|u| UserView::of(&s, u));
    Ok(axum::Json(q.page(items, |u| u.extension.to_string())?))
}

/// Creates a user; the response shows the SIP password once.
#[utoipa::path(post, operation_id = "createUser", path = "/groups/{group}/users", tag = "users", request_body = UserInput,
    responses((status = 201, body = UserView), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create(
    State(app): State<SharedApp>,
    caller: Caller,
    Path(g): Path<String>,
    Json(input): Json<UserInput>,
) -> ApiResult<Response> {
    let g = group_path(&caller, &g)?;
    let actor = caller.actor();
    let gg = g.clone();
    let u = blocking(&app, move |s| s.create_user(&actor, &gg, input)).await?;
    let location = format!("/api/v1/groups/{g}/users/{}", u.extension);
    Ok(created(location, view(&app, &u).with_password(&u)))
}

#[utoipa::path(get, operation_id = "getUser", path = "/groups/{group}/users/{ext}", tag = "users",
    responses((status = 200, body = UserView), (status = 404, body = Problem)))]
async fn get_one(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((g, e)): Path<(String, String)>,
) -> ApiResult<axum::Json<UserView>> {
    let (g, e) = user_path(&caller, &g, &e)?;
    let u = current(&app, &g, &e)?;
    Ok(axum::Json(view(&app, &u)))
}

/// Changes a user (JSON merge patch; `sip.password` may be set, never read).
#[utoipa::path(patch, operation_id = "updateUser", path = "/groups/{group}/users/{ext}", tag = "users", request_body(content = UserInput, content_type = "application/merge-patch+json"),
    responses((status = 200, body = UserView), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn patch(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((g, e)): Path<(String, String)>,
    RawJson(body): RawJson,
) -> ApiResult<axum::Json<UserView>> {
    let (g, e) = user_path(&caller, &g, &e)?;
    let input: UserInput = merge(&user_input(&current(&app, &g, &e)?), body)?;
    let actor = caller.actor();
    let u = blocking(&app, move |s| s.update_user(&actor, &g, &e, input)).await?;
    Ok(axum::Json(view(&app, &u)))
}

/// Deletes a user with its SCA endpoints, memberships and hot-desk logins.
#[utoipa::path(delete, operation_id = "deleteUser", path = "/groups/{group}/users/{ext}", tag = "users",
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((g, e)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (g, e) = user_path(&caller, &g, &e)?;
    let actor = caller.actor();
    blocking(&app, move |s| s.delete_user(&actor, &g, &e)).await?;
    Ok(no_content())
}

/// Copies a user's settings to a new extension with fresh credentials and no appearances.
#[utoipa::path(post, operation_id = "duplicateUser", path = "/groups/{group}/users/{ext}/duplicate", tag = "users", request_body = DuplicateInput,
    responses((status = 201, body = UserView), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn duplicate(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((g, e)): Path<(String, String)>,
    Json(input): Json<DuplicateInput>,
) -> ApiResult<Response> {
    let (g, e) = user_path(&caller, &g, &e)?;
    let actor = caller.actor();
    let gg = g.clone();
    let u = blocking(&app, move |s| s.duplicate_user(&actor, &gg, &e, input)).await?;
    let location = format!("/api/v1/groups/{g}/users/{}", u.extension);
    Ok(created(location, view(&app, &u).with_password(&u)))
}

#[derive(Serialize, ToSchema)]
pub(super) struct PasswordView {
    password: String,
}

/// Rotates the SIP password; the response is the only place it is shown.
#[utoipa::path(post, operation_id = "rotateUserSipPassword", path = "/groups/{group}/users/{ext}/sip-password", tag = "users",
    responses((status = 200, body = PasswordView), (status = 404, body = Problem)))]
async fn sip_password(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((g, e)): Path<(String, String)>,
) -> ApiResult<axum::Json<PasswordView>> {
    let (g, e) = user_path(&caller, &g, &e)?;
    let actor = caller.actor();
    let password = blocking(&app, move |s| s.rotate_sip_password(&actor, &g, &e)).await?;
    Ok(axum::Json(PasswordView { password }))
}

/// What a third-party softphone needs to register as the user, shown once.
#[derive(Serialize, ToSchema)]
pub(super) struct ThirdPartyView {
    /// The SIP user (the primary line port).
    username: String,
    /// The digest user.
    auth_username: String,
    /// The new SIP password: this response is the only place it is shown.
    password: String,
    /// The SIP domain (realm) of the user's group.
    domain: String,
    /// The group's outbound proxy, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy: Option<String>,
    port: u16,
    transport: crate::domain::Transport,
}

/// Seed 002 "Third party softphones": rotates the user's SIP password and returns the SIP
/// credentials for a softphone configured by hand (the user's phones get the new password);
/// 409 `endpoint_not_allowed` while `allowed_endpoints.third_party` is false.
#[utoipa::path(post, operation_id = "createThirdPartyCredentials", path = "/groups/{group}/users/{ext}/third-party-credentials", tag = "users",
    responses((status = 200, body = ThirdPartyView), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn third_party_credentials(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((g, e)): Path<(String, String)>,
) -> ApiResult<axum::Json<ThirdPartyView>> {
    let (g, e) = user_path(&caller, &g, &e)?;
    let actor = caller.actor();
    let (gg, ee) = (g.clone(), e.clone());
    let password = blocking(&app, move |s| s.third_party_credentials(&actor, &gg, &ee)).await?;
    let s = app.store.read();
    let u = s.user(&g, &e).cloned();
    let grp = s.groups.get(&g).cloned();
    let (Some(u), Some(grp)) = (u, grp) else {
        return Err(ApiError::not_found(format!(
            "user {e} does not exist in group {g}"
        )));
    };
    Ok(axum::Json(ThirdPartyView {
        username: u.sip_username(),
        auth_username: u.auth_username(),
        password,
        domain: grp.sip.domain.clone(),
        proxy: grp.sip.proxy.clone(),
        port: grp.sip.port,
        transport: grp.sip.transport,
    }))
}

/// Forces the user's lines off every phone now (seed 002 "Unregister"): they render disabled
/// and the phones with them get the reboot event; they come back on the user's next change.
#[utoipa::path(post, operation_id = "unregisterUser", path = "/groups/{group}/users/{ext}/unregister", tag = "users",
    responses((status = 200, body = UserView), (status = 404, body = Problem)))]
async fn unregister(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((g, e)): Path<(String, String)>,
) -> ApiResult<axum::Json<UserView>> {
    let (g, e) = user_path(&caller, &g, &e)?;
    let actor = caller.actor();
    let u = blocking(&app, move |s| s.unregister_user(&actor, &g, &e)).await?;
    Ok(axum::Json(view(&app, &u)))
}
