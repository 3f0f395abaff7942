//! Identifier newtypes, parsed once at the edge and trusted inside.
//!
//! Every identifier that a rule depends on (`Mac`, `GroupId`, `Extension`, `PhoneNumber`,
//! `SharedNumber`, `LinePort`) has exactly one parser here. They are stored inline (up to 24
//! bytes without a heap allocation), which matters at 100,000 users and devices. Serde goes through the same parser, so
//! a value read from JSON or from the store is as valid as one typed by an admin.

use std::fmt;

use compact_str::CompactString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{DomainError, ErrorCode};

/// Implements `Display`, `Serialize`, `Deserialize` (through `parse`) and `as_str` for a
/// string-backed newtype.
/// The schema's `pattern` accepts exactly what `parse` accepts (a unit test checks examples of
/// both), so a client validating against the OpenAPI document refuses what the server refuses.
macro_rules! string_id {
    ($name:ident, $what:literal, $pattern:literal) => {
        impl $name {
            /// The canonical text form.
            // Generated for every id; `PhoneNumber` only ever goes through `Display`, so for it
            // alone this method is unused.
            #[allow(dead_code, reason = "unused for PhoneNumber only")]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::parse(&s).map_err(|e| serde::de::Error::custom(e.detail))
            }
        }
        impl std::str::FromStr for $name {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self, DomainError> {
                $name::parse(s)
            }
        }
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some($what))
                    .pattern(Some($pattern))
                    .into()
            }
        }
        impl utoipa::ToSchema for $name {}
        impl $name {
            /// The schema's pattern (ECMA-262 / Python `re`).
            #[cfg(test)]
            pub(crate) const PATTERN: &'static str = $pattern;
        }
    };
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// A device MAC address: 12 lowercase hex digits.
///
/// Accepts `0004F2ABCDEF`, `00:04:f2:ab:cd:ef`, `00-04-F2-AB-CD-EF` and `0004.f2ab.cdef`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Mac(CompactString);

impl Mac {
    pub fn parse(input: &str) -> Result<Mac, DomainError> {
        let bad = || {
            DomainError::validation(
                "mac",
                format!("'{input}' is not a MAC address (12 hex digits, e.g. 0004f2abcdef)"),
            )
        };
        let s = input.trim();
        // The common spelling (12 hex digits, as in every per-device file name): no allocation.
        if s.len() == 12 {
            let mut b = [0u8; 12];
            for (o, c) in b.iter_mut().zip(s.bytes()) {
                if !c.is_ascii_hexdigit() {
                    return Err(bad());
                }
                *o = c.to_ascii_lowercase();
            }
            let hex = std::str::from_utf8(&b).map_err(|_| bad())?;
            return Ok(Mac(CompactString::new(hex)));
        }
        let hex: String = match s.len() {
            // aa:bb:cc:dd:ee:ff or aa-bb-cc-dd-ee-ff: one separator, used consistently.
            17 => {
                let sep = s.as_bytes()[2];
                if sep != b':' && sep != b'-' {
                    return Err(bad());
                }
                let parts: Vec<&str> = s.split(sep as char).collect();
                if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
                    return Err(bad());
                }
                parts.concat()
            }
            // aabb.ccdd.eeff (Cisco style)
            14 => {
                let parts: Vec<&str> = s.split('.').collect();
                if parts.len() != 3 || parts.iter().any(|p| p.len() != 4) {
                    return Err(bad());
                }
                parts.concat()
            }
            _ => return Err(bad()),
        };
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Mac(hex.to_ascii_lowercase().into()))
    }

    /// A softphone's id (SPEC §1 "Device": a softphone has no MAC, the server assigns its id):
    /// a locally administered unicast address, first octet `02`, then five random octets. No
    /// vendor OUI has the locally-administered bit, so the id never names a real phone, and it
    /// keeps the whole device machinery (revision, sync state, check-in, provisioning log).
    pub(crate) fn softphone(random: [u8; 5]) -> Mac {
        let mut b = [0x02u8; 6];
        b[1..].copy_from_slice(&random);
        Mac(b
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
            .into())
    }

    /// Locally administered (bit 1 of the first octet) and unicast (bit 0 clear): the form of a
    /// server-assigned softphone id, never a vendor's MAC.
    pub(crate) fn is_local(&self) -> bool {
        u8::from_str_radix(&self.0[..2], 16).is_ok_and(|o| o & 0x03 == 0x02)
    }

    /// `0004F2ABCDEF`
    pub fn upper(&self) -> String {
        self.0.as_str().to_ascii_uppercase()
    }

    /// `00:04:f2:ab:cd:ef`
    pub fn colon(&self) -> String {
        let b = self.0.as_bytes();
        (0..6)
            .map(|i| std::str::from_utf8(&b[i * 2..i * 2 + 2]).unwrap_or_default())
            .collect::<Vec<_>>()
            .join(":")
    }
}
string_id!(
    Mac,
    "MAC address, 12 lowercase hex digits (input also accepts : - . forms)",
    "^\\s*([0-9A-Fa-f]{12}|[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}|[0-9A-Fa-f]{2}(-[0-9A-Fa-f]{2}){5}|[0-9A-Fa-f]{4}\\.[0-9A-Fa-f]{4}\\.[0-9A-Fa-f]{4})\\s*$"
);

/// A group (tenant/site) id: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`, e.g. `ZZZ1900111-01`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct GroupId(CompactString);

impl GroupId {
    pub fn parse(s: &str) -> Result<GroupId, DomainError> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 64
            && b[0].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
        if ok {
            Ok(GroupId(s.into()))
        } else {
            Err(DomainError::validation(
                "id",
                format!(
                    "'{s}' is not a group id (letters, digits, '.', '_', '-', starting with a letter or digit, at most 64)"
                ),
            ))
        }
    }
}
string_id!(GroupId, "group id", "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$");

/// A user's extension: 2–6 digits, unique in its group.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Extension(CompactString);

impl Extension {
    pub fn parse(s: &str) -> Result<Extension, DomainError> {
        if all_digits(s) && (2..=6).contains(&s.len()) {
            Ok(Extension(s.into()))
        } else {
            Err(DomainError::validation(
                "extension",
                format!("'{s}' is not an extension (2 to 6 digits)"),
            ))
        }
    }
}
string_id!(Extension, "extension, 2 to 6 digits", "^[0-9]{2,6}$");

/// A phone number (telephone number, TN): 7–15 digits, unique on the platform.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub(crate) struct PhoneNumber(CompactString);

impl PhoneNumber {
    pub(crate) fn parse(s: &str) -> Result<PhoneNumber, DomainError> {
        if all_digits(s) && (7..=15).contains(&s.len()) {
            Ok(PhoneNumber(s.into()))
        } else {
            Err(DomainError::validation(
                "phone_number",
                format!("'{s}' is not a phone number (7 to 15 digits, e.g. 6035551212)"),
            ))
        }
    }
}
string_id!(PhoneNumber, "phone number, 7 to 15 digits", "^[0-9]{7,15}$");

/// A shared line's number: 2–5 digits, unique in its group among shared lines and extensions.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub(crate) struct SharedNumber(CompactString);

impl SharedNumber {
    pub(crate) fn parse(s: &str) -> Result<SharedNumber, DomainError> {
        if all_digits(s) && (2..=5).contains(&s.len()) {
            Ok(SharedNumber(s.into()))
        } else {
            Err(DomainError::validation(
                "number",
                format!("'{s}' is not a shared line number (2 to 5 digits)"),
            ))
        }
    }
}
string_id!(
    SharedNumber,
    "shared line number, 2 to 5 digits",
    "^[0-9]{2,5}$"
);

/// The line port of a Shared Call Appearance endpoint: `<phone_number>_sca<N>` or
/// `<group>_<extension>_sca<N>`, N ≥ 1.
///
/// Parsing checks the shape only; whether the prefix belongs to the right user is a rule
/// ([`LinePort::expected_prefix`]) checked where the user is known.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct LinePort(CompactString);

impl LinePort {
    pub(crate) fn parse(s: &str) -> Result<LinePort, DomainError> {
        Self::split(s)
            .map(|_| LinePort(s.into()))
            .ok_or_else(|| invalid_line_port(s, None))
    }

    /// A value below every line port (the empty string), only as the lower bound of a range
    /// over pairs that end in a line port; never a line port itself.
    pub(crate) fn lowest() -> LinePort {
        LinePort(CompactString::default())
    }

    /// The line port for `prefix` and appearance number `n`.
    pub(crate) fn new(prefix: &str, n: u32) -> LinePort {
        LinePort(compact_str::format_compact!("{prefix}_sca{n}"))
    }

    /// (prefix, N) of a well-formed line port.
    fn split(s: &str) -> Option<(&str, u32)> {
        let (prefix, n) = s.rsplit_once("_sca")?;
        if !all_digits(n) || n.starts_with('0') || n.len() > 6 || prefix.is_empty() {
            return None;
        }
        let n: u32 = n.parse().ok()?;
        let prefix_ok = if all_digits(prefix) {
            (7..=15).contains(&prefix.len())
        } else {
            let (g, ext) = prefix.rsplit_once('_')?;
            GroupId::parse(g).is_ok() && Extension::parse(ext).is_ok()
        };
        prefix_ok.then_some((prefix, n))
    }

    /// The part before `_scaN`.
    pub(crate) fn prefix(&self) -> &str {
        Self::split(&self.0).map(|(p, _)| p).unwrap_or_default()
    }

    /// The prefix every SCA line port of a user must carry: the phone number when the user has
    /// one, else `<group>_<extension>`.
    pub(crate) fn expected_prefix(
        group: &GroupId,
        ext: &Extension,
        phone: Option<&PhoneNumber>,
    ) -> String {
        match phone {
            Some(p) => p.to_string(),
            None => format!("{group}_{ext}"),
        }
    }
}
string_id!(
    LinePort,
    "SCA line port: <phone_number>_sca<N> or <group>_<extension>_sca<N>",
    "^([0-9]{7,15}|[A-Za-z0-9][A-Za-z0-9._-]{0,63}_[0-9]{2,6})_sca[1-9][0-9]{0,5}$"
);

pub(crate) fn invalid_line_port(s: &str, expected_prefix: Option<&str>) -> DomainError {
    let hint = match expected_prefix {
        Some(p) => format!("for this user it must be {p}_sca<N>, e.g. {p}_sca1"),
        None => "expected <phone_number>_sca<N> (e.g. 6035551212_sca1) or <group>_<extension>_sca<N> (e.g. ZZZ1900111-01_5555_sca1)".to_string(),
    };
    DomainError::unprocessable(
        ErrorCode::InvalidLinePort,
        format!("'{s}' is not a valid line port: {hint}"),
    )
    .with_field("line_port")
}

/// A line key number on a device, 1-based.
pub(crate) type KeyNo = u16;

/// The name of a group's key profile ("Reception", "Sales Team"): 1–64 letters, digits,
/// spaces, `.`, `_`, `-`, starting with a letter or digit, not ending with a space (no `/`: it
/// is a path segment and part of a store key).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub(crate) struct ProfileName(CompactString);

impl ProfileName {
    pub(crate) fn parse(s: &str) -> Result<ProfileName, DomainError> {
        let b = s.as_bytes();
        let ok = (1..=64).contains(&b.len())
            && b[0].is_ascii_alphanumeric()
            && !s.ends_with(' ')
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b' ' | b'.' | b'_' | b'-'));
        if ok {
            Ok(ProfileName(s.into()))
        } else {
            Err(DomainError::validation(
                "name",
                format!("'{s}' is not a key profile name (1 to 64 letters, digits, spaces, . _ -; starting with a letter or digit)"),
            ))
        }
    }
}
string_id!(
    ProfileName,
    "key profile name, e.g. Reception",
    "^[A-Za-z0-9]([A-Za-z0-9 ._-]{0,62}[A-Za-z0-9._-])?$"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_softphone_id_is_locally_administered_unicast_and_no_vendor_mac_is() {
        let m = Mac::softphone([0xab, 0xcd, 0xef, 0x01, 0x23]);
        assert_eq!(m.as_str(), "02abcdef0123");
        assert!(m.is_local());
        // Vendor OUIs (Polycom 0004f2, Yealink 805ec0, Cisco 00562b): the bit is clear.
        for v in ["0004f2abcdef", "805ec0123456", "00562b043615"] {
            assert!(!Mac::parse(v).unwrap().is_local(), "{v}");
        }
        // A multicast address with the bit set is not a device id either.
        assert!(!Mac::parse("03abcdef0123").unwrap().is_local());
    }

    #[test]
    fn mac_accepts_every_input_form_and_canonicalises_to_lowercase() {
        for input in [
            "0004F2ABCDEF",
            "0004f2abcdef",
            "00:04:f2:ab:cd:ef",
            "00-04-F2-AB-CD-EF",
            "0004.f2ab.cdef",
            " 0004F2ABCDEF ",
        ] {
            assert_eq!(
                Mac::parse(input).unwrap().as_str(),
                "0004f2abcdef",
                "{input}"
            );
        }
    }

    #[test]
    fn mac_rejects_malformed_input() {
        for input in [
            "",
            "0004F2ABCDE",
            "0004F2ABCDEG",
            "0004f2abcdé",
            "00:04:f2:ab:cd-ef",
            "000:4f2:ab:cd:ef0",
            "0004.f2ab.cde",
            "0004f2abcdef0",
            "../etc/passwd",
        ] {
            let e = Mac::parse(input).unwrap_err();
            assert_eq!(e.code, ErrorCode::Validation, "{input}");
        }
    }

    #[test]
    fn mac_renders_upper_and_colon_forms() {
        let m = Mac::parse("0004f2abcdef").unwrap();
        assert_eq!(m.upper(), "0004F2ABCDEF");
        assert_eq!(m.colon(), "00:04:f2:ab:cd:ef");
    }

    #[test]
    fn group_id_follows_the_pattern() {
        assert!(GroupId::parse("ZZZ1900111-01").is_ok());
        assert!(GroupId::parse("a").is_ok());
        assert!(GroupId::parse(&"a".repeat(64)).is_ok());
        assert!(GroupId::parse(&"a".repeat(65)).is_err());
        assert!(GroupId::parse("-abc").is_err());
        assert!(GroupId::parse("a b").is_err());
        assert!(GroupId::parse("a/b").is_err());
        assert!(GroupId::parse("").is_err());
    }

    #[test]
    fn extension_is_two_to_six_digits() {
        assert!(Extension::parse("55").is_ok());
        assert!(Extension::parse("0901").is_ok());
        assert!(Extension::parse("123456").is_ok());
        assert!(Extension::parse("5").is_err());
        assert!(Extension::parse("1234567").is_err());
        assert!(Extension::parse("12a4").is_err());
    }

    #[test]
    fn phone_number_is_seven_to_fifteen_digits() {
        assert!(PhoneNumber::parse("6035551212").is_ok());
        assert!(PhoneNumber::parse("1234567").is_ok());
        assert!(PhoneNumber::parse("123456789012345").is_ok());
        assert!(PhoneNumber::parse("123456").is_err());
        assert!(PhoneNumber::parse("1234567890123456").is_err());
        assert!(PhoneNumber::parse("+16035551212").is_err());
    }

    #[test]
    fn shared_number_is_two_to_five_digits() {
        assert!(SharedNumber::parse("555").is_ok());
        assert!(SharedNumber::parse("12345").is_ok());
        assert!(SharedNumber::parse("1").is_err());
        assert!(SharedNumber::parse("123456").is_err());
    }

    #[test]
    fn line_port_accepts_both_guide_forms() {
        let a = LinePort::parse("6035551212_sca1").unwrap();
        assert_eq!(a.prefix(), "6035551212");
        assert_eq!(LinePort::split(a.as_str()), Some(("6035551212", 1)));
        let b = LinePort::parse("ZZZ1900111-01_5555_sca1").unwrap();
        assert_eq!(b.prefix(), "ZZZ1900111-01_5555");
        assert_eq!(LinePort::split(b.as_str()), Some(("ZZZ1900111-01_5555", 1)));
        assert_eq!(
            LinePort::split("6035551212_sca35"),
            Some(("6035551212", 35))
        );
    }

    #[test]
    fn line_port_rejects_other_forms_with_invalid_line_port() {
        for s in [
            "6035551212",
            "6035551212_sca",
            "6035551212_sca0",
            "6035551212_sca01",
            "6035551212_SCA1",
            "603555_sca1",
            "ZZZ1900111-01_sca1",
            "ZZZ1900111-01_5_sca1",
            "_5555_sca1",
            "6035551212_sca1x",
            "foo",
        ] {
            let e = LinePort::parse(s).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidLinePort, "{s}");
        }
    }

    #[test]
    fn expected_prefix_prefers_the_phone_number() {
        let g = GroupId::parse("ZZZ1900111-01").unwrap();
        let e = Extension::parse("5555").unwrap();
        let p = PhoneNumber::parse("6035551212").unwrap();
        assert_eq!(LinePort::expected_prefix(&g, &e, Some(&p)), "6035551212");
        assert_eq!(
            LinePort::expected_prefix(&g, &e, None),
            "ZZZ1900111-01_5555"
        );
    }

    #[test]
    fn serde_goes_through_the_parser() {
        let m: Mac = serde_json::from_str("\"00:04:F2:AB:CD:EF\"").unwrap();
        assert_eq!(m.as_str(), "0004f2abcdef");
        assert!(serde_json::from_str::<Extension>("\"1\"").is_err());
    }

    /// The OpenAPI pattern of each id accepts exactly what its parser accepts.
    #[test]
    fn schema_patterns_agree_with_the_parsers() {
        fn check(pattern: &str, parse: impl Fn(&str) -> bool, samples: &[&str]) {
            let re = regex::Regex::new(pattern).unwrap();
            for s in samples {
                assert_eq!(re.is_match(s), parse(s), "{pattern} vs parser on {s:?}");
            }
        }
        let common = [
            "",
            " ",
            "a",
            "12",
            "123",
            "0004f2abcdef",
            "1234567",
            "x\n",
            "١٢",
            "12 ",
            "-1",
            "1.5",
        ];
        fn and<'a>(common: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
            common.iter().chain(extra).copied().collect()
        }
        let with = |extra: &[&'static str]| and(&common, extra);
        let (a64, a65) = ("a".repeat(64), "a".repeat(65));
        check(
            Mac::PATTERN,
            |s| Mac::parse(s).is_ok(),
            &with(&[
                "0004F2ABCDEF",
                " 0004f2abcdef\t",
                "00:04:f2:ab:cd:ef",
                "00-04-F2-AB-CD-EF",
                "00:04-f2:ab:cd:ef",
                "0004.f2ab.cdef",
                "0004.f2ab.cdeg",
                "0004f2abcdeff",
                "0004:f2ab:cdef",
                "00:04:f2:ab:cd:e",
            ]),
        );
        check(
            GroupId::PATTERN,
            |s| GroupId::parse(s).is_ok(),
            &and(
                &common,
                &[
                    "ZZZ1900111-01",
                    "a.b_c-d",
                    "-a",
                    ".a",
                    "a b",
                    "a/b",
                    &a64,
                    &a65,
                ],
            ),
        );
        check(
            Extension::PATTERN,
            |s| Extension::parse(s).is_ok(),
            &with(&["5555", "123456", "1234567", "1"]),
        );
        check(
            PhoneNumber::PATTERN,
            |s| PhoneNumber::parse(s).is_ok(),
            &with(&[
                "6035551212",
                "123456789012345",
                "1234567890123456",
                "123456",
            ]),
        );
        check(
            SharedNumber::PATTERN,
            |s| SharedNumber::parse(s).is_ok(),
            &with(&["555", "12345", "123456", "1"]),
        );
        check(
            LinePort::PATTERN,
            |s| LinePort::parse(s).is_ok(),
            &with(&[
                "6035551212_sca1",
                "6035551212_sca0",
                "6035551212_sca01",
                "6035551212_sca1234567",
                "123456_sca1",
                "ZZZ1900111-01_5555_sca1",
                "ZZZ_5555_sca12",
                "a_sca1_12_sca1",
                "x_12_sca1_sca2",
                "_5555_sca1",
                "ZZZ_5_sca1",
                "ZZZ_5555_sca",
            ]),
        );
        check(
            ProfileName::PATTERN,
            |s| ProfileName::parse(s).is_ok(),
            &and(
                &common,
                &[
                    "Reception",
                    "Sales Team",
                    "Sales ",
                    " Sales",
                    "a/b",
                    "x",
                    &a64,
                    &a65,
                ],
            ),
        );
    }
}
