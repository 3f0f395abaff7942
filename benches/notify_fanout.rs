//! NOTIFY fan-out (SPEC §6): 10,000 devices answering 200 OK, pacing off.
//!
//!     cargo bench --bench notify_fanout [-- DEVICES]
//!
//! Loads the devices offline (each is a change), starts the server on loopback, and times the
//! dispatcher from the first to the last NOTIFY received by four in-process UDP phones that
//! answer 200 OK. Prints NOTIFY/s.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deskprov::catalog::Catalog;
use deskprov::config::Config;
use deskprov::domain::rules::{DeviceInput, UserInput};
use deskprov::server::{open_store, Server};

fn reply(req: &str) -> String {
    let h = |name: &str| {
        req.split("\r\n")
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=b\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        h("Via"), h("From"), h("To"), h("Call-ID"), h("CSeq")
    )
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        // Four phones on loopback answering 200 OK; count arrivals and time first/last.
        let count = Arc::new(AtomicUsize::new(0));
        let packets = Arc::new(AtomicUsize::new(0));

        let times: Arc<Mutex<(Option<Instant>, Option<Instant>)>> = Default::default();
        let mut ports = Vec::new();
        for _ in 0..4 {
            let sock = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
            ports.push(sock.local_addr().unwrap().port());
            let (count, times, packets) = (count.clone(), times.clone(), packets.clone());
            tokio::spawn(async move {
                // A device always targets the same phone: each phone de-duplicates on its own.
                let mut call_ids = std::collections::HashSet::new();
                let mut buf = vec![0u8; 4096];
                loop {
                    let Ok((len, from)) = sock.recv_from(&mut buf).await else { return };
                    let req = String::from_utf8_lossy(&buf[..len]).to_string();
                    let _ = sock.send_to(reply(&req).as_bytes(), from).await;
                    packets.fetch_add(1, Ordering::Relaxed);
                    let call_id = req.split("\r\n").find(|l| l.starts_with("Call-ID:")).unwrap_or("").to_string();
                    if !call_ids.insert(call_id) {
                        continue; // a retransmission
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                    let now = Instant::now();
                    let mut t = times.lock().unwrap();
                    t.0.get_or_insert(now);
                    t.1 = Some(now);
                }
            });
        }

        let dir = tempfile::tempdir().unwrap();
        let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
        config.listen.admin = "127.0.0.1:0".into();
        config.listen.phones = "127.0.0.1:0".into();
        config.sync.sip_bind = "127.0.0.1:0".into();
        config.sync.notify_rate = 0;
        config.sync.same_hash = false;
        config.sync.debounce_ms = 500;

        let load = Instant::now();
        {
            let store = open_store(&config, Arc::new(Catalog::builtin().unwrap())).unwrap();
            let g: deskprov::domain::Group =
                serde_json::from_value(serde_json::json!({"id": "bench", "sip": {"domain": "sip.example.net"}})).unwrap();
            store.create_group("bench", g.clone()).unwrap();
            let u: UserInput = serde_json::from_value(serde_json::json!({"extension": "1001"})).unwrap();
            store.create_user("bench", &g.id, u).unwrap();
            for i in 0..n {
                let d: DeviceInput = serde_json::from_value(serde_json::json!({
                    "mac": format!("0004f2{i:06x}"), "model": "yealink-t54w",
                    "notify_target": format!("udp:127.0.0.1:{}", ports[i % ports.len()]),
                }))
                .unwrap();
                store.create_device("bench", &g.id, d).unwrap();
            }
        }
        eprintln!("loaded {n} devices in {:.1?}", load.elapsed());

        let server = Server::start(config).await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        let deadline = Instant::now() + Duration::from_secs(120);
        while count.load(Ordering::Relaxed) < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let got = count.load(Ordering::Relaxed);
        let (first, last) = *times.lock().unwrap();
        let span = last.zip(first).map(|(l, f)| l - f).unwrap_or_default();
        println!(
            "notify_fanout: {got}/{n} NOTIFY transactions answered 200 OK in {span:.2?}: {:.0} NOTIFY/s ({} datagrams incl. retransmissions; pacing off, loopback)",
            got as f64 / span.as_secs_f64().max(1e-9),
            packets.load(Ordering::Relaxed)
        );
        let _ = tx.send(());
        let _ = task.await;
    });
}
