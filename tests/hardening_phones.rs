//! Defences of the phone listener against one client taking others down, over real HTTPS: the
//! lockout per (address, MAC) and per address (with exempt networks), the unprovisioned list's
//! per-address rate, and the per-device upload quotas. Clients bind other 127.x addresses to
//! stand for different sites.

mod common;

use std::net::IpAddr;

use common::phones::{device, OnePhone};
use common::{phone_get, TestServer};

/// A client of `s` whose connections come from `ip` (a loopback address).
fn client_from(s: &TestServer, ip: &str) -> reqwest::Client {
    let ca = std::fs::read(s.data_dir.join("tls").join("ca.pem")).expect("ca.pem");
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA parses"))
        .local_address(ip.parse::<IpAddr>().expect("an address"))
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("client")
}

/// GETs `mac`'s main file from `client` answering the challenge as `mac` with `password`.
async fn fetch_as(
    client: &reqwest::Client,
    s: &TestServer,
    mac: &str,
    password: &str,
) -> reqwest::Response {
    let path = format!("/{mac}.cfg");
    phone_get(
        client,
        &s.phones,
        &path,
        OnePhone::UA,
        Some((mac, password)),
        "MD5",
        &[],
    )
    .await
}

fn retry_after(r: &reqwest::Response) -> u64 {
    r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_wrong_password_on_one_phone_does_not_lock_out_its_neighbour_behind_the_same_address() {
    let p = OnePhone::start_with(|c| c.phones.auth_fail_limit = 3).await;
    device(&p.s, "805ec0000002", "yealink-t54w", "desk2").await;
    // The neighbour keeps failing, well past its own limit: it locks itself out only.
    for i in 0..6 {
        let status = fetch_as(&p.s.client, &p.s, "805ec0000002", "bad")
            .await
            .status();
        assert_eq!(status, if i < 3 { 401 } else { 429 }, "attempt {}", i + 1);
    }
    assert_eq!(
        p.fetch().await.status(),
        200,
        "the other phone at that address"
    );
}

#[tokio::test]
async fn exactly_auth_fail_limit_failures_are_answered_401_and_the_next_request_429() {
    let p = OnePhone::start_with(|c| c.phones.auth_fail_limit = 3).await;
    for i in 0..3 {
        assert_eq!(p.fetch_with("bad").await.status(), 401, "failure {}", i + 1);
    }
    // The fourth request is refused even with the right password, before any challenge.
    let r = p.fetch().await;
    assert_eq!(r.status(), 429);
    assert!(retry_after(&r) > 200, "Retry-After {}", retry_after(&r));
}

#[tokio::test]
async fn an_exempt_network_is_not_locked_out_as_a_whole_address_but_its_pairs_still_lock() {
    let p = OnePhone::start_with(|c| {
        c.phones.auth_fail_limit = 3;
        c.phones.auth_fail_macs_per_ip = 3;
        c.phones.lockout_exempt = vec!["127.0.0.2/32".into()];
    })
    .await;
    for (ip, exempt) in [("127.0.0.2", true), ("127.0.0.3", false)] {
        let client = client_from(&p.s, ip);
        // One failure each for four distinct MACs (unknown ones: a spray).
        for i in 0..4 {
            let mac = format!("805ec00000a{i}");
            let status = fetch_as(&client, &p.s, &mac, "guess").await.status();
            assert!(status == 401 || status == 429, "{ip} {mac}: {status}");
        }
        let real = fetch_as(&client, &p.s, OnePhone::MAC, &p.password).await;
        assert_eq!(real.status(), if exempt { 200 } else { 429 }, "{ip}");
    }
    // In the exempt network, guessing one MAC's password still locks that MAC out.
    let client = client_from(&p.s, "127.0.0.2");
    for _ in 0..3 {
        let r = fetch_as(&client, &p.s, OnePhone::MAC, "bad").await;
        assert_eq!(r.status(), 401);
    }
    let r = fetch_as(&client, &p.s, OnePhone::MAC, &p.password).await;
    assert_eq!(r.status(), 429);
}

#[tokio::test]
async fn a_flood_of_unknown_macs_from_one_address_leaves_the_real_entries_listed() {
    let p = OnePhone::start().await;
    let site = client_from(&p.s, "127.0.0.2");
    let r = phone_get(
        &site,
        &p.s.phones,
        "/805ec0000077.cfg",
        OnePhone::UA,
        None,
        "MD5",
        &[],
    )
    .await;
    assert_eq!(r.status(), 401);
    // More made-up MACs than the list holds (1,000), all from one address.
    let flood = client_from(&p.s, "127.0.0.3");
    for i in 0..1100u32 {
        let path = format!("/0004f2{i:06x}.cfg");
        let r = flood
            .get(format!("{}{path}", p.s.phones))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let list = p.s.get("/api/v1/unprovisioned").await.body;
    let items = list.as_array().unwrap();
    assert!(
        items
            .iter()
            .any(|u| u["mac"] == "805ec0000077" && u["ip"] == "127.0.0.2"),
        "the real phone is still listed"
    );
    let flooded = items.iter().filter(|u| u["ip"] == "127.0.0.3").count();
    assert_eq!(
        flooded, 10,
        "one address adds unprovisioned_per_ip_per_min new MACs"
    );
}

/// The device's uploads as listed by the admin API: (name, size).
async fn uploads(p: &OnePhone) -> Vec<(String, u64)> {
    let body =
        p.s.get(&format!("/api/v1/devices/{}/uploads", OnePhone::MAC))
            .await
            .body;
    body.as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["name"].as_str().unwrap().to_string(),
                u["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_upload_quota_removes_the_oldest_files_and_bounds_the_bytes() {
    let p = OnePhone::start_with(|c| {
        c.phones.upload_max_files = 3;
        c.phones.upload_max_total_bytes = 10_000;
    })
    .await;
    let name = |n: &str| format!("{}-{n}.log", OnePhone::MAC);
    for n in ["a", "b", "c", "d"] {
        let r = p.upload(&name(n), vec![b'x'; 3000]).await;
        assert_eq!(r.status(), 204, "{n}");
    }
    // Four files over a quota of three: the oldest went.
    let names = |v: Vec<(String, u64)>| v.into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    assert_eq!(names(uploads(&p).await), [name("b"), name("c"), name("d")]);
    // 9,000 + 7,000 bytes over 10,000: b and c go, d stays.
    assert_eq!(p.upload(&name("e"), vec![b'y'; 7000]).await.status(), 204);
    let kept = uploads(&p).await;
    assert!(
        kept.iter().map(|(_, s)| s).sum::<u64>() <= 10_000,
        "{kept:?}"
    );
    assert_eq!(names(kept), [name("d"), name("e")]);
}

#[tokio::test]
async fn a_single_upload_over_the_device_quota_is_413() {
    let p = OnePhone::start_with(|c| c.phones.upload_max_total_bytes = 50_000).await;
    let r = p
        .upload(&format!("{}-big.log", OnePhone::MAC), vec![b'x'; 60_000])
        .await;
    assert_eq!(r.status(), 413);
    assert!(uploads(&p).await.is_empty());
}
