//! SIP response parsing: anything accepted has a status in 100..700 and the mandatory headers,
//! and written out again (status line, one line per header) re-parses identically.
#![no_main]

use deskprov::fuzzing::{sip_response, SipResponse};
use libfuzzer_sys::fuzz_target;

fn write(r: &SipResponse) -> String {
    let mut s = format!("SIP/2.0 {} {}\r\n", r.status, r.reason);
    for (n, v) in &r.headers {
        s.push_str(&format!("{n}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s
}

fuzz_target!(|data: &[u8]| {
    let Ok(r) = sip_response(data) else { return };
    assert!((100..700).contains(&r.status));
    for h in ["via", "cseq", "call-id", "from", "to"] {
        assert!(r.headers.iter().any(|(n, _)| n == h), "no {h}");
    }
    let text = write(&r);
    let again = sip_response(text.as_bytes());
    assert_eq!(again.as_ref(), Ok(&r), "{text:?}");
});
