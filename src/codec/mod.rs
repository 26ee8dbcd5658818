//! Sans-IO framing: bytes in, frames out.
//!
//! A decoder looks at the unconsumed front of a connection's input buffer and
//! says where the next frame lies; it never copies, allocates or owns bytes, so
//! the reactor can slice frames straight out of its buffer. Every decoder bounds
//! what a peer can make us buffer: [`Decoder::max_buffered`].
//!
//! [`proxy`] reads and writes the PROXY protocol header (HAProxy's, v1 and
//! v2) that a proxy puts in front of a connection's own bytes; [`http`]
//! reads the head of an HTTP/1.x request, for the metrics responder;
//! [`cidr`] reads blocks of addresses (`10.0.0.0/8`), for lists of trusted
//! sources. [`x509`] reads the names in a certificate, for TLS.
//! [`client_hello`] reads the server name of a TLS ClientHello, for a relay
//! that routes by it without terminating TLS.
//! [`resp`] writes Redis commands and reads its replies and pushed
//! messages (RESP2), for hubs federated through Redis pub/sub.
//!
//! Build a codec from a CLI spec:
//!
//! ```
//! use sockloop::codec::{Codec, Decoder, Encoder, Framing};
//!
//! let framing: Framing = "len:u16be".parse().unwrap();
//! let mut codec = Codec::new(framing, 1024).unwrap();
//! let mut wire = Vec::new();
//! codec.encode(b"hi", &mut wire).unwrap();
//! let frame = codec.decode(&wire).unwrap().unwrap();
//! assert_eq!(&wire[frame.payload], b"hi");
//! assert_eq!(frame.len, 4);
//! ```

pub mod cidr;
pub mod client_hello;
mod delimited;
mod fixed;
mod framing;
pub mod fuzz;
pub mod http;
mod length;
pub mod proxy;
mod raw;
pub mod resp;
pub mod x509;

use std::fmt;
use std::ops::Range;

pub use delimited::{DelimitedCodec, DelimitedCodecBuilder};
pub use fixed::FixedCodec;
pub use framing::{Codec, Framing};
pub use length::{Endian, LengthCodec, LengthCodecBuilder};
pub use raw::RawCodec;

/// The default bound on a frame's payload: 8 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 8 * 1024 * 1024;

/// A frame found at the front of the buffer given to [`Decoder::decode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Where the payload lies in the buffer passed to `decode` (header /
    /// delimiter excluded unless configured to keep it).
    pub payload: Range<usize>,
    /// How many bytes of the buffer this frame occupies in total; the caller
    /// consumes exactly that many from the front before the next call.
    pub len: usize,
}

/// What is wrong with a peer's bytes, or with a payload given to an encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The payload is longer than `max_frame_len`. For a delimited frame whose
    /// delimiter has not been seen yet, `len` is a lower bound (`max + 1`).
    TooLong {
        /// The payload's length, or its lower bound.
        len: u64,
        /// The longest payload accepted.
        max: usize,
    },
    /// A length header plus the configured adjustment is below zero.
    NegativeLength {
        /// The length field's value.
        header: u64,
        /// The configured adjustment.
        adjustment: i64,
    },
    /// The stream ended with a partial frame of `buffered` bytes.
    Truncated {
        /// Bytes of the partial frame.
        buffered: usize,
    },
    /// Encode: the payload is longer than the header or `max_frame_len` allows.
    PayloadTooLong {
        /// The payload's length.
        len: usize,
        /// The longest payload a frame can carry.
        max: usize,
    },
    /// Encode: a positive length adjustment means every payload is at least `min` bytes.
    PayloadTooShort {
        /// The payload's length.
        len: usize,
        /// The shortest payload a frame can carry.
        min: usize,
    },
    /// Encode: the delimiter occurs in the payload (or straddles its end), so
    /// the frame would be cut short when decoded.
    ContainsDelimiter {
        /// Where in the payload the delimiter starts.
        at: usize,
    },
    /// Encode: a fixed-size codec got a payload of another size.
    WrongSize {
        /// The payload's length.
        len: usize,
        /// The codec's frame size.
        expected: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong { len, max } => {
                write!(f, "frame of {len} bytes exceeds the maximum of {max} bytes")
            }
            Self::NegativeLength { header, adjustment } => write!(
                f,
                "length header {header} with adjustment {adjustment} gives a negative frame length"
            ),
            Self::Truncated { buffered } => {
                write!(
                    f,
                    "stream ended inside a frame ({buffered} bytes left over)"
                )
            }
            Self::PayloadTooLong { len, max } => {
                write!(
                    f,
                    "payload of {len} bytes is longer than the {max} bytes a frame can carry"
                )
            }
            Self::PayloadTooShort { len, min } => {
                write!(
                    f,
                    "payload of {len} bytes is shorter than the {min} bytes the length adjustment requires"
                )
            }
            Self::ContainsDelimiter { at } => {
                write!(f, "payload contains the frame delimiter at byte {at}")
            }
            Self::WrongSize { len, expected } => {
                write!(
                    f,
                    "payload of {len} bytes does not fit fixed frames of {expected} bytes"
                )
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// A codec configuration that cannot work, or a framing spec that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The framing spec is none of the accepted forms.
    UnknownFraming(String),
    /// `fixed:N` with N not an integer ≥ 1.
    BadFixedSize(String),
    /// A length field must be 1, 2, 4 or 8 bytes wide.
    BadWidth(usize),
    /// `max_frame_len` of 0 (or clamped to 0 by the header width and adjustment).
    ZeroMaxFrameLen,
    /// The header and adjustment admit no frame within `max_frame_len`.
    NoValidFrame {
        /// The shortest payload the adjustment allows.
        min_payload: i128,
        /// The longest payload the header, adjustment and `max_frame_len` allow.
        max_payload: i128,
    },
    /// Header plus maximum payload does not fit in `usize`.
    Overflow,
    /// A delimiter must have at least one byte.
    EmptyDelimiter,
    /// A fixed frame size of 0, or larger than `max_frame_len`.
    BadFixedLen {
        /// The frame size asked for.
        len: usize,
        /// The `max_frame_len` it must not exceed.
        max: usize,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownFraming(spec) => write!(
                f,
                "unknown framing `{spec}`: expected raw, lines, crlf, len:u8, len:u16be, \
                 len:u16le, len:u32be, len:u32le, len:u64be, len:u64le or fixed:N"
            ),
            Self::BadFixedSize(n) => {
                write!(
                    f,
                    "bad size in `fixed:{n}`: expected an integer of at least 1"
                )
            }
            Self::BadWidth(w) => write!(f, "length field of {w} bytes: must be 1, 2, 4 or 8"),
            Self::ZeroMaxFrameLen => write!(f, "max frame length must be at least 1"),
            Self::NoValidFrame {
                min_payload,
                max_payload,
            } => write!(
                f,
                "length adjustment leaves no valid frame (payloads from {min_payload} to {max_payload} bytes)"
            ),
            Self::Overflow => write!(f, "header plus max frame length overflows usize"),
            Self::EmptyDelimiter => write!(f, "delimiter must not be empty"),
            Self::BadFixedLen { len, max } => write!(
                f,
                "fixed frame size {len} must be between 1 and the max frame length {max}"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Turns the front of a byte stream into frames, one call at a time.
///
/// A socket returns whatever bytes have arrived: two frames in one read, or
/// one frame in three. The caller keeps the unconsumed bytes, appends each
/// read, and calls `decode` until it says `Ok(None)` (call again with more);
/// this is what a [`Service`](crate::reactor::Service)'s `on_data` does
/// with its `input`, and its return value is the `used` below:
///
/// ```
/// use sockloop::codec::{Decoder, LengthCodec};
///
/// let mut codec = LengthCodec::builder().width(2).build()?; // u16 big-endian length
/// let mut input = Vec::new();
/// let mut frames = Vec::new();
/// // Two frames, "abc" and "hi", as the socket handed them over: in three reads.
/// for read in [&[0, 3, b'a'][..], &[b'b', b'c', 0], &[2, b'h', b'i']] {
///     input.extend_from_slice(read);
///     let mut used = 0;
///     while let Some(frame) = codec.decode(&input[used..])? {
///         frames.push(input[used..][frame.payload].to_vec());
///         used += frame.len;
///     }
///     input.drain(..used); // keep only the partial frame
/// }
/// assert_eq!(frames, [b"abc".to_vec(), b"hi".to_vec()]);
/// assert!(codec.decode_eof(&input).is_ok()); // nothing left half-done
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Decoder {
    /// `buf` starts at the first unconsumed byte. After `Ok(Some(f))` the caller
    /// drops `f.len` bytes from the front and calls again with what follows;
    /// after `Ok(None)` the caller calls again later with the same unconsumed
    /// bytes plus more appended, so a decoder may remember how far it scanned.
    /// After `Err` the stream is unusable: close the connection.
    fn decode(&mut self, buf: &[u8]) -> Result<Option<Frame>, FrameError>;

    /// End of stream: `buf` is whatever stayed unconsumed. `Ok(())` if it is
    /// empty, `Err(FrameError::Truncated { .. })` if a partial frame is left.
    fn decode_eof(&mut self, buf: &[u8]) -> Result<(), FrameError> {
        if buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated {
                buffered: buf.len(),
            })
        }
    }

    /// The most bytes this decoder ever needs buffered for one frame, header or
    /// delimiter included. While `decode` returns `Ok(None)`, fewer than this
    /// many bytes are buffered.
    fn max_buffered(&self) -> usize;
}

/// Turns payloads into wire bytes.
///
/// ```
/// use sockloop::codec::{DelimitedCodec, Encoder, FrameError};
///
/// let lines = DelimitedCodec::lines().build()?;
/// let mut out = Vec::new();
/// lines.encode(b"first", &mut out)?;
/// lines.encode(b"second", &mut out)?;
/// assert_eq!(out, b"first\nsecond\n");
/// // A payload the framing cannot carry is refused whole, never cut.
/// assert_eq!(lines.encode(b"two\nlines", &mut out), Err(FrameError::ContainsDelimiter { at: 3 }));
/// assert_eq!(out.len(), 13);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Encoder {
    /// Appends header + payload (+ delimiter) to `out`. A payload the framing
    /// cannot carry is an error, never truncated; on error `out` is unchanged.
    fn encode(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError>;
}
