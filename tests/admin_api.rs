//! The admin API over HTTPS: one test per rule and error code, tokens, pagination, limits.

mod common;

use common::{seed, TestServer, G};
use reqwest::Method;
use serde_json::json;

fn scas(ext: &str) -> String {
    format!("/api/v1/groups/{G}/users/{ext}/shared-call-appearances")
}

#[tokio::test]
async fn sca_errors_have_their_spec_codes() {
    let s = TestServer::start_with(|c| c.rules.max_sca_per_user = 3).await;
    seed(&s).await;
    // invalid_line_port
    for bad in [
        "6035551212",
        "6035551212_sca0",
        "6035551212-sca1",
        "ZZZ1900111-01_1001_sca1",
    ] {
        let r = s
            .post(&scas("1001"), json!({"device": "Lobby", "line_port": bad}))
            .await;
        assert_eq!((r.status(), r.code()), (422, "invalid_line_port"), "{bad}");
    }
    // already_on_device: the owner's own phone, then twice on one device
    let r = s.post(&scas("1001"), json!({"device": "Reception"})).await;
    assert_eq!((r.status(), r.code()), (409, "already_on_device"));
    s.create(&scas("1001"), json!({"device": "Lobby"})).await;
    let r = s.post(&scas("1001"), json!({"device": "Lobby"})).await;
    assert_eq!((r.status(), r.code()), (409, "already_on_device"));
    // key_unavailable: taken, out of range
    let r = s
        .post(&scas("5555"), json!({"device": "Lobby", "key": 1}))
        .await;
    assert_eq!((r.status(), r.code()), (422, "key_unavailable"));
    let r = s
        .post(&scas("5555"), json!({"device": "Lobby", "key": 13}))
        .await;
    assert_eq!(
        (r.status(), r.code()),
        (422, "key_unavailable"),
        "VVX 411 has 12 keys"
    );
    // unknown device
    let r = s.post(&scas("5555"), json!({"device": "Nowhere"})).await;
    assert_eq!(
        (r.status(), r.code(), r.body["field"].as_str()),
        (422, "validation", Some("device"))
    );
    // sca_limit (configured 3)
    s.create(&scas("1001"), json!({"device": "Desk 5555"}))
        .await;
    for ext in ["2001", "2002"] {
        s.create(
            &format!("/api/v1/groups/{G}/users"),
            json!({"extension": ext}),
        )
        .await;
        s.create(&format!("/api/v1/groups/{G}/devices"), json!({"mac": format!("0004f2{ext}00"), "name": ext, "model": "polycom-vvx-450", "owner": ext})).await;
    }
    s.create(&scas("1001"), json!({"device": "2001"})).await;
    let r = s.post(&scas("1001"), json!({"device": "2002"})).await;
    assert_eq!((r.status(), r.code()), (409, "sca_limit"));
}

#[tokio::test]
async fn no_free_key_when_a_phone_is_full() {
    let s = TestServer::start().await;
    seed(&s).await;
    // Fill the Lobby VVX 411 (12 keys) with programmable keys except key 12.
    let keys: Vec<_> = (1..=11)
        .map(|k| json!({"key": k, "type": "speed_dial", "value": "100"}))
        .collect();
    let r = s
        .patch("/api/v1/devices/0004f2000003", json!({"keys": keys}))
        .await;
    assert_eq!(r.status(), 200, "{}", r.body);
    let r = s.create(&scas("1001"), json!({"device": "Lobby"})).await;
    assert_eq!(r["key"], 12);
    let r = s.post(&scas("5555"), json!({"device": "Lobby"})).await;
    assert_eq!((r.status(), r.code()), (422, "no_free_key"));
    // A programmable key outside the model's range.
    let r = s
        .patch(
            "/api/v1/devices/0004f2000001",
            json!({"keys": [{"key": 40, "type": "blf", "value": "5555"}]}),
        )
        .await;
    assert_eq!((r.status(), r.code()), (422, "key_unavailable"));
}

#[tokio::test]
async fn group_rules_not_empty_cascade_and_validation() {
    let s = TestServer::start().await;
    seed(&s).await;
    let r = s
        .post(
            "/api/v1/groups",
            json!({"id": G, "sip": {"domain": "x.example"}}),
        )
        .await;
    assert_eq!((r.status(), r.code()), (409, "already_exists"));
    let r = s
        .post(
            "/api/v1/groups",
            json!({"id": "-bad", "sip": {"domain": "x.example"}}),
        )
        .await;
    assert_eq!(
        (r.status(), r.code(), r.body["field"].as_str()),
        (422, "validation", Some("id"))
    );
    let r = s.post("/api/v1/groups", json!({"id": "g2"})).await;
    assert_eq!(
        (r.status(), r.code()),
        (422, "validation"),
        "sip.domain is required"
    );
    let r = s.delete(&format!("/api/v1/groups/{G}")).await;
    assert_eq!((r.status(), r.code()), (409, "not_empty"));
    let r = s
        .call(
            Method::DELETE,
            &format!("/api/v1/groups/{G}?cascade=true"),
            None,
        )
        .await;
    assert_eq!(r.status(), 204);
    assert_eq!(s.get(&format!("/api/v1/groups/{G}")).await.status(), 404);
    assert_eq!(s.get("/api/v1/devices/0004f2000001").await.status(), 404);
    // Lowering licences below the lines in use is a conflict.
    s.create(
        "/api/v1/groups",
        json!({"id": "g3", "sip": {"domain": "x.example"}, "shared_line_licenses": 1}),
    )
    .await;
    s.create("/api/v1/groups/g3/shared-lines", json!({"number": "10"}))
        .await;
    let r = s
        .patch("/api/v1/groups/g3", json!({"shared_line_licenses": 0}))
        .await;
    assert_eq!((r.status(), r.code()), (409, "no_license"));
}

#[tokio::test]
async fn unknown_fields_are_422_naming_the_field() {
    let s = TestServer::start().await;
    seed(&s).await;
    let r = s
        .post(
            &format!("/api/v1/groups/{G}/users"),
            json!({"extension": "3001", "colour": "red"}),
        )
        .await;
    assert_eq!((r.status(), r.code()), (422, "validation"));
    assert!(
        r.body["detail"].as_str().unwrap().contains("colour"),
        "{}",
        r.body
    );
    // Nested objects too.
    let r = s
        .patch(
            &format!("/api/v1/groups/{G}/users/1001"),
            json!({"features": {"dnd": true, "x": 1}}),
        )
        .await;
    assert_eq!((r.status(), r.code()), (422, "validation"));
}

#[tokio::test]
async fn bad_values_name_their_field() {
    let s = TestServer::start().await;
    seed(&s).await;
    let r = s
        .post(
            &format!("/api/v1/groups/{G}/users"),
            json!({"extension": "1"}),
        )
        .await;
    assert_eq!(
        (r.status(), r.body["field"].as_str()),
        (422, Some("extension"))
    );
    let r = s
        .post(
            &format!("/api/v1/groups/{G}/devices"),
            json!({"mac": "zz", "model": "polycom-vvx-450"}),
        )
        .await;
    assert_eq!((r.status(), r.body["field"].as_str()), (422, Some("mac")));
    let r = s
        .post(
            &format!("/api/v1/groups/{G}/devices"),
            json!({"mac": "0004f2aaaaaa", "model": "nokia-3310"}),
        )
        .await;
    assert_eq!(
        (r.status(), r.code(), r.body["field"].as_str()),
        (422, "validation", Some("model"))
    );
}

#[tokio::test]
async fn control_characters_are_refused_so_they_cannot_inject_config_lines() {
    let s = TestServer::start().await;
    seed(&s).await;
    let r = s
        .patch(
            &format!("/api/v1/groups/{G}/users/1001"),
            json!({"last_name": "x\nreg.1.password=y"}),
        )
        .await;
    assert_eq!(
        (r.status(), r.body["field"].as_str()),
        (422, Some("last_name"))
    );
}

/// POSTs a raw body to `/api/v1/groups` with a content type.
async fn post_raw(s: &TestServer, content_type: &str, body: String) -> reqwest::Response {
    s.client
        .post(format!("{}/api/v1/groups", s.admin))
        .bearer_auth(&s.token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_body_that_is_not_json_is_400_problem_json() {
    let s = TestServer::start().await;
    let r = post_raw(&s, "application/json", "{nope".into()).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "invalid_json");
}

#[tokio::test]
async fn a_body_not_sent_as_json_is_415() {
    let s = TestServer::start().await;
    let r = post_raw(&s, "text/plain", "{}".into()).await;
    assert_eq!(r.status(), 415);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_problem_json() {
    let s = TestServer::start().await;
    let big = format!("{{\"id\":\"g9\",\"name\":\"{}\"}}", "x".repeat(2 << 20));
    let r = post_raw(&s, "application/json", big).await;
    assert_eq!(r.status(), 413);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "payload_too_large");
}

#[tokio::test]
async fn an_unknown_route_is_404_and_a_wrong_method_405() {
    let s = TestServer::start().await;
    let r = s.get("/api/v1/nothing").await;
    assert_eq!((r.status(), r.code()), (404, "not_found"));
    assert_eq!(
        s.call(Method::PUT, "/api/v1/groups", Some(json!({})))
            .await
            .status(),
        405
    );
}

#[tokio::test]
async fn create_answers_201_with_location_and_secrets_are_write_only() {
    let s = TestServer::start().await;
    seed(&s).await;
    let r = s
        .post(
            &format!("/api/v1/groups/{G}/devices"),
            json!({"mac": "00-15-65-AA-BB-CC", "name": "Boardroom", "model": "yealink-t46u"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers["location"], "/api/v1/devices/001565aabbcc");
    assert_eq!(r.body["credentials"]["username"], "001565aabbcc");
    let pw = r.body["credentials"]["password"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(pw.len() >= 16);
    let d = s.get("/api/v1/devices/00:15:65:aa:bb:cc").await;
    assert_eq!(d.status(), 200, "any MAC form finds the device");
    assert!(d.body.get("credentials").is_none());
    assert!(!d.body.to_string().contains(&pw));
    let r = s
        .post("/api/v1/devices/001565aabbcc/credentials", json!({}))
        .await;
    assert_eq!(r.status(), 200);
    assert_ne!(r.body["password"].as_str().unwrap(), pw);
    // Same MAC again, any form → 409; same name in the group → 409.
    let r = s
        .post(
            &format!("/api/v1/groups/{G}/devices"),
            json!({"mac": "001565aabbcc", "model": "yealink-t46u"}),
        )
        .await;
    assert_eq!((r.status(), r.code()), (409, "already_exists"));
    let r = s
        .post(
            &format!("/api/v1/groups/{G}/devices"),
            json!({"mac": "001565aabbcd", "name": "Boardroom", "model": "yealink-t46u"}),
        )
        .await;
    assert_eq!((r.status(), r.code()), (409, "already_exists"));
    // User passwords: shown on create only; a given one is used.
    let r = s
        .post(
            &format!("/api/v1/groups/{G}/users"),
            json!({"extension": "4000", "sip": {"password": "correct-horse-battery"}}),
        )
        .await;
    assert_eq!(r.body["sip"]["password"], "correct-horse-battery");
    let r = s.get(&format!("/api/v1/groups/{G}/users/4000")).await;
    assert!(!r.body.to_string().contains("correct-horse-battery"));
    let r = s
        .post(
            &format!("/api/v1/groups/{G}/users"),
            json!({"extension": "4001", "sip": {"password": "short"}}),
        )
        .await;
    assert_eq!(
        (r.status(), r.body["field"].as_str()),
        (422, Some("sip.password"))
    );
}

#[tokio::test]
async fn lists_are_ordered_and_paginated() {
    let s = TestServer::start().await;
    seed(&s).await;
    for e in ["3003", "3001", "3002", "2999"] {
        s.create(
            &format!("/api/v1/groups/{G}/users"),
            json!({"extension": e}),
        )
        .await;
    }
    let r = s.get(&format!("/api/v1/groups/{G}/users?limit=2")).await;
    let exts = |r: &common::Resp| {
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["extension"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(exts(&r), vec!["1001", "2999"]);
    let next = r.body["next"].as_str().unwrap().to_string();
    let r = s
        .get(&format!("/api/v1/groups/{G}/users?limit=2&after={next}"))
        .await;
    assert_eq!(exts(&r), vec!["3001", "3002"]);
    let next = r.body["next"].as_str().unwrap().to_string();
    let r = s
        .get(&format!("/api/v1/groups/{G}/users?limit=2&after={next}"))
        .await;
    assert_eq!(exts(&r), vec!["3003", "5555"]);
    assert!(r.body["next"].is_null());
    let r = s.get(&format!("/api/v1/groups/{G}/users?limit=0")).await;
    assert_eq!((r.status(), r.code()), (422, "validation"));
    let r = s.get(&format!("/api/v1/groups/{G}/users?limit=abc")).await;
    assert_eq!((r.status(), r.code()), (422, "validation"));
}

#[tokio::test]
async fn group_tokens_see_only_their_group() {
    let s = TestServer::start().await;
    seed(&s).await;
    s.create(
        "/api/v1/groups",
        json!({"id": "OTHER-01", "sip": {"domain": "other.example.net"}}),
    )
    .await;
    s.create(
        "/api/v1/groups/OTHER-01/users",
        json!({"extension": "1001"}),
    )
    .await;
    s.create(
        "/api/v1/groups/OTHER-01/devices",
        json!({"mac": "0004f2000099", "model": "polycom-vvx-450"}),
    )
    .await;
    let t = s
        .create(
            "/api/v1/tokens",
            json!({"name": "other admin", "group": "OTHER-01"}),
        )
        .await;
    let tok = t["token"].as_str().unwrap().to_string();
    assert_eq!(t["group"], "OTHER-01");
    assert!(
        s.get("/api/v1/tokens")
            .await
            .body
            .to_string()
            .find(&tok)
            .is_none(),
        "secret shown once"
    );

    let as_other = |m: Method, p: &str, b: Option<serde_json::Value>| {
        let (tok, p) = (tok.clone(), p.to_string());
        let s = &s;
        async move { s.call_as(Some(&tok), m, &p, b).await }
    };
    // Its own group works.
    assert_eq!(
        as_other(Method::GET, "/api/v1/groups/OTHER-01/users/1001", None)
            .await
            .status(),
        200
    );
    assert_eq!(
        as_other(Method::GET, "/api/v1/devices/0004f2000099", None)
            .await
            .status(),
        200
    );
    let r = as_other(Method::GET, "/api/v1/groups", None).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    // Every other group is 404, reads and writes alike.
    for (m, p, b) in [
        (Method::GET, format!("/api/v1/groups/{G}"), None),
        (Method::GET, format!("/api/v1/groups/{G}/users"), None),
        (Method::GET, format!("/api/v1/groups/{G}/users/1001"), None),
        (
            Method::GET,
            "/api/v1/devices/0004f2000001".to_string(),
            None,
        ),
        (
            Method::PATCH,
            "/api/v1/devices/0004f2000001".to_string(),
            Some(json!({"name": "x"})),
        ),
        (
            Method::POST,
            format!("/api/v1/groups/{G}/users"),
            Some(json!({"extension": "7000"})),
        ),
        (
            Method::DELETE,
            format!("/api/v1/groups/{G}/users/5555"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/groups/{G}/users/1001/shared-call-appearances"),
            Some(json!({"device": "Lobby"})),
        ),
        (
            Method::GET,
            format!("/api/v1/groups/{G}/shared-lines"),
            None,
        ),
    ] {
        let r = as_other(m.clone(), &p, b).await;
        assert_eq!((r.status(), r.code()), (404, "not_found"), "{m} {p}");
    }
    // Platform-only operations are 403.
    assert_eq!(
        as_other(
            Method::POST,
            "/api/v1/groups",
            Some(json!({"id": "x", "sip": {"domain": "d"}}))
        )
        .await
        .status(),
        403
    );
    assert_eq!(
        as_other(Method::GET, "/api/v1/tokens", None).await.status(),
        403
    );
    // Its change log holds its group's entries only.
    let r = as_other(Method::GET, "/api/v1/changes?limit=1000", None).await;
    assert!(r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["group"] == "OTHER-01"));
    assert!(!r.body["items"].as_array().unwrap().is_empty());
    // No token, a bad token, a revoked token → 401.
    assert_eq!(
        s.call_as(None, Method::GET, "/api/v1/groups", None)
            .await
            .status(),
        401
    );
    let r = s
        .call_as(
            Some("dp_00000000_nope"),
            Method::GET,
            "/api/v1/groups",
            None,
        )
        .await;
    assert_eq!((r.status(), r.code()), (401, "unauthorized"));
    assert!(r.headers.contains_key("www-authenticate"));
    assert_eq!(
        s.delete(&format!("/api/v1/tokens/{}", t["id"].as_str().unwrap()))
            .await
            .status(),
        204
    );
    assert_eq!(
        as_other(Method::GET, "/api/v1/groups", None).await.status(),
        401
    );
}

#[tokio::test]
async fn change_log_is_gapless_and_lists_touched_devices() {
    let s = TestServer::start().await;
    seed(&s).await;
    s.create(&scas("1001"), json!({"device": "Lobby"})).await;
    // Renaming 1001 touches its own phone and the phone with its SCA.
    s.patch(
        &format!("/api/v1/groups/{G}/users/1001"),
        json!({"first_name": "Augusta"}),
    )
    .await;
    // A group setting touches every device of the group.
    s.patch(
        &format!("/api/v1/groups/{G}"),
        json!({"settings": {"ntp": "pool.ntp.org"}}),
    )
    .await;
    let log = s.get("/api/v1/changes?since=0&limit=1000").await.body;
    let items = log["items"].as_array().unwrap();
    let seqs: Vec<u64> = items.iter().map(|c| c["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "gapless from 1"
    );
    assert_eq!(log["last_seq"].as_u64().unwrap(), *seqs.last().unwrap());
    let rename = items.iter().find(|c| c["action"] == "user.update").unwrap();
    assert_eq!(rename["devices"], json!(["0004f2000001", "0004f2000003"]));
    assert_eq!(rename["group"], G);
    assert_eq!(rename["subject"], "1001");
    assert!(rename["actor"].as_str().unwrap().starts_with("token:"));
    let setting = items
        .iter()
        .find(|c| c["action"] == "group.update")
        .unwrap();
    assert_eq!(setting["devices"].as_array().unwrap().len(), 3);
    // The device's revision is the last seq that touched it.
    let d = s.get("/api/v1/devices/0004f2000001").await.body;
    assert_eq!(d["revision"], setting["seq"]);
    // since= and limit= page through.
    let r = s
        .get(&format!("/api/v1/changes?since={}&limit=2", seqs[2]))
        .await
        .body;
    let got: Vec<u64> = r["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(got, vec![seqs[3], seqs[4]]);
}

#[tokio::test]
async fn changes_since_the_largest_seq_is_an_empty_page_not_a_fault() {
    let s = TestServer::start().await;
    s.create(
        "/api/v1/groups",
        serde_json::json!({"id": "g1", "sip": {"domain": "d.example"}}),
    )
    .await;
    let r = s
        .get(&format!("/api/v1/changes?since={}&limit=1", u64::MAX))
        .await;
    assert_eq!(r.status(), 200, "{}", r.body);
    assert_eq!(r.body["items"], serde_json::json!([]));
}

#[tokio::test]
async fn models_are_listed_and_described() {
    let s = TestServer::start().await;
    let r = s.get("/api/v1/models").await;
    let ids: Vec<&str> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    // The catalogue at real breadth: at least 30 models, every one of the 7 desk-phone families
    // and the softphone family.
    assert!(ids.len() >= 30, "{} models: {ids:?}", ids.len());
    let families: std::collections::BTreeSet<&str> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["family"].as_str().unwrap())
        .collect();
    assert_eq!(families.len(), 8, "{families:?}");
    for id in [
        "polycom-vvx-450",
        "yealink-t54w",
        "cisco-cp-8851-3pcc",
        "grandstream-grp2614",
        "snom-d785",
        "fanvil-x6u",
        "mitel-6867i",
        "linphone",
    ] {
        assert!(ids.contains(&id), "{id}");
    }
    let m = s.get("/api/v1/models/cisco-cp-8851-3pcc").await.body;
    assert_eq!(
        (m["line_keys"].as_u64(), m["notify"]["resync"].as_str()),
        (Some(10), Some("resync"))
    );
    assert_eq!(s.get("/api/v1/models/nope").await.status(), 404);
}

#[tokio::test]
async fn openapi_documents_every_resource_without_a_token() {
    let s = TestServer::start().await;
    let doc = s
        .call_as(None, Method::GET, "/api/v1/openapi.json", None)
        .await
        .body;
    assert_eq!(doc["openapi"], "3.1.0");
    for p in [
        "/api/v1/groups/{group}/users/{ext}/shared-call-appearances/{line_port}",
        "/api/v1/groups/{group}/shared-lines/{number}/members",
        "/api/v1/devices/{mac}/hot-desk",
        "/api/v1/changes",
        "/api/v1/tokens/{id}",
    ] {
        assert!(
            doc["paths"].get(p).is_some(),
            "{p} missing from openapi.json"
        );
    }
}

#[tokio::test]
async fn healthz_answers_ok_without_a_token() {
    let s = TestServer::start().await;
    let h = s.call_as(None, Method::GET, "/healthz", None).await;
    assert_eq!((h.status(), h.body["status"].as_str()), (200, Some("ok")));
}
