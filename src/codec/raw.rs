//! No framing: whatever bytes are there form one frame.

use super::{ConfigError, Decoder, Encoder, Frame, FrameError};

/// Passes bytes through; a decoded frame is every buffered byte, up to `max_frame_len`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawCodec {
    max: usize,
}

impl RawCodec {
    /// Frames of at most `max_frame_len` bytes, which must not be 0.
    pub fn new(max_frame_len: usize) -> Result<Self, ConfigError> {
        if max_frame_len == 0 {
            return Err(ConfigError::ZeroMaxFrameLen);
        }
        Ok(Self { max: max_frame_len })
    }
}

impl Decoder for RawCodec {
    fn decode(&mut self, buf: &[u8]) -> Result<Option<Frame>, FrameError> {
        // Capped so that no frame exceeds max_buffered(), as for every other codec.
        let len = buf.len().min(self.max);
        Ok((len > 0).then_some(Frame {
            payload: 0..len,
            len,
        }))
    }

    fn max_buffered(&self) -> usize {
        self.max
    }
}

impl Encoder for RawCodec {
    /// Appends the bytes as they are; raw has no frame to overflow.
    fn encode(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        out.extend_from_slice(payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_is_one_frame_up_to_max() {
        let mut c = RawCodec::new(4).unwrap();
        assert_eq!(c.decode(b"").unwrap(), None);
        assert_eq!(
            c.decode(b"abc").unwrap(),
            Some(Frame {
                payload: 0..3,
                len: 3
            })
        );
        assert_eq!(
            c.decode(b"abcdef").unwrap(),
            Some(Frame {
                payload: 0..4,
                len: 4
            })
        );
        assert_eq!(RawCodec::new(0), Err(ConfigError::ZeroMaxFrameLen));
    }
}
