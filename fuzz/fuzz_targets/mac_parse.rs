//! `Mac::parse`: anything it accepts is 12 lowercase hex digits (the input's own digits), and
//! every canonical form of it parses back to the same MAC.
#![no_main]

use deskprov::domain::Mac;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    let Ok(m) = Mac::parse(s) else { return };
    let c = m.as_str();
    assert!(
        c.len() == 12
            && c.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{s:?} parsed to {c:?}"
    );
    let digits: String = s
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect::<String>()
        .to_ascii_lowercase();
    assert_eq!(digits, c, "{s:?}: the MAC is not the input's digits");
    assert_eq!(m.to_string(), c);
    let dotted = format!("{}.{}.{}", &c[..4], &c[4..8], &c[8..]);
    for form in [
        c.to_string(),
        m.upper(),
        m.colon(),
        m.colon().replace(':', "-"),
        dotted,
    ] {
        assert_eq!(
            Mac::parse(&form).as_ref(),
            Ok(&m),
            "{form:?} does not round-trip"
        );
    }
});
