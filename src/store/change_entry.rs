//! Reading change-log entries written by earlier versions.

use serde::Deserialize;

use super::Change;
use crate::domain::{Action, ChangeKind, GroupId, Mac};

/// A [`Change`] as stored: entries written before kinds were recorded have none, and get the
/// kind their action used to imply.
#[derive(Deserialize)]
pub(super) struct StoredChange {
    seq: u64,
    #[serde(default)]
    group_seq: Option<u64>,
    at: String,
    actor: String,
    action: Action,
    #[serde(default)]
    kind: Option<ChangeKind>,
    group: Option<GroupId>,
    subject: String,
    devices: Vec<Mac>,
    #[serde(default)]
    keys_only: Vec<Mac>,
    detail: serde_json::Value,
}

impl From<StoredChange> for Change {
    fn from(c: StoredChange) -> Change {
        Change {
            kind: c.kind.unwrap_or_else(|| c.action.legacy_kind()),
            seq: c.seq,
            group_seq: c.group_seq,
            at: c.at,
            actor: c.actor,
            action: c.action,
            group: c.group,
            subject: c.subject,
            devices: c.devices,
            keys_only: c.keys_only,
            detail: c.detail,
        }
    }
}
