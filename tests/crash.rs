//! Durability: a stream of writes, `kill -9` at a random moment, restart on the same data dir;
//! every write answered 2xx is there and the change log is gapless. Repeated 12 times.

mod common;

#[path = "common/process.rs"]
mod process;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use process::{write_config, Proc};
use serde_json::{json, Value};

/// A cheap pseudo-random number (no RNG crate needed for jitter).
fn jitter(max_ms: u64, salt: u64) -> u64 {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    (n ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)) % max_ms
}

async fn post(client: &reqwest::Client, url: &str, token: &str, body: Value) -> Option<u16> {
    client
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = write_config(tmp.path(), Some(&data));
    let mut acknowledged: BTreeSet<String> = BTreeSet::new();
    let mut next_ext = 10_000u32;

    let mut p = Proc::serve(tmp.path(), &config);
    let token = std::fs::read_to_string(data.join("admin-token"))
        .unwrap()
        .trim()
        .to_string();
    let client = common::https_client(&data.join("tls/ca.pem"));
    let r = post(
        &client,
        &format!("{}/api/v1/groups", p.admin),
        &token,
        json!({"id": "crash", "sip": {"domain": "d.example"}}),
    )
    .await;
    assert_eq!(r, Some(201));

    for round in 0..12u64 {
        // Two writers stream users until the process dies under them.
        let users_url = format!("{}/api/v1/groups/crash/users", p.admin);
        let mut writers = Vec::new();
        for w in 0..2u32 {
            let (client, url, token) = (client.clone(), users_url.clone(), token.clone());
            let start = next_ext + w * 5_000;
            writers.push(tokio::spawn(async move {
                let mut ok = Vec::new();
                for i in 0..5_000u32 {
                    let ext = (start + i).to_string();
                    let body =
                        json!({"extension": ext, "first_name": "Crash", "last_name": "Test"});
                    match post(&client, &url, &token, body).await {
                        Some(201) => ok.push(ext),
                        Some(s) => panic!("unexpected status {s}"),
                        None => break, // the server is gone
                    }
                }
                ok
            }));
        }
        next_ext += 10_000;
        tokio::time::sleep(Duration::from_millis(60 + jitter(400, round))).await;
        p.kill9();
        for w in writers {
            acknowledged.extend(w.await.unwrap());
        }

        p = Proc::serve(tmp.path(), &config);
        let base = p.admin.clone();
        // Every acknowledged user is there.
        let mut present = BTreeSet::new();
        let mut after = String::new();
        loop {
            let url = format!(
                "{base}/api/v1/groups/crash/users?limit=1000{}",
                if after.is_empty() {
                    String::new()
                } else {
                    format!("&after={after}")
                }
            );
            let page: Value = client
                .get(&url)
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            for u in page["items"].as_array().unwrap() {
                present.insert(u["extension"].as_str().unwrap().to_string());
            }
            match page["next"].as_str() {
                Some(n) => after = n.to_string(),
                None => break,
            }
        }
        let lost: Vec<_> = acknowledged.difference(&present).collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged writes lost: {lost:?}"
        );
        // The change log is gapless: 1..=last_seq, each entry once.
        let mut seqs = Vec::new();
        let mut since = 0u64;
        loop {
            let page: Value = client
                .get(format!("{base}/api/v1/changes?since={since}&limit=1000"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let items = page["items"].as_array().unwrap();
            if items.is_empty() {
                assert_eq!(since, page["last_seq"].as_u64().unwrap());
                break;
            }
            for c in items {
                seqs.push(c["seq"].as_u64().unwrap());
            }
            since = *seqs.last().unwrap();
        }
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "round {round}: gap in the change log"
        );
        // Users in the store = user.create entries in the log (no write without its entry).
        assert_eq!(
            present.len() as u64 + 2,
            seqs.len() as u64,
            "round {round}: token + group + users"
        );
    }
    eprintln!(
        "{} acknowledged writes over 12 kill -9 rounds",
        acknowledged.len()
    );
    assert!(
        acknowledged.len() > 50,
        "the test must have written something: {}",
        acknowledged.len()
    );
    let status = p.terminate();
    assert!(status.success(), "graceful SIGTERM exit: {status:?}");
}
