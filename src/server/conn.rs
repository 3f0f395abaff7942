//! Bounds on connections (`[limits]`): how many may be open, and how long one may sit without
//! making progress.
//!
//! A [`Gate`] counts the open connections of a listener (and, on the phone listeners, of each
//! address); over a cap a connection is closed at once, before its TLS handshake. Each admitted
//! connection's bytes pass through [`Tracked`], which records into its [`Activity`] when a request
//! head starts and when the last request ended; [`bounded`] closes the connection when the head
//! is not complete within the header timeout, or when no request has been in flight for the idle
//! timeout. Request bodies are bounded where they are read (`body_timeout_s`).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Open connections of one listener (or of the phone listeners together).
pub(crate) struct Gate {
    name: &'static str,
    max: usize,
    per_ip: Option<usize>,
    open: AtomicUsize,
    /// Open connections per address; only kept when there is a per-address cap. The lock is
    /// held for one map update, never across I/O.
    by_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Connections refused since the gate was made, and how many of them were logged.
    refused: AtomicU64,
    logged: AtomicU64,
    /// Milliseconds since `born` of the last "over the cap" log line.
    last_log_ms: AtomicU64,
    born: Instant,
}

/// An admitted connection; dropping it frees its place.
pub(crate) struct Permit {
    gate: Arc<Gate>,
    ip: IpAddr,
}

impl Gate {
    pub(crate) fn new(name: &'static str, max: usize, per_ip: Option<usize>) -> Arc<Gate> {
        Arc::new(Gate {
            name,
            max,
            per_ip,
            open: AtomicUsize::new(0),
            by_ip: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
            logged: AtomicU64::new(0),
            last_log_ms: AtomicU64::new(0),
            born: Instant::now(),
        })
    }

    /// A place for a connection from `ip`, or `None` (counted, and logged at most once a
    /// second) when the listener or the address is at its cap.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Permit> {
        let admitted = self.try_admit(ip);
        if admitted.is_none() {
            self.refused.fetch_add(1, Ordering::Relaxed);
            if let Some(n) = self.should_log() {
                tracing::warn!(
                    listener = self.name,
                    refused = n,
                    open = self.open.load(Ordering::Relaxed),
                    "connections over the cap ([limits]) closed"
                );
            }
        }
        admitted
    }

    fn try_admit(self: &Arc<Self>, ip: IpAddr) -> Option<Permit> {
        if self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_err()
        {
            return None;
        }
        if let Some(cap) = self.per_ip {
            let mut by_ip = self.by_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = by_ip.entry(ip).or_insert(0);
            if *n >= cap {
                drop(by_ip);
                self.open.fetch_sub(1, Ordering::AcqRel);
                return None;
            }
            *n += 1;
        }
        Some(Permit {
            gate: self.clone(),
            ip,
        })
    }

    /// The number of refusals not yet logged, when a second has passed since the last log line.
    fn should_log(&self) -> Option<u64> {
        let now = self.born.elapsed().as_millis() as u64 + 1000;
        let last = self.last_log_ms.load(Ordering::Relaxed);
        if last != 0 && now < last + 1000 {
            return None;
        }
        self.last_log_ms
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
            .ok()?;
        let refused = self.refused.load(Ordering::Relaxed);
        Some(refused - self.logged.swap(refused, Ordering::AcqRel))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.gate.per_ip.is_some() {
            let mut by_ip = self.gate.by_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = by_ip.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    by_ip.remove(&self.ip);
                }
            }
        }
        self.gate.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The header and idle timeouts of a listener.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    pub(crate) header: Duration,
    pub(crate) idle: Duration,
}

const NONE: u64 = u64::MAX;

/// What one connection is doing, as far as its timeouts care.
pub(crate) struct Activity {
    start: Instant,
    /// Requests handed to the service and not yet answered.
    in_flight: AtomicU32,
    /// Milliseconds since `start` when the connection last became idle (or wrote a byte while
    /// idle: a response still being sent is progress).
    idle_since: AtomicU64,
    /// Milliseconds since `start` of the first byte of a request head not yet complete, or
    /// [`NONE`]. The first head is timed from the start of the connection.
    head_since: AtomicU64,
}

/// A request in flight; dropping it (the response is ready) starts the idle time.
pub(crate) struct Busy(Arc<Activity>);

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// A request head is complete and handed to the service.
    pub(crate) fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(NONE, Ordering::Release);
        Busy(self.clone())
    }

    fn on_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let now = self.now_ms();
            let _ =
                self.head_since
                    .compare_exchange(NONE, now, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    fn on_write(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            self.idle_since.store(self.now_ms(), Ordering::Release);
        }
    }

    /// When to look again, or which timeout has expired.
    fn due(&self, t: Timeouts) -> Result<Instant, &'static str> {
        let now = self.now_ms();
        if self.in_flight.load(Ordering::Acquire) > 0 {
            // Handlers bound their own work (bodies have `body_timeout_s`); look again later.
            return Ok(Instant::now() + t.idle);
        }
        let (since, limit, what) = match self.head_since.load(Ordering::Acquire) {
            NONE => (self.idle_since.load(Ordering::Acquire), t.idle, "idle"),
            h => (h, t.header, "header"),
        };
        let at = since.saturating_add(limit.as_millis() as u64);
        if at <= now {
            Err(what)
        } else {
            Ok(self.start + Duration::from_millis(at))
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.idle_since.store(self.0.now_ms(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs a connection until it ends, or until its head or idle timeout expires (then it is
/// dropped, which closes it). `Err` names the timeout.
pub(crate) async fn bounded<F: Future>(
    conn: F,
    activity: &Activity,
    t: Timeouts,
) -> Result<F::Output, &'static str> {
    tokio::pin!(conn);
    loop {
        let at = activity.due(t)?;
        tokio::select! {
            r = &mut conn => return Ok(r),
            _ = tokio::time::sleep_until(at.into()) => {}
        }
    }
}

/// How long a connection the server closes goes on reading (and dropping) what the client still
/// sends, and how much of it, at most (a lingering close, as nginx's `lingering_close`).
const LINGER: Duration = Duration::from_secs(5);
const LINGER_BYTES: usize = 64 << 20;

/// A connection's byte stream (plaintext, inside TLS), reporting progress to its [`Activity`].
///
/// Its shutdown lingers: after the close (TLS close_notify, TCP FIN) it reads and drops what the
/// client still sends until the client closes too, [`LINGER`] passes or [`LINGER_BYTES`] were
/// read. A client that writes a whole body before it reads the answer (most do), answered and
/// closed before the body was read (a refused query, a failed authorisation), would otherwise
/// be reset by the kernel for the unread bytes and lose the answer it was sent.
pub(crate) struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    /// Set once the close is sent: the end of the lingering (timed from the first read that
    /// has to wait: a client that has closed already costs no timer), and the bytes dropped.
    linger: Option<(Option<Pin<Box<tokio::time::Sleep>>>, usize)>,
}

impl<S> Tracked<S> {
    pub(crate) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Tracked {
            inner,
            activity,
            linger: None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.on_read();
        }
        r
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.on_write();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.on_write();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.linger.is_none() {
            std::task::ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
        }
        let (until, dropped) = this.linger.get_or_insert((None, 0));
        let mut scratch = [0u8; 8192];
        loop {
            if *dropped > LINGER_BYTES {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => *dropped += buf.filled().len(),
                // The client closed (or broke) its side: done.
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => {
                    let until = until.get_or_insert_with(|| Box::pin(tokio::time::sleep(LINGER)));
                    return match until.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Ok(())),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }
}

/// Sends the ACK the kernel holds back for the client's last segment, now (`TCP_QUICKACK`).
///
/// Called once, right after the TLS handshake. A client that does not set `TCP_NODELAY` (ab,
/// many phones' HTTP stacks) writes its TLS Finished and its request as two segments, and
/// Nagle holds the request until the Finished is acknowledged; the server, having nothing to
/// send, delays that ACK by the kernel's 40 ms delayed-ACK timer. Every such connection then
/// waited 40 ms for its first request. Best effort: an error changes nothing.
#[cfg(target_os = "linux")]
pub(crate) fn ack_now(tcp: &tokio::net::TcpStream) {
    let _ = socket2::SockRef::from(tcp).set_tcp_quickack(true);
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn ack_now(_tcp: &tokio::net::TcpStream) {}

/// File descriptors kept free of connections: the store, the SIP socket, the listeners, logs.
const FD_RESERVE: u64 = 128;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the resulting soft limit (or
/// `None` when it cannot be read).
#[cfg(unix)]
pub(crate) fn raise_fd_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    tracing::debug!(limit = lim.rlim_cur, "open file limit (RLIMIT_NOFILE)");
    Some(lim.rlim_cur)
}

#[cfg(not(unix))]
pub(crate) fn raise_fd_limit() -> Option<u64> {
    None
}

/// The connection caps that fit the file limit `fds`: `(phones, per address, admin)`. Admin
/// keeps its cap (up to half of what is free); the phones get what is left. Warns when it
/// lowers a configured cap.
pub(crate) fn fit_caps(l: &crate::config::Limits, fds: Option<u64>) -> (usize, usize, usize) {
    let (mut phones, mut admin) = (l.max_connections, l.admin_max_connections);
    if let Some(fds) = fds {
        let free = fds.saturating_sub(FD_RESERVE).max(2) as usize;
        if phones + admin > free {
            admin = admin.min(free / 2).max(1);
            phones = (free - admin).max(1);
            tracing::warn!(
                open_file_limit = fds,
                max_connections = phones,
                admin_max_connections = admin,
                "[limits] caps lowered to fit the open file limit"
            );
        }
    }
    (phones, l.max_connections_per_ip.min(phones), admin)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection in delayed-ACK ("ping-pong") mode leaves it after `ack_now`.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn ack_now_takes_the_connection_out_of_delayed_ack_mode() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = l.accept().await.unwrap();
        let sock = socket2::SockRef::from(&server);
        sock.set_tcp_quickack(false).unwrap();
        assert!(
            !sock.tcp_quickack().unwrap(),
            "delayed ACKs after clearing TCP_QUICKACK"
        );
        ack_now(&server);
        assert!(
            sock.tcp_quickack().unwrap(),
            "ACKs sent at once after ack_now"
        );
    }

    #[test]
    fn the_gate_caps_open_connections_in_all_and_per_address() {
        let g = Gate::new("test", 3, Some(2));
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let a1 = g.admit(a).unwrap();
        let _a2 = g.admit(a).unwrap();
        assert!(g.admit(a).is_none(), "third from one address");
        let _b1 = g.admit(b).unwrap();
        assert!(g.admit(b).is_none(), "over the global cap");
        drop(a1);
        assert!(g.admit(a).is_some(), "a freed place is reusable");
        assert_eq!(g.refused.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn refusals_are_logged_at_most_once_a_second() {
        let g = Gate::new("test", 0, None);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(g.admit(ip).is_none());
        for _ in 0..100 {
            assert!(g.admit(ip).is_none());
        }
        assert_eq!(g.refused.load(Ordering::Relaxed), 101);
        // The first refusal was logged; the next line may come a second later, with the rest.
        assert_eq!(g.logged.load(Ordering::Relaxed), 1);
        assert_eq!(g.should_log(), None);
    }

    #[test]
    fn caps_are_fitted_below_the_file_limit() {
        let l = crate::config::Limits::default();
        assert_eq!(fit_caps(&l, Some(1 << 20)), (10_000, 256, 256));
        let (phones, per_ip, admin) = fit_caps(&l, Some(1024));
        assert!(phones + admin + FD_RESERVE as usize <= 1024);
        assert_eq!(admin, 256);
        assert!(per_ip <= phones);
    }
}
