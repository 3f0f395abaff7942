//! `deskprov migrate`: copies the embedded store of a data directory into an empty PostgreSQL
//! database (`--to`), or a PostgreSQL store into an empty data directory (`--from`), then
//! verifies the copy: every stored entry (records, change log, counters, check-ins, sync work,
//! uploads, provisioning logs, the unprovisioned list MAC by MAC) byte for byte, and every
//! device's every file rendered from each side. The sealing key is not copied: both sides use the configured key file.

use std::sync::Arc;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::render::Renderer;
use crate::store::{Store, StoreOptions};

/// Which way to copy.
#[derive(Clone, Copy, Debug)]
pub enum Direction {
    /// The data directory's embedded store into the database.
    ToPostgres,
    /// The database into the data directory (which must hold no store).
    FromPostgres,
}

/// What a migration did and found.
#[derive(Debug, Default)]
pub struct Summary {
    /// One line per kind of entry and one for the rendered files.
    pub lines: Vec<String>,
    /// Entries or files that differ between the two sides (0: the copy is exact).
    pub differences: usize,
}

fn options(config: &Config) -> StoreOptions {
    StoreOptions {
        cache_bytes: config.store.cache_mb << 20,
        changes_keep: config.store.changes_keep,
        max_sca_per_user: config.rules.max_sca_per_user,
        limits: Default::default(),
    }
}

/// Copies, then verifies; `ca` is the database's CA (`[store] ca` when empty).
pub fn migrate(config: &Config, direction: Direction, url: &str) -> Result<Summary, String> {
    let dir = config.data_dir.join("store");
    let ca = config.store.ca.as_str();
    match direction {
        Direction::ToPostgres => {
            if !dir.exists() {
                return Err(format!("{} holds no store", dir.display()));
            }
            Store::copy_to_postgres(&dir, url, ca)
        }
        Direction::FromPostgres => {
            if dir.exists() {
                return Err(format!(
                    "{} already exists: migrate --from needs an empty data directory",
                    dir.display()
                ));
            }
            std::fs::create_dir_all(&config.data_dir).map_err(|e| e.to_string())?;
            Store::copy_from_postgres(url, ca, &dir)
        }
    }
    .map_err(|e| e.to_string())?;
    verify(config, url)
}

/// Compares the data directory's store with the database's: entries, then rendered files.
pub fn verify(config: &Config, url: &str) -> Result<Summary, String> {
    let dir = config.data_dir.join("store");
    let ca = config.store.ca.as_str();
    let mut out = Summary::default();
    for c in Store::compare_engines(&dir, url, ca).map_err(|e| e.to_string())? {
        out.lines.push(format!(
            "{:<13} embedded {:>8}  postgres {:>8}  differing {}",
            c.what, c.embedded, c.postgres, c.differing
        ));
        out.differences += c.differing;
    }
    let catalog = Arc::new(Catalog::load(config.templates_dir()).map_err(|e| e.to_string())?);
    let key = config.key_file();
    let embedded = Store::open_with_key(&dir, &key, catalog.clone(), options(config))
        .map_err(|e| e.to_string())?;
    let pg = Store::open_postgres(url, ca, &key, catalog.clone(), options(config))
        .map_err(|e| e.to_string())?;
    let base = config.phone_base_url(None);
    let ra = Renderer::new(
        catalog.clone(),
        base.clone(),
        &embedded.template_overrides(),
    );
    let rb = Renderer::new(catalog.clone(), base, &pg.template_overrides());
    let (sa, sb) = (embedded.read(), pg.read());
    let (mut files, mut differing) = (0usize, 0usize);
    for d in sa.devices.values() {
        let Some(model) = catalog.get(&d.model) else {
            continue;
        };
        for spec in model.files.iter().filter(|f| f.per_device) {
            files += 1;
            let a = ra.render_device(&sa, d, spec).map(|r| r.bytes.clone());
            let b = match sb.devices.get(&d.mac) {
                Some(db) => rb.render_device(&sb, db, spec).map(|r| r.bytes.clone()),
                None => {
                    differing += 1;
                    continue;
                }
            };
            match (a, b) {
                (Ok(a), Ok(b)) if a == b => {}
                (Err(a), Err(b)) if a.to_string() == b.to_string() => {}
                _ => differing += 1,
            }
        }
    }
    differing += sb
        .devices
        .values()
        .filter(|d| !sa.devices.contains_key(&d.mac))
        .count();
    out.lines.push(format!(
        "{:<13} {} devices, {} files rendered from each side, differing {}",
        "rendered",
        sa.devices.len(),
        files,
        differing
    ));
    out.differences += differing;
    drop((sa, sb));
    embedded.flush().map_err(|e| e.to_string())?;
    pg.flush().map_err(|e| e.to_string())?;
    Ok(out)
}
