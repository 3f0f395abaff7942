//! RFC 9457 problem details: the one error type of the admin API, mapped once at the edge.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::{DomainError, ErrorCode, ErrorKind};
use crate::store::StoreError;

/// An error as the admin API reports it.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: ErrorCode,
    pub(crate) detail: String,
    pub(crate) field: Option<String>,
    /// Where in an uploaded template the problem is (1-based), for `invalid_template`.
    pub(crate) position: Option<(usize, usize)>,
}

/// `application/problem+json` body (RFC 9457) with the extra `code` member.
#[derive(Serialize, ToSchema)]
pub(crate) struct Problem {
    /// Always `about:blank`: `code` identifies the problem.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) title: String,
    pub(crate) status: u16,
    pub(crate) detail: String,
    /// Stable machine-readable code, e.g. `line_port_in_use`.
    pub(crate) code: ErrorCode,
    /// The offending input field, where one is to blame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) field: Option<String>,
    /// Line of the problem in an uploaded template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) line: Option<usize>,
    /// Column of the problem in an uploaded template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) column: Option<usize>,
}

impl ApiError {
    /// An error with the code's default status.
    pub(crate) fn code(code: ErrorCode, detail: impl Into<String>) -> Self {
        let status =
            StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self::new(status, code, detail)
    }
    pub(crate) fn new(status: StatusCode, code: ErrorCode, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            detail: detail.into(),
            field: None,
            position: None,
        }
    }
    pub(crate) fn not_found(detail: impl Into<String>) -> Self {
        Self::code(ErrorCode::NotFound, detail)
    }
    pub(crate) fn validation(field: Option<String>, detail: impl Into<String>) -> Self {
        ApiError {
            field,
            ..Self::code(ErrorCode::Validation, detail)
        }
    }
    pub(crate) fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::code(
            ErrorCode::Internal,
            "internal error; the server log has details",
        )
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let status = match e.kind {
            ErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
        };
        ApiError {
            status,
            code: e.code,
            detail: e.detail,
            field: e.field,
            position: None,
        }
    }
}

impl From<crate::render::RenderError> for ApiError {
    fn from(e: crate::render::RenderError) -> Self {
        use crate::render::RenderError;
        let position = match &e {
            RenderError::Template { line, column, .. } | RenderError::Xml { line, column, .. } => {
                Some((*line, *column))
            }
            RenderError::Limit { .. } | RenderError::Domain(_) => None,
        };
        ApiError {
            position,
            ..ApiError::code(ErrorCode::InvalidTemplate, e.to_string())
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Rule(d) => d.into(),
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Problem {
            kind: "about:blank",
            title: self
                .status
                .canonical_reason()
                .unwrap_or("Error")
                .to_string(),
            status: self.status.as_u16(),
            detail: self.detail,
            code: self.code,
            field: self.field,
            line: self.position.map(|p| p.0),
            column: self.position.map(|p| p.1),
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"deskprov\""),
            );
        }
        resp
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;
