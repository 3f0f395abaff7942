//! The MAC a device certificate vouches for.
//!
//! Vendors put it in different places: the subject CN (Polycom, Yealink), a SAN (DNS name or
//! `urn:dev:mac:<hex>`), or, for Cisco, the subject's `S=` (stateOrProvinceName) attribute. A
//! certificate that names no MAC — a generic vendor certificate such as Cisco's
//! `S=ciscogeneric` or Yealink's shared one — proves nothing about a device and yields nothing.
//! The chain itself is verified by rustls against `[tls] client_ca` during the handshake.

use x509_parser::prelude::*;

use crate::domain::Mac;

/// Parses a MAC out of a certificate field value: the whole value, or its last token after
/// `:` (urn:dev:mac:...), `-`/`_`/space prefixes such as `SEP`.
fn mac_in(value: &str) -> Option<Mac> {
    let v = value.trim();
    if let Ok(m) = Mac::parse(v) {
        return Some(m);
    }
    if let Some(rest) = v.strip_prefix("urn:dev:mac:") {
        let hex: String = rest.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        return Mac::parse(&hex).ok();
    }
    let tail = v.rsplit([' ', '_']).next()?;
    let tail = tail.strip_prefix("SEP").unwrap_or(tail);
    Mac::parse(tail).ok()
}

/// Every MAC the leaf certificate (DER) names.
pub(crate) fn macs(der: &[u8]) -> Vec<Mac> {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return vec![];
    };
    let mut out = Vec::new();
    let subject = cert.subject();
    for attr in subject
        .iter_common_name()
        .chain(subject.iter_state_or_province())
    {
        if let Some(m) = attr.as_str().ok().and_then(mac_in) {
            out.push(m);
        }
    }
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            let v = match name {
                GeneralName::DNSName(s) | GeneralName::URI(s) => *s,
                _ => continue,
            };
            if let Some(m) = mac_in(v) {
                out.push(m);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_values() {
        assert_eq!(mac_in("0004F2ABCDEF").unwrap().as_str(), "0004f2abcdef");
        assert_eq!(
            mac_in("urn:dev:mac:0004f2abcdef").unwrap().as_str(),
            "0004f2abcdef"
        );
        assert_eq!(
            mac_in("urn:dev:mac:00-04-f2-ab-cd-ef").unwrap().as_str(),
            "0004f2abcdef"
        );
        assert_eq!(mac_in("SEP0004F2ABCDEF").unwrap().as_str(), "0004f2abcdef");
        assert!(mac_in("ciscogeneric").is_none());
        assert!(mac_in("Yealink Equipment").is_none());
    }
}

#[cfg(test)]
mod cert_tests {
    use super::*;

    fn cert(cn: Option<&str>, st: Option<&str>, san_uri: Option<&str>) -> Vec<u8> {
        let mut p = rcgen::CertificateParams::default();
        if let Some(cn) = cn {
            p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        }
        if let Some(st) = st {
            p.distinguished_name
                .push(rcgen::DnType::StateOrProvinceName, st);
        }
        if let Some(u) = san_uri {
            p.subject_alt_names = vec![rcgen::SanType::URI(u.try_into().unwrap())];
        }
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_mac_is_found_in_cn_san_or_s() {
        let want = vec![Mac::parse("0004f2000001").unwrap()];
        assert_eq!(macs(&cert(Some("0004F2000001"), None, None)), want);
        assert_eq!(
            macs(&cert(Some("x"), None, Some("urn:dev:mac:0004f2000001"))),
            want
        );
        assert_eq!(macs(&cert(Some("x"), Some("0004f2000001"), None)), want);
        assert!(macs(&cert(Some("Cisco"), Some("ciscogeneric"), None)).is_empty());
    }
}
