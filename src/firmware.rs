//! Firmware images on disk, their downloads, and the roll-out's failure guard.
//!
//! Images are content-addressed: `<data_dir>/firmware/<sha256>`. An upload is streamed to a
//! temporary file in that folder (never held whole in memory) while its SHA-256 is computed,
//! checked against the expected digest if one was given, flushed to disk and renamed to its
//! digest; only then is its record committed (`Store::put_firmware_image`). A file no record
//! names any more is removed (a failed upload, a deleted version).
//!
//! Downloads are streamed from the file in chunks by a blocking reader; at most
//! `[firmware] max_downloads` run at once (a permit held until the last byte is sent), and all
//! of them together send at most `[firmware] max_bytes_per_s` (0: no limit): each chunk takes
//! its turn on one virtual clock, so the downloads share the rate and the CPU that encrypting
//! them costs stays bounded for configuration fetches.
//!
//! The guard: a phone offered its roll-out's image (its main file fetched while it is in the
//! roll-out) that still reports another version on a main-file fetch `upgrade_window_s` or more
//! later has failed. When `failure_threshold` phones of one roll-out have failed, it pauses.
//! These observations are in memory: after a restart the window starts again.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::domain::firmware::in_rollout;
use crate::domain::state::State;
use crate::domain::{Device, FirmwarePause, FirmwareTarget, GroupId, Mac};

/// Bytes per chunk read from an image.
const CHUNK: usize = 64 * 1024;

/// Why an upload was not stored.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadError {
    #[error("the image is larger than [firmware] max_bytes ({0} bytes)")]
    TooLarge(u64),
    #[error("the image's SHA-256 is {actual}, not the expected {expected}")]
    Mismatch { expected: String, actual: String },
    #[error("the upload was interrupted: {0}")]
    Body(String),
    #[error("writing the image: {0}")]
    Io(#[from] std::io::Error),
}

/// A stored image's digest and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) sha256: String,
    pub(crate) size: u64,
}

/// One phone's standing in its roll-out.
#[derive(Clone, Debug)]
struct Track {
    group: GroupId,
    model: String,
    version: String,
    offered_at: Instant,
    failed: bool,
}

/// A roll-out to pause: too many of its phones failed.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PauseDue {
    pub(crate) group: GroupId,
    pub(crate) model: String,
    pub(crate) version: String,
    pub(crate) pause: FirmwarePause,
}

/// The shared send rate of all downloads: the time the next chunk may go.
struct Pace {
    bytes_per_s: u64,
    next: Mutex<Instant>,
}

impl Pace {
    /// Blocks (on a blocking-pool thread) until `n` more bytes may be sent.
    fn take(&self, n: usize) {
        let wait = self.reserve(n, Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }

    /// Books `n` bytes on the shared clock at `now`; returns how long to wait before sending.
    fn reserve(&self, n: usize, now: Instant) -> Duration {
        if self.bytes_per_s == 0 {
            return Duration::ZERO;
        }
        let cost = Duration::from_secs_f64(n as f64 / self.bytes_per_s as f64);
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        // An idle spell earns no burst: the clock never runs behind `now`.
        let start = (*next).max(now);
        *next = start + cost;
        start - now
    }
}

pub(crate) struct Firmware {
    dir: PathBuf,
    config: crate::config::Firmware,
    downloads: Arc<Semaphore>,
    pace: Arc<Pace>,
    tracks: Mutex<HashMap<Mac, Track>>,
}

impl Firmware {
    pub(crate) fn new(data_dir: &Path, config: &crate::config::Firmware) -> Firmware {
        Firmware {
            dir: data_dir.join("firmware"),
            config: config.clone(),
            downloads: Arc::new(Semaphore::new(config.max_downloads)),
            pace: Arc::new(Pace {
                bytes_per_s: config.max_bytes_per_s,
                next: Mutex::new(Instant::now()),
            }),
            tracks: Mutex::new(HashMap::new()),
        }
    }

    /// The file of an image.
    pub(crate) fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(sha256)
    }

    /// Streams `body` into the image store; `expected`: a lowercase hex SHA-256 it must have.
    pub(crate) async fn receive(
        &self,
        body: Body,
        expected: Option<String>,
    ) -> Result<Stored, UploadError> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self
            .dir
            .join(format!(".upload-{}", crate::secrets::hex_token::<8>()));
        let file = std::fs::File::create(&tmp)?;
        let (tx, mut rx) = mpsc::channel::<Bytes>(8);
        // The writer hashes and writes on the blocking pool; the async side only reads frames.
        let writer = tokio::task::spawn_blocking(move || -> std::io::Result<(String, u64)> {
            let mut file = std::io::BufWriter::with_capacity(CHUNK, file);
            let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
            let mut size = 0u64;
            while let Some(chunk) = rx.blocking_recv() {
                hash.update(&chunk);
                file.write_all(&chunk)?;
                size += chunk.len() as u64;
            }
            let file = file.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            Ok((hex::encode(hash.finish()), size))
        });
        let read = self.read_body(body, tx).await;
        let written = writer
            .await
            .map_err(|e| std::io::Error::other(e.to_string()));
        let result = match (read, written) {
            (Err(e), _) => Err(e),
            (Ok(()), Err(e)) | (Ok(()), Ok(Err(e))) => Err(UploadError::Io(e)),
            (Ok(()), Ok(Ok((sha256, size)))) => match expected {
                Some(x) if x != sha256 => Err(UploadError::Mismatch {
                    expected: x,
                    actual: sha256,
                }),
                _ => Ok(Stored { sha256, size }),
            },
        };
        match result {
            Ok(s) => {
                std::fs::rename(&tmp, self.path(&s.sha256))?;
                std::fs::File::open(&self.dir)?.sync_all()?;
                Ok(s)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Feeds the body's frames to the writer, up to `max_bytes`.
    async fn read_body(&self, body: Body, tx: mpsc::Sender<Bytes>) -> Result<(), UploadError> {
        use futures_core::Stream;
        let mut stream = body.into_data_stream();
        let mut total = 0u64;
        loop {
            let next = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await;
            match next {
                None => return Ok(()),
                Some(Err(e)) => return Err(UploadError::Body(e.to_string())),
                Some(Ok(chunk)) => {
                    total += chunk.len() as u64;
                    if total > self.config.max_bytes {
                        return Err(UploadError::TooLarge(self.config.max_bytes));
                    }
                    if tx.send(chunk).await.is_err() {
                        // The writer stopped: its error is reported by the caller.
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Removes an image file when no record of `state` names its digest.
    pub(crate) fn remove_unreferenced(&self, state: &State, sha256: &str) {
        if !state.firmware.values().any(|f| f.sha256 == sha256) {
            if let Err(e) = std::fs::remove_file(self.path(sha256)) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(sha256, error = %e, "removing a firmware image failed");
                }
            }
        }
    }

    /// A download slot, or `None` when `max_downloads` are running.
    pub(crate) fn try_download(&self) -> Option<OwnedSemaphorePermit> {
        self.downloads.clone().try_acquire_owned().ok()
    }

    pub(crate) fn retry_after_s(&self) -> u64 {
        self.config.retry_after_s
    }

    /// Streams `len` bytes of the image from `start`, holding `permit` until the end.
    pub(crate) fn stream(
        &self,
        sha256: &str,
        start: u64,
        len: u64,
        permit: OwnedSemaphorePermit,
    ) -> std::io::Result<Body> {
        let mut file = std::fs::File::open(self.path(sha256))?;
        file.seek(SeekFrom::Start(start))?;
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(4);
        let pace = self.pace.clone();
        tokio::task::spawn_blocking(move || {
            let mut left = len;
            while left > 0 {
                let mut buf = vec![0u8; CHUNK.min(usize::try_from(left).unwrap_or(CHUNK))];
                let n = match file.read(&mut buf) {
                    Ok(0) => {
                        let _ = tx.blocking_send(Err(std::io::ErrorKind::UnexpectedEof.into()));
                        return;
                    }
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                };
                buf.truncate(n);
                left -= n as u64;
                pace.take(n);
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return; // the client went away
                }
            }
        });
        Ok(Body::from_stream(Chunks {
            rx,
            _permit: permit,
        }))
    }

    /// Notes a main-file fetch of `d` reporting `running`; returns the roll-out to pause when
    /// this fetch makes its failures reach the threshold.
    pub(crate) fn observe(
        &self,
        state: &State,
        d: &Device,
        running: Option<&str>,
    ) -> Option<PauseDue> {
        let mut tracks = self.tracks.lock().unwrap_or_else(|p| p.into_inner());
        let target = state.firmware_target_of(d);
        let Some(t) = target.filter(|t| in_rollout(t, &d.mac)) else {
            // Out of the roll-out: a failure stays on record while the roll-out is paused.
            if target.is_none_or(|t| t.paused.is_none()) {
                tracks.remove(&d.mac);
            }
            return None;
        };
        if running == Some(t.version.as_str()) {
            tracks.remove(&d.mac);
            return None;
        }
        let now = Instant::now();
        let window = Duration::from_secs(self.config.upgrade_window_s);
        match tracks.get_mut(&d.mac) {
            Some(tr) if tr.version == t.version && tr.group == t.group => {
                if !tr.failed && now.duration_since(tr.offered_at) >= window {
                    tr.failed = true;
                    tracing::warn!(mac = %d.mac, model = %t.model, version = %t.version, running = running.unwrap_or("unknown"), "a phone came back on another version after the upgrade window");
                } else {
                    return None;
                }
            }
            _ => {
                tracks.insert(
                    d.mac.clone(),
                    Track {
                        group: t.group.clone(),
                        model: t.model.clone(),
                        version: t.version.clone(),
                        offered_at: now,
                        failed: false,
                    },
                );
                return None;
            }
        }
        let failed = failed_of(&tracks, t);
        (failed.len() >= self.config.failure_threshold).then(|| PauseDue {
            group: t.group.clone(),
            model: t.model.clone(),
            version: t.version.clone(),
            pause: FirmwarePause {
                at: crate::store::now_rfc3339(),
                reason: format!(
                    "{} phones came back on another version than {} after the upgrade window ({} s)",
                    failed.len(),
                    t.version,
                    self.config.upgrade_window_s
                ),
                failed,
            },
        })
    }

    /// Whether `mac` failed to upgrade to `version`.
    pub(crate) fn failed(&self, mac: &Mac, version: &str) -> bool {
        let tracks = self.tracks.lock().unwrap_or_else(|p| p.into_inner());
        tracks
            .get(mac)
            .is_some_and(|t| t.failed && t.version == version)
    }

    /// Forgets the failures of a roll-out (it resumed: its phones get a new window).
    pub(crate) fn forget(&self, g: &GroupId, model: &str) {
        let mut tracks = self.tracks.lock().unwrap_or_else(|p| p.into_inner());
        tracks.retain(|_, t| !(&t.group == g && t.model == model));
    }
}

/// The failed phones of a roll-out, in MAC order.
fn failed_of(tracks: &HashMap<Mac, Track>, t: &FirmwareTarget) -> Vec<Mac> {
    let mut v: Vec<Mac> = tracks
        .iter()
        .filter(|(_, x)| {
            x.failed && x.group == t.group && x.model == t.model && x.version == t.version
        })
        .map(|(m, _)| m.clone())
        .collect();
    v.sort();
    v
}

/// The chunks of one download, with its slot.
struct Chunks {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    _permit: OwnedSemaphorePermit,
}

impl futures_core::Stream for Chunks {
    type Item = std::io::Result<Bytes>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// A single `Range: bytes=...` of a `size`-byte image: `Ok(None)` for no (or an ignored) range,
/// `Ok(Some((start, end_inclusive)))`, `Err(())` when unsatisfiable (416).
pub(crate) fn parse_range(header: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(h) = header else { return Ok(None) };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Ok(None); // another unit: ignored (RFC 9110 §14.2)
    };
    if spec.contains(',') {
        return Ok(None); // several ranges: served whole rather than as multipart
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        // The last `b` bytes.
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 || size == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let start: u64 = a.parse().map_err(|_| ())?;
        let end = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse::<u64>()
                .map_err(|_| ())?
                .min(size.saturating_sub(1))
        };
        if start >= size || end < start {
            return Err(());
        }
        (start, end)
    };
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downloads_share_one_send_rate() {
        let t0 = Instant::now();
        let pace = Pace {
            bytes_per_s: 1000,
            next: Mutex::new(t0),
        };
        // Two downloads' chunks at the same moment: the second waits for the first's second.
        assert_eq!(pace.reserve(500, t0), Duration::ZERO);
        assert_eq!(pace.reserve(1000, t0), Duration::from_millis(500));
        assert_eq!(
            pace.reserve(1, t0 + Duration::from_millis(600)),
            Duration::from_millis(900)
        );
        // After an idle spell nothing is owed and no burst is saved up.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(pace.reserve(1000, later), Duration::ZERO);
        assert_eq!(pace.reserve(1000, later), Duration::from_secs(1));
        let free = Pace {
            bytes_per_s: 0,
            next: Mutex::new(t0),
        };
        assert_eq!(free.reserve(1 << 30, t0), Duration::ZERO);
    }

    #[test]
    fn ranges_are_single_byte_ranges_within_the_image() {
        assert_eq!(parse_range(None, 100), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Ok(Some((0, 9))));
        assert_eq!(parse_range(Some("bytes=50-"), 100), Ok(Some((50, 99))));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Ok(Some((90, 99))));
        assert_eq!(parse_range(Some("bytes=90-500"), 100), Ok(Some((90, 99))));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Err(()));
        assert_eq!(parse_range(Some("bytes=9-3"), 100), Err(()));
        assert_eq!(parse_range(Some("bytes=x-3"), 100), Err(()));
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Ok(None));
        assert_eq!(parse_range(Some("items=0-1"), 100), Ok(None));
    }
}
