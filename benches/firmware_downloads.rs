//! Configuration-fetch latency while an upgrade wave downloads firmware images.
//!
//!     cargo bench --bench firmware_downloads [-- DOWNLOADERS IMAGE_MB SECONDS MAX_DOWNLOADS MIB_PER_S]
//!
//! deskprov runs in this process on loopback with `[firmware] max_downloads` = MAX_DOWNLOADS
//! (default: the configuration's default, 20) and `max_bytes_per_s` = MIB_PER_S MiB/s (default 0:
//! no limit).
//! A group of Yealink T46U phones targets a IMAGE_MB (16) MiB image at 100 %. Phase A: 8 phones
//! fetch their per-MAC main file back to back (keep-alive HTTPS, MD5 digest: the challenge and
//! the authorised request are one fetch) for SECONDS (5). Phase B: the same while DOWNLOADERS
//! (50) other phones download the image in a loop, each read to the end; a download refused 503
//! retries after 200 ms (a real phone waits `Retry-After`, 30 s: this is harsher). Reports
//! fetch p50/p99/max per phase, and the downloads completed, bytes served and 503s of phase B.
//!
//! Client and server share the machine's cores; the data directory is a temporary directory.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use md5::Digest as _;

const G: &str = "bench-fw";
const MODEL: &str = "yealink-t46u";
const VERSION: &str = "108.86.0.20";
const FETCHERS: usize = 8;

fn md5_hex(s: &str) -> String {
    hex::encode(md5::Md5::digest(s.as_bytes()))
}

/// GET `path` as phone `mac`: the challenge, then the request with MD5 digest credentials.
async fn phone_get(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    mac: &str,
    pass: &str,
) -> reqwest::Response {
    let url = format!("{base}{path}");
    let ua = format!("Yealink SIP-T46U 108.85.0.5 {mac}");
    let first = client
        .get(&url)
        .header("user-agent", &ua)
        .send()
        .await
        .expect("request");
    if first.status() != 401 {
        return first;
    }
    let www = first
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.contains("algorithm=MD5"))
        .expect("an MD5 challenge");
    let _ = first.bytes().await;
    let get = |k: &str| {
        let i = www.find(&format!("{k}=\"")).unwrap() + k.len() + 2;
        www[i..].split('"').next().unwrap().to_string()
    };
    let (realm, nonce) = (get("realm"), get("nonce"));
    let ha1 = md5_hex(&format!("{mac}:{realm}:{pass}"));
    let ha2 = md5_hex(&format!("GET:{path}"));
    let resp = md5_hex(&format!("{ha1}:{nonce}:00000001:0a4f113b:auth:{ha2}"));
    let auth = format!("Digest username=\"{mac}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{path}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"0a4f113b\", response=\"{resp}\"");
    client
        .get(&url)
        .header("user-agent", &ua)
        .header("authorization", auth)
        .send()
        .await
        .expect("request")
}

fn pct(sorted: &[Duration], per_mille: usize) -> Duration {
    sorted[(sorted.len() * per_mille / 1000).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn fetch_until(
    client: &reqwest::Client,
    base: &str,
    phones: &[(String, String)],
    until: Instant,
) -> Vec<Duration> {
    let mut tasks = vec![];
    for (mac, pass) in phones.iter().take(FETCHERS) {
        let (client, base) = (client.clone(), base.to_string());
        let (mac, pass) = (mac.clone(), pass.clone());
        tasks.push(tokio::spawn(async move {
            let path = format!("/{mac}.cfg");
            let mut lat = vec![];
            while Instant::now() < until {
                let s = Instant::now();
                let r = phone_get(&client, &base, &path, &mac, &pass).await;
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await.expect("body");
                lat.push(s.elapsed());
            }
            lat
        }));
    }
    let mut all = vec![];
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    all
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let downloaders = args.first().copied().unwrap_or(50);
    let image_mb = args.get(1).copied().unwrap_or(16);
    let seconds = args.get(2).copied().unwrap_or(5) as u64;
    let cap = args.get(3).copied();
    let rate = args.get(4).copied().unwrap_or(0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(downloaders, image_mb, seconds, cap, rate));
}

async fn run(downloaders: usize, image_mb: usize, seconds: u64, cap: Option<usize>, rate: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = deskprov::config::Config {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    config.listen.admin = "127.0.0.1:0".into();
    config.listen.phones = "127.0.0.1:0".into();
    config.sync.sip_bind = "127.0.0.1:0".into();
    if let Some(c) = cap {
        config.firmware.max_downloads = c;
    }
    config.firmware.max_bytes_per_s = (rate as u64) << 20;
    let cap = config.firmware.max_downloads;
    let server = deskprov::server::Server::start(config)
        .await
        .expect("starts");
    let admin = format!("https://localhost:{}", server.admin_addr.port());
    let phones = format!("https://localhost:{}", server.phones_addr.port());
    let token = server.new_admin_token.clone().expect("a first start");
    let ca = std::fs::read(server.ca_pem.clone().unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));

    let post = |path: String, body: serde_json::Value| {
        let (client, admin, token) = (client.clone(), admin.clone(), token.clone());
        async move {
            let r = client
                .post(format!("{admin}{path}"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{path}: {}", r.status());
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    post(
        "/api/v1/groups".into(),
        serde_json::json!({"id": G, "sip": {"domain": "sip.example.net"}}),
    )
    .await;
    let mut fleet = vec![];
    for i in 0..(downloaders + FETCHERS) {
        let mac = format!("805ec0e0{i:04x}");
        let d = post(
            format!("/api/v1/groups/{G}/devices"),
            serde_json::json!({"mac": mac, "name": format!("p{i}"), "model": MODEL}),
        )
        .await;
        fleet.push((
            mac,
            d["credentials"]["password"].as_str().unwrap().to_string(),
        ));
    }
    let image: Vec<u8> = (0..image_mb << 20).map(|i| (i % 251) as u8).collect();
    let r = client
        .put(format!("{admin}/api/v1/models/{MODEL}/firmware/{VERSION}"))
        .bearer_auth(&token)
        .body(image)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = client
        .put(format!("{admin}/api/v1/groups/{G}/firmware/{MODEL}"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"version": VERSION}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let secs = Duration::from_secs(seconds);
    let a = fetch_until(&client, &phones, &fleet, Instant::now() + secs).await;

    let started = Instant::now();
    let until = started + secs;
    let (done, bytes, refused) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut tasks = vec![];
    for (mac, pass) in &fleet[FETCHERS..] {
        let (client, base) = (client.clone(), phones.clone());
        let (mac, pass) = (mac.clone(), pass.clone());
        let (done, bytes, refused) = (done.clone(), bytes.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            let path = format!("/firmware/{mac}/{VERSION}.rom");
            while Instant::now() < until {
                let mut r = phone_get(&client, &base, &path, &mac, &pass).await;
                if r.status() == 503 {
                    refused.fetch_add(1, Ordering::Relaxed);
                    let _ = r.bytes().await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                assert_eq!(r.status(), 200);
                while let Some(c) = r.chunk().await.expect("image bytes") {
                    bytes.fetch_add(c.len() as u64, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let b = fetch_until(&client, &phones, &fleet, until).await;
    for t in tasks {
        t.await.unwrap();
    }
    // Downloads under way at the end of the phase run to their end.
    let elapsed = started.elapsed().as_secs_f64();
    let _ = stop.send(());
    let _ = task.await;

    println!("config fetches (8 keep-alive phones, digest), {downloaders} phones downloading a {image_mb} MiB image, max_downloads = {cap}, max_bytes_per_s = {rate} MiB/s (0 = none), {seconds} s per phase");
    println!("| phase | fetches | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    for (name, l) in [("no downloads", &a), ("during downloads", &b)] {
        println!(
            "| {name} | {} | {} | {} | {} |",
            l.len(),
            ms(pct(l, 500)),
            ms(pct(l, 990)),
            ms(*l.last().unwrap())
        );
    }
    println!(
        "downloads completed: {}, image bytes served: {:.0} MiB in {elapsed:.1} s ({:.0} MiB/s), 503 answers: {}",
        done.load(Ordering::Relaxed),
        bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64,
        bytes.load(Ordering::Relaxed) as f64 / (1 << 20) as f64 / elapsed,
        refused.load(Ordering::Relaxed)
    );
}
