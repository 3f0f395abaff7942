//! The phone-facing server (SPEC §2): phones fetch (and upload) files here.
//!
//! Read path: file name → catalogue match ([`crate::render::resolve`]) → device → auth →
//! render (cached) → bytes with a strong ETag. Common files need no auth and hold no secrets.
//! Per-device files need digest or a client certificate naming the MAC, per the group's policy;
//! an unknown MAC, wrong credentials and a certificate for another MAC all get the same 401. The
//! filesystem is never read by request path: names only ever select catalogue entries.
//!
//! Every request for a device's file (or an upload) is added to that device's provisioning log
//! with its status and, when refused, the reason ([`Refusal`]): the admin sees why, the phone
//! gets the same answer whatever it is.

pub(crate) mod cert;
pub(crate) mod digest;
mod observe;
pub(crate) mod useragent;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::domain::{Device, Group, Mac, ProvAuth};
use crate::metrics::{AuthReason, LockoutScope};
use crate::render::{serve_file, Outcome, Rendered};
use crate::store::{Applied, IpText, ProvLogEntry, Refusal, Seen};
use crate::SharedApp;

/// Authentication state shared by phone requests.
pub(crate) struct PhoneAuth {
    pub(crate) digest: digest::Digest,
    pub(crate) lockout: digest::Lockout,
}

impl PhoneAuth {
    pub(crate) fn new(config: &crate::config::Phones) -> PhoneAuth {
        PhoneAuth {
            digest: digest::Digest::new(),
            lockout: digest::Lockout::new(
                config.auth_fail_limit,
                config.auth_fail_macs_per_ip,
                Duration::from_secs(config.auth_lockout_s),
                // Checked by `Config::validate` before the server starts.
                config.lockout_exempt_cidrs().unwrap_or_default(),
            ),
        }
    }
}

/// Answers one request of the phone listeners, from `peer`; `cert` is the connection's client
/// certificate (leaf, DER), if the phone sent one that chains to a configured vendor CA.
pub(crate) async fn serve(
    app: SharedApp,
    req: Request<Body>,
    peer: SocketAddr,
    cert: Option<Arc<[u8]>>,
) -> Response {
    if req.uri().path() == "/healthz" && matches!(*req.method(), Method::GET | Method::HEAD) {
        return "ok".into_response();
    }
    handle(app, req, peer, cert).await
}

fn status(code: StatusCode) -> Response {
    (code, code.canonical_reason().unwrap_or("")).into_response()
}

/// The requested file name, or the status to refuse it with. Only a single plain segment is a
/// file name; anything encoded, nested or over-long is refused before any lookup.
pub(crate) fn file_name(path: &str) -> Result<&str, StatusCode> {
    let name = path.strip_prefix('/').ok_or(StatusCode::BAD_REQUEST)?;
    if name.len() > 128 {
        return Err(StatusCode::BAD_REQUEST);
    }
    if name.contains(['%', '/', '\\', '\0']) || name.contains("..") {
        return Err(StatusCode::NOT_FOUND);
    }
    if !crate::catalog::valid_file_name(name) {
        return Err(StatusCode::NOT_FOUND);
    }
    Ok(name)
}

/// `<mac>/<file>` of a firmware URL (`/firmware/<mac>/<file>`): the MAC in lowercase hex, a
/// plain file name; anything else is refused before any lookup.
fn firmware_path(rest: &str) -> Result<(Mac, String), StatusCode> {
    let (m, file) = rest.split_once('/').ok_or(StatusCode::NOT_FOUND)?;
    if m.len() != 12 || !m.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StatusCode::NOT_FOUND);
    }
    let mac = Mac::parse(m).map_err(|_| StatusCode::NOT_FOUND)?;
    let path = format!("/{file}");
    let name = file_name(&path)?.to_string();
    Ok((mac, name))
}

pub(crate) fn client_ip(peer: SocketAddr) -> IpAddr {
    match peer.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        ip => ip,
    }
}

async fn handle(
    app: SharedApp,
    req: Request<Body>,
    peer: SocketAddr,
    cert: Option<Arc<[u8]>>,
) -> Response {
    use tracing::Instrument as _;
    let started = std::time::Instant::now();
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let id = crate::metrics::request_id(req.headers());
    let span = tracing::info_span!("phone", request_id = %id);
    let mut resp = handle_request(app.clone(), req, peer, cert)
        .instrument(span.clone())
        .await;
    let took = started.elapsed();
    app.sync.latency.record(took);
    span.in_scope(|| observe::fetched(&app.metrics, &method, &path, &resp, took));
    crate::metrics::set_request_id(&mut resp, &id);
    resp
}

async fn handle_request(
    app: SharedApp,
    req: Request<Body>,
    peer: SocketAddr,
    cert: Option<Arc<[u8]>>,
) -> Response {
    let ip = client_ip(peer);
    let firmware = req
        .uri()
        .path()
        .strip_prefix("/firmware/")
        .map(firmware_path);
    let name = match firmware.clone() {
        Some(Ok((_, file))) => file,
        Some(Err(code)) => return status(code),
        None => match file_name(req.uri().path()) {
            Ok(n) => n.to_string(),
            Err(code) => return status(code),
        },
    };
    let (parts, body) = req.into_parts();
    // At most 512 characters of it; borrowed when it is UTF-8 within that (what phones send).
    let ua: std::borrow::Cow<'_, str> = match parts.headers.get(header::USER_AGENT) {
        None => "".into(),
        Some(v) => match std::str::from_utf8(v.as_bytes()) {
            Ok(s) if s.len() <= 512 => s.into(),
            _ => String::from_utf8_lossy(v.as_bytes())
                .chars()
                .take(512)
                .collect::<String>()
                .into(),
        },
    };
    let creds = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(digest::parse);
    let ctx = Ctx {
        app: &app,
        ip,
        cert: cert.as_deref(),
        creds,
        headers: &parts.headers,
        method: &parts.method,
        uri: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/"),
        ua: &ua,
        at: OnceLock::new(),
        ip_text: OnceLock::new(),
    };
    if let Some(Ok((mac, _))) = firmware {
        return match parts.method {
            Method::GET | Method::HEAD => ctx.fetch_firmware(&mac, &name),
            _ => {
                let mut r = status(StatusCode::METHOD_NOT_ALLOWED);
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                r
            }
        };
    }
    match parts.method {
        Method::GET | Method::HEAD => ctx.fetch(&name).await,
        Method::PUT => {
            // One file may fill the device's whole quota, not more: it is refused 413.
            let phones = &app.config.phones;
            let limit = phones.upload_max_bytes.min(phones.upload_max_total_bytes) as usize;
            // Authenticate before reading the body.
            let mac = match ctx.authorize_upload(&name) {
                Ok(m) => m,
                Err(r) => return *r,
            };
            let timeout = app.config.limits.body_timeout();
            let (code, reason) =
                match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
                    Ok(Ok(bytes)) => {
                        let n = bytes.len() as u64;
                        let r = ctx.store_upload(&mac, &name, bytes).await;
                        ctx.log(&mac, &name, r.status(), n, None);
                        return r;
                    }
                    Ok(Err(_)) => (StatusCode::PAYLOAD_TOO_LARGE, Refusal::TooLarge),
                    Err(_) => (StatusCode::REQUEST_TIMEOUT, Refusal::Timeout),
                };
            ctx.log(&mac, &name, code, 0, Some(reason));
            status(code)
        }
        _ => {
            let mut r = status(StatusCode::METHOD_NOT_ALLOWED);
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, PUT"));
            r
        }
    }
}

/// One request's view.
struct Ctx<'a> {
    app: &'a SharedApp,
    ip: IpAddr,
    cert: Option<&'a [u8]>,
    /// The parsed `Authorization: Digest ...`, if any.
    creds: Option<digest::Credentials<'a>>,
    headers: &'a HeaderMap,
    method: &'a Method,
    uri: &'a str,
    ua: &'a str,
    /// The request's time (RFC 3339) and address as text, once needed: one of each for its
    /// check-in and its provisioning log entry.
    at: OnceLock<String>,
    ip_text: OnceLock<IpText>,
}

/// Why a request was not authorised.
enum Denied {
    /// 401 with a fresh challenge (`stale` tells the phone to retry with it); `reason` is for
    /// the provisioning log only.
    Challenge { stale: bool, reason: Refusal },
    /// 429: too many failures from this address, or for this MAC from it.
    Locked(u64),
}

impl Denied {
    fn reason(&self) -> Refusal {
        match self {
            Denied::Challenge { reason, .. } => *reason,
            Denied::Locked(_) => Refusal::LockedOut,
        }
    }
}

impl Ctx<'_> {
    async fn fetch(&self, name: &str) -> Response {
        let catalog = self.app.renderer.catalog();
        let ua = self.app.user_agents.parse(catalog, self.ua);
        let state = self.app.store.read();
        // The device a per-device file is for, once known (for its provisioning log).
        let for_device = std::cell::RefCell::new(None::<Mac>);
        let authorize = |d: &Device, g: &Group| {
            *for_device.borrow_mut() = Some(d.mac.clone());
            self.authorize(d, g)
        };
        let outcome = serve_file(
            &self.app.renderer,
            &state,
            name,
            ua.model.as_deref(),
            authorize,
        );
        let for_device = for_device.into_inner();
        match outcome {
            Outcome::NotFound => status(StatusCode::NOT_FOUND),
            Outcome::Unknown(mac) => {
                let listed =
                    self.app
                        .store
                        .record_unprovisioned(&mac, name, &self.ip.to_string(), self.ua);
                let denied = self.authorize_unknown(&mac);
                let r = self.deny(denied, name);
                // Logged under the MAC while it is on the (bounded) unprovisioned list.
                if listed {
                    self.log(&mac, name, r.status(), 0, Some(Refusal::UnknownMac));
                }
                r
            }
            Outcome::Denied(d) => {
                let reason = d.reason();
                let r = self.deny(d, name);
                if let Some(mac) = &for_device {
                    self.log(mac, name, r.status(), 0, Some(reason));
                }
                r
            }
            Outcome::Failed(e) => {
                let r = self.render_failed(name, &e);
                if let Some(mac) = &for_device {
                    self.log(mac, name, r.status(), 0, Some(Refusal::RenderFailed));
                }
                r
            }
            Outcome::File {
                file,
                model,
                device: None,
                ..
            } => {
                let mut r = self.respond(file);
                observe::mark(&mut r, None, &model.id);
                r
            }
            Outcome::File {
                file,
                model,
                device: Some(device),
                main,
            } => {
                if ua.model.as_deref().is_some_and(|m| m != model.id) {
                    tracing::warn!(mac = %device.mac, provisioned = %model.id, user_agent = %self.ua, "the phone's User-Agent names another model");
                }
                let applied = main.then(|| Applied {
                    revision: file.revision,
                    etag: &file.etag,
                    identity: file.identity.as_ref(),
                });
                let durable = self.check_in(&device.mac, &ua, applied);
                if main {
                    self.firmware_guard(&state, device, ua.firmware.as_deref());
                }
                let model_id = model.id.clone();
                let mac = device.mac.clone();
                drop(state);
                // A newly applied revision is answered once it is recorded durably: the
                // dispatcher counts the device in sync from then on.
                if let Err(e) = durable.await {
                    tracing::error!(error = %e, "recording a check-in failed");
                    let code = StatusCode::SERVICE_UNAVAILABLE;
                    self.log(&mac, name, code, 0, Some(Refusal::Unavailable));
                    return status(code);
                }
                let mut r = self.respond(file.clone());
                observe::mark(&mut r, Some(&mac), &model_id);
                let sent = if r.status() == StatusCode::OK && self.method != Method::HEAD {
                    file.bytes.len() as u64
                } else {
                    0
                };
                self.log(&mac, name, r.status(), sent, None);
                r
            }
        }
    }

    /// Feeds a main-file fetch to the roll-out guard; pauses the roll-out (a change-log entry,
    /// off the async workers) when its failures reach the threshold.
    fn firmware_guard(
        &self,
        state: &crate::domain::state::State,
        d: &Device,
        running: Option<&str>,
    ) {
        let Some(due) = self.app.firmware.observe(state, d, running) else {
            return;
        };
        let app = self.app.clone();
        tokio::task::spawn_blocking(move || {
            match app.store.pause_firmware_target(
                "firmware-guard",
                &due.group,
                &due.model,
                &due.version,
                due.pause,
            ) {
                Ok(_) => {
                    tracing::warn!(group = %due.group, model = %due.model, version = %due.version, "firmware roll-out paused: too many phones came back on the old version")
                }
                Err(e) => {
                    tracing::debug!(error = %e, "firmware roll-out not paused (changed meanwhile)")
                }
            }
        });
    }

    /// `GET|HEAD /firmware/<mac>/<file>`: the image of the device's roll-out, authenticated as
    /// its model's `[firmware] auth` says, with a strong ETag (the SHA-256), one byte range, and
    /// at most `[firmware] max_downloads` at once.
    fn fetch_firmware(&self, mac: &Mac, name: &str) -> Response {
        let state = self.app.store.read();
        let Some(device) = state.devices.get(mac) else {
            drop(state);
            let d = self.authorize_unknown(mac);
            return self.deny(d, name);
        };
        let model = self.app.renderer.catalog().get(&device.model);
        let Some(spec) = model.and_then(|m| m.firmware.as_ref()) else {
            return status(StatusCode::NOT_FOUND);
        };
        if spec.auth == crate::catalog::FirmwareAuth::Device {
            let Some(group) = state.groups.get(&device.group) else {
                return status(StatusCode::NOT_FOUND);
            };
            if let Err(d) = self.authorize(device, group) {
                let reason = d.reason();
                let r = self.deny(d, name);
                self.log(mac, name, r.status(), 0, Some(reason));
                return r;
            }
        }
        let offered = crate::domain::firmware::offered(state.firmware_target_of(device), device);
        let img = offered
            .filter(|v| spec.file_for(v) == name)
            .and_then(|v| {
                state
                    .firmware
                    .get(&(device.model.to_string(), v.to_string()))
            })
            .cloned();
        drop(state);
        let Some(img) = img else {
            let r = status(StatusCode::NOT_FOUND);
            self.log(mac, name, r.status(), 0, None);
            return r;
        };
        let r = self.image(&img);
        let sent = if r.status().is_success() && self.method != Method::HEAD {
            r.headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        } else {
            0
        };
        self.log(mac, name, r.status(), sent, None);
        r
    }

    /// The response for an image: 304, HEAD, 200, 206, 416 or 503.
    fn image(&self, img: &crate::domain::FirmwareImage) -> Response {
        let etag = format!("\"{}\"", img.sha256);
        let matches = self
            .headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim() == etag || t.trim() == "*");
        let with_validators = |mut r: Response| {
            let h = r.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&etag) {
                h.insert(header::ETAG, v);
            }
            h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        };
        if matches {
            return with_validators(StatusCode::NOT_MODIFIED.into_response());
        }
        let size = img.size;
        // `If-Range` naming other bytes: the whole image, not the range (RFC 9110 §13.1.5).
        let if_range_ok = self
            .headers
            .get(header::IF_RANGE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| v.trim() == etag);
        let range = self
            .headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .filter(|_| if_range_ok);
        let Ok(range) = crate::firmware::parse_range(range, size) else {
            let mut r = status(StatusCode::RANGE_NOT_SATISFIABLE);
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return with_validators(r);
        };
        let (start, end) = range.unwrap_or((0, size.saturating_sub(1)));
        let len = if size == 0 { 0 } else { end - start + 1 };
        let code = if range.is_some() {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        };
        let mut r = if self.method == Method::HEAD {
            Response::new(Body::empty())
        } else {
            let Some(permit) = self.app.firmware.try_download() else {
                self.app.metrics.firmware_busy();
                let mut r = status(StatusCode::SERVICE_UNAVAILABLE);
                r.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(self.app.firmware.retry_after_s()),
                );
                return r;
            };
            match self.app.firmware.stream(&img.sha256, start, len, permit) {
                Ok(b) => Response::new(b),
                Err(e) => {
                    tracing::error!(sha256 = %img.sha256, error = %e, "a firmware image is missing from the image store");
                    return status(StatusCode::INTERNAL_SERVER_ERROR);
                }
            }
        };
        *r.status_mut() = code;
        let h = r.headers_mut();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        if range.is_some() {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
        }
        with_validators(r)
    }

    /// Adds this request to `mac`'s provisioning log: no credentials, nonce or response in it.
    fn log(&self, mac: &Mac, file: &str, code: StatusCode, bytes: u64, reason: Option<Refusal>) {
        let user_agent = if self.ua.len() <= 256 {
            self.ua.to_string()
        } else {
            self.ua.chars().take(256).collect()
        };
        self.app.store.log_provisioning(
            mac,
            ProvLogEntry {
                id: 0,
                at: self.now().to_string(),
                ip: self.ip_text().text().to_string(),
                method: self.method.as_str().to_string(),
                file: file.to_string(),
                user_agent,
                status: code.as_u16(),
                bytes,
                reason,
                count: None,
                last_at: None,
            },
        );
    }

    fn now(&self) -> &str {
        self.at.get_or_init(crate::store::now)
    }

    fn ip_text(&self) -> &IpText {
        self.ip_text.get_or_init(|| IpText::new(self.ip))
    }

    fn render_failed(&self, name: &str, e: &crate::render::RenderError) -> Response {
        tracing::error!(file = %name, error = %e, "rendering failed");
        status(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn check_in(
        &self,
        mac: &Mac,
        ua: &useragent::UserAgent,
        applied: Option<Applied<'_>>,
    ) -> impl std::future::Future<Output = Result<(), crate::store::StoreError>> + Send + 'static
    {
        let seen = Seen {
            at: self.now(),
            ip: self.ip_text(),
            user_agent: self.ua,
            firmware: ua.firmware.as_deref(),
            model_seen: ua.model.as_deref(),
        };
        self.app.store.record_checkin(mac, seen, applied)
    }

    /// Bytes with validators; 304 when the phone already has them.
    fn respond(&self, r: Arc<Rendered>) -> Response {
        let not_modified = self
            .headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim() == r.etag || t.trim() == "*");
        let mut resp = if not_modified {
            StatusCode::NOT_MODIFIED.into_response()
        } else if self.method == Method::HEAD {
            let mut x = Response::new(Body::empty());
            x.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(r.bytes.len()));
            x
        } else {
            Response::new(Body::from(r.bytes.clone()))
        };
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&r.etag) {
            h.insert(header::ETAG, v);
        }
        if !not_modified {
            if let Ok(v) = HeaderValue::from_str(&r.content_type) {
                h.insert(header::CONTENT_TYPE, v);
            }
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }

    /// Digest or certificate for this device, by its group's policy and networks.
    fn authorize(&self, device: &Device, group: &Group) -> Result<(), Denied> {
        let auth = &self.app.phone_auth;
        if let Some(left) = auth.lockout.locked(self.ip, Some(&device.mac)) {
            return Err(Denied::Locked(left));
        }
        let p = &group.provisioning;
        let network_ok =
            p.allowed_cidrs.is_empty() || p.allowed_cidrs.iter().any(|c| c.contains(self.ip));
        let cert_ok = p.auth != ProvAuth::Digest
            && self
                .cert
                .is_some_and(|der| cert::macs(der).contains(&device.mac));
        let mut stale = false;
        let digest_ok = match &self.creds {
            Some(c) if p.auth != ProvAuth::Mtls => {
                let user_ok = Mac::parse(&c.username).is_ok_and(|m| m == device.mac);
                let r = auth.digest.verify(
                    c,
                    self.method.as_str(),
                    self.uri,
                    self.ip,
                    device.prov_password.expose(),
                );
                stale = r == Err(digest::Refusal::Stale);
                user_ok && r.is_ok()
            }
            _ => false,
        };
        if network_ok && (cert_ok || digest_ok) {
            return Ok(());
        }
        let attempted = self.creds.is_some() || self.cert.is_some();
        if attempted && !stale {
            self.app.metrics.auth_failure(if network_ok {
                AuthReason::Credentials
            } else {
                AuthReason::Network
            });
            self.failed(Some(&device.mac));
        }
        let reason = refusal(
            network_ok,
            stale,
            self.cert.is_some() && p.auth != ProvAuth::Digest,
            self.creds.is_some(),
        );
        Err(Denied::Challenge { stale, reason })
    }

    /// An unknown MAC: the same work, counting and answer as wrong credentials.
    fn authorize_unknown(&self, mac: &Mac) -> Denied {
        let auth = &self.app.phone_auth;
        if let Some(left) = auth.lockout.locked(self.ip, Some(mac)) {
            return Denied::Locked(left);
        }
        if let Some(c) = &self.creds {
            let _ = auth.digest.verify(
                c,
                self.method.as_str(),
                self.uri,
                self.ip,
                "not-a-device-password",
            );
        }
        if self.creds.is_some() || self.cert.is_some() {
            self.app.metrics.auth_failure(AuthReason::UnknownDevice);
            self.failed(Some(mac));
        }
        Denied::Challenge {
            stale: false,
            reason: Refusal::UnknownMac,
        }
    }

    /// Logs a failure in a form fail2ban can read (`authentication failure from <ip>`, then
    /// `for <mac>` when the request names one) and counts it towards the lockout. A lockout is
    /// logged as `... from <ip>; locked out` for the whole address and `... from <ip> for
    /// <mac>; locked out` for one MAC (a filter banning addresses should match the first only).
    fn failed(&self, mac: Option<&Mac>) {
        let ip = self.ip;
        let for_mac = mac.map(|m| format!(" for {m}")).unwrap_or_default();
        tracing::warn!(target: "deskprov::phone::auth", "authentication failure from {ip}{for_mac}");
        match self.app.phone_auth.lockout.fail(ip, mac) {
            digest::Locked::No => {}
            digest::Locked::Pair => {
                self.app.metrics.lockout(LockoutScope::Pair);
                tracing::warn!(target: "deskprov::phone::auth", "{}", observe::pair_lockout_line(ip, &for_mac))
            }
            digest::Locked::Address => {
                self.app.metrics.lockout(LockoutScope::Address);
                tracing::warn!(target: "deskprov::phone::auth", "{}", observe::address_lockout_line(ip))
            }
        }
    }

    fn deny(&self, d: Denied, name: &str) -> Response {
        match d {
            Denied::Locked(secs) => {
                let mut r = status(StatusCode::TOO_MANY_REQUESTS);
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
                r
            }
            Denied::Challenge { stale, .. } => {
                tracing::debug!(file = %name, "challenge");
                let mut r = status(StatusCode::UNAUTHORIZED);
                for c in self.app.phone_auth.digest.challenges(self.ip, stale) {
                    if let Ok(v) = HeaderValue::from_str(&c) {
                        r.headers_mut().append(header::WWW_AUTHENTICATE, v);
                    }
                }
                r
            }
        }
    }

    /// `PUT /<mac>-<name>.cfg|log|xml`: the MAC's device, authenticated like a fetch.
    fn authorize_upload(&self, name: &str) -> Result<Mac, Box<Response>> {
        let bad = || Box::new(status(StatusCode::NOT_FOUND));
        let (m, rest) = name.split_once('-').ok_or_else(bad)?;
        let mac = Mac::parse(m).map_err(|_| bad())?;
        if m.len() != 12
            || rest.is_empty()
            || !(rest.ends_with(".cfg") || rest.ends_with(".log") || rest.ends_with(".xml"))
        {
            return Err(bad());
        }
        let state = self.app.store.read();
        let Some(device) = state.devices.get(&mac).cloned() else {
            drop(state);
            let d = self.authorize_unknown(&mac);
            let r = self.deny(d, name);
            // Logged only for a MAC already on the (bounded) unprovisioned list.
            if self.app.store.is_unprovisioned(&mac) {
                self.log(&mac, name, r.status(), 0, Some(Refusal::UnknownMac));
            }
            return Err(Box::new(r));
        };
        let Some(group) = state.groups.get(&device.group).cloned() else {
            return Err(bad());
        };
        drop(state);
        self.authorize(&device, &group).map_err(|d| {
            let reason = d.reason();
            let r = self.deny(d, name);
            self.log(&mac, name, r.status(), 0, Some(reason));
            r
        })?;
        Ok(mac)
    }

    async fn store_upload(&self, mac: &Mac, name: &str, bytes: Bytes) -> Response {
        match self.app.store.put_upload(mac, name, bytes).await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => {
                tracing::error!(error = %e, "storing an upload failed");
                status(StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }
}

/// Why a known device's request was refused, for its provisioning log only; the most telling
/// first: where it came from, then what it sent (`cert_counts`: a client certificate the
/// group's policy would have accepted had it carried the MAC).
fn refusal(network_ok: bool, stale: bool, cert_counts: bool, creds: bool) -> Refusal {
    if !network_ok {
        Refusal::NetworkNotAllowed
    } else if stale {
        Refusal::StaleNonce
    } else if cert_counts {
        Refusal::CertificateMacMismatch
    } else if creds {
        Refusal::WrongCredentials
    } else {
        Refusal::NoCredentials
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_network_first_then_what_the_phone_sent() {
        use Refusal::*;
        assert_eq!(refusal(false, true, true, true), NetworkNotAllowed);
        assert_eq!(refusal(true, true, false, true), StaleNonce);
        assert_eq!(refusal(true, false, true, true), CertificateMacMismatch);
        assert_eq!(refusal(true, false, false, true), WrongCredentials);
        assert_eq!(refusal(true, false, false, false), NoCredentials);
        let locked = Denied::Locked(300);
        assert_eq!(locked.reason(), LockedOut);
    }

    #[test]
    fn hostile_names_are_refused_before_any_lookup() {
        assert_eq!(file_name("/0004f2abcdef.cfg"), Ok("0004f2abcdef.cfg"));
        for p in [
            "/../etc/passwd",
            "/%2e%2e/x",
            "/a/b.cfg",
            "/a\\b",
            "/.hidden",
            "/x%00.cfg",
            "/..",
            "/",
        ] {
            assert!(file_name(p).is_err(), "{p}");
        }
        assert_eq!(
            file_name(&format!("/{}", "a".repeat(300))),
            Err(StatusCode::BAD_REQUEST)
        );
    }
}
