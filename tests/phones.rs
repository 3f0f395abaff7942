//! The phone-facing server over real HTTPS: every model's files with its real User-Agent and
//! digest auth, the same 401 for unknown MACs / wrong credentials / wrong certificates, ETags,
//! mTLS with the MAC in CN, SAN and Cisco's S=, policies, lockout, uploads, hostile paths, and
//! template uploads that must validate before they serve.

mod common;

use common::phones::{device, group_with_users, OnePhone};
use common::{digest, phone_get, TestServer, G};
use deskprov::catalog::Catalog;
use deskprov::domain::Mac;
use serde_json::{json, Value};

/// A real User-Agent per model (VENDORS.md), with the device's MAC where the family sends one.
fn user_agent(model: &str, mac: &Mac) -> String {
    let dashes = mac.colon().replace(':', "-").to_uppercase();
    match model {
        "linphone" => "Linphone/5.1.65 (Debian) LinphoneSDK/5.1.65".into(),
        "polycom-vvx-450" => "FileTransport PolycomVVX-VVX_450-UA/6.3.0.14929 Type/Application".into(),
        "polycom-vvx-411" => "FileTransport PolycomVVX-VVX_411-UA/6.4.3.5100 Type/Application".into(),
        "yealink-t54w" => format!("Yealink SIP-T54W 96.86.0.70 {}", mac.colon()),
        "yealink-t46u" => format!("Yealink SIP-T46U 108.86.0.20 {mac}"),
        "yealink-t31p" => format!("Yealink SIP-T31P 124.86.0.75 {}", mac.colon()),
        "yealink-t33g" => format!("Yealink SIP-T33G 124.85.257.55 {}", mac.colon()),
        "yealink-t43u" => format!("Yealink SIP-T43U 108.86.0.90 {mac}"),
        "yealink-t48u" => format!("Yealink SIP-T48U 108.86.0.90 {}", mac.colon()),
        "yealink-t53w" => format!("Yealink SIP-T53W 96.86.0.45 {}", mac.colon()),
        "yealink-t57w" => format!("Yealink SIP-T57W 96.87.0.15 {}", mac.colon()),
        "polycom-vvx-150" => "FileTransport PolycomVVX-VVX_150-UA/6.4.3.5100 Type/Application".into(),
        "polycom-vvx-250" => "FileTransport PolycomVVX-VVX_250-UA/6.4.3.5100 Type/Application".into(),
        "polycom-vvx-350" => "FileTransport PolycomVVX-VVX_350-UA/6.4.3.5100 Type/Application".into(),
        "polycom-edge-e350" => "FileTransport PolyEdge-Edge_E350-UA/8.0.0.15602 Type/Application".into(),
        "polycom-edge-e450" => "FileTransport PolyEdge-Edge_E450-UA/8.0.0.15602 Type/Application".into(),
        "cisco-cp-8851-3pcc" => format!("Cisco-CP-8851-3PCC/11.3.1 ({mac})"),
        "grandstream-grp2614" => format!("Grandstream Model HW GRP2614 SW 1.0.5.67 DevId {mac}"),
        "snom-d785" => format!("Mozilla/4.0 (compatible; snomD785-SIP 10.1.169.16 2010.12-00001-gd311851f1 (Feb 25 2019 - 14:19:43) {} SXM:0 UXM:0 UXMC:0)", mac.upper()),
        "fanvil-x6u" => format!("Fanvil X6U Pro 0.0.10 {mac}"),
        "mitel-6867i" => format!("Aastra6867i MAC:{dashes} V:4.1.0.128-SIP"),
        // Every Cisco MPP and Grandstream model (more in tests/vendor_cisco.rs, vendor_grandstream.rs).
        m if m.starts_with("cisco-cp-") => format!("Cisco-{}/11.3.1 ({mac})", m["cisco-".len()..].to_uppercase()),
        m if m.starts_with("grandstream-") => format!("Grandstream Model HW {} SW 1.0.5.67 DevId {mac}", m["grandstream-".len()..].to_uppercase()),
        // Every Snom, Fanvil and Mitel model (more in tests/vendor_snom.rs, vendor_fanvil.rs, vendor_mitel.rs).
        m if m.starts_with("snom-") => format!("Mozilla/4.0 (compatible; snom{}-SIP 10.1.152.12 2010.12-00001-gd311851f1 (Feb 25 2019 - 14:19:43) {} SXM:0 UXM:0 UXMC:0)", m["snom-".len()..].to_uppercase(), mac.upper()),
        m if m.starts_with("fanvil-") => format!("Fanvil {} 2.12.16.17 {mac}", m["fanvil-".len()..].to_uppercase()),
        m if m.starts_with("mitel-") => format!("Mitel{} MAC:{dashes} V:5.1.0.2051-SIP", &m["mitel-".len()..]),
        other => panic!("no User-Agent for {other}: add one here"),
    }
}

#[tokio::test]
async fn every_model_fetches_its_files_with_its_user_agent_and_digest() {
    // Every device carries an SCA of 5555: one per model, more than the default limit of 35.
    let s = TestServer::start_with(|c| c.rules.max_sca_per_user = 1000).await;
    group_with_users(&s).await;
    let catalog = Catalog::builtin().unwrap();
    // Models without files fail the fixture test (tests/fixtures.rs).
    let models: Vec<_> = catalog.models().filter(|m| !m.files.is_empty()).collect();
    assert!(
        !models.is_empty(),
        "the built-in catalogue has models with files"
    );
    for (i, model) in models.into_iter().enumerate() {
        // A softphone's id is a locally administered address (as the server assigns it).
        let prefix = if model.is_softphone() {
            "02f200"
        } else {
            "0004f2"
        };
        let mac = Mac::parse(&format!("{prefix}{:06x}", 0x100 + i)).unwrap();
        let name = format!("desk-{i}");
        // A second SCA of 5555 per device needs a fresh line port each time: auto-assigned.
        let pw = device(&s, mac.as_str(), &model.id, &name).await;
        let ua = user_agent(&model.id, &mac);
        let view = s.get(&format!("/api/v1/devices/{mac}")).await.body;
        let files: Vec<String> = view["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_string())
            .collect();
        assert!(!files.is_empty(), "{}: no files", model.id);
        let main = model.main_file().unwrap().name_for(&mac, model.mac_case);
        assert!(
            files.contains(&main),
            "{}: main file {main} listed",
            model.id
        );
        let mut main_checked = false;
        for f in &files {
            let path = format!("/{f}");
            let spec_per_device = f.contains(mac.as_str()) || f.contains(&mac.upper());
            // Without credentials: common files are served, per-device files are challenged.
            let r = phone_get(&s.client, &s.phones, &path, &ua, None, "MD5", &[]).await;
            if spec_per_device {
                assert_eq!(r.status(), 401, "{}: {f} without credentials", model.id);
                assert_eq!(r.headers().get_all("www-authenticate").iter().count(), 2);
            } else {
                assert_eq!(r.status(), 200, "{}: common {f}", model.id);
                let body = r.text().await.unwrap();
                assert!(!body.contains(&pw), "no secrets in common files");
                continue;
            }
            for alg in ["MD5", "SHA-256"] {
                let r = phone_get(
                    &s.client,
                    &s.phones,
                    &path,
                    &ua,
                    Some((mac.as_str(), &pw)),
                    alg,
                    &[],
                )
                .await;
                assert_eq!(r.status(), 200, "{}: {f} with {alg}", model.id);
                assert!(
                    r.headers()["etag"].to_str().unwrap().starts_with('"'),
                    "strong ETag"
                );
                assert!(r.headers().contains_key("content-type"));
                let body = r.text().await.unwrap();
                if f == &main {
                    // The SCA (5555 has no phone number) and the primary line are both there.
                    assert!(
                        body.contains("ZZZ1900111-01_5555_sca"),
                        "{}: SCA line port in {f}:\n{body}",
                        model.id
                    );
                    assert!(
                        body.contains("6035551212"),
                        "{}: primary line in {f}",
                        model.id
                    );
                    main_checked = true;
                }
            }
        }
        assert!(
            main_checked,
            "{}: main file {main} fetched with digest and checked",
            model.id
        );
        // The main-file fetch recorded the applied revision and what the User-Agent said.
        let view = s.get(&format!("/api/v1/devices/{mac}")).await.body;
        assert_eq!(view["applied_revision"], view["revision"], "{}", model.id);
        assert_eq!(
            view["last_seen"]["model_seen"],
            model.id.as_str(),
            "{}",
            model.id
        );
        assert!(view["last_seen"]["firmware"].is_string(), "{}", model.id);
        // The admin preview is byte for byte what the phone gets.
        let preview = s
            .client
            .get(format!("{}/api/v1/devices/{mac}/files/{main}", s.admin))
            .bearer_auth(&s.token)
            .send()
            .await
            .unwrap();
        assert_eq!(preview.status(), 200);
        let preview = preview.text().await.unwrap();
        let phone = phone_get(
            &s.client,
            &s.phones,
            &format!("/{main}"),
            &ua,
            Some((mac.as_str(), &pw)),
            "MD5",
            &[],
        )
        .await
        .text()
        .await
        .unwrap();
        assert_eq!(preview, phone, "{}", model.id);
    }
}

#[tokio::test]
async fn same_401_for_unknown_mac_wrong_credentials_and_wrong_user() {
    let s = TestServer::start().await;
    group_with_users(&s).await;
    let pw = device(&s, "805ec0000001", "yealink-t54w", "desk").await;
    let other_pw = device(&s, "805ec0000002", "yealink-t54w", "desk2").await;
    let ua = "Yealink SIP-T54W 96.86.0.70 805ec0000001";
    let ok = phone_get(
        &s.client,
        &s.phones,
        "/805ec0000001.cfg",
        ua,
        Some(("805ec0000001", &pw)),
        "MD5",
        &[],
    )
    .await;
    assert_eq!(ok.status(), 200);
    for (path, user, pass) in [
        ("/805ec0000001.cfg", "805ec0000001", "wrong-password"),
        ("/805ec0000001.cfg", "805ec0000002", other_pw.as_str()), // another device's credentials
        ("/805ec0000099.cfg", "805ec0000099", "anything-at-all"), // unknown MAC
    ] {
        let r = phone_get(
            &s.client,
            &s.phones,
            path,
            ua,
            Some((user, pass)),
            "MD5",
            &[],
        )
        .await;
        assert_eq!(r.status(), 401, "{path} as {user}");
        assert_eq!(r.headers().get_all("www-authenticate").iter().count(), 2);
    }
}

#[tokio::test]
async fn an_unknown_mac_is_listed_as_unprovisioned() {
    let p = OnePhone::start().await;
    let r = phone_get(
        &p.s.client,
        &p.s.phones,
        "/805ec0000099.cfg",
        OnePhone::UA,
        Some(("805ec0000099", "anything-at-all")),
        "MD5",
        &[],
    )
    .await;
    assert_eq!(r.status(), 401);
    let u = p.s.get("/api/v1/unprovisioned").await.body;
    assert_eq!(u[0]["mac"], "805ec0000099", "{u}");
}

#[tokio::test]
async fn a_device_created_for_a_listed_mac_leaves_the_unprovisioned_list() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_at(dir.path(), |_| {}).await;
    group_with_users(&s).await;
    for mac in ["805ec0000098", "805ec0000099"] {
        let r = phone_get(
            &s.client,
            &s.phones,
            &format!("/{mac}.cfg"),
            OnePhone::UA,
            Some((mac, "anything-at-all")),
            "MD5",
            &[],
        )
        .await;
        assert_eq!(r.status(), 401);
    }
    let listed = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|u| u["mac"].as_str().unwrap().to_string())
            .collect()
    };
    let before = s.get("/api/v1/unprovisioned").await.body;
    assert_eq!(
        listed(&before),
        ["805ec0000099", "805ec0000098"],
        "{before}"
    );
    device(&s, "805ec0000099", "yealink-t54w", "new-desk").await;
    let after = s.get("/api/v1/unprovisioned").await.body;
    assert_eq!(listed(&after), ["805ec0000098"], "{after}");
    // And the list saved says the same.
    s.shutdown().await;
    let s = TestServer::start_at(dir.path(), |_| {}).await;
    let again = s.get("/api/v1/unprovisioned").await.body;
    assert_eq!(again, after);
}

#[tokio::test]
async fn a_replayed_authorization_is_refused() {
    let p = OnePhone::start().await;
    let url = format!("{}{}", p.s.phones, OnePhone::MAIN);
    let first = p.s.client.get(&url).send().await.unwrap();
    let (realm, nonce) = digest::challenge(first.headers(), "MD5");
    let auth = p.authorization("GET", &realm, &nonce, 1);
    let get = || {
        p.s.client
            .get(&url)
            .header("authorization", auth.clone())
            .send()
    };
    assert_eq!(get().await.unwrap().status(), 200);
    assert_eq!(get().await.unwrap().status(), 401, "replay");
}

#[tokio::test]
async fn etag_gives_304_and_a_change_gives_new_bytes_and_a_new_etag() {
    let s = TestServer::start().await;
    group_with_users(&s).await;
    let pw = device(&s, "805ec0000001", "yealink-t54w", "desk").await;
    let ua = "Yealink SIP-T54W 96.86.0.70 805ec0000001";
    let creds = Some(("805ec0000001", pw.as_str()));
    let r = phone_get(
        &s.client,
        &s.phones,
        "/805ec0000001.cfg",
        ua,
        creds,
        "SHA-256",
        &[],
    )
    .await;
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let body = r.text().await.unwrap();
    let r = phone_get(
        &s.client,
        &s.phones,
        "/805ec0000001.cfg",
        ua,
        creds,
        "SHA-256",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(r.status(), 304);
    // Same revision, same bytes; a change gives new bytes and a new ETag.
    let again = phone_get(
        &s.client,
        &s.phones,
        "/805ec0000001.cfg",
        ua,
        creds,
        "MD5",
        &[],
    )
    .await
    .text()
    .await
    .unwrap();
    assert_eq!(again, body);
    s.patch(
        &format!("/api/v1/groups/{G}/users/1001"),
        json!({"first_name": "Augusta"}),
    )
    .await;
    let r = phone_get(
        &s.client,
        &s.phones,
        "/805ec0000001.cfg",
        ua,
        creds,
        "MD5",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_ne!(r.headers()["etag"].to_str().unwrap(), etag);
    assert!(r.text().await.unwrap().contains("Augusta"));
}

#[tokio::test]
async fn head_answers_the_headers_without_a_body() {
    let p = OnePhone::start().await;
    let get = p.fetch().await;
    assert_eq!(get.status(), 200);
    let etag = get.headers()["etag"].clone();
    let url = format!("{}{}", p.s.phones, OnePhone::MAIN);
    let first = p.s.client.head(&url).send().await.unwrap();
    assert_eq!(first.status(), 401, "HEAD is authenticated like GET");
    let (realm, nonce) = digest::challenge(first.headers(), "MD5");
    let auth = p.authorization("HEAD", &realm, &nonce, 1);
    let r =
        p.s.client
            .head(&url)
            .header("user-agent", OnePhone::UA)
            .header("authorization", auth)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], etag, "the same ETag as GET");
    assert!(r.bytes().await.unwrap().is_empty(), "no body");
}

async fn set_policy(p: &OnePhone, policy: Value) {
    let r =
        p.s.patch(
            &format!("/api/v1/groups/{G}"),
            json!({"provisioning": policy}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.body);
}

#[tokio::test]
async fn a_network_policy_refuses_addresses_outside_its_cidrs() {
    let p = OnePhone::start().await;
    // Only 10.0.0.0/8 may fetch: loopback is refused with the same 401.
    set_policy(&p, json!({"allowed_cidrs": ["10.0.0.0/8"]})).await;
    assert_eq!(p.fetch().await.status(), 401);
    set_policy(&p, json!({"allowed_cidrs": ["127.0.0.0/8"]})).await;
    assert_eq!(p.fetch().await.status(), 200);
}

#[tokio::test]
async fn an_mtls_only_policy_refuses_digest() {
    let p = OnePhone::start().await;
    assert_eq!(p.fetch().await.status(), 200);
    set_policy(&p, json!({"auth": "mtls"})).await;
    assert_eq!(p.fetch().await.status(), 401, "digest is not enough");
    set_policy(&p, json!({"auth": "digest"})).await;
    assert_eq!(p.fetch().await.status(), 200);
}

#[tokio::test]
async fn hostile_paths_never_reach_the_filesystem() {
    let p = OnePhone::start().await;
    for path in ["/..%2f..%2fetc%2fpasswd", "/%2e%2e/x", "/.env", "/a%00.cfg"] {
        let r =
            p.s.client
                .get(format!("{}{path}", p.s.phones))
                .send()
                .await
                .unwrap();
        assert!(
            r.status() == 404 || r.status() == 400,
            "{path}: {}",
            r.status()
        );
    }
}

#[tokio::test]
async fn an_overlong_file_name_is_400() {
    let p = OnePhone::start().await;
    let long = format!("/{}.cfg", "a".repeat(300));
    let r =
        p.s.client
            .get(format!("{}{long}", p.s.phones))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn uploads_are_stored_per_device_and_listed() {
    let p = OnePhone::start().await;
    let r = p
        .upload("805ec0000001-local.cfg", b"local=1\n".to_vec())
        .await;
    assert_eq!(r.status(), 204);
    let ups = p.s.get("/api/v1/devices/805ec0000001/uploads").await.body;
    assert_eq!(ups[0]["name"], "805ec0000001-local.cfg", "{ups}");
    assert_eq!(ups[0]["size"], 8);
}

#[tokio::test]
async fn an_upload_over_the_limit_is_413() {
    let p = OnePhone::start().await;
    let r = p
        .upload("805ec0000001-app.log", vec![b'x'; (1 << 20) + 10])
        .await;
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn repeated_failures_lock_the_address_out_with_429_and_retry_after() {
    let p = OnePhone::start_with(|c| c.phones.auth_fail_limit = 3).await;
    // Past 3 failures in a minute the address gets 429, even with the right credentials.
    for _ in 0..4 {
        let status = p.fetch_with("bad-password").await.status();
        assert!(status == 401 || status == 429, "{status}");
    }
    let r = p.fetch().await;
    assert_eq!(r.status(), 429);
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 200, "Retry-After {retry_after}");
}

/// A CA and device certificates with the MAC in CN (Polycom/Yealink style), in a SAN
/// (`urn:dev:mac:`), and in Cisco's S= (stateOrProvinceName); plus generic ones.
struct TestPki {
    ca_pem: String,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl TestPki {
    fn new() -> TestPki {
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "Test Phone Vendor CA");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = p.self_signed(&ca_key).unwrap();
        TestPki {
            ca_pem: ca.pem(),
            ca,
            ca_key,
        }
    }

    /// A client identity (cert + key PEM) with the given subject fields and SANs.
    fn device(
        &self,
        cn: Option<&str>,
        st: Option<&str>,
        san_uri: Option<&str>,
    ) -> reqwest::Identity {
        let mut p = rcgen::CertificateParams::default();
        if let Some(cn) = cn {
            p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        }
        if let Some(st) = st {
            p.distinguished_name
                .push(rcgen::DnType::StateOrProvinceName, st);
            p.distinguished_name
                .push(rcgen::DnType::OrganizationalUnitName, "CP-8851-3PCC");
        }
        if let Some(u) = san_uri {
            p.subject_alt_names = vec![rcgen::SanType::URI(u.try_into().unwrap())];
        }
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        reqwest::Identity::from_pem(format!("{}{}", cert.pem(), key.serialize_pem()).as_bytes())
            .unwrap()
    }
}

#[tokio::test]
async fn mtls_with_the_mac_in_cn_san_or_cisco_s() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("vendor-ca.pem");
    std::fs::write(&bundle, &pki.ca_pem).unwrap();
    let b = bundle.display().to_string();
    let s = TestServer::start_with(move |c| c.tls.client_ca = vec![b]).await;
    group_with_users(&s).await;
    device(&s, "805ec0000001", "yealink-t54w", "desk").await;
    s.patch(
        &format!("/api/v1/groups/{G}"),
        json!({"provisioning": {"auth": "mtls"}}),
    )
    .await;
    let ca = std::fs::read(s.data_dir.join("tls/ca.pem")).unwrap();
    let with = |id: reqwest::Identity| {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .identity(id)
            .build()
            .unwrap()
    };
    let get = |c: reqwest::Client| {
        let url = format!("{}/805ec0000001.cfg", s.phones);
        async move {
            c.get(url)
                .header("user-agent", "Yealink SIP-T54W 96.86.0.70 805ec0000001")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // The MAC in each of the three places is accepted; another device's certificate and generic
    // vendor certificates get the same 401 as no certificate.
    let cases = [
        (Some("805EC0000001"), None, None, 200, "CN"),
        (
            Some("Polycom device"),
            None,
            Some("urn:dev:mac:805ec0000001"),
            200,
            "SAN",
        ),
        (
            Some("SEP805EC0000001"),
            Some("805ec0000001"),
            None,
            200,
            "Cisco S=",
        ),
        (Some("805EC0000002"), None, None, 401, "other MAC"),
        (
            Some("Cisco device"),
            Some("ciscogeneric"),
            None,
            401,
            "ciscogeneric",
        ),
        (Some("Yealink Equipment"), None, None, 401, "generic"),
    ];
    for (cn, st, san, want, label) in cases {
        assert_eq!(get(with(pki.device(cn, st, san))).await, want, "{label}");
    }
    assert_eq!(get(s.client.clone()).await, 401, "no certificate");
    // A certificate from a CA that is not configured fails the handshake.
    let rogue = TestPki::new();
    let r = with(rogue.device(Some("805EC0000001"), None, None))
        .get(format!("{}/805ec0000001.cfg", s.phones))
        .send()
        .await;
    assert!(r.is_err() || r.unwrap().status() == 401);
}

const T54W_MAIN_TEMPLATE: &str = "/api/v1/models/yealink-t54w/templates/mac.cfg.tera";

/// Uploads `body` as the T54W main-file template; returns the response.
async fn put_template(p: &OnePhone, body: impl Into<reqwest::Body>) -> reqwest::Response {
    p.s.client
        .put(format!("{}{T54W_MAIN_TEMPLATE}", p.s.admin))
        .bearer_auth(&p.s.token)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// The phone's main file as text (built-in templates never render the revision, so the same
/// state gives the same bytes).
async fn main_file(p: &OnePhone) -> String {
    let r = p.fetch().await;
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

const CUSTOM: &str = "#!version:1.0.0.1\n## custom\n{% for line in lines %}account.{{ line.index }}.user_name = {{ line.line_port }}\n{% endfor %}";

/// Uploads [`CUSTOM`] (version 1), which must go live.
async fn upload_custom(p: &OnePhone) {
    let r = put_template(p, CUSTOM).await;
    assert_eq!(r.status(), 201);
    let up: Value = r.json().await.unwrap();
    assert_eq!(up["version"], 1);
}

#[tokio::test]
async fn a_broken_template_is_refused_while_the_old_one_keeps_serving() {
    let p = OnePhone::start().await;
    let before = main_file(&p).await;
    // A syntax error: 422 invalid_template with line and column; nothing changes.
    let r = put_template(
        &p,
        "#!version:1.0.0.1\n{% for line in lines %}\naccount.{{ line.index }.x = 1\n{% endfor %}\n",
    )
    .await;
    assert_eq!(r.status(), 422);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["code"], "invalid_template");
    assert_eq!(problem["line"], 3);
    assert!(problem["column"].as_u64().unwrap() > 0, "{problem}");
    assert_eq!(
        main_file(&p).await,
        before,
        "the old template keeps serving"
    );
}

#[tokio::test]
async fn a_template_that_fails_to_render_is_refused() {
    let p = OnePhone::start().await;
    let before = main_file(&p).await;
    // Parses, but renders with an error (unknown variable).
    let r = put_template(&p, "{{ nothing.here }}").await;
    assert_eq!(r.status(), 422);
    assert_eq!(
        main_file(&p).await,
        before,
        "the old template keeps serving"
    );
}

#[tokio::test]
async fn a_good_template_goes_live_and_touches_every_device_of_the_model() {
    let p = OnePhone::start().await;
    let log_before = p.s.get("/api/v1/changes?limit=1000").await.body["last_seq"]
        .as_u64()
        .unwrap();
    upload_custom(&p).await;
    let now = main_file(&p).await;
    assert!(
        now.contains("## custom") && now.contains("account.2.user_name = ZZZ1900111-01_5555_sca1"),
        "{now}"
    );
    let log =
        p.s.get(&format!("/api/v1/changes?since={log_before}"))
            .await
            .body;
    assert_eq!(log["items"][0]["action"], "template.update", "{log}");
    assert_eq!(log["items"][0]["devices"], json!(["805ec0000001"]));
}

#[tokio::test]
async fn a_template_rollback_serves_the_chosen_version() {
    let p = OnePhone::start().await;
    let before = main_file(&p).await;
    upload_custom(&p).await;
    let versions =
        p.s.get(&format!("{T54W_MAIN_TEMPLATE}/versions"))
            .await
            .body;
    assert_eq!(versions.as_array().unwrap().len(), 2, "{versions}");
    assert_eq!(versions[1]["active"], true);
    let rollback = format!("{T54W_MAIN_TEMPLATE}/rollback");
    let rollback = |v: u64| p.s.post(&rollback, json!({"version": v}));
    assert_eq!(rollback(0).await.status(), 204);
    assert_eq!(main_file(&p).await, before);
    assert_eq!(rollback(1).await.status(), 204);
    assert!(main_file(&p).await.contains("## custom"));
}

#[tokio::test]
async fn deleting_an_uploaded_template_returns_to_the_built_in() {
    let p = OnePhone::start().await;
    let before = main_file(&p).await;
    upload_custom(&p).await;
    assert_ne!(main_file(&p).await, before);
    assert_eq!(p.s.delete(T54W_MAIN_TEMPLATE).await.status(), 204);
    assert_eq!(main_file(&p).await, before);
}

#[tokio::test]
async fn a_template_over_the_body_limit_is_413_problem_json() {
    let p = OnePhone::start().await;
    let r = put_template(&p, vec![b'x'; (1 << 20) + 1]).await;
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "payload_too_large"
    );
}

#[tokio::test]
async fn malformed_xml_is_refused_for_xml_templates() {
    let s = TestServer::start().await;
    let (m, t) = Catalog::builtin()
        .unwrap()
        .models()
        .find_map(|m| {
            let f = m.files.iter().find(|f| f.is_xml())?;
            Some((m.id.clone(), f.template.clone()))
        })
        .expect("the built-in catalogue has a model with an XML file");
    let r = s
        .client
        .put(format!("{}/api/v1/models/{m}/templates/{t}", s.admin))
        .bearer_auth(&s.token)
        .body("<a><b></a>")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422, "{m} {t}");
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["code"], "invalid_template");
    assert!(
        problem["detail"].as_str().unwrap().contains("XML"),
        "{problem}"
    );
}

/// GETs `path` on one raw TLS connection as the Yealink phone; returns the response text.
async fn get_on(c: &mut common::raw::Tls, path: &str, auth: Option<&str>) -> String {
    use tokio::io::AsyncWriteExt as _;
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: {}\r\n{auth}\r\n",
        OnePhone::UA
    );
    c.write_all(req.as_bytes()).await.unwrap();
    common::raw::response(c).await
}

fn status_of(resp: &str) -> &str {
    resp.split(' ').nth(1).unwrap_or("")
}

/// The MD5 challenge's nonce in a raw 401.
fn md5_nonce(resp: &str) -> String {
    let line = resp
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("www-authenticate:") && l.contains("MD5"))
        .expect("an MD5 challenge");
    let i = line.find("nonce=\"").unwrap() + 7;
    line[i..].split('"').next().unwrap().to_string()
}

#[tokio::test]
async fn one_challenge_per_connection_then_the_nonce_counts_on_for_the_next_files() {
    let p = OnePhone::start().await;
    let tls = common::raw::connector(&p.s.data_dir);
    let to = common::raw::addr(&p.s.phones);
    let mut c = common::raw::open(&tls, to, "127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    let mac = OnePhone::MAC;
    let auth = |nonce: &str, uri: &str, nc: u32, pass: &str| {
        digest::authorization("MD5", mac, pass, "deskprov", nonce, "GET", uri, nc)
    };
    // A Yealink boots: its boot file (challenged once), the common file, its main file.
    let boot = format!("/{mac}.boot");
    let r = get_on(&mut c, &boot, None).await;
    assert_eq!(status_of(&r), "401", "{r}");
    let nonce = md5_nonce(&r);
    let r = get_on(&mut c, &boot, Some(&auth(&nonce, &boot, 1, &p.password))).await;
    assert_eq!(status_of(&r), "200", "{r}");
    let r = get_on(&mut c, "/y000000000096.cfg", None).await;
    assert_eq!(status_of(&r), "200", "{r}");
    let main = OnePhone::MAIN;
    let r = get_on(&mut c, main, Some(&auth(&nonce, main, 2, &p.password))).await;
    assert_eq!(
        status_of(&r),
        "200",
        "the next file needs no second challenge: {r}"
    );
    // Replay rules hold: the same count again, or a lower one, is refused.
    for nc in [2, 1] {
        let r = get_on(&mut c, main, Some(&auth(&nonce, main, nc, &p.password))).await;
        assert_eq!(status_of(&r), "401", "nc {nc} replayed: {r}");
    }
    let r = get_on(&mut c, main, Some(&auth(&nonce, main, 3, &p.password))).await;
    assert_eq!(status_of(&r), "200", "{r}");
    // The same nonce on another connection from the same address is still the phone's.
    let mut c2 = common::raw::open(&tls, to, "127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    let r = get_on(&mut c2, main, Some(&auth(&nonce, main, 4, &p.password))).await;
    assert_eq!(status_of(&r), "200", "{r}");
    let r = get_on(&mut c, main, Some(&auth(&nonce, main, 4, &p.password))).await;
    assert_eq!(
        status_of(&r),
        "401",
        "nc 4 was used on the other connection: {r}"
    );
    // A wrong password with the live nonce is a failure like any other (logged for the MAC).
    let r = get_on(&mut c, main, Some(&auth(&nonce, main, 5, "wrong"))).await;
    assert_eq!(status_of(&r), "401", "{r}");
    let log = p.s.get(&format!("/api/v1/devices/{mac}/log")).await.body;
    assert!(
        log.to_string().contains("wrong_credentials"),
        "the failure is in the provisioning log: {log}"
    );
}
