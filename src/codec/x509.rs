//! The names in an X.509 certificate: its subject's common name (CN) and
//! its subject alternative names (SAN), read from the certificate's DER.
//!
//! TLS itself (rustls, webpki) checks a certificate's chain and signatures;
//! this only reads the names out of one that was checked: which client it
//! is (`--tls-client-ca`), which server names it is for (several
//! certificates picked by SNI). A small reader of the few DER elements on
//! the way there, bounds-checked, that says `None` for anything it does
//! not follow rather than guess. It allocates only the names it returns.
//!
//! ```text
//! Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
//! tbsCertificate ::= SEQUENCE {
//!     [0] version OPTIONAL, serialNumber, signature, issuer, validity,
//!     subject Name, subjectPublicKeyInfo, [1] OPTIONAL, [2] OPTIONAL,
//!     [3] extensions OPTIONAL }
//! Name ::= SEQUENCE OF SET OF SEQUENCE { type OID, value ANY }
//! Extension ::= SEQUENCE { extnID OID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }
//! ```

use std::net::IpAddr;

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
const UTF8_STRING: u8 = 0x0c;
const PRINTABLE_STRING: u8 = 0x13;
const IA5_STRING: u8 = 0x16;
const BMP_STRING: u8 = 0x1e;
/// `[3]`, constructed: the extensions.
const EXTENSIONS: u8 = 0xa3;
/// id-at-commonName, 2.5.4.3, as its DER content.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// id-ce-subjectAltName, 2.5.29.17.
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// One alternative name of a certificate, of the kinds this reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AltName {
    /// `dNSName`: a host name, or a wildcard `*.example.com`.
    Dns(String),
    /// `rfc822Name`: an e-mail address.
    Email(String),
    /// `uniformResourceIdentifier` (a SPIFFE id, say).
    Uri(String),
    /// `iPAddress`.
    Ip(IpAddr),
}

impl AltName {
    /// The name as text.
    pub fn text(&self) -> String {
        match self {
            AltName::Dns(s) | AltName::Email(s) | AltName::Uri(s) => s.clone(),
            AltName::Ip(ip) => ip.to_string(),
        }
    }
}

/// The names a certificate carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// The subject's first common name, if it has one.
    pub common_name: Option<String>,
    /// The subject alternative names of the kinds [`AltName`] has, in order.
    pub alt_names: Vec<AltName>,
}

impl Names {
    /// Who the certificate says its holder is: the subject's common name,
    /// or, without one, its first alternative name. The CN comes first
    /// because it is what HAProxy's `ssl_c_s_dn(CN)` and its PROXY header's
    /// `SSL_CN` carry, and nginx's `$ssl_client_s_dn`; a certificate with
    /// names only in its SAN (as CAs issue them now) is still named.
    pub fn identity(&self) -> Option<String> {
        (self.common_name.clone()).or_else(|| self.alt_names.first().map(AltName::text))
    }

    /// Its DNS names (SAN `dNSName`s), which a server certificate is for.
    pub fn dns_names(&self) -> impl Iterator<Item = &str> {
        self.alt_names.iter().filter_map(|name| match name {
            AltName::Dns(dns) => Some(dns.as_str()),
            _ => None,
        })
    }
}

/// The names of the certificate `der`; `None` if it is not DER this
/// reader follows as far as the names.
pub fn names(der: &[u8]) -> Option<Names> {
    let (certificate, _) = expect(der, SEQUENCE)?;
    let (tbs, _) = expect(certificate, SEQUENCE)?;
    let mut rest = tbs;
    let (tag, _, after) = element(rest)?;
    if tag == 0xa0 {
        rest = after; // the version
    }
    // serialNumber, signature, issuer, validity.
    for _ in 0..4 {
        rest = element(rest)?.2;
    }
    let (subject, after) = expect(rest, SEQUENCE)?;
    let common_name = common_name(subject)?;
    let mut rest = expect(after, SEQUENCE)?.1; // subjectPublicKeyInfo
    let mut alt_names = Vec::new();
    while let Some((tag, value, after)) = element(rest) {
        if tag == EXTENSIONS {
            alt_names = subject_alt_names(value)?;
        }
        rest = after;
    }
    Some(Names {
        common_name,
        alt_names,
    })
}

/// One DER element at the front of `input`: its tag, its contents and
/// what follows it. Low tag numbers only (all that certificates' names
/// use); lengths in short or long form, up to four bytes.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        0..=0x7f => (usize::from(first), rest),
        0x81..=0x84 => {
            let width = usize::from(first & 0x7f);
            let bytes = rest.get(..width)?;
            let len = bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b));
            (len, &rest[width..])
        }
        _ => return None,
    };
    let contents = rest.get(..len)?;
    Some((tag, contents, &rest[len..]))
}

/// The element at the front of `input`, which must be a `tag`: its
/// contents and what follows it.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match element(input)? {
        (found, contents, rest) if found == tag => Some((contents, rest)),
        _ => None,
    }
}

/// The first common name in a Name's contents: `Some(None)` if it has
/// none, or one in a kind of string this does not read (T.61, say, or
/// UTF-8 that is not); `None` if the Name is not well formed.
fn common_name(mut name: &[u8]) -> Option<Option<String>> {
    while !name.is_empty() {
        let (mut set, after) = expect(name, SET)?;
        while !set.is_empty() {
            let (pair, after) = expect(set, SEQUENCE)?;
            let (oid, value) = expect(pair, OID)?;
            if oid == OID_COMMON_NAME {
                let (tag, text, _) = element(value)?;
                return Some(string(tag, text));
            }
            set = after;
        }
        name = after;
    }
    Some(None)
}

/// A directory string as text: UTF-8, printable, IA5 or BMP (UTF-16).
fn string(tag: u8, bytes: &[u8]) -> Option<String> {
    match tag {
        UTF8_STRING | PRINTABLE_STRING | IA5_STRING => String::from_utf8(bytes.to_vec()).ok(),
        BMP_STRING if bytes.len().is_multiple_of(2) => {
            let units = bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units).collect::<Result<_, _>>().ok()
        }
        _ => None,
    }
}

/// The alternative names in the contents of `[3]`: none if there is no
/// subjectAltName extension.
fn subject_alt_names(explicit: &[u8]) -> Option<Vec<AltName>> {
    let (mut extensions, _) = expect(explicit, SEQUENCE)?;
    while !extensions.is_empty() {
        let (extension, after) = expect(extensions, SEQUENCE)?;
        let (oid, mut rest) = expect(extension, OID)?;
        if oid == OID_SUBJECT_ALT_NAME {
            if let Some((BOOLEAN, _, after)) = element(rest) {
                rest = after;
            }
            let (value, _) = expect(rest, OCTET_STRING)?;
            return general_names(expect(value, SEQUENCE)?.0);
        }
        extensions = after;
    }
    Some(Vec::new())
}

/// GeneralNames' contents: the kinds [`AltName`] has, others (and texts
/// that are not ASCII, as IA5 strings must be) skipped.
fn general_names(mut input: &[u8]) -> Option<Vec<AltName>> {
    let mut names = Vec::new();
    while !input.is_empty() {
        let (tag, value, after) = element(input)?;
        let text = value
            .is_ascii()
            .then(|| String::from_utf8_lossy(value).into_owned());
        let name = match tag {
            0x81 => text.map(AltName::Email),
            0x82 => text.map(AltName::Dns),
            0x86 => text.map(AltName::Uri),
            0x87 => match <[u8; 16]>::try_from(value) {
                Ok(v6) => Some(AltName::Ip(v6.into())),
                Err(_) => <[u8; 4]>::try_from(value)
                    .ok()
                    .map(|v4| AltName::Ip(v4.into())),
            },
            _ => None,
        };
        names.extend(name);
        input = after;
    }
    Some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tag`, a DER length, `contents`.
    fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match contents.len() {
            n @ 0..=0x7f => out.push(n as u8),
            n @ 0x80..=0xff => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(contents);
        out
    }

    fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
        der(SEQUENCE, &parts.concat())
    }

    /// A name of one attribute per RDN.
    fn name(attributes: &[(&[u8], u8, &[u8])]) -> Vec<u8> {
        let rdns: Vec<_> = (attributes.iter())
            .map(|(oid, tag, value)| der(SET, &seq(&[der(OID, oid), der(*tag, value)])))
            .collect();
        seq(&rdns)
    }

    /// A certificate's outline: what `names` walks, with dummy contents
    /// where it skips.
    fn certificate(subject: Vec<u8>, extensions: Option<Vec<u8>>) -> Vec<u8> {
        let mut tbs = vec![
            der(0xa0, &der(0x02, &[2])),
            der(0x02, &[0x01, 0x23]),
            seq(&[der(OID, &[0x2a, 0x86, 0x48])]),
            name(&[(&[0x55, 0x04, 0x0a], UTF8_STRING, b"Issuer Ltd")]),
            seq(&[der(0x17, b"260101000000Z"), der(0x17, b"270101000000Z")]),
            subject,
            seq(&[seq(&[der(OID, &[1])]), der(0x03, &[0, 4, 5])]),
        ];
        tbs.extend(extensions.map(|e| der(EXTENSIONS, &e)));
        seq(&[seq(&tbs), seq(&[der(OID, &[1])]), der(0x03, &[0, 1])])
    }

    fn san(names: &[Vec<u8>], critical: bool) -> Vec<u8> {
        let mut extension = vec![der(OID, OID_SUBJECT_ALT_NAME)];
        if critical {
            extension.push(der(BOOLEAN, &[0xff]));
        }
        extension.push(der(OCTET_STRING, &seq(names)));
        let other = seq(&[der(OID, &[0x55, 0x1d, 0x13]), der(OCTET_STRING, &seq(&[]))]);
        seq(&[other, seq(&extension)])
    }

    const ORG: &[u8] = &[0x55, 0x04, 0x0a];

    #[test]
    fn the_common_name_and_every_alternative_name_are_read() {
        let subject = name(&[
            (ORG, PRINTABLE_STRING, b"Example"),
            (OID_COMMON_NAME, UTF8_STRING, b"alice"),
        ]);
        let alt = san(
            &[
                der(0xa0, &der(OID, &[1])), // otherName: skipped
                der(0x82, b"a.test"),
                der(0x81, b"alice@example.test"),
                der(0x86, b"spiffe://example.test/alice"),
                der(0x87, &[127, 0, 0, 1]),
                der(0x87, &[0; 16]),
            ],
            true,
        );
        let names = names(&certificate(subject, Some(alt))).unwrap();
        assert_eq!(names.common_name.as_deref(), Some("alice"));
        assert_eq!(
            names.alt_names,
            vec![
                AltName::Dns("a.test".into()),
                AltName::Email("alice@example.test".into()),
                AltName::Uri("spiffe://example.test/alice".into()),
                AltName::Ip([127, 0, 0, 1].into()),
                AltName::Ip([0u8; 16].into()),
            ]
        );
        assert_eq!(names.identity().as_deref(), Some("alice"));
        assert_eq!(names.dns_names().collect::<Vec<_>>(), ["a.test"]);
    }

    #[test]
    fn without_a_common_name_the_first_alternative_name_is_the_identity() {
        let subject = name(&[(ORG, UTF8_STRING, b"Example")]);
        let alt = san(&[der(0x86, b"spiffe://t/bob"), der(0x82, b"b.test")], false);
        let names = names(&certificate(subject, Some(alt))).unwrap();
        assert_eq!(names.common_name, None);
        assert_eq!(names.identity().as_deref(), Some("spiffe://t/bob"));
        let empty = names_of_subject(seq(&[]));
        assert_eq!(empty, Names::default());
        assert_eq!(empty.identity(), None);
    }

    fn names_of_subject(subject: Vec<u8>) -> Names {
        names(&certificate(subject, None)).unwrap()
    }

    #[test]
    fn a_bmp_common_name_is_utf16_and_long_lengths_are_followed() {
        let bmp: Vec<u8> = "Zoë".encode_utf16().flat_map(u16::to_be_bytes).collect();
        let subject = name(&[(OID_COMMON_NAME, BMP_STRING, &bmp)]);
        assert_eq!(
            names_of_subject(subject).common_name.as_deref(),
            Some("Zoë")
        );
        let long = "x".repeat(300);
        let subject = name(&[(OID_COMMON_NAME, UTF8_STRING, long.as_bytes())]);
        assert_eq!(names_of_subject(subject).common_name, Some(long));
    }

    #[test]
    fn a_name_this_cannot_read_is_left_out_not_guessed() {
        let teletex = name(&[(OID_COMMON_NAME, 0x14, b"x")]);
        assert_eq!(names_of_subject(teletex).common_name, None);
        let bad_utf8 = name(&[(OID_COMMON_NAME, UTF8_STRING, &[0xff])]);
        assert_eq!(names_of_subject(bad_utf8).common_name, None);
        let subject = name(&[(ORG, UTF8_STRING, b"Example")]);
        let alt = san(
            &[der(0x82, "é.test".as_bytes()), der(0x87, &[1, 2, 3])],
            false,
        );
        let alt = names(&certificate(subject, Some(alt))).unwrap().alt_names;
        assert!(alt.is_empty(), "not ASCII; an address of 3 bytes: {alt:?}");
    }

    #[test]
    fn what_is_not_well_formed_is_none_never_a_panic() {
        let subject = name(&[(OID_COMMON_NAME, UTF8_STRING, b"alice")]);
        let alt = san(&[der(0x82, b"a.test")], false);
        let good = certificate(subject, Some(alt));
        for end in 0..good.len() {
            assert_eq!(names(&good[..end]), None, "cut at {end}");
        }
        let mut longer = good.clone();
        longer[1] ^= 0x01; // its length no longer fits
        assert_eq!(names(&longer), None);
        assert_eq!(element(&[0x1f, 0]), None, "high tag numbers");
        assert_eq!(element(&[0x04, 0x85, 0, 0, 0, 0, 1]), None, "5-byte length");
        assert_eq!(element(&[0x04, 0x80]), None, "indefinite length");
    }
}
