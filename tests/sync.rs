//! Changes reach the phones: SIP NOTIFY over loopback UDP and TCP to in-test phones, confirmed
//! by the phone's next fetch over HTTPS.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{phone_get, TestServer, G};
use md5::Digest as _;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One NOTIFY as a phone saw it.
#[derive(Clone, Debug)]
struct Seen {
    request_line: String,
    event: String,
    authorization: Option<String>,
    at: Instant,
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n").find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn reply(req: &str, status: &str, extra: &str) -> String {
    let mut r = format!("SIP/2.0 {status}\r\n");
    for h in ["Via", "From", "Call-ID", "CSeq"] {
        r.push_str(&format!("{h}: {}\r\n", header(req, h).unwrap_or("")));
    }
    r.push_str(&format!(
        "To: {};tag=phone1\r\n",
        header(req, "To").unwrap_or("")
    ));
    r.push_str(extra);
    r.push_str("Content-Length: 0\r\n\r\n");
    r
}

/// How the in-test phone answers.
#[derive(Clone)]
enum Answer {
    Ok,
    /// 401 first, then 200 only for a correct MD5 digest of (user, password).
    Challenge {
        user: String,
        password: String,
    },
}

fn md5(s: &str) -> String {
    hex::encode(md5::Md5::digest(s.as_bytes()))
}

/// Checks an Authorization header the way a phone does.
fn digest_ok(auth: &str, method: &str, user: &str, password: &str) -> bool {
    let get = |k: &str| {
        let i = auth.find(&format!("{k}="))? + k.len() + 1;
        let v = &auth[i..];
        Some(if let Some(q) = v.strip_prefix('"') {
            q.split('"').next()?.to_string()
        } else {
            v.split(',').next()?.trim().to_string()
        })
    };
    let (Some(u), Some(realm), Some(nonce), Some(uri), Some(resp)) = (
        get("username"),
        get("realm"),
        get("nonce"),
        get("uri"),
        get("response"),
    ) else {
        return false;
    };
    let ha1 = md5(&format!("{user}:{realm}:{password}"));
    let ha2 = md5(&format!("{method}:{uri}"));
    let want = match (get("qop"), get("nc"), get("cnonce")) {
        (Some(q), Some(nc), Some(cn)) => md5(&format!("{ha1}:{nonce}:{nc}:{cn}:{q}:{ha2}")),
        _ => md5(&format!("{ha1}:{nonce}:{ha2}")),
    };
    u == user && nonce == "phone-nonce-1" && resp == want
}

/// A phone on loopback UDP that records every NOTIFY.
struct UdpPhone {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl UdpPhone {
    async fn start(answer: Answer) -> UdpPhone {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = sock.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<Seen>>> = Default::default();
        let log = seen.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let s = Seen {
                    request_line: req.lines().next().unwrap_or("").to_string(),
                    event: header(&req, "Event").unwrap_or("").to_string(),
                    authorization: header(&req, "Authorization").map(str::to_string),
                    at: Instant::now(),
                };
                let resp = match (&answer, &s.authorization) {
                    (Answer::Ok, _) => reply(&req, "200 OK", ""),
                    (Answer::Challenge { .. }, None) => reply(
                        &req,
                        "401 Unauthorized",
                        "WWW-Authenticate: Digest realm=\"phone\", nonce=\"phone-nonce-1\", qop=\"auth\", algorithm=MD5\r\n",
                    ),
                    (Answer::Challenge { user, password }, Some(a)) => {
                        if digest_ok(a, "NOTIFY", user, password) {
                            reply(&req, "200 OK", "")
                        } else {
                            reply(&req, "403 Forbidden", "")
                        }
                    }
                };
                log.lock().unwrap().push(s);
                let _ = sock.send_to(resp.as_bytes(), from).await;
            }
        });
        UdpPhone { port, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until the phone has seen at least `n` NOTIFYs; panics if it has not by `within`.
    async fn wait_for(&self, n: usize, within: Duration) -> Vec<Seen> {
        let end = Instant::now() + within;
        loop {
            let seen = self.seen();
            if seen.len() >= n {
                return seen;
            }
            if Instant::now() > end {
                panic!(
                    "the phone saw {} NOTIFYs within {within:?}, wanted at least {n}: {seen:?}",
                    seen.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn fast(c: &mut deskprov::config::Config) {
    c.sync.debounce_ms = 300;
    c.sync.ack_timeout_s = 30;
}

async fn setup(s: &TestServer) {
    s.create(
        "/api/v1/groups",
        json!({"id": G, "sip": {"domain": "sip.example.net"}, "settings": {"timezone": "UTC"}}),
    )
    .await;
    s.create(&format!("/api/v1/groups/{G}/users"), json!({"extension": "1001", "first_name": "Ada", "phone_number": "6035551212", "sip": {"password": "ada-line-password"}})).await;
    for e in ["2001", "2002", "2003"] {
        s.create(
            &format!("/api/v1/groups/{G}/users"),
            json!({"extension": e}),
        )
        .await;
    }
}

async fn device(s: &TestServer, mac: &str, model: &str, target: &str) -> String {
    let d = s
        .create(&format!("/api/v1/groups/{G}/devices"), json!({"mac": mac, "name": mac, "model": model, "owner": "1001", "notify_target": target}))
        .await;
    d["credentials"]["password"].as_str().unwrap().to_string()
}

async fn state(s: &TestServer, mac: &str) -> Value {
    s.get(&format!("/api/v1/devices/{mac}")).await.body
}

/// Waits until the device's sync state is `want` and returns its view; panics with the device,
/// the wanted and the last-seen state if it is not by `within`.
async fn wait_state(s: &TestServer, mac: &str, want: &str, within: Duration) -> Value {
    let end = Instant::now() + within;
    loop {
        let d = state(s, mac).await;
        if d["state"] == want {
            return d;
        }
        if Instant::now() > end {
            panic!(
                "device {mac}: wanted state {want:?} within {within:?}, last seen {}: {d}",
                d["state"]
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_burst_gives_one_notify_and_the_fetch_confirms_it() {
    let s = TestServer::start_with(fast).await;
    setup(&s).await;
    let phone = UdpPhone::start(Answer::Ok).await;
    let pw = device(
        &s,
        "805ec0000001",
        "yealink-t54w",
        &format!("udp:127.0.0.1:{}", phone.port),
    )
    .await;
    // The device creation itself is a change: let it go out, then start counting.
    phone.wait_for(1, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = phone.seen().len();
    // Three SCA appearances in a burst: one NOTIFY, with the reboot event (a line change).
    for e in ["2001", "2002", "2003"] {
        s.create(
            &format!("/api/v1/groups/{G}/users/{e}/shared-call-appearances"),
            json!({"device": "805ec0000001"}),
        )
        .await;
    }
    assert_eq!(state(&s, "805ec0000001").await["state"], "pending");
    let seen = phone.wait_for(before + 1, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let seen_after = phone.seen();
    assert_eq!(
        seen_after.len(),
        before + 1,
        "one NOTIFY for the burst: {seen_after:?}"
    );
    let n = &seen[before];
    assert_eq!(n.event, "check-sync;reboot=true");
    assert!(
        n.request_line
            .starts_with("NOTIFY sip:6035551212@127.0.0.1:"),
        "{}",
        n.request_line
    );
    let d = wait_state(&s, "805ec0000001", "notified", Duration::from_secs(3)).await;
    assert_eq!(d["last_notify"]["result"], "200 OK");
    assert_eq!(d["last_notify"]["event"], "check-sync;reboot=true");
    assert_eq!(d["last_notify"]["attempts"], 1);
    assert_ne!(d["applied_revision"], d["revision"]);
    // The phone fetches its main file: in sync.
    let r = phone_get(
        &s.client,
        &s.phones,
        "/805ec0000001.cfg",
        "Yealink SIP-T54W 96.86.0.70 805ec0000001",
        Some(("805ec0000001", &pw)),
        "MD5",
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    let d = state(&s, "805ec0000001").await;
    assert_eq!(d["state"], "in_sync");
    assert_eq!(d["applied_revision"], d["revision"]);
    let g = s.get(&format!("/api/v1/groups/{G}")).await.body;
    assert_eq!(g["sync"]["in_sync"], 1);
    // A settings change that alters the file gives the re-sync event, not the reboot one.
    s.patch(
        &format!("/api/v1/groups/{G}"),
        json!({"settings": {"timezone": "Europe/Paris"}}),
    )
    .await;
    let seen = phone.wait_for(before + 2, Duration::from_secs(5)).await;
    assert_eq!(seen[before + 1].event, "check-sync");
}

#[tokio::test]
async fn a_challenging_phone_gets_the_lines_digest() {
    let s = TestServer::start_with(fast).await;
    setup(&s).await;
    let phone = UdpPhone::start(Answer::Challenge {
        user: "6035551212".into(),
        password: "ada-line-password".into(),
    })
    .await;
    device(
        &s,
        "805ec0000001",
        "yealink-t54w",
        &format!("udp:127.0.0.1:{}", phone.port),
    )
    .await;
    let seen = phone.wait_for(2, Duration::from_secs(5)).await;
    assert!(seen[0].authorization.is_none());
    assert!(seen[1]
        .authorization
        .as_deref()
        .unwrap()
        .contains("username=\"6035551212\""));
    let d = wait_state(&s, "805ec0000001", "notified", Duration::from_secs(3)).await;
    assert_eq!(d["last_notify"]["result"], "200 OK", "{d}");
}

#[tokio::test]
async fn no_fetch_means_retries_then_failed() {
    let s = TestServer::start_with(|c| {
        c.sync.debounce_ms = 100;
        c.sync.ack_timeout_s = 1;
        c.sync.max_attempts = 2;
    })
    .await;
    setup(&s).await;
    let phone = UdpPhone::start(Answer::Ok).await;
    device(
        &s,
        "805ec0000001",
        "yealink-t54w",
        &format!("udp:127.0.0.1:{}", phone.port),
    )
    .await;
    let d = wait_state(&s, "805ec0000001", "failed", Duration::from_secs(10)).await;
    assert_eq!(phone.seen().len(), 2, "max_attempts NOTIFYs");
    assert_eq!(d["last_notify"]["attempts"], 2);
    let g = s.get(&format!("/api/v1/groups/{G}")).await.body;
    assert_eq!(g["sync"]["failed"], 1);
    // A manual sync starts over, with the reboot event when asked.
    let r = s
        .post("/api/v1/devices/805ec0000001/sync", json!({"reboot": true}))
        .await;
    assert_eq!(r.status(), 202);
    let seen = phone.wait_for(3, Duration::from_secs(3)).await;
    assert_eq!(seen[2].event, "check-sync;reboot=true");
    // A group sync re-sends to every device of the group.
    assert_eq!(
        s.post(&format!("/api/v1/groups/{G}/sync"), json!({}))
            .await
            .status(),
        202
    );
    let seen = phone.wait_for(4, Duration::from_secs(3)).await;
    assert_eq!(seen[3].event, "check-sync");
}

#[tokio::test]
async fn notify_over_tcp() {
    let s = TestServer::start_with(fast).await;
    setup(&s).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let got: Arc<Mutex<Vec<String>>> = Default::default();
    let log = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut c, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 8192];
            let n = c.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            log.lock().unwrap().push(req.clone());
            let _ = c.write_all(reply(&req, "200 OK", "").as_bytes()).await;
        }
    });
    device(
        &s,
        "805ec0000001",
        "yealink-t54w",
        &format!("tcp:127.0.0.1:{port}"),
    )
    .await;
    let d = wait_state(&s, "805ec0000001", "notified", Duration::from_secs(5)).await;
    assert_eq!(d["last_notify"]["result"], "200 OK", "{d}");
    let req = got.lock().unwrap()[0].clone();
    assert!(req.contains("Via: SIP/2.0/TCP "), "{req}");
    assert_eq!(
        header(&req, "Subscription-State").map(|v| v.starts_with("terminated")),
        Some(true)
    );
}

#[tokio::test]
async fn a_restart_resumes_pending_work() {
    let dir = tempfile::tempdir().unwrap();
    let phone = UdpPhone::start(Answer::Ok).await;
    let slow = |c: &mut deskprov::config::Config| {
        c.sync.debounce_ms = 1500;
        c.sync.ack_timeout_s = 30;
    };
    let s = TestServer::start_at(dir.path(), slow).await;
    setup(&s).await;
    device(
        &s,
        "805ec0000001",
        "yealink-t54w",
        &format!("udp:127.0.0.1:{}", phone.port),
    )
    .await;
    // Stop before the debounce window ends: nothing was sent yet.
    s.shutdown().await;
    assert!(phone.seen().is_empty());
    let s = TestServer::start_at(dir.path(), slow).await;
    let seen = phone.wait_for(1, Duration::from_secs(6)).await;
    assert_eq!(
        seen.len(),
        1,
        "the pending NOTIFY went out after the restart"
    );
    wait_state(&s, "805ec0000001", "notified", Duration::from_secs(3)).await;
    // And it is not sent again after another restart.
    s.shutdown().await;
    let s = TestServer::start_at(dir.path(), slow).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(phone.seen().len(), 1, "nothing sent twice for one revision");
    assert_eq!(state(&s, "805ec0000001").await["state"], "notified");
}

#[tokio::test]
async fn same_hash_sends_nothing_when_the_bytes_did_not_change() {
    let s = TestServer::start_with(fast).await;
    setup(&s).await;
    let phone = UdpPhone::start(Answer::Ok).await;
    let pw = device(
        &s,
        "805ec0000001",
        "yealink-t54w",
        &format!("udp:127.0.0.1:{}", phone.port),
    )
    .await;
    phone.wait_for(1, Duration::from_secs(5)).await;
    let r = phone_get(
        &s.client,
        &s.phones,
        "/805ec0000001.cfg",
        "Yealink SIP-T54W 96.86.0.70 805ec0000001",
        Some(("805ec0000001", &pw)),
        "MD5",
        &[],
    )
    .await;
    assert_eq!(r.status(), 200, "the phone fetched its main file");
    let n = phone.seen().len();
    // A group setting no template renders: the device is touched, its bytes are the same.
    s.patch(
        &format!("/api/v1/groups/{G}"),
        json!({"settings": {"timezone": "UTC", "unused": "x"}}),
    )
    .await;
    let d = state(&s, "805ec0000001").await;
    assert_ne!(d["applied_revision"], d["revision"], "touched");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(phone.seen().len(), n, "no NOTIFY for unchanged bytes");
    let d = state(&s, "805ec0000001").await;
    assert_eq!(d["state"], "in_sync");
    assert_eq!(d["applied_revision"], d["revision"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pacing_holds_the_fleet_rate() {
    let s = TestServer::start_with(|c| {
        c.sync.debounce_ms = 200;
        c.sync.notify_rate = 100;
    })
    .await;
    setup(&s).await;
    let phone = UdpPhone::start(Answer::Ok).await;
    let target = format!("udp:127.0.0.1:{}", phone.port);
    for i in 0..200 {
        device(&s, &format!("805ec0{i:06x}"), "yealink-t54w", &target).await;
    }
    let seen = phone.wait_for(200, Duration::from_secs(20)).await;
    assert_eq!(seen.len(), 200);
    let spread = seen[199].at - seen[0].at;
    assert!(
        spread >= Duration::from_millis(1900),
        "200 NOTIFYs at 100/s took {spread:?}"
    );
}

#[tokio::test]
async fn each_family_gets_its_own_event() {
    let s = TestServer::start_with(|c| {
        c.sync.debounce_ms = 200;
        c.sync.same_hash = false;
    })
    .await;
    setup(&s).await;
    // One phone per device, so each NOTIFY is attributable.
    let cases = [
        (
            "805ec0000001",
            "yealink-t54w",
            "check-sync",
            "check-sync;reboot=true",
        ),
        ("00562b000002", "cisco-cp-8851-3pcc", "resync", "reboot"),
        (
            "000413000003",
            "snom-d785",
            "check-sync;reboot=false",
            "check-sync;reboot=true",
        ),
        (
            "0004f2000004",
            "polycom-vvx-450",
            "check-sync",
            "check-sync",
        ),
        (
            "00085d000005",
            "mitel-6867i",
            "check-sync",
            "check-sync;reboot=true",
        ),
    ];
    let mut phones = Vec::new();
    for (mac, model, _, _) in cases {
        let phone = UdpPhone::start(Answer::Ok).await;
        device(&s, mac, model, &format!("udp:127.0.0.1:{}", phone.port)).await;
        phones.push(phone);
    }
    for p in &phones {
        p.wait_for(1, Duration::from_secs(5)).await;
    }
    // A settings change: the re-sync event.
    s.patch(
        &format!("/api/v1/groups/{G}"),
        json!({"settings": {"timezone": "Europe/Paris"}}),
    )
    .await;
    for (p, (mac, model, resync, _)) in phones.iter().zip(cases) {
        let seen = p.wait_for(2, Duration::from_secs(5)).await;
        assert_eq!(
            seen.get(1).map(|x| x.event.as_str()),
            Some(resync),
            "{model}"
        );
        assert!(
            seen[1].request_line.contains("sip:6035551212@"),
            "{model} {mac}: {}",
            seen[1].request_line
        );
    }
    // A line change (an SCA appearance): the reboot event (reboot_on = ["lines"]).
    for (mac, _, _, _) in cases {
        s.create(
            &format!("/api/v1/groups/{G}/users/2001/shared-call-appearances"),
            json!({"device": mac}),
        )
        .await;
    }
    for (p, (_, model, _, reboot)) in phones.iter().zip(cases) {
        let seen = p.wait_for(3, Duration::from_secs(5)).await;
        assert_eq!(
            seen.get(2).map(|x| x.event.as_str()),
            Some(reboot),
            "{model}"
        );
    }
}

#[tokio::test]
async fn a_challenge_is_answered_with_the_credentials_the_phone_holds() {
    let s = TestServer::start_with(fast).await;
    setup(&s).await;
    // The phone knows the line's password from its last fetch, and challenges with it.
    let phone = UdpPhone::start(Answer::Challenge {
        user: "6035551212".into(),
        password: "ada-line-password".into(),
    })
    .await;
    let pw = device(
        &s,
        "805ec0000001",
        "yealink-t54w",
        &format!("udp:127.0.0.1:{}", phone.port),
    )
    .await;
    phone.wait_for(2, Duration::from_secs(5)).await;
    let r = phone_get(
        &s.client,
        &s.phones,
        "/805ec0000001.cfg",
        "Yealink SIP-T54W 96.86.0.70 805ec0000001",
        Some(("805ec0000001", &pw)),
        "MD5",
        &[],
    )
    .await;
    assert_eq!(r.status(), 200);
    // The admin rotates the line's password: the phone still holds the old one until it fetches,
    // so the NOTIFY telling it to fetch must answer the challenge with the old one.
    let r = s
        .post(
            &format!("/api/v1/groups/{G}/users/1001/sip-password"),
            json!({}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let seen = phone.wait_for(4, Duration::from_secs(5)).await;
    assert_eq!(seen.len(), 4, "{seen:?}");
    let d = wait_state(&s, "805ec0000001", "notified", Duration::from_secs(3)).await;
    assert_eq!(d["last_notify"]["result"], "200 OK", "{d}");
    // The admin view never shows the identity it keeps.
    assert!(!d.to_string().contains("ada-line-password"));
}

#[tokio::test]
async fn a_firmware_target_notifies_exactly_the_phones_in_its_roll_out() {
    let s = TestServer::start_with(fast).await;
    setup(&s).await;
    let (a, b) = (
        UdpPhone::start(Answer::Ok).await,
        UdpPhone::start(Answer::Ok).await,
    );
    let mut pw = vec![];
    for (mac, phone) in [("805ec0000001", &a), ("805ec0000002", &b)] {
        pw.push(
            device(
                &s,
                mac,
                "yealink-t46u",
                &format!("udp:127.0.0.1:{}", phone.port),
            )
            .await,
        );
    }
    a.wait_for(1, Duration::from_secs(5)).await;
    b.wait_for(1, Duration::from_secs(5)).await;
    for (mac, pw) in [("805ec0000001", &pw[0]), ("805ec0000002", &pw[1])] {
        let r = phone_get(
            &s.client,
            &s.phones,
            &format!("/{mac}.cfg"),
            &format!("Yealink SIP-T46U 108.85.0.5 {mac}"),
            Some((mac, pw)),
            "MD5",
            &[],
        )
        .await;
        assert_eq!(r.status(), 200);
        wait_state(&s, mac, "in_sync", Duration::from_secs(5)).await;
    }
    let (na, nb) = (a.seen().len(), b.seen().len());
    let r = s
        .client
        .put(format!(
            "{}/api/v1/models/yealink-t46u/firmware/108.86.0.20",
            s.admin
        ))
        .bearer_auth(&s.token)
        .body(vec![1u8; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Only the pilot is in the roll-out: only its file changes, only it is told to re-sync.
    let r = s
        .put(
            &format!("/api/v1/groups/{G}/firmware/yealink-t46u"),
            json!({"version": "108.86.0.20", "percent": 0, "pilots": ["805ec0000001"]}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.body);
    let seen = a.wait_for(na + 1, Duration::from_secs(5)).await;
    assert_eq!(seen[na].event, "check-sync", "a re-sync, not a reboot");
    assert_eq!(state(&s, "805ec0000002").await["state"], "in_sync");
    assert_eq!(
        b.seen().len(),
        nb,
        "the phone outside the roll-out is not touched"
    );
}
