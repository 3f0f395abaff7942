//! The key layout of a device, derived from the state (never stored twice).
//!
//! Order (SPEC §1 "Appearances and key layout"): the primary line of the context user (the
//! hot-desk guest when one is logged in, else the owner) on key 1; then SCA endpoints placed on
//! the device and the context user's shared-line memberships, in key order; then programmable
//! keys. Each appearance is one registration (index 1-based) and one or more line keys.
//!
//! Programmable keys are the device's own `keys` merged with its key profile's (a profile key on
//! a key number the device uses itself is left out: the device wins); they are placed before
//! shared lines take the first free keys. A `blf_all` key (device or profile; the device's wins)
//! expands last, to BLF keys for every other standard user of the group in extension order, on
//! the free keys from its `key` on; the users whose lines the phone has (its primary and SCA
//! appearances) and users an explicit BLF key already shows are left out, and users beyond the
//! last free key are not shown (adding a user never makes a phone's layout invalid). A BLF key
//! without a label shows the monitored user's display name (the value names the user by
//! extension or SIP username).
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

/// Where a programmable key of the layout comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum KeySource {
    /// The device's own `keys`.
    Device,
    /// The device's key profile.
    Profile,
    /// The expansion of a `blf_all` key.
    BlfAll,
}

/// A programmable key as the phone shows it: label resolved, `blf_all` expanded.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct LaidKey {
    pub(crate) key: KeyNo,
    /// Never `blf_all` (that is expanded to `blf` keys).
    #[serde(rename = "type")]
    pub(crate) kind: KeyType,
    pub(crate) value: String,
    /// The explicit label, else the monitored user's display name (BLF), else the value.
    pub(crate) label: String,
    /// The monitored user of a BLF key, when the value names a user of the group.
    pub(crate) extension: Option<Extension>,
    pub(crate) source: KeySource,
}

/// The derived layout of one device.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct Layout {
    pub(crate) appearances: Vec<Appearance>,
    /// Programmable keys (BLF, speed dial, park, voicemail), in key order.
    pub(crate) keys: Vec<LaidKey>,
    /// Line keys nobody uses, ascending.
    pub(crate) free_keys: Vec<KeyNo>,
    /// Line keys held by no appearance and no explicit key, ascending: the free keys plus those a
    /// `blf_all` expansion fills (a new appearance may take them; the expansion then shifts).
    pub(crate) open_keys: Vec<KeyNo>,
    /// Keys 1..=appearance_keys can show a line (see `ModelCaps`).
    #[serde(skip)]
    pub(crate) appearance_keys: KeyNo,
}

impl Layout {
    /// The lowest key a new appearance may take.
    pub(crate) fn first_free_key(&self) -> Option<KeyNo> {
        self.open_keys
            .first()
            .copied()
            .filter(|k| *k <= self.appearance_keys)
    }
}

/// The user of `device`'s group a BLF key value names (extension, else SIP username).
pub(crate) fn monitored_user<'s>(
    state: &'s State,
    group: &GroupId,
    value: &str,
) -> Option<&'s User> {
    Extension::parse(value)
        .ok()
        .and_then(|e| state.user(group, &e))
        .or_else(|| {
            state
                .user_with_username(value)
                .filter(|u| &u.group == group)
        })
}

/// The programmable keys in effect on `device` before expansion: its own, then its profile's on
/// key numbers it does not use itself.
pub(crate) fn effective_keys<'s>(
    state: &'s State,
    device: &'s Device,
) -> impl Iterator<Item = (&'s ProgKey, KeySource)> + 's {
    let profile = device
        .key_profile
        .as_ref()
        .and_then(|n| state.key_profile(&device.group, n));
    let own = device.keys.iter().map(|k| (k, KeySource::Device));
    let device_blf_all = device.keys.iter().any(|k| k.kind == KeyType::BlfAll);
    let from_profile = profile.into_iter().flat_map(move |p| {
        p.keys
            .iter()
            .filter(move |pk| {
                if pk.kind == KeyType::BlfAll {
                    !device_blf_all
                } else {
                    !device
                        .keys
                        .iter()
                        .any(|k| k.kind != KeyType::BlfAll && k.key == pk.key)
                }
            })
            .map(|k| (k, KeySource::Profile))
    });
    own.chain(from_profile)
}

/// Keys taken so far, with who took them, for precise error messages.
struct Occupancy {
    caps: ModelCaps,
    model: String,
    with_modules: bool,
    taken: BTreeMap<KeyNo, String>,
}

impl Occupancy {
    /// Takes `key` for a programmable key: any key of the phone or its modules.
    fn take(&mut self, key: KeyNo, who: String) -> Result<(), DomainError> {
        if key == 0 || key > self.caps.line_keys {
            return Err(DomainError::unprocessable(
                ErrorCode::KeyUnavailable,
                format!(
                    "line key {key} for {who} does not exist: {} has keys 1 to {}",
                    self.what(),
                    self.caps.line_keys
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

    /// Takes `key` for a line appearance: only keys that can show a line.
    fn take_line(&mut self, key: KeyNo, who: String) -> Result<(), DomainError> {
        if key > self.caps.appearance_keys && key <= self.caps.line_keys {
            return Err(DomainError::unprocessable(
                ErrorCode::KeyUnavailable,
                format!(
                    "line key {key} for {who} is on an expansion module that cannot show a line: {} shows lines on keys 1 to {}",
                    self.what(),
                    self.caps.appearance_keys
                ),
            )
            .with_field("key"));
        }
        self.take(key, who)
    }

    fn take_free(&mut self, who: String) -> Result<KeyNo, DomainError> {
        let key = (1..=self.caps.appearance_keys)
            .find(|k| !self.taken.contains_key(k))
            .ok_or_else(|| no_free_key(&self.what(), self.caps.appearance_keys, &who))?;
        self.taken.insert(key, who);
        Ok(key)
    }

    /// "model X", or "model X with its expansion modules" when modules add keys.
    fn what(&self) -> String {
        if self.with_modules {
            format!("model {} with its expansion modules", self.model)
        } else {
            format!("model {}", self.model)
        }
    }
}

fn no_free_key(what: &str, keys: KeyNo, who: &str) -> DomainError {
    DomainError::unprocessable(
        ErrorCode::NoFreeKey,
        format!("no free line key for {who}: all {keys} line keys of {what} are in use"),
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
        with_modules: !device.expansion_modules.is_empty(),
        taken: BTreeMap::new(),
    };
    let mut appearances = Vec::new();

    let context = device
        .context_user()
        .and_then(|e| state.user(&device.group, e));
    // A line appears only on the endpoint kinds its user allows (seed 002 "Configure allowed
    // endpoint"); a disallowed appearance keeps its key and account reserved, as an inactive SCA
    // endpoint does, so allowing it again never fails.
    let allowed = |u: Option<&User>| u.is_none_or(|u| u.allowed_endpoints.allows(caps.endpoint));
    let mut reserved = 0usize;
    if let Some(u) = context {
        occ.take_line(1, format!("the primary line {}", u.sip_username()))?;
    }
    if let Some(u) = context.filter(|u| allowed(Some(u))) {
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
    for s in state.scas_on(&device.mac) {
        occ.take_line(s.key, format!("SCA endpoint {}", s.line_port))?;
        if !s.active || !allowed(state.user(&device.group, &s.extension)) {
            reserved += 1;
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

    let mut explicit = Vec::new();
    let mut blf_all: Option<KeyNo> = None;
    for (key, source) in effective_keys(state, device) {
        if key.kind == KeyType::BlfAll {
            if key.key == 0 || key.key > caps.line_keys {
                return Err(DomainError::unprocessable(
                    ErrorCode::KeyUnavailable,
                    format!(
                        "blf_all starts at line key {}, which does not exist: model {} has line keys 1 to {}",
                        key.key, device.model, caps.line_keys
                    ),
                )
                .with_field("key"));
            }
            blf_all.get_or_insert(key.key);
            continue;
        }
        let who = match (source, &device.key_profile) {
            (KeySource::Profile, Some(p)) => format!("key {} of key profile {p}", key.key),
            _ => format!("programmable key {}", key.key),
        };
        occ.take(key.key, who)?;
        explicit.push((key, source));
    }

    if let Some(u) = context {
        let memberships: Vec<_> = state.memberships_of(&u.group, &u.extension).collect();
        // Explicit buttons first, then the first free keys for the others, in number order.
        let mut shared = Vec::new();
        for (line, m) in memberships.iter().filter(|(_, m)| m.button.is_some()) {
            let key = m.button.unwrap_or_default();
            occ.take_line(key, format!("shared line {}", line.number))?;
            shared.push((key, *line, *m));
        }
        for (line, m) in memberships.iter().filter(|(_, m)| m.button.is_none()) {
            let key = occ.take_free(format!("shared line {}", line.number))?;
            shared.push((key, *line, *m));
        }
        let shown = allowed(Some(u));
        for (key, line, m) in shared {
            if !shown {
                reserved += 1;
                continue;
            }
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

    let registrations =
        appearances.len() + reserved + usize::from(context.is_some_and(|u| !allowed(Some(u))));
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
    let mut keys: Vec<LaidKey> = explicit
        .into_iter()
        .map(|(k, source)| {
            let user = (k.kind == KeyType::Blf)
                .then(|| monitored_user(state, &device.group, &k.value))
                .flatten();
            LaidKey {
                key: k.key,
                kind: k.kind,
                value: k.value.clone(),
                label: k
                    .label
                    .clone()
                    .or_else(|| user.map(User::display))
                    .unwrap_or_else(|| k.value.clone()),
                extension: user.map(|u| u.extension.clone()),
                source,
            }
        })
        .collect();
    let open_keys: Vec<KeyNo> = (1..=caps.line_keys)
        .filter(|k| !occ.taken.contains_key(k))
        .collect();
    if let Some(start) = blf_all {
        let own: Vec<&Extension> = appearances
            .iter()
            .filter_map(|a| a.extension.as_ref())
            .collect();
        let shown: Vec<Extension> = keys.iter().filter_map(|k| k.extension.clone()).collect();
        let mut free = open_keys.iter().filter(|k| **k >= start);
        for u in state.users_of(&device.group).filter(|u| {
            u.kind == UserKind::Standard
                && !own.contains(&&u.extension)
                && !shown.contains(&u.extension)
        }) {
            let Some(&key) = free.next() else { break };
            occ.taken
                .insert(key, format!("the blf_all key for {}", u.extension));
            keys.push(LaidKey {
                key,
                kind: KeyType::Blf,
                value: u.sip_username(),
                label: u.display(),
                extension: Some(u.extension.clone()),
                source: KeySource::BlfAll,
            });
        }
    }
    keys.sort_by_key(|k| k.key);
    let free_keys = (1..=caps.line_keys)
        .filter(|k| !occ.taken.contains_key(k))
        .collect();
    Ok(Layout {
        appearances,
        keys,
        free_keys,
        open_keys,
        appearance_keys: caps.appearance_keys,
    })
}
