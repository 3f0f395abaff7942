//! HTTP Digest authentication (RFC 7616) for phones, and the per-IP failure lockout.
//!
//! Nonces are stateless: `<timestamp hex>.<random hex>-<HMAC(key, timestamp.random | client ip)>`
//! (the random part makes every challenge's nonce unique), valid for
//! [`NONCE_TTL`]; the key is random per process. Each nonce's highest `nc` is remembered while
//! it is valid, so a replayed response (same or lower `nc`) is refused. `qop=auth` is required
//! (without it there is no `nc`, hence no replay protection). MD5 and SHA-256 are accepted;
//! comparisons are constant-time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use md5::Digest as _;
use ring::hmac;

const REALM: &str = "deskprov";
/// How long a nonce is accepted.
const NONCE_TTL: Duration = Duration::from_secs(300);
/// Most nonces tracked for replay; beyond it the oldest are forgotten (they then fail as stale).
const MAX_TRACKED: usize = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    fn hash(self, s: &str) -> String {
        match self {
            Algorithm::Md5 => hex::encode(md5::Md5::digest(s.as_bytes())),
            Algorithm::Sha256 => {
                hex::encode(ring::digest::digest(&ring::digest::SHA256, s.as_bytes()))
            }
        }
    }
}

/// The parameters of an `Authorization: Digest ...` header.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Credentials {
    pub(crate) username: String,
    pub(crate) realm: String,
    pub(crate) nonce: String,
    pub(crate) uri: String,
    pub(crate) response: String,
    pub(crate) algorithm: Option<String>,
    pub(crate) qop: Option<String>,
    pub(crate) nc: Option<String>,
    pub(crate) cnonce: Option<String>,
}

/// Parses `Digest k=v, k="v", ...`; `None` when it is not a digest header.
pub(crate) fn parse(header: &str) -> Option<Credentials> {
    let rest = header.trim().strip_prefix("Digest")?.trim_start();
    let mut c = Credentials::default();
    let mut s = rest;
    while !s.is_empty() {
        let (k, after) = s.split_once('=')?;
        let k = k.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (v, remain) = if let Some(q) = after.strip_prefix('"') {
            // Quoted string with backslash escapes.
            let mut v = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, ch)) = chars.next() {
                match ch {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    _ => v.push(ch),
                }
            }
            (v, &q[end?..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        match k.as_str() {
            "username" => c.username = v,
            "realm" => c.realm = v,
            "nonce" => c.nonce = v,
            "uri" => c.uri = v,
            "response" => c.response = v,
            "algorithm" => c.algorithm = Some(v),
            "qop" => c.qop = Some(v),
            "nc" => c.nc = Some(v),
            "cnonce" => c.cnonce = Some(v),
            _ => {}
        }
        s = remain.trim_start().trim_start_matches(',').trim_start();
    }
    Some(c)
}

/// Why credentials were refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Malformed, wrong realm/uri/qop, bad nonce, wrong response, or a replay.
    Invalid,
    /// A nonce we issued that has expired: the client may retry with a fresh one.
    Stale,
}

/// Issues and checks nonces, and remembers `nc` per nonce.
pub(crate) struct Digest {
    key: hmac::Key,
    seen: Mutex<HashMap<String, (u64, Instant)>>,
}

impl Default for Digest {
    fn default() -> Self {
        Digest::new()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Digest {
    pub(crate) fn new() -> Digest {
        let rng = ring::rand::SystemRandom::new();
        Digest {
            key: hmac::Key::generate(hmac::HMAC_SHA256, &rng).expect("random key"),
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn mac_of(&self, stamp: &str, ip: IpAddr) -> String {
        let tag = hmac::sign(&self.key, format!("{stamp}|{ip}").as_bytes());
        hex::encode(&tag.as_ref()[..16])
    }

    pub(crate) fn nonce(&self, ip: IpAddr) -> String {
        let stamp = format!("{:x}.{}", unix_now(), crate::secrets::hex_token::<8>());
        format!("{stamp}-{}", self.mac_of(&stamp, ip))
    }

    /// The `WWW-Authenticate` values to send: SHA-256 preferred, MD5 for older phones.
    pub(crate) fn challenges(&self, ip: IpAddr, stale: bool) -> Vec<String> {
        let nonce = self.nonce(ip);
        let stale = if stale { ", stale=true" } else { "" };
        ["SHA-256", "MD5"]
            .iter()
            .map(|alg| format!("Digest realm=\"{REALM}\", qop=\"auth\", algorithm={alg}, nonce=\"{nonce}\"{stale}"))
            .collect()
    }

    /// Checks `c` for a request (`method`, `uri`) from `ip` against `password`.
    pub(crate) fn verify(
        &self,
        c: &Credentials,
        method: &str,
        uri: &str,
        ip: IpAddr,
        password: &str,
    ) -> Result<(), Refusal> {
        let alg = match c
            .algorithm
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("MD5") => Algorithm::Md5,
            Some("SHA-256") => Algorithm::Sha256,
            _ => return Err(Refusal::Invalid),
        };
        if c.realm != REALM || c.uri != uri || c.qop.as_deref() != Some("auth") {
            return Err(Refusal::Invalid);
        }
        let (Some(nc), Some(cnonce)) = (c.nc.as_deref(), c.cnonce.as_deref()) else {
            return Err(Refusal::Invalid);
        };
        let nc_value = u64::from_str_radix(nc, 16).map_err(|_| Refusal::Invalid)?;
        // The nonce must be ours (HMAC) before its age or the response mean anything.
        let (stamp, tag) = c.nonce.split_once('-').ok_or(Refusal::Invalid)?;
        let ts_hex = stamp.split('.').next().unwrap_or_default();
        let ts = u64::from_str_radix(ts_hex, 16).map_err(|_| Refusal::Invalid)?;
        if !crate::secrets::ct_eq(tag.as_bytes(), self.mac_of(stamp, ip).as_bytes()) {
            return Err(Refusal::Invalid);
        }
        let ha1 = alg.hash(&format!("{}:{REALM}:{password}", c.username));
        let ha2 = alg.hash(&format!("{method}:{}", c.uri));
        let expected = alg.hash(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", c.nonce));
        if !crate::secrets::ct_eq(
            expected.as_bytes(),
            c.response.to_ascii_lowercase().as_bytes(),
        ) {
            return Err(Refusal::Invalid);
        }
        if unix_now().saturating_sub(ts) > NONCE_TTL.as_secs() {
            return Err(Refusal::Stale);
        }
        // Replay: nc must grow for each use of a nonce.
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_TRACKED {
            seen.retain(|_, (_, at)| at.elapsed() < NONCE_TTL);
        }
        match seen.get_mut(&c.nonce) {
            Some((last, _)) if nc_value <= *last => Err(Refusal::Invalid),
            Some((last, _)) => {
                *last = nc_value;
                Ok(())
            }
            None => {
                seen.insert(c.nonce.clone(), (nc_value, Instant::now()));
                Ok(())
            }
        }
    }
}

/// Per IP: when its one-minute window started, failures in it, locked until.
type Window = (Instant, u32, Option<Instant>);

/// Counts authentication failures per IP; past the limit within a minute, the IP is locked out.
pub(crate) struct Lockout {
    limit: u32,
    lockout: Duration,
    state: Mutex<HashMap<IpAddr, Window>>,
}

impl Lockout {
    pub(crate) fn new(limit: u32, lockout: Duration) -> Lockout {
        Lockout {
            limit,
            lockout,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds left if `ip` is locked out.
    pub(crate) fn locked(&self, ip: IpAddr) -> Option<u64> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let until = s.get(&ip)?.2?;
        let now = Instant::now();
        (until > now).then(|| (until - now).as_secs().max(1))
    }

    /// Records a failure; returns true when this failure starts a lockout.
    pub(crate) fn fail(&self, ip: IpAddr) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if s.len() > 100_000 {
            s.retain(|_, (start, _, until)| {
                now - *start < Duration::from_secs(60) || until.is_some_and(|u| u > now)
            });
        }
        let e = s.entry(ip).or_insert((now, 0, None));
        if now - e.0 >= Duration::from_secs(60) {
            *e = (now, 0, None);
        }
        e.1 += 1;
        if e.1 > self.limit && e.2.is_none_or(|u| u <= now) {
            e.2 = Some(now + self.lockout);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn respond(c: &mut Credentials, alg: Algorithm, password: &str, method: &str) {
        let ha1 = alg.hash(&format!("{}:{}:{password}", c.username, c.realm));
        let ha2 = alg.hash(&format!("{method}:{}", c.uri));
        c.response = alg.hash(&format!(
            "{ha1}:{}:{}:{}:auth:{ha2}",
            c.nonce,
            c.nc.as_deref().unwrap(),
            c.cnonce.as_deref().unwrap()
        ));
    }

    fn creds(d: &Digest, ip: IpAddr, alg: Algorithm) -> Credentials {
        let mut c = Credentials {
            username: "0004f2abcdef".into(),
            realm: REALM.into(),
            nonce: d.nonce(ip),
            uri: "/0004f2abcdef.cfg".into(),
            algorithm: Some(
                if alg == Algorithm::Md5 {
                    "MD5"
                } else {
                    "SHA-256"
                }
                .into(),
            ),
            qop: Some("auth".into()),
            nc: Some("00000001".into()),
            cnonce: Some("abc123".into()),
            ..Default::default()
        };
        respond(&mut c, alg, "s3cret-password", "GET");
        c
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn md5_and_sha256_responses_verify() {
        let d = Digest::new();
        for alg in [Algorithm::Md5, Algorithm::Sha256] {
            let c = creds(&d, IP, alg);
            assert_eq!(
                d.verify(&c, "GET", "/0004f2abcdef.cfg", IP, "s3cret-password"),
                Ok(())
            );
        }
    }

    #[test]
    fn wrong_password_uri_realm_or_ip_is_refused() {
        let d = Digest::new();
        let c = creds(&d, IP, Algorithm::Sha256);
        assert_eq!(
            d.verify(&c, "GET", "/0004f2abcdef.cfg", IP, "wrong"),
            Err(Refusal::Invalid)
        );
        assert_eq!(
            d.verify(&c, "GET", "/other.cfg", IP, "s3cret-password"),
            Err(Refusal::Invalid)
        );
        let other_ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            d.verify(&c, "GET", "/0004f2abcdef.cfg", other_ip, "s3cret-password"),
            Err(Refusal::Invalid),
            "a nonce is bound to the client address"
        );
        let mut c2 = creds(&d, IP, Algorithm::Md5);
        c2.qop = None;
        assert_eq!(
            d.verify(&c2, "GET", "/0004f2abcdef.cfg", IP, "s3cret-password"),
            Err(Refusal::Invalid)
        );
    }

    #[test]
    fn a_replayed_response_is_refused_and_nc_must_grow() {
        let d = Digest::new();
        let mut c = creds(&d, IP, Algorithm::Md5);
        assert!(d
            .verify(&c, "GET", "/0004f2abcdef.cfg", IP, "s3cret-password")
            .is_ok());
        assert_eq!(
            d.verify(&c, "GET", "/0004f2abcdef.cfg", IP, "s3cret-password"),
            Err(Refusal::Invalid)
        );
        c.nc = Some("00000002".into());
        respond(&mut c, Algorithm::Md5, "s3cret-password", "GET");
        assert!(d
            .verify(&c, "GET", "/0004f2abcdef.cfg", IP, "s3cret-password")
            .is_ok());
    }

    #[test]
    fn forged_or_expired_nonces_are_refused() {
        let d = Digest::new();
        let mut c = creds(&d, IP, Algorithm::Md5);
        c.nonce = format!("{:x}.00-{}", unix_now(), "0".repeat(32));
        respond(&mut c, Algorithm::Md5, "s3cret-password", "GET");
        assert_eq!(
            d.verify(&c, "GET", "/0004f2abcdef.cfg", IP, "s3cret-password"),
            Err(Refusal::Invalid)
        );
        let old = unix_now() - NONCE_TTL.as_secs() - 5;
        let stamp = format!("{old:x}.01");
        c.nonce = format!("{stamp}-{}", d.mac_of(&stamp, IP));
        respond(&mut c, Algorithm::Md5, "s3cret-password", "GET");
        assert_eq!(
            d.verify(&c, "GET", "/0004f2abcdef.cfg", IP, "s3cret-password"),
            Err(Refusal::Stale)
        );
    }

    #[test]
    fn every_challenge_has_its_own_nonce() {
        let d = Digest::new();
        assert_ne!(d.nonce(IP), d.nonce(IP));
    }

    #[test]
    fn header_parsing() {
        let c = parse(r#"Digest username="0004f2abcdef", realm="deskprov", nonce="a-b", uri="/x.cfg", algorithm=MD5, qop=auth, nc=00000001, cnonce="q\"x", response="abc""#).unwrap();
        assert_eq!(c.username, "0004f2abcdef");
        assert_eq!(c.qop.as_deref(), Some("auth"));
        assert_eq!(c.cnonce.as_deref(), Some("q\"x"));
        assert_eq!(c.response, "abc");
        assert!(parse("Basic abc").is_none());
    }

    #[test]
    fn lockout_after_the_limit_within_a_minute() {
        let l = Lockout::new(3, Duration::from_secs(300));
        assert!(!l.fail(IP) && !l.fail(IP) && !l.fail(IP));
        assert!(l.locked(IP).is_none());
        assert!(l.fail(IP));
        assert!(l.locked(IP).unwrap() > 290);
        assert!(l.locked("192.0.2.9".parse().unwrap()).is_none());
    }
}
