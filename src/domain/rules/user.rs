//! Users (SPEC §1 "User"): create, update, delete, duplicate, rotate the SIP password.

use super::*;

/// Body of `POST .../users` (and the shape `PATCH` merges into).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserInput {
    pub(crate) extension: Extension,
    #[serde(default)]
    pub(crate) phone_number: Option<PhoneNumber>,
    #[serde(default)]
    pub(crate) first_name: String,
    #[serde(default)]
    pub(crate) last_name: String,
    #[serde(default)]
    pub(crate) display_name: Option<String>,
    #[serde(default)]
    pub(crate) kind: UserKind,
    #[serde(default)]
    pub(crate) sip: SipInput,
    #[serde(default)]
    pub(crate) features: Features,
    /// Seed "Extensions": whether the user may log in (default true); false renders every
    /// appearance of its lines disabled and reboots the phones showing them.
    #[serde(default = "default_true")]
    pub(crate) login_allowed: bool,
    /// Seed 002 "Configure allowed endpoint": `{ip_phone, softphone, third_party}`, each
    /// default true. A user's appearances render only on the endpoint kinds it allows.
    #[serde(default)]
    pub(crate) allowed_endpoints: AllowedEndpoints,
}

/// A user's SIP identity on input; absent values take their defaults.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SipInput {
    /// Default: the phone number if set, else `<group>_<extension>`.
    #[serde(default)]
    pub(crate) username: Option<String>,
    /// Default: the username.
    #[serde(default)]
    pub(crate) auth_username: Option<String>,
    /// Default: 20 random characters. Write-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) password: Option<String>,
}

/// Body of `POST .../users/{ext}/duplicate`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DuplicateInput {
    pub(crate) extension: Extension,
    #[serde(default)]
    pub(crate) first_name: Option<String>,
    #[serde(default)]
    pub(crate) last_name: Option<String>,
    #[serde(default)]
    pub(crate) phone_number: Option<PhoneNumber>,
}

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
            Secret::new(p)
        }
        (None, Some(o)) => o.sip.password.clone(),
        (None, None) => Secret::new(env.new_secret()),
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
        sip: UserSip::new(input.sip.username, input.sip.auth_username, pw),
        features: input.features,
        login_allowed: input.login_allowed,
        allowed_endpoints: input.allowed_endpoints,
        // Any change of the user ends an `unregister` (see `rules::login`).
        unregistered: false,
    };
    // Platform-wide uniqueness of the phone number and the primary line port.
    if let Some(p) = &u.phone_number {
        if s.user_with_phone(p).is_some_and(|x| !same_user(x, &u)) {
            return Err(DomainError::conflict(
                ErrorCode::AlreadyExists,
                // Who has it is not said: it may be another group's user.
                format!("phone number {p} is already in use"),
            )
            .with_field("phone_number"));
        }
    }
    let port = u.sip_username();
    let own_port = old.map(|o| o.sip_username());
    if own_port.as_deref() != Some(port.as_str()) && s.line_port_taken(&port) {
        return Err(line_port_in_use(&port).with_field("sip.username"));
    }
    Ok(u)
}

fn same_user(a: &User, b: &User) -> bool {
    a.group == b.group && a.extension == b.extension
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
/// | `allowed_endpoints.ip_phone` / `.softphone` | `lines` | the user's appearances come off (or back on) that kind of device |
/// | `allowed_endpoints.third_party` | `settings` | nothing any provisioned device renders |
/// | `features.monitoring` | `keys` | the BLF keys on the user's phones |
/// | `kind`, other `features` | `settings` | rendered settings (a kind change moves no line: the rules forbid it on owned or logged-in devices) |
///
/// A rename also reaches the phones that show the user on a BLF key only (monitoring, a BLF key
/// naming it, `blf_all`): for them the entry's `keys_only` makes it a `keys` change.
fn user_change_kind(old: &User, new: &User) -> ChangeKind {
    let line = old.sip_username() != new.sip_username()
        || old.auth_username() != new.auth_username()
        || old.sip.password != new.sip.password
        || old.phone_number != new.phone_number
        || old.display() != new.display()
        || old.allowed_endpoints.ip_phone != new.allowed_endpoints.ip_phone
        || old.allowed_endpoints.softphone != new.allowed_endpoints.softphone;
    ChangeKind::when(line, ChangeKind::Lines).and(ChangeKind::when(
        old.features.monitoring != new.features.monitoring,
        ChangeKind::Keys,
    ))
}

pub(crate) fn create_user(
    tx: &mut Tx,
    env: &dyn Env,
    g: &GroupId,
    input: UserInput,
) -> Result<(Effect, User), DomainError> {
    check_extension_free(tx.state(), g, &input.extension)?;
    let u = build_user(tx.state(), env, g, input, None)?;
    let mut fx = Effect::new(
        Action::UserCreate,
        ChangeKind::Settings,
        Some(g),
        u.extension.as_str(),
    );
    tx.put(Record::User(u.clone()));
    touch_blf_watchers(tx.state(), &u, &mut fx);
    Ok((fx, u))
}

pub(crate) fn update_user(
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
    if u.kind == UserKind::Standard && s.devices_of(g).any(|d| d.hot_desk.as_deref() == Some(e)) {
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
    login_effect(s, &old, &u, &mut fx);
    fx.keys_only = devices_watching_only(s, g, e);
    tx.put(Record::User(u.clone()));
    Ok((fx, u))
}

pub(crate) fn delete_user(tx: &mut Tx, g: &GroupId, e: &Extension) -> Result<Effect, DomainError> {
    user(tx.state(), g, e)?;
    let s = tx.state();
    let mut fx = Effect::new(Action::UserDelete, ChangeKind::Lines, Some(g), e.as_str());
    fx.devices = devices_showing_user(s, g, e);
    fx.keys_only = devices_watching_only(s, g, e);
    let scas: Vec<_> = s.scas_of_user(g, e).map(|x| x.line_port.clone()).collect();
    let mut devices: Vec<Device> = s
        .devices_of(g)
        .filter(|d| d.owner.as_ref() == Some(e) || d.hot_desk.as_deref() == Some(e))
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
        if d.hot_desk.as_deref() == Some(e) {
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

pub(crate) fn duplicate_user(
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
        login_allowed: src.login_allowed,
        allowed_endpoints: src.allowed_endpoints,
    };
    let u = build_user(tx.state(), env, g, copy, None)?;
    let mut fx = Effect::new(
        Action::UserDuplicate,
        ChangeKind::Settings,
        Some(g),
        u.extension.as_str(),
    )
    .detail(json!({ "from": e }));
    tx.put(Record::User(u.clone()));
    touch_blf_watchers(tx.state(), &u, &mut fx);
    Ok((fx, u))
}

pub(crate) fn rotate_sip_password(
    tx: &mut Tx,
    env: &dyn Env,
    g: &GroupId,
    e: &Extension,
) -> Result<(Effect, String), DomainError> {
    let mut u = user(tx.state(), g, e)?.clone();
    let pw = env.new_secret();
    u.sip.password = Secret::new(pw.as_str());
    // A change of the user: it ends an `unregister`.
    u.unregistered = false;
    let mut fx = Effect::new(
        Action::UserSipPassword,
        ChangeKind::Lines,
        Some(g),
        e.as_str(),
    );
    fx.devices = devices_showing_user(tx.state(), g, e);
    fx.keys_only = devices_watching_only(tx.state(), g, e);
    tx.put(Record::User(u));
    Ok((fx, pw))
}

/// Seed 002 "Third party softphones ... insert the SIP username and SIP password": the user's
/// SIP credentials for a client configured by hand. Shown once: the password is rotated (as by
/// `rotate_sip_password`, so the user's phones get the new one) and returned only here. Refused
/// with 409 `endpoint_not_allowed` while `allowed_endpoints.third_party` is off.
pub(crate) fn third_party_credentials(
    tx: &mut Tx,
    env: &dyn Env,
    g: &GroupId,
    e: &Extension,
) -> Result<(Effect, String), DomainError> {
    let u = user(tx.state(), g, e)?;
    if !u.allowed_endpoints.third_party {
        return Err(DomainError::conflict(
            ErrorCode::EndpointNotAllowed,
            format!("user {e} may not use third-party softphones (allowed_endpoints.third_party is false)"),
        )
        .with_field("allowed_endpoints.third_party"));
    }
    let (fx, pw) = rotate_sip_password(tx, env, g, e)?;
    Ok((fx.detail(json!({ "for": "third_party" })), pw))
}
