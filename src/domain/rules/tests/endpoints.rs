//! `allowed_endpoints` (seed 002 "Configure allowed endpoint"), third-party credentials and the
//! softphone device kind.

use super::*;

fn set_allowed(s: &mut State, env: &TestEnv, e: &str, allowed: AllowedEndpoints) -> Effect {
    let mut input = user_in(e, None, UserKind::Standard);
    if e == "1001" {
        input.phone_number = Some(PhoneNumber::parse("6035551212").unwrap());
    }
    input.allowed_endpoints = allowed;
    run(s, |tx| update_user(tx, env, &g(G), &ext(e), input))
        .unwrap()
        .0
}

fn ports(s: &State, env: &TestEnv, m: &str) -> Vec<String> {
    let d = s.devices[&mac(m)].clone();
    layout(s, &d, env.model(&d.model).unwrap())
        .unwrap()
        .appearances
        .iter()
        .map(|a| a.line_port.clone())
        .collect()
}

/// A softphone for `owner` (no MAC given); returns its server-assigned id.
fn add_softphone(s: &mut State, env: &TestEnv, name: &str, owner: &str) -> Mac {
    let mut input = device_in("000000000000", name, "soft", Some(owner));
    input.mac = None;
    run(s, |tx| create_device(tx, env, &g(G), input))
        .unwrap()
        .1
        .mac
}

const NO_IP_PHONE: AllowedEndpoints = AllowedEndpoints {
    ip_phone: false,
    softphone: true,
    third_party: true,
};

#[test]
fn every_endpoint_kind_is_allowed_by_default() {
    let input: UserInput =
        serde_json::from_value(serde_json::json!({"extension": "4004"})).unwrap();
    assert_eq!(input.allowed_endpoints, AllowedEndpoints::default());
    let a = AllowedEndpoints::default();
    assert!(a.ip_phone && a.softphone && a.third_party);
    // A partial object keeps the other flags at their default.
    let input: UserInput = serde_json::from_value(
        serde_json::json!({"extension": "4004", "allowed_endpoints": {"third_party": false}}),
    )
    .unwrap();
    assert!(input.allowed_endpoints.ip_phone && !input.allowed_endpoints.third_party);
    // A user record stored before the field existed reads as all allowed.
    let (s, _) = fixture();
    let mut v = serde_json::to_value(s.user(&g(G), &ext("1001")).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("allowed_endpoints");
    let u: User = serde_json::from_value(v).unwrap();
    assert_eq!(u.allowed_endpoints, AllowedEndpoints::default());
}

#[test]
fn a_user_without_ip_phone_has_no_appearance_on_desk_phones_but_keeps_its_keys() {
    let (mut s, env) = fixture();
    add_sca(&mut s, &env, "1001", sca_in("desk-b", None, Some(3))).unwrap();
    let soft = add_softphone(&mut s, &env, "soft-1001", "1001");
    assert_eq!(ports(&s, &env, "0004f2000001"), ["6035551212"]);
    assert_eq!(
        ports(&s, &env, "0004f2000002"),
        ["ZZZ1900111-01_5555", "6035551212_sca1"]
    );

    let fx = set_allowed(&mut s, &env, "1001", NO_IP_PHONE);
    assert_eq!(fx.kind, ChangeKind::Lines);
    // The desk phones with its lines and its softphone are touched.
    assert!(fx.devices.contains(&mac("0004f2000001")));
    assert!(fx.devices.contains(&mac("0004f2000002")));
    assert!(fx.devices.contains(&soft));
    assert!(ports(&s, &env, "0004f2000001").is_empty());
    assert_eq!(ports(&s, &env, "0004f2000002"), ["ZZZ1900111-01_5555"]);
    assert_eq!(ports(&s, &env, soft.as_str()), ["6035551212"]);
    // The SCA's key stays reserved: re-allowing never fails, and no one else takes key 3.
    let d = s.devices[&mac("0004f2000002")].clone();
    let l = layout(&s, &d, env.model("m4").unwrap()).unwrap();
    assert!(!l.free_keys.contains(&3));

    set_allowed(&mut s, &env, "1001", AllowedEndpoints::default());
    assert_eq!(ports(&s, &env, "0004f2000001"), ["6035551212"]);
    assert_eq!(
        ports(&s, &env, "0004f2000002"),
        ["ZZZ1900111-01_5555", "6035551212_sca1"]
    );
}

#[test]
fn a_user_without_softphone_has_no_appearance_on_softphones_only() {
    let (mut s, env) = fixture();
    let soft = add_softphone(&mut s, &env, "soft-1001", "1001");
    // 5555's line shared onto the softphone, and a shared line 1001 is a member of.
    add_sca(&mut s, &env, "5555", sca_in("soft-1001", None, None)).unwrap();
    run(&mut s, |tx| {
        create_shared_line(
            tx,
            &env,
            &g(G),
            SharedLineInput {
                number: SharedNumber::parse("555").unwrap(),
                direct_dial: None,
                description: String::new(),
                forward_to_voicemail: false,
                autodial_digits: None,
                members: vec![Member {
                    extension: ext("1001"),
                    button: None,
                    ring: Ring::Ring,
                }],
            },
        )
    })
    .unwrap();
    assert_eq!(
        ports(&s, &env, soft.as_str()),
        ["6035551212", "ZZZ1900111-01_5555_sca1", "ZZZ1900111-01_555"]
    );
    let no_soft = AllowedEndpoints {
        softphone: false,
        ..AllowedEndpoints::default()
    };
    // 5555 disallows softphones: its SCA leaves the softphone; 1001's own lines stay.
    set_allowed(&mut s, &env, "5555", no_soft);
    assert_eq!(
        ports(&s, &env, soft.as_str()),
        ["6035551212", "ZZZ1900111-01_555"]
    );
    assert_eq!(ports(&s, &env, "0004f2000002"), ["ZZZ1900111-01_5555"]);
    // 1001 disallows softphones: nothing of its own is left there; its desk phone keeps all.
    set_allowed(&mut s, &env, "1001", no_soft);
    assert!(ports(&s, &env, soft.as_str()).is_empty());
    assert_eq!(
        ports(&s, &env, "0004f2000001"),
        ["6035551212", "ZZZ1900111-01_555"]
    );
}

#[test]
fn third_party_off_is_not_a_line_change_and_refuses_credentials_with_endpoint_not_allowed() {
    let (mut s, env) = fixture();
    let fx = set_allowed(
        &mut s,
        &env,
        "1001",
        AllowedEndpoints {
            third_party: false,
            ..AllowedEndpoints::default()
        },
    );
    assert_eq!(fx.kind, ChangeKind::Settings);
    let before = s.user(&g(G), &ext("1001")).unwrap().sip.password.clone();
    let e = run(&mut s, |tx| {
        third_party_credentials(tx, &env, &g(G), &ext("1001"))
    })
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::EndpointNotAllowed);
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert_eq!(e.field.as_deref(), Some("allowed_endpoints.third_party"));
    assert_eq!(s.user(&g(G), &ext("1001")).unwrap().sip.password, before);
}

#[test]
fn third_party_credentials_rotate_the_password_and_reach_the_users_phones() {
    let (mut s, env) = fixture();
    let before = s.user(&g(G), &ext("1001")).unwrap().sip.password.clone();
    let (fx, pw) = run(&mut s, |tx| {
        third_party_credentials(tx, &env, &g(G), &ext("1001"))
    })
    .unwrap();
    let after = &s.user(&g(G), &ext("1001")).unwrap().sip.password;
    assert_eq!(after.expose(), pw);
    assert_ne!(*after, before);
    assert_eq!(fx.kind, ChangeKind::Lines);
    assert!(fx.devices.contains(&mac("0004f2000001")));
    assert_eq!(fx.detail["for"], "third_party");
}

#[test]
fn a_softphone_gets_a_locally_administered_id_and_its_own_credentials() {
    let (mut s, env) = fixture();
    let a = add_softphone(&mut s, &env, "soft-a", "1001");
    let b = add_softphone(&mut s, &env, "soft-b", "5555");
    assert!(a.is_local() && b.is_local());
    assert_ne!(a, b);
    assert!(a.as_str().starts_with("02"));
    let (da, db) = (&s.devices[&a], &s.devices[&b]);
    assert!(!da.prov_password.expose().is_empty());
    assert_ne!(da.prov_password, db.prov_password);
    // Named after its id by default.
    let mut input = device_in("000000000000", "x", "soft", None);
    input.mac = None;
    input.name = None;
    let d = run(&mut s, |tx| create_device(tx, &env, &g(G), input))
        .unwrap()
        .1;
    assert_eq!(d.name, d.mac.as_str());
}

#[test]
fn a_softphone_refuses_a_vendor_mac_and_a_desk_phone_needs_one() {
    let (mut s, env) = fixture();
    let input = device_in("0004f2000077", "soft", "soft", None);
    let e = run(&mut s, |tx| create_device(tx, &env, &g(G), input)).unwrap_err();
    assert_eq!(
        (e.code, e.field.as_deref()),
        (ErrorCode::Validation, Some("mac"))
    );
    // The id it was exported with (import) is accepted.
    let input = device_in("02aabbccddee", "soft", "soft", None);
    let d = run(&mut s, |tx| create_device(tx, &env, &g(G), input))
        .unwrap()
        .1;
    assert_eq!(d.mac.as_str(), "02aabbccddee");
    let mut input = device_in("000000000000", "desk", "m12", None);
    input.mac = None;
    let e = run(&mut s, |tx| create_device(tx, &env, &g(G), input)).unwrap_err();
    assert_eq!(
        (e.code, e.field.as_deref()),
        (ErrorCode::Validation, Some("mac"))
    );
}

#[test]
fn a_device_keeps_its_kind() {
    let (mut s, env) = fixture();
    let soft = add_softphone(&mut s, &env, "soft-1001", "1001");
    let input = device_in(soft.as_str(), "soft-1001", "m12", Some("1001"));
    let e = run(&mut s, |tx| update_device(tx, &env, &soft, input)).unwrap_err();
    assert_eq!(
        (e.code, e.field.as_deref()),
        (ErrorCode::Validation, Some("model"))
    );
    let input = device_in("0004f2000001", "desk-a", "soft", Some("1001"));
    let e = run(&mut s, |tx| {
        update_device(tx, &env, &mac("0004f2000001"), input)
    })
    .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("model"));
}
