//! Key profiles over HTTPS: assigned to two phones, rendered in their files, BLF labels that
//! follow a rename (the phones are touched), `blf_all`, key moves, problem+json errors.

mod common;

use common::{Resp, TestServer, G};
use serde_json::{json, Value};

const FRONT: &str = "805ec0000011"; // T54W, owner 5555
const BACK: &str = "805ec0000012"; // T54W, owner 2002

fn profiles() -> String {
    format!("/api/v1/groups/{G}/key-profiles")
}

/// Group G: users 1001 Ada Lovelace, 5555 Bob Stone, 2002 Carl Gauss; two T54W phones; profile
/// "Reception": BLF on 1001 (no label) on key 3, a labelled speed dial on key 4, `blf_all`
/// from key 5.
async fn setup(s: &TestServer) {
    s.create(
        "/api/v1/groups",
        json!({"id": G, "sip": {"domain": "sip.example.net"}}),
    )
    .await;
    for (e, first, last) in [
        ("1001", "Ada", "Lovelace"),
        ("5555", "Bob", "Stone"),
        ("2002", "Carl", "Gauss"),
    ] {
        s.create(
            &format!("/api/v1/groups/{G}/users"),
            json!({"extension": e, "first_name": first, "last_name": last}),
        )
        .await;
    }
    let p = s
        .post(
            &profiles(),
            json!({"name": "Reception", "keys": [
                {"key": 3, "type": "blf", "value": "1001"},
                {"key": 4, "type": "speed_dial", "value": "*97", "label": "Voicemail"},
                {"key": 5, "type": "blf_all"},
            ]}),
        )
        .await;
    assert_eq!(p.status(), 201, "{}", p.body);
    assert_eq!(
        p.headers["location"],
        format!("/api/v1/groups/{G}/key-profiles/Reception")
    );
    for (mac, name, owner) in [(FRONT, "Front", "5555"), (BACK, "Back", "2002")] {
        s.create(
            &format!("/api/v1/groups/{G}/devices"),
            json!({"mac": mac, "name": name, "model": "yealink-t54w", "owner": owner,
                   "key_profile": "Reception"}),
        )
        .await;
    }
}

/// The device's main file exactly as the phone gets it.
async fn file(s: &TestServer, mac: &str) -> String {
    let r = s
        .client
        .get(format!("{}/api/v1/devices/{mac}/files/{mac}.cfg", s.admin))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

fn has(f: &str, line: &str) -> bool {
    f.lines().any(|l| l.trim() == line)
}

async fn revision(s: &TestServer, mac: &str) -> u64 {
    s.get(&format!("/api/v1/devices/{mac}")).await.body["revision"]
        .as_u64()
        .unwrap()
}

/// The last change-log entry.
async fn last_change(s: &TestServer) -> Value {
    let r = s.get("/api/v1/changes?since=0&limit=1000").await;
    let items = r.body["items"]
        .as_array()
        .or_else(|| r.body["changes"].as_array())
        .unwrap_or_else(|| panic!("a change list: {}", r.body))
        .clone();
    items.last().cloned().expect("an entry")
}

fn macs(change: &Value) -> Vec<String> {
    let mut m: Vec<String> = change["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    m.sort();
    m
}

fn problem(r: &Resp, status: u16, code: &str) {
    assert_eq!((r.status(), r.code()), (status, code), "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/problem+json");
}

#[tokio::test]
async fn an_assigned_profile_renders_on_both_phones_with_blf_all_leaving_out_their_own_lines() {
    let s = TestServer::start().await;
    setup(&s).await;
    let front = file(&s, FRONT).await;
    let back = file(&s, BACK).await;
    for f in [&front, &back] {
        assert!(has(f, "linekey.3.type = 16"), "{f}");
        assert!(has(f, "linekey.3.label = Ada Lovelace"), "{f}");
        assert!(has(f, "linekey.4.value = *97"), "{f}");
        assert!(has(f, "linekey.4.label = Voicemail"), "{f}");
    }
    // blf_all: every other user not shown yet — Front (5555's phone) gets 2002, Back gets 5555.
    assert!(has(&front, "linekey.5.label = Carl Gauss"), "{front}");
    assert!(has(&back, "linekey.5.label = Bob Stone"), "{back}");
    // Front's own line (5555) and 1001 (already on key 3) are left out: nothing more follows.
    assert!(has(&front, "linekey.6.type = 0"), "{front}");
    // The profile lists its devices; the device shows its profile and the merged layout.
    let p = s.get(&format!("{}/Reception", profiles())).await;
    assert_eq!(p.body["devices"], json!([FRONT, BACK]));
    let d = s.get(&format!("/api/v1/devices/{FRONT}")).await.body;
    assert_eq!(d["key_profile"], "Reception");
    assert_eq!(d["layout"]["keys"][2]["source"], "blf_all");
}

#[tokio::test]
async fn renaming_the_monitored_user_changes_the_label_and_touches_both_phones() {
    let s = TestServer::start().await;
    setup(&s).await;
    let before = (revision(&s, FRONT).await, revision(&s, BACK).await);
    let r = s
        .patch(
            &format!("/api/v1/groups/{G}/users/1001"),
            json!({"display_name": "Ada King"}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.body);
    let c = last_change(&s).await;
    assert_eq!(c["action"], "user.update");
    assert_eq!(macs(&c), vec![FRONT, BACK]);
    let after = (revision(&s, FRONT).await, revision(&s, BACK).await);
    assert!(
        after.0 > before.0 && after.1 > before.1,
        "{before:?} -> {after:?}"
    );
    for mac in [FRONT, BACK] {
        let f = file(&s, mac).await;
        assert!(has(&f, "linekey.3.label = Ada King"), "{f}");
    }
    // Both show 1001 on a BLF key only: for them it is a `keys` change (a re-sync, no reboot).
    assert_eq!(c["kind"], "lines");
    assert_eq!(c["keys_only"], json!([FRONT, BACK]));
    // Renaming Front's own user: Front's line changes, Back shows it by blf_all only.
    s.patch(
        &format!("/api/v1/groups/{G}/users/5555"),
        json!({"display_name": "Bob Rock"}),
    )
    .await;
    let c = last_change(&s).await;
    assert_eq!(macs(&c), vec![FRONT, BACK]);
    assert_eq!(c["keys_only"], json!([BACK]));
    assert!(has(&file(&s, BACK).await, "linekey.5.label = Bob Rock"));
}

#[tokio::test]
async fn a_profile_change_is_one_entry_and_a_key_moves_in_one_call() {
    let s = TestServer::start().await;
    setup(&s).await;
    // Move the profile's speed dial from key 4 to key 9: one entry touching both phones.
    let r = s
        .post(
            &format!("{}/Reception/keys/move", profiles()),
            json!({"from": 4, "to": 9}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.body);
    let c = last_change(&s).await;
    assert_eq!(c["action"], "key_profile.keys_move");
    assert_eq!(macs(&c), vec![FRONT, BACK]);
    for mac in [FRONT, BACK] {
        assert!(has(&file(&s, mac).await, "linekey.9.label = Voicemail"));
    }
    // A device key of its own wins over the profile's and moves alone.
    let r = s
        .patch(
            &format!("/api/v1/devices/{FRONT}"),
            json!({"keys": [{"key": 3, "type": "park", "value": "700", "label": "Park"}]}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.body);
    assert!(has(&file(&s, FRONT).await, "linekey.3.label = Park"));
    let r = s
        .post(
            &format!("/api/v1/devices/{FRONT}/keys/move"),
            json!({"from": 3, "to": 12, "mode": "shift"}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.body);
    assert_eq!(r.body["keys"][0]["key"], 12);
    let c = last_change(&s).await;
    assert_eq!(
        (c["action"].as_str(), macs(&c)),
        (Some("device.keys_move"), vec![FRONT.to_string()])
    );
    let front = file(&s, FRONT).await;
    assert!(has(&front, "linekey.12.label = Park"), "{front}");
    // Key 3 shows the profile's BLF again.
    assert!(has(&front, "linekey.3.label = Ada Lovelace"), "{front}");
}

#[tokio::test]
async fn key_profile_errors_are_problem_json_with_their_codes() {
    let s = TestServer::start().await;
    setup(&s).await;
    // Unknown profile on a device: 422 on the field.
    let r = s
        .patch(
            &format!("/api/v1/devices/{FRONT}"),
            json!({"key_profile": "Nope"}),
        )
        .await;
    problem(&r, 422, "validation");
    assert_eq!(r.body["field"], "key_profile");
    // A profile change that breaks an assigned phone names it (the T54W has 27 keys).
    let r = s
        .patch(
            &format!("{}/Reception", profiles()),
            json!({"keys": [{"key": 30, "type": "park", "value": "700"}]}),
        )
        .await;
    problem(&r, 422, "key_unavailable");
    assert!(
        r.body["detail"].as_str().unwrap().contains("Front"),
        "{}",
        r.body
    );
    // In use: 409 in_use; a name twice: 409 already_exists.
    problem(
        &s.delete(&format!("{}/Reception", profiles())).await,
        409,
        "in_use",
    );
    problem(
        &s.post(&profiles(), json!({"name": "Reception"})).await,
        409,
        "already_exists",
    );
    // Moving from a key with nothing of the device's own: 422 on `from`.
    let r = s
        .post(
            &format!("/api/v1/devices/{FRONT}/keys/move"),
            json!({"from": 20, "to": 21}),
        )
        .await;
    problem(&r, 422, "validation");
    assert_eq!(r.body["field"], "from");
    // Unknown fields are refused.
    problem(
        &s.post(&profiles(), json!({"name": "X", "colour": "red"}))
            .await,
        422,
        "validation",
    );
    problem(
        &s.get(&format!("{}/Nobody", profiles())).await,
        404,
        "not_found",
    );
}

#[tokio::test]
async fn profiles_list_in_pages_take_spaced_names_and_stay_in_their_group() {
    let s = TestServer::start().await;
    setup(&s).await;
    let r = s
        .post(&profiles(), json!({"name": "Sales Team", "keys": []}))
        .await;
    assert_eq!(r.status(), 201, "{}", r.body);
    let loc = r.headers["location"].to_str().unwrap().to_string();
    assert_eq!(loc, format!("/api/v1/groups/{G}/key-profiles/Sales%20Team"));
    assert_eq!(s.get(&loc).await.body["name"], "Sales Team");
    let page = s.get(&format!("{}?limit=1", profiles())).await.body;
    assert_eq!(page["items"][0]["name"], "Reception");
    assert_eq!(page["next"], "Reception");
    let page = s
        .get(&format!("{}?limit=1&after=Reception", profiles()))
        .await
        .body;
    assert_eq!(page["items"][0]["name"], "Sales Team");
    // An unused profile can be deleted.
    assert_eq!(s.delete(&loc).await.status(), 204);
    // A token of another group sees none of it.
    s.create(
        "/api/v1/groups",
        json!({"id": "OTHER", "sip": {"domain": "sip.example.org"}}),
    )
    .await;
    let t = s
        .create("/api/v1/tokens", json!({"name": "other", "group": "OTHER"}))
        .await;
    let other = t["token"].as_str().unwrap();
    for path in [profiles(), format!("{}/Reception", profiles())] {
        let r = s
            .call_as(Some(other), reqwest::Method::GET, &path, None)
            .await;
        problem(&r, 404, "not_found");
    }
    // Deleting the group takes its profiles along.
    let r = s.delete(&format!("/api/v1/groups/{G}?cascade=true")).await;
    assert_eq!(r.status(), 204, "{}", r.body);
    problem(
        &s.get(&format!("{}/Reception", profiles())).await,
        404,
        "not_found",
    );
}

/// A phone on loopback UDP: answers every request 200 OK and hands on each `Event:` it saw.
async fn udp_phone() -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let get = |name: &str| {
                req.split("\r\n")
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.trim()
                            .eq_ignore_ascii_case(name)
                            .then(|| v.trim().to_string())
                    })
                    .unwrap_or_default()
            };
            let mut resp = String::from("SIP/2.0 200 OK\r\n");
            for h in ["Via", "From", "Call-ID", "CSeq"] {
                resp.push_str(&format!("{h}: {}\r\n", get(h)));
            }
            resp.push_str(&format!(
                "To: {};tag=kp1\r\nContent-Length: 0\r\n\r\n",
                get("To")
            ));
            let _ = sock.send_to(resp.as_bytes(), from).await;
            let _ = tx.send(get("Event"));
        }
    });
    (port, rx)
}

async fn next_event(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(std::time::Duration::from_secs(60), rx.recv())
        .await
        .expect("a NOTIFY arrives")
        .expect("the phone runs")
}

#[tokio::test]
async fn a_phone_showing_a_renamed_user_on_blf_gets_a_resync_notify() {
    let s = TestServer::start_with(|c| {
        c.sync.debounce_ms = 200;
        c.sync.ack_timeout_s = 600;
    })
    .await;
    setup(&s).await;
    let (port, mut rx) = udp_phone().await;
    let r = s
        .patch(
            &format!("/api/v1/devices/{BACK}"),
            json!({"notify_target": format!("udp:127.0.0.1:{port}")}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.body);
    next_event(&mut rx).await; // the pending work of its creation and the target change
                               // Back shows 5555 only by blf_all: the rename re-syncs it; the T54W reboots on `lines`.
    s.patch(
        &format!("/api/v1/groups/{G}/users/5555"),
        json!({"display_name": "Bob Rock"}),
    )
    .await;
    assert_eq!(next_event(&mut rx).await, "check-sync");
}
