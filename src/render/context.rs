//! The template context (README "Template context"), built from the domain's key layout.
//!
//! One builder for every model. It is deterministic: maps are ordered, and nothing depends on
//! time or on the request, so the same device at the same revision renders the same bytes.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::catalog::Model;
use crate::domain::layout::{layout, AppearanceKind};
use crate::domain::state::State;
use crate::domain::{Device, DomainError, KeyType};

/// Context of a per-device file.
pub(crate) fn device_context(
    state: &State,
    model: &Model,
    device: &Device,
    base_url: &str,
) -> Result<Value, DomainError> {
    let caps = crate::domain::ModelCaps {
        line_keys: model.line_keys,
        accounts: model.accounts,
    };
    let lay = layout(state, device, caps)?;
    let group = state
        .groups
        .get(&device.group)
        .ok_or_else(|| DomainError::not_found(format!("group {} does not exist", device.group)))?;
    let context_user = device
        .context_user()
        .and_then(|e| state.user(&device.group, e));

    let lines: Vec<Value> = lay
        .appearances
        .iter()
        .filter_map(|a| {
            let (line_port, auth, password, display, label, extension, options) = match a.kind {
                AppearanceKind::Primary | AppearanceKind::Sca => {
                    let u = state.user(&device.group, a.extension.as_ref()?)?;
                    let sca = a.sca.as_ref().and_then(|p| state.scas.get(p));
                    let label = sca
                        .and_then(|x| x.label.clone())
                        .unwrap_or_else(|| u.display());
                    let options = json!({
                        "allow_origination": sca.is_none_or(|x| x.allow_origination),
                        "allow_termination": sca.is_none_or(|x| x.allow_termination),
                    });
                    (
                        a.line_port.clone(),
                        u.auth_username(),
                        u.sip.password.expose().to_string(),
                        u.display(),
                        label,
                        u.extension.to_string(),
                        options,
                    )
                }
                AppearanceKind::SharedLine => {
                    let n = a.shared_line.as_ref()?;
                    let l = state.shared_lines.get(&(device.group.clone(), n.clone()))?;
                    let name = if l.description.is_empty() {
                        l.number.to_string()
                    } else {
                        l.description.clone()
                    };
                    let options = json!({
                        "ring": a.ring,
                        "direct_dial": l.direct_dial,
                        "autodial_digits": l.autodial_digits,
                        "forward_to_voicemail": l.forward_to_voicemail,
                        "allow_origination": true,
                        "allow_termination": true,
                    });
                    (
                        l.line_port(),
                        l.line_port(),
                        l.password.expose().to_string(),
                        name.clone(),
                        name,
                        l.number.to_string(),
                        options,
                    )
                }
            };
            Some(json!({
                "index": a.index,
                "kind": if a.kind == AppearanceKind::Primary { "primary" } else { "shared" },
                "appearance": a.kind,
                "line_port": line_port,
                "auth_username": auth,
                "password": password,
                "display_name": display,
                "label": label,
                "extension": extension,
                "keys": a.keys,
                "options": options,
            }))
        })
        .collect();

    // Programmable keys, then BLF keys for the context user's monitoring list on the keys left.
    let mut keys: Vec<Value> = lay
        .keys
        .iter()
        .map(|k| {
            json!({
                "key": k.key,
                "type": k.kind,
                "value": k.value,
                "label": k.label.clone().unwrap_or_else(|| k.value.clone()),
            })
        })
        .collect();
    if let Some(u) = context_user {
        let mut free = lay.free_keys.iter();
        for e in &u.features.monitoring {
            let (Some(m), Some(key)) = (state.user(&device.group, e), free.next()) else {
                continue;
            };
            keys.push(json!({
                "key": key,
                "type": KeyType::Blf,
                "value": m.sip_username(),
                "label": m.display(),
                "extension": m.extension,
            }));
        }
    }

    let mut settings: BTreeMap<String, String> = group.settings.clone();
    settings.extend(device.settings.clone());

    Ok(json!({
        "device": {
            "mac": device.mac,
            "mac_upper": device.mac.upper(),
            "mac_colon": device.mac.colon(),
            "name": device.name,
            "model": device.model,
            "settings": device.settings,
        },
        "model": model_value(model),
        "group": {
            "id": group.id,
            "name": group.name,
            "sip": group.sip,
            "settings": group.settings,
        },
        "settings": settings,
        "lines": lines,
        "keys": keys,
        "user": context_user.map(|u| json!({
            "extension": u.extension,
            "display_name": u.display(),
            "first_name": u.first_name,
            "last_name": u.last_name,
            "phone_number": u.phone_number,
            "kind": u.kind,
            "features": u.features,
        })),
        "server": {
            "base_url": base_url,
            "revision": device.revision,
        },
    }))
}

fn model_value(model: &Model) -> Value {
    json!({
        "id": model.id,
        "vendor": model.vendor,
        "family": model.family,
        "name": model.name,
        "line_keys": model.line_keys,
        "accounts": model.accounts,
        "vars": model.vars,
    })
}

/// Context of a common (per-model) file: no device, no group, no secrets.
pub(crate) fn common_context(model: &Model, base_url: &str) -> Value {
    json!({
        "model": model_value(model),
        "server": { "base_url": base_url },
    })
}

/// The first registration of a device context: what a NOTIFY is addressed to and authenticated
/// with.
pub(crate) fn primary_identity(ctx: &Value) -> Option<crate::domain::SipIdentity> {
    let line = ctx["lines"].get(0)?;
    Some(crate::domain::SipIdentity {
        user: line["line_port"].as_str()?.to_string(),
        auth_username: line["auth_username"].as_str()?.to_string(),
        password: crate::domain::Secret::new(line["password"].as_str()?),
    })
}
