//! UDP transport: one socket for every NOTIFY transaction, a receiver task that hands each
//! response to its transaction by the top Via `branch`, and RFC 3261 non-INVITE
//! retransmission (T1 doubling up to T2, every T2 after a provisional response, until a final
//! response or Timer F).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;

use super::message::{parse_response, request, Attempt, Response};
use super::{Client, Notify, Outcome, Target, TIMER_F};

pub(super) const T1: Duration = Duration::from_millis(500);
pub(super) const T2: Duration = Duration::from_secs(4);

/// Transactions waiting for a response, by Via branch (without the `z9hG4bK` cookie).
pub(super) type Waiters = Arc<Mutex<HashMap<String, tokio::sync::mpsc::UnboundedSender<Response>>>>;

/// Starts the task that reads every datagram on `sock` and hands each well-formed response
/// to the transaction its branch names; anything else is logged and dropped.
pub(super) fn spawn_receiver(sock: Arc<UdpSocket>, w: Waiters) {
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
}

impl Client {
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

    pub(super) async fn udp_transaction(
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
