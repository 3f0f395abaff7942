//! Key profiles, BLF labels that follow the monitored user, `blf_all`, key moves.

use super::*;
use crate::domain::layout::{KeySource, Layout};

const A: &str = "0004f2000001"; // desk-a, m12, owner 1001
const B: &str = "0004f2000002"; // desk-b, m4, owner 5555

fn pk(key: KeyNo, kind: KeyType, value: &str, label: Option<&str>) -> ProgKey {
    ProgKey {
        key,
        kind,
        value: value.into(),
        label: label.map(Into::into),
    }
}

fn profile(name: &str, keys: Vec<ProgKey>) -> KeyProfileInput {
    KeyProfileInput {
        name: ProfileName::parse(name).unwrap(),
        keys,
    }
}

fn pname(n: &str) -> ProfileName {
    ProfileName::parse(n).unwrap()
}

fn add_profile(s: &mut State, name: &str, keys: Vec<ProgKey>) {
    run(s, |tx| create_key_profile(tx, &g(G), profile(name, keys))).unwrap();
}

/// Puts `profile` and `keys` on device `m` (desk-a or desk-b), keeping its owner and model.
fn assign(
    s: &mut State,
    env: &TestEnv,
    m: &str,
    profile: Option<&str>,
    keys: Vec<ProgKey>,
) -> Result<(Effect, Device), DomainError> {
    let (name, model, owner) = if m == A {
        ("desk-a", "m12", "1001")
    } else {
        ("desk-b", "m4", "5555")
    };
    let mut d = device_in(m, name, model, Some(owner));
    d.key_profile = profile.map(pname);
    d.keys = keys;
    run(s, |tx| update_device(tx, env, &mac(m), d))
}

fn lay(s: &State, env: &TestEnv, m: &str) -> Layout {
    let d = &s.devices[&mac(m)];
    layout(s, d, env.model(&d.model).unwrap()).unwrap()
}

/// (key, type, value, label) of every programmable key of the layout.
fn keys_of(l: &Layout) -> Vec<(KeyNo, KeyType, String, String)> {
    l.keys
        .iter()
        .map(|k| (k.key, k.kind, k.value.clone(), k.label.clone()))
        .collect()
}

fn rename(s: &mut State, env: &TestEnv, e: &str, display: &str) -> Effect {
    let mut u = user_in(e, None, UserKind::Standard);
    u.display_name = Some(display.into());
    run(s, |tx| update_user(tx, env, &g(G), &ext(e), u))
        .unwrap()
        .0
}

#[test]
fn profile_keys_merge_under_the_device_keys_and_the_device_wins_a_clash() {
    let (mut s, env) = fixture();
    add_profile(
        &mut s,
        "Reception",
        vec![
            pk(2, KeyType::SpeedDial, "*97", Some("VM")),
            pk(3, KeyType::Park, "700", None),
        ],
    );
    assign(
        &mut s,
        &env,
        A,
        Some("Reception"),
        vec![pk(3, KeyType::SpeedDial, "100", Some("Desk"))],
    )
    .unwrap();
    let l = lay(&s, &env, A);
    assert_eq!(
        keys_of(&l),
        vec![
            (2, KeyType::SpeedDial, "*97".into(), "VM".into()),
            (3, KeyType::SpeedDial, "100".into(), "Desk".into()),
        ]
    );
    assert_eq!(l.keys[0].source, KeySource::Profile);
    assert_eq!(l.keys[1].source, KeySource::Device);
}

#[test]
fn an_unknown_key_profile_on_a_device_is_refused_on_the_field() {
    let (mut s, env) = fixture();
    let e = assign(&mut s, &env, A, Some("Nope"), vec![]).unwrap_err();
    assert_eq!(
        (e.code, e.field.as_deref()),
        (ErrorCode::Validation, Some("key_profile"))
    );
}

#[test]
fn assigning_a_profile_is_a_keys_change_of_that_device() {
    let (mut s, env) = fixture();
    add_profile(&mut s, "Reception", vec![pk(2, KeyType::Park, "700", None)]);
    let (fx, _) = assign(&mut s, &env, A, Some("Reception"), vec![]).unwrap();
    assert_eq!(fx.kind, ChangeKind::Keys);
    assert_eq!(fx.devices.iter().collect::<Vec<_>>(), vec![&mac(A)]);
}

#[test]
fn a_blf_key_without_label_shows_the_monitored_users_display_name() {
    let (mut s, env) = fixture();
    add_profile(
        &mut s,
        "Reception",
        vec![
            pk(2, KeyType::Blf, "2002", None),
            pk(3, KeyType::Blf, "3003", Some("Front")),
            pk(4, KeyType::Blf, "6035551212", None), // 1001's SIP username
            pk(5, KeyType::Blf, "9999", None),       // nobody
        ],
    );
    assign(&mut s, &env, A, Some("Reception"), vec![]).unwrap();
    let l = lay(&s, &env, A);
    let labels: Vec<_> = l.keys.iter().map(|k| k.label.as_str()).collect();
    assert_eq!(labels, ["First 2002", "Front", "First 1001", "9999"]);
    assert_eq!(l.keys[0].extension, Some(ext("2002")));
    assert_eq!(l.keys[3].extension, None);
}

#[test]
fn renaming_a_monitored_user_touches_the_devices_showing_it_and_the_label_follows() {
    let (mut s, env) = fixture();
    add_profile(&mut s, "Reception", vec![pk(2, KeyType::Blf, "2002", None)]);
    assign(&mut s, &env, A, Some("Reception"), vec![]).unwrap();
    // desk-b shows 2002 through its own key.
    assign(
        &mut s,
        &env,
        B,
        None,
        vec![pk(2, KeyType::Blf, "2002", None)],
    )
    .unwrap();
    let fx = rename(&mut s, &env, "2002", "Grace Hopper");
    assert!(fx.devices.contains(&mac(A)) && fx.devices.contains(&mac(B)));
    assert!(
        !fx.devices.contains(&mac("0004f2000003")),
        "lobby shows nothing of 2002"
    );
    assert_eq!(lay(&s, &env, A).keys[0].label, "Grace Hopper");
    // Those phones show 2002 on BLF keys only: a `keys` change for them.
    assert_eq!(fx.kind, ChangeKind::Lines);
    assert_eq!(fx.keys_only, fx.devices);
    // A rename of a user nobody monitors touches neither.
    let fx = rename(&mut s, &env, "3003", "Someone");
    assert!(fx.devices.is_empty());
}

#[test]
fn a_profile_change_that_breaks_an_assigned_device_is_refused_naming_it() {
    let (mut s, env) = fixture();
    add_profile(&mut s, "Reception", vec![pk(2, KeyType::Park, "700", None)]);
    assign(&mut s, &env, A, Some("Reception"), vec![]).unwrap();
    assign(&mut s, &env, B, Some("Reception"), vec![]).unwrap();
    let e = run(&mut s, |tx| {
        update_key_profile(
            tx,
            &env,
            &g(G),
            &pname("Reception"),
            profile("Reception", vec![pk(9, KeyType::Park, "700", None)]),
        )
    })
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::KeyUnavailable);
    assert!(
        e.detail.starts_with("device desk-b (0004f2000002)"),
        "{}",
        e.detail
    );
    // Nothing changed.
    assert_eq!(
        s.key_profile(&g(G), &pname("Reception")).unwrap().keys[0].key,
        2
    );
}

#[test]
fn a_profile_change_is_one_effect_touching_every_assigned_device() {
    let (mut s, env) = fixture();
    add_profile(&mut s, "Reception", vec![pk(2, KeyType::Park, "700", None)]);
    assign(&mut s, &env, A, Some("Reception"), vec![]).unwrap();
    assign(&mut s, &env, B, Some("Reception"), vec![]).unwrap();
    let (fx, _) = run(&mut s, |tx| {
        update_key_profile(
            tx,
            &env,
            &g(G),
            &pname("Reception"),
            profile("Reception", vec![pk(3, KeyType::Park, "701", None)]),
        )
    })
    .unwrap();
    assert_eq!(
        (fx.action, fx.kind),
        (Action::KeyProfileUpdate, ChangeKind::Keys)
    );
    assert_eq!(
        fx.devices.into_iter().collect::<Vec<_>>(),
        vec![mac(A), mac(B)]
    );
}

#[test]
fn a_profile_in_use_cannot_be_deleted_and_its_name_cannot_change() {
    let (mut s, env) = fixture();
    add_profile(&mut s, "Reception", vec![]);
    assign(&mut s, &env, A, Some("Reception"), vec![]).unwrap();
    let e = run(&mut s, |tx| {
        delete_key_profile(tx, &g(G), &pname("Reception"))
    })
    .unwrap_err();
    assert_eq!((e.kind, e.code), (ErrorKind::Conflict, ErrorCode::InUse));
    assert!(e.detail.contains("desk-a"), "{}", e.detail);
    let e = run(&mut s, |tx| {
        update_key_profile(
            tx,
            &env,
            &g(G),
            &pname("Reception"),
            profile("Lobby", vec![]),
        )
    })
    .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("name"));
    assign(&mut s, &env, A, None, vec![]).unwrap();
    run(&mut s, |tx| {
        delete_key_profile(tx, &g(G), &pname("Reception"))
    })
    .unwrap();
    assert!(s.key_profiles.is_empty());
}

#[test]
fn profile_names_are_unique_in_the_group_and_keys_are_checked() {
    let (mut s, _) = fixture();
    add_profile(&mut s, "Sales Team", vec![]);
    let e = run(&mut s, |tx| {
        create_key_profile(tx, &g(G), profile("Sales Team", vec![]))
    })
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::AlreadyExists);
    let twice = vec![
        pk(2, KeyType::Park, "700", None),
        pk(2, KeyType::Park, "701", None),
    ];
    let e = run(&mut s, |tx| {
        create_key_profile(tx, &g(G), profile("X", twice))
    })
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::KeyUnavailable);
    let two_all = vec![
        pk(2, KeyType::BlfAll, "", None),
        pk(5, KeyType::BlfAll, "", None),
    ];
    let e = run(&mut s, |tx| {
        create_key_profile(tx, &g(G), profile("X", two_all))
    })
    .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("keys.type"));
    for bad in ["", " Lead", "Trail ", "a/b", &"x".repeat(65)] {
        assert!(ProfileName::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn blf_all_shows_every_other_standard_user_and_leaves_out_the_phones_own_lines() {
    let (mut s, env) = fixture();
    // 5555's line also appears on desk-a as an SCA on key 2.
    add_sca(&mut s, &env, "5555", sca_in("desk-a", None, Some(2))).unwrap();
    add_profile(&mut s, "Reception", vec![pk(2, KeyType::BlfAll, "", None)]);
    assign(&mut s, &env, A, Some("Reception"), vec![]).unwrap();
    let l = lay(&s, &env, A);
    // 1001 is the primary, 5555 an SCA, 0901 a hot-desk user: 2002 and 3003 remain, on the
    // free keys from 2 on (2 is the SCA's).
    let got: Vec<_> = l
        .keys
        .iter()
        .map(|k| (k.key, k.kind, k.extension.clone().unwrap(), k.source))
        .collect();
    assert_eq!(
        got,
        vec![
            (3, KeyType::Blf, ext("2002"), KeySource::BlfAll),
            (4, KeyType::Blf, ext("3003"), KeySource::BlfAll),
        ]
    );
    assert_eq!(l.keys[0].label, "First 2002");
}

#[test]
fn blf_all_skips_users_an_explicit_key_shows_and_stops_at_the_last_free_key() {
    let (mut s, env) = fixture();
    // desk-b (m4): 5555 on key 1, 3003 on key 4 by its own BLF key, blf_all from key 2.
    assign(
        &mut s,
        &env,
        B,
        None,
        vec![
            pk(4, KeyType::Blf, "3003", None),
            pk(2, KeyType::BlfAll, "", None),
        ],
    )
    .unwrap();
    let exts: Vec<_> = lay(&s, &env, B)
        .keys
        .iter()
        .map(|k| (k.key, k.extension.clone().unwrap()))
        .collect();
    assert_eq!(
        exts,
        vec![(2, ext("1001")), (3, ext("2002")), (4, ext("3003"))]
    );
    // A new user does not fit: it is not shown and nothing fails; the device is touched.
    let (fx, _) = run(&mut s, |tx| {
        create_user(tx, &env, &g(G), user_in("4004", None, UserKind::Standard))
    })
    .unwrap();
    assert_eq!(fx.kind, ChangeKind::Keys);
    assert!(fx.devices.contains(&mac(B)));
    assert_eq!(lay(&s, &env, B).keys.len(), 3);
}

#[test]
fn a_new_appearance_may_take_a_key_a_blf_all_expansion_fills() {
    let (mut s, env) = fixture();
    assign(
        &mut s,
        &env,
        B,
        None,
        vec![pk(2, KeyType::BlfAll, "", None)],
    )
    .unwrap();
    assert!(lay(&s, &env, B).free_keys.is_empty());
    let (_, x) = add_sca(&mut s, &env, "2002", sca_in("desk-b", None, None)).unwrap();
    assert_eq!(x.key, 2);
    let exts: Vec<_> = lay(&s, &env, B)
        .keys
        .iter()
        .map(|k| (k.key, k.extension.clone().unwrap()))
        .collect();
    // 2002's line is on the phone now: left out; the others move on.
    assert_eq!(exts, vec![(3, ext("1001")), (4, ext("3003"))]);
}

#[test]
fn blf_all_starting_past_the_last_key_is_refused() {
    let (mut s, env) = fixture();
    add_profile(&mut s, "Wide", vec![pk(9, KeyType::BlfAll, "", None)]);
    let e = assign(&mut s, &env, B, Some("Wide"), vec![]).unwrap_err();
    assert_eq!(e.code, ErrorCode::KeyUnavailable);
}

fn mv(from: KeyNo, to: KeyNo, mode: MoveMode) -> KeyMove {
    KeyMove { from, to, mode }
}

fn device_keys(s: &State, m: &str) -> Vec<(KeyNo, String)> {
    s.devices[&mac(m)]
        .keys
        .iter()
        .map(|k| (k.key, k.value.clone()))
        .collect()
}

fn three_keys() -> Vec<ProgKey> {
    vec![
        pk(2, KeyType::SpeedDial, "a", None),
        pk(3, KeyType::SpeedDial, "b", None),
        pk(4, KeyType::SpeedDial, "c", None),
    ]
}

#[test]
fn moving_a_device_key_swaps_with_the_key_in_its_place_in_one_effect() {
    let (mut s, env) = fixture();
    assign(&mut s, &env, A, None, three_keys()).unwrap();
    let fx = run(&mut s, |tx| {
        move_device_key(tx, &env, &mac(A), mv(2, 4, MoveMode::Swap))
    })
    .unwrap();
    assert_eq!(
        (fx.action, fx.kind, fx.devices.len()),
        (Action::DeviceKeysMove, ChangeKind::Keys, 1)
    );
    assert_eq!(
        device_keys(&s, A),
        vec![(2, "c".into()), (3, "b".into()), (4, "a".into())]
    );
    // Onto a free key: it just moves.
    run(&mut s, |tx| {
        move_device_key(tx, &env, &mac(A), mv(3, 9, MoveMode::Swap))
    })
    .unwrap();
    assert_eq!(
        device_keys(&s, A),
        vec![(2, "c".into()), (4, "a".into()), (9, "b".into())]
    );
}

#[test]
fn moving_a_device_key_with_shift_inserts_it_and_moves_the_others_along() {
    let (mut s, env) = fixture();
    assign(&mut s, &env, A, None, three_keys()).unwrap();
    run(&mut s, |tx| {
        move_device_key(tx, &env, &mac(A), mv(4, 2, MoveMode::Shift))
    })
    .unwrap();
    assert_eq!(
        device_keys(&s, A),
        vec![(2, "c".into()), (3, "a".into()), (4, "b".into())]
    );
    run(&mut s, |tx| {
        move_device_key(tx, &env, &mac(A), mv(2, 4, MoveMode::Shift))
    })
    .unwrap();
    assert_eq!(
        device_keys(&s, A),
        vec![(2, "a".into()), (3, "b".into()), (4, "c".into())]
    );
}

#[test]
fn a_key_move_is_validated() {
    let (mut s, env) = fixture();
    add_profile(&mut s, "Reception", vec![pk(6, KeyType::Park, "700", None)]);
    assign(&mut s, &env, A, Some("Reception"), three_keys()).unwrap();
    let before = format!("{s:?}");
    let cases = [
        (mv(2, 13, MoveMode::Swap), ErrorCode::KeyUnavailable, None), // past key 12
        (mv(2, 1, MoveMode::Swap), ErrorCode::KeyUnavailable, None),  // the primary line's
        (
            mv(2, 0, MoveMode::Swap),
            ErrorCode::KeyUnavailable,
            Some("to"),
        ),
        (
            mv(5, 7, MoveMode::Swap),
            ErrorCode::Validation,
            Some("from"),
        ), // no key there
        (mv(2, 2, MoveMode::Swap), ErrorCode::Validation, Some("to")),
    ];
    for (m, code, field) in cases {
        let e = run(&mut s, |tx| move_device_key(tx, &env, &mac(A), m.clone())).unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref().filter(|_| field.is_some())),
            (code, field),
            "{m:?}: {}",
            e.detail
        );
    }
    // A profile key is moved in the profile.
    let e = run(&mut s, |tx| {
        move_device_key(tx, &env, &mac(A), mv(6, 7, MoveMode::Swap))
    })
    .unwrap_err();
    assert!(e.detail.contains("key profile 'Reception'"), "{}", e.detail);
    assert_eq!(format!("{s:?}"), before);
}

#[test]
fn moving_a_profile_key_is_checked_on_every_assigned_device() {
    let (mut s, env) = fixture();
    add_profile(&mut s, "Reception", vec![pk(2, KeyType::Park, "700", None)]);
    assign(&mut s, &env, A, Some("Reception"), vec![]).unwrap();
    assign(&mut s, &env, B, Some("Reception"), vec![]).unwrap();
    let e = run(&mut s, |tx| {
        move_profile_key(
            tx,
            &env,
            &g(G),
            &pname("Reception"),
            mv(2, 8, MoveMode::Swap),
        )
    })
    .unwrap_err();
    assert!(e.detail.starts_with("device desk-b"), "{}", e.detail);
    let (fx, p) = run(&mut s, |tx| {
        move_profile_key(
            tx,
            &env,
            &g(G),
            &pname("Reception"),
            mv(2, 3, MoveMode::Swap),
        )
    })
    .unwrap();
    assert_eq!(p.keys[0].key, 3);
    assert_eq!(
        (fx.action, fx.devices.len()),
        (Action::KeyProfileKeysMove, 2)
    );
}

#[test]
fn deleting_the_group_deletes_its_key_profiles() {
    let (mut s, _) = fixture();
    add_profile(&mut s, "Reception", vec![]);
    run(&mut s, |tx| delete_group(tx, &g(G), true)).unwrap();
    assert!(s.key_profiles.is_empty());
}

#[test]
fn a_rename_is_a_keys_change_for_watching_phones_and_not_for_the_users_own() {
    let (mut s, env) = fixture();
    // desk-b (5555's phone) shows 1001 by blf_all; desk-a is 1001's own phone.
    assign(
        &mut s,
        &env,
        B,
        None,
        vec![pk(2, KeyType::BlfAll, "", None)],
    )
    .unwrap();
    let fx = rename(&mut s, &env, "1001", "Ada King");
    assert_eq!(
        fx.devices.iter().cloned().collect::<Vec<_>>(),
        vec![mac(A), mac(B)]
    );
    assert_eq!(
        fx.keys_only.iter().cloned().collect::<Vec<_>>(),
        vec![mac(B)]
    );
}
