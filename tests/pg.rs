//! Several servers on one PostgreSQL database (`[store] backend = "postgres"`): each a real
//! `deskprov serve` process on loopback ports, sharing nothing but the database and the
//! sealing key file. Needs a PostgreSQL server: `scripts/pg-test.sh` starts one and sets
//! `DESKPROV_TEST_PG=postgres://...`; without it every test here prints why it skips.
//! Each test creates a database of its own.

mod common;

#[path = "common/process.rs"]
mod process;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::phone_get;
use process::{Proc, BIN};
use serde_json::{json, Value};

const SKIP: &str = "skipped: DESKPROV_TEST_PG not set (scripts/pg-test.sh sets it)";

/// A fresh database on the test server, named for the test; None (and a printed reason)
/// when no server is configured.
fn database(name: &str) -> Option<String> {
    let Ok(base) = std::env::var("DESKPROV_TEST_PG") else {
        // Straight to the terminal: the test harness would hide a print of a passing test.
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "{name}: {SKIP}");
        return None;
    };
    let db = format!("deskprov_{name}");
    let psql = |sql: &str| {
        let out = Command::new("psql")
            .args([base.as_str(), "-v", "ON_ERROR_STOP=1", "-qc", sql])
            .output()
            .expect("psql (from postgresql-client) runs");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    psql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    psql(&format!("CREATE DATABASE {db}"));
    // postgres://user@host:port/<anything> → the same server, the new database.
    let (server, _) = base
        .rsplit_once('/')
        .expect("a postgres:// URL with a database");
    Some(format!("{server}/{db}"))
}

/// One server's directory and configuration.
struct Replica {
    dir: PathBuf,
    config: PathBuf,
}

impl Replica {
    /// A data directory `name` under `root` and a config for it on `url` (None: embedded),
    /// sealing with the key file shared by every replica of the test.
    fn new(root: &Path, name: &str, url: Option<&str>, extra: &str) -> Replica {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut text = format!(
            "data_dir = {:?}\n[listen]\nphones = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n",
            dir.join("data").display().to_string()
        );
        text.push_str(extra);
        text.push_str(&format!(
            "[store]\ncache_mb = 8\nkey_file = {:?}\n",
            root.join("store.key").display().to_string()
        ));
        if let Some(url) = url {
            text.push_str(&format!("backend = \"postgres\"\nurl = {url:?}\n"));
        }
        let config = dir.join("deskprov.toml");
        std::fs::write(&config, text).unwrap();
        Replica { dir, config }
    }

    fn serve(&self) -> Proc {
        Proc::serve(&self.dir, &self.config)
    }

    fn client(&self) -> reqwest::Client {
        common::https_client(&self.dir.join("data/tls/ca.pem"))
    }

    /// `deskprov <args> --config <this config>`: (success, stdout + stderr).
    fn run(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(BIN)
            .current_dir(&self.dir)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

/// The admin API of one running server, with the platform token.
#[derive(Clone)]
struct Api {
    client: reqwest::Client,
    base: String,
    phones: String,
    token: String,
}

impl Api {
    /// `GET /unprovisioned`: (mac, count) newest first.
    async fn unprovisioned(&self) -> Vec<(String, u64)> {
        let (s, v) = self.get("/api/v1/unprovisioned").await;
        assert_eq!(s, 200, "{v}");
        v.as_array()
            .unwrap()
            .iter()
            .map(|u| {
                (
                    u["mac"].as_str().unwrap().to_string(),
                    u["count"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    /// A phone's PUT of `name` as the device `mac`: challenged, then with its digest.
    async fn upload(&self, mac: &str, password: &str, name: &str, body: &[u8]) -> u16 {
        let url = format!("{}/{name}", self.phones);
        let first = self.client.put(&url).body("x").send().await.unwrap();
        assert_eq!(first.status(), 401, "an upload without credentials");
        let (realm, nonce) = common::digest::challenge(first.headers(), "MD5");
        let auth = common::digest::authorization(
            "MD5",
            mac,
            password,
            &realm,
            &nonce,
            "PUT",
            &format!("/{name}"),
            1,
        );
        let r = self
            .client
            .put(&url)
            .header("authorization", auth)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        r.status().as_u16()
    }

    /// The names of a device's uploads, sorted.
    async fn upload_names(&self, mac: &str) -> Vec<String> {
        let (s, v) = self.get(&format!("/api/v1/devices/{mac}/uploads")).await;
        assert_eq!(s, 200, "{v}");
        let mut names: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        names
    }

    fn of(r: &Replica, p: &Proc, token: &str) -> Api {
        Api {
            client: r.client(),
            base: p.admin.clone(),
            phones: p.phones.clone(),
            token: token.to_string(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::PATCH, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// POST that must give 201.
    async fn create(&self, path: &str, body: Value) -> Value {
        let (s, v) = self.post(path, body.clone()).await;
        assert_eq!(s, 201, "POST {path} {body}: {v}");
        v
    }

    /// The phone's GET of `file` with its digest credentials: (status, body).
    async fn fetch(&self, file: &str, mac: &str, password: &str) -> (u16, String) {
        let r = phone_get(
            &self.client,
            &self.phones,
            &format!("/{file}"),
            "Yealink SIP-T54W 96.86.0.100",
            Some((mac, password)),
            "MD5",
            &[],
        )
        .await;
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

fn token(r: &Replica) -> String {
    std::fs::read_to_string(r.dir.join("data/admin-token"))
        .unwrap()
        .trim()
        .to_string()
}

/// Runs `sql` on the database at `url` with psql; its rows, unaligned (`|` between columns).
fn psql_rows(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qtAc", sql])
        .output()
        .expect("psql (from postgresql-client) runs");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Polls `f` every 50 ms until it is true; panics naming `what` if it is not within `within`.
async fn eventually<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < end, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const G: &str = "pgtest";
const MAC: &str = "805ec0000001";
/// A MAC no device has (until a test creates one).
const UNKNOWN: &str = "805ec0000099";

/// A group, its user 1001 (Ada) and a Yealink for Ada; returns the device's password.
async fn seed(api: &Api, notify_target: Option<String>) -> String {
    api.create(
        "/api/v1/groups",
        json!({"id": G, "sip": {"domain": "sip.example.net"}, "settings": {"timezone": "UTC"}}),
    )
    .await;
    api.create(
        &format!("/api/v1/groups/{G}/users"),
        json!({"extension": "1001", "first_name": "Ada", "last_name": "Lovelace"}),
    )
    .await;
    let mut dev = json!({"mac": MAC, "name": "desk", "model": "yealink-t54w", "owner": "1001"});
    if let Some(t) = notify_target {
        dev["notify_target"] = json!(t);
    }
    let d = api
        .create(&format!("/api/v1/groups/{G}/devices"), dev)
        .await;
    d["credentials"]["password"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_server_is_served_by_the_other() {
    let Some(url) = database("follow") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (ra, rb) = (
        Replica::new(tmp.path(), "a", Some(&url), ""),
        Replica::new(tmp.path(), "b", Some(&url), ""),
    );
    let pa = ra.serve();
    let pb = rb.serve();
    let t = token(&ra);
    let (a, b) = (Api::of(&ra, &pa, &t), Api::of(&rb, &pb, &t));
    assert!(
        !rb.dir.join("data/admin-token").exists(),
        "the second server found the first one's token in the database"
    );
    // The token written by A authenticates on B: B serves A's writes.
    let password = seed(&a, None).await;
    eventually("B knows A's device", Duration::from_secs(10), || async {
        b.get(&format!("/api/v1/devices/{MAC}")).await.0 == 200
    })
    .await;
    let (status, body) = b.fetch(&format!("{MAC}.cfg"), MAC, &password).await;
    assert_eq!(status, 200, "the phone's fetch on B: {body}");
    assert!(body.contains("Ada"), "B renders A's user: {body}");

    // A change on A reaches the phone's next fetch on B.
    let (s, v) = a
        .patch(
            &format!("/api/v1/groups/{G}/users/1001"),
            json!({"first_name": "Grace"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let mut last = String::new();
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = b.fetch(&format!("{MAC}.cfg"), MAC, &password).await;
        assert_eq!(status, 200);
        if body.contains("Grace") {
            break;
        }
        assert!(Instant::now() < end, "B still serves the old user: {last}");
        last = body;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The fetch on B confirmed the change wherever the dispatcher runs: both servers show
    // the device in sync (A learns of B's check-in from the database).
    for (name, api) in [("A", &a), ("B", &b)] {
        eventually(
            &format!("{name} shows the device in sync"),
            Duration::from_secs(10),
            || async { api.get(&format!("/api/v1/devices/{MAC}")).await.1["state"] == "in_sync" },
        )
        .await;
    }
    // B's view of the change log is A's, gapless.
    let (_, log) = b.get("/api/v1/changes?since=0&limit=1000").await;
    let seqs: Vec<u64> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert!(seqs.len() >= 5, "{seqs:?}");
}

/// Sends `a_body` to A and `b_body` to B at the same moment; their statuses.
async fn at_once(a: &Api, pa: &str, a_body: Value, b: &Api, pb: &str, b_body: Value) -> [u16; 2] {
    let gate = Arc::new(tokio::sync::Barrier::new(2));
    let one = |api: Api, path: String, body: Value, gate: Arc<tokio::sync::Barrier>| {
        tokio::spawn(async move {
            gate.wait().await;
            api.post(&path, body).await
        })
    };
    let ha = one(a.clone(), pa.to_string(), a_body, gate.clone());
    let hb = one(b.clone(), pb.to_string(), b_body, gate);
    let (ra, rb) = (ha.await.unwrap(), hb.await.unwrap());
    for (s, v) in [&ra, &rb] {
        assert!(*s == 201 || *s == 409, "unexpected {s}: {v}");
    }
    [ra.0, rb.0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_writes_on_two_servers_give_one_success_and_one_409() {
    let Some(url) = database("conflicts") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (ra, rb) = (
        Replica::new(tmp.path(), "a", Some(&url), ""),
        Replica::new(tmp.path(), "b", Some(&url), ""),
    );
    let pa = ra.serve();
    let pb = rb.serve();
    let t = token(&ra);
    let (a, b) = (Api::of(&ra, &pa, &t), Api::of(&rb, &pb, &t));
    for (g, licences) in [("one", 20), ("two", 20), ("lic", 1)] {
        a.create(
            "/api/v1/groups",
            json!({"id": g, "sip": {"domain": format!("{g}.example")}, "shared_line_licenses": licences}),
        )
        .await;
    }
    eventually("B knows the groups", Duration::from_secs(10), || async {
        b.get("/api/v1/groups/lic").await.0 == 200
    })
    .await;
    // The same line port (SIP username), in two groups, written on two servers at once.
    for round in 0..12 {
        let port = format!("shared-port-{round}");
        let st = at_once(
            &a,
            "/api/v1/groups/one/users",
            json!({"extension": format!("{}", 100 + round), "sip": {"username": port}}),
            &b,
            "/api/v1/groups/two/users",
            json!({"extension": format!("{}", 100 + round), "sip": {"username": port}}),
        )
        .await;
        assert_eq!(
            st.iter().filter(|s| **s == 201).count(),
            1,
            "round {round}: line port {port} on both servers: {st:?}"
        );
    }
    // The last shared-line licence, taken on two servers at once: round r starts with r
    // lines in use and r + 1 licences.
    for round in 0..6u32 {
        let st = at_once(
            &a,
            "/api/v1/groups/lic/shared-lines",
            json!({"number": format!("{}", 500 + 2 * round)}),
            &b,
            "/api/v1/groups/lic/shared-lines",
            json!({"number": format!("{}", 501 + 2 * round)}),
        )
        .await;
        assert_eq!(
            st.iter().filter(|s| **s == 201).count(),
            1,
            "round {round}: the last licence on both servers: {st:?}"
        );
        let (s, v) = b
            .patch(
                "/api/v1/groups/lic",
                json!({"shared_line_licenses": round + 2}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    let (_, lines) = a.get("/api/v1/groups/lic/shared-lines?limit=100").await;
    assert_eq!(lines["items"].as_array().map(Vec::len), Some(6), "{lines}");
    // The log is gapless and both servers count the same lines.
    let (_, log) = b.get("/api/v1/changes?since=0&limit=1000").await;
    let seqs: Vec<u64> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
}

/// NOTIFYs this server has sent (its `deskprov_notify_total` counters, summed).
async fn notifies_sent(api: &Api) -> u64 {
    let r = api
        .client
        .get(format!("{}/metrics", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text()
        .await
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("deskprov_notify_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Which of `apis` sent the NOTIFYs so far (the dispatching server): its index.
async fn dispatcher(apis: [&Api; 2]) -> usize {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        for (i, api) in apis.into_iter().enumerate() {
            if notifies_sent(api).await > 0 {
                assert_eq!(
                    notifies_sent(apis[1 - i]).await,
                    0,
                    "both servers sent NOTIFYs"
                );
                return i;
            }
        }
        assert!(Instant::now() < end, "no server counts a NOTIFY sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two servers on `url` with `sync` settings, the device seeded with the in-test phone as
/// its NOTIFY target, and its creation's NOTIFY received: the servers, their APIs (the
/// dispatching one first), and what the phone received.
async fn two_with_a_notified_phone(
    tmp: &Path,
    url: &str,
    sync: &str,
) -> ([Proc; 2], [Api; 2], Arc<Mutex<Vec<String>>>) {
    let (ra, rb) = (
        Replica::new(tmp, "a", Some(url), sync),
        Replica::new(tmp, "b", Some(url), sync),
    );
    let pa = ra.serve();
    let pb = rb.serve();
    let t = token(&ra);
    let (a, b) = (Api::of(&ra, &pa, &t), Api::of(&rb, &pb, &t));
    let (port, seen) = udp_phone().await;
    seed(&a, Some(format!("udp:127.0.0.1:{port}"))).await;
    eventually("the creation's NOTIFY", Duration::from_secs(20), || async {
        seen.lock().unwrap().len() == 1
    })
    .await;
    if dispatcher([&a, &b]).await == 0 {
        ([pa, pb], [a, b], seen)
    } else {
        ([pb, pa], [b, a], seen)
    }
}

/// Straight to the terminal (the harness hides a passing test's prints): a measured delay.
fn report(what: &str, d: Duration) {
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "{what}: {:.0} ms",
        d.as_secs_f64() * 1000.0
    );
}

/// A phone on loopback UDP that answers every NOTIFY 200 and logs each one's
/// `<Event> <Call-ID>`.
async fn udp_phone() -> (u16, Arc<Mutex<Vec<String>>>) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<String>>> = Default::default();
    let log = seen.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let header = |name: &str| {
                req.split("\r\n")
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.trim()
                            .eq_ignore_ascii_case(name)
                            .then(|| v.trim().to_string())
                    })
                    .unwrap_or_default()
            };
            let mut resp = "SIP/2.0 200 OK\r\n".to_string();
            for h in ["Via", "From", "Call-ID", "CSeq"] {
                resp.push_str(&format!("{h}: {}\r\n", header(h)));
            }
            resp.push_str(&format!(
                "To: {};tag=p1\r\nContent-Length: 0\r\n\r\n",
                header("To")
            ));
            if req.starts_with("NOTIFY") {
                log.lock()
                    .unwrap()
                    .push(format!("{} {}", header("Event"), header("Call-ID")));
            }
            let _ = sock.send_to(resp.as_bytes(), from).await;
        }
    });
    (port, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_dispatching_server_and_the_other_sends_the_pending_notify() {
    let Some(url) = database("failover") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let sync = "[sync]\ndebounce_ms = 2000\nack_timeout_s = 600\n";
    let (ra, rb) = (
        Replica::new(tmp.path(), "a", Some(&url), sync),
        Replica::new(tmp.path(), "b", Some(&url), sync),
    );
    let mut pa = ra.serve();
    let mut pb = rb.serve();
    let t = token(&ra);
    let (a, b) = (Api::of(&ra, &pa, &t), Api::of(&rb, &pb, &t));
    let (port, seen) = udp_phone().await;
    seed(&a, Some(format!("udp:127.0.0.1:{port}"))).await;
    // The device's creation is a change: one NOTIFY, from whichever server dispatches.
    eventually("the first NOTIFY", Duration::from_secs(20), || async {
        seen.lock().unwrap().len() == 1
    })
    .await;
    // The dispatcher's server counts it; the other never sent anything.
    let leader = dispatcher([&a, &b]).await;
    let (survivor, dead) = if leader == 0 {
        (b.clone(), &mut pa)
    } else {
        (a.clone(), &mut pb)
    };
    // A change, then at once kill -9 of the dispatching server, inside its debounce.
    let (s, v) = survivor
        .patch(
            &format!("/api/v1/groups/{G}/users/1001"),
            json!({"first_name": "Grace"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    dead.kill9();
    // The survivor takes the turn and sends the pending NOTIFY.
    eventually(
        "the surviving server sends the pending NOTIFY",
        Duration::from_secs(30),
        || async { seen.lock().unwrap().len() >= 2 },
    )
    .await;
    // Once for the revision: nothing more comes while the phone has not fetched.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = seen.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "one NOTIFY per change: {calls:?}");
    assert_eq!(
        survivor.get(&format!("/api/v1/devices/{MAC}")).await.1["state"],
        "notified"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_sync_requested_on_the_server_that_does_not_dispatch_reaches_the_phone_once() {
    let Some(url) = database("manual_sync") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let sync = "[sync]\nack_timeout_s = 600\n";
    let (_procs, [leader, other], seen) = two_with_a_notified_phone(tmp.path(), &url, sync).await;
    // A reboot requested on the server that does not send NOTIFYs.
    let asked = Instant::now();
    let (s, v) = other
        .post(
            &format!("/api/v1/devices/{MAC}/sync"),
            json!({"reboot": true}),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["state"], "pending", "{v}");
    eventually(
        "the manual sync's NOTIFY",
        Duration::from_secs(10),
        || async { seen.lock().unwrap().len() >= 2 },
    )
    .await;
    report("manual sync on the other server → NOTIFY", asked.elapsed());
    // Once, the reboot event, from the dispatching server.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = seen.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "one NOTIFY for the request: {calls:?}");
    assert!(
        calls[1].starts_with("check-sync;reboot=true "),
        "the reboot event: {calls:?}"
    );
    assert_eq!(notifies_sent(&leader).await, 2);
    assert_eq!(
        notifies_sent(&other).await,
        0,
        "the other server sent a NOTIFY"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_that_does_not_dispatch_shows_the_sync_state_the_dispatcher_knows() {
    let Some(url) = database("follow_sync") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let sync = "[sync]\nack_timeout_s = 600\n";
    let (_procs, [leader, other], seen) = two_with_a_notified_phone(tmp.path(), &url, sync).await;
    let dev = format!("/api/v1/devices/{MAC}");
    // Polled until the deadline (the closures of `eventually` cannot keep what they read).
    let end = Instant::now() + Duration::from_secs(10);
    let known = loop {
        let v = leader.get(&dev).await.1;
        if v["state"] == "notified" {
            break v;
        }
        assert!(Instant::now() < end, "the dispatching server shows {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(known["last_notify"]["result"], "200 OK", "{known}");
    loop {
        let shown = other.get(&dev).await.1;
        if shown["state"] == known["state"] && shown["last_notify"] == known["last_notify"] {
            break;
        }
        assert!(
            Instant::now() < end,
            "the other server shows {shown}, the dispatching one {known}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The list on the other server says the same.
    let (s, list) = other.get(&format!("/api/v1/groups/{G}/devices")).await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["items"][0]["state"], "notified", "{list}");

    // A second NOTIFY (a manual sync on the dispatching server): timed from the phone's
    // receipt to the other server showing its result.
    let (s, v) = leader
        .post(&format!("/api/v1/devices/{MAC}/sync"), json!({}))
        .await;
    assert_eq!(s, 202, "{v}");
    let end = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().len() < 2 {
        assert!(Instant::now() < end, "the second NOTIFY did not come");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let received = Instant::now();
    let known2 = loop {
        let v = leader.get(&dev).await.1;
        if v["state"] == "notified" && v["last_notify"] != known["last_notify"] {
            break v;
        }
        assert!(Instant::now() < end, "the dispatching server shows {v}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    loop {
        let shown = other.get(&dev).await.1;
        if shown["state"] == "notified" && shown["last_notify"] == known2["last_notify"] {
            break;
        }
        assert!(
            Instant::now() < end,
            "the other server shows {shown}, the dispatching one {known2}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    report(
        "NOTIFY received → its result shown by the other server",
        received.elapsed(),
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_sync_requested_as_the_dispatcher_is_killed_is_sent_once_after_takeover() {
    let Some(url) = database("manual_failover") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let sync = "[sync]\nack_timeout_s = 600\n";
    let ([mut dying, _survivor], [_, survivor], seen) =
        two_with_a_notified_phone(tmp.path(), &url, sync).await;
    // kill -9 of the dispatching server, and at once a manual sync on the other: its
    // database session may still hold the turn.
    dying.kill9();
    let asked = Instant::now();
    let (s, v) = survivor
        .post(&format!("/api/v1/devices/{MAC}/sync"), json!({}))
        .await;
    assert_eq!(s, 202, "{v}");
    eventually(
        "the surviving server sends the manual sync",
        Duration::from_secs(30),
        || async { seen.lock().unwrap().len() >= 2 },
    )
    .await;
    report(
        "manual sync as the dispatcher dies → NOTIFY",
        asked.elapsed(),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = seen.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "one NOTIFY for the request: {calls:?}");
    assert_eq!(notifies_sent(&survivor).await, 1);
    assert_eq!(
        survivor.get(&format!("/api/v1/devices/{MAC}")).await.1["state"],
        "notified"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_on_two_servers_survive_kill_9_of_both() {
    let Some(url) = database("durable") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (ra, rb) = (
        Replica::new(tmp.path(), "a", Some(&url), ""),
        Replica::new(tmp.path(), "b", Some(&url), ""),
    );
    let mut pa = ra.serve();
    let mut pb = rb.serve();
    let t = token(&ra);
    let (a, b) = (Api::of(&ra, &pa, &t), Api::of(&rb, &pb, &t));
    a.create(
        "/api/v1/groups",
        json!({"id": G, "sip": {"domain": "d.example"}}),
    )
    .await;
    eventually("B knows the group", Duration::from_secs(10), || async {
        b.get(&format!("/api/v1/groups/{G}")).await.0 == 200
    })
    .await;
    let mut writers = Vec::new();
    for (w, api) in [a.clone(), b.clone()].into_iter().enumerate() {
        writers.push(tokio::spawn(async move {
            let mut ok = Vec::new();
            for i in 0..60 {
                let ext = format!("{}", 1000 + w * 1000 + i);
                let (s, v) = api
                    .post(
                        &format!("/api/v1/groups/{G}/users"),
                        json!({"extension": ext}),
                    )
                    .await;
                assert_eq!(s, 201, "{v}");
                ok.push(ext);
            }
            ok
        }));
    }
    let mut acknowledged = BTreeSet::new();
    for w in writers {
        acknowledged.extend(w.await.unwrap());
    }
    pa.kill9();
    pb.kill9();
    let pa = ra.serve();
    let a = Api::of(&ra, &pa, &t);
    let (_, page) = a.get(&format!("/api/v1/groups/{G}/users?limit=1000")).await;
    let present: BTreeSet<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["extension"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(present, acknowledged);
    let (_, log) = a.get("/api/v1/changes?since=0&limit=1000").await;
    let seqs: Vec<u64> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=122).collect::<Vec<_>>(),
        "token, group, 120 users, gapless"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_copies_a_data_dir_into_postgres_and_back_identically() {
    let Some(url) = database("migrate") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let embedded = Replica::new(tmp.path(), "embedded", None, "");
    let p = embedded.serve();
    let t = token(&embedded);
    let api = Api::of(&embedded, &p, &t);
    let password = seed(&api, None).await;
    for e in ["2001", "2002"] {
        api.create(
            &format!("/api/v1/groups/{G}/users"),
            json!({"extension": e}),
        )
        .await;
    }
    api.create(
        &format!("/api/v1/groups/{G}/users/2001/shared-call-appearances"),
        json!({"device": MAC}),
    )
    .await;
    // A fetch: a check-in and a provisioning log entry to copy too.
    let (status, original) = api.fetch(&format!("{MAC}.cfg"), MAC, &password).await;
    assert_eq!(status, 200);
    // Two unknown MACs (one of them twice): the unprovisioned list to copy too.
    for unknown in [UNKNOWN, "805ec00000aa", UNKNOWN] {
        let (status, _) = api.fetch(&format!("{unknown}.cfg"), unknown, "x").await;
        assert_eq!(status, 401);
    }
    let listed = api.get("/api/v1/unprovisioned").await.1;
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    let mut p = p;
    assert!(p.terminate().success());

    let (ok, out) = embedded.run(&["migrate", "--to", &url]);
    assert!(ok, "migrate --to: {out}");
    assert!(out.contains("the copy is identical"), "{out}");
    for what in ["data", "changes", "checkins", "provlog", "unprovisioned"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(what))
            .unwrap_or_else(|| panic!("no line for {what}: {out}"));
        assert!(
            line.ends_with("differing 0") && !line.contains("postgres        0"),
            "{what} copied: {line}"
        );
    }
    // Into a database that holds a store already: refused.
    let (ok, out) = embedded.run(&["migrate", "--to", &url]);
    assert!(
        !ok,
        "a second copy into the same database is refused: {out}"
    );

    // A server on the database serves what the data dir held.
    let server = Replica::new(tmp.path(), "server", Some(&url), "");
    let ps = server.serve();
    let sapi = Api::of(&server, &ps, &t);
    let (status, copied) = sapi.fetch(&format!("{MAC}.cfg"), MAC, &password).await;
    assert_eq!(status, 200);
    assert_eq!(copied, original, "the same file from the database");
    assert_eq!(
        sapi.get("/api/v1/unprovisioned").await.1,
        listed,
        "the same unprovisioned list from the database"
    );
    let mut ps = ps;
    assert!(ps.terminate().success());

    // And back into an empty data dir.
    let back = Replica::new(tmp.path(), "back", None, "");
    let (ok, out) = back.run(&["migrate", "--from", &url]);
    assert!(ok, "migrate --from: {out}");
    assert!(out.contains("the copy is identical"), "{out}");
    let pb = back.serve();
    let bapi = Api::of(&back, &pb, &t);
    let (status, again) = bapi.fetch(&format!("{MAC}.cfg"), MAC, &password).await;
    assert_eq!(status, 200);
    assert_eq!(again, original);
    assert_eq!(bapi.get("/api/v1/unprovisioned").await.1, listed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_reach_the_database_over_tls_verified_against_the_configured_ca() {
    let Some(url) = database("tls") else {
        return;
    };
    let Ok(ca) = std::env::var("DESKPROV_TEST_PG_CA") else {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "tls: skipped: DESKPROV_TEST_PG_CA not set (scripts/pg-test.sh sets it)"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let tls_url = format!("{url}?sslmode=require");
    // Verified against the CA: serves.
    let ok = Replica::new(tmp.path(), "ok", Some(&tls_url), "");
    let text = std::fs::read_to_string(&ok.config).unwrap();
    std::fs::write(&ok.config, format!("{text}ca = {ca:?}\n")).unwrap();
    let p = ok.serve();
    let t = token(&ok);
    let api = Api::of(&ok, &p, &t);
    api.create(
        "/api/v1/groups",
        json!({"id": G, "sip": {"domain": "d.example"}}),
    )
    .await;
    // Another CA (the server's own generated one): the database's certificate is refused.
    let wrong = Replica::new(tmp.path(), "wrong", Some(&tls_url), "");
    let text = std::fs::read_to_string(&wrong.config).unwrap();
    let other_ca = ok.dir.join("data/tls/ca.pem").display().to_string();
    std::fs::write(&wrong.config, format!("{text}ca = {other_ca:?}\n")).unwrap();
    let (started, out) = wrong.run(&["export"]);
    assert!(!started, "a certificate from another CA is refused: {out}");
    let lower = out.to_lowercase();
    assert!(
        lower.contains("tls") || lower.contains("certificate"),
        "refused for its certificate: {out}"
    );
    // sslmode=require without a CA to verify with: refused before connecting.
    let none = Replica::new(tmp.path(), "none", Some(&tls_url), "");
    let (started, out) = none.run(&["export"]);
    assert!(!started, "{out}");
    assert!(out.contains("store.ca"), "{out}");
}

/// Two servers on `url` (with `extra` configuration): their processes and APIs.
fn two_servers(tmp: &Path, url: &str, extra: &str) -> ([Proc; 2], [Api; 2]) {
    let (ra, rb) = (
        Replica::new(tmp, "a", Some(url), extra),
        Replica::new(tmp, "b", Some(url), extra),
    );
    let pa = ra.serve();
    let pb = rb.serve();
    let t = token(&ra);
    let (a, b) = (Api::of(&ra, &pa, &t), Api::of(&rb, &pb, &t));
    ([pa, pb], [a, b])
}

/// [`two_servers`] with [`seed`]'s device, created on A and known to B; its password.
async fn two_with_device(tmp: &Path, url: &str, extra: &str) -> ([Proc; 2], [Api; 2], String) {
    let (procs, [a, b]) = two_servers(tmp, url, extra);
    let password = seed(&a, None).await;
    eventually("B knows the device", Duration::from_secs(10), || async {
        b.get(&format!("/api/v1/devices/{MAC}")).await.0 == 200
    })
    .await;
    (procs, [a, b], password)
}

/// `api`'s phone listener asked for `mac`'s main file: 401, a MAC no device has. Two
/// sightings: the request, then its answer to the challenge.
async fn unknown_fetch(api: &Api, mac: &str) {
    let (status, body) = api.fetch(&format!("{mac}.cfg"), mac, "anything").await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_mac_seen_by_one_server_is_listed_by_the_other() {
    let Some(url) = database("unprov_shared") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (_procs, [a, b]) = two_servers(tmp.path(), &url, "");
    // One MAC seen twice by A and once by B, another only by B.
    unknown_fetch(&a, UNKNOWN).await;
    unknown_fetch(&a, UNKNOWN).await;
    unknown_fetch(&b, UNKNOWN).await;
    unknown_fetch(&b, "805ec00000aa").await;
    let both = vec![("805ec00000aa".to_string(), 2), (UNKNOWN.to_string(), 6)];
    for (name, api) in [("A", &a), ("B", &b)] {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let listed = api.unprovisioned().await;
            if listed == both {
                break;
            }
            assert!(
                Instant::now() < end,
                "{name} lists {listed:?}, not what both servers saw"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Counted once each: saved again and again, the counts do not grow.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(a.unprovisioned().await, both);
    assert_eq!(b.unprovisioned().await, both);
    assert_eq!(
        psql_rows(
            &url,
            "SELECT count(*) FROM meta WHERE key = 'unprovisioned'"
        ),
        "0",
        "nothing saved whole"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_created_for_a_listed_mac_leaves_the_list_on_every_server() {
    let Some(url) = database("unprov_device") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (_procs, [a, b]) = two_servers(tmp.path(), &url, "");
    seed(&a, None).await;
    unknown_fetch(&a, UNKNOWN).await;
    unknown_fetch(&a, "805ec00000aa").await;
    eventually("B lists what A saw", Duration::from_secs(10), || async {
        b.unprovisioned().await.len() == 2
    })
    .await;
    // A sees the MAC again (a sighting it has not saved yet), and B creates its device.
    unknown_fetch(&a, UNKNOWN).await;
    b.create(
        &format!("/api/v1/groups/{G}/devices"),
        json!({"mac": UNKNOWN, "name": "new-desk", "model": "yealink-t54w"}),
    )
    .await;
    let left = vec![("805ec00000aa".to_string(), 2)];
    assert_eq!(b.unprovisioned().await, left, "off B's list at once");
    eventually("off A's list", Duration::from_secs(10), || async {
        a.unprovisioned().await == left
    })
    .await;
    // A's saves after the device's commit do not put the MAC back in the shared table.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        psql_rows(
            &url,
            &format!("SELECT count(*) FROM unprovisioned WHERE mac = '{UNKNOWN}'")
        ),
        "0"
    );
    assert_eq!(a.unprovisioned().await, left);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_through_two_servers_keep_one_quota() {
    let Some(url) = database("upload_quota") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (_procs, [a, b], password) =
        two_with_device(tmp.path(), &url, "[phones]\nupload_max_files = 3\n").await;
    // One after the other, through A and B in turn: the newest three are kept.
    for i in 0..8 {
        let api = if i % 2 == 0 { &a } else { &b };
        let name = format!("{MAC}-app{i}.log");
        assert_eq!(api.upload(MAC, &password, &name, b"log line\n").await, 204);
    }
    let newest: Vec<String> = (5..8).map(|i| format!("{MAC}-app{i}.log")).collect();
    assert_eq!(a.upload_names(MAC).await, newest);
    assert_eq!(b.upload_names(MAC).await, newest);
    // At the same moment through both: still three.
    for round in 0..4 {
        let (ha, hb) = (a.clone(), b.clone());
        let (pa, pb) = (password.clone(), password.clone());
        let one = tokio::spawn(async move {
            let name = format!("{MAC}-a{round}.log");
            ha.upload(MAC, &pa, &name, b"a").await
        });
        let other = tokio::spawn(async move {
            let name = format!("{MAC}-b{round}.log");
            hb.upload(MAC, &pb, &name, b"b").await
        });
        assert_eq!((one.await.unwrap(), other.await.unwrap()), (204, 204));
    }
    let kept = a.upload_names(MAC).await;
    assert_eq!(kept.len(), 3, "{kept:?}");
    assert!(
        kept.iter()
            .all(|n| n.contains("-a3.") || n.contains("-b3.") || n.contains("2.")),
        "the newest of the last rounds: {kept:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_a_server_saved_whole_moves_into_the_shared_table() {
    let Some(url) = database("unprov_upgrade") else {
        return;
    };
    // A database as the previous version left it: schema 2, the list whole in meta.
    let migrations = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/store/postgres/migrations");
    psql_rows(
        &url,
        "CREATE TABLE schema_version (
             version    bigint PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    );
    for (v, file) in [(1, "0001_init.sql"), (2, "0002_sync_requests.sql")] {
        let sql = std::fs::read_to_string(migrations.join(file)).unwrap();
        psql_rows(&url, &sql);
        psql_rows(
            &url,
            &format!("INSERT INTO schema_version (version) VALUES ({v})"),
        );
    }
    let list = json!([
        {"mac": UNKNOWN, "file": format!("{UNKNOWN}.cfg"), "ip": "192.0.2.7",
         "user_agent": "Yealink SIP-T54W 96.86.0.70", "at": "2024-01-05T10:00:02.5Z", "count": 7},
        {"mac": "805ec00000aa", "file": "y000000000123.cfg", "ip": "192.0.2.8",
         "user_agent": "Yealink SIP-T46U", "at": "2024-01-05T10:00:01Z", "count": 2},
    ]);
    psql_rows(
        &url,
        &format!(
            "INSERT INTO meta (key, value) VALUES ('unprovisioned', '{}')",
            list.to_string().replace('\'', "''")
        ),
    );
    let tmp = tempfile::tempdir().unwrap();
    let (_procs, [a, b]) = two_servers(tmp.path(), &url, "");
    for api in [&a, &b] {
        assert_eq!(api.get("/api/v1/unprovisioned").await.1, list);
    }
    assert_eq!(
        psql_rows(
            &url,
            "SELECT count(*) FROM meta WHERE key = 'unprovisioned'"
        ),
        "0",
        "out of meta"
    );
    assert_eq!(
        psql_rows(&url, "SELECT max(version) FROM schema_version"),
        "3"
    );
    // The moved list goes on counting: a sighting on B adds to A's list.
    unknown_fetch(&b, "805ec00000aa").await;
    let counted = vec![("805ec00000aa".to_string(), 4), (UNKNOWN.to_string(), 7)];
    eventually("A counts B's sighting", Duration::from_secs(10), || async {
        a.unprovisioned().await == counted
    })
    .await;
}

/// The device's provisioning log as `api` serves it: how many entries.
async fn log_len(api: &Api, mac: &str) -> usize {
    let (status, v) = api.get(&format!("/api/v1/devices/{mac}/log")).await;
    assert_eq!(status, 200, "{v}");
    v["items"].as_array().expect("a page of entries").len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provisioning_log_written_through_two_servers_keeps_one_bound() {
    let Some(url) = database("log_bound") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (_procs, [a, b], password) =
        two_with_device(tmp.path(), &url, "[phones]\nlog_entries = 4\n").await;
    // Each fetch logs two entries (the challenge's 401, then the 200), through A and B in turn.
    for i in 0..6 {
        let api = if i % 2 == 0 { &a } else { &b };
        assert_eq!(
            api.fetch(&format!("{MAC}.cfg"), MAC, &password).await.0,
            200
        );
    }
    // Reading the log on a server waits for its writer: both have written all theirs.
    assert_eq!(log_len(&a, MAC).await, 4);
    assert_eq!(log_len(&b, MAC).await, 4);
    let stored = psql_rows(
        &url,
        &format!("SELECT count(*) FROM provlog WHERE mac = '{MAC}'"),
    );
    assert_eq!(stored, "4", "one bound for the device, not one per server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_deleted_and_created_again_on_one_server_keeps_logging_on_the_other() {
    let Some(url) = database("log_recreated") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (_procs, [a, b], password) =
        two_with_device(tmp.path(), &url, "[phones]\nlog_entries = 4\n").await;
    // B fills the device's log to its bound.
    for _ in 0..3 {
        assert_eq!(b.fetch(&format!("{MAC}.cfg"), MAC, &password).await.0, 200);
    }
    assert_eq!(log_len(&b, MAC).await, 4);
    // A deletes the device (and its log), then provisions the MAC again.
    let (status, v) = a
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/devices/{MAC}"),
            None,
        )
        .await;
    assert!(status == 204 || status == 200, "{status} {v}");
    eventually(
        "B follows the deletion",
        Duration::from_secs(10),
        || async { b.get(&format!("/api/v1/devices/{MAC}")).await.0 == 404 },
    )
    .await;
    let d = a
        .create(
            &format!("/api/v1/groups/{G}/devices"),
            json!({"mac": MAC, "name": "desk", "model": "yealink-t54w", "owner": "1001"}),
        )
        .await;
    let password = d["credentials"]["password"].as_str().unwrap().to_string();
    eventually(
        "B knows the new device",
        Duration::from_secs(10),
        || async { b.get(&format!("/api/v1/devices/{MAC}")).await.0 == 200 },
    )
    .await;
    assert_eq!(b.fetch(&format!("{MAC}.cfg"), MAC, &password).await.0, 200);
    assert_eq!(
        log_len(&b, MAC).await,
        2,
        "the new device's challenge and fetch, logged through B"
    );
}
