//! Template upload validation on the built-in catalogue with the hostile sample state: any body
//! is accepted (having rendered at least one file) or refused with a message, never a panic.
//! The first byte picks the model and the second its template; the rest is the body.
#![no_main]

use std::sync::LazyLock;

use deskprov::catalog::Catalog;
use deskprov::fuzzing::TemplateCheck;
use libfuzzer_sys::fuzz_target;

static CHECKS: LazyLock<Vec<(TemplateCheck, Vec<String>)>> = LazyLock::new(|| {
    let catalog = Catalog::builtin().expect("catalogue");
    catalog
        .models()
        .map(|m| {
            let t = TemplateCheck::new(catalog.clone(), &m.id);
            let names = t.templates();
            (t, names)
        })
        .collect()
});

fuzz_target!(|data: &[u8]| {
    let [m, t, body @ ..] = data else { return };
    let Ok(body) = std::str::from_utf8(body) else {
        return;
    };
    let (check, templates) = &CHECKS[*m as usize % CHECKS.len()];
    let template = &templates[*t as usize % templates.len()];
    match check.validate(template, body) {
        Ok(n) => assert!(n >= 1, "{template}: accepted having rendered nothing"),
        Err(e) => assert!(!e.is_empty()),
    }
});
