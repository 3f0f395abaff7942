//! Devices (SPEC §1 "Device"): create, update, delete, rotate provisioning credentials.

use super::*;

/// Body of `POST .../devices` (and the shape `PATCH` merges into).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceInput {
    /// The phone's MAC. Omitted for a softphone (a model of `kind = "softphone"`): the server
    /// assigns a locally administered id (`02xxxxxxxxxx`) that stands in for it everywhere.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub(crate) mac: Option<Mac>,
    /// The Device Name, unique in the group; default: the MAC.
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// A model id from `GET /api/v1/models`.
    pub(crate) model: String,
    /// Extension whose line is the primary appearance.
    #[serde(default)]
    pub(crate) owner: Option<Extension>,
    #[serde(default)]
    pub(crate) keys: Vec<ProgKey>,
    #[serde(default)]
    pub(crate) settings: BTreeMap<String, String>,
    /// `udp:host:port` or `tcp:host:port`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub(crate) notify_target: Option<NotifyTarget>,
    /// Sidecars: `[{model, count}]`, module ids the device's model takes.
    #[serde(default)]
    pub(crate) expansion_modules: Vec<ExpansionModule>,
    /// A key profile of the group whose keys the device shows under its own.
    #[serde(default)]
    pub(crate) key_profile: Option<ProfileName>,
}

/// The id of a new device: its MAC; for a softphone, a fresh server-assigned id (or, on import,
/// the locally administered id it was exported with).
fn new_device_id(s: &State, env: &dyn Env, input: &DeviceInput) -> Result<Mac, DomainError> {
    let kind = env
        .device_caps(&input.model, &[])
        .ok_or_else(|| unknown_model(&input.model))?
        .map(|c| c.endpoint)
        .unwrap_or_default();
    match (kind, &input.mac) {
        (EndpointKind::IpPhone, Some(m)) => Ok(m.clone()),
        (EndpointKind::IpPhone, None) => Err(DomainError::validation(
            "mac",
            format!("a device of model {} needs its MAC", input.model),
        )),
        (EndpointKind::Softphone, Some(m)) if m.is_local() => Ok(m.clone()),
        (EndpointKind::Softphone, Some(m)) => Err(DomainError::validation(
            "mac",
            format!("{m} is a vendor MAC; a softphone's id is assigned by the server (omit mac)"),
        )),
        (EndpointKind::Softphone, None) => {
            // 40 random bits: a clash is rare; try again rather than fail.
            for _ in 0..16 {
                let m = Mac::softphone(env.random_id());
                if !s.devices.contains_key(&m) {
                    return Ok(m);
                }
            }
            Err(DomainError::conflict(
                ErrorCode::AlreadyExists,
                "no free softphone id found; try again",
            ))
        }
    }
}

fn build_device(
    s: &State,
    env: &dyn Env,
    g: &GroupId,
    mac: Mac,
    input: DeviceInput,
    old: Option<&Device>,
) -> Result<Device, DomainError> {
    group(s, g)?;
    let name = input.name.unwrap_or_else(|| mac.to_string());
    if name.is_empty() {
        return Err(DomainError::validation("name", "name must not be empty"));
    }
    text("name", &name, 64)?;
    let caps = env
        .device_caps(&input.model, &input.expansion_modules)
        .ok_or_else(|| unknown_model(&input.model))??;
    if let Some(o) = old {
        let was = env
            .device_caps(&o.model, &[])
            .and_then(Result::ok)
            .map(|c| c.endpoint)
            .unwrap_or_default();
        if was != caps.endpoint {
            return Err(DomainError::validation(
                "model",
                format!(
                    "model {} is a {} model and this device a {}: a device keeps its kind",
                    input.model,
                    caps.endpoint.as_str(),
                    was.as_str()
                ),
            ));
        }
    }
    if let Some(other) = s.device_by_name(g, &name) {
        if other.mac != mac {
            return Err(exists(&format!("a device named '{name}' in group {g}")).with_field("name"));
        }
    }
    if let Some(o) = &input.owner {
        let u = s.user(g, o).ok_or_else(|| {
            DomainError::validation("owner", format!("owner {o} does not exist in group {g}"))
        })?;
        if u.kind == UserKind::HotDesk {
            return Err(DomainError::validation(
                "owner",
                format!("{o} is a hot_desk user: it logs in to devices instead of owning one"),
            ));
        }
    }
    check_keys("keys", &input.keys)?;
    if let Some(p) = &input.key_profile {
        if s.key_profile(g, p).is_none() {
            return Err(DomainError::validation(
                "key_profile",
                format!("key profile '{p}' does not exist in group {g}"),
            ));
        }
    }
    settings("settings", &input.settings)?;
    let mut d = Device {
        mac,
        group: g.clone(),
        name: name.into(),
        model: input.model.into(),
        owner: input.owner,
        keys: input.keys,
        settings: input.settings,
        notify_target: input.notify_target.map(Box::new),
        prov_password: Secret::default(),
        hot_desk: None,
        expansion_modules: input.expansion_modules.into(),
        key_profile: input.key_profile.map(Box::new),
        revision: 0,
    };
    match old {
        Some(o) => {
            d.prov_password = o.prov_password.clone();
            d.hot_desk = o.hot_desk.clone();
            d.revision = o.revision;
        }
        None => d.prov_password = Secret::new(env.new_secret()),
    }
    Ok(d)
}

/// The kind of a device update, by what changed:
///
/// | field | kind | why |
/// |---|---|---|
/// | `owner` | `lines` | the primary line (and every appearance after it) |
/// | `model`, `expansion_modules` | `lines` | the key space and registrations the layout is built for |
/// | `keys`, `key_profile` | `keys` | programmable keys only |
/// | `name`, `settings`, `notify_target` | `settings` | rendered values, or server-side only |
fn device_change_kind(old: &Device, new: &Device) -> ChangeKind {
    ChangeKind::when(
        old.owner != new.owner
            || old.model != new.model
            || old.expansion_modules != new.expansion_modules,
        ChangeKind::Lines,
    )
    .and(ChangeKind::when(
        old.keys != new.keys || old.key_profile != new.key_profile,
        ChangeKind::Keys,
    ))
}

pub(crate) fn create_device(
    tx: &mut Tx,
    env: &dyn Env,
    g: &GroupId,
    input: DeviceInput,
) -> Result<(Effect, Device), DomainError> {
    group(tx.state(), g)?;
    let mac = new_device_id(tx.state(), env, &input)?;
    // The same answer whichever group has it: the group is not named.
    if tx.state().devices.contains_key(&mac) {
        return Err(DomainError::conflict(
            ErrorCode::AlreadyExists,
            format!("MAC {mac} is already provisioned"),
        )
        .with_field("mac"));
    }
    let d = build_device(tx.state(), env, g, mac, input, None)?;
    let mut fx = Effect::new(
        Action::DeviceCreate,
        ChangeKind::Lines,
        Some(g),
        d.mac.as_str(),
    );
    fx.devices.insert(d.mac.clone());
    tx.put(Record::Device(d.clone()));
    check_layouts(tx.state(), env, &fx.devices)?;
    Ok((fx, d))
}

pub(crate) fn update_device(
    tx: &mut Tx,
    env: &dyn Env,
    mac: &Mac,
    input: DeviceInput,
) -> Result<(Effect, Device), DomainError> {
    let old = device(tx.state(), mac)?.clone();
    if input.mac.as_ref().is_some_and(|m| m != mac) {
        return Err(DomainError::validation(
            "mac",
            "a device's MAC cannot be changed",
        ));
    }
    let d = build_device(tx.state(), env, &old.group, mac.clone(), input, Some(&old))?;
    check_once_on_device(tx.state(), &d)?;
    let mut fx = Effect::new(
        Action::DeviceUpdate,
        device_change_kind(&old, &d),
        Some(&old.group),
        mac.as_str(),
    );
    fx.devices.insert(mac.clone());
    tx.put(Record::Device(d.clone()));
    check_layouts(tx.state(), env, &fx.devices)?;
    Ok((fx, d))
}

pub(crate) fn delete_device(tx: &mut Tx, mac: &Mac) -> Result<Effect, DomainError> {
    let d = device(tx.state(), mac)?.clone();
    let scas: Vec<_> = tx
        .state()
        .scas_on(mac)
        .map(|x| x.line_port.clone())
        .collect();
    let mut fx = Effect::new(
        Action::DeviceDelete,
        ChangeKind::Lines,
        Some(&d.group),
        mac.as_str(),
    )
    .detail(
        json!({ "sca_endpoints_deleted": scas.iter().map(|p| p.to_string()).collect::<Vec<_>>() }),
    );
    fx.devices.insert(mac.clone());
    for p in scas {
        tx.delete(RecordKey::Sca(p));
    }
    // A deleted device is no firmware pilot any more (its MAC could come back elsewhere).
    let targets: Vec<FirmwareTarget> = tx
        .state()
        .firmware_targets_of(&d.group)
        .filter(|t| t.pilots.contains(mac))
        .cloned()
        .collect();
    for mut t in targets {
        t.pilots.retain(|m| m != mac);
        tx.put(Record::FirmwareTarget(t));
    }
    tx.delete(RecordKey::Device(mac.clone()));
    Ok(fx)
}

/// A softphone's one-time provisioning link: fresh provisioning credentials (as
/// `rotate_device_credentials`), for a device of a `softphone` model only (422 `validation` on
/// `model` otherwise: a desk phone is pointed at the server by DHCP or its vendor's redirect).
pub(crate) fn softphone_link_credentials(
    tx: &mut Tx,
    env: &dyn Env,
    mac: &Mac,
) -> Result<(Effect, String), DomainError> {
    let d = device(tx.state(), mac)?;
    let kind = env
        .device_caps(&d.model, &[])
        .and_then(Result::ok)
        .map(|c| c.endpoint)
        .unwrap_or_default();
    if kind != EndpointKind::Softphone {
        return Err(DomainError::validation(
            "model",
            format!(
                "device {mac} is a desk phone (model {}): provisioning links are for softphones",
                d.model
            ),
        ));
    }
    let (fx, pw) = rotate_device_credentials(tx, env, mac)?;
    Ok((fx.detail(json!({ "for": "provisioning_link" })), pw))
}

pub(crate) fn rotate_device_credentials(
    tx: &mut Tx,
    env: &dyn Env,
    mac: &Mac,
) -> Result<(Effect, String), DomainError> {
    let mut d = device(tx.state(), mac)?.clone();
    let pw = env.new_secret();
    d.prov_password = Secret::new(pw.as_str());
    // Credentials are not part of the rendered files: no device is touched.
    let fx = Effect::new(
        Action::DeviceCredentials,
        ChangeKind::Settings,
        Some(&d.group),
        mac.as_str(),
    );
    tx.put(Record::Device(d));
    Ok((fx, pw))
}
