//! Console sessions: in memory, opaque ids, absolute expiry, one CSRF token each.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

use crate::domain::GroupId;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "deskprov_session";
/// The sign-in form's CSRF cookie (double submit: there is no session yet).
pub(crate) const LOGIN_COOKIE: &str = "deskprov_login";
/// How long a session lasts from sign-in.
pub(crate) const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// At most this many live sessions; the oldest goes first.
const MAX_SESSIONS: usize = 10_000;

/// The bearer token a session acts with; never printed.
#[derive(Clone)]
pub(crate) struct TokenSecret(String);

impl TokenSecret {
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSecret(..)")
    }
}

/// A signed-in admin.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    pub(crate) token: TokenSecret,
    /// The token's name, shown in the header.
    pub(crate) name: String,
    /// A group token's group: the console shows only it.
    pub(crate) group: Option<GroupId>,
    pub(crate) csrf: String,
    expires: Instant,
}

#[derive(Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

/// 32 random bytes, hex.
pub(crate) fn random_id() -> String {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("system randomness");
    hex::encode(b)
}

impl Sessions {
    /// Starts a session; returns its id (the cookie value).
    pub(crate) fn create(&self, token: String, name: String, group: Option<GroupId>) -> String {
        let id = random_id();
        let s = Session {
            token: TokenSecret(token),
            name,
            group,
            csrf: random_id(),
            expires: Instant::now() + LIFETIME,
        };
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(id.clone(), s);
        id
    }

    /// The live session a request's cookie names.
    pub(crate) fn of(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let id = cookie(headers, COOKIE)?;
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&id) {
            Some(s) if s.expires > Instant::now() => Some((id, s.clone())),
            Some(_) => {
                map.remove(&id);
                None
            }
            None => None,
        }
    }

    pub(crate) fn remove(&self, id: &str) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(id);
    }
}

/// The value of cookie `name` in the request.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// `Set-Cookie` for a session id (empty id and zero age: deletes it).
pub(crate) fn set_cookie(name: &str, value: &str, max_age: u64) -> String {
    format!("{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict")
}

/// Compares two secrets in constant time.
pub(crate) fn same(a: &str, b: &str) -> bool {
    crate::secrets::ct_eq(a.as_bytes(), b.as_bytes())
}
