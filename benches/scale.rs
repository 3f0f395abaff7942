//! Start-up at scale (SPEC §6): 100,000 devices, 100,000 users, 50,000 SCA endpoints — ready to
//! serve in under 2 s and under 200 MiB RSS.
//!
//!     cargo bench --bench scale [-- USERS DEVICES SCAS]
//!
//! Loads the store through the import path — the API's domain rules, one commit per 100 groups
//! (groups of 100 users and devices; one commit per object took hours at 1,000,000) — then starts
//! a fresh process that opens it and brings the whole server up on loopback, and reports the
//! time until it serves and its resident memory. Environment: `DESKPROV_SCALE_DIR` keeps the
//! loaded data between runs, `DESKPROV_CACHE_MB` sets `[store] cache_mb`, and
//! `DESKPROV_SCALE_BREAKDOWN=1` reports memory after opening sled, reading the records, and
//! building the in-memory state.
//!
//! With `DESKPROV_TEST_PG=postgres://…` (`scripts/pg-test.sh --shell` starts a server) it then
//! copies the loaded data dir into a fresh database (`deskprov migrate --to`'s code), reports the
//! same figures for a process serving from PostgreSQL, and the replica catch-up delay: a server
//! follows while another store writes a stream of users (`DESKPROV_SCALE_WRITES`, default 500)
//! and the delay from each acknowledged write to the follower serving it is reported.

use std::sync::Arc;
use std::time::Instant;

// The allocator of the `deskprov` binary (src/main.rs), so the RSS reported is the server's:
// with the system allocator this process reported about a fifth less at 1,000,000 users.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use deskprov::catalog::Catalog;
use deskprov::config::Config;
use deskprov::server::{open_store, Server};

fn config(dir: &std::path::Path) -> Config {
    let mut c = embedded_config(dir);
    if let Ok(url) = std::env::var("DESKPROV_SCALE_PG_URL") {
        c.store.backend = deskprov::config::StoreBackend::Postgres;
        c.store.url = url;
        c.store.key_file = dir.join("store.key").display().to_string();
    }
    c
}

fn embedded_config(dir: &std::path::Path) -> Config {
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
    if args.first().map(String::as_str) == Some("--follow") {
        return follow_delay(&args[1]);
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
        load(&store, users, devices, scas);
    }
    eprintln!("loaded in {:.1?}", t.elapsed());
    let exe = std::env::current_exe().unwrap();
    let child = |args: &[&str], pg: Option<&str>| {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(args).env_remove("DESKPROV_SCALE_PG_URL");
        if let Some(url) = pg {
            cmd.env("DESKPROV_SCALE_PG_URL", url);
        }
        let out = cmd.output().unwrap();
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    };
    let d = dir.display().to_string();
    print!("embedded: ");
    child(&["--open", &d], None);
    let Ok(base) = std::env::var("DESKPROV_TEST_PG") else {
        println!("postgres: skipped (DESKPROV_TEST_PG not set; scripts/pg-test.sh --shell starts a server)");
        return;
    };
    let url = fresh_database(&base, "deskprov_scale");
    let t = Instant::now();
    let summary = deskprov::migrate::migrate(
        &embedded_config(&dir),
        deskprov::migrate::Direction::ToPostgres,
        &url,
    )
    .unwrap();
    assert_eq!(summary.differences, 0, "{:?}", summary.lines);
    eprintln!("copied into PostgreSQL and verified in {:.1?}", t.elapsed());
    print!("postgres: ");
    child(&["--open", &d], Some(&url));
    child(&["--follow", &d], Some(&url));
}

/// `base` with its database replaced by a new, empty `name` (dropped first if it exists).
fn fresh_database(base: &str, name: &str) -> String {
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        let ok = std::process::Command::new("psql")
            .args([base, "-v", "ON_ERROR_STOP=1", "-qc", &sql])
            .status()
            .unwrap()
            .success();
        assert!(ok, "psql {sql}");
    }
    let (server, _) = base.rsplit_once('/').expect("a postgres:// URL");
    format!("{server}/{name}")
}

/// Replica catch-up under a write stream: this process serves from the database (following
/// it) while a second store on the same database writes users one after another; for each,
/// the time from the writer's acknowledgement until the server's snapshot has it.
fn follow_delay(dir: &str) {
    let writes: usize = std::env::var("DESKPROV_SCALE_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = config(std::path::Path::new(dir));
        let server = Server::start(c.clone()).await.unwrap();
        let app = server.app.clone();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(server.run(async {
            let _ = stop_rx.await;
        }));
        let writer = tokio::task::spawn_blocking(move || {
            open_store(&c, Arc::new(Catalog::builtin().unwrap())).unwrap()
        })
        .await
        .unwrap();
        let writer = Arc::new(writer);
        let g = deskprov::domain::GroupId::parse("follow").unwrap();
        {
            let w = writer.clone();
            tokio::task::spawn_blocking(move || {
                let grp = serde_json::from_value(
                    serde_json::json!({"id": "follow", "sip": {"domain": "sip.example.net"}}),
                )
                .unwrap();
                w.create_group("bench", grp).unwrap();
            })
            .await
            .unwrap();
        }
        let mut delays = Vec::with_capacity(writes);
        let started = Instant::now();
        for i in 0..writes {
            let (w, g) = (writer.clone(), g.clone());
            let want = app.store.read().users.len() + 1;
            tokio::task::spawn_blocking(move || {
                let u = serde_json::from_value(
                    serde_json::json!({"extension": format!("{}", 10_000 + i)}),
                )
                .unwrap();
                w.create_user("bench", &g, u).unwrap();
            })
            .await
            .unwrap();
            let acked = Instant::now();
            let mut sub = app.store.read();
            while sub.users.len() < want {
                tokio::time::sleep(std::time::Duration::from_micros(200)).await;
                assert!(acked.elapsed().as_secs() < 10, "the follower fell 10 s behind");
                sub = app.store.read();
            }
            delays.push(acked.elapsed().as_secs_f64() * 1000.0);
        }
        let rate = writes as f64 / started.elapsed().as_secs_f64();
        delays.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| delays[((delays.len() - 1) as f64 * p) as usize];
        println!(
            "postgres: replica catch-up under a stream of {writes} writes ({rate:.0}/s): median {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            pct(0.5),
            pct(0.99),
            pct(1.0)
        );
        let _ = stop_tx.send(());
        let _ = running.await;
    });
}

/// Loads the platform through the import path (the domain rules of the API, one commit per
/// batch of groups): 100 users and devices per group, each device owned by the user of the
/// same index, and SCA endpoint i putting user i's line on the device of user i+1 of its group.
fn load(store: &deskprov::store::Store, users: usize, devices: usize, scas: usize) {
    let per = 100;
    let groups = users.max(devices).div_ceil(per);
    let mac = |j: usize| format!("0004f2{j:06x}");
    let batch = 100;
    for first in (0..groups).step_by(batch) {
        let mut docs = Vec::new();
        for g in first..(first + batch).min(groups) {
            let range = g * per..(g + 1) * per;
            let ext = |i: usize| format!("{}", 1000 + i % per);
            let users_doc: Vec<_> = range
                .clone()
                .filter(|&i| i < users)
                .map(|i| serde_json::json!({"extension": ext(i), "first_name": "User",
                    "last_name": format!("{i}"), "phone_number": format!("{}", 2_000_000_000u64 + i as u64)}))
                .collect();
            let devices_doc: Vec<_> = range
                .clone()
                .filter(|&i| i < devices)
                .map(|i| {
                    serde_json::json!({"mac": mac(i), "model": "yealink-t54w",
                    "owner": (i < users).then(|| ext(i))})
                })
                .collect();
            let sca_doc: Vec<_> = range
                .filter(|&i| i < scas.min(users))
                .filter_map(|i| {
                    let j = g * per + (i + 1) % per;
                    (j < devices)
                        .then(|| serde_json::json!({"extension": ext(i), "device": mac(j)}))
                })
                .collect();
            docs.push(serde_json::json!({
                "group": {"id": format!("g{g:05}"), "sip": {"domain": "sip.example.net"}},
                "users": users_doc, "devices": devices_doc, "sca": sca_doc,
            }));
        }
        let doc = serde_json::json!({"format": "deskprov-export", "version": 1, "groups": docs});
        match store
            .import_text(&doc.to_string(), None, None, false)
            .expect("import")
        {
            deskprov::store::ImportOutcome::Done(_) => {}
            deskprov::store::ImportOutcome::Refused(e) => panic!("import refused: {e}"),
        }
    }
}
