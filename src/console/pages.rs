//! The console's pages and forms. Each handler reads what its page needs from the admin API and
//! renders; each form POST checks the CSRF token, makes the API call and either redirects (on
//! success) or re-renders the form with the API's problem at its field.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

use super::session::{self, cookie, random_id, same, set_cookie, Session};
use super::web::{diff, enc, errors, Form, Problem};
use super::Console;

type Html = Result<Response, Response>;
type Q = Query<HashMap<String, String>>;

pub(super) fn routes() -> Router<Console> {
    Router::new()
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", axum::routing::post(logout))
        .route("/ui/", get(dashboard))
        .route("/ui/groups/{g}", get(group_page).post(group_save))
        .route("/ui/groups/{g}/sync", axum::routing::post(group_sync))
        .route("/ui/groups/{g}/users", get(users).post(user_create))
        .route("/ui/groups/{g}/users/{e}", get(profile).post(profile_save))
        .route(
            "/ui/groups/{g}/users/{e}/action",
            axum::routing::post(user_action),
        )
        .route(
            "/ui/groups/{g}/users/{e}/delete",
            get(user_delete_confirm).post(user_delete),
        )
        .route("/ui/groups/{g}/users/{e}/sca", get(sca_list).post(sca_add))
        .route(
            "/ui/groups/{g}/users/{e}/sca/{port}",
            get(sca_edit).post(sca_save),
        )
        .route(
            "/ui/groups/{g}/users/{e}/sca/{port}/delete",
            get(sca_delete_confirm).post(sca_delete),
        )
        .route("/ui/groups/{g}/users/{e}/shared-lines", get(user_lines))
        .route(
            "/ui/groups/{g}/users/{e}/features",
            get(features).post(features_save),
        )
        .route(
            "/ui/groups/{g}/users/{e}/forwarding",
            get(forwarding).post(forwarding_save),
        )
        .route("/ui/groups/{g}/users/{e}/devices", get(user_devices))
        .route(
            "/ui/groups/{g}/shared-lines",
            get(shared_lines).post(shared_line_create),
        )
        .route(
            "/ui/groups/{g}/shared-lines/{n}",
            get(shared_line).post(shared_line_save),
        )
        .route(
            "/ui/groups/{g}/shared-lines/{n}/delete",
            get(shared_line_delete_confirm).post(shared_line_delete),
        )
        .route("/ui/groups/{g}/devices", get(devices).post(device_create))
        .route("/ui/add-device", get(add_device))
        .route("/ui/devices/{mac}", get(device).post(device_save))
        .route(
            "/ui/devices/{mac}/action",
            axum::routing::post(device_action),
        )
        .route("/ui/devices/{mac}/state", get(device_state))
        .route("/ui/devices/{mac}/files/{file}", get(device_file))
        .route(
            "/ui/devices/{mac}/delete",
            get(device_delete_confirm).post(device_delete),
        )
        .route(
            "/ui/groups/{g}/key-profiles",
            get(key_profiles).post(key_profile_create),
        )
        .route("/ui/groups/{g}/firmware", get(firmware))
        .route(
            "/ui/groups/{g}/firmware/{model}/resume",
            axum::routing::post(firmware_resume),
        )
        .route(
            "/ui/groups/{g}/key-profiles/{name}",
            get(key_profile).post(key_profile_save),
        )
        .route("/ui/templates", get(templates))
        .route(
            "/ui/templates/{model}/{file}",
            get(template).post(template_post),
        )
        .route("/ui/changes", get(changes))
}

// ------------------------------------------------------------------ sign-in and guards

/// A signed-in admin; anyone else is sent to the sign-in page.
pub(super) struct Auth(Session);

impl FromRequestParts<Console> for Auth {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, c: &Console) -> Result<Auth, Response> {
        match c.sessions.of(&parts.headers) {
            Some((_, s)) => Ok(Auth(s)),
            None => {
                let next = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/ui/");
                Err(Redirect::to(&format!("/ui/login?next={}", enc(next))).into_response())
            }
        }
    }
}

/// A form POST from a signed-in admin with the session's CSRF token.
pub(super) struct Post(Session, Form);

impl FromRequest<Console> for Post {
    type Rejection = Response;

    async fn from_request(req: Request, c: &Console) -> Result<Post, Response> {
        let (mut parts, body) = req.into_parts();
        let Auth(s) = Auth::from_request_parts(&mut parts, c).await?;
        let req = Request::from_parts(parts, body);
        let bytes = Bytes::from_request(req, c)
            .await
            .map_err(|e| (StatusCode::PAYLOAD_TOO_LARGE, e.body_text()).into_response())?;
        let form = Form::parse(&bytes);
        if !same(form.get("_csrf"), &s.csrf) {
            return Err(csrf_refused(c, Some(&s)));
        }
        Ok(Post(s, form))
    }
}

fn csrf_refused(c: &Console, s: Option<&Session>) -> Response {
    let p = Problem {
        status: 403,
        code: "csrf".into(),
        detail: "the form's security token is missing or stale; reload the page and try again"
            .into(),
        field: None,
        line: None,
        column: None,
    };
    let mut ctx = json!({"title": "Form refused", "problem": p});
    c.render_status(s, "message.html", StatusCode::FORBIDDEN, &mut ctx)
}

/// Only a local path may follow sign-in (no open redirect).
fn local(next: &str) -> &str {
    if next.starts_with("/ui/") && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/ui/"
    }
}

async fn login_page(State(c): State<Console>, Query(q): Q) -> Response {
    let nonce = random_id();
    let mut ctx = json!({
        "title": "Sign in",
        "login_csrf": nonce,
        "next": local(q.get("next").map(String::as_str).unwrap_or("/ui/")),
        "error": null,
    });
    let mut r = c.render_status(None, "login.html", StatusCode::OK, &mut ctx);
    set(&mut r, &set_cookie(session::LOGIN_COOKIE, &nonce, 600));
    r
}

fn set(r: &mut Response, cookie: &str) {
    if let Ok(v) = header::HeaderValue::from_str(cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

async fn login(State(c): State<Console>, headers: HeaderMap, body: Bytes) -> Response {
    let form = Form::parse(&body);
    let expected = cookie(&headers, session::LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !same(form.get("_csrf"), &expected) {
        return csrf_refused(&c, None);
    }
    let next = local(form.get("next")).to_string();
    let secret = form.get("token").trim().to_string();
    let Some(t) = c.app.store.authenticate(&secret) else {
        tracing::info!("console: sign-in refused (unknown token)");
        let nonce = random_id();
        let mut ctx = json!({
            "title": "Sign in",
            "login_csrf": nonce,
            "next": next,
            "error": "That token is not valid. Paste an admin token (it starts with dp_).",
        });
        let mut r = c.render_status(None, "login.html", StatusCode::UNAUTHORIZED, &mut ctx);
        set(&mut r, &set_cookie(session::LOGIN_COOKIE, &nonce, 600));
        return r;
    };
    tracing::info!(token = %t.id, "console: signed in");
    let id = c.sessions.create(secret, t.name.clone(), t.group.clone());
    let mut r = Redirect::to(&next).into_response();
    set(
        &mut r,
        &set_cookie(session::COOKIE, &id, session::LIFETIME.as_secs()),
    );
    set(&mut r, &set_cookie(session::LOGIN_COOKIE, "", 0));
    r
}

async fn logout(State(c): State<Console>, headers: HeaderMap, Post(s, _): Post) -> Response {
    if let Some((id, _)) = c.sessions.of(&headers) {
        c.sessions.remove(&id);
    }
    tracing::info!(token = %s.name, "console: signed out");
    let mut r = Redirect::to("/ui/login").into_response();
    set(&mut r, &set_cookie(session::COOKIE, "", 0));
    r
}

// ------------------------------------------------------------------ helpers

fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn opt_str(s: Option<String>) -> Value {
    s.map(Value::String).unwrap_or(Value::Null)
}

fn ui_group(g: &str) -> String {
    format!("/ui/groups/{}", enc(g))
}

fn api_group(g: &str) -> String {
    format!("/api/v1/groups/{}", enc(g))
}

fn ui_user(g: &str, e: &str) -> String {
    format!("{}/users/{}", ui_group(g), enc(e))
}

fn api_user(g: &str, e: &str) -> String {
    format!("{}/users/{}", api_group(g), enc(e))
}

/// The groups the admin sees.
async fn groups_of(c: &Console, s: &Session) -> Result<Vec<Value>, Response> {
    Ok(items(&c.get(s, "/api/v1/groups?limit=1000").await?))
}

async fn all_users(c: &Console, s: &Session, g: &str) -> Result<Vec<Value>, Response> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            None => format!("{}/users?limit=1000", api_group(g)),
            Some(a) => format!("{}/users?limit=1000&after={}", api_group(g), enc(a)),
        };
        let page = c.get(s, &path).await?;
        out.extend(items(&page));
        match page["next"].as_str() {
            Some(n) if out.len() < 20_000 => after = Some(n.to_string()),
            _ => return Ok(out),
        }
    }
}

async fn all_devices(c: &Console, s: &Session, g: &str) -> Result<Vec<Value>, Response> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            None => format!("{}/devices?limit=1000", api_group(g)),
            Some(a) => format!("{}/devices?limit=1000&after={}", api_group(g), enc(a)),
        };
        let page = c.get(s, &path).await?;
        out.extend(items(&page));
        match page["next"].as_str() {
            Some(n) if out.len() < 20_000 => after = Some(n.to_string()),
            _ => return Ok(out),
        }
    }
}

fn obj(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    v.as_object_mut().expect("object")
}

/// An RFC 3339 UTC time as a page shows it: `2026-12-03 09:54:58 UTC`.
fn short_time(v: &Value) -> String {
    let t = str_of(v);
    if t.len() >= 19 && t.as_bytes()[10] == b'T' {
        format!("{} {} UTC", &t[..10], &t[11..19])
    } else {
        t
    }
}

/// Human words for a sync state.
fn state_label(s: &str) -> &'static str {
    match s {
        "in_sync" => "In sync",
        "pending" => "Pending",
        "notified" => "Notified",
        "failed" => "Failed",
        _ => "Unknown",
    }
}

/// A device as the lists show it.
fn device_row(d: &Value) -> Value {
    let st = d["state"].as_str().unwrap_or("");
    json!({
        "mac": d["mac"],
        "name": d["name"],
        "model": d["model"],
        "owner": str_of(&d["owner"]),
        "hot_desk": str_of(&d["hot_desk"]),
        "last_seen": short_time(&d["last_seen"]["at"]),
        "ip": str_of(&d["last_seen"]["ip"]),
        "firmware": str_of(&d["last_seen"]["firmware"]),
        "state": st,
        "state_label": state_label(st),
        "group": d["group"],
    })
}

// ------------------------------------------------------------------ dashboard and group

async fn dashboard(State(c): State<Console>, Auth(s): Auth) -> Html {
    let mut groups = Vec::new();
    for g in groups_of(&c, &s).await? {
        let id = str_of(&g["id"]);
        let view = c.get(&s, &api_group(&id)).await?;
        groups.push(json!({
            "id": id,
            "name": g["name"],
            "sync": view["sync"],
        }));
    }
    let recent = recent_changes(&c, &s, 10).await;
    let unprovisioned = if s.group.is_none() {
        let r = c.call(&s, Method::GET, "/api/v1/unprovisioned", None).await;
        r.body.as_array().cloned().unwrap_or_default()
    } else {
        Vec::new()
    };
    Ok(c.render(
        Some(&s),
        "dashboard.html",
        json!({
            "title": "Dashboard",
            "nav": "dashboard",
            "groups": groups,
            "recent": recent,
            "unprovisioned": unprovisioned
                .into_iter()
                .take(20)
                .map(|mut u| {
                    let link = format!(
                        "/ui/add-device?mac={}&ua={}",
                        enc(&str_of(&u["mac"])),
                        enc(&str_of(&u["user_agent"]))
                    );
                    obj(&mut u).insert("add_link".into(), json!(link));
                    u
                })
                .collect::<Vec<_>>(),
            "platform": s.group.is_none(),
        }),
    ))
}

/// The newest `n` changes, newest first.
async fn recent_changes(c: &Console, s: &Session, n: u64) -> Vec<Value> {
    let head = c
        .call(s, Method::GET, "/api/v1/changes?limit=1", None)
        .await;
    let last = head.body["last_seq"]
        .as_u64()
        .or(head.body["last_group_seq"].as_u64())
        .unwrap_or(0);
    let since = last.saturating_sub(n);
    let r = c
        .call(
            s,
            Method::GET,
            &format!("/api/v1/changes?since={since}&limit={n}"),
            None,
        )
        .await;
    let mut v = items(&r.body);
    v.reverse();
    v.iter().map(change_row).collect()
}

fn change_row(ch: &Value) -> Value {
    json!({
        "seq": ch["seq"].as_u64().or(ch["group_seq"].as_u64()),
        "at": short_time(&ch["at"]),
        "actor": ch["actor"],
        "action": ch["action"],
        "group": str_of(&ch["group"]),
        "subject": ch["subject"],
        "devices": ch["devices"].as_array().map(|d| d.len()).unwrap_or(0),
    })
}

async fn group_page(State(c): State<Console>, Auth(s): Auth, Path(g): Path<String>) -> Html {
    let view = c.get(&s, &api_group(&g)).await?;
    Ok(render_group(&c, &s, &g, view, None, None, StatusCode::OK).await)
}

async fn render_group(
    c: &Console,
    s: &Session,
    g: &str,
    view: Value,
    errs: Option<Value>,
    saved: Option<&str>,
    status: StatusCode,
) -> Response {
    let settings: Vec<String> = view["settings"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", str_of(v)))
                .collect()
        })
        .unwrap_or_default();
    let mut ctx = json!({
        "title": format!("Group {g}"),
        "nav": "group",
        "g": g,
        "group": view,
        "timezone": str_of(&view["settings"]["timezone"]),
        "language": str_of(&view["settings"]["language"]),
        "settings_text": settings.join("\n"),
        "errors": errs.unwrap_or(json!({})),
        "saved": saved,
        "has_key_profiles": c
            .call(s, Method::GET, &format!("{}/key-profiles?limit=1", api_group(g)), None)
            .await
            .ok(),
    });
    c.render_status(Some(s), "group.html", status, &mut ctx)
}

async fn group_save(State(c): State<Console>, Path(g): Path<String>, Post(s, f): Post) -> Html {
    let mut settings = Map::new();
    for line in f.get("settings").lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (k, v) = line.split_once('=').unwrap_or((line, ""));
        settings.insert(k.trim().to_string(), Value::String(v.trim().to_string()));
    }
    for k in ["timezone", "language"] {
        match f.opt(k) {
            Some(v) => {
                settings.insert(k.into(), Value::String(v));
            }
            None => {
                settings.remove(k);
            }
        }
    }
    let current = c.get(&s, &api_group(&g)).await?;
    // A merge patch merges maps: keys no longer listed are removed with null.
    let mut patch_settings = settings.clone();
    if let Some(old) = current["settings"].as_object() {
        for k in old.keys() {
            patch_settings.entry(k.clone()).or_insert(Value::Null);
        }
    }
    let licenses: Value = match f.get("shared_line_licenses").trim().parse::<u64>() {
        Ok(n) => json!(n),
        Err(_) => json!(f.get("shared_line_licenses")),
    };
    let body = json!({
        "name": f.get("name"),
        "shared_line_licenses": licenses,
        "settings": patch_settings,
    });
    let r = c.call(&s, Method::PATCH, &api_group(&g), Some(body)).await;
    if r.ok() {
        let view = c.get(&s, &api_group(&g)).await?;
        return Ok(render_group(&c, &s, &g, view, None, Some("Saved."), StatusCode::OK).await);
    }
    let p = r.problem();
    let mut view = current;
    obj(&mut view).insert("name".into(), json!(f.get("name")));
    let e = errors(
        &p,
        &[("no_license", "shared_line_licenses")],
        &["name", "shared_line_licenses", "settings"],
    );
    Ok(render_group(&c, &s, &g, view, Some(e), None, r.status).await)
}

async fn group_sync(State(c): State<Console>, Path(g): Path<String>, Post(s, _): Post) -> Html {
    let r = c
        .call(&s, Method::POST, &format!("{}/sync", api_group(&g)), None)
        .await;
    if !r.ok() {
        return Err(c.error_page(&s, &r.problem()));
    }
    Ok(see_other(&ui_group(&g)))
}

// ------------------------------------------------------------------ users

const PAGE: usize = 25;

async fn users(
    State(c): State<Console>,
    Auth(s): Auth,
    Path(g): Path<String>,
    Query(q): Q,
) -> Html {
    users_page(&c, &s, &g, &q, None, Value::Null, StatusCode::OK).await
}

async fn users_page(
    c: &Console,
    s: &Session,
    g: &str,
    q: &HashMap<String, String>,
    errs: Option<Value>,
    values: Value,
    status: StatusCode,
) -> Html {
    let needle = q
        .get("q")
        .map(|x| x.trim().to_lowercase())
        .unwrap_or_default();
    let mut after = q.get("after").cloned().filter(|a| !a.is_empty());
    let mut found: Vec<Value> = Vec::new();
    // Walk the API's pages until a console page is full (plus one to know there is more).
    loop {
        let path = match &after {
            None => format!("{}/users?limit=1000", api_group(g)),
            Some(a) => format!("{}/users?limit=1000&after={}", api_group(g), enc(a)),
        };
        let page = c.get(s, &path).await?;
        for u in items(&page) {
            let hay = format!(
                "{} {} {} {}",
                str_of(&u["extension"]),
                str_of(&u["display_name"]),
                str_of(&u["phone_number"]),
                str_of(&u["sip"]["username"])
            )
            .to_lowercase();
            if needle.is_empty() || hay.contains(&needle) {
                found.push(u);
            }
        }
        match page["next"].as_str() {
            Some(n) if found.len() <= PAGE => after = Some(n.to_string()),
            _ => break,
        }
    }
    let next = if found.len() > PAGE {
        found.truncate(PAGE);
        found.last().map(|u| str_of(&u["extension"]))
    } else {
        None
    };
    let mut ctx = json!({
        "title": format!("Users of {g}"),
        "nav": "users",
        "g": g,
        "users": found,
        "q": q.get("q").cloned().unwrap_or_default(),
        "next": next,
        "paged": q.get("after").is_some_and(|a| !a.is_empty()),
        "deleted": q.get("deleted"),
        "errors": errs.unwrap_or(json!({})),
        "values": if values.is_null() { json!({}) } else { values },
    });
    Ok(c.render_status(Some(s), "users.html", status, &mut ctx))
}

const USER_FIELDS: &[&str] = &[
    "extension",
    "first_name",
    "last_name",
    "display_name",
    "phone_number",
    "kind",
    "sip",
];

async fn user_create(State(c): State<Console>, Path(g): Path<String>, Post(s, f): Post) -> Html {
    let body = json!({
        "extension": f.get("extension").trim(),
        "first_name": f.get("first_name").trim(),
        "last_name": f.get("last_name").trim(),
        "phone_number": opt_str(f.opt("phone_number")),
        "kind": f.opt("kind").unwrap_or_else(|| "standard".into()),
    });
    let r = c
        .call(
            &s,
            Method::POST,
            &format!("{}/users", api_group(&g)),
            Some(body),
        )
        .await;
    if r.ok() {
        let e = str_of(&r.body["extension"]);
        let once =
            json!({"label": "SIP password (shown once)", "value": r.body["sip"]["password"]});
        return render_profile(&c, &s, &g, &e, Some(once), None, None, StatusCode::CREATED).await;
    }
    let p = r.problem();
    let e = errors(&p, &[("line_port_in_use", "phone_number")], USER_FIELDS);
    users_page(&c, &s, &g, &HashMap::new(), Some(e), f.values(), r.status).await
}

/// The user and the left navigation every user page shares.
async fn user_ctx(
    c: &Console,
    s: &Session,
    g: &str,
    e: &str,
    tab: &str,
) -> Result<Value, Response> {
    let user = c.get(s, &api_user(g, e)).await?;
    Ok(json!({
        "title": format!("{} ({})", str_of(&user["display_name"]), e),
        "nav": "users",
        "tab": tab,
        "g": g,
        "e": e,
        "user": user,
        "base": ui_user(g, e),
        "errors": {},
    }))
}

async fn profile(
    State(c): State<Console>,
    Auth(s): Auth,
    Path((g, e)): Path<(String, String)>,
) -> Html {
    render_profile(&c, &s, &g, &e, None, None, None, StatusCode::OK).await
}

#[allow(clippy::too_many_arguments)]
async fn render_profile(
    c: &Console,
    s: &Session,
    g: &str,
    e: &str,
    once: Option<Value>,
    errs: Option<Value>,
    saved: Option<&str>,
    status: StatusCode,
) -> Html {
    let mut ctx = user_ctx(c, s, g, e, "profile").await?;
    let o = obj(&mut ctx);
    o.insert("once".into(), once.unwrap_or(Value::Null));
    o.insert("errors".into(), errs.unwrap_or(json!({})));
    o.insert("saved".into(), json!(saved));
    let has_login = o["user"].get("login_allowed").is_some();
    o.insert("has_login_allowed".into(), json!(has_login));
    Ok(c.render_status(Some(s), "user_profile.html", status, &mut ctx))
}

async fn profile_save(
    State(c): State<Console>,
    Path((g, e)): Path<(String, String)>,
    Post(s, f): Post,
) -> Html {
    let mut body = json!({
        "first_name": f.get("first_name").trim(),
        "last_name": f.get("last_name").trim(),
        "display_name": opt_str(f.opt("display_name")),
        "phone_number": opt_str(f.opt("phone_number")),
        "kind": f.opt("kind").unwrap_or_else(|| "standard".into()),
    });
    if f.checked("has_login_allowed") {
        obj(&mut body).insert("login_allowed".into(), json!(f.checked("login_allowed")));
    }
    if f.checked("has_allowed_endpoints") {
        obj(&mut body).insert(
            "allowed_endpoints".into(),
            json!({"ip_phone": f.checked("ae_ip_phone"), "softphone": f.checked("ae_softphone"),
                   "third_party": f.checked("ae_third_party")}),
        );
    }
    let r = c
        .call(&s, Method::PATCH, &api_user(&g, &e), Some(body))
        .await;
    if r.ok() {
        return render_profile(&c, &s, &g, &e, None, None, Some("Saved."), StatusCode::OK).await;
    }
    let p = r.problem();
    let errs = errors(&p, &[("line_port_in_use", "phone_number")], USER_FIELDS);
    render_profile(&c, &s, &g, &e, None, Some(errs), None, r.status).await
}

/// Reset password, Duplicate, Unregister: the profile's actions.
async fn user_action(
    State(c): State<Console>,
    Path((g, e)): Path<(String, String)>,
    Post(s, f): Post,
) -> Html {
    match f.get("op") {
        "reset_password" => {
            let r = c
                .call(
                    &s,
                    Method::POST,
                    &format!("{}/sip-password", api_user(&g, &e)),
                    None,
                )
                .await;
            if !r.ok() {
                return Err(c.error_page(&s, &r.problem()));
            }
            let once =
                json!({"label": "New SIP password (shown once)", "value": r.body["password"]});
            render_profile(&c, &s, &g, &e, Some(once), None, None, StatusCode::OK).await
        }
        "third_party" => {
            let r = c
                .call(
                    &s,
                    Method::POST,
                    &format!("{}/third-party-credentials", api_user(&g, &e)),
                    None,
                )
                .await;
            if !r.ok() {
                return Err(c.error_page(&s, &r.problem()));
            }
            let b = &r.body;
            let once = json!({"label": "Third-party softphone credentials (shown once; the user's phones get the new password)",
                "value": format!("user {}  auth user {}  password {}  domain {}{}", str_of(&b["username"]), str_of(&b["auth_username"]), str_of(&b["password"]), str_of(&b["domain"]),
                    b["proxy"].as_str().map(|p| format!("  proxy {p}")).unwrap_or_default())});
            render_profile(&c, &s, &g, &e, Some(once), None, None, StatusCode::OK).await
        }
        "duplicate" => {
            let body = json!({
                "extension": f.get("new_extension").trim(),
                "first_name": opt_str(f.opt("new_first_name")),
                "last_name": opt_str(f.opt("new_last_name")),
            });
            let r = c
                .call(
                    &s,
                    Method::POST,
                    &format!("{}/duplicate", api_user(&g, &e)),
                    Some(body),
                )
                .await;
            if r.ok() {
                let ne = str_of(&r.body["extension"]);
                let once = json!({"label": format!("Duplicated from {e}. SIP password (shown once)"), "value": r.body["sip"]["password"]});
                return render_profile(
                    &c,
                    &s,
                    &g,
                    &ne,
                    Some(once),
                    None,
                    None,
                    StatusCode::CREATED,
                )
                .await;
            }
            let p = r.problem();
            // Errors of the duplicate form are about the new user's fields.
            let errs = match p.field.as_deref().map(|x| x.trim_start_matches('.')) {
                Some("extension") | None => json!({"new_extension": p}),
                Some(other) => json!({ format!("new_{other}"): p }),
            };
            render_profile(&c, &s, &g, &e, None, Some(errs), None, r.status).await
        }
        "unregister" => {
            let r = c
                .call(
                    &s,
                    Method::POST,
                    &format!("{}/unregister", api_user(&g, &e)),
                    None,
                )
                .await;
            if !r.ok() {
                return Err(c.error_page(&s, &r.problem()));
            }
            render_profile(
                &c,
                &s,
                &g,
                &e,
                None,
                None,
                Some("Unregistered: the phones with this user's lines were told to reboot without them."),
                StatusCode::OK,
            )
            .await
        }
        _ => Err(StatusCode::BAD_REQUEST.into_response()),
    }
}

fn confirm(
    c: &Console,
    s: &Session,
    title: &str,
    question: String,
    action: String,
    back: String,
) -> Response {
    c.render(
        Some(s),
        "confirm.html",
        json!({"title": title, "question": question, "action": action, "back": back}),
    )
}

async fn user_delete_confirm(
    State(c): State<Console>,
    Auth(s): Auth,
    Path((g, e)): Path<(String, String)>,
) -> Html {
    let u = c.get(&s, &api_user(&g, &e)).await?;
    Ok(confirm(
        &c,
        &s,
        "Delete user",
        format!(
            "Delete user {} ({e})? Its shared call appearances, shared-line memberships and hot-desk logins go too.",
            str_of(&u["display_name"])
        ),
        format!("{}/delete", ui_user(&g, &e)),
        ui_user(&g, &e),
    ))
}

async fn user_delete(
    State(c): State<Console>,
    Path((g, e)): Path<(String, String)>,
    Post(s, _): Post,
) -> Html {
    let r = c.call(&s, Method::DELETE, &api_user(&g, &e), None).await;
    if !r.ok() {
        return Err(c.error_page(&s, &r.problem()));
    }
    Ok(see_other(&format!(
        "{}/users?deleted={}",
        ui_group(&g),
        enc(&e)
    )))
}

// ------------------------------------------------------------------ shared call appearances

const SCA_FIELDS: &[&str] = &[
    "device",
    "line_port",
    "key",
    "label",
    "active",
    "allow_origination",
    "allow_termination",
];
const SCA_CODES: &[(&str, &str)] = &[
    ("line_port_in_use", "line_port"),
    ("invalid_line_port", "line_port"),
    ("line_port_mismatch", "line_port"),
    ("no_device", "device"),
    ("not_found", "device"),
    ("cross_group", "device"),
    ("key_unavailable", "key"),
    ("key_in_use", "key"),
    ("no_free_key", "key"),
    ("no_free_account", "device"),
    ("duplicate_appearance", "device"),
    ("sca_limit", "line_port"),
];

/// The lowest `<prefix>_scaN` nobody uses (a suggestion; the API decides).
fn next_free_port(c: &Console, prefix: &str) -> String {
    let st = c.app.store.read();
    (1..1000)
        .map(|n| format!("{prefix}_sca{n}"))
        .find(|p| !st.line_port_taken(p))
        .unwrap_or_default()
}

async fn sca_list(
    State(c): State<Console>,
    Auth(s): Auth,
    Path((g, e)): Path<(String, String)>,
    Query(q): Q,
) -> Html {
    sca_page(
        &c,
        &s,
        &g,
        &e,
        q.get("saved").map(String::as_str),
        None,
        Value::Null,
        StatusCode::OK,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn sca_page(
    c: &Console,
    s: &Session,
    g: &str,
    e: &str,
    saved: Option<&str>,
    errs: Option<Value>,
    values: Value,
    status: StatusCode,
) -> Html {
    let mut ctx = user_ctx(c, s, g, e, "sca").await?;
    let list = c
        .get(
            s,
            &format!("{}/shared-call-appearances?limit=1000", api_user(g, e)),
        )
        .await?;
    let devices = all_devices(c, s, g).await?;
    let prefix = str_of(&ctx["user"]["line_port_prefix"]);
    let saved = match saved {
        Some(port) => {
            let x = items(&list)
                .into_iter()
                .find(|x| x["line_port"].as_str() == Some(port));
            match x {
                Some(x) => {
                    let d = c
                        .get(s, &format!("/api/v1/devices/{}", enc(&str_of(&x["mac"]))))
                        .await?;
                    json!({"port": port, "device": device_row(&d)})
                }
                None => Value::Null,
            }
        }
        None => Value::Null,
    };
    let values = if values.is_null() {
        json!({"active": "on", "allow_origination": "on", "allow_termination": "on"})
    } else {
        values
    };
    let o = obj(&mut ctx);
    o.insert("scas".into(), json!(items(&list)));
    o.insert(
        "devices".into(),
        json!(devices.iter().map(device_row).collect::<Vec<_>>()),
    );
    o.insert("suggested".into(), json!(next_free_port(c, &prefix)));
    o.insert("adding".into(), json!(true));
    o.insert("prefix".into(), json!(prefix));
    o.insert(
        "hint".into(),
        json!(format!("6035551212_sca1 / {g}_5555_sca1")),
    );
    o.insert("saved".into(), saved);
    o.insert("errors".into(), errs.unwrap_or(json!({})));
    o.insert("values".into(), values);
    Ok(c.render_status(Some(s), "user_sca.html", status, &mut ctx))
}

fn sca_body(f: &Form, with_port: bool) -> Value {
    let key: Value = match f.opt("key") {
        None => Value::Null,
        Some(k) => k.parse::<u64>().map(|n| json!(n)).unwrap_or(json!(k)),
    };
    let mut b = json!({
        "device": f.get("device"),
        "key": key,
        "label": opt_str(f.opt("label")),
        "active": f.checked("active"),
        "allow_origination": f.checked("allow_origination"),
        "allow_termination": f.checked("allow_termination"),
    });
    if with_port {
        obj(&mut b).insert("line_port".into(), opt_str(f.opt("line_port")));
    }
    b
}

async fn sca_add(
    State(c): State<Console>,
    Path((g, e)): Path<(String, String)>,
    Post(s, f): Post,
) -> Html {
    let r = c
        .call(
            &s,
            Method::POST,
            &format!("{}/shared-call-appearances", api_user(&g, &e)),
            Some(sca_body(&f, true)),
        )
        .await;
    if r.ok() {
        let port = str_of(&r.body["line_port"]);
        return Ok(see_other(&format!(
            "{}/sca?saved={}",
            ui_user(&g, &e),
            enc(&port)
        )));
    }
    let p = r.problem();
    let errs = errors(&p, SCA_CODES, SCA_FIELDS);
    sca_page(&c, &s, &g, &e, None, Some(errs), f.values(), r.status).await
}

async fn sca_edit(
    State(c): State<Console>,
    Auth(s): Auth,
    Path((g, e, port)): Path<(String, String, String)>,
) -> Html {
    sca_edit_page(&c, &s, &g, &e, &port, None, None, StatusCode::OK).await
}

#[allow(clippy::too_many_arguments)]
async fn sca_edit_page(
    c: &Console,
    s: &Session,
    g: &str,
    e: &str,
    port: &str,
    errs: Option<Value>,
    values: Option<Value>,
    status: StatusCode,
) -> Html {
    let mut ctx = user_ctx(c, s, g, e, "sca").await?;
    let x = c
        .get(
            s,
            &format!("{}/shared-call-appearances/{}", api_user(g, e), enc(port)),
        )
        .await?;
    let devices = all_devices(c, s, g).await?;
    let values = values.unwrap_or_else(|| {
        let on = |b: &Value| {
            if b.as_bool() == Some(true) {
                json!("on")
            } else {
                Value::Null
            }
        };
        json!({
            "device": x["device"],
            "key": str_of(&x["key"]),
            "label": str_of(&x["label"]),
            "active": on(&x["active"]),
            "allow_origination": on(&x["allow_origination"]),
            "allow_termination": on(&x["allow_termination"]),
        })
    });
    let o = obj(&mut ctx);
    o.insert("sca".into(), x);
    o.insert("port".into(), json!(port));
    o.insert(
        "devices".into(),
        json!(devices.iter().map(device_row).collect::<Vec<_>>()),
    );
    o.insert("errors".into(), errs.unwrap_or(json!({})));
    o.insert("values".into(), values);
    Ok(c.render_status(Some(s), "user_sca_edit.html", status, &mut ctx))
}

async fn sca_save(
    State(c): State<Console>,
    Path((g, e, port)): Path<(String, String, String)>,
    Post(s, f): Post,
) -> Html {
    let r = c
        .call(
            &s,
            Method::PATCH,
            &format!(
                "{}/shared-call-appearances/{}",
                api_user(&g, &e),
                enc(&port)
            ),
            Some(sca_body(&f, false)),
        )
        .await;
    if r.ok() {
        return Ok(see_other(&format!(
            "{}/sca?saved={}",
            ui_user(&g, &e),
            enc(&port)
        )));
    }
    let p = r.problem();
    let errs = errors(&p, SCA_CODES, SCA_FIELDS);
    sca_edit_page(
        &c,
        &s,
        &g,
        &e,
        &port,
        Some(errs),
        Some(f.values()),
        r.status,
    )
    .await
}

async fn sca_delete_confirm(
    State(c): State<Console>,
    Auth(s): Auth,
    Path((g, e, port)): Path<(String, String, String)>,
) -> Html {
    let x = c
        .get(
            &s,
            &format!(
                "{}/shared-call-appearances/{}",
                api_user(&g, &e),
                enc(&port)
            ),
        )
        .await?;
    Ok(confirm(
        &c,
        &s,
        "Delete shared call appearance",
        format!(
            "Delete the shared call appearance {port} on {}?",
            str_of(&x["device"])
        ),
        format!("{}/sca/{}/delete", ui_user(&g, &e), enc(&port)),
        format!("{}/sca", ui_user(&g, &e)),
    ))
}

async fn sca_delete(
    State(c): State<Console>,
    Path((g, e, port)): Path<(String, String, String)>,
    Post(s, _): Post,
) -> Html {
    let r = c
        .call(
            &s,
            Method::DELETE,
            &format!(
                "{}/shared-call-appearances/{}",
                api_user(&g, &e),
                enc(&port)
            ),
            None,
        )
        .await;
    if !r.ok() {
        return Err(c.error_page(&s, &r.problem()));
    }
    Ok(see_other(&format!("{}/sca", ui_user(&g, &e))))
}

// ------------------------------------------------------------------ user: lines, features, forwarding, devices

async fn user_lines(
    State(c): State<Console>,
    Auth(s): Auth,
    Path((g, e)): Path<(String, String)>,
) -> Html {
    let mut ctx = user_ctx(&c, &s, &g, &e, "lines").await?;
    let lines = c
        .get(&s, &format!("{}/shared-lines?limit=1000", api_group(&g)))
        .await?;
    let mine: Vec<Value> = items(&lines)
        .into_iter()
        .filter_map(|l| {
            let m = l["members"]
                .as_array()?
                .iter()
                .find(|m| m["extension"].as_str() == Some(e.as_str()))?
                .clone();
            Some(json!({"line": l, "member": m}))
        })
        .collect();
    obj(&mut ctx).insert("lines".into(), json!(mine));
    Ok(c.render(Some(&s), "user_lines.html", ctx))
}

fn tri(v: &Value) -> &'static str {
    match v.as_bool() {
        Some(true) => "on",
        Some(false) => "off",
        None => "",
    }
}

fn tri_in(f: &Form, name: &str) -> Value {
    match f.get(name) {
        "on" => json!(true),
        "off" => json!(false),
        _ => Value::Null,
    }
}

const FEATURE_FLAGS: &[(&str, &str)] = &[
    ("call_waiting", "Call waiting"),
    ("dnd", "Do not disturb"),
    ("anonymous_outgoing", "Anonymous outgoing calls"),
    ("presence", "Presence (may be monitored)"),
];

async fn features(
    State(c): State<Console>,
    Auth(s): Auth,
    Path((g, e)): Path<(String, String)>,
) -> Html {
    features_page(&c, &s, &g, &e, None, None, StatusCode::OK).await
}

async fn features_page(
    c: &Console,
    s: &Session,
    g: &str,
    e: &str,
    errs: Option<Value>,
    saved: Option<&str>,
    status: StatusCode,
) -> Html {
    let mut ctx = user_ctx(c, s, g, e, "features").await?;
    let f = ctx["user"]["features"].clone();
    let flags: Vec<Value> = FEATURE_FLAGS
        .iter()
        .map(|(k, label)| json!({"name": k, "label": label, "value": tri(&f[*k])}))
        .collect();
    let monitoring: Vec<String> = f["monitoring"]
        .as_array()
        .map(|a| a.iter().map(str_of).collect())
        .unwrap_or_default();
    let o = obj(&mut ctx);
    o.insert("flags".into(), json!(flags));
    o.insert(
        "vm_enabled".into(),
        json!(f["voicemail"]["enabled"].as_bool() == Some(true)),
    );
    o.insert(
        "vm_access".into(),
        json!(str_of(&f["voicemail"]["access_number"])),
    );
    o.insert("monitoring".into(), json!(monitoring.join(", ")));
    o.insert("errors".into(), errs.unwrap_or(json!({})));
    o.insert("saved".into(), json!(saved));
    Ok(c.render_status(Some(s), "user_features.html", status, &mut ctx))
}

async fn features_save(
    State(c): State<Console>,
    Path((g, e)): Path<(String, String)>,
    Post(s, f): Post,
) -> Html {
    let mut feats = Map::new();
    for (k, _) in FEATURE_FLAGS {
        feats.insert(k.to_string(), tri_in(&f, k));
    }
    let vm = if f.checked("vm_enabled") || f.opt("vm_access").is_some() {
        json!({"enabled": f.checked("vm_enabled"), "access_number": opt_str(f.opt("vm_access"))})
    } else {
        Value::Null
    };
    feats.insert("voicemail".into(), vm);
    let monitoring: Vec<String> = f
        .get("monitoring")
        .split([',', ' '])
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect();
    feats.insert("monitoring".into(), json!(monitoring));
    let body = json!({"features": feats});
    let r = c
        .call(&s, Method::PATCH, &api_user(&g, &e), Some(body))
        .await;
    if r.ok() {
        return features_page(&c, &s, &g, &e, None, Some("Saved."), StatusCode::OK).await;
    }
    let p = r.problem();
    let field = p
        .field
        .as_deref()
        .map(|x| x.trim_start_matches('.').trim_start_matches("features."))
        .map(|x| x.split(['.', '[']).next().unwrap_or(x).to_string());
    let at = match field.as_deref() {
        Some("voicemail") => "vm_access".to_string(),
        Some(x) if !x.is_empty() => x.to_string(),
        _ => String::new(),
    };
    let errs = json!({ at: p });
    features_page(&c, &s, &g, &e, Some(errs), None, r.status).await
}

const FORWARDS: &[(&str, &str)] = &[
    ("always", "Always (unconditional)"),
    ("busy", "When busy"),
    ("no_answer", "When not answered"),
    ("not_reachable", "When not reachable"),
];

async fn forwarding(
    State(c): State<Console>,
    Auth(s): Auth,
    Path((g, e)): Path<(String, String)>,
) -> Html {
    forwarding_page(&c, &s, &g, &e, None, None, None, StatusCode::OK).await
}

#[allow(clippy::too_many_arguments)]
async fn forwarding_page(
    c: &Console,
    s: &Session,
    g: &str,
    e: &str,
    values: Option<Value>,
    errs: Option<Value>,
    saved: Option<&str>,
    status: StatusCode,
) -> Html {
    let mut ctx = user_ctx(c, s, g, e, "forwarding").await?;
    let fw = ctx["user"]["features"]["forwarding"].clone();
    let values = values.unwrap_or_else(|| {
        let mut m = Map::new();
        for (k, _) in FORWARDS {
            m.insert(k.to_string(), json!(str_of(&fw[*k])));
        }
        m.insert(
            "no_answer_ring_seconds".into(),
            json!(str_of(&fw["no_answer_ring_seconds"])),
        );
        Value::Object(m)
    });
    let rows: Vec<Value> = FORWARDS
        .iter()
        .map(|(k, label)| json!({"name": k, "label": label, "value": values[*k]}))
        .collect();
    let o = obj(&mut ctx);
    o.insert("rows".into(), json!(rows));
    o.insert(
        "ring_seconds".into(),
        values["no_answer_ring_seconds"].clone(),
    );
    o.insert("errors".into(), errs.unwrap_or(json!({})));
    o.insert("saved".into(), json!(saved));
    Ok(c.render_status(Some(s), "user_forwarding.html", status, &mut ctx))
}

async fn forwarding_save(
    State(c): State<Console>,
    Path((g, e)): Path<(String, String)>,
    Post(s, f): Post,
) -> Html {
    let mut fw = Map::new();
    for (k, _) in FORWARDS {
        if let Some(v) = f.opt(k) {
            fw.insert(k.to_string(), json!(v));
        }
    }
    if let Some(v) = f.opt("no_answer_ring_seconds") {
        fw.insert(
            "no_answer_ring_seconds".into(),
            v.parse::<u64>().map(|n| json!(n)).unwrap_or(json!(v)),
        );
    }
    let body = if fw.is_empty() {
        json!({"features": {"forwarding": null}})
    } else {
        // Replace the whole object: clear what the form left empty.
        let mut full = Map::new();
        for k in [
            "always",
            "busy",
            "no_answer",
            "not_reachable",
            "no_answer_ring_seconds",
        ] {
            full.insert(k.into(), fw.get(k).cloned().unwrap_or(Value::Null));
        }
        json!({"features": {"forwarding": full}})
    };
    let r = c
        .call(&s, Method::PATCH, &api_user(&g, &e), Some(body))
        .await;
    if r.ok() {
        return forwarding_page(&c, &s, &g, &e, None, None, Some("Saved."), StatusCode::OK).await;
    }
    let p = r.problem();
    let at = p
        .field
        .as_deref()
        .and_then(|x| x.rsplit('.').next())
        .unwrap_or("")
        .to_string();
    let errs = json!({ at: p });
    forwarding_page(&c, &s, &g, &e, Some(f.values()), Some(errs), None, r.status).await
}

async fn user_devices(
    State(c): State<Console>,
    Auth(s): Auth,
    Path((g, e)): Path<(String, String)>,
) -> Html {
    let mut ctx = user_ctx(&c, &s, &g, &e, "devices").await?;
    let scas = c
        .get(
            &s,
            &format!("{}/shared-call-appearances?limit=1000", api_user(&g, &e)),
        )
        .await?;
    let sca_macs: Vec<String> = items(&scas).iter().map(|x| str_of(&x["mac"])).collect();
    let mut rows = Vec::new();
    for d in all_devices(&c, &s, &g).await? {
        let mac = str_of(&d["mac"]);
        let role = if d["owner"].as_str() == Some(e.as_str()) {
            "Owner"
        } else if d["hot_desk"].as_str() == Some(e.as_str()) {
            "Hot-desk login"
        } else if sca_macs.contains(&mac) {
            "Shared call appearance"
        } else {
            continue;
        };
        let mut row = device_row(&d);
        obj(&mut row).insert("role".into(), json!(role));
        rows.push(row);
    }
    obj(&mut ctx).insert("devices".into(), json!(rows));
    Ok(c.render(Some(&s), "user_devices.html", ctx))
}

// ------------------------------------------------------------------ shared lines

const LINE_FIELDS: &[&str] = &[
    "number",
    "direct_dial",
    "description",
    "forward_to_voicemail",
    "autodial_digits",
    "members",
];

async fn shared_lines(State(c): State<Console>, Auth(s): Auth, Path(g): Path<String>) -> Html {
    shared_lines_page(&c, &s, &g, None, Value::Null, StatusCode::OK).await
}

async fn shared_lines_page(
    c: &Console,
    s: &Session,
    g: &str,
    errs: Option<Value>,
    values: Value,
    status: StatusCode,
) -> Html {
    let group = c.get(s, &api_group(g)).await?;
    let lines = items(
        &c.get(s, &format!("{}/shared-lines?limit=1000", api_group(g)))
            .await?,
    );
    let licenses = group["shared_line_licenses"].as_u64().unwrap_or(0);
    let used = lines.len() as u64;
    let mut ctx = json!({
        "title": format!("Shared lines of {g}"),
        "nav": "lines",
        "g": g,
        "lines": lines,
        "licenses": licenses,
        "used": used,
        "free": licenses.saturating_sub(used),
        "errors": errs.unwrap_or(json!({})),
        "values": if values.is_null() { json!({}) } else { values },
    });
    Ok(c.render_status(Some(s), "shared_lines.html", status, &mut ctx))
}

fn line_body(f: &Form) -> Value {
    json!({
        "direct_dial": opt_str(f.opt("direct_dial")),
        "description": f.get("description").trim(),
        "forward_to_voicemail": f.checked("forward_to_voicemail"),
        "autodial_digits": opt_str(f.opt("autodial_digits")),
    })
}

async fn shared_line_create(
    State(c): State<Console>,
    Path(g): Path<String>,
    Post(s, f): Post,
) -> Html {
    let mut body = line_body(&f);
    obj(&mut body).insert("number".into(), json!(f.get("number").trim()));
    let r = c
        .call(
            &s,
            Method::POST,
            &format!("{}/shared-lines", api_group(&g)),
            Some(body),
        )
        .await;
    if r.ok() {
        let n = str_of(&r.body["number"]);
        return Ok(see_other(&format!(
            "{}/shared-lines/{}",
            ui_group(&g),
            enc(&n)
        )));
    }
    let p = r.problem();
    let errs = errors(
        &p,
        &[
            ("no_license", ""),
            ("conflict", "number"),
            ("number_in_use", "number"),
        ],
        LINE_FIELDS,
    );
    shared_lines_page(&c, &s, &g, Some(errs), f.values(), r.status).await
}

async fn shared_line(
    State(c): State<Console>,
    Auth(s): Auth,
    Path((g, n)): Path<(String, String)>,
) -> Html {
    shared_line_page(&c, &s, &g, &n, None, None, None, StatusCode::OK).await
}

#[allow(clippy::too_many_arguments)]
async fn shared_line_page(
    c: &Console,
    s: &Session,
    g: &str,
    n: &str,
    members: Option<Vec<Value>>,
    errs: Option<Value>,
    saved: Option<&str>,
    status: StatusCode,
) -> Html {
    let line = c
        .get(s, &format!("{}/shared-lines/{}", api_group(g), enc(n)))
        .await?;
    let users = all_users(c, s, g).await?;
    let members =
        members.unwrap_or_else(|| line["members"].as_array().cloned().unwrap_or_default());
    let name_of = |ext: &str| {
        users
            .iter()
            .find(|u| u["extension"].as_str() == Some(ext))
            .map(|u| (str_of(&u["display_name"]), str_of(&u["kind"])))
            .unwrap_or_default()
    };
    let member_rows: Vec<Value> = members
        .iter()
        .map(|m| {
            let ext = str_of(&m["extension"]);
            let (name, kind) = name_of(&ext);
            json!({"extension": ext, "name": name, "kind": kind,
                   "ring": str_of(&m["ring"]), "button": str_of(&m["button"])})
        })
        .collect();
    let is_member = |ext: &str| members.iter().any(|m| m["extension"].as_str() == Some(ext));
    let available: Vec<Value> = users
        .iter()
        .filter(|u| !is_member(u["extension"].as_str().unwrap_or("")))
        .map(|u| {
            json!({"extension": u["extension"], "name": u["display_name"],
                   "kind": u["kind"], "hot_desk": u["kind"].as_str() == Some("hot_desk")})
        })
        .collect();
    let mut ctx = json!({
        "title": format!("Shared line {n}"),
        "nav": "lines",
        "g": g,
        "n": n,
        "line": line,
        "members": member_rows,
        "available": available,
        "errors": errs.unwrap_or(json!({})),
        "saved": saved,
        "rings": ["ring", "no_ring", "delayed"],
    });
    Ok(c.render_status(Some(s), "shared_line.html", status, &mut ctx))
}

async fn shared_line_save(
    State(c): State<Console>,
    Path((g, n)): Path<(String, String)>,
    Post(s, f): Post,
) -> Html {
    // Members as the form lists them, then the button pressed: add one, remove one.
    let mut members: Vec<Value> = f
        .all("member")
        .into_iter()
        .map(|ext| member(&f, ext, "ring_", "button_"))
        .collect();
    if let Some(ext) = f.opt("add") {
        members.push(member(&f, &ext, "avail_ring_", "avail_button_"));
    }
    if let Some(ext) = f.opt("remove") {
        members.retain(|m| m["extension"].as_str() != Some(ext.as_str()));
    }
    let line_path = format!("{}/shared-lines/{}", api_group(&g), enc(&n));
    let r = c
        .call(&s, Method::PATCH, &line_path, Some(line_body(&f)))
        .await;
    let r = if r.ok() {
        c.call(
            &s,
            Method::PUT,
            &format!("{line_path}/members"),
            Some(Value::Array(members.clone())),
        )
        .await
    } else {
        r
    };
    if r.ok() {
        let what = if f.opt("add").is_some() {
            "Member added."
        } else if f.opt("remove").is_some() {
            "Member removed."
        } else {
            "Saved."
        };
        return shared_line_page(&c, &s, &g, &n, None, None, Some(what), StatusCode::OK).await;
    }
    let p = r.problem();
    let errs = errors(&p, &[], LINE_FIELDS);
    shared_line_page(&c, &s, &g, &n, Some(members), Some(errs), None, r.status).await
}

fn member(f: &Form, ext: &str, ring: &str, button: &str) -> Value {
    let mut m = json!({"extension": ext, "ring": f.opt(&format!("{ring}{ext}")).unwrap_or_else(|| "ring".into())});
    if let Some(b) = f.opt(&format!("{button}{ext}")) {
        obj(&mut m).insert(
            "button".into(),
            b.parse::<u64>().map(|n| json!(n)).unwrap_or(json!(b)),
        );
    }
    m
}

async fn shared_line_delete_confirm(
    State(c): State<Console>,
    Auth(s): Auth,
    Path((g, n)): Path<(String, String)>,
) -> Html {
    c.get(&s, &format!("{}/shared-lines/{}", api_group(&g), enc(&n)))
        .await?;
    Ok(confirm(
        &c,
        &s,
        "Delete shared line",
        format!("Delete shared line {n}? Its members lose the appearance."),
        format!("{}/shared-lines/{}/delete", ui_group(&g), enc(&n)),
        format!("{}/shared-lines/{}", ui_group(&g), enc(&n)),
    ))
}

async fn shared_line_delete(
    State(c): State<Console>,
    Path((g, n)): Path<(String, String)>,
    Post(s, _): Post,
) -> Html {
    let r = c
        .call(
            &s,
            Method::DELETE,
            &format!("{}/shared-lines/{}", api_group(&g), enc(&n)),
            None,
        )
        .await;
    if !r.ok() {
        return Err(c.error_page(&s, &r.problem()));
    }
    Ok(see_other(&format!("{}/shared-lines", ui_group(&g))))
}

// ------------------------------------------------------------------ devices

const DEVICE_FIELDS: &[&str] = &[
    "mac",
    "name",
    "model",
    "owner",
    "notify_target",
    "expansion_modules",
    "key_profile",
    "group",
];

async fn models(c: &Console, s: &Session) -> Result<Vec<Value>, Response> {
    let m = c.get(s, "/api/v1/models").await?;
    Ok(m.as_array().cloned().unwrap_or_default())
}

fn model_rows(models: &[Value]) -> Vec<Value> {
    models
        .iter()
        .map(|m| json!({"id": m["id"], "name": str_of(&m["name"])}))
        .collect()
}

async fn devices(
    State(c): State<Console>,
    Auth(s): Auth,
    Path(g): Path<String>,
    Query(q): Q,
) -> Html {
    devices_page(&c, &s, &g, &q, None, Value::Null, StatusCode::OK).await
}

async fn devices_page(
    c: &Console,
    s: &Session,
    g: &str,
    q: &HashMap<String, String>,
    errs: Option<Value>,
    values: Value,
    status: StatusCode,
) -> Html {
    let state = q.get("state").cloned().unwrap_or_default();
    let all = all_devices(c, s, g).await?;
    let rows: Vec<Value> = all
        .iter()
        .map(device_row)
        .filter(|d| state.is_empty() || d["state"].as_str() == Some(state.as_str()))
        .collect();
    let users = all_users(c, s, g).await?;
    let values = if values.is_null() {
        json!({"mac": q.get("mac").cloned().unwrap_or_default(), "model": guess_model(&models(c, s).await?, q.get("ua").map(String::as_str).unwrap_or(""))})
    } else {
        values
    };
    let mut ctx = json!({
        "title": format!("Devices of {g}"),
        "nav": "devices",
        "g": g,
        "devices": rows,
        "state": state,
        "state_label": state_label(&state),
        "models": model_rows(&models(c, s).await?),
        "users": users,
        "errors": errs.unwrap_or(json!({})),
        "values": if values.is_null() { json!({}) } else { values },
        "deleted": q.get("deleted"),
    });
    Ok(c.render_status(Some(s), "devices.html", status, &mut ctx))
}

/// The model whose User-Agent patterns match (a suggestion for "add this device").
fn guess_model(models: &[Value], ua: &str) -> String {
    if ua.is_empty() {
        return String::new();
    }
    let ua = ua.to_lowercase();
    models
        .iter()
        .find(|m| {
            m["user_agents"].as_array().is_some_and(|p| {
                p.iter()
                    .filter_map(|x| x.as_str())
                    .any(|x| !x.is_empty() && ua.contains(&x.to_lowercase()))
            })
        })
        .map(|m| str_of(&m["id"]))
        .unwrap_or_default()
}

/// "Add this device" from the dashboard: pick the group, then the group's device form.
async fn add_device(State(c): State<Console>, Auth(s): Auth, Query(q): Q) -> Html {
    let groups = groups_of(&c, &s).await?;
    let mac = q.get("mac").cloned().unwrap_or_default();
    let ua = q.get("ua").cloned().unwrap_or_default();
    if let Some(g) = q.get("group").filter(|g| !g.is_empty()) {
        return Ok(see_other(&format!(
            "{}/devices?mac={}&ua={}#new-device",
            ui_group(g),
            enc(&mac),
            enc(&ua)
        )));
    }
    if groups.len() == 1 {
        let g = str_of(&groups[0]["id"]);
        return Ok(see_other(&format!(
            "{}/devices?mac={}&ua={}#new-device",
            ui_group(&g),
            enc(&mac),
            enc(&ua)
        )));
    }
    Ok(c.render(
        Some(&s),
        "message.html",
        json!({"title": "Add this device", "pick_group": true, "groups": groups, "mac": mac, "ua": ua}),
    ))
}

fn parse_modules(text: &str) -> Value {
    // "model:count, model:count"
    let mods: Vec<Value> = text
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| {
            let (m, n) = x.rsplit_once(':').unwrap_or((x, "1"));
            let count = n
                .trim()
                .parse::<u64>()
                .map(|n| json!(n))
                .unwrap_or(json!(n.trim()));
            json!({"model": m.trim(), "count": count})
        })
        .collect();
    Value::Array(mods)
}

fn modules_text(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|m| format!("{}:{}", str_of(&m["model"]), str_of(&m["count"])))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

async fn device_create(State(c): State<Console>, Path(g): Path<String>, Post(s, f): Post) -> Html {
    let mut body = json!({
        // Empty for a softphone: the server assigns its id.
        "mac": opt_str(f.opt("mac")),
        "name": opt_str(f.opt("name")),
        "model": f.get("model"),
        "owner": opt_str(f.opt("owner")),
    });
    if let Some(m) = f.opt("expansion_modules") {
        obj(&mut body).insert("expansion_modules".into(), parse_modules(&m));
    }
    let r = c
        .call(
            &s,
            Method::POST,
            &format!("{}/devices", api_group(&g)),
            Some(body),
        )
        .await;
    if r.ok() {
        let mac = str_of(&r.body["mac"]);
        let once = json!({"label": "Provisioning credentials (shown once)",
            "value": format!("username {}  password {}", str_of(&r.body["credentials"]["username"]), str_of(&r.body["credentials"]["password"]))});
        return device_page(&c, &s, &mac, Some(once), None, None, StatusCode::CREATED).await;
    }
    let p = r.problem();
    let errs = errors(
        &p,
        &[
            ("mac_in_use", "mac"),
            ("unknown_model", "model"),
            ("name_in_use", "name"),
        ],
        DEVICE_FIELDS,
    );
    devices_page(
        &c,
        &s,
        &g,
        &HashMap::new(),
        Some(errs),
        f.values(),
        r.status,
    )
    .await
}

async fn device(
    State(c): State<Console>,
    Auth(s): Auth,
    Path(mac): Path<String>,
    Query(q): Q,
) -> Html {
    let before = q.get("log_before").and_then(|b| b.parse().ok());
    device_page_at(&c, &s, &mac, None, None, None, StatusCode::OK, before).await
}

/// The phone's key grid: line keys in rows, then each expansion module's keys.
fn key_grid(d: &Value, model: &Value) -> Value {
    let line_keys = model["line_keys"].as_u64().unwrap_or(0);
    let mut labels: HashMap<u64, (String, String)> = HashMap::new();
    for a in d["layout"]["appearances"].as_array().into_iter().flatten() {
        let kind = str_of(&a["kind"]);
        let text = match kind.as_str() {
            "primary" => format!("{} (own line)", str_of(&a["extension"])),
            "sca" => format!("SCA {}", str_of(&a["sca"])),
            _ => format!("Shared line {}", str_of(&a["shared_line"])),
        };
        let text = match a["label"].as_str() {
            Some(l) if !l.is_empty() => format!("{l} · {text}"),
            _ => text,
        };
        for k in a["keys"].as_array().into_iter().flatten() {
            if let Some(k) = k.as_u64() {
                labels.insert(k, (kind.clone(), text.clone()));
            }
        }
    }
    for k in d["layout"]["keys"]
        .as_array()
        .or(d["keys"].as_array())
        .into_iter()
        .flatten()
    {
        if let Some(n) = k["key"].as_u64() {
            let kind = str_of(&k["type"]);
            let text = match k["label"].as_str() {
                Some(l) if !l.is_empty() => format!("{l} ({kind} {})", str_of(&k["value"])),
                _ => format!("{kind} {}", str_of(&k["value"])),
            };
            labels.insert(n, (kind, text));
        }
    }
    let cell = |k: u64| {
        let (kind, text) = labels
            .get(&k)
            .cloned()
            .unwrap_or_else(|| ("free".into(), "free".into()));
        json!({"key": k, "kind": kind, "text": text})
    };
    let base: Vec<Value> = (1..=line_keys).map(cell).collect();
    // Expansion modules: their keys follow the phone's own line keys, module after module.
    let mut modules = Vec::new();
    let mut next = line_keys + 1;
    for m in d["expansion_modules"].as_array().into_iter().flatten() {
        let id = str_of(&m["model"]);
        let per = model["expansion_modules"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["id"].as_str() == Some(id.as_str())))
            .and_then(|x| x["keys"].as_u64())
            .unwrap_or(0);
        for i in 0..m["count"].as_u64().unwrap_or(0) {
            let keys: Vec<Value> = (next..next + per).map(cell).collect();
            next += per;
            modules.push(json!({"name": format!("{id} #{}", i + 1), "keys": keys}));
        }
    }
    json!({"keys": base, "modules": modules})
}

#[allow(clippy::too_many_arguments)]
async fn device_page(
    c: &Console,
    s: &Session,
    mac: &str,
    once: Option<Value>,
    errs: Option<Value>,
    saved: Option<&str>,
    status: StatusCode,
) -> Html {
    device_page_at(c, s, mac, once, errs, saved, status, None).await
}

#[allow(clippy::too_many_arguments)]
async fn device_page_at(
    c: &Console,
    s: &Session,
    mac: &str,
    once: Option<Value>,
    errs: Option<Value>,
    saved: Option<&str>,
    status: StatusCode,
    log_before: Option<u64>,
) -> Html {
    let d = c.get(s, &format!("/api/v1/devices/{}", enc(mac))).await?;
    let g = str_of(&d["group"]);
    let models = models(c, s).await?;
    let model = models
        .iter()
        .find(|m| m["id"] == d["model"])
        .cloned()
        .unwrap_or(Value::Null);
    let users = all_users(c, s, &g).await?;
    let hot_desk_users: Vec<Value> = users
        .iter()
        .filter(|u| u["kind"].as_str() == Some("hot_desk"))
        .cloned()
        .collect();
    // The provisioning log, where the API has it.
    let log = c
        .call(
            s,
            Method::GET,
            &match log_before {
                Some(b) => format!("/api/v1/devices/{}/log?limit=50&before={b}", enc(mac)),
                None => format!("/api/v1/devices/{}/log?limit=50", enc(mac)),
            },
            None,
        )
        .await;
    let log_older = log.body["next_before"].as_u64();
    let log = if log.ok() {
        let entries = log.body["items"]
            .as_array()
            .or(log.body.as_array())
            .cloned()
            .unwrap_or_default();
        json!(entries
            .into_iter()
            .take(50)
            .map(|mut e| {
                let reason = str_of(&e["reason"]);
                obj(&mut e).insert("reason_text".into(), json!(refusal_text(&reason)));
                let at = short_time(&e["at"]);
                obj(&mut e).insert("at_short".into(), json!(at));
                if !e["last_at"].is_null() {
                    let last = short_time(&e["last_at"]);
                    obj(&mut e).insert("last_at_short".into(), json!(last));
                }
                e
            })
            .collect::<Vec<_>>())
    } else {
        Value::Null
    };
    let profiles = c
        .call(
            s,
            Method::GET,
            &format!("{}/key-profiles", api_group(&g)),
            None,
        )
        .await;
    let profiles = if profiles.ok() {
        json!(items(&profiles.body))
    } else {
        Value::Null
    };
    let mut ctx = json!({
        "title": format!("Device {}", str_of(&d["name"])),
        "nav": "devices",
        "g": g,
        "mac": mac,
        "d": d,
        "row": device_row(&d),
        "grid": key_grid(&d, &model),
        "model_name": str_of(&model["name"]),
        "models": model_rows(&models),
        "users": users,
        "hot_desk_users": hot_desk_users,
        "modules_text": modules_text(&d["expansion_modules"]),
        "keys_text": keys_text(&d["keys"]),
        "values": {},
        "module_models": model["expansion_modules"].as_array().map(|a| a.iter().map(|m| str_of(&m["id"])).collect::<Vec<_>>().join(", ")).unwrap_or_default(),
        "log": log,
        "log_older": log_older,
        "log_paged": log_before.is_some(),
        "key_profiles": profiles,
        "key_profile": str_of(&d["key_profile"]),
        "once": once,
        "errors": errs.unwrap_or(json!({})),
        "saved": saved,
    });
    Ok(c.render_status(Some(s), "device.html", status, &mut ctx))
}

async fn device_save(State(c): State<Console>, Path(mac): Path<String>, Post(s, f): Post) -> Html {
    let mut body = json!({
        "name": f.get("name").trim(),
        "model": f.get("model"),
        "owner": opt_str(f.opt("owner")),
        "notify_target": opt_str(f.opt("notify_target")),
        "expansion_modules": parse_modules(f.get("expansion_modules")),
        "keys": match parse_keys(f.get("keys")) {
            Ok(k) => k,
            Err(p) => return device_page(&c, &s, &mac, None, Some(json!({"keys": p})), None, StatusCode::UNPROCESSABLE_ENTITY).await,
        },
    });
    if f.checked("has_key_profile") {
        obj(&mut body).insert("key_profile".into(), opt_str(f.opt("key_profile")));
    }
    let r = c
        .call(
            &s,
            Method::PATCH,
            &format!("/api/v1/devices/{}", enc(&mac)),
            Some(body),
        )
        .await;
    if r.ok() {
        return device_page(&c, &s, &mac, None, None, Some("Saved."), StatusCode::OK).await;
    }
    let p = r.problem();
    let errs = errors(
        &p,
        &[("unknown_model", "model"), ("name_in_use", "name")],
        DEVICE_FIELDS,
    );
    device_page(&c, &s, &mac, None, Some(errs), None, r.status).await
}

/// Resync, Reboot, hot-desk login/logout, credentials rotation.
async fn device_action(
    State(c): State<Console>,
    Path(mac): Path<String>,
    Post(s, f): Post,
) -> Html {
    let api = format!("/api/v1/devices/{}", enc(&mac));
    let (r, done, once) = match f.get("op") {
        "resync" | "reboot" => {
            let reboot = f.get("op") == "reboot";
            let r = c
                .call(
                    &s,
                    Method::POST,
                    &format!("{api}/sync"),
                    Some(json!({"reboot": reboot})),
                )
                .await;
            let what = if reboot {
                "Reboot sent."
            } else {
                "Re-sync sent."
            };
            (r, what, None)
        }
        "hot_desk_login" => {
            let r = c
                .call(
                    &s,
                    Method::PUT,
                    &format!("{api}/hot-desk"),
                    Some(json!({"extension": f.get("extension")})),
                )
                .await;
            (r, "Hot-desk user logged in.", None)
        }
        "hot_desk_logout" => {
            let r = c
                .call(&s, Method::DELETE, &format!("{api}/hot-desk"), None)
                .await;
            (r, "Hot-desk user logged out.", None)
        }
        "credentials" => {
            let r = c
                .call(&s, Method::POST, &format!("{api}/credentials"), None)
                .await;
            let once = r.ok().then(|| {
                json!({"label": "New provisioning credentials (shown once)",
                    "value": format!("username {}  password {}", str_of(&r.body["username"]), str_of(&r.body["password"]))})
            });
            (r, "Credentials rotated.", once)
        }
        "provisioning_link" => {
            let r = c
                .call(&s, Method::POST, &format!("{api}/provisioning-link"), None)
                .await;
            let once = r.ok().then(|| {
                let url = str_of(&r.body["url"]);
                json!({"label": "Provisioning link (shown once: it holds the new password; scan the QR code with Linphone, or paste the link as its remote provisioning URL)",
                    "value": url, "qr": qr_svg(&url)})
            });
            (
                r,
                "Provisioning link created; the old one no longer works.",
                once,
            )
        }
        _ => return Err(StatusCode::BAD_REQUEST.into_response()),
    };
    if r.ok() {
        return device_page(&c, &s, &mac, once, None, Some(done), StatusCode::OK).await;
    }
    let p = r.problem();
    let at = if f.get("op") == "hot_desk_login" {
        "extension"
    } else {
        ""
    };
    device_page(&c, &s, &mac, None, Some(json!({ at: p })), None, r.status).await
}

/// `text` as a QR code, an inline SVG (no image request: the console's CSP allows `'self'` only).
/// `qrcode` renders it in pure Rust with no further dependency.
fn qr_svg(text: &str) -> Option<String> {
    use qrcode::render::svg;
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    let svg = code
        .render::<svg::Color>()
        .min_dimensions(220, 220)
        .dark_color(svg::Color("#000000"))
        .light_color(svg::Color("#ffffff"))
        .build();
    // Inline in HTML: without the XML declaration.
    Some(match svg.find("<svg") {
        Some(i) => svg[i..].to_string(),
        None => svg,
    })
}

/// `{"state", "label"}` of a device, for the page's live state (console.js polls it).
async fn device_state(
    State(c): State<Console>,
    Auth(s): Auth,
    Path(mac): Path<String>,
) -> Response {
    let r = c
        .call(
            &s,
            Method::GET,
            &format!("/api/v1/devices/{}", enc(&mac)),
            None,
        )
        .await;
    if !r.ok() {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"state": "unknown"})),
        )
            .into_response();
    }
    let st = r.body["state"].as_str().unwrap_or("").to_string();
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({"state": st, "label": state_label(&st), "last_seen": str_of(&r.body["last_seen"]["at"])})),
    )
        .into_response()
}

async fn device_file(
    State(c): State<Console>,
    Auth(s): Auth,
    Path((mac, file)): Path<(String, String)>,
) -> Html {
    let d = c.get(&s, &format!("/api/v1/devices/{}", enc(&mac))).await?;
    let r = c
        .call(
            &s,
            Method::GET,
            &format!("/api/v1/devices/{}/files/{}", enc(&mac), enc(&file)),
            None,
        )
        .await;
    if !r.ok() {
        return Err(c.error_page(&s, &r.problem()));
    }
    Ok(c.render(
        Some(&s),
        "file.html",
        json!({"title": format!("{file} for {}", str_of(&d["name"])), "nav": "devices",
               "d": d, "file": file, "mac": mac, "body": str_of(&r.body), "g": d["group"]}),
    ))
}

async fn device_delete_confirm(
    State(c): State<Console>,
    Auth(s): Auth,
    Path(mac): Path<String>,
) -> Html {
    let d = c.get(&s, &format!("/api/v1/devices/{}", enc(&mac))).await?;
    Ok(confirm(
        &c,
        &s,
        "Delete device",
        format!(
            "Delete device {} ({mac})? The shared call appearances on it go too.",
            str_of(&d["name"])
        ),
        format!("/ui/devices/{}/delete", enc(&mac)),
        format!("/ui/devices/{}", enc(&mac)),
    ))
}

async fn device_delete(
    State(c): State<Console>,
    Path(mac): Path<String>,
    Post(s, _): Post,
) -> Html {
    let d = c.get(&s, &format!("/api/v1/devices/{}", enc(&mac))).await?;
    let r = c
        .call(
            &s,
            Method::DELETE,
            &format!("/api/v1/devices/{}", enc(&mac)),
            None,
        )
        .await;
    if !r.ok() {
        return Err(c.error_page(&s, &r.problem()));
    }
    Ok(see_other(&format!(
        "{}/devices?deleted={}",
        ui_group(&str_of(&d["group"])),
        enc(&mac)
    )))
}

// ------------------------------------------------------------------ templates

async fn templates(State(c): State<Console>, Auth(s): Auth) -> Html {
    let models = models(&c, &s).await?;
    let rows: Vec<Value> = models
        .iter()
        .map(|m| {
            let files: Vec<Value> = m["files"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| f["template"].clone())
                .collect::<Vec<_>>();
            let mut uniq: Vec<Value> = Vec::new();
            for f in files {
                if !uniq.contains(&f) {
                    uniq.push(f);
                }
            }
            json!({"id": m["id"], "name": str_of(&m["name"]),
                   "family": m["family"], "templates": uniq})
        })
        .collect();
    Ok(c.render(
        Some(&s),
        "templates.html",
        json!({"title": "Templates", "nav": "templates", "models": rows}),
    ))
}

async fn template(
    State(c): State<Console>,
    Auth(s): Auth,
    Path((model, file)): Path<(String, String)>,
    Query(q): Q,
) -> Html {
    let mut extra = json!({});
    if let Some(v) = q.get("version").and_then(|v| v.parse::<u32>().ok()) {
        let r = c
            .call(
                &s,
                Method::GET,
                &format!("{}/versions/{v}", api_template(&model, &file)),
                None,
            )
            .await;
        if r.ok() {
            obj(&mut extra).insert("shown_version".into(), json!(v));
            obj(&mut extra).insert("shown_body".into(), json!(str_of(&r.body)));
        }
    }
    if let Some(mac) = q.get("device").filter(|m| !m.is_empty()) {
        let d = c.get(&s, &format!("/api/v1/devices/{}", enc(mac))).await?;
        // The device's files rendered from this template.
        let m = models(&c, &s).await?;
        let spec = m
            .iter()
            .find(|x| x["id"].as_str() == Some(model.as_str()))
            .and_then(|x| x["files"].as_array().cloned())
            .unwrap_or_default();
        let mut previews = Vec::new();
        for (i, fspec) in spec.iter().enumerate() {
            if fspec["template"].as_str() != Some(file.as_str()) {
                continue;
            }
            let name = d["files"][i].as_str().unwrap_or("").to_string();
            let r = c
                .call(
                    &s,
                    Method::GET,
                    &format!("/api/v1/devices/{}/files/{}", enc(mac), enc(&name)),
                    None,
                )
                .await;
            let body = if r.ok() {
                str_of(&r.body)
            } else {
                format!("{}: {}", r.problem().code, r.problem().detail)
            };
            previews.push(json!({"name": name, "body": body}));
        }
        obj(&mut extra).insert("preview_device".into(), json!(mac));
        obj(&mut extra).insert("previews".into(), json!(previews));
    }
    template_page(&c, &s, &model, &file, extra, StatusCode::OK).await
}

fn api_template(model: &str, file: &str) -> String {
    format!("/api/v1/models/{}/templates/{}", enc(model), enc(file))
}

async fn template_page(
    c: &Console,
    s: &Session,
    model: &str,
    file: &str,
    extra: Value,
    status: StatusCode,
) -> Html {
    let api = api_template(model, file);
    let live = c.call(s, Method::GET, &api, None).await;
    if !live.ok() {
        return Err(c.error_page(s, &live.problem()));
    }
    let versions = c.get(s, &format!("{api}/versions")).await?;
    let versions = versions.as_array().cloned().unwrap_or_default();
    let live_version = versions
        .iter()
        .find(|v| v["active"].as_bool() == Some(true))
        .and_then(|v| v["version"].as_u64())
        .unwrap_or(0);
    // Devices of this model the admin sees, to preview against.
    let mut devices = Vec::new();
    for g in groups_of(c, s).await? {
        for d in all_devices(c, s, &str_of(&g["id"])).await? {
            if d["model"].as_str() == Some(model) {
                devices.push(json!({"mac": d["mac"], "name": d["name"], "group": d["group"]}));
            }
        }
    }
    let live_body = str_of(&live.body);
    let mut ctx = json!({
        "title": format!("Template {file} of {model}"),
        "nav": "templates",
        "model": model,
        "file": file,
        "live": live_body,
        "live_lines": live_body.lines().enumerate().map(|(i, l)| json!({"n": i + 1, "text": l})).collect::<Vec<_>>(),
        "live_version": live_version,
        "versions": versions,
        "devices": devices,
        "errors": {},
        "draft": null,
    });
    if let (Some(o), Some(x)) = (ctx.as_object_mut(), extra.as_object()) {
        for (k, v) in x {
            o.insert(k.clone(), v.clone());
        }
    }
    Ok(c.render_status(Some(s), "template.html", status, &mut ctx))
}

async fn template_post(
    State(c): State<Console>,
    Path((model, file)): Path<(String, String)>,
    Post(s, f): Post,
) -> Html {
    let api = api_template(&model, &file);
    let body = f.get("body").replace("\r\n", "\n");
    match f.get("op") {
        "diff" => {
            let live = c.call(&s, Method::GET, &api, None).await;
            let d = diff(&str_of(&live.body), &body);
            template_page(
                &c,
                &s,
                &model,
                &file,
                json!({"diff": d, "draft": body}),
                StatusCode::OK,
            )
            .await
        }
        "upload" => {
            let r = c
                .call_raw(
                    &s,
                    Method::PUT,
                    &api,
                    Some(("text/plain; charset=utf-8", body.clone())),
                )
                .await;
            if r.ok() {
                let v = str_of(&r.body["version"]);
                return template_page(
                    &c,
                    &s,
                    &model,
                    &file,
                    json!({"saved": format!("Version {v} is live.")}),
                    StatusCode::OK,
                )
                .await;
            }
            let p = r.problem();
            let lines: Vec<Value> = body
                .lines()
                .enumerate()
                .map(|(i, l)| json!({"n": i + 1, "text": l, "bad": p.line == Some(i as u64 + 1)}))
                .collect();
            template_page(
                &c,
                &s,
                &model,
                &file,
                json!({"errors": {"body": p}, "draft": body, "draft_lines": lines}),
                r.status,
            )
            .await
        }
        "rollback" => {
            let v = f.get("version").parse::<u64>().unwrap_or(0);
            let r = c
                .call(
                    &s,
                    Method::POST,
                    &format!("{api}/rollback"),
                    Some(json!({"version": v})),
                )
                .await;
            if !r.ok() {
                return Err(c.error_page(&s, &r.problem()));
            }
            template_page(
                &c,
                &s,
                &model,
                &file,
                json!({"saved": format!("Rolled back: version {v} is live.")}),
                StatusCode::OK,
            )
            .await
        }
        _ => Err(StatusCode::BAD_REQUEST.into_response()),
    }
}

// ------------------------------------------------------------------ change log

const CHANGES_PAGE: usize = 50;

async fn changes(State(c): State<Console>, Auth(s): Auth, Query(q): Q) -> Html {
    let fg = q.get("group").cloned().unwrap_or_default();
    let fd = q
        .get("device")
        .map(|d| d.trim().to_string())
        .unwrap_or_default();
    let fa = q.get("action").cloned().unwrap_or_default();
    let head = c.get(&s, "/api/v1/changes?limit=1").await?;
    let (cursor, last, first) = match head["last_seq"].as_u64() {
        Some(l) => ("seq", l, head["first_seq"].as_u64().unwrap_or(1)),
        None => ("group_seq", head["last_group_seq"].as_u64().unwrap_or(0), 1),
    };
    let before = q
        .get("before")
        .and_then(|b| b.parse::<u64>().ok())
        .unwrap_or(last + 1);
    let fd_norm: String = fd
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .collect::<String>()
        .to_uppercase();
    let matches = |ch: &Value| {
        (fg.is_empty() || ch["group"].as_str() == Some(fg.as_str()))
            && (fa.is_empty() || ch["action"].as_str() == Some(fa.as_str()))
            && (fd.is_empty()
                || ch["devices"].as_array().is_some_and(|d| {
                    d.iter().any(|m| {
                        m.as_str().is_some_and(|m| {
                            m.chars()
                                .filter(|c| c.is_ascii_hexdigit())
                                .collect::<String>()
                                .to_uppercase()
                                == fd_norm
                        })
                    })
                }))
    };
    // Walk back from `before` in chunks until a page is full or the log's start is reached.
    let mut found: Vec<Value> = Vec::new();
    let first = first.max(1);
    let mut hi = before; // exclusive
    let mut more = false;
    while hi > first && !more {
        let lo = hi.saturating_sub(500).max(first); // entries lo ..= hi-1
        let page = c
            .get(
                &s,
                &format!("/api/v1/changes?since={}&limit={}", lo - 1, hi - lo),
            )
            .await?;
        let mut chunk = items(&page);
        chunk.retain(|ch| ch[cursor].as_u64().is_some_and(|x| x < hi));
        chunk.reverse();
        for ch in chunk {
            if matches(&ch) {
                if found.len() == CHANGES_PAGE {
                    more = true;
                    break;
                }
                found.push(ch);
            }
        }
        hi = lo;
    }
    let older = if more {
        found.last().and_then(|ch| ch[cursor].as_u64())
    } else {
        None
    };
    let groups = groups_of(&c, &s).await?;
    let mut actions: Vec<String> = crate::domain::Action::ALL
        .iter()
        .map(|a| a.to_string())
        .collect();
    actions.sort();
    let qs = |b: u64| {
        format!(
            "/ui/changes?group={}&device={}&action={}&before={b}",
            enc(&fg),
            enc(&fd),
            enc(&fa)
        )
    };
    Ok(c.render(
        Some(&s),
        "changes.html",
        json!({
            "title": "Change log",
            "nav": "changes",
            "changes": found.iter().map(change_row).collect::<Vec<_>>(),
            "groups": groups,
            "actions": actions,
            "f_group": fg,
            "f_device": fd,
            "f_action": fa,
            "older": older.map(qs),
            "newer": (before <= last).then(|| "/ui/changes".to_string()),
        }),
    ))
}

// ------------------------------------------------------------------ keys and key profiles

/// What a refusal reason of the provisioning log means, for the admin.
fn refusal_text(code: &str) -> &'static str {
    match code {
        "unknown_mac" => "unknown MAC: no device has it",
        "wrong_credentials" => "wrong credentials",
        "stale_nonce" => "stale nonce (the phone retries with a fresh one)",
        "network_not_allowed" => "network not allowed (outside the group's allowed_cidrs)",
        "certificate_mac_mismatch" => "certificate for another MAC",
        "locked_out" => "locked out after too many failures",
        "no_credentials" => "no credentials yet (the first challenge)",
        "render_failed" => "the template failed for this device",
        "too_large" => "upload too large",
        "timeout" => "upload timed out",
        "unavailable" => "the server could not record the fetch",
        "" => "",
        _ => "refused",
    }
}

/// Programmable keys as text: one a line, `key type value [label]`.
fn keys_text(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|k| {
                    let mut line = format!(
                        "{} {} {}",
                        str_of(&k["key"]),
                        str_of(&k["type"]),
                        str_of(&k["value"])
                    );
                    if let Some(l) = k["label"].as_str() {
                        line.push(' ');
                        line.push_str(l);
                    }
                    line.trim_end().to_string()
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

fn parse_keys(text: &str) -> Result<Value, Problem> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.splitn(4, char::is_whitespace);
        let (key, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let Ok(key) = key.parse::<u64>() else {
            return Err(Problem {
                status: 422,
                code: "validation".into(),
                detail: format!("line {}: start with the key number, then the type (blf, speed_dial, park, voicemail, blf_all), the value and an optional label", i + 1),
                field: Some("keys".into()),
                line: None,
                column: None,
            });
        };
        let mut k = json!({"key": key, "type": kind, "value": parts.next().unwrap_or("")});
        if let Some(l) = parts.next().map(str::trim).filter(|l| !l.is_empty()) {
            obj(&mut k).insert("label".into(), json!(l));
        }
        out.push(k);
    }
    Ok(Value::Array(out))
}

fn key_move(f: &Form) -> Value {
    let n = |name: &str| {
        let v = f.get(name).trim();
        v.parse::<u64>().map(|n| json!(n)).unwrap_or(json!(v))
    };
    json!({"from": n("from"), "to": n("to"), "mode": f.opt("mode").unwrap_or_else(|| "swap".into())})
}

fn api_profile(g: &str, name: &str) -> String {
    format!("{}/key-profiles/{}", api_group(g), enc(name))
}

// ------------------------------------------------------------------ firmware

async fn firmware(State(c): State<Console>, Auth(s): Auth, Path(g): Path<String>) -> Html {
    let sum = c.get(&s, &format!("{}/firmware", api_group(&g))).await?;
    let mut ctx = json!({
        "title": format!("Firmware of {g}"),
        "nav": "group",
        "g": g,
        "models": sum["models"],
    });
    Ok(c.render_status(Some(&s), "firmware.html", StatusCode::OK, &mut ctx))
}

async fn firmware_resume(
    State(c): State<Console>,
    Path((g, model)): Path<(String, String)>,
    Post(s, _): Post,
) -> Html {
    let path = format!("{}/firmware/{}/resume", api_group(&g), enc(&model));
    let r = c.call(&s, Method::POST, &path, None).await;
    if !r.ok() {
        return Err(c.error_page(&s, &r.problem()));
    }
    Ok(see_other(&format!("{}/firmware", ui_group(&g))))
}

async fn key_profiles(State(c): State<Console>, Auth(s): Auth, Path(g): Path<String>) -> Html {
    key_profiles_page(&c, &s, &g, None, json!({}), StatusCode::OK).await
}

async fn key_profiles_page(
    c: &Console,
    s: &Session,
    g: &str,
    errs: Option<Value>,
    values: Value,
    status: StatusCode,
) -> Html {
    let list = c
        .get(s, &format!("{}/key-profiles?limit=1000", api_group(g)))
        .await?;
    let rows: Vec<Value> = items(&list)
        .into_iter()
        .map(|p| {
            json!({"name": p["name"], "keys": p["keys"].as_array().map(|k| k.len()).unwrap_or(0),
                   "devices": p["devices"].as_array().map(|d| d.len()).unwrap_or(0)})
        })
        .collect();
    let mut ctx = json!({
        "title": format!("Key profiles of {g}"),
        "nav": "group",
        "g": g,
        "profiles": rows,
        "errors": errs.unwrap_or(json!({})),
        "values": values,
    });
    Ok(c.render_status(Some(s), "key_profiles.html", status, &mut ctx))
}

async fn key_profile_create(
    State(c): State<Console>,
    Path(g): Path<String>,
    Post(s, f): Post,
) -> Html {
    let keys = match parse_keys(f.get("keys")) {
        Ok(k) => k,
        Err(p) => {
            return key_profiles_page(
                &c,
                &s,
                &g,
                Some(json!({"keys": p})),
                f.values(),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
    };
    let body = json!({"name": f.get("name").trim(), "keys": keys});
    let r = c
        .call(
            &s,
            Method::POST,
            &format!("{}/key-profiles", api_group(&g)),
            Some(body),
        )
        .await;
    if r.ok() {
        let n = str_of(&r.body["name"]);
        return Ok(see_other(&format!(
            "{}/key-profiles/{}",
            ui_group(&g),
            enc(&n)
        )));
    }
    let p = r.problem();
    let errs = errors(
        &p,
        &[("conflict", "name"), ("in_use", "name")],
        &["name", "keys"],
    );
    key_profiles_page(&c, &s, &g, Some(errs), f.values(), r.status).await
}

async fn key_profile(
    State(c): State<Console>,
    Auth(s): Auth,
    Path((g, n)): Path<(String, String)>,
) -> Html {
    key_profile_page(&c, &s, &g, &n, None, None, None, StatusCode::OK).await
}

#[allow(clippy::too_many_arguments)]
async fn key_profile_page(
    c: &Console,
    s: &Session,
    g: &str,
    n: &str,
    keys: Option<String>,
    errs: Option<Value>,
    saved: Option<&str>,
    status: StatusCode,
) -> Html {
    let p = c.get(s, &api_profile(g, n)).await?;
    let mut ctx = json!({
        "title": format!("Key profile {n}"),
        "nav": "group",
        "g": g,
        "n": n,
        "profile": p,
        "keys_text": keys.unwrap_or_else(|| keys_text(&p["keys"])),
        "values": {},
        "errors": errs.unwrap_or(json!({})),
        "saved": saved,
    });
    Ok(c.render_status(Some(s), "key_profile.html", status, &mut ctx))
}

async fn key_profile_save(
    State(c): State<Console>,
    Path((g, n)): Path<(String, String)>,
    Post(s, f): Post,
) -> Html {
    let api = api_profile(&g, &n);
    let (r, done) = match f.get("op") {
        "move" => (
            c.call(
                &s,
                Method::POST,
                &format!("{api}/keys/move"),
                Some(key_move(&f)),
            )
            .await,
            "Key moved.",
        ),
        "delete" => {
            let r = c.call(&s, Method::DELETE, &api, None).await;
            if r.ok() {
                return Ok(see_other(&format!("{}/key-profiles", ui_group(&g))));
            }
            (r, "")
        }
        _ => {
            let keys = match parse_keys(f.get("keys")) {
                Ok(k) => k,
                Err(p) => {
                    return key_profile_page(
                        &c,
                        &s,
                        &g,
                        &n,
                        Some(f.get("keys").to_string()),
                        Some(json!({"keys": p})),
                        None,
                        StatusCode::UNPROCESSABLE_ENTITY,
                    )
                    .await
                }
            };
            (
                c.call(&s, Method::PATCH, &api, Some(json!({"keys": keys})))
                    .await,
                "Saved.",
            )
        }
    };
    if r.ok() {
        return key_profile_page(&c, &s, &g, &n, None, None, Some(done), StatusCode::OK).await;
    }
    let p = r.problem();
    let at = match f.get("op") {
        "move" => "move",
        "delete" => "",
        _ => "keys",
    };
    let keys = (at == "keys").then(|| f.get("keys").to_string());
    key_profile_page(&c, &s, &g, &n, keys, Some(json!({ at: p })), None, r.status).await
}
