//! Passwords at rest: sealed with an AEAD key kept in its own file, beside the store.
//!
//! The store hands a backend only sealed passwords (SIP, device and shared-line passwords, and
//! the identity a check-in remembers): `dpenc1:<key id>:<hex of nonce ‖ ciphertext ‖ tag>`,
//! ChaCha20-Poly1305 with a random 96-bit nonce per value. The key file (`<data_dir>/store.key`,
//! 0600, created at first start) holds the current key first and, only while a key roll is
//! under way, the previous one.
//!
//! A storage engine keeps superseded values in its files for a while (sled's log is cleaned
//! lazily), so replacing a password does not erase the old ciphertext. What makes it
//! unrecoverable is the key roll: after a password was replaced or deleted, every live password
//! is sealed again under a new key and the old key is then removed from the key file, so what
//! is left of the old value can no longer be opened. Order (each step durable): the key file
//! gets the new key in front of the old one; every record is rewritten; the key file drops the
//! old key. A crash anywhere leaves a state the next open completes.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use super::StoreError;

const PREFIX: &str = "dpenc1:";

struct Key {
    id: u32,
    raw: [u8; 32],
    aead: LessSafeKey,
}

impl Key {
    fn new(id: u32, raw: [u8; 32]) -> Key {
        let aead = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &raw).expect("32 bytes"));
        Key { id, raw, aead }
    }
}

struct Keys {
    current: Key,
    /// Still accepted for opening while a key roll is under way.
    previous: Option<Key>,
}

/// Seals and opens passwords; owns the key file.
pub(crate) struct Sealer {
    path: PathBuf,
    keys: RwLock<Keys>,
    rng: SystemRandom,
}

fn key_error(path: &Path, what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("key file {}: {what}", path.display()))
}

impl Sealer {
    /// Loads the key file at `path`, creating it (0600) with a fresh key if it does not exist.
    pub(crate) fn open(path: &Path) -> Result<Sealer, StoreError> {
        let rng = SystemRandom::new();
        let keys = match std::fs::read_to_string(path) {
            Ok(text) => parse_keys(path, &text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let keys = Keys {
                    current: Key::new(1, random_key(&rng)?),
                    previous: None,
                };
                write_keys(path, &keys)?;
                keys
            }
            Err(e) => return Err(key_error(path, e)),
        };
        Ok(Sealer {
            path: path.to_path_buf(),
            keys: RwLock::new(keys),
            rng,
        })
    }

    /// The key file (a backup copies it with the sealed records).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a key roll was interrupted (the key file still holds the previous key).
    pub(crate) fn rolling(&self) -> bool {
        self.read().previous.is_some()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Keys> {
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Seals `plain` under the current key.
    pub(crate) fn seal(&self, plain: &str) -> String {
        let keys = self.read();
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).expect("the system RNG works");
        let mut data = plain.as_bytes().to_vec();
        keys.current
            .aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(keys.current.id.to_be_bytes()),
                &mut data,
            )
            .expect("sealing cannot fail for short values");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        format!("{PREFIX}{:08x}:{}", keys.current.id, hex::encode(out))
    }

    /// Opens a sealed value; a value without the prefix is a password stored before sealing
    /// existed and is returned as it is (`Ok((plain, false))`).
    pub(crate) fn open_value(&self, stored: &str) -> Result<(String, bool), StoreError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok((stored.to_string(), false));
        };
        let bad = || StoreError::Corrupt("a sealed password does not open".into());
        let (id, body) = rest.split_once(':').ok_or_else(bad)?;
        let id = u32::from_str_radix(id, 16).map_err(|_| bad())?;
        let bytes = hex::decode(body).map_err(|_| bad())?;
        if bytes.len() < NONCE_LEN {
            return Err(bad());
        }
        let keys = self.read();
        let key = [Some(&keys.current), keys.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|k| k.id == id)
            .ok_or_else(bad)?;
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let mut data = sealed.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| bad())?;
        let plain = key
            .aead
            .open_in_place(nonce, Aad::from(id.to_be_bytes()), &mut data)
            .map_err(|_| bad())?;
        Ok((String::from_utf8(plain.to_vec()).map_err(|_| bad())?, true))
    }

    /// Step 1 of a key roll: a new current key, the old one kept for opening; durable.
    pub(crate) fn begin_roll(&self) -> Result<(), StoreError> {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        if keys.previous.is_some() {
            return Ok(()); // an interrupted roll: finish it with the key it began
        }
        let next = Key::new(keys.current.id + 1, random_key(&self.rng)?);
        let staged = Keys {
            current: next,
            previous: Some(Key::new(keys.current.id, keys.current.raw)),
        };
        write_keys(&self.path, &staged)?;
        *keys = staged;
        Ok(())
    }

    /// Last step of a key roll, once every live value is sealed under the current key: the
    /// previous key leaves the key file.
    pub(crate) fn finish_roll(&self) -> Result<(), StoreError> {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let done = Keys {
            current: Key::new(keys.current.id, keys.current.raw),
            previous: None,
        };
        write_keys(&self.path, &done)?;
        *keys = done;
        Ok(())
    }
}

fn random_key(rng: &SystemRandom) -> Result<[u8; 32], StoreError> {
    let mut raw = [0u8; 32];
    rng.fill(&mut raw)
        .map_err(|_| StoreError::Engine("the system RNG failed".into()))?;
    Ok(raw)
}

/// `<id hex> <key hex>` per line, the current key first.
fn parse_keys(path: &Path, text: &str) -> Result<Keys, StoreError> {
    let mut keys = text.lines().filter(|l| !l.trim().is_empty()).map(|l| {
        let (id, raw) = l
            .split_once(' ')
            .ok_or_else(|| key_error(path, "a line is not `<id> <key>`"))?;
        let id = u32::from_str_radix(id, 16).map_err(|_| key_error(path, "bad key id"))?;
        let raw: [u8; 32] = hex::decode(raw.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| key_error(path, "a key is not 32 bytes of hex"))?;
        Ok::<Key, StoreError>(Key::new(id, raw))
    });
    let current = keys.next().ok_or_else(|| key_error(path, "no key"))??;
    let previous = keys.next().transpose()?;
    Ok(Keys { current, previous })
}

/// Replaces the key file atomically and durably (temporary file, fsync, rename, fsync dir).
fn write_keys(path: &Path, keys: &Keys) -> Result<(), StoreError> {
    let mut text = String::new();
    for k in [Some(&keys.current), keys.previous.as_ref()]
        .into_iter()
        .flatten()
    {
        text.push_str(&format!("{:08x} {}\n", k.id, hex::encode(k.raw)));
    }
    let tmp = path.with_extension("key.tmp");
    let io = |e: std::io::Error| key_error(path, e);
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_and_hides_the_plain_text() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sealer::open(&dir.path().join("store.key")).unwrap();
        let sealed = s.seal("hunter2-secret");
        assert!(sealed.starts_with(PREFIX));
        assert!(!sealed.contains("hunter2"));
        assert_ne!(sealed, s.seal("hunter2-secret"), "a fresh nonce each time");
        assert_eq!(
            s.open_value(&sealed).unwrap(),
            ("hunter2-secret".into(), true)
        );
        assert_eq!(s.open_value("plain").unwrap(), ("plain".into(), false));
    }

    #[test]
    fn a_tampered_value_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sealer::open(&dir.path().join("store.key")).unwrap();
        let mut sealed = s.seal("x").into_bytes();
        let last = sealed.len() - 1;
        sealed[last] = if sealed[last] == b'0' { b'1' } else { b'0' };
        assert!(s.open_value(std::str::from_utf8(&sealed).unwrap()).is_err());
    }

    #[test]
    fn after_a_key_roll_old_values_no_longer_open_and_the_key_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.key");
        let s = Sealer::open(&path).unwrap();
        let old = s.seal("old-password");
        s.begin_roll().unwrap();
        assert!(s.rolling());
        assert!(s.open_value(&old).is_ok(), "still opens during the roll");
        let new = s.seal("new-password");
        s.finish_roll().unwrap();
        assert!(s.open_value(&old).is_err(), "the old key is gone");
        // A fresh open reads the same current key from the file.
        let again = Sealer::open(&path).unwrap();
        assert!(!again.rolling());
        assert_eq!(again.open_value(&new).unwrap().0, "new-password");
        assert!(again.open_value(&old).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
