//! Import speed (issue 11): 100,000 rows validated through the domain rules and written as
//! one store commit (one change-log entry).
//!
//!     cargo bench --bench import [-- ROWS]
//!
//! 1. A whole-platform export document of ROWS rows (default 100,000): ROWS/100 groups of 50
//!    users and 50 devices owned by them — a dry run, the import, and the second, idempotent
//!    run (which writes nothing).
//! 2. A CSV migration of one site: 3,000 users, then their 3,000 phones, into one group.
//!
//! The rules look a user's phones up within its group (a scan of the group), so one group of
//! 100,000 objects imports far slower than the same rows spread over sites; see the README.

use std::sync::Arc;
use std::time::Instant;

use deskprov::catalog::Catalog;
use deskprov::config::Config;
use deskprov::server::open_store;
use deskprov::store::ImportOutcome;

fn main() {
    let rows: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let catalog = Arc::new(Catalog::load(None).expect("catalogue"));
    let store = open_store(&config, catalog).expect("store");

    let mut groups = Vec::new();
    let mut n = 0usize;
    for g in 0..rows.div_ceil(100) {
        let mut users = Vec::new();
        let mut devices = Vec::new();
        for _ in 0..50 {
            let ext = format!("{}", 1000 + n % 100);
            users.push(
                serde_json::json!({"extension": ext, "first_name": format!("First{n}"),
                "sip": {"password": format!("pw-{n:08}-secret")}}),
            );
            devices.push(serde_json::json!({"mac": format!("0004f2{n:06x}"), "model": "polycom-vvx-450",
                "name": format!("Desk {n}"), "owner": ext, "prov_password": format!("prov-{n:08}-x")}));
            n += 1;
        }
        groups.push(serde_json::json!({"group": {"id": format!("site{g:05}"), "sip": {"domain": "sip.example.net"}},
            "users": users, "devices": devices}));
    }
    let doc = serde_json::json!({"format": "deskprov-export", "version": 1, "groups": groups})
        .to_string();
    let total = groups_rows(&doc);
    println!(
        "document: {total} rows in {} groups, {} bytes",
        rows.div_ceil(100),
        doc.len()
    );
    run(&store, "document (dry run)", &doc, None, None, true);
    run(&store, "document", &doc, None, None, false);
    run(
        &store,
        "document again (no change)",
        &doc,
        None,
        None,
        false,
    );

    let site = serde_json::json!({"format": "deskprov-export", "version": 1, "groups": [
        {"group": {"id": "hq", "sip": {"domain": "sip.example.net"}}}]});
    run(&store, "group hq", &site.to_string(), None, None, false);
    let mut users = String::from("extension,first_name,last_name,sip_password\n");
    let mut devices = String::from("mac,model,name,owner\n");
    for i in 0..3000 {
        users.push_str(&format!(
            "{},First{i},Last{i},pw-{i:08}-secret\n",
            10_000 + i
        ));
        devices.push_str(&format!(
            "805ec0{i:06x},yealink-t54w,Desk {i},{}\n",
            10_000 + i
        ));
    }
    run(
        &store,
        "CSV 3,000 users",
        &users,
        Some("hq"),
        Some("users"),
        false,
    );
    run(
        &store,
        "CSV 3,000 devices",
        &devices,
        Some("hq"),
        Some("devices"),
        false,
    );
}

fn groups_rows(doc: &str) -> usize {
    let v: serde_json::Value = serde_json::from_str(doc).unwrap();
    v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| 1 + g["users"].as_array().unwrap().len() + g["devices"].as_array().unwrap().len())
        .sum()
}

fn run(
    store: &deskprov::store::Store,
    what: &str,
    text: &str,
    group: Option<&str>,
    kind: Option<&str>,
    dry: bool,
) {
    let t = Instant::now();
    let out = store.import_text(text, group, kind, dry).expect("import");
    let took = t.elapsed();
    match out {
        ImportOutcome::Done(r) => println!(
            "{what:<26} {:>8.2} s  created {} changed {} unchanged {}",
            took.as_secs_f64(),
            r["created"],
            r["changed"],
            r["unchanged"]
        ),
        ImportOutcome::Refused(e) => panic!("{what}: refused: {e}"),
    }
}
