//! The boundary a storage engine implements: domain-level operations, no engine types.
//!
//! The [`Store`](super::Store) keeps the domain state in memory and serialises writes; a
//! [`Backend`] only makes them durable and hands them back at start. The embedded engine
//! ([`super::embedded`]) is one implementation; a server database is another, added beside it
//! without touching domain, phone, admin or sync code.

use std::time::Duration;

use axum::body::Bytes;

use super::{Change, CheckIn, ProvLogEntry, StoreError, SyncState, Unprovisioned, UploadMeta};
use crate::domain::state::{Record, RecordKey};
use crate::domain::{GroupId, Mac};

/// Where a backend's load puts the records it reads (groups, users, devices, ...), one at a
/// time, so no copy of them all is held beside the state being built from them.
pub(crate) struct RecordSink<'a> {
    /// Called on each record as soon as it is decoded, on whichever thread decoded it (it
    /// opens the record's passwords); an error fails the load.
    pub(crate) prepare: &'a (dyn Fn(&mut Record) -> Result<(), StoreError> + Sync),
    /// Called on the loading thread with every prepared record, in key order.
    pub(crate) take: &'a mut dyn FnMut(Record),
}

/// What a backend hands the store when it opens.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// The last committed change-log seq (0 for a new store).
    pub(crate) seq: u64,
    /// The oldest seq still kept (`seq + 1` when the log is empty).
    pub(crate) first_seq: u64,
    /// The last `group_seq` of every group that has one.
    pub(crate) group_seqs: Vec<(GroupId, u64)>,
    /// The last check-in of every device that was seen applying a revision.
    pub(crate) checkins: Vec<(Mac, CheckIn)>,
    /// The unprovisioned list as last saved (newest first).
    pub(crate) unprovisioned: Vec<Unprovisioned>,
}

/// What other servers committed since a writer's seq, for the store to apply to its state
/// (an engine that only this server writes never has any).
#[derive(Debug, Default)]
pub(crate) struct CatchUp {
    /// The latest committed seq.
    pub(crate) seq: u64,
    /// The records written since (`None`: deleted), oldest write first.
    pub(crate) records: Vec<(RecordKey, Option<Record>)>,
    /// Their change entries, oldest first.
    pub(crate) changes: Vec<Change>,
}

/// Phone observations and sync work, written together by the store's observation writer.
#[derive(Debug, Default)]
pub(crate) struct Observations {
    /// Check-ins whose applied revision changed.
    pub(crate) checkins: Vec<(Mac, CheckIn)>,
    /// Uploaded files: (device, metadata, bytes).
    pub(crate) uploads: Vec<(Mac, UploadMeta, Bytes)>,
    /// Uploaded files to remove (device, name), applied after `uploads`: the oldest of a
    /// device over its quota, removed atomically with the upload that displaced them.
    pub(crate) upload_removals: Vec<(Mac, String)>,
    /// Set for an engine shared by several servers, which keeps every uploading device of the
    /// batch within it itself (under a per-device lock, in the batch's transaction), so the
    /// servers keep one quota; `upload_removals` is then empty.
    pub(crate) upload_quota: Option<UploadQuota>,
    /// Dispatcher states to save (`None`: forget the device).
    pub(crate) sync_states: Vec<(Mac, Option<SyncState>)>,
    /// The dispatcher's new cursor, when it moved.
    pub(crate) sync_cursor: Option<u64>,
    /// The whole unprovisioned list to save in place of the last one (bounded); an engine of
    /// one server.
    pub(crate) unprovisioned: Option<Vec<Unprovisioned>>,
    /// Unknown MACs seen since the last save, newest first, for an engine shared by several
    /// servers to add to its list (per MAC, the count added to the stored one), then keep its
    /// newest `UNPROVISIONED_MAX`.
    pub(crate) unprovisioned_seen: Vec<Sighting>,
    /// Provisioning log entries to add.
    pub(crate) log_entries: Vec<(Mac, ProvLogEntry)>,
    /// Provisioning log entries to remove (device, id), applied after `log_entries`: the
    /// oldest of a device over its bound, removed in the batch that adds the new one.
    pub(crate) log_removals: Vec<(Mac, u64)>,
    /// Set for an engine shared by several servers, which keeps every device that logs in the
    /// batch to its newest `log_max` entries itself, in the batch's transaction (so the
    /// servers keep one bound); `log_removals` then holds only forgotten logs.
    pub(crate) log_max: Option<usize>,
}

impl Observations {
    pub(crate) fn is_empty(&self) -> bool {
        self.checkins.is_empty()
            && self.uploads.is_empty()
            && self.upload_removals.is_empty()
            && self.sync_states.is_empty()
            && self.sync_cursor.is_none()
            && self.unprovisioned.is_none()
            && self.unprovisioned_seen.is_empty()
            && self.log_entries.is_empty()
            && self.log_removals.is_empty()
    }
}

/// The sightings of one unknown MAC since they were last saved.
#[derive(Clone, Debug)]
pub(crate) struct Sighting {
    /// The last one (file, address, User-Agent, `at`), with `count` the sightings since.
    pub(crate) last: Unprovisioned,
    /// When the first of them was (RFC 3339).
    pub(crate) first_at: String,
}

/// The bounds on one device's uploads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct UploadQuota {
    pub(crate) max_files: usize,
    pub(crate) max_total_bytes: u64,
}

/// A storage engine. Calls block; the store makes them from its writer (under its write lock),
/// from its observation writer thread, or from the blocking pool — never from a phone's path.
pub(crate) trait Backend: Send + Sync + 'static {
    /// Loads everything the store serves from: the records into `sink`, the rest returned.
    fn load(&self, sink: RecordSink<'_>) -> Result<Loaded, StoreError>;

    /// Whether other servers write to the same engine (then the store follows them).
    fn shared(&self) -> bool {
        false
    }

    /// Begins a write: serialises this writer with every other server's, and returns what
    /// they committed since `seq`, which the store applies before its rule runs. Followed by
    /// [`Backend::commit`] or [`Backend::abort_write`].
    fn begin_write(&self, seq: u64) -> Result<CatchUp, StoreError> {
        Ok(CatchUp {
            seq,
            ..Default::default()
        })
    }

    /// Ends a write begun with [`Backend::begin_write`] without committing it.
    fn abort_write(&self) {}

    /// What other servers committed since `seq` (without taking the write turn).
    fn catch_up(&self, seq: u64) -> Result<CatchUp, StoreError> {
        Ok(CatchUp {
            seq,
            ..Default::default()
        })
    }

    /// Check-ins written (by any server) since `cursor`, and the new cursor; with `lookback`,
    /// again those written in the last seconds (a row can commit after a later one was read).
    fn checkins_since(
        &self,
        cursor: u64,
        _lookback: bool,
    ) -> Result<(u64, Vec<(Mac, CheckIn)>), StoreError> {
        Ok((cursor, Vec::new()))
    }

    /// Sync states saved (by the dispatcher, on any server) since `cursor`: (device, the
    /// order it was written in, state), and the new cursor; `lookback` as for check-ins.
    fn sync_states_since(
        &self,
        cursor: u64,
        _lookback: bool,
    ) -> Result<(u64, Vec<FollowedState>), StoreError> {
        Ok((cursor, Vec::new()))
    }

    /// Queues manual syncs for the dispatcher, whichever server runs it; committed before it
    /// returns, and announced. Only for an engine shared by several servers.
    fn request_sync(&self, _requests: &[SyncRequest]) -> Result<(), StoreError> {
        Err(StoreError::Engine(
            "the manual sync queue is kept by a shared store only".into(),
        ))
    }

    /// Whether manual syncs are queued (a cheap look before [`Backend::take_sync_requests`]).
    fn sync_requests_queued(&self) -> Result<bool, StoreError> {
        Ok(false)
    }

    /// Takes every queued manual sync, oldest first, and in the same transaction saves the
    /// states `apply` makes of them: a request is taken once, and not lost if this server
    /// dies. Returns those states.
    fn take_sync_requests(
        &self,
        _apply: &mut dyn FnMut(Vec<SyncRequest>) -> Vec<(Mac, SyncState)>,
    ) -> Result<Vec<(Mac, SyncState)>, StoreError> {
        Ok(Vec::new())
    }

    /// Waits up to `timeout` for another server's commit; true when one was announced.
    fn wait_for_change(&self, timeout: Duration) -> bool {
        std::thread::sleep(timeout);
        false
    }

    /// Whether this server runs the sync dispatcher: always, unless servers share the engine,
    /// where exactly one holds that role at a time.
    fn try_lead(&self) -> Result<bool, StoreError> {
        Ok(true)
    }

    /// Commits a mutation (after [`Backend::begin_write`]): the records it wrote (`None`: deleted), its change entry and the new
    /// seq (and the group's new `group_seq`), atomically; durable before it returns.
    fn commit(
        &self,
        writes: &[(RecordKey, Option<Record>)],
        change: &Change,
    ) -> Result<(), StoreError>;

    /// Rewrites records in place, without a change entry (sealing passwords again, migrations);
    /// durable before it returns.
    fn rewrite(&self, records: &[Record]) -> Result<(), StoreError>;

    /// Change-log entries with `seq > since`, oldest first, at most `limit`; `group` filters.
    fn changes(
        &self,
        since: u64,
        limit: usize,
        group: Option<&GroupId>,
    ) -> Result<Vec<Change>, StoreError>;

    /// Forgets the change-log entries with `from <= seq < to`.
    fn compact(&self, from: u64, to: u64) -> Result<(), StoreError>;

    /// Writes one batch of observations atomically; flushed to disk when `durable`.
    fn observe(&self, batch: &Observations, durable: bool) -> Result<(), StoreError>;

    /// The dispatcher's cursor and every device's sync state.
    fn sync_load(&self) -> Result<(u64, Vec<(Mac, SyncState)>), StoreError>;

    /// The unprovisioned list every server added to, newest first (bounded). Only for an
    /// engine shared by several servers: otherwise the store's own list is the list.
    fn unprovisioned(&self) -> Result<Vec<Unprovisioned>, StoreError> {
        Err(StoreError::Engine(
            "the unprovisioned list is kept in memory with an engine of one server".into(),
        ))
    }

    /// Uploads of a device, by name.
    fn uploads_of(&self, mac: &Mac) -> Result<Vec<UploadMeta>, StoreError>;

    /// A device's provisioning log, newest first: at most `limit` entries with `id < before`.
    fn log_of(
        &self,
        mac: &Mac,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ProvLogEntry>, StoreError>;

    /// The ids of a device's `n` oldest provisioning log entries, oldest first.
    fn log_oldest(&self, mac: &Mac, n: usize) -> Result<Vec<u64>, StoreError>;

    /// Makes everything written so far durable.
    fn flush(&self) -> Result<(), StoreError>;

    /// Everything stored, as (tree, key, value) in the engine's own encoding, for a backup.
    /// The store calls it under its write lock, so records, change log and `seq` are of one
    /// commit. (Added for backup/restore; a restore goes through the engine's own `restore`.)
    fn dump(&self) -> Result<Vec<DumpEntry>, StoreError>;
}

/// A followed sync state: the device, the order its row was written in, the state.
pub(crate) type FollowedState = (Mac, u64, SyncState);

/// A manual sync requested on one of the servers sharing the engine, queued for the
/// dispatcher.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SyncRequest {
    pub(crate) mac: Mac,
    /// The device's revision as the requesting server saw it.
    pub(crate) revision: u64,
    pub(crate) reboot: bool,
}

/// One stored key/value pair of a [`Backend::dump`].
pub(crate) type DumpEntry = (String, Vec<u8>, Vec<u8>);

/// Records decoded per batch handed to a decoding thread: small enough that a batch's memory,
/// freed as soon as its records are handed on, is reused by the next batches instead of
/// lingering in the allocator after the load.
pub(crate) const DECODE_BATCH: usize = 256;

/// Decodes and prepares the stored records `items` on one thread per core (decoding the JSON is
/// most of the work of a load) and hands them to `sink.take` on this thread, in the order of
/// `items`, as each batch is ready: a load holds a few batches at a time, never every record.
/// This thread reads `items`, so an engine's cursor need not cross threads. After an error no
/// further record is handed on, and the first error is returned.
pub(crate) fn decode_records<T: Send>(
    items: impl Iterator<Item = Result<T, StoreError>>,
    decode: impl Fn(&T) -> Result<Record, StoreError> + Sync,
    sink: RecordSink<'_>,
) -> Result<(), StoreError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let RecordSink { prepare, take } = sink;
    let work = |item: &T| {
        let mut r = decode(item)?;
        prepare(&mut r)?;
        Ok::<_, StoreError>(r)
    };
    type Done = (usize, Vec<Result<Record, StoreError>>);
    let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, Vec<T>)>(threads * 2);
    let rx = std::sync::Mutex::new(rx);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Done>();
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (rx, done_tx, work) = (&rx, done_tx.clone(), &work);
            s.spawn(move || loop {
                let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                let Ok((n, batch)) = job else { break };
                let out = batch.iter().map(work).collect();
                drop(batch);
                if done_tx.send((n, out)).is_err() {
                    break;
                }
            });
        }
        drop(done_tx);
        let mut failed = None;
        let mut pending = std::collections::BTreeMap::new();
        let mut next = 0;
        let mut hand_on = |(n, part): Done, failed: &mut Option<StoreError>| {
            pending.insert(n, part);
            while let Some(part) = pending.remove(&next) {
                next += 1;
                for r in part {
                    match r {
                        Ok(r) if failed.is_none() => take(r),
                        Ok(_) => {}
                        Err(e) => {
                            failed.get_or_insert(e);
                        }
                    }
                }
            }
        };
        let mut batch = Vec::with_capacity(DECODE_BATCH);
        let mut n = 0;
        for item in items {
            match item {
                Ok(item) => batch.push(item),
                Err(e) => {
                    failed.get_or_insert(e);
                    break;
                }
            }
            if batch.len() == DECODE_BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(DECODE_BATCH));
                if tx.send((n, full)).is_err() {
                    break;
                }
                n += 1;
                while let Ok(done) = done_rx.try_recv() {
                    hand_on(done, &mut failed);
                }
            }
        }
        if !batch.is_empty() {
            let _ = tx.send((n, batch));
        }
        drop(tx);
        for done in done_rx {
            hand_on(done, &mut failed);
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    })
}
