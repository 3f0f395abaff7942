//! What phones are seen doing, and the dispatcher's work, written off the async workers.
//!
//! Phone fetches and the sync dispatcher never call the engine themselves: they hand a [`Job`]
//! to one writer thread, which takes every job queued at that moment, writes them as one batch
//! and, if any job needs it, flushes once for all of them (group commit). A check-in that
//! records a newly applied revision, and an upload, are answered only after that flush, so the
//! phone's fetch that confirms a change is never lost once the server has counted it.
//!
//! In memory, under locks held for a map operation and never across I/O: the last check-in of
//! every device and the bounded list of unprovisioned MACs.

use std::collections::{HashMap, VecDeque};
use std::sync::{mpsc, Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use axum::body::Bytes;
use tokio::sync::oneshot;

use super::backend::{Backend, Observations};
use super::seal::Sealer;
use super::{now, Applied, CheckIn, StoreError, SyncState, Unprovisioned, UploadMeta};
use crate::domain::{Mac, Secret};

/// Most unprovisioned MACs remembered (newest first).
const UNPROVISIONED_MAX: usize = 1000;

/// Most jobs written in one batch.
const BATCH_MAX: usize = 4096;

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
}

/// The writer thread and the in-memory observations.
pub(super) struct Observer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    checkins: Arc<RwLock<HashMap<Mac, CheckIn>>>,
    unprovisioned: Mutex<VecDeque<Unprovisioned>>,
}

fn engine_error(e: String) -> StoreError {
    StoreError::Engine(e)
}

impl Observer {
    pub(super) fn start(
        backend: Arc<dyn Backend>,
        sealer: Arc<Sealer>,
        loaded: Vec<(Mac, CheckIn)>,
    ) -> Observer {
        let checkins = Arc::new(RwLock::new(loaded.into_iter().collect()));
        let (tx, rx) = mpsc::channel();
        let map = Arc::clone(&checkins);
        let thread = std::thread::Builder::new()
            .name("deskprov-observations".into())
            .spawn(move || write_loop(&*backend, &sealer, rx, &map))
            .expect("spawning the observation writer");
        Observer {
            jobs: Some(tx),
            thread: Some(thread),
            checkins,
            unprovisioned: Mutex::new(VecDeque::new()),
        }
    }

    fn send(&self, job: Job) {
        if let Some(tx) = &self.jobs {
            // The receiver lives as long as the thread, which outlives every sender.
            let _ = tx.send(job);
        }
    }

    /// Records a fetch: when and how the phone was seen at once, in memory; `applied` (the main
    /// file it fetched) through the writer, resolving once it is durable. `None` when nothing
    /// needs writing.
    pub(super) fn check_in(
        &self,
        mac: &Mac,
        seen: CheckIn,
        applied: Option<Applied>,
    ) -> Option<oneshot::Receiver<Result<(), String>>> {
        let mut map = self.checkins.write().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(mac.clone()).or_default();
        *entry = CheckIn {
            applied_revision: entry.applied_revision,
            applied_etag: entry.applied_etag.take(),
            applied_identity: entry.applied_identity.take(),
            ..seen
        };
        let a = applied.filter(|a| {
            a.revision != entry.applied_revision
                || Some(&a.etag) != entry.applied_etag.as_ref()
                || a.identity != entry.applied_identity
        })?;
        let mut record = entry.clone();
        drop(map);
        record.applied_revision = a.revision;
        record.applied_etag = Some(a.etag);
        record.applied_identity = a.identity;
        let (ack, done) = oneshot::channel();
        self.send(Job::CheckIn(mac.clone(), Box::new(record), Some(ack)));
        Some(done)
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

    /// Remembers an unknown MAC (bounded, newest first, one entry per MAC).
    pub(super) fn unprovisioned_seen(&self, mac: &Mac, file: &str, ip: &str, user_agent: &str) {
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

    pub(super) fn unprovisioned(&self) -> Vec<Unprovisioned> {
        let q = self.unprovisioned.lock().unwrap_or_else(|p| p.into_inner());
        q.iter().cloned().collect()
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

/// The batch as the backend stores it: check-in identities' passwords sealed. Only check-ins
/// carry a password; the rest is copied as is.
fn sealed(sealer: &Sealer, batch: &Observations) -> Observations {
    let checkins = batch
        .checkins
        .iter()
        .map(|(m, c)| {
            let mut c = c.clone();
            if let Some(id) = &mut c.applied_identity {
                id.password = Secret::new(sealer.seal(id.password.expose()));
            }
            (m.clone(), c)
        })
        .collect();
    Observations {
        checkins,
        uploads: batch.uploads.clone(),
        sync_states: batch.sync_states.clone(),
        sync_cursor: batch.sync_cursor,
    }
}

fn write_loop(
    backend: &dyn Backend,
    sealer: &Sealer,
    rx: mpsc::Receiver<Job>,
    checkins: &RwLock<HashMap<Mac, CheckIn>>,
) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let mut batch = Observations::default();
        let mut durable = false;
        let mut acks = Vec::new();
        let mut flushes = Vec::new();
        for job in jobs {
            match job {
                Job::CheckIn(mac, c, ack) => {
                    durable |= ack.is_some();
                    batch.checkins.push((mac, *c));
                    acks.extend(ack);
                }
                Job::Upload(mac, meta, body, ack) => {
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
            }
        }
        let result = if batch.is_empty() {
            backend.flush()
        } else {
            backend.observe(&sealed(sealer, &batch), durable)
        };
        match &result {
            Ok(()) => {
                let mut map = checkins.write().unwrap_or_else(|p| p.into_inner());
                for (mac, c) in batch.checkins {
                    let entry = map.entry(mac).or_insert_with(|| c.clone());
                    entry.applied_revision = c.applied_revision;
                    entry.applied_etag = c.applied_etag;
                    entry.applied_identity = c.applied_identity;
                }
            }
            Err(e) => tracing::error!(error = %e, "writing phone observations failed"),
        }
        let result = result.map_err(|e| e.to_string());
        for ack in acks {
            let _ = ack.send(result.clone());
        }
        for f in flushes {
            let _ = f.send(result.clone());
        }
    }
}
