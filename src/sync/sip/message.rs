//! SIP messages: building the out-of-dialog NOTIFY request, and parsing responses strictly.
//!
//! Both transports share this: UDP hands each datagram to [`parse_response`], TCP each framed
//! message. Anything that is not a well-formed `SIP/2.0` response with the mandatory headers
//! is an error for the caller to log and drop, never a panic.

use std::net::{IpAddr, SocketAddr};

use super::{Notify, Target};

/// A parsed SIP response.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) reason: String,
    /// Header (lowercase full name) → values, in order.
    pub(crate) headers: Vec<(String, String)>,
}

impl Response {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    /// The `branch` parameter of the top Via.
    pub(crate) fn branch(&self) -> Option<&str> {
        let via = self.header("via")?;
        let top = via.split(',').next()?;
        top.split(';')
            .skip(1)
            .find_map(|p| p.trim().strip_prefix("branch="))
            .map(str::trim)
    }
}

pub(super) fn full_name(h: &str) -> String {
    let h = h.to_ascii_lowercase();
    match h.as_str() {
        "v" => "via",
        "i" => "call-id",
        "f" => "from",
        "t" => "to",
        "l" => "content-length",
        "m" => "contact",
        "o" => "event",
        "k" => "supported",
        _ => return h,
    }
    .to_string()
}

/// Parses one response datagram (or one framed TCP message). Strict: a status line
/// `SIP/2.0 NNN reason`, `name: value` headers, a blank line, and the mandatory Via, CSeq,
/// Call-ID, From and To.
pub(crate) fn parse_response(buf: &[u8]) -> Result<Response, String> {
    let text = std::str::from_utf8(buf).map_err(|_| "not UTF-8".to_string())?;
    let (head, _body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "no end of headers".to_string())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or("empty")?;
    let mut parts = status_line.splitn(3, ' ');
    if parts.next() != Some("SIP/2.0") {
        return Err(format!("not a SIP/2.0 response: {status_line:.60}"));
    }
    let code = parts.next().ok_or("no status code")?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad status code {code:.10}"));
    }
    let status: u16 = code.parse().map_err(|_| "bad status code")?;
    if !(100..700).contains(&status) {
        return Err(format!("status code {status} out of range"));
    }
    let reason = parts.next().unwrap_or("").to_string();
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            // Folded continuation (obsolete but legal).
            // The value stays trimmed: one space joins non-empty parts.
            let last = headers.last_mut().ok_or("continuation before any header")?;
            let more = line.trim();
            if !more.is_empty() {
                if !last.1.is_empty() {
                    last.1.push(' ');
                }
                last.1.push_str(more);
            }
            continue;
        }
        let (n, v) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line {line:.40}"))?;
        let n = n.trim();
        if n.is_empty() || n.contains(' ') {
            return Err(format!("bad header name {n:.40}"));
        }
        headers.push((full_name(n), v.trim().to_string()));
    }
    let r = Response {
        status,
        reason,
        headers,
    };
    for h in ["via", "cseq", "call-id", "from", "to"] {
        if r.header(h).is_none() {
            return Err(format!("missing {h}"));
        }
    }
    let cseq = r.header("cseq").unwrap_or("");
    let mut c = cseq.split_whitespace();
    let ok = c.next().is_some_and(|n| n.parse::<u32>().is_ok()) && c.next().is_some();
    if !ok {
        return Err(format!("bad CSeq {cseq:.30}"));
    }
    Ok(r)
}

/// One request of a NOTIFY's dialog-less exchange (the first, or the digest retry).
pub(super) struct Attempt<'a> {
    pub(super) branch: &'a str,
    pub(super) call_id: &'a str,
    pub(super) from_tag: &'a str,
    pub(super) cseq: u32,
    /// (header name, value) answering a challenge.
    pub(super) authorization: Option<&'a (String, String)>,
}

/// Builds a NOTIFY request.
pub(super) fn request(n: &Notify, target: &Target, local: SocketAddr, a: &Attempt) -> String {
    let Attempt {
        branch,
        call_id,
        from_tag,
        cseq,
        authorization,
    } = a;
    let transport = if target.tcp { "TCP" } else { "UDP" };
    let host = if target.host.contains(':') && !target.host.starts_with('[') {
        format!("[{}]", target.host)
    } else {
        target.host.clone()
    };
    let ruri = format!("sip:{}@{}:{}", n.user, host, target.addr.port());
    let local_host = match local.ip() {
        IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    };
    let mut r = format!(
        "NOTIFY {ruri} SIP/2.0\r\n\
         Via: SIP/2.0/{transport} {local_host}:{port};branch=z9hG4bK{branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:deskprov@{local_host}>;tag={from_tag}\r\n\
         To: <sip:{user}@{host}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq} NOTIFY\r\n\
         Contact: <sip:deskprov@{local_host}:{port};transport={t}>\r\n\
         Event: {event}\r\n\
         Subscription-State: terminated;reason=timeout\r\n\
         User-Agent: deskprov/{version}\r\n",
        port = local.port(),
        user = n.user,
        t = transport.to_ascii_lowercase(),
        event = n.event,
        version = env!("CARGO_PKG_VERSION"),
    );
    if let Some((name, value)) = authorization {
        r.push_str(&format!("{name}: {value}\r\n"));
    }
    r.push_str("Content-Length: 0\r\n\r\n");
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc;rport=5060\r\nFrom: <sip:deskprov@127.0.0.1>;tag=1\r\nTo: <sip:1001@127.0.0.1>;tag=2\r\nCall-ID: x@deskprov\r\nCSeq: 1 NOTIFY\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn parses_a_response_and_its_branch() {
        let r = parse_response(OK.as_bytes()).unwrap();
        assert_eq!((r.status, r.reason.as_str()), (200, "OK"));
        assert_eq!(r.branch(), Some("z9hG4bKabc"));
        let compact = OK.replace("Via:", "v:").replace("Call-ID:", "i:");
        assert_eq!(
            parse_response(compact.as_bytes())
                .unwrap()
                .header("call-id"),
            Some("x@deskprov")
        );
    }

    #[test]
    fn malformed_responses_are_errors_not_panics() {
        for bad in [
            "",
            "HTTP/1.1 200 OK\r\n\r\n",
            "SIP/2.0 2000 OK\r\n\r\n",
            "SIP/2.0 099 X\r\nVia: a\r\n\r\n",
            "SIP/2.0 200 OK\r\nVia x\r\n\r\n",
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a\r\n\r\n",
            "SIP/2.0 200 OK\r\nVia: v\r\nFrom: f\r\nTo: t\r\nCall-ID: c\r\nCSeq: one NOTIFY\r\n\r\n",
            "SIP/2.0 200 OK",
        ] {
            assert!(parse_response(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(parse_response(&[0xff, 0xfe, 0x00]).is_err());
    }

    #[test]
    fn folded_values_stay_trimmed_so_a_response_reparses_identically() {
        // Found by fuzzing (sip_response): an empty value continued on the next line kept a
        // leading space, and a blank continuation a trailing one.
        let folded = OK
            .replace("Call-ID: x@deskprov\r\n", "Call-ID:\r\n  x@deskprov\r\n")
            .replace("CSeq: 1 NOTIFY\r\n", "CSeq: 1 NOTIFY\r\n \r\n");
        let r = parse_response(folded.as_bytes()).unwrap();
        assert_eq!(r.header("call-id"), Some("x@deskprov"));
        assert_eq!(r.header("cseq"), Some("1 NOTIFY"));
        let mut text = format!("SIP/2.0 {} {}\r\n", r.status, r.reason);
        for (n, v) in &r.headers {
            text.push_str(&format!("{n}: {v}\r\n"));
        }
        text.push_str("\r\n");
        assert_eq!(parse_response(text.as_bytes()), Ok(r));
    }

    #[test]
    fn the_request_has_every_mandatory_header() {
        let n = Notify {
            user: "6035551212".into(),
            event: "check-sync;reboot=true".into(),
            auth_username: "a".into(),
            password: "p".into(),
        };
        let t = Target {
            tcp: false,
            addr: "127.0.0.1:5070".parse().unwrap(),
            host: "127.0.0.1".into(),
        };
        let a = Attempt {
            branch: "b1",
            call_id: "c1@deskprov",
            from_tag: "tag1",
            cseq: 1,
            authorization: None,
        };
        let r = request(&n, &t, "127.0.0.1:40000".parse().unwrap(), &a);
        assert!(r.starts_with("NOTIFY sip:6035551212@127.0.0.1:5070 SIP/2.0\r\n"));
        for h in [
            "Via: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKb1;rport\r\n",
            "From: <sip:deskprov@127.0.0.1>;tag=tag1\r\n",
            "To: <sip:6035551212@127.0.0.1>\r\n",
            "Call-ID: c1@deskprov\r\n",
            "CSeq: 1 NOTIFY\r\n",
            "Event: check-sync;reboot=true\r\n",
            "Subscription-State: terminated",
            "Max-Forwards: 70\r\n",
            "Content-Length: 0\r\n\r\n",
        ] {
            assert!(r.contains(h), "missing {h:?} in\n{r}");
        }
    }
}
