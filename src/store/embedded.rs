//! The embedded engine: sled trees in `<data_dir>/store`, for one machine.
//!
//! Trees: `data` (records by [`RecordKey::encode`], JSON), `changes` (big-endian `seq` → JSON
//! entry), `meta` (`format`, `seq`, `group_seq/<group>`, `sync_cursor`, `unprovisioned`), `checkins` and `sync` (by MAC, JSON) and
//! `uploads` (`<mac>/<name>` → JSON metadata, a NUL, the bytes), `provlog` (the 12 MAC
//! characters then the big-endian entry id → JSON entry). A commit writes `data`,
//! `changes` and `meta` in one sled transaction and flushes before it returns.

use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::backend::{Backend, Loaded, Observations, RecordSink};
use super::{Change, CheckIn, ProvLogEntry, StoreError, SyncState, UploadMeta, FORMAT_VERSION};
use crate::domain::state::{Record, RecordKey};
use crate::domain::{GroupId, Mac};

/// `meta` key prefix of a group's last `group_seq`.
const GROUP_SEQ: &[u8] = b"group_seq/";

/// `meta` key of the saved unprovisioned list (JSON, newest first).
const UNPROVISIONED: &str = "unprovisioned";

/// sled logs record bytes at debug and trace: never more than warnings from it.
pub(super) const LOG_DIRECTIVE: &str = "sled=warn";

/// The sled engine's trees.
pub(crate) struct Embedded {
    db: sled::Db,
    data: sled::Tree,
    changes: sled::Tree,
    meta: sled::Tree,
    checkins: sled::Tree,
    uploads: sled::Tree,
    sync: sled::Tree,
    provlog: sled::Tree,
}

/// The `provlog` key of a device's entry `id`.
fn log_key(mac: &Mac, id: u64) -> Vec<u8> {
    let mut k = mac.as_str().as_bytes().to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Engine(e.to_string())
    }
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("observation records serialise")
}

fn be_u64(v: &[u8], what: &str) -> Result<u64, StoreError> {
    Ok(u64::from_be_bytes(v.try_into().map_err(|_| corrupt(what))?))
}

/// Decodes every record of `data` into `sink`, in key order.
fn decode_records(data: &sled::Tree, sink: RecordSink<'_>) -> Result<(), StoreError> {
    super::backend::decode_records(
        data.iter().map(|kv| kv.map_err(StoreError::from)),
        |(k, v): &(sled::IVec, sled::IVec)| {
            serde_json::from_slice::<Record>(v)
                .map_err(|e| corrupt(format!("record {}: {e}", String::from_utf8_lossy(k))))
        },
        sink,
    )
}

/// How long [`Embedded::open`] waits for a directory's lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Embedded {
    /// Opens (or creates) the engine in `dir` with a page cache of `cache_bytes`. A directory
    /// whose lock is held is tried again for up to [`LOCK_WAIT`]: this process's previous
    /// handle of it may still be closing (sled's I/O threads let go of the lock a moment after
    /// the handle is dropped: `migrate` reopens the directory it has just written). Held
    /// longer, by another process say, it is an error.
    pub(crate) fn open(dir: &Path, cache_bytes: u64) -> Result<Embedded, StoreError> {
        let started = std::time::Instant::now();
        let db = loop {
            match sled::Config::new()
                .path(dir)
                .cache_capacity(cache_bytes)
                .open()
            {
                // sled reports it as `Other` with the lock's own error in the message.
                Err(sled::Error::Io(e))
                    if e.to_string().starts_with("could not acquire lock")
                        && started.elapsed() < LOCK_WAIT =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                r => break r?,
            }
        };
        let e = Embedded {
            data: db.open_tree("data")?,
            changes: db.open_tree("changes")?,
            meta: db.open_tree("meta")?,
            checkins: db.open_tree("checkins")?,
            uploads: db.open_tree("uploads")?,
            sync: db.open_tree("sync")?,
            provlog: db.open_tree("provlog")?,
            db,
        };
        match e.meta.get("format")? {
            None => {
                e.meta.insert("format", &FORMAT_VERSION.to_be_bytes())?;
                e.db.flush()?;
            }
            Some(v) => {
                let v = be_u64(&v, "format")?;
                if v > FORMAT_VERSION {
                    return Err(StoreError::TooNew(v));
                }
            }
        }
        Ok(e)
    }
}

impl Backend for Embedded {
    fn load(&self, sink: RecordSink<'_>) -> Result<Loaded, StoreError> {
        let seq = match self.meta.get("seq")? {
            Some(v) => be_u64(&v, "seq")?,
            None => 0,
        };
        if let Some((k, _)) = self.changes.last()? {
            let last = be_u64(&k, "change key")?;
            if last != seq {
                return Err(corrupt(format!(
                    "change log ends at {last} but seq is {seq}"
                )));
            }
        }
        let first_seq = match self.changes.first()? {
            Some((k, _)) => be_u64(&k, "change key")?,
            None => seq + 1,
        };
        decode_records(&self.data, sink)?;
        let mut group_seqs = Vec::new();
        for item in self.meta.scan_prefix(GROUP_SEQ) {
            let (k, v) = item?;
            let g = String::from_utf8_lossy(&k[GROUP_SEQ.len()..]).into_owned();
            let g = GroupId::parse(&g).map_err(|e| corrupt(format!("group_seq key: {e}")))?;
            group_seqs.push((g, be_u64(&v, "group_seq")?));
        }
        let mut checkins = Vec::new();
        for item in self.checkins.iter() {
            let (k, v) = item?;
            // A check-in is an observation: one that no longer parses is skipped, not fatal.
            if let (Ok(mac), Ok(c)) = (
                Mac::parse(&String::from_utf8_lossy(&k)),
                serde_json::from_slice::<CheckIn>(&v),
            ) {
                checkins.push((mac, c));
            }
        }
        // An observation too: a list that no longer parses starts empty.
        let unprovisioned = match self.meta.get(UNPROVISIONED)? {
            Some(v) => serde_json::from_slice(&v).unwrap_or_default(),
            None => Vec::new(),
        };
        Ok(Loaded {
            seq,
            first_seq,
            group_seqs,
            checkins,
            unprovisioned,
        })
    }

    fn commit(
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
        let group_seq = match (&change.group, change.group_seq) {
            (Some(g), Some(n)) => Some(([GROUP_SEQ, g.as_str().as_bytes()].concat(), n)),
            _ => None,
        };
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
                if let Some((k, n)) = &group_seq {
                    m.insert(k.as_slice(), &n.to_be_bytes())?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => StoreError::from(e),
                TransactionError::Abort(()) => corrupt("transaction aborted"),
            })?;
        self.db.flush()?;
        Ok(())
    }

    fn rewrite(&self, records: &[Record]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for r in records {
            batch.insert(r.key().encode(), json(r));
        }
        self.data.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    fn changes(
        &self,
        since: u64,
        limit: usize,
        group: Option<&GroupId>,
    ) -> Result<Vec<Change>, StoreError> {
        let mut out = Vec::new();
        // Nothing comes after the largest seq (and `since + 1` would overflow).
        let Some(from) = since.checked_add(1) else {
            return Ok(out);
        };
        for item in self.changes.range(from.to_be_bytes()..) {
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

    fn compact(&self, from: u64, to: u64) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for s in from..to {
            batch.remove(&s.to_be_bytes());
        }
        self.changes.apply_batch(batch)?;
        Ok(())
    }

    fn observe(&self, o: &Observations, durable: bool) -> Result<(), StoreError> {
        let mut checkins = sled::Batch::default();
        for (mac, c) in &o.checkins {
            checkins.insert(mac.as_str(), json(c));
        }
        let mut uploads = sled::Batch::default();
        for (mac, meta, body) in &o.uploads {
            let mut v = json(meta);
            v.push(0);
            v.extend_from_slice(body);
            uploads.insert(format!("{mac}/{}", meta.name).as_bytes(), v);
        }
        // After the inserts, in the same batch: a removal wins over an insert of the same key.
        for (mac, name) in &o.upload_removals {
            uploads.remove(format!("{mac}/{name}").as_bytes());
        }
        let mut sync = sled::Batch::default();
        for (mac, st) in &o.sync_states {
            match st {
                Some(st) => sync.insert(mac.as_str(), json(st)),
                None => sync.remove(mac.as_str()),
            }
        }
        let mut provlog = sled::Batch::default();
        for (mac, e) in &o.log_entries {
            provlog.insert(log_key(mac, e.id), json(e));
        }
        for (mac, id) in &o.log_removals {
            provlog.remove(log_key(mac, *id));
        }
        let cursor = o.sync_cursor.map(u64::to_be_bytes);
        let unprovisioned = o.unprovisioned.as_ref().map(json);
        (
            &self.checkins,
            &self.uploads,
            &self.sync,
            &self.meta,
            &self.provlog,
        )
            .transaction(|(c, u, s, m, p)| {
                c.apply_batch(&checkins)?;
                u.apply_batch(&uploads)?;
                s.apply_batch(&sync)?;
                p.apply_batch(&provlog)?;
                if let Some(cursor) = &cursor {
                    m.insert("sync_cursor", cursor)?;
                }
                if let Some(list) = &unprovisioned {
                    m.insert(UNPROVISIONED, list.as_slice())?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => StoreError::from(e),
                TransactionError::Abort(()) => corrupt("transaction aborted"),
            })?;
        if durable {
            self.db.flush()?;
        }
        Ok(())
    }

    fn sync_load(&self) -> Result<(u64, Vec<(Mac, SyncState)>), StoreError> {
        let cursor = match self.meta.get("sync_cursor")? {
            Some(v) => be_u64(&v, "sync_cursor")?,
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

    fn uploads_of(&self, mac: &Mac) -> Result<Vec<UploadMeta>, StoreError> {
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

    fn log_of(
        &self,
        mac: &Mac,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ProvLogEntry>, StoreError> {
        let range = log_key(mac, 0)..log_key(mac, before.unwrap_or(u64::MAX));
        let mut out = Vec::new();
        for item in self.provlog.range(range).rev() {
            if out.len() >= limit {
                break;
            }
            let (_, v) = item?;
            // An observation: one that no longer parses is skipped, not fatal.
            if let Ok(e) = serde_json::from_slice(&v) {
                out.push(e);
            }
        }
        Ok(out)
    }

    fn log_oldest(&self, mac: &Mac, n: usize) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::new();
        for item in self.provlog.scan_prefix(mac.as_str().as_bytes()).take(n) {
            let (k, _) = item?;
            out.push(be_u64(&k[k.len().saturating_sub(8)..], "provlog key")?);
        }
        Ok(out)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    fn dump(&self) -> Result<Vec<super::backend::DumpEntry>, StoreError> {
        let mut out = Vec::new();
        for (name, tree) in self.trees() {
            for item in tree.iter() {
                let (k, v) = item?;
                out.push((name.to_string(), k.to_vec(), v.to_vec()));
            }
        }
        Ok(out)
    }
}

impl Embedded {
    fn trees(&self) -> [(&'static str, &sled::Tree); 7] {
        [
            ("data", &self.data),
            ("changes", &self.changes),
            ("meta", &self.meta),
            ("checkins", &self.checkins),
            ("uploads", &self.uploads),
            ("sync", &self.sync),
            ("provlog", &self.provlog),
        ]
    }

    /// Writes a [`Backend::dump`] into a new engine in `dir` (which must not hold one).
    pub(crate) fn restore(
        dir: &Path,
        entries: &[super::backend::DumpEntry],
    ) -> Result<(), StoreError> {
        let e = Embedded::open(dir, 8 << 20)?;
        if !e.data.is_empty() || !e.changes.is_empty() {
            return Err(StoreError::Engine(format!(
                "{} already holds a store",
                dir.display()
            )));
        }
        for (name, k, v) in entries {
            let tree = e
                .trees()
                .into_iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.clone())
                .ok_or_else(|| corrupt(format!("backup names an unknown tree '{name}'")))?;
            tree.insert(k.as_slice(), v.as_slice())?;
        }
        e.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod decode_tests {
    use super::*;

    /// Decodes `data` with no preparation; the records handed on, or the error.
    fn decode(data: &sled::Tree) -> Result<Vec<Record>, StoreError> {
        let mut got = Vec::new();
        let take = &mut |r| got.push(r);
        decode_records(
            data,
            RecordSink {
                prepare: &|_| Ok(()),
                take,
            },
        )?;
        Ok(got)
    }

    #[test]
    fn a_load_of_many_batches_yields_every_record_in_key_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let data = db.open_tree("data").unwrap();
        let n = super::super::backend::DECODE_BATCH * 5 + 7;
        let records: Vec<Record> = (0..n)
            .map(|i| {
                serde_json::from_value(serde_json::json!({"type": "group", "value":
                    {"id": format!("g{i:06}"), "sip": {"domain": "sip.example.net"}}}))
                .unwrap()
            })
            .collect();
        for r in records.iter().rev() {
            data.insert(r.key().encode(), serde_json::to_vec(r).unwrap())
                .unwrap();
        }
        assert_eq!(decode(&data).unwrap(), records);
    }

    #[test]
    fn a_directory_let_go_of_while_waiting_for_its_lock_opens() {
        let dir = tempfile::tempdir().unwrap();
        let held = Embedded::open(dir.path(), 1 << 20).unwrap();
        let letting_go = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(held);
        });
        assert!(Embedded::open(dir.path(), 1 << 20).is_ok());
        letting_go.join().unwrap();
    }

    #[test]
    fn a_directory_held_past_the_wait_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _held = Embedded::open(dir.path(), 1 << 20).unwrap();
        let started = std::time::Instant::now();
        let e = Embedded::open(dir.path(), 1 << 20).err().expect("refused");
        assert!(started.elapsed() >= LOCK_WAIT);
        assert!(e.to_string().contains("lock"), "{e}");
    }

    #[test]
    fn a_record_that_does_not_decode_fails_the_load() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let data = db.open_tree("data").unwrap();
        data.insert("g/a", &b"{\"type\": \"group\"}"[..]).unwrap();
        let e = decode(&data).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt(_)), "{e:?}");
    }

    #[test]
    fn a_record_whose_preparation_fails_fails_the_load() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let data = db.open_tree("data").unwrap();
        for i in 0..3 {
            let r: Record = serde_json::from_value(serde_json::json!({"type": "group", "value":
                {"id": format!("g{i}"), "sip": {"domain": "sip.example.net"}}}))
            .unwrap();
            data.insert(r.key().encode(), serde_json::to_vec(&r).unwrap())
                .unwrap();
        }
        let prepare = |r: &mut Record| match r {
            Record::Group(g) if g.id.as_str() == "g1" => Err(corrupt("g1 does not open")),
            _ => Ok(()),
        };
        let take = &mut |_| {};
        let e = decode_records(
            &data,
            RecordSink {
                prepare: &prepare,
                take,
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("g1 does not open"), "{e}");
    }
}
