//! Several certificates on one listener, one picked per client by the
//! name it asks for in its ClientHello (SNI): HAProxy's `crt-list`,
//! nginx's several `server` blocks on one port.

use std::io;
use std::sync::Arc;

use log::warn;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::codec::x509;

/// A listener's certificates, in the order given, each with the DNS names
/// it is for.
#[derive(Debug)]
pub(super) struct CertsByName {
    /// Never empty: the first is served when no other matches.
    certs: Vec<(Vec<String>, Arc<CertifiedKey>)>,
}

impl CertsByName {
    /// The certificates of `keys`, named by their SAN DNS names; each
    /// comes with the file it was read from, for errors. None at all is
    /// an error, and so is a certificate whose names cannot be read.
    pub(super) fn new(keys: Vec<(Arc<CertifiedKey>, String)>) -> io::Result<CertsByName> {
        let mut certs = Vec::with_capacity(keys.len());
        for (key, file) in keys {
            let cert = key.end_entity_cert().map_err(super::invalid)?;
            let Some(names) = x509::names(cert) else {
                return Err(super::invalid(format!(
                    "{file}: the names in its certificate cannot be read"
                )));
            };
            let names: Vec<String> = names.dns_names().map(str::to_ascii_lowercase).collect();
            if names.is_empty() && !certs.is_empty() {
                warn!(
                    "{file}: its certificate has no DNS name for a client to ask for: never served"
                );
            }
            certs.push((names, key));
        }
        if certs.is_empty() {
            return Err(super::invalid("no certificate to serve"));
        }
        Ok(CertsByName { certs })
    }

    /// The index of the certificate for a client that asked for `sni`:
    /// the first one that carries that name, else the first with a
    /// wildcard covering it, else the first of all.
    fn pick(&self, sni: Option<&str>) -> usize {
        let Some(sni) = sni else {
            return 0;
        };
        let carrying = |fits: &dyn Fn(&str) -> bool| {
            (self.certs.iter()).position(|(names, _)| names.iter().any(|name| fits(name)))
        };
        carrying(&|name: &str| name.eq_ignore_ascii_case(sni))
            .or_else(|| carrying(&|name: &str| wildcard_covers(name, sni)))
            .unwrap_or(0)
    }
}

impl ResolvesServerCert for CertsByName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.certs[self.pick(hello.server_name())].1))
    }
}

/// Whether `pattern` is a wildcard (`*.example.test`) that covers `name`:
/// exactly one label in place of the `*`, as RFC 6125 has it.
fn wildcard_covers(pattern: &str, name: &str) -> bool {
    let Some(suffix) = pattern.strip_prefix("*.") else {
        return false;
    };
    match name.split_once('.') {
        Some((label, rest)) => !label.is_empty() && rest.eq_ignore_ascii_case(suffix),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    use super::*;

    /// A self-signed certificate for `names`, with its key.
    fn certified(names: &[&str]) -> (Arc<CertifiedKey>, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let made = rcgen::generate_simple_self_signed(names.clone()).unwrap();
        let key = PrivatePkcs8KeyDer::from(made.key_pair.serialize_der());
        let chain = vec![made.cert.der().clone()];
        let provider = rustls::crypto::ring::default_provider();
        let key = CertifiedKey::from_der(chain, PrivateKeyDer::Pkcs8(key), &provider).unwrap();
        (Arc::new(key), names.join(","))
    }

    fn by_name(certs: &[&[&str]]) -> CertsByName {
        CertsByName::new(certs.iter().map(|names| certified(names)).collect()).unwrap()
    }

    #[test]
    fn the_certificate_carrying_the_name_asked_for_is_served() {
        let certs = by_name(&[&["a.test"], &["b.test", "www.b.test"], &["C.test"]]);
        assert_eq!(certs.pick(Some("a.test")), 0);
        assert_eq!(certs.pick(Some("b.test")), 1);
        assert_eq!(certs.pick(Some("www.b.test")), 1);
        assert_eq!(certs.pick(Some("c.test")), 2, "names are case-blind");
        assert_eq!(certs.pick(Some("WWW.B.TEST")), 1);
    }

    #[test]
    fn a_wildcard_covers_one_label_and_an_exact_name_beats_it() {
        let certs = by_name(&[&["a.test"], &["*.w.test"], &["exact.w.test"]]);
        assert_eq!(certs.pick(Some("x.w.test")), 1);
        assert_eq!(
            certs.pick(Some("exact.w.test")),
            2,
            "listed after the wildcard"
        );
        assert_eq!(certs.pick(Some("y.x.w.test")), 0, "two labels: not covered");
        assert_eq!(
            certs.pick(Some("w.test")),
            0,
            "the bare domain: not covered"
        );
        assert!(!wildcard_covers("*.w.test", ".w.test"));
        assert!(!wildcard_covers("x.w.test", "x.w.test"), "not a wildcard");
    }

    #[test]
    fn without_a_name_or_with_an_unknown_one_the_first_is_served() {
        let certs = by_name(&[&["b.test"], &["a.test"]]);
        assert_eq!(certs.pick(None), 0);
        assert_eq!(certs.pick(Some("z.test")), 0);
        assert!(CertsByName::new(Vec::new()).is_err());
    }
}
