//! Tenants see only themselves, and input is strict: through the real admin listener, two
//! groups (ACME, GLOBEX) with a group token each. Every conflict or validation a group token can
//! provoke against another tenant's object answers exactly as a case that leaks nothing; the
//! change log and `/healthz` show no other tenant's activity; duplicate JSON keys are refused;
//! every rejection is problem+json.

mod common;

use common::TestServer;
use reqwest::Method;
use serde_json::{json, Value};

const ACME: &str = "ACME-01";
const GLOBEX: &str = "GLOBEX-02";
/// What GLOBEX has that ACME's admin must never read back.
const GLOBEX_SECRETS: [&str; 6] = [
    "GLOBEX",
    "2001",
    "2002",
    "Globex",
    "globex-2001",
    "6035550002",
];
const GLOBEX_MAC: &str = "0004f2b00001";
const ACME_MAC: &str = "0004f2a00001";

struct Tenants {
    s: TestServer,
    acme: String,
    globex: String,
}

async fn token(s: &TestServer, g: &str) -> String {
    let t = s
        .create(
            "/api/v1/tokens",
            json!({"name": format!("{g} admin"), "group": g}),
        )
        .await;
    t["token"].as_str().unwrap().to_string()
}

/// ACME: user 1001 (6035550001, SIP user acme-1001), device ACME_MAC "Front", a second device
/// "Back", shared line 500. GLOBEX: user 2001 (6035550002, SIP user globex-2001) whose SCA
/// endpoint 6035550002_sca1 is on device GLOBEX_MAC, user 2002 whose SIP user is a line port
/// ACME would pick (6035550001_sca1), and user 2003 holding ACME's shared-line port ACME-01_800.
async fn tenants() -> Tenants {
    let s = TestServer::start().await;
    for (g, d) in [(ACME, "acme.example.net"), (GLOBEX, "globex.example.net")] {
        s.create(
            "/api/v1/groups",
            json!({"id": g, "name": g, "sip": {"domain": d}, "shared_line_licenses": 5}),
        )
        .await;
    }
    let a = format!("/api/v1/groups/{ACME}");
    let g = format!("/api/v1/groups/{GLOBEX}");
    s.create(&format!("{a}/users"), json!({"extension": "1001", "phone_number": "6035550001", "sip": {"username": "acme-1001"}})).await;
    s.create(
        &format!("{a}/devices"),
        json!({"mac": ACME_MAC, "name": "Front", "model": "polycom-vvx-450", "owner": "1001"}),
    )
    .await;
    s.create(
        &format!("{a}/devices"),
        json!({"mac": "0004f2a00002", "name": "Back", "model": "polycom-vvx-450"}),
    )
    .await;
    s.create(&format!("{a}/shared-lines"), json!({"number": "500"}))
        .await;
    s.create(&format!("{g}/users"), json!({"extension": "2001", "first_name": "Globex", "phone_number": "6035550002", "sip": {"username": "globex-2001"}})).await;
    s.create(
        &format!("{g}/users"),
        json!({"extension": "2002", "sip": {"username": "6035550001_sca1"}}),
    )
    .await;
    s.create(
        &format!("{g}/users"),
        json!({"extension": "2003", "sip": {"username": "ACME-01_800"}}),
    )
    .await;
    s.create(
        &format!("{g}/devices"),
        json!({"mac": GLOBEX_MAC, "name": "Globex lobby", "model": "polycom-vvx-450"}),
    )
    .await;
    s.create(
        &format!("{g}/devices"),
        json!({"mac": "0004f2b00002", "name": "Globex desk", "model": "polycom-vvx-450"}),
    )
    .await;
    s.create(
        &format!("{g}/users/2001/shared-call-appearances"),
        json!({"device": GLOBEX_MAC, "line_port": "6035550002_sca1"}),
    )
    .await;
    let acme = token(&s, ACME).await;
    let globex = token(&s, GLOBEX).await;
    Tenants { s, acme, globex }
}

impl Tenants {
    async fn as_acme(&self, m: Method, path: &str, body: Option<Value>) -> common::Resp {
        self.s.call_as(Some(&self.acme), m, path, body).await
    }
}

/// What a caller can compare between two answers: status, code, field and the detail with the
/// caller's own input (`mine`) written as `<x>`.
fn shape(r: &common::Resp, mine: &str) -> (u16, String, Value, String) {
    (
        r.status(),
        r.code().to_string(),
        r.body["field"].clone(),
        r.body["detail"].as_str().unwrap_or("").replace(mine, "<x>"),
    )
}

/// The answer about GLOBEX's object equals the answer that leaks nothing, and names nothing
/// of GLOBEX.
fn same(what: &str, leak: &common::Resp, leak_input: &str, safe: &common::Resp, safe_input: &str) {
    assert!(
        leak.status() >= 400,
        "{what}: {} {}",
        leak.status(),
        leak.body
    );
    assert_eq!(
        shape(leak, leak_input),
        shape(safe, safe_input),
        "{what}: the answer about GLOBEX's object differs from one that leaks nothing\n{}\n{}",
        leak.body,
        safe.body
    );
    let text = leak.body.to_string().replace(leak_input, "");
    for secret in GLOBEX_SECRETS {
        assert!(!text.contains(secret), "{what}: names {secret}: {text}");
    }
}

#[tokio::test]
async fn conflicts_and_validation_never_reveal_another_tenant() {
    let t = tenants().await;
    let a = format!("/api/v1/groups/{ACME}");

    // A MAC provisioned in GLOBEX reads as one provisioned in ACME.
    let dev = |mac: &str| json!({"mac": mac, "model": "polycom-vvx-450"});
    let leak = t
        .as_acme(Method::POST, &format!("{a}/devices"), Some(dev(GLOBEX_MAC)))
        .await;
    let safe = t
        .as_acme(Method::POST, &format!("{a}/devices"), Some(dev(ACME_MAC)))
        .await;
    assert_eq!((leak.status(), leak.code()), (409, "already_exists"));
    same("duplicate MAC", &leak, GLOBEX_MAC, &safe, ACME_MAC);

    // A line port held by GLOBEX's user 2002 reads as one held in ACME.
    t.s.create(
        &format!("{a}/users"),
        json!({"extension": "1002", "sip": {"username": "6035550001_sca2"}}),
    )
    .await;
    let sca = |port: &str| json!({"device": "Back", "line_port": port});
    let scas = format!("{a}/users/1001/shared-call-appearances");
    let leak = t
        .as_acme(Method::POST, &scas, Some(sca("6035550001_sca1")))
        .await;
    let safe = t
        .as_acme(Method::POST, &scas, Some(sca("6035550001_sca2")))
        .await;
    assert_eq!((leak.status(), leak.code()), (409, "line_port_in_use"));
    same(
        "SCA line port held elsewhere",
        &leak,
        "6035550001_sca1",
        &safe,
        "6035550001_sca2",
    );

    // A SIP username that is another tenant's line port.
    let user = |ext: &str, sip: &str| json!({"extension": ext, "sip": {"username": sip}});
    let leak = t
        .as_acme(
            Method::POST,
            &format!("{a}/users"),
            Some(user("1010", "globex-2001")),
        )
        .await;
    let safe = t
        .as_acme(
            Method::POST,
            &format!("{a}/users"),
            Some(user("1010", "acme-1001")),
        )
        .await;
    assert_eq!((leak.status(), leak.code()), (409, "line_port_in_use"));
    same(
        "primary line port held elsewhere",
        &leak,
        "globex-2001",
        &safe,
        "acme-1001",
    );

    // A phone number GLOBEX's user has.
    let tn = |n: &str| json!({"extension": "1011", "phone_number": n});
    let leak = t
        .as_acme(Method::POST, &format!("{a}/users"), Some(tn("6035550002")))
        .await;
    let safe = t
        .as_acme(Method::POST, &format!("{a}/users"), Some(tn("6035550001")))
        .await;
    assert_eq!((leak.status(), leak.code()), (409, "already_exists"));
    same(
        "phone number taken elsewhere",
        &leak,
        "6035550002",
        &safe,
        "6035550001",
    );
    // ... and by PATCH.
    let leak = t
        .as_acme(
            Method::PATCH,
            &format!("{a}/users/1002"),
            Some(json!({"phone_number": "6035550002"})),
        )
        .await;
    let safe = t
        .as_acme(
            Method::PATCH,
            &format!("{a}/users/1002"),
            Some(json!({"phone_number": "6035550001"})),
        )
        .await;
    same(
        "phone number taken elsewhere (PATCH)",
        &leak,
        "6035550002",
        &safe,
        "6035550001",
    );

    // A shared line whose line port (ACME-01_800) a GLOBEX user holds, against one whose port
    // an ACME user holds.
    t.s.create(
        &format!("{a}/users"),
        json!({"extension": "1003", "sip": {"username": "ACME-01_801"}}),
    )
    .await;
    let line = |n: &str| json!({"number": n});
    let leak = t
        .as_acme(
            Method::POST,
            &format!("{a}/shared-lines"),
            Some(line("800")),
        )
        .await;
    let safe = t
        .as_acme(
            Method::POST,
            &format!("{a}/shared-lines"),
            Some(line("801")),
        )
        .await;
    assert_eq!((leak.status(), leak.code()), (409, "line_port_in_use"));
    same(
        "shared-line port held elsewhere",
        &leak,
        "800",
        &safe,
        "801",
    );

    // An SCA on GLOBEX's device reads as one on a device that does not exist (platform
    // tokens still get `cross_group`).
    let on = |d: &str| json!({"device": d});
    let leak = t.as_acme(Method::POST, &scas, Some(on(GLOBEX_MAC))).await;
    let safe = t
        .as_acme(Method::POST, &scas, Some(on("0004f2ffffff")))
        .await;
    assert_eq!(leak.status(), 422);
    same(
        "SCA on another group's device",
        &leak,
        GLOBEX_MAC,
        &safe,
        "0004f2ffffff",
    );
    let platform = t.s.post(&scas, on(GLOBEX_MAC)).await;
    assert_eq!((platform.status(), platform.code()), (422, "cross_group"));
    assert!(
        !platform.body["detail"].as_str().unwrap().contains(GLOBEX),
        "{}",
        platform.body
    );
    // ... and moving an existing endpoint there.
    let x = t.as_acme(Method::POST, &scas, Some(on("Back"))).await;
    assert_eq!(x.status(), 201, "{}", x.body);
    let port = x.body["line_port"].as_str().unwrap().to_string();
    let leak = t
        .as_acme(
            Method::PATCH,
            &format!("{scas}/{port}"),
            Some(on(GLOBEX_MAC)),
        )
        .await;
    let safe = t
        .as_acme(
            Method::PATCH,
            &format!("{scas}/{port}"),
            Some(on("0004f2ffffff")),
        )
        .await;
    same(
        "SCA moved to another group's device",
        &leak,
        GLOBEX_MAC,
        &safe,
        "0004f2ffffff",
    );

    // A shared-line member from GLOBEX reads as an extension that exists nowhere.
    let members = format!("{a}/shared-lines/500/members");
    let leak = t
        .as_acme(Method::PUT, &members, Some(json!([{"extension": "2001"}])))
        .await;
    let safe = t
        .as_acme(Method::PUT, &members, Some(json!([{"extension": "2999"}])))
        .await;
    assert_eq!(leak.status(), 422);
    same(
        "shared-line member of another group",
        &leak,
        "2001",
        &safe,
        "2999",
    );

    // GLOBEX's device by MAC, and GLOBEX's SCA endpoint through ACME's user, read as unknown.
    for (m, body) in [
        (Method::GET, None),
        (Method::PATCH, Some(json!({"name": "x"}))),
        (Method::DELETE, None),
    ] {
        let leak = t
            .as_acme(
                m.clone(),
                &format!("/api/v1/devices/{GLOBEX_MAC}"),
                body.clone(),
            )
            .await;
        let safe = t
            .as_acme(m.clone(), "/api/v1/devices/0004f2ffffff", body)
            .await;
        assert_eq!(leak.status(), 404);
        same(
            &format!("{m} another group's device"),
            &leak,
            GLOBEX_MAC,
            &safe,
            "0004f2ffffff",
        );
    }
    let leak = t
        .as_acme(Method::GET, &format!("{scas}/6035550002_sca1"), None)
        .await;
    let safe = t
        .as_acme(Method::GET, &format!("{scas}/6035550009_sca1"), None)
        .await;
    same(
        "another group's SCA endpoint",
        &leak,
        "6035550002_sca1",
        &safe,
        "6035550009_sca1",
    );
    // Another group's users read as those of a group that does not exist.
    let leak = t
        .as_acme(
            Method::GET,
            &format!("/api/v1/groups/{GLOBEX}/users/2001"),
            None,
        )
        .await;
    let safe = t
        .as_acme(Method::GET, "/api/v1/groups/NOPE-99/users/2001", None)
        .await;
    assert_eq!(leak.status(), 404);
    assert_eq!(shape(&leak, GLOBEX), shape(&safe, "NOPE-99"));
}

#[tokio::test]
async fn a_group_tokens_change_log_has_no_gaps_while_other_tenants_write() {
    let t = tenants().await;
    let a = format!("/api/v1/groups/{ACME}");
    let g = format!("/api/v1/groups/{GLOBEX}");
    for i in 0..5 {
        t.s.call_as(
            Some(&t.acme),
            Method::POST,
            &format!("{a}/users"),
            Some(json!({"extension": format!("13{i:02}")})),
        )
        .await;
        for j in 0..3 {
            let r =
                t.s.call_as(
                    Some(&t.globex),
                    Method::POST,
                    &format!("{g}/users"),
                    Some(json!({"extension": format!("24{i}{j}")})),
                )
                .await;
            assert_eq!(r.status(), 201, "{}", r.body);
        }
    }
    let page = t
        .as_acme(Method::GET, "/api/v1/changes?limit=1000", None)
        .await;
    assert_eq!(page.status(), 200, "{}", page.body);
    let items = page.body["items"].as_array().unwrap();
    let numbers: Vec<u64> = items
        .iter()
        .map(|c| c["group_seq"].as_u64().expect("group_seq"))
        .collect();
    let want: Vec<u64> = (1..=numbers.len() as u64).collect();
    assert_eq!(numbers, want, "ACME's own numbering, without gaps");
    // ACME: group, 1001, Front, Back, line 500, token... and the five users.
    assert!(numbers.len() >= 10, "{}", page.body);
    for c in items {
        assert_eq!(c["group"], ACME);
        assert!(c.get("seq").is_none(), "the global seq is not shown: {c}");
    }
    assert!(page.body.get("last_seq").is_none() && page.body.get("first_seq").is_none());
    assert_eq!(page.body["last_group_seq"], *numbers.last().unwrap());
    // The cursor is in that numbering.
    let next = t
        .as_acme(Method::GET, "/api/v1/changes?since=3&limit=2", None)
        .await;
    let got: Vec<u64> = next.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["group_seq"].as_u64().unwrap())
        .collect();
    assert_eq!(got, vec![4, 5]);
    let end = t
        .as_acme(
            Method::GET,
            &format!("/api/v1/changes?since={}", numbers.len()),
            None,
        )
        .await;
    assert_eq!(end.body["items"], json!([]));
    // The platform token keeps the global, gapless seq.
    let all = t.s.get("/api/v1/changes?limit=1000").await.body;
    let seqs: Vec<u64> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(all["last_seq"], *seqs.last().unwrap());
}

#[tokio::test]
async fn the_group_seq_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_at(dir.path(), |_| {}).await;
    s.create(
        "/api/v1/groups",
        json!({"id": ACME, "sip": {"domain": "acme.example.net"}}),
    )
    .await;
    s.create(
        &format!("/api/v1/groups/{ACME}/users"),
        json!({"extension": "1001"}),
    )
    .await;
    s.shutdown().await;
    let s = TestServer::start_at(dir.path(), |_| {}).await;
    s.create(
        &format!("/api/v1/groups/{ACME}/users"),
        json!({"extension": "1002"}),
    )
    .await;
    let tok = token(&s, ACME).await;
    let page = s
        .call_as(Some(&tok), Method::GET, "/api/v1/changes", None)
        .await
        .body;
    let numbers: Vec<u64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["group_seq"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, vec![1, 2, 3, 4]);
}

#[tokio::test]
async fn healthz_shows_the_seq_to_platform_tokens_only() {
    let t = tenants().await;
    for (who, token) in [
        ("no token", None),
        ("a wrong token", Some("dp_nope_nope")),
        ("a group token", Some(t.acme.as_str())),
    ] {
        let h = t.s.call_as(token, Method::GET, "/healthz", None).await;
        assert_eq!(h.status(), 200);
        assert_eq!(h.body, json!({"status": "ok"}), "{who}");
    }
    let h = t.s.get("/healthz").await;
    assert!(h.body["seq"].as_u64().unwrap() > 10, "{}", h.body);
    // The phone listener's health check says only "ok".
    let p =
        t.s.client
            .get(format!("{}/healthz", t.s.phones))
            .send()
            .await
            .unwrap();
    assert_eq!(p.status(), 200);
    assert_eq!(p.text().await.unwrap(), "ok");
}

async fn raw(t: &Tenants, m: Method, path: &str, body: &str) -> common::Resp {
    let r =
        t.s.client
            .request(m, format!("{}{path}", t.s.admin))
            .bearer_auth(&t.s.token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null);
    common::Resp {
        status,
        body,
        headers,
    }
}

#[tokio::test]
async fn duplicate_json_keys_are_refused_at_any_depth() {
    let t = tenants().await;
    let a = format!("/api/v1/groups/{ACME}");
    for (path, m, body, field) in [
        (
            format!("{a}/users"),
            Method::POST,
            r#"{"extension": "1090", "extension": "1091"}"#,
            "extension",
        ),
        (
            a.clone(),
            Method::PATCH,
            r#"{"sip": {"port": 5060, "port": 5061}}"#,
            "sip.port",
        ),
        (
            format!("{a}/shared-lines/500/members"),
            Method::PUT,
            r#"[{"extension": "1001", "ring": "normal", "extension": "1001"}]"#,
            "[0].extension",
        ),
        (
            format!("/api/v1/devices/{ACME_MAC}/sync"),
            Method::POST,
            r#"{"reboot": false, "reboot": true}"#,
            "reboot",
        ),
        (
            format!("/api/v1/devices/{ACME_MAC}"),
            Method::PATCH,
            r#"{"settings": {"a": "1", "b": "2", "a": "3"}}"#,
            "settings.a",
        ),
    ] {
        let r = raw(&t, m.clone(), &path, body).await;
        assert_eq!(
            (r.status(), r.code(), r.body["field"].as_str()),
            (422, "validation", Some(field)),
            "{m} {path} {body}: {}",
            r.body
        );
        assert!(r.body["detail"].as_str().unwrap().contains(field));
        assert_eq!(r.headers["content-type"], "application/problem+json");
    }
    // Nothing was written.
    assert_eq!(t.s.get(&format!("{a}/users/1090")).await.status(), 404);
    assert_eq!(t.s.get(&format!("{a}/users/1091")).await.status(), 404);
    // The same key in sibling objects is fine.
    let r = raw(
        &t,
        Method::PUT,
        &format!("{a}/shared-lines/500/members"),
        r#"[{"extension": "1001"}]"#,
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.body);
}

/// A value each path parameter cannot be: invalid UTF-8 once decoded, or not a number.
fn malformed(param: &str) -> &'static str {
    if param == "version" {
        "abc"
    } else {
        "%FF"
    }
}

#[tokio::test]
async fn every_route_answers_a_malformed_path_parameter_with_problem_json() {
    let t = tenants().await;
    let doc = t.s.get("/api/v1/openapi.json").await.body;
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        if !path.contains('{') {
            continue;
        }
        for (method, _) in ops.as_object().unwrap() {
            let m: Method = method.to_uppercase().parse().unwrap();
            // Each parameter malformed in turn, the others well-formed.
            let params: Vec<&str> = path
                .split('{')
                .skip(1)
                .map(|p| p.split('}').next().unwrap())
                .collect();
            for bad in &params {
                let mut url = path.clone();
                for p in &params {
                    let v = if p == bad { malformed(p) } else { "x" };
                    url = url.replace(&format!("{{{p}}}"), v);
                }
                let r = raw(&t, m.clone(), &url, "{}").await;
                assert!(
                    (400..500).contains(&r.status()),
                    "{m} {url}: {}",
                    r.status()
                );
                assert_eq!(
                    r.headers["content-type"],
                    "application/problem+json",
                    "{m} {url}: {} {}",
                    r.status(),
                    r.body
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 50, "only {checked} requests");
    // A parameter that does not parse names itself.
    let r =
        t.s.get("/api/v1/models/polycom-vvx-450/templates/x.cfg/versions/abc")
            .await;
    assert_eq!(
        (r.status(), r.code(), r.body["field"].as_str()),
        (400, "bad_request", Some("version")),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn unknown_routes_wrong_methods_and_bad_queries_are_problem_json() {
    let t = tenants().await;
    for path in ["/nope", "/api/v1/nope", "/api/v1/groups/ACME-01/nope"] {
        let r = t.s.get(path).await;
        assert_eq!((r.status(), r.code()), (404, "not_found"), "{path}");
        assert_eq!(r.headers["content-type"], "application/problem+json");
    }
    let r = t.s.delete("/api/v1/changes").await;
    assert_eq!((r.status(), r.code()), (405, "method_not_allowed"));
    assert_eq!(r.headers["content-type"], "application/problem+json");
    assert!(
        r.headers
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("GET")),
        "{:?}",
        r.headers
    );
    for (q, field) in [
        ("/api/v1/changes?since=abc", "since"),
        ("/api/v1/changes?limit=-1", "limit"),
        ("/api/v1/groups?limit=x", "limit"),
        ("/api/v1/changes?bogus=1", "bogus"),
    ] {
        let r = t.s.get(q).await;
        assert_eq!(
            (r.status(), r.code()),
            (422, "validation"),
            "{q}: {}",
            r.body
        );
        assert_eq!(r.headers["content-type"], "application/problem+json");
        assert!(
            r.body["detail"].as_str().unwrap().contains(field),
            "{q}: {}",
            r.body
        );
    }
}
