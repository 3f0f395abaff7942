//! The records the store keeps beside the domain state: change-log entries, what phones were
//! seen doing (check-ins, uploads, unprovisioned sightings) and the sync dispatcher's work.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{Action, ChangeKind, GroupId, Mac};

/// One change-log entry (SPEC §1 "Change log").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(from = "super::change_entry::StoredChange")]
pub struct Change {
    /// Gapless, increasing (not shown to group tokens: see `group_seq`).
    #[schema(required = false)]
    pub(crate) seq: u64,
    /// Gapless and increasing within the entry's group: the numbering a group token reads the
    /// log by (the global `seq` would show other tenants' writes as gaps). None for platform
    /// entries and for entries written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) group_seq: Option<u64>,
    /// RFC 3339 UTC.
    pub(crate) at: String,
    /// Who: `token:<id>` or `cli`.
    pub(crate) actor: String,
    /// `<resource>.<verb>`.
    pub(crate) action: Action,
    /// What the change did to the touched phones; model.toml `reboot_on` names these.
    pub(crate) kind: ChangeKind,
    #[schema(value_type = Option<String>)]
    pub(crate) group: Option<GroupId>,
    pub(crate) subject: String,
    /// Every device whose rendered files may change.
    #[schema(value_type = Vec<String>)]
    pub(crate) devices: Vec<Mac>,
    /// Of `devices`, those for which the change is only a `keys` change (their BLF keys show
    /// the subject); absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub(crate) keys_only: Vec<Mac>,
    #[schema(value_type = Object)]
    pub(crate) detail: serde_json::Value,
}

impl Change {
    /// What the change is for one touched device: `keys` for the `keys_only` ones, else `kind`.
    pub(crate) fn kind_for(&self, mac: &Mac) -> ChangeKind {
        if self.keys_only.contains(mac) {
            ChangeKind::Keys
        } else {
            self.kind
        }
    }
}

/// What the server last saw of a device fetching its files. Observations, not configuration:
/// kept in memory; written to the `checkins` tree (without a flush) when the applied revision
/// changes, so `last_seen` after a restart is the time of the last such fetch. Never in the
/// change log.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct CheckIn {
    /// RFC 3339 time of the last fetch.
    pub(crate) at: String,
    pub(crate) ip: String,
    pub(crate) user_agent: String,
    /// Firmware version parsed from the User-Agent, if any.
    pub(crate) firmware: Option<String>,
    /// The model the User-Agent named, if any.
    pub(crate) model_seen: Option<String>,
    /// The revision of the last main-file fetch.
    pub(crate) applied_revision: u64,
    /// ETag of that main file (for the sync dispatcher's same-hash check).
    #[serde(default)]
    pub(crate) applied_etag: Option<String>,
    /// The primary registration that file gave the phone: NOTIFYs are addressed to it and
    /// answer its digest challenge, since the phone knows nothing newer until it fetches.
    /// Stored, never shown (the admin view clears it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub(crate) applied_identity: Option<crate::domain::SipIdentity>,
}

/// Where a device stands in the change → NOTIFY → fetch cycle (SPEC §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SyncPhase {
    InSync,
    Pending,
    Notified,
    Failed,
}

/// The last NOTIFY sent to a device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct LastNotify {
    pub(crate) at: String,
    /// The `Event:` sent.
    pub(crate) event: String,
    /// `200 OK`, `timeout`, `503 Service Unavailable`, `skipped: same hash`, ...
    pub(crate) result: String,
    /// NOTIFYs sent for the pending revision so far.
    pub(crate) attempts: u32,
}

/// The dispatcher's persisted work for one device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct SyncState {
    pub(crate) phase: SyncPhase,
    /// The revision the phone must fetch.
    pub(crate) revision: u64,
    /// Whether the pending changes need the reboot event.
    pub(crate) reboot: bool,
    /// Unix milliseconds when the next step is due (send, or give up waiting for the fetch).
    pub(crate) due_ms: u64,
    pub(crate) attempts: u32,
    /// Skip the same-hash check (manual sync).
    #[serde(default)]
    pub(crate) force: bool,
    /// Boxed: most of a fleet's states have none, and a dispatcher keeps one per device.
    pub(crate) last_notify: Option<Box<LastNotify>>,
}

/// A well-formed MAC that asked for files but is not provisioned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct Unprovisioned {
    #[schema(value_type = String)]
    pub(crate) mac: Mac,
    pub(crate) file: String,
    pub(crate) ip: String,
    pub(crate) user_agent: String,
    pub(crate) at: String,
    pub(crate) count: u64,
}

/// A file a phone uploaded (Polycom-style PUT).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct UploadMeta {
    pub(crate) name: String,
    pub(crate) size: u64,
    pub(crate) at: String,
}

/// Why the phone path refused (or failed) a request, as the provisioning log shows it to the
/// admin. Never sent to the phone: its answer is the same whatever the reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Refusal {
    /// A well-formed MAC no device has.
    UnknownMac,
    /// Digest credentials that do not match the device's (or digest where only mTLS is allowed).
    WrongCredentials,
    /// A digest response on an expired or already used nonce (the phone retries with a new one).
    StaleNonce,
    /// The client address is outside the group's `provisioning.allowed_cidrs`.
    NetworkNotAllowed,
    /// A client certificate that does not carry the requested MAC (or a generic one).
    CertificateMacMismatch,
    /// Too many failures from this address (or for this MAC from it): 429.
    LockedOut,
    /// No credentials yet: the digest challenge every phone gets first.
    NoCredentials,
    /// The template failed for this device: 500.
    RenderFailed,
    /// An upload over the size cap: 413.
    TooLarge,
    /// An upload whose body did not arrive in time: 408.
    Timeout,
    /// The server could not record the fetch: 503.
    Unavailable,
}

/// One entry of a device's provisioning log: a fetch or an upload by a phone. Holds no secret:
/// no password, nonce, digest response or token (only what is listed here).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub(crate) struct ProvLogEntry {
    /// Increasing across the server (microseconds since the epoch, made unique); `before=`
    /// pages by it.
    pub(crate) id: u64,
    /// RFC 3339 UTC.
    pub(crate) at: String,
    /// The client address.
    pub(crate) ip: String,
    /// `GET`, `HEAD` or `PUT`.
    pub(crate) method: String,
    /// The file name requested or uploaded.
    pub(crate) file: String,
    /// The User-Agent, at most 256 characters.
    pub(crate) user_agent: String,
    /// The HTTP status the phone got.
    pub(crate) status: u16,
    /// Body bytes sent (a fetch) or received (an upload).
    pub(crate) bytes: u64,
    /// Why it was refused or failed; absent for a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<Refusal>,
    /// How many requests in a row this entry stands for, when more than one: the same address,
    /// method, file, User-Agent, status, bytes and reason again, with nothing else logged for
    /// the device in between (a phone polling its file). `at` is the first of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 2)]
    pub(crate) count: Option<u32>,
    /// When the last of those requests was made (RFC 3339 UTC); present with `count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last_at: Option<String>,
}

impl ProvLogEntry {
    /// What makes a request the same as the previous one for folding into one entry (`count`):
    /// everything but its time.
    pub(crate) fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        (
            &self.ip,
            &self.method,
            &self.file,
            &self.user_agent,
            self.status,
            self.bytes,
            self.reason,
        )
            .hash(&mut h);
        h.finish()
    }
}

/// How a phone was seen on one fetch, borrowed from its request (a [`CheckIn`] without the
/// applied revision).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seen<'a> {
    /// RFC 3339 time of the fetch.
    pub(crate) at: &'a str,
    pub(crate) ip: &'a IpText,
    pub(crate) user_agent: &'a str,
    pub(crate) firmware: Option<&'a str>,
    pub(crate) model_seen: Option<&'a str>,
}

/// An IP address as text, formatted once on the stack (an IPv6 address is at most 45
/// characters).
pub(crate) struct IpText {
    buf: [u8; 48],
    len: u8,
}

impl IpText {
    pub(crate) fn new(ip: std::net::IpAddr) -> IpText {
        use std::io::Write as _;
        let mut buf = [0u8; 48];
        let mut w = std::io::Cursor::new(&mut buf[..]);
        let _ = write!(w, "{ip}");
        let len = w.position() as u8;
        IpText { buf, len }
    }

    pub(crate) fn text(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len as usize]).expect("an address is ASCII")
    }
}

impl std::fmt::Debug for IpText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text())
    }
}

/// What a phone's fetch of its main file gave it: the revision, the bytes' ETag and the primary
/// registration (NOTIFYs are addressed to it until the phone fetches something newer);
/// borrowed from the rendered file, copied only when it is news.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Applied<'a> {
    pub(crate) revision: u64,
    pub(crate) etag: &'a str,
    pub(crate) identity: Option<&'a crate::domain::SipIdentity>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dispatcher holds one state per device of the fleet (a million on one server): the
    /// last NOTIFY's text, which most states do not have, stays out of line.
    #[test]
    fn a_sync_state_keeps_its_last_notify_out_of_line() {
        assert!(
            std::mem::size_of::<SyncState>() <= 40,
            "SyncState is {} bytes",
            std::mem::size_of::<SyncState>()
        );
        let st = SyncState {
            phase: SyncPhase::Notified,
            revision: 7,
            reboot: false,
            due_ms: 1,
            attempts: 1,
            force: false,
            last_notify: Some(Box::new(LastNotify {
                at: "2026-12-04T00:00:00Z".into(),
                event: "check-sync".into(),
                result: "200 OK".into(),
                attempts: 1,
            })),
        };
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(json["last_notify"]["result"], "200 OK", "stored as before");
        assert_eq!(serde_json::from_value::<SyncState>(json).unwrap(), st);
    }
}
