//! Shared by the benchmarks that drive a deskprov process over the phone listener: seeding the
//! store, starting `deskprov serve` on loopback, a phone's HTTP/1.1-over-TLS connection with
//! digest auth, and percentiles.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use deskprov::config::Config;
use deskprov::store::Store;
use md5::Digest as _;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

pub const MODEL: &str = "yealink-t54w";
pub const BASE_URL: &str = "https://prov.bench:8443";

pub struct Device {
    pub mac: String,
    pub password: String,
}

/// The benchmark's numeric command-line arguments (what `cargo bench` passes after `--`; the
/// flags it adds itself are skipped).
pub fn numeric_args() -> Vec<usize> {
    std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect()
}

/// The config `deskprov serve` gets in [`spawn_deskprov`], for opening the store beforehand.
pub fn config(data: &Path, phones_port: u16) -> Config {
    let mut config = Config {
        data_dir: data.to_path_buf(),
        ..Config::default()
    };
    config.listen.phones = format!("127.0.0.1:{phones_port}");
    config.listen.admin = "127.0.0.1:0".into();
    config.sync.sip_bind = "127.0.0.1:0".into();
    config.phones.base_url = BASE_URL.into();
    config.phones.auth_fail_limit = u32::MAX;
    config
}

/// Creates `n` [`MODEL`] devices through the domain rules, 100 per group (`g0000`, ...), each
/// owned by its own user (extensions 1000-1099 in every group). Returns their credentials.
pub fn seed_devices(store: &Store, n: usize) -> Vec<Device> {
    seed_devices_notified(store, n, &[])
}

/// Like [`seed_devices`]; device `i` is NOTIFYed at `udp:127.0.0.1:<ports[i % len]>` when
/// `ports` is not empty. Its primary line (the NOTIFY's request-URI user) is
/// [`line_user`]`(i)`.
pub fn seed_devices_notified(store: &Store, n: usize, ports: &[u16]) -> Vec<Device> {
    let mut out = Vec::with_capacity(n);
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
        let mut d = serde_json::json!({"mac": mac, "model": MODEL, "owner": ext});
        if !ports.is_empty() {
            d["notify_target"] = format!("udp:127.0.0.1:{}", ports[i % ports.len()]).into();
        }
        let d = serde_json::from_value(d).unwrap();
        let d = store.create_device("bench", &g, d).unwrap();
        out.push(Device {
            mac,
            password: d.prov_password.expose().to_string(),
        });
    }
    out
}

/// The SIP user of device `i`'s primary line as [`seed_devices`] makes it: the owner has no
/// SIP username nor phone number, so it is `<group>_<extension>`.
pub fn line_user(i: usize) -> String {
    format!("g{:04}_{}", i / 100, 1000 + i % 100)
}

/// Starts `deskprov serve` (its own process, errors only) on `data`, phones on `phones_port`
/// and admin on `admin_port` (0: any), loopback only, and waits for the phone port. The
/// process is killed when the returned guard drops.
pub fn spawn_deskprov(dir: &Path, data: &Path, phones_port: u16, admin_port: u16) -> Kill {
    spawn_deskprov_with(dir, data, phones_port, admin_port, "")
}

/// Like [`spawn_deskprov`], with `sync` (TOML lines) added to its `[sync]` table.
pub fn spawn_deskprov_with(
    dir: &Path,
    data: &Path,
    phones_port: u16,
    admin_port: u16,
    sync: &str,
) -> Kill {
    let conf = dir.join("deskprov.toml");
    std::fs::write(
        &conf,
        format!(
            "data_dir = {:?}\n[listen]\nphones = \"127.0.0.1:{phones_port}\"\nadmin = \"127.0.0.1:{admin_port}\"\n[phones]\nbase_url = \"{BASE_URL}\"\nauth_fail_limit = 4000000000\n[sync]\nsip_bind = \"127.0.0.1:0\"\n{sync}\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    // DESKPROV_BIN: another build of the server; DESKPROV_WRAP: a command to run it under
    // (e.g. `valgrind --tool=callgrind`, for instruction counts that a busy machine cannot skew).
    let bin =
        std::env::var("DESKPROV_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_deskprov").into());
    let wrap = std::env::var("DESKPROV_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace().map(str::to_string).chain([bin]);
    let mut cmd = Command::new(words.next().unwrap());
    cmd.args(words);
    let server = Kill(
        cmd.args(["serve", "--config"])
            .arg(&conf)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(SocketAddr::from(([127, 0, 0, 1], phones_port)));
    if admin_port != 0 {
        wait_port(SocketAddr::from(([127, 0, 0, 1], admin_port)));
    }
    server
}

/// A TLS client trusting `ca_pem`, with session resumption off (every connection does a full
/// handshake, as a booting phone does).
pub fn connector(ca_pem: &Path) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in deskprov::tls::read_certs(ca_pem).unwrap() {
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
    TlsConnector::from(Arc::new(tls))
}

/// One HTTP/1.1 connection over TLS, with leftover bytes kept between responses.
pub struct Conn {
    tls: TlsStream<TcpStream>,
    buf: Vec<u8>,
}

pub struct Resp {
    pub status: u16,
    pub www_authenticate: Vec<String>,
}

impl Conn {
    pub async fn open(connector: &TlsConnector, addr: SocketAddr) -> std::io::Result<Conn> {
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

    pub async fn get(&mut self, path: &str, authorization: Option<&str>) -> std::io::Result<Resp> {
        // The load generator shares the cores with the server it measures: it builds no
        // string it does not need (one request buffer, the head parsed as bytes).
        use std::fmt::Write as _;
        let mut req = String::with_capacity(512);
        let _ = write!(
            req,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Yealink SIP-T54W 96.86.0.70\r\n"
        );
        if let Some(a) = authorization {
            let _ = write!(req, "Authorization: {a}\r\n");
        }
        req.push_str("\r\n");
        self.tls.write_all(req.as_bytes()).await?;
        let mut chunk = [0u8; 16384];
        loop {
            if let Some(end) = find_head_end(&self.buf) {
                let mut lines = self.buf[..end]
                    .split(|&b| b == b'\n')
                    .map(|l| l.trim_ascii());
                let status = lines
                    .next()
                    .and_then(|l| l.split(|&b| b == b' ').nth(1))
                    .and_then(|c| std::str::from_utf8(c).ok()?.parse().ok())
                    .unwrap_or(0);
                let mut len = 0usize;
                let mut www = Vec::new();
                for l in lines {
                    let Some(colon) = l.iter().position(|&b| b == b':') else {
                        continue;
                    };
                    let (k, v) = (&l[..colon], l[colon + 1..].trim_ascii());
                    if k.eq_ignore_ascii_case(b"content-length") {
                        len = std::str::from_utf8(v)
                            .ok()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                    } else if k.eq_ignore_ascii_case(b"www-authenticate") {
                        www.push(String::from_utf8_lossy(v).into_owned());
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

/// Where the head in `buf` ends (the index of its blank line's `\r\n\r\n`).
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

fn md5(s: &str) -> String {
    hex::encode(md5::Md5::digest(s.as_bytes()))
}

/// (realm, nonce) of the MD5 challenge among the WWW-Authenticate values.
pub fn md5_challenge(challenges: &[String]) -> Option<(String, String)> {
    let c = challenges.iter().find(|c| c.contains("algorithm=MD5"))?;
    let get = |k: &str| {
        let i = c.find(&format!("{k}=\""))? + k.len() + 2;
        c[i..].split('"').next().map(str::to_string)
    };
    Some((get("realm")?, get("nonce")?))
}

/// The MD5 digest Authorization for `path`, from the MD5 challenge, with count `nc`.
pub fn authorization(challenges: &[String], d: &Device, path: &str, nc: u32) -> Option<String> {
    let (realm, nonce) = md5_challenge(challenges)?;
    Some(digest_header(&realm, &nonce, d, path, nc))
}

pub fn digest_header(realm: &str, nonce: &str, d: &Device, path: &str, nc: u32) -> String {
    Answer::new(realm, nonce, d, path).header(nc)
}

/// A challenge answered once: HA1 and HA2 are the same for every request of one phone to one
/// file (a phone keeps them too), so each request costs one MD5.
struct Answer {
    /// `Digest username=..., uri=..., ..., nc=` up to the count.
    prefix: String,
    /// `HA1:nonce:`.
    ha1_nonce: String,
    /// `:c0ffee:auth:HA2`.
    cnonce_ha2: String,
}

impl Answer {
    fn new(realm: &str, nonce: &str, d: &Device, path: &str) -> Answer {
        let ha1 = md5(&format!("{}:{realm}:{}", d.mac, d.password));
        let ha2 = md5(&format!("GET:{path}"));
        Answer {
            prefix: format!("Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{path}\", algorithm=MD5, qop=auth, cnonce=\"c0ffee\", nc=", d.mac),
            ha1_nonce: format!("{ha1}:{nonce}:"),
            cnonce_ha2: format!(":c0ffee:auth:{ha2}"),
        }
    }

    fn header(&self, nc: u32) -> String {
        use std::fmt::Write as _;
        let mut nc_hex = [0u8; 8];
        let mut w = &mut nc_hex[..];
        let _ = std::io::Write::write_fmt(&mut w, format_args!("{nc:08x}"));
        let mut h = md5::Md5::new();
        h.update(self.ha1_nonce.as_bytes());
        h.update(nc_hex);
        h.update(self.cnonce_ha2.as_bytes());
        let mut resp = [0u8; 32];
        hex::encode_to_slice(h.finalize(), &mut resp).expect("16 bytes");
        let mut out = String::with_capacity(self.prefix.len() + 64);
        out.push_str(&self.prefix);
        let _ = write!(
            out,
            "{}, response=\"{}\"",
            std::str::from_utf8(&nc_hex).expect("hex"),
            std::str::from_utf8(&resp).expect("hex")
        );
        out
    }
}

/// A nonce as long as deskprov's (`<time>.<random>-<tag>`), for a server that issues none.
const STATIC_NONCE: &str = "6930a1b2.0123456789abcdef-0123456789abcdef0123456789abcdef";

/// A phone on one keep-alive connection fetching its per-MAC file again and again: with digest
/// auth (`auth`), it answers the first challenge and then reuses the nonce with a rising `nc`,
/// answering a new challenge whenever one comes; without, it sends the same kind of header to
/// [`STATIC_NONCE`].
pub struct Phone<'a> {
    conn: Conn,
    device: &'a Device,
    path: String,
    auth: bool,
    challenge: Option<Answer>,
    nc: u32,
}

impl<'a> Phone<'a> {
    pub async fn connect(
        connector: &TlsConnector,
        addr: SocketAddr,
        device: &'a Device,
        auth: bool,
    ) -> std::io::Result<Phone<'a>> {
        let path = format!("/{}.cfg", device.mac);
        // A server without digest (nginx) gets the same header all the same, answered to a
        // nonce of deskprov's length: both servers parse the same bytes, and the client does
        // the same work for each (one MD5 per request) on the cores it shares with them.
        let challenge = (!auth).then(|| Answer::new("deskprov", STATIC_NONCE, device, &path));
        Ok(Phone {
            conn: Conn::open(connector, addr).await?,
            path,
            device,
            auth,
            challenge,
            nc: 0,
        })
    }

    /// One fetch of the per-MAC file, ending with a 200 (panics on anything else).
    pub async fn fetch(&mut self) -> std::io::Result<()> {
        self.nc += 1;
        let (d, path, nc) = (self.device, self.path.as_str(), self.nc);
        let header = self.challenge.as_ref().map(|a| a.header(nc));
        let r = self.conn.get(path, header.as_deref()).await?;
        if r.status == 401 && self.auth {
            let (realm, nonce) = md5_challenge(&r.www_authenticate).expect("challenge");
            let answer = Answer::new(&realm, &nonce, d, path);
            let r = self.conn.get(path, Some(&answer.header(nc))).await?;
            assert_eq!(r.status, 200, "{path} with digest");
            self.challenge = Some(answer);
        } else {
            assert_eq!(r.status, 200, "{path}");
        }
        Ok(())
    }
}

/// The `per_mille`-th per-mille of `sorted` (990: p99), as index `len * per_mille / 1000`.
pub fn percentile(sorted: &[Duration], per_mille: usize) -> Duration {
    sorted[(sorted.len() * per_mille / 1000).min(sorted.len() - 1)]
}

pub fn wait_port(addr: SocketAddr) {
    // Under a wrapper (valgrind) a start takes much longer.
    let tries = if std::env::var_os("DESKPROV_WRAP").is_some() {
        12_000
    } else {
        200
    };
    for _ in 0..tries {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("nothing listens on {addr}");
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Stops (SIGTERM, then SIGKILL after 60 s) and reaps the child process when dropped: a
/// graceful stop lets a wrapper such as valgrind write its output.
pub struct Kill(pub Child);
impl Drop for Kill {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        for _ in 0..600 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU time (user + system) used so far by process `pid` and its live children (nginx's
/// workers), from /proc: what a server spent, whatever else the machine was running.
pub fn cpu_time(pid: u32) -> Duration {
    fn ticks(stat: &str) -> Option<(u32, u64)> {
        // After the command's closing parenthesis: state, ppid, ..., utime (14), stime (15).
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some((
            f.get(1)?.parse().ok()?,
            f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?,
        ))
    }
    let mut total = 0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        if let Some((ppid, t)) = ticks(&stat) {
            if p == pid || ppid == pid {
                total += t;
            }
        }
    }
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(total * 1_000_000 / hz)
}

/// CPU time (user + system) this benchmark process (the load generator) has used so far.
#[allow(dead_code)] // not every bench that includes this module uses it
pub fn own_cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(us(u.ru_utime) + us(u.ru_stime))
}

/// An HTTPS client for the admin API of the server whose data dir is `data` (trusting its
/// CA), and the `Authorization` value of its first admin token.
#[allow(dead_code)] // not every bench that includes this module uses it
pub fn admin_client(data: &Path) -> (reqwest::Client, String) {
    let ca = std::fs::read(data.join("tls/ca.pem")).unwrap();
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    (client, format!("Bearer {}", token.trim()))
}

/// The server's `/metrics` text.
pub async fn metrics(admin_port: u16, data: &Path) -> String {
    let (client, auth) = admin_client(data);
    client
        .get(format!("https://localhost:{admin_port}/metrics"))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A histogram's cumulative bucket counts `(le, count)` from a `/metrics` text.
pub fn buckets(text: &str, name: &str) -> Vec<(String, u64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            Some((le.to_string(), count.trim().parse().ok()?))
        })
        .collect()
}

/// Waits until the server on `admin_port` has rendered its devices' files ahead (its
/// `deskprov_render_ahead_pending` metric is 0); returns how long that took from the call.
#[allow(dead_code)] // not every bench that includes this module uses it
pub async fn rendered_ahead(admin_port: u16, data: &Path) -> Duration {
    let started = std::time::Instant::now();
    loop {
        let text = metrics(admin_port, data).await;
        if text.lines().any(|l| l == "deskprov_render_ahead_pending 0") {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the server did not finish rendering ahead in 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
