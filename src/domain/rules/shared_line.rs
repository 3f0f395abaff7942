//! Shared lines (SPEC §1 "Shared line"): numbers, licences and members.

use super::*;

/// Body of `POST .../shared-lines` (and the shape `PATCH` merges into).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SharedLineInput {
    pub(crate) number: SharedNumber,
    #[serde(default)]
    pub(crate) direct_dial: Option<String>,
    #[serde(default)]
    pub(crate) description: String,
    #[serde(default)]
    pub(crate) forward_to_voicemail: bool,
    #[serde(default)]
    pub(crate) autodial_digits: Option<String>,
    #[serde(default)]
    pub(crate) members: Vec<Member>,
}

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
            None => Secret::new(env.new_secret()),
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

pub(crate) fn create_shared_line(
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
    if s.line_port_taken(&line.line_port()) {
        return Err(line_port_in_use(&line.line_port()).with_field("number"));
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

pub(crate) fn update_shared_line(
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

pub(crate) fn set_members(
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

pub(crate) fn delete_shared_line(
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
