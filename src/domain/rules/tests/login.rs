//! `login_allowed` and `unregister` (seed 002 "Edit extension profile").

use super::*;

fn set_login(s: &mut State, env: &TestEnv, e: &str, allowed: bool) -> Effect {
    let mut input = user_in(e, None, UserKind::Standard);
    if e == "1001" {
        input.phone_number = Some(PhoneNumber::parse("6035551212").unwrap());
    }
    input.login_allowed = allowed;
    run(s, |tx| update_user(tx, env, &g(G), &ext(e), input))
        .unwrap()
        .0
}

fn macs(fx: &Effect) -> Vec<&str> {
    fx.devices.iter().map(|m| m.as_str()).collect()
}

#[test]
fn users_may_log_in_by_default() {
    let (s, _) = fixture();
    assert!(s.user(&g(G), &ext("1001")).unwrap().lines_enabled());
    let input: UserInput =
        serde_json::from_value(serde_json::json!({"extension": "4004"})).unwrap();
    assert!(input.login_allowed);
}

#[test]
fn login_allowed_false_is_an_unregister_change_on_the_devices_with_the_lines_only() {
    let (mut s, env) = fixture();
    add_sca(&mut s, &env, "1001", sca_in("desk-b", None, None)).unwrap();
    // 3003 monitors 1001 with a BLF key; 3003 has no device, so give it the lobby phone.
    let mut lobby = device_in("0004f2000003", "lobby", "m12", Some("3003"));
    lobby.name = Some("lobby".into());
    run(&mut s, |tx| {
        update_device(tx, &env, &mac("0004f2000003"), lobby)
    })
    .unwrap();
    let mut w = user_in("3003", None, UserKind::Standard);
    w.features.monitoring = vec![ext("1001")];
    run(&mut s, |tx| update_user(tx, &env, &g(G), &ext("3003"), w)).unwrap();

    let fx = set_login(&mut s, &env, "1001", false);
    assert_eq!(fx.kind, ChangeKind::Unregister);
    assert_eq!(fx.action, Action::UserUpdate);
    // Its own phone and the SCA's; not the watcher's (a BLF key registers nothing).
    assert_eq!(macs(&fx), ["0004f2000001", "0004f2000002"]);
    assert!(!s.user(&g(G), &ext("1001")).unwrap().lines_enabled());

    // Back on: `lines`, the same phones touched again.
    let fx = set_login(&mut s, &env, "1001", true);
    assert_eq!(fx.kind, ChangeKind::Lines);
    assert!(fx.devices.contains(&mac("0004f2000001")));
    assert!(fx.devices.contains(&mac("0004f2000002")));
    assert!(s.user(&g(G), &ext("1001")).unwrap().lines_enabled());
}

#[test]
fn an_update_that_leaves_login_alone_is_not_an_unregister() {
    let (mut s, env) = fixture();
    let fx = set_login(&mut s, &env, "5555", true);
    assert_eq!(fx.kind, ChangeKind::Settings);
    set_login(&mut s, &env, "5555", false);
    let fx = set_login(&mut s, &env, "5555", false);
    assert_eq!(fx.kind, ChangeKind::Settings, "still off: nothing to drop");
}

#[test]
fn unregister_takes_the_lines_off_until_the_next_change_of_the_user() {
    let (mut s, env) = fixture();
    add_sca(&mut s, &env, "5555", sca_in("desk-a", None, None)).unwrap();
    let (fx, u) = run(&mut s, |tx| unregister_user(tx, &g(G), &ext("5555"))).unwrap();
    assert_eq!(
        (fx.action, fx.kind, fx.subject.as_str()),
        (Action::UserUnregister, ChangeKind::Unregister, "5555")
    );
    assert_eq!(macs(&fx), ["0004f2000001", "0004f2000002"]);
    assert!(u.login_allowed && u.unregistered && !u.lines_enabled());
    // Again: one more entry, the same phones (the admin forces them off once more).
    let (fx, _) = run(&mut s, |tx| unregister_user(tx, &g(G), &ext("5555"))).unwrap();
    assert_eq!(fx.devices.len(), 2);
    // The next change of the user brings them back, as a `lines` change.
    let fx = set_login(&mut s, &env, "5555", true);
    assert_eq!(fx.kind, ChangeKind::Lines);
    assert!(s.user(&g(G), &ext("5555")).unwrap().lines_enabled());
}

#[test]
fn a_password_rotation_ends_an_unregister() {
    let (mut s, env) = fixture();
    run(&mut s, |tx| unregister_user(tx, &g(G), &ext("5555"))).unwrap();
    run(&mut s, |tx| {
        rotate_sip_password(tx, &env, &g(G), &ext("5555"))
    })
    .unwrap();
    assert!(s.user(&g(G), &ext("5555")).unwrap().lines_enabled());
}

#[test]
fn unregister_while_login_is_not_allowed_stays_off_after_the_next_change() {
    let (mut s, env) = fixture();
    set_login(&mut s, &env, "5555", false);
    run(&mut s, |tx| unregister_user(tx, &g(G), &ext("5555"))).unwrap();
    let fx = set_login(&mut s, &env, "5555", false);
    assert_eq!(fx.kind, ChangeKind::Settings);
    assert!(!s.user(&g(G), &ext("5555")).unwrap().lines_enabled());
}

#[test]
fn unregister_of_an_unknown_user_is_not_found() {
    let (mut s, _) = fixture();
    let e = run(&mut s, |tx| unregister_user(tx, &g(G), &ext("7777"))).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    let e = run(&mut s, |tx| unregister_user(tx, &g("OTHER"), &ext("1001"))).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "another group's user");
}

#[test]
fn a_hot_desk_guest_that_may_not_log_in_is_touched_where_it_is_logged_in() {
    let (mut s, env) = fixture();
    run(&mut s, |tx| {
        hot_desk_login(tx, &env, &mac("0004f2000003"), &ext("0901"))
    })
    .unwrap();
    let mut input = user_in("0901", None, UserKind::HotDesk);
    input.login_allowed = false;
    let (fx, _) = run(&mut s, |tx| {
        update_user(tx, &env, &g(G), &ext("0901"), input)
    })
    .unwrap();
    assert_eq!(fx.kind, ChangeKind::Unregister);
    assert_eq!(macs(&fx), ["0004f2000003"]);
}
