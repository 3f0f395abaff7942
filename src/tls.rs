//! TLS material: the development CA and server certificate generated on first start, and the
//! rustls server configurations (ring provider, TLS 1.2 and 1.3).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Paths of the generated development PKI under `<data_dir>/tls/`.
#[derive(Clone, Debug)]
pub(crate) struct DevPki {
    /// The CA to install on phones (and to trust in admin clients).
    pub(crate) ca_pem: PathBuf,
    ca_key: PathBuf,
    pub(crate) server_pem: PathBuf,
    pub(crate) server_key: PathBuf,
}

impl DevPki {
    pub(crate) fn at(data_dir: &Path) -> DevPki {
        let d = data_dir.join("tls");
        DevPki {
            ca_pem: d.join("ca.pem"),
            ca_key: d.join("ca.key"),
            server_pem: d.join("server.pem"),
            server_key: d.join("server.key"),
        }
    }
}

/// Writes `contents` to `path` with mode 0600 (created fresh, then renamed into place).
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(io(&tmp))?;
        f.write_all(contents).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "deskprov");
    dn.push(DnType::CommonName, "deskprov development CA");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(3650);
    p
}

/// This machine's host name, if it has a usable one.
pub(crate) fn host_name() -> Option<String> {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && !s.contains(char::is_whitespace))
}

/// Generates the development CA and server certificate where missing. Returns true when
/// anything was created. An existing CA is kept (phones already trust it); a missing server
/// certificate is re-issued under it.
pub(crate) fn ensure_dev_pki(data_dir: &Path, extra_names: &[String]) -> Result<bool, TlsError> {
    let pki = DevPki::at(data_dir);
    if pki.server_pem.exists() && pki.server_key.exists() && pki.ca_pem.exists() {
        return Ok(false);
    }
    let dir = pki.ca_pem.parent().expect("tls dir");
    std::fs::create_dir_all(dir).map_err(io(dir))?;

    let ca_key = if pki.ca_key.exists() && pki.ca_pem.exists() {
        let pem = std::fs::read_to_string(&pki.ca_key).map_err(io(&pki.ca_key))?;
        KeyPair::from_pem(&pem)?
    } else {
        KeyPair::generate()?
    };
    // Same name and key as the stored CA: certificates it signs chain to the stored ca.pem.
    let ca = ca_params().self_signed(&ca_key)?;
    if !pki.ca_pem.exists() {
        write_private(&pki.ca_key, ca_key.serialize_pem().as_bytes())?;
        std::fs::write(&pki.ca_pem, ca.pem()).map_err(io(&pki.ca_pem))?;
    }

    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    names.extend(host_name());
    names.extend(extra_names.iter().cloned());
    names.dedup();
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "deskprov");
    dn.push(
        DnType::CommonName,
        names.get(3).cloned().unwrap_or_else(|| "localhost".into()),
    );
    p.distinguished_name = dn;
    p.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => n
                .clone()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|_| TlsError::Invalid(format!("'{n}' is not a valid server name"))),
        })
        .collect::<Result<_, _>>()?;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(825);
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, &ca, &ca_key)?;
    write_private(&pki.server_key, key.serialize_pem().as_bytes())?;
    // The chain phones receive: the server certificate, then the CA.
    let chain = format!("{}{}", cert.pem(), ca.pem());
    std::fs::write(&pki.server_pem, chain).map_err(io(&pki.server_pem))?;
    Ok(true)
}

/// Reads a PEM certificate chain.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let data = std::fs::read(path).map_err(io(path))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<_, _>>()
        .map_err(io(path))?;
    if certs.is_empty() {
        return Err(TlsError::Invalid(format!(
            "{}: no certificate found",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let data = std::fs::read(path).map_err(io(path))?;
    rustls_pemfile::private_key(&mut data.as_slice())
        .map_err(io(path))?
        .ok_or_else(|| TlsError::Invalid(format!("{}: no private key found", path.display())))
}

/// ring, with the AES-128-GCM suites first: a handshake's key schedule then runs on SHA-256
/// rather than SHA-384, and bulk encryption is cheaper; every suite of the default set stays
/// available. The server's order wins ([`server_config`]).
fn provider() -> rustls::crypto::CryptoProvider {
    use rustls::crypto::ring::cipher_suite as cs;
    let mut p = rustls::crypto::ring::default_provider();
    let first = [
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ];
    p.cipher_suites
        .sort_by_key(|s| !first.iter().any(|f| f.suite() == s.suite()));
    p
}

/// The rustls server configuration for a certificate chain and key.
pub(crate) fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    phone_server_config(cert, key, &[])
}

/// Like [`server_config`], and when vendor CA bundles are given, client certificates are
/// requested (optional: phones without one use digest) and verified against them.
pub(crate) fn phone_server_config(
    cert: &Path,
    key: &Path,
    client_ca: &[String],
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = if client_ca.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for bundle in client_ca {
            for c in read_certs(Path::new(bundle))? {
                roots
                    .add(c)
                    .map_err(|e| TlsError::Invalid(format!("{bundle}: {e}")))?;
            }
        }
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Invalid(format!("client_ca: {e}")))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut cfg = builder.with_single_cert(read_certs(cert)?, read_key(key)?)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg.ignore_client_order = true;
    // No session resumption state: phones fetch a few files once per boot or re-sync, so
    // tickets (two per TLS 1.3 handshake by default) and a session cache cost more than they save.
    cfg.send_tls13_tickets = 0;
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_pki_is_generated_once_and_reissued_under_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ensure_dev_pki(dir.path(), &["prov.example.net".into()]).unwrap());
        assert!(!ensure_dev_pki(dir.path(), &[]).unwrap());
        let pki = DevPki::at(dir.path());
        let ca_before = std::fs::read(&pki.ca_pem).unwrap();
        std::fs::remove_file(&pki.server_pem).unwrap();
        assert!(ensure_dev_pki(dir.path(), &[]).unwrap());
        assert_eq!(
            std::fs::read(&pki.ca_pem).unwrap(),
            ca_before,
            "the CA is kept"
        );
        assert_eq!(read_certs(&pki.server_pem).unwrap().len(), 2);
        let cfg = server_config(&pki.server_pem, &pki.server_key).unwrap();
        let suites: Vec<_> = cfg
            .crypto_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(
            suites[0],
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
            "{suites:?}"
        );
        assert_eq!(suites.len(), 9, "every default suite stays: {suites:?}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&pki.server_key)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
