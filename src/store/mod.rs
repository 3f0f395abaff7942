//! The durable store: domain state in memory, persisted in sled with its change log.
//!
//! One write path: [`Store`] runs a domain rule inside a [`Tx`] under the write lock, then writes
//! exactly the records the rule touched, the change-log entry, and the `seq` counter in one sled
//! transaction, and flushes to disk before returning — so an acknowledged write survives
//! `kill -9`. Any error rolls the in-memory state back.
//!
//! Reads are served from memory ([`Store::read`]); the engine is never visible outside this
//! module. Three trees: `data` (records by [`RecordKey::encode`]), `changes` (big-endian `seq` →
//! JSON entry) and `meta` (`format`, `seq`). sled calls block: async callers use the `*_async`
//! helpers in `crate::admin`, which run them on the blocking pool.

use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use utoipa::ToSchema;

use crate::catalog::RulesEnv;
use crate::domain::rules::{self, *};
use crate::domain::state::{Record, RecordKey, State, Tx};
use crate::domain::*;

/// The on-disk format this build reads and writes.
pub const FORMAT_VERSION: u64 = 1;

mod change_entry;

/// One change-log entry (SPEC §1 "Change log").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(from = "change_entry::StoredChange")]
pub struct Change {
    /// Gapless, increasing.
    pub seq: u64,
    /// RFC 3339 UTC.
    pub at: String,
    /// Who: `token:<id>` or `cli`.
    pub actor: String,
    /// `<resource>.<verb>`.
    pub action: Action,
    /// What the change did to the touched phones; model.toml `reboot_on` names these.
    pub kind: ChangeKind,
    #[schema(value_type = Option<String>)]
    pub group: Option<GroupId>,
    pub subject: String,
    /// Every device whose rendered files may change.
    #[schema(value_type = Vec<String>)]
    pub devices: Vec<Mac>,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// What the server last saw of a device fetching its files. Observations, not configuration:
/// kept in memory; written to the `checkins` tree (without a flush) when the applied revision
/// changes, so `last_seen` after a restart is the time of the last such fetch. Never in the
/// change log.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CheckIn {
    /// RFC 3339 time of the last fetch.
    pub at: String,
    pub ip: String,
    pub user_agent: String,
    /// Firmware version parsed from the User-Agent, if any.
    pub firmware: Option<String>,
    /// The model the User-Agent named, if any.
    pub model_seen: Option<String>,
    /// The revision of the last main-file fetch.
    pub applied_revision: u64,
    /// ETag of that main file (for the sync dispatcher's same-hash check).
    #[serde(default)]
    pub applied_etag: Option<String>,
    /// The primary registration that file gave the phone: NOTIFYs are addressed to it and
    /// answer its digest challenge, since the phone knows nothing newer until it fetches.
    /// Stored, never shown (the admin view clears it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub applied_identity: Option<crate::domain::SipIdentity>,
}

/// Where a device stands in the change → NOTIFY → fetch cycle (SPEC §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SyncPhase {
    InSync,
    Pending,
    Notified,
    Failed,
}

/// The last NOTIFY sent to a device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LastNotify {
    pub at: String,
    /// The `Event:` sent.
    pub event: String,
    /// `200 OK`, `timeout`, `503 Service Unavailable`, `skipped: same hash`, ...
    pub result: String,
    /// NOTIFYs sent for the pending revision so far.
    pub attempts: u32,
}

/// The dispatcher's persisted work for one device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncState {
    pub phase: SyncPhase,
    /// The revision the phone must fetch.
    pub revision: u64,
    /// Whether the pending changes need the reboot event.
    pub reboot: bool,
    /// Unix milliseconds when the next step is due (send, or give up waiting for the fetch).
    pub due_ms: u64,
    pub attempts: u32,
    /// Skip the same-hash check (manual sync).
    #[serde(default)]
    pub force: bool,
    pub last_notify: Option<LastNotify>,
}

/// A well-formed MAC that asked for files but is not provisioned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Unprovisioned {
    #[schema(value_type = String)]
    pub mac: Mac,
    pub file: String,
    pub ip: String,
    pub user_agent: String,
    pub at: String,
    pub count: u64,
}

/// A file a phone uploaded (Polycom-style PUT).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UploadMeta {
    pub name: String,
    pub size: u64,
    pub at: String,
}

/// Most unprovisioned MACs remembered (newest first).
const UNPROVISIONED_MAX: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Rule(#[from] DomainError),
    #[error("storage: {0}")]
    Engine(#[from] sled::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the data directory was written by a newer deskprov (format {0}; this build reads {FORMAT_VERSION})")]
    TooNew(u64),
}

/// Options of [`Store::open`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub cache_bytes: u64,
    pub changes_keep: u64,
    pub max_sca_per_user: usize,
}

struct Inner {
    state: State,
    /// Last committed seq.
    seq: u64,
    /// Oldest seq still in the change log.
    first_seq: u64,
}

pub struct Store {
    db: sled::Db,
    data: sled::Tree,
    changes: sled::Tree,
    meta: sled::Tree,
    checkins_tree: sled::Tree,
    uploads: sled::Tree,
    sync: sled::Tree,
    checkins: RwLock<std::collections::HashMap<Mac, CheckIn>>,
    unprovisioned: std::sync::Mutex<std::collections::VecDeque<Unprovisioned>>,
    inner: RwLock<Inner>,
    env: RulesEnv,
    changes_keep: u64,
    /// Bumped after every commit with the new seq; the sync dispatcher waits on it.
    committed: tokio::sync::watch::Sender<u64>,
}

/// Read access to the state; holds the read lock while alive, so keep it short.
pub struct View<'a>(RwLockReadGuard<'a, Inner>);

impl std::ops::Deref for View<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.0.state
    }
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

impl Store {
    /// Opens (or creates) the store in `dir` and loads it into memory.
    pub fn open(
        dir: &Path,
        catalog: Arc<crate::catalog::Catalog>,
        opts: StoreOptions,
    ) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(opts.cache_bytes)
            .open()?;
        let data = db.open_tree("data")?;
        let changes = db.open_tree("changes")?;
        let meta = db.open_tree("meta")?;
        let checkins_tree = db.open_tree("checkins")?;
        let uploads = db.open_tree("uploads")?;
        let sync = db.open_tree("sync")?;

        match meta.get("format")? {
            None => {
                meta.insert("format", &FORMAT_VERSION.to_be_bytes())?;
                db.flush()?;
            }
            Some(v) => {
                let v = u64::from_be_bytes(v.as_ref().try_into().map_err(|_| corrupt("format"))?);
                if v > FORMAT_VERSION {
                    return Err(StoreError::TooNew(v));
                }
            }
        }
        let seq = match meta.get("seq")? {
            Some(v) => u64::from_be_bytes(v.as_ref().try_into().map_err(|_| corrupt("seq"))?),
            None => 0,
        };
        if let Some((k, _)) = changes.last()? {
            let last =
                u64::from_be_bytes(k.as_ref().try_into().map_err(|_| corrupt("change key"))?);
            if last != seq {
                return Err(corrupt(format!(
                    "change log ends at {last} but seq is {seq}"
                )));
            }
        }
        let first_seq = match changes.first()? {
            Some((k, _)) => {
                u64::from_be_bytes(k.as_ref().try_into().map_err(|_| corrupt("change key"))?)
            }
            None => seq + 1,
        };

        let records = data
            .iter()
            .map(|item| {
                let (k, v) = item?;
                serde_json::from_slice::<Record>(&v)
                    .map_err(|e| corrupt(format!("record {}: {e}", String::from_utf8_lossy(&k))))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let state = State::from_records(records);
        let mut checkins = std::collections::HashMap::new();
        for item in checkins_tree.iter() {
            let (k, v) = item?;
            let (Ok(mac), Ok(c)) = (
                Mac::parse(&String::from_utf8_lossy(&k)),
                serde_json::from_slice::<CheckIn>(&v),
            ) else {
                continue;
            };
            checkins.insert(mac, c);
        }
        let (committed, _) = tokio::sync::watch::channel(seq);
        Ok(Store {
            db,
            data,
            changes,
            meta,
            checkins_tree,
            uploads,
            sync,
            checkins: RwLock::new(checkins),
            unprovisioned: Default::default(),
            inner: RwLock::new(Inner {
                state,
                seq,
                first_seq,
            }),
            env: RulesEnv {
                catalog,
                max_sca_per_user: opts.max_sca_per_user,
            },
            changes_keep: opts.changes_keep,
            committed,
        })
    }

    /// Read access to the state.
    pub fn read(&self) -> View<'_> {
        View(self.inner.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The last committed seq.
    pub fn last_seq(&self) -> u64 {
        self.read().0.seq
    }

    /// A receiver that sees the seq of every commit.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.committed.subscribe()
    }

    pub fn catalog(&self) -> &crate::catalog::Catalog {
        &self.env.catalog
    }

    /// Runs `rule` in a transaction; on success persists its writes with the change entry,
    /// flushes, and returns the rule's value and the entry.
    fn commit<R>(
        &self,
        actor: &str,
        rule: impl FnOnce(&mut Tx, &dyn Env) -> Result<(Effect, R), DomainError>,
    ) -> Result<(R, Change), StoreError> {
        let mut guard = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *guard;
        let mut tx = Tx::new(&mut inner.state);
        let (fx, value) = match rule(&mut tx, &self.env) {
            Ok(x) => x,
            Err(e) => {
                tx.rollback();
                return Err(e.into());
            }
        };
        let seq = inner.seq + 1;
        for mac in &fx.devices {
            if let Some(d) = tx.state().devices.get(mac) {
                let mut d = d.clone();
                d.revision = seq;
                tx.put(Record::Device(d));
            }
        }
        let change = Change {
            seq,
            at: now(),
            actor: actor.to_string(),
            action: fx.action,
            kind: fx.kind,
            group: fx.group,
            subject: fx.subject,
            devices: fx.devices.into_iter().collect(),
            detail: fx.detail,
        };
        if let Err(e) = self.persist(&tx.writes(), &change) {
            tx.rollback();
            return Err(e);
        }
        inner.seq = seq;
        drop(guard);
        self.committed.send_replace(seq);
        self.compact();
        Ok((value, change))
    }

    /// Writes records, the change entry and the seq atomically, then flushes.
    fn persist(
        &self,
        writes: &[(RecordKey, Option<Record>)],
        change: &Change,
    ) -> Result<(), StoreError> {
        // Encode outside the transaction closure: sled may run it more than once.
        let encoded: Vec<(Vec<u8>, Option<Vec<u8>>)> = writes
            .iter()
            .map(|(k, r)| {
                let v = r
                    .as_ref()
                    .map(|r| serde_json::to_vec(r).expect("records serialise"));
                (k.encode(), v)
            })
            .collect();
        let entry = serde_json::to_vec(change).expect("changes serialise");
        let seq = change.seq.to_be_bytes();
        (&self.data, &self.changes, &self.meta)
            .transaction(|(d, c, m)| {
                for (k, v) in &encoded {
                    match v {
                        Some(v) => d.insert(k.as_slice(), v.as_slice())?,
                        None => d.remove(k.as_slice())?,
                    };
                }
                c.insert(&seq, entry.as_slice())?;
                m.insert("seq", &seq)?;
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => StoreError::Engine(e),
                TransactionError::Abort(()) => corrupt("transaction aborted"),
            })?;
        self.db.flush()?;
        Ok(())
    }

    /// Drops the oldest change-log entries beyond `changes_keep` (in batches, so it runs rarely).
    fn compact(&self) {
        let (first, last) = {
            let i = self.read();
            (i.0.first_seq, i.0.seq)
        };
        let keep = self.changes_keep;
        if last + 1 - first <= keep + keep / 10 {
            return;
        }
        let new_first = last + 1 - keep;
        let mut batch = sled::Batch::default();
        for s in first..new_first {
            batch.remove(&s.to_be_bytes());
        }
        match self.changes.apply_batch(batch) {
            Ok(()) => {
                let mut w = self.inner.write().unwrap_or_else(|p| p.into_inner());
                w.first_seq = new_first;
                tracing::info!(
                    removed = new_first - first,
                    kept = keep,
                    "change log compacted"
                );
            }
            Err(e) => tracing::warn!(error = %e, "change log compaction failed"),
        }
    }

    /// Change-log entries with `seq > since`, oldest first; `group` filters to one group.
    pub fn changes(
        &self,
        since: u64,
        limit: usize,
        group: Option<&GroupId>,
    ) -> Result<Vec<Change>, StoreError> {
        let mut out = Vec::new();
        for item in self.changes.range((since + 1).to_be_bytes()..) {
            let (_, v) = item?;
            let c: Change =
                serde_json::from_slice(&v).map_err(|e| corrupt(format!("change: {e}")))?;
            if group.is_none() || c.group.as_ref() == group {
                out.push(c);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Flushes everything to disk (every commit already did; used on shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// The oldest seq still kept in the change log.
    pub fn first_seq(&self) -> u64 {
        self.read().0.first_seq
    }

    // ------------------------------------------------------------ phone observations

    /// Records a device's fetch; `applied` is the main file fetched (revision, ETag, identity).
    pub fn record_checkin(
        &self,
        mac: &Mac,
        mut c: CheckIn,
        applied: Option<&crate::render::Rendered>,
    ) {
        let mut map = self.checkins.write().unwrap_or_else(|p| p.into_inner());
        let prev = map.get(mac);
        match applied {
            Some(r) => {
                c.applied_revision = r.revision;
                c.applied_etag = Some(r.etag.clone());
                c.applied_identity = r.identity.clone();
            }
            None => {
                c.applied_revision = prev.map(|p| p.applied_revision).unwrap_or(0);
                c.applied_etag = prev.and_then(|p| p.applied_etag.clone());
                c.applied_identity = prev.and_then(|p| p.applied_identity.clone());
            }
        }
        // Persist only what the sync state depends on (the applied revision, its ETag and
        // identity): every fetch updates last_seen in memory, but writing it to disk on every
        // fetch would cost more than serving the file.
        let changed = prev.is_none_or(|p| {
            p.applied_revision != c.applied_revision
                || p.applied_etag != c.applied_etag
                || p.applied_identity != c.applied_identity
        });
        if changed {
            if let Ok(v) = serde_json::to_vec(&c) {
                if let Err(e) = self.checkins_tree.insert(mac.as_str(), v) {
                    tracing::warn!(error = %e, "recording a check-in failed");
                }
            }
        }
        map.insert(mac.clone(), c);
    }

    pub fn checkin(&self, mac: &Mac) -> Option<CheckIn> {
        self.checkins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(mac)
            .cloned()
    }

    /// Marks a revision as applied without a fetch (the dispatcher found the bytes unchanged).
    pub fn mark_applied(&self, mac: &Mac, revision: u64) {
        let mut map = self.checkins.write().unwrap_or_else(|p| p.into_inner());
        let c = map.entry(mac.clone()).or_default();
        c.applied_revision = c.applied_revision.max(revision);
        if let Ok(v) = serde_json::to_vec(&*c) {
            let _ = self.checkins_tree.insert(mac.as_str(), v);
        }
    }

    // ------------------------------------------------------------ sync work

    /// The dispatcher's cursor (last change-log seq it has taken in) and every device's state.
    pub fn sync_load(&self) -> Result<(u64, Vec<(Mac, SyncState)>), StoreError> {
        let cursor = match self.meta.get("sync_cursor")? {
            Some(v) => {
                u64::from_be_bytes(v.as_ref().try_into().map_err(|_| corrupt("sync_cursor"))?)
            }
            None => 0,
        };
        let mut out = Vec::new();
        for item in self.sync.iter() {
            let (k, v) = item?;
            let mac = Mac::parse(&String::from_utf8_lossy(&k)).map_err(|_| corrupt("sync key"))?;
            out.push((
                mac,
                serde_json::from_slice(&v).map_err(|e| corrupt(format!("sync: {e}")))?,
            ));
        }
        Ok((cursor, out))
    }

    /// Saves device states (None = forget) and, optionally, the cursor, in one atomic batch.
    /// Not flushed: after a crash the cursor and the states fall back together, and the
    /// dispatcher re-reads the changes since the older cursor.
    pub fn sync_save(
        &self,
        cursor: Option<u64>,
        states: &[(Mac, Option<SyncState>)],
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (mac, st) in states {
            match st {
                Some(st) => batch.insert(mac.as_str(), serde_json::to_vec(st).expect("serialises")),
                None => batch.remove(mac.as_str()),
            }
        }
        self.sync.apply_batch(batch)?;
        if let Some(c) = cursor {
            self.meta.insert("sync_cursor", &c.to_be_bytes())?;
        }
        Ok(())
    }

    /// Remembers an unknown MAC (bounded, newest first, one entry per MAC).
    pub fn record_unprovisioned(&self, mac: &Mac, file: &str, ip: &str, user_agent: &str) {
        let mut q = self.unprovisioned.lock().unwrap_or_else(|p| p.into_inner());
        let count = match q.iter().position(|u| &u.mac == mac) {
            Some(i) => q.remove(i).map(|u| u.count).unwrap_or(0) + 1,
            None => 1,
        };
        q.push_front(Unprovisioned {
            mac: mac.clone(),
            file: file.to_string(),
            ip: ip.to_string(),
            user_agent: user_agent.chars().take(256).collect(),
            at: now(),
            count,
        });
        q.truncate(UNPROVISIONED_MAX);
    }

    pub fn unprovisioned(&self) -> Vec<Unprovisioned> {
        self.unprovisioned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Stores a file a phone uploaded, durably (flushed before returning).
    pub fn put_upload(&self, mac: &Mac, name: &str, body: &[u8]) -> Result<(), StoreError> {
        let meta = UploadMeta {
            name: name.to_string(),
            size: body.len() as u64,
            at: now(),
        };
        let mut v = serde_json::to_vec(&meta).expect("serialises");
        v.push(0);
        v.extend_from_slice(body);
        self.uploads.insert(format!("{mac}/{name}"), v)?;
        self.db.flush()?;
        Ok(())
    }

    /// Uploads of a device, by name.
    pub fn uploads_of(&self, mac: &Mac) -> Result<Vec<UploadMeta>, StoreError> {
        let mut out = Vec::new();
        for item in self.uploads.scan_prefix(format!("{mac}/")) {
            let (_, v) = item?;
            let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
            out.push(
                serde_json::from_slice(&v[..end]).map_err(|e| corrupt(format!("upload: {e}")))?,
            );
        }
        Ok(out)
    }

    // ------------------------------------------------------------ domain operations

    pub fn create_group(&self, actor: &str, g: Group) -> Result<Change, StoreError> {
        Ok(self
            .commit(actor, |tx, _| Ok((rules::create_group(tx, g)?, ())))?
            .1)
    }
    pub fn update_group(&self, actor: &str, id: &GroupId, g: Group) -> Result<Change, StoreError> {
        Ok(self
            .commit(actor, |tx, _| Ok((rules::update_group(tx, id, g)?, ())))?
            .1)
    }
    pub fn delete_group(
        &self,
        actor: &str,
        id: &GroupId,
        cascade: bool,
    ) -> Result<Change, StoreError> {
        Ok(self
            .commit(actor, |tx, _| {
                Ok((rules::delete_group(tx, id, cascade)?, ()))
            })?
            .1)
    }

    pub fn create_user(
        &self,
        actor: &str,
        g: &GroupId,
        input: UserInput,
    ) -> Result<User, StoreError> {
        Ok(self
            .commit(actor, |tx, env| rules::create_user(tx, env, g, input))?
            .0)
    }
    pub fn update_user(
        &self,
        actor: &str,
        g: &GroupId,
        e: &Extension,
        input: UserInput,
    ) -> Result<User, StoreError> {
        Ok(self
            .commit(actor, |tx, env| rules::update_user(tx, env, g, e, input))?
            .0)
    }
    pub fn delete_user(
        &self,
        actor: &str,
        g: &GroupId,
        e: &Extension,
    ) -> Result<Change, StoreError> {
        Ok(self
            .commit(actor, |tx, _| Ok((rules::delete_user(tx, g, e)?, ())))?
            .1)
    }
    pub fn duplicate_user(
        &self,
        actor: &str,
        g: &GroupId,
        e: &Extension,
        input: DuplicateInput,
    ) -> Result<User, StoreError> {
        Ok(self
            .commit(actor, |tx, env| rules::duplicate_user(tx, env, g, e, input))?
            .0)
    }
    /// Returns the new password (the only time it is shown).
    pub fn rotate_sip_password(
        &self,
        actor: &str,
        g: &GroupId,
        e: &Extension,
    ) -> Result<String, StoreError> {
        Ok(self
            .commit(actor, |tx, env| rules::rotate_sip_password(tx, env, g, e))?
            .0)
    }

    pub fn create_device(
        &self,
        actor: &str,
        g: &GroupId,
        input: DeviceInput,
    ) -> Result<Device, StoreError> {
        Ok(self
            .commit(actor, |tx, env| rules::create_device(tx, env, g, input))?
            .0)
    }
    pub fn update_device(
        &self,
        actor: &str,
        mac: &Mac,
        input: DeviceInput,
    ) -> Result<Device, StoreError> {
        Ok(self
            .commit(actor, |tx, env| rules::update_device(tx, env, mac, input))?
            .0)
    }
    pub fn delete_device(&self, actor: &str, mac: &Mac) -> Result<Change, StoreError> {
        Ok(self
            .commit(actor, |tx, _| Ok((rules::delete_device(tx, mac)?, ())))?
            .1)
    }
    /// Returns the new provisioning password (the only time it is shown).
    pub fn rotate_device_credentials(&self, actor: &str, mac: &Mac) -> Result<String, StoreError> {
        Ok(self
            .commit(actor, |tx, env| {
                rules::rotate_device_credentials(tx, env, mac)
            })?
            .0)
    }
    pub fn hot_desk_login(
        &self,
        actor: &str,
        mac: &Mac,
        e: &Extension,
    ) -> Result<Change, StoreError> {
        Ok(self
            .commit(actor, |tx, env| {
                Ok((rules::hot_desk_login(tx, env, mac, e)?, ()))
            })?
            .1)
    }
    pub fn hot_desk_logout(&self, actor: &str, mac: &Mac) -> Result<Change, StoreError> {
        Ok(self
            .commit(actor, |tx, _| Ok((rules::hot_desk_logout(tx, mac)?, ())))?
            .1)
    }

    pub fn create_sca(
        &self,
        actor: &str,
        g: &GroupId,
        e: &Extension,
        input: ScaInput,
    ) -> Result<ScaEndpoint, StoreError> {
        Ok(self
            .commit(actor, |tx, env| rules::create_sca(tx, env, g, e, input))?
            .0)
    }
    pub fn update_sca(
        &self,
        actor: &str,
        g: &GroupId,
        e: &Extension,
        port: &str,
        input: ScaInput,
    ) -> Result<ScaEndpoint, StoreError> {
        Ok(self
            .commit(actor, |tx, env| {
                rules::update_sca(tx, env, g, e, port, input)
            })?
            .0)
    }
    pub fn delete_sca(
        &self,
        actor: &str,
        g: &GroupId,
        e: &Extension,
        port: &str,
    ) -> Result<Change, StoreError> {
        Ok(self
            .commit(actor, |tx, _| Ok((rules::delete_sca(tx, g, e, port)?, ())))?
            .1)
    }

    pub fn create_shared_line(
        &self,
        actor: &str,
        g: &GroupId,
        input: SharedLineInput,
    ) -> Result<SharedLine, StoreError> {
        Ok(self
            .commit(actor, |tx, env| {
                rules::create_shared_line(tx, env, g, input)
            })?
            .0)
    }
    pub fn update_shared_line(
        &self,
        actor: &str,
        g: &GroupId,
        n: &SharedNumber,
        input: SharedLineInput,
    ) -> Result<SharedLine, StoreError> {
        Ok(self
            .commit(actor, |tx, env| {
                rules::update_shared_line(tx, env, g, n, input)
            })?
            .0)
    }
    pub fn set_shared_line_members(
        &self,
        actor: &str,
        g: &GroupId,
        n: &SharedNumber,
        members: Vec<Member>,
    ) -> Result<SharedLine, StoreError> {
        Ok(self
            .commit(actor, |tx, env| rules::set_members(tx, env, g, n, members))?
            .0)
    }
    pub fn delete_shared_line(
        &self,
        actor: &str,
        g: &GroupId,
        n: &SharedNumber,
    ) -> Result<Change, StoreError> {
        Ok(self
            .commit(actor, |tx, _| {
                Ok((rules::delete_shared_line(tx, g, n)?, ()))
            })?
            .1)
    }

    /// Stores a (validated) template body as the live version; returns the version number.
    pub fn put_template(
        &self,
        actor: &str,
        model: &str,
        template: &str,
        body: String,
    ) -> Result<u32, StoreError> {
        Ok(self
            .commit(actor, |tx, _| {
                rules::put_template(tx, model, template, body, now(), actor)
            })?
            .0)
    }
    /// Makes `version` live (`None`: the built-in template).
    pub fn activate_template(
        &self,
        actor: &str,
        model: &str,
        template: &str,
        version: Option<u32>,
    ) -> Result<Change, StoreError> {
        Ok(self
            .commit(actor, |tx, _| {
                Ok((rules::activate_template(tx, model, template, version)?, ()))
            })?
            .1)
    }
    /// Every stored template override.
    pub fn template_overrides(&self) -> Vec<crate::domain::TemplateOverride> {
        self.read().templates.values().cloned().collect()
    }

    /// Creates a token; returns it and the secret to hand out once (`dp_<id>_<secret>`).
    pub fn create_token(
        &self,
        actor: &str,
        name: &str,
        group: Option<GroupId>,
    ) -> Result<(Token, String), StoreError> {
        let id = crate::secrets::hex_token::<4>();
        let secret = crate::secrets::hex_token::<24>();
        let t = Token {
            id: id.clone(),
            name: name.to_string(),
            group,
            secret_sha256: Secret(crate::secrets::sha256_hex(secret.as_bytes()).into()),
            created_at: now(),
        };
        let stored = t.clone();
        self.commit(actor, |tx, _| Ok((rules::create_token(tx, stored)?, ())))?;
        Ok((t, format!("dp_{id}_{secret}")))
    }
    pub fn delete_token(&self, actor: &str, id: &str) -> Result<Change, StoreError> {
        Ok(self
            .commit(actor, |tx, _| Ok((rules::delete_token(tx, id)?, ())))?
            .1)
    }

    /// The token a bearer secret belongs to, if any (constant-time comparison of the hash).
    pub fn authenticate(&self, bearer: &str) -> Option<Token> {
        let rest = bearer.strip_prefix("dp_")?;
        let (id, secret) = rest.split_once('_')?;
        let state = self.read();
        let t = state.tokens.get(id)?;
        let presented = crate::secrets::sha256_hex(secret.as_bytes());
        crate::secrets::ct_eq(presented.as_bytes(), t.secret_sha256.expose().as_bytes())
            .then(|| t.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    fn open(dir: &Path) -> Store {
        Store::open(
            dir,
            Arc::new(Catalog::builtin().unwrap()),
            StoreOptions {
                cache_bytes: 8 << 20,
                changes_keep: 1000,
                max_sca_per_user: 35,
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
