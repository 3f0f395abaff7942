//! The admin console over the real HTTPS admin listener: sign-in and its cookie, CSRF, a group
//! token's scope, an API error shown at its form field.

mod common;

use common::{seed, TestServer, G};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;

/// A browser-like client: no redirects followed, cookies carried by hand.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

fn client(s: &TestServer) -> reqwest::Client {
    let ca = std::fs::read(s.data_dir.join("tls").join("ca.pem")).expect("ca.pem");
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA"))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("client")
}

/// The `_csrf` value of the first form in a page.
fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"_csrf\" value=\"")
        .expect("a form with _csrf")
        + 20;
    html[at..].split('"').next().unwrap().to_string()
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_string()
}

impl Browser {
    async fn get(&self, path: &str) -> (StatusCode, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .expect("GET");
        (r.status(), r.text().await.unwrap())
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let body: String = form
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, &self.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("POST")
    }

    /// The session's CSRF token, read from a page's form.
    async fn csrf(&self) -> String {
        let (st, html) = self.get("/ui/").await;
        assert_eq!(st, 200, "{html}");
        csrf_of(&html)
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Signs in with `token`; returns the browser and the raw Set-Cookie of the session.
async fn sign_in(s: &TestServer, token: &str) -> (Browser, String) {
    let http = client(s);
    let page = http
        .get(format!("{}/ui/login", s.admin))
        .send()
        .await
        .unwrap();
    let pre = cookie_value(page.headers()[SET_COOKIE].to_str().unwrap());
    let html = page.text().await.unwrap();
    let b = Browser {
        http,
        base: s.admin.clone(),
        cookie: pre,
    };
    let csrf = csrf_of(&html);
    let r = b
        .post(
            "/ui/login",
            &[("_csrf", &csrf), ("next", "/ui/"), ("token", token)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "sign-in redirects");
    let set = r
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("deskprov_session="))
        .expect("session cookie");
    let b = Browser {
        cookie: cookie_value(&set),
        ..b
    };
    (b, set)
}

#[tokio::test]
async fn sign_in_sets_a_secure_httponly_samesite_strict_session_cookie_with_expiry() {
    let s = TestServer::start().await;
    let (b, set) = sign_in(&s, &s.token.clone()).await;
    for flag in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Max-Age=28800",
        "Path=/",
    ] {
        assert!(set.contains(flag), "{flag} missing in {set}");
    }
    let (st, html) = b.get("/ui/").await;
    assert_eq!(st, 200);
    assert!(html.contains("<h1>Dashboard</h1>"), "{html}");
    // Pages are never cached (they may show a secret once) nor framed.
    let r = b
        .http
        .get(format!("{}/ui/", b.base))
        .header(COOKIE, &b.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["cache-control"], "no-store");
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_pages_need_a_session() {
    let s = TestServer::start().await;
    let http = client(&s);
    let r = http.get(format!("{}/", s.admin)).send().await.unwrap();
    assert!(r.status().is_redirection());
    assert_eq!(r.headers()[LOCATION], "/ui/");
    let r = http
        .get(format!("{}/ui/groups/{G}/users", s.admin))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_redirection());
    assert!(r.headers()[LOCATION]
        .to_str()
        .unwrap()
        .starts_with("/ui/login?next="));
    let page = http
        .get(format!("{}/ui/login", s.admin))
        .send()
        .await
        .unwrap();
    let pre = cookie_value(page.headers()[SET_COOKIE].to_str().unwrap());
    let csrf = csrf_of(&page.text().await.unwrap());
    let b = Browser {
        http,
        base: s.admin.clone(),
        cookie: pre,
    };
    let r = b
        .post("/ui/login", &[("_csrf", &csrf), ("token", "dp_nope_nope")])
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r
        .headers()
        .get(SET_COOKIE)
        .is_none_or(|c| !c.to_str().unwrap().starts_with("deskprov_session=")));
}

#[tokio::test]
async fn a_post_without_the_sessions_csrf_token_is_refused_and_changes_nothing() {
    let s = TestServer::start().await;
    seed(&s).await;
    let (b, _) = sign_in(&s, &s.token.clone()).await;
    let form = [
        ("extension", "7001"),
        ("first_name", "Eve"),
        ("last_name", "Forged"),
    ];
    let r = b.post(&format!("/ui/groups/{G}/users"), &form).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let mut forged = vec![("_csrf", "0000")];
    forged.extend(form);
    let r = b.post(&format!("/ui/groups/{G}/users"), &forged).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        s.get(&format!("/api/v1/groups/{G}/users/7001"))
            .await
            .status(),
        404
    );
    // With the token the same form works.
    let csrf = b.csrf().await;
    let mut good = vec![("_csrf", csrf.as_str())];
    good.extend(form);
    let r = b.post(&format!("/ui/groups/{G}/users"), &good).await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    assert_eq!(
        s.get(&format!("/api/v1/groups/{G}/users/7001"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn sign_out_ends_the_session() {
    let s = TestServer::start().await;
    let (b, _) = sign_in(&s, &s.token.clone()).await;
    let csrf = b.csrf().await;
    let r = b.post("/ui/logout", &[("_csrf", &csrf)]).await;
    assert!(r.status().is_redirection());
    let (st, _) = b.get("/ui/").await;
    assert!(st.is_redirection(), "the old cookie no longer signs in");
}

#[tokio::test]
async fn a_group_tokens_console_shows_only_its_group() {
    let s = TestServer::start().await;
    seed(&s).await;
    s.create("/api/v1/groups", serde_json::json!({"id": "OTHER-GROUP", "name": "Someone else", "sip": {"domain": "other.example"}})).await;
    s.create(
        "/api/v1/groups/OTHER-GROUP/users",
        serde_json::json!({"extension": "4242", "first_name": "Hidden"}),
    )
    .await;
    let t = s
        .create(
            "/api/v1/tokens",
            serde_json::json!({"name": "tenant", "group": G}),
        )
        .await;
    let (b, _) = sign_in(&s, t["token"].as_str().unwrap()).await;
    let (st, html) = b.get("/ui/").await;
    assert_eq!(st, 200);
    assert!(html.contains(G));
    assert!(!html.contains("OTHER-GROUP"), "{html}");
    let (st, html) = b.get("/ui/groups/OTHER-GROUP/users").await;
    assert_eq!(st, 404);
    assert!(!html.contains("Hidden"));
    let (st, _) = b.get(&format!("/ui/groups/{G}/users")).await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn line_port_in_use_is_shown_at_the_line_port_field() {
    let s = TestServer::start().await;
    seed(&s).await;
    s.create(
        &format!("/api/v1/groups/{G}/users/1001/shared-call-appearances"),
        serde_json::json!({"device": "Desk 5555", "line_port": "6035551212_sca1"}),
    )
    .await;
    let (b, _) = sign_in(&s, &s.token.clone()).await;
    let csrf = b.csrf().await;
    let r = b
        .post(
            &format!("/ui/groups/{G}/users/1001/sca"),
            &[
                ("_csrf", &csrf),
                ("device", "Lobby"),
                ("line_port", "6035551212_sca1"),
                ("active", "on"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let html = r.text().await.unwrap();
    let at = html
        .find("id=\"line_port-error\"")
        .expect("an error at the Line Port field");
    assert!(
        html[at..]
            .starts_with("id=\"line_port-error\" role=\"alert\"><code>line_port_in_use</code>"),
        "{}",
        &html[at..at + 200]
    );
    // The field is marked invalid and keeps what was typed.
    let field = html.find("id=\"line_port\"").unwrap();
    let input = &html[field..field + 400];
    assert!(input.contains("aria-invalid=\"true\""), "{input}");
    assert!(input.contains("value=\"6035551212_sca1\""), "{input}");
}

#[tokio::test]
async fn a_softphone_is_added_without_a_mac_and_its_page_shows_the_provisioning_link_as_a_qr_code()
{
    let s = TestServer::start().await;
    seed(&s).await;
    let (b, _) = sign_in(&s, &s.token.clone()).await;
    let csrf = b.csrf().await;
    let r = b
        .post(
            &format!("/ui/groups/{G}/devices"),
            &[
                ("_csrf", &csrf),
                ("mac", ""),
                ("name", "Ada softphone"),
                ("model", "linphone"),
                ("owner", "1001"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let html = r.text().await.unwrap();
    let d = s.get(&format!("/api/v1/groups/{G}/devices")).await;
    let id = d.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["model"] == "linphone")
        .expect("the softphone")["mac"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(id.starts_with("02"), "{id}");
    assert!(html.contains(r#"value="provisioning_link""#), "the button");
    // A desk phone's page has no such button.
    let (_, desk) = b.get("/ui/devices/0004f2000001").await;
    assert!(!desk.contains(r#"value="provisioning_link""#));

    let r = b
        .post(
            &format!("/ui/devices/{id}/action"),
            &[("_csrf", &csrf), ("op", "provisioning_link")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    let at = html.find(r#"id="once-value">"#).expect("the link, once") + 16;
    let url = html[at..].split('<').next().unwrap().to_string();
    assert!(url.starts_with(&format!("https://{id}:")), "{url}");
    assert!(url.ends_with(&format!("/linphone-{id}.xml")), "{url}");
    let qr = &html[html.find(r#"id="once-qr""#).expect("the QR code")..];
    assert!(qr.contains("<svg") && qr.contains("</svg>"), "inline SVG");
    assert!(
        !html.contains("<?xml"),
        "no XML declaration inside the page"
    );
    // The link's credentials are the device's now: the phone side accepts them.
    let pw = url[format!("https://{id}:").len()..]
        .split('@')
        .next()
        .unwrap()
        .to_string();
    let (code, _) =
        common::fetch_file(&s, &format!("linphone-{id}.xml"), "Linphone/5.1", &id, &pw).await;
    assert_eq!(code, 200);
    // Reloading the page does not show it again.
    let (_, again) = b.get(&format!("/ui/devices/{id}")).await;
    assert!(!again.contains(&pw));
}

#[tokio::test]
async fn the_firmware_page_shows_each_models_target_and_its_phones_by_state() {
    let s = TestServer::start().await;
    seed(&s).await;
    let r = s
        .client
        .put(format!(
            "{}/api/v1/models/yealink-t54w/firmware/96.86.0.100",
            s.admin
        ))
        .bearer_auth(&s.token)
        .body(vec![7u8; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = s
        .put(
            &format!("/api/v1/groups/{G}/firmware/yealink-t54w"),
            serde_json::json!({"version": "96.86.0.100", "percent": 100}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.body);
    let (b, _) = sign_in(&s, &s.token.clone()).await;
    let (st, html) = b.get(&format!("/ui/groups/{G}/firmware")).await;
    assert_eq!(st, 200, "{html}");
    let row = html
        .split("<tr>")
        .find(|r| r.contains("yealink-t54w"))
        .expect("a row for the T54W");
    assert!(row.contains("96.86.0.100"), "{row}");
    assert!(row.contains("100 %"), "{row}");
    // Its one phone was never seen: upgrading, running unknown.
    assert!(
        row.contains("<td>0</td><td>1</td><td>0</td><td>0</td>"),
        "{row}"
    );
    assert!(row.contains("unknown: 1"), "{row}");
    assert!(html.contains("polycom-vvx-450"));
}
