//! A template change to a fleet whose phones re-fetch on NOTIFY (SPEC §3, §6): fixed pacing
//! (the default, `notify_rate = 50`), fixed and unpaced (`notify_rate = 0`: every NOTIFY at
//! once), and adaptive pacing (`pacing = "adaptive"`, no ceiling), each on a fresh server.
//!
//!     cargo bench --bench resync_pacing [-- DEVICES]       (default 10000)
//!     RESYNC_MODES=adaptive,unpaced  (a subset of fixed,unpaced,adaptive)
//!
//! Each run: `DEVICES` Yealink devices (100 per group) NOTIFYed at four in-process UDP phones
//! that answer 200 OK and then fetch the device's main file as a phone re-syncing does (a new
//! TLS connection, 401, digest, 200). The phones first boot (fetch once, so nothing is pending),
//! then a new version of the model's main-file template goes live through the admin API.
//! Prints the time from the first NOTIFY to the last fetch, the p99 of the phones' fetch
//! sessions (NOTIFY received → 200), and the bound adaptive pacing was given (`fetch_p99_ms`,
//! the p99 of the phone listener's request latency it keeps under).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Conn, Device};
use deskprov::catalog::Catalog;
use deskprov::server::open_store;
use tokio_rustls::TlsConnector;

const BOUND_MS: u64 = 100;
/// Long enough for the phones' first boot on a busy machine.
const DEBOUNCE_MS: u64 = 45_000;

/// The phones' side of a run.
struct Fleet {
    /// Request-URI user → device index.
    by_user: HashMap<String, usize>,
    devices: Vec<Device>,
    /// Distinct NOTIFYs received, fetches completed, and their latencies.
    notified: AtomicUsize,
    fetched: AtomicUsize,
    fetched_once: Vec<std::sync::atomic::AtomicBool>,
    distinct: AtomicUsize,
    latencies: Mutex<Vec<Duration>>,
    first_notify: Mutex<Option<Instant>>,
    last_fetch: Mutex<Option<Instant>>,
    /// Connections the server closed at once (over its caps), retried.
    retries: AtomicUsize,
}

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

/// A phone's re-sync: new connection, main file, challenge, digest; a connection the server
/// closes (over its `[limits]` caps) is retried after a second, as a phone retries.
async fn fetch_retrying(
    connector: &TlsConnector,
    addr: SocketAddr,
    d: &Device,
    retries: &AtomicUsize,
) -> std::io::Result<()> {
    let mut left = 30;
    loop {
        match fetch(connector, addr, d).await {
            Err(_) if left > 0 => {
                left -= 1;
                retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            r => return r,
        }
    }
}

async fn fetch(connector: &TlsConnector, addr: SocketAddr, d: &Device) -> std::io::Result<()> {
    let mut c = Conn::open(connector, addr).await?;
    let path = format!("/{}.cfg", d.mac);
    let r = c.get(&path, None).await?;
    assert_eq!(r.status, 401, "{path}");
    let a = common::authorization(&r.www_authenticate, d, &path, 1).expect("challenge");
    let r = c.get(&path, Some(&a)).await?;
    assert_eq!(r.status, 200, "{path} with digest");
    Ok(())
}

async fn phones(
    fleet: Arc<Fleet>,
    socks: Vec<Arc<tokio::net::UdpSocket>>,
    connector: TlsConnector,
    addr: SocketAddr,
) {
    for sock in socks {
        let (fleet, connector) = (fleet.clone(), connector.clone());
        tokio::spawn(async move {
            let mut call_ids = std::collections::HashSet::new();
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((len, from)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                let at = Instant::now();
                let req = String::from_utf8_lossy(&buf[..len]).to_string();
                let _ = sock.send_to(reply(&req).as_bytes(), from).await;
                let call_id = req
                    .split("\r\n")
                    .find(|l| l.starts_with("Call-ID:"))
                    .unwrap_or("")
                    .to_string();
                if !call_ids.insert(call_id) {
                    continue; // a retransmission
                }
                let user = req
                    .split_once("sip:")
                    .and_then(|(_, r)| r.split_once('@'))
                    .map(|(u, _)| u.to_string())
                    .unwrap_or_default();
                let Some(&i) = fleet.by_user.get(&user) else {
                    eprintln!("NOTIFY for an unknown line {user}");
                    continue;
                };
                fleet.notified.fetch_add(1, Ordering::Relaxed);
                fleet.first_notify.lock().unwrap().get_or_insert(at);
                let (fleet, connector) = (fleet.clone(), connector.clone());
                tokio::spawn(async move {
                    fetch_retrying(&connector, addr, &fleet.devices[i], &fleet.retries)
                        .await
                        .expect("re-sync fetch");
                    let done = Instant::now();
                    fleet.latencies.lock().unwrap().push(done - at);
                    *fleet.last_fetch.lock().unwrap() = Some(done);
                    fleet.fetched.fetch_add(1, Ordering::Relaxed);
                    if !fleet.fetched_once[i].swap(true, Ordering::Relaxed) {
                        fleet.distinct.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        });
    }
}

struct Outcome {
    span: Duration,
    p99: Duration,
    p50: Duration,
    notifies: usize,
    retries: usize,
}

async fn run(n: usize, sync: &str) -> Option<Outcome> {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = common::free_port();
    let admin_port = common::free_port();
    let config = common::config(&data, port);
    let mut socks = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..4 {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        ports.push(s.local_addr().unwrap().port());
        socks.push(Arc::new(s));
    }
    let devices = {
        let store = open_store(&config, Arc::new(Catalog::builtin().unwrap())).unwrap();
        common::seed_devices_notified(&store, n, &ports)
    };
    // A long debounce: the phones' first boot (below) lands before any NOTIFY is due, so the
    // devices' creation sends nothing; the template change waits the same before going out.
    let _server = common::spawn_deskprov_with(
        tmp.path(),
        &data,
        port,
        admin_port,
        // All phones come from 127.0.0.1: the per-address cap is lifted as for a real fleet.
        &format!("debounce_ms = {DEBOUNCE_MS}\n{sync}\n[limits]\nmax_connections_per_ip = 10000"),
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let connector = common::connector(&data.join("tls/ca.pem"));
    let fleet = Arc::new(Fleet {
        by_user: (0..n).map(|i| (common::line_user(i), i)).collect(),
        fetched_once: (0..n)
            .map(|_| std::sync::atomic::AtomicBool::new(false))
            .collect(),
        devices,
        notified: AtomicUsize::new(0),
        fetched: AtomicUsize::new(0),
        distinct: AtomicUsize::new(0),
        latencies: Mutex::new(Vec::new()),
        first_notify: Mutex::new(None),
        last_fetch: Mutex::new(None),
        retries: AtomicUsize::new(0),
    });
    // Boot: every phone fetches once, 64 at once.
    let t = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (fleet, connector, next) = (fleet.clone(), connector.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(d) = fleet.devices.get(next.fetch_add(1, Ordering::Relaxed)) {
                fetch_retrying(&connector, addr, d, &fleet.retries)
                    .await
                    .expect("boot fetch");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!("  {n} phones booted in {:.1?}", t.elapsed());
    if t.elapsed() > Duration::from_millis(DEBOUNCE_MS - 2000) {
        eprintln!("  (booting took longer than the debounce: some phones may be notified for their creation)");
    }
    phones(fleet.clone(), socks, connector, addr).await;
    // Wait for any creation NOTIFYs to settle, then start counting from zero.
    tokio::time::sleep(Duration::from_millis(DEBOUNCE_MS + 1000).saturating_sub(t.elapsed())).await;
    let settle = Instant::now();
    while fleet.notified.load(Ordering::Relaxed) > fleet.fetched.load(Ordering::Relaxed)
        && settle.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let early = fleet.notified.swap(0, Ordering::Relaxed);
    fleet.fetched.store(0, Ordering::Relaxed);
    fleet.distinct.store(0, Ordering::Relaxed);
    for f in &fleet.fetched_once {
        f.store(false, Ordering::Relaxed);
    }
    fleet.latencies.lock().unwrap().clear();
    fleet.retries.store(0, Ordering::Relaxed);
    *fleet.first_notify.lock().unwrap() = None;
    if early > 0 {
        eprintln!("  {early} NOTIFYs before the change (not counted)");
    }

    // The change: a new version of the main-file template, live for every device.
    let (client, auth) = common::admin_client(&data);
    let url = format!(
        "https://localhost:{admin_port}/api/v1/models/{}/templates/mac.cfg.tera",
        common::MODEL
    );
    let source = client
        .get(&url)
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(source.status(), 200, "template source");
    let source = source.text().await.unwrap();
    let put = client
        .put(&url)
        .header("authorization", &auth)
        .header("content-type", "text/plain")
        .body(format!("{source}\n# fleet change\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        put.status(),
        201,
        "{}",
        put.text().await.unwrap_or_default()
    );

    let deadline = Instant::now() + Duration::from_secs(900);
    while fleet.distinct.load(Ordering::Relaxed) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = fleet.distinct.load(Ordering::Relaxed);
    if got < n {
        println!("  only {got}/{n} devices re-fetched within 15 minutes");
        return None;
    }
    let first = fleet.first_notify.lock().unwrap().unwrap();
    let last = fleet.last_fetch.lock().unwrap().unwrap();
    let mut l = fleet.latencies.lock().unwrap().clone();
    l.sort();
    Some(Outcome {
        span: last - first,
        p99: common::percentile(&l, 990),
        p50: common::percentile(&l, 500),
        notifies: fleet.notified.load(Ordering::Relaxed),
        retries: fleet.retries.load(Ordering::Relaxed),
    })
}

fn main() {
    let n = common::numeric_args().first().copied().unwrap_or(10_000);
    let modes = std::env::var("RESYNC_MODES").unwrap_or_else(|_| "fixed,unpaced,adaptive".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for mode in modes.split(',') {
        let (label, sync) = match mode.trim() {
            "fixed" => (
                "fixed, notify_rate = 50 (default)",
                "pacing = \"fixed\"\nnotify_rate = 50".to_string(),
            ),
            "unpaced" => (
                "fixed, notify_rate = 0 (unpaced)",
                "pacing = \"fixed\"\nnotify_rate = 0".to_string(),
            ),
            "adaptive" => (
                "adaptive, no ceiling",
                format!("pacing = \"adaptive\"\nnotify_rate = 0\nfetch_p99_ms = {BOUND_MS}"),
            ),
            other => panic!("unknown mode {other}"),
        };
        eprintln!("{label}:");
        if let Some(o) = rt.block_on(run(n, &sync)) {
            println!(
                "resync_pacing, {label}: {n} devices re-fetched in {:.1?} ({:.0}/s), fetch p50 {:.1?} p99 {:.1?}, {} NOTIFYs, {} connections refused and retried{}",
                o.span,
                n as f64 / o.span.as_secs_f64(),
                o.p50,
                o.p99,
                o.notifies,
                o.retries,
                if mode == "adaptive" { format!(" (bound: phone listener p99 <= {BOUND_MS} ms)") } else { String::new() }
            );
        }
    }
}
