//! TLS settings from files, as the command line needs them: a server's
//! certificate and key, a client's trust (a CA file, or none at all), ALPN,
//! and a self-signed certificate for trying it out.
//!
//! The reactor itself only takes rustls's `ServerConfig` and `ClientConfig`
//! ([`Reactor::listen_as`](crate::reactor::Reactor::listen_as) with [`Serve::Tls`](crate::reactor::Serve::Tls),
//! [`Context::connect_tls`](crate::reactor::Context::connect_tls)); this is
//! one way to make them. The crypto is rustls's `ring` provider.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, ring};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::sys::Addr;

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

/// A server's settings: its certificate chain and private key (PEM files),
/// and the ALPN protocols it offers, most preferred first.
pub fn server_config(cert: &Path, key: &Path, alpn: &[String]) -> io::Result<Arc<ServerConfig>> {
    let chain = certificates(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| invalid(format!("{}: {e}", key.display())))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(invalid)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| invalid(format!("{}: {e}", cert.display())))?;
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Arc::new(config))
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
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(invalid)?;
    let mut config = match trust {
        Trust::Roots(path) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(path)? {
                roots
                    .add(cert)
                    .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Anyone => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(
                provider().signature_verification_algorithms,
            )))
            .with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Arc::new(config))
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
