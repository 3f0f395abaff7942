//! TCP transport: a connection per NOTIFY, no retransmission, responses framed by the blank
//! line and `Content-Length`, the whole exchange bounded by Timer F.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::message::{full_name, parse_response, request, Attempt, Response};
use super::{Client, Notify, Outcome, Target, TIMER_F};

impl Client {
    pub(super) async fn tcp_transaction(
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
