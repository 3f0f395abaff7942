//! Backup and restore (SPEC §5): an online backup of a populated server restored into an empty
//! data directory serves the same resources, change log and rendered files.

mod common;
#[path = "common/process.rs"]
mod process;

use common::{seed, TestServer, G};
use process::{write_config, BIN};
use serde_json::{json, Value};

async fn backup(s: &TestServer) -> Vec<u8> {
    let r = s
        .client
        .post(format!("{}/api/v1/backup", s.admin))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-deskprov-seq"));
    r.bytes().await.unwrap().to_vec()
}

fn restore(config: &std::path::Path, file: &std::path::Path) -> std::process::Output {
    std::process::Command::new(BIN)
        .args([
            "restore",
            file.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ])
        .output()
        .expect("deskprov restore runs")
}

/// Every rendered file of every device, by (mac, file name); the phone listener's (ephemeral)
/// port in the base URL is written as `PORT`.
async fn rendered(s: &TestServer) -> Vec<(String, String, String)> {
    let port = s.phones.rsplit(':').next().unwrap().to_string();
    let mut out = Vec::new();
    let devices = s
        .get(&format!("/api/v1/groups/{G}/devices?limit=1000"))
        .await;
    for d in devices.body["items"].as_array().unwrap() {
        let mac = d["mac"].as_str().unwrap();
        let model = s
            .get(&format!("/api/v1/models/{}", d["model"].as_str().unwrap()))
            .await;
        let upper = model.body["mac_case"] == "upper";
        let m = if upper {
            mac.to_uppercase()
        } else {
            mac.to_string()
        };
        for f in model.body["files"].as_array().unwrap() {
            let name = f["pattern"].as_str().unwrap().replace("{mac}", &m);
            let r = s
                .client
                .get(format!("{}/api/v1/devices/{mac}/files/{name}", s.admin))
                .bearer_auth(&s.token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{mac} {name}");
            let text = r
                .text()
                .await
                .unwrap()
                .replace(&format!(":{port}"), ":PORT");
            out.push((mac.to_string(), name, text));
        }
    }
    assert!(out.len() >= 6, "every device renders files");
    out
}

#[tokio::test]
async fn a_backup_restored_into_an_empty_data_dir_serves_the_same_resources_and_files() {
    let a = TestServer::start().await;
    seed(&a).await;
    a.create(
        &format!("/api/v1/groups/{G}/users/1001/shared-call-appearances"),
        json!({"device": "Lobby", "label": "Ada"}),
    )
    .await;
    a.create(
        &format!("/api/v1/groups/{G}/shared-lines"),
        json!({"number": "77", "description": "Front desk", "members": [{"extension": "5555"}]}),
    )
    .await;
    a.create("/api/v1/tokens", json!({"name": "ops", "group": G}))
        .await;
    let bytes = backup(&a).await;
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.starts_with("{\"format\":\"deskprov-backup\""));
    assert!(text
        .trim_end()
        .rsplit('\n')
        .next()
        .unwrap()
        .starts_with("{\"sha256\":"));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.backup");
    std::fs::write(&file, &bytes).unwrap();
    let data = dir.path().join("restored");
    let config = write_config(dir.path(), Some(&data));
    let out = restore(&config, &file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let b = TestServer::start_at(&data, |_| {}).await;
    for path in [
        "/api/v1/export?secrets=true".to_string(),
        "/api/v1/changes?limit=1000".to_string(),
        "/api/v1/tokens".to_string(),
        "/healthz".to_string(),
        format!("/api/v1/groups/{G}/users/1001/shared-call-appearances"),
    ] {
        let (x, y) = (a.get(&path).await, b.get(&path).await);
        assert_eq!(x.status(), 200, "{path}");
        assert_eq!(x.body, y.body, "{path}");
    }
    let (x, y) = (rendered(&a).await, rendered(&b).await);
    assert_eq!(x.len(), y.len());
    for (x, y) in x.iter().zip(&y) {
        assert!(x == y, "{} {} differs after the restore", x.0, x.1);
    }
    // The restored server keeps numbering where the original stopped.
    let seq: Value = b.get("/healthz").await.body["seq"].clone();
    b.create(
        &format!("/api/v1/groups/{G}/users"),
        json!({"extension": "7777"}),
    )
    .await;
    assert_eq!(
        b.get("/healthz").await.body["seq"],
        seq.as_u64().unwrap() + 1
    );
}

#[tokio::test]
async fn restore_refuses_a_non_empty_data_dir_and_a_damaged_file() {
    let a = TestServer::start().await;
    seed(&a).await;
    let bytes = backup(&a).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("something"), b"x").unwrap();
    let config = write_config(dir.path(), Some(&data));
    let file = dir.path().join("x.backup");
    std::fs::write(&file, &bytes).unwrap();
    let out = restore(&config, &file);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));
    assert_eq!(
        std::fs::read_dir(&data).unwrap().count(),
        1,
        "nothing written"
    );

    let mut damaged = bytes.clone();
    let i = damaged.len() / 2;
    damaged[i] = if damaged[i] == b'0' { b'1' } else { b'0' };
    std::fs::write(&file, &damaged).unwrap();
    std::fs::remove_file(data.join("something")).unwrap();
    let out = restore(&config, &file);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("checksum"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_dir(&data).unwrap().count(),
        0,
        "nothing written"
    );
}
