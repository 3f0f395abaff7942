//! Polycom VVX and Poly Edge E over the real HTTPS phone listener: the files a factory-fresh
//! phone asks for (<mac>.cfg, else the master 000000000000.cfg, then the file its CONFIG_FILES
//! names), each model known by its User-Agent, the time zone as a GMT offset with DST rules, and
//! line keys on a VVX EM50 sidecar.

mod common;

use common::phones::{ada_device as device, group_with_ada};

use common::fetch_file as fetch;

use common::{phone_get, TestServer, G};
use serde_json::{json, Value};

/// Every Polycom model of the catalogue with a User-Agent as the phone sends it (VENDORS.md:
/// "FileTransport PolycomVVX-VVX_450-UA/6.3.0.14929 Type/Application", no MAC; the Edge E as a
/// public FreePBX Polycom module quotes it: "FileTransport PolyEdge-Edge_E450-UA/8.0.0.15602").
const MODELS: &[(&str, &str)] = &[
    (
        "polycom-vvx-150",
        "FileTransport PolycomVVX-VVX_150-UA/6.4.3.5100 Type/Application",
    ),
    (
        "polycom-vvx-250",
        "FileTransport PolycomVVX-VVX_250-UA/6.4.3.5100 Type/Application",
    ),
    (
        "polycom-vvx-350",
        "FileTransport PolycomVVX-VVX_350-UA/6.4.3.5100 Type/Application",
    ),
    (
        "polycom-vvx-411",
        "FileTransport PolycomVVX-VVX_411-UA/6.4.3.5100 Type/Application",
    ),
    (
        "polycom-vvx-450",
        "FileTransport PolycomVVX-VVX_450-UA/6.3.0.14929 Type/Application",
    ),
    (
        "polycom-edge-e350",
        "FileTransport PolyEdge-Edge_E350-UA/8.0.0.15602 Type/Application",
    ),
    (
        "polycom-edge-e450",
        "FileTransport PolyEdge-Edge_E450-UA/8.0.0.15602 Type/Application",
    ),
];

/// A server with group `G` (with `settings`) and its user 1001.
async fn server(settings: Value) -> TestServer {
    let s = TestServer::start().await;
    group_with_ada(&s, settings).await;
    s
}

#[tokio::test]
async fn a_factory_fresh_phone_of_every_model_gets_its_files_and_is_known_by_its_ua() {
    let s = server(json!({})).await;
    for (i, (model, ua)) in MODELS.iter().enumerate() {
        let mac = format!("0004f2a200{i:02x}");
        let pw = device(
            &s,
            json!({"mac": mac, "name": format!("desk-{i}"), "model": model}),
        )
        .await;
        // The master file needs no credentials, holds no secrets and names the per-MAC file.
        let r = phone_get(
            &s.client,
            &s.phones,
            "/000000000000.cfg",
            ua,
            None,
            "MD5",
            &[],
        )
        .await;
        assert_eq!(r.status(), 200, "{model}: master");
        let master = r.text().await.unwrap();
        assert!(!master.contains(&pw));
        assert!(
            master.contains(r#"CONFIG_FILES="[PHONE_MAC_ADDRESS]-deskprov.cfg""#),
            "{model}: {master}"
        );
        let (st, own) = fetch(&s, &format!("{mac}.cfg"), ua, &mac, &pw).await;
        assert_eq!(
            (st, own == master),
            (200, true),
            "{model}: <mac>.cfg is the master"
        );
        let (st, main) = fetch(&s, &format!("{mac}-deskprov.cfg"), ua, &mac, &pw).await;
        assert_eq!(st, 200, "{model}: {mac}-deskprov.cfg");
        assert!(main.contains(r#"reg.1.address="6035551212""#), "{model}");
        assert!(main.contains(r#"reg.1.server.1.register="1""#), "{model}");
        let view = s.get(&format!("/api/v1/devices/{mac}")).await.body;
        assert_eq!(view["last_seen"]["model_seen"], *model, "{model}: UA {ua}");
    }
}

#[tokio::test]
async fn the_time_zone_is_a_gmt_offset_in_seconds_with_dst_rules() {
    for (tz, facts) in [
        (
            "America/New_York",
            [
                r#"tcpIpApp.sntp.gmtOffset="-18000""#,
                r#"tcpIpApp.sntp.daylightSavings.start.month="3""#,
                r#"tcpIpApp.sntp.daylightSavings.start.date="8""#,
                r#"tcpIpApp.sntp.daylightSavings.stop.dayOfWeek.lastInMonth="0""#,
            ],
        ),
        (
            "Europe/Berlin",
            [
                r#"tcpIpApp.sntp.gmtOffset="3600""#,
                r#"tcpIpApp.sntp.daylightSavings.start.dayOfWeek.lastInMonth="1""#,
                r#"tcpIpApp.sntp.daylightSavings.stop.month="10""#,
                r#"tcpIpApp.sntp.daylightSavings.stop.time="3""#,
            ],
        ),
    ] {
        let s = server(json!({"timezone": tz, "language": "German"})).await;
        let mac = "0004f2a20100";
        let pw = device(
            &s,
            json!({"mac": mac, "name": "desk", "model": "polycom-vvx-350"}),
        )
        .await;
        let ua = MODELS[2].1;
        let (st, main) = fetch(&s, &format!("{mac}-deskprov.cfg"), ua, mac, &pw).await;
        assert_eq!(st, 200);
        for f in facts {
            assert!(main.contains(f), "{tz}: {f} in\n{main}");
        }
        assert!(
            main.contains(r#"tcpIpApp.sntp.daylightSavings.enable="1""#),
            "{tz}"
        );
        assert!(main.contains(r#"lcl.ml.lang="German_Germany""#), "{tz}");
        assert!(!main.contains(tz), "{tz}: no IANA name sent to the phone");
    }
}

#[tokio::test]
async fn an_sca_on_an_em50_key_is_a_line_key_numbered_on_after_the_phones() {
    let s = server(json!({})).await;
    s.create(
        &format!("/api/v1/groups/{G}/users"),
        json!({"extension": "5555", "first_name": "Bob"}),
    )
    .await;
    let mac = "0004f2a20200";
    let pw = device(
        &s,
        json!({"mac": mac, "name": "reception", "model": "polycom-vvx-450",
               "expansion_modules": [{"model": "polycom-vvx-em50", "count": 1}]}),
    )
    .await;
    // The VVX 450 has 12 keys: key 14 is the EM50's second.
    s.create(
        &format!("/api/v1/groups/{G}/users/5555/shared-call-appearances"),
        json!({"device": "reception", "key": 14}),
    )
    .await;
    let (st, main) = fetch(&s, &format!("{mac}-deskprov.cfg"), MODELS[4].1, mac, &pw).await;
    assert_eq!(st, 200);
    assert!(
        main.contains("lineKey.14.category=\"Line\"\n    lineKey.14.index=\"2\""),
        "{main}"
    );
    assert!(main.contains(r#"reg.2.type="shared""#));
    assert!(
        main.contains(r#"lineKey.78.category="Unassigned""#),
        "every module key set"
    );
    assert!(!main.contains("lineKey.79."), "no key past one EM50's 66");
    // A model that takes no sidecar refuses one.
    let r = s
        .post(
            &format!("/api/v1/groups/{G}/devices"),
            json!({"mac": "0004f2a20201", "name": "small", "model": "polycom-vvx-250", "owner": "5555",
                   "expansion_modules": [{"model": "polycom-vvx-em50", "count": 1}]}),
        )
        .await;
    assert_eq!(r.status(), 422, "{:?}", r.body);
}
