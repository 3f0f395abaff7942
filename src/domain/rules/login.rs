//! Seed 002 "Edit extension profile": whether a user may log in, and Unregister.
//!
//! The rule (README "Login allowed and unregister"): a user's lines render enabled exactly when
//! `login_allowed` is true and the user is not `unregistered`. `unregister` sets `unregistered`;
//! the next change of the user record (any update, a SIP password rotation) clears it. Each
//! change that takes the lines off is of kind `unregister` (the reboot event on every model, so
//! the phone drops the registration); one that brings them back is of kind `lines`. Both touch
//! every device with an appearance of the user's lines.

use super::*;

/// Devices with an appearance of the user's lines: where it is the context user (owner or
/// hot-desk guest: its primary line and the shared lines it is a member of) and where it has an
/// SCA endpoint. Not the devices that only monitor it (a BLF key registers nothing).
pub(crate) fn devices_with_user_lines(s: &State, g: &GroupId, e: &Extension) -> BTreeSet<Mac> {
    let mut out: BTreeSet<Mac> = s
        .devices_with_context_user(g, e)
        .map(|d| d.mac.clone())
        .collect();
    out.extend(s.scas_of_user(g, e).map(|x| x.device.clone()));
    out
}

/// Adjusts a user update's effect when it turns the user's lines off or on: off is kind
/// `unregister` (and, unless the name BLF keys show changed too, only the devices with the
/// lines: a watcher's phone is not rebooted for it); on is at least `lines`.
pub(super) fn login_effect(s: &State, old: &User, new: &User, fx: &mut Effect) {
    match (old.lines_enabled(), new.lines_enabled()) {
        (true, false) => {
            fx.kind = fx.kind.and(ChangeKind::Unregister);
            if old.display() == new.display() && old.sip_username() == new.sip_username() {
                fx.devices = devices_with_user_lines(s, &new.group, &new.extension);
            }
        }
        (false, true) => fx.kind = fx.kind.and(ChangeKind::Lines),
        _ => {}
    }
}

/// `POST .../users/{ext}/unregister`: forces the user's lines off every phone now. Its lines
/// render disabled until the next change of the user; every device with an appearance of them
/// gets the reboot event. Repeating it reboots them again.
pub(crate) fn unregister_user(
    tx: &mut Tx,
    g: &GroupId,
    e: &Extension,
) -> Result<(Effect, User), DomainError> {
    let mut u = user(tx.state(), g, e)?.clone();
    u.unregistered = true;
    let mut fx = Effect::new(
        Action::UserUnregister,
        ChangeKind::Unregister,
        Some(g),
        e.as_str(),
    )
    .detail(json!({ "login_allowed": u.login_allowed }));
    fx.devices = devices_with_user_lines(tx.state(), g, e);
    tx.put(Record::User(u.clone()));
    Ok((fx, u))
}
