//! What the admin API returns: entities without their secrets, with derived values filled in.
//! Secrets appear only in the one response that creates or rotates them.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::layout::{layout, Layout};
use crate::domain::rules::{
    DeviceInput, KeyProfileInput, ScaInput, SharedLineInput, SipInput, UserInput,
};
use crate::domain::state::State;
use crate::domain::*;

/// A user's SIP identity as shown: effective values; `password` only on create.
#[derive(Serialize, ToSchema)]
pub(crate) struct SipView {
    pub(crate) username: String,
    pub(crate) auth_username: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) password: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct UserView {
    #[schema(value_type = String)]
    pub(crate) group: GroupId,
    pub(crate) extension: Extension,
    pub(crate) phone_number: Option<PhoneNumber>,
    pub(crate) first_name: String,
    pub(crate) last_name: String,
    /// What the phone shows: the override, else "first last".
    pub(crate) display_name: String,
    pub(crate) kind: UserKind,
    pub(crate) sip: SipView,
    pub(crate) features: Features,
    /// Whether the user may log in; false renders its lines disabled on every phone.
    pub(crate) login_allowed: bool,
    /// Endpoint kinds the user may use: `{ip_phone, softphone, third_party}`.
    pub(crate) allowed_endpoints: AllowedEndpoints,
    /// Unregistered (`POST .../unregister`) and not changed since: its lines render disabled.
    pub(crate) unregistered: bool,
    /// Prefix of this user's SCA line ports (`<phone_number>` or `<group>_<extension>`).
    pub(crate) line_port_prefix: String,
    pub(crate) sca_endpoints: usize,
}

impl UserView {
    pub(crate) fn of(s: &State, u: &User) -> UserView {
        UserView {
            group: u.group.clone(),
            extension: u.extension.clone(),
            phone_number: u.phone_number.clone(),
            first_name: u.first_name.to_string(),
            last_name: u.last_name.to_string(),
            display_name: u.display(),
            kind: u.kind,
            sip: SipView {
                username: u.sip_username(),
                auth_username: u.auth_username(),
                password: None,
            },
            features: u.features.clone(),
            login_allowed: u.login_allowed,
            allowed_endpoints: u.allowed_endpoints,
            unregistered: u.unregistered,
            line_port_prefix: u.line_port_prefix(),
            sca_endpoints: s.scas_of_user(&u.group, &u.extension).count(),
        }
    }
    pub(crate) fn with_password(mut self, u: &User) -> Self {
        self.sip.password = Some(u.sip.password.expose().to_string());
        self
    }
}

/// The input form of a stored user (what a PATCH merges into); the password stays out.
pub(crate) fn user_input(u: &User) -> UserInput {
    UserInput {
        extension: u.extension.clone(),
        phone_number: u.phone_number.clone(),
        first_name: u.first_name.to_string(),
        last_name: u.last_name.to_string(),
        display_name: u.display_name.as_ref().map(|d| d.to_string()),
        kind: u.kind,
        sip: SipInput {
            username: u.sip.username().map(str::to_string),
            auth_username: u.sip.auth_username().map(str::to_string),
            password: None,
        },
        features: u.features.clone(),
        login_allowed: u.login_allowed,
        allowed_endpoints: u.allowed_endpoints,
    }
}

/// A softphone's one-time provisioning link (`https://<id>:<password>@host:port/<file>`: the
/// credentials in the URL are what Linphone answers the digest challenge with).
#[derive(Serialize, ToSchema)]
pub(crate) struct ProvisioningLinkView {
    /// The link, credentials included: the only place the new password is shown.
    pub(crate) url: String,
    /// The same URL without credentials (what the device fetches; safe to log).
    pub(crate) file_url: String,
    pub(crate) username: String,
    pub(crate) password: String,
}

impl ProvisioningLinkView {
    /// The link for `mac`'s main file `file` at the phone listener's `base_url`.
    pub(crate) fn new(base_url: &str, mac: &Mac, file: &str, password: String) -> Self {
        let base = base_url.trim_end_matches('/');
        let (scheme, rest) = base.split_once("://").unwrap_or(("https", base));
        // Digest credentials in the URL's userinfo, percent-encoded (RFC 3986 §3.2.1).
        let enc = |s: &str| -> String {
            s.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect()
        };
        ProvisioningLinkView {
            url: format!(
                "{scheme}://{}:{}@{rest}/{file}",
                enc(mac.as_str()),
                enc(&password)
            ),
            file_url: format!("{base}/{file}"),
            username: mac.to_string(),
            password,
        }
    }
}

/// Provisioning credentials, shown on create and rotate only.
#[derive(Serialize, ToSchema)]
pub(crate) struct CredentialsView {
    pub(crate) username: String,
    pub(crate) password: String,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct DeviceView {
    pub(crate) mac: Mac,
    #[schema(value_type = String)]
    pub(crate) group: GroupId,
    pub(crate) name: String,
    pub(crate) model: String,
    /// `ip_phone` or `softphone` (from the model): a softphone's `mac` is its server-assigned
    /// id, and it gets a provisioning link (`POST .../provisioning-link`).
    pub(crate) kind: EndpointKind,
    pub(crate) owner: Option<Extension>,
    /// The hot-desk user logged in, if any.
    pub(crate) hot_desk: Option<Extension>,
    pub(crate) keys: Vec<ProgKey>,
    pub(crate) settings: BTreeMap<String, String>,
    pub(crate) notify_target: Option<String>,
    /// Sidecars: `[{model, count}]`.
    pub(crate) expansion_modules: Vec<ExpansionModule>,
    /// The group key profile whose keys the device shows under its own.
    pub(crate) key_profile: Option<ProfileName>,
    /// The last change-log seq that touched this device.
    pub(crate) revision: u64,
    /// The revision of the last main-file fetch (the phone has applied it).
    pub(crate) applied_revision: u64,
    /// `in_sync`, `pending`, `notified` or `failed`.
    pub(crate) state: crate::store::SyncPhase,
    /// The last NOTIFY: time, event, result, attempts.
    pub(crate) last_notify: Option<crate::store::LastNotify>,
    /// The last fetch: time, address, User-Agent, firmware.
    pub(crate) last_seen: Option<crate::store::CheckIn>,
    /// The files this device requests, in order.
    pub(crate) files: Vec<String>,
    /// The derived registrations and line keys.
    #[schema(value_type = Object)]
    pub(crate) layout: Option<Layout>,
    /// The version it reports and its group's target for its model (`target`/`state` null
    /// without a target).
    pub(crate) firmware: DeviceFirmware,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) credentials: Option<CredentialsView>,
}

/// A device against its firmware target.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub(crate) struct DeviceFirmware {
    /// The version of its last User-Agent (null before it was seen, or when the UA names none).
    pub(crate) running: Option<String>,
    pub(crate) target: Option<String>,
    pub(crate) state: Option<crate::domain::firmware::FirmwareState>,
}

impl DeviceFirmware {
    pub(crate) fn of(s: &State, app: &crate::App, d: &Device) -> DeviceFirmware {
        let running = app.store.checkin(&d.mac).and_then(|c| c.firmware);
        let t = s.firmware_target_of(d);
        let state = t.map(|t| {
            let failed = app.firmware.failed(&d.mac, &t.version);
            crate::domain::firmware::state(t, &d.mac, running.as_deref(), failed)
        });
        DeviceFirmware {
            running,
            target: t.map(|t| t.version.clone()),
            state,
        }
    }
}

impl DeviceView {
    pub(crate) fn of(s: &State, app: &crate::App, d: &Device) -> DeviceView {
        let store = &app.store;
        let catalog = store.catalog();
        let last_seen = store.checkin(&d.mac).map(|mut c| {
            c.applied_identity = None; // holds a password
            c
        });
        let files = catalog
            .get(&d.model)
            .map(|m| {
                m.files
                    .iter()
                    .map(|f| f.name_for(&d.mac, m.mac_case))
                    .collect()
            })
            .unwrap_or_default();
        let applied_revision = last_seen.as_ref().map(|c| c.applied_revision).unwrap_or(0);
        let (state, last_notify) = app.sync.state_of(d, applied_revision);
        DeviceView {
            applied_revision,
            state,
            last_notify,
            last_seen,
            files,
            mac: d.mac.clone(),
            group: d.group.clone(),
            name: d.name.to_string(),
            model: d.model.to_string(),
            kind: catalog.get(&d.model).map(|m| m.kind).unwrap_or_default(),
            owner: d.owner.clone(),
            hot_desk: d.hot_desk.as_deref().cloned(),
            keys: d.keys.clone(),
            settings: d.settings.clone(),
            notify_target: d.notify_target.as_ref().map(|t| t.to_string()),
            expansion_modules: d.expansion_modules.to_vec(),
            key_profile: d.key_profile.as_deref().cloned(),
            revision: d.revision,
            layout: catalog
                .device_caps(&d.model, &d.expansion_modules)
                .and_then(|c| c.ok())
                .and_then(|c| layout(s, d, c).ok()),
            firmware: DeviceFirmware::of(s, app, d),
            credentials: None,
        }
    }
    pub(crate) fn with_credentials(mut self, d: &Device) -> Self {
        self.credentials = Some(CredentialsView {
            username: d.mac.to_string(),
            password: d.prov_password.expose().to_string(),
        });
        self
    }
}

pub(crate) fn device_input(d: &Device) -> DeviceInput {
    DeviceInput {
        mac: Some(d.mac.clone()),
        name: Some(d.name.to_string()),
        model: d.model.to_string(),
        owner: d.owner.clone(),
        keys: d.keys.clone(),
        settings: d.settings.clone(),
        notify_target: d.notify_target.as_deref().cloned(),
        expansion_modules: d.expansion_modules.to_vec(),
        key_profile: d.key_profile.as_deref().cloned(),
    }
}

/// A key profile as the API shows it (it holds no secret), with the devices that use it.
#[derive(Serialize, ToSchema)]
pub(crate) struct KeyProfileView {
    pub(crate) name: ProfileName,
    #[schema(value_type = String)]
    pub(crate) group: GroupId,
    pub(crate) keys: Vec<ProgKey>,
    /// MACs of the devices assigned to it, ascending.
    pub(crate) devices: Vec<Mac>,
}

impl KeyProfileView {
    pub(crate) fn of(s: &State, p: &KeyProfile) -> KeyProfileView {
        let mut devices: Vec<Mac> = s
            .devices_with_profile(&p.group, &p.name)
            .map(|d| d.mac.clone())
            .collect();
        devices.sort();
        KeyProfileView {
            name: p.name.clone(),
            group: p.group.clone(),
            keys: p.keys.clone(),
            devices,
        }
    }
}

pub(crate) fn key_profile_input(p: &KeyProfile) -> KeyProfileInput {
    KeyProfileInput {
        name: p.name.clone(),
        keys: p.keys.clone(),
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ScaView {
    pub(crate) line_port: LinePort,
    #[schema(value_type = String)]
    pub(crate) group: GroupId,
    /// The user whose line is shared.
    pub(crate) extension: Extension,
    /// The device's name.
    pub(crate) device: String,
    pub(crate) mac: Mac,
    pub(crate) key: KeyNo,
    pub(crate) label: Option<String>,
    pub(crate) active: bool,
    pub(crate) allow_origination: bool,
    pub(crate) allow_termination: bool,
}

impl ScaView {
    pub(crate) fn of(s: &State, x: &ScaEndpoint) -> ScaView {
        ScaView {
            line_port: x.line_port.clone(),
            group: x.group.clone(),
            extension: x.extension.clone(),
            device: s
                .devices
                .get(&x.device)
                .map(|d| d.name.to_string())
                .unwrap_or_default(),
            mac: x.device.clone(),
            key: x.key,
            label: x.label.clone(),
            active: x.active,
            allow_origination: x.allow_origination,
            allow_termination: x.allow_termination,
        }
    }
}

pub(crate) fn sca_input(x: &ScaEndpoint) -> ScaInput {
    ScaInput {
        line_port: Some(x.line_port.to_string()),
        device: x.device.to_string(),
        key: Some(x.key),
        label: x.label.clone(),
        active: x.active,
        allow_origination: x.allow_origination,
        allow_termination: x.allow_termination,
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct SharedLineView {
    #[schema(value_type = String)]
    pub(crate) group: GroupId,
    pub(crate) number: SharedNumber,
    /// Its SIP user: `<group>_<number>`.
    pub(crate) line_port: String,
    pub(crate) direct_dial: Option<String>,
    pub(crate) description: String,
    pub(crate) forward_to_voicemail: bool,
    pub(crate) autodial_digits: Option<String>,
    pub(crate) members: Vec<Member>,
    /// The SIP password, on create only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) password: Option<String>,
}

impl SharedLineView {
    pub(crate) fn of(l: &SharedLine) -> SharedLineView {
        SharedLineView {
            group: l.group.clone(),
            number: l.number.clone(),
            line_port: l.line_port(),
            direct_dial: l.direct_dial.clone(),
            description: l.description.clone(),
            forward_to_voicemail: l.forward_to_voicemail,
            autodial_digits: l.autodial_digits.clone(),
            members: l.members.clone(),
            password: None,
        }
    }
}

pub(crate) fn shared_line_input(l: &SharedLine) -> SharedLineInput {
    SharedLineInput {
        number: l.number.clone(),
        direct_dial: l.direct_dial.clone(),
        description: l.description.clone(),
        forward_to_voicemail: l.forward_to_voicemail,
        autodial_digits: l.autodial_digits.clone(),
        members: l.members.clone(),
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct TokenView {
    pub(crate) id: String,
    pub(crate) name: String,
    #[schema(value_type = Option<String>)]
    pub(crate) group: Option<GroupId>,
    pub(crate) created_at: String,
    /// The bearer secret, on create only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) token: Option<String>,
}

impl TokenView {
    pub(crate) fn of(t: &Token) -> TokenView {
        TokenView {
            id: t.id.clone(),
            name: t.name.clone(),
            group: t.group.clone(),
            created_at: t.created_at.clone(),
            token: None,
        }
    }
}

/// A group with the sync state of its devices.
#[derive(Serialize, ToSchema)]
pub(crate) struct GroupView {
    #[serde(flatten)]
    pub(crate) group: Group,
    /// Devices per sync state.
    pub(crate) sync: crate::sync::Counts,
}

impl GroupView {
    pub(crate) fn of(s: &State, app: &crate::App, g: &Group) -> GroupView {
        let devices = s.devices_of(&g.id).map(|d| {
            let applied = app
                .store
                .checkin(&d.mac)
                .map(|c| c.applied_revision)
                .unwrap_or(0);
            (d, applied)
        });
        GroupView {
            group: g.clone(),
            sync: app.sync.counts(devices),
        }
    }
}
