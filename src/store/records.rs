//! The records the store keeps beside the domain state: change-log entries, what phones were
//! seen doing (check-ins, uploads, unprovisioned sightings) and the sync dispatcher's work.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{Action, ChangeKind, GroupId, Mac};

/// One change-log entry (SPEC §1 "Change log").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(from = "super::change_entry::StoredChange")]
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

/// What a phone's fetch of its main file gave it: the revision, the bytes' ETag and the primary
/// registration (NOTIFYs are addressed to it until the phone fetches something newer).
#[derive(Clone, Debug, PartialEq)]
pub struct Applied {
    pub revision: u64,
    pub etag: String,
    pub identity: Option<crate::domain::SipIdentity>,
}
