//! What each connection sends: a fixed pseudo-random table read from a
//! per-connection starting offset. The receiver checks every echoed byte
//! against the same table, so nothing that was sent has to be kept.

/// Length of the repeating pattern. Prime, so that no message size lines up
/// with it: a stream shifted by a few bytes never matches by accident.
const PERIOD: usize = 65_521;
/// Distance between the starting offsets of consecutive connections. Any
/// value below the prime PERIOD gives every one of PERIOD connections its own
/// start, so bytes delivered to the wrong connection do not match.
const STRIDE: u64 = 7_919;
/// Longest run checked with one comparison; also the least `window`.
const CHECK_CHUNK: usize = 64 << 10;

/// The table, long enough that any `window` bytes from any offset are contiguous.
pub(crate) struct Pattern {
    table: Vec<u8>,
    window: usize,
}

impl Pattern {
    /// `message` is the longest slice [`slice`](Self::slice) is asked for.
    /// `text` keeps to printable ASCII, so that line framings never meet a
    /// delimiter inside a payload.
    pub(crate) fn new(message: usize, text: bool) -> Pattern {
        let window = message.max(CHECK_CHUNK);
        // splitmix64: any seeded generator would do; this one is five lines.
        let mut state = 0x736f_636b_6c6f_6f70_u64;
        let period: Vec<u8> = (0..PERIOD)
            .map(|_| {
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                let byte = ((z ^ (z >> 31)) >> 56) as u8;
                if text { b'!' + byte % 94 } else { byte }
            })
            .collect();
        let table = period
            .iter()
            .cycle()
            .take(PERIOD + window)
            .copied()
            .collect();
        Pattern { table, window }
    }

    /// Bytes `pos..pos + len` of connection `conn`'s stream; `len` is at most
    /// the `message` given to [`new`](Self::new).
    pub(crate) fn slice(&self, conn: usize, pos: u64, len: usize) -> &[u8] {
        let start = ((conn as u64).wrapping_mul(STRIDE).wrapping_add(pos) % PERIOD as u64) as usize;
        &self.table[start..start + len.min(self.window)]
    }

    /// Checks `data` against `conn`'s stream from `pos`: the index of the first
    /// byte that differs, with the byte that belongs there.
    pub(crate) fn mismatch(&self, conn: usize, pos: u64, data: &[u8]) -> Option<(usize, u8)> {
        let mut checked = 0;
        for chunk in data.chunks(self.window) {
            let want = self.slice(conn, pos + checked as u64, chunk.len());
            if chunk != want {
                let (at, &byte) = want.iter().enumerate().find(|&(i, b)| chunk[i] != *b)?;
                return Some((checked + at, byte));
            }
            checked += chunk.len();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_split_of_the_stream_checks_out_and_a_flipped_byte_is_found() {
        let pattern = Pattern::new(100, false);
        let sent: Vec<u8> = (0..10)
            .flat_map(|m| pattern.slice(3, m * 100, 100).to_vec())
            .collect();
        for split in [1, 7, 100, 333] {
            assert_eq!(pattern.mismatch(3, 0, &sent[..split]), None);
            assert_eq!(pattern.mismatch(3, split as u64, &sent[split..]), None);
        }
        let mut bad = sent.clone();
        bad[517] ^= 1;
        assert_eq!(pattern.mismatch(3, 0, &bad), Some((517, sent[517])));
        // Another connection's bytes, or the same ones shifted, do not pass.
        assert!(pattern.mismatch(4, 0, &sent).is_some());
        assert!(pattern.mismatch(3, 1, &sent[..999]).is_some());
    }

    #[test]
    fn text_patterns_hold_no_line_delimiter() {
        let pattern = Pattern::new(4096, true);
        let bytes = pattern.slice(9, 12_345, 4096);
        assert!(bytes.iter().all(|b| b.is_ascii_graphic()));
    }
}
