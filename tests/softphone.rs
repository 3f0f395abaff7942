//! Seed 002 "Configure allowed endpoint" and softphones, over the real HTTPS listeners:
//! `allowed_endpoints` and what desk phones render, third-party credentials, the softphone
//! device kind (server-assigned id), the `linphone` file behind digest, the one-time
//! provisioning link, and the phone side's rules for softphones (no existence oracle, lockout).

mod common;

use common::{fetch_file, phone_get, seed, TestServer, G};
use serde_json::{json, Value};

const UA: &str = "Linphone/5.1.65 (Debian) LinphoneSDK/5.1.65";

async fn softphone(s: &TestServer, owner: &str) -> Value {
    let r = s
        .post(
            &format!("/api/v1/groups/{G}/devices"),
            json!({"name": format!("soft {owner}"), "model": "linphone", "owner": owner}),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.body);
    r.body
}

fn ports(device: &Value) -> Vec<String> {
    device["layout"]["appearances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["line_port"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_endpoints_default_to_all_and_ip_phone_off_takes_the_line_off_desk_phones() {
    let s = TestServer::start().await;
    seed(&s).await;
    let soft = softphone(&s, "1001").await;
    let id = soft["mac"].as_str().unwrap();
    let u = s.get(&format!("/api/v1/groups/{G}/users/1001")).await;
    assert_eq!(
        u.body["allowed_endpoints"],
        json!({"ip_phone": true, "softphone": true, "third_party": true})
    );
    let desk = "/api/v1/devices/0004f2000001";
    assert_eq!(ports(&s.get(desk).await.body), ["6035551212"]);

    let r = s
        .patch(
            &format!("/api/v1/groups/{G}/users/1001"),
            json!({"allowed_endpoints": {"ip_phone": false}}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.body);
    assert_eq!(
        r.body["allowed_endpoints"],
        json!({"ip_phone": false, "softphone": true, "third_party": true})
    );
    // Off the desk phone (its file too), still on the softphone.
    assert!(ports(&s.get(desk).await.body).is_empty());
    let file = s
        .client
        .get(format!("{}{desk}/files/0004f2000001-deskprov.cfg", s.admin))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(file.status(), 200);
    assert!(!file.text().await.unwrap().contains("6035551212"));
    assert_eq!(
        ports(&s.get(&format!("/api/v1/devices/{id}")).await.body),
        ["6035551212"]
    );
    // An unknown flag is refused (the object is closed).
    let r = s
        .patch(
            &format!("/api/v1/groups/{G}/users/1001"),
            json!({"allowed_endpoints": {"mobile": true}}),
        )
        .await;
    assert_eq!((r.status(), r.code()), (422, "validation"));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_party_credentials_are_shown_once_and_refused_with_endpoint_not_allowed_when_off() {
    let s = TestServer::start().await;
    seed(&s).await;
    let path = format!("/api/v1/groups/{G}/users/5555/third-party-credentials");
    let r = s.post(&path, json!({})).await;
    assert_eq!(r.status(), 200, "{}", r.body);
    assert_eq!(r.body["username"], "ZZZ1900111-01_5555");
    assert_eq!(r.body["auth_username"], "ZZZ1900111-01_5555");
    assert_eq!(r.body["domain"], "sip.example.net");
    assert_eq!(r.body["proxy"], "proxy.example.net");
    let pw = r.body["password"].as_str().unwrap().to_string();
    assert!(pw.len() >= 16);
    // Never on reads; a second request gives another password (rotation).
    let u = s.get(&format!("/api/v1/groups/{G}/users/5555")).await;
    assert!(!u.body.to_string().contains(&pw));
    let again = s.post(&path, json!({})).await;
    assert_ne!(again.body["password"].as_str().unwrap(), pw);

    s.patch(
        &format!("/api/v1/groups/{G}/users/5555"),
        json!({"allowed_endpoints": {"third_party": false}}),
    )
    .await;
    let r = s.post(&path, json!({})).await;
    assert_eq!((r.status(), r.code()), (409, "endpoint_not_allowed"));
    assert_eq!(
        r.headers["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    assert_eq!(r.body["field"], "allowed_endpoints.third_party");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_softphone_gets_an_id_and_credentials_and_fetches_its_linphone_file_with_digest() {
    let s = TestServer::start().await;
    seed(&s).await;
    s.patch(
        &format!("/api/v1/groups/{G}/users/1001"),
        json!({"sip": {"password": "ada-sip-password-0123"}}),
    )
    .await;
    let d = softphone(&s, "1001").await;
    let id = d["mac"].as_str().unwrap().to_string();
    assert!(id.starts_with("02") && id.len() == 12, "{id}");
    assert_eq!(d["kind"], "softphone");
    assert_eq!(d["files"], json!([format!("linphone-{id}.xml")]));
    assert_eq!(d["credentials"]["username"], id);
    let pw = d["credentials"]["password"].as_str().unwrap().to_string();
    // A desk phone still needs its MAC; a softphone refuses a vendor MAC.
    let r = s
        .post(
            &format!("/api/v1/groups/{G}/devices"),
            json!({"model": "yealink-t54w"}),
        )
        .await;
    assert_eq!((r.status(), r.body["field"].as_str()), (422, Some("mac")));
    let r = s
        .post(
            &format!("/api/v1/groups/{G}/devices"),
            json!({"mac": "0004f2000099", "model": "linphone"}),
        )
        .await;
    assert_eq!((r.status(), r.body["field"].as_str()), (422, Some("mac")));

    let file = format!("/linphone-{id}.xml");
    let anon = phone_get(&s.client, &s.phones, &file, UA, None, "MD5", &[]).await;
    assert_eq!(anon.status(), 401);
    let r = phone_get(
        &s.client,
        &s.phones,
        &file,
        UA,
        Some((&id, &pw)),
        "SHA-256",
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/xml"
    );
    let body = r.text().await.unwrap();
    assert!(body.contains(r#"<section name="proxy_0">"#), "{body}");
    assert!(body.contains("&lt;sip:6035551212@sip.example.net&gt;"));
    assert!(body.contains(r#"<entry name="passwd" overwrite="true">ada-sip-password-0123</entry>"#));
    // The fetch of the main file confirms the revision: the device is in sync.
    let v = s.get(&format!("/api/v1/devices/{id}")).await.body;
    assert_eq!(v["state"], "in_sync");
    assert_eq!(v["applied_revision"], v["revision"]);
    // A shared appearance becomes the second account.
    let r = s
        .post(
            &format!("/api/v1/groups/{G}/users/5555/shared-call-appearances"),
            json!({"device": id}),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.body);
    let (code, body) = fetch_file(&s, &file, UA, &id, &pw).await;
    assert_eq!(code, 200);
    assert!(body.contains(r#"<section name="proxy_1">"#));
    assert!(body.contains("ZZZ1900111-01_5555_sca1"));
    assert!(body.contains(r#"<entry name="refkey" overwrite="true">shared-2</entry>"#));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provisioning_link_works_as_is_and_replaces_the_previous_credentials() {
    let s = TestServer::start().await;
    seed(&s).await;
    let d = softphone(&s, "1001").await;
    let id = d["mac"].as_str().unwrap().to_string();
    let created_pw = d["credentials"]["password"].as_str().unwrap().to_string();
    let link = s
        .post(
            &format!("/api/v1/devices/{id}/provisioning-link"),
            json!({}),
        )
        .await;
    assert_eq!(link.status(), 200, "{}", link.body);
    let url = link.body["url"].as_str().unwrap().to_string();
    let pw = link.body["password"].as_str().unwrap().to_string();
    let port = s.phones.rsplit(':').next().unwrap();
    // https://<id>:<password>@<host>:<phone port>/linphone-<id>.xml
    let parsed = reqwest::Url::parse(&url).unwrap();
    assert_eq!(parsed.scheme(), "https");
    assert_eq!(parsed.username(), id);
    assert_eq!(parsed.password(), Some(pw.as_str()));
    assert_eq!(parsed.port().map(|p| p.to_string()).as_deref(), Some(port));
    assert_eq!(parsed.path(), format!("/linphone-{id}.xml"));
    assert!(!link.body["file_url"].as_str().unwrap().contains(&pw));
    // The credentials in the link answer the challenge; the ones shown at creation no longer do.
    let (code, _) = fetch_file(&s, parsed.path(), UA, &id, &pw).await;
    assert_eq!(code, 200);
    let (code, _) = fetch_file(&s, parsed.path(), UA, &id, &created_pw).await;
    assert_eq!(code, 401);
    // A new link ends the old one.
    let next = s
        .post(
            &format!("/api/v1/devices/{id}/provisioning-link"),
            json!({}),
        )
        .await;
    assert_ne!(next.body["password"], link.body["password"]);
    let (code, _) = fetch_file(&s, parsed.path(), UA, &id, &pw).await;
    assert_eq!(code, 401);
    // Desk phones get none.
    let r = s
        .post("/api/v1/devices/0004f2000001/provisioning-link", json!({}))
        .await;
    assert_eq!((r.status(), r.body["field"].as_str()), (422, Some("model")));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_softphone_id_and_a_wrong_password_get_the_same_answer_and_count_to_the_lockout()
{
    let s = TestServer::start_with(|c| c.phones.auth_fail_limit = 3).await;
    seed(&s).await;
    let d = softphone(&s, "1001").await;
    let id = d["mac"].as_str().unwrap().to_string();
    let pw = d["credentials"]["password"].as_str().unwrap().to_string();
    let unknown = "02ffffffffff";
    let wrong = phone_get(
        &s.client,
        &s.phones,
        &format!("/linphone-{id}.xml"),
        UA,
        Some((&id, "not-the-password")),
        "MD5",
        &[],
    )
    .await;
    let nobody = phone_get(
        &s.client,
        &s.phones,
        &format!("/linphone-{unknown}.xml"),
        UA,
        Some((unknown, "not-the-password")),
        "MD5",
        &[],
    )
    .await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(nobody.status(), wrong.status());
    let names = |r: &reqwest::Response| {
        let mut v: Vec<String> = r.headers().keys().map(|k| k.to_string()).collect();
        v.retain(|k| k != "date" && k != "x-request-id");
        v.sort();
        v
    };
    assert_eq!(names(&wrong), names(&nobody));
    assert_eq!(
        wrong.headers().get_all("www-authenticate").iter().count(),
        nobody.headers().get_all("www-authenticate").iter().count()
    );
    // Two more failures for this id reach the limit (3); then even the right password is
    // locked out.
    for _ in 0..2 {
        let (code, _) =
            fetch_file(&s, &format!("/linphone-{id}.xml"), UA, &id, "still-wrong").await;
        assert_eq!(code, 401);
    }
    let r = phone_get(
        &s.client,
        &s.phones,
        &format!("/linphone-{id}.xml"),
        UA,
        Some((&id, &pw)),
        "MD5",
        &[],
    )
    .await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_import_carry_allowed_endpoints_and_softphones() {
    let a = TestServer::start().await;
    seed(&a).await;
    a.patch(
        &format!("/api/v1/groups/{G}/users/5555"),
        json!({"allowed_endpoints": {"softphone": false, "third_party": false}}),
    )
    .await;
    let d = softphone(&a, "1001").await;
    let id = d["mac"].as_str().unwrap().to_string();
    let doc = a.get("/api/v1/export?secrets=true").await;
    assert_eq!(doc.status(), 200);
    let b = TestServer::start().await;
    let r = b.post("/api/v1/import", doc.body.clone()).await;
    assert!(r.status() < 300, "{}", r.body);
    let u = b.get(&format!("/api/v1/groups/{G}/users/5555")).await;
    assert_eq!(
        u.body["allowed_endpoints"],
        json!({"ip_phone": true, "softphone": false, "third_party": false})
    );
    let v = b.get(&format!("/api/v1/devices/{id}")).await;
    assert_eq!(
        (v.status(), v.body["kind"].as_str()),
        (200, Some("softphone"))
    );
    assert_eq!(b.get("/api/v1/export?secrets=true").await.body, doc.body);
    a.shutdown().await;
    b.shutdown().await;
}
