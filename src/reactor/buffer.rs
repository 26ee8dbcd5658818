//! Bytes in memory: a connection's buffer, and the arena every read lands in.

use std::ops::Range;

/// The shared landing zone for reads, two read chunks long. Reads go one
/// after another, so echoes held until the batch of events ends can be sent
/// from where they were read; a connection copies out only what its service
/// leaves unconsumed.
pub(crate) struct Arena {
    pub(crate) bytes: Vec<u8>,
    /// How much of `bytes` this batch keeps.
    pub(crate) used: usize,
}

impl Arena {
    pub(crate) fn new(chunk: usize) -> Arena {
        Arena {
            bytes: vec![0; 2 * chunk.max(1)],
            used: 0,
        }
    }

    /// Where a read of `chunk` bytes goes, if it fits after what this batch keeps.
    pub(crate) fn room(&self, chunk: usize) -> Option<Range<usize>> {
        (self.bytes.len() - self.used >= chunk).then_some(self.used..self.used + chunk)
    }
}

/// A connection's byte buffer: a `Vec` read from the front without shifting
/// on every consume, and freed whole once empty, so an idle connection holds
/// no buffer memory at all.
#[derive(Default)]
pub(crate) struct Buffer {
    data: Vec<u8>,
    head: usize,
}

impl Buffer {
    pub(crate) fn len(&self) -> usize {
        self.data.len() - self.head
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.data[self.head..]
    }

    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        self.compact();
        self.data.extend_from_slice(bytes);
    }

    /// The underlying vector, for an encoder to append to.
    pub(crate) fn tail_mut(&mut self) -> &mut Vec<u8> {
        self.compact();
        &mut self.data
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.head += n.min(self.len());
        if self.is_empty() {
            self.release();
        }
    }

    pub(crate) fn release(&mut self) {
        *self = Buffer::default();
    }

    /// Moves the live bytes to the front once the consumed prefix is at least
    /// as long as they are, so each byte is moved at most once on average.
    fn compact(&mut self) {
        if self.head > 0 && self.head >= self.len() {
            self.data.drain(..self.head);
            self.head = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consume_and_compact_keep_order() {
        let mut buf = Buffer::default();
        buf.extend(b"hello world");
        buf.consume(6);
        assert_eq!(buf.as_slice(), b"world");
        buf.extend(b"!");
        assert_eq!(buf.as_slice(), b"world!");
        buf.tail_mut().extend_from_slice(b"?");
        assert_eq!(buf.as_slice(), b"world!?");
        buf.consume(100);
        assert!(buf.is_empty());
        assert_eq!(
            buf.data.capacity(),
            0,
            "an empty buffer gives its memory back"
        );
    }
}
