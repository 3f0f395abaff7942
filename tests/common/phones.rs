//! The phone-listener tests' shared setup: a group with users 1001 (TN 6035551212) and 5555
//! (no TN), and devices owned by 1001 that carry 5555's line as an SCA.

use serde_json::json;

use super::{digest, phone_get, TestServer, G};

/// Creates group `G` with users 1001 (Ada, 6035551212) and 5555 (Bob, no phone number).
pub async fn group_with_users(s: &TestServer) {
    s.create(
        "/api/v1/groups",
        json!({"id": G, "sip": {"domain": "sip.example.net"}}),
    )
    .await;
    s.create(
        &format!("/api/v1/groups/{G}/users"),
        json!({"extension": "1001", "first_name": "Ada", "phone_number": "6035551212"}),
    )
    .await;
    s.create(
        &format!("/api/v1/groups/{G}/users"),
        json!({"extension": "5555", "first_name": "Bob"}),
    )
    .await;
}

/// Adds a device owned by 1001 with 5555's line as an SCA; returns its provisioning password.
pub async fn device(s: &TestServer, mac: &str, model: &str, name: &str) -> String {
    let d = s
        .create(
            &format!("/api/v1/groups/{G}/devices"),
            json!({"mac": mac, "name": name, "model": model, "owner": "1001"}),
        )
        .await;
    s.create(
        &format!("/api/v1/groups/{G}/users/5555/shared-call-appearances"),
        json!({"device": name}),
    )
    .await;
    d["credentials"]["password"].as_str().unwrap().to_string()
}

/// A server with [`group_with_users`] and one Yealink T54W "desk" (805ec0000001).
pub struct OnePhone {
    pub s: TestServer,
    pub password: String,
}

impl OnePhone {
    pub const MAC: &'static str = "805ec0000001";
    pub const MAIN: &'static str = "/805ec0000001.cfg";
    pub const UA: &'static str = "Yealink SIP-T54W 96.86.0.70 805ec0000001";

    pub async fn start() -> OnePhone {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tune: impl FnOnce(&mut deskprov::config::Config)) -> OnePhone {
        let s = TestServer::start_with(tune).await;
        group_with_users(&s).await;
        let password = device(&s, Self::MAC, "yealink-t54w", "desk").await;
        OnePhone { s, password }
    }

    /// The MD5 digest Authorization of this phone for `method` of its main file.
    pub fn authorization(&self, method: &str, realm: &str, nonce: &str, nc: u32) -> String {
        digest::authorization(
            "MD5",
            Self::MAC,
            &self.password,
            realm,
            nonce,
            method,
            Self::MAIN,
            nc,
        )
    }

    /// GETs the main file as the phone does (MD5 digest with its own credentials).
    pub async fn fetch(&self) -> reqwest::Response {
        self.fetch_with(&self.password).await
    }

    /// GETs the main file answering the challenge with `password`.
    pub async fn fetch_with(&self, password: &str) -> reqwest::Response {
        phone_get(
            &self.s.client,
            &self.s.phones,
            Self::MAIN,
            Self::UA,
            Some((Self::MAC, password)),
            "MD5",
            &[],
        )
        .await
    }

    /// PUTs an upload the way a phone does: unauthenticated first (which must be challenged),
    /// then with its digest credentials. Returns the final response.
    pub async fn upload(&self, name: &str, body: Vec<u8>) -> reqwest::Response {
        let url = format!("{}/{name}", self.s.phones);
        let first = self.s.client.put(&url).body("x").send().await.unwrap();
        assert_eq!(first.status(), 401, "an upload without credentials");
        let (realm, nonce) = digest::challenge(first.headers(), "MD5");
        let auth = digest::authorization(
            "MD5",
            Self::MAC,
            &self.password,
            &realm,
            &nonce,
            "PUT",
            &format!("/{name}"),
            1,
        );
        self.s
            .client
            .put(&url)
            .header("authorization", auth)
            .body(body)
            .send()
            .await
            .unwrap()
    }
}

/// Creates group `G` with `settings` and its user 1001 (Ada, 6035551212).
pub async fn group_with_ada(s: &TestServer, settings: serde_json::Value) {
    s.create(
        "/api/v1/groups",
        json!({"id": G, "sip": {"domain": "sip.example.net"}, "settings": settings}),
    )
    .await;
    s.create(
        &format!("/api/v1/groups/{G}/users"),
        json!({"extension": "1001", "first_name": "Ada", "phone_number": "6035551212"}),
    )
    .await;
}

/// Adds a device described by `body` (mac, name, model, ...) owned by 1001; returns its
/// provisioning password.
pub async fn ada_device(s: &TestServer, mut body: serde_json::Value) -> String {
    body["owner"] = json!("1001");
    let d = s.create(&format!("/api/v1/groups/{G}/devices"), body).await;
    d["credentials"]["password"].as_str().unwrap().to_string()
}
