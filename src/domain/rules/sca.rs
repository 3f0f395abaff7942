//! Shared Call Appearance endpoints (SPEC §1 "Shared Call Appearance"): line ports, keys,
//! one appearance per device, the per-user limit.

use super::*;

/// Body of `POST .../shared-call-appearances` (and the shape `PATCH` merges into).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaInput {
    /// `<phone_number>_sca<N>` or `<group>_<extension>_sca<N>`; default: the lowest free N.
    #[serde(default)]
    pub(crate) line_port: Option<String>,
    /// Device name in the group, or its MAC.
    pub(crate) device: String,
    /// Line key; default: the first free one.
    #[serde(default)]
    pub(crate) key: Option<KeyNo>,
    #[serde(default)]
    pub(crate) label: Option<String>,
    #[serde(default = "default_true")]
    pub(crate) active: bool,
    #[serde(default = "default_true")]
    pub(crate) allow_origination: bool,
    #[serde(default = "default_true")]
    pub(crate) allow_termination: bool,
}

/// Resolves the `device` field: a device name in the group, or a MAC.
fn resolve_device(s: &State, g: &GroupId, reference: &str) -> Result<Mac, DomainError> {
    if let Some(d) = s.device_by_name(g, reference) {
        return Ok(d.mac.clone());
    }
    if let Ok(mac) = Mac::parse(reference) {
        if let Some(d) = s.devices.get(&mac) {
            if &d.group != g {
                // Not naming the group; the admin API answers a group token as for an unknown
                // device (`no_device`), so that it cannot tell the MAC exists elsewhere.
                return Err(DomainError::unprocessable(
                    ErrorCode::CrossGroup,
                    format!(
                        "device {mac} is in another group: a line cannot be shared across groups"
                    ),
                )
                .with_field("device"));
            }
            return Ok(mac);
        }
    }
    Err(no_device(g, reference))
}

/// The `device` field names no device of the group.
pub(crate) fn no_device(g: &GroupId, reference: &str) -> DomainError {
    DomainError::validation(
        "device",
        format!("no device named or with MAC '{reference}' in group {g}"),
    )
}

/// The line port to use: the given one, checked, or the lowest free `_scaN`.
fn pick_line_port(s: &State, u: &User, given: Option<&str>) -> Result<LinePort, DomainError> {
    let prefix = u.line_port_prefix();
    match given {
        Some(p) => {
            let lp = LinePort::parse(p).map_err(|_| invalid_line_port(p, Some(&prefix)))?;
            if lp.prefix() != prefix {
                return Err(invalid_line_port(p, Some(&prefix)));
            }
            if s.line_port_taken(lp.as_str()) {
                return Err(line_port_in_use(lp.as_str()).with_field("line_port"));
            }
            Ok(lp)
        }
        None => (1u32..)
            .map(|n| LinePort::new(&prefix, n))
            .find(|lp| !s.line_port_taken(lp.as_str()))
            .ok_or_else(|| DomainError::conflict(ErrorCode::LinePortInUse, "no free line port")),
    }
}

fn check_sca_fields(input: &ScaInput) -> Result<(), DomainError> {
    if let Some(l) = &input.label {
        text("label", l, 32)?;
    }
    Ok(())
}

/// The SCA rules that concern the target device: one appearance per line, and a key.
fn place_sca(
    s: &State,
    env: &dyn Env,
    u: &User,
    mac: &Mac,
    key: Option<KeyNo>,
    except: Option<&LinePort>,
) -> Result<KeyNo, DomainError> {
    let d = device(s, mac)?;
    if d.context_user() == Some(&u.extension) || d.owner.as_ref() == Some(&u.extension) {
        return Err(DomainError::conflict(
            ErrorCode::AlreadyOnDevice,
            format!(
                "the line of {} is the primary line of device {}",
                u.extension, d.name
            ),
        ));
    }
    if let Some(x) = s
        .scas_on(mac)
        .find(|x| x.extension == u.extension && Some(&x.line_port) != except)
    {
        return Err(DomainError::conflict(
            ErrorCode::AlreadyOnDevice,
            format!(
                "the line of {} already appears on device {} as {}",
                u.extension, d.name, x.line_port
            ),
        ));
    }
    match key {
        Some(k) => Ok(k),
        None => {
            let caps = device_caps(env, d)?;
            layout(s, d, caps)?.first_free_key().ok_or_else(|| {
                DomainError::unprocessable(
                    ErrorCode::NoFreeKey,
                    format!(
                        "device {} has no free line key (model {} shows lines on {} keys)",
                        d.name, d.model, caps.appearance_keys
                    ),
                )
            })
        }
    }
}

/// The kind of an SCA endpoint update: every field of an endpoint (device, key, label, active,
/// allow_origination, allow_termination) is part of an appearance (`lines` in the template
/// context), so any change is `lines`; an unchanged endpoint is `settings`.
fn sca_change_kind(old: &ScaEndpoint, new: &ScaEndpoint) -> ChangeKind {
    ChangeKind::when(old != new, ChangeKind::Lines)
}

pub(crate) fn create_sca(
    tx: &mut Tx,
    env: &dyn Env,
    g: &GroupId,
    e: &Extension,
    input: ScaInput,
) -> Result<(Effect, ScaEndpoint), DomainError> {
    let s = tx.state();
    let u = user(s, g, e)?.clone();
    check_sca_fields(&input)?;
    let count = s.scas_of_user(g, e).count();
    if count >= env.max_sca_per_user() {
        return Err(DomainError::conflict(
            ErrorCode::ScaLimit,
            format!(
                "user {e} already has {count} SCA endpoints (max_sca_per_user = {})",
                env.max_sca_per_user()
            ),
        ));
    }
    let mac = resolve_device(s, g, &input.device)?;
    let line_port = pick_line_port(s, &u, input.line_port.as_deref())?;
    let key = place_sca(s, env, &u, &mac, input.key, None)?;
    let x = ScaEndpoint {
        line_port,
        group: g.clone(),
        extension: e.clone(),
        device: mac.clone(),
        key,
        label: input.label,
        active: input.active,
        allow_origination: input.allow_origination,
        allow_termination: input.allow_termination,
    };
    let mut fx = Effect::new(
        Action::ScaCreate,
        ChangeKind::Lines,
        Some(g),
        x.line_port.as_str(),
    )
    .detail(json!({ "extension": e, "device": mac, "key": key }));
    fx.devices.insert(mac);
    tx.put(Record::Sca(x.clone()));
    check_layouts(tx.state(), env, &fx.devices)?;
    Ok((fx, x))
}

pub(crate) fn update_sca(
    tx: &mut Tx,
    env: &dyn Env,
    g: &GroupId,
    e: &Extension,
    port: &str,
    input: ScaInput,
) -> Result<(Effect, ScaEndpoint), DomainError> {
    let s = tx.state();
    let old = sca(s, g, e, port)?.clone();
    if input.line_port.as_deref().is_some_and(|p| p != port) {
        return Err(DomainError::validation(
            "line_port",
            "an endpoint's line port cannot be changed; delete it and add a new one",
        ));
    }
    check_sca_fields(&input)?;
    let u = user(s, g, e)?.clone();
    let mac = resolve_device(s, g, &input.device)?;
    let key = match (input.key, mac == old.device) {
        (Some(k), _) => k,
        (None, true) => old.key,
        (None, false) => place_sca(s, env, &u, &mac, None, Some(&old.line_port))?,
    };
    if mac != old.device {
        place_sca(s, env, &u, &mac, Some(key), Some(&old.line_port))?;
    }
    let x = ScaEndpoint {
        device: mac.clone(),
        key,
        label: input.label,
        active: input.active,
        allow_origination: input.allow_origination,
        allow_termination: input.allow_termination,
        ..old.clone()
    };
    let mut fx = Effect::new(Action::ScaUpdate, sca_change_kind(&old, &x), Some(g), port)
        .detail(json!({ "extension": e, "device": mac, "key": key, "active": x.active }));
    fx.devices.insert(old.device);
    fx.devices.insert(mac);
    tx.put(Record::Sca(x.clone()));
    check_layouts(tx.state(), env, &fx.devices)?;
    Ok((fx, x))
}

pub(crate) fn delete_sca(
    tx: &mut Tx,
    g: &GroupId,
    e: &Extension,
    port: &str,
) -> Result<Effect, DomainError> {
    let x = sca(tx.state(), g, e, port)?.clone();
    let mut fx = Effect::new(Action::ScaDelete, ChangeKind::Lines, Some(g), port)
        .detail(json!({ "extension": e, "device": x.device }));
    fx.devices.insert(x.device.clone());
    tx.delete(RecordKey::Sca(x.line_port));
    Ok(fx)
}
