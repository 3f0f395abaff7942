//! Connections are bounded on both listeners ([limits]): a slow or idle client is closed by its
//! timeout, a slow body is answered 408, and the connection caps refuse a flood while other
//! addresses and the admin API are still served. Raw TLS clients, small timeouts via config.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::phones::OnePhone;
use common::raw::{self, Tls};
use common::TestServer;
use tokio::io::AsyncWriteExt;
use tokio_rustls::TlsConnector;

const HOME: [u8; 4] = [127, 0, 0, 1];

fn ip(a: [u8; 4]) -> IpAddr {
    IpAddr::from(a)
}

/// The phone and admin listeners' addresses.
fn listeners(s: &TestServer) -> [(&'static str, std::net::SocketAddr); 2] {
    [
        ("phones", raw::addr(&s.phones)),
        ("admin", raw::addr(&s.admin)),
    ]
}

async fn healthz(c: &mut Tls) -> String {
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    raw::response(c).await
}

#[tokio::test]
async fn slow_headers_are_closed_by_the_header_timeout() {
    let s = TestServer::start_with(|c| c.limits.header_timeout_s = 1).await;
    let tls = raw::connector(&s.data_dir);
    for (name, addr) in listeners(&s) {
        let c = raw::open(&tls, addr, ip(HOME)).await.unwrap();
        let (mut r, mut w) = tokio::io::split(c);
        // One header byte every 300 ms: 10 s worth, far more than the header timeout.
        let head =
            b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nUser-Agent: slowloris/1.0 xxxxxxxxx\r\n";
        let writer = tokio::spawn(async move {
            raw::trickle(&mut w, head, Duration::from_millis(300)).await;
            w
        });
        let closed = raw::closed_within(&mut r, Duration::from_secs(8)).await;
        writer.abort();
        let took =
            closed.unwrap_or_else(|| panic!("{name}: a 1 byte/300 ms head still open after 8 s"));
        assert!(
            took >= Duration::from_millis(800),
            "{name}: closed after {took:?}, before the 1 s header timeout"
        );
    }
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_by_the_idle_timeout() {
    let s = TestServer::start_with(|c| c.limits.idle_timeout_s = 1).await;
    let tls = raw::connector(&s.data_dir);
    for (name, addr) in listeners(&s) {
        let mut c = raw::open(&tls, addr, ip(HOME)).await.unwrap();
        // Requests 500 ms apart keep it open: each one restarts the idle time.
        for _ in 0..4 {
            let r = healthz(&mut c).await;
            assert!(r.starts_with("HTTP/1.1 200"), "{name}: {r}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let closed = raw::closed_within(&mut c, Duration::from_secs(8)).await;
        let took = closed.unwrap_or_else(|| panic!("{name}: idle connection still open after 8 s"));
        assert!(
            took >= Duration::from_millis(300),
            "{name}: closed {took:?} after going idle, before the 1 s idle timeout"
        );
    }
}

#[tokio::test]
async fn a_slow_admin_body_is_answered_408_problem_json() {
    let s = TestServer::start_with(|c| c.limits.body_timeout_s = 1).await;
    let tls = raw::connector(&s.data_dir);
    let mut c = raw::open(&tls, raw::addr(&s.admin), ip(HOME))
        .await
        .unwrap();
    // Announces 10 MiB and sends 2 bytes.
    let req = format!(
        "POST /api/v1/groups HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 10485760\r\n\r\n{{\"",
        s.token
    );
    c.write_all(req.as_bytes()).await.unwrap();
    let r = raw::response(&mut c).await;
    assert!(r.starts_with("HTTP/1.1 408"), "{r}");
    assert!(r.contains("application/problem+json"), "{r}");
    assert!(r.contains(r#""code":"request_timeout""#), "{r}");
    assert!(
        raw::closed_within(&mut c, Duration::from_secs(5))
            .await
            .is_some(),
        "the connection with the unread body is closed"
    );
}

#[tokio::test]
async fn a_slow_phone_upload_is_answered_408() {
    let p = OnePhone::start_with(|c| c.limits.body_timeout_s = 1).await;
    let name = format!("{}-app.log", OnePhone::MAC);
    let url = format!("{}/{name}", p.s.phones);
    let first = p.s.client.put(&url).body("x").send().await.unwrap();
    assert_eq!(first.status(), 401);
    let (realm, nonce) = common::digest::challenge(first.headers(), "MD5");
    let auth = common::digest::authorization(
        "MD5",
        OnePhone::MAC,
        &p.password,
        &realm,
        &nonce,
        "PUT",
        &format!("/{name}"),
        1,
    );
    let tls = raw::connector(&p.s.data_dir);
    let mut c = raw::open(&tls, raw::addr(&p.s.phones), ip(HOME))
        .await
        .unwrap();
    let req = format!(
        "PUT /{name} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: {}\r\nAuthorization: {auth}\r\n\
         Content-Length: 1000\r\n\r\nab",
        OnePhone::UA
    );
    c.write_all(req.as_bytes()).await.unwrap();
    let r = raw::response(&mut c).await;
    assert!(r.starts_with("HTTP/1.1 408"), "{r}");
}

/// A server with `max_connections`/`max_connections_per_ip` as given (and a long header
/// timeout), and phone connections held open from each address of `from`.
async fn holding(
    max: usize,
    per_ip: usize,
    from: &[[u8; 4]],
) -> (TestServer, TlsConnector, SocketAddr, Vec<Tls>) {
    let s = TestServer::start_with(|c| {
        c.limits.max_connections = max;
        c.limits.max_connections_per_ip = per_ip;
        c.limits.header_timeout_s = 60;
    })
    .await;
    let tls = raw::connector(&s.data_dir);
    let phones = raw::addr(&s.phones);
    let mut held = Vec::new();
    for a in from {
        held.push(raw::open(&tls, phones, ip(*a)).await.unwrap());
    }
    (s, tls, phones, held)
}

#[tokio::test]
async fn connections_over_the_per_address_cap_are_refused_while_other_addresses_are_served() {
    let (_s, tls, phones, mut held) = holding(100, 3, &[HOME; 3]).await;
    // The fourth from the same address is closed before its TLS handshake.
    assert!(
        raw::open(&tls, phones, ip(HOME)).await.is_err(),
        "a fourth connection from 127.0.0.1 completed its handshake"
    );
    // Another address is served.
    let mut other = raw::open(&tls, phones, ip([127, 0, 0, 2])).await.unwrap();
    let r = healthz(&mut other).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    // A freed place is taken again.
    drop(held.pop());
    let mut again = None;
    for _ in 0..50 {
        if let Ok(c) = raw::open(&tls, phones, ip(HOME)).await {
            again = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = again
        .as_mut()
        .expect("a place freed by a closed connection");
    let r = healthz(again).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}

#[tokio::test]
async fn the_admin_api_answers_while_the_phone_listener_is_at_its_global_cap() {
    let from = [
        [127, 0, 0, 2],
        [127, 0, 0, 2],
        [127, 0, 0, 3],
        [127, 0, 0, 3],
    ];
    let (s, tls, phones, _held) = holding(4, 2, &from).await;
    assert!(
        raw::open(&tls, phones, ip([127, 0, 0, 4])).await.is_err(),
        "a fifth phone connection completed its handshake"
    );
    let r = s.get("/api/v1/groups").await;
    assert_eq!(r.status(), 200, "{}", r.body);
    let mut admin = raw::open(&tls, raw::addr(&s.admin), ip(HOME))
        .await
        .unwrap();
    let r = healthz(&mut admin).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}

/// Writes `head` and all of `body` as most clients do, before reading anything, then reads the
/// answer. Closed under its writes (the kernel resets a connection closed with unread bytes),
/// such a client sees a broken connection instead of the answer it was sent.
async fn send_all_then_read(c: &mut Tls, head: String, body: &[u8]) -> String {
    c.write_all(head.as_bytes()).await.unwrap();
    c.write_all(body)
        .await
        .expect("the whole body is taken while the answer waits");
    c.flush().await.unwrap();
    raw::response(c).await
}

#[tokio::test]
async fn an_admin_client_still_sending_a_body_refused_unread_gets_the_answer() {
    // The query is refused before the 4 MiB body is read.
    let s = TestServer::start().await;
    let tls = raw::connector(&s.data_dir);
    let mut c = raw::open(&tls, raw::addr(&s.admin), ip(HOME))
        .await
        .unwrap();
    let body = vec![b' '; 4 << 20];
    let head = format!(
        "POST /api/v1/import?no_such_parameter=1 HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        s.token,
        body.len()
    );
    let r = send_all_then_read(&mut c, head, &body).await;
    assert!(r.starts_with("HTTP/1.1 422"), "{r:?}");
    assert!(r.contains(r#""code":"validation""#), "{r}");
}

#[tokio::test]
async fn a_phone_uploading_before_its_challenge_gets_the_challenge() {
    // A phone PUTs its log without credentials first (Polycom does): the 401 is sent before
    // the body is read. 4 MiB, more than the socket buffers hold.
    let p = OnePhone::start().await;
    let tls = raw::connector(&p.s.data_dir);
    let mut c = raw::open(&tls, raw::addr(&p.s.phones), ip(HOME))
        .await
        .unwrap();
    let body = vec![b'x'; 4 << 20];
    let head = format!(
        "PUT /{}-app.log HTTP/1.1\r\nHost: localhost\r\nUser-Agent: {}\r\n\
         Content-Length: {}\r\n\r\n",
        OnePhone::MAC,
        OnePhone::UA,
        body.len()
    );
    let r = send_all_then_read(&mut c, head, &body).await;
    assert!(r.starts_with("HTTP/1.1 401"), "{r:?}");
    assert!(
        r.to_ascii_lowercase().contains("www-authenticate: digest"),
        "{r}"
    );
}
