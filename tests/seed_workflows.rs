//! The admin guides in shared/seeds/, end to end through the HTTPS admin API.

mod common;

use common::{seed, TestServer, G};
use serde_json::json;

/// Guide "Shared Call Appearance": add / edit / delete an endpoint, both line-port forms, a
/// duplicate line port, and a device in another group.
#[tokio::test]
async fn shared_call_appearance_guide() {
    let s = TestServer::start().await;
    seed(&s).await;
    let scas = format!("/api/v1/groups/{G}/users/1001/shared-call-appearances");

    // Add: pick the Device Name, line port = 10-digit TN + _sca1.
    let r = s
        .post(
            &scas,
            json!({"device": "Desk 5555", "line_port": "6035551212_sca1", "label": "Ada"}),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.body);
    assert_eq!(
        r.headers["location"],
        format!("{scas}/6035551212_sca1").as_str()
    );
    assert_eq!(r.body["line_port"], "6035551212_sca1");
    assert_eq!(r.body["device"], "Desk 5555");
    assert_eq!(r.body["key"], 2, "key 1 is the owner's line");
    assert_eq!(r.body["active"], true);
    assert_eq!(r.body["allow_origination"], true);
    assert_eq!(r.body["allow_termination"], true);

    // The device's derived layout shows the appearance, flagged shared.
    let d = s.get("/api/v1/devices/805ec0000002").await.body;
    let apps = d["layout"]["appearances"].as_array().unwrap();
    assert_eq!(apps.len(), 2);
    assert_eq!(apps[0]["kind"], "primary");
    assert_eq!(apps[0]["line_port"], "ZZZ1900111-01_5555");
    assert_eq!(apps[1]["kind"], "sca");
    assert_eq!(apps[1]["line_port"], "6035551212_sca1");
    assert_eq!(apps[1]["keys"], json!([2]));

    // Line Port ID must be unique across the platform.
    let r = s
        .post(
            &scas,
            json!({"device": "Lobby", "line_port": "6035551212_sca1"}),
        )
        .await;
    assert_eq!((r.status(), r.code()), (409, "line_port_in_use"));
    assert!(r.body["detail"]
        .as_str()
        .unwrap()
        .contains("Line Port ID 6035551212_sca1 is already in use"));
    assert_eq!(
        r.headers["content-type"], "application/problem+json",
        "RFC 9457"
    );

    // Edit: select the endpoint, modify, save.
    let r = s
        .patch(
            &format!("{scas}/6035551212_sca1"),
            json!({"label": "Front desk", "key": 5}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.body);
    assert_eq!(
        (r.body["label"].as_str(), r.body["key"].as_u64()),
        (Some("Front desk"), Some(5))
    );
    let r = s.get(&format!("{scas}/6035551212_sca1")).await;
    assert_eq!(r.body["key"], 5);

    // A user without a 10-digit TN: GroupID_EXT_sca#.
    let r = s
        .post(
            &format!("/api/v1/groups/{G}/users/5555/shared-call-appearances"),
            json!({"device": "Reception", "line_port": "ZZZ1900111-01_5555_sca1"}),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.body);
    // ...and the wrong form for that user.
    let r = s
        .post(
            &format!("/api/v1/groups/{G}/users/5555/shared-call-appearances"),
            json!({"device": "Lobby", "line_port": "6035551212_sca2"}),
        )
        .await;
    assert_eq!((r.status(), r.code()), (422, "invalid_line_port"));

    // The line cannot be shared across groups.
    s.create(
        "/api/v1/groups",
        json!({"id": "OTHER-01", "sip": {"domain": "other.example.net"}}),
    )
    .await;
    s.create(
        "/api/v1/groups/OTHER-01/devices",
        json!({"mac": "0004f2000099", "name": "Elsewhere", "model": "polycom-vvx-450"}),
    )
    .await;
    let r = s.post(&scas, json!({"device": "0004f2000099"})).await;
    assert_eq!((r.status(), r.code()), (422, "cross_group"));

    // Delete: the endpoint goes, the device no longer shows it.
    let r = s.delete(&format!("{scas}/6035551212_sca1")).await;
    assert_eq!(r.status(), 204);
    let r = s.get(&format!("{scas}/6035551212_sca1")).await;
    assert_eq!((r.status(), r.code()), (404, "not_found"));
    let d = s.get("/api/v1/devices/805ec0000002").await.body;
    assert_eq!(d["layout"]["appearances"].as_array().unwrap().len(), 1);

    // The change log recorded each step against the touched device.
    let log = s.get("/api/v1/changes?since=0&limit=1000").await.body;
    let sca_entries: Vec<_> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"].as_str().unwrap().starts_with("sca."))
        .map(|c| {
            (
                c["action"].as_str().unwrap().to_string(),
                c["devices"].clone(),
            )
        })
        .collect();
    assert_eq!(
        sca_entries,
        vec![
            ("sca.create".to_string(), json!(["805ec0000002"])),
            ("sca.update".to_string(), json!(["805ec0000002"])),
            ("sca.create".to_string(), json!(["0004f2000001"])),
            ("sca.delete".to_string(), json!(["805ec0000002"])),
        ]
    );
}

/// Guide "Hot Desk User Supports Shared Lines": a hot-desk (virtual) user, shared lines with
/// a 2–5 digit number, direct dial, members with button and ring option, and licences.
#[tokio::test]
async fn hot_desk_user_with_shared_lines_guide() {
    let s = TestServer::start().await;
    seed(&s).await;
    // The guide's licence count is 20; use 2 to reach the limit quickly.
    let r = s
        .patch(
            &format!("/api/v1/groups/{G}"),
            json!({"shared_line_licenses": 2}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.body);

    // Register a Hot Desk User as a virtual user.
    let u = s
        .create(
            &format!("/api/v1/groups/{G}/users"),
            json!({"extension": "0901", "last_name": "0901", "kind": "hot_desk"}),
        )
        .await;
    assert_eq!(u["kind"], "hot_desk");
    assert_eq!(u["display_name"], "0901");

    // Shared line 555 with the hot-desk user and 1001 as members.
    let lines = format!("/api/v1/groups/{G}/shared-lines");
    let r = s
        .post(
            &lines,
            json!({
                "number": "555", "direct_dial": "024801028", "autodial_digits": "12345",
                "forward_to_voicemail": false,
                "members": [
                    {"extension": "0901", "button": 3, "ring": "ring"},
                    {"extension": "1001", "ring": "delayed"}
                ]
            }),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.body);
    assert_eq!(r.body["line_port"], "ZZZ1900111-01_555");
    assert!(r.body["password"].as_str().unwrap().len() >= 16);
    assert!(s
        .get(&format!("{lines}/555"))
        .await
        .body
        .get("password")
        .is_none());

    // Numbers are 2–5 digits and unique among shared lines and extensions.
    let r = s.post(&lines, json!({"number": "5"})).await;
    assert_eq!((r.status(), r.code()), (422, "validation"));
    let r = s.post(&lines, json!({"number": "1001"})).await;
    assert_eq!((r.status(), r.code()), (409, "already_exists"));
    s.create(&lines, json!({"number": "3748", "description": "test"}))
        .await;
    // A third line exceeds the licences.
    let r = s.post(&lines, json!({"number": "3000"})).await;
    assert_eq!((r.status(), r.code()), (409, "no_license"));

    // 1001's phone shows the shared line on the first free key, with the delayed ring.
    let d = s.get("/api/v1/devices/0004f2000001").await.body;
    let apps = d["layout"]["appearances"].as_array().unwrap();
    assert_eq!(apps[1]["kind"], "shared_line");
    assert_eq!(apps[1]["line_port"], "ZZZ1900111-01_555");
    assert_eq!(apps[1]["keys"], json!([2]));
    assert_eq!(apps[1]["ring"], "delayed");

    // The hot-desk user logs in to the lobby phone: its line first, the shared line on key 3.
    let r = s
        .put(
            "/api/v1/devices/0004f2000003/hot-desk",
            json!({"extension": "0901"}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.body);
    assert_eq!(r.body["hot_desk"], "0901");
    let apps = r.body["layout"]["appearances"].as_array().unwrap().clone();
    assert_eq!(apps[0]["line_port"], "ZZZ1900111-01_0901");
    assert_eq!(apps[1]["line_port"], "ZZZ1900111-01_555");
    assert_eq!(apps[1]["keys"], json!([3]));
    // A standard user cannot hot-desk.
    let r = s
        .put(
            "/api/v1/devices/0004f2000003/hot-desk",
            json!({"extension": "5555"}),
        )
        .await;
    assert_eq!((r.status(), r.code()), (422, "validation"));
    // Members: GET and PUT.
    let r = s
        .put(
            &format!("{lines}/555/members"),
            json!([{"extension": "0901", "button": 4, "ring": "no_ring"}]),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.body);
    assert_eq!(
        s.get(&format!("{lines}/555/members")).await.body,
        json!([{"extension": "0901", "button": 4, "ring": "no_ring"}])
    );
    // Log out: the lobby phone is back to no primary line.
    assert_eq!(
        s.delete("/api/v1/devices/0004f2000003/hot-desk")
            .await
            .status(),
        204
    );
    let d = s.get("/api/v1/devices/0004f2000003").await.body;
    assert_eq!(d["hot_desk"], serde_json::Value::Null);
    assert_eq!(d["layout"]["appearances"], json!([]));
    let log = s.get("/api/v1/changes?limit=1000").await.body;
    let actions: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"device.hot_desk_login") && actions.contains(&"device.hot_desk_logout")
    );
}

/// Guide "Extensions": edit the profile, features (voicemail, call waiting, monitoring,
/// forwarding, presence), duplicate, reset password, delete.
#[tokio::test]
async fn extensions_guide() {
    let s = TestServer::start().await;
    seed(&s).await;
    let u = format!("/api/v1/groups/{G}/users/5555");

    let r = s
        .patch(
            &u,
            json!({
                "first_name": "Robert", "display_name": "Reception Bob",
                "features": {
                    "call_waiting": true, "dnd": false, "anonymous_outgoing": true, "presence": true,
                    "voicemail": {"enabled": true, "access_number": "*97"},
                    "forwarding": {"always": "6035550000", "no_answer": "6035550001", "no_answer_ring_seconds": 20},
                    "monitoring": ["1001"]
                }
            }),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.body);
    assert_eq!(r.body["display_name"], "Reception Bob");
    assert_eq!(r.body["features"]["voicemail"]["access_number"], "*97");
    assert_eq!(r.body["features"]["monitoring"], json!(["1001"]));
    assert!(
        r.body["sip"].get("password").is_none(),
        "never returned by reads"
    );
    // Merge-patch null clears an optional field.
    let r = s.patch(&u, json!({"display_name": null})).await;
    assert_eq!(r.body["display_name"], "Robert Stone");
    // Monitoring an unknown extension is refused.
    let r = s
        .patch(&u, json!({"features": {"monitoring": ["7777"]}}))
        .await;
    assert_eq!((r.status(), r.code()), (422, "validation"));
    // A forwarding destination must be dialable.
    let r = s
        .patch(
            &u,
            json!({"features": {"forwarding": {"busy": "not a number"}}}),
        )
        .await;
    assert_eq!(
        (r.status(), r.code(), r.body["field"].as_str()),
        (422, "validation", Some("features.forwarding.busy"))
    );

    // Duplicate: settings copied, fresh credentials, no appearances.
    s.create(
        &format!("{u}/shared-call-appearances"),
        json!({"device": "Lobby"}),
    )
    .await;
    let r = s
        .post(
            &format!("{u}/duplicate"),
            json!({"extension": "5556", "first_name": "Copy"}),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.body);
    assert_eq!(
        r.headers["location"],
        format!("/api/v1/groups/{G}/users/5556").as_str()
    );
    assert_eq!(r.body["features"]["forwarding"]["always"], "6035550000");
    assert_eq!(r.body["sca_endpoints"], 0);
    assert_eq!(r.body["sip"]["username"], "ZZZ1900111-01_5556");
    assert!(r.body["sip"]["password"].as_str().unwrap().len() >= 16);
    let r = s
        .post(&format!("{u}/duplicate"), json!({"extension": "5556"}))
        .await;
    assert_eq!((r.status(), r.code()), (409, "already_exists"));

    // Reset password: a new one, shown once.
    let r = s.post(&format!("{u}/sip-password"), json!({})).await;
    assert_eq!(r.status(), 200);
    let p1 = r.body["password"].as_str().unwrap().to_string();
    let p2 = s.post(&format!("{u}/sip-password"), json!({})).await.body["password"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(p1, p2);

    // Phone numbers are unique on the platform.
    let r = s.patch(&u, json!({"phone_number": "6035551212"})).await;
    assert_eq!((r.status(), r.code()), (409, "already_exists"));

    // Delete: its SCA endpoints go too, and its phone loses its owner.
    assert_eq!(s.delete(&u).await.status(), 204);
    assert_eq!(s.get(&u).await.status(), 404);
    let d = s.get("/api/v1/devices/805ec0000002").await.body;
    assert_eq!(d["owner"], serde_json::Value::Null);
    let lobby = s.get("/api/v1/devices/0004f2000003").await.body;
    assert_eq!(lobby["layout"]["appearances"], json!([]));
    let r = s.get(&format!("/api/v1/groups/{G}/users/1001")).await;
    assert_eq!(r.status(), 200);
}
