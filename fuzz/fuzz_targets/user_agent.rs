//! User-Agent parsing: a model is named only when the User-Agent holds one of its catalogue
//! substrings; the firmware is a version-looking piece of the User-Agent; a MAC is one whose
//! digits are in it, and round-trips.
#![no_main]

use std::sync::LazyLock;

use deskprov::catalog::Catalog;
use deskprov::domain::Mac;
use deskprov::fuzzing::{user_agent, user_agent_patterns};
use libfuzzer_sys::fuzz_target;

static CATALOG: LazyLock<Catalog> = LazyLock::new(|| Catalog::builtin().expect("catalogue"));

fuzz_target!(|ua: &str| {
    let catalog = &*CATALOG;
    let u = user_agent(catalog, ua);
    if let Some(model) = &u.model {
        assert!(catalog.get(model).is_some(), "unknown model {model}");
        assert!(
            user_agent_patterns(catalog, model)
                .iter()
                .any(|p| !p.is_empty() && ua.contains(p.as_str())),
            "{ua:?} named {model}"
        );
    }
    if let Some(fw) = &u.firmware {
        assert!(u.model.is_some(), "firmware without a model");
        assert!(ua.contains(fw.as_str()), "{fw:?} is not in {ua:?}");
        assert!(
            fw.starts_with(|c: char| c.is_ascii_digit()) && fw.contains('.'),
            "{fw:?}"
        );
    }
    if let Some(mac) = &u.mac {
        let plain = ua.to_ascii_lowercase().replace([':', '-', '.'], "");
        assert!(plain.contains(mac.as_str()), "{mac} is not in {ua:?}");
        assert_eq!(Mac::parse(mac.as_str()).as_ref(), Ok(mac));
    }
});
