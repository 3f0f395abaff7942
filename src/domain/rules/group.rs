//! Groups (SPEC §1 "Group"): create, update, delete (with `?cascade=true`).

use super::*;

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

pub(crate) fn create_group(tx: &mut Tx, mut g: Group) -> Result<Effect, DomainError> {
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

pub(crate) fn update_group(tx: &mut Tx, id: &GroupId, mut g: Group) -> Result<Effect, DomainError> {
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

pub(crate) fn delete_group(
    tx: &mut Tx,
    id: &GroupId,
    cascade: bool,
) -> Result<Effect, DomainError> {
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
    let profiles: Vec<_> = s.key_profiles_of(id).map(|p| p.name.clone()).collect();
    let firmware: Vec<_> = s.firmware_targets_of(id).map(|t| t.model.clone()).collect();
    let mut fx = Effect::new(
        Action::GroupDelete,
        ChangeKind::Lines,
        Some(id),
        id.as_str(),
    )
    .detail(json!({
        "users": users.len(), "devices": devices.len(), "shared_lines": lines.len(),
        "sca_endpoints": scas.len(), "tokens": tokens.len(), "key_profiles": profiles.len(),
    }));
    // Key profiles are the group's configuration, like its settings: they go with it.
    for n in profiles {
        tx.delete(RecordKey::KeyProfile(id.clone(), n));
    }
    for m in firmware {
        tx.delete(RecordKey::FirmwareTarget(id.clone(), m));
    }
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
