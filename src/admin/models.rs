//! `/api/v1/models`, `/api/v1/models/{model}`: the model catalogue.

use axum::extract::State;

use super::extract::Path;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::Caller;
use super::problem::{ApiError, ApiResult, Problem};
use crate::catalog::Model;
use crate::SharedApp;

pub(super) fn routes() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(get_one))
}

#[utoipa::path(get, operation_id = "listModels", path = "/models", tag = "models", responses((status = 200, body = Vec<Model>)))]
async fn list(State(app): State<SharedApp>, _caller: Caller) -> axum::Json<Vec<Model>> {
    axum::Json(app.store.catalog().models().cloned().collect())
}

#[utoipa::path(get, operation_id = "getModel", path = "/models/{model}", tag = "models",
    responses((status = 200, body = Model), (status = 404, body = Problem)))]
async fn get_one(
    State(app): State<SharedApp>,
    _caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Model>> {
    app.store
        .catalog()
        .get(&id)
        .cloned()
        .map(axum::Json)
        .ok_or_else(|| ApiError::not_found(format!("model {id} does not exist")))
}
