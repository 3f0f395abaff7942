//! Firmware: images uploaded per model, a target per (group, model) rolled out to a share of
//! the group's phones, images served to them on the phone listener (digest, Range, ETag, HEAD,
//! a cap on concurrent downloads), phones turning `current` by their User-Agent, and the
//! roll-out pausing when phones come back on the old version.

mod common;

use common::{digest, TestServer, G};
use reqwest::Method;
use serde_json::{json, Value};

const MODEL: &str = "yealink-t46u";
const OLD: &str = "108.85.0.5";
const NEW: &str = "108.86.0.20";

/// Deterministic bytes of an image (not all equal, so a misplaced range shows).
fn image(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn sha256(b: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, b))
}

fn ua(mac: &str, version: &str) -> String {
    format!("Yealink SIP-T46U {version} {mac}")
}

async fn upload(
    s: &TestServer,
    version: &str,
    bytes: Vec<u8>,
    expected: Option<&str>,
) -> common::Resp {
    let mut req = s
        .client
        .put(format!(
            "{}/api/v1/models/{MODEL}/firmware/{version}",
            s.admin
        ))
        .bearer_auth(&s.token)
        .header("content-type", "application/octet-stream")
        .body(bytes);
    if let Some(x) = expected {
        req = req.header("deskprov-expected-sha256", x);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null);
    common::Resp {
        status,
        body,
        headers,
    }
}

/// Group `G` and `n` ownerless T46U devices 805ec0f000<i>; returns (mac, password) pairs.
async fn fleet(s: &TestServer, n: usize) -> Vec<(String, String)> {
    s.create(
        "/api/v1/groups",
        json!({"id": G, "sip": {"domain": "sip.example.net"}}),
    )
    .await;
    let mut out = vec![];
    for i in 0..n {
        let mac = format!("805ec0f0{i:04x}");
        let d = s
            .create(
                &format!("/api/v1/groups/{G}/devices"),
                json!({"mac": mac, "name": format!("desk {i}"), "model": MODEL}),
            )
            .await;
        out.push((
            mac,
            d["credentials"]["password"].as_str().unwrap().to_string(),
        ));
    }
    out
}

/// The device's main file as the admin preview renders it.
async fn main_file(s: &TestServer, mac: &str) -> String {
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

async fn set_target(s: &TestServer, body: Value) -> common::Resp {
    s.put(&format!("/api/v1/groups/{G}/firmware/{MODEL}"), body)
        .await
}

/// The last change-log entry.
async fn last_change(s: &TestServer) -> Value {
    let r = s.get("/api/v1/changes?limit=1000").await;
    let items = r.body["items"].as_array().cloned().unwrap_or_default();
    items.last().cloned().unwrap_or(Value::Null)
}

fn devices_of(change: &Value) -> Vec<String> {
    let mut v: Vec<String> = change["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// One request on the phone listener as a phone makes it: unauthenticated, then with its
/// digest credentials when challenged.
async fn phone(
    s: &TestServer,
    method: Method,
    path: &str,
    ua: &str,
    creds: Option<(&str, &str)>,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let build = || {
        let mut r = s
            .client
            .request(method.clone(), format!("{}{path}", s.phones))
            .header("user-agent", ua);
        for (k, v) in extra {
            r = r.header(*k, *v);
        }
        r
    };
    let first = build().send().await.unwrap();
    let Some((user, pass)) = creds else {
        return first;
    };
    if first.status() != 401 {
        return first;
    }
    let (realm, nonce) = digest::challenge(first.headers(), "MD5");
    let auth = digest::authorization("MD5", user, pass, &realm, &nonce, method.as_str(), path, 1);
    build().header("authorization", auth).send().await.unwrap()
}

#[tokio::test]
async fn an_uploaded_image_is_stored_by_its_digest_listed_and_logged() {
    let s = TestServer::start_with(|c| c.firmware.max_bytes = 4 << 20).await;
    let bytes = image(3 << 20);
    let sha = sha256(&bytes);
    let r = upload(&s, NEW, bytes.clone(), Some(&sha)).await;
    assert_eq!(r.status(), 201, "{}", r.body);
    assert_eq!(r.body["sha256"], sha);
    assert_eq!(r.body["size"], bytes.len());
    assert_eq!(
        std::fs::read(s.data_dir.join("firmware").join(&sha)).unwrap(),
        bytes,
        "content-addressed at <data_dir>/firmware/<sha256>"
    );
    let change = last_change(&s).await;
    assert_eq!(change["action"], "firmware.upload");
    assert_eq!(change["detail"]["sha256"], sha);

    let list = s.get(&format!("/api/v1/models/{MODEL}/firmware")).await;
    assert_eq!(list.status(), 200);
    let items = list.body.as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["version"], NEW);
    assert_eq!(items[0]["sha256"], sha);
    assert_eq!(items[0]["size"], bytes.len());

    // A wrong expected digest, and an image over max_bytes, leave nothing behind.
    let other = image(1000);
    let r = upload(&s, OLD, other.clone(), Some(&sha)).await;
    assert_eq!(
        (r.status(), r.code()),
        (422, "digest_mismatch"),
        "{}",
        r.body
    );
    let r = upload(&s, OLD, image(5 << 20), None).await;
    assert_eq!(
        (r.status(), r.code()),
        (413, "payload_too_large"),
        "{}",
        r.body
    );
    let files: Vec<_> = std::fs::read_dir(s.data_dir.join("firmware"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(files, vec![sha.clone()]);
    // The same version with other bytes is refused; a targeted image cannot be deleted.
    let r = upload(&s, NEW, other, None).await;
    assert_eq!((r.status(), r.code()), (409, "already_exists"));
    fleet(&s, 1).await;
    assert_eq!(set_target(&s, json!({"version": NEW})).await.status(), 200);
    let r = s
        .delete(&format!("/api/v1/models/{MODEL}/firmware/{NEW}"))
        .await;
    assert_eq!((r.status(), r.code()), (409, "in_use"));
    assert_eq!(
        s.delete(&format!("/api/v1/groups/{G}/firmware/{MODEL}"))
            .await
            .status(),
        204
    );
    assert_eq!(
        s.delete(&format!("/api/v1/models/{MODEL}/firmware/{NEW}"))
            .await
            .status(),
        204
    );
    assert!(!s.data_dir.join("firmware").join(&sha).exists());
}

#[tokio::test]
async fn a_25_percent_target_renders_the_upgrade_only_for_its_share_of_the_groups_phones() {
    let s = TestServer::start().await;
    let devices = fleet(&s, 40).await;
    assert_eq!(upload(&s, NEW, image(4096), None).await.status(), 201);
    let r = set_target(&s, json!({"version": NEW, "percent": 25})).await;
    assert_eq!(r.status(), 200, "{}", r.body);
    // The URL is the phone listener's base URL (`[phones] base_url`) with the image's path.
    let setting = |mac: &str| format!("/firmware/{mac}/{NEW}.rom\n");

    let mut quarter = vec![];
    for (mac, _) in &devices {
        let text = main_file(&s, mac).await;
        if text.contains("static.firmware.url") {
            assert!(text.contains(&setting(mac)), "{text}");
            quarter.push(mac.clone());
        }
    }
    assert!(
        (4..=16).contains(&quarter.len()),
        "about a quarter of 40 phones, not {}",
        quarter.len()
    );
    // The change touched exactly the phones whose file changed.
    let change = last_change(&s).await;
    assert_eq!(change["action"], "firmware_target.set");
    assert_eq!(devices_of(&change), quarter);

    // 25 -> 50 keeps the first quarter and touches only the phones it adds.
    set_target(&s, json!({"version": NEW, "percent": 50})).await;
    let mut half = vec![];
    for (mac, _) in &devices {
        if main_file(&s, mac).await.contains("static.firmware.url") {
            half.push(mac.clone());
        }
    }
    assert!(quarter.iter().all(|m| half.contains(m)));
    assert!(half.len() > quarter.len());
    let added: Vec<String> = half
        .iter()
        .filter(|m| !quarter.contains(m))
        .cloned()
        .collect();
    assert_eq!(devices_of(&last_change(&s).await), added);

    // A pilot outside the share is in; the devices' views show their state.
    let outside = devices
        .iter()
        .map(|(m, _)| m.clone())
        .find(|m| !half.contains(m))
        .unwrap();
    set_target(
        &s,
        json!({"version": NEW, "percent": 50, "pilots": [outside]}),
    )
    .await;
    assert!(main_file(&s, &outside).await.contains(&setting(&outside)));
    assert_eq!(devices_of(&last_change(&s).await), vec![outside.clone()]);
    let left_out = devices
        .iter()
        .map(|(m, _)| m.clone())
        .find(|m| !half.contains(m) && *m != outside)
        .unwrap();
    let v = s.get(&format!("/api/v1/devices/{left_out}")).await.body;
    assert_eq!(
        v["firmware"],
        json!({"running": null, "target": NEW, "state": "behind"})
    );
    let v = s.get(&format!("/api/v1/devices/{outside}")).await.body;
    assert_eq!(v["firmware"]["state"], "upgrading");
    // A deleted device is no pilot any more.
    assert_eq!(
        s.delete(&format!("/api/v1/devices/{outside}"))
            .await
            .status(),
        204
    );
    let t = s
        .get(&format!("/api/v1/groups/{G}/firmware/{MODEL}"))
        .await
        .body;
    assert_eq!(t["pilots"], json!([]));
}

#[tokio::test]
async fn a_ranged_download_resumed_mid_file_gives_identical_bytes() {
    let s = TestServer::start().await;
    let devices = fleet(&s, 2).await;
    let bytes = image(1 << 20);
    let sha = sha256(&bytes);
    upload(&s, NEW, bytes.clone(), None).await;
    let (mac, pass) = &devices[0];
    let (other, other_pass) = &devices[1];
    set_target(&s, json!({"version": NEW, "percent": 0, "pilots": [mac]})).await;
    let path = format!("/firmware/{mac}/{NEW}.rom");
    let agent = ua(mac, OLD);

    // Without credentials the image is challenged like the phone's configuration.
    let r = phone(&s, Method::GET, &path, &agent, None, &[]).await;
    assert_eq!(r.status(), 401);

    let half = bytes.len() / 2;
    let first_range = format!("bytes=0-{}", half - 1);
    let r = phone(
        &s,
        Method::GET,
        &path,
        &agent,
        Some((mac, pass)),
        &[("range", &first_range)],
    )
    .await;
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes 0-{}/{}", half - 1, bytes.len()).as_str()
    );
    assert_eq!(r.headers()["etag"], format!("\"{sha}\"").as_str());
    let mut got = r.bytes().await.unwrap().to_vec();
    assert_eq!(got.len(), half);
    // The download breaks off here; the phone resumes from where it stopped.
    let rest = format!("bytes={half}-");
    let etag = format!("\"{sha}\"");
    let r = phone(
        &s,
        Method::GET,
        &path,
        &agent,
        Some((mac, pass)),
        &[("range", &rest), ("if-range", &etag)],
    )
    .await;
    assert_eq!(r.status(), 206);
    got.extend_from_slice(&r.bytes().await.unwrap());
    assert!(got == bytes, "the resumed download differs from the image");

    let r = phone(&s, Method::GET, &path, &agent, Some((mac, pass)), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert!(r.bytes().await.unwrap() == bytes);
    let r = phone(&s, Method::HEAD, &path, &agent, Some((mac, pass)), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-length"],
        bytes.len().to_string().as_str()
    );
    // A range of other bytes (If-Range with another ETag) gets the whole image.
    let r = phone(
        &s,
        Method::GET,
        &path,
        &agent,
        Some((mac, pass)),
        &[("range", &rest), ("if-range", "\"0000\"")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), bytes.len());
    let r = phone(
        &s,
        Method::GET,
        &path,
        &agent,
        Some((mac, pass)),
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(r.status(), 304);
    let past = format!("bytes={}-", bytes.len());
    let r = phone(
        &s,
        Method::GET,
        &path,
        &agent,
        Some((mac, pass)),
        &[("range", &past)],
    )
    .await;
    assert_eq!(r.status(), 416);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes */{}", bytes.len()).as_str()
    );

    // A phone outside the roll-out, and another phone's credentials, get nothing.
    let theirs = format!("/firmware/{other}/{NEW}.rom");
    let r = phone(
        &s,
        Method::GET,
        &theirs,
        &ua(other, OLD),
        Some((other, other_pass)),
        &[],
    )
    .await;
    assert_eq!(r.status(), 404);
    let r = phone(
        &s,
        Method::GET,
        &path,
        &agent,
        Some((other, other_pass)),
        &[],
    )
    .await;
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn downloads_over_the_cap_are_answered_503_with_retry_after() {
    let s = TestServer::start_with(|c| c.firmware.max_downloads = 1).await;
    let devices = fleet(&s, 1).await;
    let (mac, pass) = &devices[0];
    // Larger than the socket buffers: the first download cannot finish while nobody reads it.
    upload(&s, NEW, image(16 << 20), None).await;
    set_target(&s, json!({"version": NEW})).await;
    let path = format!("/firmware/{mac}/{NEW}.rom");
    let agent = ua(mac, OLD);
    let held = phone(&s, Method::GET, &path, &agent, Some((mac, pass)), &[]).await;
    assert_eq!(held.status(), 200);
    let r = phone(&s, Method::GET, &path, &agent, Some((mac, pass)), &[]).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "30");
    // Configuration fetches are not capped.
    let cfg = format!("/{mac}.cfg");
    let r = phone(&s, Method::GET, &cfg, &agent, Some((mac, pass)), &[]).await;
    assert_eq!(r.status(), 200);
    // Once the first download is read to the end its slot is free again.
    assert_eq!(held.bytes().await.unwrap().len(), 16 << 20);
    let r = phone(
        &s,
        Method::GET,
        &path,
        &agent,
        Some((mac, pass)),
        &[("range", "bytes=0-9")],
    )
    .await;
    assert_eq!(r.status(), 206);
}

#[tokio::test]
async fn a_device_whose_user_agent_reports_the_target_version_turns_current() {
    let s = TestServer::start().await;
    let devices = fleet(&s, 2).await;
    upload(&s, NEW, image(4096), None).await;
    set_target(&s, json!({"version": NEW})).await;
    let (mac, pass) = &devices[0];
    let cfg = format!("/{mac}.cfg");
    let r = phone(&s, Method::GET, &cfg, &ua(mac, OLD), Some((mac, pass)), &[]).await;
    assert_eq!(r.status(), 200);
    let v = s.get(&format!("/api/v1/devices/{mac}")).await.body;
    assert_eq!(
        v["firmware"],
        json!({"running": OLD, "target": NEW, "state": "upgrading"})
    );
    // The phone upgraded and fetches its file again, reporting the new version.
    let r = phone(&s, Method::GET, &cfg, &ua(mac, NEW), Some((mac, pass)), &[]).await;
    assert_eq!(r.status(), 200);
    let v = s.get(&format!("/api/v1/devices/{mac}")).await.body;
    assert_eq!(
        v["firmware"],
        json!({"running": NEW, "target": NEW, "state": "current"})
    );

    let sum = s.get(&format!("/api/v1/groups/{G}/firmware")).await;
    assert_eq!(sum.status(), 200);
    let m = &sum.body["models"][0];
    assert_eq!(m["model"], MODEL);
    assert_eq!(
        m["target"]["devices"],
        json!({"current": 1, "upgrading": 1, "behind": 0, "failed": 0})
    );
    assert_eq!(m["running"], json!({NEW: 1, "unknown": 1}));
}

#[tokio::test]
async fn the_roll_out_pauses_when_phones_keep_coming_back_on_the_old_version() {
    let s = TestServer::start_with(|c| {
        c.firmware.upgrade_window_s = 0;
        c.firmware.failure_threshold = 2;
    })
    .await;
    let devices = fleet(&s, 3).await;
    upload(&s, NEW, image(4096), None).await;
    set_target(&s, json!({"version": NEW})).await;
    let target = format!("/api/v1/groups/{G}/firmware/{MODEL}");
    // Each fetch after the one that offered the image, on the old version, is a failure
    // (the window is 0 s here).
    for (mac, pass) in &devices[..2] {
        let cfg = format!("/{mac}.cfg");
        for _ in 0..2 {
            let r = phone(&s, Method::GET, &cfg, &ua(mac, OLD), Some((mac, pass)), &[]).await;
            assert_eq!(r.status(), 200);
        }
    }
    // The pause is committed off the phone's request: wait for it to land.
    let mut view = Value::Null;
    for _ in 0..200 {
        view = s.get(&target).await.body;
        if !view["paused"].is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(
        !view["paused"].is_null(),
        "the roll-out did not pause: {view}"
    );
    let mut failed: Vec<&str> = devices[..2].iter().map(|(m, _)| m.as_str()).collect();
    failed.sort();
    assert_eq!(view["paused"]["failed"], json!(failed));
    assert_eq!(
        view["devices"],
        json!({"current": 0, "upgrading": 0, "behind": 1, "failed": 2})
    );
    let change = last_change(&s).await;
    assert_eq!(change["action"], "firmware_target.pause");
    assert_eq!(change["actor"], "firmware-guard");
    // Paused: no phone is offered the image any more.
    for (mac, _) in &devices {
        assert!(!main_file(&s, mac).await.contains("static.firmware.url"));
    }
    let v = s
        .get(&format!("/api/v1/devices/{}", devices[0].0))
        .await
        .body;
    assert_eq!(v["firmware"]["state"], "failed");

    // Changing the percentage of the same version does not resume it; the admin does.
    set_target(&s, json!({"version": NEW, "percent": 90})).await;
    assert!(!s.get(&target).await.body["paused"].is_null());
    let r = s.post(&format!("{target}/resume"), json!({})).await;
    assert_eq!(r.status(), 200, "{}", r.body);
    assert!(r.body["paused"].is_null());
    assert_eq!(last_change(&s).await["action"], "firmware_target.resume");
}

#[tokio::test]
async fn firmware_records_and_targets_survive_a_backup_and_restore() {
    let a = TestServer::start().await;
    fleet(&a, 2).await;
    upload(&a, NEW, image(4096), None).await;
    set_target(&a, json!({"version": NEW, "percent": 50})).await;
    let r = a
        .client
        .post(format!("{}/api/v1/backup", a.admin))
        .bearer_auth(&a.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bytes = r.bytes().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("restored");
    deskprov::backup::restore(&bytes, &data).unwrap();
    let b = TestServer::start_at(&data, |_| {}).await;
    for path in [
        format!("/api/v1/models/{MODEL}/firmware"),
        format!("/api/v1/groups/{G}/firmware/{MODEL}"),
    ] {
        let (x, y) = (a.get(&path).await, b.get(&path).await);
        assert_eq!(x.status(), 200, "{path}");
        assert_eq!(x.body, y.body, "{path}");
    }
    // The images themselves are not in the backup (documented): copy <data_dir>/firmware.
    assert!(!data.join("firmware").exists());
}
