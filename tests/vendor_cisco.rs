//! Cisco IP Phone multiplatform (3PCC/MPP) facts, through the real HTTPS phone listener: the
//! common file a factory-fresh phone asks for (`/$PSN.xml`), the User-Agent of every MPP model,
//! the time zone and language as the phone takes them, and key expansion module keys.
//! One template test renders the family file directly with a hand-made context: a disabled
//! line (`lines[].enabled` false) cannot be produced through the API yet.

mod common;

use common::phones::{ada_device as device, group_with_ada as group};

use common::{phone_get, TestServer, G};
use serde_json::json;

/// The MPP models and the `$PSN` each one substitutes in its default profile rule `/$PSN.xml`
/// (wazo-provd-plugins cisco_sip v11_3_1 serves exactly these names).
const MODELS: &[(&str, &str)] = &[
    ("cisco-cp-6841-3pcc", "6841-3PCC"),
    ("cisco-cp-6851-3pcc", "6851-3PCC"),
    ("cisco-cp-6861-3pcc", "6861-3PCC"),
    ("cisco-cp-7841-3pcc", "7841-3PCC"),
    ("cisco-cp-8841-3pcc", "8841-3PCC"),
    ("cisco-cp-8851-3pcc", "8851-3PCC"),
    ("cisco-cp-8861-3pcc", "8861-3PCC"),
];

/// The phone's own profile `$MA.xml`, fetched as the phone does (User-Agent, digest).
async fn profile(s: &TestServer, mac: &str, psn: &str, pw: &str) -> String {
    let ua = format!("Cisco-CP-{psn}/11.3.1 ({mac})");
    let r = phone_get(
        &s.client,
        &s.phones,
        &format!("/{mac}.xml"),
        &ua,
        Some((mac, pw)),
        "MD5",
        &[],
    )
    .await;
    assert_eq!(r.status(), 200, "{mac}.xml");
    r.text().await.unwrap()
}

#[tokio::test]
async fn a_factory_fresh_mpp_gets_its_psn_file_and_not_the_cp_prefixed_name() {
    let s = TestServer::start().await;
    for (model, psn) in MODELS {
        let ua = format!("Cisco-CP-{psn}/11.3.1 (00562b043615)");
        let r = phone_get(
            &s.client,
            &s.phones,
            &format!("/{psn}.xml"),
            &ua,
            None,
            "MD5",
            &[],
        )
        .await;
        assert_eq!(r.status(), 200, "{model}: /{psn}.xml");
        let body = r.text().await.unwrap();
        assert!(
            body.contains("/$MA.xml</Profile_Rule_B>"),
            "{model}: the common file chains the phone's own profile:\n{body}"
        );
    }
    let r = phone_get(
        &s.client,
        &s.phones,
        "/CP-8851-3PCC.xml",
        "Cisco-CP-8851-3PCC/11.3.1 (00562b043615)",
        None,
        "MD5",
        &[],
    )
    .await;
    assert_eq!(r.status(), 404, "no file carries the CP- prefix");
}

#[tokio::test]
async fn the_user_agent_of_every_mpp_model_identifies_it() {
    let s = TestServer::start().await;
    group(&s, json!({})).await;
    for (i, (model, psn)) in MODELS.iter().enumerate() {
        let mac = format!("00562b0436{i:02x}");
        let pw = device(
            &s,
            json!({"mac": mac, "name": format!("desk-{i}"), "model": model}),
        )
        .await;
        profile(&s, &mac, psn, &pw).await;
        let view = s.get(&format!("/api/v1/devices/{mac}")).await.body;
        assert_eq!(view["last_seen"]["model_seen"], *model, "{psn}");
        assert_eq!(view["last_seen"]["firmware"], "11.3.1", "{psn}");
    }
}

#[tokio::test]
async fn new_york_renders_as_gmt_minus_five_with_the_us_daylight_saving_rule() {
    let s = TestServer::start().await;
    group(
        &s,
        json!({"timezone": "America/New_York", "language": "en-US"}),
    )
    .await;
    let mac = "00562b043601";
    let pw = device(
        &s,
        json!({"mac": mac, "name": "desk", "model": "cisco-cp-7841-3pcc"}),
    )
    .await;
    let body = profile(&s, mac, "7841-3PCC", &pw).await;
    for want in [
        "<Time_Zone ua=\"na\">GMT-05:00</Time_Zone>",
        "<Daylight_Saving_Time_Enable ua=\"na\">Yes</Daylight_Saving_Time_Enable>",
        // Second Sunday of March (the first on or after the 8th), first Sunday of November.
        "<Daylight_Saving_Time_Rule ua=\"na\">start=3/8/7/02:00:00;end=11/1/7/02:00:00;save=1</Daylight_Saving_Time_Rule>",
        "<Language_Selection ua=\"na\">English</Language_Selection>",
        "<Locale ua=\"na\">en-US</Locale>",
    ] {
        assert!(body.contains(want), "{want} in:\n{body}");
    }
}

#[tokio::test]
async fn berlin_renders_as_gmt_plus_one_with_the_eu_rule_and_german() {
    let s = TestServer::start().await;
    group(&s, json!({"timezone": "Europe/Berlin", "language": "de"})).await;
    let mac = "00562b043602";
    let pw = device(
        &s,
        json!({"mac": mac, "name": "desk", "model": "cisco-cp-8841-3pcc"}),
    )
    .await;
    let body = profile(&s, mac, "8841-3PCC", &pw).await;
    for want in [
        "<Time_Zone ua=\"na\">GMT+01:00</Time_Zone>",
        // Last Sunday of March 02:00 to last Sunday of October 03:00 local time.
        "<Daylight_Saving_Time_Rule ua=\"na\">start=3/-1/7/02:00:00;end=10/-1/7/03:00:00;save=1</Daylight_Saving_Time_Rule>",
        "<Language_Selection ua=\"na\">German</Language_Selection>",
        "<Locale ua=\"na\">de-DE</Locale>",
    ] {
        assert!(body.contains(want), "{want} in:\n{body}");
    }
}

#[tokio::test]
async fn a_zone_without_daylight_saving_turns_it_off() {
    let s = TestServer::start().await;
    group(&s, json!({"timezone": "Asia/Kolkata"})).await;
    let mac = "00562b043603";
    let pw = device(
        &s,
        json!({"mac": mac, "name": "desk", "model": "cisco-cp-6841-3pcc"}),
    )
    .await;
    let body = profile(&s, mac, "6841-3PCC", &pw).await;
    assert!(
        body.contains("<Time_Zone ua=\"na\">GMT+05:30</Time_Zone>"),
        "{body}"
    );
    assert!(
        body.contains("<Daylight_Saving_Time_Enable ua=\"na\">No</Daylight_Saving_Time_Enable>"),
        "{body}"
    );
    assert!(!body.contains("Daylight_Saving_Time_Rule"), "{body}");
}

#[tokio::test]
async fn keys_past_the_8851_sit_on_its_key_expansion_modules() {
    let s = TestServer::start().await;
    group(&s, json!({})).await;
    let mac = "00562b043604";
    let pw = device(
        &s,
        json!({"mac": mac, "name": "reception", "model": "cisco-cp-8851-3pcc",
               "expansion_modules": [{"model": "cisco-8800-kem", "count": 2}],
               "keys": [{"key": 11, "type": "speed_dial", "value": "*97", "label": "VM"},
                        {"key": 82, "type": "speed_dial", "value": "555", "label": "Sales"}]}),
    )
    .await;
    let body = profile(&s, mac, "8851-3PCC", &pw).await;
    for want in [
        "<Number_of_Units ua=\"na\">2</Number_of_Units>",
        // Key 11 is the first key of module 1; key 82 = 10 + 36 + 36 is the last of module 2.
        "<Unit_1_Key_1_ ua=\"na\">fnc=sd;ext=*97@sip.example.net;nme=VM</Unit_1_Key_1_>",
        "<Unit_2_Key_36_ ua=\"na\">fnc=sd;ext=555@sip.example.net;nme=Sales</Unit_2_Key_36_>",
    ] {
        assert!(body.contains(want), "{want} in:\n{body}");
    }
    assert!(!body.contains("Extended_Function_11_"), "no phone key 11");
}

#[tokio::test]
async fn the_8841_takes_no_key_expansion_module_and_the_8851_at_most_two() {
    let s = TestServer::start().await;
    group(&s, json!({})).await;
    for (model, count) in [("cisco-cp-8841-3pcc", 1), ("cisco-cp-8851-3pcc", 3)] {
        let r = s
            .post(
                &format!("/api/v1/groups/{G}/devices"),
                json!({"mac": "00562b043605", "model": model,
                       "expansion_modules": [{"model": "cisco-8800-kem", "count": count}]}),
            )
            .await;
        assert_eq!(r.status(), 422, "{model} with {count}: {}", r.body);
        assert_eq!(r.body["field"], "expansion_modules", "{}", r.body);
    }
}
