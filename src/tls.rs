//! TLS settings from files, as the command line needs them: a server's
//! certificates and keys (several, picked by the name a client asks for),
//! the CA its clients' certificates must be signed by, if any; a client's
//! trust (a CA file, or none at all) and the certificate it presents, if
//! any; ALPN, and a self-signed certificate for trying it out.
//!
//! The reactor itself only takes rustls's `ServerConfig` and `ClientConfig`
//! ([`Reactor::listen_as`](crate::reactor::Reactor::listen_as) with [`Serve::Tls`](crate::reactor::Serve::Tls),
//! [`Context::connect_tls`](crate::reactor::Context::connect_tls)); this is
//! one way to make them. The crypto is rustls's `ring` provider.

mod by_name;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WantsClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, ring};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, ConfigBuilder, DigitallySignedStruct, RootCertStore, ServerConfig,
    SignatureScheme,
};

use crate::sys::Addr;
use by_name::CertsByName;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

fn certificates(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(invalid(format!("{}: no certificate in it", path.display())));
    }
    Ok(certs)
}

fn private_key(path: &Path) -> io::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| invalid(format!("{}: {e}", path.display())))
}

/// The certificates of a PEM file, as roots to check a peer's chain against.
fn roots(path: &Path) -> io::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path)? {
        roots
            .add(cert)
            .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    }
    Ok(roots)
}

/// A certificate chain and private key (PEM files), as files name them.
pub type CertKeyFiles = (PathBuf, PathBuf);

/// A server's settings: its certificate chain and private key (PEM files),
/// and the ALPN protocols it offers, most preferred first.
pub fn server_config(cert: &Path, key: &Path, alpn: &[String]) -> io::Result<Arc<ServerConfig>> {
    server_config_for(&[(cert.to_owned(), key.to_owned())], None, alpn)
}

/// A server's settings: its certificates (`(chain, key)` PEM files; the
/// one whose SAN DNS names match the name a client asks for is served,
/// exactly or by a wildcard, and the first otherwise); with `client_ca`,
/// every client must present a certificate signed by one in that PEM
/// file; and the ALPN protocols it offers, most preferred first.
pub fn server_config_for(
    pairs: &[CertKeyFiles],
    client_ca: Option<&Path>,
    alpn: &[String],
) -> io::Result<Arc<ServerConfig>> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(invalid)?;
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(client_verifier(ca)?),
        None => builder.with_no_client_auth(),
    };
    let keys = pairs
        .iter()
        .map(|(cert, key)| Ok((certified_key(cert, key)?, cert.display().to_string())))
        .collect::<io::Result<_>>()?;
    let mut config = builder.with_cert_resolver(Arc::new(CertsByName::new(keys)?));
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Arc::new(config))
}

/// The certificates in `dir`, each `NAME.pem` (a chain) with the private
/// key in `NAME.key` beside it, in the order of their names. A `.pem`
/// without its key is an error that names both, and so is a directory
/// without a pair.
pub fn pairs_in(dir: &Path) -> io::Result<Vec<CertKeyFiles>> {
    let mut certs: Vec<PathBuf> = (fs::read_dir(dir).map_err(|e| with_path(dir, e))?)
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "pem"))
        .collect();
    certs.sort();
    let mut pairs = Vec::with_capacity(certs.len());
    for cert in certs {
        let key = cert.with_extension("key");
        if !key.is_file() {
            let (cert, key) = (cert.display(), key.display());
            return Err(invalid(format!("{cert}: its key {key} is not there")));
        }
        pairs.push((cert, key));
    }
    if pairs.is_empty() {
        let dir = dir.display();
        return Err(invalid(format!(
            "{dir}: no NAME.pem with its NAME.key in it"
        )));
    }
    Ok(pairs)
}

/// A chain and the private key of its first certificate, checked to match.
fn certified_key(cert: &Path, key: &Path) -> io::Result<Arc<CertifiedKey>> {
    CertifiedKey::from_der(certificates(cert)?, private_key(key)?, &provider())
        .map(Arc::new)
        .map_err(|e| invalid(format!("{} with {}: {e}", cert.display(), key.display())))
}

/// Asks every client for a certificate and takes only those that chain
/// to a certificate in `ca`.
fn client_verifier(ca: &Path) -> io::Result<Arc<dyn ClientCertVerifier>> {
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
        .build()
        .map_err(|e| invalid(format!("{}: {e}", ca.display())))
}

/// Whom a client trusts.
#[derive(Debug, Clone)]
pub enum Trust {
    /// The certificates in this PEM file, as roots (a self-signed server
    /// certificate works: it is its own root).
    Roots(PathBuf),
    /// Anyone: the server's certificate is not checked at all (its
    /// handshake signatures still are). For tests against a server whose
    /// certificate you made yourself — never across a network you do not own.
    Anyone,
}

/// A client's settings: whom it trusts and the ALPN protocols it offers.
pub fn client_config(trust: &Trust, alpn: &[String]) -> io::Result<Arc<ClientConfig>> {
    client_config_presenting(trust, alpn, None)
}

/// A client's settings: whom it trusts, the ALPN protocols it offers, and
/// the certificate it presents to a server that asks for one (`(chain,
/// key)` PEM files), if any.
pub fn client_config_presenting(
    trust: &Trust,
    alpn: &[String],
    cert: Option<&CertKeyFiles>,
) -> io::Result<Arc<ClientConfig>> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(invalid)?;
    let builder = match trust {
        Trust::Roots(path) => builder.with_root_certificates(roots(path)?),
        Trust::Anyone => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(
                provider().signature_verification_algorithms,
            ))),
    };
    let mut config = presenting(builder, cert)?;
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client's settings with the certificate it presents, if any.
fn presenting(
    builder: ConfigBuilder<ClientConfig, WantsClientCert>,
    cert: Option<&CertKeyFiles>,
) -> io::Result<ClientConfig> {
    let Some((chain, key)) = cert else {
        return Ok(builder.with_no_client_auth());
    };
    builder
        .with_client_auth_cert(certificates(chain)?, private_key(key)?)
        .map_err(|e| invalid(format!("{} with {}: {e}", chain.display(), key.display())))
}

/// The name a client checks the server's certificate against.
pub fn server_name(name: &str) -> io::Result<ServerName<'static>> {
    ServerName::try_from(name.to_string()).map_err(|e| invalid(format!("{name:?}: {e}")))
}

/// The name a server at `addr` is checked against when none is given: its
/// IP address (which `sockloop cert` puts in every certificate for
/// 127.0.0.1 and ::1); `None` for a Unix-domain socket.
pub fn name_of(addr: &Addr) -> Option<ServerName<'static>> {
    addr.ip().map(|ip| ServerName::IpAddress(ip.ip().into()))
}

/// Refuses a name a certificate cannot carry: it must be an IP address or
/// a DNS name (letters, digits, `-`, `_`, dots between labels; `*.` in
/// front for a wildcard).
pub fn check_cert_name(name: &str) -> io::Result<()> {
    let host = name.strip_prefix("*.").unwrap_or(name);
    match ServerName::try_from(host) {
        Ok(_) => Ok(()),
        Err(_) => Err(invalid(format!(
            "{name:?} is neither a DNS name (like localhost or example.com) nor an IP address"
        ))),
    }
}

/// A self-signed certificate for `name` (and for 127.0.0.1 and ::1), and its
/// private key, both PEM.
pub fn self_signed(name: &str) -> io::Result<(String, String)> {
    check_cert_name(name)?;
    let names = vec![name.to_string(), "127.0.0.1".into(), "::1".into()];
    let certified = rcgen::generate_simple_self_signed(names).map_err(invalid)?;
    Ok((certified.cert.pem(), certified.key_pair.serialize_pem()))
}

/// Writes [`self_signed`]'s certificate and key as `cert.pem` and `key.pem`
/// in `dir` (made if need be); returns their paths. The key file is
/// readable by its owner only. Refuses to replace either file if it is
/// there already: a key thrown away cannot be had back. Errors name the path.
pub fn write_self_signed(dir: &Path, name: &str) -> io::Result<(PathBuf, PathBuf)> {
    write_pair(dir, name, false)
}

/// As [`write_self_signed`], replacing the files if they are there.
pub fn replace_self_signed(dir: &Path, name: &str) -> io::Result<(PathBuf, PathBuf)> {
    write_pair(dir, name, true)
}

fn write_pair(dir: &Path, name: &str, replace: bool) -> io::Result<(PathBuf, PathBuf)> {
    let (cert, key) = self_signed(name)?;
    fs::create_dir_all(dir).map_err(|e| with_path(dir, e))?;
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    if !replace {
        // Both checked before either is written: a new certificate beside
        // an old key would match neither.
        if let Some(there) = [&key_path, &cert_path].into_iter().find(|p| p.exists()) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists: --force replaces it", there.display()),
            ));
        }
    }
    write_file(&cert_path, cert.as_bytes(), 0o666, replace)?;
    write_file(&key_path, key.as_bytes(), 0o600, replace)?;
    Ok((cert_path, key_path))
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Writes `bytes` to a file made with `mode`; one that is there already is
/// replaced only if `replace` (made anew otherwise, so that a race cannot
/// overwrite one either).
fn write_file(path: &Path, bytes: &[u8], mode: u32, replace: bool) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create(replace)
        .create_new(!replace)
        .truncate(replace)
        .mode(mode)
        .open(path)
        .and_then(|mut file| file.write_all(bytes))
        .map_err(|e| with_path(path, e))
}

/// `--insecure`: takes any certificate, but still checks that the server
/// holds the key of the one it sent.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_certificate_makes_a_server_that_a_client_trusting_it_accepts() {
        let dir = std::env::temp_dir().join(format!("sockloop-tls-{}", std::process::id()));
        let (cert, key) = write_self_signed(&dir, "localhost").unwrap();
        let server = server_config(&cert, &key, &["h2".into()]).unwrap();
        assert_eq!(server.alpn_protocols, vec![b"h2".to_vec()]);
        client_config(&Trust::Roots(cert.clone()), &[]).unwrap();
        client_config(&Trust::Anyone, &[]).unwrap();
        let mode = fs::metadata(&key).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
        assert!(
            server_config(&key, &cert, &[]).is_err(),
            "key and cert swapped"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_of_pairs_is_read_in_the_order_of_their_names() {
        let dir = std::env::temp_dir().join(format!("sockloop-tls-pairs-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let error = pairs_in(&dir).unwrap_err().to_string();
        assert!(
            error.ends_with("no NAME.pem with its NAME.key in it"),
            "{error}"
        );
        for file in ["b.pem", "b.key", "a.pem", "a.key", "notes.txt"] {
            fs::write(dir.join(file), "").unwrap();
        }
        let pairs = pairs_in(&dir).unwrap();
        let names: Vec<_> = (pairs.iter())
            .map(|(c, k)| (c.file_name().unwrap(), k.file_name().unwrap()))
            .collect();
        assert_eq!(
            names,
            [
                ("a.pem".as_ref(), "a.key".as_ref()),
                ("b.pem".as_ref(), "b.key".as_ref())
            ]
        );
        fs::write(dir.join("c.pem"), "").unwrap();
        let error = pairs_in(&dir).unwrap_err().to_string();
        assert!(
            error.contains("c.pem: its key") && error.contains("c.key"),
            "{error}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_certificate_name_is_a_dns_name_or_an_ip_address() {
        for good in [
            "localhost",
            "example.com",
            "*.example.com",
            "my_host",
            "127.0.0.1",
            "::1",
        ] {
            assert!(check_cert_name(good).is_ok(), "{good:?} refused");
        }
        for bad in ["", "two words", "a..b", "*", "-", "host/path"] {
            let error = check_cert_name(bad).expect_err(bad).to_string();
            assert!(error.contains("neither a DNS name"), "{bad:?}: {error}");
        }
    }
}
