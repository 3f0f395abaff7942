//! HTTP Digest authentication (RFC 7616) for phones, and the failure lockout ([`Lockout`]).
//!
//! Nonces are stateless: `<timestamp hex>.<random hex>-<HMAC(key, timestamp.random | client ip)>`
//! (the random part makes every challenge's nonce unique), valid for
//! [`NONCE_TTL`]; the key is random per process. Each nonce's highest `nc` is remembered while
//! it is valid, so a replayed response (same or lower `nc`) is refused. `qop=auth` is required
//! (without it there is no `nc`, hence no replay protection). MD5 and SHA-256 are accepted;
//! comparisons are constant-time.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use md5::Digest as _;
use ring::hmac;

use crate::domain::{Cidr, Mac};

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

/// A digest in lowercase hex, kept on the stack (SHA-256 is 64 digits).
struct Hex {
    buf: [u8; 64],
    len: usize,
}

impl Hex {
    fn of(digest: &[u8]) -> Hex {
        let mut h = Hex {
            buf: [0; 64],
            len: digest.len() * 2,
        };
        hex::encode_to_slice(digest, &mut h.buf[..h.len]).expect("at most 32 bytes");
        h
    }
    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Algorithm {
    /// The hex digest of `parts` joined by ':', hashed as they are: a verification on a
    /// phone's hot path builds no string.
    fn hash_joined(self, parts: &[&[u8]]) -> Hex {
        let joined = parts
            .iter()
            .enumerate()
            .flat_map(|(i, p)| [if i == 0 { &b""[..] } else { b":" }, p]);
        match self {
            Algorithm::Md5 => {
                let mut h = md5::Md5::new();
                joined.for_each(|p| h.update(p));
                Hex::of(&h.finalize())
            }
            Algorithm::Sha256 => {
                let mut h = ring::digest::Context::new(&ring::digest::SHA256);
                joined.for_each(|p| h.update(p));
                Hex::of(h.finish().as_ref())
            }
        }
    }

    /// The hex digest of `s`, as a client computes it (the tests' phone).
    #[cfg(test)]
    fn hash(self, s: &str) -> String {
        match self {
            Algorithm::Md5 => hex::encode(md5::Md5::digest(s.as_bytes())),
            Algorithm::Sha256 => {
                hex::encode(ring::digest::digest(&ring::digest::SHA256, s.as_bytes()))
            }
        }
    }
}

/// The parameters of an `Authorization: Digest ...` header, borrowed from it (a value is only
/// copied when it has backslash escapes, which phones do not send).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Credentials<'h> {
    pub(crate) username: Cow<'h, str>,
    pub(crate) realm: Cow<'h, str>,
    pub(crate) nonce: Cow<'h, str>,
    pub(crate) uri: Cow<'h, str>,
    pub(crate) response: Cow<'h, str>,
    pub(crate) algorithm: Option<Cow<'h, str>>,
    pub(crate) qop: Option<Cow<'h, str>>,
    pub(crate) nc: Option<Cow<'h, str>>,
    pub(crate) cnonce: Option<Cow<'h, str>>,
}

/// A quoted string's value with its backslash escapes resolved, and the text after its closing
/// quote; `None` when it is not closed.
fn unescape(q: &str) -> Option<(String, &str)> {
    let mut v = String::new();
    let mut chars = q.char_indices();
    while let Some((i, ch)) = chars.next() {
        match ch {
            '\\' => {
                if let Some((_, n)) = chars.next() {
                    v.push(n);
                }
            }
            '"' => return Some((v, &q[i + 1..])),
            _ => v.push(ch),
        }
    }
    None
}

/// Parses `Digest k=v, k="v", ...`; `None` when it is not a digest header. It scans bytes
/// (every delimiter is ASCII, so each cut falls on a character boundary): a phone sends it
/// with every request.
pub(crate) fn parse(header: &str) -> Option<Credentials<'_>> {
    let rest = header.trim().strip_prefix("Digest")?.trim_start();
    let mut c = Credentials::default();
    let mut s = rest;
    while !s.is_empty() {
        let eq = s.bytes().position(|b| b == b'=')?;
        let k = s[..eq].trim();
        let after = s[eq + 1..].trim_start();
        let (v, remain): (Cow<'_, str>, &str) = if let Some(q) = after.strip_prefix('"') {
            match q.bytes().position(|b| b == b'"' || b == b'\\') {
                // No escapes (what phones send): the text up to the closing quote.
                Some(end) if q.as_bytes()[end] == b'"' => (q[..end].into(), &q[end + 1..]),
                _ => {
                    let (v, remain) = unescape(q)?;
                    (v.into(), remain)
                }
            }
        } else {
            let end = after.bytes().position(|b| b == b',').unwrap_or(after.len());
            (after[..end].trim().into(), &after[end..])
        };
        // Parameter names are case-insensitive (RFC 7616 §3.4).
        let mut name = [0u8; 9];
        let known = k.len() <= name.len();
        if known {
            name[..k.len()].copy_from_slice(k.as_bytes());
            name.make_ascii_lowercase();
        }
        match &name[..if known { k.len() } else { 0 }] {
            b"username" => c.username = v,
            b"realm" => c.realm = v,
            b"nonce" => c.nonce = v,
            b"uri" => c.uri = v,
            b"response" => c.response = v,
            b"algorithm" => c.algorithm = Some(v),
            b"qop" => c.qop = Some(v),
            b"nc" => c.nc = Some(v),
            b"cnonce" => c.cnonce = Some(v),
            _ => {}
        }
        let skip = remain
            .bytes()
            .position(|b| !(b == b',' || b.is_ascii_whitespace()))
            .unwrap_or(remain.len());
        s = &remain[skip..];
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
    /// Keyed by nonces this server issued and a phone answered correctly (no key an attacker
    /// chooses), so a fast hasher with a per-process seed will do.
    seen: Mutex<HashMap<String, Answered, foldhash::fast::RandomState>>,
}

/// A nonce answered correctly: its highest `nc`, when it was first answered, and from where
/// (the address its HMAC binds it to).
struct Answered {
    nc: u64,
    at: Instant,
    ip: IpAddr,
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
            seen: Mutex::new(HashMap::default()),
        }
    }

    /// A nonce's tag: the first 16 bytes of HMAC-SHA256(`stamp|ip`), in hex.
    fn mac_of(&self, stamp: &str, ip: IpAddr) -> Hex {
        let mut h = hmac::Context::with_key(&self.key);
        h.update(stamp.as_bytes());
        h.update(b"|");
        h.update(crate::store::IpText::new(ip).text().as_bytes());
        Hex::of(&h.sign().as_ref()[..16])
    }

    pub(crate) fn nonce(&self, ip: IpAddr) -> String {
        let stamp = format!("{:x}.{}", unix_now(), crate::secrets::hex_token::<8>());
        let tag = self.mac_of(&stamp, ip);
        format!("{stamp}-{}", String::from_utf8_lossy(tag.as_bytes()))
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
        let alg = match c.algorithm.as_deref() {
            None => Algorithm::Md5,
            Some(a) if a.eq_ignore_ascii_case("MD5") => Algorithm::Md5,
            Some(a) if a.eq_ignore_ascii_case("SHA-256") => Algorithm::Sha256,
            _ => return Err(Refusal::Invalid),
        };
        if c.realm != REALM || c.uri != uri || c.qop.as_deref() != Some("auth") {
            return Err(Refusal::Invalid);
        }
        let (Some(nc), Some(cnonce)) = (c.nc.as_deref(), c.cnonce.as_deref()) else {
            return Err(Refusal::Invalid);
        };
        let nc_value = u64::from_str_radix(nc, 16).map_err(|_| Refusal::Invalid)?;
        // The nonce's stamp (its issue time and random part) and its tag (checked below).
        let (stamp, tag) = c.nonce.split_once('-').ok_or(Refusal::Invalid)?;
        let ts_hex = stamp.split('.').next().unwrap_or_default();
        let ts = u64::from_str_radix(ts_hex, 16).map_err(|_| Refusal::Invalid)?;
        let ha1 = alg.hash_joined(&[c.username.as_bytes(), REALM.as_bytes(), password.as_bytes()]);
        let ha2 = alg.hash_joined(&[method.as_bytes(), c.uri.as_bytes()]);
        let expected = alg.hash_joined(&[
            ha1.as_bytes(),
            c.nonce.as_bytes(),
            nc.as_bytes(),
            cnonce.as_bytes(),
            b"auth",
            ha2.as_bytes(),
        ]);
        // The response in either case of hex digits, compared in constant time.
        let response = c.response.as_bytes();
        if response.len() != expected.len {
            return Err(Refusal::Invalid);
        }
        let mut lower = [0u8; 64];
        for (l, r) in lower.iter_mut().zip(response) {
            *l = r.to_ascii_lowercase();
        }
        if !crate::secrets::ct_eq(expected.as_bytes(), &lower[..response.len()]) {
            return Err(Refusal::Invalid);
        }
        let stale = || unix_now().saturating_sub(ts) > NONCE_TTL.as_secs();
        // A nonce already answered from this address had its HMAC checked then: a phone
        // reusing its nonce on a keep-alive connection costs one lookup and no HMAC.
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = seen.get_mut(&*c.nonce).filter(|n| n.ip == ip) {
            if stale() {
                return Err(Refusal::Stale);
            }
            // Replay: nc must grow for each use of a nonce.
            if nc_value <= n.nc {
                return Err(Refusal::Invalid);
            }
            n.nc = nc_value;
            return Ok(());
        }
        drop(seen);
        // The nonce must be ours (HMAC, bound to the address) before its age means anything.
        if !crate::secrets::ct_eq(tag.as_bytes(), self.mac_of(stamp, ip).as_bytes()) {
            return Err(Refusal::Invalid);
        }
        if stale() {
            return Err(Refusal::Stale);
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_TRACKED {
            seen.retain(|_, n| n.at.elapsed() < NONCE_TTL);
        }
        match seen.get_mut(&*c.nonce) {
            Some(n) if nc_value <= n.nc => Err(Refusal::Invalid),
            Some(n) => {
                n.nc = nc_value;
                Ok(())
            }
            None => {
                let first = Answered {
                    nc: nc_value,
                    at: Instant::now(),
                    ip,
                };
                seen.insert(c.nonce.to_string(), first);
                Ok(())
            }
        }
    }
}

/// The window failures are counted in.
const WINDOW: Duration = Duration::from_secs(60);
/// Most counters kept per map; past it, finished windows are forgotten first.
const MAX_COUNTERS: usize = 100_000;

/// One counter: when its window started, failures in it, locked until.
#[derive(Clone, Copy, Debug)]
struct Window {
    start: Instant,
    failures: u32,
    until: Option<Instant>,
}

impl Window {
    fn new(now: Instant) -> Window {
        Window {
            start: now,
            failures: 0,
            until: None,
        }
    }

    fn left(&self, now: Instant) -> Option<u64> {
        let until = self.until.filter(|u| *u > now)?;
        Some((until - now).as_secs().max(1))
    }

    fn live(&self, now: Instant) -> bool {
        now - self.start < WINDOW || self.until.is_some_and(|u| u > now)
    }

    /// Counts one failure (a new window when the last one ended); true when it reaches
    /// `limit` and so starts a lockout.
    fn fail(&mut self, now: Instant, limit: u32, lockout: Duration) -> bool {
        if now - self.start >= WINDOW {
            *self = Window::new(now);
        }
        self.failures += 1;
        if self.failures >= limit && self.until.is_none_or(|u| u <= now) {
            self.until = Some(now + lockout);
            return true;
        }
        false
    }
}

/// Keeps `map` bounded: drops finished windows, then (still full) every unlocked one.
fn prune<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Window>, now: Instant) {
    if map.len() < MAX_COUNTERS {
        return;
    }
    map.retain(|_, w| w.live(now));
    if map.len() >= MAX_COUNTERS {
        map.retain(|_, w| w.until.is_some_and(|u| u > now));
    }
}

/// What a failure started.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Locked {
    /// Nothing: under both limits.
    No,
    /// This (address, MAC) pair: the MAC is locked out from that address.
    Pair,
    /// The whole address.
    Address,
}

/// Counts authentication failures so that guessing is bounded without one phone's mistake
/// shutting out its neighbours behind the same NAT address:
/// - per (address, MAC): `limit` failures within a minute are answered as usual; from then on
///   that MAC is locked out from that address for `lockout` (every address, exempt or not);
/// - per address: `macs_limit` distinct MACs failing within a minute (a failure naming no MAC
///   counts as one more) lock the whole address out, unless it is in `exempt`.
///
/// Provisioned and unknown MACs are counted alike: a difference would make the lockout
/// itself the existence oracle that the identical 401s avoid.
pub(crate) struct Lockout {
    limit: u32,
    macs_limit: u32,
    lockout: Duration,
    exempt: Vec<Cidr>,
    state: Mutex<Counters>,
}

#[derive(Default)]
struct Counters {
    pairs: HashMap<(IpAddr, Mac), Window>,
    addresses: HashMap<IpAddr, Window>,
}

impl Lockout {
    pub(crate) fn new(
        limit: u32,
        macs_limit: u32,
        lockout: Duration,
        exempt: Vec<Cidr>,
    ) -> Lockout {
        Lockout {
            limit,
            macs_limit,
            lockout,
            exempt,
            state: Mutex::new(Counters::default()),
        }
    }

    fn exempt(&self, ip: IpAddr) -> bool {
        self.exempt.iter().any(|c| c.contains(ip))
    }

    /// Seconds left if `ip` (asking for `mac`, when the request names one) is locked out.
    pub(crate) fn locked(&self, ip: IpAddr, mac: Option<&Mac>) -> Option<u64> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let pair = mac.and_then(|m| s.pairs.get(&(ip, m.clone()))?.left(now));
        let address = s.addresses.get(&ip).and_then(|w| w.left(now));
        pair.max(address)
    }

    /// Records a failure from `ip` for `mac` (when the request names one); says which
    /// lockout, if any, it starts.
    pub(crate) fn fail(&self, ip: IpAddr, mac: Option<&Mac>) -> Locked {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let s = &mut *guard;
        let now = Instant::now();
        prune(&mut s.pairs, now);
        prune(&mut s.addresses, now);
        let mut locked = Locked::No;
        // A MAC counts towards its address once per window: its first failure in it.
        let new_mac = match mac {
            Some(m) => {
                let w = s
                    .pairs
                    .entry((ip, m.clone()))
                    .or_insert_with(|| Window::new(now));
                let first = w.failures == 0 || now - w.start >= WINDOW;
                if w.fail(now, self.limit, self.lockout) {
                    locked = Locked::Pair;
                }
                first
            }
            None => true,
        };
        if new_mac && !self.exempt(ip) {
            let w = s.addresses.entry(ip).or_insert_with(|| Window::new(now));
            if w.fail(now, self.macs_limit, self.lockout) {
                locked = Locked::Address;
            }
        }
        locked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn respond(c: &mut Credentials, alg: Algorithm, password: &str, method: &str) {
        let ha1 = alg.hash(&format!("{}:{}:{password}", c.username, c.realm));
        let ha2 = alg.hash(&format!("{method}:{}", c.uri));
        c.response = alg
            .hash(&format!(
                "{ha1}:{}:{}:{}:auth:{ha2}",
                c.nonce,
                c.nc.as_deref().unwrap(),
                c.cnonce.as_deref().unwrap()
            ))
            .into();
    }

    fn creds(d: &Digest, ip: IpAddr, alg: Algorithm) -> Credentials<'static> {
        let mut c = Credentials {
            username: "0004f2abcdef".into(),
            realm: REALM.into(),
            nonce: d.nonce(ip).into(),
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

    /// Hex digits and the algorithm's name are accepted in either case (some phones send
    /// `algorithm=md5` or an uppercase response); a response of the wrong length is refused.
    #[test]
    fn the_response_and_algorithm_are_compared_without_regard_to_case() {
        let d = Digest::new();
        for alg in [Algorithm::Md5, Algorithm::Sha256] {
            let mut c = creds(&d, IP, alg);
            c.response = c.response.to_ascii_uppercase().into();
            c.algorithm = c.algorithm.map(|a| a.to_ascii_lowercase().into());
            assert_eq!(
                d.verify(&c, "GET", "/0004f2abcdef.cfg", IP, "s3cret-password"),
                Ok(()),
                "{alg:?}"
            );
            let mut short = creds(&d, IP, alg);
            short.response.to_mut().pop();
            assert_eq!(
                d.verify(&short, "GET", "/0004f2abcdef.cfg", IP, "s3cret-password"),
                Err(Refusal::Invalid)
            );
        }
        let mut c = creds(&d, IP, Algorithm::Md5);
        c.algorithm = Some("SHA-512".into());
        assert_eq!(
            d.verify(&c, "GET", "/0004f2abcdef.cfg", IP, "s3cret-password"),
            Err(Refusal::Invalid)
        );
    }

    /// A nonce is bound to the client's address, IPv6 at its longest included.
    #[test]
    fn a_nonce_issued_to_an_ipv6_client_verifies_only_for_it() {
        let d = Digest::new();
        let v6: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap();
        let c = creds(&d, v6, Algorithm::Sha256);
        assert_eq!(
            d.verify(&c, "GET", "/0004f2abcdef.cfg", v6, "s3cret-password"),
            Ok(())
        );
        assert_eq!(
            d.verify(&c, "GET", "/0004f2abcdef.cfg", IP, "s3cret-password"),
            Err(Refusal::Invalid)
        );
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
    fn an_answered_nonce_stays_bound_to_its_address_and_password() {
        // Its HMAC is checked once; the next uses are still refused from another address or
        // with a wrong response.
        let d = Digest::new();
        let mut c = creds(&d, IP, Algorithm::Md5);
        assert_eq!(
            d.verify(&c, "GET", "/0004f2abcdef.cfg", IP, "s3cret-password"),
            Ok(())
        );
        c.nc = Some("00000002".into());
        respond(&mut c, Algorithm::Md5, "s3cret-password", "GET");
        let other_ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            d.verify(&c, "GET", "/0004f2abcdef.cfg", other_ip, "s3cret-password"),
            Err(Refusal::Invalid)
        );
        assert_eq!(
            d.verify(&c, "GET", "/0004f2abcdef.cfg", IP, "another-password"),
            Err(Refusal::Invalid)
        );
        assert_eq!(
            d.verify(&c, "GET", "/0004f2abcdef.cfg", IP, "s3cret-password"),
            Ok(())
        );
    }

    #[test]
    fn forged_or_expired_nonces_are_refused() {
        let d = Digest::new();
        let mut c = creds(&d, IP, Algorithm::Md5);
        c.nonce = format!("{:x}.00-{}", unix_now(), "0".repeat(32)).into();
        respond(&mut c, Algorithm::Md5, "s3cret-password", "GET");
        assert_eq!(
            d.verify(&c, "GET", "/0004f2abcdef.cfg", IP, "s3cret-password"),
            Err(Refusal::Invalid)
        );
        let old = unix_now() - NONCE_TTL.as_secs() - 5;
        let stamp = format!("{old:x}.01");
        c.nonce = format!(
            "{stamp}-{}",
            String::from_utf8_lossy(d.mac_of(&stamp, IP).as_bytes())
        )
        .into();
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
        // Names in any case; an unknown or overlong name is skipped; an empty quoted value.
        let c = parse(
            r#"Digest UserName="a", URI="/y.cfg", Realm="", unknown-parameter="x\y", Response=ABC"#,
        )
        .unwrap();
        assert_eq!(
            (
                c.username.as_ref(),
                c.uri.as_ref(),
                c.realm.as_ref(),
                c.response.as_ref()
            ),
            ("a", "/y.cfg", "", "ABC")
        );
        assert!(
            parse(r#"Digest username="unclosed"#).is_none(),
            "an unclosed quote"
        );
        assert!(
            parse(r#"Digest username="a"b"#).is_none(),
            "closed only by an escaped quote"
        );
    }

    fn mac(s: &str) -> Mac {
        Mac::parse(s).unwrap()
    }

    const LONG: Duration = Duration::from_secs(300);

    #[test]
    fn exactly_the_limit_of_failures_then_the_pair_is_locked() {
        let l = Lockout::new(3, 10, LONG, vec![]);
        let (a, b) = (mac("0004f2000001"), mac("0004f2000002"));
        assert_eq!(l.fail(IP, Some(&a)), Locked::No);
        assert_eq!(l.fail(IP, Some(&a)), Locked::No);
        assert!(l.locked(IP, Some(&a)).is_none());
        assert_eq!(l.fail(IP, Some(&a)), Locked::Pair);
        assert!(l.locked(IP, Some(&a)).unwrap() > 290);
        assert!(
            l.locked(IP, Some(&b)).is_none(),
            "another MAC, same address"
        );
        assert!(l.locked(IP, None).is_none());
        assert!(l.locked("192.0.2.9".parse().unwrap(), Some(&a)).is_none());
    }

    #[test]
    fn distinct_failing_macs_lock_the_address_unless_it_is_exempt() {
        let other: IpAddr = "203.0.113.7".parse().unwrap();
        let exempt = vec![Cidr::parse("203.0.113.0/24").unwrap()];
        let l = Lockout::new(20, 3, LONG, exempt);
        for ip in [IP, other] {
            for i in 0..3 {
                let m = mac(&format!("0004f20000{i:02}"));
                // Repeats of one MAC count once towards the address.
                let _ = l.fail(ip, Some(&m));
                let _ = l.fail(ip, Some(&m));
            }
        }
        assert!(l.locked(IP, Some(&mac("0004f2ffffff"))).is_some());
        assert!(l.locked(IP, None).is_some());
        assert!(l.locked(other, Some(&mac("0004f2ffffff"))).is_none());
        let l = Lockout::new(20, 2, LONG, vec![]);
        assert_eq!(l.fail(IP, None), Locked::No);
        assert_eq!(l.fail(IP, None), Locked::Address, "no MAC: each counts");
    }
}
