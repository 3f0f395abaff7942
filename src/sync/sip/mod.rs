//! A small SIP client that sends out-of-dialog NOTIFY (RFC 3261 / RFC 6665) and nothing else.
//!
//! UDP: one socket for every transaction; a receiver task hands each response to its
//! transaction by the top Via `branch`. Non-INVITE retransmission: T1 = 500 ms doubling up to
//! T2 = 4 s (after a provisional response, every T2), until a final response or Timer F (64·T1 =
//! 32 s). TCP: a connection per NOTIFY, no retransmission, the same Timer F. A 401/407 is
//! answered once with digest credentials (MD5, `qop=auth` when offered) of the line the request
//! is addressed to. Responses are parsed strictly; anything malformed is logged and dropped.
//!
//! - `message`: building the NOTIFY, parsing responses strictly;
//! - `digest`: the answer to a 401/407 challenge;
//! - `udp`: the shared socket, its receiver task and retransmission timers;
//! - `tcp`: a connection per NOTIFY and its response framing.
//!
//! `Client::notify` runs one NOTIFY to its outcome over either transport.

mod digest;
pub(crate) mod message;
mod tcp;
mod udp;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;

use message::Attempt;
use udp::Waiters;

/// Timer F (64·T1): how long a NOTIFY transaction waits for its final response, on either
/// transport.
const TIMER_F: Duration = Duration::from_secs(32);

/// Where a NOTIFY goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) tcp: bool,
    pub(crate) addr: SocketAddr,
    /// Host as written in the Request-URI (a name or the address).
    pub(crate) host: String,
}

/// What to send.
#[derive(Clone, Debug)]
pub(crate) struct Notify {
    /// Request-URI user: the device's primary registration user.
    pub(crate) user: String,
    /// `Event:` header value.
    pub(crate) event: String,
    /// Digest credentials of that line, for a 401/407 challenge.
    pub(crate) auth_username: String,
    pub(crate) password: String,
}

/// The outcome of one NOTIFY transaction.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Outcome {
    /// A final response (the status after at most one digest retry).
    Final(u16, String),
    /// No final response within Timer F.
    Timeout,
    /// The request could not be sent (connection refused, ...).
    Error(String),
}

impl Outcome {
    pub(crate) fn ok(&self) -> bool {
        matches!(self, Outcome::Final(s, _) if (200..300).contains(s))
    }
    pub(crate) fn describe(&self) -> String {
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

/// The NOTIFY sender.
pub(crate) struct Client {
    udp: Arc<UdpSocket>,
    waiters: Waiters,
    bind_ip: IpAddr,
}

impl Client {
    /// Binds the UDP socket (`[sync] sip_bind`) and starts its receiver.
    pub(crate) async fn bind(addr: &str) -> std::io::Result<Client> {
        let udp = Arc::new(UdpSocket::bind(addr).await?);
        let waiters: Waiters = Default::default();
        udp::spawn_receiver(udp.clone(), waiters.clone());
        let bind_ip = udp.local_addr()?.ip();
        Ok(Client {
            udp,
            waiters,
            bind_ip,
        })
    }

    /// Sends one NOTIFY and waits for its outcome (answering one digest challenge).
    pub(crate) async fn notify(&self, n: &Notify, target: &Target) -> Outcome {
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
                    match digest::answer(&r, n, &ruri) {
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
}
