//! Hot desking (SPEC §1 "Hot desking"): a hot_desk user logs in to a device and out again.

use super::*;

pub(crate) fn hot_desk_login(
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
        .filter(|o| o.hot_desk.as_deref() == Some(e) && &o.mac != mac)
        .cloned()
        .collect();
    for mut o in elsewhere {
        o.hot_desk = None;
        fx.devices.insert(o.mac.clone());
        tx.put(Record::Device(o));
    }
    d.hot_desk = Some(Box::new(e.clone()));
    check_once_on_device(tx.state(), &d)?;
    tx.put(Record::Device(d));
    check_layouts(tx.state(), env, &fx.devices)?;
    Ok(fx)
}

pub(crate) fn hot_desk_logout(tx: &mut Tx, mac: &Mac) -> Result<Effect, DomainError> {
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
