//! Fanvil X facts over the real HTTPS listener: every Fanvil model's files resolve for a
//! factory-fresh phone and its User-Agent identifies it, `<Version>` rises with every change of
//! the device's files, the time zone is the offset and DST rule, an EXT20 sidecar key carries an
//! SCA.

mod common;

use common::fetch_file as fetch;

use common::phones::{device, group_with_users};
use common::{phone_get, TestServer, G};
use deskprov::catalog::Catalog;
use deskprov::domain::Mac;
use serde_json::json;

/// A real Fanvil User-Agent: "Fanvil <model> <firmware> <mac>" (wazo-provd-plugins).
fn user_agent(code: &str, mac: &Mac) -> String {
    format!("Fanvil {code} 2.12.16.17 {mac}")
}

/// The `<Version>` of a rendered `<mac>.cfg`.
fn version(cfg: &str) -> String {
    let start = cfg.find("<Version>").expect("a <Version>") + "<Version>".len();
    cfg[start..].split('<').next().unwrap().to_string()
}

#[tokio::test]
async fn every_fanvil_model_resolves_its_files_and_its_user_agent_names_it() {
    let s = TestServer::start().await;
    group_with_users(&s).await;
    let catalog = Catalog::builtin().unwrap();
    let models: Vec<_> = catalog
        .models()
        .filter(|m| m.id.starts_with("fanvil-"))
        .collect();
    assert!(models.len() >= 5, "X3U, X4U, X5U, X6U, X7");
    for (i, m) in models.into_iter().enumerate() {
        let mac = Mac::parse(&format!("0c383e{:06x}", 0x500 + i)).unwrap();
        let pw = device(&s, mac.as_str(), &m.id, &format!("fanvil-{i}")).await;
        let code = m.id.trim_start_matches("fanvil-").to_uppercase();
        let ua = user_agent(&code, &mac);
        // The common file f0<model>hw1.100.cfg: no credentials needed, no secrets in it.
        let common = m.files.iter().find(|f| !f.per_device).unwrap();
        let r = phone_get(
            &s.client,
            &s.phones,
            &format!("/{}", common.pattern),
            &ua,
            None,
            "MD5",
            &[],
        )
        .await;
        assert_eq!(r.status(), 200, "{}: {}", m.id, common.pattern);
        assert!(!r.text().await.unwrap().contains(&pw));
        // <mac>.cfg, lowercase: challenged, then served with the device's credentials.
        let path = format!("/{mac}.cfg");
        let r = phone_get(&s.client, &s.phones, &path, &ua, None, "MD5", &[]).await;
        assert_eq!(r.status(), 401, "{}", m.id);
        let (status, body) = fetch(&s, &path, &ua, &mac, &pw).await;
        assert_eq!(status, 200, "{}", m.id);
        assert!(body.contains("<PhoneNumber>6035551212</PhoneNumber>"));
        assert!(body.trim_start().starts_with("<?xml"));
        let view = s.get(&format!("/api/v1/devices/{mac}")).await.body;
        assert_eq!(
            view["last_seen"]["model_seen"],
            m.id.as_str(),
            "{ua} names {}",
            m.id
        );
    }
}

#[tokio::test]
async fn the_version_rises_with_every_change_of_the_devices_files() {
    let s = TestServer::start().await;
    group_with_users(&s).await;
    let mac = Mac::parse("0c383e000601").unwrap();
    let pw = device(&s, mac.as_str(), "fanvil-x6u", "desk").await;
    let ua = user_agent("X6U", &mac);
    let path = format!("/{mac}.cfg");
    let (_, first) = fetch(&s, &path, &ua, &mac, &pw).await;
    let v1 = version(&first);
    // The same revision renders the same version (and the same bytes).
    let (_, again) = fetch(&s, &path, &ua, &mac, &pw).await;
    assert_eq!(again, first);
    // A rename touches the device: a new revision, a higher version.
    let r = s
        .patch(
            &format!("/api/v1/groups/{G}/users/1001"),
            json!({"first_name": "Adele"}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let (_, second) = fetch(&s, &path, &ua, &mac, &pw).await;
    assert!(second.contains("Adele"));
    let v2 = version(&second);
    let (f1, f2): (f64, f64) = (v1.parse().unwrap(), v2.parse().unwrap());
    assert!(f2 > f1, "{v2} > {v1}");
    // Fixed width, so a phone comparing the text compares the same way.
    assert_eq!(v1.len(), v2.len());
    assert!(v2 > v1);
}

#[tokio::test]
async fn the_time_zone_is_fanvils_offset_and_dst_rule() {
    let s = TestServer::start().await;
    group_with_users(&s).await;
    let mac = Mac::parse("0c383e000602").unwrap();
    let pw = device(&s, mac.as_str(), "fanvil-x4u", "desk").await;
    let ua = user_agent("X4U", &mac);
    let path = format!("/{mac}.cfg");
    for (tz, lang, expect) in [
        (
            "America/New_York",
            "en",
            [
                "<TimeZone>-20</TimeZone>",
                "<TimeZoneName>UTC-05</TimeZoneName>",
                "<DSTStartMon>3</DSTStartMon>",
                "<DSTStartWeek>2</DSTStartWeek>",
                "<DSTEndMon>11</DSTEndMon>",
                "<DefaultLanguage>en</DefaultLanguage>",
            ],
        ),
        (
            "Europe/Berlin",
            "de-DE",
            [
                "<TimeZone>4</TimeZone>",
                "<TimeZoneName>UTC+1</TimeZoneName>",
                "<DSTStartWeek>-1</DSTStartWeek>",
                "<DSTEndMon>10</DSTEndMon>",
                "<DSTEndHour>3</DSTEndHour>",
                "<DefaultLanguage>de</DefaultLanguage>",
            ],
        ),
    ] {
        let r = s
            .patch(
                &format!("/api/v1/groups/{G}"),
                json!({"settings": {"timezone": tz, "language": lang}}),
            )
            .await;
        assert_eq!(r.status(), 200, "{tz}");
        let (_, body) = fetch(&s, &path, &ua, &mac, &pw).await;
        for e in expect {
            assert!(body.contains(e), "{tz}: {e} in\n{body}");
        }
    }
}

#[tokio::test]
async fn an_sca_on_an_ext20_key_renders_on_that_module() {
    let s = TestServer::start().await;
    group_with_users(&s).await;
    let d = s
        .create(
            &format!("/api/v1/groups/{G}/devices"),
            json!({"mac": "0c383e000603", "name": "reception", "model": "fanvil-x6u", "owner": "1001",
                   "expansion_modules": [{"model": "fanvil-ext20", "count": 2}]}),
        )
        .await;
    let pw = d["credentials"]["password"].as_str().unwrap().to_string();
    // X6U keys 1-12, EXT20 #1 keys 13-72, #2 keys 73-132: key 75 is module 2, position 3.
    s.create(
        &format!("/api/v1/groups/{G}/users/5555/shared-call-appearances"),
        json!({"device": "reception", "key": 75}),
    )
    .await;
    let mac = Mac::parse("0c383e000603").unwrap();
    let (_, body) = fetch(&s, "/0c383e000603.cfg", &user_agent("X6U", &mac), &mac, &pw).await;
    let ext2 = body
        .split("<dssExtend index=\"2\">")
        .nth(1)
        .expect("module 2");
    assert!(
        ext2.contains("<Fkey index=\"3\"><Type>2</Type><Value>SIP2</Value>"),
        "{body}"
    );
    // A key past the modules is refused on write.
    s.create(
        &format!("/api/v1/groups/{G}/users"),
        json!({"extension": "2002", "first_name": "Grace"}),
    )
    .await;
    let r = s
        .post(
            &format!("/api/v1/groups/{G}/users/2002/shared-call-appearances"),
            json!({"device": "reception", "key": 133}),
        )
        .await;
    assert_eq!((r.status(), r.code()), (422, "key_unavailable"));
}
