//! Firmware (issue "Firmware"): images per model, a target version per (group, model), the
//! roll-out's pause and resume.
//!
//! An image's bytes are stored outside the records (content-addressed by SHA-256, written and
//! checked before the rule runs); its record carries the digest, so the change log says which
//! bytes a version is. A target's change touches exactly the devices whose offered version
//! changes (see [`crate::domain::firmware::offered`]): those are the devices whose rendered
//! files change.

use super::*;
use crate::domain::firmware::{offered, valid_version};

/// Body of `PUT /groups/{group}/firmware/{model}`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FirmwareTargetInput {
    /// A version uploaded for the model.
    pub(crate) version: String,
    /// Share of the group's devices of the model offered the image (0–100, default 100).
    #[serde(default)]
    pub(crate) percent: Option<u8>,
    /// Devices offered the image whatever the percentage (MACs of the group's devices of the model).
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub(crate) pilots: Vec<Mac>,
}

fn bad_version(v: &str) -> DomainError {
    DomainError::validation(
        "version",
        format!("version '{v}' is not 1–64 letters, digits, '.', '-' or '_'"),
    )
}

/// Records an uploaded image. The same version with other bytes is refused (409
/// `already_exists`: delete it first); the same bytes again change nothing but are logged.
pub(crate) fn put_firmware_image(
    tx: &mut Tx,
    env: &dyn Env,
    img: FirmwareImage,
) -> Result<(Effect, FirmwareImage), DomainError> {
    if env.device_caps(&img.model, &[]).is_none() {
        return Err(unknown_model(&img.model));
    }
    if !valid_version(&img.version) {
        return Err(bad_version(&img.version));
    }
    let key = (img.model.clone(), img.version.clone());
    let stored = match tx.state().firmware.get(&key) {
        Some(old) if old.sha256 != img.sha256 => {
            return Err(DomainError::conflict(
                ErrorCode::AlreadyExists,
                format!(
                    "model {} already has firmware {} with SHA-256 {}; delete it first",
                    img.model, img.version, old.sha256
                ),
            ))
        }
        Some(old) => old.clone(),
        None => img,
    };
    let fx = Effect::new(
        Action::FirmwareUpload,
        ChangeKind::Settings,
        None,
        format!("{}/{}", stored.model, stored.version),
    )
    .detail(json!({ "sha256": stored.sha256, "size": stored.size }));
    tx.put(Record::Firmware(stored.clone()));
    Ok((fx, stored))
}

/// Deletes an image's record; 409 `in_use` while a group targets it. Returns its digest (the
/// caller removes the bytes when no other version shares them).
pub(crate) fn delete_firmware_image(
    tx: &mut Tx,
    model: &str,
    version: &str,
) -> Result<(Effect, String), DomainError> {
    let s = tx.state();
    let img = s
        .firmware
        .get(&(model.to_string(), version.to_string()))
        .ok_or_else(|| DomainError::not_found(format!("model {model} has no firmware {version}")))?
        .clone();
    let users: Vec<String> = s
        .firmware_targets
        .values()
        .filter(|t| t.model == model && t.version == version)
        .map(|t| t.group.to_string())
        .collect();
    if !users.is_empty() {
        return Err(DomainError::conflict(
            ErrorCode::InUse,
            format!(
                "firmware {version} of {model} is the target of group(s) {}",
                users.join(", ")
            ),
        ));
    }
    let fx = Effect::new(
        Action::FirmwareDelete,
        ChangeKind::Settings,
        None,
        format!("{model}/{version}"),
    )
    .detail(json!({ "sha256": img.sha256 }));
    tx.delete(RecordKey::Firmware(model.to_string(), version.to_string()));
    Ok((fx, img.sha256))
}

/// The devices of (group, model) whose offered version differs between two targets.
fn touched(
    s: &State,
    g: &GroupId,
    model: &str,
    old: Option<&FirmwareTarget>,
    new: Option<&FirmwareTarget>,
) -> BTreeSet<Mac> {
    s.devices_of(g)
        .filter(|d| d.model == model)
        .filter(|d| offered(old, d) != offered(new, d))
        .map(|d| d.mac.clone())
        .collect()
}

/// Replaces the target (and its effect) of (group, model) by `new` (`None` deletes it).
fn write_target(
    tx: &mut Tx,
    g: &GroupId,
    model: &str,
    new: Option<FirmwareTarget>,
    action: Action,
    detail: serde_json::Value,
) -> Effect {
    let s = tx.state();
    let old = s
        .firmware_targets
        .get(&(g.clone(), model.to_string()))
        .cloned();
    let mut fx = Effect::new(action, ChangeKind::Settings, Some(g), model).detail(detail);
    fx.devices = touched(s, g, model, old.as_ref(), new.as_ref());
    match new {
        Some(t) => tx.put(Record::FirmwareTarget(t)),
        None => tx.delete(RecordKey::FirmwareTarget(g.clone(), model.to_string())),
    }
    fx
}

/// Sets the target version of a group's phones of one model. A new version starts its roll-out
/// afresh (not paused); the same version keeps the pause state (changing the percentage does
/// not resume a paused roll-out).
pub(crate) fn set_firmware_target(
    tx: &mut Tx,
    env: &dyn Env,
    g: &GroupId,
    model: &str,
    input: FirmwareTargetInput,
    at: String,
) -> Result<(Effect, FirmwareTarget), DomainError> {
    let s = tx.state();
    group(s, g)?;
    if env.device_caps(model, &[]).is_none() {
        return Err(unknown_model(model));
    }
    if !valid_version(&input.version) {
        return Err(bad_version(&input.version));
    }
    let img = s
        .firmware
        .get(&(model.to_string(), input.version.clone()))
        .ok_or_else(|| {
            DomainError::validation(
                "version",
                format!(
                    "model {model} has no firmware {}: upload it first",
                    input.version
                ),
            )
        })?;
    let percent = input.percent.unwrap_or(100);
    if percent > 100 {
        return Err(DomainError::validation(
            "percent",
            format!("percent {percent} is not 0–100"),
        ));
    }
    let mut pilots = input.pilots.clone();
    pilots.sort();
    pilots.dedup();
    for m in &pilots {
        match s.devices.get(m) {
            Some(d) if &d.group == g && d.model == model => {}
            _ => {
                return Err(DomainError::validation(
                    "pilots",
                    format!("pilot {m} is not a {model} device of group {g}"),
                ))
            }
        }
    }
    let old = s.firmware_targets.get(&(g.clone(), model.to_string()));
    let paused = old
        .filter(|o| o.version == input.version)
        .and_then(|o| o.paused.clone());
    let t = FirmwareTarget {
        group: g.clone(),
        model: model.to_string(),
        version: input.version,
        percent,
        pilots,
        paused,
        updated_at: at,
    };
    let detail = json!({
        "version": t.version, "percent": t.percent, "pilots": t.pilots.len(),
        "sha256": img.sha256,
    });
    let fx = write_target(
        tx,
        g,
        model,
        Some(t.clone()),
        Action::FirmwareTargetSet,
        detail,
    );
    Ok((fx, t))
}

fn target<'s>(s: &'s State, g: &GroupId, model: &str) -> Result<&'s FirmwareTarget, DomainError> {
    s.firmware_targets
        .get(&(g.clone(), model.to_string()))
        .ok_or_else(|| {
            DomainError::not_found(format!("group {g} has no firmware target for {model}"))
        })
}

pub(crate) fn delete_firmware_target(
    tx: &mut Tx,
    g: &GroupId,
    model: &str,
) -> Result<Effect, DomainError> {
    let t = target(tx.state(), g, model)?;
    let detail = json!({ "version": t.version });
    Ok(write_target(
        tx,
        g,
        model,
        None,
        Action::FirmwareTargetDelete,
        detail,
    ))
}

/// Pauses a roll-out (no device is offered the image until it resumes). `version` guards
/// against pausing a newer target than the one that failed: a mismatch changes nothing.
pub(crate) fn pause_firmware_target(
    tx: &mut Tx,
    g: &GroupId,
    model: &str,
    version: &str,
    pause: FirmwarePause,
) -> Result<(Effect, FirmwareTarget), DomainError> {
    let mut t = target(tx.state(), g, model)?.clone();
    if t.version != version || t.paused.is_some() {
        return Err(DomainError::conflict(
            ErrorCode::InUse,
            format!("the roll-out of {version} to {model} in {g} is not running"),
        ));
    }
    let detail = json!({ "version": t.version, "reason": pause.reason, "failed": pause.failed });
    t.paused = Some(pause);
    let fx = write_target(
        tx,
        g,
        model,
        Some(t.clone()),
        Action::FirmwareTargetPause,
        detail,
    );
    Ok((fx, t))
}

/// Resumes a paused roll-out.
pub(crate) fn resume_firmware_target(
    tx: &mut Tx,
    g: &GroupId,
    model: &str,
) -> Result<(Effect, FirmwareTarget), DomainError> {
    let mut t = target(tx.state(), g, model)?.clone();
    if t.paused.is_none() {
        return Err(DomainError::validation(
            "paused",
            format!(
                "the roll-out of {} to {model} in {g} is not paused",
                t.version
            ),
        ));
    }
    t.paused = None;
    let detail = json!({ "version": t.version });
    let fx = write_target(
        tx,
        g,
        model,
        Some(t.clone()),
        Action::FirmwareTargetResume,
        detail,
    );
    Ok((fx, t))
}
