//! `deskprov.toml`: any text is a config or an error with a message, never a panic; a config
//! that validates keeps the invariants `validate` promises, and its phone base URL is derived
//! as documented.
#![no_main]

use deskprov::fuzzing::config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match config(text) {
        Ok(c) => {
            assert!(c.rules.max_sca_per_user >= 1);
            let url = c.phone_base_url(Some(8443));
            match c.phones.base_url.trim_end_matches('/') {
                "" => assert!(
                    url.starts_with("https://") && url.ends_with(":8443"),
                    "{url}"
                ),
                u => assert_eq!(url, u),
            }
        }
        Err(e) => assert!(!e.is_empty()),
    }
});
