//! The admin console (issue 10): server-rendered HTML pages under `/ui/` on the admin listener.
//!
//! The console is a client of the admin API, in process: every page and form calls the API
//! router (the same handlers, store operations, domain rules and views) with the signed-in
//! admin's own bearer token, so a group token sees only its group here exactly as in the API,
//! and an error is the API's problem+json, shown next to the field it names.
//!
//! Sessions live in memory (a restart signs everyone out): an opaque id in a cookie that is
//! HttpOnly, Secure, SameSite=Strict, with an absolute expiry; each session has its own CSRF
//! token, checked on every POST. Templates are Tera, embedded in the binary.

mod pages;
mod session;
mod web;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use serde_json::Value;
use tower::ServiceExt;

use crate::SharedApp;
pub(crate) use session::Session;

/// The templates, embedded at build time.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    ("dashboard.html", include_str!("templates/dashboard.html")),
    ("group.html", include_str!("templates/group.html")),
    ("firmware.html", include_str!("templates/firmware.html")),
    ("users.html", include_str!("templates/users.html")),
    ("user_nav.html", include_str!("templates/user_nav.html")),
    ("sca_fields.html", include_str!("templates/sca_fields.html")),
    (
        "sca_line_port.html",
        include_str!("templates/sca_line_port.html"),
    ),
    (
        "line_fields.html",
        include_str!("templates/line_fields.html"),
    ),
    (
        "user_profile.html",
        include_str!("templates/user_profile.html"),
    ),
    ("user_sca.html", include_str!("templates/user_sca.html")),
    (
        "user_sca_edit.html",
        include_str!("templates/user_sca_edit.html"),
    ),
    ("user_lines.html", include_str!("templates/user_lines.html")),
    (
        "user_features.html",
        include_str!("templates/user_features.html"),
    ),
    (
        "user_forwarding.html",
        include_str!("templates/user_forwarding.html"),
    ),
    (
        "user_devices.html",
        include_str!("templates/user_devices.html"),
    ),
    ("confirm.html", include_str!("templates/confirm.html")),
    (
        "shared_lines.html",
        include_str!("templates/shared_lines.html"),
    ),
    (
        "shared_line.html",
        include_str!("templates/shared_line.html"),
    ),
    ("devices.html", include_str!("templates/devices.html")),
    ("device.html", include_str!("templates/device.html")),
    ("file.html", include_str!("templates/file.html")),
    ("templates.html", include_str!("templates/templates.html")),
    ("template.html", include_str!("templates/template.html")),
    ("changes.html", include_str!("templates/changes.html")),
    (
        "key_profiles.html",
        include_str!("templates/key_profiles.html"),
    ),
    (
        "key_profile.html",
        include_str!("templates/key_profile.html"),
    ),
    ("key_move.html", include_str!("templates/key_move.html")),
    ("keys_field.html", include_str!("templates/keys_field.html")),
    ("message.html", include_str!("templates/message.html")),
];

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = include_str!("static/console.css");
const JS: &str = include_str!("static/console.js");

/// What every console handler gets.
#[derive(Clone)]
pub(crate) struct Console {
    pub(crate) app: SharedApp,
    /// The admin API router, called in process.
    api: Router,
    pub(crate) sessions: Arc<session::Sessions>,
    tera: Arc<tera::Tera>,
}

/// The admin listener's router: the console under `/ui/`, `/` redirecting there, and
/// everything else answered by the admin API router.
pub(crate) fn router(app: SharedApp, api: Router) -> Router {
    let mut tera = tera::Tera::new();
    tera.autoescape_on(vec![".html"]);
    tera.add_raw_templates(TEMPLATES.iter().copied())
        .expect("console templates parse");
    let console = Console {
        app,
        api: api.clone(),
        sessions: Arc::new(session::Sessions::default()),
        tera: Arc::new(tera),
    };
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route(
            "/ui/static/console.css",
            get(|| async { asset("text/css", CSS) }),
        )
        .route(
            "/ui/static/console.js",
            get(|| async { asset("text/javascript", JS) }),
        )
        .merge(pages::routes())
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::admin::BODY_LIMIT,
        ))
        .with_state(console)
        .fallback_service(api)
}

fn asset(ct: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, ct),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// An API answer: status and body (JSON when it is JSON, else the text in `Value::String`).
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: Value,
}

impl Reply {
    pub(crate) fn ok(&self) -> bool {
        self.status.is_success()
    }
    /// The problem+json of a failed call, as the pages show it.
    pub(crate) fn problem(&self) -> web::Problem {
        web::Problem::of(&self.body, self.status)
    }
}

impl Console {
    /// Calls the admin API as the session's admin.
    pub(crate) async fn call(
        &self,
        s: &Session,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let body = body.map(|b| ("application/json", b.to_string()));
        self.call_raw(s, method, path, body).await
    }

    /// Calls the admin API with a body of the given content type.
    pub(crate) async fn call_raw(
        &self,
        s: &Session,
        method: Method,
        path: &str,
        body: Option<(&str, String)>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path).header(
            header::AUTHORIZATION,
            format!("Bearer {}", s.token.expose()),
        );
        let body = match body {
            Some((ct, b)) => {
                req = req.header(header::CONTENT_TYPE, ct);
                Body::from(b)
            }
            None => Body::empty(),
        };
        let req = match req.body(body) {
            Ok(r) => r,
            Err(e) => return internal(e),
        };
        let resp = match self.api.clone().oneshot(req).await {
            Ok(r) => r,
            Err(e) => return internal(e),
        };
        let status = resp.status();
        let json = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.contains("json"));
        let bytes = match axum::body::to_bytes(resp.into_body(), 64 << 20).await {
            Ok(b) => b,
            Err(e) => return internal(e),
        };
        let body = if json {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        } else if bytes.is_empty() {
            Value::Null
        } else {
            Value::String(String::from_utf8_lossy(&bytes).into_owned())
        };
        Reply { status, body }
    }

    /// GET that the page needs: the JSON, or the API's error as a page.
    pub(crate) async fn get(&self, s: &Session, path: &str) -> Result<Value, Response> {
        let r = self.call(s, Method::GET, path, None).await;
        if r.ok() {
            Ok(r.body)
        } else {
            Err(self.error_page(s, &r.problem()))
        }
    }

    /// Renders `template` with the page's values and the session's common ones.
    pub(crate) fn render(&self, s: Option<&Session>, template: &str, mut ctx: Value) -> Response {
        self.render_status(s, template, StatusCode::OK, &mut ctx)
    }

    pub(crate) fn render_status(
        &self,
        s: Option<&Session>,
        template: &str,
        status: StatusCode,
        ctx: &mut Value,
    ) -> Response {
        if !ctx.is_object() {
            *ctx = Value::Object(Default::default());
        }
        if let (Some(o), Some(s)) = (ctx.as_object_mut(), s) {
            o.insert("csrf".into(), Value::String(s.csrf.clone()));
            o.insert("who".into(), Value::String(s.name.clone()));
            o.insert(
                "scope".into(),
                s.group
                    .as_ref()
                    .map(|g| Value::String(g.to_string()))
                    .unwrap_or(Value::Null),
            );
            o.insert("signed_in".into(), Value::Bool(true));
        }
        let context = match tera::Context::from_serialize(&*ctx) {
            Ok(c) => c,
            Err(e) => return internal_page(e),
        };
        match self.tera.render(template, &context) {
            Ok(html) => (
                status,
                [
                    (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                    // Pages may show a secret once: never cached.
                    (header::CACHE_CONTROL, "no-store"),
                    // Own scripts and styles only; never framed (no clickjacking).
                    (header::CONTENT_SECURITY_POLICY, CSP),
                    (header::X_FRAME_OPTIONS, "DENY"),
                    (header::REFERRER_POLICY, "same-origin"),
                ],
                html,
            )
                .into_response(),
            Err(e) => internal_page(e),
        }
    }

    /// A page showing an API error (not found, forbidden, ...).
    pub(crate) fn error_page(&self, s: &Session, p: &web::Problem) -> Response {
        let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut ctx = serde_json::json!({
            "title": p.title(),
            "problem": p,
        });
        self.render_status(Some(s), "message.html", status, &mut ctx)
    }
}

fn internal(e: impl std::fmt::Display) -> Reply {
    tracing::error!(error = %e, "console: calling the admin API failed");
    Reply {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        body: serde_json::json!({"code": "internal", "detail": "internal error; the server log has details", "status": 500}),
    }
}

fn internal_page(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "console: rendering a page failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "internal error; the server log has details",
    )
        .into_response()
}
