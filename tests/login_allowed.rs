//! Seed 002 "Edit extension profile": `login_allowed` and Unregister, over HTTPS and the SIP
//! socket. The T54W is overlaid (`templates_dir`) with `reboot_on = ["template"]`, so a reboot
//! NOTIFY here can only come from the `unregister` change kind; its main template is replaced
//! by one that prints each registration's `enabled`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TestServer, G};
use serde_json::{json, Value};

const MAC: &str = "805ec0000001";
const RESYNC: &str = "check-sync";
const REBOOT: &str = "check-sync;reboot=true";

/// A phone on loopback UDP that answers 200 to every NOTIFY and records its `Event:`.
struct Phone {
    port: u16,
    events: Arc<Mutex<Vec<String>>>,
}

impl Phone {
    async fn start() -> Phone {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = sock.local_addr().unwrap().port();
        let events: Arc<Mutex<Vec<String>>> = Default::default();
        let log = events.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let header = |name: &str| {
                    req.split("\r\n")
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
                        })
                        .unwrap_or("")
                        .to_string()
                };
                let mut resp = "SIP/2.0 200 OK\r\n".to_string();
                for h in ["Via", "From", "Call-ID", "CSeq"] {
                    resp.push_str(&format!("{h}: {}\r\n", header(h)));
                }
                resp.push_str(&format!(
                    "To: {};tag=p1\r\nContent-Length: 0\r\n\r\n",
                    header("To")
                ));
                log.lock().unwrap().push(header("Event"));
                let _ = sock.send_to(resp.as_bytes(), from).await;
            }
        });
        Phone { port, events }
    }

    /// Waits for NOTIFY number `n` (1-based) and returns its event; panics if it has not come
    /// within `within` (a bound on waiting, not a timing assertion).
    async fn nth(&self, n: usize, within: Duration) -> String {
        let end = Instant::now() + within;
        loop {
            if let Some(e) = self.events.lock().unwrap().get(n - 1) {
                return e.clone();
            }
            assert!(
                Instant::now() < end,
                "NOTIFY {n} did not come; seen {:?}",
                self.events.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Prints `<line_port> = 1|0` for every registration.
const SHOW_ENABLED: &str = "{%- for line in lines %}\n{{ line.line_port }} = {% if line.enabled %}1{% else %}0{% endif %}\n{%- endfor %}\n";

/// A server whose T54W re-syncs for line changes, with group G, users 1001 (owner) and 5555
/// (an SCA on the phone), the phone "desk" notified at `phone`.
async fn start(phone: &Phone) -> (TestServer, tempfile::TempDir) {
    let overlay = tempfile::tempdir().unwrap();
    let builtin = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/device-templates/yealink-t54w/model.toml"
    ))
    .unwrap();
    let model = builtin.replace("reboot_on = [\"lines\"]", "reboot_on = [\"template\"]");
    assert_ne!(model, builtin, "the overlay changes reboot_on");
    std::fs::create_dir_all(overlay.path().join("yealink-t54w")).unwrap();
    std::fs::write(overlay.path().join("yealink-t54w/model.toml"), model).unwrap();
    let dir = overlay.path().display().to_string();
    let s = TestServer::start_with(move |c| {
        c.templates_dir = dir;
        c.sync.debounce_ms = 300;
        c.sync.ack_timeout_s = 60;
    })
    .await;
    let r = s
        .client
        .put(format!(
            "{}/api/v1/models/yealink-t54w/templates/mac.cfg.tera",
            s.admin
        ))
        .bearer_auth(&s.token)
        .body(SHOW_ENABLED)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "template upload: {}", r.status());
    s.create(
        "/api/v1/groups",
        json!({"id": G, "sip": {"domain": "sip.example.net"}}),
    )
    .await;
    s.create(
        &format!("/api/v1/groups/{G}/users"),
        json!({"extension": "1001", "first_name": "Ada", "phone_number": "6035551212"}),
    )
    .await;
    s.create(
        &format!("/api/v1/groups/{G}/users"),
        json!({"extension": "5555", "first_name": "Bob"}),
    )
    .await;
    s.create(&format!("/api/v1/groups/{G}/devices"), json!({"mac": MAC, "name": "desk", "model": "yealink-t54w", "owner": "1001", "notify_target": format!("udp:127.0.0.1:{}", phone.port)})).await;
    s.create(
        &format!("/api/v1/groups/{G}/users/5555/shared-call-appearances"),
        json!({"device": "desk"}),
    )
    .await;
    // Creation and SCA in one debounce window: one NOTIFY, the re-sync event (reboot_on has
    // no `lines` here).
    assert_eq!(phone.nth(1, Duration::from_secs(10)).await, RESYNC);
    (s, overlay)
}

/// The registrations as the preview (exactly the phone's bytes) shows them.
async fn enabled(s: &TestServer) -> Vec<(String, bool)> {
    let r = s
        .client
        .get(format!("{}/api/v1/devices/{MAC}/files/{MAC}.cfg", s.admin))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text()
        .await
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(" = "))
        .map(|(p, v)| (p.to_string(), v == "1"))
        .collect()
}

async fn last_change(s: &TestServer) -> Value {
    let c = s.get("/api/v1/changes?limit=1000").await.body;
    c["items"].as_array().unwrap().last().unwrap().clone()
}

fn lines(a: bool, b: bool) -> Vec<(String, bool)> {
    vec![
        ("6035551212".to_string(), a),
        ("ZZZ1900111-01_5555_sca1".to_string(), b),
    ]
}

#[tokio::test]
async fn unregister_reaches_the_phone_as_a_reboot_notify_until_the_users_next_change() {
    let phone = Phone::start().await;
    let (s, _overlay) = start(&phone).await;
    assert_eq!(enabled(&s).await, lines(true, true));

    let r = s
        .post(
            &format!("/api/v1/groups/{G}/users/5555/unregister"),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.body);
    assert_eq!(
        (
            r.body["unregistered"].clone(),
            r.body["login_allowed"].clone()
        ),
        (json!(true), json!(true))
    );
    let c = last_change(&s).await;
    assert_eq!(
        (c["action"].clone(), c["kind"].clone(), c["subject"].clone()),
        (json!("user.unregister"), json!("unregister"), json!("5555"))
    );
    assert_eq!(c["devices"], json!([MAC]));
    // The reboot event, though this model's reboot_on does not name line changes.
    assert_eq!(phone.nth(2, Duration::from_secs(10)).await, REBOOT);
    // Bob's SCA renders disabled; Ada's own line does not.
    assert_eq!(enabled(&s).await, lines(true, false));

    // The next change of the user brings the line back (a `lines` change: re-sync here).
    let r = s
        .patch(
            &format!("/api/v1/groups/{G}/users/5555"),
            json!({"last_name": "Stone"}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.body);
    assert_eq!(r.body["unregistered"], json!(false));
    assert_eq!(last_change(&s).await["kind"], "lines");
    assert_eq!(enabled(&s).await, lines(true, true));
    assert_eq!(phone.nth(3, Duration::from_secs(10)).await, RESYNC);
}

#[tokio::test]
async fn unregister_is_404_for_an_unknown_user_and_outside_the_tokens_group() {
    let phone = Phone::start().await;
    let (s, _overlay) = start(&phone).await;
    let r = s
        .post(
            &format!("/api/v1/groups/{G}/users/7777/unregister"),
            json!({}),
        )
        .await;
    assert_eq!((r.status(), r.code()), (404, "not_found"), "{}", r.body);
    s.create(
        "/api/v1/groups",
        json!({"id": "OTHER", "sip": {"domain": "o.example.net"}}),
    )
    .await;
    let t = s
        .create("/api/v1/tokens", json!({"name": "other", "group": "OTHER"}))
        .await;
    let other = t["token"].as_str().unwrap();
    let r = s
        .call_as(
            Some(other),
            reqwest::Method::POST,
            &format!("/api/v1/groups/{G}/users/5555/unregister"),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status(), 404, "{}", r.body);
    assert_eq!(enabled(&s).await, lines(true, true), "nothing changed");
    let c = s.get("/api/v1/changes?limit=1000").await.body;
    assert!(
        c["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["action"] != "user.unregister"),
        "{c}"
    );
}

#[tokio::test]
async fn login_allowed_false_renders_the_lines_disabled_and_reboots_true_brings_them_back() {
    let phone = Phone::start().await;
    let (s, _overlay) = start(&phone).await;
    let u = s.get(&format!("/api/v1/groups/{G}/users/1001")).await.body;
    assert_eq!(u["login_allowed"], json!(true), "the default");

    let r = s
        .patch(
            &format!("/api/v1/groups/{G}/users/1001"),
            json!({"login_allowed": false}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.body);
    assert_eq!(r.body["login_allowed"], json!(false));
    let c = last_change(&s).await;
    assert_eq!(
        (c["action"].clone(), c["kind"].clone()),
        (json!("user.update"), json!("unregister"))
    );
    assert_eq!(enabled(&s).await, lines(false, true));
    assert_eq!(phone.nth(2, Duration::from_secs(10)).await, REBOOT);

    let r = s
        .patch(
            &format!("/api/v1/groups/{G}/users/1001"),
            json!({"login_allowed": true}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.body);
    assert_eq!(last_change(&s).await["kind"], "lines");
    assert_eq!(enabled(&s).await, lines(true, true));
    assert_eq!(phone.nth(3, Duration::from_secs(10)).await, RESYNC);

    // A user created with it off.
    let r = s
        .post(
            &format!("/api/v1/groups/{G}/users"),
            json!({"extension": "2002", "login_allowed": false}),
        )
        .await;
    assert_eq!(
        (r.status(), r.body["login_allowed"].clone()),
        (201, json!(false))
    );
}

#[tokio::test]
async fn the_built_in_yealink_template_switches_a_disabled_account_off_and_keeps_its_key() {
    let s = TestServer::start().await;
    common::phones::group_with_users(&s).await;
    common::phones::device(&s, MAC, "yealink-t54w", "desk").await;
    let file = |s: &TestServer| {
        let req = s
            .client
            .get(format!("{}/api/v1/devices/{MAC}/files/{MAC}.cfg", s.admin))
            .bearer_auth(&s.token);
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    let before = file(&s).await;
    assert!(before.contains("account.2.enable = 1"), "{before}");
    let r = s
        .patch(
            &format!("/api/v1/groups/{G}/users/5555"),
            json!({"login_allowed": false}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.body);
    let after = file(&s).await;
    assert!(after.contains("account.1.enable = 1"), "{after}");
    assert!(after.contains("account.2.enable = 0"), "{after}");
    assert!(
        after.contains("linekey.2.line = 2"),
        "the key stays: {after}"
    );
}
