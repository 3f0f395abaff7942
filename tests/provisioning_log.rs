//! The provisioning log per device (`GET /api/v1/devices/{mac}/log`) over real HTTPS: every
//! fetch and upload with its status, refusals with their reason (shown to the admin, never to
//! the phone), bounded per device, kept across a restart, without secrets.

mod common;

use common::phones::{group_with_users, OnePhone};
use common::{phone_get, TestServer, G};
use serde_json::{json, Value};

async fn log(s: &TestServer, mac: &str, query: &str) -> Vec<Value> {
    let r = s.get(&format!("/api/v1/devices/{mac}/log{query}")).await;
    assert_eq!(r.status(), 200, "{}", r.body);
    r.body["items"].as_array().unwrap().clone()
}

/// (status, reason) of each entry, newest first.
fn outcomes(entries: &[Value]) -> Vec<(u64, Option<String>)> {
    entries
        .iter()
        .map(|e| {
            (
                e["status"].as_u64().unwrap(),
                e["reason"].as_str().map(str::to_string),
            )
        })
        .collect()
}

fn reason(r: &str) -> Option<String> {
    Some(r.to_string())
}

#[tokio::test]
async fn a_good_fetch_is_logged_with_its_file_address_user_agent_status_and_bytes() {
    let p = OnePhone::start().await;
    let r = p.fetch().await;
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    let entries = log(&p.s, OnePhone::MAC, "").await;
    // The challenge first (no credentials yet), then the file: newest first.
    assert_eq!(
        outcomes(&entries),
        [(200, None), (401, reason("no_credentials"))]
    );
    let e = &entries[0];
    assert_eq!(e["file"], "805ec0000001.cfg");
    assert_eq!(e["method"], "GET");
    assert_eq!(e["ip"], "127.0.0.1");
    assert_eq!(e["user_agent"], OnePhone::UA);
    assert_eq!(e["bytes"], json!(body.len()));
    assert!(e["at"].as_str().unwrap().ends_with('Z'), "{e}");
    assert!(e["id"].as_u64().unwrap() > entries[1]["id"].as_u64().unwrap());
    // An upload is logged too, with the bytes received.
    assert_eq!(
        p.upload("805ec0000001-app.log", b"boot ok".to_vec())
            .await
            .status(),
        204
    );
    let entries = log(&p.s, OnePhone::MAC, "?limit=1").await;
    assert_eq!(
        (
            entries[0]["method"].clone(),
            entries[0]["status"].clone(),
            entries[0]["bytes"].clone()
        ),
        (json!("PUT"), json!(204), json!(7))
    );
}

#[tokio::test]
async fn the_same_request_again_is_one_entry_with_its_count_and_last_time() {
    let p = OnePhone::start().await;
    // One digest exchange, then the same nonce again (a phone polling on one connection).
    let url = format!("{}{}", p.s.phones, OnePhone::MAIN);
    let first = p.s.client.get(&url).header("user-agent", OnePhone::UA);
    let challenge = first.send().await.unwrap();
    assert_eq!(challenge.status(), 401);
    let (realm, nonce) = common::digest::challenge(challenge.headers(), "MD5");
    for nc in 1..=3 {
        let auth = p.authorization("GET", &realm, &nonce, nc);
        let r = p.s.client.get(&url).header("user-agent", OnePhone::UA);
        let r = r.header("authorization", auth).send().await.unwrap();
        assert_eq!(r.status(), 200, "fetch {nc}");
    }
    let entries = log(&p.s, OnePhone::MAC, "").await;
    assert_eq!(
        outcomes(&entries),
        [(200, None), (401, reason("no_credentials"))]
    );
    let e = &entries[0];
    assert_eq!(e["count"], 3, "{e}");
    let (at, last) = (e["at"].as_str().unwrap(), e["last_at"].as_str().unwrap());
    assert!(last >= at, "{e}");
    assert!(
        entries[1].get("count").is_none(),
        "a single request has no count"
    );
    // Something else in between starts a new entry: the 401 of a new exchange, then its 200.
    assert_eq!(p.fetch().await.status(), 200);
    let entries = log(&p.s, OnePhone::MAC, "").await;
    assert_eq!(
        outcomes(&entries),
        [
            (200, None),
            (401, reason("no_credentials")),
            (200, None),
            (401, reason("no_credentials"))
        ]
    );
    assert!(entries[0].get("count").is_none(), "{}", entries[0]);
    assert_eq!(entries[2]["count"], 3);
}

#[tokio::test]
async fn wrong_credentials_and_a_network_not_allowed_are_logged_with_their_reason_not_told_the_phone(
) {
    let p = OnePhone::start().await;
    let wrong = p.fetch_with("not-the-password-1").await;
    assert_eq!(wrong.status(), 401);
    let wrong_body = wrong.text().await.unwrap();
    assert_eq!(
        outcomes(&log(&p.s, OnePhone::MAC, "?limit=1").await),
        [(401, reason("wrong_credentials"))]
    );

    let r =
        p.s.patch(
            &format!("/api/v1/groups/{G}"),
            json!({"provisioning": {"allowed_cidrs": ["10.0.0.0/8"]}}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.body);
    // The right credentials, from outside the group's networks.
    let refused = p.fetch().await;
    assert_eq!(refused.status(), 401);
    assert_eq!(
        refused.text().await.unwrap(),
        wrong_body,
        "the phone's answer does not say why"
    );
    assert_eq!(
        outcomes(&log(&p.s, OnePhone::MAC, "?limit=1").await),
        [(401, reason("network_not_allowed"))]
    );
}

#[tokio::test]
async fn an_unknown_mac_is_logged_under_that_mac_for_platform_tokens_only() {
    let s = TestServer::start().await;
    group_with_users(&s).await;
    let r = phone_get(
        &s.client,
        &s.phones,
        "/805ec0000099.cfg",
        "Yealink SIP-T54W 96.86.0.70 805ec0000099",
        Some(("805ec0000099", "some-password-1")),
        "MD5",
        &[],
    )
    .await;
    assert_eq!(r.status(), 401);
    let entries = log(&s, "805ec0000099", "").await;
    // Both requests (without and with credentials) were refused alike: one entry, twice.
    assert_eq!(outcomes(&entries), [(401, reason("unknown_mac"))]);
    assert_eq!(entries[0]["count"], 2);
    assert_eq!(entries[0]["file"], "805ec0000099.cfg");
    // A group token, even of the group the MAC may later join, does not see it.
    let t = s
        .create("/api/v1/tokens", json!({"name": "g", "group": G}))
        .await;
    let r = s
        .call_as(
            t["token"].as_str(),
            reqwest::Method::GET,
            "/api/v1/devices/805ec0000099/log",
            None,
        )
        .await;
    assert_eq!((r.status(), r.code()), (404, "not_found"), "{}", r.body);
    // Nor another group's device's log.
    s.create(
        "/api/v1/groups",
        json!({"id": "OTHER", "sip": {"domain": "o.example.net"}}),
    )
    .await;
    let d = s
        .create(
            "/api/v1/groups/OTHER/devices",
            json!({"mac": "805ec0000077", "model": "yealink-t54w"}),
        )
        .await;
    assert_eq!(d["mac"], "805ec0000077");
    let r = s
        .call_as(
            t["token"].as_str(),
            reqwest::Method::GET,
            "/api/v1/devices/805ec0000077/log",
            None,
        )
        .await;
    assert_eq!(r.status(), 404, "{}", r.body);
}

#[tokio::test]
async fn the_log_is_bounded_paged_newest_first_and_holds_no_secret() {
    let p = OnePhone::start_with(|c| c.phones.log_entries = 3).await;
    for _ in 0..3 {
        assert_eq!(p.fetch().await.status(), 200);
    }
    let entries = log(&p.s, OnePhone::MAC, "").await;
    assert_eq!(
        outcomes(&entries),
        [(200, None), (401, reason("no_credentials")), (200, None)],
        "the 3 newest of 6"
    );
    let first =
        p.s.get(&format!("/api/v1/devices/{}/log?limit=2", OnePhone::MAC))
            .await
            .body;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let before = first["next_before"].as_u64().unwrap();
    let rest = log(&p.s, OnePhone::MAC, &format!("?before={before}")).await;
    assert_eq!(rest, entries[2..].to_vec());
    let text = serde_json::to_string(&entries).unwrap();
    for secret in [p.password.as_str(), "nonce", "response", "Digest"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    // Errors are problem+json.
    let r =
        p.s.get(&format!("/api/v1/devices/{}/log?limit=0", OnePhone::MAC))
            .await;
    assert_eq!((r.status(), r.code()), (422, "validation"), "{}", r.body);
    let r = p.s.get("/api/v1/devices/not-a-mac/log").await;
    assert_eq!(r.status(), 404, "{}", r.body);
}

#[tokio::test]
async fn the_log_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_at(dir.path(), |_| {}).await;
    group_with_users(&s).await;
    let d = s
        .create(
            &format!("/api/v1/groups/{G}/devices"),
            json!({"mac": OnePhone::MAC, "name": "desk", "model": "yealink-t54w", "owner": "1001"}),
        )
        .await;
    let pw = d["credentials"]["password"].as_str().unwrap().to_string();
    assert_eq!(fetch(&s, &pw).await.status(), 200);
    let before = log(&s, OnePhone::MAC, "").await;
    assert_eq!(before.len(), 2);
    s.shutdown().await;

    let s = TestServer::start_at(dir.path(), |_| {}).await;
    assert_eq!(log(&s, OnePhone::MAC, "").await, before);
    // New entries go on top, with higher ids.
    assert_eq!(fetch(&s, &pw).await.status(), 200);
    let after = log(&s, OnePhone::MAC, "").await;
    assert_eq!(after.len(), 4);
    assert_eq!(after[2..], before[..]);
    assert!(after[1]["id"].as_u64() > before[0]["id"].as_u64());
}

async fn fetch(s: &TestServer, pw: &str) -> reqwest::Response {
    phone_get(
        &s.client,
        &s.phones,
        OnePhone::MAIN,
        OnePhone::UA,
        Some((OnePhone::MAC, pw)),
        "MD5",
        &[],
    )
    .await
}

#[tokio::test]
async fn a_locked_out_fetch_is_logged_as_locked_out() {
    let p = OnePhone::start_with(|c| c.phones.auth_fail_limit = 2).await;
    for _ in 0..3 {
        p.fetch_with("not-the-password-1").await;
    }
    // The right credentials now: still refused, and the log says why.
    let r = p.fetch().await;
    assert_eq!(r.status(), 429);
    assert_eq!(
        outcomes(&log(&p.s, OnePhone::MAC, "?limit=1").await),
        [(429, reason("locked_out"))]
    );
}

#[tokio::test]
async fn a_certificate_for_another_mac_is_logged_as_certificate_mac_mismatch() {
    // A vendor CA the server trusts, and a phone certificate naming another MAC in its CN.
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "Test Phone Vendor CA");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = p.self_signed(&ca_key).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "805EC0000002");
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("vendor-ca.pem");
    std::fs::write(&bundle, ca.pem()).unwrap();
    let b = bundle.display().to_string();
    let p = OnePhone::start_with(move |c| c.tls.client_ca = vec![b]).await;
    let server_ca = std::fs::read(p.s.data_dir.join("tls/ca.pem")).unwrap();
    let phone = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&server_ca).unwrap())
        .identity(
            reqwest::Identity::from_pem(
                format!("{}{}", cert.pem(), key.serialize_pem()).as_bytes(),
            )
            .unwrap(),
        )
        .build()
        .unwrap();
    let r = phone
        .get(format!("{}{}", p.s.phones, OnePhone::MAIN))
        .header("user-agent", OnePhone::UA)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        outcomes(&log(&p.s, OnePhone::MAC, "?limit=1").await),
        [(401, reason("certificate_mac_mismatch"))]
    );
}

#[tokio::test]
async fn a_deleted_device_takes_its_log_with_it() {
    let p = OnePhone::start().await;
    assert_eq!(p.fetch().await.status(), 200);
    assert_eq!(log(&p.s, OnePhone::MAC, "").await.len(), 2);
    let r =
        p.s.delete(&format!("/api/v1/devices/{}", OnePhone::MAC))
            .await;
    assert_eq!(r.status(), 204, "{}", r.body);
    // Provisioned again (here in the same group): a log of its own, not the old device's.
    let d =
        p.s.create(
            &format!("/api/v1/groups/{G}/devices"),
            json!({"mac": OnePhone::MAC, "name": "desk", "model": "yealink-t54w"}),
        )
        .await;
    assert_eq!(d["mac"], OnePhone::MAC);
    assert_eq!(log(&p.s, OnePhone::MAC, "").await, Vec::<Value>::new());
}
