//! `deskprov.toml`: the schema, its defaults (SPEC §5) and the commented example.
//!
//! Every key has a default, so `deskprov serve` runs with no file at all. Unknown keys are an
//! error: a typo must not silently fall back to a default.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::domain::Cidr;

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
    pub limits: Limits,
    pub firmware: Firmware,
}

/// Firmware images: upload size, concurrent downloads, the roll-out's failure guard.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Firmware {
    /// Largest image an admin may upload, bytes.
    pub max_bytes: u64,
    /// Image downloads served at once on the phone listeners; over it a download gets 503 with
    /// `Retry-After`, so an upgrade wave cannot starve configuration fetches.
    pub max_downloads: usize,
    /// `Retry-After` of that 503, seconds.
    pub retry_after_s: u64,
    /// Bytes per second all image downloads together may send (0: no limit).
    pub max_bytes_per_s: u64,
    /// How long after a phone is offered an image it may still come back on the old version.
    pub upgrade_window_s: u64,
    /// Phones of one roll-out back on the old version after the window before it pauses.
    pub failure_threshold: usize,
}

impl Default for Firmware {
    fn default() -> Self {
        Firmware {
            max_bytes: 512 << 20,
            max_downloads: 20,
            retry_after_s: 30,
            max_bytes_per_s: 0,
            upgrade_window_s: 3600,
            failure_threshold: 3,
        }
    }
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
    /// Failed attempts per (address, MAC) per minute before that pair is locked out.
    pub auth_fail_limit: u32,
    /// Distinct MACs (known or not; a request naming none counts as one) whose authentication
    /// may fail from one address per minute before the whole address is locked out.
    pub auth_fail_macs_per_ip: u32,
    pub(crate) auth_lockout_s: u64,
    /// Networks (CIDR) exempt from the per-address lockout, e.g. a site's NAT address; a pair
    /// (address, MAC) in them still locks.
    pub lockout_exempt: Vec<String>,
    /// New unprovisioned MACs one address may add to the list per minute.
    pub unprovisioned_per_ip_per_min: u32,
    pub(crate) upload_max_bytes: u64,
    /// Most files stored per device; a new upload evicts its oldest.
    pub upload_max_files: u32,
    /// Most bytes stored per device; a new upload evicts its oldest until it fits.
    pub upload_max_total_bytes: u64,
    /// Provisioning log entries kept per device (`GET /api/v1/devices/{mac}/log`); a new one
    /// evicts the oldest.
    pub log_entries: u32,
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
    /// Test and lab use: send NOTIFY only to literal loopback addresses (127.0.0.0/8, ::1);
    /// any other target — a `notify_target`, a group's `sip.proxy`, a phone's last-seen
    /// address — is skipped without a DNS lookup. Off in production.
    pub loopback_only: bool,
    /// How NOTIFYs are paced: at `notify_rate` (fixed), or by a window of re-syncs in flight
    /// that follows the phone listener's latency, `notify_rate` being the ceiling (adaptive).
    pub pacing: Pacing,
    /// Adaptive pacing keeps the phone listener's p99 request latency at or under this, ms.
    pub fetch_p99_ms: u64,
}

/// `[sync] pacing`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pacing {
    Fixed,
    Adaptive,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Store {
    /// The storage engine: `embedded` (sled in `<data_dir>/store`) or `postgres` (`url`).
    pub backend: StoreBackend,
    /// The PostgreSQL connection URL (`postgres://user:pass@host:port/db?sslmode=require`);
    /// only with `backend = "postgres"`.
    pub url: String,
    /// PEM file of the CA that signs the database server's certificate (TLS to the database;
    /// empty: the URL's `sslmode` decides, verified against this CA when it is set).
    pub ca: String,
    /// The key file passwords are sealed with; empty: `<data_dir>/store.key`. With the
    /// postgres backend every server must have the same file (it is never stored in the
    /// database beside the sealed values).
    pub key_file: String,
    /// Page cache of the storage engine, MiB.
    pub cache_mb: u64,
    /// Change-log entries kept; older ones are compacted away.
    pub(crate) changes_keep: u64,
}

/// Which storage engine serves the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// sled, in the data directory: one machine.
    #[default]
    Embedded,
    /// A PostgreSQL database shared by every replica.
    Postgres,
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
    /// Render the devices' files into the cache at start-up, before phones ask for them
    /// (until the cache is three quarters full).
    pub ahead: bool,
}

/// Bounds on connections, so no client can hold the listeners or the file descriptors.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// A request's head must arrive within this many seconds of the first byte (or of the handshake).
    pub header_timeout_s: u64,
    /// A connection with no request in flight is closed after this many seconds.
    pub idle_timeout_s: u64,
    /// A request body not complete within this many seconds fails with 408.
    pub body_timeout_s: u64,
    /// Open connections on the phone listeners together.
    pub max_connections: usize,
    /// Open phone connections from one address.
    pub max_connections_per_ip: usize,
    /// Open connections on the admin listener (counted apart from the phones').
    pub admin_max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout_s: 10,
            idle_timeout_s: 60,
            body_timeout_s: 30,
            max_connections: 10_000,
            max_connections_per_ip: 256,
            admin_max_connections: 256,
        }
    }
}

impl Limits {
    pub(crate) fn body_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.body_timeout_s)
    }
}

impl Default for Render {
    fn default() -> Self {
        Render {
            cache_mb: 64,
            template_time_ms: 2000,
            template_max_bytes: 1 << 20,
            ahead: true,
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
            limits: Limits::default(),
            firmware: Firmware::default(),
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
            auth_fail_macs_per_ip: 10,
            auth_lockout_s: 300,
            lockout_exempt: Vec::new(),
            unprovisioned_per_ip_per_min: 10,
            upload_max_bytes: 1 << 20,
            upload_max_files: 20,
            upload_max_total_bytes: 8 << 20,
            log_entries: 200,
        }
    }
}
impl Phones {
    fn validate(&self) -> Result<(), ConfigError> {
        let at_least_1 = [
            ("auth_fail_limit", u64::from(self.auth_fail_limit)),
            (
                "auth_fail_macs_per_ip",
                u64::from(self.auth_fail_macs_per_ip),
            ),
            ("auth_lockout_s", self.auth_lockout_s),
            (
                "unprovisioned_per_ip_per_min",
                u64::from(self.unprovisioned_per_ip_per_min),
            ),
            ("upload_max_bytes", self.upload_max_bytes),
            ("upload_max_files", u64::from(self.upload_max_files)),
            ("upload_max_total_bytes", self.upload_max_total_bytes),
            ("log_entries", u64::from(self.log_entries)),
        ];
        if let Some((key, _)) = at_least_1.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Invalid(format!(
                "phones.{key} must be at least 1"
            )));
        }
        self.lockout_exempt_cidrs()?;
        Ok(())
    }

    /// `lockout_exempt`, parsed.
    pub(crate) fn lockout_exempt_cidrs(&self) -> Result<Vec<Cidr>, ConfigError> {
        self.lockout_exempt
            .iter()
            .map(|s| {
                Cidr::parse(s).map_err(|_| {
                    ConfigError::Invalid(format!(
                        "phones.lockout_exempt: '{s}' is not a network (e.g. 203.0.113.0/24 or 2001:db8::/48)"
                    ))
                })
            })
            .collect()
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
            loopback_only: false,
            pacing: Pacing::Fixed,
            fetch_p99_ms: 100,
        }
    }
}
impl Default for Store {
    fn default() -> Self {
        Store {
            backend: StoreBackend::Embedded,
            url: String::new(),
            ca: String::new(),
            key_file: String::new(),
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
        let f = &self.firmware;
        for (key, v) in [
            ("max_bytes", f.max_bytes),
            ("max_downloads", f.max_downloads as u64),
            ("retry_after_s", f.retry_after_s),
            ("failure_threshold", f.failure_threshold as u64),
        ] {
            if v == 0 {
                return Err(ConfigError::Invalid(format!(
                    "firmware.{key} must be at least 1"
                )));
            }
        }
        if self.rules.max_sca_per_user == 0 {
            return Err(ConfigError::Invalid(
                "rules.max_sca_per_user must be at least 1".into(),
            ));
        }
        if !(1..=60_000).contains(&self.sync.fetch_p99_ms) {
            return Err(ConfigError::Invalid(
                "sync.fetch_p99_ms must be between 1 and 60000".into(),
            ));
        }
        match (self.store.backend, self.store.url.is_empty()) {
            (StoreBackend::Postgres, true) => {
                return Err(ConfigError::Invalid(
                    "store.url is required with store.backend = \"postgres\"".into(),
                ))
            }
            (StoreBackend::Postgres, false)
                if !(self.store.url.starts_with("postgres://")
                    || self.store.url.starts_with("postgresql://")) =>
            {
                return Err(ConfigError::Invalid(
                    "store.url must be a postgres:// URL".into(),
                ))
            }
            (StoreBackend::Embedded, false) => {
                return Err(ConfigError::Invalid(
                    "store.url is only read with store.backend = \"postgres\"".into(),
                ))
            }
            _ => {}
        }
        if self.store.changes_keep < 1000 {
            return Err(ConfigError::Invalid(
                "store.changes_keep must be at least 1000".into(),
            ));
        }
        let l = &self.limits;
        for (key, v) in [
            ("header_timeout_s", l.header_timeout_s),
            ("idle_timeout_s", l.idle_timeout_s),
            ("body_timeout_s", l.body_timeout_s),
        ] {
            if !(1..=3600).contains(&v) {
                return Err(ConfigError::Invalid(format!(
                    "limits.{key} must be 1 to 3600 seconds"
                )));
            }
        }
        if l.max_connections == 0 || l.admin_max_connections == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_connections and limits.admin_max_connections must be at least 1".into(),
            ));
        }
        if l.max_connections_per_ip == 0 || l.max_connections_per_ip > l.max_connections {
            return Err(ConfigError::Invalid(
                "limits.max_connections_per_ip must be 1 to limits.max_connections".into(),
            ));
        }
        self.phones.validate()?;
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
    /// The sealing key file: `store.key_file`, else `<data_dir>/store.key`.
    pub(crate) fn key_file(&self) -> PathBuf {
        if self.store.key_file.is_empty() {
            self.data_dir.join("store.key")
        } else {
            PathBuf::from(&self.store.key_file)
        }
    }

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
auth_fail_limit = 20           # failed attempts per (IP, MAC) per minute; the next is locked out
auth_fail_macs_per_ip = 10     # distinct MACs failing from one IP per minute before the whole IP is locked out
auth_lockout_s = 300           # lockout length, seconds
lockout_exempt = []            # CIDRs (e.g. a site's NAT, "203.0.113.0/24") never locked out as a whole IP
unprovisioned_per_ip_per_min = 10 # new unknown MACs one IP may add to /unprovisioned per minute
upload_max_bytes = 1048576     # largest file a phone may PUT
upload_max_files = 20          # files kept per device; a new upload evicts the oldest
upload_max_total_bytes = 8388608 # bytes kept per device; a new upload evicts the oldest until it fits
log_entries = 200              # provisioning log entries kept per device; a new one evicts the oldest

[rules]
max_sca_per_user = 35          # SCA endpoints per user

[sync]
sip_bind = "0.0.0.0:0"         # local address NOTIFYs are sent from
debounce_ms = 2000             # a burst of changes to one phone gives one NOTIFY
ack_timeout_s = 120            # wait this long for the phone's fetch before retrying
max_attempts = 5               # then the device is 'failed'
notify_rate = 50               # NOTIFYs per second, fleet-wide
same_hash = true               # skip the NOTIFY when the rendered files did not change
loopback_only = false          # test/lab: NOTIFY only literal loopback addresses, never resolve or send elsewhere
pacing = "fixed"               # "fixed": notify_rate per second; "adaptive": as fast as phones are served, notify_rate the ceiling (0 = none)
fetch_p99_ms = 100             # adaptive: grow while the phone listener's p99 latency stays under this, back off over it

[store]
backend = "embedded"           # "embedded" (sled in data_dir/store) or "postgres" (several servers on one database)
url = ""                       # postgres://user:password@host:5432/deskprov?sslmode=require (backend = "postgres")
ca = ""                        # PEM CA of the database server's certificate (TLS to the database)
key_file = ""                  # password sealing key; empty = data_dir/store.key (the same file on every server)
cache_mb = 16                  # storage engine page cache, MiB (reads are served from memory)
changes_keep = 100000          # change-log entries kept (older ones are compacted away)

[render]
cache_mb = 64                  # rendered files kept in memory, MiB (least fetched evicted first)
template_time_ms = 2000        # longest one render may take; an upload over it is refused, a fetch gets 500
template_max_bytes = 1048576   # largest file (and value) one render may produce
ahead = true                   # render every device's files into the cache at start-up (up to 3/4 of cache_mb), before phones ask

[limits]
header_timeout_s = 10          # a request head must be complete this long after its first byte (or the handshake)
idle_timeout_s = 60            # a connection with no request in flight is closed after this long
body_timeout_s = 30            # a request body not complete in time fails with 408
max_connections = 10000        # open phone connections (all phone listeners); over it a connection is closed at once
max_connections_per_ip = 256   # open phone connections from one address
admin_max_connections = 256    # open admin connections, counted apart so a phone flood never locks admins out

[firmware]
max_bytes = 536870912          # largest firmware image an admin may upload (streamed to disk)
max_downloads = 20             # image downloads at once; over it 503 + Retry-After, so config fetches are not starved
retry_after_s = 30             # Retry-After of that 503, seconds
max_bytes_per_s = 0            # bytes/s all image downloads together may send; 0 = no limit
upgrade_window_s = 3600        # a phone offered an image and still on the old version after this long has failed
failure_threshold = 3          # failed phones of one roll-out before it pauses (resume: POST .../firmware/{model}/resume)
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
    fn limits_are_validated() {
        let mut c = Config::default();
        c.limits.max_connections_per_ip = c.limits.max_connections + 1;
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.limits.header_timeout_s = 0;
        assert!(c.validate().is_err());
        assert!(Config::default().validate().is_ok());
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
    fn phone_limits_are_validated() {
        let mut c = Config::default();
        c.phones.upload_max_files = 0;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("phones.upload_max_files"), "{e}");
        let mut c = Config::default();
        c.phones.lockout_exempt = vec!["203.0.113.0/24".into(), "2001:db8::/48".into()];
        assert!(c.validate().is_ok());
        c.phones.lockout_exempt.push("203.0.113.0/33".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("phones.lockout_exempt") && e.contains("/33"),
            "{e}"
        );
    }

    #[test]
    fn partial_files_keep_defaults() {
        let c: Config = toml::from_str("[listen]\nadmin = \"127.0.0.1:9000\"\n").unwrap();
        assert_eq!(c.listen.admin, "127.0.0.1:9000");
        assert_eq!(c.listen.phones, "0.0.0.0:8443");
        assert_eq!(c.sync.notify_rate, 50);
    }
}
