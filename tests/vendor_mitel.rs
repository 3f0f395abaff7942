//! Mitel 6800i facts over the real HTTPS listener: every Mitel model's files resolve for a
//! factory-fresh phone and its User-Agent (Aastra or Mitel prefix) identifies it, the time zone is
//! Mitel's name or a Custom rule, an expansion-module key carries an SCA as "expmodN keyM".

mod common;

use common::fetch_file as fetch;

use common::phones::{device, group_with_users};
use common::{phone_get, TestServer, G};
use deskprov::catalog::Catalog;
use deskprov::domain::Mac;
use serde_json::json;

/// A real Mitel User-Agent: "<Aastra|Mitel><model> MAC:<00-08-5D-..> V:<firmware>-SIP".
fn user_agent(prefix: &str, code: &str, mac: &Mac) -> String {
    let dashes = mac.colon().replace(':', "-").to_uppercase();
    format!("{prefix}{code} MAC:{dashes} V:5.1.0.2051-SIP")
}

#[tokio::test]
async fn every_mitel_model_resolves_its_files_and_its_user_agent_names_it() {
    let s = TestServer::start().await;
    group_with_users(&s).await;
    let catalog = Catalog::builtin().unwrap();
    let models: Vec<_> = catalog
        .models()
        .filter(|m| m.id.starts_with("mitel-"))
        .collect();
    assert!(models.len() >= 4, "6865i, 6867i, 6869i, 6873i");
    for (i, m) in models.into_iter().enumerate() {
        let code = m.id.trim_start_matches("mitel-");
        for (j, prefix) in ["Aastra", "Mitel"].into_iter().enumerate() {
            let mac = Mac::parse(&format!("00085d{:06x}", 0x900 + 2 * i + j)).unwrap();
            let pw = device(&s, mac.as_str(), &m.id, &format!("mitel-{i}-{j}")).await;
            let ua = user_agent(prefix, code, &mac);
            for common in ["/aastra.cfg".to_string(), format!("/{code}.cfg")] {
                let r = phone_get(&s.client, &s.phones, &common, &ua, None, "MD5", &[]).await;
                assert_eq!(r.status(), 200, "{}: {common}", m.id);
                assert!(!r.text().await.unwrap().contains(&pw));
            }
            let path = format!("/{}.cfg", mac.upper());
            let r = phone_get(&s.client, &s.phones, &path, &ua, None, "MD5", &[]).await;
            assert_eq!(r.status(), 401, "{}", m.id);
            let (status, body) = fetch(&s, &path, &ua, &mac, &pw).await;
            assert_eq!(status, 200, "{}", m.id);
            assert!(body.contains("sip line1 user name: 6035551212"));
            let view = s.get(&format!("/api/v1/devices/{mac}")).await.body;
            assert_eq!(
                view["last_seen"]["model_seen"],
                m.id.as_str(),
                "{ua} names {}",
                m.id
            );
        }
    }
}

#[tokio::test]
async fn the_time_zone_is_mitels_name_or_a_custom_rule() {
    let s = TestServer::start().await;
    group_with_users(&s).await;
    let mac = Mac::parse("00085d000a01").unwrap();
    let pw = device(&s, mac.as_str(), "mitel-6869i", "desk").await;
    let ua = user_agent("Mitel", "6869i", &mac);
    for (tz, expect) in [
        ("America/New_York", vec!["time zone name: US-Eastern"]),
        (
            "Europe/Berlin",
            vec!["time zone name: DE-Berlin", "language 1: lang_de.txt"],
        ),
        (
            "Asia/Tokyo",
            vec![
                "time zone name: Custom",
                "time zone minutes: -540",
                "dst config: 0",
            ],
        ),
        (
            "America/Sao_Paulo",
            vec!["time zone name: Custom", "time zone minutes: 180"],
        ),
        (
            "Australia/Sydney",
            vec![
                "time zone minutes: -600",
                "dst config: 3",
                "dst start month: 10",
                "dst start week: 1",
                "dst start day: 1",
                "dst end month: 4",
            ],
        ),
    ] {
        let r = s
            .patch(
                &format!("/api/v1/groups/{G}"),
                json!({"settings": {"timezone": tz, "language": if tz == "Europe/Berlin" { "de" } else { "en" }}}),
            )
            .await;
        assert_eq!(r.status(), 200, "{tz}");
        let (_, body) = fetch(&s, "/00085D000A01.cfg", &ua, &mac, &pw).await;
        for e in expect {
            assert!(body.contains(e), "{tz}: {e} in\n{body}");
        }
    }
}

#[tokio::test]
async fn an_sca_on_an_expansion_module_key_renders_as_expmod_key() {
    let s = TestServer::start().await;
    group_with_users(&s).await;
    let d = s
        .create(
            &format!("/api/v1/groups/{G}/devices"),
            json!({"mac": "00085d000a02", "name": "reception", "model": "mitel-6865i", "owner": "1001",
                   "expansion_modules": [{"model": "mitel-m685i", "count": 1}]}),
        )
        .await;
    let pw = d["credentials"]["password"].as_str().unwrap().to_string();
    // 6865i: prgkey1-8, then the M685i's 84 keys: key 11 is expmod1 key3.
    s.create(
        &format!("/api/v1/groups/{G}/users/5555/shared-call-appearances"),
        json!({"device": "reception", "key": 11}),
    )
    .await;
    let mac = Mac::parse("00085d000a02").unwrap();
    let ua = user_agent("Aastra", "6865i", &mac);
    let (_, body) = fetch(&s, "/00085D000A02.cfg", &ua, &mac, &pw).await;
    assert!(body.contains("prgkey1 type: line"), "{body}");
    assert!(
        body.contains("expmod1 key3 type: line\nexpmod1 key3 line: 2"),
        "{body}"
    );
    // The 6873i takes the M695, not the M685i.
    let r = s
        .post(
            &format!("/api/v1/groups/{G}/devices"),
            json!({"mac": "00085d000a03", "name": "big", "model": "mitel-6873i",
                   "expansion_modules": [{"model": "mitel-m685i", "count": 1}]}),
        )
        .await;
    assert_eq!(r.status(), 422);
}
