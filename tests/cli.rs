//! The command line: `serve` on embedded defaults, `config example`, offline `token` commands.

mod common;

#[path = "common/process.rs"]
mod process;

use std::process::Command;

use process::{write_config, Proc, BIN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_creates_data_dir_ca_and_token_then_answers_healthz() {
    let tmp = tempfile::tempdir().unwrap();
    // Only the listen addresses are overridden (tests bind loopback ephemeral ports); the data
    // directory is the embedded default ./deskprov-data.
    let config = write_config(tmp.path(), None);
    let mut p = Proc::serve(tmp.path(), &config);
    let data = tmp.path().join("deskprov-data");
    let banner = p.banner.join("\n");
    assert!(banner.contains("tls/ca.pem"), "{banner}");
    assert!(banner.contains("admin token (shown once"), "{banner}");
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    assert!(
        banner.contains(token.trim()),
        "the printed token is the stored one"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("admin-token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    for f in ["tls/ca.pem", "tls/server.pem", "tls/server.key"] {
        assert!(data.join(f).is_file(), "{f}");
    }
    let client = common::https_client(&data.join("tls/ca.pem"));
    let r = client
        .get(format!("{}/healthz", p.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(p.terminate().success());

    // Second start: no new token, the same CA.
    let ca = std::fs::read(data.join("tls/ca.pem")).unwrap();
    let mut p = Proc::serve(tmp.path(), &config);
    assert!(
        !p.banner.join("\n").contains(token.trim()),
        "the token is printed once only"
    );
    assert_eq!(std::fs::read(data.join("tls/ca.pem")).unwrap(), ca);
    let r = client
        .get(format!("{}/api/v1/groups", p.admin))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(p.terminate().success());
}

#[test]
fn config_example_prints_every_spec_key() {
    let out = Command::new(BIN)
        .args(["config", "example"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for key in [
        "data_dir",
        "templates_dir",
        "[listen]",
        "phones_http",
        "admin",
        "[tls]",
        "client_ca",
        "[phones]",
        "auth_fail_limit",
        "auth_lockout_s",
        "upload_max_bytes",
        "[rules]",
        "max_sca_per_user",
        "[sync]",
        "sip_bind",
        "debounce_ms",
        "ack_timeout_s",
        "max_attempts",
        "notify_rate",
        "same_hash",
        "loopback_only",
    ] {
        assert!(text.contains(key), "{key}");
    }
    // The example is itself a valid config file.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("c.toml"), &text).unwrap();
    assert!(deskprov::config::Config::load(&tmp.path().join("c.toml")).is_ok());
}

#[test]
fn a_bad_config_is_reported_not_defaulted() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("c.toml");
    std::fs::write(&p, "[sync]\ndebounce = 5\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("debounce"), "{err}");
}

#[test]
fn token_commands_work_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = write_config(tmp.path(), Some(&data));
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let secret = run(&["token", "create", "--name", "ops"]);
    assert!(secret.trim().starts_with("dp_"));
    let list = run(&["token", "list"]);
    assert!(list.contains("ops\tplatform"), "{list}");
    assert!(!list.contains(secret.trim()), "list never shows secrets");
    let id = list.split('\t').next().unwrap().to_string();
    run(&["token", "revoke", &id]);
    assert!(!run(&["token", "list"]).contains("ops"));
    // A group token needs an existing group.
    let out = Command::new(BIN)
        .args(["token", "create", "--group", "nope", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// `deskprov render` on a server's data dir prints byte for byte what the phone was served:
/// the per-MAC files (secrets, line keys, base URL) and the model's common file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_prints_exactly_what_the_phone_fetched() {
    use common::phones::{device, group_with_users};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // A fixed phone port, so the URL the templates render is derived from the configuration
    // alone, as it is for `deskprov render` (an ephemeral port is known only once bound).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let phones = format!("127.0.0.1:{port}");
    let s = common::TestServer::start_at(&data, |c| c.listen.phones = phones.clone()).await;
    group_with_users(&s).await;
    let password = device(&s, "805ec0000001", "yealink-t54w", "desk").await;
    let ua = "Yealink SIP-T54W 96.86.0.70 805ec0000001";
    let mut served = Vec::new();
    for file in ["805ec0000001.boot", "y000000000096.cfg", "805ec0000001.cfg"] {
        let r = common::phone_get(
            &s.client,
            &s.phones,
            &format!("/{file}"),
            ua,
            Some(("805ec0000001", &password)),
            "MD5",
            &[],
        )
        .await;
        assert_eq!(r.status(), 200, "{file}");
        served.push((file, r.bytes().await.unwrap()));
    }
    s.shutdown().await;

    let config = tmp.path().join("deskprov.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[listen]\nphones = {phones:?}\nadmin = \"127.0.0.1:0\"\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    for (file, bytes) in served {
        let out = Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .args(["render", "--mac", "80:5E:C0:00:00:01", "--file", file])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout == bytes.as_ref(),
            "{file}: deskprov render differs from what the phone got:\n--- phone\n{}\n--- render\n{}",
            String::from_utf8_lossy(&bytes),
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
