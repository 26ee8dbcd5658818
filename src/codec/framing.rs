//! The framing a user names on the command line, and the codec built from it.

use std::fmt;
use std::str::FromStr;

use super::{
    ConfigError, Decoder, DelimitedCodec, Encoder, Endian, FixedCodec, Frame, FrameError,
    LengthCodec, RawCodec,
};

/// A framing spec: `raw`, `lines`, `crlf`, `len:u8`, `len:u16be`, `len:u16le`,
/// `len:u32be`, `len:u32le`, `len:u64be`, `len:u64le` or `fixed:N`.
/// `Display` prints the same spelling back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No framing: whatever bytes are there form one frame.
    Raw,
    /// `\n` or `\r\n` terminated, stripped; encodes with `\n`.
    Lines,
    /// `\r\n` terminated, strictly.
    Crlf,
    /// A length field of `width` bytes (1, 2, 4 or 8) counting the payload.
    Length {
        /// Bytes in the length field.
        width: usize,
        /// Byte order of the length field.
        endian: Endian,
    },
    /// Frames of exactly N bytes.
    Fixed(usize),
}

impl FromStr for Framing {
    type Err = ConfigError;

    fn from_str(spec: &str) -> Result<Self, ConfigError> {
        let length = |width, endian| Ok(Self::Length { width, endian });
        match spec {
            "raw" => Ok(Self::Raw),
            "lines" => Ok(Self::Lines),
            "crlf" => Ok(Self::Crlf),
            "len:u8" => length(1, Endian::Big),
            "len:u16be" => length(2, Endian::Big),
            "len:u16le" => length(2, Endian::Little),
            "len:u32be" => length(4, Endian::Big),
            "len:u32le" => length(4, Endian::Little),
            "len:u64be" => length(8, Endian::Big),
            "len:u64le" => length(8, Endian::Little),
            _ => match spec.strip_prefix("fixed:") {
                // Digits only: usize::from_str would also take a leading '+'.
                Some(n) if n.bytes().all(|b| b.is_ascii_digit()) => match n.parse() {
                    Ok(len) if len > 0 => Ok(Self::Fixed(len)),
                    _ => Err(ConfigError::BadFixedSize(n.to_owned())),
                },
                Some(n) => Err(ConfigError::BadFixedSize(n.to_owned())),
                None => Err(ConfigError::UnknownFraming(spec.to_owned())),
            },
        }
    }
}

impl fmt::Display for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Raw => f.write_str("raw"),
            Self::Lines => f.write_str("lines"),
            Self::Crlf => f.write_str("crlf"),
            Self::Length { width: 1, .. } => f.write_str("len:u8"),
            Self::Length { width, endian } => {
                let order = match endian {
                    Endian::Big => "be",
                    Endian::Little => "le",
                };
                write!(f, "len:u{}{order}", width * 8)
            }
            Self::Fixed(len) => write!(f, "fixed:{len}"),
        }
    }
}

/// Any of the codecs, dispatched statically.
///
/// What a program gets from a framing named at run time (`--framing
/// len:u32le`, say); a service that knows its framing at compile time can
/// hold the concrete codec instead.
///
/// ```
/// use sockloop::codec::{Codec, Decoder, Encoder, Framing, FrameError};
///
/// for spec in ["lines", "len:u32le", "fixed:5"] {
///     let mut codec = Codec::new(spec.parse::<Framing>()?, 16)?;
///     let mut wire = Vec::new();
///     codec.encode(b"hello", &mut wire)?;
///     let frame = codec.decode(&wire)?.expect("a whole frame");
///     assert_eq!((&wire[frame.payload], frame.len), (&b"hello"[..], wire.len()));
/// }
/// // 16 bytes is the most a frame may carry: a longer one is an error at
/// // its header, before its payload is buffered.
/// let mut codec = Codec::new("len:u32le".parse()?, 16)?;
/// assert_eq!(codec.decode(&[17, 0, 0, 0]), Err(FrameError::TooLong { len: 17, max: 16 }));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub enum Codec {
    /// `raw`.
    Raw(RawCodec),
    /// `len:…`.
    Length(LengthCodec),
    /// `lines` and `crlf`.
    Delimited(DelimitedCodec),
    /// `fixed:N`.
    Fixed(FixedCodec),
}

impl Codec {
    /// The codec for `framing`, accepting payloads of at most `max_frame_len`
    /// bytes (header or delimiter excluded).
    pub fn new(framing: Framing, max_frame_len: usize) -> Result<Self, ConfigError> {
        Ok(match framing {
            Framing::Raw => Self::Raw(RawCodec::new(max_frame_len)?),
            Framing::Lines => Self::Delimited(
                DelimitedCodec::lines()
                    .max_frame_len(max_frame_len)
                    .build()?,
            ),
            Framing::Crlf => Self::Delimited(
                DelimitedCodec::builder(b"\r\n")
                    .max_frame_len(max_frame_len)
                    .build()?,
            ),
            Framing::Length { width, endian } => Self::Length(
                LengthCodec::builder()
                    .width(width)
                    .endian(endian)
                    .max_frame_len(max_frame_len)
                    .build()?,
            ),
            Framing::Fixed(len) => Self::Fixed(FixedCodec::new(len, max_frame_len)?),
        })
    }
}

/// Runs `$body` with `$codec` bound to whichever codec `$self` holds.
macro_rules! each {
    ($self:expr, $codec:ident => $body:expr) => {
        match $self {
            Codec::Raw($codec) => $body,
            Codec::Length($codec) => $body,
            Codec::Delimited($codec) => $body,
            Codec::Fixed($codec) => $body,
        }
    };
}

impl Decoder for Codec {
    fn decode(&mut self, buf: &[u8]) -> Result<Option<Frame>, FrameError> {
        each!(self, c => c.decode(buf))
    }

    fn decode_eof(&mut self, buf: &[u8]) -> Result<(), FrameError> {
        each!(self, c => c.decode_eof(buf))
    }

    fn max_buffered(&self) -> usize {
        each!(self, c => c.max_buffered())
    }
}

impl Encoder for Codec {
    fn encode(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        each!(self, c => c.encode(payload, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: [&str; 11] = [
        "raw",
        "lines",
        "crlf",
        "len:u8",
        "len:u16be",
        "len:u16le",
        "len:u32be",
        "len:u32le",
        "len:u64be",
        "len:u64le",
        "fixed:16",
    ];

    #[test]
    fn every_spec_parses_prints_back_and_builds() {
        for spec in SPECS {
            let framing: Framing = spec.parse().unwrap();
            assert_eq!(framing.to_string(), spec);
            let codec = Codec::new(framing, 1024).unwrap();
            assert!(codec.max_buffered() >= 16, "{spec}");
        }
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for bad in ["", "Lines", "len:u24be", "len:u16", "raw ", "fixed"] {
            assert_eq!(
                bad.parse::<Framing>(),
                Err(ConfigError::UnknownFraming(bad.into()))
            );
        }
        for bad in ["0", "", "-1", "+3", "x", "99999999999999999999999"] {
            let spec = format!("fixed:{bad}");
            assert_eq!(
                spec.parse::<Framing>(),
                Err(ConfigError::BadFixedSize(bad.into()))
            );
        }
        let msg = "len:u3".parse::<Framing>().unwrap_err().to_string();
        assert!(msg.contains("len:u3") && msg.contains("len:u16be"), "{msg}");
    }

    #[test]
    fn codec_refuses_what_the_framing_cannot_do() {
        assert_eq!(
            Codec::new(Framing::Fixed(20), 10).unwrap_err(),
            ConfigError::BadFixedLen { len: 20, max: 10 }
        );
        assert_eq!(
            Codec::new(Framing::Lines, 0).unwrap_err(),
            ConfigError::ZeroMaxFrameLen
        );
        assert_eq!(
            Codec::new(
                Framing::Length {
                    width: 3,
                    endian: Endian::Big
                },
                10
            )
            .unwrap_err(),
            ConfigError::BadWidth(3)
        );
    }
}
