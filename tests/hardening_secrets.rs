//! Secrets at rest and in logs: the data directory is private, no password is in any of its
//! files in the clear, and a full scenario logged at trace level prints none of them.

mod common;

#[path = "common/process.rs"]
mod process;

use std::path::Path;
use std::process::Stdio;

use process::{write_config, Proc};
use serde_json::{json, Value};

/// Every file below `dir` (symlinks skipped).
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// A platform with a group, two users, a device owned by one of them with the other's line as
/// an SCA, a shared line; every password rotated once, and the phone fetching its file (digest
/// with the rotated credentials). Returns every secret it saw.
async fn scenario(admin: &str, phones: &str, ca: &Path, token: &str) -> Vec<String> {
    let client = common::https_client(ca);
    let call = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut r = client
            .request(method, format!("{admin}{path}"))
            .bearer_auth(token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move {
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            assert!(status < 300, "{status}: {body}");
            body
        }
    };
    use reqwest::Method;
    let g = "ACME-1";
    call(
        Method::POST,
        "/api/v1/groups",
        Some(json!({"id": g, "sip": {"domain": "sip.example.net"}})),
    )
    .await;
    for (ext, tn) in [("1001", Some("6035551212")), ("5555", None)] {
        let mut u = json!({"extension": ext, "first_name": "U"});
        if let Some(tn) = tn {
            u["phone_number"] = json!(tn);
        }
        call(Method::POST, &format!("/api/v1/groups/{g}/users"), Some(u)).await;
    }
    let d = call(
        Method::POST,
        &format!("/api/v1/groups/{g}/devices"),
        Some(json!({"mac": "805ec0000001", "name": "desk", "model": "yealink-t54w", "owner": "1001"})),
    )
    .await;
    let mut secrets = vec![
        token.to_string(),
        d["credentials"]["password"].as_str().unwrap().to_string(),
    ];
    call(
        Method::POST,
        &format!("/api/v1/groups/{g}/users/5555/shared-call-appearances"),
        Some(json!({"device": "desk"})),
    )
    .await;
    call(
        Method::POST,
        &format!("/api/v1/groups/{g}/shared-lines"),
        Some(json!({"number": "555", "description": "Sales", "members": [{"extension": "1001"}]})),
    )
    .await;
    for ext in ["1001", "5555"] {
        let r = call(
            Method::POST,
            &format!("/api/v1/groups/{g}/users/{ext}/sip-password"),
            Some(json!({})),
        )
        .await;
        secrets.push(r["password"].as_str().unwrap().to_string());
    }
    let r = call(
        Method::POST,
        "/api/v1/devices/805ec0000001/credentials",
        Some(json!({})),
    )
    .await;
    let device_pw = r["password"].as_str().unwrap().to_string();
    secrets.push(device_pw.clone());
    // The phone fetches its file: the SIP passwords travel in it, and must stay out of logs.
    let phone_client = common::https_client(ca);
    let resp = common::phone_get(
        &phone_client,
        phones,
        "/805ec0000001.cfg",
        "Yealink SIP-T54W 96.86.0.70 805ec0000001",
        Some(("805ec0000001", &device_pw)),
        "MD5",
        &[],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    for s in &secrets[2..4] {
        assert!(
            body.contains(s.as_str()),
            "the file carries the SIP passwords"
        );
    }
    // A softphone: its one-time provisioning link (credentials in the URL) and the file Linphone
    // fetches with them; the link, its password and a third-party password stay out of logs.
    let soft = call(
        Method::POST,
        &format!("/api/v1/groups/{g}/devices"),
        Some(json!({"name": "soft", "model": "linphone", "owner": "5555"})),
    )
    .await;
    let id = soft["mac"].as_str().unwrap().to_string();
    secrets.push(
        soft["credentials"]["password"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    let link = call(
        Method::POST,
        &format!("/api/v1/devices/{id}/provisioning-link"),
        None,
    )
    .await;
    let link_pw = link["password"].as_str().unwrap().to_string();
    secrets.push(link["url"].as_str().unwrap().to_string());
    secrets.push(link_pw.clone());
    let r = call(
        Method::POST,
        &format!("/api/v1/groups/{g}/users/5555/third-party-credentials"),
        None,
    )
    .await;
    let sip_pw = r["password"].as_str().unwrap().to_string();
    secrets.push(sip_pw.clone());
    let resp = common::phone_get(
        &phone_client,
        phones,
        &format!("/linphone-{id}.xml"),
        "Linphone/5.1.65 (Debian) LinphoneSDK/5.1.65",
        Some((&id, &link_pw)),
        "MD5",
        &[],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    assert!(
        body.contains(sip_pw.as_str()),
        "the softphone's file carries its SIP password"
    );
    secrets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_is_readable_at_rest_nor_logged_at_trace_level() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = write_config(tmp.path(), Some(&data));
    let log_path = tmp.path().join("trace.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut p = Proc::serve_logging(tmp.path(), &config, "trace", Stdio::from(log));
    let token = std::fs::read_to_string(data.join("admin-token"))
        .unwrap()
        .trim()
        .to_string();
    let secrets = scenario(&p.admin, &p.phones, &data.join("tls/ca.pem"), &token).await;
    // Let the key roll that follows the rotations run, then stop (the stop runs any left).
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(p.terminate().success());

    let log = std::fs::read(&log_path).unwrap();
    assert!(
        log.len() > 10_000,
        "trace logging was on ({} bytes)",
        log.len()
    );
    for s in &secrets {
        assert!(!contains(&log, s), "a secret is in the trace log");
        // Storage engines print values as byte lists: `[104, 117, 110, ...]`.
        let bytes = format!("{:?}", s.as_bytes());
        let inner = bytes.trim_start_matches('[').trim_end_matches(']');
        assert!(
            !contains(&log, inner),
            "a secret is in the trace log as bytes"
        );
    }
    // At rest: only admin-token may hold the admin token (it is the operator's copy, 0600).
    for f in files(&data) {
        let bytes = std::fs::read(&f).unwrap();
        for s in &secrets {
            if f.ends_with("admin-token") && s == &token {
                continue;
            }
            assert!(
                !contains(&bytes, s),
                "{} holds a secret in the clear",
                f.display()
            );
        }
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_and_every_file_in_it_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // An existing, world-readable data dir from an older version is tightened too.
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(data.join("notes.txt"), "x").unwrap();
    std::fs::set_permissions(
        data.join("notes.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let config = write_config(tmp.path(), Some(&data));
    let mut p = Proc::serve(tmp.path(), &config);
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    scenario(&p.admin, &p.phones, &data.join("tls/ca.pem"), token.trim()).await;
    assert!(p.terminate().success());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "the data directory");
    let all = files(&data);
    assert!(
        all.iter().any(|f| f.ends_with("store.key")),
        "the key file exists"
    );
    for f in all {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
        let mut d = f.parent().unwrap();
        while d != data {
            assert_eq!(mode(d), 0o700, "{}", d.display());
            d = d.parent().unwrap();
        }
    }
}
