//! The client side of SIP digest authentication: the `Authorization` (or
//! `Proxy-Authorization`) header answering a phone's 401/407 challenge to a NOTIFY.
//!
//! MD5 only (what phones challenge with), `qop=auth` when offered; one answer per challenge,
//! with the credentials of the line the NOTIFY is addressed to.

use std::collections::HashMap;

use md5::Digest as _;

use super::message::Response;
use super::Notify;

/// The Authorization (or Proxy-Authorization) header answering a challenge.
pub(super) fn answer(challenge: &Response, n: &Notify, ruri: &str) -> Option<(String, String)> {
    let (hname, aname) = if challenge.status == 407 {
        ("proxy-authenticate", "Proxy-Authorization")
    } else {
        ("www-authenticate", "Authorization")
    };
    let c = challenge.header(hname)?;
    let rest = c.trim().strip_prefix("Digest")?;
    let mut params = HashMap::new();
    for p in split_params(rest) {
        if let Some((k, v)) = p.split_once('=') {
            params.insert(
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_string(),
            );
        }
    }
    let realm = params.get("realm")?;
    let nonce = params.get("nonce")?;
    if params
        .get("algorithm")
        .is_some_and(|a| !a.eq_ignore_ascii_case("MD5"))
    {
        return None;
    }
    let h = |s: String| hex::encode(md5::Md5::digest(s.as_bytes()));
    let ha1 = h(format!("{}:{realm}:{}", n.auth_username, n.password));
    let ha2 = h(format!("NOTIFY:{ruri}"));
    let qop_auth = params
        .get("qop")
        .is_some_and(|q| q.split(',').any(|x| x.trim() == "auth"));
    let mut v = format!(
        "Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{ruri}\", algorithm=MD5",
        n.auth_username
    );
    if qop_auth {
        let cnonce = super::token();
        let resp = h(format!("{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}"));
        v.push_str(&format!(
            ", qop=auth, nc=00000001, cnonce=\"{cnonce}\", response=\"{resp}\""
        ));
    } else {
        v.push_str(&format!(
            ", response=\"{}\"",
            h(format!("{ha1}:{nonce}:{ha2}"))
        ));
    }
    if let Some(o) = params.get("opaque") {
        v.push_str(&format!(", opaque=\"{o}\""));
    }
    Some((aname.to_string(), v))
}

/// Splits `a=1, b="x,y", c=2` at commas outside quotes.
fn split_params(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for ch in s.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                cur.push(ch);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(ch),
        }
    }
    out.push(cur);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::sip::message::parse_response;

    const OK: &str = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc;rport=5060\r\nFrom: <sip:deskprov@127.0.0.1>;tag=1\r\nTo: <sip:1001@127.0.0.1>;tag=2\r\nCall-ID: x@deskprov\r\nCSeq: 1 NOTIFY\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn answers_a_digest_challenge_with_md5_and_qop_auth() {
        let ch = OK.replace("200 OK", "401 Unauthorized").replace(
            "Content-Length",
            "WWW-Authenticate: Digest realm=\"phone\", nonce=\"n1\", qop=\"auth,auth-int\", opaque=\"op\"\r\nContent-Length",
        );
        let r = parse_response(ch.as_bytes()).unwrap();
        let n = Notify {
            user: "1001".into(),
            event: "check-sync".into(),
            auth_username: "1001a".into(),
            password: "pw".into(),
        };
        let (name, v) = answer(&r, &n, "sip:1001@127.0.0.1:5070").unwrap();
        assert_eq!(name, "Authorization");
        assert!(
            v.contains("username=\"1001a\"")
                && v.contains("qop=auth")
                && v.contains("opaque=\"op\"")
        );
        // Recompute the response independently.
        let cnonce = v
            .split("cnonce=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let h = |s: String| hex::encode(md5::Md5::digest(s.as_bytes()));
        let want = h(format!(
            "{}:n1:00000001:{cnonce}:auth:{}",
            h("1001a:phone:pw".into()),
            h("NOTIFY:sip:1001@127.0.0.1:5070".into())
        ));
        assert!(v.contains(&format!("response=\"{want}\"")), "{v}");
    }
}
