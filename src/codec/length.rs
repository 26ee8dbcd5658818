//! Length-prefixed frames: `[offset bytes][length field][payload]`.
//!
//! The payload length is the length field plus a signed adjustment (so a
//! header that counts itself uses `adjustment = -(offset + width)`). The
//! payload range excludes the header; `max_frame_len` bounds the payload and is
//! checked as soon as the header is complete, before any payload is buffered.

use super::{ConfigError, DEFAULT_MAX_FRAME_LEN, Decoder, Encoder, Frame, FrameError};

/// Byte order of the length field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    /// Most significant byte first: network byte order.
    Big,
    /// Least significant byte first.
    Little,
}

/// Decodes and encodes length-prefixed frames. Build with [`LengthCodec::builder`].
///
/// The defaults are a 4-byte big-endian length counting the payload only.
/// A protocol whose 2-byte little-endian length counts the header too, and
/// comes after a 1-byte type field:
///
/// ```
/// use sockloop::codec::{Decoder, Encoder, Endian, LengthCodec};
///
/// let mut codec = LengthCodec::builder()
///     .offset(1)       // one byte before the length field
///     .width(2)
///     .endian(Endian::Little)
///     .adjustment(-3)  // the length counts the 3 header bytes
///     .max_frame_len(1024)
///     .build()?;
/// let wire = [7, 5, 0, b'o', b'k', 9];
/// let frame = codec.decode(&wire)?.expect("a whole frame");
/// assert_eq!((&wire[frame.payload], frame.len), (&b"ok"[..], 5));
/// assert_eq!(codec.decode(&wire[5..])?, None); // a frame just begun
///
/// let mut out = Vec::new();
/// codec.encode(b"ok", &mut out)?;
/// assert_eq!(out, [0, 5, 0, b'o', b'k']); // the offset byte is written as 0
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LengthCodec {
    width: usize,
    endian: Endian,
    offset: usize,
    adjustment: i64,
    /// `max_frame_len` clamped to what the length field can express.
    max: usize,
    /// After `Ok(None)`: how many bytes the frame (or its header) needs, so that
    /// calls that only appended too few bytes return without re-reading the header.
    wanted: usize,
}

/// Configures a [`LengthCodec`]; defaults: 4-byte big-endian field, no
/// offset, no adjustment, 8 MiB max.
#[derive(Debug, Clone)]
pub struct LengthCodecBuilder {
    width: usize,
    endian: Endian,
    offset: usize,
    adjustment: i64,
    max_frame_len: usize,
}

impl LengthCodecBuilder {
    /// Width of the length field in bytes: 1, 2, 4 or 8.
    pub fn width(&mut self, width: usize) -> &mut Self {
        self.width = width;
        self
    }

    /// Byte order of the length field.
    pub fn endian(&mut self, endian: Endian) -> &mut Self {
        self.endian = endian;
        self
    }

    /// Header bytes before the length field; the encoder writes them as zeros.
    pub fn offset(&mut self, offset: usize) -> &mut Self {
        self.offset = offset;
        self
    }

    /// Added to the length field to get the payload length.
    pub fn adjustment(&mut self, adjustment: i64) -> &mut Self {
        self.adjustment = adjustment;
        self
    }

    /// The longest payload accepted (header excluded).
    pub fn max_frame_len(&mut self, max: usize) -> &mut Self {
        self.max_frame_len = max;
        self
    }

    /// Refuses a configuration under which no frame could be decoded.
    pub fn build(&self) -> Result<LengthCodec, ConfigError> {
        if !matches!(self.width, 1 | 2 | 4 | 8) {
            return Err(ConfigError::BadWidth(self.width));
        }
        if self.max_frame_len == 0 {
            return Err(ConfigError::ZeroMaxFrameLen);
        }
        let field_max = u64::MAX >> (64 - 8 * self.width);
        let adjustment = i128::from(self.adjustment);
        // Payload lengths the header can express, then intersected with 1..=max.
        let min_payload = adjustment.max(0);
        let max_payload = (i128::from(field_max) + adjustment).min(self.max_frame_len as i128);
        if max_payload < 1 || min_payload > max_payload {
            return Err(ConfigError::NoValidFrame {
                min_payload,
                max_payload,
            });
        }
        // In range: 1 <= max_payload <= max_frame_len.
        let max = max_payload as usize;
        self.offset
            .checked_add(self.width)
            .and_then(|header| header.checked_add(max))
            .ok_or(ConfigError::Overflow)?;
        Ok(LengthCodec {
            width: self.width,
            endian: self.endian,
            offset: self.offset,
            adjustment: self.adjustment,
            max,
            wanted: 0,
        })
    }
}

impl LengthCodec {
    /// A builder set to the defaults above, with [`DEFAULT_MAX_FRAME_LEN`].
    pub fn builder() -> LengthCodecBuilder {
        LengthCodecBuilder {
            width: 4,
            endian: Endian::Big,
            offset: 0,
            adjustment: 0,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }

    /// Offset plus length field.
    pub fn header_len(&self) -> usize {
        self.offset + self.width
    }

    /// The longest payload, after clamping to the length field.
    pub fn max_frame_len(&self) -> usize {
        self.max
    }

    fn read_field(&self, field: &[u8]) -> u64 {
        let mut bytes = [0u8; 8];
        match self.endian {
            Endian::Big => {
                bytes[8 - self.width..].copy_from_slice(field);
                u64::from_be_bytes(bytes)
            }
            Endian::Little => {
                bytes[..self.width].copy_from_slice(field);
                u64::from_le_bytes(bytes)
            }
        }
    }
}

impl Decoder for LengthCodec {
    fn decode(&mut self, buf: &[u8]) -> Result<Option<Frame>, FrameError> {
        if buf.len() < self.wanted {
            return Ok(None);
        }
        // Whatever happens below, the next call sees a new frame or more bytes.
        self.wanted = 0;
        let header_len = self.header_len();
        let Some(field) = buf.get(self.offset..header_len) else {
            self.wanted = header_len;
            return Ok(None);
        };
        let header = self.read_field(field);
        let payload_len = i128::from(header) + i128::from(self.adjustment);
        if payload_len < 0 {
            return Err(FrameError::NegativeLength {
                header,
                adjustment: self.adjustment,
            });
        }
        if payload_len > self.max as i128 {
            return Err(FrameError::TooLong {
                len: u64::try_from(payload_len).unwrap_or(u64::MAX),
                max: self.max,
            });
        }
        // Cannot overflow: build() checked header_len + max.
        let len = header_len + payload_len as usize;
        if buf.len() < len {
            self.wanted = len;
            return Ok(None);
        }
        Ok(Some(Frame {
            payload: header_len..len,
            len,
        }))
    }

    fn max_buffered(&self) -> usize {
        self.header_len() + self.max
    }
}

impl Encoder for LengthCodec {
    fn encode(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        if payload.len() > self.max {
            return Err(FrameError::PayloadTooLong {
                len: payload.len(),
                max: self.max,
            });
        }
        // Within 0..=field max: payload.len() <= max was clamped to field max + adjustment.
        let field = payload.len() as i128 - i128::from(self.adjustment);
        let Ok(field) = u64::try_from(field) else {
            return Err(FrameError::PayloadTooShort {
                len: payload.len(),
                min: usize::try_from(self.adjustment).unwrap_or(usize::MAX),
            });
        };
        out.reserve(self.header_len() + payload.len());
        out.resize(out.len() + self.offset, 0);
        match self.endian {
            Endian::Big => out.extend_from_slice(&field.to_be_bytes()[8 - self.width..]),
            Endian::Little => out.extend_from_slice(&field.to_le_bytes()[..self.width]),
        }
        out.extend_from_slice(payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(
        width: usize,
        endian: Endian,
        offset: usize,
        adjustment: i64,
        max: usize,
    ) -> LengthCodec {
        LengthCodec::builder()
            .width(width)
            .endian(endian)
            .offset(offset)
            .adjustment(adjustment)
            .max_frame_len(max)
            .build()
            .expect("valid config")
    }

    #[test]
    fn builder_refuses_configs_that_cannot_work() {
        let refuse = |b: &mut LengthCodecBuilder| b.build().unwrap_err();
        assert_eq!(
            refuse(LengthCodec::builder().width(3)),
            ConfigError::BadWidth(3)
        );
        assert_eq!(
            refuse(LengthCodec::builder().max_frame_len(0)),
            ConfigError::ZeroMaxFrameLen
        );
        // A u8 field minus 300 is always negative.
        assert!(matches!(
            refuse(LengthCodec::builder().width(1).adjustment(-300)),
            ConfigError::NoValidFrame { .. }
        ));
        // Every payload would be at least 100 bytes, over a max of 10.
        assert!(matches!(
            refuse(LengthCodec::builder().adjustment(100).max_frame_len(10)),
            ConfigError::NoValidFrame { .. }
        ));
        // Only empty payloads possible.
        assert!(matches!(
            refuse(LengthCodec::builder().width(1).adjustment(-255)),
            ConfigError::NoValidFrame { .. }
        ));
        assert_eq!(
            refuse(LengthCodec::builder().width(8).offset(usize::MAX - 4)),
            ConfigError::Overflow
        );
    }

    #[test]
    fn max_is_clamped_to_the_field() {
        assert_eq!(codec(1, Endian::Big, 0, 0, 1 << 20).max_frame_len(), 255);
        assert_eq!(
            codec(2, Endian::Little, 1, -3, 1 << 20).max_frame_len(),
            65535 - 3
        );
        assert_eq!(codec(8, Endian::Big, 0, 0, 77).max_frame_len(), 77);
    }

    #[test]
    fn max_accepted_max_plus_one_rejected_at_header() {
        let mut c = codec(2, Endian::Big, 0, 0, 300);
        let frame = c.decode(&[1, 44]).unwrap();
        assert_eq!(frame, None, "300 is allowed, waits for payload");
        let mut wire = vec![1, 44];
        wire.resize(302, 7);
        assert_eq!(
            c.decode(&wire).unwrap(),
            Some(Frame {
                payload: 2..302,
                len: 302
            })
        );
        assert_eq!(
            c.decode(&[1, 45]),
            Err(FrameError::TooLong { len: 301, max: 300 })
        );
    }

    #[test]
    fn adjustment_counts_header_and_negative_is_an_error() {
        // Header counts itself: offset 1 + u16 field = 3 bytes.
        let mut c = codec(2, Endian::Little, 1, -3, 100);
        assert_eq!(
            c.decode(&[9, 5, 0, b'a', b'b']).unwrap(),
            Some(Frame {
                payload: 3..5,
                len: 5
            })
        );
        assert_eq!(
            c.decode(&[9, 2, 0]),
            Err(FrameError::NegativeLength {
                header: 2,
                adjustment: -3
            })
        );
        let mut out = vec![];
        c.encode(b"ab", &mut out).unwrap();
        assert_eq!(out, [0, 5, 0, b'a', b'b']);
    }

    #[test]
    fn encode_refuses_what_the_header_cannot_say() {
        let c = codec(1, Endian::Big, 0, 0, 1000);
        let mut out = vec![42];
        assert_eq!(
            c.encode(&[0; 256], &mut out),
            Err(FrameError::PayloadTooLong { len: 256, max: 255 })
        );
        let c = codec(1, Endian::Big, 0, 4, 1000);
        assert_eq!(
            c.encode(b"ab", &mut out),
            Err(FrameError::PayloadTooShort { len: 2, min: 4 })
        );
        assert_eq!(out, [42], "out unchanged on error");
        c.encode(b"abcd", &mut out).unwrap();
        assert_eq!(out, [42, 0, b'a', b'b', b'c', b'd']);
    }

    #[test]
    fn eof_inside_a_frame_is_truncated() {
        let mut c = codec(4, Endian::Big, 0, 0, 100);
        assert_eq!(c.decode_eof(&[]), Ok(()));
        assert_eq!(
            c.decode_eof(&[0, 0]),
            Err(FrameError::Truncated { buffered: 2 })
        );
    }

    #[test]
    fn u64_field_beyond_usize_is_too_long_not_a_panic() {
        let mut c = codec(8, Endian::Big, 0, i64::MAX, usize::MAX - 8);
        assert!(matches!(
            c.decode(&[0xff; 8]),
            Err(FrameError::TooLong { len: u64::MAX, .. })
        ));
    }
}
