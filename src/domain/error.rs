//! Errors of the domain and the stable error codes of the API.
//!
//! [`ErrorCode`] is every machine-readable `code` a problem+json body can carry (SPEC names plus
//! the transport-level ones the admin API adds). The rules return a [`DomainError`] with one of
//! them; `admin::problem` maps errors to responses once. The README's error table is checked
//! against this enum by a unit test, so the two cannot drift.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A stable error code: serialised as its snake_case name (`line_port_in_use`), which is API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ErrorCode {
    /// 422: a value breaks a rule, or an unknown field.
    Validation,
    /// 404: no such resource, or not in the caller's group.
    NotFound,
    /// 409: an id, extension, phone number, MAC, device name or shared-line number is taken.
    AlreadyExists,
    /// 422: not the line-port form for that user.
    InvalidLinePort,
    /// 409: the line port is used elsewhere on the platform.
    LinePortInUse,
    /// 422: a line cannot be shared across groups.
    CrossGroup,
    /// 409: the line already appears on that device.
    AlreadyOnDevice,
    /// 422: no free line key or account on the device.
    NoFreeKey,
    /// 422: the line key is out of range or taken.
    KeyUnavailable,
    /// 409: the user has `max_sca_per_user` endpoints.
    ScaLimit,
    /// 409: the group's shared-line licences are used up.
    NoLicense,
    /// 409: the group still has users, devices or shared lines.
    NotEmpty,
    /// 409: the resource is still used (a key profile assigned to devices).
    InUse,
    /// 409: the user's `allowed_endpoints` do not allow that kind of endpoint.
    EndpointNotAllowed,
    /// 401: no valid bearer token.
    Unauthorized,
    /// 403: a group token on a platform operation.
    Forbidden,
    /// 413: the body is over the limit.
    PayloadTooLarge,
    /// 408: the request body did not arrive within `[limits] body_timeout_s`.
    RequestTimeout,
    /// 415: the body is not sent as JSON.
    UnsupportedMediaType,
    /// 400: the body is not valid JSON.
    InvalidJson,
    /// 400: the request could not be read.
    BadRequest,
    /// 405: the method is not allowed on the resource.
    MethodNotAllowed,
    /// 422: an uploaded template does not parse, render or form well-formed XML.
    InvalidTemplate,
    /// 422: a preview could not be rendered.
    RenderFailed,
    /// 422: an uploaded firmware image's SHA-256 is not the expected digest.
    DigestMismatch,
    /// 500: a server fault (details in the log).
    Internal,
}

impl ErrorCode {
    /// Every code, in declaration order (the OpenAPI test checks the schema lists them all).
    #[cfg(test)]
    pub(crate) const ALL: [ErrorCode; 26] = [
        ErrorCode::Validation,
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::InvalidLinePort,
        ErrorCode::LinePortInUse,
        ErrorCode::CrossGroup,
        ErrorCode::AlreadyOnDevice,
        ErrorCode::NoFreeKey,
        ErrorCode::KeyUnavailable,
        ErrorCode::ScaLimit,
        ErrorCode::NoLicense,
        ErrorCode::NotEmpty,
        ErrorCode::InUse,
        ErrorCode::EndpointNotAllowed,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::PayloadTooLarge,
        ErrorCode::RequestTimeout,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::InvalidJson,
        ErrorCode::BadRequest,
        ErrorCode::MethodNotAllowed,
        ErrorCode::InvalidTemplate,
        ErrorCode::RenderFailed,
        ErrorCode::DigestMismatch,
        ErrorCode::Internal,
    ];

    /// The code as the API spells it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Validation => "validation",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::InvalidLinePort => "invalid_line_port",
            ErrorCode::LinePortInUse => "line_port_in_use",
            ErrorCode::CrossGroup => "cross_group",
            ErrorCode::AlreadyOnDevice => "already_on_device",
            ErrorCode::NoFreeKey => "no_free_key",
            ErrorCode::KeyUnavailable => "key_unavailable",
            ErrorCode::ScaLimit => "sca_limit",
            ErrorCode::NoLicense => "no_license",
            ErrorCode::NotEmpty => "not_empty",
            ErrorCode::InUse => "in_use",
            ErrorCode::EndpointNotAllowed => "endpoint_not_allowed",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::InvalidTemplate => "invalid_template",
            ErrorCode::RenderFailed => "render_failed",
            ErrorCode::DigestMismatch => "digest_mismatch",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status this code is answered with by default (a number: the domain knows no
    /// HTTP types).
    pub(crate) fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidJson | ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::AlreadyExists
            | ErrorCode::LinePortInUse
            | ErrorCode::AlreadyOnDevice
            | ErrorCode::ScaLimit
            | ErrorCode::NoLicense
            | ErrorCode::NotEmpty
            | ErrorCode::InUse
            | ErrorCode::EndpointNotAllowed => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::Validation
            | ErrorCode::InvalidLinePort
            | ErrorCode::CrossGroup
            | ErrorCode::NoFreeKey
            | ErrorCode::KeyUnavailable
            | ErrorCode::InvalidTemplate
            | ErrorCode::RenderFailed
            | ErrorCode::DigestMismatch => 422,
            ErrorCode::Internal => 500,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which HTTP-ish class an error belongs to; the admin API maps it to a status once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// 422: the input breaks a rule.
    Unprocessable,
    /// 404: the subject does not exist (or is not visible to the caller).
    NotFound,
    /// 409: the input conflicts with existing state.
    Conflict,
}

/// A rule violation: a stable `code` (SPEC names), a human `detail`, the offending `field`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct DomainError {
    pub(crate) kind: ErrorKind,
    pub(crate) code: ErrorCode,
    pub detail: String,
    pub(crate) field: Option<String>,
}

impl DomainError {
    /// 422 `validation` on a field.
    pub(crate) fn validation(field: &str, detail: impl Into<String>) -> Self {
        DomainError {
            kind: ErrorKind::Unprocessable,
            code: ErrorCode::Validation,
            detail: detail.into(),
            field: Some(field.to_string()),
        }
    }
    /// 422 with a specific code.
    pub(crate) fn unprocessable(code: ErrorCode, detail: impl Into<String>) -> Self {
        DomainError {
            kind: ErrorKind::Unprocessable,
            code,
            detail: detail.into(),
            field: None,
        }
    }
    /// 409 with a specific code.
    pub(crate) fn conflict(code: ErrorCode, detail: impl Into<String>) -> Self {
        DomainError {
            kind: ErrorKind::Conflict,
            code,
            detail: detail.into(),
            field: None,
        }
    }
    /// 404 `not_found`.
    pub(crate) fn not_found(detail: impl Into<String>) -> Self {
        DomainError {
            kind: ErrorKind::NotFound,
            code: ErrorCode::NotFound,
            detail: detail.into(),
            field: None,
        }
    }
    pub(crate) fn with_field(mut self, field: &str) -> Self {
        self.field = Some(field.to_string());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_and_as_str_agree_for_every_code() {
        for c in ErrorCode::ALL {
            let json = serde_json::to_value(c).unwrap();
            assert_eq!(json, c.as_str());
            assert_eq!(serde_json::from_value::<ErrorCode>(json).unwrap(), c);
        }
    }

    /// The README's error table (between the `error-codes` markers) lists every code with its
    /// status, and nothing else.
    #[test]
    fn readme_error_table_matches_the_enum() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("<!-- error-codes:start")
            .expect("README has the error-codes start marker");
        let end = readme
            .find("<!-- error-codes:end -->")
            .expect("README has the error-codes end marker");
        let mut rows: Vec<(String, u16)> = Vec::new();
        for line in readme[start..end].lines() {
            let cells: Vec<&str> = line.trim().trim_matches('|').split('|').collect();
            if cells.len() < 3 || !cells[0].trim().starts_with('`') {
                continue;
            }
            let code = cells[0].trim().trim_matches('`').to_string();
            let status = cells[1].trim().parse().expect("a numeric status");
            rows.push((code, status));
        }
        let want: Vec<(String, u16)> = ErrorCode::ALL
            .iter()
            .map(|c| (c.as_str().to_string(), c.status()))
            .collect();
        for w in &want {
            assert!(rows.contains(w), "README error table lacks {w:?}");
        }
        for r in &rows {
            assert!(
                want.contains(r),
                "README error table has {r:?}, no such ErrorCode"
            );
        }
        assert_eq!(
            rows.len(),
            want.len(),
            "a code is listed twice in the README"
        );
    }

    #[test]
    fn all_lists_every_variant_once() {
        // The OpenAPI schema is derived from the enum itself, so it names every variant.
        let schema = serde_json::to_value(<ErrorCode as utoipa::PartialSchema>::schema()).unwrap();
        let mut in_schema: Vec<String> = schema["enum"]
            .as_array()
            .expect("ErrorCode's schema is an enum")
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let mut in_all: Vec<String> = ErrorCode::ALL.iter().map(|c| c.to_string()).collect();
        in_schema.sort();
        in_all.sort();
        assert_eq!(in_schema, in_all);
    }
}
