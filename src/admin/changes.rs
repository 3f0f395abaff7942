//! `/api/v1/changes?since=&limit=`: the change log, oldest first.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::extract::{Caller, Query};
use super::problem::{ApiError, ApiResult, Problem};
use crate::store::Change;
use crate::SharedApp;

pub(super) fn routes() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new().routes(routes!(list))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct ChangesQuery {
    /// Entries with `seq` greater than this (default 0: from the oldest kept).
    since: Option<u64>,
    /// At most this many (default 100, max 1000).
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
struct ChangesPage {
    items: Vec<Change>,
    /// The newest seq committed.
    last_seq: u64,
    /// The oldest seq still kept (older entries were compacted away).
    first_seq: u64,
}

/// Reads the change log (a group token sees its group's entries only).
#[utoipa::path(get, path = "/changes", tag = "changes", params(ChangesQuery),
    responses((status = 200, body = ChangesPage), (status = 401, body = Problem)))]
async fn list(
    State(app): State<SharedApp>,
    caller: Caller,
    Query(q): Query<ChangesQuery>,
) -> ApiResult<axum::Json<ChangesPage>> {
    let limit = match q.limit {
        None => 100,
        Some(n) if (1..=1000).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::validation(
                Some("limit".into()),
                "limit is 1 to 1000",
            ))
        }
    };
    let since = q.since.unwrap_or(0);
    let group = caller.group.clone();
    let items = super::blocking(&app, move |s| s.changes(since, limit, group.as_ref())).await?;
    Ok(axum::Json(ChangesPage {
        items,
        last_seq: app.store.last_seq(),
        first_seq: app.store.first_seq(),
    }))
}
