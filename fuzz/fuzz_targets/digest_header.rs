//! `Authorization: Digest` parsing: a header built from parsed credentials parses back to the
//! same credentials, and so does a header built from arbitrary field values.
#![no_main]

use deskprov::fuzzing::{digest_parse, DigestCredentials};
use libfuzzer_sys::fuzz_target;

fn quote(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The header a client would send for `c`: every value quoted.
fn header(c: &DigestCredentials) -> String {
    let mut parts = vec![
        format!("username={}", quote(&c.username)),
        format!("realm={}", quote(&c.realm)),
        format!("nonce={}", quote(&c.nonce)),
        format!("uri={}", quote(&c.uri)),
        format!("response={}", quote(&c.response)),
    ];
    for (k, v) in [
        ("algorithm", &c.algorithm),
        ("qop", &c.qop),
        ("nc", &c.nc),
        ("cnonce", &c.cnonce),
    ] {
        if let Some(v) = v {
            parts.push(format!("{k}={}", quote(v)));
        }
    }
    format!("Digest {}", parts.join(", "))
}

fuzz_target!(|s: &str| {
    if let Some(c) = digest_parse(s) {
        let h = header(&c);
        assert_eq!(digest_parse(&h).as_ref(), Some(&c), "{s:?} → {h:?}");
    }
    // The input as field values, separated by NUL.
    let mut f = s.split('\0').map(str::to_string);
    let mut next = || f.next();
    let c = DigestCredentials {
        username: next().unwrap_or_default(),
        realm: next().unwrap_or_default(),
        nonce: next().unwrap_or_default(),
        uri: next().unwrap_or_default(),
        response: next().unwrap_or_default(),
        algorithm: next(),
        qop: next(),
        nc: next(),
        cnonce: next(),
    };
    let h = header(&c);
    assert_eq!(digest_parse(&h).as_ref(), Some(&c), "{h:?}");
});
