//! The PostgreSQL engine: one database shared by every server (replica).
//!
//! Tables (see `migrations/`): `records` (every record by its key, JSON text, with the `seq` that
//! last wrote it; deletions stay as tombstones), `changes` (the change log), `counter` (the one
//! row holding the last `seq`), `group_seqs`, `meta`, the observations `checkins`,
//! `sync_states`, `uploads`, `provlog`, `unprovisioned` (unknown MACs any server saw, added to
//! per MAC and trimmed to the newest [`UNPROVISIONED_MAX`] under an advisory lock), and
//! `sync_requests` (manual syncs queued by any server for the dispatcher, which takes them with
//! the states they lead to in one transaction). Upload quotas are kept in the transaction that
//! stores an upload, under an advisory lock per device, so every server keeps the same one.
//! Check-ins and sync states carry an `ord` from a sequence, so every server follows the rows
//! the others write. JSON is stored byte for byte as the embedded engine stores it, so a dump
//! of either engine restores into the other.
//!
//! Writes across servers: [`Backend::begin_write`] opens a transaction and locks the counter row
//! (`SELECT ... FOR UPDATE`), so writers on every server take turns; inside it, the records
//! written by other servers since the writer's `seq` are read and handed back to the store,
//! which applies them before its domain rule runs. [`Backend::commit`] then writes the records,
//! the change entry and the new `seq`, sends `NOTIFY deskprov_changes` and commits: the answer
//! follows a durable commit. Other servers follow (see [`follow`]): woken by the NOTIFY, or by
//! a poll, they read the same records-since-seq and publish a new snapshot.
//!
//! Connections: a small pool for the store's calls, plus one connection held by the open write
//! transaction, one that LISTENs and one that holds the dispatcher's advisory lock. Every call
//! blocks; made from an async worker it first hands that worker's tasks to another thread.

mod follow;

use std::sync::Mutex;
use std::time::Duration;

use postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::backend::{
    Backend, CatchUp, DumpEntry, FollowedState, Loaded, Observations, RecordSink, Sighting,
    SyncRequest, UploadQuota,
};
use super::observations::{quota_plan, UNPROVISIONED_MAX};
use super::{Change, CheckIn, ProvLogEntry, StoreError, SyncState, Unprovisioned, UploadMeta};
use crate::domain::state::{Record, RecordKey};
use crate::domain::{GroupId, Mac};

/// Schema migrations, in order; each runs once, inside the start-up transaction.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_init.sql")),
    (2, include_str!("migrations/0002_sync_requests.sql")),
    (3, include_str!("migrations/0003_unprovisioned.sql")),
];

/// The channel commits are announced on.
const CHANNEL: &str = "deskprov_changes";

/// Advisory lock keys (`pg_advisory_lock`): migrations, the one sync dispatcher, and the
/// unprovisioned list (its saves and trims, and the commits that take a MAC off it).
const MIGRATION_LOCK: i64 = 0x6465_736b_0001;
const DISPATCHER_LOCK: i64 = 0x6465_736b_0002;
const UNPROVISIONED_LOCK: i64 = 0x6465_736b_0003;

/// The first key of a device's upload lock (`pg_advisory_xact_lock(int, int)`, the second key
/// the MAC's `hashtext`; two-key locks never meet the one-key locks above).
const UPLOAD_LOCK_CLASS: i32 = 0x6473_7570;

/// Idle connections kept by the pool.
const POOL_IDLE: usize = 8;

/// How far back check-ins and sync states are read again on every poll: a row's `ord` comes
/// from a sequence, and one taken earlier can commit after a later one was already read.
const CHECKIN_LOOKBACK_S: i64 = 5;

/// Saves one device's sync state with a new `ord` (other servers follow it).
/// Calls `f` with each row of `sql` as the rows arrive: a table of a million check-ins or sync
/// states is streamed, never held whole as rows beside what is built from them.
fn each_row(
    tx: &mut postgres::Transaction<'_>,
    sql: &str,
    mut f: impl FnMut(&postgres::Row) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    use postgres::fallible_iterator::FallibleIterator;
    let mut rows = tx.query_raw(sql, std::iter::empty::<i64>())?;
    while let Some(r) = rows.next()? {
        f(&r)?;
    }
    Ok(())
}

const SAVE_SYNC_STATE: &str = "INSERT INTO sync_states (mac, value) VALUES ($1, $2)
     ON CONFLICT (mac) DO UPDATE
     SET value = excluded.value, ord = nextval('sync_state_ord'), written = now()";

/// The tables other servers' rows are followed in by their `ord`.
#[derive(Clone, Copy)]
enum Written {
    Checkins,
    SyncStates,
}

/// A followed row: mac, ord, value.
type WrittenRow = (Mac, u64, String);

/// Rows of `table` written since `cursor` (by `ord`, and with `lookback` again those written
/// in the last [`CHECKIN_LOOKBACK_S`]): the new cursor, and (mac, ord, value) of rows with a
/// valid mac.
fn written_since(
    c: &mut Client,
    table: Written,
    cursor: u64,
    lookback: bool,
) -> Result<(u64, Vec<WrittenRow>), StoreError> {
    let table = match table {
        Written::Checkins => "checkins",
        Written::SyncStates => "sync_states",
    };
    let rows = if lookback {
        c.query(
            &format!(
                "SELECT mac, value, ord FROM {table}
                 WHERE ord > $1 OR written > now() - make_interval(secs => $2)"
            ),
            &[&i64_of(cursor), &(CHECKIN_LOOKBACK_S as f64)],
        )?
    } else {
        c.query(
            &format!("SELECT mac, value, ord FROM {table} WHERE ord > $1"),
            &[&i64_of(cursor)],
        )?
    };
    let mut last = cursor;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let ord = r.get::<_, i64>(2) as u64;
        last = last.max(ord);
        if let Ok(mac) = Mac::parse(r.get::<_, &str>(0)) {
            out.push((mac, ord, r.get::<_, String>(1)));
        }
    }
    Ok((last, out))
}

/// The `meta` row holding a value sealed with the sealing key, so a server with another key
/// refuses to start instead of serving passwords it cannot open.
const KEY_CHECK: &str = "key_check";
const KEY_CHECK_PLAIN: &str = "deskprov sealing key check";

fn pg_error(e: postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError::Engine(format!(
            "postgres: {} {}: {}",
            db.severity(),
            db.code().code(),
            db.message()
        )),
        None => StoreError::Engine(format!("postgres: {e}")),
    }
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> Self {
        pg_error(e)
    }
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("stored values serialise")
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, v: &str) -> Result<T, StoreError> {
    serde_json::from_str(v).map_err(|e| corrupt(format!("{what}: {e}")))
}

fn i64_of(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

/// Stores a batch's uploads keeping every device within `quota`: the devices are locked (in
/// the order of their lock keys, so two servers' batches never wait on each other in a
/// circle), their stored files read, and the oldest beyond the quota removed, in the caller's
/// transaction: two servers uploading for one device keep one quota.
fn store_uploads_within(
    tx: &mut postgres::Transaction<'_>,
    uploads: &[(Mac, UploadMeta, axum::body::Bytes)],
    quota: UploadQuota,
) -> Result<(), StoreError> {
    let mut by_mac: std::collections::BTreeMap<&Mac, Vec<usize>> = Default::default();
    for (i, (mac, _, _)) in uploads.iter().enumerate() {
        by_mac.entry(mac).or_default().push(i);
    }
    let macs: Vec<&str> = by_mac.keys().map(|m| m.as_str()).collect();
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, h)
         FROM (SELECT DISTINCT hashtext(m) AS h FROM unnest($2::text[]) AS w(m) ORDER BY h) AS k",
        &[&UPLOAD_LOCK_CLASS, &macs],
    )?;
    for (mac, idx) in by_mac {
        let stored = tx
            .query("SELECT meta FROM uploads WHERE mac = $1", &[&mac.as_str()])?
            .iter()
            .map(|r| parse("upload", r.get::<_, &str>(0)))
            .collect::<Result<Vec<UploadMeta>, _>>()?;
        let new: Vec<&UploadMeta> = idx.iter().map(|&i| &uploads[i].1).collect();
        let plan = quota_plan(stored, &new, quota);
        for name in &plan.remove {
            tx.execute(
                "DELETE FROM uploads WHERE mac = $1 AND name = $2",
                &[&mac.as_str(), name],
            )?;
        }
        for &i in &plan.store {
            let (_, meta, body) = &uploads[idx[i]];
            tx.execute(
                "INSERT INTO uploads (mac, name, meta, body) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (mac, name) DO UPDATE SET meta = excluded.meta, body = excluded.body",
                &[&mac.as_str(), &meta.name, &json(meta), &body.as_ref()],
            )?;
        }
        if !plan.remove.is_empty() {
            let evicted = plan.remove.len();
            tracing::info!(%mac, evicted, "upload quota: the device's oldest uploads are removed");
        }
    }
    Ok(())
}

/// An RFC 3339 time for a `timestamptz` column: as given when it parses, else the epoch (an
/// entry of an older list with a time that does not parse counts as the oldest).
fn timestamp_text(at: &str) -> &str {
    match time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339) {
        Ok(_) => at,
        Err(_) => "1970-01-01T00:00:00Z",
    }
}

/// Adds sightings (newest first, as lists are) to the `unprovisioned` table, then keeps its
/// newest [`UNPROVISIONED_MAX`]; in the caller's transaction, serialised with every other
/// server's on [`UNPROVISIONED_LOCK`]. Per MAC the count is added to the stored one and the
/// later sighting's file, address, User-Agent and time are kept; a MAC that is a device is not
/// added (the commit that created it took the lock too, so it is seen here).
fn add_unprovisioned(
    tx: &mut impl postgres::GenericClient,
    seen: &[Sighting],
) -> Result<(), StoreError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&UNPROVISIONED_LOCK])?;
    // Oldest first, so `ord` increases toward the newest; one row per MAC (its newest).
    let mut rows: Vec<&Sighting> = Vec::with_capacity(seen.len());
    for s in seen {
        if !rows.iter().any(|r| r.last.mac == s.last.mac) {
            rows.push(s);
        }
    }
    rows.reverse();
    if !rows.is_empty() {
        let col = |f: fn(&Sighting) -> &str| -> Vec<&str> { rows.iter().map(|s| f(s)).collect() };
        let macs = col(|s| s.last.mac.as_str());
        let files = col(|s| &s.last.file);
        let ips = col(|s| &s.last.ip);
        let agents = col(|s| &s.last.user_agent);
        let ats = col(|s| &s.last.at);
        let firsts = col(|s| timestamp_text(&s.first_at));
        let lasts = col(|s| timestamp_text(&s.last.at));
        let counts: Vec<i64> = rows.iter().map(|s| i64_of(s.last.count)).collect();
        let keys: Vec<String> = rows
            .iter()
            .map(|s| {
                String::from_utf8_lossy(&RecordKey::Device(s.last.mac.clone()).encode())
                    .into_owned()
            })
            .collect();
        tx.execute(
            "INSERT INTO unprovisioned AS u
                 (mac, file, ip, user_agent, at, first_seen, last_seen, count)
             SELECT m, f, i, a, t, fs::timestamptz, ls::timestamptz, n
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::text[], $8::bigint[], $9::text[])
                 WITH ORDINALITY AS w(m, f, i, a, t, fs, ls, n, k, o)
             WHERE NOT EXISTS (SELECT 1 FROM records r WHERE r.key = w.k AND NOT r.deleted)
             ORDER BY o
             ON CONFLICT (mac) DO UPDATE SET
                 count = u.count + excluded.count,
                 first_seen = least(u.first_seen, excluded.first_seen),
                 file = CASE WHEN excluded.last_seen >= u.last_seen
                        THEN excluded.file ELSE u.file END,
                 ip = CASE WHEN excluded.last_seen >= u.last_seen
                      THEN excluded.ip ELSE u.ip END,
                 user_agent = CASE WHEN excluded.last_seen >= u.last_seen
                              THEN excluded.user_agent ELSE u.user_agent END,
                 at = CASE WHEN excluded.last_seen >= u.last_seen
                      THEN excluded.at ELSE u.at END,
                 ord = CASE WHEN excluded.last_seen >= u.last_seen
                       THEN excluded.ord ELSE u.ord END,
                 last_seen = greatest(u.last_seen, excluded.last_seen)",
            &[
                &macs, &files, &ips, &agents, &ats, &firsts, &lasts, &counts, &keys,
            ],
        )?;
    }
    let trimmed = tx.execute(
        "DELETE FROM unprovisioned WHERE mac IN (
             SELECT mac FROM unprovisioned ORDER BY last_seen DESC, ord DESC OFFSET $1)",
        &[&(UNPROVISIONED_MAX as i64)],
    )?;
    if trimmed > 0 {
        tracing::debug!(trimmed, "the unprovisioned list kept its newest entries");
    }
    Ok(())
}

/// The `unprovisioned` table as a list, newest first.
fn read_unprovisioned(
    c: &mut impl postgres::GenericClient,
) -> Result<Vec<Unprovisioned>, StoreError> {
    let rows = c.query(
        "SELECT mac, file, ip, user_agent, at, count FROM unprovisioned
         ORDER BY last_seen DESC, ord DESC LIMIT $1",
        &[&(UNPROVISIONED_MAX as i64)],
    )?;
    // An observation: a row whose MAC no longer parses is skipped, not fatal.
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some(Unprovisioned {
                mac: Mac::parse(r.get::<_, &str>(0)).ok()?,
                file: r.get(1),
                ip: r.get(2),
                user_agent: r.get(3),
                at: r.get(4),
                count: r.get::<_, i64>(5).max(0) as u64,
            })
        })
        .collect())
}

/// A whole list (as the embedded engine and older versions saved it) as sightings: each
/// entry's count is its total, its first sighting unknown (its last stands for it).
fn whole_list(list: Vec<Unprovisioned>) -> Vec<Sighting> {
    list.into_iter()
        .map(|u| Sighting {
            first_at: u.at.clone(),
            last: u,
        })
        .collect()
}

/// Runs a blocking database call; on an async worker, hands that worker's other tasks to
/// another thread first (the driver must never block a worker).
fn off_workers<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// How connections are made: TLS (verified against `[store] ca`) or plain.
enum Tls {
    Plain,
    Rustls(MakeRustlsConnect),
}

/// Connections for the store's calls.
struct Pool {
    config: postgres::Config,
    tls: Tls,
    idle: Mutex<Vec<Client>>,
}

impl Pool {
    fn connect(&self) -> Result<Client, StoreError> {
        off_workers(|| match &self.tls {
            Tls::Plain => self.config.connect(NoTls),
            Tls::Rustls(t) => self.config.connect(t.clone()),
        })
        .map_err(pg_error)
    }

    fn take(&self) -> Result<Client, StoreError> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(c) if !c.is_closed() => Ok(c),
            _ => self.connect(),
        }
    }

    fn give(&self, c: Client) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if !c.is_closed() && idle.len() < POOL_IDLE {
            idle.push(c);
        }
    }

    /// Runs `f` on a pooled connection, off the async workers.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut c = self.take()?;
        let out = off_workers(|| f(&mut c));
        self.give(c);
        out
    }
}

/// The PostgreSQL engine.
pub(crate) struct Postgres {
    pool: Pool,
    /// The connection of the open write transaction (between `begin_write` and `commit`).
    write: Mutex<Option<Client>>,
    follow: follow::Follow,
}

/// Reads the URL and the CA into a client configuration.
fn client_config(url: &str, ca: &str) -> Result<(postgres::Config, Tls), StoreError> {
    let config: postgres::Config = url
        .parse()
        .map_err(|e| StoreError::Engine(format!("store.url: {e}")))?;
    if ca.is_empty() {
        if config.get_ssl_mode() == postgres::config::SslMode::Require {
            return Err(StoreError::Engine(
                "store.url asks for sslmode=require: set store.ca to the PEM file of the CA that \
                 signs the database server's certificate"
                    .into(),
            ));
        }
        return Ok((config, Tls::Plain));
    }
    let pem = std::fs::read(ca).map_err(|e| StoreError::Engine(format!("store.ca {ca}: {e}")))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| StoreError::Engine(format!("store.ca {ca}: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| StoreError::Engine(format!("store.ca {ca}: {e}")))?;
    }
    if roots.is_empty() {
        return Err(StoreError::Engine(format!(
            "store.ca {ca}: no certificate in it"
        )));
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| StoreError::Engine(format!("TLS to the database: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok((config, Tls::Rustls(MakeRustlsConnect::new(tls))))
}

impl Postgres {
    /// Connects to `url` (TLS verified against the PEM CA file `ca` when given) and applies
    /// the schema migrations this build has that the database has not.
    pub(crate) fn open(url: &str, ca: &str) -> Result<Postgres, StoreError> {
        let (config, tls) = client_config(url, ca)?;
        let pool = Pool {
            config,
            tls,
            idle: Mutex::new(Vec::new()),
        };
        pool.with(migrate)?;
        Ok(Postgres {
            follow: follow::Follow::default(),
            pool,
            write: Mutex::new(None),
        })
    }

    /// Checks that `sealed_check` (a value the caller sealed with its key) is what this
    /// database was first opened with; the first server to open it stores it.
    pub(crate) fn key_check(
        &self,
        sealed_check: &str,
        opens: impl Fn(&str) -> bool,
    ) -> Result<(), StoreError> {
        self.pool.with(|c| {
            c.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&KEY_CHECK, &sealed_check],
            )?;
            let stored: String = c
                .query_one("SELECT value FROM meta WHERE key = $1", &[&KEY_CHECK])?
                .get(0);
            if opens(&stored) {
                Ok(())
            } else {
                Err(StoreError::Engine(
                    "the sealing key (store.key_file) is not the one this database's passwords \
                     are sealed with: give every server a copy of the same key file"
                        .into(),
                ))
            }
        })
    }

    /// The plain text a server seals for [`Postgres::key_check`].
    pub(crate) const KEY_CHECK_PLAIN: &'static str = KEY_CHECK_PLAIN;

    /// Writes a dump (the embedded engine's trees, see [`Backend::dump`]) into this database,
    /// which must hold no store yet; one transaction.
    pub(crate) fn restore(&self, entries: &[DumpEntry]) -> Result<(), StoreError> {
        self.pool.with(|c| {
            let mut tx = c.transaction()?;
            let seq: i64 = tx
                .query_one("SELECT seq FROM counter WHERE id = 1 FOR UPDATE", &[])?
                .get(0);
            let n: i64 = tx.query_one("SELECT count(*) FROM records", &[])?.get(0);
            if seq != 0 || n != 0 {
                return Err(StoreError::Engine(
                    "the database already holds a store".into(),
                ));
            }
            // The bulk (records, change log, check-ins, provisioning logs) in batches.
            let mut batch: Vec<&DumpEntry> = Vec::new();
            for e in entries {
                if batch.first().is_some_and(|b| b.0 != e.0) || batch.len() >= RESTORE_BATCH {
                    restore_batch(&mut tx, &batch)?;
                    batch.clear();
                }
                if BATCHED.contains(&e.0.as_str()) {
                    batch.push(e);
                } else {
                    restore_entry(&mut tx, &e.0, &e.1, &e.2)?;
                }
            }
            restore_batch(&mut tx, &batch)?;
            tx.commit()?;
            Ok(())
        })
    }
}

fn be_u64(v: &[u8], what: &str) -> Result<u64, StoreError> {
    Ok(u64::from_be_bytes(v.try_into().map_err(|_| corrupt(what))?))
}

fn utf8<'a>(v: &'a [u8], what: &str) -> Result<&'a str, StoreError> {
    std::str::from_utf8(v).map_err(|_| corrupt(format!("{what} is not UTF-8")))
}

/// Dump entries written per statement by a restore.
const RESTORE_BATCH: usize = 2000;

/// The trees a restore writes in batches.
const BATCHED: &[&str] = &["data", "changes", "checkins", "provlog"];

/// Entries of one of the [`BATCHED`] trees, into its table in one statement.
fn restore_batch(
    tx: &mut postgres::Transaction<'_>,
    batch: &[&DumpEntry],
) -> Result<(), StoreError> {
    let Some(tree) = batch.first().map(|e| e.0.as_str()) else {
        return Ok(());
    };
    let mut keys: Vec<String> = Vec::with_capacity(batch.len());
    let mut values: Vec<String> = Vec::with_capacity(batch.len());
    let mut nums: Vec<i64> = Vec::with_capacity(batch.len());
    let mut groups: Vec<Option<String>> = Vec::with_capacity(batch.len());
    for (_, k, v) in batch {
        let v = utf8(v, tree)?.to_string();
        match tree {
            "data" | "checkins" => keys.push(utf8(k, tree)?.to_string()),
            "changes" => {
                nums.push(i64_of(be_u64(k, "change key")?));
                let c: Change = parse("change", &v)?;
                groups.push(c.group.as_ref().map(|g| g.as_str().to_string()));
            }
            "provlog" => {
                if k.len() < 8 {
                    return Err(corrupt("provlog key"));
                }
                let (mac, id) = k.split_at(k.len() - 8);
                keys.push(utf8(mac, "provlog key")?.to_string());
                nums.push(i64_of(be_u64(id, "provlog id")?));
            }
            other => return Err(corrupt(format!("no batch restore for {other}"))),
        }
        values.push(v);
    }
    match tree {
        "data" => tx.execute(
            "INSERT INTO records (key, seq, deleted, value)
             SELECT k, 0, false, v FROM unnest($1::text[], $2::text[]) AS w(k, v)",
            &[&keys, &values],
        )?,
        "checkins" => tx.execute(
            "INSERT INTO checkins (mac, value)
             SELECT k, v FROM unnest($1::text[], $2::text[]) AS w(k, v)",
            &[&keys, &values],
        )?,
        "changes" => tx.execute(
            "INSERT INTO changes (seq, grp, entry)
             SELECT s, g, e FROM unnest($1::bigint[], $2::text[], $3::text[]) AS w(s, g, e)",
            &[&nums, &groups, &values],
        )?,
        _ => tx.execute(
            "INSERT INTO provlog (mac, id, entry)
             SELECT m, i, e FROM unnest($1::text[], $2::bigint[], $3::text[]) AS w(m, i, e)",
            &[&keys, &nums, &values],
        )?,
    };
    Ok(())
}

/// One entry of an embedded-engine dump, into its table.
fn restore_entry(
    tx: &mut postgres::Transaction<'_>,
    tree: &str,
    k: &[u8],
    v: &[u8],
) -> Result<(), StoreError> {
    match tree {
        "data" => {
            tx.execute(
                "INSERT INTO records (key, seq, deleted, value) VALUES ($1, 0, false, $2)",
                &[&utf8(k, "record key")?, &utf8(v, "record")?],
            )?;
        }
        "changes" => {
            let c: Change = parse("change", utf8(v, "change")?)?;
            tx.execute(
                "INSERT INTO changes (seq, grp, entry) VALUES ($1, $2, $3)",
                &[
                    &i64_of(be_u64(k, "change key")?),
                    &c.group.as_ref().map(|g| g.as_str().to_string()),
                    &utf8(v, "change")?,
                ],
            )?;
        }
        "meta" => {
            let key = utf8(k, "meta key")?;
            if key == "format" {
            } else if key == "seq" {
                tx.execute(
                    "UPDATE counter SET seq = $1 WHERE id = 1",
                    &[&i64_of(be_u64(v, "seq")?)],
                )?;
            } else if let Some(g) = key.strip_prefix("group_seq/") {
                tx.execute(
                    "INSERT INTO group_seqs (grp, seq) VALUES ($1, $2)",
                    &[&g, &i64_of(be_u64(v, "group_seq")?)],
                )?;
            } else if key == "sync_cursor" {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('sync_cursor', $1)",
                    &[&be_u64(v, "sync_cursor")?.to_string()],
                )?;
            } else if key == "unprovisioned" {
                // An observation: a list that no longer parses is not copied.
                let list: Vec<Unprovisioned> = serde_json::from_slice(v).unwrap_or_default();
                add_unprovisioned(tx, &whole_list(list))?;
            } else {
                return Err(corrupt(format!("unknown meta key {key}")));
            }
        }
        "checkins" => {
            tx.execute(
                "INSERT INTO checkins (mac, value) VALUES ($1, $2)",
                &[&utf8(k, "check-in key")?, &utf8(v, "check-in")?],
            )?;
        }
        "sync" => {
            tx.execute(
                "INSERT INTO sync_states (mac, value) VALUES ($1, $2)",
                &[&utf8(k, "sync key")?, &utf8(v, "sync state")?],
            )?;
        }
        "uploads" => {
            let key = utf8(k, "upload key")?;
            let (mac, name) = key.split_once('/').ok_or_else(|| corrupt("upload key"))?;
            let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
            let body: &[u8] = v.get(end + 1..).unwrap_or(&[]);
            tx.execute(
                "INSERT INTO uploads (mac, name, meta, body) VALUES ($1, $2, $3, $4)",
                &[&mac, &name, &utf8(&v[..end], "upload")?, &body],
            )?;
        }
        "provlog" => {
            if k.len() < 8 {
                return Err(corrupt("provlog key"));
            }
            let (mac, id) = k.split_at(k.len() - 8);
            tx.execute(
                "INSERT INTO provlog (mac, id, entry) VALUES ($1, $2, $3)",
                &[
                    &utf8(mac, "provlog key")?,
                    &i64_of(be_u64(id, "provlog id")?),
                    &utf8(v, "provlog entry")?,
                ],
            )?;
        }
        other => return Err(corrupt(format!("a dump names an unknown tree '{other}'"))),
    }
    Ok(())
}

/// Applies the migrations the database lacks, in one transaction, recorded in
/// `schema_version`; servers starting at once take turns on an advisory lock.
fn migrate(c: &mut Client) -> Result<(), StoreError> {
    let mut tx = c.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version    bigint PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )?;
    let current: i64 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])?
        .get(0);
    let latest = MIGRATIONS.last().map(|(v, _)| *v).unwrap_or(0);
    if current > latest {
        return Err(StoreError::TooNew(current as u64));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[version],
        )?;
        tracing::info!(version, "database schema migrated");
    }
    // A list an older version saved whole (or one still running during an upgrade did):
    // into the shared table, and out of meta.
    let old = tx.query_opt("SELECT value FROM meta WHERE key = 'unprovisioned'", &[])?;
    if let Some(row) = old {
        let list: Vec<Unprovisioned> =
            serde_json::from_str(row.get::<_, &str>(0)).unwrap_or_default();
        let macs = list.len();
        add_unprovisioned(&mut tx, &whole_list(list))?;
        tx.execute("DELETE FROM meta WHERE key = 'unprovisioned'", &[])?;
        tracing::info!(
            macs,
            "the unprovisioned list saved whole moved into its shared table"
        );
    }
    tx.commit()?;
    Ok(())
}

/// What other servers wrote since `seq`, read in the transaction of `c` (records with a later
/// `seq`, their change entries for the group numbering, and the latest `seq`).
fn read_since(
    c: &mut impl postgres::GenericClient,
    seq: u64,
    latest: u64,
) -> Result<CatchUp, StoreError> {
    let mut out = CatchUp {
        seq: latest,
        ..Default::default()
    };
    if latest <= seq {
        return Ok(out);
    }
    for row in c.query(
        "SELECT deleted, value FROM records WHERE seq > $1 ORDER BY seq",
        &[&i64_of(seq)],
    )? {
        let deleted: bool = row.get(0);
        let value: &str = row.get(1);
        if deleted {
            out.records
                .push((parse::<RecordKey>("tombstone", value)?, None));
        } else {
            let r: Record = parse("record", value)?;
            out.records.push((r.key(), Some(r)));
        }
    }
    for row in c.query(
        "SELECT entry FROM changes WHERE seq > $1 ORDER BY seq",
        &[&i64_of(seq)],
    )? {
        out.changes.push(parse("change", row.get::<_, &str>(0))?);
    }
    Ok(out)
}

impl Backend for Postgres {
    fn load(&self, sink: RecordSink<'_>) -> Result<Loaded, StoreError> {
        self.pool.with(|c| {
            let mut tx = c
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let seq: i64 = tx
                .query_one("SELECT seq FROM counter WHERE id = 1", &[])?
                .get(0);
            let seq = seq as u64;
            let first: Option<i64> = tx.query_one("SELECT min(seq) FROM changes", &[])?.get(0);
            let rows = tx.query_raw(
                "SELECT key, value FROM records WHERE NOT deleted",
                std::iter::empty::<i64>(),
            )?;
            use postgres::fallible_iterator::FallibleIterator;
            let mut rows = rows;
            super::backend::decode_records(
                std::iter::from_fn(|| rows.next().map_err(StoreError::from).transpose()),
                |row: &postgres::Row| {
                    let key: &str = row.get(0);
                    serde_json::from_str::<Record>(row.get(1))
                        .map_err(|e| corrupt(format!("record {key}: {e}")))
                },
                sink,
            )?;
            drop(rows);
            let group_seqs = tx
                .query("SELECT grp, seq FROM group_seqs", &[])?
                .iter()
                .map(|r| {
                    let g: &str = r.get(0);
                    let n: i64 = r.get(1);
                    GroupId::parse(g)
                        .map(|g| (g, n as u64))
                        .map_err(|e| corrupt(format!("group_seqs: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            // Observations: one that no longer parses is skipped, not fatal.
            let mut checkins = Vec::new();
            each_row(&mut tx, "SELECT mac, value FROM checkins", |r| {
                let mac = Mac::parse(r.get::<_, &str>(0));
                let c = serde_json::from_str::<CheckIn>(r.get::<_, &str>(1));
                if let (Ok(mac), Ok(c)) = (mac, c) {
                    checkins.push((mac, c));
                }
                Ok(())
            })?;
            // This server's view starts as the shared list.
            let unprovisioned = read_unprovisioned(&mut tx)?;
            tx.commit()?;
            Ok(Loaded {
                seq,
                first_seq: first.map(|f| f as u64).unwrap_or(seq + 1),
                group_seqs,
                checkins,
                unprovisioned,
            })
        })
    }

    fn shared(&self) -> bool {
        true
    }

    fn begin_write(&self, seq: u64) -> Result<CatchUp, StoreError> {
        let mut slot = self.write.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = slot.take() {
            // A write that neither committed nor aborted: roll it back.
            let mut c = c;
            let _ = off_workers(|| c.batch_execute("ROLLBACK"));
            self.pool.give(c);
        }
        let mut c = self.pool.take()?;
        let begun = off_workers(|| -> Result<CatchUp, StoreError> {
            c.batch_execute("BEGIN")?;
            let latest: i64 = c
                .query_one("SELECT seq FROM counter WHERE id = 1 FOR UPDATE", &[])?
                .get(0);
            read_since(&mut c, seq, latest as u64)
        });
        match begun {
            Ok(cu) => {
                *slot = Some(c);
                Ok(cu)
            }
            Err(e) => {
                let _ = off_workers(|| c.batch_execute("ROLLBACK"));
                self.pool.give(c);
                Err(e)
            }
        }
    }

    fn abort_write(&self) {
        let c = self.write.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut c) = c {
            if let Err(e) = off_workers(|| c.batch_execute("ROLLBACK")) {
                tracing::warn!(error = %e, "rolling back a write failed");
            }
            self.pool.give(c);
        }
    }

    fn commit(
        &self,
        writes: &[(RecordKey, Option<Record>)],
        change: &Change,
    ) -> Result<(), StoreError> {
        let Some(mut c) = self.write.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Err(StoreError::Engine(
                "commit without begin_write (no write transaction)".into(),
            ));
        };
        let seq = i64_of(change.seq);
        let keys: Vec<String> = writes
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(&k.encode()).into_owned())
            .collect();
        let deleted: Vec<bool> = writes.iter().map(|(_, r)| r.is_none()).collect();
        let values: Vec<String> = writes
            .iter()
            .map(|(k, r)| match r {
                Some(r) => json(r),
                None => json(k),
            })
            .collect();
        let entry = json(change);
        let group = change.group.as_ref().map(|g| g.as_str().to_string());
        // A device written is no longer unprovisioned, on any server; a device deleted takes
        // its provisioning log with it, in the same commit (a log removed later by this
        // server's writer could take the entries of the MAC provisioned again meanwhile,
        // through any server).
        let (mut devices, mut deleted_devices): (Vec<&str>, Vec<&str>) = (Vec::new(), Vec::new());
        for (k, r) in writes {
            if let RecordKey::Device(m) = k {
                match r {
                    Some(_) => devices.push(m.as_str()),
                    None => deleted_devices.push(m.as_str()),
                }
            }
        }
        let done = off_workers(|| -> Result<(), StoreError> {
            c.execute(
                "INSERT INTO records (key, seq, deleted, value)
                 SELECT k, $1, d, v FROM unnest($2::text[], $3::bool[], $4::text[]) AS w(k, d, v)
                 ON CONFLICT (key) DO UPDATE
                 SET seq = excluded.seq, deleted = excluded.deleted, value = excluded.value",
                &[&seq, &keys, &deleted, &values],
            )?;
            c.execute(
                "INSERT INTO changes (seq, grp, entry) VALUES ($1, $2, $3)",
                &[&seq, &group, &entry],
            )?;
            c.execute("UPDATE counter SET seq = $1 WHERE id = 1", &[&seq])?;
            if let (Some(g), Some(n)) = (&group, change.group_seq) {
                c.execute(
                    "INSERT INTO group_seqs (grp, seq) VALUES ($1, $2)
                     ON CONFLICT (grp) DO UPDATE SET seq = excluded.seq",
                    &[g, &i64_of(n)],
                )?;
            }
            if !devices.is_empty() {
                // Serialised with the servers' saves of the list: one that runs after this
                // commit sees the device and does not add its MAC again.
                c.execute("SELECT pg_advisory_xact_lock($1)", &[&UNPROVISIONED_LOCK])?;
                c.execute("DELETE FROM unprovisioned WHERE mac = ANY($1)", &[&devices])?;
            }
            if !deleted_devices.is_empty() {
                c.execute(
                    "DELETE FROM provlog WHERE mac = ANY($1)",
                    &[&deleted_devices],
                )?;
            }
            c.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &seq.to_string()])?;
            c.batch_execute("COMMIT")?;
            Ok(())
        });
        if done.is_err() {
            let _ = off_workers(|| c.batch_execute("ROLLBACK"));
        }
        self.pool.give(c);
        done
    }

    fn rewrite(&self, records: &[Record]) -> Result<(), StoreError> {
        let keys: Vec<String> = records
            .iter()
            .map(|r| String::from_utf8_lossy(&r.key().encode()).into_owned())
            .collect();
        let values: Vec<String> = records.iter().map(json).collect();
        self.pool.with(|c| {
            // A record that is not stored yet (a migration's) is written with seq 0: it was
            // there before any change other servers could be behind on.
            c.execute(
                "INSERT INTO records (key, seq, deleted, value)
                 SELECT k, 0, false, v FROM unnest($1::text[], $2::text[]) AS w(k, v)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&keys, &values],
            )?;
            Ok(())
        })
    }

    fn changes(
        &self,
        since: u64,
        limit: usize,
        group: Option<&GroupId>,
    ) -> Result<Vec<Change>, StoreError> {
        let limit = limit.min(i64::MAX as usize) as i64;
        self.pool.with(|c| {
            let rows = match group {
                None => c.query(
                    "SELECT entry FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2",
                    &[&i64_of(since), &limit],
                )?,
                Some(g) => c.query(
                    "SELECT entry FROM changes WHERE grp = $3 AND seq > $1 ORDER BY seq LIMIT $2",
                    &[&i64_of(since), &limit, &g.as_str()],
                )?,
            };
            rows.iter()
                .map(|r| parse("change", r.get::<_, &str>(0)))
                .collect()
        })
    }

    fn compact(&self, from: u64, to: u64) -> Result<(), StoreError> {
        self.pool.with(|c| {
            c.execute(
                "DELETE FROM changes WHERE seq >= $1 AND seq < $2",
                &[&i64_of(from), &i64_of(to)],
            )?;
            // Tombstones older than the log kept: a server that far behind restarts anyway.
            c.execute(
                "DELETE FROM records WHERE deleted AND seq < $1",
                &[&i64_of(to)],
            )?;
            Ok(())
        })
    }

    fn observe(&self, o: &Observations, durable: bool) -> Result<(), StoreError> {
        self.pool.with(|c| {
            let mut tx = c.transaction()?;
            if !durable {
                tx.batch_execute("SET LOCAL synchronous_commit = off")?;
            }
            if !o.checkins.is_empty() {
                let macs: Vec<&str> = o.checkins.iter().map(|(m, _)| m.as_str()).collect();
                let values: Vec<String> = o.checkins.iter().map(|(_, c)| json(c)).collect();
                tx.execute(
                    "INSERT INTO checkins (mac, value)
                     SELECT m, v FROM unnest($1::text[], $2::text[]) AS w(m, v)
                     ON CONFLICT (mac) DO UPDATE
                     SET value = excluded.value, ord = nextval('checkin_ord'), written = now()",
                    &[&macs, &values],
                )?;
            }
            match o.upload_quota {
                Some(quota) if !o.uploads.is_empty() => {
                    store_uploads_within(&mut tx, &o.uploads, quota)?
                }
                _ => {
                    for (mac, meta, body) in &o.uploads {
                        tx.execute(
                            "INSERT INTO uploads (mac, name, meta, body) VALUES ($1, $2, $3, $4)
                             ON CONFLICT (mac, name) DO UPDATE SET meta = excluded.meta, body = excluded.body",
                            &[&mac.as_str(), &meta.name, &json(meta), &body.as_ref()],
                        )?;
                    }
                }
            }
            for (mac, name) in &o.upload_removals {
                tx.execute(
                    "DELETE FROM uploads WHERE mac = $1 AND name = $2",
                    &[&mac.as_str(), name],
                )?;
            }
            for (mac, st) in &o.sync_states {
                match st {
                    Some(st) => tx.execute(SAVE_SYNC_STATE, &[&mac.as_str(), &json(st)])?,
                    None => tx.execute("DELETE FROM sync_states WHERE mac = $1", &[&mac.as_str()])?,
                };
            }
            if !o.sync_states.is_empty() {
                // The servers that do not dispatch show these states: wake their follow step
                // now rather than at its next poll.
                tx.execute("SELECT pg_notify($1, 'sync')", &[&CHANNEL])?;
            }
            if let Some(cursor) = o.sync_cursor {
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES ('sync_cursor', $1)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    &[&cursor.to_string()],
                )?;
            }
            // (`o.unprovisioned`, a whole list, is for an engine of one server: the store
            // gives a shared engine sightings.)
            if !o.unprovisioned_seen.is_empty() {
                add_unprovisioned(&mut tx, &o.unprovisioned_seen)?;
            }
            if !o.log_entries.is_empty() {
                let macs: Vec<&str> = o.log_entries.iter().map(|(m, _)| m.as_str()).collect();
                let ids: Vec<i64> = o.log_entries.iter().map(|(_, e)| i64_of(e.id)).collect();
                let entries: Vec<String> = o.log_entries.iter().map(|(_, e)| json(e)).collect();
                tx.execute(
                    "INSERT INTO provlog (mac, id, entry)
                     SELECT m, i, e FROM unnest($1::text[], $2::bigint[], $3::text[]) AS w(m, i, e)
                     ON CONFLICT (mac, id) DO UPDATE SET entry = excluded.entry",
                    &[&macs, &ids, &entries],
                )?;
            }
            for (mac, id) in &o.log_removals {
                tx.execute(
                    "DELETE FROM provlog WHERE mac = $1 AND id = $2",
                    &[&mac.as_str(), &i64_of(*id)],
                )?;
            }
            if let (Some(max), false) = (o.log_max, o.log_entries.is_empty()) {
                let mut macs: Vec<&str> = o.log_entries.iter().map(|(m, _)| m.as_str()).collect();
                macs.sort_unstable();
                macs.dedup();
                // Each device's entries beyond its newest `max` (by id, the time written),
                // whichever server wrote them.
                tx.execute(
                    "DELETE FROM provlog p USING (
                         SELECT mac, id FROM (
                             SELECT mac, id, row_number() OVER (PARTITION BY mac ORDER BY id DESC) AS n
                             FROM provlog WHERE mac = ANY($1)
                         ) ranked WHERE n > $2
                     ) over WHERE p.mac = over.mac AND p.id = over.id",
                    &[&macs, &i64::try_from(max).unwrap_or(i64::MAX)],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn sync_load(&self) -> Result<(u64, Vec<(Mac, SyncState)>), StoreError> {
        self.pool.with(|c| {
            let mut tx = c
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let cursor = match tx
                .query("SELECT value FROM meta WHERE key = 'sync_cursor'", &[])?
                .first()
            {
                Some(r) => r
                    .get::<_, &str>(0)
                    .parse()
                    .map_err(|_| corrupt("sync_cursor"))?,
                None => 0,
            };
            let mut out = Vec::new();
            each_row(&mut tx, "SELECT mac, value FROM sync_states", |r| {
                let mac = Mac::parse(r.get::<_, &str>(0)).map_err(|_| corrupt("sync key"))?;
                out.push((mac, parse("sync", r.get::<_, &str>(1))?));
                Ok(())
            })?;
            tx.commit()?;
            Ok((cursor, out))
        })
    }

    fn unprovisioned(&self) -> Result<Vec<Unprovisioned>, StoreError> {
        self.pool.with(read_unprovisioned)
    }

    fn uploads_of(&self, mac: &Mac) -> Result<Vec<UploadMeta>, StoreError> {
        self.pool.with(|c| {
            c.query(
                "SELECT meta FROM uploads WHERE mac = $1 ORDER BY name",
                &[&mac.as_str()],
            )?
            .iter()
            .map(|r| parse("upload", r.get::<_, &str>(0)))
            .collect()
        })
    }

    fn log_of(
        &self,
        mac: &Mac,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ProvLogEntry>, StoreError> {
        let before = i64_of(before.unwrap_or(u64::MAX));
        let limit = limit.min(i64::MAX as usize) as i64;
        self.pool.with(|c| {
            Ok(c.query(
                "SELECT entry FROM provlog WHERE mac = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
                &[&mac.as_str(), &before, &limit],
            )?
            .iter()
            .filter_map(|r| serde_json::from_str(r.get::<_, &str>(0)).ok())
            .collect())
        })
    }

    fn log_oldest(&self, mac: &Mac, n: usize) -> Result<Vec<u64>, StoreError> {
        let n = n.min(i64::MAX as usize) as i64;
        self.pool.with(|c| {
            Ok(c.query(
                "SELECT id FROM provlog WHERE mac = $1 ORDER BY id LIMIT $2",
                &[&mac.as_str(), &n],
            )?
            .iter()
            .map(|r| r.get::<_, i64>(0) as u64)
            .collect())
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        // Every transaction that had to be durable was committed with synchronous_commit on.
        Ok(())
    }

    fn dump(&self) -> Result<Vec<DumpEntry>, StoreError> {
        self.pool.with(|c| {
            let mut tx = c
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let mut out: Vec<DumpEntry> = Vec::new();
            let entry = |t: &str, k: Vec<u8>, v: Vec<u8>| (t.to_string(), k, v);
            out.push(entry(
                "meta",
                b"format".to_vec(),
                super::FORMAT_VERSION.to_be_bytes().to_vec(),
            ));
            let seq: i64 = tx
                .query_one("SELECT seq FROM counter WHERE id = 1", &[])?
                .get(0);
            out.push(entry(
                "meta",
                b"seq".to_vec(),
                (seq as u64).to_be_bytes().to_vec(),
            ));
            for r in tx.query("SELECT grp, seq FROM group_seqs", &[])? {
                let g: &str = r.get(0);
                out.push(entry(
                    "meta",
                    format!("group_seq/{g}").into_bytes(),
                    (r.get::<_, i64>(1) as u64).to_be_bytes().to_vec(),
                ));
            }
            for r in tx.query("SELECT value FROM meta WHERE key = 'sync_cursor'", &[])? {
                let n: u64 = r
                    .get::<_, &str>(0)
                    .parse()
                    .map_err(|_| corrupt("sync_cursor"))?;
                out.push(entry(
                    "meta",
                    b"sync_cursor".to_vec(),
                    n.to_be_bytes().to_vec(),
                ));
            }
            // The shared list, as the embedded engine saves it (a whole list in meta).
            let list = read_unprovisioned(&mut tx)?;
            if !list.is_empty() {
                out.push(entry(
                    "meta",
                    b"unprovisioned".to_vec(),
                    json(&list).into_bytes(),
                ));
            }
            for r in tx.query("SELECT key, value FROM records WHERE NOT deleted", &[])? {
                let (k, v): (&str, &str) = (r.get(0), r.get(1));
                out.push(entry("data", k.into(), v.into()));
            }
            for r in tx.query("SELECT seq, entry FROM changes ORDER BY seq", &[])? {
                let (s, v): (i64, &str) = (r.get(0), r.get(1));
                out.push(entry(
                    "changes",
                    (s as u64).to_be_bytes().to_vec(),
                    v.into(),
                ));
            }
            for r in tx.query("SELECT mac, value FROM checkins", &[])? {
                let (k, v): (&str, &str) = (r.get(0), r.get(1));
                out.push(entry("checkins", k.into(), v.into()));
            }
            for r in tx.query("SELECT mac, value FROM sync_states", &[])? {
                let (k, v): (&str, &str) = (r.get(0), r.get(1));
                out.push(entry("sync", k.into(), v.into()));
            }
            for r in tx.query("SELECT mac, name, meta, body FROM uploads", &[])? {
                let (m, n, meta, body): (&str, &str, &str, &[u8]) =
                    (r.get(0), r.get(1), r.get(2), r.get(3));
                let mut v = meta.as_bytes().to_vec();
                v.push(0);
                v.extend_from_slice(body);
                out.push(entry("uploads", format!("{m}/{n}").into_bytes(), v));
            }
            for r in tx.query("SELECT mac, id, entry FROM provlog", &[])? {
                let (m, id, e): (&str, i64, &str) = (r.get(0), r.get(1), r.get(2));
                let mut k = m.as_bytes().to_vec();
                k.extend_from_slice(&(id as u64).to_be_bytes());
                out.push(entry("provlog", k, e.into()));
            }
            tx.commit()?;
            Ok(out)
        })
    }

    fn catch_up(&self, seq: u64) -> Result<CatchUp, StoreError> {
        self.pool.with(|c| {
            let mut tx = c
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let latest: i64 = tx
                .query_one("SELECT seq FROM counter WHERE id = 1", &[])?
                .get(0);
            let out = read_since(&mut tx, seq, latest as u64)?;
            tx.commit()?;
            Ok(out)
        })
    }

    fn checkins_since(
        &self,
        cursor: u64,
        lookback: bool,
    ) -> Result<(u64, Vec<(Mac, CheckIn)>), StoreError> {
        let (last, rows) = self
            .pool
            .with(|c| written_since(c, Written::Checkins, cursor, lookback))?;
        let out = rows
            .into_iter()
            .filter_map(|(mac, _, v)| Some((mac, serde_json::from_str::<CheckIn>(&v).ok()?)))
            .collect();
        Ok((last, out))
    }

    fn sync_states_since(
        &self,
        cursor: u64,
        lookback: bool,
    ) -> Result<(u64, Vec<FollowedState>), StoreError> {
        let (last, rows) = self
            .pool
            .with(|c| written_since(c, Written::SyncStates, cursor, lookback))?;
        let out = rows
            .into_iter()
            .filter_map(|(mac, ord, v)| Some((mac, ord, serde_json::from_str(&v).ok()?)))
            .collect();
        Ok((last, out))
    }

    fn request_sync(&self, requests: &[SyncRequest]) -> Result<(), StoreError> {
        let macs: Vec<&str> = requests.iter().map(|r| r.mac.as_str()).collect();
        let revisions: Vec<i64> = requests.iter().map(|r| i64_of(r.revision)).collect();
        let reboots: Vec<bool> = requests.iter().map(|r| r.reboot).collect();
        self.pool.with(|c| {
            let mut tx = c.transaction()?;
            // In the order given (ids from the sequence, row by row).
            tx.execute(
                "INSERT INTO sync_requests (mac, revision, reboot)
                 SELECT m, r, b FROM unnest($1::text[], $2::bigint[], $3::bool[])
                     WITH ORDINALITY AS w(m, r, b, n)
                 ORDER BY n",
                &[&macs, &revisions, &reboots],
            )?;
            // Wakes every server's follower, the dispatcher's among them.
            tx.execute("SELECT pg_notify($1, 'sync')", &[&CHANNEL])?;
            tx.commit()?;
            Ok(())
        })
    }

    fn sync_requests_queued(&self) -> Result<bool, StoreError> {
        self.pool.with(|c| {
            Ok(
                c.query_one("SELECT EXISTS (SELECT 1 FROM sync_requests)", &[])?
                    .get(0),
            )
        })
    }

    fn take_sync_requests(
        &self,
        apply: &mut dyn FnMut(Vec<SyncRequest>) -> Vec<(Mac, SyncState)>,
    ) -> Result<Vec<(Mac, SyncState)>, StoreError> {
        self.pool.with(|c| {
            let mut tx = c.transaction()?;
            let mut rows: Vec<(i64, SyncRequest)> = Vec::new();
            for r in tx.query(
                "DELETE FROM sync_requests RETURNING id, mac, revision, reboot",
                &[],
            )? {
                let Ok(mac) = Mac::parse(r.get::<_, &str>(1)) else {
                    continue;
                };
                rows.push((
                    r.get(0),
                    SyncRequest {
                        mac,
                        revision: r.get::<_, i64>(2).max(0) as u64,
                        reboot: r.get(3),
                    },
                ));
            }
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            rows.sort_by_key(|(id, _)| *id);
            let states = apply(rows.into_iter().map(|(_, r)| r).collect());
            for (mac, st) in &states {
                tx.execute(SAVE_SYNC_STATE, &[&mac.as_str(), &json(st)])?;
            }
            tx.commit()?;
            Ok(states)
        })
    }

    fn wait_for_change(&self, timeout: Duration) -> bool {
        off_workers(|| self.follow.wait(&self.pool, timeout))
    }

    fn try_lead(&self) -> Result<bool, StoreError> {
        off_workers(|| self.follow.try_lead(&self.pool))
    }
}
