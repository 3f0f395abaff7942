//! Snom D7xx facts over the real HTTPS listener: every Snom model's three files resolve for a
//! factory-fresh phone and its User-Agent identifies it, the time zone and language are Snom's
//! own names, a D7C sidecar key carries an SCA with fkey idx numbered on from the phone's keys.

mod common;

use common::fetch_file as fetch;

use common::phones::{device, group_with_users};
use common::{phone_get, TestServer, G};
use deskprov::catalog::Catalog;
use deskprov::domain::Mac;
use serde_json::json;

/// A real Snom User-Agent (VENDORS.md), with the model code and the MAC in upper case.
fn user_agent(code: &str, mac: &Mac) -> String {
    format!(
        "Mozilla/4.0 (compatible; snom{code}-SIP 10.1.152.12 2010.12-00001-gd311851f1 (Feb 25 2019 - 14:19:43) {} SXM:0 UXM:0 UXMC:0)",
        mac.upper()
    )
}

#[tokio::test]
async fn every_snom_model_resolves_its_files_and_its_user_agent_names_it() {
    let s = TestServer::start().await;
    group_with_users(&s).await;
    let catalog = Catalog::builtin().unwrap();
    let models: Vec<_> = catalog
        .models()
        .filter(|m| m.id.starts_with("snom-"))
        .collect();
    assert!(models.len() >= 4, "D713, D735, D785, D865");
    for (i, m) in models.into_iter().enumerate() {
        let mac = Mac::parse(&format!("000413{:06x}", 0x700 + i)).unwrap();
        let pw = device(&s, mac.as_str(), &m.id, &format!("snom-{i}")).await;
        let code = m.id.trim_start_matches("snom-").to_uppercase();
        let ua = user_agent(&code, &mac);
        // The setting URL's file: common, and it keeps the phone on this server.
        let r = phone_get(
            &s.client,
            &s.phones,
            &format!("/snom{code}.htm"),
            &ua,
            None,
            "MD5",
            &[],
        )
        .await;
        assert_eq!(r.status(), 200, "{}", m.id);
        let body = r.text().await.unwrap();
        assert!(body.contains(&format!("/snom{code}.htm</setting_server>")));
        // snom<model>-<MAC>.htm names <MAC>.xml; both need the device's credentials.
        let index = format!("/snom{code}-{}.htm", mac.upper());
        let r = phone_get(&s.client, &s.phones, &index, &ua, None, "MD5", &[]).await;
        assert_eq!(r.status(), 401, "{}", m.id);
        let (status, body) = fetch(&s, &index, &ua, &mac, &pw).await;
        assert_eq!(status, 200, "{}", m.id);
        assert!(body.contains(&format!("/{}.xml\"", mac.upper())), "{body}");
        let (status, body) = fetch(&s, &format!("/{}.xml", mac.upper()), &ua, &mac, &pw).await;
        assert_eq!(status, 200, "{}", m.id);
        assert!(body.contains(">6035551212</user_name>"));
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
async fn time_zone_and_language_are_snoms_own_names() {
    let s = TestServer::start().await;
    group_with_users(&s).await;
    let mac = Mac::parse("000413000801").unwrap();
    let pw = device(&s, mac.as_str(), "snom-d735", "desk").await;
    let ua = user_agent("D735", &mac);
    for (tz, lang, zone, name) in [
        ("America/New_York", "en-US", "USA-5", "English"),
        ("Europe/Berlin", "German", "GER+1", "Deutsch"),
    ] {
        let r = s
            .patch(
                &format!("/api/v1/groups/{G}"),
                json!({"settings": {"timezone": tz, "language": lang}}),
            )
            .await;
        assert_eq!(r.status(), 200, "{tz}");
        let (_, body) = fetch(&s, "/000413000801.xml", &ua, &mac, &pw).await;
        assert!(
            body.contains(&format!("<timezone perm=\"RW\">{zone}</timezone>")),
            "{tz}: {body}"
        );
        assert!(body.contains(&format!("<language perm=\"RW\">{name}</language>")));
    }
    // A zone Snom has no name for here is left to the phone, not guessed.
    s.patch(
        &format!("/api/v1/groups/{G}"),
        json!({"settings": {"timezone": "Asia/Kolkata"}}),
    )
    .await;
    let (_, body) = fetch(&s, "/000413000801.xml", &ua, &mac, &pw).await;
    assert!(!body.contains("<timezone"), "{body}");
}

#[tokio::test]
async fn an_sca_on_a_d7c_key_continues_the_phones_fkey_numbering() {
    let s = TestServer::start().await;
    group_with_users(&s).await;
    let d = s
        .create(
            &format!("/api/v1/groups/{G}/devices"),
            json!({"mac": "000413000802", "name": "reception", "model": "snom-d785", "owner": "1001",
                   "expansion_modules": [{"model": "snom-d7c", "count": 3}]}),
        )
        .await;
    let pw = d["credentials"]["password"].as_str().unwrap().to_string();
    // D785 keys 1-24, then three D7C of 18: key 60 is module 2, position 18, fkey idx 59.
    s.create(
        &format!("/api/v1/groups/{G}/users/5555/shared-call-appearances"),
        json!({"device": "reception", "key": 60}),
    )
    .await;
    let mac = Mac::parse("000413000802").unwrap();
    let (_, body) = fetch(
        &s,
        "/000413000802.xml",
        &user_agent("D785", &mac),
        &mac,
        &pw,
    )
    .await;
    assert!(
        body.contains("<fkey idx=\"59\" context=\"2\""),
        "the SCA on fkey idx 59:\n{body}"
    );
    // Every key of the three modules is written (idx 0-77), none past them.
    assert!(body.contains("<fkey idx=\"77\""));
    assert!(!body.contains("<fkey idx=\"78\""));
    // The D713 takes no sidecar.
    let r = s
        .post(
            &format!("/api/v1/groups/{G}/devices"),
            json!({"mac": "000413000803", "name": "small", "model": "snom-d713",
                   "expansion_modules": [{"model": "snom-d7c", "count": 1}]}),
        )
        .await;
    assert_eq!(r.status(), 422);
}
