//! The server name a TLS client asks for, read from its ClientHello without
//! answering it: what a relay that routes by SNI and does not terminate TLS
//! needs (HAProxy's `req.ssl_sni`, nginx's `ssl_preread`).
//!
//! Sans-IO like the rest of `codec`, and shaped as [`proxy`](super::proxy):
//! [`decode`] looks at the front of a connection's input and says
//! `Ok(None)` (not complete yet: call again with more), the
//! [`ClientHello`] (its server name, if any, and how many bytes its records
//! take), or a typed [`HelloError`] (close the connection). It keeps no
//! state between calls and consumes nothing: the caller passes every byte
//! on untouched, the hello included.
//!
//! ```
//! use sockloop::codec::client_hello;
//!
//! let mut wire = Vec::new();
//! client_hello::encode(Some("a.example.test"), &[], 16384, &mut wire);
//! assert_eq!(client_hello::decode(&wire[..40]), Ok(None));
//! let hello = client_hello::decode(&wire).unwrap().unwrap();
//! assert_eq!(hello.server_name.as_deref(), Some("a.example.test"));
//! assert_eq!(hello.len, wire.len());
//! ```
//!
//! What is read (RFC 8446 §4.1.2 and §5.1, RFC 6066 §3): TLS records of
//! type handshake (22), each of 1 to 16,384 bytes, whose fragments together
//! carry one ClientHello handshake message — in one record as clients send
//! it, or spread over several, as the record layer allows. The records that
//! carry it, headers included, may take at most [`DEFAULT_MAX_LEN`] bytes
//! (or the cap given to [`decode_with_max`]); while `decode` says
//! `Ok(None)`, fewer than that are buffered. The hello's fields are walked
//! and bounds-checked up to its extensions; of those only `server_name` is
//! read: its `host_name` entry, lowercased, which must be a DNS name
//! (letters, digits, `-`, `_`, dots between non-empty labels, at most 253
//! bytes). Anything else — another record type before the hello is whole,
//! an SSLv2-style hello, a handshake message that is not a ClientHello, a
//! length that does not fit, two `server_name` extensions or two host
//! names — is an error, raised as soon as the bytes that show it are in.

use std::fmt;
use std::ops::Range;

/// The most bytes the records carrying a ClientHello may take, their
/// headers included: 16 KiB, a whole record's worth. Real hellos are a few
/// hundred bytes, up to about 2 KiB with a post-quantum key share; a
/// connection should not make us buffer more before it has said where it goes.
pub const DEFAULT_MAX_LEN: usize = 16 * 1024;

/// A TLS record's header: content type, version, length.
pub const RECORD_HEADER_LEN: usize = 5;

/// The longest plaintext fragment one record may carry (2^14).
pub const MAX_FRAGMENT_LEN: usize = 1 << 14;

const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// A handshake message's header: type and a 24-bit length.
const HANDSHAKE_HEADER_LEN: usize = 4;
const EXTENSION_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST: u8 = 0;
/// The longest DNS name in text, without a trailing dot.
const MAX_HOST_NAME_LEN: usize = 253;

/// What a complete ClientHello says, as far as routing cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The `host_name` of its `server_name` extension, lowercased; `None`
    /// when it has none.
    pub server_name: Option<String>,
    /// Bytes of the records that carry it, from the front of the buffer.
    /// Nothing is consumed: these stay for whoever passes them on.
    pub len: usize,
}

/// Why the bytes at the front of a connection are not a ClientHello the
/// decoder accepts. After any of these, close the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloError {
    /// The first byte is not a handshake record's (22): plaintext, or an
    /// SSLv2-style hello (its first bit set).
    NotHandshake(u8),
    /// A record of another type at offset `at`, before the hello is whole.
    UnexpectedRecord {
        /// Offset of the record in the buffer.
        at: usize,
        /// Its content type.
        content_type: u8,
    },
    /// The record at offset `at` has a major version other than 3.
    RecordVersion {
        /// Offset of the record in the buffer.
        at: usize,
        /// The major version byte found.
        major: u8,
    },
    /// The record at offset `at` carries `len` bytes: 0, or more than
    /// [`MAX_FRAGMENT_LEN`].
    RecordLength {
        /// Offset of the record in the buffer.
        at: usize,
        /// Its length field.
        len: usize,
    },
    /// The first handshake message is of this type, not a ClientHello (1).
    NotClientHello(u8),
    /// The records carrying the hello would take at least `len` bytes,
    /// more than `max`.
    TooLong {
        /// The least the records would take, headers included.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// A field of the hello does not fit where it is; says which.
    Malformed(&'static str),
    /// The `host_name` is not a DNS name; says why.
    BadServerName(&'static str),
}

impl fmt::Display for HelloError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotHandshake(byte) if byte & 0x80 != 0 => write!(
                f,
                "not a TLS handshake: first byte {byte:#04x} (an SSLv2-style hello?)"
            ),
            Self::NotHandshake(byte) => write!(
                f,
                "not a TLS handshake: first byte {byte:#04x}, a handshake record starts with 0x16"
            ),
            Self::UnexpectedRecord { at, content_type } => write!(
                f,
                "TLS record of type {content_type} at offset {at}, before the ClientHello is whole"
            ),
            Self::RecordVersion { at, major } => {
                write!(f, "TLS record at offset {at} with major version {major}")
            }
            Self::RecordLength { at, len } => write!(
                f,
                "TLS record at offset {at} of {len} bytes (1 to {MAX_FRAGMENT_LEN} allowed)"
            ),
            Self::NotClientHello(kind) => {
                write!(
                    f,
                    "first TLS handshake message of type {kind}, not a ClientHello"
                )
            }
            Self::TooLong { len, max } => write!(
                f,
                "TLS ClientHello takes at least {len} bytes, more than the maximum of {max}"
            ),
            Self::Malformed(what) => write!(f, "TLS ClientHello: {what}"),
            Self::BadServerName(why) => write!(f, "TLS ClientHello: server name {why}"),
        }
    }
}

impl std::error::Error for HelloError {}

/// Reads the ClientHello at the front of `buf`: `Ok(None)` while it is
/// incomplete, else its server name and the length of its records. Capped
/// at [`DEFAULT_MAX_LEN`].
pub fn decode(buf: &[u8]) -> Result<Option<ClientHello>, HelloError> {
    decode_with_max(buf, DEFAULT_MAX_LEN)
}

/// [`decode`], with the records capped at `max_len` bytes instead.
pub fn decode_with_max(buf: &[u8], max_len: usize) -> Result<Option<ClientHello>, HelloError> {
    let Some(found) = find_message(buf, max_len)? else {
        return Ok(None);
    };
    let gathered;
    let message = match found.fragments.first() {
        // As clients send it: one record holds it all, no copy.
        Some(first) if first.len() >= found.message_len => {
            &buf[first.start..first.start + found.message_len]
        }
        _ => {
            gathered = gather(buf, &found);
            &gathered[..]
        }
    };
    let server_name = parse_client_hello(&message[HANDSHAKE_HEADER_LEN..])?;
    Ok(Some(ClientHello {
        server_name,
        len: found.records_len,
    }))
}

/// Where a whole handshake message lies in `buf`'s records.
struct Message {
    /// The fragments of the records that carry it, in order; the last may
    /// go on past its end.
    fragments: Vec<Range<usize>>,
    /// Its length, header included.
    message_len: usize,
    /// Where its last record ends.
    records_len: usize,
}

/// Walks the records at the front of `buf` until their fragments hold the
/// first handshake message whole (`Ok(None)` while they do not), checking
/// each header as soon as it is in and the message's own header as soon
/// as its 4 bytes are.
fn find_message(buf: &[u8], max_len: usize) -> Result<Option<Message>, HelloError> {
    let mut fragments = Vec::new();
    let (mut at, mut got) = (0, 0);
    let mut need: Option<usize> = None;
    loop {
        let left = need.map_or(1, |need| need - got);
        if at + RECORD_HEADER_LEN + left > max_len {
            let len = at + RECORD_HEADER_LEN + left;
            return Err(HelloError::TooLong { len, max: max_len });
        }
        let Some(fragment) = record(buf, at, max_len)? else {
            return Ok(None);
        };
        at = fragment.end;
        got += fragment.len();
        fragments.push(fragment);
        if need.is_none() {
            need = message_len(buf, &fragments)?;
        }
        if let Some(message_len) = need.filter(|&need| got >= need) {
            return Ok(Some(Message {
                fragments,
                message_len,
                records_len: at,
            }));
        }
    }
}

/// The record at offset `at`: its fragment once it is whole, `Ok(None)`
/// before. Each header byte is checked as soon as it is in.
fn record(buf: &[u8], at: usize, max_len: usize) -> Result<Option<Range<usize>>, HelloError> {
    let header = &buf[at.min(buf.len())..buf.len().min(at + RECORD_HEADER_LEN)];
    match header.first() {
        Some(&CONTENT_HANDSHAKE) | None => {}
        Some(&byte) if at == 0 => return Err(HelloError::NotHandshake(byte)),
        Some(&content_type) => return Err(HelloError::UnexpectedRecord { at, content_type }),
    }
    if let Some(&major) = header.get(1)
        && major != 3
    {
        return Err(HelloError::RecordVersion { at, major });
    }
    let &[_, _, _, hi, lo] = header else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len == 0 || len > MAX_FRAGMENT_LEN {
        return Err(HelloError::RecordLength { at, len });
    }
    let end = at + RECORD_HEADER_LEN + len;
    if end > max_len {
        return Err(HelloError::TooLong {
            len: end,
            max: max_len,
        });
    }
    Ok((end <= buf.len()).then_some(at + RECORD_HEADER_LEN..end))
}

/// The first handshake message's length, header included, once its
/// header is in `fragments`; refused if it is not a ClientHello.
fn message_len(buf: &[u8], fragments: &[Range<usize>]) -> Result<Option<usize>, HelloError> {
    let mut header = [0; HANDSHAKE_HEADER_LEN];
    let mut bytes = fragments.iter().flat_map(|f| &buf[f.clone()]);
    for (slot, byte) in header.iter_mut().zip(&mut bytes) {
        *slot = *byte;
    }
    let have = fragments.iter().map(Range::len).sum::<usize>();
    if header[0] != HANDSHAKE_CLIENT_HELLO {
        return Err(HelloError::NotClientHello(header[0]));
    }
    if have < HANDSHAKE_HEADER_LEN {
        return Ok(None);
    }
    let body = u32::from_be_bytes([0, header[1], header[2], header[3]]);
    Ok(Some(HANDSHAKE_HEADER_LEN + body as usize))
}

/// The message spread over several records, copied together.
fn gather(buf: &[u8], found: &Message) -> Vec<u8> {
    let mut message = Vec::with_capacity(found.message_len);
    for fragment in &found.fragments {
        message.extend_from_slice(&buf[fragment.clone()]);
    }
    message.truncate(found.message_len);
    message
}

/// Reads a hello's fields in order; running past the end is an error
/// naming the field.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], HelloError> {
        if n > self.rest.len() {
            return Err(HelloError::Malformed(what));
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, HelloError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, HelloError> {
        let bytes = self.take(2, what)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    /// A vector with a one-byte length.
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], HelloError> {
        let len = self.u8(what)?;
        self.take(usize::from(len), what)
    }

    /// A vector with a two-byte length.
    fn vec16(&mut self, what: &'static str) -> Result<Fields<'a>, HelloError> {
        let len = self.u16(what)?;
        let rest = self.take(usize::from(len), what)?;
        Ok(Fields { rest })
    }

    fn end(&self, what: &'static str) -> Result<(), HelloError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(HelloError::Malformed(what))
        }
    }
}

/// A ClientHello's body: its server name, if it asks for one.
fn parse_client_hello(body: &[u8]) -> Result<Option<String>, HelloError> {
    let mut hello = Fields { rest: body };
    hello.take(2 + 32, "shorter than its version and random")?;
    let session_id = hello.vec8("session id runs past the end")?;
    if session_id.len() > 32 {
        return Err(HelloError::Malformed("session id longer than 32 bytes"));
    }
    let suites = hello.vec16("cipher suites run past the end")?;
    if suites.rest.is_empty() || suites.rest.len() % 2 != 0 {
        return Err(HelloError::Malformed("cipher suites not a list of pairs"));
    }
    if hello
        .vec8("compression methods run past the end")?
        .is_empty()
    {
        return Err(HelloError::Malformed("no compression method"));
    }
    // Before TLS 1.2 a hello may end here, without extensions.
    if hello.rest.is_empty() {
        return Ok(None);
    }
    let mut extensions = hello.vec16("extensions run past the end")?;
    hello.end("bytes after the extensions")?;
    let mut server_name = None;
    while !extensions.rest.is_empty() {
        let kind = extensions.u16("an extension runs past the end")?;
        let data = extensions.vec16("an extension runs past the end")?;
        if kind == EXTENSION_SERVER_NAME {
            if server_name.is_some() {
                return Err(HelloError::Malformed("two server_name extensions"));
            }
            server_name = Some(parse_server_name(data)?);
        }
    }
    Ok(server_name.flatten())
}

/// The `server_name` extension's data: its `host_name`, if it names one.
/// Entries of other name types (none is defined) are skipped.
fn parse_server_name(mut data: Fields<'_>) -> Result<Option<String>, HelloError> {
    let mut list = data.vec16("server name list runs past the end")?;
    data.end("bytes after the server name list")?;
    if list.rest.is_empty() {
        return Err(HelloError::Malformed("empty server name list"));
    }
    let mut host = None;
    while !list.rest.is_empty() {
        let kind = list.u8("a server name runs past the end")?;
        let name = list.vec16("a server name runs past the end")?;
        if kind != NAME_TYPE_HOST {
            continue;
        }
        if host.is_some() {
            return Err(HelloError::Malformed("two host names"));
        }
        host = Some(host_name(name.rest)?);
    }
    Ok(host)
}

/// `name` as a lowercase DNS name, or why it is none.
fn host_name(name: &[u8]) -> Result<String, HelloError> {
    check_host_name(name).map_err(HelloError::BadServerName)?;
    Ok(name
        .iter()
        .map(|b| char::from(b.to_ascii_lowercase()))
        .collect())
}

/// Whether `name` is a server name this decoder accepts — 1 to 253 bytes
/// of letters, digits, `-`, `_` and dots between non-empty labels — or
/// why not.
pub fn check_host_name(name: &[u8]) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name.len() > MAX_HOST_NAME_LEN {
        return Err("is longer than 253 bytes");
    }
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if !name.iter().all(allowed) {
        return Err("has a byte other than a letter, digit, '-', '_' or '.'");
    }
    if name.split(|&b| b == b'.').any(<[u8]>::is_empty) {
        return Err("has an empty label");
    }
    Ok(())
}

/// Appends a ClientHello asking for `server_name` (if given), with
/// `extensions` (type and data) after that one, in records of at most
/// `record_len` bytes (1 to [`MAX_FRAGMENT_LEN`]). Its fields are what a
/// decoder needs, not what a server would accept (no key share, no
/// versions): for tests, and to probe a relay.
pub fn encode(
    server_name: Option<&str>,
    extensions: &[(u16, Vec<u8>)],
    record_len: usize,
    out: &mut Vec<u8>,
) {
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0x5a; 32]);
    // No session id; TLS_AES_128_GCM_SHA256; null compression.
    body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
    let mut all = Vec::new();
    if let Some(name) = server_name {
        let entry = [&[NAME_TYPE_HOST][..], &len16(name.len()), name.as_bytes()].concat();
        let list = [&len16(entry.len())[..], &entry].concat();
        push_extension(&mut all, EXTENSION_SERVER_NAME, &list);
    }
    for (kind, data) in extensions {
        push_extension(&mut all, *kind, data);
    }
    body.extend_from_slice(&len16(all.len()));
    body.extend_from_slice(&all);
    let len = u32::try_from(body.len())
        .expect("a hello under 16 MiB")
        .to_be_bytes();
    let mut message = vec![HANDSHAKE_CLIENT_HELLO, len[1], len[2], len[3]];
    message.extend_from_slice(&body);
    for fragment in message.chunks(record_len.clamp(1, MAX_FRAGMENT_LEN)) {
        out.extend_from_slice(&[CONTENT_HANDSHAKE, 3, 1]);
        out.extend_from_slice(&len16(fragment.len()));
        out.extend_from_slice(fragment);
    }
}

fn push_extension(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&len16(data.len()));
    out.extend_from_slice(data);
}

/// A length as two bytes; panics past 65,535 (the encoder's caller's error).
fn len16(len: usize) -> [u8; 2] {
    u16::try_from(len)
        .expect("a field under 64 KiB")
        .to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Python 3.11's `ssl` (OpenSSL 3.0) sends first for `a.test`:
    /// one record of 517 bytes, padded.
    const PYTHON_HELLO: &[u8] =
        include_bytes!("../../fuzz/corpus/client_hello/python_openssl_a_test");

    fn hello(name: Option<&str>, len: usize) -> Result<Option<ClientHello>, HelloError> {
        Ok(Some(ClientHello {
            server_name: name.map(str::to_owned),
            len,
        }))
    }

    fn encoded(name: Option<&str>, extensions: &[(u16, Vec<u8>)], record_len: usize) -> Vec<u8> {
        let mut wire = Vec::new();
        encode(name, extensions, record_len, &mut wire);
        wire
    }

    /// Every strict prefix of `wire` is incomplete; `wire` whole, and with
    /// more bytes behind it, gives `expected`.
    fn decodes_only_whole(wire: &[u8], expected: Result<Option<ClientHello>, HelloError>) {
        for k in 0..wire.len() {
            assert_eq!(decode(&wire[..k]), Ok(None), "prefix of {k} bytes");
        }
        assert_eq!(decode(wire), expected);
        let more = [wire, b"\x17\x03\x03\x00\x01x"].concat();
        assert_eq!(decode(&more), expected);
    }

    #[test]
    fn a_python_hello_names_its_server_once_whole() {
        assert_eq!(PYTHON_HELLO.len(), 517);
        decodes_only_whole(PYTHON_HELLO, hello(Some("a.test"), 517));
    }

    #[test]
    fn a_hello_spread_over_records_reads_the_same() {
        let name = Some("www.example.test");
        let extensions = [(0x10, b"\x00\x03\x02h2".to_vec()), (0xff01, vec![0])];
        for record_len in [1, 2, 7, 100, MAX_FRAGMENT_LEN] {
            let wire = encoded(name, &extensions, record_len);
            decodes_only_whole(&wire, hello(name, wire.len()));
        }
        // A hello of more than one record's worth, under a higher cap.
        let big = [(0x15, vec![0; 20_000])];
        let wire = encoded(name, &big, MAX_FRAGMENT_LEN);
        assert_eq!(decode_with_max(&wire, 32 << 10), hello(name, wire.len()));
    }

    #[test]
    fn a_hello_without_a_server_name_says_so() {
        let wire = encoded(None, &[(0x10, b"\x00\x03\x02h2".to_vec())], 512);
        decodes_only_whole(&wire, hello(None, wire.len()));
        // Without extensions at all, as before TLS 1.2.
        let mut bare = encoded(None, &[], 512);
        bare.truncate(bare.len() - 2);
        bare[4] -= 2;
        bare[8] -= 2;
        decodes_only_whole(&bare, hello(None, bare.len()));
    }

    #[test]
    fn the_server_name_is_lowercased() {
        let wire = encoded(Some("A.Example.TEST"), &[], 512);
        assert_eq!(decode(&wire), hello(Some("a.example.test"), wire.len()));
    }

    #[test]
    fn what_is_not_a_handshake_is_refused_at_its_first_byte() {
        assert_eq!(decode(b""), Ok(None));
        assert_eq!(decode(b"G"), Err(HelloError::NotHandshake(b'G')));
        let sslv2 = decode(b"\x80\x2e\x01").unwrap_err();
        assert!(sslv2.to_string().contains("SSLv2"), "{sslv2}");
        assert_eq!(
            decode(b"\x16\x02"),
            Err(HelloError::RecordVersion { at: 0, major: 2 })
        );
        for len in [0, MAX_FRAGMENT_LEN + 1] {
            let header = [22, 3, 1, (len >> 8) as u8, len as u8];
            assert_eq!(
                decode(&header),
                Err(HelloError::RecordLength { at: 0, len })
            );
        }
        // A ServerHello where a ClientHello belongs.
        assert_eq!(
            decode(b"\x16\x03\x03\x00\x01\x02"),
            Err(HelloError::NotClientHello(2))
        );
    }

    #[test]
    fn another_record_inside_the_hello_is_refused() {
        let wire = encoded(Some("a.test"), &[], 10);
        let mut mixed = wire[..15].to_vec();
        mixed.extend_from_slice(b"\x14\x03\x03\x00\x01\x01");
        assert_eq!(
            decode(&mixed),
            Err(HelloError::UnexpectedRecord {
                at: 15,
                content_type: 20
            })
        );
    }

    #[test]
    fn a_hello_past_the_cap_is_refused_as_soon_as_its_length_says_so() {
        // A record longer than the cap: its header is enough.
        let big = encoded(Some("a.test"), &[(0x15, vec![0; 17_000])], MAX_FRAGMENT_LEN);
        assert_eq!(
            decode(&big[..5]),
            Err(HelloError::TooLong {
                len: 5 + MAX_FRAGMENT_LEN,
                max: DEFAULT_MAX_LEN
            })
        );
        // A message longer than the cap, in a small first record.
        let wire = b"\x16\x03\x01\x00\x04\x01\x00\xff\xff";
        assert_eq!(
            decode(wire),
            Err(HelloError::TooLong {
                len: 9 + 5 + 0xffff,
                max: DEFAULT_MAX_LEN
            })
        );
        // Many small records: their headers count too.
        let small = encoded(Some("a.test"), &[], 1);
        assert!(matches!(
            decode_with_max(&small, small.len() - 1),
            Err(HelloError::TooLong { .. })
        ));
        assert_eq!(
            decode_with_max(&small, small.len()),
            hello(Some("a.test"), small.len())
        );
    }

    /// `wire` with the server_name extension's bytes from `at` replaced.
    fn with_sni_bytes(name: &str, at: usize, bytes: &[u8]) -> Vec<u8> {
        let mut wire = encoded(Some(name), &[], 512);
        // Record 5, handshake 4, version and random 34, empty session id 1,
        // one suite 4, one compression method 2, extensions' length 2.
        let ext = 5 + 4 + 34 + 1 + 4 + 2 + 2;
        wire[ext + at..ext + at + bytes.len()].copy_from_slice(bytes);
        wire
    }

    #[test]
    fn malformed_server_names_are_refused_with_what_is_wrong() {
        let lists: [(&[u8], HelloError); 7] = [
            (b"\x00\x00", HelloError::Malformed("empty server name list")),
            (
                b"\x00\x03\x00\x00\x00\x09",
                HelloError::Malformed("bytes after the server name list"),
            ),
            (
                b"\x00\x09",
                HelloError::Malformed("server name list runs past the end"),
            ),
            (
                b"\x00\x03\x00\x00\x05",
                HelloError::Malformed("a server name runs past the end"),
            ),
            (
                b"\x00\x01\x00",
                HelloError::Malformed("a server name runs past the end"),
            ),
            (
                b"\x00\x08\x00\x00\x01a\x00\x00\x01b",
                HelloError::Malformed("two host names"),
            ),
            (
                b"\x00\x03\x00\x00\x00",
                HelloError::BadServerName("is empty"),
            ),
        ];
        for (list, error) in lists {
            let wire = encoded(None, &[(0, list.to_vec())], 512);
            assert_eq!(decode(&wire), Err(error), "{list:?}");
        }
        // A name of a type not defined is skipped.
        let other = encoded(None, &[(0, b"\x00\x04\x01\x00\x01x".to_vec())], 512);
        assert_eq!(decode(&other), hello(None, other.len()));
        let past = with_sni_bytes("a.test", 2, &[0, 30]);
        assert_eq!(
            decode(&past),
            Err(HelloError::Malformed("an extension runs past the end"))
        );
        let twice = encoded(
            Some("a.test"),
            &[(0, b"\x00\x04\x00\x00\x01b".to_vec())],
            512,
        );
        assert_eq!(
            decode(&twice),
            Err(HelloError::Malformed("two server_name extensions"))
        );
        let bad_names = [
            ("a..test", "has an empty label"),
            ("a.test.", "has an empty label"),
            (
                "a test",
                "has a byte other than a letter, digit, '-', '_' or '.'",
            ),
        ];
        for (name, why) in bad_names {
            let wire = encoded(Some(name), &[], 512);
            assert_eq!(decode(&wire), Err(HelloError::BadServerName(why)), "{name}");
        }
        let long = "a.".repeat(127);
        let wire = encoded(Some(&long[..254]), &[], 512);
        assert!(matches!(decode(&wire), Err(HelloError::BadServerName(_))));
        assert_eq!(
            decode(&encoded(Some(&long[..253]), &[], 512)).map(|h| h.is_some()),
            Ok(true)
        );
    }

    #[test]
    fn fields_that_do_not_fit_are_refused() {
        let mut wire = encoded(Some("a.test"), &[], 512);
        // Session id of 33 bytes.
        wire[5 + 4 + 34] = 33;
        assert!(matches!(decode(&wire), Err(HelloError::Malformed(_))));
        let mut wire = encoded(Some("a.test"), &[], 512);
        // Cipher suites of 3 bytes.
        wire[5 + 4 + 35 + 1] = 3;
        assert!(matches!(decode(&wire), Err(HelloError::Malformed(_))));
        // A message that ends before its random.
        let short = b"\x16\x03\x01\x00\x08\x01\x00\x00\x04\x03\x03\x00\x00";
        assert_eq!(
            decode(short),
            Err(HelloError::Malformed("shorter than its version and random"))
        );
    }
}
