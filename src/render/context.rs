//! The template context (README "Template context"), built from the domain's key layout.
//!
//! One builder for every model. It is deterministic: maps are ordered, and nothing depends on
//! time or on the request, so the same device at the same revision renders the same bytes.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::catalog::{ExpansionModel, Locale, Model};
use crate::domain::layout::{layout, AppearanceKind};
use crate::domain::state::State;
use crate::domain::{locale, Device, DomainError, KeyNo, KeyType};

/// Context of a per-device file.
pub(crate) fn device_context(
    state: &State,
    model: &Model,
    device: &Device,
    base_url: &str,
) -> Result<Value, DomainError> {
    let caps = model.device_caps(&device.expansion_modules)?;
    let lay = layout(state, device, caps)?;
    let modules: Vec<_> = model.modules_of(&device.expansion_modules).collect();
    let place = |key: KeyNo| key_place(model.line_keys, &modules, key);
    let group = state
        .groups
        .get(&device.group)
        .ok_or_else(|| DomainError::not_found(format!("group {} does not exist", device.group)))?;
    let context_user = device
        .context_user()
        .and_then(|e| state.user(&device.group, e));

    let lines: Vec<Value> = lay
        .appearances
        .iter()
        .filter_map(|a| {
            // Whose line it is (a shared line's: the member's, the context user): its lines
            // are off while it may not log in or is unregistered (`User::lines_enabled`).
            let enabled = match a.kind {
                AppearanceKind::Primary | AppearanceKind::Sca => a.extension.as_ref(),
                AppearanceKind::SharedLine => device.context_user(),
            }
            .and_then(|e| state.user(&device.group, e))
            .is_none_or(|u| u.lines_enabled());
            let (line_port, auth, password, display, label, extension, options) = match a.kind {
                AppearanceKind::Primary | AppearanceKind::Sca => {
                    let u = state.user(&device.group, a.extension.as_ref()?)?;
                    let sca = a.sca.as_ref().and_then(|p| state.scas.get(p));
                    let label = sca
                        .and_then(|x| x.label.clone())
                        .unwrap_or_else(|| u.display());
                    let options = json!({
                        "allow_origination": sca.is_none_or(|x| x.allow_origination),
                        "allow_termination": sca.is_none_or(|x| x.allow_termination),
                    });
                    (
                        a.line_port.clone(),
                        u.auth_username(),
                        u.sip.password.expose().to_string(),
                        u.display(),
                        label,
                        u.extension.to_string(),
                        options,
                    )
                }
                AppearanceKind::SharedLine => {
                    let n = a.shared_line.as_ref()?;
                    let l = state.shared_lines.get(&(device.group.clone(), n.clone()))?;
                    let name = if l.description.is_empty() {
                        l.number.to_string()
                    } else {
                        l.description.clone()
                    };
                    let options = json!({
                        "ring": a.ring,
                        "direct_dial": l.direct_dial,
                        "autodial_digits": l.autodial_digits,
                        "forward_to_voicemail": l.forward_to_voicemail,
                        "allow_origination": true,
                        "allow_termination": true,
                    });
                    (
                        l.line_port(),
                        l.line_port(),
                        l.password.expose().to_string(),
                        name.clone(),
                        name,
                        l.number.to_string(),
                        options,
                    )
                }
            };
            Some(json!({
                "index": a.index,
                "kind": if a.kind == AppearanceKind::Primary { "primary" } else { "shared" },
                "appearance": a.kind,
                "line_port": line_port,
                "auth_username": auth,
                "password": password,
                "display_name": display,
                "label": label,
                "extension": extension,
                "keys": a.keys,
                "key_slots": a.keys.iter().map(|k| place(*k)).collect::<Vec<_>>(),
                "enabled": enabled,
                "options": options,
            }))
        })
        .collect();

    // Programmable keys (the device's, its profile's, the blf_all expansion: see `layout`), then
    // BLF keys for the context user's monitoring list (users not shown yet) on the keys left.
    let mut keys: Vec<Value> = lay
        .keys
        .iter()
        .map(|k| {
            let at = place(k.key);
            json!({
                "key": k.key,
                "module": at.module,
                "position": at.position,
                "type": k.kind,
                "value": k.value,
                "label": k.label,
                "extension": k.extension,
            })
        })
        .collect();
    if let Some(u) = context_user {
        let mut free = lay.free_keys.iter();
        let shown =
            |e: &crate::domain::Extension| lay.keys.iter().any(|k| k.extension.as_ref() == Some(e));
        for e in &u.features.monitoring {
            if shown(e) {
                continue;
            }
            let (Some(m), Some(key)) = (state.user(&device.group, e), free.next()) else {
                continue;
            };
            let at = place(*key);
            keys.push(json!({
                "key": key,
                "module": at.module,
                "position": at.position,
                "type": KeyType::Blf,
                "value": m.sip_username(),
                "label": m.display(),
                "extension": m.extension,
            }));
        }
    }

    let mut settings: BTreeMap<String, String> = group.settings.clone();
    settings.extend(device.settings.clone());
    let timezone = settings
        .get("timezone")
        .and_then(|tz| locale::zone(tz))
        .map(|z| timezone_value(z, &model.locale));
    let language = settings
        .get("language")
        .and_then(|l| locale::language(l))
        .map(|l| language_value(&l, &model.locale));
    let expansion_modules: Vec<Value> = modules
        .iter()
        .enumerate()
        .map(|(i, m)| {
            json!({
                "index": i + 1,
                "model": m.id,
                "name": m.name,
                "keys": m.keys,
                "vars": m.vars,
            })
        })
        .collect();

    let firmware = firmware_value(state, model, device, base_url);

    Ok(json!({
        "firmware": firmware,
        "device": {
            "mac": device.mac,
            "mac_upper": device.mac.upper(),
            "mac_colon": device.mac.colon(),
            "name": device.name,
            "model": device.model,
            "settings": device.settings,
            "expansion_modules": expansion_modules,
        },
        "model": model_value(model),
        "group": {
            "id": group.id,
            "name": group.name,
            "sip": group.sip,
            "settings": group.settings,
        },
        "settings": settings,
        "timezone": timezone,
        "language": language,
        "lines": lines,
        "keys": keys,
        "user": context_user.map(|u| json!({
            "extension": u.extension,
            "display_name": u.display(),
            "first_name": u.first_name,
            "last_name": u.last_name,
            "phone_number": u.phone_number,
            "kind": u.kind,
            "features": u.features,
        })),
        "server": {
            "base_url": base_url,
            "revision": device.revision,
        },
    }))
}

/// The `firmware` context: the image a device in its group's roll-out is offered (`null` for
/// every other device). Its URL is on the phone listener: `<base>/firmware/<mac>/<file>`.
fn firmware_value(state: &State, model: &Model, device: &Device, base_url: &str) -> Value {
    let Some(spec) = &model.firmware else {
        return Value::Null;
    };
    let target = state.firmware_target_of(device);
    let Some(version) = crate::domain::firmware::offered(target, device) else {
        return Value::Null;
    };
    let Some(img) = state.firmware.get(&(model.id.clone(), version.to_string())) else {
        return Value::Null;
    };
    let base = base_url.trim_end_matches('/');
    let file = spec.file_for(version);
    let dir = format!("firmware/{}/", device.mac);
    let server = format!("{base}/{dir}");
    let host_path = server
        .split_once("://")
        .map(|(_, rest)| rest.to_string())
        .unwrap_or_else(|| server.clone());
    json!({
        "version": version,
        "file": file,
        "path": format!("{dir}{file}"),
        "url": format!("{server}{file}"),
        "server": server,
        "server_host_path": host_path,
        "https": base.starts_with("https://"),
        "sha256": img.sha256,
        "size": img.size,
    })
}

/// Where a line key sits: on the phone (`module` 0) or on the n-th expansion module, with its
/// 1-based `position` there.
#[derive(serde::Serialize)]
struct KeySlot {
    key: KeyNo,
    module: usize,
    position: KeyNo,
}

/// The slot of line key `key` on a phone with `phone_keys` keys and `modules` in order. Keys
/// past every module (never produced by a valid layout) stay on the phone.
fn key_place(
    phone_keys: KeyNo,
    modules: &[&std::sync::Arc<ExpansionModel>],
    key: KeyNo,
) -> KeySlot {
    let mut first = phone_keys;
    if key > first {
        for (i, m) in modules.iter().enumerate() {
            if key <= first + m.keys {
                return KeySlot {
                    key,
                    module: i + 1,
                    position: key - first,
                };
            }
            first += m.keys;
        }
    }
    KeySlot {
        key,
        module: 0,
        position: key,
    }
}

/// The `timezone` context of a zone, with the family's own name for it.
fn timezone_value(z: &locale::Zone, names: &Locale) -> Value {
    let moment = |t: &locale::Transition| {
        let (h, rest) = (t.seconds.div_euclid(3600), t.seconds.rem_euclid(3600));
        json!({
            "month": t.month,
            "week": t.week,
            "weekday": t.weekday,
            "last": t.week == 5,
            "hour": h,
            "minute": rest / 60,
            "second": rest % 60,
            "seconds": t.seconds,
            "time": format!("{h:02}:{:02}:{:02}", rest / 60, rest % 60),
        })
    };
    json!({
        "name": z.name,
        "posix": z.posix,
        "offset_seconds": z.offset_seconds,
        "offset_minutes": z.offset_seconds / 60,
        "offset": locale::offset_hhmm(z.offset_seconds),
        "offset_hours": locale::offset_hours(z.offset_seconds),
        "std_abbr": z.std_abbr,
        "dst": z.dst.as_ref().map(|d| json!({
            "abbr": d.abbr,
            "save_minutes": (d.offset_seconds - z.offset_seconds) / 60,
            "offset_seconds": d.offset_seconds,
            "start": moment(&d.start),
            "end": moment(&d.end),
        })),
        "vendor": names.timezones.get(z.name),
    })
}

/// The `language` context, with the family's own name for it (by tag, then by code).
fn language_value(l: &locale::Language, names: &Locale) -> Value {
    let tag = l.tag();
    json!({
        "code": l.code,
        "region": l.region,
        "tag": tag,
        "name": l.name,
        "vendor": names.languages.get(&tag).or_else(|| names.languages.get(l.code)),
    })
}

fn model_value(model: &Model) -> Value {
    json!({
        "id": model.id,
        "vendor": model.vendor,
        "family": model.family,
        "name": model.name,
        "line_keys": model.line_keys,
        "accounts": model.accounts,
        "vars": model.vars,
    })
}

/// Context of a common (per-model) file: no device, no group, no secrets.
pub(crate) fn common_context(model: &Model, base_url: &str) -> Value {
    json!({
        "model": model_value(model),
        "server": { "base_url": base_url },
    })
}

/// The first registration of a device context: what a NOTIFY is addressed to and authenticated
/// with.
pub(crate) fn primary_identity(ctx: &Value) -> Option<crate::domain::SipIdentity> {
    let line = ctx["lines"].get(0)?;
    Some(crate::domain::SipIdentity {
        user: line["line_port"].as_str()?.to_string(),
        auth_username: line["auth_username"].as_str()?.to_string(),
        password: crate::domain::Secret::new(line["password"].as_str()?),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::catalog::{Catalog, RulesEnv};
    use crate::domain::rules;
    use crate::domain::state::Tx;

    /// A catalogue with a 4-key test model that takes up to two 10-key modules, and a locale
    /// table for its family.
    fn catalog() -> (tempfile::TempDir, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("_modules")).unwrap();
        std::fs::write(
            p.join("_modules/test-exp.toml"),
            "vendor = \"Yealink\"\nfamily = \"yealink-t4x-t5x\"\nname = \"Test EXP\"\nkeys = 10\n[vars]\nkind = \"lcd\"\n",
        )
        .unwrap();
        std::fs::create_dir_all(p.join("_families/yealink-t4x-t5x")).unwrap();
        std::fs::write(
            p.join("_families/yealink-t4x-t5x/locale.toml"),
            "[timezones]\n\"Europe/Berlin\" = \"Germany(Berlin)\"\n[languages]\n\"de\" = \"German\"\n\"pt-BR\" = \"Portuguese (Brazil)\"\n",
        )
        .unwrap();
        std::fs::create_dir_all(p.join("test-side")).unwrap();
        std::fs::write(
            p.join("test-side/model.toml"),
            "vendor = \"Yealink\"\nfamily = \"yealink-t4x-t5x\"\nname = \"Side\"\nline_keys = 4\naccounts = 4\nmac_case = \"lower\"\nexpansion_modules = [\"test-exp\"]\nmax_expansion_modules = 2\n[notify]\nresync = \"check-sync\"\nreboot = \"check-sync;reboot=true\"\n",
        )
        .unwrap();
        let c = Catalog::load(Some(p)).unwrap();
        (dir, c)
    }

    fn context_of(
        settings: Value,
        device: Value,
        sca_key: Option<u16>,
    ) -> Result<Value, DomainError> {
        let (_dir, c) = catalog();
        let c = Arc::new(c);
        let env = RulesEnv {
            catalog: c.clone(),
            max_sca_per_user: 35,
        };
        let mut state = State::default();
        let mut tx = Tx::new(&mut state);
        let g: crate::domain::Group = serde_json::from_value(json!({
            "id": "g1", "name": "G", "sip": {"domain": "sip.example.net"}, "settings": settings,
        }))
        .unwrap();
        let gid = g.id.clone();
        rules::create_group(&mut tx, g)?;
        for (ext, first) in [("1001", "Ann"), ("1002", "Bob")] {
            let u = serde_json::from_value(json!({"extension": ext, "first_name": first})).unwrap();
            rules::create_user(&mut tx, &env, &gid, u)?;
        }
        let d = serde_json::from_value(device).unwrap();
        let (_, d) = rules::create_device(&mut tx, &env, &gid, d)?;
        if let Some(k) = sca_key {
            let sca =
                serde_json::from_value(json!({"device": d.mac.to_string(), "key": k})).unwrap();
            rules::create_sca(&mut tx, &env, &gid, &"1002".parse().unwrap(), sca)?;
        }
        drop(tx);
        let d = state.devices.get(&d.mac).unwrap().clone();
        device_context(&state, c.get("test-side").unwrap(), &d, "https://x")
    }

    #[test]
    fn keys_past_the_phone_sit_on_expansion_modules_in_order() {
        let ctx = context_of(
            json!({}),
            json!({"mac": "000000000001", "model": "test-side", "owner": "1001",
                   "expansion_modules": [{"model": "test-exp", "count": 2}],
                   "keys": [{"key": 15, "type": "speed_dial", "value": "*97"}]}),
            Some(12),
        )
        .unwrap();
        let mods = ctx["device"]["expansion_modules"].as_array().unwrap();
        assert_eq!(mods.len(), 2);
        assert_eq!(
            (mods[1]["index"].clone(), mods[1]["keys"].clone()),
            (json!(2), json!(10))
        );
        assert_eq!(mods[0]["vars"]["kind"], "lcd");
        let sca = &ctx["lines"][1];
        assert_eq!(
            sca["key_slots"][0],
            json!({"key": 12, "module": 1, "position": 8})
        );
        assert_eq!(sca["enabled"], json!(true));
        assert_eq!(
            ctx["lines"][0]["key_slots"][0],
            json!({"key": 1, "module": 0, "position": 1})
        );
        let k = &ctx["keys"][0];
        assert_eq!(
            (k["module"].clone(), k["position"].clone()),
            (json!(2), json!(1))
        );
    }

    #[test]
    fn a_key_beyond_the_modules_or_a_module_the_model_does_not_take_is_refused() {
        let e = context_of(
            json!({}),
            json!({"mac": "000000000001", "model": "test-side", "owner": "1001",
                   "expansion_modules": [{"model": "test-exp", "count": 1}]}),
            Some(15),
        )
        .unwrap_err();
        assert_eq!(e.code, crate::domain::ErrorCode::KeyUnavailable);
        let e = context_of(
            json!({}),
            json!({"mac": "000000000001", "model": "test-side",
                   "expansion_modules": [{"model": "other-exp", "count": 1}]}),
            None,
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("expansion_modules"));
        let e = context_of(
            json!({}),
            json!({"mac": "000000000001", "model": "test-side",
                   "expansion_modules": [{"model": "test-exp", "count": 3}]}),
            None,
        )
        .unwrap_err();
        assert!(e.detail.contains("at most 2"), "{}", e.detail);
    }

    #[test]
    fn time_zone_and_language_carry_rules_and_the_family_names() {
        let ctx = context_of(
            json!({"timezone": "Europe/Berlin", "language": "de_DE"}),
            json!({"mac": "000000000001", "model": "test-side", "owner": "1001"}),
            None,
        )
        .unwrap();
        let tz = &ctx["timezone"];
        assert_eq!(tz["offset"], "+01:00");
        assert_eq!(tz["offset_hours"], "+1");
        assert_eq!(tz["vendor"], "Germany(Berlin)");
        assert_eq!(tz["dst"]["save_minutes"], 60);
        assert_eq!(tz["dst"]["end"]["time"], "03:00:00");
        assert_eq!(tz["dst"]["end"]["last"], true);
        let lang = &ctx["language"];
        assert_eq!(
            (lang["tag"].clone(), lang["vendor"].clone()),
            (json!("de-DE"), json!("German"))
        );

        let ctx = context_of(
            json!({"timezone": "America/New_York", "language": "pt-BR"}),
            json!({"mac": "000000000001", "model": "test-side", "owner": "1001",
                   "settings": {"timezone": "Asia/Kolkata"}}),
            None,
        )
        .unwrap();
        assert_eq!(
            ctx["timezone"]["name"], "Asia/Kolkata",
            "the device's setting wins"
        );
        assert_eq!(ctx["timezone"]["dst"], Value::Null);
        assert_eq!(ctx["timezone"]["vendor"], Value::Null);
        assert_eq!(ctx["language"]["vendor"], "Portuguese (Brazil)");
    }

    /// Ann (1001) owns the phone and is a member of shared line 300 on it; Bob (1002) has an SCA
    /// on key 2. `off` users may not log in.
    fn lines_enabled_with(off: &[&str], unregister: &[&str]) -> Vec<(String, bool)> {
        let (_dir, c) = catalog();
        let c = Arc::new(c);
        let env = RulesEnv {
            catalog: c.clone(),
            max_sca_per_user: 35,
        };
        let mut state = State::default();
        let mut tx = Tx::new(&mut state);
        let g: crate::domain::Group =
            serde_json::from_value(json!({"id": "g1", "sip": {"domain": "sip.example.net"}}))
                .unwrap();
        let gid = g.id.clone();
        rules::create_group(&mut tx, g).unwrap();
        for ext in ["1001", "1002"] {
            let u = serde_json::from_value(
                json!({"extension": ext, "login_allowed": !off.contains(&ext)}),
            )
            .unwrap();
            rules::create_user(&mut tx, &env, &gid, u).unwrap();
        }
        let d = serde_json::from_value(
            json!({"mac": "000000000001", "model": "test-side", "owner": "1001"}),
        )
        .unwrap();
        let (_, d) = rules::create_device(&mut tx, &env, &gid, d).unwrap();
        let sca = serde_json::from_value(json!({"device": d.mac.to_string(), "key": 2})).unwrap();
        rules::create_sca(&mut tx, &env, &gid, &"1002".parse().unwrap(), sca).unwrap();
        let line = serde_json::from_value(
            json!({"number": "300", "members": [{"extension": "1001", "button": 3}]}),
        )
        .unwrap();
        rules::create_shared_line(&mut tx, &env, &gid, line).unwrap();
        for e in unregister {
            rules::unregister_user(&mut tx, &gid, &e.parse().unwrap()).unwrap();
        }
        drop(tx);
        let d = state.devices.get(&d.mac).unwrap().clone();
        let ctx = device_context(&state, c.get("test-side").unwrap(), &d, "https://x").unwrap();
        ctx["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["line_port"].as_str().unwrap().to_string(),
                    l["enabled"].as_bool().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn the_lines_of_a_user_who_may_not_log_in_render_disabled_everywhere() {
        let on = |p: &str| (p.to_string(), true);
        let off = |p: &str| (p.to_string(), false);
        assert_eq!(
            lines_enabled_with(&[], &[]),
            [on("g1_1001"), on("g1_1002_sca1"), on("g1_300")]
        );
        // Bob's SCA only.
        assert_eq!(
            lines_enabled_with(&["1002"], &[]),
            [on("g1_1001"), off("g1_1002_sca1"), on("g1_300")]
        );
        // Ann's primary line and her shared-line membership.
        assert_eq!(
            lines_enabled_with(&["1001"], &[]),
            [off("g1_1001"), on("g1_1002_sca1"), off("g1_300")]
        );
        // Unregistered: the same, though allowed to log in.
        assert_eq!(
            lines_enabled_with(&[], &["1002"]),
            [on("g1_1001"), off("g1_1002_sca1"), on("g1_300")]
        );
    }

    #[test]
    fn without_settings_there_is_no_time_zone_nor_language() {
        let ctx = context_of(
            json!({}),
            json!({"mac": "000000000001", "model": "test-side"}),
            None,
        )
        .unwrap();
        assert_eq!(
            (ctx["timezone"].clone(), ctx["language"].clone()),
            (Value::Null, Value::Null)
        );
        assert_eq!(ctx["device"]["expansion_modules"], json!([]));
    }
}
