//! Boot storm and keep-alive fetches against nginx (SPEC §6).
//!
//!     scripts/boot-storm.sh            (installs nginx, then runs this)
//!     cargo bench --bench boot_storm [-- DEVICES CONCURRENCY]
//!
//! deskprov (its own process) and nginx (serving the same pre-rendered bytes as static files)
//! use the same ECDSA certificate, TLS 1.2/1.3 and no session resumption, on loopback. Boot
//! storm: each device opens a new TLS connection and fetches its model's common file and its
//! per-MAC file — from deskprov with digest auth as a phone does (401, then authorised), from
//! nginx without. Keep-alive: each connection fetches per-MAC files repeatedly. Reports
//! devices/s and p99 per device session, and requests/s. nginx is skipped if not installed.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deskprov::catalog::Catalog;
use deskprov::config::Config;
use deskprov::render::Renderer;
use deskprov::server::open_store;
use md5::Digest as _;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const MODEL: &str = "yealink-t54w";
const COMMON: &str = "y000000000096.cfg";
const BASE_URL: &str = "https://prov.bench:8443";

struct Device {
    mac: String,
    password: String,
}

/// One HTTP/1.1 connection over TLS, with leftover bytes kept between responses.
struct Conn {
    tls: TlsStream<TcpStream>,
    buf: Vec<u8>,
}

struct Resp {
    status: u16,
    www_authenticate: Vec<String>,
}

impl Conn {
    async fn open(connector: &TlsConnector, addr: SocketAddr) -> std::io::Result<Conn> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await?;
        Ok(Conn {
            tls,
            buf: Vec::with_capacity(8192),
        })
    }

    async fn get(&mut self, path: &str, authorization: Option<&str>) -> std::io::Result<Resp> {
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Yealink SIP-T54W 96.86.0.70\r\n"
        );
        if let Some(a) = authorization {
            req.push_str(&format!("Authorization: {a}\r\n"));
        }
        req.push_str("\r\n");
        self.tls.write_all(req.as_bytes()).await?;
        let mut chunk = [0u8; 16384];
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                let mut lines = head.split("\r\n");
                let status = lines
                    .next()
                    .and_then(|l| l.split(' ').nth(1))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                let mut len = 0usize;
                let mut www = Vec::new();
                for l in lines {
                    if let Some((k, v)) = l.split_once(':') {
                        match k.trim().to_ascii_lowercase().as_str() {
                            "content-length" => len = v.trim().parse().unwrap_or(0),
                            "www-authenticate" => www.push(v.trim().to_string()),
                            _ => {}
                        }
                    }
                }
                while self.buf.len() < end + 4 + len {
                    let n = self.tls.read(&mut chunk).await?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                self.buf.drain(..end + 4 + len);
                return Ok(Resp {
                    status,
                    www_authenticate: www,
                });
            }
            let n = self.tls.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn md5(s: &str) -> String {
    hex::encode(md5::Md5::digest(s.as_bytes()))
}

/// The MD5 digest Authorization for `path`, from the MD5 challenge, with count `nc`.
fn authorization(
    challenges: &[String],
    d: &Device,
    path: &str,
    nc: u32,
) -> Option<(String, String)> {
    let c = challenges.iter().find(|c| c.contains("algorithm=MD5"))?;
    let get = |k: &str| {
        let i = c.find(&format!("{k}=\""))? + k.len() + 2;
        c[i..].split('"').next().map(str::to_string)
    };
    let (realm, nonce) = (get("realm")?, get("nonce")?);
    Some((nonce.clone(), digest_header(&realm, &nonce, d, path, nc)))
}

fn digest_header(realm: &str, nonce: &str, d: &Device, path: &str, nc: u32) -> String {
    let nc = format!("{nc:08x}");
    let ha1 = md5(&format!("{}:{realm}:{}", d.mac, d.password));
    let ha2 = md5(&format!("GET:{path}"));
    let resp = md5(&format!("{ha1}:{nonce}:{nc}:c0ffee:auth:{ha2}"));
    format!("Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{path}\", algorithm=MD5, qop=auth, nc={nc}, cnonce=\"c0ffee\", response=\"{resp}\"", d.mac)
}

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
        let (_, a) = authorization(&r.www_authenticate, d, &path, 1).expect("challenge");
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
    let mut c = Conn::open(connector, addr).await?;
    let path = format!("/{}.cfg", d.mac);
    let mut challenge: Option<(String, String)> = None;
    let mut done = 0;
    for nc in 1..=per_conn {
        let header = match (&challenge, auth) {
            (Some((realm, nonce)), true) => Some(digest_header(realm, nonce, d, &path, nc)),
            _ => None,
        };
        let r = c.get(&path, header.as_deref()).await?;
        if r.status == 401 && auth {
            let ch = r
                .www_authenticate
                .iter()
                .find(|c| c.contains("algorithm=MD5"))
                .cloned()
                .expect("challenge");
            let get = |k: &str| {
                let i = ch.find(&format!("{k}=\"")).unwrap() + k.len() + 2;
                ch[i..].split('"').next().unwrap().to_string()
            };
            let (realm, nonce) = (get("realm"), get("nonce"));
            let r = c
                .get(&path, Some(&digest_header(&realm, &nonce, d, &path, nc)))
                .await?;
            assert_eq!(r.status, 200);
            challenge = Some((realm, nonce));
        } else {
            assert_eq!(r.status, 200);
        }
        done += 1;
    }
    Ok(done)
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
        p99: l[(l.len() * 99 / 100).min(l.len() - 1)],
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

fn wait_port(addr: SocketAddr) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nothing listens on {addr}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    let child = Command::new(nginx)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .ok()?;
    wait_port(SocketAddr::from(([127, 0, 0, 1], port)));
    Some(Kill(child))
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(10_000);
    let concurrency = args.get(1).copied().unwrap_or(64);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let www = tmp.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let port = free_port();
    let mut config = Config {
        data_dir: data.clone(),
        ..Config::default()
    };
    config.listen.phones = format!("127.0.0.1:{port}");
    config.listen.admin = "127.0.0.1:0".into();
    config.sync.sip_bind = "127.0.0.1:0".into();
    config.phones.base_url = BASE_URL.into();
    config.phones.auth_fail_limit = u32::MAX;

    // Devices (100 per group, each owned by its user), and the same bytes for nginx.
    let t = Instant::now();
    let catalog = Arc::new(Catalog::builtin().unwrap());
    let devices: Vec<Device> = {
        let store = open_store(&config, catalog.clone()).unwrap();
        let mut out = Vec::new();
        for i in 0..n {
            let g = deskprov::domain::GroupId::parse(&format!("g{:04}", i / 100)).unwrap();
            if i % 100 == 0 {
                let grp = serde_json::from_value(
                    serde_json::json!({"id": g.to_string(), "sip": {"domain": "sip.example.net"}}),
                )
                .unwrap();
                store.create_group("bench", grp).unwrap();
            }
            let ext = format!("{}", 1000 + i % 100);
            let u = serde_json::from_value(serde_json::json!({"extension": ext, "first_name": "User", "last_name": format!("{i}")})).unwrap();
            store.create_user("bench", &g, u).unwrap();
            let mac = format!("805ec0{i:06x}");
            let d = serde_json::from_value(
                serde_json::json!({"mac": mac, "model": MODEL, "owner": ext}),
            )
            .unwrap();
            let d = store.create_device("bench", &g, d).unwrap();
            out.push(Device {
                mac,
                password: d.prov_password.expose().to_string(),
            });
        }
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
    let conf = tmp.path().join("deskprov.toml");
    std::fs::write(
        &conf,
        format!(
            "data_dir = {:?}\n[listen]\nphones = \"127.0.0.1:{port}\"\nadmin = \"127.0.0.1:0\"\n[phones]\nbase_url = \"{BASE_URL}\"\nauth_fail_limit = 4000000000\n[sync]\nsip_bind = \"127.0.0.1:0\"\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let _server = Kill(
        Command::new(env!("CARGO_BIN_EXE_deskprov"))
            .args(["serve", "--config"])
            .arg(&conf)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deskprov_addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_port(deskprov_addr);
    let nginx_port = free_port();
    let nginx = start_nginx(tmp.path(), &www, &data.join("tls"), nginx_port);
    let nginx_addr = SocketAddr::from(([127, 0, 0, 1], nginx_port));

    let mut roots = rustls::RootCertStore::empty();
    for c in deskprov::tls::read_certs(&data.join("tls/ca.pem")).unwrap() {
        roots.add(c).unwrap();
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.resumption = rustls::client::Resumption::disabled();
    let connector = TlsConnector::from(Arc::new(tls));
    let devices = Arc::new(devices);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Warm-up (render caches, accept loops), then the measured runs.
        let warm = Arc::new(devices.iter().take(200).map(|d| Device { mac: d.mac.clone(), password: d.password.clone() }).collect::<Vec<_>>());
        storm(&connector, deskprov_addr, &warm, true, concurrency).await;
        let d = storm(&connector, deskprov_addr, &devices, true, concurrency).await;
        println!("boot storm, deskprov (digest): {:>7.0} devices/s, p99 {:.1?} ({n} devices, {concurrency} at once)", d.per_sec, d.p99);
        if nginx.is_some() {
            storm(&connector, nginx_addr, &warm, false, concurrency).await;
            let x = storm(&connector, nginx_addr, &devices, false, concurrency).await;
            println!("boot storm, nginx (static): {:>7.0} devices/s, p99 {:.1?}", x.per_sec, x.p99);
            println!("boot storm ratio deskprov/nginx: {:.2}", d.per_sec / x.per_sec);
        } else {
            println!("nginx not installed: run scripts/boot-storm.sh for the comparison");
        }
        let per_conn = 2000;
        let k = keep_alive_run(&connector, deskprov_addr, &devices, true, concurrency, per_conn).await;
        println!("keep-alive, deskprov (digest, cached): {k:>8.0} requests/s");
        if nginx.is_some() {
            let x = keep_alive_run(&connector, nginx_addr, &devices, false, concurrency, per_conn).await;
            println!("keep-alive, nginx (static):            {x:>8.0} requests/s");
            println!("keep-alive ratio deskprov/nginx: {:.2}", k / x);
        }
    });
}
