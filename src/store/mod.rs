//! The durable store: the domain state in memory, made durable by a [`Backend`].
//!
//! One write path: [`Store::commit`] runs a domain rule inside a [`Tx`] on the writer's copy of
//! the state, under the write lock; the backend persists exactly the records the rule touched,
//! the change-log entry and the `seq` counter atomically and durably; only then is a new
//! immutable [`Snapshot`] published. Any error rolls the writer's copy back. Writes are
//! serialised (gapless `seq`, rules across entities) while readers — phone fetches, previews,
//! the dispatcher, admin reads — take the current snapshot with one atomic load and never wait
//! for a writer or for the disk.
//!
//! - [`backend`]: the trait a storage engine implements; [`embedded`]: the sled engine.
//! - [`records`]: change-log entries, check-ins, sync work, uploads.
//! - [`observations`]: phone observations and sync work, batched by one writer thread.
//! - `ops`: the domain operations (one rule each).

pub(crate) mod backend;
mod change_entry;
pub(crate) mod embedded;
mod observations;
mod ops;
mod postgres;
pub(crate) mod records;
mod seal;
mod transfer;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use axum::body::Bytes;

pub(crate) use backend::{Backend, FollowedState, SyncRequest};
pub(crate) use observations::ObservationLimits;
pub(crate) use records::*;
pub(crate) use transfer::restore_dump;
pub use transfer::ImportOutcome;

use crate::catalog::RulesEnv;
use crate::domain::state::{Record, RecordKey, State, Tx};
use crate::domain::*;

/// A log filter directive that keeps the storage engine to warnings: at debug and trace it
/// prints records (passwords included) as bytes, whatever the rest of the filter allows.
pub const ENGINE_LOG_DIRECTIVE: &str = embedded::LOG_DIRECTIVE;

/// The same for the PostgreSQL driver, which logs statements with their parameters (sealed
/// passwords, token hashes) at debug, and the server's notices at info.
pub const ENGINE_LOG_DIRECTIVES: &[&str] = &[
    embedded::LOG_DIRECTIVE,
    "tokio_postgres=warn",
    "postgres=warn",
];

/// The on-disk format this build reads and writes.
pub(crate) const FORMAT_VERSION: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Rule(#[from] DomainError),
    #[error("storage: {0}")]
    Engine(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the data directory was written by a newer deskprov (format {0}; this build reads {FORMAT_VERSION})")]
    TooNew(u64),
}

/// Options of [`Store::open`].
#[derive(Clone, Debug)]
pub(crate) struct StoreOptions {
    /// The embedded engine's page cache.
    pub(crate) cache_bytes: u64,
    pub(crate) changes_keep: u64,
    pub(crate) max_sca_per_user: usize,
    /// Upload quotas and the unprovisioned list's admission rate.
    pub(crate) limits: ObservationLimits,
}

/// The state as of one committed `seq`: immutable, shared by every reader that took it.
#[derive(Debug)]
pub struct Snapshot {
    state: State,
    seq: u64,
    /// Every group's last `group_seq` as of `seq`.
    group_seqs: Arc<BTreeMap<GroupId, u64>>,
}

impl Snapshot {
    /// The last change-log seq this snapshot includes.
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// The group's last `group_seq` this snapshot includes (0 before its first change).
    pub(crate) fn group_seq(&self, g: &GroupId) -> u64 {
        self.group_seqs.get(g).copied().unwrap_or(0)
    }
}

impl std::ops::Deref for Snapshot {
    type Target = State;
    fn deref(&self) -> &State {
        &self.state
    }
}

/// Opens the sealed passwords of `r` in place. Returns `r` sealed when it held a password in
/// the clear (stored before sealing existed), for the backend to rewrite.
fn open_passwords(sealer: &seal::Sealer, r: &mut Record) -> Result<Option<Record>, StoreError> {
    let mut was_plain = false;
    for p in r.passwords_mut() {
        let (open, sealed) = sealer.open_value(p.expose())?;
        was_plain |= !sealed;
        *p = Secret::new(open);
    }
    Ok(was_plain.then(|| seal_record(sealer, r)))
}

/// A copy of `r` whose passwords are sealed, as backends store them.
fn seal_record(sealer: &seal::Sealer, r: &Record) -> Record {
    let mut r = r.clone();
    for p in r.passwords_mut() {
        *p = Secret::new(sealer.seal(p.expose()));
    }
    r
}

/// The writer's own copy of the state; only [`Store::commit`] touches it.
struct Writer {
    state: State,
    seq: u64,
    group_seqs: Arc<BTreeMap<GroupId, u64>>,
}

pub struct Store {
    backend: Arc<dyn Backend>,
    writer: Mutex<Writer>,
    snapshot: ArcSwap<Snapshot>,
    /// Oldest seq still in the change log.
    first_seq: AtomicU64,
    observer: observations::Observer,
    env: RulesEnv,
    changes_keep: u64,
    /// Bumped after every commit with the new seq; the sync dispatcher waits on it.
    committed: tokio::sync::watch::Sender<u64>,
    sealer: Arc<seal::Sealer>,
    /// When a password was last replaced or deleted, if no key roll has followed yet.
    roll_due: Mutex<Option<std::time::Instant>>,
    /// Durable commit latency and the phones' durable check-in wait (registered by `App`'s
    /// metrics).
    metrics: crate::metrics::StoreMetrics,
    /// Other servers write to the same engine: the store follows them, and the key is never
    /// rolled (every server has a copy of the key file).
    shared: bool,
    /// How far the check-ins written by other servers have been read.
    checkin_cursor: AtomicU64,
    /// How far the sync states saved by the dispatcher have been read.
    sync_state_cursor: AtomicU64,
    /// When check-ins and sync states were last read with the look-back.
    looked_back: Mutex<Option<std::time::Instant>>,
}

/// One kind of stored entry, compared across the two engines ([`Store::compare_engines`]).
#[derive(Debug)]
pub(crate) struct EngineComparison {
    /// The embedded engine's tree: `data` (records), `changes`, `meta`, `checkins`, `sync`,
    /// `uploads`, `provlog`; and `unprovisioned`, the list (a `meta` entry of the embedded
    /// engine, a table of PostgreSQL) compared MAC by MAC.
    pub(crate) what: &'static str,
    pub(crate) embedded: usize,
    pub(crate) postgres: usize,
    pub(crate) differing: usize,
}

/// What [`Store::follow`] took in from other servers.
#[derive(Debug, Default)]
pub(crate) struct Followed {
    /// The seq now served (unchanged when nothing came).
    pub(crate) seq: u64,
    /// Whether a followed change touched template overrides (the renderer reloads them).
    pub(crate) templates: bool,
    /// Sync states saved since the last follow (by the dispatcher, wherever it runs), with
    /// the order they were written in.
    pub(crate) sync_states: Vec<FollowedState>,
}

/// How often following reads recent check-ins and sync states again (see
/// [`Store::follow`]).
const LOOKBACK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a key roll waits after the last replaced password (a burst of rotations gives
/// one roll).
const ROLL_QUIET: std::time::Duration = std::time::Duration::from_secs(2);

/// The current time, RFC 3339 (UTC).
pub(crate) fn now_rfc3339() -> String {
    now()
}

/// The current time, RFC 3339 (UTC), as `time` formats it: the date and time of day are
/// formatted once a second per thread, the fraction per call (every fetch stamps its check-in
/// and its provisioning log entry).
pub(crate) fn now() -> String {
    rfc3339_of(std::time::SystemTime::now())
}

pub(crate) fn rfc3339_of(t: std::time::SystemTime) -> String {
    use std::cell::RefCell;
    use std::fmt::Write as _;
    thread_local! {
        /// A second since the epoch, and its text up to the seconds (no zone).
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let (secs, nanos) = (since.as_secs(), since.subsec_nanos());
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs {
            let mut text = time::OffsetDateTime::from_unix_timestamp(secs as i64)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_default();
            text.pop(); // the "Z"
            *cached = (secs, text);
        }
        let mut out = String::with_capacity(cached.1.len() + 11);
        out.push_str(&cached.1);
        if nanos != 0 {
            let _ = write!(out, ".{nanos:09}");
            while out.ends_with('0') {
                out.pop();
            }
        }
        out.push('Z');
        out
    })
}

impl Store {
    /// The store's histograms (registered by `App`'s metrics).
    pub(crate) fn metrics(&self) -> &crate::metrics::StoreMetrics {
        &self.metrics
    }

    /// Opens (or creates) the embedded store in `dir` and loads it into memory; passwords are
    /// sealed with the key in `<dir>.key` (created on first open).
    pub(crate) fn open(
        dir: &Path,
        catalog: Arc<crate::catalog::Catalog>,
        opts: StoreOptions,
    ) -> Result<Store, StoreError> {
        Store::open_with_key(dir, &dir.with_extension("key"), catalog, opts)
    }

    /// [`Store::open`] with the sealing key in `key_file`.
    pub(crate) fn open_with_key(
        dir: &Path,
        key_file: &Path,
        catalog: Arc<crate::catalog::Catalog>,
        opts: StoreOptions,
    ) -> Result<Store, StoreError> {
        let engine = embedded::Embedded::open(dir, opts.cache_bytes)?;
        let sealer = seal::Sealer::open(key_file)?;
        Store::with_backend(Arc::new(engine), sealer, catalog, opts)
    }

    /// Opens the store in the PostgreSQL database at `url` (TLS verified against the PEM CA
    /// file `ca`, when given), applying schema migrations, and loads it into memory. Passwords
    /// are sealed with the key in `key_file` (created when missing), which must be the same
    /// file on every server: the database remembers a value sealed with the first server's
    /// key and refuses a server whose key does not open it.
    pub(crate) fn open_postgres(
        url: &str,
        ca: &str,
        key_file: &Path,
        catalog: Arc<crate::catalog::Catalog>,
        opts: StoreOptions,
    ) -> Result<Store, StoreError> {
        let engine = postgres::Postgres::open(url, ca)?;
        let sealer = seal::Sealer::open(key_file)?;
        engine.key_check(
            &sealer.seal(postgres::Postgres::KEY_CHECK_PLAIN),
            |stored| {
                sealer
                    .open_value(stored)
                    .is_ok_and(|(p, _)| p == postgres::Postgres::KEY_CHECK_PLAIN)
            },
        )?;
        Store::with_backend(Arc::new(engine), sealer, catalog, opts)
    }

    /// Copies the embedded store in `dir` into the empty PostgreSQL database at `url`.
    pub(crate) fn copy_to_postgres(dir: &Path, url: &str, ca: &str) -> Result<(), StoreError> {
        let from = embedded::Embedded::open(dir, 8 << 20)?;
        let to = postgres::Postgres::open(url, ca)?;
        to.restore(&from.dump()?)
    }

    /// Copies the PostgreSQL store at `url` into a new embedded store in `dir`.
    pub(crate) fn copy_from_postgres(url: &str, ca: &str, dir: &Path) -> Result<(), StoreError> {
        let from = postgres::Postgres::open(url, ca)?;
        embedded::Embedded::restore(dir, &from.dump()?)
    }

    /// Compares everything stored in the embedded store in `dir` with the PostgreSQL store at
    /// `url`, entry by entry in the embedded engine's encoding: per kind of entry, how many
    /// each holds and how many differ (missing on either side, or other bytes).
    pub(crate) fn compare_engines(
        dir: &Path,
        url: &str,
        ca: &str,
    ) -> Result<Vec<EngineComparison>, StoreError> {
        let embedded = embedded::Embedded::open(dir, 8 << 20)?.dump()?;
        let pg = postgres::Postgres::open(url, ca)?.dump()?;
        let index = |d: Vec<backend::DumpEntry>| {
            let mut m: BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>> = BTreeMap::new();
            for (t, k, v) in d {
                if t == "meta" && k == b"unprovisioned" {
                    // One entry per MAC (a list that does not parse counts as empty, as a
                    // load reads it).
                    let list: Vec<serde_json::Value> =
                        serde_json::from_slice(&v).unwrap_or_default();
                    let tree = m.entry("unprovisioned".into()).or_default();
                    for u in list {
                        let mac = u["mac"].as_str().unwrap_or_default().as_bytes().to_vec();
                        tree.insert(mac, serde_json::to_vec(&u).unwrap_or_default());
                    }
                    continue;
                }
                m.entry(t).or_default().insert(k, v);
            }
            m
        };
        let (a, b) = (index(embedded), index(pg));
        let empty = BTreeMap::new();
        let mut out = Vec::new();
        for tree in [
            "data",
            "changes",
            "meta",
            "checkins",
            "sync",
            "uploads",
            "provlog",
            "unprovisioned",
        ] {
            let (x, y) = (a.get(tree).unwrap_or(&empty), b.get(tree).unwrap_or(&empty));
            let differing = x.iter().filter(|(k, v)| y.get(*k) != Some(*v)).count()
                + y.keys().filter(|k| !x.contains_key(*k)).count();
            out.push(EngineComparison {
                what: tree,
                embedded: x.len(),
                postgres: y.len(),
                differing,
            });
        }
        Ok(out)
    }

    /// Loads the state from `backend` and serves from it.
    fn with_backend(
        backend: Arc<dyn Backend>,
        sealer: seal::Sealer,
        catalog: Arc<crate::catalog::Catalog>,
        opts: StoreOptions,
    ) -> Result<Store, StoreError> {
        let sealer = Arc::new(sealer);
        let backend_shared = backend.shared();
        // The state is built as the records stream in, their passwords opened as decoded.
        // Passwords stored before sealing existed are sealed now, in place.
        let plain = Mutex::new(Vec::new());
        let prepare = |r: &mut Record| {
            if let Some(sealed) = open_passwords(&sealer, r)? {
                plain.lock().unwrap_or_else(|p| p.into_inner()).push(sealed);
            }
            Ok(())
        };
        let mut loader = crate::domain::state::Loader::default();
        let mut loaded = backend.load(backend::RecordSink {
            prepare: &prepare,
            take: &mut |r| loader.add(r),
        })?;
        let state = loader.finish();
        // A MAC that is a device is not unprovisioned (its list was last saved before the
        // device was created, say).
        loaded
            .unprovisioned
            .retain(|u| !state.devices.contains_key(&u.mac));
        let plain = plain.into_inner().unwrap_or_else(|p| p.into_inner());
        if !plain.is_empty() {
            backend.rewrite(&plain)?;
            tracing::info!(
                records = plain.len(),
                "sealed passwords stored in the clear"
            );
        }
        for (_, c) in &mut loaded.checkins {
            if let Some(id) = &mut c.applied_identity {
                id.password = Secret::new(sealer.open_value(id.password.expose())?.0);
            }
        }
        let (committed, _) = tokio::sync::watch::channel(loaded.seq);
        let group_seqs = Arc::new(loaded.group_seqs.into_iter().collect());
        let store = Store {
            observer: observations::Observer::start(
                backend.clone(),
                sealer.clone(),
                loaded.checkins,
                loaded.unprovisioned,
                opts.limits,
            ),
            backend,
            snapshot: ArcSwap::from_pointee(Snapshot {
                state: state.clone(),
                seq: loaded.seq,
                group_seqs: Arc::clone(&group_seqs),
            }),
            writer: Mutex::new(Writer {
                state,
                seq: loaded.seq,
                group_seqs,
            }),
            first_seq: AtomicU64::new(loaded.first_seq),
            env: RulesEnv {
                catalog,
                max_sca_per_user: opts.max_sca_per_user,
            },
            changes_keep: opts.changes_keep,
            committed,
            roll_due: Mutex::new(None),
            metrics: crate::metrics::StoreMetrics::default(),
            shared: backend_shared,
            checkin_cursor: AtomicU64::new(0),
            sync_state_cursor: AtomicU64::new(0),
            looked_back: Mutex::new(None),
            sealer,
        };
        if store.sealer.rolling() {
            // A key roll was interrupted: finish it before serving.
            store.roll_keys()?;
        }
        Ok(store)
    }

    /// The current snapshot: one atomic load, never waits for a writer.
    pub fn read(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The last committed seq.
    pub(crate) fn last_seq(&self) -> u64 {
        self.snapshot.load().seq
    }

    /// The oldest seq still kept in the change log.
    pub(crate) fn first_seq(&self) -> u64 {
        self.first_seq.load(Ordering::Acquire)
    }

    /// A receiver that sees the seq of every commit.
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.committed.subscribe()
    }

    pub(crate) fn catalog(&self) -> &crate::catalog::Catalog {
        &self.env.catalog
    }

    /// Runs `rule` in a transaction on the writer's state; on success persists its writes with
    /// the change entry (durably), publishes the new snapshot, and returns the rule's value and
    /// the entry. Readers keep the previous snapshot until then.
    fn commit<R>(
        &self,
        actor: &str,
        rule: impl FnOnce(&mut Tx, &dyn Env) -> Result<(Effect, R), DomainError>,
    ) -> Result<(R, Change), StoreError> {
        let mut guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let w = &mut *guard;
        // Take the write turn; what other servers committed meanwhile is applied first, so the
        // rule sees every platform-wide fact (line ports, licences, slots) as of now.
        let caught_up = self.backend.begin_write(w.seq)?;
        let followed = match self.apply_catch_up(w, caught_up) {
            Ok(f) => f,
            Err(e) => {
                self.backend.abort_write();
                return Err(e);
            }
        };
        if followed.seq > 0 {
            self.committed.send_replace(followed.seq);
        }
        let seq = w.seq + 1;
        let mut tx = Tx::new(&mut w.state);
        let (fx, value) = match rule(&mut tx, &self.env) {
            Ok(x) => x,
            Err(e) => {
                tx.rollback();
                self.backend.abort_write();
                return Err(e.into());
            }
        };
        for mac in &fx.devices {
            if let Some(d) = tx.state().devices.get(mac) {
                let mut d = d.clone();
                d.revision = seq;
                tx.put(Record::Device(d));
            }
        }
        let group_seq = fx
            .group
            .as_ref()
            .map(|g| w.group_seqs.get(g).copied().unwrap_or(0) + 1);
        let change = Change {
            seq,
            group_seq,
            at: now(),
            actor: actor.to_string(),
            action: fx.action,
            kind: fx.kind,
            group: fx.group,
            subject: fx.subject,
            keys_only: fx
                .keys_only
                .into_iter()
                .filter(|m| fx.devices.contains(m))
                .collect(),
            devices: fx.devices.into_iter().collect(),
            detail: fx.detail,
        };
        let writes: Vec<_> = tx
            .writes()
            .into_iter()
            .map(|(k, r)| (k, r.map(|r| seal_record(&self.sealer, &r))))
            .collect();
        // A device written is no longer unprovisioned: a shared engine takes it off its list in
        // this commit, this server's own list once it is committed.
        let devices: Vec<Mac> = writes
            .iter()
            .filter_map(|(k, r)| match (k, r) {
                (RecordKey::Device(m), Some(_)) => Some(m.clone()),
                _ => None,
            })
            .collect();
        let started = std::time::Instant::now();
        let committed = self.backend.commit(&writes, &change);
        self.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = committed {
            tx.rollback();
            self.backend.abort_write();
            return Err(e);
        }
        if tx.dropped_a_password() && !self.shared {
            *self.roll_due.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(std::time::Instant::now());
        }
        self.observer.unprovisioned_forget(&devices);
        w.seq = seq;
        if let (Some(g), Some(n)) = (&change.group, group_seq) {
            Arc::make_mut(&mut w.group_seqs).insert(g.clone(), n);
        }
        self.snapshot.store(Arc::new(Snapshot {
            state: w.state.clone(),
            seq,
            group_seqs: Arc::clone(&w.group_seqs),
        }));
        self.compact(seq);
        // A deleted device's provisioning log goes with it: the MAC provisioned again (in
        // another group, say) starts a log of its own, and deletions keep the logs bounded.
        for mac in change.devices.iter() {
            if !w.state.devices.contains_key(mac) {
                if self.shared {
                    // The commit removed the log; the writer forgets what it knew of it.
                    self.observer.log_reset(mac);
                } else {
                    self.observer.log_forget(mac);
                }
            }
        }
        drop(guard);
        self.committed.send_replace(seq);
        Ok((value, change))
    }

    /// Applies what other servers committed (`cu`) to the writer's state and publishes it;
    /// `seq` of the result is 0 when nothing came. Called under the write lock.
    fn apply_catch_up(&self, w: &mut Writer, cu: backend::CatchUp) -> Result<Followed, StoreError> {
        if cu.seq <= w.seq {
            return Ok(Followed::default());
        }
        let mut opened = Vec::with_capacity(cu.records.len());
        let mut devices = Vec::new();
        for (k, r) in cu.records {
            match (&k, &r) {
                (RecordKey::Device(m), Some(_)) => devices.push(m.clone()),
                // The server that deleted it removed its log; this one's writer forgets it.
                (RecordKey::Device(m), None) => self.observer.log_reset(m),
                _ => {}
            }
            let r = match r {
                Some(mut r) => {
                    for p in r.passwords_mut() {
                        *p = Secret::new(self.sealer.open_value(p.expose())?.0);
                    }
                    Some(r)
                }
                None => None,
            };
            opened.push((k, r));
        }
        for (k, r) in opened {
            match r {
                Some(r) => {
                    w.state.put(r);
                }
                None => {
                    w.state.remove(&k);
                }
            }
        }
        // Another server's device: off this server's unprovisioned list too.
        self.observer.unprovisioned_forget(&devices);
        let mut templates = false;
        for c in &cu.changes {
            templates |= c.kind == ChangeKind::Template;
            if let (Some(g), Some(n)) = (&c.group, c.group_seq) {
                Arc::make_mut(&mut w.group_seqs).insert(g.clone(), n);
            }
        }
        w.seq = cu.seq;
        self.snapshot.store(Arc::new(Snapshot {
            state: w.state.clone(),
            seq: w.seq,
            group_seqs: Arc::clone(&w.group_seqs),
        }));
        Ok(Followed {
            seq: w.seq,
            templates,
            sync_states: Vec::new(),
        })
    }

    /// Whether other servers write to the same engine.
    pub(crate) fn shared(&self) -> bool {
        self.shared
    }

    /// Takes in what other servers committed (and the check-ins they wrote, and with
    /// `sync_states` the sync states the dispatcher saved), publishing a new snapshot and
    /// telling the subscribers (the dispatcher, caches) when the seq moved.
    pub(crate) fn follow(&self, sync_states: bool) -> Result<Followed, StoreError> {
        let seq = self.read().seq;
        let cu = self.backend.catch_up(seq)?;
        let mut followed = if cu.seq > seq {
            let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            // A local commit may have moved past part of it meanwhile: read again from there.
            let cu = if w.seq == seq {
                cu
            } else {
                self.backend.catch_up(w.seq)?
            };
            self.apply_catch_up(&mut w, cu)?
        } else {
            Followed::default()
        };
        if followed.seq > 0 {
            self.committed.send_replace(followed.seq);
        }
        // Rows committed out of `ord` order are read again once a second (announcements can
        // wake this far more often).
        let lookback = {
            let mut last = self.looked_back.lock().unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= LOOKBACK_EVERY);
            if due {
                *last = Some(std::time::Instant::now());
            }
            due
        };
        let cursor = self.checkin_cursor.load(Ordering::Acquire);
        let (cursor, mut checkins) = self.backend.checkins_since(cursor, lookback)?;
        for (_, c) in &mut checkins {
            if let Some(id) = &mut c.applied_identity {
                id.password = Secret::new(self.sealer.open_value(id.password.expose())?.0);
            }
        }
        self.observer.merge_checkins(checkins);
        self.checkin_cursor.store(cursor, Ordering::Release);
        // The same way, the sync states the dispatcher saved (shown by the other servers).
        if sync_states {
            let cursor = self.sync_state_cursor.load(Ordering::Acquire);
            let (cursor, states) = self.backend.sync_states_since(cursor, lookback)?;
            followed.sync_states = states;
            self.sync_state_cursor.store(cursor, Ordering::Release);
        }
        Ok(followed)
    }

    /// Waits up to `timeout` for another server's commit to be announced.
    pub(crate) fn wait_for_change(&self, timeout: std::time::Duration) -> bool {
        self.backend.wait_for_change(timeout)
    }

    /// Whether this server is the one that runs the sync dispatcher now.
    pub(crate) fn try_lead(&self) -> Result<bool, StoreError> {
        self.backend.try_lead()
    }

    /// Drops the oldest change-log entries beyond `changes_keep` (in batches, so it runs
    /// rarely). Called by the writer, under the write lock.
    fn compact(&self, last: u64) {
        let first = self.first_seq();
        let keep = self.changes_keep;
        if last + 1 - first <= keep + keep / 10 {
            return;
        }
        let new_first = last + 1 - keep;
        match self.backend.compact(first, new_first) {
            Ok(()) => {
                self.first_seq.store(new_first, Ordering::Release);
                tracing::info!(
                    removed = new_first - first,
                    kept = keep,
                    "change log compacted"
                );
            }
            Err(e) => tracing::warn!(error = %e, "change log compaction failed"),
        }
    }

    /// Change-log entries with `seq > since`, oldest first, up to the latest snapshot; `group`
    /// filters to one group.
    pub(crate) fn changes(
        &self,
        since: u64,
        limit: usize,
        group: Option<&GroupId>,
    ) -> Result<Vec<Change>, StoreError> {
        self.changes_upto(since, limit, group, self.last_seq())
    }

    /// Change-log entries with `since < seq <= upto`. `upto` is the seq of the snapshot the
    /// caller reads the state from: the engine holds a commit a moment before its snapshot is
    /// published, and a change must never be read ahead of the state it made.
    pub(crate) fn changes_upto(
        &self,
        since: u64,
        limit: usize,
        group: Option<&GroupId>,
        upto: u64,
    ) -> Result<Vec<Change>, StoreError> {
        let mut out = self.backend.changes(since, limit, group)?;
        out.retain(|c| c.seq <= upto);
        Ok(out)
    }

    /// A group's entries with `group_seq > since`, oldest first, at most `limit`, up to the
    /// latest snapshot. Entries written before `group_seq` was kept have none and are skipped.
    pub(crate) fn group_changes(
        &self,
        g: &GroupId,
        since: u64,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        let upto = self.last_seq();
        let mut out = Vec::new();
        // A group's n-th entry has a global seq of at least n: start the scan there.
        let mut from = since;
        loop {
            let batch = self.backend.changes(from, limit, Some(g))?;
            let Some(last) = batch.last().map(|c| c.seq) else {
                break;
            };
            let full = batch.len() >= limit;
            for c in batch {
                if c.seq > upto {
                    return Ok(out);
                }
                if c.group_seq.is_some_and(|n| n > since) {
                    out.push(c);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
            if !full {
                break;
            }
            from = last;
        }
        Ok(out)
    }

    /// Flushes everything to disk, phone observations and sync work included (every commit
    /// already was), after any pending key roll; used on shutdown.
    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        if self
            .roll_due
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            self.roll_keys()?;
        }
        self.save_unprovisioned()?;
        self.observer.flush()?;
        self.backend.flush()
    }

    /// Saves the unprovisioned list when it changed (from `maintain`, about once a second, and
    /// on shutdown), so it survives a restart: the whole list with an engine of one server,
    /// the sightings since the last save with a shared one (which every server's `GET
    /// /unprovisioned` reads). It is bounded, and losing the last second of sightings in a
    /// crash costs nothing (the phones ask again). What a failed save took is kept for the
    /// next one.
    fn save_unprovisioned(&self) -> Result<(), StoreError> {
        let Some(batch) = self.observer.unprovisioned_to_save() else {
            return Ok(());
        };
        self.backend.observe(&batch, false).inspect_err(|_| {
            self.observer.unprovisioned_unsaved(batch);
        })
    }

    /// Background upkeep, called about once a second off the async workers: the key roll that
    /// follows replaced passwords, once they have been quiet for a moment.
    pub(crate) fn maintain(&self) -> Result<(), StoreError> {
        self.save_unprovisioned()?;
        let due = *self.roll_due.lock().unwrap_or_else(|p| p.into_inner());
        match due {
            Some(at) if at.elapsed() >= ROLL_QUIET => self.roll_keys(),
            _ => Ok(()),
        }
    }

    /// Seals every live password under a new key, then forgets the old key, so a replaced or
    /// deleted password left in the engine's files can no longer be opened (see [`seal`]).
    /// Holds the write lock: writers wait, readers do not.
    fn roll_keys(&self) -> Result<(), StoreError> {
        let w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        *self.roll_due.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.sealer.begin_roll()?;
        let st = &w.state;
        let records: Vec<Record> = st
            .users
            .values()
            .map(|u| Record::User(u.clone()))
            .chain(st.devices.values().map(|d| Record::Device(d.clone())))
            .chain(
                st.shared_lines
                    .values()
                    .map(|l| Record::SharedLine(l.clone())),
            )
            .map(|r| seal_record(&self.sealer, &r))
            .collect();
        self.backend.rewrite(&records)?;
        self.observer.reseal_checkins()?;
        self.sealer.finish_roll()?;
        tracing::info!(records = records.len(), "passwords sealed under a new key");
        Ok(())
    }

    // ------------------------------------------------------------ phone observations

    /// Records a device's fetch. `applied` is what the main file it fetched gave it; when that
    /// is new, the returned future resolves once it is durable (answer the phone after it).
    pub(crate) fn record_checkin(
        &self,
        mac: &Mac,
        seen: Seen<'_>,
        applied: Option<Applied<'_>>,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + Send + 'static {
        let waiting = self.observer.check_in(mac, seen, applied).map(|rx| {
            let h = self.metrics.checkin_seconds.clone();
            (rx, h, std::time::Instant::now())
        });
        async move {
            let Some((rx, h, started)) = waiting else {
                return Ok(());
            };
            let r = rx.await;
            h.observe(started.elapsed().as_secs_f64());
            r.map_err(|_| StoreError::Engine("the observation writer stopped".into()))?
                .map_err(StoreError::Engine)
        }
    }

    pub(crate) fn checkin(&self, mac: &Mac) -> Option<CheckIn> {
        self.observer.checkin(mac)
    }

    /// Marks a revision as applied without a fetch (the dispatcher found the bytes unchanged).
    pub(crate) fn mark_applied(&self, mac: &Mac, revision: u64) {
        self.observer.mark_applied(mac, revision)
    }

    /// Remembers an unknown MAC (bounded, newest first, one entry per MAC); returns whether it
    /// is in the list. A MAC that falls off the list (and is no device) loses its provisioning
    /// log: made-up MACs cannot fill the engine with logs.
    pub(crate) fn record_unprovisioned(
        &self,
        mac: &Mac,
        file: &str,
        ip: &str,
        user_agent: &str,
    ) -> bool {
        let (listed, evicted) = self.observer.unprovisioned_seen(mac, file, ip, user_agent);
        if !evicted.is_empty() {
            let state = self.read();
            for m in evicted.iter().filter(|m| !state.devices.contains_key(*m)) {
                self.observer.log_forget(m);
            }
        }
        listed
    }

    /// Adds an entry to a device's provisioning log, in the background (batched with the other
    /// observations, never flushed on its own; its `id` is given then).
    pub(crate) fn log_provisioning(&self, mac: &Mac, entry: ProvLogEntry) {
        self.observer.log(mac, entry)
    }

    /// A device's provisioning log, newest first: at most `limit` entries older than
    /// `before` (an entry id), everything logged before this call included.
    pub(crate) fn provisioning_log(
        &self,
        mac: &Mac,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ProvLogEntry>, StoreError> {
        self.observer.barrier();
        self.backend.log_of(mac, before, limit)
    }

    /// The unprovisioned list, newest first: with a shared engine what every server saw (this
    /// server's latest sightings saved first), read from the engine — call it off the async
    /// workers. Never a MAC that is a device.
    pub(crate) fn unprovisioned(&self) -> Result<Vec<Unprovisioned>, StoreError> {
        let mut list = if self.shared {
            self.save_unprovisioned()?;
            self.backend.unprovisioned()?
        } else {
            self.observer.unprovisioned()
        };
        let state = self.read();
        list.retain(|u| !state.devices.contains_key(&u.mac));
        Ok(list)
    }

    /// Whether `mac` is on this server's unprovisioned list (in memory: for the phone path).
    pub(crate) fn is_unprovisioned(&self, mac: &Mac) -> bool {
        self.observer.is_unprovisioned(mac)
    }

    /// Stores a file a phone uploaded; resolves once it is durable.
    pub(crate) async fn put_upload(
        &self,
        mac: &Mac,
        name: &str,
        body: Bytes,
    ) -> Result<(), StoreError> {
        self.observer.put_upload(mac, name, body).await
    }

    /// Uploads of a device, by name.
    pub(crate) fn uploads_of(&self, mac: &Mac) -> Result<Vec<UploadMeta>, StoreError> {
        self.backend.uploads_of(mac)
    }

    // ------------------------------------------------------------ sync work

    /// The dispatcher's cursor (last change-log seq it has taken in) and every device's state,
    /// after everything queued before this call is written.
    pub(crate) fn sync_load(&self) -> Result<(u64, Vec<(Mac, SyncState)>), StoreError> {
        self.observer.flush()?;
        self.backend.sync_load()
    }

    /// Saves device states (None = forget) and, optionally, the cursor, in one atomic batch, in
    /// the background. Not flushed: after a crash the cursor and the states fall back together,
    /// and the dispatcher re-reads the changes since the older cursor.
    pub(crate) fn sync_save(&self, cursor: Option<u64>, states: Vec<(Mac, Option<SyncState>)>) {
        self.observer.save_sync(cursor, states)
    }

    /// With a shared store: queues manual syncs for the dispatcher, whichever server runs it
    /// (committed before it returns).
    pub(crate) fn request_sync(&self, requests: &[SyncRequest]) -> Result<(), StoreError> {
        if requests.is_empty() {
            return Ok(());
        }
        self.backend.request_sync(requests)
    }

    /// With a shared store: whether manual syncs are queued (a cheap look).
    pub(crate) fn sync_requests_queued(&self) -> Result<bool, StoreError> {
        self.backend.sync_requests_queued()
    }

    /// With a shared store: takes the queued manual syncs, saving the states `apply` makes of
    /// them in the same transaction, after every sync state saved before this call (so none
    /// of those overwrites them). Returns the states saved; nothing when none was queued.
    pub(crate) fn take_sync_requests(
        &self,
        apply: &mut dyn FnMut(Vec<SyncRequest>) -> Vec<(Mac, SyncState)>,
    ) -> Result<Vec<(Mac, SyncState)>, StoreError> {
        self.observer.flush()?;
        self.backend.take_sync_requests(apply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::domain::rules::DeviceInput;

    #[test]
    fn the_time_is_formatted_as_time_formats_rfc_3339() {
        use std::time::{Duration, UNIX_EPOCH};
        let rfc = &time::format_description::well_known::Rfc3339;
        let base = 1_796_000_000u64;
        // Whole seconds, trailing zeros in the fraction, the same second twice, the next one.
        for (secs, nanos) in [
            (base, 0),
            (base, 500_000_000),
            (base, 123_456_789),
            (base, 120_000),
            (base, 1),
            (base + 1, 999_999_999),
            (0, 7),
        ] {
            let t = UNIX_EPOCH + Duration::new(secs, nanos);
            let want = time::OffsetDateTime::from(t).format(rfc).unwrap();
            assert_eq!(rfc3339_of(t), want, "{secs}.{nanos:09}");
        }
    }

    pub(super) fn open(dir: &Path) -> Store {
        Store::open(
            dir,
            Arc::new(Catalog::builtin().unwrap()),
            StoreOptions {
                cache_bytes: 8 << 20,
                changes_keep: 1000,
                max_sca_per_user: 35,
                limits: ObservationLimits::default(),
            },
        )
        .unwrap()
    }

    fn group(id: &str) -> Group {
        serde_json::from_value(serde_json::json!({"id": id, "sip": {"domain": "sip.example.net"}}))
            .unwrap()
    }

    #[test]
    fn commits_survive_reopen_with_a_gapless_log() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open(dir.path());
            s.create_group("t", group("g1")).unwrap();
            assert!(
                s.create_group("t", group("g1")).is_err(),
                "duplicate refused"
            );
            s.create_group("t", group("g2")).unwrap();
            s.delete_group("t", &GroupId::parse("g1").unwrap(), false)
                .unwrap();
        }
        let s = open(dir.path());
        assert_eq!(s.last_seq(), 3);
        let log = s.changes(0, 100, None).unwrap();
        assert_eq!(log.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(log[2].action, "group.delete");
        assert!(s.read().groups.contains_key(&GroupId::parse("g2").unwrap()));
        assert_eq!(s.read().groups.len(), 1);
    }

    #[test]
    fn a_failed_rule_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let g = GroupId::parse("g1").unwrap();
        let err = s
            .create_user(
                "t",
                &g,
                serde_json::from_value(serde_json::json!({"extension": "1001"})).unwrap(),
            )
            .unwrap_err();
        assert!(matches!(err, StoreError::Rule(ref e) if e.kind == ErrorKind::NotFound));
        assert_eq!(s.last_seq(), 0);
        assert!(s.changes(0, 10, None).unwrap().is_empty());
    }

    #[test]
    fn device_revision_is_the_last_seq_that_touched_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let g = GroupId::parse("g1").unwrap();
        s.create_group("t", group("g1")).unwrap();
        let d: DeviceInput = serde_json::from_value(
            serde_json::json!({"mac": "0004f2000001", "model": "polycom-vvx-450"}),
        )
        .unwrap();
        let dev = s.create_device("t", &g, d).unwrap();
        let mac = dev.mac.clone();
        assert_eq!(s.read().devices[&mac].revision, 2);
        s.create_group("t", group("g2")).unwrap();
        assert_eq!(s.read().devices[&mac].revision, 2, "untouched");
        let grp = s.read().groups[&g].clone();
        let c = s.update_group("t", &g, grp).unwrap();
        assert_eq!(c.devices, vec![mac.clone()]);
        assert_eq!(s.read().devices[&mac].revision, 4);
    }

    #[test]
    fn tokens_authenticate_by_hash() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let (t, secret) = s.create_token("cli", "admin", None).unwrap();
        assert_eq!(s.authenticate(&secret).unwrap().id, t.id);
        assert!(s.authenticate(&format!("{secret}x")).is_none());
        assert!(s.authenticate("dp_nope_nope").is_none());
        assert!(!format!("{:?}", s.read().tokens).contains(&secret[12..]));
    }

    #[test]
    fn the_change_log_is_compacted_beyond_its_retention() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        for i in 0..1150 {
            s.create_group("t", group(&format!("g{i}"))).unwrap();
        }
        assert!(s.first_seq() > 1);
        let log = s.changes(0, 5000, None).unwrap();
        assert_eq!(log.last().unwrap().seq, 1150);
        assert_eq!(log.first().unwrap().seq, s.first_seq());
        assert!(log.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    }
}

#[cfg(test)]
mod sealing_tests {
    use super::tests::open;
    use super::*;
    use crate::domain::rules::DeviceInput;

    /// Every byte of every file below `dir`.
    fn all_bytes(dir: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(all_bytes(&p));
            } else {
                out.extend(std::fs::read(&p).unwrap());
            }
        }
        out
    }

    /// Every sealed value found in `bytes`, as the text `dpenc1:<id>:<hex>`.
    fn sealed_values(bytes: &[u8]) -> Vec<String> {
        let text = String::from_utf8_lossy(bytes);
        text.match_indices("dpenc1:")
            .map(|(i, p)| {
                let rest: String = text[i + p.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_hexdigit() || *c == ':')
                    .collect();
                format!("{p}{rest}")
            })
            .collect()
    }

    fn device_password(s: &Store, mac: &Mac) -> String {
        s.read().devices[mac].prov_password.expose().to_string()
    }

    #[test]
    fn passwords_are_sealed_at_rest_and_a_replaced_one_cannot_be_opened_after_the_key_roll() {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join("store");
        let mac = Mac::parse("0004f2000001").unwrap();
        let (old, new) = {
            let s = open(&store_dir);
            let g: Group = serde_json::from_value(
                serde_json::json!({"id": "g1", "sip": {"domain": "sip.example.net"}}),
            )
            .unwrap();
            s.create_group("t", g).unwrap();
            let d: DeviceInput = serde_json::from_value(
                serde_json::json!({"mac": "0004f2000001", "model": "polycom-vvx-450"}),
            )
            .unwrap();
            s.create_device("t", &GroupId::parse("g1").unwrap(), d)
                .unwrap();
            let old = device_password(&s, &mac);
            let new = s.rotate_device_credentials("t", &mac).unwrap();
            assert!(
                s.roll_due.lock().unwrap().is_some(),
                "a rotation asks for a key roll"
            );
            s.flush().unwrap(); // runs the pending roll
            (old, new)
        };
        let bytes = all_bytes(dir.path());
        let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
        assert!(
            !contains(&old),
            "the old password is not in any file in the clear"
        );
        assert!(!contains(&new), "nor is the new one");
        let sealer = seal::Sealer::open(&store_dir.with_extension("key")).unwrap();
        let opened: Vec<String> = sealed_values(&bytes)
            .iter()
            .filter_map(|v| sealer.open_value(v).ok().map(|(p, _)| p))
            .collect();
        assert!(
            opened.contains(&new),
            "the live password opens with the key file"
        );
        assert!(
            !opened.contains(&old),
            "what is left of the old one does not"
        );
        // And the store still serves the new password after a restart.
        let s = open(&store_dir);
        assert_eq!(device_password(&s, &mac), new);
    }

    #[test]
    fn passwords_stored_in_the_clear_by_an_older_version_are_sealed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join("store");
        {
            let engine = embedded::Embedded::open(&store_dir, 8 << 20).unwrap();
            let d: Device = serde_json::from_value(serde_json::json!({
                "mac": "0004f2000001", "group": "g1", "name": "d", "model": "polycom-vvx-450",
                "prov_password": "clear-text-password-1", "revision": 1, "keys": [], "settings": {}
            }))
            .unwrap();
            engine.rewrite(&[Record::Device(d)]).unwrap();
        }
        let s = open(&store_dir);
        let mac = Mac::parse("0004f2000001").unwrap();
        assert_eq!(device_password(&s, &mac), "clear-text-password-1");
        drop(s);
        // sled keeps the superseded bytes until it cleans its log; the live record is sealed.
        let engine = embedded::Embedded::open(&store_dir, 8 << 20).unwrap();
        let mut records = Vec::new();
        engine
            .load(backend::RecordSink {
                prepare: &|_| Ok(()),
                take: &mut |r| records.push(r),
            })
            .unwrap();
        let Record::Device(d) = &records[0] else {
            panic!("a device record")
        };
        assert!(d.prov_password.expose().starts_with("dpenc1:"));
    }
}
