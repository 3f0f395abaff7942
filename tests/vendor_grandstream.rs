//! Grandstream GRP26xx/GXP2170 facts, through the real HTTPS phone listener: the files a
//! factory-fresh phone asks for, the User-Agent of every model, the time zone (a self-defined
//! POSIX rule) and language code, and extension-board keys.
//! One template test renders the family file directly with a hand-made context: a disabled
//! account (`lines[].enabled` false) cannot be produced through the API yet.

mod common;

use common::phones::{ada_device as device, group_with_ada as group};

use common::{phone_get, TestServer, G};
use serde_json::json;

/// Each model and the name it gives itself in its User-Agent and model file `cfg<model>.xml`.
const MODELS: &[(&str, &str)] = &[
    ("grandstream-grp2612", "GRP2612"),
    ("grandstream-grp2613", "GRP2613"),
    ("grandstream-grp2614", "GRP2614"),
    ("grandstream-grp2615", "GRP2615"),
    ("grandstream-grp2616", "GRP2616"),
    ("grandstream-gxp2170", "GXP2170"),
];

fn user_agent(hw: &str, mac: &str) -> String {
    format!("Grandstream Model HW {hw} SW 1.0.5.67 DevId {mac}")
}

/// The phone's own file `cfg<mac>.xml`, fetched as the phone does (User-Agent, digest).
async fn config(s: &TestServer, mac: &str, hw: &str, pw: &str) -> String {
    let r = phone_get(
        &s.client,
        &s.phones,
        &format!("/cfg{mac}.xml"),
        &user_agent(hw, mac),
        Some((mac, pw)),
        "MD5",
        &[],
    )
    .await;
    assert_eq!(r.status(), 200, "cfg{mac}.xml");
    r.text().await.unwrap()
}

#[tokio::test]
async fn a_factory_fresh_phone_gets_its_model_file_and_cfg_xml_without_credentials() {
    let s = TestServer::start().await;
    for (model, hw) in MODELS {
        let ua = user_agent(hw, "c074ad000001");
        let file = format!("/cfg{}.xml", hw.to_lowercase());
        for path in [file.as_str(), "/cfg.xml"] {
            let r = phone_get(&s.client, &s.phones, path, &ua, None, "MD5", &[]).await;
            assert_eq!(r.status(), 200, "{model}: {path}");
            let body = r.text().await.unwrap();
            assert!(
                body.contains("<item name=\"sip.notify.challenge\">Yes</item>"),
                "{model}: {path}:\n{body}"
            );
        }
    }
}

#[tokio::test]
async fn the_user_agent_of_every_model_identifies_it() {
    let s = TestServer::start().await;
    group(&s, json!({})).await;
    for (i, (model, hw)) in MODELS.iter().enumerate() {
        let mac = format!("c074ad0000{i:02x}");
        let pw = device(
            &s,
            json!({"mac": mac, "name": format!("desk-{i}"), "model": model}),
        )
        .await;
        config(&s, &mac, hw, &pw).await;
        let view = s.get(&format!("/api/v1/devices/{mac}")).await.body;
        assert_eq!(view["last_seen"]["model_seen"], *model, "{hw}");
        assert_eq!(view["last_seen"]["firmware"], "1.0.5.67", "{hw}");
    }
}

#[tokio::test]
async fn new_york_and_berlin_render_as_self_defined_posix_zones_with_the_language_code() {
    for (tz, lang, posix, code) in [
        ("America/New_York", "en", "EST5EDT,M3.2.0,M11.1.0", "en"),
        (
            "Europe/Berlin",
            "German",
            "CET-1CEST,M3.5.0,M10.5.0/3",
            "de",
        ),
        ("Europe/Stockholm", "sv", "CET-1CEST,M3.5.0,M10.5.0/3", "se"),
    ] {
        let s = TestServer::start().await;
        group(&s, json!({"timezone": tz, "language": lang})).await;
        let mac = "c074ad000101";
        let pw = device(
            &s,
            json!({"mac": mac, "name": "desk", "model": "grandstream-grp2616"}),
        )
        .await;
        let body = config(&s, mac, "GRP2616", &pw).await;
        for want in [
            "<item name=\"dateTime.timezone\">customize</item>".to_string(),
            format!("<item name=\"dateTime.timezone.custom\">{posix}</item>"),
            format!("<item name=\"language.gui\">{code}</item>"),
        ] {
            assert!(body.contains(&want), "{tz}: {want} in:\n{body}");
        }
    }
}

#[tokio::test]
async fn keys_past_the_grp2614_sit_on_its_gbx20_modules_as_ext_keys() {
    let s = TestServer::start().await;
    group(&s, json!({})).await;
    let mac = "c074ad000102";
    let pw = device(
        &s,
        json!({"mac": mac, "name": "reception", "model": "grandstream-grp2614",
               "expansion_modules": [{"model": "grandstream-gbx20", "count": 2}],
               "keys": [{"key": 17, "type": "speed_dial", "value": "*97", "label": "VM"},
                        {"key": 96, "type": "blf", "value": "1001", "label": "Ada"}]}),
    )
    .await;
    let body = config(&s, mac, "GRP2614", &pw).await;
    for want in [
        // Key 17 is the first key of module 1; key 96 = 16 + 40 + 40 the last of module 2.
        "<item name=\"pks.ext.1.keyMode\">SpeedDial</item>",
        "<item name=\"pks.ext.1.value\">*97</item>",
        "<item name=\"pks.ext.80.keyMode\">BLF</item>",
        "<item name=\"pks.ext.80.account\">Account1</item>",
        "<item name=\"pks.ext.2.keyMode\">None</item>",
    ] {
        assert!(body.contains(want), "{want} in:\n{body}");
    }
    assert!(!body.contains("pks.vpk.17."), "the GRP2614 has 16 VPKs");
}

#[tokio::test]
async fn the_grp2612_takes_no_gbx20_and_the_gxp2170_takes_the_gxp2200ext() {
    let s = TestServer::start().await;
    group(&s, json!({})).await;
    let r = s
        .post(
            &format!("/api/v1/groups/{G}/devices"),
            json!({"mac": "c074ad000103", "model": "grandstream-grp2612",
                   "expansion_modules": [{"model": "grandstream-gbx20", "count": 1}]}),
        )
        .await;
    assert_eq!(r.status(), 422, "{}", r.body);
    assert_eq!(r.body["field"], "expansion_modules", "{}", r.body);
    let r = s
        .post(
            &format!("/api/v1/groups/{G}/devices"),
            json!({"mac": "000b82000104", "model": "grandstream-gxp2170",
                   "expansion_modules": [{"model": "grandstream-gbx20", "count": 1}]}),
        )
        .await;
    assert_eq!(r.status(), 422, "the GXP2170 takes no GBX20: {}", r.body);
    s.create(
        &format!("/api/v1/groups/{G}/devices"),
        json!({"mac": "000b82000104", "model": "grandstream-gxp2170",
               "expansion_modules": [{"model": "grandstream-gxp2200ext", "count": 4}]}),
    )
    .await;
}
