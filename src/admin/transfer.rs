//! `/api/v1/import`, `/api/v1/export`, `/api/v1/groups/{group}/import/{kind}` (CSV) and
//! `/api/v1/groups/{group}/export/{kind}`.
//!
//! An import is validated as a whole: with any bad row the answer is 422 problem+json whose
//! `errors` member lists every bad row (where, `code`, `detail`, `field`) and nothing is
//! written; otherwise 200 with the [`ImportReport`] (one change-log entry for the import).

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::blocking;
use super::extract::{id, Caller, Json, Path, Query, RawBody};
use super::problem::{ApiError, ApiResult, Problem};
use crate::domain::rules::{ImportReport, ImportRow, RowError};
use crate::domain::transfer::{self, CsvKind, Document};
use crate::domain::{ErrorCode, GroupId};
use crate::SharedApp;

/// Largest import body (a CSV of 100,000 rows is about 10 MB).
pub(crate) const IMPORT_LIMIT: usize = 64 << 20;

pub(super) fn routes() -> OpenApiRouter<SharedApp> {
    OpenApiRouter::new()
        .routes(routes!(import_json))
        .routes(routes!(export_json))
        .routes(routes!(import_csv))
        .routes(routes!(export_csv))
        .routes(routes!(backup))
        .layer(DefaultBodyLimit::max(IMPORT_LIMIT))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ImportQuery {
    /// Validate and report what would be created, changed and left; write nothing.
    #[serde(default)]
    dry_run: bool,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ExportQuery {
    /// One group only (a group token always gets its own).
    #[serde(default)]
    group: Option<String>,
    /// Include the SIP and provisioning passwords (so an import reproduces them).
    #[serde(default)]
    secrets: bool,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct CsvExportQuery {
    /// Include the passwords.
    #[serde(default)]
    secrets: bool,
}

/// problem+json of a refused import: every bad row.
#[derive(Serialize, ToSchema)]
pub(crate) struct ImportProblem {
    #[serde(flatten)]
    problem: Problem,
    errors: Vec<RowError>,
}

fn refused(errors: Vec<RowError>) -> Response {
    let body = ImportProblem {
        problem: Problem {
            kind: "about:blank",
            title: "Unprocessable Entity".into(),
            status: 422,
            detail: format!(
                "{} bad rows; nothing was imported (see errors)",
                errors.len()
            ),
            code: ErrorCode::Validation,
            field: None,
            line: None,
            column: None,
        },
        errors,
    };
    let mut resp = (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    resp
}

async fn run(
    app: &SharedApp,
    caller: &Caller,
    rows: Vec<ImportRow>,
    dry_run: bool,
) -> ApiResult<Response> {
    let actor = caller.actor();
    let report: ImportReport = blocking(app, move |s| s.import(&actor, rows, dry_run)).await?;
    if report.errors.is_empty() {
        Ok(axum::Json(report).into_response())
    } else {
        Ok(refused(report.errors))
    }
}

/// Imports an export document (the whole platform or one group): 200 with the report, or 422
/// listing every bad row with nothing written. Group tokens import their own group only.
#[utoipa::path(post, operation_id = "importDocument", path = "/import", tag = "transfer", params(ImportQuery), request_body = Document,
    responses((status = 200, body = ImportReport), (status = 422, body = ImportProblem)))]
async fn import_json(
    State(app): State<SharedApp>,
    caller: Caller,
    Query(q): Query<ImportQuery>,
    Json(doc): Json<Document>,
) -> ApiResult<Response> {
    if caller.group.is_some() {
        for g in &doc.groups {
            caller.see(&g.group.id)?;
        }
    }
    let rows = doc.into_rows()?;
    run(&app, &caller, rows, q.dry_run).await
}

/// The export document of every group (platform tokens) or of one.
#[utoipa::path(get, operation_id = "exportDocument", path = "/export", tag = "transfer", params(ExportQuery),
    responses((status = 200, body = Document), (status = 404, body = Problem)))]
async fn export_json(
    State(app): State<SharedApp>,
    caller: Caller,
    Query(q): Query<ExportQuery>,
) -> ApiResult<axum::Json<Document>> {
    let group = match (&caller.group, q.group) {
        (Some(own), _) => Some(own.clone()),
        (None, Some(g)) => Some(id(&g, "group", GroupId::parse)?),
        (None, None) => None,
    };
    if let Some(g) = &group {
        caller.see(g)?;
    }
    let s = app.store.read();
    if let Some(g) = &group {
        if !s.groups.contains_key(g) {
            return Err(ApiError::not_found(format!("group {g} does not exist")));
        }
    }
    Ok(axum::Json(transfer::export(&s, group.as_ref(), q.secrets)))
}

fn group_kind(caller: &Caller, g: &str, kind: &str) -> ApiResult<(GroupId, CsvKind)> {
    let g = id(g, "group", GroupId::parse)?;
    caller.see(&g)?;
    let kind = CsvKind::parse(kind)?;
    Ok((g, kind))
}

/// Imports a CSV file of one kind (`users`, `devices`, `sca`, `members`) into the group.
#[utoipa::path(post, operation_id = "importCsv", path = "/groups/{group}/import/{kind}", tag = "transfer", params(ImportQuery),
    request_body(content = String, content_type = "text/csv"),
    responses((status = 200, body = ImportReport), (status = 422, body = ImportProblem)))]
async fn import_csv(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((g, kind)): Path<(String, String)>,
    Query(q): Query<ImportQuery>,
    headers: axum::http::HeaderMap,
    RawBody(body): RawBody,
) -> ApiResult<Response> {
    let (g, kind) = group_kind(&caller, &g, &kind)?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.trim().to_ascii_lowercase().starts_with("text/csv") {
        return Err(ApiError::code(
            ErrorCode::UnsupportedMediaType,
            "send the file as Content-Type: text/csv",
        ));
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::code(ErrorCode::BadRequest, "the CSV file is not UTF-8"))?;
    let s = app.store.read();
    if !s.groups.contains_key(&g) {
        return Err(ApiError::not_found(format!("group {g} does not exist")));
    }
    let rows = match transfer::csv_rows(&s, &g, kind, text) {
        Ok(rows) => rows,
        Err(errors) => return Ok(refused(errors)),
    };
    drop(s);
    run(&app, &caller, rows, q.dry_run).await
}

/// The group's objects of one kind as a CSV file (the columns an import reads).
#[utoipa::path(get, operation_id = "exportCsv", path = "/groups/{group}/export/{kind}", tag = "transfer", params(CsvExportQuery),
    responses((status = 200, body = String, content_type = "text/csv"), (status = 404, body = Problem)))]
async fn export_csv(
    State(app): State<SharedApp>,
    caller: Caller,
    Path((g, kind)): Path<(String, String)>,
    Query(q): Query<CsvExportQuery>,
) -> ApiResult<Response> {
    let (g, kind) = group_kind(&caller, &g, &kind)?;
    let s = app.store.read();
    if !s.groups.contains_key(&g) {
        return Err(ApiError::not_found(format!("group {g} does not exist")));
    }
    let csv = transfer::export_csv(&s, &g, kind, q.secrets);
    Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv).into_response())
}

/// A backup of the whole server at one change-log seq (platform tokens only): the file
/// `deskprov restore` reads. It opens every password it holds; keep it secret.
#[utoipa::path(post, operation_id = "createBackup", path = "/backup", tag = "transfer",
    responses((status = 200, description = "the backup file (JSON lines, sha256-checked)", content_type = "application/octet-stream"),
        (status = 403, body = Problem)))]
async fn backup(State(app): State<SharedApp>, caller: Caller) -> ApiResult<Response> {
    caller.platform()?;
    let app2 = app.clone();
    let (bytes, seq) = tokio::task::spawn_blocking(move || {
        crate::backup::backup(&app2.store, &app2.config.data_dir)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    tracing::info!(seq, bytes = bytes.len(), "backup taken");
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"deskprov-{seq}.backup\""),
            ),
            (
                header::HeaderName::from_static("x-deskprov-seq"),
                seq.to_string(),
            ),
        ],
        bytes,
    )
        .into_response())
}
