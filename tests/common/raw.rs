//! Raw HTTP/1.1-over-TLS clients for the connection-hardening tests: they send bytes exactly as
//! a (hostile) client would, from a chosen loopback source address.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

pub type Tls = TlsStream<TcpStream>;

/// The loopback address of a `https://localhost:<port>` base URL.
pub fn addr(base: &str) -> SocketAddr {
    let port = base.rsplit(':').next().unwrap().parse().unwrap();
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A TLS client trusting the server's generated CA (`<data_dir>/tls/ca.pem`).
pub fn connector(data_dir: &Path) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in deskprov::tls::read_certs(&data_dir.join("tls/ca.pem")).unwrap() {
        roots.add(c).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(tls))
}

/// A TCP connection to `to` from the loopback address `from`, then the TLS handshake.
pub async fn open(c: &TlsConnector, to: SocketAddr, from: IpAddr) -> std::io::Result<Tls> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(from, 0))?;
    let tcp = sock.connect(to).await?;
    let handshake = c.connect(ServerName::try_from("localhost").unwrap(), tcp);
    tokio::time::timeout(Duration::from_secs(10), handshake)
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))?
}

/// Reads one response (head, and the body by `Content-Length`) as text, within 10 s.
pub async fn response(s: &mut Tls) -> String {
    let mut buf = Vec::new();
    let read = async {
        loop {
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    return text;
                }
            }
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return text,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a response within 10 s")
}

/// Waits up to `within` for the peer to close `r` (end of stream or an error); returns how long
/// that took, or `None` if it is still open. Bytes the server sends are discarded.
pub async fn closed_within<R: AsyncRead + Unpin>(r: &mut R, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let wait = async {
        let mut chunk = [0u8; 4096];
        loop {
            match r.read(&mut chunk).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, wait).await.ok()
}

/// Writes `bytes` one at a time, `gap` apart, until all are sent or a write fails.
pub async fn trickle<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, bytes: &[u8], gap: Duration) {
    for b in bytes {
        if w.write_all(&[*b]).await.is_err() || w.flush().await.is_err() {
            return;
        }
        tokio::time::sleep(gap).await;
    }
}
