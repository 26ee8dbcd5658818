//! The PROXY protocol (HAProxy's, version 1 text and version 2 binary): a
//! header a proxy sends as the very first bytes of a connection, naming the
//! client it relays and the address that client connected to.
//!
//! Sans-IO like the rest of `codec`: [`decode`] looks at the front of a
//! connection's input and says `Ok(None)` (not complete yet: call again with
//! more), the header and how many bytes it took, or a typed [`ProxyError`]
//! (close the connection). It never copies, allocates or keeps state between
//! calls, and it needs at most [`V1_MAX_LEN`] bytes (version 1) or
//! [`V2_MAX_LEN`] (version 2, by default) to decide: while it says
//! `Ok(None)`, fewer than that are buffered. A malformed header is refused as
//! soon as the first wrong byte is in, so that the sender can notice at once,
//! as the specification recommends.
//!
//! ```
//! use sockloop::codec::proxy::{self, Version};
//!
//! let client = "192.168.0.1:56324".parse().unwrap();
//! let server = "192.168.0.11:443".parse().unwrap();
//! let mut wire = Vec::new();
//! proxy::encode_v1(client, server, &mut wire);
//! assert_eq!(wire, b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
//! wire.extend_from_slice(b"GET / HTTP/1.1\r\n");
//!
//! assert_eq!(proxy::decode(&wire[..20]), Ok(None));
//! let (header, len) = proxy::decode(&wire).unwrap().unwrap();
//! assert_eq!((header.version, header.source(), len), (Version::V1, Some(client), 47));
//! ```
//!
//! What is accepted, following the specification
//! (<https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>):
//!
//! - v1: `PROXY TCP4 …`, `PROXY TCP6 …` (addresses in canonical form, ports
//!   without leading zeros, single spaces, ending in CRLF within 107 bytes)
//!   and `PROXY UNKNOWN` with anything after it up to CRLF;
//! - v2: the `PROXY` command for TCP over IPv4 and IPv6, whose addresses are
//!   carried; the `LOCAL` command (a proxy's own health check), and `PROXY`
//!   for `UNSPEC`, UDP and `AF_UNIX`, all without an address: the receiver
//!   uses the connection's own, as the specification says it may; the
//!   type-length-value fields after the addresses are walked and
//!   bounds-checked but not kept, except that a `CRC32C` one is verified;
//!   [`v2_ssl`] reads the `SSL` one (the client's TLS, and the name in its
//!   certificate) from a decoded header, which [`encode_v2_with_ssl`] writes.
//!
//! Anything else — another version or command, a family outside the
//! specification's table, a length too short for its addresses or longer
//! than the cap — is an error.

use std::fmt;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::str::FromStr;

/// The longest version 1 header, CRLF included (the specification's bound:
/// `PROXY UNKNOWN` with two full IPv6 addresses and ports).
pub const V1_MAX_LEN: usize = 107;

/// The fixed part of a version 2 header: signature, version and command,
/// family, length.
pub const V2_FIXED_LEN: usize = 16;

/// The longest version 2 header [`decode`] accepts: the fixed part plus 4 KiB
/// of addresses and type-length-value fields. The format allows 16 + 65,535
/// bytes, but what real senders add (ALPN, SNI, a unique id, TLS facts, cloud
/// load balancers' endpoint ids) is a few hundred bytes at most, and a
/// connection should not make us buffer 64 KiB before it has said who it is.
/// [`decode_with_max`] takes another cap.
pub const V2_MAX_LEN: usize = V2_FIXED_LEN + 4096;

/// The first 12 bytes of every version 2 header.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

const V1_PREFIX: &[u8] = b"PROXY ";
const CMD_LOCAL: u8 = 0x0;
const CMD_PROXY: u8 = 0x1;
const TLV_CRC32C: u8 = 0x03;
/// `PP2_TYPE_SSL`: what the proxy knows of the client's TLS.
pub const TLV_SSL: u8 = 0x20;
/// `PP2_SUBTYPE_SSL_VERSION`, inside the SSL field: `TLSv1.3`, say.
pub const SUBTYPE_SSL_VERSION: u8 = 0x21;
/// `PP2_SUBTYPE_SSL_CN`, inside the SSL field: the name on the client's certificate.
pub const SUBTYPE_SSL_CN: u8 = 0x22;
/// A bit of the SSL field's `client` byte: the client spoke TLS.
pub const CLIENT_SSL: u8 = 0x01;
/// A bit of the SSL field's `client` byte: it presented a certificate on
/// this connection.
pub const CLIENT_CERT_CONN: u8 = 0x02;
/// A bit of the SSL field's `client` byte: it presented one in this TLS
/// session (on this connection or on the one it resumed).
pub const CLIENT_CERT_SESS: u8 = 0x04;
/// The longest name [`encode_v2_with_ssl`] puts in `SSL_CN`: a longer one
/// is left out rather than risk a header its receiver refuses as too long
/// (ours take 4 KiB; a certificate's CN is 64 characters at most).
pub const MAX_SSL_CN_LEN: usize = 1024;

/// Which of the two header formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// One line of text.
    V1,
    /// Binary.
    V2,
}

impl FromStr for Version {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "v1" | "1" => Ok(Version::V1),
            "v2" | "2" => Ok(Version::V2),
            other => Err(format!(
                "unknown PROXY protocol version `{other}`: expected v1 or v2"
            )),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        })
    }
}

/// What the sender says the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Relayed on behalf of a client (every version 1 header says this).
    Proxy,
    /// Version 2 only: opened by the proxy itself (a health check); use the
    /// connection's own addresses.
    Local,
}

/// The client's address and the address it connected to, as the proxy in
/// front saw them. Both are of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The client's address.
    pub source: SocketAddr,
    /// The address the client connected to.
    pub destination: SocketAddr,
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The version the header was written in.
    pub version: Version,
    /// Whether the connection is a client's or the proxy's own.
    pub command: Command,
    /// For TCP over IPv4 or IPv6; `None` when the header carries no IP
    /// address (v1 `UNKNOWN`, v2 `LOCAL`, or v2 `UNSPEC`, UDP or `AF_UNIX`):
    /// then the connection's own addresses are the ones to use.
    pub addresses: Option<Addresses>,
}

impl ProxyHeader {
    /// The client's own address, if the header names one.
    pub fn source(&self) -> Option<SocketAddr> {
        self.addresses.map(|a| a.source)
    }

    /// Where the client connected to, if the header names it.
    pub fn destination(&self) -> Option<SocketAddr> {
        self.addresses.map(|a| a.destination)
    }
}

/// Why the bytes at the front of a connection are not a PROXY header the
/// decoder accepts. After any of these, close the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyError {
    /// The first bytes are neither `PROXY ` nor the version 2 signature.
    NotProxy,
    /// Version 1: no CRLF within the first 107 bytes.
    LineTooLong,
    /// Version 1: a byte that is not printable ASCII, or a CR that is not
    /// followed by LF, at offset `at` of the header.
    BadByte {
        /// Offset in the header.
        at: usize,
        /// The byte found there.
        byte: u8,
    },
    /// Version 1: the line does not follow the grammar; says where.
    Malformed(&'static str),
    /// Version 2: the version nibble is not 2.
    UnsupportedVersion(u8),
    /// Version 2: the command is neither `LOCAL` (0) nor `PROXY` (1).
    UnsupportedCommand(u8),
    /// Version 2: the family and transport byte is none of the
    /// specification's (`0x00`, `0x11`, `0x12`, `0x21`, `0x22`, `0x31`, `0x32`).
    UnsupportedFamily(u8),
    /// Version 2: the header would be `len` bytes, more than `max`.
    TooLong {
        /// The header's length, fixed part included, as its length field gives it.
        len: usize,
        /// The longest header the decoder takes.
        max: usize,
    },
    /// Version 2: `len` bytes after the fixed part, fewer than the `need`
    /// the family's addresses take.
    AddressesTooShort {
        /// Bytes after the fixed part.
        len: usize,
        /// Bytes the family's addresses take.
        need: usize,
    },
    /// Version 2: the type-length-value field at offset `at` of the header
    /// runs past its end (or a `CRC32C` one is not 4 bytes long).
    BadTlv {
        /// Offset of the field in the header.
        at: usize,
    },
    /// Version 2: the `CRC32C` field does not match the header.
    BadChecksum {
        /// The checksum the header carries.
        sent: u32,
        /// The checksum of the header as received.
        computed: u32,
    },
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotProxy => f.write_str("no PROXY protocol header"),
            Self::LineTooLong => write!(
                f,
                "PROXY v1 header without CRLF in its first {V1_MAX_LEN} bytes"
            ),
            Self::BadByte { at, byte } => {
                write!(f, "PROXY v1 header: byte {byte:#04x} at offset {at}")
            }
            Self::Malformed(what) => write!(f, "PROXY v1 header: {what}"),
            Self::UnsupportedVersion(v) => write!(f, "PROXY v2 header with version {v}"),
            Self::UnsupportedCommand(c) => write!(f, "PROXY v2 header with command {c}"),
            Self::UnsupportedFamily(fam) => {
                write!(f, "PROXY v2 header with address family {fam:#04x}")
            }
            Self::TooLong { len, max } => write!(
                f,
                "PROXY v2 header of {len} bytes exceeds the maximum of {max} bytes"
            ),
            Self::AddressesTooShort { len, need } => write!(
                f,
                "PROXY v2 header: {len} bytes of addresses, its family needs {need}"
            ),
            Self::BadTlv { at } => write!(
                f,
                "PROXY v2 header: type-length-value field at offset {at} runs past the end"
            ),
            Self::BadChecksum { sent, computed } => write!(
                f,
                "PROXY v2 header: CRC32C {sent:#010x} sent, {computed:#010x} computed"
            ),
        }
    }
}

impl std::error::Error for ProxyError {}

/// Decodes the PROXY header at the front of `buf`, version 1 or 2: `Ok(None)`
/// while it is incomplete, else the header and its length in bytes (what to
/// drop from the front; the client's own bytes follow). Version 2 headers are
/// capped at [`V2_MAX_LEN`].
pub fn decode(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    decode_with_max(buf, V2_MAX_LEN)
}

/// [`decode`], with version 2 headers capped at `v2_max_len` bytes (the
/// fixed 16 included) instead of [`V2_MAX_LEN`].
pub fn decode_with_max(
    buf: &[u8],
    v2_max_len: usize,
) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    match buf.first() {
        None => Ok(None),
        Some(b'P') => decode_v1(buf),
        Some(b'\r') => decode_v2(buf, v2_max_len),
        Some(_) => Err(ProxyError::NotProxy),
    }
}

/// Whether `buf` starts with a PROXY header's signature (`PROXY ` for
/// version 1, the 12 bytes of [`V2_SIGNATURE`] for version 2): `None` while
/// it is too short to tell (a strict prefix of one). What a listener that
/// believes no header from this peer uses to tell a header sent anyway
/// from the peer's own bytes.
pub fn has_signature(buf: &[u8]) -> Option<bool> {
    let signatures: [&[u8]; 2] = [V1_PREFIX, &V2_SIGNATURE];
    let mut undecided = false;
    for signature in signatures {
        if buf.starts_with(signature) {
            return Some(true);
        }
        undecided |= starts_like(buf, signature);
    }
    (!undecided).then_some(false)
}

/// Whether `buf` is a prefix of `expected` or starts with it.
fn starts_like(buf: &[u8], expected: &[u8]) -> bool {
    let n = buf.len().min(expected.len());
    buf[..n] == expected[..n]
}

fn decode_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    if !starts_like(buf, V1_PREFIX) {
        return Err(ProxyError::NotProxy);
    }
    // Scanned left to right, so that the first wrong byte decides, however
    // much of the line has arrived.
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    for (at, &byte) in window.iter().enumerate().skip(V1_PREFIX.len()) {
        match byte {
            b'\r' => match window.get(at + 1) {
                Some(b'\n') => {
                    let header = parse_v1_line(&buf[V1_PREFIX.len()..at])?;
                    return Ok(Some((header, at + 2)));
                }
                Some(&byte) => return Err(ProxyError::BadByte { at: at + 1, byte }),
                // The LF is not in yet, or would be byte 108.
                None => break,
            },
            b' '..=b'~' => {}
            _ => return Err(ProxyError::BadByte { at, byte }),
        }
    }
    if window.len() == V1_MAX_LEN {
        Err(ProxyError::LineTooLong)
    } else {
        Ok(None)
    }
}

/// The line after `PROXY ` and before CRLF: printable ASCII only.
fn parse_v1_line(line: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let line = std::str::from_utf8(line).map_err(|_| ProxyError::Malformed("not ASCII"))?;
    let mut fields = line.split(' ');
    let v6 = match fields.next() {
        // "The receiver must ignore anything presented before the CRLF."
        Some("UNKNOWN") => {
            return Ok(ProxyHeader {
                version: Version::V1,
                command: Command::Proxy,
                addresses: None,
            });
        }
        Some("TCP4") => false,
        Some("TCP6") => true,
        _ => {
            return Err(ProxyError::Malformed(
                "protocol is not TCP4, TCP6 or UNKNOWN",
            ));
        }
    };
    let mut next = |what| fields.next().ok_or(ProxyError::Malformed(what));
    let source = parse_v1_ip(next("no source address")?, v6)?;
    let destination = parse_v1_ip(next("no destination address")?, v6)?;
    let source_port = parse_v1_port(next("no source port")?)?;
    let destination_port = parse_v1_port(next("no destination port")?)?;
    if fields.next().is_some() {
        return Err(ProxyError::Malformed("more after the destination port"));
    }
    Ok(ProxyHeader {
        version: Version::V1,
        command: Command::Proxy,
        addresses: Some(Addresses {
            source: SocketAddr::new(source, source_port),
            destination: SocketAddr::new(destination, destination_port),
        }),
    })
}

/// An address of the family the protocol word named. Rust's parsers are
/// as strict as the specification: IPv4 as four decimal numbers without
/// leading zeros, IPv6 without a zone.
fn parse_v1_ip(text: &str, v6: bool) -> Result<IpAddr, ProxyError> {
    if v6 {
        text.parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| ProxyError::Malformed("TCP6 address is not IPv6"))
    } else {
        text.parse::<Ipv4Addr>()
            .map(IpAddr::V4)
            .map_err(|_| ProxyError::Malformed("TCP4 address is not IPv4"))
    }
}

/// A decimal port, 0 to 65535, without a sign or leading zeros.
fn parse_v1_port(text: &str) -> Result<u16, ProxyError> {
    let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = text.len() > 1 && text.starts_with('0');
    match text.parse() {
        Ok(port) if digits_only && !leading_zero => Ok(port),
        _ => Err(ProxyError::Malformed(
            "port is not a decimal 0 to 65535 without leading zeros",
        )),
    }
}

/// Bytes of addresses each family and transport takes, and whether the
/// decoder carries them (TCP over IPv4 or IPv6) or falls back to no address,
/// as the specification asks of a receiver that does not implement one.
fn v2_family(fam: u8) -> Option<usize> {
    match fam {
        0x00 => Some(0),
        0x11 | 0x12 => Some(12),
        0x21 | 0x22 => Some(36),
        0x31 | 0x32 => Some(216),
        _ => None,
    }
}

/// What the fixed part of a version 2 header says, checked.
struct V2Fixed {
    command: Command,
    /// The family and transport byte.
    family: u8,
    /// Bytes of addresses the family takes (none for `LOCAL`).
    addresses_len: usize,
    /// The whole header's length: the fixed part and the length it gives.
    total: usize,
}

/// A version 2 header: its fixed part, then the addresses and the
/// type-length-value fields after them.
fn decode_v2(buf: &[u8], max_len: usize) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let Some(fixed) = decode_v2_fixed(buf, max_len)? else {
        return Ok(None);
    };
    let Some(header) = buf.get(..fixed.total) else {
        return Ok(None);
    };
    let addresses = match fixed.command {
        Command::Local => None,
        Command::Proxy => {
            check_tlvs(header, V2_FIXED_LEN + fixed.addresses_len)?;
            v2_addresses(fixed.family, &header[V2_FIXED_LEN..])
        }
    };
    Ok(Some((
        ProxyHeader {
            version: Version::V2,
            command: fixed.command,
            addresses,
        },
        fixed.total,
    )))
}

/// The fixed part of a version 2 header, each byte checked as soon as it
/// is in: `Ok(None)` until all [`V2_FIXED_LEN`] are.
fn decode_v2_fixed(buf: &[u8], max_len: usize) -> Result<Option<V2Fixed>, ProxyError> {
    if !starts_like(buf, &V2_SIGNATURE) {
        return Err(ProxyError::NotProxy);
    }
    let Some(&ver_cmd) = buf.get(12) else {
        return Ok(None);
    };
    let command = v2_command(ver_cmd)?;
    let Some(&family) = buf.get(13) else {
        return Ok(None);
    };
    // LOCAL: "discard the protocol block including the family".
    let addresses_len = match command {
        Command::Local => 0,
        Command::Proxy => v2_family(family).ok_or(ProxyError::UnsupportedFamily(family))?,
    };
    let Some(&[hi, lo]) = buf.get(14..16) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    let total = V2_FIXED_LEN + len;
    if total > max_len {
        return Err(ProxyError::TooLong {
            len: total,
            max: max_len,
        });
    }
    if len < addresses_len {
        return Err(ProxyError::AddressesTooShort {
            len,
            need: addresses_len,
        });
    }
    Ok(Some(V2Fixed {
        command,
        family,
        addresses_len,
        total,
    }))
}

/// The command of a version 2 header's version-and-command byte, which
/// must say version 2.
fn v2_command(ver_cmd: u8) -> Result<Command, ProxyError> {
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::UnsupportedVersion(ver_cmd >> 4));
    }
    match ver_cmd & 0x0f {
        CMD_LOCAL => Ok(Command::Local),
        CMD_PROXY => Ok(Command::Proxy),
        other => Err(ProxyError::UnsupportedCommand(other)),
    }
}

/// The addresses of TCP over IPv4 or IPv6; `None` for the families carried
/// as no address. `block` is long enough for the family.
fn v2_addresses(fam: u8, block: &[u8]) -> Option<Addresses> {
    let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
    let (source, destination) = match fam {
        0x11 => {
            let ip =
                |at: usize| IpAddr::from([block[at], block[at + 1], block[at + 2], block[at + 3]]);
            (
                SocketAddr::new(ip(0), port(8)),
                SocketAddr::new(ip(4), port(10)),
            )
        }
        0x21 => {
            let ip = |at: usize| {
                let mut octets = [0; 16];
                octets.copy_from_slice(&block[at..at + 16]);
                IpAddr::from(octets)
            };
            (
                SocketAddr::new(ip(0), port(32)),
                SocketAddr::new(ip(16), port(34)),
            )
        }
        _ => return None,
    };
    Some(Addresses {
        source,
        destination,
    })
}

/// The type-length-value field at offset `at` of `header`, which must end
/// by `end`: its type and where its value lies.
fn tlv_at(header: &[u8], at: usize, end: usize) -> Result<(u8, Range<usize>), ProxyError> {
    let Some(&[kind, hi, lo]) = header[..end].get(at..at + 3) else {
        return Err(ProxyError::BadTlv { at });
    };
    let value = at + 3..at + 3 + usize::from(u16::from_be_bytes([hi, lo]));
    if value.end > end {
        return Err(ProxyError::BadTlv { at });
    }
    Ok((kind, value))
}

/// Walks the type-length-value fields from offset `start` of `header` to its
/// end: each must fit, and a `CRC32C` one must match.
fn check_tlvs(header: &[u8], start: usize) -> Result<(), ProxyError> {
    let mut at = start;
    while at < header.len() {
        let (kind, Range { start: value, end }) = tlv_at(header, at, header.len())?;
        if kind == TLV_CRC32C {
            let Ok(sent) = <[u8; 4]>::try_from(&header[value..end]) else {
                return Err(ProxyError::BadTlv { at });
            };
            let sent = u32::from_be_bytes(sent);
            // Over the whole header, the checksum's own bytes taken as zeros.
            let crc = crc32c_update(!0, &header[..value]);
            let crc = crc32c_update(crc, &[0; 4]);
            let computed = !crc32c_update(crc, &header[end..]);
            if sent != computed {
                return Err(ProxyError::BadChecksum { sent, computed });
            }
        }
        at = end;
    }
    Ok(())
}

/// CRC32C (Castagnoli, reflected polynomial `0x82F63B78`), one table lookup
/// per byte: what the specification's `PP2_TYPE_CRC32C` carries.
const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// Feeds `data` into a running CRC32C (start with `!0`, end with `!`).
fn crc32c_update(mut crc: u32, data: &[u8]) -> u32 {
    for &byte in data {
        crc = CRC32C_TABLE[((crc ^ u32::from(byte)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// The CRC32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    !crc32c_update(!0, data)
}

/// Two addresses of one family: as they are if they share one, else both
/// as IPv6 (an IPv4 address mapped, `::ffff:a.b.c.d`), as HAProxy does.
fn one_family(source: SocketAddr, destination: SocketAddr) -> (SocketAddr, SocketAddr) {
    if source.is_ipv4() == destination.is_ipv4() {
        return (source, destination);
    }
    let v6 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    (v6(source), v6(destination))
}

/// Appends the version 1 header for a client at `source` that connected to
/// `destination`: `PROXY TCP4 …` or `PROXY TCP6 …` (addresses of two
/// families both go as IPv6, the IPv4 one mapped).
pub fn encode_v1(source: SocketAddr, destination: SocketAddr, out: &mut Vec<u8>) {
    let (source, destination) = one_family(source, destination);
    let protocol = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "PROXY {protocol} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    );
}

/// Appends `PROXY UNKNOWN\r\n`: a version 1 header for a connection whose
/// addresses cannot be told (the receiver uses the connection's own).
pub fn encode_v1_unknown(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PROXY UNKNOWN\r\n");
}

/// Appends the version 2 header (`PROXY` command, TCP) for a client at
/// `source` that connected to `destination`, without type-length-value
/// fields (addresses of two families both go as IPv6, the IPv4 one mapped).
pub fn encode_v2(source: SocketAddr, destination: SocketAddr, out: &mut Vec<u8>) {
    let (source, destination) = one_family(source, destination);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x20 | CMD_PROXY);
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.extend_from_slice(&[0x11, 0, 12]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(ip) => ip.to_ipv6_mapped(),
                IpAddr::V6(ip) => ip,
            };
            out.extend_from_slice(&[0x21, 0, 36]);
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
}

/// Appends a version 2 `LOCAL` header (family `UNSPEC`, no addresses): the
/// receiver uses the connection's own addresses. What HAProxy sends when it
/// cannot tell them.
pub fn encode_v2_local(out: &mut Vec<u8>) {
    out.extend_from_slice(&V2_SIGNATURE);
    out.extend_from_slice(&[0x20 | CMD_LOCAL, 0x00, 0, 0]);
}

/// Appends the header of `version` for `addresses`, or, without them, the
/// form that names none: v1 `UNKNOWN`, v2 `LOCAL`.
pub fn encode(version: Version, addresses: Option<Addresses>, out: &mut Vec<u8>) {
    match (version, addresses) {
        (Version::V1, Some(a)) => encode_v1(a.source, a.destination, out),
        (Version::V1, None) => encode_v1_unknown(out),
        (Version::V2, Some(a)) => encode_v2(a.source, a.destination, out),
        (Version::V2, None) => encode_v2_local(out),
    }
}

/// A version 2 header's SSL field (`PP2_TYPE_SSL`): the client's TLS, as
/// the proxy that terminated it saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ssl<'a> {
    /// [`CLIENT_SSL`], [`CLIENT_CERT_CONN`], [`CLIENT_CERT_SESS`] bits.
    pub client: u8,
    /// 0 if the client presented a certificate and it was verified,
    /// anything else otherwise.
    pub verify: u32,
    /// `SSL_VERSION`: the protocol, as OpenSSL names it (`TLSv1.3`).
    pub version: Option<&'a str>,
    /// `SSL_CN`: the name on the client's certificate.
    pub cn: Option<&'a str>,
}

impl<'a> Ssl<'a> {
    /// The field for a TLS client that spoke `version` and, if it
    /// presented a certificate that was verified, is `identity`; as HAProxy
    /// sends it with `send-proxy-v2-ssl-cn`.
    pub fn of_client(version: Option<&'a str>, identity: Option<&'a str>) -> Ssl<'a> {
        let certified = identity.is_some();
        Ssl {
            client: CLIENT_SSL
                | if certified {
                    CLIENT_CERT_CONN | CLIENT_CERT_SESS
                } else {
                    0
                },
            verify: u32::from(!certified),
            version,
            cn: identity.filter(|cn| cn.len() <= MAX_SSL_CN_LEN),
        }
    }
}

/// Appends the version 2 header (`PROXY` command, TCP) for a client at
/// `source` that connected to `destination`, as [`encode_v2`] does, with
/// the SSL field `ssl` after the addresses (a text in it longer than
/// [`MAX_SSL_CN_LEN`] is left out).
pub fn encode_v2_with_ssl(
    source: SocketAddr,
    destination: SocketAddr,
    ssl: &Ssl<'_>,
    out: &mut Vec<u8>,
) {
    let start = out.len();
    encode_v2(source, destination, out);
    let field = out.len();
    out.extend_from_slice(&[TLV_SSL, 0, 0, ssl.client]);
    out.extend_from_slice(&ssl.verify.to_be_bytes());
    let subfields = [(SUBTYPE_SSL_VERSION, ssl.version), (SUBTYPE_SSL_CN, ssl.cn)];
    for (kind, value) in subfields {
        if let Some(value) = value.filter(|v| v.len() <= MAX_SSL_CN_LEN) {
            out.push(kind);
            out.extend_from_slice(&(value.len() as u16).to_be_bytes());
            out.extend_from_slice(value.as_bytes());
        }
    }
    // Both lengths fit: at most 8 + 2 × (3 + 1024) bytes were added.
    let value_len = (out.len() - field - 3) as u16;
    out[field + 1..field + 3].copy_from_slice(&value_len.to_be_bytes());
    let header_len = (out.len() - start - V2_FIXED_LEN) as u16;
    out[start + 14..start + 16].copy_from_slice(&header_len.to_be_bytes());
}

/// The SSL field of the version 2 header at the front of `buf` (one that
/// [`decode`] accepted); `None` if it has none, or is a `LOCAL` one (whose
/// fields are not a client's), or is not all in `buf`. Its sub-fields must
/// fit and its texts be UTF-8; those other than `SSL_VERSION` and `SSL_CN`
/// are skipped.
pub fn v2_ssl(buf: &[u8]) -> Result<Option<Ssl<'_>>, ProxyError> {
    let Some(fixed) = decode_v2_fixed(buf, usize::MAX)? else {
        return Ok(None);
    };
    let Some(header) = buf.get(..fixed.total) else {
        return Ok(None);
    };
    if fixed.command == Command::Local {
        return Ok(None);
    }
    let mut at = V2_FIXED_LEN + fixed.addresses_len;
    while at < header.len() {
        let (kind, value) = tlv_at(header, at, header.len())?;
        if kind == TLV_SSL {
            return ssl_field(header, at, value).map(Some);
        }
        at = value.end;
    }
    Ok(None)
}

/// The SSL field at `at` of `header`, its value at `value`.
fn ssl_field(header: &[u8], at: usize, value: Range<usize>) -> Result<Ssl<'_>, ProxyError> {
    let head = header[value.clone()].get(..5);
    let Some(&[client, v0, v1, v2, v3]) = head else {
        return Err(ProxyError::BadTlv { at });
    };
    let mut ssl = Ssl {
        client,
        verify: u32::from_be_bytes([v0, v1, v2, v3]),
        version: None,
        cn: None,
    };
    let mut sub = value.start + 5;
    while sub < value.end {
        let (kind, text) = tlv_at(header, sub, value.end)?;
        let text_at = |range: Range<usize>| {
            std::str::from_utf8(&header[range]).map_err(|_| ProxyError::BadTlv { at: sub })
        };
        match kind {
            SUBTYPE_SSL_VERSION => ssl.version = Some(text_at(text.clone())?),
            SUBTYPE_SSL_CN => ssl.cn = Some(text_at(text.clone())?),
            _ => {}
        }
        sub = text.end;
    }
    Ok(ssl)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn proxied(version: Version, source: &str, destination: &str) -> ProxyHeader {
        ProxyHeader {
            version,
            command: Command::Proxy,
            addresses: Some(Addresses {
                source: addr(source),
                destination: addr(destination),
            }),
        }
    }

    #[test]
    fn a_signature_is_told_from_a_client_s_own_bytes_as_soon_as_it_can_be() {
        let mut v2 = Vec::new();
        encode_v2_local(&mut v2);
        for header in [&b"PROXY TCP4 1.3.3.7 10.0.0.1 31337 80\r\n"[..], &v2[..]] {
            let signature = if header[0] == b'P' { 6 } else { 12 };
            for n in 0..signature {
                assert_eq!(has_signature(&header[..n]), None, "{n} bytes");
            }
            assert_eq!(has_signature(&header[..signature]), Some(true));
            assert_eq!(has_signature(header), Some(true));
        }
        let own: [&[u8]; 4] = [b"PING\r\n", b"\r\n\r\nhello", b"\x16\x03\x01", b"PROXY_"];
        for own in own {
            assert_eq!(has_signature(own), Some(false), "{own:?}");
        }
    }

    const NO_ADDRESS_V1: ProxyHeader = ProxyHeader {
        version: Version::V1,
        command: Command::Proxy,
        addresses: None,
    };

    /// Every strict prefix of `wire[..len]` is incomplete, and `wire` whole
    /// gives `expected`.
    fn decodes_only_whole(wire: &[u8], expected: Result<Option<(ProxyHeader, usize)>, ProxyError>) {
        let end = match &expected {
            Ok(Some((_, len))) => *len,
            _ => wire.len(),
        };
        for k in 0..end {
            assert_eq!(decode(&wire[..k]), Ok(None), "prefix of {k} bytes");
        }
        assert_eq!(decode(wire), expected);
    }

    /// The specification's example line, before an HTTP request.
    #[test]
    fn the_spec_v1_example_decodes_and_leaves_the_request() {
        let wire = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n\
                     GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n";
        let header = proxied(Version::V1, "192.168.0.1:56324", "192.168.0.11:443");
        decodes_only_whole(wire, Ok(Some((header, 47))));
        assert!(wire[47..].starts_with(b"GET / "));
        let mut out = Vec::new();
        encode_v1(
            addr("192.168.0.1:56324"),
            addr("192.168.0.11:443"),
            &mut out,
        );
        assert_eq!(out, &wire[..47]);
    }

    /// The lines the specification gives as the longest of each kind.
    #[test]
    fn the_spec_v1_longest_lines_decode() {
        let tcp4 = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
        assert_eq!(tcp4.len(), 56);
        let header = proxied(
            Version::V1,
            "255.255.255.255:65535",
            "255.255.255.255:65535",
        );
        decodes_only_whole(tcp4, Ok(Some((header, 56))));

        let ffff = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let tcp6 = format!("PROXY TCP6 {ffff} {ffff} 65535 65535\r\n");
        assert_eq!(tcp6.len(), 104);
        let full = format!("[{ffff}]:65535");
        let header = proxied(Version::V1, &full, &full);
        decodes_only_whole(tcp6.as_bytes(), Ok(Some((header, 104))));

        let short = b"PROXY UNKNOWN\r\n";
        decodes_only_whole(short, Ok(Some((NO_ADDRESS_V1, 15))));

        let worst = format!("PROXY UNKNOWN {ffff} {ffff} 65535 65535\r\n");
        assert_eq!(worst.len(), V1_MAX_LEN);
        decodes_only_whole(worst.as_bytes(), Ok(Some((NO_ADDRESS_V1, 107))));
    }

    #[test]
    fn a_v1_line_without_crlf_in_107_bytes_is_refused() {
        // One byte too many: the CR would be byte 107, the LF byte 108.
        let ffff = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        let long = format!("PROXY UNKNOWN {ffff} {ffff} 65535 655350\r\n");
        assert_eq!(long.len(), V1_MAX_LEN + 1);
        assert_eq!(decode(&long.as_bytes()[..106]), Ok(None));
        assert_eq!(decode(long.as_bytes()), Err(ProxyError::LineTooLong));
        assert_eq!(decode(&[b'P'; 200][..]), Err(ProxyError::NotProxy));
        let spaces = [b"PROXY ".as_slice(), &[b' '; 101]].concat();
        assert_eq!(decode(&spaces[..106]), Ok(None));
        assert_eq!(decode(&spaces), Err(ProxyError::LineTooLong));
    }

    #[test]
    fn a_v1_line_must_end_in_crlf_not_a_lone_cr_or_lf() {
        let lf = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n";
        assert_eq!(
            decode(lf),
            Err(ProxyError::BadByte {
                at: 30,
                byte: b'\n'
            })
        );
        let cr = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX";
        assert_eq!(decode(&cr[..31]), Ok(None), "the LF may still come");
        assert_eq!(decode(cr), Err(ProxyError::BadByte { at: 31, byte: b'X' }));
        // A byte that is not printable ASCII is refused at once.
        assert_eq!(
            decode(b"PROXY TCP4 \x001"),
            Err(ProxyError::BadByte { at: 11, byte: 0 })
        );
    }

    #[test]
    fn v1_fields_are_checked_strictly() {
        let refused = [
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
            "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
            "PROXY TCP4 ::1 ::1 1 2\r\n",
            "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
            "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY UNKNOWNX\r\n",
            "PROXY \r\n",
            "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        ];
        for line in refused {
            assert!(
                matches!(decode(line.as_bytes()), Err(ProxyError::Malformed(_))),
                "{line:?}: {:?}",
                decode(line.as_bytes())
            );
        }
        let accepted = [
            (
                "PROXY TCP4 0.0.0.0 1.2.3.4 0 65535\r\n",
                "0.0.0.0:0",
                "1.2.3.4:65535",
            ),
            (
                "PROXY TCP6 ::ffff:1.2.3.4 ::1 80 443\r\n",
                "[::ffff:1.2.3.4]:80",
                "[::1]:443",
            ),
            (
                "PROXY TCP6 FE80::1 ::1 80 443\r\n",
                "[fe80::1]:80",
                "[::1]:443",
            ),
        ];
        for (line, source, destination) in accepted {
            let header = proxied(Version::V1, source, destination);
            assert_eq!(decode(line.as_bytes()), Ok(Some((header, line.len()))));
        }
        let unknown = b"PROXY UNKNOWN whatever comes, it is ignored\r\n";
        assert_eq!(decode(unknown), Ok(Some((NO_ADDRESS_V1, unknown.len()))));
    }

    #[test]
    fn neither_signature_is_refused_at_the_first_wrong_byte() {
        assert_eq!(decode(b""), Ok(None));
        assert_eq!(decode(b"GET / HTTP/1.1\r\n"), Err(ProxyError::NotProxy));
        assert_eq!(decode(b"PROX"), Ok(None));
        assert_eq!(decode(b"PROXZ"), Err(ProxyError::NotProxy));
        assert_eq!(decode(b"PROXYTCP4"), Err(ProxyError::NotProxy));
        assert_eq!(decode(b"\r\n\r\n\0\r\nQU"), Ok(None));
        assert_eq!(decode(b"\r\n\r\n\0\r\nQUIX"), Err(ProxyError::NotProxy));
        assert_eq!(decode(b"\r\n\r\n"), Ok(None));
        assert_eq!(decode(b"\r\nGET"), Err(ProxyError::NotProxy));
    }

    /// The v2 form of the specification's example, byte by byte.
    const V2_TCP4: [u8; 28] = [
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, // signature
        0x21, // version 2, PROXY
        0x11, // AF_INET, STREAM
        0x00, 0x0C, // 12 bytes follow
        192, 168, 0, 1, // source address
        192, 168, 0, 11, // destination address
        0xDC, 0x04, // source port 56324
        0x01, 0xBB, // destination port 443
    ];

    #[test]
    fn a_v2_tcp4_header_written_out_byte_by_byte() {
        let header = proxied(Version::V2, "192.168.0.1:56324", "192.168.0.11:443");
        decodes_only_whole(&V2_TCP4, Ok(Some((header, 28))));
        let mut out = Vec::new();
        encode_v2(
            addr("192.168.0.1:56324"),
            addr("192.168.0.11:443"),
            &mut out,
        );
        assert_eq!(out, V2_TCP4);
        let mut with_data = V2_TCP4.to_vec();
        with_data.extend_from_slice(b"hello");
        assert_eq!(decode(&with_data), Ok(Some((header, 28))));
    }

    #[test]
    fn a_v2_tcp6_header_written_out_byte_by_byte() {
        let mut wire = V2_SIGNATURE.to_vec();
        wire.extend_from_slice(&[0x21, 0x21, 0x00, 36]);
        // 2001:db8::1 and ::1
        wire.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        wire.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        wire.extend_from_slice(&[0x30, 0x39, 0x00, 0x50]); // 12345, 80
        let header = proxied(Version::V2, "[2001:db8::1]:12345", "[::1]:80");
        decodes_only_whole(&wire, Ok(Some((header, 52))));
        let mut out = Vec::new();
        encode_v2(addr("[2001:db8::1]:12345"), addr("[::1]:80"), &mut out);
        assert_eq!(out, wire);
    }

    #[test]
    fn v2_local_and_unspec_carry_no_address() {
        let local = [
            0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x20, 0x00,
            0x00, 0x00,
        ];
        let expected = ProxyHeader {
            version: Version::V2,
            command: Command::Local,
            addresses: None,
        };
        decodes_only_whole(&local, Ok(Some((expected, 16))));
        let mut out = Vec::new();
        encode_v2_local(&mut out);
        assert_eq!(out, local);

        // LOCAL with an address block: skipped whole, family ignored.
        let mut wire = V2_TCP4.to_vec();
        wire[12] = 0x20;
        assert_eq!(decode(&wire), Ok(Some((expected, 28))));
        wire[13] = 0xff;
        assert_eq!(decode(&wire), Ok(Some((expected, 28))));

        // PROXY for UNSPEC, UDP and AF_UNIX: accepted, without an address.
        for (fam, len) in [(0x00, 0), (0x12, 12), (0x22, 36), (0x31, 216), (0x32, 216)] {
            let mut wire = V2_SIGNATURE.to_vec();
            wire.extend_from_slice(&[0x21, fam, 0, len]);
            wire.resize(16 + usize::from(len), 7);
            let header = ProxyHeader {
                version: Version::V2,
                command: Command::Proxy,
                addresses: None,
            };
            assert_eq!(
                decode(&wire),
                Ok(Some((header, wire.len()))),
                "family {fam:#x}"
            );
        }
    }

    #[test]
    fn v2_fixed_bytes_are_checked_as_they_arrive() {
        let mut wire = V2_TCP4;
        wire[12] = 0x11;
        assert_eq!(decode(&wire[..13]), Err(ProxyError::UnsupportedVersion(1)));
        wire[12] = 0x22;
        assert_eq!(decode(&wire[..13]), Err(ProxyError::UnsupportedCommand(2)));
        wire[12] = 0x21;
        for fam in [0x01, 0x10, 0x13, 0x41, 0xff] {
            wire[13] = fam;
            assert_eq!(decode(&wire[..14]), Err(ProxyError::UnsupportedFamily(fam)));
        }
        wire[13] = 0x11;
        wire[15] = 11;
        assert_eq!(
            decode(&wire[..16]),
            Err(ProxyError::AddressesTooShort { len: 11, need: 12 })
        );
        wire[14] = 0xff;
        assert_eq!(
            decode(&wire[..16]),
            Err(ProxyError::TooLong {
                len: 16 + 0xff0b,
                max: V2_MAX_LEN
            })
        );
        assert_eq!(
            decode_with_max(&wire[..16], 16 + 0xffff),
            Ok(None),
            "a higher cap waits for the rest"
        );
    }

    /// `V2_TCP4` with `tlvs` after the addresses.
    fn with_tlvs(tlvs: &[u8]) -> Vec<u8> {
        let mut wire = V2_TCP4.to_vec();
        wire.extend_from_slice(tlvs);
        wire[14..16].copy_from_slice(&(12 + tlvs.len() as u16).to_be_bytes());
        wire
    }

    #[test]
    fn v2_tlvs_are_skipped_but_must_fit() {
        let header = proxied(Version::V2, "192.168.0.1:56324", "192.168.0.11:443");
        // ALPN "h2", AUTHORITY "example.com", NOOP of 0 bytes.
        let tlvs = b"\x01\x00\x02h2\x02\x00\x0bexample.com\x04\x00\x00";
        let wire = with_tlvs(tlvs);
        decodes_only_whole(&wire, Ok(Some((header, wire.len()))));
        // The last one's length runs past the end.
        let wire = with_tlvs(b"\x01\x00\x02h2\x02\x00\x0cexample.com");
        assert_eq!(decode(&wire), Err(ProxyError::BadTlv { at: 33 }));
        // Two bytes left: too few for a type and a length.
        let wire = with_tlvs(b"\x04\x00");
        assert_eq!(decode(&wire), Err(ProxyError::BadTlv { at: 28 }));
    }

    #[test]
    fn crc32c_matches_its_check_value() {
        // The standard check: CRC32C of "123456789".
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn a_v2_crc32c_field_is_verified() {
        let mut wire = with_tlvs(&[TLV_CRC32C, 0, 4, 0, 0, 0, 0]);
        let crc = crc32c(&wire);
        let at = wire.len() - 4;
        wire[at..].copy_from_slice(&crc.to_be_bytes());
        let header = proxied(Version::V2, "192.168.0.1:56324", "192.168.0.11:443");
        assert_eq!(decode(&wire), Ok(Some((header, wire.len()))));
        wire[16] ^= 1;
        assert!(matches!(
            decode(&wire),
            Err(ProxyError::BadChecksum { sent, .. }) if sent == crc
        ));
        let wire = with_tlvs(&[TLV_CRC32C, 0, 3, 0, 0, 0]);
        assert_eq!(decode(&wire), Err(ProxyError::BadTlv { at: 28 }));
    }

    #[test]
    fn addresses_of_two_families_are_both_sent_as_ipv6() {
        let (v4, v6) = (addr("127.0.0.1:5000"), addr("[::1]:80"));
        let mut out = Vec::new();
        encode_v1(v4, v6, &mut out);
        assert_eq!(out, b"PROXY TCP6 ::ffff:127.0.0.1 ::1 5000 80\r\n");
        out.clear();
        encode_v2(v4, v6, &mut out);
        let expected = proxied(Version::V2, "[::ffff:127.0.0.1]:5000", "[::1]:80");
        assert_eq!(decode(&out), Ok(Some((expected, 52))));
    }

    #[test]
    fn an_ssl_field_goes_out_as_haproxy_sends_it_and_comes_back() {
        let ssl = Ssl::of_client(Some("TLSv1.3"), Some("alice"));
        let (source, destination) = (addr("192.168.0.1:56324"), addr("192.168.0.11:443"));
        let mut out = b"before".to_vec();
        encode_v2_with_ssl(source, destination, &ssl, &mut out);
        let wire = &out[6..];
        let mut expected = V2_TCP4.to_vec();
        expected[15] = 12 + 3 + 5 + 3 + 7 + 3 + 5;
        expected.extend_from_slice(&[0x20, 0, 23, 0x07, 0, 0, 0, 0]);
        expected.extend_from_slice(b"\x21\x00\x07TLSv1.3\x22\x00\x05alice");
        assert_eq!(wire, expected);
        let header = proxied(Version::V2, "192.168.0.1:56324", "192.168.0.11:443");
        decodes_only_whole(wire, Ok(Some((header, wire.len()))));
        assert_eq!(v2_ssl(wire), Ok(Some(ssl)));
        assert_eq!(v2_ssl(&wire[..wire.len() - 1]), Ok(None), "not all in");

        let anonymous = Ssl::of_client(Some("TLSv1.2"), None);
        assert_eq!((anonymous.client, anonymous.verify), (CLIENT_SSL, 1));
        let mut out = Vec::new();
        encode_v2_with_ssl(addr("[::1]:1"), addr("127.0.0.1:2"), &anonymous, &mut out);
        assert_eq!(v2_ssl(&out), Ok(Some(anonymous)));
        let header = proxied(Version::V2, "[::1]:1", "[::ffff:127.0.0.1]:2");
        assert_eq!(decode(&out), Ok(Some((header, out.len()))));
    }

    #[test]
    fn a_name_too_long_for_ssl_cn_is_left_out() {
        let long = "x".repeat(MAX_SSL_CN_LEN + 1);
        let ssl = Ssl::of_client(Some("TLSv1.3"), Some(&long));
        assert_eq!(ssl.cn, None);
        assert_eq!(ssl.client, CLIENT_SSL | CLIENT_CERT_CONN | CLIENT_CERT_SESS);
        let most = "y".repeat(MAX_SSL_CN_LEN);
        let ssl = Ssl {
            cn: Some(&most),
            ..ssl
        };
        let mut out = Vec::new();
        encode_v2_with_ssl(addr("[::1]:1"), addr("[::1]:2"), &ssl, &mut out);
        assert!(out.len() <= V2_MAX_LEN);
        assert_eq!(v2_ssl(&out), Ok(Some(ssl)));
    }

    #[test]
    fn ssl_fields_are_read_only_where_they_are_well_formed() {
        assert_eq!(v2_ssl(&V2_TCP4), Ok(None), "no fields at all");
        let other_fields = with_tlvs(b"\x01\x00\x02h2");
        assert_eq!(v2_ssl(&other_fields), Ok(None));
        // Four bytes: no room for the verify word.
        let short = with_tlvs(&[0x20, 0, 4, 1, 0, 0, 0]);
        assert_eq!(v2_ssl(&short), Err(ProxyError::BadTlv { at: 28 }));
        // A sub-field running past the SSL field's end, into the next field.
        let past = with_tlvs(b"\x20\x00\x08\x01\x00\x00\x00\x00\x21\x00\x02\x04\x00\x00");
        assert_eq!(v2_ssl(&past), Err(ProxyError::BadTlv { at: 36 }));
        let not_utf8 = with_tlvs(b"\x20\x00\x09\x05\x00\x00\x00\x00\x22\x00\x01\xff");
        assert_eq!(v2_ssl(&not_utf8), Err(ProxyError::BadTlv { at: 36 }));
        // Unknown sub-fields (a cipher, 0x23) are skipped.
        let cipher = with_tlvs(b"\x20\x00\x0b\x01\x00\x00\x00\x01\x23\x00\x03AES");
        let ssl = Ssl {
            client: CLIENT_SSL,
            verify: 1,
            version: None,
            cn: None,
        };
        assert_eq!(v2_ssl(&cipher), Ok(Some(ssl)));
        let mut local = cipher.clone();
        local[12] = 0x20;
        assert_eq!(v2_ssl(&local), Ok(None), "LOCAL: not the client's");
        assert_eq!(v2_ssl(b"PROXY UNKNOWN\r\n"), Err(ProxyError::NotProxy));
    }

    #[test]
    fn versions_parse_as_users_type_them() {
        assert_eq!("v1".parse(), Ok(Version::V1));
        assert_eq!("2".parse(), Ok(Version::V2));
        assert!("v3".parse::<Version>().is_err());
        assert_eq!(Version::V2.to_string(), "v2");
    }
}
