//! Firmware roll-out rules (no I/O): who is in a roll-out, and what state a phone is in.
//!
//! Membership is a stable function of the MAC: each MAC falls in one of 100 buckets (a hash of
//! its 12 hex digits), and a target of `percent` P takes the buckets below P. Raising 25 to 50
//! keeps every phone of the first 25 % in; pilots are in whatever the percentage. A paused
//! roll-out offers the image to nobody, so a paused target renders like no target.

use serde::Serialize;
use utoipa::ToSchema;

use super::entities::{Device, FirmwareTarget};
use super::ids::Mac;

/// The bucket (0–99) of a MAC: FNV-1a over its lowercase hex digits, then a 64-bit finaliser
/// (so neighbouring MACs of one OUI spread evenly). Part of the API's behaviour: never change it
/// without a migration, or roll-outs would reshuffle.
pub(crate) fn bucket(mac: &Mac) -> u8 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in mac.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h % 100) as u8
}

/// Whether `mac` is offered the target's image (false while the roll-out is paused).
pub(crate) fn in_rollout(t: &FirmwareTarget, mac: &Mac) -> bool {
    t.paused.is_none() && (t.pilots.contains(mac) || bucket(mac) < t.percent)
}

/// The version a device is offered, if any: what its rendered files depend on.
pub(crate) fn offered<'a>(t: Option<&'a FirmwareTarget>, d: &Device) -> Option<&'a str> {
    t.filter(|t| in_rollout(t, &d.mac))
        .map(|t| t.version.as_str())
}

/// A firmware version: 1–64 of letters, digits, `.`, `-`, `_`, starting with a letter or digit
/// (it becomes part of URLs and file names).
pub(crate) fn valid_version(v: &str) -> bool {
    (1..=64).contains(&v.len())
        && v.as_bytes()[0].is_ascii_alphanumeric()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Where a phone stands against its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FirmwareState {
    /// It reports the target version.
    Current,
    /// It is in the roll-out and has not reported the target version yet.
    Upgrading,
    /// It is not in the roll-out (outside the percentage, or the roll-out is paused) and runs
    /// another version (or has not reported one).
    Behind,
    /// It was offered the image and still came back on another version after the upgrade window.
    Failed,
}

/// The state of a device running `running` (as its last User-Agent said) against `t`;
/// `failed`: the server saw it come back on another version after the upgrade window.
pub(crate) fn state(
    t: &FirmwareTarget,
    mac: &Mac,
    running: Option<&str>,
    failed: bool,
) -> FirmwareState {
    if running == Some(t.version.as_str()) {
        FirmwareState::Current
    } else if failed {
        FirmwareState::Failed
    } else if in_rollout(t, mac) {
        FirmwareState::Upgrading
    } else {
        FirmwareState::Behind
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::GroupId;

    fn target(percent: u8) -> FirmwareTarget {
        FirmwareTarget {
            group: GroupId::parse("g1").unwrap(),
            model: "yealink-t46u".into(),
            version: "108.86.0.20".into(),
            percent,
            pilots: vec![],
            paused: None,
            updated_at: String::new(),
        }
    }

    fn macs(n: u32) -> Vec<Mac> {
        (0..n)
            .map(|i| Mac::parse(&format!("805ec0{i:06x}")).unwrap())
            .collect()
    }

    #[test]
    fn raising_the_percentage_keeps_everyone_already_in() {
        let all = macs(2000);
        let at = |p| -> Vec<&Mac> { all.iter().filter(|m| in_rollout(&target(p), m)).collect() };
        let (q, h) = (at(25), at(50));
        assert!(q.iter().all(|m| h.contains(m)));
        // The hash spreads one OUI's consecutive MACs: 25 % is about 500 of 2000.
        assert!((400..600).contains(&q.len()), "{}", q.len());
        assert!((900..1100).contains(&h.len()), "{}", h.len());
        assert_eq!(at(0).len(), 0);
        assert_eq!(at(100).len(), 2000);
    }

    #[test]
    fn pilots_are_in_and_a_pause_takes_everyone_out() {
        let m = macs(200).into_iter().find(|m| bucket(m) >= 10).unwrap();
        let mut t = target(10);
        assert!(!in_rollout(&t, &m));
        t.pilots.push(m.clone());
        assert!(in_rollout(&t, &m));
        t.paused = Some(crate::domain::FirmwarePause {
            at: String::new(),
            reason: "test".into(),
            failed: vec![],
        });
        assert!(!in_rollout(&t, &m));
    }

    #[test]
    fn the_state_compares_the_reported_version_with_the_target() {
        let t = target(100);
        let m = macs(1).remove(0);
        assert_eq!(
            state(&t, &m, Some("108.86.0.20"), true),
            FirmwareState::Current
        );
        assert_eq!(
            state(&t, &m, Some("108.85.0.5"), true),
            FirmwareState::Failed
        );
        assert_eq!(
            state(&t, &m, Some("108.85.0.5"), false),
            FirmwareState::Upgrading
        );
        assert_eq!(state(&target(0), &m, None, false), FirmwareState::Behind);
    }

    #[test]
    fn versions_are_plain_names() {
        assert!(valid_version("108.86.0.20"));
        assert!(valid_version("sip-6.4.3_rc1"));
        for v in ["", ".x", "1/2", "a b", "../x", &"9".repeat(65)] {
            assert!(!valid_version(v), "{v}");
        }
    }
}
