//! Templates cannot hurt the server: a runaway or huge upload is refused at the render limits
//! (`[render] template_time_ms`, `template_max_bytes`) while phones keep being served, and a live
//! template that explodes for one device's data fails that device alone.

mod common;

use std::time::{Duration, Instant};

use common::phone_get;
use common::phones::{device, OnePhone};
use serde_json::{json, Value};

const T54W_MAIN_TEMPLATE: &str = "/api/v1/models/yealink-t54w/templates/mac.cfg.tera";

/// Three nested loops over a stored range: silent (no output, no call in the bodies).
const RUNAWAY: &str = "{% set r = range(end=100000) %}{% for a in r %}{% for b in r %}{% for c in r %}{% endfor %}{% endfor %}{% endfor %}";

/// Doubles a string 28 times (256 MiB). In Tera 2 only `set_global` carries across iterations.
const DOUBLING: &str =
    r#"{% set s = "x" %}{% for i in range(end=28) %}{% set_global s = s ~ s %}{% endfor %}{{ s }}"#;

async fn put_template(p: &OnePhone, body: &str) -> reqwest::Response {
    p.s.client
        .put(format!("{}{T54W_MAIN_TEMPLATE}", p.s.admin))
        .bearer_auth(&p.s.token)
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// Uploads `body` from another task and fetches the phone's main file meanwhile: every fetch
/// must answer 200 within a second. Returns the upload's problem and how many fetches ran.
async fn upload_while_fetching(p: &OnePhone, body: &'static str) -> (Value, usize) {
    let (client, admin, token) = (p.s.client.clone(), p.s.admin.clone(), p.s.token.clone());
    let upload = tokio::spawn(async move {
        let r = client
            .put(format!("{admin}{T54W_MAIN_TEMPLATE}"))
            .bearer_auth(&token)
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    });
    let mut fetches = 0;
    while !upload.is_finished() && fetches < 200 {
        let t0 = Instant::now();
        let r = p.fetch().await;
        assert_eq!(r.status(), 200, "a phone fetch during the upload");
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "a phone fetch during the upload took {:?}",
            t0.elapsed()
        );
        fetches += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, problem) = upload.await.unwrap();
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["code"], "invalid_template", "{problem}");
    (problem, fetches)
}

async fn assert_old_template_serves(p: &OnePhone, before: &str) {
    let now = p.fetch().await.text().await.unwrap();
    assert_eq!(now, before, "the old template keeps serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_template_is_refused_at_the_time_budget_while_phones_are_served() {
    let p = OnePhone::start().await;
    let before = p.fetch().await.text().await.unwrap();
    let t0 = Instant::now();
    let (problem, fetches) = upload_while_fetching(&p, RUNAWAY).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("exceeded the 2 s render budget"),
        "{problem}"
    );
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert!(
        fetches >= 5,
        "phones were served during the upload ({fetches})"
    );
    assert_old_template_serves(&p, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_doubling_template_is_refused_at_the_output_cap_while_phones_are_served() {
    let p = OnePhone::start().await;
    let before = p.fetch().await.text().await.unwrap();
    let (problem, _) = upload_while_fetching(&p, DOUBLING).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("renders more than 1 MiB"),
        "{problem}"
    );
    assert_old_template_serves(&p, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_template_over_the_cap_fails_only_the_device_whose_data_explodes_it() {
    let p = OnePhone::start().await;
    let other_mac = "805ec0000002";
    let other_password = device(&p.s, other_mac, "yealink-t54w", "desk2").await;
    // Small for every device today (and the sample device); 2 MB for a device with `big` set.
    let template = "#!version:1.0.0.1\n{% if device.settings.big is defined %}{% for i in range(end=20000) %}{{ device.mac }}{{ device.mac }}{{ device.mac }}{{ device.mac }}{{ device.mac }}{{ device.mac }}{{ device.mac }}{{ device.mac }}{% endfor %}{% endif %}\n";
    let r = put_template(&p, template).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_eq!(p.fetch().await.status(), 200);
    let r =
        p.s.patch(
            &format!("/api/v1/devices/{}", OnePhone::MAC),
            json!({"settings": {"big": "1"}}),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.body);
    let t0 = Instant::now();
    assert_eq!(p.fetch().await.status(), 500, "the exploding device");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    let other = phone_get(
        &p.s.client,
        &p.s.phones,
        &format!("/{other_mac}.cfg"),
        OnePhone::UA,
        Some((other_mac, &other_password)),
        "MD5",
        &[],
    )
    .await;
    assert_eq!(other.status(), 200, "another device of the model");
    assert_eq!(p.s.get("/healthz").await.status(), 200);
}
