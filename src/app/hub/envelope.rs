//! What a federated hub publishes on the channel: a fixed header, then
//! the batch's frames encoded exactly as the hub sends them to its clients.
//!
//! The header says who sent the batch and where it stands in that
//! sender's stream, so that a receiver can skip its own batches and count
//! the frames it never saw:
//!
//! ```text
//! "SLF1"  instance u64  reactor u32  first frame's sequence u64  frames u64
//! ```
//!
//! Numbers are big-endian; the whole header is [`HEADER_LEN`] bytes. A
//! payload that does not start with it was not published by a hub.

use std::collections::HashMap;

/// The magic and version at the front of every payload.
const MAGIC: [u8; 4] = *b"SLF1";

/// Bytes before the frames.
pub const HEADER_LEN: usize = 32;

/// Where a batch comes from and where it stands in its sender's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Drawn at random when a process starts; shared by its reactors.
    pub instance: u64,
    /// The sending reactor's index within its process.
    pub reactor: u32,
    /// The sequence number of the batch's first frame: the count of frames
    /// that reactor published (or dropped) before it.
    pub first: u64,
    /// Frames in the batch.
    pub frames: u64,
}

impl Header {
    /// Appends the header to `out`; the frames go after it.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.instance.to_be_bytes());
        out.extend_from_slice(&self.reactor.to_be_bytes());
        out.extend_from_slice(&self.first.to_be_bytes());
        out.extend_from_slice(&self.frames.to_be_bytes());
    }

    /// The header at the front of `payload` and the frames after it, or
    /// `None` if `payload` does not start with one.
    pub fn decode(payload: &[u8]) -> Option<(Header, &[u8])> {
        let (head, frames) = payload.split_at_checked(HEADER_LEN)?;
        let (magic, rest) = head.split_first_chunk::<4>()?;
        if *magic != MAGIC {
            return None;
        }
        let (instance, rest) = rest.split_first_chunk::<8>()?;
        let (reactor, rest) = rest.split_first_chunk::<4>()?;
        let (first, rest) = rest.split_first_chunk::<8>()?;
        let (count, _) = rest.split_first_chunk::<8>()?;
        let header = Header {
            instance: u64::from_be_bytes(*instance),
            reactor: u32::from_be_bytes(*reactor),
            first: u64::from_be_bytes(*first),
            frames: u64::from_be_bytes(*count),
        };
        Some((header, frames))
    }
}

/// The next sequence number expected from each origin (instance,
/// reactor), to count the frames that never came.
#[derive(Debug, Default)]
pub struct Gaps {
    expected: HashMap<(u64, u32), u64>,
}

impl Gaps {
    /// Notes that the batch `header` describes came; returns how many
    /// frames of its origin were skipped before it. An origin's first batch
    /// skips none: frames from before the receiver listened are not missed.
    pub fn missed_before(&mut self, header: &Header) -> u64 {
        let origin = (header.instance, header.reactor);
        let expected = self.expected.entry(origin).or_insert(header.first);
        let missed = header.first.saturating_sub(*expected);
        *expected = header.first + header.frames;
        missed
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn decode_undoes_encode(
            instance: u64,
            reactor: u32,
            first: u64,
            frames: u64,
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let header = Header { instance, reactor, first, frames };
            let mut payload = Vec::new();
            header.encode(&mut payload);
            prop_assert_eq!(payload.len(), HEADER_LEN);
            payload.extend_from_slice(&body);
            prop_assert_eq!(Header::decode(&payload), Some((header, &body[..])));
        }

        #[test]
        fn a_payload_without_the_magic_is_refused(mut payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            if payload.starts_with(&MAGIC) {
                payload[0] ^= 0x80;
            }
            prop_assert_eq!(Header::decode(&payload), None);
        }
    }

    #[test]
    fn gaps_are_counted_per_origin_from_its_first_batch() {
        let batch = |instance, reactor, first, frames| Header {
            instance,
            reactor,
            first,
            frames,
        };
        let mut gaps = Gaps::default();
        assert_eq!(gaps.missed_before(&batch(7, 0, 40, 5)), 0, "joined late");
        assert_eq!(gaps.missed_before(&batch(7, 0, 45, 1)), 0);
        assert_eq!(gaps.missed_before(&batch(7, 1, 0, 3)), 0, "another reactor");
        assert_eq!(gaps.missed_before(&batch(7, 0, 50, 2)), 4);
        assert_eq!(
            gaps.missed_before(&batch(9, 0, 10, 1)),
            0,
            "another instance"
        );
        assert_eq!(gaps.missed_before(&batch(7, 1, 3, 1)), 0);
        assert_eq!(gaps.missed_before(&batch(7, 0, 52, 1)), 0);
    }

    #[test]
    fn a_short_header_is_refused() {
        let header = Header {
            instance: 1,
            reactor: 2,
            first: 3,
            frames: 4,
        };
        let mut payload = Vec::new();
        header.encode(&mut payload);
        for len in 0..HEADER_LEN {
            assert_eq!(Header::decode(&payload[..len]), None, "{len} bytes");
        }
    }
}
