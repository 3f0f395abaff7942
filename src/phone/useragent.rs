//! User-Agent parsing for every family: the model (by the catalogue's `user_agents`
//! substrings), the firmware version, and the MAC where the phone sends one.
//!
//! Examples (VENDORS.md): `FileTransport PolycomVVX-VVX_450-UA/6.3.0.14929 Type/Application`,
//! `Yealink SIP-T46G 28.72.0.1 00:15:65:4a:a9:37`, `Cisco-CP-7832-3PCC/11.0.1 (00562b043615)`,
//! `Grandstream Model HW GXP2135 SW 1.0.7.97 DevId 000b828aa872`,
//! `Mozilla/4.0 (compatible; snomD785-SIP 10.1.169.16 ... 00041396D9B4 SXM:0 ...)`,
//! `Fanvil X6U Pro 0.0.10 0c383e2cd782`, `Aastra6863i MAC:00-08-5D-40-90-5F V:4.1.0.128-SIP`.

use std::sync::Arc;

use crate::catalog::Catalog;
use crate::domain::Mac;

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct UserAgent {
    pub(crate) model: Option<String>,
    pub(crate) firmware: Option<String>,
    pub(crate) mac: Option<Mac>,
}

fn tokens(ua: &str) -> impl Iterator<Item = &str> {
    ua.split(|c: char| c.is_whitespace() || matches!(c, '(' | ')' | ';' | ','))
        .filter(|t| !t.is_empty())
}

/// A version-looking token: starts with a digit, has a dot, only version characters.
fn version(t: &str) -> Option<String> {
    let t = t.trim_start_matches("V:");
    let ok = t.starts_with(|c: char| c.is_ascii_digit())
        && t.contains('.')
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    ok.then(|| t.to_string())
}

pub(crate) fn parse(catalog: &Catalog, ua: &str) -> UserAgent {
    let model = catalog.model_for_user_agent(ua);
    let mac = tokens(ua).find_map(|t| Mac::parse(t.trim_start_matches("MAC:")).ok());
    // The firmware follows the model's token: in the same token after '/', or the next
    // version-looking token.
    let firmware = model
        .and_then(|m| {
            m.user_agents
                .iter()
                .find_map(|p| ua.find(p.as_str()).map(|i| i + p.len()))
        })
        .and_then(|start| {
            let rest = &ua[start..];
            let rest = rest.strip_prefix('/').unwrap_or(rest);
            rest.split(|c: char| c.is_whitespace() || matches!(c, '(' | ')' | ';' | ',' | '/'))
                .map(|t| t.trim_start_matches("-SIP"))
                .filter(|t| !t.is_empty())
                .take(6)
                .find_map(version)
        });
    UserAgent {
        model: model.map(|m| m.id.clone()),
        firmware,
        mac,
    }
}

/// Most User-Agents [`Cache`] keeps (a fleet's phones each send their own when it carries the
/// MAC, as Yealink's does).
const CACHE_ENTRIES: usize = 16_384;

/// Longest User-Agent [`Cache`] keeps (longer ones are parsed every time).
const CACHE_LONGEST: usize = 256;

/// Parsed User-Agents by their text: a phone sends the same one with every request (three
/// for one boot, one per fetch on a kept-alive connection). Bounded, evicting the least used;
/// the catalogue it parses against is the server's, fixed for the process.
pub(crate) struct Cache(quick_cache::sync::Cache<Box<str>, Arc<UserAgent>>);

impl Default for Cache {
    fn default() -> Cache {
        Cache(quick_cache::sync::Cache::new(CACHE_ENTRIES))
    }
}

impl Cache {
    /// [`parse`], from the cache when `ua` was seen.
    pub(crate) fn parse(&self, catalog: &Catalog, ua: &str) -> Arc<UserAgent> {
        if let Some(u) = self.0.get(ua) {
            return u;
        }
        let u = Arc::new(parse(catalog, ua));
        if ua.len() <= CACHE_LONGEST {
            self.0.insert(ua.into(), u.clone());
        }
        u
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_agent_seen_before_is_not_parsed_again() {
        let c = Catalog::builtin().unwrap();
        let cache = Cache::default();
        let ua = "Yealink SIP-T54W 96.86.0.70 80:5e:c0:12:34:56";
        let first = cache.parse(&c, ua);
        assert_eq!(*first, parse(&c, ua));
        assert!(Arc::ptr_eq(&first, &cache.parse(&c, ua)));
        let other = cache.parse(&c, "Yealink SIP-T46U 108.86.0.20 805ec0aabbcc");
        assert_eq!(other.model.as_deref(), Some("yealink-t46u"));
    }

    #[test]
    fn an_over_long_user_agent_is_parsed_but_not_kept() {
        let c = Catalog::builtin().unwrap();
        let cache = Cache::default();
        let ua = format!("Yealink SIP-T54W 96.86.0.70 {}", "x".repeat(CACHE_LONGEST));
        let first = cache.parse(&c, &ua);
        assert_eq!(first.model.as_deref(), Some("yealink-t54w"));
        assert!(!Arc::ptr_eq(&first, &cache.parse(&c, &ua)));
    }

    fn p(ua: &str) -> UserAgent {
        parse(&Catalog::builtin().unwrap(), ua)
    }

    #[test]
    fn every_family() {
        let u = p("FileTransport PolycomVVX-VVX_450-UA/6.3.0.14929 Type/Application");
        assert_eq!(
            (u.model.as_deref(), u.firmware.as_deref(), u.mac),
            (Some("polycom-vvx-450"), Some("6.3.0.14929"), None)
        );
        let u = p("Yealink SIP-T54W 96.86.0.70 80:5e:c0:12:34:56");
        assert_eq!(u.model.as_deref(), Some("yealink-t54w"));
        assert_eq!(u.firmware.as_deref(), Some("96.86.0.70"));
        assert_eq!(u.mac.unwrap().as_str(), "805ec0123456");
        let u = p("Yealink SIP-T46U 108.86.0.20 805ec0aabbcc");
        assert_eq!(
            (u.model.as_deref(), u.mac.unwrap().as_str()),
            (Some("yealink-t46u"), "805ec0aabbcc")
        );
        let u = p("Cisco-CP-8851-3PCC/11.3.1 (00562b043615)");
        assert_eq!(
            (u.model.as_deref(), u.firmware.as_deref()),
            (Some("cisco-cp-8851-3pcc"), Some("11.3.1"))
        );
        assert_eq!(u.mac.unwrap().as_str(), "00562b043615");
        let u = p("Grandstream Model HW GRP2614 SW 1.0.5.67 DevId c074ad123456");
        assert_eq!(
            (u.model.as_deref(), u.firmware.as_deref()),
            (Some("grandstream-grp2614"), Some("1.0.5.67"))
        );
        assert_eq!(u.mac.unwrap().as_str(), "c074ad123456");
        let u = p("Mozilla/4.0 (compatible; snomD785-SIP 10.1.169.16 2010.12-00001-gd311851f1 (Feb 25 2019 - 14:19:43) 00041396D9B4 SXM:0 UXM:0 UXMC:0)");
        assert_eq!(
            (u.model.as_deref(), u.firmware.as_deref()),
            (Some("snom-d785"), Some("10.1.169.16"))
        );
        assert_eq!(u.mac.unwrap().as_str(), "00041396d9b4");
        let u = p("Fanvil X6U Pro 0.0.10 0c383e2cd782");
        assert_eq!(
            (u.model.as_deref(), u.firmware.as_deref()),
            (Some("fanvil-x6u"), Some("0.0.10"))
        );
        assert_eq!(u.mac.unwrap().as_str(), "0c383e2cd782");
        let u = p("Aastra6867i MAC:00-08-5D-40-90-5F V:4.1.0.128-SIP");
        assert_eq!(u.model.as_deref(), Some("mitel-6867i"));
        assert_eq!(u.firmware.as_deref(), Some("4.1.0.128-SIP"));
        assert_eq!(u.mac.unwrap().as_str(), "00085d40905f");
    }

    /// The catalogue finds a User-Agent's model with one automaton over every model's
    /// strings; it must answer what searching model by model (in id order) would.
    #[test]
    fn the_model_found_is_the_first_by_id_whose_string_the_agent_contains() {
        let c = Catalog::builtin().unwrap();
        let one_by_one = |ua: &str| {
            c.models()
                .find(|m| {
                    m.user_agents
                        .iter()
                        .any(|p| !p.is_empty() && ua.contains(p.as_str()))
                })
                .map(|m| m.id.clone())
        };
        let strings: Vec<&String> = c.models().flat_map(|m| &m.user_agents).collect();
        assert!(strings.len() > 20, "the catalogue names User-Agent strings");
        for (i, s) in strings.iter().enumerate() {
            let other = strings[(i * 7 + 3) % strings.len()];
            for ua in [
                s.to_string(),
                format!("Vendor {s}/1.2.3 (aabbccddeeff)"),
                format!("{other} {s}"),
                format!("{s} {other}"),
            ] {
                let found = c.model_for_user_agent(&ua).map(|m| m.id.clone());
                assert_eq!(found, one_by_one(&ua), "{ua}");
                assert!(found.is_some(), "{ua}");
            }
        }
        assert_eq!(c.model_for_user_agent("curl/8.0.1").map(|m| &m.id), None);
    }

    #[test]
    fn unknown_agents_give_nothing_but_a_mac() {
        let u = p("curl/8.0.1");
        assert_eq!(u, UserAgent::default());
        let u = p("Yealink SIP-T46G 28.72.0.1 00:15:65:4a:a9:37");
        assert_eq!(u.model, None, "no T46G in the catalogue");
        assert_eq!(u.mac.unwrap().as_str(), "0015654aa937");
    }
}
