//! RESP, the protocol Redis speaks (version 2, what Redis 7 uses unless a
//! client asks for version 3 with `HELLO 3`).
//!
//! Every value starts with a type byte and a line ending in CRLF: `+` a
//! simple string, `-` an error, `:` an integer, `$` a bulk string whose
//! length comes first (so its payload may hold any bytes), `*` an array of
//! that many further values. A client sends each command as an array of
//! bulk strings; the server answers with one value per command, and a
//! subscribed connection also receives pushed messages as arrays.
//!
//! `PUBLISH chan hi` on the wire, and the message a subscriber of `chan`
//! then receives:
//!
//! ```text
//! *3\r\n$7\r\nPUBLISH\r\n$4\r\nchan\r\n$2\r\nhi\r\n
//! *3\r\n$7\r\nmessage\r\n$4\r\nchan\r\n$2\r\nhi\r\n
//! ```
//!
//! Sans-IO like the rest of `codec`: [`encode_command`] appends a command
//! to a buffer, [`decode`] looks at the front of a connection's input and
//! says `Ok(None)` (not complete yet: call again with more), the value and
//! how many bytes it took, or a [`RespError`] (close the connection).
//! What a server can make us buffer is bounded: a bulk string by
//! [`MAX_BULK`], an array by [`MAX_ELEMENTS`] and [`MAX_DEPTH`], a header
//! line (`:`, `$`, `*`) by 32 bytes and a simple string or error by 64 KiB
//! before their CRLF.
//!
//! ```
//! use sockloop::codec::resp::{self, Reply};
//!
//! let mut out = Vec::new();
//! resp::encode_command(&mut out, &[b"SUBSCRIBE", b"chan"]);
//! assert_eq!(out, b"*2\r\n$9\r\nSUBSCRIBE\r\n$4\r\nchan\r\n");
//!
//! let wire = b"*3\r\n$9\r\nsubscribe\r\n$4\r\nchan\r\n:1\r\n+OK";
//! assert_eq!(resp::decode(&wire[..20]), Ok(None));
//! let (reply, len) = resp::decode(wire).unwrap().unwrap();
//! let confirmation = [Reply::Bulk(b"subscribe"), Reply::Bulk(b"chan"), Reply::Integer(1)];
//! assert_eq!((reply, len), (Reply::Array(confirmation.to_vec()), 33));
//! ```

use std::fmt;

/// The longest bulk string accepted: 64 MiB.
pub const MAX_BULK: usize = 64 * 1024 * 1024;

/// How deeply arrays may nest: an array inside an array is depth 2.
pub const MAX_DEPTH: usize = 8;

/// The most elements one array may announce.
pub const MAX_ELEMENTS: usize = 1024 * 1024;

/// The longest header line (`:`, `$`, `*` and its number), CRLF excluded:
/// room for any i64 with plenty to spare, and a bound on buffering a peer
/// that never sends the CRLF.
const MAX_HEADER_LINE: usize = 32;

/// The longest simple string or error line, CRLF excluded. Redis's error
/// messages quote the command, so they can be far longer than a header.
const MAX_TEXT_LINE: usize = 64 * 1024;

/// A reply or pushed message decoded from the front of a buffer. Borrows
/// the buffer: bulk payloads are not copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<'a> {
    /// `+OK`: a simple string, without CR or LF.
    Simple(&'a [u8]),
    /// `-ERR …`: an error, its text after the `-`.
    Error(&'a [u8]),
    /// `:3`: a signed 64-bit integer.
    Integer(i64),
    /// `$5\r\nhello`: a bulk string, any bytes.
    Bulk(&'a [u8]),
    /// `$-1` or `*-1`: no value (a missing key, a timed-out pop).
    Nil,
    /// `*3 …`: an array of values, which may be arrays themselves.
    Array(Vec<Reply<'a>>),
}

/// Why bytes are not RESP, and at which byte of the input given to
/// [`decode`] that showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RespError {
    at: usize,
    problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Problem {
    UnknownType(u8),
    Resp3Type(u8),
    LineTooLong { max: usize },
    CrWithoutLf,
    LfWithoutCr,
    BadInteger,
    NegativeLength(i64),
    BulkTooLong(i64),
    TooManyElements(i64),
    TooDeep,
    BulkWithoutCrlf,
}

impl RespError {
    /// Where in the input the wrong byte or line starts.
    pub fn offset(&self) -> usize {
        self.at
    }
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problem {
            Problem::UnknownType(b) => write!(f, "unknown RESP type byte 0x{b:02x}"),
            Problem::Resp3Type(b) => write!(
                f,
                "RESP3 type byte {:?} (0x{b:02x}): only RESP2 is spoken",
                char::from(b)
            ),
            Problem::LineTooLong { max } => {
                write!(f, "line longer than {max} bytes without CRLF")
            }
            Problem::CrWithoutLf => write!(f, "CR not followed by LF"),
            Problem::LfWithoutCr => write!(f, "LF without CR"),
            Problem::BadInteger => write!(f, "not a decimal integer that fits in i64"),
            Problem::NegativeLength(n) => write!(f, "bad length {n}: only -1 may be negative"),
            Problem::BulkTooLong(n) => {
                write!(
                    f,
                    "bulk string of {n} bytes exceeds the bound of {MAX_BULK}"
                )
            }
            Problem::TooManyElements(n) => write!(
                f,
                "array of {n} elements exceeds the bound of {MAX_ELEMENTS}"
            ),
            Problem::TooDeep => write!(f, "arrays nested deeper than {MAX_DEPTH}"),
            Problem::BulkWithoutCrlf => write!(f, "bulk string not followed by CRLF"),
        }?;
        write!(f, " at byte {}", self.at)
    }
}

impl std::error::Error for RespError {}

/// Appends one command — a RESP array of bulk strings — to `out`, e.g.
/// `encode_command(&mut out, &[b"PUBLISH", b"chan", payload])`.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    push_header(out, b'*', args.len());
    for arg in args {
        push_bulk(out, arg);
    }
}

/// Appends `reply` as RESP2 to `out`, the inverse of [`decode`] (a `Nil`
/// is written `$-1`). A server's side, for tests and fakes; a `Simple` or
/// `Error` holding CR or LF is written as given and will not decode.
pub fn encode_reply(out: &mut Vec<u8>, reply: &Reply<'_>) {
    match reply {
        Reply::Simple(text) => push_line(out, b'+', text),
        Reply::Error(text) => push_line(out, b'-', text),
        Reply::Integer(n) => push_line(out, b':', n.to_string().as_bytes()),
        Reply::Bulk(payload) => push_bulk(out, payload),
        Reply::Nil => out.extend_from_slice(b"$-1\r\n"),
        Reply::Array(elements) => {
            push_header(out, b'*', elements.len());
            for element in elements {
                encode_reply(out, element);
            }
        }
    }
}

fn push_line(out: &mut Vec<u8>, kind: u8, text: &[u8]) {
    out.push(kind);
    out.extend_from_slice(text);
    out.extend_from_slice(b"\r\n");
}

fn push_bulk(out: &mut Vec<u8>, payload: &[u8]) {
    push_header(out, b'$', payload.len());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// `*N\r\n` or `$N\r\n`, without going through a formatter: this is on
/// the path of every published frame.
fn push_header(out: &mut Vec<u8>, kind: u8, n: usize) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut rest = n;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    push_line(out, kind, &digits[start..]);
}

/// Decodes one reply from the front of `input`: `Ok(Some((reply, len)))`
/// with the bytes it took, `Ok(None)` if `input` holds only part of one
/// (mid-line, mid-bulk or mid-array), `Err` if the bytes cannot be RESP or
/// break a bound ([`MAX_BULK`], [`MAX_DEPTH`], [`MAX_ELEMENTS`], a line
/// without CRLF). An error shows as soon as its bytes are in.
///
/// It keeps no state: each call rescans from the start of `input`, which
/// is cheap since bulk lengths let it skip payloads, and allocates only for
/// the elements of arrays it has actually read, never for an announced
/// length. Bytes after the reply are left alone.
pub fn decode(input: &[u8]) -> Result<Option<(Reply<'_>, usize)>, RespError> {
    decode_at(input, 0, 1)
}

/// Decodes the value starting at `at`, inside `depth - 1` arrays; on
/// success returns it and the offset just past it.
fn decode_at(
    input: &[u8],
    at: usize,
    depth: usize,
) -> Result<Option<(Reply<'_>, usize)>, RespError> {
    let Some(&kind) = input.get(at) else {
        return Ok(None);
    };
    let max_line = match kind {
        b'+' | b'-' => MAX_TEXT_LINE,
        b':' | b'$' | b'*' => MAX_HEADER_LINE,
        b'_' | b',' | b'#' | b'(' | b'!' | b'=' | b'%' | b'~' | b'>' | b'|' => {
            return Err(fail(at, Problem::Resp3Type(kind)));
        }
        _ => return Err(fail(at, Problem::UnknownType(kind))),
    };
    let Some(line_end) = find_line_end(input, at, max_line)? else {
        return Ok(None);
    };
    let text = &input[at + 1..line_end];
    let next = line_end + 2;
    match kind {
        b'+' => Ok(Some((Reply::Simple(text), next))),
        b'-' => Ok(Some((Reply::Error(text), next))),
        b':' => Ok(Some((Reply::Integer(parse_integer(text, at)?), next))),
        b'$' => decode_bulk(input, at, parse_integer(text, at)?, next),
        _ => decode_array(input, at, parse_integer(text, at)?, next, depth),
    }
}

/// Where the CR of the line starting at `at` lies, if it is in yet. The
/// line (type byte included) may be at most `max` bytes; a CR or LF inside
/// it is an error.
fn find_line_end(input: &[u8], at: usize, max: usize) -> Result<Option<usize>, RespError> {
    let window = &input[at..input.len().min(at + max + 1)];
    let Some(i) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return if window.len() > max {
            Err(fail(at, Problem::LineTooLong { max }))
        } else {
            Ok(None)
        };
    };
    let cr = at + i;
    if input[cr] == b'\n' {
        return Err(fail(cr, Problem::LfWithoutCr));
    }
    match input.get(cr + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some(cr)),
        Some(_) => Err(fail(cr, Problem::CrWithoutLf)),
    }
}

/// An optional `-` and one or more decimal digits, within i64.
fn parse_integer(text: &[u8], at: usize) -> Result<i64, RespError> {
    let bad = || fail(at, Problem::BadInteger);
    let (negative, digits) = match text.split_first() {
        Some((b'-', digits)) => (true, digits),
        _ => (false, text),
    };
    if digits.is_empty() {
        return Err(bad());
    }
    digits.iter().try_fold(0i64, |n, &d| {
        if !d.is_ascii_digit() {
            return Err(bad());
        }
        let digit = i64::from(d - b'0');
        let shifted = n.checked_mul(10).ok_or_else(bad)?;
        // Accumulating negatively reaches i64::MIN, which has no positive twin.
        if negative {
            shifted.checked_sub(digit)
        } else {
            shifted.checked_add(digit)
        }
        .ok_or_else(bad)
    })
}

/// A length of -1 means nil; other negative ones are errors.
fn checked_length(
    len: i64,
    at: usize,
    max: usize,
    too_long: fn(i64) -> Problem,
) -> Result<Option<usize>, RespError> {
    match usize::try_from(len) {
        Ok(n) if n <= max => Ok(Some(n)),
        Ok(_) => Err(fail(at, too_long(len))),
        Err(_) if len == -1 => Ok(None),
        Err(_) => Err(fail(at, Problem::NegativeLength(len))),
    }
}

fn decode_bulk(
    input: &[u8],
    at: usize,
    len: i64,
    start: usize,
) -> Result<Option<(Reply<'_>, usize)>, RespError> {
    let Some(len) = checked_length(len, at, MAX_BULK, Problem::BulkTooLong)? else {
        return Ok(Some((Reply::Nil, start)));
    };
    let end = start + len;
    for (i, want) in [b'\r', b'\n'].into_iter().enumerate() {
        match input.get(end + i) {
            None => return Ok(None),
            Some(&b) if b != want => return Err(fail(end, Problem::BulkWithoutCrlf)),
            Some(_) => {}
        }
    }
    Ok(Some((Reply::Bulk(&input[start..end]), end + 2)))
}

fn decode_array(
    input: &[u8],
    at: usize,
    count: i64,
    start: usize,
    depth: usize,
) -> Result<Option<(Reply<'_>, usize)>, RespError> {
    let Some(count) = checked_length(count, at, MAX_ELEMENTS, Problem::TooManyElements)? else {
        return Ok(Some((Reply::Nil, start)));
    };
    if depth > MAX_DEPTH {
        return Err(fail(at, Problem::TooDeep));
    }
    // Grows as elements arrive: the announced count is only a claim.
    let mut elements = Vec::new();
    let mut next = start;
    for _ in 0..count {
        let Some((element, after)) = decode_at(input, next, depth + 1)? else {
            return Ok(None);
        };
        elements.push(element);
        next = after;
    }
    Ok(Some((Reply::Array(elements), next)))
}

fn fail(at: usize, problem: Problem) -> RespError {
    RespError { at, problem }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(wire: &[u8]) -> Reply<'_> {
        let (reply, len) = decode(wire).unwrap().unwrap();
        assert_eq!(len, wire.len(), "{wire:?}");
        reply
    }

    fn error(wire: &[u8]) -> String {
        decode(wire).unwrap_err().to_string()
    }

    #[test]
    fn command_is_an_array_of_bulks() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"PUBLISH", b"chan", b"", b"a\r\nb"]);
        assert_eq!(
            out,
            b"*4\r\n$7\r\nPUBLISH\r\n$4\r\nchan\r\n$0\r\n\r\n$4\r\na\r\nb\r\n"
        );
        let args = [&b"PUBLISH"[..], b"chan", b"", b"a\r\nb"].map(Reply::Bulk);
        assert_eq!(decoded(&out), Reply::Array(args.to_vec()));
    }

    #[test]
    fn scalars_decode() {
        assert_eq!(decoded(b"+OK\r\n"), Reply::Simple(b"OK"));
        assert_eq!(decoded(b"-ERR no\r\n"), Reply::Error(b"ERR no"));
        assert_eq!(decoded(b":-42\r\n"), Reply::Integer(-42));
        assert_eq!(decoded(b"$0\r\n\r\n"), Reply::Bulk(b""));
        assert_eq!(decoded(b"$-1\r\n"), Reply::Nil);
        assert_eq!(decoded(b"*-1\r\n"), Reply::Nil);
        assert_eq!(decoded(b"*0\r\n"), Reply::Array(vec![]));
    }

    #[test]
    fn integers_at_the_edges_of_i64() {
        assert_eq!(
            decoded(b":9223372036854775807\r\n"),
            Reply::Integer(i64::MAX)
        );
        assert_eq!(
            decoded(b":-9223372036854775808\r\n"),
            Reply::Integer(i64::MIN)
        );
        assert!(error(b":9223372036854775808\r\n").contains("i64"));
        assert!(error(b":-9223372036854775809\r\n").contains("i64"));
        for bad in [&b":\r\n"[..], b":-\r\n", b":+1\r\n", b":1 \r\n", b"$x\r\n"] {
            assert!(error(bad).contains("integer"), "{bad:?}");
        }
    }

    #[test]
    fn pushed_message_decodes_after_a_confirmation() {
        let wire = b"*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$3\r\nhey\r\n";
        let (_, len) = decode(wire).unwrap().unwrap();
        let message = [&b"message"[..], b"c", b"hey"].map(Reply::Bulk);
        assert_eq!(decoded(&wire[len..]), Reply::Array(message.to_vec()));
    }

    #[test]
    fn every_strict_prefix_is_incomplete() {
        let wire = b"*2\r\n*2\r\n:1\r\n$-1\r\n$5\r\nhello\r\n";
        for k in 0..wire.len() {
            assert_eq!(decode(&wire[..k]), Ok(None), "prefix of {k}");
        }
        let (_, len) = decode(wire).unwrap().unwrap();
        assert_eq!(len, wire.len());
    }

    #[test]
    fn huge_array_header_reserves_nothing_and_waits() {
        let wire = b"*1000000\r\n:1\r\n:2\r\n";
        assert_eq!(decode(wire), Ok(None));
        assert!(error(b"*1048577\r\n").contains("1048577 elements"));
    }

    #[test]
    fn bounds_are_errors_naming_what_broke() {
        assert!(error(b"$67108865\r\n").contains("bulk string of 67108865 bytes"));
        assert!(error(b"$-2\r\n").contains("bad length -2"));
        assert!(error(b"*-5\r\n").contains("bad length -5"));
        assert!(error(b"?x\r\n").contains("unknown RESP type byte 0x3f at byte 0"));
        assert!(error(b">3\r\n").contains("RESP3"));
        assert!(error(b"$3\r\nabcd\r\n").contains("not followed by CRLF at byte 7"));
        assert!(error(b"+OK\rX").contains("CR not followed by LF"));
        assert!(error(b"+OK\n").contains("LF without CR"));
    }

    #[test]
    fn a_header_line_without_crlf_is_bounded() {
        let mut wire = b"$".to_vec();
        wire.resize(MAX_HEADER_LINE, b'1');
        assert_eq!(decode(&wire), Ok(None));
        wire.push(b'1');
        assert!(error(&wire).contains("longer than 32 bytes"));
        let long_error = [&b"-"[..], &[b'e'; 200], b"\r\n"].concat();
        assert!(matches!(decoded(&long_error), Reply::Error(text) if text.len() == 200));
    }

    #[test]
    fn nesting_is_bounded() {
        let nested = |depth: usize| [b"*1\r\n".repeat(depth), b":1\r\n".to_vec()].concat();
        assert!(decode(&nested(MAX_DEPTH)).unwrap().is_some());
        assert!(error(&nested(MAX_DEPTH + 1)).contains("deeper than 8"));
    }

    #[test]
    fn encode_reply_round_trips() {
        let tree = Reply::Array(vec![
            Reply::Simple(b"OK"),
            Reply::Error(b"ERR x"),
            Reply::Integer(i64::MIN),
            Reply::Nil,
            Reply::Array(vec![Reply::Bulk(b"\r\n\0")]),
        ]);
        let mut wire = Vec::new();
        encode_reply(&mut wire, &tree);
        assert_eq!(decoded(&wire), tree);
    }
}
