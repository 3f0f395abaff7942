//! A small SIP client that sends out-of-dialog NOTIFY (RFC 3261 / RFC 6665) and nothing else.
//!
//! UDP: one socket for every transaction; a receiver task hands each response to its
//! transaction by the top Via `branch`. Non-INVITE retransmission: T1 = 500 ms doubling up to
//! T2 = 4 s (after a provisional response, every T2), until a final response or Timer F (64·T1 =
//! 32 s). TCP: a connection per NOTIFY, no retransmission, the same Timer F. A 401/407 is
//! answered once with digest credentials (MD5, `qop=auth` when offered) of the line the request
//! is addressed to. Responses are parsed strictly; anything malformed is logged and dropped.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use md5::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

pub const T1: Duration = Duration::from_millis(500);
pub const T2: Duration = Duration::from_secs(4);
pub const TIMER_F: Duration = Duration::from_secs(32);

/// A parsed SIP response.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// Header (lowercase full name) → values, in order.
    pub headers: Vec<(String, String)>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    /// The `branch` parameter of the top Via.
    pub fn branch(&self) -> Option<&str> {
        let via = self.header("via")?;
        let top = via.split(',').next()?;
        top.split(';')
            .skip(1)
            .find_map(|p| p.trim().strip_prefix("branch="))
            .map(str::trim)
    }
}

fn full_name(h: &str) -> String {
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
pub fn parse_response(buf: &[u8]) -> Result<Response, String> {
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
            let last = headers.last_mut().ok_or("continuation before any header")?;
            last.1.push(' ');
            last.1.push_str(line.trim());
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

/// Where a NOTIFY goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub tcp: bool,
    pub addr: SocketAddr,
    /// Host as written in the Request-URI (a name or the address).
    pub host: String,
}

/// What to send.
#[derive(Clone, Debug)]
pub struct Notify {
    /// Request-URI user: the device's primary registration user.
    pub user: String,
    /// `Event:` header value.
    pub event: String,
    /// Digest credentials of that line, for a 401/407 challenge.
    pub auth_username: String,
    pub password: String,
}

/// The outcome of one NOTIFY transaction.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// A final response (the status after at most one digest retry).
    Final(u16, String),
    /// No final response within Timer F.
    Timeout,
    /// The request could not be sent (connection refused, ...).
    Error(String),
}

impl Outcome {
    pub fn ok(&self) -> bool {
        matches!(self, Outcome::Final(s, _) if (200..300).contains(s))
    }
    pub fn describe(&self) -> String {
        match self {
            Outcome::Final(s, r) => format!("{s} {r}"),
            Outcome::Timeout => "timeout".into(),
            Outcome::Error(e) => format!("error: {e}"),
        }
    }
}

fn token() -> String {
    crate::secrets::hex_token::<8>()
}

/// One request of a NOTIFY's dialog-less exchange (the first, or the digest retry).
struct Attempt<'a> {
    branch: &'a str,
    call_id: &'a str,
    from_tag: &'a str,
    cseq: u32,
    /// (header name, value) answering a challenge.
    authorization: Option<&'a (String, String)>,
}

/// Builds a NOTIFY request.
fn request(n: &Notify, target: &Target, local: SocketAddr, a: &Attempt) -> String {
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

/// The Authorization (or Proxy-Authorization) header answering a challenge.
fn answer(challenge: &Response, n: &Notify, ruri: &str) -> Option<(String, String)> {
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
        let cnonce = token();
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

type Waiters = Arc<Mutex<HashMap<String, tokio::sync::mpsc::UnboundedSender<Response>>>>;

/// The NOTIFY sender.
pub struct Client {
    udp: Arc<UdpSocket>,
    waiters: Waiters,
    bind_ip: IpAddr,
}

impl Client {
    /// Binds the UDP socket (`[sync] sip_bind`) and starts its receiver.
    pub async fn bind(addr: &str) -> std::io::Result<Client> {
        let udp = Arc::new(UdpSocket::bind(addr).await?);
        let waiters: Waiters = Default::default();
        let (sock, w) = (udp.clone(), waiters.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                let (n, from) = match sock.recv_from(&mut buf).await {
                    Ok(x) => x,
                    Err(e) => {
                        // ICMP port unreachable surfaces here on some systems: keep going.
                        tracing::debug!(error = %e, "SIP receive error");
                        continue;
                    }
                };
                match parse_response(&buf[..n]) {
                    Ok(r) => {
                        let tx = r.branch().and_then(|b| {
                            let b = b.strip_prefix("z9hG4bK").unwrap_or(b);
                            w.lock().unwrap_or_else(|p| p.into_inner()).get(b).cloned()
                        });
                        match tx {
                            Some(tx) => {
                                let _ = tx.send(r);
                            }
                            None => {
                                tracing::debug!(%from, status = r.status, "SIP response for no transaction")
                            }
                        }
                    }
                    Err(e) => tracing::warn!(%from, error = %e, "malformed SIP message ignored"),
                }
            }
        });
        let bind_ip = udp.local_addr()?.ip();
        Ok(Client {
            udp,
            waiters,
            bind_ip,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    /// The local address to write in Via/Contact for `to`: the bound one, or the address the
    /// system would route from when bound to any.
    fn local_for(&self, to: SocketAddr) -> SocketAddr {
        let port = self.udp.local_addr().map(|a| a.port()).unwrap_or(0);
        if !self.bind_ip.is_unspecified() {
            return SocketAddr::new(self.bind_ip, port);
        }
        let probe = std::net::UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })
            .and_then(|s| s.connect(to).and_then(|_| s.local_addr()));
        SocketAddr::new(probe.map(|a| a.ip()).unwrap_or(self.bind_ip), port)
    }

    /// Sends one NOTIFY and waits for its outcome (answering one digest challenge).
    pub async fn notify(&self, n: &Notify, target: &Target) -> Outcome {
        let call_id = format!("{}@deskprov", token());
        let from_tag = token();
        let ruri_host = if target.host.contains(':') && !target.host.starts_with('[') {
            format!("[{}]", target.host)
        } else {
            target.host.clone()
        };
        let ruri = format!("sip:{}@{}:{}", n.user, ruri_host, target.addr.port());
        let mut auth = None;
        for cseq in 1..=2u32 {
            let branch = token();
            let attempt = Attempt {
                branch: &branch,
                call_id: &call_id,
                from_tag: &from_tag,
                cseq,
                authorization: auth.as_ref(),
            };
            let out = if target.tcp {
                self.tcp_transaction(n, target, &attempt).await
            } else {
                self.udp_transaction(n, target, &attempt).await
            };
            match out {
                Ok(r) if (r.status == 401 || r.status == 407) && cseq == 1 => {
                    match answer(&r, n, &ruri) {
                        Some(a) => auth = Some(a),
                        None => return Outcome::Final(r.status, r.reason),
                    }
                }
                Ok(r) => return Outcome::Final(r.status, r.reason),
                Err(o) => return o,
            }
        }
        Outcome::Error("unreachable".into())
    }

    async fn udp_transaction(
        &self,
        n: &Notify,
        target: &Target,
        a: &Attempt<'_>,
    ) -> Result<Response, Outcome> {
        let (branch, call_id, cseq) = (a.branch, a.call_id, a.cseq);
        let local = self.local_for(target.addr);
        let msg = request(n, target, local, a);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(branch.to_string(), tx);
        let _guard = Unregister(self.waiters.clone(), branch.to_string());
        let deadline = tokio::time::Instant::now() + TIMER_F;
        let mut interval = T1;
        let mut provisional = false;
        loop {
            if let Err(e) = self.udp.send_to(msg.as_bytes(), target.addr).await {
                return Err(Outcome::Error(e.to_string()));
            }
            let wake = (tokio::time::Instant::now() + interval).min(deadline);
            loop {
                match tokio::time::timeout_at(wake, rx.recv()).await {
                    Ok(Some(r)) if r.status < 200 => provisional = true,
                    Ok(Some(r)) => {
                        let cseq_ok = r.header("cseq").is_some_and(|c| {
                            c.split_whitespace()
                                .eq([cseq.to_string().as_str(), "NOTIFY"])
                        });
                        let call_ok = r.header("call-id") == Some(call_id);
                        if cseq_ok && call_ok {
                            return Ok(r);
                        }
                        tracing::warn!(
                            status = r.status,
                            "SIP response with a foreign CSeq/Call-ID ignored"
                        );
                    }
                    Ok(None) => return Err(Outcome::Error("receiver stopped".into())),
                    Err(_) => break,
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Outcome::Timeout);
            }
            interval = if provisional {
                T2
            } else {
                (interval * 2).min(T2)
            };
        }
    }

    async fn tcp_transaction(
        &self,
        n: &Notify,
        target: &Target,
        a: &Attempt<'_>,
    ) -> Result<Response, Outcome> {
        let work = async {
            let mut s = TcpStream::connect(target.addr)
                .await
                .map_err(|e| Outcome::Error(e.to_string()))?;
            let local = s.local_addr().map_err(|e| Outcome::Error(e.to_string()))?;
            let msg = request(n, target, local, a);
            s.write_all(msg.as_bytes())
                .await
                .map_err(|e| Outcome::Error(e.to_string()))?;
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                // Frame by the blank line and Content-Length.
                while let Some(end) = find(&buf, b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let len = head
                        .split("\r\n")
                        .filter_map(|l| l.split_once(':'))
                        .find(|(k, _)| matches!(full_name(k.trim()).as_str(), "content-length"))
                        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    let total = end + 4 + len;
                    if buf.len() < total {
                        break;
                    }
                    let frame: Vec<u8> = buf.drain(..total).collect();
                    match parse_response(&frame) {
                        Ok(r) if r.status >= 200 => return Ok(r),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "malformed SIP message ignored"),
                    }
                }
                let k = s
                    .read(&mut chunk)
                    .await
                    .map_err(|e| Outcome::Error(e.to_string()))?;
                if k == 0 {
                    return Err(Outcome::Error("connection closed".into()));
                }
                if buf.len() > 65_536 {
                    return Err(Outcome::Error("oversized response".into()));
                }
                buf.extend_from_slice(&chunk[..k]);
            }
        };
        tokio::time::timeout(TIMER_F, work)
            .await
            .unwrap_or(Err(Outcome::Timeout))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Removes a transaction's waiter when it ends, however it ends.
struct Unregister(Waiters, String);
impl Drop for Unregister {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
    }
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
