//! Start-up at scale (SPEC §6): 100,000 devices, 100,000 users, 50,000 SCA endpoints — ready to
//! serve in under 2 s and under 200 MiB RSS.
//!
//!     cargo bench --bench scale [-- USERS DEVICES SCAS]
//!
//! Loads the store through the domain rules (1,000 groups of 100 users and devices), then starts
//! a fresh process that opens it and brings the whole server up on loopback, and reports the
//! time until it serves and its resident memory. Environment: `DESKPROV_SCALE_DIR` keeps the
//! loaded data between runs, `DESKPROV_CACHE_MB` sets `[store] cache_mb`, and
//! `DESKPROV_SCALE_BREAKDOWN=1` reports memory after opening sled, reading the records, and
//! building the in-memory state.

use std::sync::Arc;
use std::time::Instant;

use deskprov::catalog::Catalog;
use deskprov::config::Config;
use deskprov::server::{open_store, Server};

fn config(dir: &std::path::Path) -> Config {
    let mut c = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    if let Some(mb) = std::env::var("DESKPROV_CACHE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        c.store.cache_mb = mb;
    }
    c.listen.admin = "127.0.0.1:0".into();
    c.listen.phones = "127.0.0.1:0".into();
    c.sync.sip_bind = "127.0.0.1:0".into();
    c
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.to_string())
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

fn open_only(dir: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let t = Instant::now();
        let c = config(std::path::Path::new(dir));
        let cache = c.store.cache_mb;
        if std::env::var_os("DESKPROV_SCALE_BREAKDOWN").is_some() {
            let db = sled::Config::new().path(std::path::Path::new(dir).join("store")).cache_capacity(cache * 1024 * 1024).open().unwrap();
            println!("sled opened: RSS {:.0} MiB", rss_mib());
            let data = db.open_tree("data").unwrap();
            let mut n = 0usize;
            let mut bytes = 0usize;
            for kv in data.iter() {
                let (k, v) = kv.unwrap();
                n += 1;
                bytes += k.len() + v.len();
            }
            println!("sled iterated {n} records, {} MiB of JSON: RSS {:.0} MiB", bytes >> 20, rss_mib());
            let _state = deskprov::domain::state::State::from_records(
                data.iter().map(|kv| serde_json::from_slice(&kv.unwrap().1).unwrap()),
            );
            println!("state built: RSS {:.0} MiB", rss_mib());
            return;
        }
        let server = Server::start(c).await.unwrap();
        let ready = t.elapsed();
        let s = server.app.store.read();
        println!(
            "scale: {} users, {} devices, {} SCA endpoints: ready to serve in {ready:.2?}, RSS {:.0} MiB (cache_mb {cache})",
            s.users.len(),
            s.devices.len(),
            s.scas.len(),
            rss_mib()
        );
    });
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--bench"))
        .collect();
    if args.first().map(String::as_str) == Some("--open") {
        return open_only(&args[1]);
    }
    let nums: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let (users, devices, scas) = (
        nums.first().copied().unwrap_or(100_000),
        nums.get(1).copied().unwrap_or(100_000),
        nums.get(2).copied().unwrap_or(50_000),
    );
    // DESKPROV_SCALE_DIR keeps the loaded data between runs (loading takes a minute or two).
    let tmp = tempfile::tempdir().unwrap();
    let kept = std::env::var_os("DESKPROV_SCALE_DIR").map(std::path::PathBuf::from);
    let dir = kept.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let t = Instant::now();
    if !dir.join("store").exists() {
        let store = open_store(&config(&dir), Arc::new(Catalog::builtin().unwrap())).unwrap();
        let per = 100;
        let groups = users.max(devices).div_ceil(per);
        for g in 0..groups {
            let gid = format!("g{g:05}");
            let grp = serde_json::from_value(
                serde_json::json!({"id": gid, "sip": {"domain": "sip.example.net"}}),
            )
            .unwrap();
            store.create_group("bench", grp).unwrap();
        }
        let gid = |i: usize| deskprov::domain::GroupId::parse(&format!("g{:05}", i / per)).unwrap();
        for i in 0..users {
            let u = serde_json::from_value(serde_json::json!({
                "extension": format!("{}", 1000 + i % per), "first_name": "User", "last_name": format!("{i}"),
                "phone_number": format!("{}", 2_000_000_000u64 + i as u64),
            }))
            .unwrap();
            store.create_user("bench", &gid(i), u).unwrap();
        }
        for i in 0..devices {
            let owner = (i < users).then(|| format!("{}", 1000 + i % per));
            let d = serde_json::from_value(serde_json::json!({
                "mac": format!("0004f2{i:06x}"), "model": "yealink-t54w", "owner": owner,
            }))
            .unwrap();
            store.create_device("bench", &gid(i), d).unwrap();
        }
        // Each SCA: user i's line on the device of user i+1 in the same group.
        for i in 0..scas.min(users) {
            let j = (i / per) * per + (i + 1) % per;
            if j >= devices {
                continue;
            }
            let e = deskprov::domain::Extension::parse(&format!("{}", 1000 + i % per)).unwrap();
            let x = serde_json::from_value(serde_json::json!({"device": format!("0004f2{j:06x}")}))
                .unwrap();
            store.create_sca("bench", &gid(i), &e, x).unwrap();
        }
    }
    eprintln!("loaded in {:.1?}", t.elapsed());
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--open", &dir.display().to_string()])
        .output()
        .unwrap();
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
}
