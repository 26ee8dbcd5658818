//! Fixed-size frames: every frame is exactly N bytes, all payload.

use super::{ConfigError, Decoder, Encoder, Frame, FrameError};

/// Decodes and encodes frames of exactly `len` bytes.
///
/// ```
/// use sockloop::codec::{Decoder, FixedCodec};
///
/// let mut codec = FixedCodec::new(4, 1024)?;
/// let input = b"abcdefg";
/// let frame = codec.decode(input)?.unwrap();
/// assert_eq!(&input[frame.payload], b"abcd");
/// assert_eq!(codec.decode(&input[4..])?, None); // 3 of 4 bytes
/// assert!(codec.decode_eof(&input[4..]).is_err()); // and the stream ended there
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedCodec {
    len: usize,
}

impl FixedCodec {
    /// Frames of `len` bytes, `1 <= len <= max_frame_len`.
    pub fn new(len: usize, max_frame_len: usize) -> Result<Self, ConfigError> {
        if len == 0 || len > max_frame_len {
            return Err(ConfigError::BadFixedLen {
                len,
                max: max_frame_len,
            });
        }
        Ok(Self { len })
    }
}

impl Decoder for FixedCodec {
    fn decode(&mut self, buf: &[u8]) -> Result<Option<Frame>, FrameError> {
        Ok((buf.len() >= self.len).then_some(Frame {
            payload: 0..self.len,
            len: self.len,
        }))
    }

    fn max_buffered(&self) -> usize {
        self.len
    }
}

impl Encoder for FixedCodec {
    fn encode(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        if payload.len() != self.len {
            return Err(FrameError::WrongSize {
                len: payload.len(),
                expected: self.len,
            });
        }
        out.extend_from_slice(payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_zero_and_over_max() {
        assert_eq!(
            FixedCodec::new(0, 10),
            Err(ConfigError::BadFixedLen { len: 0, max: 10 })
        );
        assert_eq!(
            FixedCodec::new(11, 10),
            Err(ConfigError::BadFixedLen { len: 11, max: 10 })
        );
        assert!(FixedCodec::new(10, 10).is_ok());
    }

    #[test]
    fn decodes_whole_frames_and_reports_leftovers() {
        let mut c = FixedCodec::new(3, 10).unwrap();
        assert_eq!(c.decode(b"ab").unwrap(), None);
        assert_eq!(
            c.decode(b"abcd").unwrap(),
            Some(Frame {
                payload: 0..3,
                len: 3
            })
        );
        assert_eq!(
            c.decode_eof(b"d"),
            Err(FrameError::Truncated { buffered: 1 })
        );
    }

    #[test]
    fn encode_needs_exact_size() {
        let c = FixedCodec::new(3, 10).unwrap();
        let mut out = vec![];
        assert_eq!(
            c.encode(b"ab", &mut out),
            Err(FrameError::WrongSize {
                len: 2,
                expected: 3
            })
        );
        assert!(out.is_empty());
        c.encode(b"abc", &mut out).unwrap();
        assert_eq!(out, b"abc");
    }
}
