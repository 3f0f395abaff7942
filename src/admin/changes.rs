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
    /// Entries after this cursor (default 0: from the oldest kept): a `seq` for a platform
    /// token, a `group_seq` for a group token.
    since: Option<u64>,
    /// At most this many (default 100, max 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
struct ChangesPage {
    /// Oldest first. A group token's entries carry `group_seq` (gapless within its group)
    /// and no `seq`: the global numbering would show other tenants' writes as gaps.
    #[schema(value_type = Vec<Change>)]
    items: Vec<serde_json::Value>,
    /// The newest seq committed (platform tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seq: Option<u64>,
    /// The oldest seq still kept; older entries were compacted away (platform tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    first_seq: Option<u64>,
    /// The group's newest `group_seq` (group tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    last_group_seq: Option<u64>,
}

/// Reads the change log; a group token reads its group's entries only, in the group's own
/// numbering (`group_seq`).
#[utoipa::path(get, operation_id = "listChanges", path = "/changes", tag = "changes", params(ChangesQuery),
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
    let page = match caller.group.clone() {
        None => {
            let items = super::blocking(&app, move |s| s.changes(since, limit, None)).await?;
            ChangesPage {
                items: items.iter().map(entry).collect::<ApiResult<_>>()?,
                last_seq: Some(app.store.last_seq()),
                first_seq: Some(app.store.first_seq()),
                last_group_seq: None,
            }
        }
        Some(g) => {
            let last = app.store.read().group_seq(&g);
            let items = super::blocking(&app, move |s| s.group_changes(&g, since, limit)).await?;
            let mut out = Vec::with_capacity(items.len());
            for c in &items {
                let mut v = entry(c)?;
                if let Some(o) = v.as_object_mut() {
                    o.remove("seq");
                }
                out.push(v);
            }
            ChangesPage {
                items: out,
                last_seq: None,
                first_seq: None,
                last_group_seq: Some(last.max(items.last().and_then(|c| c.group_seq).unwrap_or(0))),
            }
        }
    };
    Ok(axum::Json(page))
}

fn entry(c: &Change) -> ApiResult<serde_json::Value> {
    serde_json::to_value(c).map_err(ApiError::internal)
}
