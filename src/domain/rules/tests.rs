//! Rule-by-rule tests of `rules` on a small fixture state; every test names the rule it pins.

use std::cell::Cell;

use super::*;
use crate::domain::layout::{layout, AppearanceKind};
use crate::domain::{Action, ChangeKind, ErrorCode, ErrorKind, ModelCaps};

mod endpoints;
mod login;

struct TestEnv {
    max_sca: usize,
    n: Cell<u32>,
}

impl TestEnv {
    fn model(&self, id: &str) -> Option<ModelCaps> {
        match id {
            "m4" => Some(ModelCaps {
                line_keys: 4,
                appearance_keys: 4,
                accounts: 3,
                endpoint: EndpointKind::IpPhone,
            }),
            // A softphone: accounts, no programmable keys worth the name.
            "soft" => Some(ModelCaps {
                line_keys: 8,
                appearance_keys: 8,
                accounts: 8,
                endpoint: EndpointKind::Softphone,
            }),
            // Four keys that show lines, then four on a module that shows none (keys only).
            "m4k" => Some(ModelCaps {
                line_keys: 8,
                appearance_keys: 4,
                accounts: 8,
                endpoint: EndpointKind::IpPhone,
            }),
            "m12" => Some(ModelCaps {
                line_keys: 12,
                appearance_keys: 12,
                accounts: 12,
                endpoint: EndpointKind::IpPhone,
            }),
            _ => None,
        }
    }
}

impl Env for TestEnv {
    /// The test models take no expansion module.
    fn device_caps(
        &self,
        model: &str,
        modules: &[ExpansionModule],
    ) -> Option<Result<ModelCaps, DomainError>> {
        let caps = self.model(model)?;
        Some(match modules.first() {
            None => Ok(caps),
            Some(m) => Err(DomainError::validation(
                "expansion_modules",
                format!("model {model} does not take expansion module {}", m.model),
            )),
        })
    }
    fn max_sca_per_user(&self) -> usize {
        self.max_sca
    }
    fn new_secret(&self) -> String {
        self.n.set(self.n.get() + 1);
        format!("secret-{:012}", self.n.get())
    }
    fn random_id(&self) -> [u8; 5] {
        self.n.set(self.n.get() + 1);
        let [a, b, c, d] = self.n.get().to_be_bytes();
        [0x50, a, b, c, d]
    }
}

fn env() -> TestEnv {
    TestEnv {
        max_sca: 35,
        n: Cell::new(0),
    }
}

/// Runs a rule the way the store does: rollback on error.
fn run<R>(
    s: &mut State,
    f: impl FnOnce(&mut Tx) -> Result<R, DomainError>,
) -> Result<R, DomainError> {
    let mut tx = Tx::new(s);
    let out = match f(&mut tx) {
        Ok(r) => Ok(r),
        Err(e) => {
            tx.rollback();
            Err(e)
        }
    };
    s.check_indexes();
    out
}

fn g(s: &str) -> GroupId {
    GroupId::parse(s).unwrap()
}
fn ext(s: &str) -> Extension {
    Extension::parse(s).unwrap()
}
fn mac(s: &str) -> Mac {
    Mac::parse(s).unwrap()
}
const G: &str = "ZZZ1900111-01";

/// Key profiles, BLF labels, `blf_all`, key moves.
mod key_profiles;

fn group_of(id: &str) -> Group {
    serde_json::from_value(serde_json::json!({"id": id, "sip": {"domain": "sip.example.net"}}))
        .unwrap()
}

fn user_in(e: &str, phone: Option<&str>, kind: UserKind) -> UserInput {
    UserInput {
        extension: ext(e),
        phone_number: phone.map(|p| PhoneNumber::parse(p).unwrap()),
        first_name: "First".into(),
        last_name: e.into(),
        display_name: None,
        kind,
        sip: SipInput::default(),
        features: Features::default(),
        login_allowed: true,
        allowed_endpoints: AllowedEndpoints::default(),
    }
}

fn device_in(m: &str, name: &str, model: &str, owner: Option<&str>) -> DeviceInput {
    DeviceInput {
        mac: Some(mac(m)),
        name: Some(name.into()),
        model: model.into(),
        owner: owner.map(ext),
        keys: vec![],
        settings: Default::default(),
        notify_target: None,
        expansion_modules: vec![],
        key_profile: None,
    }
}

fn sca_in(device: &str, port: Option<&str>, key: Option<KeyNo>) -> ScaInput {
    ScaInput {
        line_port: port.map(Into::into),
        device: device.into(),
        key,
        label: None,
        active: true,
        allow_origination: true,
        allow_termination: true,
    }
}

/// Group G with users 1001 (phone 6035551212), 5555 (no phone), 2002, 3003, hot-desk 0901;
/// devices "desk-a" (m12, owner 1001), "desk-b" (m4, owner 5555), "lobby" (m12, no owner);
/// group OTHER with device "other" (m12).
fn fixture() -> (State, TestEnv) {
    let env = env();
    let mut s = State::default();
    let gg = g(G);
    run(&mut s, |tx| {
        create_group(tx, group_of(G))?;
        create_group(tx, group_of("OTHER"))?;
        create_user(
            tx,
            &env,
            &gg,
            user_in("1001", Some("6035551212"), UserKind::Standard),
        )?;
        create_user(tx, &env, &gg, user_in("5555", None, UserKind::Standard))?;
        create_user(tx, &env, &gg, user_in("2002", None, UserKind::Standard))?;
        create_user(tx, &env, &gg, user_in("3003", None, UserKind::Standard))?;
        create_user(tx, &env, &gg, user_in("0901", None, UserKind::HotDesk))?;
        create_device(
            tx,
            &env,
            &gg,
            device_in("0004f2000001", "desk-a", "m12", Some("1001")),
        )?;
        create_device(
            tx,
            &env,
            &gg,
            device_in("0004f2000002", "desk-b", "m4", Some("5555")),
        )?;
        create_device(
            tx,
            &env,
            &gg,
            device_in("0004f2000003", "lobby", "m12", None),
        )?;
        create_device(
            tx,
            &env,
            &g("OTHER"),
            device_in("0004f2000009", "other", "m12", None),
        )?;
        Ok(())
    })
    .unwrap();
    (s, env)
}

fn add_sca(
    s: &mut State,
    env: &TestEnv,
    e: &str,
    input: ScaInput,
) -> Result<(Effect, ScaEndpoint), DomainError> {
    run(s, |tx| create_sca(tx, env, &g(G), &ext(e), input))
}

#[test]
fn sca_line_port_uses_phone_number_and_lowest_free_n() {
    let (mut s, env) = fixture();
    let (_, a) = add_sca(&mut s, &env, "1001", sca_in("desk-b", None, None)).unwrap();
    assert_eq!(a.line_port.as_str(), "6035551212_sca1");
    let (_, b) = add_sca(&mut s, &env, "1001", sca_in("lobby", None, None)).unwrap();
    assert_eq!(b.line_port.as_str(), "6035551212_sca2");
    // Deleting sca1 frees N = 1 for the next one.
    run(&mut s, |tx| {
        delete_sca(tx, &g(G), &ext("1001"), "6035551212_sca1")
    })
    .unwrap();
    let (_, c) = add_sca(&mut s, &env, "1001", sca_in("desk-b", None, None)).unwrap();
    assert_eq!(c.line_port.as_str(), "6035551212_sca1");
}

#[test]
fn sca_line_port_without_phone_number_is_group_ext() {
    let (mut s, env) = fixture();
    let (_, a) = add_sca(&mut s, &env, "5555", sca_in("lobby", None, None)).unwrap();
    assert_eq!(a.line_port.as_str(), "ZZZ1900111-01_5555_sca1");
    let (_, b) = add_sca(
        &mut s,
        &env,
        "5555",
        sca_in("desk-a", Some("ZZZ1900111-01_5555_sca7"), None),
    )
    .unwrap();
    assert_eq!(b.line_port.as_str(), "ZZZ1900111-01_5555_sca7");
}

#[test]
fn sca_line_port_of_another_form_is_invalid_line_port() {
    let (mut s, env) = fixture();
    for bad in [
        "6035551212",
        "6035551212_sca0",
        "ZZZ1900111-01_1001_sca1",
        "6035551213_sca1",
    ] {
        let e = add_sca(&mut s, &env, "1001", sca_in("lobby", Some(bad), None)).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidLinePort, "{bad}");
    }
}

#[test]
fn line_port_is_unique_across_the_platform() {
    let (mut s, env) = fixture();
    add_sca(
        &mut s,
        &env,
        "1001",
        sca_in("lobby", Some("6035551212_sca1"), None),
    )
    .unwrap();
    let e = add_sca(
        &mut s,
        &env,
        "1001",
        sca_in("desk-b", Some("6035551212_sca1"), None),
    )
    .unwrap_err();
    assert_eq!(
        (e.kind, e.code),
        (ErrorKind::Conflict, ErrorCode::LinePortInUse)
    );
    assert!(e
        .detail
        .contains("Line Port ID 6035551212_sca1 is already in use"));
    // A primary line port counts too: a user whose SIP username is an existing line port.
    let mut u = user_in("4004", None, UserKind::Standard);
    u.sip.username = Some("6035551212_sca1".into());
    let e = run(&mut s, |tx| create_user(tx, &env, &g(G), u)).unwrap_err();
    assert_eq!(e.code, ErrorCode::LinePortInUse);
    // ...and the other way round: an SCA whose line port is someone's primary username.
    let mut u = user_in("4005", None, UserKind::Standard);
    u.sip.username = Some("ZZZ1900111-01_2002_sca1".into());
    run(&mut s, |tx| create_user(tx, &env, &g(G), u)).unwrap();
    let e = add_sca(
        &mut s,
        &env,
        "2002",
        sca_in("lobby", Some("ZZZ1900111-01_2002_sca1"), None),
    )
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::LinePortInUse);
    // Auto-assignment skips it.
    let (_, x) = add_sca(&mut s, &env, "2002", sca_in("lobby", None, None)).unwrap();
    assert_eq!(x.line_port.as_str(), "ZZZ1900111-01_2002_sca2");
}

#[test]
fn a_line_cannot_be_shared_across_groups() {
    let (mut s, env) = fixture();
    let e = add_sca(&mut s, &env, "1001", sca_in("0004f2000009", None, None)).unwrap_err();
    assert_eq!(
        (e.kind, e.code),
        (ErrorKind::Unprocessable, ErrorCode::CrossGroup)
    );
    // By name, a device of another group is simply not found in this group.
    let e = add_sca(&mut s, &env, "1001", sca_in("other", None, None)).unwrap_err();
    assert_eq!(e.code, ErrorCode::Validation);
}

#[test]
fn a_line_appears_once_on_a_device() {
    let (mut s, env) = fixture();
    let e = add_sca(&mut s, &env, "1001", sca_in("desk-a", None, None)).unwrap_err();
    assert_eq!(
        (e.kind, e.code),
        (ErrorKind::Conflict, ErrorCode::AlreadyOnDevice)
    );
    add_sca(&mut s, &env, "1001", sca_in("lobby", None, None)).unwrap();
    let e = add_sca(&mut s, &env, "1001", sca_in("lobby", None, None)).unwrap_err();
    assert_eq!(e.code, ErrorCode::AlreadyOnDevice);
    // Making 1001 the owner of "lobby", where its line is already an SCA, is refused too.
    let e = run(&mut s, |tx| {
        update_device(
            tx,
            &env,
            &mac("0004f2000003"),
            device_in("0004f2000003", "lobby", "m12", Some("1001")),
        )
    })
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::AlreadyOnDevice);
}

#[test]
fn sca_key_defaults_to_first_free_and_must_be_free_and_in_range() {
    let (mut s, env) = fixture();
    let (_, a) = add_sca(&mut s, &env, "1001", sca_in("desk-b", None, None)).unwrap();
    assert_eq!(a.key, 2, "key 1 is the owner's primary line");
    let e = add_sca(&mut s, &env, "2002", sca_in("desk-b", None, Some(2))).unwrap_err();
    assert_eq!(e.code, ErrorCode::KeyUnavailable);
    let e = add_sca(&mut s, &env, "2002", sca_in("desk-b", None, Some(1))).unwrap_err();
    assert_eq!(e.code, ErrorCode::KeyUnavailable);
    let e = add_sca(&mut s, &env, "2002", sca_in("desk-b", None, Some(5))).unwrap_err();
    assert_eq!(e.code, ErrorCode::KeyUnavailable);
    let e = add_sca(&mut s, &env, "2002", sca_in("desk-b", None, Some(0))).unwrap_err();
    assert_eq!(e.code, ErrorCode::KeyUnavailable);
    let (_, b) = add_sca(&mut s, &env, "2002", sca_in("desk-b", None, Some(4))).unwrap();
    assert_eq!(b.key, 4);
    // An ownerless device's key 1 is free.
    let (_, c) = add_sca(&mut s, &env, "2002", sca_in("lobby", None, None)).unwrap();
    assert_eq!(c.key, 1);
}

#[test]
fn no_free_key_when_the_model_is_full() {
    let (mut s, env) = fixture();
    // desk-b: model m4 has 4 keys but 3 accounts: primary + 2 SCAs fill the accounts.
    add_sca(&mut s, &env, "1001", sca_in("desk-b", None, None)).unwrap();
    add_sca(&mut s, &env, "2002", sca_in("desk-b", None, None)).unwrap();
    let e = add_sca(&mut s, &env, "3003", sca_in("desk-b", None, None)).unwrap_err();
    assert_eq!(e.code, ErrorCode::NoFreeKey);
    assert!(e.detail.contains("registrations"), "{}", e.detail);
    // Keys: fill lobby's 12 keys with programmable keys, then no key is left.
    let mut d = device_in("0004f2000003", "lobby", "m12", None);
    d.keys = (1..=12)
        .map(|k| ProgKey {
            key: k,
            kind: KeyType::SpeedDial,
            value: "100".into(),
            label: None,
        })
        .collect();
    run(&mut s, |tx| {
        update_device(tx, &env, &mac("0004f2000003"), d)
    })
    .unwrap();
    let e = add_sca(&mut s, &env, "3003", sca_in("lobby", None, None)).unwrap_err();
    assert_eq!(e.code, ErrorCode::NoFreeKey);
}

#[test]
fn lines_stay_off_module_keys_that_show_no_line() {
    let (mut s, env) = fixture();
    let mut d = device_in("0004f2000004", "reception", "m4k", Some("1001"));
    d.keys = vec![ProgKey {
        key: 6,
        kind: KeyType::SpeedDial,
        value: "100".into(),
        label: None,
    }];
    run(&mut s, |tx| create_device(tx, &env, &g(G), d)).unwrap();
    // An explicit SCA key on the module is refused, naming where lines can go.
    let e = add_sca(&mut s, &env, "2002", sca_in("reception", None, Some(5))).unwrap_err();
    assert_eq!(e.code, ErrorCode::KeyUnavailable);
    assert!(e.detail.contains("cannot show a line"), "{}", e.detail);
    assert!(e.detail.contains("keys 1 to 4"), "{}", e.detail);
    // The first free key for an SCA is a phone key; when those are full there is none,
    // although module keys 5, 7 and 8 are free.
    for (user, key) in [("2002", 2), ("3003", 3), ("5555", 4)] {
        let (_, x) = add_sca(&mut s, &env, user, sca_in("reception", None, None)).unwrap();
        assert_eq!(x.key, key);
    }
    run(&mut s, |tx| {
        create_user(tx, &env, &g(G), user_in("4004", None, UserKind::Standard))
    })
    .unwrap();
    let e = add_sca(&mut s, &env, "4004", sca_in("reception", None, None)).unwrap_err();
    assert_eq!(e.code, ErrorCode::NoFreeKey);
}

#[test]
fn sca_limit_per_user() {
    let (mut s, mut env) = fixture();
    env.max_sca = 2;
    add_sca(&mut s, &env, "1001", sca_in("desk-b", None, None)).unwrap();
    add_sca(&mut s, &env, "1001", sca_in("lobby", None, None)).unwrap();
    let e = add_sca(&mut s, &env, "1001", sca_in("lobby", None, None)).unwrap_err();
    assert_eq!((e.kind, e.code), (ErrorKind::Conflict, ErrorCode::ScaLimit));
}

#[test]
fn inactive_endpoints_are_kept_but_not_rendered() {
    let (mut s, env) = fixture();
    let mut input = sca_in("lobby", None, Some(5));
    input.active = false;
    let (_, x) = add_sca(&mut s, &env, "1001", input).unwrap();
    assert!(s.scas.contains_key(&x.line_port));
    let d = s.devices[&mac("0004f2000003")].clone();
    let l = layout(&s, &d, env.model("m12").unwrap()).unwrap();
    assert!(l.appearances.is_empty());
    assert!(!l.free_keys.contains(&5), "its key stays reserved");
}

#[test]
fn editing_an_endpoint_moves_it_and_touches_both_devices() {
    let (mut s, env) = fixture();
    add_sca(&mut s, &env, "1001", sca_in("lobby", None, None)).unwrap();
    let mut input = sca_in("desk-b", None, None);
    input.label = Some("Boss".into());
    let (fx, x) = run(&mut s, |tx| {
        update_sca(tx, &env, &g(G), &ext("1001"), "6035551212_sca1", input)
    })
    .unwrap();
    assert_eq!(x.device, mac("0004f2000002"));
    assert_eq!(x.key, 2);
    assert_eq!(x.label.as_deref(), Some("Boss"));
    assert!(fx.devices.contains(&mac("0004f2000002")) && fx.devices.contains(&mac("0004f2000003")));
    // The line port is the endpoint's identity.
    let e = run(&mut s, |tx| {
        update_sca(
            tx,
            &env,
            &g(G),
            &ext("1001"),
            "6035551212_sca1",
            sca_in("desk-b", Some("6035551212_sca9"), None),
        )
    })
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::Validation);
}

#[test]
fn deleting_a_user_or_device_cascades_to_its_endpoints() {
    let (mut s, env) = fixture();
    add_sca(&mut s, &env, "1001", sca_in("lobby", None, None)).unwrap();
    add_sca(&mut s, &env, "5555", sca_in("lobby", None, None)).unwrap();
    add_sca(&mut s, &env, "2002", sca_in("desk-a", None, None)).unwrap();
    let fx = run(&mut s, |tx| delete_user(tx, &g(G), &ext("1001"))).unwrap();
    assert!(
        fx.devices.contains(&mac("0004f2000003")),
        "the SCA's device"
    );
    assert!(
        fx.devices.contains(&mac("0004f2000001")),
        "the owned device"
    );
    assert_eq!(s.scas.len(), 2);
    assert_eq!(s.devices[&mac("0004f2000001")].owner, None);
    let fx = run(&mut s, |tx| delete_device(tx, &mac("0004f2000003"))).unwrap();
    assert!(fx.devices.contains(&mac("0004f2000003")));
    assert_eq!(s.scas.len(), 1);
}

#[test]
fn a_failed_rule_leaves_the_state_untouched() {
    let (mut s, env) = fixture();
    let before = format!("{s:?}");
    // update_device writes the device before the layout check fails.
    let mut d = device_in("0004f2000002", "desk-b", "m4", Some("5555"));
    d.keys = vec![ProgKey {
        key: 9,
        kind: KeyType::Blf,
        value: "2002".into(),
        label: None,
    }];
    let e = run(&mut s, |tx| {
        update_device(tx, &env, &mac("0004f2000002"), d)
    })
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::KeyUnavailable);
    assert_eq!(format!("{s:?}"), before);
}

#[test]
fn model_change_is_checked_against_the_new_key_count() {
    let (mut s, env) = fixture();
    add_sca(&mut s, &env, "2002", sca_in("desk-a", None, Some(10))).unwrap();
    let e = run(&mut s, |tx| {
        update_device(
            tx,
            &env,
            &mac("0004f2000001"),
            device_in("0004f2000001", "desk-a", "m4", Some("1001")),
        )
    })
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::KeyUnavailable);
    let e = run(&mut s, |tx| {
        update_device(
            tx,
            &env,
            &mac("0004f2000001"),
            device_in("0004f2000001", "desk-a", "nope", Some("1001")),
        )
    })
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::Validation);
}

#[test]
fn shared_line_number_licences_and_members() {
    let (mut s, env) = fixture();
    let gg = g(G);
    let line = |n: &str, members: Vec<Member>| SharedLineInput {
        number: SharedNumber::parse(n).unwrap(),
        direct_dial: Some("024801028".into()),
        description: String::new(),
        forward_to_voicemail: false,
        autodial_digits: Some("12345".into()),
        members,
    };
    let member = |e: &str, button: Option<KeyNo>, ring: Ring| Member {
        extension: ext(e),
        button,
        ring,
    };
    // Unique among extensions.
    let e = run(&mut s, |tx| {
        create_shared_line(tx, &env, &gg, line("5555", vec![]))
    })
    .unwrap_err();
    assert_eq!(
        (e.kind, e.code),
        (ErrorKind::Conflict, ErrorCode::AlreadyExists)
    );
    // Members must exist; hot-desk users may be members.
    let e = run(&mut s, |tx| {
        create_shared_line(
            tx,
            &env,
            &gg,
            line("555", vec![member("7777", None, Ring::Ring)]),
        )
    })
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::Validation);
    let (fx, l) = run(&mut s, |tx| {
        create_shared_line(
            tx,
            &env,
            &gg,
            line(
                "555",
                vec![
                    member("1001", Some(3), Ring::Delayed),
                    member("0901", None, Ring::NoRing),
                ],
            ),
        )
    })
    .unwrap();
    assert_eq!(l.line_port(), "ZZZ1900111-01_555");
    assert!(fx.devices.contains(&mac("0004f2000001")));
    // Unique among shared lines; extensions cannot take a shared line's number.
    let e = run(&mut s, |tx| {
        create_shared_line(tx, &env, &gg, line("555", vec![]))
    })
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::AlreadyExists);
    let e = run(&mut s, |tx| {
        create_user(tx, &env, &gg, user_in("555", None, UserKind::Standard))
    })
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::AlreadyExists);
    // Licences.
    let mut grp = s.groups[&gg].clone();
    grp.shared_line_licenses = 2;
    run(&mut s, |tx| update_group(tx, &gg, grp)).unwrap();
    run(&mut s, |tx| {
        create_shared_line(tx, &env, &gg, line("3748", vec![]))
    })
    .unwrap();
    let e = run(&mut s, |tx| {
        create_shared_line(tx, &env, &gg, line("3000", vec![]))
    })
    .unwrap_err();
    assert_eq!(
        (e.kind, e.code),
        (ErrorKind::Conflict, ErrorCode::NoLicense)
    );
    // A button that collides with a key on the member's phone.
    add_sca(&mut s, &env, "2002", sca_in("desk-a", None, Some(4))).unwrap();
    let e = run(&mut s, |tx| {
        set_members(
            tx,
            &env,
            &gg,
            &SharedNumber::parse("3748").unwrap(),
            vec![member("1001", Some(4), Ring::Ring)],
        )
    })
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::KeyUnavailable);
}

#[test]
fn layout_orders_primary_then_appearances_by_key_then_programmable_keys() {
    let (mut s, env) = fixture();
    let gg = g(G);
    add_sca(&mut s, &env, "2002", sca_in("desk-a", None, Some(5))).unwrap();
    add_sca(&mut s, &env, "5555", sca_in("desk-a", None, Some(2))).unwrap();
    run(&mut s, |tx| {
        create_shared_line(
            tx,
            &env,
            &gg,
            SharedLineInput {
                number: SharedNumber::parse("555").unwrap(),
                direct_dial: None,
                description: "Sales".into(),
                forward_to_voicemail: false,
                autodial_digits: None,
                members: vec![Member {
                    extension: ext("1001"),
                    button: None,
                    ring: Ring::Delayed,
                }],
            },
        )
    })
    .unwrap();
    let mut d = device_in("0004f2000001", "desk-a", "m12", Some("1001"));
    d.keys = vec![ProgKey {
        key: 12,
        kind: KeyType::Park,
        value: "*68".into(),
        label: None,
    }];
    run(&mut s, |tx| {
        update_device(tx, &env, &mac("0004f2000001"), d)
    })
    .unwrap();
    let dev = s.devices[&mac("0004f2000001")].clone();
    let l = layout(&s, &dev, env.model("m12").unwrap()).unwrap();
    let got: Vec<_> = l
        .appearances
        .iter()
        .map(|a| (a.index, a.kind, a.line_port.as_str(), a.keys.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, AppearanceKind::Primary, "6035551212", vec![1]),
            (2, AppearanceKind::Sca, "ZZZ1900111-01_5555_sca1", vec![2]),
            (3, AppearanceKind::SharedLine, "ZZZ1900111-01_555", vec![3]),
            (4, AppearanceKind::Sca, "ZZZ1900111-01_2002_sca1", vec![5]),
        ]
    );
    assert_eq!(l.appearances[2].ring, Some(Ring::Delayed));
    assert_eq!(l.keys[0].key, 12);
    assert_eq!(l.first_free_key(), Some(4));
}

#[test]
fn hot_desk_guest_replaces_the_owner_and_logout_restores() {
    let (mut s, env) = fixture();
    let gg = g(G);
    let lobby = mac("0004f2000003");
    // Only hot_desk users log in.
    let e = run(&mut s, |tx| hot_desk_login(tx, &env, &lobby, &ext("2002"))).unwrap_err();
    assert_eq!(e.code, ErrorCode::Validation);
    run(&mut s, |tx| {
        create_shared_line(
            tx,
            &env,
            &gg,
            SharedLineInput {
                number: SharedNumber::parse("555").unwrap(),
                direct_dial: None,
                description: String::new(),
                forward_to_voicemail: false,
                autodial_digits: None,
                members: vec![Member {
                    extension: ext("0901"),
                    button: Some(2),
                    ring: Ring::Ring,
                }],
            },
        )
    })
    .unwrap();
    let fx = run(&mut s, |tx| hot_desk_login(tx, &env, &lobby, &ext("0901"))).unwrap();
    assert!(fx.devices.contains(&lobby));
    let d = s.devices[&lobby].clone();
    let l = layout(&s, &d, env.model("m12").unwrap()).unwrap();
    let ports: Vec<_> = l.appearances.iter().map(|a| a.line_port.as_str()).collect();
    assert_eq!(ports, vec!["ZZZ1900111-01_0901", "ZZZ1900111-01_555"]);
    // Logging in elsewhere moves the guest (both devices touched).
    let desk_a = mac("0004f2000001");
    let fx = run(&mut s, |tx| hot_desk_login(tx, &env, &desk_a, &ext("0901"))).unwrap();
    assert!(fx.devices.contains(&lobby) && fx.devices.contains(&desk_a));
    assert_eq!(s.devices[&lobby].hot_desk, None);
    let d = s.devices[&desk_a].clone();
    let l = layout(&s, &d, env.model("m12").unwrap()).unwrap();
    assert_eq!(l.appearances[0].line_port, "ZZZ1900111-01_0901");
    // Logout restores the owner.
    run(&mut s, |tx| hot_desk_logout(tx, &desk_a)).unwrap();
    let d = s.devices[&desk_a].clone();
    let l = layout(&s, &d, env.model("m12").unwrap()).unwrap();
    assert_eq!(l.appearances[0].line_port, "6035551212");
    let e = run(&mut s, |tx| hot_desk_logout(tx, &desk_a)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    // A hot-desk user cannot own a device.
    let e = run(&mut s, |tx| {
        update_device(
            tx,
            &env,
            &lobby,
            device_in("0004f2000003", "lobby", "m12", Some("0901")),
        )
    })
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::Validation);
}

#[test]
fn renaming_a_user_touches_every_device_showing_its_line() {
    let (mut s, env) = fixture();
    add_sca(&mut s, &env, "1001", sca_in("lobby", None, None)).unwrap();
    let mut u = user_in("1001", Some("6035551212"), UserKind::Standard);
    u.first_name = "Renamed".into();
    let (fx, _) = run(&mut s, |tx| update_user(tx, &env, &g(G), &ext("1001"), u)).unwrap();
    let want: BTreeSet<Mac> = [mac("0004f2000001"), mac("0004f2000003")].into();
    assert_eq!(fx.devices, want);
}

#[test]
fn phone_numbers_are_unique_on_the_platform_and_passwords_are_generated() {
    let (mut s, env) = fixture();
    let e = run(&mut s, |tx| {
        create_user(
            tx,
            &env,
            &g("OTHER"),
            user_in("1001", Some("6035551212"), UserKind::Standard),
        )
    })
    .unwrap_err();
    assert_eq!(
        (e.code, e.field.as_deref()),
        (ErrorCode::AlreadyExists, Some("phone_number"))
    );
    let u = s.user(&g(G), &ext("5555")).unwrap();
    assert!(u.sip.password.expose().len() >= 16);
    assert_eq!(u.sip_username(), "ZZZ1900111-01_5555");
    assert_eq!(u.auth_username(), "ZZZ1900111-01_5555");
    assert_eq!(u.display(), "First 5555");
    let u = s.user(&g(G), &ext("1001")).unwrap();
    assert_eq!(u.sip_username(), "6035551212");
}

#[test]
fn duplicate_copies_settings_with_fresh_credentials_and_no_appearances() {
    let (mut s, env) = fixture();
    let gg = g(G);
    let mut u = user_in("2002", None, UserKind::Standard);
    u.features.call_waiting = Some(false);
    u.features.monitoring = vec![ext("1001")];
    run(&mut s, |tx| update_user(tx, &env, &gg, &ext("2002"), u)).unwrap();
    add_sca(&mut s, &env, "2002", sca_in("lobby", None, None)).unwrap();
    let input = DuplicateInput {
        extension: ext("2003"),
        first_name: Some("Copy".into()),
        last_name: None,
        phone_number: None,
    };
    let (_, c) = run(&mut s, |tx| {
        duplicate_user(tx, &env, &gg, &ext("2002"), input.clone())
    })
    .unwrap();
    let src = s.user(&gg, &ext("2002")).unwrap();
    assert_eq!(c.features, src.features);
    assert_ne!(c.sip.password, src.sip.password);
    assert_eq!(c.first_name, "Copy");
    assert_eq!(s.scas_of_user(&gg, &ext("2003")).count(), 0);
    let e = run(&mut s, |tx| {
        duplicate_user(tx, &env, &gg, &ext("2002"), input)
    })
    .unwrap_err();
    assert_eq!(
        (e.kind, e.code),
        (ErrorKind::Conflict, ErrorCode::AlreadyExists)
    );
}

#[test]
fn group_delete_needs_cascade_when_not_empty() {
    let (mut s, env) = fixture();
    add_sca(&mut s, &env, "1001", sca_in("lobby", None, None)).unwrap();
    let e = run(&mut s, |tx| delete_group(tx, &g(G), false)).unwrap_err();
    assert_eq!((e.kind, e.code), (ErrorKind::Conflict, ErrorCode::NotEmpty));
    let fx = run(&mut s, |tx| delete_group(tx, &g(G), true)).unwrap();
    assert_eq!(fx.devices.len(), 3);
    assert!(s.scas.is_empty());
    assert_eq!(s.users.len(), 0);
    assert_eq!(s.devices.len(), 1, "OTHER's device stays");
}

#[test]
fn free_text_rejects_control_characters() {
    let (mut s, env) = fixture();
    let mut u = user_in("4004", None, UserKind::Standard);
    u.first_name = "Eve\naccount.1.password = x".into();
    let e = run(&mut s, |tx| create_user(tx, &env, &g(G), u)).unwrap_err();
    assert_eq!(
        (e.code, e.field.as_deref()),
        (ErrorCode::Validation, Some("first_name"))
    );
}

// ---------------------------------------------------------------- change kinds

/// `update_user` of 1001 with its fixture input changed by `f`.
fn patch_1001(s: &mut State, env: &TestEnv, f: impl FnOnce(&mut UserInput)) -> Effect {
    let mut u = user_in("1001", Some("6035551212"), UserKind::Standard);
    f(&mut u);
    run(s, |tx| update_user(tx, env, &g(G), &ext("1001"), u))
        .unwrap()
        .0
}

#[test]
fn patch_of_what_a_user_registers_with_is_a_lines_change() {
    let (mut s, env) = fixture();
    let fx = patch_1001(&mut s, &env, |u| u.sip.username = Some("ada".into()));
    assert_eq!(
        (fx.action, fx.kind),
        (Action::UserUpdate, ChangeKind::Lines)
    );
    assert!(fx.devices.contains(&mac("0004f2000001")));
    let fx = patch_1001(&mut s, &env, |u| {
        u.sip.username = Some("ada".into());
        u.sip.auth_username = Some("ada-auth".into());
    });
    assert_eq!(fx.kind, ChangeKind::Lines, "auth username");
    let fx = patch_1001(&mut s, &env, |u| {
        u.sip.username = Some("ada".into());
        u.sip.password = Some("a-new-password-1".into());
    });
    assert_eq!(
        fx.kind,
        ChangeKind::Lines,
        "password (auth username back to default)"
    );
    let fx = patch_1001(&mut s, &env, |u| {
        u.sip.username = Some("ada".into());
        u.phone_number = Some(PhoneNumber::parse("6035550000").unwrap());
    });
    assert_eq!(fx.kind, ChangeKind::Lines, "phone number");
    // Dropping the explicit username falls back to the phone number: a new identity.
    let fx = patch_1001(&mut s, &env, |u| {
        u.phone_number = Some(PhoneNumber::parse("6035550000").unwrap())
    });
    assert_eq!(fx.kind, ChangeKind::Lines);
    assert_eq!(
        s.user(&g(G), &ext("1001")).unwrap().sip_username(),
        "6035550000"
    );
}

#[test]
fn patch_of_the_shown_name_is_lines_unless_a_display_name_hides_it() {
    let (mut s, env) = fixture();
    // first_name feeds the display name the line shows ("First 1001" → "Ada 1001").
    let fx = patch_1001(&mut s, &env, |u| u.first_name = "Ada".into());
    assert_eq!(fx.kind, ChangeKind::Lines);
    let fx = patch_1001(&mut s, &env, |u| u.display_name = Some("Reception".into()));
    assert_eq!(fx.kind, ChangeKind::Lines, "display_name override");
    // With the override in place, first/last names change nothing any line shows.
    let fx = patch_1001(&mut s, &env, |u| {
        u.display_name = Some("Reception".into());
        u.first_name = "Ada".into();
        u.last_name = "Lovelace".into();
    });
    assert_eq!(fx.kind, ChangeKind::Settings);
}

#[test]
fn patch_of_user_features_is_settings_and_of_monitoring_is_keys() {
    let (mut s, env) = fixture();
    let fx = patch_1001(&mut s, &env, |u| u.features.call_waiting = Some(false));
    assert_eq!(fx.kind, ChangeKind::Settings);
    let fx = patch_1001(&mut s, &env, |u| {
        u.features.call_waiting = Some(false);
        u.features.monitoring = vec![ext("2002")];
    });
    assert_eq!(fx.kind, ChangeKind::Keys);
    let fx = patch_1001(&mut s, &env, |u| {
        u.features.monitoring = vec![ext("2002")];
        u.sip.username = Some("ada".into());
    });
    assert_eq!(fx.kind, ChangeKind::Lines, "the more disruptive kind wins");
}

#[test]
fn user_rules_other_than_update_have_fixed_kinds() {
    let (mut s, env) = fixture();
    let gg = g(G);
    let (fx, _) = run(&mut s, |tx| {
        create_user(tx, &env, &gg, user_in("4004", None, UserKind::Standard))
    })
    .unwrap();
    assert_eq!(
        (fx.action, fx.kind),
        (Action::UserCreate, ChangeKind::Settings)
    );
    let input = DuplicateInput {
        extension: ext("4005"),
        first_name: None,
        last_name: None,
        phone_number: None,
    };
    let (fx, _) = run(&mut s, |tx| {
        duplicate_user(tx, &env, &gg, &ext("4004"), input)
    })
    .unwrap();
    assert_eq!(
        (fx.action, fx.kind),
        (Action::UserDuplicate, ChangeKind::Settings)
    );
    let (fx, _) = run(&mut s, |tx| {
        rotate_sip_password(tx, &env, &gg, &ext("1001"))
    })
    .unwrap();
    assert_eq!(
        (fx.action, fx.kind),
        (Action::UserSipPassword, ChangeKind::Lines)
    );
    let fx = run(&mut s, |tx| delete_user(tx, &gg, &ext("1001"))).unwrap();
    assert_eq!(
        (fx.action, fx.kind),
        (Action::UserDelete, ChangeKind::Lines)
    );
}

#[test]
fn device_kinds_follow_what_changed() {
    let (mut s, env) = fixture();
    let a = mac("0004f2000001");
    let patch = |s: &mut State, f: &dyn Fn(&mut DeviceInput)| {
        let mut d = device_in("0004f2000001", "desk-a", "m12", Some("1001"));
        f(&mut d);
        run(s, |tx| update_device(tx, &env, &a, d)).unwrap().0
    };
    let fx = patch(&mut s, &|d| {
        d.settings.insert("tz".into(), "UTC".into());
    });
    assert_eq!(
        (fx.action, fx.kind),
        (Action::DeviceUpdate, ChangeKind::Settings)
    );
    let fx = patch(&mut s, &|d| d.name = Some("desk-a2".into()));
    assert_eq!(fx.kind, ChangeKind::Settings, "name");
    let fx = patch(&mut s, &|d| {
        d.keys = vec![ProgKey {
            key: 12,
            kind: KeyType::SpeedDial,
            value: "100".into(),
            label: None,
        }]
    });
    assert_eq!(fx.kind, ChangeKind::Keys);
    let fx = patch(&mut s, &|d| d.owner = Some(ext("2002")));
    assert_eq!(fx.kind, ChangeKind::Lines, "owner");
    let fx = patch(&mut s, &|d| d.model = "m4".into());
    assert_eq!(fx.kind, ChangeKind::Lines, "model");
    let (fx, _) = run(&mut s, |tx| {
        create_device(
            tx,
            &env,
            &g(G),
            device_in("0004f2000004", "desk-c", "m12", None),
        )
    })
    .unwrap();
    assert_eq!(
        (fx.action, fx.kind),
        (Action::DeviceCreate, ChangeKind::Lines)
    );
    let (fx, _) = run(&mut s, |tx| rotate_device_credentials(tx, &env, &a)).unwrap();
    assert_eq!(
        (fx.action, fx.kind),
        (Action::DeviceCredentials, ChangeKind::Settings)
    );
    let lobby = mac("0004f2000003");
    let fx = run(&mut s, |tx| hot_desk_login(tx, &env, &lobby, &ext("0901"))).unwrap();
    assert_eq!(
        (fx.action, fx.kind),
        (Action::DeviceHotDeskLogin, ChangeKind::Lines)
    );
    let fx = run(&mut s, |tx| hot_desk_logout(tx, &lobby)).unwrap();
    assert_eq!(
        (fx.action, fx.kind),
        (Action::DeviceHotDeskLogout, ChangeKind::Lines)
    );
    let fx = run(&mut s, |tx| delete_device(tx, &lobby)).unwrap();
    assert_eq!(
        (fx.action, fx.kind),
        (Action::DeviceDelete, ChangeKind::Lines)
    );
}

#[test]
fn sca_changes_are_lines_changes() {
    let (mut s, env) = fixture();
    let (fx, x) = add_sca(&mut s, &env, "1001", sca_in("lobby", None, None)).unwrap();
    assert_eq!((fx.action, fx.kind), (Action::ScaCreate, ChangeKind::Lines));
    let port = x.line_port.to_string();
    let update = |s: &mut State, input: ScaInput| {
        run(s, |tx| {
            update_sca(tx, &env, &g(G), &ext("1001"), &port, input)
        })
        .unwrap()
        .0
    };
    let fx = update(&mut s, sca_in("lobby", None, None));
    assert_eq!(
        (fx.action, fx.kind),
        (Action::ScaUpdate, ChangeKind::Settings),
        "no change"
    );
    let mut input = sca_in("lobby", None, None);
    input.label = Some("Boss".into());
    assert_eq!(update(&mut s, input).kind, ChangeKind::Lines, "label");
    let mut input = sca_in("lobby", None, None);
    input.label = Some("Boss".into());
    input.active = false;
    assert_eq!(update(&mut s, input).kind, ChangeKind::Lines, "active");
    let fx = run(&mut s, |tx| delete_sca(tx, &g(G), &ext("1001"), &port)).unwrap();
    assert_eq!((fx.action, fx.kind), (Action::ScaDelete, ChangeKind::Lines));
}

#[test]
fn shared_line_changes_are_lines_changes() {
    let (mut s, env) = fixture();
    let gg = g(G);
    let n = SharedNumber::parse("555").unwrap();
    let line = |description: &str| SharedLineInput {
        number: n.clone(),
        direct_dial: None,
        description: description.into(),
        forward_to_voicemail: false,
        autodial_digits: None,
        members: vec![Member {
            extension: ext("1001"),
            button: None,
            ring: Ring::Ring,
        }],
    };
    let (fx, _) = run(&mut s, |tx| create_shared_line(tx, &env, &gg, line(""))).unwrap();
    assert_eq!(
        (fx.action, fx.kind),
        (Action::SharedLineCreate, ChangeKind::Lines)
    );
    let (fx, _) = run(&mut s, |tx| update_shared_line(tx, &env, &gg, &n, line(""))).unwrap();
    assert_eq!(
        (fx.action, fx.kind),
        (Action::SharedLineUpdate, ChangeKind::Settings),
        "no change"
    );
    let (fx, _) = run(&mut s, |tx| {
        update_shared_line(tx, &env, &gg, &n, line("Sales"))
    })
    .unwrap();
    assert_eq!(fx.kind, ChangeKind::Lines, "description is the line's name");
    let (fx, _) = run(&mut s, |tx| set_members(tx, &env, &gg, &n, vec![])).unwrap();
    assert_eq!(
        (fx.action, fx.kind),
        (Action::SharedLineMembers, ChangeKind::Lines)
    );
    let fx = run(&mut s, |tx| delete_shared_line(tx, &gg, &n)).unwrap();
    assert_eq!(
        (fx.action, fx.kind),
        (Action::SharedLineDelete, ChangeKind::Lines)
    );
}

#[test]
fn group_kinds_follow_what_changed() {
    let (mut s, _env) = fixture();
    let gg = g(G);
    let mut grp = s.groups[&gg].clone();
    grp.settings.insert("ntp".into(), "pool.ntp.org".into());
    let fx = run(&mut s, |tx| update_group(tx, &gg, grp.clone())).unwrap();
    assert_eq!(
        (fx.action, fx.kind),
        (Action::GroupUpdate, ChangeKind::Settings)
    );
    grp.sip.proxy = Some("proxy.example.net".into());
    let fx = run(&mut s, |tx| update_group(tx, &gg, grp.clone())).unwrap();
    assert_eq!(fx.kind, ChangeKind::Lines, "the registrar");
    let fx = run(&mut s, |tx| create_group(tx, group_of("NEW"))).unwrap();
    assert_eq!(
        (fx.action, fx.kind),
        (Action::GroupCreate, ChangeKind::Settings)
    );
    let fx = run(&mut s, |tx| delete_group(tx, &gg, true)).unwrap();
    assert_eq!(
        (fx.action, fx.kind),
        (Action::GroupDelete, ChangeKind::Lines)
    );
}

#[test]
fn template_and_token_kinds() {
    let (mut s, _env) = fixture();
    let (fx, _) = run(&mut s, |tx| {
        put_template(tx, "m12", "mac.cfg", "x".into(), "now".into(), "t")
    })
    .unwrap();
    assert_eq!(
        (fx.action, fx.kind),
        (Action::TemplateUpdate, ChangeKind::Template)
    );
    assert_eq!(fx.devices.len(), 3, "every device of the model");
    let fx = run(&mut s, |tx| {
        activate_template(tx, "m12", "mac.cfg", Some(1))
    })
    .unwrap();
    assert_eq!(
        (fx.action, fx.kind),
        (Action::TemplateRollback, ChangeKind::Template)
    );
    let fx = run(&mut s, |tx| activate_template(tx, "m12", "mac.cfg", None)).unwrap();
    assert_eq!(
        (fx.action, fx.kind),
        (Action::TemplateReset, ChangeKind::Template)
    );
    let t = Token {
        id: "t1".into(),
        name: "ci".into(),
        group: None,
        secret_sha256: Secret::new("00"),
        created_at: "now".into(),
    };
    let fx = run(&mut s, |tx| create_token(tx, t)).unwrap();
    assert_eq!(
        (fx.action, fx.kind),
        (Action::TokenCreate, ChangeKind::Settings)
    );
    let fx = run(&mut s, |tx| delete_token(tx, "t1")).unwrap();
    assert_eq!(
        (fx.action, fx.kind),
        (Action::TokenDelete, ChangeKind::Settings)
    );
}
