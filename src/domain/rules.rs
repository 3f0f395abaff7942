//! Every mutation of SPEC §1, validated.
//!
//! Each rule runs inside a [`Tx`]: it reads the state, writes records, and returns the
//! [`Effect`] (action, subject, touched devices) the change log records. A rule that fails
//! returns a [`DomainError`] and the caller rolls the transaction back, so a rule may write first
//! and validate the result after (the key layout is checked on the state as it would become).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::entities::*;
use super::ids::*;
use super::layout::layout;
use super::state::{Record, RecordKey, State, Tx};
use super::{Action, ChangeKind, DomainError, Effect, Env, ErrorCode};

// ---------------------------------------------------------------- inputs

/// Body of `POST .../users` (and the shape `PATCH` merges into).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserInput {
    pub extension: Extension,
    #[serde(default)]
    pub phone_number: Option<PhoneNumber>,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub kind: UserKind,
    #[serde(default)]
    pub sip: SipInput,
    #[serde(default)]
    pub features: Features,
}

/// A user's SIP identity on input; absent values take their defaults.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SipInput {
    /// Default: the phone number if set, else `<group>_<extension>`.
    #[serde(default)]
    pub username: Option<String>,
    /// Default: the username.
    #[serde(default)]
    pub auth_username: Option<String>,
    /// Default: 20 random characters. Write-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// Body of `POST .../users/{ext}/duplicate`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DuplicateInput {
    pub extension: Extension,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub phone_number: Option<PhoneNumber>,
}

/// Body of `POST .../devices` (and the shape `PATCH` merges into).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceInput {
    pub mac: Mac,
    /// The Device Name, unique in the group; default: the MAC.
    #[serde(default)]
    pub name: Option<String>,
    /// A model id from `GET /api/v1/models`.
    pub model: String,
    /// Extension whose line is the primary appearance.
    #[serde(default)]
    pub owner: Option<Extension>,
    #[serde(default)]
    pub keys: Vec<ProgKey>,
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// `udp:host:port` or `tcp:host:port`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub notify_target: Option<NotifyTarget>,
}

/// Body of `POST .../shared-call-appearances` (and the shape `PATCH` merges into).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaInput {
    /// `<phone_number>_sca<N>` or `<group>_<extension>_sca<N>`; default: the lowest free N.
    #[serde(default)]
    pub line_port: Option<String>,
    /// Device name in the group, or its MAC.
    pub device: String,
    /// Line key; default: the first free one.
    #[serde(default)]
    pub key: Option<KeyNo>,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default = "default_true")]
    pub active: bool,
    #[serde(default = "default_true")]
    pub allow_origination: bool,
    #[serde(default = "default_true")]
    pub allow_termination: bool,
}

/// Body of `POST .../shared-lines` (and the shape `PATCH` merges into).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SharedLineInput {
    pub number: SharedNumber,
    #[serde(default)]
    pub direct_dial: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub forward_to_voicemail: bool,
    #[serde(default)]
    pub autodial_digits: Option<String>,
    #[serde(default)]
    pub members: Vec<Member>,
}

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
    for watcher in s.users_of(g).filter(|u| u.features.monitoring.contains(e)) {
        out.extend(
            s.devices_with_context_user(g, &watcher.extension)
                .map(|d| d.mac.clone()),
        );
    }
    out
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
            let caps = env.model(&d.model).ok_or_else(|| unknown_model(&d.model))?;
            layout(s, d, caps)?;
        }
    }
    Ok(())
}

fn unknown_model(m: &str) -> DomainError {
    DomainError::validation(
        "model",
        format!("unknown model '{m}' (see GET /api/v1/models)"),
    )
}

// ---------------------------------------------------------------- groups

fn check_group(g: &Group) -> Result<(), DomainError> {
    text("name", &g.name, 128)?;
    if g.sip.domain.is_empty() {
        return Err(DomainError::validation(
            "sip.domain",
            "sip.domain is required",
        ));
    }
    host("sip.domain", &g.sip.domain)?;
    if let Some(p) = &g.sip.proxy {
        host("sip.proxy", p)?;
    }
    if g.sip.port == 0 {
        return Err(DomainError::validation(
            "sip.port",
            "sip.port must be 1 to 65535",
        ));
    }
    settings("settings", &g.settings)
}

/// The kind of a group update, by what changed:
///
/// | field | kind | why |
/// |---|---|---|
/// | `sip` (domain, proxy, port, transport) | `lines` | every phone of the group registers there |
/// | `name`, `settings`, `shared_line_licenses`, `provisioning` | `settings` | rendered values or server-side policy |
fn group_change_kind(old: &Group, new: &Group) -> ChangeKind {
    ChangeKind::when(old.sip != new.sip, ChangeKind::Lines)
}

pub fn create_group(tx: &mut Tx, mut g: Group) -> Result<Effect, DomainError> {
    if g.name.is_empty() {
        g.name = g.id.to_string();
    }
    check_group(&g)?;
    if tx.state().groups.contains_key(&g.id) {
        return Err(exists(&format!("group {}", g.id)));
    }
    let fx = Effect::new(
        Action::GroupCreate,
        ChangeKind::Settings,
        Some(&g.id),
        g.id.as_str(),
    );
    tx.put(Record::Group(g));
    Ok(fx)
}

pub fn update_group(tx: &mut Tx, id: &GroupId, mut g: Group) -> Result<Effect, DomainError> {
    let kind = group_change_kind(group(tx.state(), id)?, &g);
    if &g.id != id {
        return Err(DomainError::validation(
            "id",
            "a group's id cannot be changed",
        ));
    }
    if g.name.is_empty() {
        g.name = g.id.to_string();
    }
    check_group(&g)?;
    let used = tx.state().shared_lines_of(id).count();
    if (g.shared_line_licenses as usize) < used {
        return Err(DomainError::conflict(
            ErrorCode::NoLicense,
            format!(
                "group {id} has {used} shared lines; shared_line_licenses cannot be lowered to {}",
                g.shared_line_licenses
            ),
        ));
    }
    let mut fx = Effect::new(Action::GroupUpdate, kind, Some(id), id.as_str());
    fx.devices = tx.state().devices_of(id).map(|d| d.mac.clone()).collect();
    tx.put(Record::Group(g));
    Ok(fx)
}

pub fn delete_group(tx: &mut Tx, id: &GroupId, cascade: bool) -> Result<Effect, DomainError> {
    group(tx.state(), id)?;
    let s = tx.state();
    let users: Vec<_> = s.users_of(id).map(|u| u.extension.clone()).collect();
    let devices: Vec<_> = s.devices_of(id).map(|d| d.mac.clone()).collect();
    let lines: Vec<_> = s.shared_lines_of(id).map(|l| l.number.clone()).collect();
    let empty = users.is_empty() && devices.is_empty() && lines.is_empty();
    if !cascade && !empty {
        return Err(DomainError::conflict(
            ErrorCode::NotEmpty,
            format!(
                "group {id} still has {} users, {} devices and {} shared lines; delete them first or use ?cascade=true",
                users.len(),
                devices.len(),
                lines.len()
            ),
        ));
    }
    let scas: Vec<_> = users
        .iter()
        .flat_map(|e| s.scas_of_user(id, e))
        .map(|x| x.line_port.clone())
        .collect();
    let tokens: Vec<_> = s
        .tokens
        .values()
        .filter(|t| t.group.as_ref() == Some(id))
        .map(|t| t.id.clone())
        .collect();
    let mut fx = Effect::new(
        Action::GroupDelete,
        ChangeKind::Lines,
        Some(id),
        id.as_str(),
    )
    .detail(json!({
        "users": users.len(), "devices": devices.len(), "shared_lines": lines.len(),
        "sca_endpoints": scas.len(), "tokens": tokens.len(),
    }));
    fx.devices = devices.iter().cloned().collect();
    for p in scas {
        tx.delete(RecordKey::Sca(p));
    }
    for n in lines {
        tx.delete(RecordKey::SharedLine(id.clone(), n));
    }
    for m in devices {
        tx.delete(RecordKey::Device(m));
    }
    for e in users {
        tx.delete(RecordKey::User(id.clone(), e));
    }
    for t in tokens {
        tx.delete(RecordKey::Token(t));
    }
    tx.delete(RecordKey::Group(id.clone()));
    Ok(fx)
}

// ---------------------------------------------------------------- users

fn check_features(
    s: &State,
    g: &GroupId,
    own: &Extension,
    f: &Features,
) -> Result<(), DomainError> {
    if let Some(v) = &f.voicemail {
        if let Some(n) = &v.access_number {
            dialable("features.voicemail.access_number", n)?;
        }
    }
    if let Some(fw) = &f.forwarding {
        for (field, v) in [
            ("features.forwarding.always", &fw.always),
            ("features.forwarding.busy", &fw.busy),
            ("features.forwarding.no_answer", &fw.no_answer),
            ("features.forwarding.not_reachable", &fw.not_reachable),
        ] {
            if let Some(v) = v {
                dialable(field, v)?;
            }
        }
        if let Some(secs) = fw.no_answer_ring_seconds {
            if !(1..=300).contains(&secs) {
                return Err(DomainError::validation(
                    "features.forwarding.no_answer_ring_seconds",
                    "no_answer_ring_seconds must be 1 to 300",
                ));
            }
        }
    }
    let mut seen = BTreeSet::new();
    for e in &f.monitoring {
        if e == own || !seen.insert(e) {
            return Err(DomainError::validation(
                "features.monitoring",
                format!("monitoring lists {e} twice or monitors the user itself"),
            ));
        }
        if s.user(g, e).is_none() {
            return Err(DomainError::validation(
                "features.monitoring",
                format!("monitored extension {e} does not exist in group {g}"),
            ));
        }
    }
    Ok(())
}

/// Builds a user from input, checking every rule that does not depend on the previous version.
fn build_user(
    s: &State,
    env: &dyn Env,
    g: &GroupId,
    input: UserInput,
    old: Option<&User>,
) -> Result<User, DomainError> {
    group(s, g)?;
    text("first_name", &input.first_name, 64)?;
    text("last_name", &input.last_name, 64)?;
    if let Some(d) = &input.display_name {
        text("display_name", d, 128)?;
    }
    if let Some(u) = &input.sip.username {
        sip_user("sip.username", u)?;
    }
    if let Some(u) = &input.sip.auth_username {
        sip_user("sip.auth_username", u)?;
    }
    let pw = match (input.sip.password, old) {
        (Some(p), _) => {
            password("sip.password", &p)?;
            Secret(p.into())
        }
        (None, Some(o)) => o.sip.password.clone(),
        (None, None) => Secret(env.new_secret().into()),
    };
    check_features(s, g, &input.extension, &input.features)?;
    let u = User {
        group: g.clone(),
        extension: input.extension,
        phone_number: input.phone_number,
        first_name: input.first_name.into(),
        last_name: input.last_name.into(),
        display_name: input.display_name.map(Into::into),
        kind: input.kind,
        sip: UserSip {
            username: input.sip.username,
            auth_username: input.sip.auth_username,
            password: pw,
        },
        features: input.features,
    };
    // Platform-wide uniqueness of the phone number and the primary line port.
    if let Some(p) = &u.phone_number {
        if let Some(other) = s.user_with_phone(p).filter(|x| !same_user(x, &u)) {
            return Err(DomainError::conflict(
                ErrorCode::AlreadyExists,
                format!(
                    "phone number {p} already belongs to {}/{}",
                    other.group, other.extension
                ),
            )
            .with_field("phone_number"));
        }
    }
    let port = u.sip_username();
    let own_port = old.map(|o| o.sip_username());
    if own_port.as_deref() != Some(port.as_str()) {
        if let Some(holder) = s.line_port_holder(&port) {
            return Err(line_port_in_use(&port, &holder).with_field("sip.username"));
        }
    }
    Ok(u)
}

fn same_user(a: &User, b: &User) -> bool {
    a.group == b.group && a.extension == b.extension
}

fn line_port_in_use(port: &str, holder: &str) -> DomainError {
    DomainError::conflict(
        ErrorCode::LinePortInUse,
        format!("Line Port ID {port} is already in use (by {holder})"),
    )
}

fn check_extension_free(s: &State, g: &GroupId, e: &Extension) -> Result<(), DomainError> {
    if s.user(g, e).is_some() {
        return Err(exists(&format!("extension {e} in group {g}")).with_field("extension"));
    }
    if let Ok(n) = SharedNumber::parse(e.as_str()) {
        if s.shared_lines.contains_key(&(g.clone(), n)) {
            return Err(DomainError::conflict(
                ErrorCode::AlreadyExists,
                format!("{e} is the number of a shared line in group {g}"),
            )
            .with_field("extension"));
        }
    }
    Ok(())
}

/// The kind of a user update, by what changed (values as the phone gets them, so a field that
/// only feeds a default counts when the default changes):
///
/// | field | kind | why |
/// |---|---|---|
/// | `sip.username` (effective: default phone number or `<group>_<extension>`) | `lines` | the identity the phone registers |
/// | `sip.auth_username` (effective) | `lines` | the digest user it registers with |
/// | `sip.password` | `lines` | the credentials it registers with |
/// | `phone_number` | `lines` | the line's number (and the default username) |
/// | display name as shown (`display_name`, else `first_name last_name`) | `lines` | the name the line shows and sends |
/// | `first_name` / `last_name` hidden by a `display_name` | `settings` | nothing on any line changes |
/// | `features.monitoring` | `keys` | the BLF keys on the user's phones |
/// | `kind`, other `features` | `settings` | rendered settings (a kind change moves no line: the rules forbid it on owned or logged-in devices) |
///
/// One kind per change: a rename also reaches the phones that monitor the user (a BLF label),
/// and they get `lines` too.
fn user_change_kind(old: &User, new: &User) -> ChangeKind {
    let line = old.sip_username() != new.sip_username()
        || old.auth_username() != new.auth_username()
        || old.sip.password != new.sip.password
        || old.phone_number != new.phone_number
        || old.display() != new.display();
    ChangeKind::when(line, ChangeKind::Lines).and(ChangeKind::when(
        old.features.monitoring != new.features.monitoring,
        ChangeKind::Keys,
    ))
}

pub fn create_user(
    tx: &mut Tx,
    env: &dyn Env,
    g: &GroupId,
    input: UserInput,
) -> Result<(Effect, User), DomainError> {
    check_extension_free(tx.state(), g, &input.extension)?;
    let u = build_user(tx.state(), env, g, input, None)?;
    let fx = Effect::new(
        Action::UserCreate,
        ChangeKind::Settings,
        Some(g),
        u.extension.as_str(),
    );
    tx.put(Record::User(u.clone()));
    Ok((fx, u))
}

pub fn update_user(
    tx: &mut Tx,
    env: &dyn Env,
    g: &GroupId,
    e: &Extension,
    input: UserInput,
) -> Result<(Effect, User), DomainError> {
    let old = user(tx.state(), g, e)?.clone();
    if &input.extension != e {
        return Err(DomainError::validation(
            "extension",
            "a user's extension cannot be changed; duplicate the user and delete the old one",
        ));
    }
    let u = build_user(tx.state(), env, g, input, Some(&old))?;
    let s = tx.state();
    if u.kind == UserKind::HotDesk && s.devices_owned_by(g, e).next().is_some() {
        return Err(DomainError::validation(
            "kind",
            format!("user {e} owns a device; a hot_desk user has no device of its own"),
        ));
    }
    if u.kind == UserKind::Standard && s.devices_of(g).any(|d| d.hot_desk.as_ref() == Some(e)) {
        return Err(DomainError::validation(
            "kind",
            format!("user {e} is logged in to a device as a hot-desk user; log it out first"),
        ));
    }
    if old.line_port_prefix() != u.line_port_prefix() && s.scas_of_user(g, e).next().is_some() {
        // Existing endpoints keep their line ports (they are registered on the platform under
        // them); new ones get the new prefix. Say so rather than silently diverge.
        tracing::info!(group = %g, extension = %e, "line port prefix changed; existing SCA endpoints keep their line ports");
    }
    let mut fx = Effect::new(
        Action::UserUpdate,
        user_change_kind(&old, &u),
        Some(g),
        e.as_str(),
    );
    fx.devices = devices_showing_user(s, g, e);
    tx.put(Record::User(u.clone()));
    Ok((fx, u))
}

pub fn delete_user(tx: &mut Tx, g: &GroupId, e: &Extension) -> Result<Effect, DomainError> {
    user(tx.state(), g, e)?;
    let s = tx.state();
    let mut fx = Effect::new(Action::UserDelete, ChangeKind::Lines, Some(g), e.as_str());
    fx.devices = devices_showing_user(s, g, e);
    let scas: Vec<_> = s.scas_of_user(g, e).map(|x| x.line_port.clone()).collect();
    let mut devices: Vec<Device> = s
        .devices_of(g)
        .filter(|d| d.owner.as_ref() == Some(e) || d.hot_desk.as_ref() == Some(e))
        .cloned()
        .collect();
    let mut lines: Vec<SharedLine> = s.memberships_of(g, e).map(|(l, _)| l.clone()).collect();
    let mut watchers: Vec<User> = s
        .users_of(g)
        .filter(|u| u.features.monitoring.contains(e))
        .cloned()
        .collect();
    fx.detail =
        json!({ "sca_endpoints_deleted": scas.iter().map(|p| p.to_string()).collect::<Vec<_>>() });
    for p in scas {
        tx.delete(RecordKey::Sca(p));
    }
    for d in devices.iter_mut() {
        if d.owner.as_ref() == Some(e) {
            d.owner = None;
        }
        if d.hot_desk.as_ref() == Some(e) {
            d.hot_desk = None;
        }
        tx.put(Record::Device(d.clone()));
    }
    for l in lines.iter_mut() {
        l.members.retain(|m| &m.extension != e);
        tx.put(Record::SharedLine(l.clone()));
    }
    for w in watchers.iter_mut() {
        w.features.monitoring.retain(|m| m != e);
        tx.put(Record::User(w.clone()));
    }
    tx.delete(RecordKey::User(g.clone(), e.clone()));
    Ok(fx)
}

pub fn duplicate_user(
    tx: &mut Tx,
    env: &dyn Env,
    g: &GroupId,
    e: &Extension,
    input: DuplicateInput,
) -> Result<(Effect, User), DomainError> {
    let src = user(tx.state(), g, e)?.clone();
    check_extension_free(tx.state(), g, &input.extension)?;
    let copy = UserInput {
        extension: input.extension,
        phone_number: input.phone_number,
        first_name: input
            .first_name
            .unwrap_or_else(|| src.first_name.to_string()),
        last_name: input.last_name.unwrap_or_else(|| src.last_name.to_string()),
        display_name: None,
        kind: src.kind,
        sip: SipInput::default(),
        features: src.features,
    };
    let u = build_user(tx.state(), env, g, copy, None)?;
    let fx = Effect::new(
        Action::UserDuplicate,
        ChangeKind::Settings,
        Some(g),
        u.extension.as_str(),
    )
    .detail(json!({ "from": e }));
    tx.put(Record::User(u.clone()));
    Ok((fx, u))
}

pub fn rotate_sip_password(
    tx: &mut Tx,
    env: &dyn Env,
    g: &GroupId,
    e: &Extension,
) -> Result<(Effect, String), DomainError> {
    let mut u = user(tx.state(), g, e)?.clone();
    let pw = env.new_secret();
    u.sip.password = Secret(pw.as_str().into());
    let mut fx = Effect::new(
        Action::UserSipPassword,
        ChangeKind::Lines,
        Some(g),
        e.as_str(),
    );
    fx.devices = devices_showing_user(tx.state(), g, e);
    tx.put(Record::User(u));
    Ok((fx, pw))
}

// ---------------------------------------------------------------- devices

fn build_device(
    s: &State,
    env: &dyn Env,
    g: &GroupId,
    input: DeviceInput,
    old: Option<&Device>,
) -> Result<Device, DomainError> {
    group(s, g)?;
    let name = input.name.unwrap_or_else(|| input.mac.to_string());
    if name.is_empty() {
        return Err(DomainError::validation("name", "name must not be empty"));
    }
    text("name", &name, 64)?;
    env.model(&input.model)
        .ok_or_else(|| unknown_model(&input.model))?;
    if let Some(other) = s.device_by_name(g, &name) {
        if other.mac != input.mac {
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
    for k in &input.keys {
        if let Some(l) = &k.label {
            text("keys.label", l, 32)?;
        }
        text("keys.value", &k.value, 64)?;
    }
    settings("settings", &input.settings)?;
    let mut d = Device {
        mac: input.mac,
        group: g.clone(),
        name: name.into(),
        model: input.model.into(),
        owner: input.owner,
        keys: input.keys,
        settings: input.settings,
        notify_target: input.notify_target,
        prov_password: Secret::default(),
        hot_desk: None,
        revision: 0,
    };
    match old {
        Some(o) => {
            d.prov_password = o.prov_password.clone();
            d.hot_desk = o.hot_desk.clone();
            d.revision = o.revision;
        }
        None => d.prov_password = Secret(env.new_secret().into()),
    }
    Ok(d)
}

/// A line appears at most once on a device: the context user's line must not also be an SCA
/// endpoint there.
fn check_once_on_device(s: &State, d: &Device) -> Result<(), DomainError> {
    for e in [d.owner.as_ref(), d.hot_desk.as_ref()]
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

/// The kind of a device update, by what changed:
///
/// | field | kind | why |
/// |---|---|---|
/// | `owner` | `lines` | the primary line (and every appearance after it) |
/// | `model` | `lines` | the key space and registrations the layout is built for |
/// | `keys` | `keys` | programmable keys only |
/// | `name`, `settings`, `notify_target` | `settings` | rendered values, or server-side only |
fn device_change_kind(old: &Device, new: &Device) -> ChangeKind {
    ChangeKind::when(
        old.owner != new.owner || old.model != new.model,
        ChangeKind::Lines,
    )
    .and(ChangeKind::when(old.keys != new.keys, ChangeKind::Keys))
}

pub fn create_device(
    tx: &mut Tx,
    env: &dyn Env,
    g: &GroupId,
    input: DeviceInput,
) -> Result<(Effect, Device), DomainError> {
    if let Some(d) = tx.state().devices.get(&input.mac) {
        return Err(exists(&format!("device {} (in group {})", d.mac, d.group)).with_field("mac"));
    }
    let d = build_device(tx.state(), env, g, input, None)?;
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

pub fn update_device(
    tx: &mut Tx,
    env: &dyn Env,
    mac: &Mac,
    input: DeviceInput,
) -> Result<(Effect, Device), DomainError> {
    let old = device(tx.state(), mac)?.clone();
    if &input.mac != mac {
        return Err(DomainError::validation(
            "mac",
            "a device's MAC cannot be changed",
        ));
    }
    let d = build_device(tx.state(), env, &old.group, input, Some(&old))?;
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

pub fn delete_device(tx: &mut Tx, mac: &Mac) -> Result<Effect, DomainError> {
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
    tx.delete(RecordKey::Device(mac.clone()));
    Ok(fx)
}

pub fn rotate_device_credentials(
    tx: &mut Tx,
    env: &dyn Env,
    mac: &Mac,
) -> Result<(Effect, String), DomainError> {
    let mut d = device(tx.state(), mac)?.clone();
    let pw = env.new_secret();
    d.prov_password = Secret(pw.as_str().into());
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

pub fn hot_desk_login(
    tx: &mut Tx,
    env: &dyn Env,
    mac: &Mac,
    e: &Extension,
) -> Result<Effect, DomainError> {
    let mut d = device(tx.state(), mac)?.clone();
    let u = tx.state().user(&d.group, e).ok_or_else(|| {
        DomainError::validation(
            "extension",
            format!("user {e} does not exist in group {}", d.group),
        )
    })?;
    if u.kind != UserKind::HotDesk {
        return Err(DomainError::validation(
            "extension",
            format!("user {e} is not a hot_desk user"),
        ));
    }
    let mut fx = Effect::new(
        Action::DeviceHotDeskLogin,
        ChangeKind::Lines,
        Some(&d.group),
        mac.as_str(),
    )
    .detail(json!({ "extension": e }));
    fx.devices.insert(mac.clone());
    // A guest sits at one desk at a time: logging in here logs it out elsewhere.
    let elsewhere: Vec<Device> = tx
        .state()
        .devices_of(&d.group)
        .filter(|o| o.hot_desk.as_ref() == Some(e) && &o.mac != mac)
        .cloned()
        .collect();
    for mut o in elsewhere {
        o.hot_desk = None;
        fx.devices.insert(o.mac.clone());
        tx.put(Record::Device(o));
    }
    d.hot_desk = Some(e.clone());
    check_once_on_device(tx.state(), &d)?;
    tx.put(Record::Device(d));
    check_layouts(tx.state(), env, &fx.devices)?;
    Ok(fx)
}

pub fn hot_desk_logout(tx: &mut Tx, mac: &Mac) -> Result<Effect, DomainError> {
    let mut d = device(tx.state(), mac)?.clone();
    let e = d.hot_desk.take().ok_or_else(|| {
        DomainError::not_found(format!("no hot-desk user is logged in to device {mac}"))
    })?;
    let mut fx = Effect::new(
        Action::DeviceHotDeskLogout,
        ChangeKind::Lines,
        Some(&d.group),
        mac.as_str(),
    )
    .detail(json!({ "extension": e }));
    fx.devices.insert(mac.clone());
    tx.put(Record::Device(d));
    Ok(fx)
}

// ---------------------------------------------------------------- SCA endpoints

/// Resolves the `device` field: a device name in the group, or a MAC.
fn resolve_device(s: &State, g: &GroupId, reference: &str) -> Result<Mac, DomainError> {
    if let Some(d) = s.device_by_name(g, reference) {
        return Ok(d.mac.clone());
    }
    if let Ok(mac) = Mac::parse(reference) {
        if let Some(d) = s.devices.get(&mac) {
            if &d.group != g {
                return Err(DomainError::unprocessable(
                    ErrorCode::CrossGroup,
                    format!(
                        "device {mac} is in group {}: a line cannot be shared across groups",
                        d.group
                    ),
                )
                .with_field("device"));
            }
            return Ok(mac);
        }
    }
    Err(DomainError::validation(
        "device",
        format!("no device named or with MAC '{reference}' in group {g}"),
    ))
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
            if let Some(holder) = s.line_port_holder(lp.as_str()) {
                return Err(line_port_in_use(lp.as_str(), &holder).with_field("line_port"));
            }
            Ok(lp)
        }
        None => (1u32..)
            .map(|n| LinePort::new(&prefix, n))
            .find(|lp| s.line_port_holder(lp.as_str()).is_none())
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
            let caps = env.model(&d.model).ok_or_else(|| unknown_model(&d.model))?;
            layout(s, d, caps)?.first_free_key().ok_or_else(|| {
                DomainError::unprocessable(
                    ErrorCode::NoFreeKey,
                    format!(
                        "device {} has no free line key (model {} has {})",
                        d.name, d.model, caps.line_keys
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

pub fn create_sca(
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

pub fn update_sca(
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

pub fn delete_sca(
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

// ---------------------------------------------------------------- shared lines

fn build_shared_line(
    s: &State,
    env: &dyn Env,
    g: &GroupId,
    input: SharedLineInput,
    old: Option<&SharedLine>,
) -> Result<SharedLine, DomainError> {
    group(s, g)?;
    if let Some(d) = &input.direct_dial {
        dialable("direct_dial", d)?;
    }
    if let Some(d) = &input.autodial_digits {
        dialable("autodial_digits", d)?;
    }
    text("description", &input.description, 64)?;
    check_members(s, g, &input.members)?;
    Ok(SharedLine {
        group: g.clone(),
        number: input.number,
        direct_dial: input.direct_dial,
        description: input.description,
        forward_to_voicemail: input.forward_to_voicemail,
        autodial_digits: input.autodial_digits,
        members: input.members,
        password: match old {
            Some(o) => o.password.clone(),
            None => Secret(env.new_secret().into()),
        },
    })
}

fn check_members(s: &State, g: &GroupId, members: &[Member]) -> Result<(), DomainError> {
    let mut seen = BTreeSet::new();
    for m in members {
        if !seen.insert(&m.extension) {
            return Err(DomainError::validation(
                "members",
                format!("extension {} is listed twice", m.extension),
            ));
        }
        if s.user(g, &m.extension).is_none() {
            return Err(DomainError::validation(
                "members",
                format!("member {} does not exist in group {g}", m.extension),
            ));
        }
    }
    Ok(())
}

/// The kind of a shared-line update: its members are appearances on their phones, and its
/// description (the line's name and label), direct dial, autodial digits and voicemail
/// forwarding are that appearance's values (`lines` in the template context), so any change is
/// `lines`; an unchanged line is `settings`.
fn shared_line_change_kind(old: &SharedLine, new: &SharedLine) -> ChangeKind {
    ChangeKind::when(old != new, ChangeKind::Lines)
}

pub fn create_shared_line(
    tx: &mut Tx,
    env: &dyn Env,
    g: &GroupId,
    input: SharedLineInput,
) -> Result<(Effect, SharedLine), DomainError> {
    let s = tx.state();
    let grp = group(s, g)?;
    let n = &input.number;
    if s.shared_lines.contains_key(&(g.clone(), n.clone())) {
        return Err(exists(&format!("shared line {n} in group {g}")).with_field("number"));
    }
    if Extension::parse(n.as_str())
        .ok()
        .and_then(|e| s.user(g, &e))
        .is_some()
    {
        return Err(DomainError::conflict(
            ErrorCode::AlreadyExists,
            format!("{n} is the extension of a user in group {g}"),
        )
        .with_field("number"));
    }
    let used = s.shared_lines_of(g).count();
    if used >= grp.shared_line_licenses as usize {
        return Err(DomainError::conflict(
            ErrorCode::NoLicense,
            format!(
                "group {g} uses all {} shared line licences",
                grp.shared_line_licenses
            ),
        ));
    }
    let line = build_shared_line(s, env, g, input, None)?;
    if let Some(holder) = s.line_port_holder(&line.line_port()) {
        return Err(line_port_in_use(&line.line_port(), &holder).with_field("number"));
    }
    let mut fx = Effect::new(
        Action::SharedLineCreate,
        ChangeKind::Lines,
        Some(g),
        line.number.as_str(),
    );
    fx.devices = devices_of_members(s, &line);
    tx.put(Record::SharedLine(line.clone()));
    check_layouts(tx.state(), env, &fx.devices)?;
    Ok((fx, line))
}

pub fn update_shared_line(
    tx: &mut Tx,
    env: &dyn Env,
    g: &GroupId,
    n: &SharedNumber,
    input: SharedLineInput,
) -> Result<(Effect, SharedLine), DomainError> {
    let old = shared_line(tx.state(), g, n)?.clone();
    if &input.number != n {
        return Err(DomainError::validation(
            "number",
            "a shared line's number cannot be changed",
        ));
    }
    let line = build_shared_line(tx.state(), env, g, input, Some(&old))?;
    let mut fx = Effect::new(
        Action::SharedLineUpdate,
        shared_line_change_kind(&old, &line),
        Some(g),
        n.as_str(),
    );
    fx.devices = devices_of_members(tx.state(), &old);
    fx.devices.extend(devices_of_members(tx.state(), &line));
    tx.put(Record::SharedLine(line.clone()));
    check_layouts(tx.state(), env, &fx.devices)?;
    Ok((fx, line))
}

pub fn set_members(
    tx: &mut Tx,
    env: &dyn Env,
    g: &GroupId,
    n: &SharedNumber,
    members: Vec<Member>,
) -> Result<(Effect, SharedLine), DomainError> {
    let old = shared_line(tx.state(), g, n)?.clone();
    let input = SharedLineInput {
        number: old.number.clone(),
        direct_dial: old.direct_dial.clone(),
        description: old.description.clone(),
        forward_to_voicemail: old.forward_to_voicemail,
        autodial_digits: old.autodial_digits.clone(),
        members,
    };
    let (mut fx, line) = update_shared_line(tx, env, g, n, input)?;
    fx.action = Action::SharedLineMembers;
    Ok((fx, line))
}

pub fn delete_shared_line(
    tx: &mut Tx,
    g: &GroupId,
    n: &SharedNumber,
) -> Result<Effect, DomainError> {
    let line = shared_line(tx.state(), g, n)?.clone();
    let mut fx = Effect::new(
        Action::SharedLineDelete,
        ChangeKind::Lines,
        Some(g),
        n.as_str(),
    );
    fx.devices = devices_of_members(tx.state(), &line);
    tx.delete(RecordKey::SharedLine(g.clone(), n.clone()));
    Ok(fx)
}

// ---------------------------------------------------------------- tokens

/// Adds an API token whose secret hashes to `secret_sha256` (the secret itself is never stored).
pub fn create_token(tx: &mut Tx, t: Token) -> Result<Effect, DomainError> {
    text("name", &t.name, 64)?;
    if let Some(g) = &t.group {
        group(tx.state(), g)?;
    }
    if tx.state().tokens.contains_key(&t.id) {
        return Err(exists(&format!("token {}", t.id)));
    }
    let fx = Effect::new(
        Action::TokenCreate,
        ChangeKind::Settings,
        t.group.as_ref(),
        t.id.as_str(),
    )
    .detail(json!({ "name": t.name }));
    tx.put(Record::Token(t));
    Ok(fx)
}

pub fn delete_token(tx: &mut Tx, id: &str) -> Result<Effect, DomainError> {
    let t = tx
        .state()
        .tokens
        .get(id)
        .ok_or_else(|| DomainError::not_found(format!("token {id} does not exist")))?
        .clone();
    let fx = Effect::new(
        Action::TokenDelete,
        ChangeKind::Settings,
        t.group.as_ref(),
        id,
    )
    .detail(json!({ "name": t.name }));
    tx.delete(RecordKey::Token(t.id));
    Ok(fx)
}

// ---------------------------------------------------------------- templates

/// Devices of a model (a template change touches all of them).
fn devices_of_model(s: &State, model: &str) -> BTreeSet<Mac> {
    s.devices
        .values()
        .filter(|d| d.model == model)
        .map(|d| d.mac.clone())
        .collect()
}

/// Adds a validated template body as the next version of (model, template) and makes it live.
/// Validation (parse, sample render, XML) is the renderer's, done before this rule runs.
pub fn put_template(
    tx: &mut Tx,
    model: &str,
    template: &str,
    body: String,
    at: String,
    actor: &str,
) -> Result<(Effect, u32), DomainError> {
    let key = (model.to_string(), template.to_string());
    let mut o = tx
        .state()
        .templates
        .get(&key)
        .cloned()
        .unwrap_or(TemplateOverride {
            model: model.to_string(),
            template: template.to_string(),
            versions: vec![],
            active: None,
        });
    let version = o.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
    o.versions.push(TemplateVersion {
        version,
        body,
        created_at: at,
        actor: actor.to_string(),
    });
    o.active = Some(version);
    let mut fx = Effect::new(
        Action::TemplateUpdate,
        ChangeKind::Template,
        None,
        format!("{model}/{template}"),
    )
    .detail(json!({ "version": version }));
    fx.devices = devices_of_model(tx.state(), model);
    tx.put(Record::Template(o));
    Ok((fx, version))
}

/// Makes an earlier version live again (`None`: back to the built-in template).
pub fn activate_template(
    tx: &mut Tx,
    model: &str,
    template: &str,
    version: Option<u32>,
) -> Result<Effect, DomainError> {
    let key = (model.to_string(), template.to_string());
    let mut o = tx.state().templates.get(&key).cloned().ok_or_else(|| {
        DomainError::not_found(format!("{model}/{template} has no uploaded versions"))
    })?;
    if let Some(v) = version {
        if !o.versions.iter().any(|x| x.version == v) {
            return Err(DomainError::not_found(format!(
                "{model}/{template} has no version {v}"
            )));
        }
    } else if o.active.is_none() {
        return Err(DomainError::not_found(format!(
            "{model}/{template} already uses the built-in template"
        )));
    }
    o.active = version;
    let action = if version.is_some() {
        Action::TemplateRollback
    } else {
        Action::TemplateReset
    };
    let mut fx = Effect::new(
        action,
        ChangeKind::Template,
        None,
        format!("{model}/{template}"),
    )
    .detail(json!({ "version": version }));
    fx.devices = devices_of_model(tx.state(), model);
    tx.put(Record::Template(o));
    Ok(fx)
}

#[cfg(test)]
#[path = "rules_tests.rs"]
mod tests;
