//! What phones are seen doing, and the dispatcher's work, written off the async workers.
//!
//! Phone fetches and the sync dispatcher never call the engine themselves: they hand a [`Job`]
//! to one writer thread, which takes every job queued at that moment (and, when nobody waits
//! for any of them, whatever else arrives within [`GATHER`]), writes them as one batch and, if
//! any job needs it, flushes once for all of them (group commit). A check-in that
//! records a newly applied revision, and an upload, are answered only after that flush, so the
//! phone's fetch that confirms a change is never lost once the server has counted it.
//!
//! In memory, under locks held for a map operation and never across I/O: the last check-in of
//! every device and the bounded list of unprovisioned MACs, which one client address may add at
//! most [`ObservationLimits::unprovisioned_per_ip_per_min`] new MACs to (a flood of made-up
//! MACs cannot push the real ones out). With an engine of one server that list is the list,
//! saved whole; with an engine shared by several servers it is this server's view (it decides
//! admission and what is logged), and the sightings made since the last save are added to the
//! engine's shared table (per MAC, counts as deltas), which is what `GET /unprovisioned` reads.
//!
//! Uploads are bounded per device (files and bytes). With an engine of one server the writer
//! thread keeps an index of each uploading device's files (read from that device's prefix the
//! first time), and an upload over either bound removes the device's oldest files in the same
//! atomic batch that stores it. A shared engine is given the bounds instead
//! ([`Observations::upload_quota`]) and applies them in the transaction that stores the upload,
//! under a per-device lock, so the servers keep one quota ([`quota_plan`]).
//!
//! The provisioning log (every fetch and upload of a device, refusals with their reason) goes
//! the same way, bounded per device ([`ObservationLimits::log_entries`]): the writer keeps each
//! logging device's entry count (not its ids) and removes the oldest over the bound in the batch
//! that adds the new ones; it is never flushed on its own: a clean shutdown flushes it
//! (`Store::flush`), a crash loses what the engine had not written yet (sled writes its log
//! every 500 ms), never a phone's answer.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use tokio::sync::oneshot;

use super::backend::{Backend, Observations, Sighting, UploadQuota};
use super::records::Seen;
use super::seal::Sealer;
use super::{
    now, Applied, CheckIn, ProvLogEntry, StoreError, SyncState, Unprovisioned, UploadMeta,
};
use crate::domain::{Mac, Secret};

/// Most unprovisioned MACs remembered (newest first), in memory and in a shared engine's table.
pub(super) const UNPROVISIONED_MAX: usize = 1000;

/// Most client addresses whose unprovisioned sightings are counted at once.
const ADMISSION_MAX: usize = 10_000;

/// The window the unprovisioned admission rate is counted in.
const MINUTE: Duration = Duration::from_secs(60);

/// Most jobs written in one batch.
const BATCH_MAX: usize = 4096;

/// How long jobs nobody waits for (log entries, dispatcher states) gather into one batch: well
/// within the engine's own 500 ms between writes to disk, which bounds what a crash loses.
const GATHER: Duration = Duration::from_millis(20);

/// What phones may make the server remember.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ObservationLimits {
    /// Files kept per device.
    pub(crate) upload_max_files: usize,
    /// Bytes kept per device.
    pub(crate) upload_max_total_bytes: u64,
    /// New MACs one client address may add to the unprovisioned list per minute.
    pub(crate) unprovisioned_per_ip_per_min: u32,
    /// Provisioning log entries kept per device.
    pub(crate) log_entries: usize,
}

impl Default for ObservationLimits {
    /// The configuration's defaults.
    fn default() -> Self {
        ObservationLimits {
            upload_max_files: 20,
            upload_max_total_bytes: 8 << 20,
            unprovisioned_per_ip_per_min: 10,
            log_entries: 200,
        }
    }
}

type Ack = oneshot::Sender<Result<(), String>>;

/// One piece of work for the writer thread.
enum Job {
    /// A check-in whose applied revision, ETag or identity changed; published to the in-memory
    /// map once durable, then acknowledged.
    CheckIn(Mac, Box<CheckIn>, Option<Ack>),
    Upload(Mac, UploadMeta, Bytes, Ack),
    /// Dispatcher states (not flushed: states and cursor fall back together after a crash).
    Sync(Option<u64>, Vec<(Mac, Option<SyncState>)>),
    Flush(mpsc::Sender<Result<(), String>>),
    /// Check-ins to write again as they are (a key roll); acknowledged once durable.
    Reseal(Vec<(Mac, CheckIn)>, mpsc::Sender<Result<(), String>>),
    /// A provisioning log entry (its id is given by the writer).
    Log(Mac, Box<ProvLogEntry>),
    /// Forget a device's provisioning log (an unknown MAC that left the unprovisioned list).
    LogForget(Mac),
    /// Forget what this writer knows of a device's log and its entries not yet written, not
    /// the stored log (a shared engine removed it in the commit that deleted the device).
    LogReset(Mac),
    /// Answered once every job queued before it is written (not flushed).
    Barrier(mpsc::Sender<()>),
}

impl Job {
    /// Whether a caller waits for this job (an acknowledgement, a flush, a barrier).
    fn is_awaited(&self) -> bool {
        match self {
            Job::CheckIn(_, _, ack) => ack.is_some(),
            Job::Upload(..) | Job::Flush(_) | Job::Reseal(..) | Job::Barrier(_) => true,
            Job::Sync(..) | Job::Log(..) | Job::LogForget(_) | Job::LogReset(_) => false,
        }
    }
}

/// The writer thread and the in-memory observations.
pub(super) struct Observer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    checkins: Arc<RwLock<HashMap<Mac, CheckIn>>>,
    unprovisioned: Mutex<UnprovisionedList>,
    limits: ObservationLimits,
    /// The engine is shared by several servers: the unprovisioned list is saved as sightings,
    /// and upload quotas are kept by the engine.
    shared: bool,
}

/// The unprovisioned MACs, newest first, and how many new ones each address added lately.
#[derive(Default)]
struct UnprovisionedList {
    entries: VecDeque<Listed>,
    admission: HashMap<String, Admission>,
    /// Changed since it was last saved.
    dirty: bool,
}

/// One unprovisioned MAC in memory.
struct Listed {
    u: Unprovisioned,
    /// Sightings not yet added to a shared engine's table (0 with an engine of one server)...
    pending: u64,
    /// ...and when the first of them was.
    pending_since: String,
}

impl Listed {
    fn saved(u: Unprovisioned) -> Listed {
        Listed {
            u,
            pending: 0,
            pending_since: String::new(),
        }
    }
}

/// One client address's minute of new unprovisioned MACs.
struct Admission {
    start: Instant,
    added: u32,
    /// Sightings dropped since the last log line about this address.
    dropped: u64,
    logged: Option<Instant>,
}

impl UnprovisionedList {
    /// Whether `ip` may add a new MAC now; `Err(n)` when not and a log line is due, with the
    /// sightings dropped since the last one (at most one line per minute per address).
    fn admit(&mut self, ip: &str, per_min: u32, now: Instant) -> Result<bool, u64> {
        if self.admission.len() >= ADMISSION_MAX && !self.admission.contains_key(ip) {
            self.admission.retain(|_, a| now - a.start < MINUTE);
            if self.admission.len() >= ADMISSION_MAX {
                // Too many addresses at once: new ones wait rather than evict real entries.
                return Ok(false);
            }
        }
        let a = self.admission.entry(ip.to_string()).or_insert(Admission {
            start: now,
            added: 0,
            dropped: 0,
            logged: None,
        });
        if now - a.start >= MINUTE {
            a.start = now;
            a.added = 0;
        }
        if a.added < per_min {
            a.added += 1;
            return Ok(true);
        }
        a.dropped += 1;
        if a.logged.is_some_and(|t| now - t < MINUTE) {
            return Ok(false);
        }
        a.logged = Some(now);
        Err(std::mem::take(&mut a.dropped))
    }
}

impl UnprovisionedList {
    /// Puts `u` (a sighting: `count` is ignored) at the front: an entry of its MAC moves there
    /// with one more sighting, a new MAC is added if its address is within `per_min`. With
    /// `shared`, the sighting is also counted as not yet saved. `Ok`: the MACs that fell off
    /// the end; `Err`: dropped (with the count for a log line when one is due).
    fn see(
        &mut self,
        u: Unprovisioned,
        per_min: u32,
        now: Instant,
        shared: bool,
    ) -> Result<Vec<Mac>, Option<u64>> {
        let (count, pending, since) = match self.entries.iter().position(|e| e.u.mac == u.mac) {
            Some(i) => {
                let e = self.entries.remove(i).expect("the position found");
                let since = if e.pending == 0 {
                    u.at.clone()
                } else {
                    e.pending_since
                };
                (e.u.count + 1, e.pending + 1, since)
            }
            None => match self.admit(&u.ip, per_min, now) {
                Ok(true) => (1, 1, u.at.clone()),
                Ok(false) => return Err(None),
                Err(dropped) => return Err(Some(dropped)),
            },
        };
        let (pending, pending_since) = if shared {
            (pending, since)
        } else {
            (0, String::new())
        };
        self.entries.push_front(Listed {
            u: Unprovisioned { count, ..u },
            pending,
            pending_since,
        });
        self.dirty = true;
        // What falls off the end is older than every entry kept, each of which reaches a
        // shared table with a later time: its unsaved sightings would be trimmed there anyway.
        if self.entries.len() <= UNPROVISIONED_MAX {
            return Ok(Vec::new());
        }
        Ok(self
            .entries
            .split_off(UNPROVISIONED_MAX)
            .into_iter()
            .map(|e| e.u.mac)
            .collect())
    }

    /// See [`Observer::unprovisioned_to_save`].
    fn take_unsaved(&mut self, shared: bool) -> Option<Observations> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        if !shared {
            return Some(Observations {
                unprovisioned: Some(self.entries.iter().map(|e| e.u.clone()).collect()),
                ..Default::default()
            });
        }
        let seen: Vec<Sighting> = self
            .entries
            .iter_mut()
            .filter(|e| e.pending > 0)
            .map(|e| Sighting {
                last: Unprovisioned {
                    count: std::mem::take(&mut e.pending),
                    ..e.u.clone()
                },
                first_at: std::mem::take(&mut e.pending_since),
            })
            .collect();
        (!seen.is_empty()).then(|| Observations {
            unprovisioned_seen: seen,
            ..Default::default()
        })
    }

    /// See [`Observer::unprovisioned_unsaved`]: sightings of MACs still listed are counted
    /// as unsaved again (a MAC that left the list meanwhile loses them).
    fn give_back(&mut self, batch: Observations) {
        self.dirty = true;
        for s in batch.unprovisioned_seen {
            if let Some(e) = self.entries.iter_mut().find(|e| e.u.mac == s.last.mac) {
                e.pending += s.last.count;
                e.pending_since = s.first_at;
            }
        }
    }

    /// See [`Observer::unprovisioned_forget`].
    fn forget(&mut self, macs: &[Mac]) {
        let before = self.entries.len();
        let macs: HashSet<&Mac> = macs.iter().collect();
        self.entries.retain(|e| !macs.contains(&e.u.mac));
        if self.entries.len() != before {
            self.dirty = true;
        }
    }
}

fn engine_error(e: String) -> StoreError {
    StoreError::Engine(e)
}

impl Observer {
    pub(super) fn start(
        backend: Arc<dyn Backend>,
        sealer: Arc<Sealer>,
        loaded: Vec<(Mac, CheckIn)>,
        unprovisioned: Vec<Unprovisioned>,
        limits: ObservationLimits,
    ) -> Observer {
        let checkins = Arc::new(RwLock::new(loaded.into_iter().collect()));
        let shared = backend.shared();
        let (tx, rx) = mpsc::channel();
        let map = Arc::clone(&checkins);
        let thread = std::thread::Builder::new()
            .name("deskprov-observations".into())
            .spawn(move || write_loop(&*backend, &sealer, rx, &map, limits))
            .expect("spawning the observation writer");
        Observer {
            jobs: Some(tx),
            thread: Some(thread),
            checkins,
            unprovisioned: Mutex::new(UnprovisionedList {
                entries: unprovisioned
                    .into_iter()
                    .take(UNPROVISIONED_MAX)
                    .map(Listed::saved)
                    .collect(),
                ..UnprovisionedList::default()
            }),
            limits,
            shared,
        }
    }

    fn send(&self, job: Job) {
        let awaited = job.is_awaited();
        if let Some(tx) = &self.jobs {
            // The receiver lives as long as the thread, which outlives every sender.
            let _ = tx.send(job);
        }
        // A writer gathering sleeps without waiting on the channel (so that a log entry sent
        // meanwhile costs no wake-up): a job someone waits for wakes it.
        if awaited {
            if let Some(t) = &self.thread {
                t.thread().unpark();
            }
        }
    }

    /// Records a fetch: when and how the phone was seen at once, in memory (updated in place:
    /// a phone fetching again from where it was costs no allocation); `applied` (the main file
    /// it fetched) through the writer, resolving once it is durable. `None` when nothing needs
    /// writing.
    pub(super) fn check_in(
        &self,
        mac: &Mac,
        seen: Seen<'_>,
        applied: Option<Applied<'_>>,
    ) -> Option<oneshot::Receiver<Result<(), String>>> {
        fn set(field: &mut String, v: &str) {
            if field != v {
                field.clear();
                field.push_str(v);
            }
        }
        fn set_opt(field: &mut Option<String>, v: Option<&str>) {
            match (field.as_mut(), v) {
                (Some(f), Some(v)) => set(f, v),
                (_, v) => *field = v.map(str::to_string),
            }
        }
        let mut map = self.checkins.write().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(mac) {
            map.insert(mac.clone(), CheckIn::default());
        }
        let entry = map.get_mut(mac).expect("inserted above");
        set(&mut entry.at, seen.at);
        set(&mut entry.ip, seen.ip.text());
        set(&mut entry.user_agent, seen.user_agent);
        set_opt(&mut entry.firmware, seen.firmware);
        set_opt(&mut entry.model_seen, seen.model_seen);
        let a = applied.filter(|a| {
            a.revision != entry.applied_revision
                || Some(a.etag) != entry.applied_etag.as_deref()
                || a.identity != entry.applied_identity.as_ref()
        })?;
        let mut record = entry.clone();
        drop(map);
        record.applied_revision = a.revision;
        record.applied_etag = Some(a.etag.to_string());
        record.applied_identity = a.identity.cloned();
        let (ack, done) = oneshot::channel();
        self.send(Job::CheckIn(mac.clone(), Box::new(record), Some(ack)));
        Some(done)
    }

    /// Takes in check-ins other servers wrote (passwords opened): a newer applied revision
    /// replaces what this server knows of it, a later fetch replaces when and how it was seen.
    pub(super) fn merge_checkins(&self, list: Vec<(Mac, CheckIn)>) {
        if list.is_empty() {
            return;
        }
        let mut map = self.checkins.write().unwrap_or_else(|p| p.into_inner());
        for (mac, c) in list {
            let e = map.entry(mac).or_default();
            if c.applied_revision > e.applied_revision {
                e.applied_revision = c.applied_revision;
                e.applied_etag = c.applied_etag.clone();
                e.applied_identity = c.applied_identity.clone();
            }
            if c.at > e.at {
                e.at = c.at;
                e.ip = c.ip;
                e.user_agent = c.user_agent;
                e.firmware = c.firmware;
                e.model_seen = c.model_seen;
            }
        }
    }

    pub(super) fn checkin(&self, mac: &Mac) -> Option<CheckIn> {
        self.checkins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(mac)
            .cloned()
    }

    /// Marks a revision as applied without a fetch (written in the background).
    pub(super) fn mark_applied(&self, mac: &Mac, revision: u64) {
        let mut record = self.checkin(mac).unwrap_or_default();
        if record.applied_revision >= revision {
            return;
        }
        record.applied_revision = revision;
        self.send(Job::CheckIn(mac.clone(), Box::new(record), None));
    }

    pub(super) async fn put_upload(
        &self,
        mac: &Mac,
        name: &str,
        body: Bytes,
    ) -> Result<(), StoreError> {
        let meta = UploadMeta {
            name: name.to_string(),
            size: body.len() as u64,
            at: now(),
        };
        let (ack, done) = oneshot::channel();
        self.send(Job::Upload(mac.clone(), meta, body, ack));
        done.await
            .map_err(|_| engine_error("the observation writer stopped".into()))?
            .map_err(engine_error)
    }

    pub(super) fn save_sync(&self, cursor: Option<u64>, states: Vec<(Mac, Option<SyncState>)>) {
        self.send(Job::Sync(cursor, states));
    }

    /// Writes every remembered check-in again (its identity sealed under the current key) and
    /// waits until that is durable: part of a key roll.
    pub(super) fn reseal_checkins(&self) -> Result<(), StoreError> {
        let all: Vec<(Mac, CheckIn)> = {
            let map = self.checkins.read().unwrap_or_else(|p| p.into_inner());
            map.iter()
                .filter(|(_, c)| c.applied_identity.is_some())
                .map(|(m, c)| (m.clone(), c.clone()))
                .collect()
        };
        let (tx, rx) = mpsc::channel();
        self.send(Job::Reseal(all, tx));
        rx.recv()
            .map_err(|_| engine_error("the observation writer stopped".into()))?
            .map_err(engine_error)
    }

    /// Waits until every job queued before this call is written and flushed.
    pub(super) fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = mpsc::channel();
        self.send(Job::Flush(tx));
        rx.recv()
            .map_err(|_| engine_error("the observation writer stopped".into()))?
            .map_err(engine_error)
    }

    /// Adds an entry to a device's provisioning log, in the background.
    pub(super) fn log(&self, mac: &Mac, entry: ProvLogEntry) {
        self.send(Job::Log(mac.clone(), Box::new(entry)));
    }

    /// Forgets a device's provisioning log, in the background.
    pub(super) fn log_forget(&self, mac: &Mac) {
        self.send(Job::LogForget(mac.clone()));
    }

    /// Forgets what the writer knows of a device's log and its entries not yet written, not
    /// the stored log: a shared engine removed it in the commit that deleted the device (here or
    /// on another server).
    pub(super) fn log_reset(&self, mac: &Mac) {
        self.send(Job::LogReset(mac.clone()));
    }

    /// Waits until every job queued before this call is written (not flushed): a read of the
    /// engine after it sees them.
    pub(super) fn barrier(&self) {
        let (tx, rx) = mpsc::channel();
        self.send(Job::Barrier(tx));
        let _ = rx.recv();
    }

    /// Remembers an unknown MAC (bounded, newest first, one entry per MAC). A MAC not in the
    /// list yet is added only while `ip` is within its rate of new MACs; past it the sighting
    /// is dropped (and counted in a log line at most once a minute per address). Returns
    /// whether the MAC is in the list now, and the MACs that fell off its end.
    pub(super) fn unprovisioned_seen(
        &self,
        mac: &Mac,
        file: &str,
        ip: &str,
        user_agent: &str,
    ) -> (bool, Vec<Mac>) {
        let per_min = self.limits.unprovisioned_per_ip_per_min;
        let sighting = Unprovisioned {
            mac: mac.clone(),
            file: file.to_string(),
            ip: ip.to_string(),
            user_agent: user_agent.chars().take(256).collect(),
            at: now(),
            count: 1,
        };
        let mut l = self.unprovisioned.lock().unwrap_or_else(|p| p.into_inner());
        match l.see(sighting, per_min, Instant::now(), self.shared) {
            Ok(evicted) => (true, evicted),
            Err(None) => (false, Vec::new()),
            Err(Some(dropped)) => {
                drop(l);
                tracing::warn!(%ip, dropped, "more than {per_min} new unprovisioned MACs per minute from {ip}; their sightings are dropped");
                (false, Vec::new())
            }
        }
    }

    /// What to save of the unprovisioned list, when anything: for an engine of one server the
    /// whole list (when it changed since the last call), for a shared one the sightings made
    /// since the last call (taken: [`Observer::unprovisioned_unsaved`] gives them back).
    pub(super) fn unprovisioned_to_save(&self) -> Option<Observations> {
        let mut l = self.unprovisioned.lock().unwrap_or_else(|p| p.into_inner());
        l.take_unsaved(self.shared)
    }

    /// Gives back what [`Observer::unprovisioned_to_save`] took when saving it failed, so the
    /// next save carries it.
    pub(super) fn unprovisioned_unsaved(&self, batch: Observations) {
        let mut l = self.unprovisioned.lock().unwrap_or_else(|p| p.into_inner());
        l.give_back(batch);
    }

    /// Takes MACs that became devices off the list (their unsaved sightings with them).
    pub(super) fn unprovisioned_forget(&self, macs: &[Mac]) {
        if macs.is_empty() {
            return;
        }
        let mut l = self.unprovisioned.lock().unwrap_or_else(|p| p.into_inner());
        l.forget(macs);
    }

    /// Whether `mac` is on this server's list.
    pub(super) fn is_unprovisioned(&self, mac: &Mac) -> bool {
        let l = self.unprovisioned.lock().unwrap_or_else(|p| p.into_inner());
        l.entries.iter().any(|e| &e.u.mac == mac)
    }

    /// This server's list, newest first.
    pub(super) fn unprovisioned(&self) -> Vec<Unprovisioned> {
        let l = self.unprovisioned.lock().unwrap_or_else(|p| p.into_inner());
        l.entries.iter().map(|e| e.u.clone()).collect()
    }
}

impl Drop for Observer {
    /// Closes the queue and waits for the writer to finish what was queued.
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Check-ins as the backend stores them: the identity's password sealed.
fn sealed(sealer: &Sealer, checkins: &[(Mac, CheckIn)]) -> Vec<(Mac, CheckIn)> {
    checkins
        .iter()
        .map(|(m, c)| {
            let mut c = c.clone();
            if let Some(id) = &mut c.applied_identity {
                id.password = Secret::new(sealer.seal(id.password.expose()));
            }
            (m.clone(), c)
        })
        .collect()
}

/// An upload's time, for ordering (unparseable ones first, as the oldest).
fn upload_time(at: &str) -> i128 {
    time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp_nanos())
        .unwrap_or(i128::MIN)
}

/// A device's uploads, oldest first: from the writer's index, or its prefix the first time.
fn kept_uploads<'i>(
    index: &'i mut HashMap<Mac, Vec<UploadMeta>>,
    backend: &dyn Backend,
    mac: &Mac,
) -> Result<&'i mut Vec<UploadMeta>, StoreError> {
    Ok(match index.entry(mac.clone()) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(e) => {
            let mut list = backend.uploads_of(mac)?;
            list.sort_by_cached_key(|u| upload_time(&u.at));
            e.insert(list)
        }
    })
}

/// Adds `new` to a device's uploads (`kept`, oldest first): a file of the same name is
/// replaced, then the oldest go until both quotas hold. Returns the names to remove.
fn make_room(
    kept: &mut Vec<UploadMeta>,
    new: &UploadMeta,
    limits: &ObservationLimits,
) -> Vec<String> {
    kept.retain(|u| u.name != new.name);
    let mut total: u64 = kept.iter().map(|u| u.size).sum();
    let mut evicted = Vec::new();
    while !kept.is_empty()
        && (kept.len() >= limits.upload_max_files
            || total + new.size > limits.upload_max_total_bytes)
    {
        let old = kept.remove(0);
        total -= old.size;
        evicted.push(old.name);
    }
    kept.push(new.clone());
    evicted
}

/// What a shared engine does with one device's uploads in the transaction that stores new ones
/// ([`quota_plan`]).
#[derive(Debug, PartialEq)]
pub(super) struct QuotaPlan {
    /// The stored files to remove (oldest beyond the quota).
    pub(super) remove: Vec<String>,
    /// The new uploads to store (indexes into `new`): the last of each name that stays.
    pub(super) store: Vec<usize>,
}

/// Keeps one device within `quota` as `make_room` does, for a shared engine: `stored` are the
/// device's files as the engine holds them (any order; read under the device's lock), `new`
/// the uploads of one batch, in the order they came. Each new upload is added in turn, the
/// oldest going until both bounds hold; the new one always stays.
pub(super) fn quota_plan(
    mut stored: Vec<UploadMeta>,
    new: &[&UploadMeta],
    quota: UploadQuota,
) -> QuotaPlan {
    let limits = ObservationLimits {
        upload_max_files: quota.max_files,
        upload_max_total_bytes: quota.max_total_bytes,
        ..ObservationLimits::default()
    };
    stored.sort_by_cached_key(|u| upload_time(&u.at));
    let before: Vec<String> = stored.iter().map(|u| u.name.clone()).collect();
    let mut kept = stored;
    for n in new {
        make_room(&mut kept, n, &limits);
    }
    let remove = before
        .into_iter()
        .filter(|name| !kept.iter().any(|u| &u.name == name))
        .collect();
    // `make_room` replaces a name in place: a kept name uploaded in the batch is its last
    // upload (a kept name that was not is a stored file left as it was).
    let mut store: Vec<usize> = kept
        .iter()
        .filter_map(|k| new.iter().rposition(|n| n.name == k.name))
        .collect();
    store.sort_unstable();
    QuotaPlan { remove, store }
}

/// What the writer knows of one logging device's provisioning log.
#[derive(Debug, Default)]
struct DeviceLog {
    /// Entries stored or in the batch being written.
    count: usize,
    /// Its newest entry, to fold the same request again into.
    newest: Option<Newest>,
}

/// A device's newest log entry, in a few bytes: the entry itself is not kept in memory.
#[derive(Debug)]
struct Newest {
    id: u64,
    fingerprint: u64,
    /// Its `at`, as nanoseconds since the epoch.
    at: i128,
    count: u32,
}

fn rfc3339_nanos(at: &str) -> Option<i128> {
    time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp_nanos())
}

fn rfc3339_of(nanos: i128) -> Option<String> {
    let nanos = u64::try_from(nanos).ok()?;
    Some(super::rfc3339_of(
        std::time::UNIX_EPOCH + Duration::from_nanos(nanos),
    ))
}

/// Folds `entry` (whose [`ProvLogEntry::fingerprint`] is `fingerprint`) into the device's
/// newest entry when it is the same request again (returns the id to write it under, with
/// `count` and `last_at` set); `None` when it is a new entry.
fn fold(log: &mut DeviceLog, entry: &mut ProvLogEntry, fingerprint: u64) -> Option<u64> {
    let newest = log.newest.as_mut()?;
    if newest.fingerprint != fingerprint || newest.count == u32::MAX {
        return None;
    }
    let first = rfc3339_of(newest.at)?;
    newest.count += 1;
    entry.id = newest.id;
    entry.last_at = Some(std::mem::replace(&mut entry.at, first));
    entry.count = Some(newest.count);
    Some(newest.id)
}

/// Keeps each device that logs in `batch` within `max` entries: `logs` holds every logging
/// device's entry count (read from the engine the first time); what is over goes from the
/// engine's oldest (`oldest(mac, n)`), then from the batch's own oldest new entries (never an
/// entry of `rewritten`, the ids stored before this batch that it writes again with a new
/// `count`). Only counts and the newest entry's id are kept in memory, never the entries, so
/// the index stays small with many devices.
fn trim_logs(
    batch: &mut Observations,
    logs: &mut HashMap<Mac, DeviceLog>,
    rewritten: &HashSet<u64>,
    max: usize,
    mut oldest: impl FnMut(&Mac, usize) -> Result<Vec<u64>, StoreError>,
) -> Result<(), StoreError> {
    let max = max.max(1);
    let mut in_batch: HashMap<Mac, usize> = HashMap::new();
    for (m, e) in &batch.log_entries {
        if !rewritten.contains(&e.id) {
            *in_batch.entry(m.clone()).or_default() += 1;
        }
    }
    for (mac, new) in in_batch {
        let Some(log) = logs.get_mut(&mac) else {
            continue;
        };
        let count = &mut log.count;
        if *count <= max {
            continue;
        }
        let over = *count - max;
        let stored = count.saturating_sub(new);
        let ids = oldest(&mac, over.min(stored))?;
        let mut skip = over - ids.len();
        *count -= ids.len();
        batch
            .log_removals
            .extend(ids.into_iter().map(|id| (mac.clone(), id)));
        batch.log_entries.retain(|(m, e)| {
            if m == &mac && skip > 0 && !rewritten.contains(&e.id) {
                skip -= 1;
                *count -= 1;
                false
            } else {
                true
            }
        });
    }
    Ok(())
}

/// Drops what the writer holds of `mac`'s log: the batch's entries for it (queued before the
/// job that forgets it) and its count and newest entry.
fn forget_pending(
    batch: &mut Observations,
    positions: &mut HashMap<u64, usize>,
    logs: &mut HashMap<Mac, DeviceLog>,
    mac: &Mac,
) {
    batch.log_entries.retain(|(m, _)| m != mac);
    *positions = batch
        .log_entries
        .iter()
        .enumerate()
        .map(|(i, (_, e))| (e.id, i))
        .collect();
    logs.remove(mac);
}

/// The next log entry id: the time in microseconds, or one more than the last when the clock
/// has not moved (or went back).
fn next_log_id(last: u64) -> u64 {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    micros.max(last + 1)
}

fn write_loop(
    backend: &dyn Backend,
    sealer: &Sealer,
    rx: mpsc::Receiver<Job>,
    checkins: &RwLock<HashMap<Mac, CheckIn>>,
    limits: ObservationLimits,
) {
    // Every uploading device's files, oldest first: only this thread writes uploads.
    let mut uploads: HashMap<Mac, Vec<UploadMeta>> = HashMap::new();
    // Every logging device's entry count and newest entry: only this thread writes the log.
    let mut logs: HashMap<Mac, DeviceLog> = HashMap::new();
    let mut last_log_id = 0;
    let shared = backend.shared();
    while let Ok(first) = rx.recv() {
        // Work nobody waits for gathers for up to GATHER, so a batch folds many fetches of the
        // same phones into one write each; a job someone waits for ends the gathering.
        let mut urgent = first.is_awaited();
        let mut jobs = vec![first];
        let until = Instant::now() + GATHER;
        while jobs.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(j) => {
                    urgent |= j.is_awaited();
                    jobs.push(j);
                }
                Err(mpsc::TryRecvError::Empty) if !urgent => {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    // Woken early by a job someone waits for (`Observer::send`).
                    std::thread::park_timeout(left);
                }
                Err(_) => break,
            }
        }
        let mut batch = Observations::default();
        let mut durable = false;
        let mut acks = Vec::new();
        let mut flushes = Vec::new();
        let mut barriers = Vec::new();
        // Where each log entry of the batch is, by id; the stored ones it writes again.
        let mut positions: HashMap<u64, usize> = HashMap::new();
        let mut rewritten: HashSet<u64> = HashSet::new();
        for job in jobs {
            match job {
                Job::CheckIn(mac, c, ack) => {
                    durable |= ack.is_some();
                    batch.checkins.push((mac, *c));
                    acks.extend(ack);
                }
                Job::Upload(mac, meta, body, ack) if shared => {
                    // The engine keeps the quota, in the transaction that stores the upload.
                    batch.upload_quota = Some(UploadQuota {
                        max_files: limits.upload_max_files,
                        max_total_bytes: limits.upload_max_total_bytes,
                    });
                    durable = true;
                    batch.uploads.push((mac, meta, body));
                    acks.push(ack);
                }
                Job::Upload(mac, meta, body, ack) => {
                    let kept = match kept_uploads(&mut uploads, backend, &mac) {
                        Ok(k) => k,
                        Err(e) => {
                            let _ = ack.send(Err(e.to_string()));
                            continue;
                        }
                    };
                    let evicted = make_room(kept, &meta, &limits);
                    if !evicted.is_empty() {
                        tracing::info!(%mac, evicted = evicted.len(), "upload quota: the device's oldest uploads are removed");
                    }
                    // Re-uploaded after an eviction earlier in this batch: keep the new one.
                    batch
                        .upload_removals
                        .retain(|(m, n)| m != &mac || n != &meta.name);
                    batch
                        .upload_removals
                        .extend(evicted.into_iter().map(|n| (mac.clone(), n)));
                    durable = true;
                    batch.uploads.push((mac, meta, body));
                    acks.push(ack);
                }
                Job::Sync(cursor, states) => {
                    batch.sync_cursor = cursor.or(batch.sync_cursor);
                    batch.sync_states.extend(states);
                }
                Job::Flush(done) => {
                    durable = true;
                    flushes.push(done);
                }
                Job::Reseal(all, done) => {
                    durable = true;
                    batch.checkins.extend(all);
                    flushes.push(done);
                }
                Job::Log(mac, mut entry) => {
                    let log = match logs.entry(mac.clone()) {
                        Entry::Occupied(e) => e.into_mut(),
                        // A shared engine keeps the bound itself: no count to read.
                        Entry::Vacant(e) if shared => e.insert(DeviceLog {
                            count: 0,
                            newest: None,
                        }),
                        Entry::Vacant(e) => match backend.log_oldest(&mac, usize::MAX) {
                            Ok(ids) => e.insert(DeviceLog {
                                count: ids.len(),
                                newest: None,
                            }),
                            Err(e) => {
                                tracing::error!(error = %e, "reading a provisioning log failed");
                                continue;
                            }
                        },
                    };
                    let fingerprint = entry.fingerprint();
                    if let Some(id) = fold(log, &mut entry, fingerprint) {
                        // In this batch already: it replaces itself; else it is written again.
                        match positions.get(&id) {
                            Some(&i) => batch.log_entries[i].1 = *entry,
                            None => {
                                rewritten.insert(id);
                                positions.insert(id, batch.log_entries.len());
                                batch.log_entries.push((mac, *entry));
                            }
                        }
                        continue;
                    }
                    log.count += 1;
                    last_log_id = next_log_id(last_log_id);
                    entry.id = last_log_id;
                    log.newest = rfc3339_nanos(&entry.at).map(|at| Newest {
                        id: entry.id,
                        fingerprint,
                        at,
                        count: 1,
                    });
                    positions.insert(entry.id, batch.log_entries.len());
                    batch.log_entries.push((mac, *entry));
                }
                Job::LogForget(mac) => {
                    if let Ok(ids) = backend.log_oldest(&mac, usize::MAX) {
                        batch
                            .log_removals
                            .extend(ids.into_iter().map(|id| (mac.clone(), id)));
                    }
                    forget_pending(&mut batch, &mut positions, &mut logs, &mac);
                }
                // The engine removed the stored log itself (a shared one, in the commit that
                // deleted the device).
                Job::LogReset(mac) => forget_pending(&mut batch, &mut positions, &mut logs, &mac),
                Job::Barrier(done) => barriers.push(done),
            }
        }
        if shared {
            // Several servers log for one device: the engine keeps its newest entries within
            // the bound, in the batch's transaction (a count here would miss the others').
            if !batch.log_entries.is_empty() {
                batch.log_max = Some(limits.log_entries.max(1));
            }
        } else if let Err(e) = trim_logs(
            &mut batch,
            &mut logs,
            &rewritten,
            limits.log_entries,
            |m, n| backend.log_oldest(m, n),
        ) {
            tracing::error!(error = %e, "trimming a provisioning log failed");
        }
        // The map is updated with the plain check-ins; the backend gets them sealed.
        let plain = std::mem::take(&mut batch.checkins);
        batch.checkins = sealed(sealer, &plain);
        let result = if batch.is_empty() {
            backend.flush()
        } else {
            backend.observe(&batch, durable)
        };
        match &result {
            Ok(()) => {
                let mut map = checkins.write().unwrap_or_else(|p| p.into_inner());
                for (mac, c) in plain {
                    let entry = map.entry(mac).or_insert_with(|| c.clone());
                    entry.applied_revision = c.applied_revision;
                    entry.applied_etag = c.applied_etag;
                    entry.applied_identity = c.applied_identity;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "writing phone observations failed");
                // The index ran ahead of the disk: read those devices' prefixes again.
                for (mac, _, _) in &batch.uploads {
                    uploads.remove(mac);
                }
                for (mac, _) in &batch.log_entries {
                    logs.remove(mac);
                }
            }
        }
        let result = result.map_err(|e| e.to_string());
        for ack in acks {
            let _ = ack.send(result.clone());
        }
        for f in flushes {
            let _ = f.send(result.clone());
        }
        for b in barriers {
            let _ = b.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(name: &str, size: u64) -> UploadMeta {
        UploadMeta {
            name: name.into(),
            size,
            at: now(),
        }
    }

    fn names(kept: &[UploadMeta]) -> Vec<&str> {
        kept.iter().map(|u| u.name.as_str()).collect()
    }

    #[test]
    fn an_upload_over_a_quota_removes_the_oldest_until_it_fits() {
        let limits = ObservationLimits {
            upload_max_files: 3,
            upload_max_total_bytes: 100,
            unprovisioned_per_ip_per_min: 10,
            log_entries: 200,
        };
        let mut kept = vec![up("a", 10), up("b", 10), up("c", 10)];
        assert_eq!(make_room(&mut kept, &up("d", 10), &limits), ["a"]);
        assert_eq!(names(&kept), ["b", "c", "d"]);
        assert_eq!(make_room(&mut kept, &up("e", 85), &limits), ["b", "c"]);
        assert_eq!(names(&kept), ["d", "e"]);
        // Same name: replaced in place of the old one, nothing else goes.
        assert!(make_room(&mut kept, &up("d", 15), &limits).is_empty());
        assert_eq!(names(&kept), ["e", "d"]);
    }

    fn entry(id: u64) -> ProvLogEntry {
        ProvLogEntry {
            id,
            at: now(),
            ip: "192.0.2.1".into(),
            method: "GET".into(),
            file: "x.cfg".into(),
            user_agent: String::new(),
            status: 200,
            bytes: 0,
            reason: None,
            count: None,
            last_at: None,
        }
    }

    #[test]
    fn a_log_over_its_bound_loses_the_engines_oldest_then_the_batchs() {
        let a = Mac::parse("805ec0000001").unwrap();
        let b = Mac::parse("805ec0000002").unwrap();
        // a: 3 stored (ids 1..=3) + 2 new; b: 0 stored + 4 new; bound 3.
        let mut batch = Observations::default();
        for id in [10, 11] {
            batch.log_entries.push((a.clone(), entry(id)));
        }
        for id in [20, 21, 22, 23] {
            batch.log_entries.push((b.clone(), entry(id)));
        }
        let mut logs = logs_of(&[(&a, 5), (&b, 4)]);
        let stored: HashMap<Mac, Vec<u64>> = [(a.clone(), vec![1, 2, 3])].into();
        trim_logs(&mut batch, &mut logs, &HashSet::new(), 3, |m, n| {
            Ok(stored
                .get(m)
                .map(|v| v.iter().take(n).copied().collect())
                .unwrap_or_default())
        })
        .unwrap();
        let mut removed = batch.log_removals.clone();
        removed.sort();
        assert_eq!(removed, [(a.clone(), 1), (a.clone(), 2)]);
        let kept: Vec<u64> = batch.log_entries.iter().map(|(_, e)| e.id).collect();
        assert_eq!(kept, [10, 11, 21, 22, 23], "b's oldest new entry goes");
        assert_eq!((logs[&a].count, logs[&b].count), (3, 3));
        // Within the bound nothing goes.
        let mut batch = Observations::default();
        batch.log_entries.push((a.clone(), entry(12)));
        let mut logs = logs_of(&[(&a, 3)]);
        trim_logs(&mut batch, &mut logs, &HashSet::new(), 3, |_, _| {
            panic!("not read")
        })
        .unwrap();
        assert!(batch.log_removals.is_empty());
    }

    fn logs_of(counts: &[(&Mac, usize)]) -> HashMap<Mac, DeviceLog> {
        counts
            .iter()
            .map(|(m, count)| {
                let log = DeviceLog {
                    count: *count,
                    newest: None,
                };
                ((*m).clone(), log)
            })
            .collect()
    }

    #[test]
    fn an_entry_written_again_with_its_new_count_is_neither_counted_nor_trimmed_as_new() {
        let a = Mac::parse("805ec0000001").unwrap();
        // 3 stored (ids 1..=3, the newest folded into again: 3) + 2 new; bound 3.
        let mut batch = Observations::default();
        for id in [3, 10, 11] {
            batch.log_entries.push((a.clone(), entry(id)));
        }
        let mut logs = logs_of(&[(&a, 5)]);
        trim_logs(&mut batch, &mut logs, &[3].into(), 3, |_, n| {
            Ok([1, 2, 3].into_iter().take(n).collect())
        })
        .unwrap();
        assert_eq!(batch.log_removals, [(a.clone(), 1), (a.clone(), 2)]);
        let kept: Vec<u64> = batch.log_entries.iter().map(|(_, e)| e.id).collect();
        assert_eq!(kept, [3, 10, 11]);
        assert_eq!(logs[&a].count, 3);
    }

    #[test]
    fn the_same_request_again_folds_into_the_newest_entry_and_another_starts_a_new_one() {
        let mut log = DeviceLog::default();
        let mut first = entry(0);
        first.at = "2026-12-04T01:00:00.5Z".into();
        let print = first.fingerprint();
        assert_eq!(
            fold(&mut log, &mut first, print),
            None,
            "nothing to fold into"
        );
        log.newest = Some(Newest {
            id: 7,
            fingerprint: print,
            at: rfc3339_nanos(&first.at).unwrap(),
            count: 1,
        });
        for (n, at) in [(2, "2026-12-04T01:00:01Z"), (3, "2026-12-04T01:00:02Z")] {
            let mut again = entry(0);
            again.at = at.into();
            let print = again.fingerprint();
            assert_eq!(fold(&mut log, &mut again, print), Some(7));
            assert_eq!(again.id, 7);
            assert_eq!(again.count, Some(n));
            assert_eq!(again.last_at.as_deref(), Some(at));
            assert_eq!(
                again.at, "2026-12-04T01:00:00.5Z",
                "the first request's time"
            );
        }
        for other in [
            ProvLogEntry {
                status: 304,
                ..entry(0)
            },
            ProvLogEntry {
                ip: "192.0.2.2".into(),
                ..entry(0)
            },
            ProvLogEntry {
                reason: Some(crate::store::Refusal::NoCredentials),
                ..entry(0)
            },
        ] {
            let mut other = other;
            let print = other.fingerprint();
            assert_eq!(fold(&mut log, &mut other, print), None, "{other:?}");
        }
    }

    #[test]
    fn log_ids_increase_even_when_the_clock_does_not() {
        let a = next_log_id(0);
        assert!(a > 1_600_000_000_000_000, "microseconds since the epoch");
        assert_eq!(next_log_id(u64::MAX - 1), u64::MAX);
        assert!(next_log_id(a) > a);
    }

    #[test]
    fn upload_times_order_subsecond_stamps() {
        assert!(upload_time("2026-01-01T00:00:00.5Z") > upload_time("2026-01-01T00:00:00.49999Z"));
        assert!(upload_time("garbage") < upload_time("1970-01-01T00:00:00Z"));
    }

    fn quota(max_files: usize, max_total_bytes: u64) -> UploadQuota {
        UploadQuota {
            max_files,
            max_total_bytes,
        }
    }

    fn at(name: &str, size: u64, at: &str) -> UploadMeta {
        UploadMeta {
            name: name.into(),
            size,
            at: at.into(),
        }
    }

    #[test]
    fn a_shared_engines_quota_plan_removes_the_stored_oldest_and_stores_the_new() {
        // Stored in no particular order (as a table gives them); 3 files at most.
        let stored = vec![
            at("c", 10, "2026-01-01T00:00:03Z"),
            at("a", 10, "2026-01-01T00:00:01Z"),
            at("b", 10, "2026-01-01T00:00:02Z"),
        ];
        let d = at("d", 10, "2026-01-01T00:00:04Z");
        let plan = quota_plan(stored.clone(), &[&d], quota(3, 100));
        assert_eq!(
            plan,
            QuotaPlan {
                remove: vec!["a".into()],
                store: vec![0]
            }
        );
        // Within both bounds: nothing goes.
        let plan = quota_plan(stored.clone(), &[&d], quota(4, 100));
        assert!(plan.remove.is_empty());
        // Over the bytes: the oldest go until the new one fits.
        let big = at("e", 85, "2026-01-01T00:00:04Z");
        let plan = quota_plan(stored, &[&big], quota(20, 100));
        assert_eq!(plan.remove, ["a", "b"]);
    }

    #[test]
    fn a_batch_of_uploads_is_planned_in_turn_and_one_evicted_in_it_is_not_stored() {
        let stored = vec![at("a", 10, "2026-01-01T00:00:01Z")];
        let (x, y, x2, z) = (
            at("x", 10, "2026-01-01T00:00:02Z"),
            at("y", 10, "2026-01-01T00:00:03Z"),
            at("x", 10, "2026-01-01T00:00:04Z"),
            at("z", 10, "2026-01-01T00:00:05Z"),
        );
        // 2 files at most: x evicts nothing (a, x), y evicts a (x, y), x again replaces x
        // (y, x), z evicts y (x, z).
        let plan = quota_plan(stored, &[&x, &y, &x2, &z], quota(2, 100));
        assert_eq!(plan.remove, ["a"]);
        assert_eq!(plan.store, [2, 3], "the second x and z; y was evicted by z");
    }

    fn sighting(mac: &Mac, at: &str) -> Unprovisioned {
        Unprovisioned {
            mac: mac.clone(),
            file: format!("{mac}.cfg"),
            ip: "192.0.2.1".into(),
            user_agent: "ua".into(),
            at: at.into(),
            count: 1,
        }
    }

    #[test]
    fn a_shared_engine_is_given_the_sightings_since_the_last_save_once() {
        let (a, b) = (
            Mac::parse("805ec0000001").unwrap(),
            Mac::parse("805ec0000002").unwrap(),
        );
        let mut l = UnprovisionedList::default();
        let t = Instant::now();
        for (m, when) in [(&a, "01"), (&b, "02"), (&a, "03"), (&a, "04")] {
            let at = format!("2026-01-01T00:00:{when}Z");
            assert_eq!(l.see(sighting(m, &at), 10, t, true), Ok(Vec::new()));
        }
        let saved = l.take_unsaved(true).expect("something to save");
        assert!(saved.unprovisioned.is_none(), "never the whole list");
        let seen: Vec<(&str, u64, &str, &str)> = saved
            .unprovisioned_seen
            .iter()
            .map(|s| {
                let last = &s.last;
                (
                    last.mac.as_str(),
                    last.count,
                    last.at.as_str(),
                    s.first_at.as_str(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (
                    "805ec0000001",
                    3,
                    "2026-01-01T00:00:04Z",
                    "2026-01-01T00:00:01Z"
                ),
                (
                    "805ec0000002",
                    1,
                    "2026-01-01T00:00:02Z",
                    "2026-01-01T00:00:02Z"
                ),
            ],
            "newest first, counts since the last save"
        );
        assert!(l.take_unsaved(true).is_none(), "nothing new since");
        // The list itself keeps the totals.
        assert_eq!(l.entries[0].u.count, 3);
        // One more of a: only that one goes next; a failed save gives its sightings back.
        l.see(sighting(&a, "2026-01-01T00:00:05Z"), 10, t, true)
            .unwrap();
        let next = l.take_unsaved(true).unwrap();
        assert_eq!(next.unprovisioned_seen.len(), 1);
        assert_eq!(next.unprovisioned_seen[0].last.count, 1);
        l.give_back(next);
        l.see(sighting(&a, "2026-01-01T00:00:06Z"), 10, t, true)
            .unwrap();
        let again = l.take_unsaved(true).unwrap();
        let s = &again.unprovisioned_seen[0];
        assert_eq!(
            (s.last.count, s.first_at.as_str()),
            (2, "2026-01-01T00:00:05Z")
        );
    }

    #[test]
    fn an_engine_of_one_server_is_given_the_whole_list_when_it_changed() {
        let a = Mac::parse("805ec0000001").unwrap();
        let mut l = UnprovisionedList::default();
        l.see(
            sighting(&a, "2026-01-01T00:00:01Z"),
            10,
            Instant::now(),
            false,
        )
        .unwrap();
        let saved = l.take_unsaved(false).unwrap();
        assert!(saved.unprovisioned_seen.is_empty());
        assert_eq!(saved.unprovisioned.unwrap()[0].mac, a);
        assert!(l.take_unsaved(false).is_none(), "unchanged since");
    }

    #[test]
    fn a_mac_that_became_a_device_leaves_the_list_with_its_unsaved_sightings() {
        let (a, b) = (
            Mac::parse("805ec0000001").unwrap(),
            Mac::parse("805ec0000002").unwrap(),
        );
        for shared in [false, true] {
            let mut l = UnprovisionedList::default();
            let t = Instant::now();
            l.see(sighting(&a, "2026-01-01T00:00:01Z"), 10, t, shared)
                .unwrap();
            l.see(sighting(&b, "2026-01-01T00:00:02Z"), 10, t, shared)
                .unwrap();
            l.take_unsaved(shared);
            l.see(sighting(&a, "2026-01-01T00:00:03Z"), 10, t, shared)
                .unwrap();
            l.forget(std::slice::from_ref(&a));
            let macs: Vec<&Mac> = l.entries.iter().map(|e| &e.u.mac).collect();
            assert_eq!(macs, [&b]);
            let saved = l.take_unsaved(shared);
            if shared {
                assert!(saved.is_none(), "a's unsaved sighting went with it");
            } else {
                let list = saved.expect("the list changed").unprovisioned.unwrap();
                assert_eq!(list.len(), 1, "saved without a");
            }
            l.forget(std::slice::from_ref(&a));
            assert!(
                l.take_unsaved(shared).is_none(),
                "forgetting what is not listed changes nothing"
            );
        }
    }

    #[test]
    fn one_address_adds_at_most_its_rate_of_new_macs_and_logs_once() {
        let mut l = UnprovisionedList::default();
        let t = Instant::now();
        assert_eq!(l.admit("192.0.2.1", 2, t), Ok(true));
        assert_eq!(l.admit("192.0.2.1", 2, t), Ok(true));
        assert_eq!(l.admit("192.0.2.1", 2, t), Err(1));
        assert_eq!(l.admit("192.0.2.1", 2, t), Ok(false));
        assert_eq!(l.admit("192.0.2.2", 2, t), Ok(true), "another address");
        let later = t + MINUTE;
        assert_eq!(l.admit("192.0.2.1", 2, later), Ok(true));
        assert_eq!(l.admit("192.0.2.1", 2, later), Ok(true));
        // A minute on, the next line counts the sighting dropped silently before, and this one.
        assert_eq!(l.admit("192.0.2.1", 2, later), Err(2));
    }
}
