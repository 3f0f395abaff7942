//! Import as one store commit: the rows run through [`rules::import`] inside
//! [`Store::commit`], so a whole import is one transaction, one change-log entry (every touched
//! phone once) and one durable write — or nothing at all when a row is bad. No change to the
//! [`Backend`](super::Backend) trait: a commit already takes any number of records.

use super::{Store, StoreError};
use crate::domain::rules::{self, ImportReport, ImportRow};
use crate::domain::state::Tx;
use crate::domain::DomainError;

impl Store {
    /// Applies `rows` (validated as a whole); with `dry_run`, on a copy of the current state,
    /// writing nothing. Nothing is written either when a row is bad (`report.errors`) or when no
    /// row changes anything (then the change log gets no entry and `report.seq` is `None`).
    pub(crate) fn import(
        &self,
        actor: &str,
        rows: Vec<ImportRow>,
        dry_run: bool,
    ) -> Result<ImportReport, StoreError> {
        let mut report = ImportReport {
            dry_run,
            ..Default::default()
        };
        if dry_run {
            let mut state = self.read().state.clone();
            let mut tx = Tx::new(&mut state);
            rules::import(&mut tx, &self.env, rows, &mut report);
            // Nothing was created: no password exists to show.
            report.passwords.clear();
            return Ok(report);
        }
        let mut skipped = false;
        let result = self.commit(actor, |tx, env| {
            match rules::import(tx, env, rows, &mut report) {
                Some(fx) if report.errors.is_empty() => Ok((fx, ())),
                _ => {
                    skipped = true;
                    // Rolls the transaction back; never shown (see below).
                    Err(DomainError::validation("import", "nothing to write"))
                }
            }
        });
        match result {
            Ok(((), change)) => report.seq = Some(change.seq),
            Err(_) if skipped => {
                if !report.errors.is_empty() {
                    report.passwords.clear();
                }
            }
            Err(e) => return Err(e),
        }
        Ok(report)
    }
}

/// What the command line's `import` prints: the report, or every bad row.
pub enum ImportOutcome {
    /// The report as JSON (counts, rows, generated passwords).
    Done(serde_json::Value),
    /// The bad rows as JSON; nothing was written.
    Refused(serde_json::Value),
}

impl Store {
    /// `deskprov import`: an export document (`kind` = `None`) or a CSV file of `kind` for
    /// `group`, applied as the API applies it.
    pub fn import_text(
        &self,
        text: &str,
        group: Option<&str>,
        kind: Option<&str>,
        dry_run: bool,
    ) -> Result<ImportOutcome, String> {
        use crate::domain::transfer::{csv_rows, CsvKind, Document};
        use crate::domain::GroupId;
        let rows = match kind {
            None => {
                let doc: Document = serde_json::from_str(text).map_err(|e| e.to_string())?;
                doc.into_rows().map_err(|e| e.detail)?
            }
            Some(kind) => {
                let kind = CsvKind::parse(kind).map_err(|e| e.detail)?;
                let g = GroupId::parse(group.ok_or("a CSV import needs --group")?)
                    .map_err(|e| e.detail)?;
                let s = self.read();
                if !s.groups.contains_key(&g) {
                    return Err(format!("group {g} does not exist"));
                }
                match csv_rows(&s, &g, kind, text) {
                    Ok(rows) => rows,
                    Err(errors) => return Ok(ImportOutcome::Refused(serde_json::json!(errors))),
                }
            }
        };
        let report = self
            .import("cli", rows, dry_run)
            .map_err(|e| e.to_string())?;
        Ok(if report.errors.is_empty() {
            ImportOutcome::Done(serde_json::json!(report))
        } else {
            ImportOutcome::Refused(serde_json::json!(report.errors))
        })
    }

    /// `deskprov export`: the JSON document (every group, or `group`), or with `csv_kind` that
    /// kind's CSV file of `group`; passwords only with `secrets`.
    pub fn export_text(
        &self,
        group: Option<&str>,
        csv_kind: Option<&str>,
        secrets: bool,
    ) -> Result<String, String> {
        use crate::domain::transfer::{export, export_csv, CsvKind};
        use crate::domain::GroupId;
        let g = group
            .map(|g| GroupId::parse(g).map_err(|e| e.detail))
            .transpose()?;
        let s = self.read();
        if let Some(g) = &g {
            if !s.groups.contains_key(g) {
                return Err(format!("group {g} does not exist"));
            }
        }
        match csv_kind {
            None => serde_json::to_string_pretty(&export(&s, g.as_ref(), secrets))
                .map_err(|e| e.to_string()),
            Some(kind) => {
                let kind = CsvKind::parse(kind).map_err(|e| e.detail)?;
                let g = g.ok_or("a CSV export needs --group")?;
                Ok(export_csv(&s, &g, kind, secrets))
            }
        }
    }
}

/// A consistent copy of the store: every stored pair at one `seq`, and the key file that
/// opens its sealed passwords.
pub(crate) struct Dump {
    pub(crate) seq: u64,
    pub(crate) entries: Vec<super::backend::DumpEntry>,
    pub(crate) key_file: Vec<u8>,
}

impl Store {
    /// Everything stored, at the last committed `seq`: taken under the write lock (writers wait
    /// a moment, readers and phones do not), after the pending phone observations are written.
    pub(crate) fn dump(&self) -> Result<Dump, StoreError> {
        self.observer.flush()?;
        let guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let seq = guard.seq;
        let entries = self.backend.dump()?;
        let key_file = std::fs::read(self.sealer.path())
            .map_err(|e| StoreError::Engine(format!("reading the key file: {e}")))?;
        drop(guard);
        Ok(Dump {
            seq,
            entries,
            key_file,
        })
    }
}

/// Restores a dump into `store_dir` (and its key file beside it); both must be new.
pub(crate) fn restore_dump(
    store_dir: &std::path::Path,
    entries: &[super::backend::DumpEntry],
    key_file: &[u8],
) -> Result<(), StoreError> {
    let key = store_dir.with_extension("key");
    if key.exists() {
        return Err(StoreError::Engine(format!("{} exists", key.display())));
    }
    super::embedded::Embedded::restore(store_dir, entries)?;
    crate::tls::write_private(&key, key_file).map_err(|e| StoreError::Engine(e.to_string()))
}
