//! Yealink T3x/T4x/T5x over the real HTTPS phone listener: the files a factory-fresh phone asks
//! for (boot file, the model's common file, the per-MAC file), each model known by its
//! User-Agent, the time zone in Yealink's own format, and line keys on an EXP50 sidecar.

mod common;

use common::phones::{ada_device as device, group_with_ada};

use common::fetch_file as fetch;

use common::{phone_get, TestServer, G};
use serde_json::{json, Value};

/// Every Yealink model of the catalogue: id, common file, a User-Agent as the phone sends it
/// (wazo-provd-plugins' samples: "Yealink SIP-T33G 124.85.257.55 80:5e:c0:bd:ea:ef"; some
/// firmware sends the MAC without colons).
const MODELS: &[(&str, &str, &str)] = &[
    (
        "yealink-t31p",
        "y000000000123.cfg",
        "Yealink SIP-T31P 124.86.0.75 {colon}",
    ),
    (
        "yealink-t33g",
        "y000000000124.cfg",
        "Yealink SIP-T33G 124.85.257.55 {colon}",
    ),
    (
        "yealink-t43u",
        "y000000000107.cfg",
        "Yealink SIP-T43U 108.86.0.90 {mac}",
    ),
    (
        "yealink-t46u",
        "y000000000108.cfg",
        "Yealink SIP-T46U 108.86.0.90 {colon}",
    ),
    (
        "yealink-t48u",
        "y000000000109.cfg",
        "Yealink SIP-T48U 108.86.0.90 {colon}",
    ),
    (
        "yealink-t53w",
        "y000000000095.cfg",
        "Yealink SIP-T53W 96.86.0.45 {colon}",
    ),
    (
        "yealink-t54w",
        "y000000000096.cfg",
        "Yealink SIP-T54W 96.86.0.45 {mac}",
    ),
    (
        "yealink-t57w",
        "y000000000097.cfg",
        "Yealink SIP-T57W 96.87.0.15 {colon}",
    ),
];

fn colon(mac: &str) -> String {
    mac.as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":")
}

/// A server with group `G` (with `settings`) and its user 1001.
async fn server(settings: Value) -> TestServer {
    let s = TestServer::start().await;
    group_with_ada(&s, settings).await;
    s
}

#[tokio::test]
async fn a_factory_fresh_phone_of_every_model_gets_boot_common_and_mac_file_and_is_known_by_its_ua()
{
    let s = server(json!({})).await;
    for (i, (model, common_file, ua)) in MODELS.iter().enumerate() {
        let mac = format!("805ec0a200{i:02x}");
        let ua = ua.replace("{colon}", &colon(&mac)).replace("{mac}", &mac);
        let pw = device(
            &s,
            json!({"mac": mac, "name": format!("desk-{i}"), "model": model}),
        )
        .await;
        // The boot file names the model's common file, then the per-MAC file.
        let (st, boot) = fetch(&s, &format!("{mac}.boot"), &ua, &mac, &pw).await;
        assert_eq!(st, 200, "{model}: {mac}.boot");
        assert!(
            boot.contains(&format!("/{common_file}\"")),
            "{model}: {boot}"
        );
        assert!(boot.contains(&format!("/{mac}.cfg\"")), "{model}: {boot}");
        // The common file needs no credentials and holds no secrets.
        let r = phone_get(
            &s.client,
            &s.phones,
            &format!("/{common_file}"),
            &ua,
            None,
            "MD5",
            &[],
        )
        .await;
        assert_eq!(r.status(), 200, "{model}: {common_file}");
        assert!(!r.text().await.unwrap().contains(&pw));
        let (st, main) = fetch(&s, &format!("{mac}.cfg"), &ua, &mac, &pw).await;
        assert_eq!(st, 200, "{model}: {mac}.cfg");
        assert!(main.contains("account.1.user_name = 6035551212"), "{model}");
        let view = s.get(&format!("/api/v1/devices/{mac}")).await.body;
        assert_eq!(view["last_seen"]["model_seen"], *model, "{model}: UA {ua}");
    }
}

#[tokio::test]
async fn the_time_zone_is_a_yealink_offset_zone_name_and_dst_rule() {
    for (tz, lines) in [
        (
            "America/New_York",
            [
                "local_time.time_zone = -5",
                "local_time.time_zone_name = United States-Eastern Time",
                "local_time.start_time = 3/2/7/2",
                "local_time.end_time = 11/1/7/2",
            ],
        ),
        (
            "Europe/Berlin",
            [
                "local_time.time_zone = +1",
                "local_time.time_zone_name = Germany(Berlin)",
                "local_time.start_time = 3/5/7/2",
                "local_time.end_time = 10/5/7/3",
            ],
        ),
    ] {
        let s = server(json!({"timezone": tz, "language": "de-DE"})).await;
        let mac = "805ec0a20100";
        let pw = device(
            &s,
            json!({"mac": mac, "name": "desk", "model": "yealink-t46u"}),
        )
        .await;
        let ua = format!("Yealink SIP-T46U 108.86.0.90 {}", colon(mac));
        let (st, main) = fetch(&s, &format!("{mac}.cfg"), &ua, mac, &pw).await;
        assert_eq!(st, 200);
        for l in lines {
            assert!(main.lines().any(|x| x == l), "{tz}: {l} in\n{main}");
        }
        assert!(main.contains("local_time.summer_time = 1\n"), "{tz}");
        assert!(main.contains("lang.gui = German\n"), "{tz}");
        assert!(!main.contains(tz), "{tz}: no IANA name sent to the phone");
    }
}

#[tokio::test]
async fn an_sca_on_an_exp50_key_renders_as_an_expansion_module_key() {
    let s = server(json!({})).await;
    s.create(
        &format!("/api/v1/groups/{G}/users"),
        json!({"extension": "5555", "first_name": "Bob"}),
    )
    .await;
    let mac = "805ec0a20200";
    let pw = device(
        &s,
        json!({"mac": mac, "name": "reception", "model": "yealink-t57w",
               "expansion_modules": [{"model": "yealink-exp50", "count": 1}]}),
    )
    .await;
    // The T57W has 29 keys: key 31 is the EXP50's second.
    s.create(
        &format!("/api/v1/groups/{G}/users/5555/shared-call-appearances"),
        json!({"device": "reception", "key": 31}),
    )
    .await;
    let ua = format!("Yealink SIP-T57W 96.87.0.15 {}", colon(mac));
    let (st, main) = fetch(&s, &format!("{mac}.cfg"), &ua, mac, &pw).await;
    assert_eq!(st, 200);
    assert!(
        main.contains("expansion_module.1.key.2.type = 15\nexpansion_module.1.key.2.line = 2\n"),
        "{main}"
    );
    assert!(main.contains("account.2.shared_line = 1"), "{main}");
    assert!(
        main.contains("expansion_module.1.key.60.type = 0"),
        "unused sidecar keys cleared"
    );
    assert!(
        !main.contains("linekey.31."),
        "no phone key past the T57W's 29"
    );
    // A model that takes no sidecar refuses one.
    let r = s
        .post(
            &format!("/api/v1/groups/{G}/devices"),
            json!({"mac": "805ec0a20201", "name": "small", "model": "yealink-t31p", "owner": "5555",
                   "expansion_modules": [{"model": "yealink-exp50", "count": 1}]}),
        )
        .await;
    assert_eq!(r.status(), 422, "{:?}", r.body);
}

#[tokio::test]
async fn a_half_hour_zone_is_hours_and_minutes_and_a_zone_without_dst_switches_it_off() {
    for (tz, lines) in [
        (
            "Asia/Kolkata",
            [
                "local_time.time_zone = +5:30",
                "local_time.time_zone_name = India(Calcutta)",
                "local_time.summer_time = 0",
            ],
        ),
        (
            "America/St_Johns",
            [
                "local_time.time_zone = -3:30",
                "local_time.time_zone_name = Canada-New Foundland(St.Johns)",
                "local_time.summer_time = 1",
            ],
        ),
    ] {
        let s = server(json!({"timezone": tz})).await;
        let mac = "805ec0a20300";
        let pw = device(
            &s,
            json!({"mac": mac, "name": "desk", "model": "yealink-t33g"}),
        )
        .await;
        let ua = format!("Yealink SIP-T33G 124.85.257.55 {}", colon(mac));
        let (st, main) = fetch(&s, &format!("{mac}.cfg"), &ua, mac, &pw).await;
        assert_eq!(st, 200);
        for l in lines {
            assert!(main.lines().any(|x| x == l), "{tz}: {l} in\n{main}");
        }
    }
}
