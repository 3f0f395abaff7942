//! Phone fetch latency with and without a concurrent stream of admin writes.
//!
//!     cargo bench --bench read_under_writes [-- DEVICES CONNECTIONS SECONDS]
//!
//! deskprov runs as its own process on loopback (as in `boot_storm`), with DEVICES (2,000)
//! Yealink T54W devices seeded through the domain rules. CONNECTIONS (32) keep-alive TLS
//! connections, one phone each, fetch their per-MAC main file with MD5 digest auth back to back
//! for SECONDS (5) per phase. Phase A: no writes. Phase B: the same, while one admin client
//! PATCHes a user's display name over the admin HTTPS API, one request after the other. That
//! user is in a group of its own and owns no device, so no fetched file changes, but every
//! write is a full commit: serialised, flushed to disk, then published as a new snapshot.
//! Reports fetches/s and fetch latency percentiles per phase, and admin writes/s.
//!
//! The client and the server share the machine's cores; the data directory is a temporary
//! directory (set `TMPDIR` to put it on another disk).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Device, Phone};
use deskprov::catalog::Catalog;
use deskprov::server::open_store;
use tokio_rustls::TlsConnector;

const WRITER_GROUP: &str = "bench-writes";
const WRITER_EXT: &str = "9000";

struct Phase {
    fetches_per_sec: f64,
    p50: Duration,
    p99: Duration,
    p999: Duration,
    max: Duration,
    writes_per_sec: Option<f64>,
}

/// Every connection fetches until `until`; returns each fetch's latency.
async fn fetch_until(
    connector: &TlsConnector,
    addr: SocketAddr,
    devices: &Arc<Vec<Device>>,
    connections: usize,
    until: Instant,
) -> Vec<Duration> {
    let mut tasks = Vec::new();
    for w in 0..connections {
        let (connector, devices) = (connector.clone(), devices.clone());
        tasks.push(tokio::spawn(async move {
            let mut phone = Phone::connect(&connector, addr, &devices[w], true)
                .await
                .expect("connect");
            let mut lat = Vec::with_capacity(64 * 1024);
            while Instant::now() < until {
                let s = Instant::now();
                phone.fetch().await.expect("fetch");
                lat.push(s.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// PATCHes the writer user's display name, one request after the other, until `until`;
/// returns the number of writes acknowledged.
async fn write_until(client: reqwest::Client, admin: String, token: String, until: Instant) -> u64 {
    let url = format!("{admin}/api/v1/groups/{WRITER_GROUP}/users/{WRITER_EXT}");
    let mut n = 0u64;
    while Instant::now() < until {
        let r = client
            .patch(&url)
            .bearer_auth(&token)
            .json(&serde_json::json!({"display_name": format!("Writer {n}")}))
            .send()
            .await
            .expect("PATCH");
        assert_eq!(r.status(), 200, "PATCH {url}: {}", r.text().await.unwrap());
        n += 1;
    }
    n
}

fn phase(lat: &mut [Duration], elapsed: Duration, writes: Option<u64>) -> Phase {
    lat.sort();
    Phase {
        fetches_per_sec: lat.len() as f64 / elapsed.as_secs_f64(),
        p50: common::percentile(lat, 500),
        p99: common::percentile(lat, 990),
        p999: common::percentile(lat, 999),
        max: *lat.last().unwrap(),
        writes_per_sec: writes.map(|w| w as f64 / elapsed.as_secs_f64()),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let args = common::numeric_args();
    let n = args.first().copied().unwrap_or(2_000);
    let connections = args.get(1).copied().unwrap_or(32).clamp(1, n);
    let secs = args.get(2).copied().unwrap_or(5).clamp(1, 60) as u64;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = common::free_port();
    let admin_port = common::free_port();
    let config = common::config(&data, port);

    let t = Instant::now();
    let catalog = Arc::new(Catalog::builtin().unwrap());
    let devices = {
        let store = open_store(&config, catalog).unwrap();
        common::seed_devices(&store, n)
    };
    eprintln!("seeded {n} devices in {:.1?}", t.elapsed());
    let _server = common::spawn_deskprov(tmp.path(), &data, port, admin_port);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let admin_addr = SocketAddr::from(([127, 0, 0, 1], admin_port));
    let connector = common::connector(&data.join("tls/ca.pem"));
    let token = std::fs::read_to_string(data.join("admin-token"))
        .expect("admin-token")
        .trim()
        .to_string();
    let ca = std::fs::read(data.join("tls/ca.pem")).unwrap();
    let admin_client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .resolve("localhost", admin_addr)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let admin = format!("https://localhost:{admin_port}");
    let devices = Arc::new(devices);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (a, b) = rt.block_on(async {
        // The writer's group and user, over the admin API: no device belongs to either.
        for (path, body) in [
            (
                "/api/v1/groups".to_string(),
                serde_json::json!({"id": WRITER_GROUP, "sip": {"domain": "sip.example.net"}}),
            ),
            (
                format!("/api/v1/groups/{WRITER_GROUP}/users"),
                serde_json::json!({"extension": WRITER_EXT, "first_name": "Writer"}),
            ),
        ] {
            let r = admin_client
                .post(format!("{admin}{path}"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "POST {path}: {}", r.text().await.unwrap());
        }
        // Warm-up: first fetches (render cache, first check-ins), one write.
        let until = Instant::now() + Duration::from_secs(1);
        let (_, w) = tokio::join!(
            fetch_until(&connector, addr, &devices, connections, until),
            write_until(admin_client.clone(), admin.clone(), token.clone(), until),
        );
        assert!(w > 0, "no admin write succeeded during the warm-up");

        let d = Duration::from_secs(secs);
        let s = Instant::now();
        let mut lat = fetch_until(&connector, addr, &devices, connections, s + d).await;
        let a = phase(&mut lat, s.elapsed(), None);

        let s = Instant::now();
        let (mut lat, w) = tokio::join!(
            fetch_until(&connector, addr, &devices, connections, s + d),
            write_until(admin_client.clone(), admin.clone(), token.clone(), s + d),
        );
        let b = phase(&mut lat, s.elapsed(), Some(w));
        (a, b)
    });

    println!(
        "read under writes: {n} devices, {connections} keep-alive connections (MD5 digest), {secs} s per phase"
    );
    println!(
        "{:<18} {:>11} {:>10} {:>10} {:>10} {:>10} {:>15}",
        "phase", "fetches/s", "p50", "p99", "p99.9", "max", "admin writes/s"
    );
    for (name, p) in [("A: no writes", a), ("B: admin writes", b)] {
        println!(
            "{:<18} {:>11.0} {:>10} {:>10} {:>10} {:>10} {:>15}",
            name,
            p.fetches_per_sec,
            ms(p.p50),
            ms(p.p99),
            ms(p.p999),
            ms(p.max),
            p.writes_per_sec
                .map_or("-".to_string(), |w| format!("{w:.0}")),
        );
    }
}
