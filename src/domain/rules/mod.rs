//! Every mutation of SPEC §1, validated.
//!
//! Each rule runs inside a [`Tx`]: it reads the state, writes records, and returns the
//! [`Effect`] (action, subject, touched devices) the change log records. A rule that fails
//! returns a [`DomainError`] and the caller rolls the transaction back, so a rule may write first
//! and validate the result after (the key layout is checked on the state as it would become).
//!
//! One file per resource (`group`, `user`, `device`, `hot_desk`, `sca`, `shared_line`, `token`,
//! `template`); the field checks, lookups and touched-device
//! helpers they share live here. Every rule and input type is re-exported from this module,
//! so callers name them `rules::create_user`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::entities::*;
use super::ids::*;
use super::layout::layout;
use super::state::{Record, RecordKey, State, Tx};
use super::{Action, ChangeKind, DomainError, Effect, Env, ErrorCode};

mod device;
mod firmware;
mod group;
mod hot_desk;
mod import;
mod key_profile;
mod login;
mod sca;
mod shared_line;
mod template;
mod token;
mod user;

pub use device::*;
pub(crate) use firmware::*;
pub(crate) use group::*;
pub(crate) use hot_desk::*;
pub(crate) use import::*;
pub(crate) use key_profile::*;
pub(crate) use login::*;
pub(crate) use sca::*;
pub(crate) use shared_line::*;
pub(crate) use template::*;
pub(crate) use token::*;
pub use user::*;

// ---------------------------------------------------------------- field checks

/// Free text that ends up in phone configuration files: bounded, no control characters (a
/// newline would let a value inject lines into key=value formats).
fn text(field: &str, s: &str, max: usize) -> Result<(), DomainError> {
    if s.chars().count() > max {
        return Err(DomainError::validation(
            field,
            format!("{field} is longer than {max} characters"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(DomainError::validation(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(())
}

/// A value of 1..=`max` bytes, each allowed by `ok`; else 422 naming the field and the form.
fn charset(
    field: &str,
    s: &str,
    max: usize,
    ok: fn(u8) -> bool,
    form: &str,
) -> Result<(), DomainError> {
    if (1..=max).contains(&s.len()) && s.bytes().all(ok) {
        Ok(())
    } else {
        Err(DomainError::validation(
            field,
            format!("{field} '{s}' is not {form}"),
        ))
    }
}

/// Dialable digits: `0-9 * # +`, 1–32.
fn dialable(field: &str, s: &str) -> Result<(), DomainError> {
    charset(
        field,
        s,
        32,
        |b| b.is_ascii_digit() || matches!(b, b'*' | b'#' | b'+'),
        "a dialable number (digits, * # +, at most 32)",
    )
}

/// A host name or IP literal, optionally with `:port`.
fn host(field: &str, s: &str) -> Result<(), DomainError> {
    charset(
        field,
        s,
        253,
        |b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'),
        "a host name or address",
    )
}

/// A SIP user part we generate configs with.
fn sip_user(field: &str, s: &str) -> Result<(), DomainError> {
    charset(
        field,
        s,
        64,
        |b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'),
        "a SIP user (letters, digits, . _ - +, at most 64)",
    )
}

fn password(field: &str, s: &str) -> Result<(), DomainError> {
    let ok = (8..=128).contains(&s.chars().count()) && s.chars().all(|c| c.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(DomainError::validation(
            field,
            format!("{field} must be 8 to 128 printable ASCII characters without spaces"),
        ))
    }
}

fn settings(field: &str, m: &BTreeMap<String, String>) -> Result<(), DomainError> {
    for (k, v) in m {
        let ok = (1..=64).contains(&k.len())
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            return Err(DomainError::validation(
                field,
                format!("setting name '{k}' must be 1 to 64 letters, digits, . _ -"),
            ));
        }
        text(&format!("{field}.{k}"), v, 1024)?;
    }
    super::locale::check_settings(field, m)
}

/// Programmable keys of a device or a key profile: bounded label and value, key numbers from 1
/// and each once, at most one `blf_all` (its `key` is where the expansion starts).
fn check_keys(field: &str, keys: &[ProgKey]) -> Result<(), DomainError> {
    let mut seen = BTreeSet::new();
    for k in keys {
        if let Some(l) = &k.label {
            text(&format!("{field}.label"), l, 32)?;
        }
        text(&format!("{field}.value"), &k.value, 64)?;
        if k.key == 0 {
            return Err(DomainError::unprocessable(
                ErrorCode::KeyUnavailable,
                "line keys are numbered from 1",
            )
            .with_field(&format!("{field}.key")));
        }
        if k.kind != KeyType::BlfAll && !seen.insert(k.key) {
            return Err(DomainError::unprocessable(
                ErrorCode::KeyUnavailable,
                format!("line key {} is listed twice", k.key),
            )
            .with_field(&format!("{field}.key")));
        }
    }
    if keys.iter().filter(|k| k.kind == KeyType::BlfAll).count() > 1 {
        return Err(DomainError::validation(
            &format!("{field}.type"),
            "at most one blf_all key: it expands to every other user of the group",
        ));
    }
    Ok(())
}

fn exists(what: &str) -> DomainError {
    DomainError::conflict(ErrorCode::AlreadyExists, format!("{what} already exists"))
}

// ---------------------------------------------------------------- lookups

fn group<'s>(s: &'s State, g: &GroupId) -> Result<&'s Group, DomainError> {
    s.groups
        .get(g)
        .ok_or_else(|| DomainError::not_found(format!("group {g} does not exist")))
}

fn user<'s>(s: &'s State, g: &GroupId, e: &Extension) -> Result<&'s User, DomainError> {
    s.user(g, e)
        .ok_or_else(|| DomainError::not_found(format!("user {e} does not exist in group {g}")))
}

fn device<'s>(s: &'s State, m: &Mac) -> Result<&'s Device, DomainError> {
    s.devices
        .get(m)
        .ok_or_else(|| DomainError::not_found(format!("device {m} does not exist")))
}

fn sca<'s>(
    s: &'s State,
    g: &GroupId,
    e: &Extension,
    port: &str,
) -> Result<&'s ScaEndpoint, DomainError> {
    LinePort::parse(port)
        .ok()
        .and_then(|p| s.scas.get(&p))
        .filter(|x| &x.group == g && &x.extension == e)
        .ok_or_else(|| {
            DomainError::not_found(format!(
                "user {e} in group {g} has no SCA endpoint with line port {port}"
            ))
        })
}

fn shared_line<'s>(
    s: &'s State,
    g: &GroupId,
    n: &SharedNumber,
) -> Result<&'s SharedLine, DomainError> {
    s.shared_lines.get(&(g.clone(), n.clone())).ok_or_else(|| {
        DomainError::not_found(format!("shared line {n} does not exist in group {g}"))
    })
}

// ---------------------------------------------------------------- touched devices

/// Devices that show anything of this user: its primary line, an SCA of its line, or a BLF key
/// monitoring it.
fn devices_showing_user(s: &State, g: &GroupId, e: &Extension) -> BTreeSet<Mac> {
    let mut out: BTreeSet<Mac> = s
        .devices_with_context_user(g, e)
        .map(|d| d.mac.clone())
        .collect();
    out.extend(s.scas_of_user(g, e).map(|x| x.device.clone()));
    if let Some(u) = s.user(g, e) {
        out.extend(devices_with_blf_on(s, u));
    }
    for watcher in s.users_of(g).filter(|u| u.features.monitoring.contains(e)) {
        out.extend(
            s.devices_with_context_user(g, &watcher.extension)
                .map(|d| d.mac.clone()),
        );
    }
    out
}

/// Of [`devices_showing_user`], those that show the user only on BLF keys (its monitoring
/// watchers', BLF keys naming it, `blf_all`): for them a change of the user is a `keys` change.
fn devices_watching_only(s: &State, g: &GroupId, e: &Extension) -> BTreeSet<Mac> {
    let mut lines: BTreeSet<Mac> = s
        .devices_with_context_user(g, e)
        .map(|d| d.mac.clone())
        .collect();
    lines.extend(s.scas_of_user(g, e).map(|x| x.device.clone()));
    devices_showing_user(s, g, e)
        .into_iter()
        .filter(|m| !lines.contains(m))
        .collect()
}

/// Devices that show a shared line (where a member is the context user).
fn devices_of_members(s: &State, line: &SharedLine) -> BTreeSet<Mac> {
    line.members
        .iter()
        .flat_map(|m| s.devices_with_context_user(&line.group, &m.extension))
        .map(|d| d.mac.clone())
        .collect()
}

/// Validates the key layout of every listed device that still exists.
fn check_layouts<'a>(
    s: &State,
    env: &dyn Env,
    macs: impl IntoIterator<Item = &'a Mac>,
) -> Result<(), DomainError> {
    for mac in macs {
        if let Some(d) = s.devices.get(mac) {
            layout(s, d, device_caps(env, d)?)?;
        }
    }
    Ok(())
}

/// The key space of a stored device: its model's line keys and its expansion modules'.
fn device_caps(env: &dyn Env, d: &Device) -> Result<super::ModelCaps, DomainError> {
    env.device_caps(&d.model, &d.expansion_modules)
        .ok_or_else(|| unknown_model(&d.model))?
}

fn unknown_model(m: &str) -> DomainError {
    DomainError::validation(
        "model",
        format!("unknown model '{m}' (see GET /api/v1/models)"),
    )
}

// ---------------------------------------------------------------- shared rule checks

/// A line port is unique on the platform. The message never says who holds it: the holder may
/// be in another group, and a group's admin must not learn another tenant's users or lines
/// (a platform admin can look the holder up).
fn line_port_in_use(port: &str) -> DomainError {
    DomainError::conflict(
        ErrorCode::LinePortInUse,
        format!("Line Port ID {port} is already in use"),
    )
}

/// A line appears at most once on a device: the context user's line must not also be an SCA
/// endpoint there.
fn check_once_on_device(s: &State, d: &Device) -> Result<(), DomainError> {
    for e in [d.owner.as_ref(), d.hot_desk.as_deref()]
        .into_iter()
        .flatten()
    {
        if let Some(x) = s.scas_on(&d.mac).find(|x| &x.extension == e) {
            return Err(DomainError::conflict(
                ErrorCode::AlreadyOnDevice,
                format!(
                    "the line of {e} already appears on device {} as SCA endpoint {}",
                    d.name, x.line_port
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
