//! The entities of SPEC §1 in their stored form.
//!
//! These are what the store persists (secrets included). The admin API never serialises them
//! directly: it builds views without secrets (`crate::admin::views`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use compact_str::CompactString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::ToSchema;

use super::ids::*;
use super::DomainError;

/// A secret (SIP or provisioning password, token hash). Never shown by `Debug`, so it cannot
/// reach a log line through `{:?}`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(CompactString);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    pub(crate) fn new(s: impl Into<CompactString>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A SIP identity as a phone holds it: user, auth user, password.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SipIdentity {
    pub(crate) user: String,
    pub(crate) auth_username: String,
    pub(crate) password: Secret,
}

/// SIP transport of a group's service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Transport {
    #[default]
    Udp,
    Tcp,
    Tls,
}

/// How phones of a group must authenticate when fetching files that hold secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ProvAuth {
    Digest,
    Mtls,
    #[default]
    DigestOrMtls,
}

/// An IPv4/IPv6 network, `addr/prefix` (a bare address means a single host).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cidr {
    pub(crate) addr: IpAddr,
    pub(crate) prefix: u8,
}

impl Cidr {
    pub(crate) fn parse(s: &str) -> Result<Cidr, DomainError> {
        let bad = || {
            DomainError::validation(
                "provisioning.allowed_cidrs",
                format!("'{s}' is not a network (e.g. 192.0.2.0/24 or 2001:db8::/32)"),
            )
        };
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}
impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Cidr::parse(&s).map_err(|e| serde::de::Error::custom(e.detail))
    }
}

fn default_port() -> u16 {
    5060
}
fn default_licenses() -> u32 {
    20
}
fn yes() -> bool {
    true
}

/// The SIP service of a group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupSip {
    /// SIP domain / registrar, required.
    pub(crate) domain: String,
    /// Outbound proxy; also where NOTIFYs are routed when a device has no `notify_target`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) proxy: Option<String>,
    #[serde(default = "default_port")]
    pub(crate) port: u16,
    #[serde(default)]
    pub(crate) transport: Transport,
}

/// Provisioning policy of a group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Provisioning {
    #[serde(default)]
    pub(crate) auth: ProvAuth,
    /// Networks phones may fetch from; empty = any.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub(crate) allowed_cidrs: Vec<Cidr>,
}

/// A group (tenant/site). Its stored form is also its API form: it holds no secrets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub id: GroupId,
    #[serde(default)]
    pub(crate) name: String,
    pub(crate) sip: GroupSip,
    /// Free key/value strings for templates (time zone, NTP, language, ...).
    #[serde(default)]
    pub(crate) settings: BTreeMap<String, String>,
    #[serde(default = "default_licenses")]
    pub(crate) shared_line_licenses: u32,
    #[serde(default)]
    pub(crate) provisioning: Provisioning,
}

/// `standard` users have their own phone; `hot_desk` users are virtual and log in to one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum UserKind {
    #[default]
    Standard,
    HotDesk,
}

/// Voicemail settings of a user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Voicemail {
    #[serde(default)]
    pub(crate) enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) access_number: Option<String>,
}

/// Call forwarding destinations of a user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Forwarding {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) always: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) busy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) no_answer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) no_answer_ring_seconds: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) not_reachable: Option<String>,
}

/// User features, rendered where the model supports them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Features {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) call_waiting: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dnd: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    anonymous_outgoing: Option<bool>,
    // Boxed: most users set neither, and 100,000 users carry these inline otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Voicemail>)]
    pub(crate) voicemail: Option<Box<Voicemail>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Forwarding>)]
    pub(crate) forwarding: Option<Box<Forwarding>>,
    /// Extensions shown as BLF keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) monitoring: Vec<Extension>,
    /// Whether others may monitor this user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    presence: Option<bool>,
}

/// The kinds of endpoint that render files from this server (SPEC §1 "Device"): desk phones,
/// and softphones provisioned like them (model `kind = "softphone"` in the catalogue).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EndpointKind {
    #[default]
    IpPhone,
    Softphone,
}

impl EndpointKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EndpointKind::IpPhone => "ip_phone",
            EndpointKind::Softphone => "softphone",
        }
    }
}

/// Seed 002 "Configure allowed endpoint": the endpoint kinds a user's lines may be used on.
/// Every flag defaults to true, which is what the server did before the setting existed: lines
/// render on desk phones and softphones, and the SIP credentials could be fetched (rotated) for
/// any client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AllowedEndpoints {
    /// Desk phones: the user's appearances render on devices of `ip_phone` models.
    #[serde(default = "yes")]
    pub(crate) ip_phone: bool,
    /// Softphones provisioned by this server (model `linphone`, ...).
    #[serde(default = "yes")]
    pub(crate) softphone: bool,
    /// Third-party softphones configured by hand with the user's SIP credentials
    /// (`POST .../users/{ext}/third-party-credentials`).
    #[serde(default = "yes")]
    pub(crate) third_party: bool,
}

impl Default for AllowedEndpoints {
    fn default() -> Self {
        AllowedEndpoints {
            ip_phone: true,
            softphone: true,
            third_party: true,
        }
    }
}

impl AllowedEndpoints {
    /// Whether the user's appearances render on a device of `kind`.
    pub(crate) fn allows(&self, kind: EndpointKind) -> bool {
        match kind {
            EndpointKind::IpPhone => self.ip_phone,
            EndpointKind::Softphone => self.softphone,
        }
    }
}

/// A user's SIP identity as stored: explicit values or `None` for "derive the default".
///
/// Explicit names are rare, so both share one allocation that most users do not have: this
/// keeps `User` within mimalloc's 256-byte size class behind its `Arc` (see `User`'s size
/// test). Stored as `{"username", "auth_username", "password"}`, as before.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct UserSip {
    names: Option<Box<SipNames>>,
    pub(crate) password: Secret,
}

#[derive(Clone, Debug, PartialEq)]
struct SipNames {
    username: Option<String>,
    auth_username: Option<String>,
}

impl UserSip {
    pub(crate) fn new(
        username: Option<String>,
        auth_username: Option<String>,
        password: Secret,
    ) -> UserSip {
        let mut sip = UserSip {
            names: None,
            password,
        };
        sip.set_names(username, auth_username);
        sip
    }
    /// The explicit `sip.username`, if set.
    pub(crate) fn username(&self) -> Option<&str> {
        self.names.as_ref()?.username.as_deref()
    }
    /// The explicit `sip.auth_username`, if set.
    pub(crate) fn auth_username(&self) -> Option<&str> {
        self.names.as_ref()?.auth_username.as_deref()
    }
    fn set_names(&mut self, username: Option<String>, auth_username: Option<String>) {
        self.names = (username.is_some() || auth_username.is_some()).then(|| {
            Box::new(SipNames {
                username,
                auth_username,
            })
        });
    }
}

impl Serialize for UserSip {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Stored<'a> {
            username: Option<&'a str>,
            auth_username: Option<&'a str>,
            password: &'a Secret,
        }
        Stored {
            username: self.username(),
            auth_username: self.auth_username(),
            password: &self.password,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for UserSip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Stored {
            username: Option<String>,
            auth_username: Option<String>,
            password: Secret,
        }
        let s = Stored::deserialize(d)?;
        Ok(UserSip::new(s.username, s.auth_username, s.password))
    }
}

/// A user: an extension in a group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub(crate) group: GroupId,
    pub(crate) extension: Extension,
    pub(crate) phone_number: Option<PhoneNumber>,
    pub(crate) first_name: CompactString,
    pub(crate) last_name: CompactString,
    pub(crate) display_name: Option<CompactString>,
    pub(crate) kind: UserKind,
    pub(crate) sip: UserSip,
    pub(crate) features: Features,
    /// Seed "Extensions": "Select if user is allowed to log in". False renders every
    /// appearance of the user's lines disabled (`lines[].enabled = false`).
    #[serde(default = "default_true")]
    pub(crate) login_allowed: bool,
    /// Seed 002 "Configure allowed endpoint"; absent in records written before it: all allowed.
    #[serde(default)]
    pub(crate) allowed_endpoints: AllowedEndpoints,
    /// Set by `POST .../unregister`, cleared by the next change of the user (any update, a
    /// password rotation): while set, the user's lines render disabled, as for `login_allowed`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) unregistered: bool,
}

impl User {
    /// Whether the user's lines render enabled on the phones: allowed to log in and not
    /// unregistered since its last change.
    pub(crate) fn lines_enabled(&self) -> bool {
        self.login_allowed && !self.unregistered
    }

    /// The primary line port: explicit `sip.username`, else the phone number, else
    /// `<group>_<extension>`.
    pub(crate) fn sip_username(&self) -> String {
        match (self.sip.username(), &self.phone_number) {
            (Some(u), _) => u.to_string(),
            (None, Some(p)) => p.to_string(),
            (None, None) => format!("{}_{}", self.group, self.extension),
        }
    }
    pub(crate) fn auth_username(&self) -> String {
        match self.sip.auth_username() {
            Some(a) => a.to_string(),
            None => self.sip_username(),
        }
    }
    /// What the phone shows: `display_name`, else "first last".
    pub(crate) fn display(&self) -> String {
        match &self.display_name {
            Some(d) => d.to_string(),
            None => format!("{} {}", self.first_name, self.last_name)
                .trim()
                .to_string(),
        }
    }
    /// The prefix of this user's SCA line ports.
    pub(crate) fn line_port_prefix(&self) -> String {
        LinePort::expected_prefix(&self.group, &self.extension, self.phone_number.as_ref())
    }
}

/// Type of a programmable key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum KeyType {
    Blf,
    SpeedDial,
    Park,
    Voicemail,
    /// A BLF key for every other user of the group, on the free keys from `key` on (see
    /// `layout`); never rendered as such.
    BlfAll,
}

/// A programmable key of a device; it occupies line key `key`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProgKey {
    pub(crate) key: KeyNo,
    #[serde(rename = "type")]
    pub(crate) kind: KeyType,
    #[serde(default)]
    pub(crate) value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) label: Option<String>,
}

/// A named, reusable key layout of a group (SPEC §1 "Key profile"), assigned to devices by
/// `Device::key_profile`; the device's own keys win on a clash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyProfile {
    pub(crate) group: GroupId,
    pub(crate) name: ProfileName,
    pub(crate) keys: Vec<ProgKey>,
}

/// Expansion modules (sidecars) of one model on a device: `count` of catalogue module `model`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExpansionModule {
    /// A module id of the catalogue (`device-templates/_modules/<id>.toml`).
    #[schema(value_type = String)]
    pub(crate) model: CompactString,
    /// How many of them, 1 or more.
    pub(crate) count: u8,
}

/// Where NOTIFYs for a device go: `udp:host:port` or `tcp:host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NotifyTarget {
    pub(crate) tcp: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl NotifyTarget {
    pub(crate) fn parse(s: &str) -> Result<NotifyTarget, DomainError> {
        let bad = || {
            DomainError::validation(
                "notify_target",
                format!("'{s}' is not a NOTIFY target (udp:host:port or tcp:host:port)"),
            )
        };
        let (proto, rest) = s.split_once(':').ok_or_else(bad)?;
        let tcp = match proto {
            "udp" => false,
            "tcp" => true,
            _ => return Err(bad()),
        };
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(bad)?;
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b':'));
        if !host_ok {
            return Err(bad());
        }
        Ok(NotifyTarget {
            tcp,
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for NotifyTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = if self.tcp { "tcp" } else { "udp" };
        if self.host.contains(':') {
            write!(f, "{proto}:[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{proto}:{}:{}", self.host, self.port)
        }
    }
}
impl Serialize for NotifyTarget {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
impl<'de> Deserialize<'de> for NotifyTarget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        NotifyTarget::parse(&s).map_err(|e| serde::de::Error::custom(e.detail))
    }
}

/// A physical phone.
///
/// Rarely set fields are boxed, so that a device stays within mimalloc's 256-byte size class
/// behind its `Arc` (see the size test); boxing does not change the stored JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub mac: Mac,
    pub(crate) group: GroupId,
    pub(crate) name: CompactString,
    pub(crate) model: CompactString,
    pub(crate) owner: Option<Extension>,
    pub(crate) keys: Vec<ProgKey>,
    pub(crate) settings: BTreeMap<String, String>,
    pub(crate) notify_target: Option<Box<NotifyTarget>>,
    /// HTTP digest password for provisioning; the username is the MAC.
    pub prov_password: Secret,
    /// The hot-desk user logged in, if any.
    pub(crate) hot_desk: Option<Box<Extension>>,
    /// Sidecars, in the order their keys follow the phone's own line keys.
    #[serde(default, skip_serializing_if = "<[_]>::is_empty")]
    pub(crate) expansion_modules: Box<[ExpansionModule]>,
    /// The group key profile whose keys this device shows under its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) key_profile: Option<Box<ProfileName>>,
    /// The last change-log `seq` that touched this device.
    pub(crate) revision: u64,
}

impl Device {
    /// The user whose line is the primary appearance: the hot-desk guest, else the owner.
    pub(crate) fn context_user(&self) -> Option<&Extension> {
        self.hot_desk.as_deref().or(self.owner.as_ref())
    }
}

/// A Shared Call Appearance endpoint: user `extension`'s line appearing on `device`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScaEndpoint {
    pub(crate) line_port: LinePort,
    pub(crate) group: GroupId,
    pub(crate) extension: Extension,
    pub(crate) device: Mac,
    pub(crate) key: KeyNo,
    pub(crate) label: Option<String>,
    pub(crate) active: bool,
    pub(crate) allow_origination: bool,
    pub(crate) allow_termination: bool,
}

/// How a shared-line member's phone rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(
    clippy::enum_variant_names,
    reason = "the variants spell the API values ring, no_ring, delayed"
)]
pub(crate) enum Ring {
    #[default]
    Ring,
    NoRing,
    Delayed,
}

/// A member of a shared line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Member {
    pub(crate) extension: Extension,
    /// Line key on the member's phone; the first free one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) button: Option<KeyNo>,
    #[serde(default)]
    pub(crate) ring: Ring,
}

/// A shared line: a line of its own that several extensions share.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SharedLine {
    pub(crate) group: GroupId,
    pub(crate) number: SharedNumber,
    pub(crate) direct_dial: Option<String>,
    pub(crate) description: String,
    pub(crate) forward_to_voicemail: bool,
    pub(crate) autodial_digits: Option<String>,
    pub(crate) members: Vec<Member>,
    pub(crate) password: Secret,
}

impl SharedLine {
    /// Its SIP user / line port: `<group>_<number>`.
    pub(crate) fn line_port(&self) -> String {
        format!("{}_{}", self.group, self.number)
    }
}

/// An admin API token; only the SHA-256 of its secret is stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Token {
    pub id: String,
    pub name: String,
    pub group: Option<GroupId>,
    pub(crate) secret_sha256: Secret,
    pub created_at: String,
}

/// An uploaded template and its versions (stored; see `Record::Template`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TemplateOverride {
    pub(crate) model: String,
    /// Template file name in the model's folder, e.g. `mac.cfg.tera`.
    pub(crate) template: String,
    pub(crate) versions: Vec<TemplateVersion>,
    /// The live version; `None` = the built-in template.
    pub(crate) active: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct TemplateVersion {
    pub(crate) version: u32,
    pub(crate) body: String,
    pub(crate) created_at: String,
    pub(crate) actor: String,
}

impl TemplateOverride {
    pub(crate) fn active_body(&self) -> Option<&str> {
        let v = self.active?;
        self.versions
            .iter()
            .find(|x| x.version == v)
            .map(|x| x.body.as_str())
    }
}

/// A firmware image of a model (stored; see `Record::Firmware`). The bytes live outside the
/// store, content-addressed by `sha256` (`<data_dir>/firmware/<sha256>`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FirmwareImage {
    pub(crate) model: String,
    pub(crate) version: String,
    /// Lowercase hex SHA-256 of the bytes (also the image's ETag).
    pub(crate) sha256: String,
    pub(crate) size: u64,
    pub(crate) uploaded_at: String,
    pub(crate) actor: String,
}

/// Why a roll-out stopped: set when too many of its phones came back on the old version after
/// the upgrade window (`[firmware] failure_threshold`); cleared by the admin (resume).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FirmwarePause {
    pub(crate) at: String,
    pub(crate) reason: String,
    /// The devices counted as failed when it paused.
    #[schema(value_type = Vec<String>)]
    pub(crate) failed: Vec<Mac>,
}

/// The firmware version a group's phones of one model should run (stored; see
/// `Record::FirmwareTarget`): devices in the roll-out (`percent` by a stable hash of the MAC,
/// plus `pilots`) are told where the image is, unless the roll-out is paused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FirmwareTarget {
    #[schema(value_type = String)]
    pub(crate) group: GroupId,
    pub(crate) model: String,
    pub(crate) version: String,
    /// 0–100: the share of the group's devices of the model in the roll-out.
    pub(crate) percent: u8,
    /// Devices in the roll-out whatever the percentage.
    #[schema(value_type = Vec<String>)]
    pub(crate) pilots: Vec<Mac>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) paused: Option<FirmwarePause>,
    pub(crate) updated_at: String,
}

pub(crate) fn default_true() -> bool {
    yes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The state keeps every user and device behind an `Arc` (16 bytes of counts before the
    /// value): at a million of each, staying within mimalloc's 256-byte class instead of the
    /// 320-byte one is 61 MiB per table.
    #[test]
    fn a_user_and_a_device_fit_the_256_byte_allocation_behind_their_arc() {
        let arc_counts = 2 * std::mem::size_of::<usize>();
        assert!(
            std::mem::size_of::<User>() + arc_counts <= 256,
            "User is {} bytes",
            std::mem::size_of::<User>()
        );
        assert!(
            std::mem::size_of::<Device>() + arc_counts <= 256,
            "Device is {} bytes",
            std::mem::size_of::<Device>()
        );
    }

    #[test]
    fn a_users_sip_names_are_stored_as_before_and_absent_names_allocate_nothing() {
        let sip = UserSip::new(None, Some("ada-auth".into()), Secret::new("pw"));
        let json = serde_json::to_value(&sip).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"username": null, "auth_username": "ada-auth", "password": "pw"})
        );
        let back: UserSip = serde_json::from_value(json).unwrap();
        assert_eq!(back, sip);
        assert_eq!(back.auth_username(), Some("ada-auth"));
        let mut none = UserSip::new(Some("ada".into()), None, Secret::new("pw"));
        none.set_names(None, None);
        assert!(none.names.is_none(), "no names, no allocation");
        assert_eq!(none, UserSip::new(None, None, Secret::new("pw")));
        let old: UserSip = serde_json::from_str(r#"{"password": "pw"}"#).unwrap();
        assert_eq!(old.username(), None);
    }

    #[test]
    fn cidr_parses_and_matches() {
        let c = Cidr::parse("192.0.2.0/24").unwrap();
        assert!(c.contains("192.0.2.77".parse().unwrap()));
        assert!(!c.contains("192.0.3.1".parse().unwrap()));
        assert!(c.contains("::ffff:192.0.2.5".parse().unwrap()));
        let h = Cidr::parse("10.1.2.3").unwrap();
        assert_eq!(h.prefix, 32);
        assert!(Cidr::parse("2001:db8::/32")
            .unwrap()
            .contains("2001:db8:1::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope/8").is_err());
    }

    #[test]
    fn notify_target_forms() {
        let t = NotifyTarget::parse("udp:10.0.0.5:5060").unwrap();
        assert!(!t.tcp);
        assert_eq!((t.host.as_str(), t.port), ("10.0.0.5", 5060));
        let t = NotifyTarget::parse("tcp:[::1]:5070").unwrap();
        assert_eq!(t.to_string(), "tcp:[::1]:5070");
        assert!(NotifyTarget::parse("sip:10.0.0.5:5060").is_err());
        assert!(NotifyTarget::parse("udp:10.0.0.5").is_err());
        assert!(NotifyTarget::parse("udp:10.0.0.5:0").is_err());
        assert!(NotifyTarget::parse("udp:a b:5060").is_err());
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
