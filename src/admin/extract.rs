//! Extractors of the admin API: the bearer-token caller, JSON bodies with problem+json errors,
//! JSON merge patch (RFC 7396), pagination, and path identifiers.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::problem::{ApiError, ApiResult};
use super::strict::StrictError;
use crate::domain::{ErrorCode, GroupId, Token};
use crate::SharedApp;

/// The authenticated caller: a platform token, or a token scoped to one group.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    token_id: String,
    pub(crate) group: Option<GroupId>,
}

impl Caller {
    /// The actor recorded in the change log.
    pub(crate) fn actor(&self) -> String {
        format!("token:{}", self.token_id)
    }

    /// A group token sees only its group: anything else is "not found".
    pub(crate) fn see(&self, g: &GroupId) -> ApiResult<()> {
        match &self.group {
            Some(own) if own != g => Err(ApiError::not_found(format!("group {g} does not exist"))),
            _ => Ok(()),
        }
    }

    /// For a group token another group's object reads exactly as one that does not exist: an
    /// error saying it is elsewhere (`cross_group`) becomes `unknown`. A platform token gets
    /// the error as it is.
    pub(crate) fn blind(&self, e: ApiError, unknown: impl FnOnce() -> ApiError) -> ApiError {
        if self.group.is_some() && e.code == ErrorCode::CrossGroup {
            unknown()
        } else {
            e
        }
    }

    /// Operations outside any single group need a platform token.
    pub(crate) fn platform(&self) -> ApiResult<()> {
        match &self.group {
            None => Ok(()),
            Some(_) => Err(ApiError::code(
                ErrorCode::Forbidden,
                "this needs a platform token; group tokens manage their own group only",
            )),
        }
    }
}

impl Caller {
    /// The caller a request's `Authorization: Bearer` header names, if it is a valid token.
    pub(crate) fn of(headers: &axum::http::HeaderMap, app: &SharedApp) -> Option<Caller> {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let Token { id, group, .. } = app.store.authenticate(token.trim())?;
        Some(Caller {
            token_id: id,
            group,
        })
    }
}

impl FromRequestParts<SharedApp> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &SharedApp) -> ApiResult<Caller> {
        Caller::of(&parts.headers, app).ok_or_else(|| {
            ApiError::code(
                ErrorCode::Unauthorized,
                "a valid 'Authorization: Bearer <token>' header is required",
            )
        })
    }
}

/// A JSON body: 415 without a JSON content type, 413 over the limit, 400 when it is not JSON,
/// 422 `validation` (with the field path) when it does not fit the schema — unknown fields too.
pub(crate) struct Json<T>(pub(crate) T);

fn decode<T: DeserializeOwned>(value: serde_json::Value) -> ApiResult<T> {
    serde_path_to_error::deserialize(super::strict::Bind(value)).map_err(|e| {
        let path = e.path().to_string();
        let field = (path != ".").then_some(path);
        ApiError::validation(field, e.into_inner().to_string())
    })
}

impl<T: DeserializeOwned> FromRequest<SharedApp> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &SharedApp) -> ApiResult<Json<T>> {
        let value = RawJson::from_request(req, app).await?.0;
        decode(value).map(Json)
    }
}

/// Reads the body within the size limit and `[limits] body_timeout_s`; too large → 413, too
/// slow → 408 problem+json.
async fn body_bytes(req: Request, app: &SharedApp) -> ApiResult<Bytes> {
    let timeout = app.config.limits.body_timeout();
    tokio::time::timeout(timeout, read_body(req))
        .await
        .map_err(|_| {
            ApiError::code(
                ErrorCode::RequestTimeout,
                format!("the body did not arrive within {} s", timeout.as_secs()),
            )
        })?
}

/// How much of a body over the limit is still read (and dropped) before the 413, so that a
/// client still sending gets the answer instead of a connection closed under its writes.
const DRAIN_LIMIT: usize = 8 * super::BODY_LIMIT;

async fn read_body(req: Request) -> ApiResult<Bytes> {
    use http_body_util::BodyExt;
    let too_large = || {
        ApiError::code(
            ErrorCode::PayloadTooLarge,
            format!("the body is larger than {} bytes", super::BODY_LIMIT),
        )
    };
    let mut body = req.into_body();
    let mut buf: Vec<u8> = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::code(
                ErrorCode::BadRequest,
                format!("the body could not be read: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen > DRAIN_LIMIT {
            break;
        }
        if seen <= super::BODY_LIMIT {
            buf.extend_from_slice(&data);
        }
    }
    if seen > super::BODY_LIMIT {
        return Err(too_large());
    }
    Ok(Bytes::from(buf))
}

/// A raw body (a template upload), with the same limit and problem+json errors.
pub(crate) struct RawBody(pub(crate) Bytes);

impl FromRequest<SharedApp> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &SharedApp) -> ApiResult<RawBody> {
        body_bytes(req, app).await.map(RawBody)
    }
}

/// A JSON body not yet bound to a type (for merge patch).
pub(crate) struct RawJson(pub(crate) serde_json::Value);

impl FromRequest<SharedApp> for RawJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &SharedApp) -> ApiResult<RawJson> {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !(essence == "application/json" || essence.ends_with("+json")) {
            return Err(ApiError::code(
                ErrorCode::UnsupportedMediaType,
                "send the body as Content-Type: application/json",
            ));
        }
        let bytes = body_bytes(req, app).await?;
        json_value(&bytes).map(RawJson)
    }
}

/// Parses a JSON body: 400 `invalid_json` when it is not JSON, 422 `validation` naming the key
/// when an object has a key twice (at any depth).
pub(crate) fn json_value(bytes: &[u8]) -> ApiResult<serde_json::Value> {
    super::strict::parse(bytes).map_err(|e| match e {
        StrictError::Syntax(e) => ApiError::code(
            ErrorCode::InvalidJson,
            format!("the body is not valid JSON: {e}"),
        ),
        StrictError::Duplicate(key) => ApiError::validation(
            Some(key.clone()),
            format!("the key {key} appears twice; send each key once"),
        ),
    })
}

/// An optional JSON body that is absent: empty, or JSON whitespace only (space, tab, LF, CR;
/// not form feed or the other ASCII whitespace, which JSON does not allow).
pub(crate) fn body_is_absent(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

/// Binds a JSON body that was read as bytes (an optional body); the errors of [`Json`].
pub(crate) fn json_body<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    decode(json_value(bytes)?)
}

/// Applies an RFC 7396 merge patch to the input form of the current resource and binds the
/// result (so unknown fields are refused, and `null` clears an optional field).
pub(crate) fn merge<T: Serialize + DeserializeOwned>(
    current: &T,
    patch: serde_json::Value,
) -> ApiResult<T> {
    if !patch.is_object() {
        return Err(ApiError::validation(None, "a PATCH body is a JSON object"));
    }
    let mut base = serde_json::to_value(current).map_err(ApiError::internal)?;
    merge_value(&mut base, patch);
    decode(base)
}

fn merge_value(target: &mut serde_json::Value, patch: serde_json::Value) {
    use serde_json::Value;
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(&k);
                } else {
                    merge_value(t.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other,
    }
}

/// `?limit=&after=`: at most `limit` items (default 100, max 1000) after the key `after`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageQuery {
    /// At most this many (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub(crate) limit: Option<usize>,
    /// The key after which the page starts (the previous page's `next`).
    pub(crate) after: Option<String>,
}

/// One page of a list, in key order; `next` is the `after` of the following page.
#[derive(Serialize, ToSchema)]
pub(crate) struct Page<T: ToSchema> {
    pub(crate) items: Vec<T>,
    pub(crate) next: Option<String>,
}

impl PageQuery {
    pub(crate) fn limit(&self) -> ApiResult<usize> {
        match self.limit {
            None => Ok(100),
            Some(n) if (1..=1000).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::validation(
                Some("limit".into()),
                "limit is 1 to 1000",
            )),
        }
    }

    /// Pages `items` (already in key order) by `key`.
    pub(crate) fn page<T: ToSchema, I>(
        &self,
        items: I,
        key: impl Fn(&T) -> String,
    ) -> ApiResult<Page<T>>
    where
        I: IntoIterator<Item = T>,
    {
        let limit = self.limit()?;
        let mut out: Vec<T> = items
            .into_iter()
            .filter(|x| self.after.as_deref().is_none_or(|a| key(x).as_str() > a))
            .take(limit + 1)
            .collect();
        let next = if out.len() > limit {
            out.truncate(limit);
            out.last().map(&key)
        } else {
            None
        };
        Ok(Page { items: out, next })
    }
}

/// Parses a path identifier; a malformed one names nothing, so it is a 404.
pub(crate) fn id<T>(
    s: &str,
    what: &str,
    parse: impl Fn(&str) -> Result<T, crate::domain::DomainError>,
) -> ApiResult<T> {
    parse(s).map_err(|_| ApiError::not_found(format!("{what} {s} does not exist")))
}

/// Path parameters, with a malformed one answered as problem+json 400 `bad_request` naming the
/// parameter (axum's own rejection is plain text).
pub(crate) struct Path<T>(pub(crate) T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> ApiResult<Path<T>> {
        use axum::extract::path::ErrorKind;
        use axum::extract::rejection::PathRejection;
        use axum::extract::RawPathParams;
        let e = match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(p) => return Ok(Path(p.0)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => e,
            Err(other) => return Err(ApiError::internal(other.body_text())),
        };
        // The parameter's name: axum knows it by key, or only by position in a tuple.
        let nth = |i: usize| async move {
            let raw = RawPathParams::from_request_parts(parts, state).await.ok()?;
            raw.iter().nth(i).map(|(k, _)| k.to_string())
        };
        let (name, detail) = match e.kind() {
            ErrorKind::ParseErrorAtKey {
                key,
                value,
                expected_type,
            } => (Some(key.clone()), bad_param(key, value, expected_type)),
            ErrorKind::ParseErrorAtIndex {
                index,
                value,
                expected_type,
            } => {
                let key = nth(*index).await.unwrap_or_else(|| format!("#{index}"));
                let detail = bad_param(&key, value, expected_type);
                (Some(key), detail)
            }
            ErrorKind::ParseError {
                value,
                expected_type,
            } => {
                let key = nth(0).await.unwrap_or_default();
                let detail = bad_param(&key, value, expected_type);
                (Some(key), detail)
            }
            ErrorKind::InvalidUtf8InPathParam { key } => (
                Some(key.clone()),
                format!("path parameter {key} is not valid UTF-8"),
            ),
            _ => (None, e.body_text()),
        };
        Err(ApiError {
            field: name,
            ..ApiError::code(ErrorCode::BadRequest, detail)
        })
    }
}

fn bad_param(key: &str, value: &str, expected_type: &str) -> String {
    let what = match expected_type {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number",
        _ => expected_type,
    };
    format!("path parameter {key} must be {what}, not '{value}'")
}

/// Query parameters, with bad ones reported as problem+json 422 (axum's own is plain text).
pub(crate) struct Query<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> ApiResult<Query<T>> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::validation(None, e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_optional_body_is_absent_only_when_empty_or_json_whitespace() {
        assert!(body_is_absent(b""));
        assert!(body_is_absent(b" \t\r\n"));
        assert!(!body_is_absent(b"\x0c"), "form feed is not JSON whitespace");
        assert!(!body_is_absent(b"\x0b"));
        assert!(!body_is_absent(b"{}"));
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_value(&mut t, json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
        let mut t = json!({"a": [1, 2]});
        merge_value(&mut t, json!({"a": [3]}));
        assert_eq!(t, json!({"a": [3]}));
    }
}
