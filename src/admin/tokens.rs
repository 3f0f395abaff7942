//! `/api/v1/tokens`, `/api/v1/tokens/{id}`: platform tokens manage tokens.

use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Caller, Json, Page, PageQuery, Path, Query};
use super::problem::{ApiResult, Problem};
use super::views::TokenView;
use super::{blocking, created, no_content};
use crate::domain::GroupId;
use crate::SharedApp;

pub(super) fn routes() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(delete))
}

#[utoipa::path(get, operation_id = "listTokens", path = "/tokens", tag = "tokens", params(PageQuery),
    responses((status = 200, body = Page<TokenView>), (status = 403, body = Problem)))]
async fn list(
    State(app): State<SharedApp>,
    caller: Caller,
    Query(q): Query<PageQuery>,
) -> ApiResult<axum::Json<Page<TokenView>>> {
    caller.platform()?;
    let s = app.store.read();
    Ok(axum::Json(
        q.page(s.tokens.values().map(TokenView::of), |t| t.id.clone())?,
    ))
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewToken {
    name: String,
    /// Scope the token to one group.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    group: Option<GroupId>,
}

/// Creates a token; the response carries its secret, once.
#[utoipa::path(post, operation_id = "createToken", path = "/tokens", tag = "tokens", request_body = NewToken,
    responses((status = 201, body = TokenView), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn create(
    State(app): State<SharedApp>,
    caller: Caller,
    Json(body): Json<NewToken>,
) -> ApiResult<Response> {
    caller.platform()?;
    let actor = caller.actor();
    let (t, secret) = blocking(&app, move |s| {
        s.create_token(&actor, &body.name, body.group)
    })
    .await?;
    let mut v = TokenView::of(&t);
    v.token = Some(secret);
    Ok(created(format!("/api/v1/tokens/{}", t.id), v))
}

#[utoipa::path(delete, operation_id = "revokeToken", path = "/tokens/{id}", tag = "tokens",
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete(
    State(app): State<SharedApp>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    caller.platform()?;
    let actor = caller.actor();
    blocking(&app, move |s| s.delete_token(&actor, &id)).await?;
    Ok(no_content())
}
