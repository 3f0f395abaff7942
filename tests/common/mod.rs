//! Test harness: the real server on ephemeral loopback ports, driven over HTTPS by a client
//! that trusts the generated CA. The server stops when the `TestServer` is dropped.

#![allow(dead_code)]

use std::path::PathBuf;

use deskprov::config::Config;
use deskprov::server::Server;
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub struct TestServer {
    pub admin: String,
    pub phones: String,
    pub client: reqwest::Client,
    pub token: String,
    pub data_dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: Option<tempfile::TempDir>,
}

/// A response: status, JSON body (Null when empty or not JSON), headers.
pub struct Resp {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    /// The `code` member of a problem+json body.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
    pub fn status(&self) -> u16 {
        self.status.as_u16()
    }
}

pub fn test_config(dir: &std::path::Path) -> Config {
    let mut c = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    c.listen.admin = "127.0.0.1:0".into();
    c.listen.phones = "127.0.0.1:0".into();
    c.store.cache_mb = 8;
    c.sync.sip_bind = "127.0.0.1:0".into();
    c
}

pub fn https_client(ca_pem: &std::path::Path) -> reqwest::Client {
    let ca = std::fs::read(ca_pem).expect("ca.pem");
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA parses"))
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("client")
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tune: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = Self::start_at(dir.path(), tune).await;
        s._dir = Some(dir);
        s
    }

    /// Starts on an existing (or new) data directory the caller keeps; for restart tests.
    pub async fn start_at(
        data_dir: &std::path::Path,
        tune: impl FnOnce(&mut Config),
    ) -> TestServer {
        let mut config = test_config(data_dir);
        tune(&mut config);
        let server = Server::start(config).await.expect("server starts");
        let admin = format!("https://localhost:{}", server.admin_addr.port());
        let phones = format!("https://localhost:{}", server.phones_addr.port());
        let token = match server.new_admin_token.clone() {
            Some(t) => t,
            None => std::fs::read_to_string(data_dir.join("admin-token"))
                .expect("admin-token")
                .trim()
                .to_string(),
        };
        let client = https_client(server.ca_pem.as_ref().expect("dev CA"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        TestServer {
            admin,
            phones,
            client,
            token,
            data_dir: data_dir.to_path_buf(),
            stop: Some(tx),
            task: Some(task),
            _dir: None,
        }
    }

    /// Stops the server and waits for it to drain.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    pub async fn call_as(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Resp {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.admin, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("request");
        let status = r.status();
        let headers = r.headers().clone();
        let bytes = r.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            body,
            headers,
        }
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        let t = self.token.clone();
        self.call_as(Some(&t), method, path, body).await
    }
    pub async fn get(&self, path: &str) -> Resp {
        self.call(Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: Value) -> Resp {
        self.call(Method::PUT, path, Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> Resp {
        self.call(Method::PATCH, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> Resp {
        self.call(Method::DELETE, path, None).await
    }

    /// POST that must succeed with 201.
    pub async fn create(&self, path: &str, body: Value) -> Value {
        let r = self.post(path, body).await;
        assert_eq!(r.status(), 201, "POST {path}: {}", r.body);
        r.body
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub mod phones;
pub mod raw;

pub const G: &str = "ZZZ1900111-01";

/// The seed guides' group: users 1001 (TN 6035551212) and 5555 (no TN), devices
/// "Reception" (VVX 450, owner 1001) and "Desk 5555" (T54W, owner 5555), "Lobby" (VVX 411).
pub async fn seed(s: &TestServer) {
    s.create("/api/v1/groups", serde_json::json!({"id": G, "name": "ProConnect demo", "sip": {"domain": "sip.example.net", "proxy": "proxy.example.net"}})).await;
    s.create(&format!("/api/v1/groups/{G}/users"), serde_json::json!({"extension": "1001", "first_name": "Ada", "last_name": "Lovelace", "phone_number": "6035551212"})).await;
    s.create(
        &format!("/api/v1/groups/{G}/users"),
        serde_json::json!({"extension": "5555", "first_name": "Bob", "last_name": "Stone"}),
    )
    .await;
    s.create(&format!("/api/v1/groups/{G}/devices"), serde_json::json!({"mac": "0004F2000001", "name": "Reception", "model": "polycom-vvx-450", "owner": "1001"})).await;
    s.create(&format!("/api/v1/groups/{G}/devices"), serde_json::json!({"mac": "80:5e:c0:00:00:02", "name": "Desk 5555", "model": "yealink-t54w", "owner": "5555"})).await;
    s.create(
        &format!("/api/v1/groups/{G}/devices"),
        serde_json::json!({"mac": "0004.f200.0003", "name": "Lobby", "model": "polycom-vvx-411"}),
    )
    .await;
}

/// A phone's HTTP Digest client (RFC 7616), written independently of the server's.
pub mod digest {
    use md5::Digest as _;

    fn h(alg: &str, s: &str) -> String {
        if alg == "MD5" {
            hex::encode(md5::Md5::digest(s.as_bytes()))
        } else {
            hex::encode(ring::digest::digest(&ring::digest::SHA256, s.as_bytes()))
        }
    }

    /// Picks the challenge for `alg` from the WWW-Authenticate values; returns (realm, nonce).
    pub fn challenge(headers: &reqwest::header::HeaderMap, alg: &str) -> (String, String) {
        for v in headers.get_all("www-authenticate") {
            let v = v.to_str().unwrap();
            if !v.contains(&format!("algorithm={alg}")) {
                continue;
            }
            let get = |k: &str| {
                let i = v.find(&format!("{k}=\"")).unwrap() + k.len() + 2;
                v[i..].split('"').next().unwrap().to_string()
            };
            return (get("realm"), get("nonce"));
        }
        panic!("no {alg} challenge in {headers:?}");
    }

    /// The Authorization header value for one request.
    #[allow(clippy::too_many_arguments)]
    pub fn authorization(
        alg: &str,
        user: &str,
        pass: &str,
        realm: &str,
        nonce: &str,
        method: &str,
        uri: &str,
        nc: u32,
    ) -> String {
        let cnonce = "0a4f113b";
        let nc = format!("{nc:08x}");
        let ha1 = h(alg, &format!("{user}:{realm}:{pass}"));
        let ha2 = h(alg, &format!("{method}:{uri}"));
        let resp = h(alg, &format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
        format!(
            "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", algorithm={alg}, qop=auth, nc={nc}, cnonce=\"{cnonce}\", response=\"{resp}\""
        )
    }
}

/// GETs `path` from the phone listener the way a phone does: unauthenticated first, then with
/// digest credentials if challenged. Returns the final response.
pub async fn phone_get(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    ua: &str,
    creds: Option<(&str, &str)>,
    alg: &str,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client.get(format!("{base}{path}")).header("user-agent", ua);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let first = req.try_clone().unwrap().send().await.unwrap();
    let Some((user, pass)) = creds else {
        return first;
    };
    if first.status() != 401 {
        return first;
    }
    let (realm, nonce) = digest::challenge(first.headers(), alg);
    let auth = digest::authorization(alg, user, pass, &realm, &nonce, "GET", path, 1);
    req.header("authorization", auth).send().await.unwrap()
}

/// GETs `path` (with or without its leading `/`) as the phone `mac` with User-Agent `ua`,
/// answering a challenge with MD5 digest and `password`; returns the status and the body.
pub async fn fetch_file(
    s: &TestServer,
    path: &str,
    ua: &str,
    mac: impl std::fmt::Display,
    password: &str,
) -> (u16, String) {
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let mac = mac.to_string();
    let r = phone_get(
        &s.client,
        &s.phones,
        &path,
        ua,
        Some((&mac, password)),
        "MD5",
        &[],
    )
    .await;
    (r.status().as_u16(), r.text().await.unwrap())
}
