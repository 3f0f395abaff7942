//! File-name routing: the phone listener's `file_name` on a request path, then `resolve` on the
//! built-in catalogue with a provisioned sample device. A name with `/`, `%`, `..`, `\` or NUL
//! is never accepted; whatever resolves names a catalogue file that really has that name.
#![no_main]

use std::sync::LazyLock;

use deskprov::catalog::{Catalog, MacCase};
use deskprov::domain::state::State;
use deskprov::fuzzing::{device_model, phone_file_name, resolve, valid_file_name, Resolved};
use libfuzzer_sys::fuzz_target;

static WORLD: LazyLock<(Catalog, State, Vec<String>)> = LazyLock::new(|| {
    let catalog = Catalog::builtin().expect("built-in catalogue");
    let state =
        deskprov::render::fixtures::sample_state(&catalog, "polycom-vvx-450").expect("sample");
    let ids = catalog.models().map(|m| m.id.clone()).collect();
    (catalog, state, ids)
});

fuzz_target!(|data: &[u8]| {
    let (catalog, state, ids) = &*WORLD;
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(path) = std::str::from_utf8(rest) else {
        return;
    };
    let ua_model = ids.get(pick as usize % (ids.len() + 1)).map(String::as_str);

    match phone_file_name(path) {
        Ok(name) => {
            assert!(
                !name.contains(['/', '%', '\\', '\0']) && !name.contains(".."),
                "accepted {name:?}"
            );
            assert!(valid_file_name(name), "accepted {name:?}");
            assert_eq!(path.strip_prefix('/'), Some(name));
        }
        Err(code) => assert!(code == 400 || code == 404, "status {code}"),
    }

    let name = path.strip_prefix('/').unwrap_or(path);
    let resolved = resolve(catalog, state, name, ua_model);
    if !valid_file_name(name) {
        assert_eq!(resolved, None, "{name:?} is not a valid file name");
        return;
    }
    let spec_of = |model: &str, pattern: &str| {
        let m = catalog.get(model).expect("a catalogue model");
        let f = m.files.iter().find(|f| f.pattern == pattern);
        (m, f.expect("a file of the model").clone())
    };
    match resolved {
        None => {}
        Some(Resolved::Common(model, pattern)) => {
            let (_, spec) = spec_of(&model, &pattern);
            assert!(
                !spec.per_device && pattern == name,
                "{name:?} → {model} {pattern}"
            );
        }
        Some(Resolved::Device(mac, model, pattern)) => {
            let (m, spec) = spec_of(&model, &pattern);
            assert!(spec.per_device);
            assert_eq!(device_model(state, &mac), Some(m.id.as_str()));
            assert!(
                spec.name_for(&mac, MacCase::Lower)
                    .eq_ignore_ascii_case(name),
                "{name:?} → {mac} {pattern}"
            );
        }
        Some(Resolved::Unknown(mac)) => {
            let hit = catalog.models().flat_map(|m| &m.files).any(|f| {
                f.per_device && f.name_for(&mac, MacCase::Lower).eq_ignore_ascii_case(name)
            });
            assert!(hit, "{name:?} → unknown {mac}, but no pattern names it");
        }
    }
});
