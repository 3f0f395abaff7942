//! Backup and restore (SPEC §5 `backup`/`restore`): one file holding a consistent snapshot of
//! the data directory at one change-log `seq`.
//!
//! The file is JSON lines: a header (`format`, `version`, `seq`, `created_at`), one line per
//! stored pair (`{"t": tree, "k": hex, "v": hex}`: records, change log, `meta` with the seq
//! counters and the sync cursor, check-ins, sync states, uploads), one line per file of the data
//! directory it needs (`store.key`, which opens the sealed passwords, `admin-token` and the `tls/`
//! material),
//! and last `{"sha256": ...}` over every byte before that line. A backup therefore opens every
//! password it holds: keep it as secret as the data directory.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::store::Store;

const FORMAT: &str = "deskprov-backup";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    version: u32,
    seq: u64,
    created_at: String,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Line {
    Entry { t: String, k: String, v: String },
    File { file: String, v: String },
    Sum { sha256: String },
}

/// What a restore brought back.
#[derive(Debug)]
pub struct Restored {
    pub seq: u64,
    pub entries: usize,
    pub files: usize,
}

/// The files of `data_dir` a backup carries besides the store (relative paths).
fn extra_files(data_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if data_dir.join("admin-token").is_file() {
        out.push("admin-token".to_string());
    }
    if let Ok(dir) = std::fs::read_dir(data_dir.join("tls")) {
        for e in dir.flatten() {
            if e.file_type().is_ok_and(|t| t.is_file()) {
                if let Some(n) = e.file_name().to_str() {
                    out.push(format!("tls/{n}"));
                }
            }
        }
    }
    out.sort();
    out
}

/// Writes the backup of `store` (served from `data_dir`) and returns its bytes and seq.
pub fn backup(store: &Store, data_dir: &Path) -> Result<(Vec<u8>, u64), String> {
    let dump = store.dump().map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    push(
        &mut out,
        &Header {
            format: FORMAT.into(),
            version: 1,
            seq: dump.seq,
            created_at: crate::store::now_rfc3339(),
        },
    );
    for (t, k, v) in &dump.entries {
        push(
            &mut out,
            &Line::Entry {
                t: t.clone(),
                k: hex::encode(k),
                v: hex::encode(v),
            },
        );
    }
    push(
        &mut out,
        &Line::File {
            file: "store.key".into(),
            v: hex::encode(&dump.key_file),
        },
    );
    for f in extra_files(data_dir) {
        let bytes = std::fs::read(data_dir.join(&f)).map_err(|e| format!("{f}: {e}"))?;
        push(
            &mut out,
            &Line::File {
                file: f,
                v: hex::encode(bytes),
            },
        );
    }
    let sum = crate::secrets::sha256_hex(&out);
    push(&mut out, &Line::Sum { sha256: sum });
    Ok((out, dump.seq))
}

fn push(out: &mut Vec<u8>, v: &impl Serialize) {
    out.extend_from_slice(&serde_json::to_vec(v).expect("backup lines serialise"));
    out.push(b'\n');
}

/// Restores `bytes` (a backup file) into `data_dir`, which must not exist or be empty. The
/// checksum is verified before anything is written.
pub fn restore(bytes: &[u8], data_dir: &Path) -> Result<Restored, String> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let cut = body
        .iter()
        .rposition(|b| *b == b'\n')
        .ok_or("not a deskprov backup (no checksum line)")?;
    let (content, last) = (&bytes[..=cut], &body[cut + 1..]);
    let Ok(Line::Sum { sha256 }) = serde_json::from_slice::<Line>(last) else {
        return Err("not a deskprov backup (no checksum line); truncated?".into());
    };
    if crate::secrets::sha256_hex(content) != sha256 {
        return Err("the backup's checksum does not match: the file is damaged".into());
    }
    let text = std::str::from_utf8(content).map_err(|_| "the backup is not UTF-8")?;
    let mut lines = text.lines();
    let header: Header = serde_json::from_str(lines.next().unwrap_or(""))
        .map_err(|e| format!("not a deskprov backup: {e}"))?;
    if header.format != FORMAT || header.version != 1 {
        return Err(format!("not a {FORMAT} file of version 1"));
    }
    let mut entries = Vec::new();
    let mut files = Vec::new();
    for (i, l) in lines.enumerate() {
        let bad = |e: String| format!("line {}: {e}", i + 2);
        match serde_json::from_str::<Line>(l).map_err(|e| bad(e.to_string()))? {
            Line::Entry { t, k, v } => entries.push((
                t,
                hex::decode(k).map_err(|e| bad(e.to_string()))?,
                hex::decode(v).map_err(|e| bad(e.to_string()))?,
            )),
            Line::File { file, v } => {
                let ok = file == "store.key"
                    || file == "admin-token"
                    || file
                        .strip_prefix("tls/")
                        .is_some_and(|n| !n.is_empty() && !n.contains(['/', '\\']) && n != "..");
                if !ok {
                    return Err(bad(format!("unexpected file '{file}'")));
                }
                files.push((file, hex::decode(v).map_err(|e| bad(e.to_string()))?));
            }
            Line::Sum { .. } => return Err(bad("a second checksum line".into())),
        }
    }
    let key = files
        .iter()
        .find(|(f, _)| f == "store.key")
        .map(|(_, v)| v.clone())
        .ok_or("the backup has no store.key")?;
    if let Ok(mut d) = std::fs::read_dir(data_dir) {
        if d.next().is_some() {
            return Err(format!(
                "{} is not empty: restore only into a new or empty data directory",
                data_dir.display()
            ));
        }
    }
    create_private_dir(data_dir)?;
    crate::store::restore_dump(&data_dir.join("store"), &entries, &key)
        .map_err(|e| e.to_string())?;
    for (f, v) in files.iter().filter(|(f, _)| f != "store.key") {
        let path = data_dir.join(f);
        if let Some(parent) = path.parent() {
            create_private_dir(parent)?;
        }
        crate::tls::write_private(&path, v).map_err(|e| e.to_string())?;
    }
    Ok(Restored {
        seq: header.seq,
        entries: entries.len(),
        files: files.len(),
    })
}

fn create_private_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}
