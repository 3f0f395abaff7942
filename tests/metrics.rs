//! `/metrics` (OpenMetrics text) on the admin listener and the request id on every request.

mod common;

use common::phones::OnePhone;

async fn scrape(p: &OnePhone) -> String {
    let r =
        p.s.client
            .get(format!("{}/metrics", p.s.admin))
            .bearer_auth(&p.s.token)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text; version=1.0.0"));
    r.text().await.unwrap()
}

/// The value of the sample `line` (name with labels), 0 when absent.
fn value(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|v| v.strip_prefix(' ')))
        .map(|v| v.parse().unwrap())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_scrape_after_phone_traffic_shows_the_counters_moved() {
    let p = OnePhone::start().await;
    let before = scrape(&p).await;
    assert_eq!(p.fetch().await.status(), 200);
    assert_eq!(p.fetch_with("wrong-password-1").await.status(), 401);
    let after = scrape(&p).await;
    let moved = |sample: &str| {
        let (b, a) = (value(&before, sample), value(&after, sample));
        assert!(a > b, "{sample}: {b} -> {a}\n{after}");
    };
    moved("deskprov_phone_requests_total{status=\"200\",model=\"yealink-t54w\"}");
    moved("deskprov_phone_requests_total{status=\"401\",model=\"-\"}");
    moved("deskprov_phone_auth_failures_total{reason=\"credentials\"}");
    moved("deskprov_render_seconds_count");
    assert!(value(&after, "deskprov_store_commit_seconds_count") >= 3.0);
    assert!(value(&after, "deskprov_change_seq") >= 3.0);
    assert!(after.contains("# TYPE deskprov_render_seconds histogram"));
    assert!(after.contains("deskprov_devices{sync=\"in_sync\"}"));
    assert!(
        value(&after, "deskprov_render_cache_total{result=\"miss\"}") >= 1.0,
        "{after}"
    );
}

/// The first fetch of a revision waits for its check-in to be durable and is counted in
/// `deskprov_phone_checkin_wait_seconds`; the same file again records nothing new and is not.
#[tokio::test]
async fn only_a_fetch_that_applies_a_new_revision_counts_as_a_durable_wait() {
    let p = OnePhone::start().await;
    let count = "deskprov_phone_checkin_wait_seconds_count";
    let before = value(&scrape(&p).await, count);
    assert_eq!(p.fetch().await.status(), 200);
    let after_first = value(&scrape(&p).await, count);
    assert_eq!(after_first, before + 1.0);
    assert_eq!(p.fetch().await.status(), 200);
    assert_eq!(value(&scrape(&p).await, count), after_first);
}

#[tokio::test]
async fn metrics_need_a_platform_token() {
    let p = OnePhone::start().await;
    let url = format!("{}/metrics", p.s.admin);
    let r = p.s.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let g =
        p.s.create(
            "/api/v1/tokens",
            serde_json::json!({"name": "g", "group": common::G}),
        )
        .await;
    let r =
        p.s.client
            .get(&url)
            .bearer_auth(g["token"].as_str().unwrap())
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn every_request_answers_with_its_request_id() {
    let p = OnePhone::start().await;
    let r =
        p.s.client
            .get(format!("{}/healthz", p.s.admin))
            .header("x-request-id", "lb-1234.abc")
            .send()
            .await
            .unwrap();
    assert_eq!(r.headers()["x-request-id"], "lb-1234.abc");
    let r =
        p.s.client
            .get(format!("{}/healthz", p.s.admin))
            .header("x-request-id", "bad id with spaces")
            .send()
            .await
            .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(
        id.len(),
        16,
        "a fresh id replaces one that is not a short token"
    );
    let r =
        p.s.client
            .get(format!("{}{}", p.s.phones, OnePhone::MAIN))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers().contains_key("x-request-id"),
        "phone answers too"
    );
}

#[tokio::test]
async fn the_unprovisioned_list_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = common::TestServer::start_at(dir.path(), |_| {}).await;
    let r = s
        .client
        .get(format!("{}/805ec0abcdef.cfg", s.phones))
        .header("user-agent", "Yealink SIP-T54W 96.86.0.70 805ec0abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let before = s.get("/api/v1/unprovisioned").await.body;
    assert!(before.to_string().contains("805ec0abcdef"), "{before}");
    s.shutdown().await;
    let s = common::TestServer::start_at(dir.path(), |_| {}).await;
    let after = s.get("/api/v1/unprovisioned").await.body;
    assert_eq!(after, before);
}

/// [`OnePhone`]'s device created on a server at `dir`, then that server restarted with `tune`.
async fn restarted(
    dir: &std::path::Path,
    tune: impl FnOnce(&mut deskprov::config::Config),
) -> OnePhone {
    let s = common::TestServer::start_at(dir, |_| {}).await;
    common::phones::group_with_users(&s).await;
    let password = common::phones::device(&s, OnePhone::MAC, "yealink-t54w", "desk").await;
    s.shutdown().await;
    let s = common::TestServer::start_at(dir, tune).await;
    OnePhone { s, password }
}

#[tokio::test]
async fn after_a_restart_the_first_fetch_finds_its_file_rendered_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let p = restarted(dir.path(), |_| {}).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let ready = loop {
        let text = scrape(&p).await;
        if value(&text, "deskprov_render_ahead_pending") == 0.0 {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still rendering ahead:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(
        value(&ready, "deskprov_render_seconds_count") >= 1.0,
        "the device's files were rendered before any fetch:\n{ready}"
    );
    assert_eq!(p.fetch().await.status(), 200);
    let after = scrape(&p).await;
    assert_eq!(
        value(&after, "deskprov_render_cache_total{result=\"miss\"}"),
        0.0,
        "the fetch rendered nothing:\n{after}"
    );
    assert!(value(&after, "deskprov_render_cache_total{result=\"hit\"}") >= 1.0);
}

#[tokio::test]
async fn with_render_ahead_off_the_first_fetch_renders() {
    let dir = tempfile::tempdir().unwrap();
    let p = restarted(dir.path(), |c| c.render.ahead = false).await;
    let before = scrape(&p).await;
    assert_eq!(
        value(&before, "deskprov_render_seconds_count"),
        0.0,
        "{before}"
    );
    assert_eq!(p.fetch().await.status(), 200);
    let after = scrape(&p).await;
    assert!(
        value(&after, "deskprov_render_cache_total{result=\"miss\"}") >= 1.0,
        "{after}"
    );
}
