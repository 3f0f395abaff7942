//! The key layout of a device, derived from the state (never stored twice).
//!
//! Order (SPEC §1 "Appearances and key layout"): the primary line of the context user (the
//! hot-desk guest when one is logged in, else the owner) on key 1; then SCA endpoints placed on
//! the device and the context user's shared-line memberships, in key order; then programmable
//! keys. Each appearance is one registration (index 1-based) and one or more line keys.
//!
//! The same function validates writes (it fails where a key is out of range, taken twice, or
//! no key or account is left) and feeds the renderer, so a render never overflows.

use std::collections::BTreeMap;

use serde::Serialize;

use super::entities::*;
use super::ids::*;
use super::state::State;
use super::{DomainError, ErrorCode, ModelCaps};

/// What an appearance is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AppearanceKind {
    /// The context user's own line.
    Primary,
    /// Another user's line shared onto this device (an SCA endpoint).
    Sca,
    /// A shared line the context user is a member of.
    SharedLine,
}

/// One registration on the device.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Appearance {
    /// Registration index, 1-based.
    pub(crate) index: u16,
    pub(crate) kind: AppearanceKind,
    /// The SIP user this registration uses.
    pub(crate) line_port: String,
    /// The user whose line it is (primary and SCA).
    pub(crate) extension: Option<Extension>,
    /// The SCA endpoint, for `sca`.
    pub(crate) sca: Option<LinePort>,
    /// The shared line, for `shared_line`.
    pub(crate) shared_line: Option<SharedNumber>,
    /// Line keys showing this appearance.
    pub(crate) keys: Vec<KeyNo>,
    pub(crate) label: Option<String>,
    /// Ring option of a shared-line membership.
    pub(crate) ring: Option<Ring>,
}

/// The derived layout of one device.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Layout {
    pub(crate) appearances: Vec<Appearance>,
    /// Programmable keys (BLF, speed dial, park, voicemail), in key order.
    pub(crate) keys: Vec<ProgKey>,
    /// Line keys nobody uses, ascending.
    pub(crate) free_keys: Vec<KeyNo>,
}

impl Layout {
    /// The lowest free line key.
    pub(crate) fn first_free_key(&self) -> Option<KeyNo> {
        self.free_keys.first().copied()
    }
}

/// Keys taken so far, with who took them, for precise error messages.
struct Occupancy {
    caps: ModelCaps,
    model: String,
    taken: BTreeMap<KeyNo, String>,
}

impl Occupancy {
    fn take(&mut self, key: KeyNo, who: String) -> Result<(), DomainError> {
        if key == 0 || key > self.caps.line_keys {
            return Err(DomainError::unprocessable(
                ErrorCode::KeyUnavailable,
                format!(
                    "line key {key} for {who} does not exist: model {} has line keys 1 to {}",
                    self.model, self.caps.line_keys
                ),
            )
            .with_field("key"));
        }
        if let Some(holder) = self.taken.get(&key) {
            return Err(DomainError::unprocessable(
                ErrorCode::KeyUnavailable,
                format!("line key {key} is already used by {holder}"),
            )
            .with_field("key"));
        }
        self.taken.insert(key, who);
        Ok(())
    }

    fn take_free(&mut self, who: String) -> Result<KeyNo, DomainError> {
        let key = (1..=self.caps.line_keys)
            .find(|k| !self.taken.contains_key(k))
            .ok_or_else(|| no_free_key(&self.model, self.caps.line_keys, &who))?;
        self.taken.insert(key, who);
        Ok(key)
    }
}

fn no_free_key(model: &str, keys: KeyNo, who: &str) -> DomainError {
    DomainError::unprocessable(
        ErrorCode::NoFreeKey,
        format!("no free line key for {who}: all {keys} line keys of model {model} are in use"),
    )
}

/// Computes (and thereby validates) the layout of `device` in `state`.
pub(crate) fn layout(
    state: &State,
    device: &Device,
    caps: ModelCaps,
) -> Result<Layout, DomainError> {
    let mut occ = Occupancy {
        caps,
        model: device.model.to_string(),
        taken: BTreeMap::new(),
    };
    let mut appearances = Vec::new();

    let context = device
        .context_user()
        .and_then(|e| state.user(&device.group, e));
    if let Some(u) = context {
        occ.take(1, format!("the primary line {}", u.sip_username()))?;
        appearances.push(Appearance {
            index: 0,
            kind: AppearanceKind::Primary,
            line_port: u.sip_username(),
            extension: Some(u.extension.clone()),
            sca: None,
            shared_line: None,
            keys: vec![1],
            label: None,
            ring: None,
        });
    }

    // SCA endpoints keep their key (and their account) reserved even while inactive, so that
    // re-activating one never fails.
    let mut reserved_inactive = 0usize;
    for s in state.scas_on(&device.mac) {
        occ.take(s.key, format!("SCA endpoint {}", s.line_port))?;
        if !s.active {
            reserved_inactive += 1;
            continue;
        }
        appearances.push(Appearance {
            index: 0,
            kind: AppearanceKind::Sca,
            line_port: s.line_port.to_string(),
            extension: Some(s.extension.clone()),
            sca: Some(s.line_port.clone()),
            shared_line: None,
            keys: vec![s.key],
            label: s.label.clone(),
            ring: None,
        });
    }

    for key in &device.keys {
        occ.take(key.key, format!("programmable key {}", key.key))?;
    }

    if let Some(u) = context {
        let memberships: Vec<_> = state.memberships_of(&u.group, &u.extension).collect();
        // Explicit buttons first, then the first free keys for the others, in number order.
        let mut shared = Vec::new();
        for (line, m) in memberships.iter().filter(|(_, m)| m.button.is_some()) {
            let key = m.button.unwrap_or_default();
            occ.take(key, format!("shared line {}", line.number))?;
            shared.push((key, *line, *m));
        }
        for (line, m) in memberships.iter().filter(|(_, m)| m.button.is_none()) {
            let key = occ.take_free(format!("shared line {}", line.number))?;
            shared.push((key, *line, *m));
        }
        for (key, line, m) in shared {
            appearances.push(Appearance {
                index: 0,
                kind: AppearanceKind::SharedLine,
                line_port: line.line_port(),
                extension: None,
                sca: None,
                shared_line: Some(line.number.clone()),
                keys: vec![key],
                label: Some(if line.description.is_empty() {
                    line.number.to_string()
                } else {
                    line.description.clone()
                }),
                ring: Some(m.ring),
            });
        }
    }

    let registrations = appearances.len() + reserved_inactive;
    if registrations > caps.accounts as usize {
        return Err(DomainError::unprocessable(
            ErrorCode::NoFreeKey,
            format!(
                "model {} holds {} registrations (accounts); this device would need {registrations}",
                device.model, caps.accounts
            ),
        ));
    }

    // Primary first; the rest by their first key.
    appearances.sort_by_key(|a| (a.kind != AppearanceKind::Primary, a.keys[0]));
    for (i, a) in appearances.iter_mut().enumerate() {
        a.index = (i + 1) as u16;
    }
    let mut keys = device.keys.clone();
    keys.sort_by_key(|k| k.key);
    let free_keys = (1..=caps.line_keys)
        .filter(|k| !occ.taken.contains_key(k))
        .collect();
    Ok(Layout {
        appearances,
        keys,
        free_keys,
    })
}
