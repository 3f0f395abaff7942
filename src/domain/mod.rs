//! The domain: identifiers, entities and the rules of SPEC §1, with no I/O.
//!
//! - [`ids`]: newtypes parsed once at the edge (`Mac`, `GroupId`, `Extension`, ...).
//! - [`entities`]: groups, users, devices, SCA endpoints, shared lines, tokens.
//! - [`state`]: the in-memory state and the undo-logged transaction the rules run in.
//! - [`rules`]: every mutation, validated; each returns the [`Effect`] the change log records.
//! - [`action`]: typed change-log [`Action`]s and the [`ChangeKind`] a change has.
//! - [`error`]: [`DomainError`] and the stable [`ErrorCode`]s of the API.
//! - [`layout`]: the derived key layout of a device, the one function the renderer uses.
//!
//! The store (`crate::store`) runs a rule inside a [`state::Tx`], persists exactly the records
//! the transaction touched together with the change-log entry, and rolls back on any error.

pub(crate) mod action;
pub(crate) mod entities;
pub(crate) mod error;
pub(crate) mod firmware;
pub(crate) mod ids;
pub(crate) mod layout;
pub(crate) mod locale;
pub mod rules;
pub mod state;
pub(crate) mod transfer;

use std::collections::BTreeSet;

pub(crate) use action::{Action, ChangeKind};
pub use entities::*;
pub(crate) use error::{DomainError, ErrorCode, ErrorKind};
pub use ids::*;

/// What a committed mutation did, as the change log records it (SPEC §1 "Change log").
#[derive(Clone, Debug)]
pub(crate) struct Effect {
    /// `<resource>.<verb>`, e.g. `sca.create`.
    pub(crate) action: Action,
    /// What the change did to the touched phones, decided by the rule from what changed (the
    /// sync dispatcher sends the reboot event when the model's `reboot_on` names it).
    pub(crate) kind: ChangeKind,
    pub(crate) group: Option<GroupId>,
    /// The subject's id, e.g. the line port or the MAC.
    pub(crate) subject: String,
    /// Every device whose rendered files may change.
    pub(crate) devices: BTreeSet<Mac>,
    /// Touched devices for which the change is only a `keys` change whatever `kind` says (a
    /// phone that shows a renamed user on a BLF key: it re-syncs, the user's own phones may
    /// reboot).
    pub(crate) keys_only: BTreeSet<Mac>,
    pub(crate) detail: serde_json::Value,
}

impl Effect {
    pub(crate) fn new(
        action: Action,
        kind: ChangeKind,
        group: Option<&GroupId>,
        subject: impl Into<String>,
    ) -> Self {
        Effect {
            action,
            kind,
            group: group.cloned(),
            subject: subject.into(),
            devices: BTreeSet::new(),
            keys_only: BTreeSet::new(),
            detail: serde_json::Value::Object(Default::default()),
        }
    }
    pub(crate) fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
}

/// Line-key capabilities of a phone model, as the catalogue declares them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ModelCaps {
    /// Line keys, numbered 1..=line_keys.
    pub(crate) line_keys: KeyNo,
    /// Keys 1..=appearance_keys can show a line (SCA, shared line, primary): the phone's own
    /// keys and those of expansion modules that show lines. Programmable keys may use them all.
    pub(crate) appearance_keys: KeyNo,
    /// SIP registrations (accounts) the phone can hold.
    pub(crate) accounts: u16,
    /// Desk phone or softphone: a user's appearances render only on the kinds it allows.
    pub(crate) endpoint: EndpointKind,
}

/// What the rules need from outside the state: the model catalogue, the limits, and fresh
/// secrets. Keeping these behind a trait keeps the rules pure and testable.
pub(crate) trait Env {
    /// The key space of a phone of `model` carrying `modules` (its own line keys, then each
    /// module's), `None` for an unknown model, an error naming `expansion_modules` when the
    /// model does not take those modules.
    fn device_caps(
        &self,
        model: &str,
        modules: &[ExpansionModule],
    ) -> Option<Result<ModelCaps, DomainError>>;
    /// `[rules] max_sca_per_user`.
    fn max_sca_per_user(&self) -> usize;
    /// A fresh random password (16+ characters).
    fn new_secret(&self) -> String;
    /// Five fresh random octets for a softphone's id ([`Mac::softphone`]).
    fn random_id(&self) -> [u8; 5];
}
