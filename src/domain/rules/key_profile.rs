//! Key profiles (SPEC §1 "Key profile"): create, update, delete; moving a key of a device or a
//! profile in one call; the devices a user's BLF keys (and `blf_all` expansions) show.
//!
//! A profile write is validated against the key layout of every device assigned to it and
//! refused naming the first device it would break; it is one change-log entry touching all of
//! them.

use super::*;
use crate::domain::layout::{effective_keys, KeySource};

/// Body of `POST .../key-profiles` (and the shape `PATCH` merges into).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyProfileInput {
    /// "Reception", "Sales Team": unique in the group.
    pub(crate) name: ProfileName,
    /// Keys as a device's `keys`, plus `blf_all` (its `key` is where the expansion starts).
    #[serde(default)]
    pub(crate) keys: Vec<ProgKey>,
}

/// How `POST .../keys/move` moves a key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum MoveMode {
    /// The key at `to`, if any, goes to `from`.
    #[default]
    Swap,
    /// The keys between `to` and `from` move one place toward `from` (list insertion).
    Shift,
}

/// Body of `POST /devices/{mac}/keys/move` and `.../key-profiles/{name}/keys/move`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyMove {
    /// The line key of the programmable key to move.
    pub(crate) from: KeyNo,
    /// Where it goes.
    pub(crate) to: KeyNo,
    /// `swap` (default) or `shift`.
    #[serde(default)]
    pub(crate) mode: MoveMode,
}

fn key_profile<'s>(
    s: &'s State,
    g: &GroupId,
    n: &ProfileName,
) -> Result<&'s KeyProfile, DomainError> {
    s.key_profile(g, n).ok_or_else(|| {
        DomainError::not_found(format!("key profile '{n}' does not exist in group {g}"))
    })
}

/// Validates the layout of every device using the profile, naming the device that breaks.
fn check_profile_devices(
    s: &State,
    env: &dyn Env,
    g: &GroupId,
    n: &ProfileName,
) -> Result<BTreeSet<Mac>, DomainError> {
    let mut macs = BTreeSet::new();
    for d in s.devices_with_profile(g, n) {
        layout(s, d, device_caps(env, d)?).map_err(|mut e| {
            e.detail = format!("device {} ({}): {}", d.name, d.mac, e.detail);
            e
        })?;
        macs.insert(d.mac.clone());
    }
    Ok(macs)
}

pub(crate) fn create_key_profile(
    tx: &mut Tx,
    g: &GroupId,
    input: KeyProfileInput,
) -> Result<(Effect, KeyProfile), DomainError> {
    group(tx.state(), g)?;
    if tx.state().key_profile(g, &input.name).is_some() {
        return Err(
            exists(&format!("key profile '{}' in group {g}", input.name)).with_field("name"),
        );
    }
    check_keys("keys", &input.keys)?;
    let p = KeyProfile {
        group: g.clone(),
        name: input.name,
        keys: input.keys,
    };
    // No device uses a new profile yet.
    let fx = Effect::new(
        Action::KeyProfileCreate,
        ChangeKind::Keys,
        Some(g),
        p.name.as_str(),
    );
    tx.put(Record::KeyProfile(p.clone()));
    Ok((fx, p))
}

pub(crate) fn update_key_profile(
    tx: &mut Tx,
    env: &dyn Env,
    g: &GroupId,
    n: &ProfileName,
    input: KeyProfileInput,
) -> Result<(Effect, KeyProfile), DomainError> {
    key_profile(tx.state(), g, n)?;
    if &input.name != n {
        return Err(DomainError::validation(
            "name",
            "a key profile's name cannot be changed; create a new profile and assign it",
        ));
    }
    check_keys("keys", &input.keys)?;
    let p = KeyProfile {
        group: g.clone(),
        name: input.name,
        keys: input.keys,
    };
    tx.put(Record::KeyProfile(p.clone()));
    let mut fx = Effect::new(
        Action::KeyProfileUpdate,
        ChangeKind::Keys,
        Some(g),
        n.as_str(),
    );
    fx.devices = check_profile_devices(tx.state(), env, g, n)?;
    Ok((fx, p))
}

pub(crate) fn delete_key_profile(
    tx: &mut Tx,
    g: &GroupId,
    n: &ProfileName,
) -> Result<Effect, DomainError> {
    key_profile(tx.state(), g, n)?;
    let users: Vec<String> = tx
        .state()
        .devices_with_profile(g, n)
        .map(|d| d.name.to_string())
        .collect();
    if !users.is_empty() {
        return Err(DomainError::conflict(
            ErrorCode::InUse,
            format!(
                "key profile '{n}' is used by {} device(s) ({}); assign them another profile first",
                users.len(),
                users.join(", ")
            ),
        ));
    }
    tx.delete(RecordKey::KeyProfile(g.clone(), n.clone()));
    Ok(Effect::new(
        Action::KeyProfileDelete,
        ChangeKind::Keys,
        Some(g),
        n.as_str(),
    ))
}

/// Moves one key of `keys` (entries other than `blf_all`, which holds no key) as `mv` says.
/// Only programmable keys move: an appearance in the way makes the layout check fail.
fn move_in(keys: &mut [ProgKey], mv: &KeyMove, whose: &str) -> Result<(), DomainError> {
    if mv.to == 0 {
        return Err(DomainError::unprocessable(
            ErrorCode::KeyUnavailable,
            "line keys are numbered from 1",
        )
        .with_field("to"));
    }
    if mv.from == mv.to {
        return Err(DomainError::validation(
            "to",
            "from and to are the same key",
        ));
    }
    let movable = |k: &ProgKey| k.kind != KeyType::BlfAll;
    let i = keys
        .iter()
        .position(|k| movable(k) && k.key == mv.from)
        .ok_or_else(|| {
            DomainError::validation(
                "from",
                format!("{whose} has no programmable key on line key {}", mv.from),
            )
        })?;
    match mv.mode {
        MoveMode::Swap => {
            if let Some(other) = keys.iter_mut().find(|k| movable(k) && k.key == mv.to) {
                other.key = mv.from;
            }
        }
        MoveMode::Shift => {
            for k in keys.iter_mut().filter(|k| movable(k)) {
                if mv.to < mv.from && (mv.to..mv.from).contains(&k.key) {
                    k.key += 1;
                } else if mv.to > mv.from && mv.from < k.key && k.key <= mv.to {
                    k.key -= 1;
                }
            }
        }
    }
    keys[i].key = mv.to;
    keys.sort_by_key(|k| k.key);
    Ok(())
}

/// Moves a key of the device's own `keys`; one change-log entry.
pub(crate) fn move_device_key(
    tx: &mut Tx,
    env: &dyn Env,
    mac: &Mac,
    mv: KeyMove,
) -> Result<Effect, DomainError> {
    let mut d = device(tx.state(), mac)?.clone();
    let whose = format!("device {}", d.name);
    if let Err(e) = move_in(&mut d.keys, &mv, &whose) {
        let from_profile = e.field.as_deref() == Some("from")
            && effective_keys(tx.state(), &d)
                .any(|(k, src)| src == KeySource::Profile && k.key == mv.from);
        if from_profile {
            let p = d
                .key_profile
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_default();
            return Err(DomainError::validation(
                "from",
                format!(
                    "line key {} comes from key profile '{p}': move it in the profile, or give the device a key of its own",
                    mv.from
                ),
            ));
        }
        return Err(e);
    }
    let mut fx = Effect::new(
        Action::DeviceKeysMove,
        ChangeKind::Keys,
        Some(&d.group),
        mac.as_str(),
    )
    .detail(json!({ "from": mv.from, "to": mv.to, "mode": mv.mode }));
    fx.devices.insert(mac.clone());
    tx.put(Record::Device(d));
    check_layouts(tx.state(), env, &fx.devices)?;
    Ok(fx)
}

/// Moves a key of a profile; validated on every assigned device, one change-log entry.
pub(crate) fn move_profile_key(
    tx: &mut Tx,
    env: &dyn Env,
    g: &GroupId,
    n: &ProfileName,
    mv: KeyMove,
) -> Result<(Effect, KeyProfile), DomainError> {
    let mut p = key_profile(tx.state(), g, n)?.clone();
    move_in(&mut p.keys, &mv, &format!("key profile '{n}'"))?;
    tx.put(Record::KeyProfile(p.clone()));
    let mut fx = Effect::new(
        Action::KeyProfileKeysMove,
        ChangeKind::Keys,
        Some(g),
        n.as_str(),
    )
    .detail(json!({ "from": mv.from, "to": mv.to, "mode": mv.mode }));
    fx.devices = check_profile_devices(tx.state(), env, g, n)?;
    Ok((fx, p))
}

/// Devices of the user's group whose keys (own or profile) may show the user: a BLF key naming
/// it (extension or SIP username), or a `blf_all` key. A rename, a new user or a deleted one
/// touches them (their labels and expansions change).
pub(crate) fn devices_with_blf_on(s: &State, u: &User) -> BTreeSet<Mac> {
    let port = u.sip_username();
    let names = |k: &ProgKey| {
        k.kind == KeyType::BlfAll
            || (k.kind == KeyType::Blf && (k.value == u.extension.as_str() || k.value == port))
    };
    s.devices_of(&u.group)
        .filter(|d| effective_keys(s, d).any(|(k, _)| names(k)))
        .map(|d| d.mac.clone())
        .collect()
}

/// A new user appears on the devices whose BLF keys name it or that have a `blf_all` key.
pub(crate) fn touch_blf_watchers(s: &State, u: &User, fx: &mut Effect) {
    let macs = devices_with_blf_on(s, u);
    if !macs.is_empty() {
        fx.kind = fx.kind.and(ChangeKind::Keys);
        fx.devices.extend(macs);
    }
}
