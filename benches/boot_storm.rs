//! Boot storm and keep-alive fetches against nginx (SPEC §6).
//!
//!     scripts/boot-storm.sh            (installs nginx, then runs this)
//!     cargo bench --bench boot_storm [-- DEVICES CONCURRENCY [FETCHES_PER_KEEP_ALIVE_CONNECTION]]
//!
//! deskprov (its own process) and nginx (serving the same pre-rendered bytes as static files)
//! use the same ECDSA certificate, TLS 1.2/1.3 and no session resumption, on loopback. Boot
//! storm: each device opens a new TLS connection and fetches its model's common file and its
//! per-MAC file — from deskprov with digest auth as a phone does (401, then authorised), from
//! nginx without. Keep-alive: each connection fetches per-MAC files repeatedly. Reports
//! devices/s and p99 per device session, and requests/s. nginx is skipped if not installed.
//!
//! The first storm is every device's first fetch: each applied revision is made durable before
//! its answer. It starts once the server has rendered its devices' files ahead (`[render]
//! ahead`, as after a power cut: phones take tens of seconds to boot); `cold` starts it at
//! once with that off, so every file is rendered on its first fetch.

mod common;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Conn, Device, Kill, Phone, BASE_URL, MODEL};
use deskprov::catalog::Catalog;
use deskprov::render::Renderer;
use deskprov::server::open_store;
use tokio_rustls::TlsConnector;

const COMMON: &str = "y000000000096.cfg";

/// One device booting: new connection, common file, per-MAC file (with digest when `auth`).
async fn boot(
    connector: &TlsConnector,
    addr: SocketAddr,
    d: &Device,
    auth: bool,
) -> std::io::Result<()> {
    let mut c = Conn::open(connector, addr).await?;
    let r = c.get(&format!("/{COMMON}"), None).await?;
    assert_eq!(r.status, 200, "common file");
    let path = format!("/{}.cfg", d.mac);
    let r = c.get(&path, None).await?;
    if auth {
        assert_eq!(r.status, 401);
        let a = common::authorization(&r.www_authenticate, d, &path, 1).expect("challenge");
        let r = c.get(&path, Some(&a)).await?;
        assert_eq!(r.status, 200, "per-MAC file");
    } else {
        assert_eq!(r.status, 200, "per-MAC file");
    }
    Ok(())
}

/// Keep-alive: `per_conn` fetches of the per-MAC file on one connection.
async fn keep_alive(
    connector: &TlsConnector,
    addr: SocketAddr,
    d: &Device,
    auth: bool,
    per_conn: u32,
) -> std::io::Result<u32> {
    let mut phone = Phone::connect(connector, addr, d, auth).await?;
    for _ in 0..per_conn {
        phone.fetch().await?;
    }
    Ok(per_conn)
}

struct Report {
    per_sec: f64,
    p99: Duration,
}

async fn storm(
    connector: &TlsConnector,
    addr: SocketAddr,
    devices: &Arc<Vec<Device>>,
    auth: bool,
    concurrency: usize,
) -> Report {
    let next = Arc::new(AtomicUsize::new(0));
    let lat = Arc::new(Mutex::new(Vec::with_capacity(devices.len())));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (connector, devices, next, lat) = (
            connector.clone(),
            devices.clone(),
            next.clone(),
            lat.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(d) = devices.get(i) else { return };
                let s = Instant::now();
                boot(&connector, addr, d, auth)
                    .await
                    .expect("device session");
                lat.lock().unwrap().push(s.elapsed());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = t.elapsed();
    let mut l = lat.lock().unwrap().clone();
    l.sort();
    Report {
        per_sec: devices.len() as f64 / total.as_secs_f64(),
        p99: common::percentile(&l, 990),
    }
}

async fn keep_alive_run(
    connector: &TlsConnector,
    addr: SocketAddr,
    devices: &Arc<Vec<Device>>,
    auth: bool,
    concurrency: usize,
    per_conn: u32,
) -> f64 {
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (connector, devices) = (connector.clone(), devices.clone());
        tasks.push(tokio::spawn(async move {
            keep_alive(&connector, addr, &devices[w], auth, per_conn)
                .await
                .expect("keep-alive")
        }));
    }
    let mut n = 0u32;
    for t in tasks {
        n += t.await.unwrap();
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// Waits (at most 20 s) until `pid` uses under 5 % of a core over 250 ms; how long that took,
/// and whether it did.
async fn settle(pid: u32) -> (Duration, bool) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        let before = common::cpu_time(pid);
        tokio::time::sleep(Duration::from_millis(250)).await;
        if common::cpu_time(pid).saturating_sub(before) < Duration::from_micros(12_500) {
            return (t.elapsed(), true);
        }
    }
    (t.elapsed(), false)
}

/// `n; over 1 ms a %, over 2.5 ms b %, ...` from cumulative bucket counts.
fn wait_summary(buckets: &[(String, u64)]) -> String {
    let Some(&(_, total)) = buckets.last() else {
        return "no histogram".into();
    };
    if total == 0 {
        return "none (no device applied a new revision)".into();
    }
    let over = buckets
        .iter()
        .filter(|(le, _)| ["0.001", "0.0025", "0.005", "0.01", "0.025"].contains(&le.as_str()))
        .map(|(le, c)| {
            let ms = le.parse::<f64>().unwrap_or(0.0) * 1000.0;
            format!(
                "over {ms} ms {:.2} %",
                (total - c) as f64 * 100.0 / total as f64
            )
        })
        .collect::<Vec<_>>();
    format!("{total}; {}", over.join(", "))
}

fn start_nginx(dir: &Path, www: &Path, tls: &Path, port: u16) -> Option<Kill> {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())?;
    let conf = dir.join("nginx.conf");
    let mut f = std::fs::File::create(&conf).unwrap();
    write!(
        f,
        "user root;\nworker_processes auto;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  keepalive_requests 1000000;\n  default_type text/plain;\n\
           client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
           server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {t}/server.pem;\n    ssl_certificate_key {t}/server.key;\n\
             ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_session_cache off;\n    ssl_session_tickets off;\n    root {w};\n  }}\n}}\n",
        d = dir.display(),
        t = tls.display(),
        w = www.display()
    )
    .unwrap();
    // NGINX_WRAP: a command to run nginx under (one process: `master_process off`).
    let wrap = std::env::var("NGINX_WRAP").unwrap_or_default();
    let mut words = wrap
        .split_whitespace()
        .map(str::to_string)
        .collect::<Vec<_>>();
    if !words.is_empty() {
        let text = std::fs::read_to_string(&conf).unwrap();
        std::fs::write(
            &conf,
            text.replace("worker_processes auto;", "master_process off;"),
        )
        .unwrap();
    }
    words.push(nginx.display().to_string());
    let child = Command::new(&words[0])
        .args(&words[1..])
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .ok()?;
    common::wait_port(SocketAddr::from(([127, 0, 0, 1], port)));
    Some(Kill(child))
}

fn main() {
    let args = common::numeric_args();
    let n = args.first().copied().unwrap_or(10_000);
    let concurrency = args.get(1).copied().unwrap_or(64);
    // Fetches per keep-alive connection (fewer under valgrind).
    let per_conn = args.get(2).copied().unwrap_or(2000) as u32;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let www = tmp.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let port = common::free_port();
    let config = common::config(&data, port);

    // Devices (100 per group, each owned by its user), and the same bytes for nginx.
    let t = Instant::now();
    let catalog = Arc::new(Catalog::builtin().unwrap());
    let devices: Vec<Device> = {
        let store = open_store(&config, catalog.clone()).unwrap();
        let out = common::seed_devices(&store, n);
        let renderer = Renderer::new(catalog.clone(), BASE_URL.into(), &[]);
        let state = store.read();
        let model = catalog.get(MODEL).unwrap();
        for spec in &model.files {
            if spec.per_device {
                for d in state.devices.values() {
                    let r = renderer.render_device(&state, d, spec).unwrap();
                    std::fs::write(www.join(spec.name_for(&d.mac, model.mac_case)), &r.bytes)
                        .unwrap();
                }
            } else {
                std::fs::write(
                    www.join(&spec.pattern),
                    renderer.render_common(model, spec).unwrap().bytes.clone(),
                )
                .unwrap();
            }
        }
        out
    };
    eprintln!("prepared {n} devices in {:.1?}", t.elapsed());
    // `cold`: the server does not render ahead; the first storm renders every file on demand.
    let cold = std::env::args().any(|a| a == "cold");
    let admin_port = common::free_port();
    let render = if cold {
        "\n[render]\nahead = false"
    } else {
        ""
    };
    let server = common::spawn_deskprov_with(tmp.path(), &data, port, admin_port, render);
    let deskprov_pid = server.0.id();
    let deskprov_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let nginx_port = common::free_port();
    let nginx = start_nginx(tmp.path(), &www, &data.join("tls"), nginx_port);
    let nginx_addr = SocketAddr::from(([127, 0, 0, 1], nginx_port));
    let nginx_pid = nginx.as_ref().map_or(0, |k| k.0.id());
    // The server's CPU per device or request during a run: comparable on a busy machine too.
    let cpu_per = |pid: u32, before: Duration, n: usize| {
        (common::cpu_time(pid).saturating_sub(before)).as_secs_f64() * 1e6 / n as f64
    };

    // The load generator's own CPU per request: it shares the cores with the servers.
    let client_per = |before: Duration, n: usize| {
        (common::own_cpu_time().saturating_sub(before)).as_secs_f64() * 1e6 / n as f64
    };
    let connector = common::connector(&data.join("tls/ca.pem"));
    let devices = Arc::new(devices);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let external = std::env::args().any(|a| a == "external");
    // `storm-only`: one boot storm per server, no keep-alive (for runs under valgrind).
    let storm_only = std::env::args().any(|a| a == "storm-only");
    let rounds = if storm_only { 1 } else { 2 };
    rt.block_on(async {
        // Phones take tens of seconds to boot; the server renders their files meanwhile.
        if cold {
            println!("cold: the server renders each file on its first fetch");
        } else {
            let t = common::rendered_ahead(admin_port, &data).await;
            println!("the server rendered its {n} devices' files ahead in {t:.1?} after start-up");
        }
        // Warm-up (render caches, accept loops), then the measured runs, deskprov and nginx
        // interleaved (A B A B) so both see the same background load.
        let warm = Arc::new(devices.iter().take(200).map(|d| Device { mac: d.mac.clone(), password: d.password.clone() }).collect::<Vec<_>>());
        storm(&connector, deskprov_addr, &warm, true, concurrency).await;
        if nginx.is_some() {
            storm(&connector, nginx_addr, &warm, false, concurrency).await;
        } else {
            println!("nginx not installed: run scripts/boot-storm.sh for the comparison");
        }
        let mut ratios = Vec::new();
        for round in 1..=rounds {
            let waited = |text: String| common::buckets(&text, "deskprov_phone_checkin_wait_seconds");
            let before = waited(common::metrics(admin_port, &data).await);
            let c = common::cpu_time(deskprov_pid);
            let d = storm(&connector, deskprov_addr, &devices, true, concurrency).await;
            let dc = cpu_per(deskprov_pid, c, n);
            println!("[{round}] boot storm, deskprov (digest): {:>7.0} devices/s, p99 {:.1?}, server CPU {dc:.0} µs/device ({n} devices, {concurrency} at once)", d.per_sec, d.p99);
            let after = waited(common::metrics(admin_port, &data).await);
            let waits: Vec<(String, u64)> = after
                .into_iter()
                .map(|(le, a)| {
                    let b = before.iter().find(|(l, _)| *l == le).map_or(0, |(_, b)| *b);
                    (le, a - b)
                })
                .collect();
            println!("[{round}] answers that waited for their applied revision to be durable: {}", wait_summary(&waits));
            if nginx.is_some() {
                let c = common::cpu_time(nginx_pid);
                let x = storm(&connector, nginx_addr, &devices, false, concurrency).await;
                let xc = cpu_per(nginx_pid, c, n);
                println!("[{round}] boot storm, nginx (static):   {:>7.0} devices/s, p99 {:.1?}, server CPU {xc:.0} µs/device", x.per_sec, x.p99);
                ratios.push((d.per_sec / x.per_sec, x.p99.as_secs_f64() / d.p99.as_secs_f64(), dc / xc));
            }
        }
        for (i, (r, p, c)) in ratios.iter().enumerate() {
            println!("boot storm ratio deskprov/nginx [{}]: {r:.2}x devices/s, p99 nginx/deskprov {p:.2} (>= 1: deskprov's p99 no worse), server CPU per device {c:.2}x", i + 1);
        }
        if storm_only {
            return;
        }
        // The storms' aftermath (the observation writer's batches, sled's flushes and segment
        // work) is not the keep-alive rounds' cost: they start once the server is quiet.
        let (settled, quiet) = settle(deskprov_pid).await;
        println!("the server was quiet {settled:.1?} after the storms{}", if quiet { "" } else { " (gave up waiting)" });
        let mut ratios = Vec::new();
        let requests = concurrency * per_conn as usize;
        for round in 1..=rounds {
            let (c, own) = (common::cpu_time(deskprov_pid), common::own_cpu_time());
            let k = keep_alive_run(&connector, deskprov_addr, &devices, true, concurrency, per_conn).await;
            let (kc, ko) = (cpu_per(deskprov_pid, c, requests), client_per(own, requests));
            println!("[{round}] keep-alive, deskprov (digest, cached): {k:>8.0} requests/s, server CPU {kc:.1} µs/request, client {ko:.1}");
            if nginx.is_some() {
                let (c, own) = (common::cpu_time(nginx_pid), common::own_cpu_time());
                let x = keep_alive_run(&connector, nginx_addr, &devices, false, concurrency, per_conn).await;
                let (xc, xo) = (cpu_per(nginx_pid, c, requests), client_per(own, requests));
                println!("[{round}] keep-alive, nginx (static):            {x:>8.0} requests/s, server CPU {xc:.1} µs/request, client {xo:.1}");
                ratios.push((k / x, kc / xc));
            }
        }
        for (i, (r, c)) in ratios.iter().enumerate() {
            println!("keep-alive ratio deskprov/nginx [{}]: {r:.2}x, server CPU per request {c:.2}x", i + 1);
        }
    });
    if external {
        if nginx.is_none() {
            println!("nginx not installed: run scripts/compare-nginx.sh");
            return;
        }
        external_clients(deskprov_addr, nginx_addr, rounds);
    }
}

/// `ab` (a new TLS connection per request) and `wrk` (keep-alive), both from Debian, against
/// the common file of both servers, A B A B; prints requests/s, p99 and the ratios.
fn external_clients(deskprov: SocketAddr, nginx: SocketAddr, rounds: usize) {
    let url = |a: SocketAddr| format!("https://{a}/{COMMON}");
    let ab_n = std::env::var("AB_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000u32);
    let wrk_s = std::env::var("WRK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5u32);
    let mut ab_ratios = Vec::new();
    for round in 1..=rounds {
        let mut r = Vec::new();
        for (name, a) in [("deskprov", deskprov), ("nginx", nginx)] {
            let Some((rps, p99)) = ab(&url(a), ab_n, 32) else {
                println!("ab failed against {name}");
                return;
            };
            println!("[{round}] ab -c 32 (new TLS connection per request), {name:<8}: {rps:>7.0} requests/s, p99 {p99} ms");
            r.push((rps, p99));
        }
        ab_ratios.push((r[0].0 / r[1].0, r[1].1 / r[0].1.max(1.0)));
    }
    let mut wrk_ratios = Vec::new();
    for round in 1..=rounds {
        let mut r = Vec::new();
        for (name, a) in [("deskprov", deskprov), ("nginx", nginx)] {
            let Some((rps, p99)) = wrk(&url(a), 64, wrk_s) else {
                println!("wrk failed against {name}");
                return;
            };
            println!("[{round}] wrk -c 64 (keep-alive), {name:<8}: {rps:>8.0} requests/s, p99 {p99:.2} ms");
            r.push((rps, p99));
        }
        wrk_ratios.push((r[0].0 / r[1].0, r[1].1 / r[0].1));
    }
    for (i, (r, p)) in ab_ratios.iter().enumerate() {
        println!(
            "ab ratio deskprov/nginx [{}]: {r:.2}x requests/s, p99 nginx/deskprov {p:.2}",
            i + 1
        );
    }
    for (i, (r, p)) in wrk_ratios.iter().enumerate() {
        println!(
            "wrk ratio deskprov/nginx [{}]: {r:.2}x requests/s, p99 nginx/deskprov {p:.2}",
            i + 1
        );
    }
}

/// Runs `ab -n N -c C URL`: (requests/s, p99 in ms).
fn ab(url: &str, n: u32, c: u32) -> Option<(f64, f64)> {
    let out = Command::new("ab")
        .args(["-q", "-r", "-n", &n.to_string(), "-c", &c.to_string(), url])
        .stderr(Stdio::inherit())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let failed: u64 = field(&text, "Failed requests:")?.parse().ok()?;
    if failed > 0 || !out.status.success() {
        eprintln!("{text}");
        return None;
    }
    let rps = field(&text, "Requests per second:")?.parse().ok()?;
    let p99 = field(&text, "99%")?.parse().ok()?;
    Some((rps, p99))
}

/// Runs `wrk -t2 -c C -d Ss --latency URL`: (requests/s, p99 in ms).
fn wrk(url: &str, c: u32, secs: u32) -> Option<(f64, f64)> {
    let out = Command::new("wrk")
        .args([
            "-t2",
            "-c",
            &c.to_string(),
            "-d",
            &format!("{secs}s"),
            "--latency",
            url,
        ])
        .stderr(Stdio::inherit())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        eprintln!("{text}");
        return None;
    }
    let rps = field(&text, "Requests/sec:")?.parse().ok()?;
    let p99 = field(&text, "99%")?;
    let ms = if let Some(v) = p99.strip_suffix("ms") {
        v.parse().ok()?
    } else if let Some(v) = p99.strip_suffix("us") {
        v.parse::<f64>().ok()? / 1000.0
    } else if let Some(v) = p99.strip_suffix('s') {
        v.parse::<f64>().ok()? * 1000.0
    } else {
        return None;
    };
    Some((rps, ms))
}

/// The first word after `label` at the start of a (trimmed) line of `text`.
fn field<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
}
