//! `/api/v1/devices/{mac}/log?limit=&before=`: a device's provisioning log, newest first.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::blocking;
use super::extract::{id, Caller, Path, Query};
use super::problem::{ApiError, ApiResult, Problem};
use crate::domain::Mac;
use crate::store::ProvLogEntry;
use crate::SharedApp;

pub(super) fn routes() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new().routes(routes!(log))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    /// At most this many (default 100, max 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// Entries older than this entry `id` (the previous page's `next_before`).
    before: Option<u64>,
}

#[derive(Serialize, ToSchema)]
struct LogPage {
    /// Newest first.
    items: Vec<ProvLogEntry>,
    /// The `before` of the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before: Option<u64>,
}

/// Every fetch and upload of the device's files, with the reason of each refusal (shown here
/// only, never to the phone). A group token sees its group's devices; the log of a MAC that is
/// no device (refusals as `unknown_mac`) is for platform tokens only.
#[utoipa::path(get, operation_id = "getDeviceLog", path = "/devices/{mac}/log", tag = "devices", params(LogQuery),
    responses((status = 200, body = LogPage), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn log(
    State(app): State<SharedApp>,
    caller: Caller,
    Path(mac): Path<String>,
    Query(q): Query<LogQuery>,
) -> ApiResult<axum::Json<LogPage>> {
    let m = id(&mac, "device", Mac::parse)?;
    let unknown = || ApiError::not_found(format!("device {m} does not exist"));
    let group = app.store.read().devices.get(&m).map(|d| d.group.clone());
    match &group {
        Some(g) => caller.see(g).map_err(|_| unknown())?,
        None if caller.group.is_some() => return Err(unknown()),
        None => {}
    }
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
    let before = q.before;
    let mut items = blocking(&app, move |s| s.provisioning_log(&m, before, limit + 1)).await?;
    let next_before = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|e| e.id)
    } else {
        None
    };
    Ok(axum::Json(LogPage { items, next_before }))
}
