//! Logs of the operations paths: a full import/export/backup/metrics scenario at trace level in
//! the JSON format prints none of the secrets it created, and the phone fetch line and the
//! request id are there.

mod common;
#[path = "common/process.rs"]
mod process;

use std::process::Stdio;

use process::{write_config, Proc};
use serde_json::{json, Value};

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_export_backup_scenario_at_trace_level_logs_no_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = write_config(tmp.path(), Some(&data));
    let log_path = tmp.path().join("trace.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut p = Proc::serve_logging_args(
        tmp.path(),
        &config,
        "trace",
        Stdio::from(log),
        &["--log-format", "json"],
    );
    let token = std::fs::read_to_string(data.join("admin-token"))
        .unwrap()
        .trim()
        .to_string();
    let client = common::https_client(&data.join("tls/ca.pem"));
    let admin = p.admin.clone();
    let send = |method: reqwest::Method, path: &str, ct: &str, body: String| {
        let r = client
            .request(method, format!("{admin}{path}"))
            .bearer_auth(&token)
            .header("content-type", ct.to_string())
            .header("x-request-id", "ops-test-0001")
            .body(body);
        async move {
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            let bytes = r.bytes().await.unwrap();
            assert!(
                status < 300,
                "{status}: {}",
                String::from_utf8_lossy(&bytes)
            );
            bytes.to_vec()
        }
    };
    use reqwest::Method;
    let g = "OPS-1";
    send(
        Method::POST,
        "/api/v1/groups",
        "application/json",
        json!({"id": g, "sip": {"domain": "sip.example.net"}}).to_string(),
    )
    .await;
    let mut secrets = vec![
        token.clone(),
        "given-sip-password-1".to_string(),
        "given-prov-password-2".to_string(),
    ];
    let report = |b: Vec<u8>| -> Vec<String> {
        let v: Value = serde_json::from_slice(&b).unwrap();
        v["passwords"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["password"].as_str().unwrap().to_string())
            .collect()
    };
    let users = "extension,first_name,sip_password\n1001,Ada,given-sip-password-1\n1002,Bob,\n";
    let r = send(
        Method::POST,
        &format!("/api/v1/groups/{g}/import/users"),
        "text/csv",
        users.into(),
    )
    .await;
    secrets.extend(report(r));
    let devices = "mac,model,owner,prov_password\n805ec0000001,yealink-t54w,1001,given-prov-password-2\n805ec0000002,yealink-t54w,1002,\n";
    let r = send(
        Method::POST,
        &format!("/api/v1/groups/{g}/import/devices"),
        "text/csv",
        devices.into(),
    )
    .await;
    secrets.extend(report(r));
    assert_eq!(
        secrets.len(),
        5,
        "one generated SIP and one device password"
    );
    let doc = send(
        Method::GET,
        "/api/v1/export?secrets=true",
        "application/json",
        String::new(),
    )
    .await;
    assert!(contains(&doc, "given-sip-password-1"));
    send(
        Method::POST,
        "/api/v1/import",
        "application/json",
        String::from_utf8(doc).unwrap(),
    )
    .await;
    send(
        Method::POST,
        "/api/v1/backup",
        "application/json",
        String::new(),
    )
    .await;
    send(Method::GET, "/metrics", "text/plain", String::new()).await;
    // The phone fetches its file with the imported password.
    let phone = common::https_client(&data.join("tls/ca.pem"));
    let resp = common::phone_get(
        &phone,
        &p.phones,
        "/805ec0000001.cfg",
        "Yealink SIP-T54W 96.86.0.70 805ec0000001",
        Some(("805ec0000001", "given-prov-password-2")),
        "MD5",
        &[],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("given-sip-password-1"));
    assert!(p.terminate().success());

    let log = std::fs::read(&log_path).unwrap();
    assert!(
        log.len() > 10_000,
        "trace logging was on ({} bytes)",
        log.len()
    );
    for s in &secrets {
        assert!(!contains(&log, s), "a secret is in the trace log");
        let bytes = format!("{:?}", s.as_bytes());
        let inner = bytes.trim_start_matches('[').trim_end_matches(']');
        assert!(
            !contains(&log, inner),
            "a secret is in the trace log as bytes"
        );
    }
    let text = String::from_utf8_lossy(&log);
    let fetch = text
        .lines()
        .find(|l| {
            l.contains("\"phone fetch\"")
                && l.contains("805ec0000001.cfg")
                && l.contains("\"status\":200")
        })
        .expect("a phone fetch line for the file");
    let line: Value = serde_json::from_str(fetch).expect("JSON lines");
    assert_eq!(line["fields"]["mac"], "805ec0000001");
    assert_eq!(line["fields"]["model"], "yealink-t54w");
    assert!(line["fields"]["bytes"].as_u64().unwrap() > 0);
    assert!(line["fields"]["latency_ms"].is_number());
    assert!(line["span"]["request_id"].is_string(), "{line}");
    assert!(
        text.contains("ops-test-0001"),
        "the admin request id is logged"
    );
}
