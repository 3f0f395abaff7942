//! Typed change-log actions and change kinds.
//!
//! An [`Action`] names what a committed mutation was (`sca.create`); it is serialised as that
//! exact string, so stored change logs and API output read as before. A [`ChangeKind`] says what
//! a change did to the phones it touches (`lines`, `keys`, `settings`, `template`: the names
//! model.toml `reboot_on` uses). The rules decide the kind from what actually changed and put it
//! in their [`Effect`](super::Effect); the sync dispatcher reads it from the change entry and never
//! looks at the action.

use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

/// What a change did to the phones it touches; model.toml `reboot_on` lists the kinds that need
/// the reboot event rather than the re-sync event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ChangeKind {
    /// What a phone registers or shows as a line changed: a registration (identity, credentials,
    /// registrar), an appearance (primary, SCA, shared line, hot-desk guest) or its place.
    Lines,
    /// Programmable keys or key labels changed, the registrations did not.
    Keys,
    /// Anything else a template may render (features, settings, names that are no line's).
    Settings,
    /// A template (upload, rollback, reset): the files of every device of the model.
    Template,
    /// A user's lines were taken off its phones (`unregister`, `login_allowed` set to false):
    /// always the reboot event, whatever `reboot_on` says, so the phone drops the registration.
    Unregister,
}

impl ChangeKind {
    /// Every kind, in declaration order.
    pub(crate) const ALL: [ChangeKind; 5] = [
        ChangeKind::Lines,
        ChangeKind::Keys,
        ChangeKind::Settings,
        ChangeKind::Template,
        ChangeKind::Unregister,
    ];

    /// The kind as model.toml and the API spell it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Lines => "lines",
            ChangeKind::Keys => "keys",
            ChangeKind::Settings => "settings",
            ChangeKind::Template => "template",
            ChangeKind::Unregister => "unregister",
        }
    }

    /// Whether this kind gets the reboot event (and no same-hash skip) on every model: the
    /// phone must drop a registration, which a re-sync does not make every phone do.
    pub(crate) fn forces_reboot(self) -> bool {
        self == ChangeKind::Unregister
    }

    /// The kind of a change that did both: the more disruptive one
    /// (`unregister` > `template` > `lines` > `keys` > `settings`).
    pub(crate) fn and(self, other: ChangeKind) -> ChangeKind {
        fn rank(k: ChangeKind) -> u8 {
            match k {
                ChangeKind::Settings => 0,
                ChangeKind::Keys => 1,
                ChangeKind::Lines => 2,
                ChangeKind::Template => 3,
                ChangeKind::Unregister => 4,
            }
        }
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }

    /// `kind` if `changed`, else `settings`: for comparing one field of an old and new record.
    pub(crate) fn when(changed: bool, kind: ChangeKind) -> ChangeKind {
        if changed {
            kind
        } else {
            ChangeKind::Settings
        }
    }
}

impl std::fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ChangeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ChangeKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = ChangeKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown change kind '{s}' (one of {})", names.join(", "))
            })
    }
}

/// By hand, for an error that names the valid kinds (model.toml authors read it).
impl<'de> Deserialize<'de> for ChangeKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

macro_rules! actions {
    ($($variant:ident = $name:literal => $legacy:ident,)*) => {
        /// A change-log action, `<resource>.<verb>`; serialised as that string.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub(crate) enum Action {
            $(
                #[serde(rename = $name)]
                $variant,
            )*
        }

        impl Action {
            /// Every action, in declaration order.
            pub(crate) const ALL: &'static [Action] = &[$(Action::$variant),*];

            /// The action as the change log spells it.
            pub(crate) fn as_str(self) -> &'static str {
                match self {
                    $(Action::$variant => $name,)*
                }
            }

            /// The kind a change-log entry written before kinds were stored is given: what the
            /// dispatcher used to derive from the action alone. New entries carry the kind their
            /// rule decided.
            pub(crate) fn legacy_kind(self) -> ChangeKind {
                match self {
                    $(Action::$variant => ChangeKind::$legacy,)*
                }
            }
        }
    };
}

actions! {
    GroupCreate = "group.create" => Settings,
    GroupUpdate = "group.update" => Settings,
    GroupDelete = "group.delete" => Lines,
    UserCreate = "user.create" => Settings,
    UserUpdate = "user.update" => Settings,
    UserDelete = "user.delete" => Lines,
    UserDuplicate = "user.duplicate" => Settings,
    UserSipPassword = "user.sip_password" => Lines,
    UserUnregister = "user.unregister" => Unregister,
    DeviceCreate = "device.create" => Lines,
    DeviceUpdate = "device.update" => Lines,
    DeviceDelete = "device.delete" => Settings,
    DeviceCredentials = "device.credentials" => Settings,
    DeviceHotDeskLogin = "device.hot_desk_login" => Lines,
    DeviceHotDeskLogout = "device.hot_desk_logout" => Lines,
    ScaCreate = "sca.create" => Lines,
    ScaUpdate = "sca.update" => Lines,
    ScaDelete = "sca.delete" => Lines,
    SharedLineCreate = "shared_line.create" => Lines,
    SharedLineUpdate = "shared_line.update" => Lines,
    SharedLineMembers = "shared_line.members" => Lines,
    SharedLineDelete = "shared_line.delete" => Lines,
    TokenCreate = "token.create" => Settings,
    TokenDelete = "token.delete" => Settings,
    TemplateUpdate = "template.update" => Template,
    TemplateRollback = "template.rollback" => Template,
    TemplateReset = "template.reset" => Template,
    Import = "import" => Settings,
    // Newer than stored kinds: their legacy kind is never read.
    DeviceKeysMove = "device.keys_move" => Settings,
    KeyProfileCreate = "key_profile.create" => Settings,
    KeyProfileUpdate = "key_profile.update" => Settings,
    KeyProfileDelete = "key_profile.delete" => Settings,
    KeyProfileKeysMove = "key_profile.keys_move" => Settings,
    FirmwareUpload = "firmware.upload" => Settings,
    FirmwareDelete = "firmware.delete" => Settings,
    FirmwareTargetSet = "firmware_target.set" => Settings,
    FirmwareTargetDelete = "firmware_target.delete" => Settings,
    FirmwareTargetPause = "firmware_target.pause" => Settings,
    FirmwareTargetResume = "firmware_target.resume" => Settings,
}

/// By hand: utoipa's derive does not see serde renames made inside `macro_rules!` (it would list
/// the variant names).
impl utoipa::PartialSchema for Action {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("A change-log action, `<resource>.<verb>`."))
            .enum_values(Some(Action::ALL.iter().map(|a| a.as_str())))
            .into()
    }
}

impl ToSchema for Action {}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Action {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_serialise_as_their_change_log_strings() {
        for &a in Action::ALL {
            let json = serde_json::to_value(a).unwrap();
            assert_eq!(json, a.as_str());
            assert_eq!(serde_json::from_value::<Action>(json).unwrap(), a);
        }
        assert_eq!(
            serde_json::to_string(&Action::ScaCreate).unwrap(),
            "\"sca.create\""
        );
        assert_eq!(
            serde_json::from_str::<Action>("\"device.hot_desk_login\"").unwrap(),
            Action::DeviceHotDeskLogin
        );
        assert!(serde_json::from_str::<Action>("\"sca.frobnicate\"").is_err());
    }

    #[test]
    fn legacy_kinds_are_what_the_action_prefix_gave() {
        use ChangeKind::*;
        for &a in Action::ALL {
            let s = a.as_str();
            let want = if s == "user.unregister" {
                Unregister
            } else if s.starts_with("template.") {
                Template
            } else if s.starts_with("sca.")
                || s.starts_with("shared_line.")
                || s.starts_with("device.hot_desk")
                || matches!(
                    s,
                    "device.create"
                        | "device.update"
                        | "user.delete"
                        | "user.sip_password"
                        | "group.delete"
                )
            {
                Lines
            } else {
                Settings
            };
            assert_eq!(a.legacy_kind(), want, "{s}");
        }
    }

    #[test]
    fn change_kinds_are_snake_case_and_unknown_names_are_refused_clearly() {
        for k in ChangeKind::ALL {
            let json = serde_json::to_value(k).unwrap();
            assert_eq!(json, k.as_str());
            assert_eq!(serde_json::from_value::<ChangeKind>(json).unwrap(), k);
        }
        let e = serde_json::from_str::<ChangeKind>("\"line\"").unwrap_err();
        assert!(
            e.to_string().contains(
                "unknown change kind 'line' (one of lines, keys, settings, template, unregister)"
            ),
            "{e}"
        );
    }

    #[test]
    fn the_more_disruptive_kind_wins() {
        use ChangeKind::*;
        assert_eq!(Settings.and(Keys), Keys);
        assert_eq!(Lines.and(Keys), Lines);
        assert_eq!(Keys.and(Lines).and(Settings), Lines);
        assert_eq!(Settings.and(Settings), Settings);
        assert_eq!(ChangeKind::when(false, Lines), Settings);
        assert_eq!(ChangeKind::when(true, Keys), Keys);
        assert_eq!(Template.and(Unregister), Unregister);
        assert_eq!(Unregister.and(Lines), Unregister);
    }

    #[test]
    fn only_unregister_forces_the_reboot_event() {
        for k in ChangeKind::ALL {
            assert_eq!(k.forces_reboot(), k == ChangeKind::Unregister, "{k}");
        }
    }
}
