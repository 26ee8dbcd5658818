//! The head of an HTTP/1.x request: its request line and header lines, up
//! to the empty line that ends them. Enough HTTP for the metrics responder.
//!
//! Sans-IO like the rest of `codec`: [`decode_request_head`] is given every
//! byte received so far and says `Ok(None)` (not complete yet: call again
//! with more), the request line and how many bytes the head took, or a
//! typed [`HeadError`]. The bound is on the head's length in the bytes
//! given, however they arrived: a head too long is refused whether it came
//! in one read or in many, and as soon as enough bytes are in to know, so a
//! caller never buffers more than the bound while it waits. Lines may end in
//! CRLF or, as some clients send, a bare LF.
//!
//! ```
//! use sockloop::codec::http::{HeadError, decode_request_head};
//!
//! let wire = b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\nrest";
//! assert_eq!(decode_request_head(&wire[..20], 1024), Ok(None));
//! let head = decode_request_head(wire, 1024).unwrap().unwrap();
//! assert_eq!((head.method, head.path(), head.len), (&b"GET"[..], &b"/metrics"[..], 38));
//! assert_eq!(decode_request_head(wire, 32), Err(HeadError::TooLarge));
//! ```

/// A whole request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead<'a> {
    /// The method, such as `GET`.
    pub method: &'a [u8],
    /// The request target as sent: a path, maybe with a query.
    pub target: &'a [u8],
    /// `HTTP/1.` and a minor version.
    pub version: &'a [u8],
    /// Bytes the head took, its empty line included: what follows is a body
    /// or another request.
    pub len: usize,
}

impl RequestHead<'_> {
    /// The target without its query.
    pub fn path(&self) -> &[u8] {
        self.target.split(|&b| b == b'?').next().unwrap_or_default()
    }
}

/// Why a request head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// No end of the head within the bound: `431 Request Header Fields Too Large`.
    TooLarge,
    /// The request line is not `METHOD TARGET HTTP/1.x`: `400 Bad Request`.
    BadRequestLine,
}

/// Reads the request head at the front of `buf`, which holds every byte
/// received so far; `max_len` bounds the head, its empty line included.
pub fn decode_request_head(
    buf: &[u8],
    max_len: usize,
) -> Result<Option<RequestHead<'_>>, HeadError> {
    let Some(len) = head_len(&buf[..buf.len().min(max_len)]) else {
        // An end still to come would put the head past the bound.
        return if buf.len() >= max_len {
            Err(HeadError::TooLarge)
        } else {
            Ok(None)
        };
    };
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut words = line.split(|&b| b == b' ');
    match (words.next(), words.next(), words.next(), words.next()) {
        (Some(method), Some(target), Some(version), None)
            if !method.is_empty() && !target.is_empty() && version.starts_with(b"HTTP/1.") =>
        {
            Ok(Some(RequestHead {
                method,
                target,
                version,
                len,
            }))
        }
        _ => Err(HeadError::BadRequestLine),
    }
}

/// Where the head ends in `buf`: just past its first empty line, if any.
fn head_len(buf: &[u8]) -> Option<usize> {
    memchr::memchr_iter(b'\n', buf).find_map(|i| match &buf[i + 1..] {
        [b'\n', ..] => Some(i + 2),
        [b'\r', b'\n', ..] => Some(i + 3),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(buf: &[u8]) -> Result<Option<RequestHead<'_>>, HeadError> {
        decode_request_head(buf, 64)
    }

    #[test]
    fn a_head_is_whole_at_its_empty_line_with_crlf_or_bare_lf() {
        assert_eq!(decode(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), Ok(None));
        let head = decode(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nbody").unwrap();
        let head = head.unwrap();
        assert_eq!(head.len, 34);
        assert_eq!(
            (head.method, head.target, head.version),
            (&b"GET"[..], &b"/metrics"[..], &b"HTTP/1.1"[..])
        );
        let bare = decode(b"HEAD /m?x=1 HTTP/1.0\n\n").unwrap().unwrap();
        assert_eq!((bare.path(), bare.len), (&b"/m"[..], 22));
        // A line ending in LF then one in CRLF: still an empty line.
        assert_eq!(decode(b"GET / HTTP/1.1\n\r\n").unwrap().unwrap().len, 17);
    }

    #[test]
    fn a_request_line_that_is_not_http_1_is_refused() {
        for bad in [
            &b"hello\r\n\r\n"[..],
            b"GET /metrics SPDY/3\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1 x\r\n\r\n",
            b"\r\n\r\n",
        ] {
            assert_eq!(decode(bad), Err(HeadError::BadRequestLine), "{bad:?}");
        }
    }

    /// The bound counts the bytes of the head, not those of one read: a
    /// head just over it is refused even when it arrives whole.
    #[test]
    fn the_bound_is_on_the_head_however_it_arrived() {
        let fits = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(41));
        assert_eq!(fits.len(), 64);
        assert_eq!(decode(fits.as_bytes()).unwrap().unwrap().len, 64);
        let over = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(42));
        assert_eq!(decode(over.as_bytes()), Err(HeadError::TooLarge));
        // Unfinished: refused once the bound is reached, not before.
        assert_eq!(decode(&over.as_bytes()[..63]), Ok(None));
        assert_eq!(decode(&over.as_bytes()[..64]), Err(HeadError::TooLarge));
    }

    /// What is decided on some bytes stays decided as more arrive.
    #[test]
    fn more_bytes_never_change_an_answer() {
        let wire = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\nGET", "a".repeat(20));
        let whole = decode(wire.as_bytes());
        let mut decided = false;
        for end in 0..=wire.len() {
            match decode(&wire.as_bytes()[..end]) {
                Ok(None) => assert!(!decided, "undecided again at {end}"),
                answer => {
                    decided = true;
                    assert_eq!(answer, whole, "at {end}");
                }
            }
        }
        let long = "a".repeat(200);
        for end in 64..=long.len() {
            assert_eq!(decode(&long.as_bytes()[..end]), Err(HeadError::TooLarge));
        }
    }
}
