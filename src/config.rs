//! `deskprov.toml`: the schema, its defaults (SPEC §5) and the commented example.
//!
//! Every key has a default, so `deskprov serve` runs with no file at all. Unknown keys are an
//! error: a typo must not silently fall back to a default.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    /// Optional folder of extra/overriding models, same layout as `device-templates/`.
    pub templates_dir: String,
    pub listen: Listen,
    pub tls: Tls,
    pub phones: Phones,
    pub rules: Rules,
    pub sync: Sync,
    pub store: Store,
    pub render: Render,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listen {
    pub phones: String,
    pub(crate) phones_http: String,
    pub admin: String,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    pub(crate) cert: String,
    pub(crate) key: String,
    pub client_ca: Vec<String>,
    /// Extra names for the generated server certificate (besides localhost and the host name).
    pub(crate) server_names: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Phones {
    /// The URL phones reach this server at (templates use it); empty = `https://<host name>:<port>`.
    pub base_url: String,
    pub auth_fail_limit: u32,
    pub(crate) auth_lockout_s: u64,
    pub(crate) upload_max_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    pub max_sca_per_user: usize,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sync {
    pub sip_bind: String,
    pub debounce_ms: u64,
    pub ack_timeout_s: u64,
    pub max_attempts: u32,
    pub notify_rate: u32,
    pub same_hash: bool,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Store {
    /// Page cache of the storage engine, MiB.
    pub cache_mb: u64,
    /// Change-log entries kept; older ones are compacted away.
    pub(crate) changes_keep: u64,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Render {
    /// Rendered files kept in memory, MiB (the least fetched are evicted first).
    pub(crate) cache_mb: u64,
    /// Time one render may take, milliseconds (uploads over it are refused, fetches get a 500).
    pub template_time_ms: u64,
    /// Bytes one render may produce.
    pub template_max_bytes: u64,
}

impl Default for Render {
    fn default() -> Self {
        Render {
            cache_mb: 64,
            template_time_ms: 2000,
            template_max_bytes: 1 << 20,
        }
    }
}

impl Render {
    pub(crate) fn limits(&self) -> crate::render::limits::Limits {
        crate::render::limits::Limits {
            time: std::time::Duration::from_millis(self.template_time_ms),
            max_bytes: usize::try_from(self.template_max_bytes).unwrap_or(usize::MAX),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./deskprov-data"),
            templates_dir: String::new(),
            listen: Listen::default(),
            tls: Tls::default(),
            phones: Phones::default(),
            rules: Rules::default(),
            sync: Sync::default(),
            store: Store::default(),
            render: Render::default(),
        }
    }
}
impl Default for Listen {
    fn default() -> Self {
        Listen {
            phones: "0.0.0.0:8443".into(),
            phones_http: String::new(),
            admin: "127.0.0.1:8444".into(),
        }
    }
}
impl Default for Phones {
    fn default() -> Self {
        Phones {
            base_url: String::new(),
            auth_fail_limit: 20,
            auth_lockout_s: 300,
            upload_max_bytes: 1 << 20,
        }
    }
}
impl Default for Rules {
    fn default() -> Self {
        Rules {
            max_sca_per_user: 35,
        }
    }
}
impl Default for Sync {
    fn default() -> Self {
        Sync {
            sip_bind: "0.0.0.0:0".into(),
            debounce_ms: 2000,
            ack_timeout_s: 120,
            max_attempts: 5,
            notify_rate: 50,
            same_hash: true,
        }
    }
}
impl Default for Store {
    fn default() -> Self {
        Store {
            cache_mb: 16,
            changes_keep: 100_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: {1}")]
    Parse(String, toml::de::Error),
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads a file; every key not in it keeps its default.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read(path.display().to_string(), e))?;
        let c: Config =
            toml::from_str(&text).map_err(|e| ConfigError::Parse(path.display().to_string(), e))?;
        c.validate()?;
        Ok(c)
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.rules.max_sca_per_user == 0 {
            return Err(ConfigError::Invalid(
                "rules.max_sca_per_user must be at least 1".into(),
            ));
        }
        if self.store.changes_keep < 1000 {
            return Err(ConfigError::Invalid(
                "store.changes_keep must be at least 1000".into(),
            ));
        }
        if !(10..=60_000).contains(&self.render.template_time_ms) {
            return Err(ConfigError::Invalid(
                "render.template_time_ms must be between 10 and 60000 (milliseconds)".into(),
            ));
        }
        if !(1024..=(256 << 20)).contains(&self.render.template_max_bytes) {
            return Err(ConfigError::Invalid(
                "render.template_max_bytes must be between 1024 and 268435456 (256 MiB)".into(),
            ));
        }
        if self.tls.cert.is_empty() != self.tls.key.is_empty() {
            return Err(ConfigError::Invalid(
                "tls.cert and tls.key go together".into(),
            ));
        }
        Ok(())
    }

    pub fn templates_dir(&self) -> Option<&Path> {
        (!self.templates_dir.is_empty()).then(|| Path::new(&self.templates_dir))
    }

    /// The URL phones reach the server at, as templates render it (no trailing `/`):
    /// `[phones] base_url`, else `https://<host name>:<phone port>`. `bound_port` is the phone
    /// listener's port once bound (a configured port 0 is known only then); without it the
    /// port of `[listen] phones` is used. The server and `deskprov render` both derive it here.
    pub fn phone_base_url(&self, bound_port: Option<u16>) -> String {
        match self.phones.base_url.trim_end_matches('/') {
            "" => {
                let port = bound_port.unwrap_or_else(|| {
                    self.listen
                        .phones
                        .rsplit_once(':')
                        .and_then(|(_, p)| p.parse().ok())
                        .unwrap_or(8443)
                });
                let host = crate::tls::host_name().unwrap_or_else(|| "localhost".into());
                format!("https://{host}:{port}")
            }
            u => u.to_string(),
        }
    }
}

/// `deskprov config example`: every key, its default, and what it does.
pub const EXAMPLE: &str = r#"# deskprov.toml — every key is optional; the values shown are the defaults.

data_dir = "./deskprov-data"   # store, generated TLS material, admin-token
templates_dir = ""             # optional folder of extra/overriding models, same layout as device-templates/

[listen]
phones = "0.0.0.0:8443"        # HTTPS for phones
phones_http = ""               # optional plain HTTP for phones; empty = off
admin = "127.0.0.1:8444"       # HTTPS admin API

[tls]
cert = ""                      # PEM chain; empty = generated dev certificate (data_dir/tls/)
key = ""                       # PEM private key, with cert
client_ca = []                 # PEM bundles of vendor device CAs for mTLS
server_names = []              # extra DNS names / IPs for the generated certificate

[phones]
base_url = ""                  # URL phones reach the server at; empty = https://<host name>:<phones port>
auth_fail_limit = 20           # failed attempts per IP per minute before a lockout
auth_lockout_s = 300           # lockout length, seconds
upload_max_bytes = 1048576     # largest file a phone may PUT

[rules]
max_sca_per_user = 35          # SCA endpoints per user

[sync]
sip_bind = "0.0.0.0:0"         # local address NOTIFYs are sent from
debounce_ms = 2000             # a burst of changes to one phone gives one NOTIFY
ack_timeout_s = 120            # wait this long for the phone's fetch before retrying
max_attempts = 5               # then the device is 'failed'
notify_rate = 50               # NOTIFYs per second, fleet-wide
same_hash = true               # skip the NOTIFY when the rendered files did not change

[store]
cache_mb = 16                  # storage engine page cache, MiB (reads are served from memory)
changes_keep = 100000          # change-log entries kept (older ones are compacted away)

[render]
cache_mb = 64                  # rendered files kept in memory, MiB (least fetched evicted first)
template_time_ms = 2000        # longest one render may take; an upload over it is refused, a fetch gets 500
template_max_bytes = 1048576   # largest file (and value) one render may produce
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_is_the_defaults() {
        let parsed: Config = toml::from_str(EXAMPLE).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn render_limits_are_validated() {
        let mut c = Config::default();
        c.render.template_time_ms = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("template_time_ms"));
        c.render.template_time_ms = 2000;
        c.render.template_max_bytes = 10;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("template_max_bytes"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("[sync]\ndebounce = 5\n").is_err());
    }

    #[test]
    fn partial_files_keep_defaults() {
        let c: Config = toml::from_str("[listen]\nadmin = \"127.0.0.1:9000\"\n").unwrap();
        assert_eq!(c.listen.admin, "127.0.0.1:9000");
        assert_eq!(c.listen.phones, "0.0.0.0:8443");
        assert_eq!(c.sync.notify_rate, 50);
    }
}
