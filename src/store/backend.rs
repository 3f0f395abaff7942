//! The boundary a storage engine implements: domain-level operations, no engine types.
//!
//! The [`Store`](super::Store) keeps the domain state in memory and serialises writes; a
//! [`Backend`] only makes them durable and hands them back at start. The embedded engine
//! ([`super::embedded`]) is one implementation; a server database is another, added beside it
//! without touching domain, phone, admin or sync code.

use axum::body::Bytes;

use super::{Change, CheckIn, ProvLogEntry, StoreError, SyncState, UploadMeta};
use crate::domain::state::{Record, RecordKey};
use crate::domain::{GroupId, Mac};

/// What a backend hands the store when it opens.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// Every stored record (groups, users, devices, ...).
    pub(crate) records: Vec<Record>,
    /// The last committed change-log seq (0 for a new store).
    pub(crate) seq: u64,
    /// The oldest seq still kept (`seq + 1` when the log is empty).
    pub(crate) first_seq: u64,
    /// The last `group_seq` of every group that has one.
    pub(crate) group_seqs: Vec<(GroupId, u64)>,
    /// The last check-in of every device that was seen applying a revision.
    pub(crate) checkins: Vec<(Mac, CheckIn)>,
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
    /// Dispatcher states to save (`None`: forget the device).
    pub(crate) sync_states: Vec<(Mac, Option<SyncState>)>,
    /// The dispatcher's new cursor, when it moved.
    pub(crate) sync_cursor: Option<u64>,
    /// Provisioning log entries to add.
    pub(crate) log_entries: Vec<(Mac, ProvLogEntry)>,
    /// Provisioning log entries to remove (device, id), applied after `log_entries`: the
    /// oldest of a device over its bound, removed in the batch that adds the new one.
    pub(crate) log_removals: Vec<(Mac, u64)>,
}

impl Observations {
    pub(crate) fn is_empty(&self) -> bool {
        self.checkins.is_empty()
            && self.uploads.is_empty()
            && self.upload_removals.is_empty()
            && self.sync_states.is_empty()
            && self.sync_cursor.is_none()
            && self.log_entries.is_empty()
            && self.log_removals.is_empty()
    }
}

/// A storage engine. Calls block; the store makes them from its writer (under its write lock),
/// from its observation writer thread, or from the blocking pool — never from a phone's path.
pub(crate) trait Backend: Send + Sync + 'static {
    /// Loads everything the store serves from.
    fn load(&self) -> Result<Loaded, StoreError>;

    /// Commits a mutation: the records it wrote (`None`: deleted), its change entry and the new
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
}
