//! TLS settings from files, as the command line needs them: a server's
//! certificate and key, a client's trust (a CA file, or none at all), ALPN,
//! and a self-signed certificate for trying it out.
//!
//! The reactor itself only takes rustls's `ServerConfig` and `ClientConfig`
//! ([`Reactor::listen_tls`](crate::reactor::Reactor::listen_tls),
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

/// A self-signed certificate for `name` (and for 127.0.0.1 and ::1), and its
/// private key, both PEM.
pub fn self_signed(name: &str) -> io::Result<(String, String)> {
    let names = vec![name.to_string(), "127.0.0.1".into(), "::1".into()];
    let certified = rcgen::generate_simple_self_signed(names).map_err(invalid)?;
    Ok((certified.cert.pem(), certified.key_pair.serialize_pem()))
}

/// Writes [`self_signed`]'s certificate and key as `cert.pem` and `key.pem`
/// in `dir` (made if need be); returns their paths. The key file is
/// readable by its owner only.
pub fn write_self_signed(dir: &Path, name: &str) -> io::Result<(PathBuf, PathBuf)> {
    let (cert, key) = self_signed(name)?;
    fs::create_dir_all(dir)?;
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    fs::write(&cert_path, cert)?;
    write_private(&key_path, key.as_bytes())?;
    Ok((cert_path, key_path))
}

fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
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
}
