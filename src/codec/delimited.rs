//! Delimited frames: payload, then a delimiter byte string.
//!
//! The scan is incremental: between calls the codec remembers how far it has
//! searched, so bytes arriving in small reads are searched once (plus the
//! `delimiter.len() - 1` bytes a split delimiter may start in), never again.
//! `max_frame_len` bounds the payload, delimiter excluded; the search never
//! looks past `max_frame_len + delimiter.len()` bytes, so a peer that never
//! sends a delimiter costs at most that much memory and work.

use memchr::memmem::Finder;

use super::{ConfigError, DEFAULT_MAX_FRAME_LEN, Decoder, Encoder, Frame, FrameError};

#[derive(Debug, Clone)]
enum Search {
    Byte(u8),
    /// Boxed: a finder's precomputed tables dwarf the rest of the codec.
    Bytes(Box<Finder<'static>>),
}

/// Decodes and encodes delimited frames. Build with [`DelimitedCodec::builder`]
/// or [`DelimitedCodec::lines`].
///
/// ```
/// use sockloop::codec::{DelimitedCodec, Decoder, FrameError};
///
/// // Lines: `\n` or `\r\n`, stripped from the payload.
/// let mut lines = DelimitedCodec::lines().max_frame_len(8).build()?;
/// let input = b"GET\r\nHEAD\nPO";
/// let first = lines.decode(input)?.unwrap();
/// assert_eq!((&input[first.payload], first.len), (&b"GET"[..], 5));
/// let second = lines.decode(&input[5..])?.unwrap();
/// assert_eq!(&input[5..][second.payload], b"HEAD");
/// assert_eq!(lines.decode(&input[10..])?, None); // "PO" waits for its end
/// // More of it arrives, with no end within 8 bytes: refused before it
/// // fills memory.
/// let more = b"POST /a/long/path";
/// assert!(matches!(lines.decode(more), Err(FrameError::TooLong { .. })));
///
/// // Any delimiter, here a NUL, kept in the payload.
/// let mut nul = DelimitedCodec::builder(b"\0").keep_delimiter(true).build()?;
/// let frame = nul.decode(b"a\0b")?.unwrap();
/// assert_eq!(frame.payload, 0..2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct DelimitedCodec {
    search: Search,
    /// Lines mode: the delimiter is `\n`, and a `\r` before it is part of the terminator.
    lines: bool,
    keep_delimiter: bool,
    max: usize,
    /// How many leading bytes of the buffer are known to hold no delimiter start.
    scanned: usize,
}

/// Configures a [`DelimitedCodec`]; defaults: strip the delimiter, 8 MiB max.
#[derive(Debug, Clone)]
pub struct DelimitedCodecBuilder {
    delimiter: Vec<u8>,
    lines: bool,
    keep_delimiter: bool,
    max_frame_len: usize,
}

impl DelimitedCodecBuilder {
    /// Keep the delimiter (lines mode: `\n` or `\r\n`) in the payload range.
    pub fn keep_delimiter(&mut self, keep: bool) -> &mut Self {
        self.keep_delimiter = keep;
        self
    }

    /// The longest payload accepted, delimiter excluded.
    pub fn max_frame_len(&mut self, max: usize) -> &mut Self {
        self.max_frame_len = max;
        self
    }

    /// The codec, or why these settings cannot make one (an empty delimiter,
    /// a zero `max_frame_len`).
    pub fn build(&self) -> Result<DelimitedCodec, ConfigError> {
        let search = match self.delimiter.as_slice() {
            [] => return Err(ConfigError::EmptyDelimiter),
            [byte] => Search::Byte(*byte),
            bytes => Search::Bytes(Box::new(Finder::new(bytes).into_owned())),
        };
        if self.max_frame_len == 0 {
            return Err(ConfigError::ZeroMaxFrameLen);
        }
        let codec = DelimitedCodec {
            search,
            lines: self.lines,
            keep_delimiter: self.keep_delimiter,
            max: self.max_frame_len,
            scanned: 0,
        };
        self.max_frame_len
            .checked_add(codec.terminator_max())
            .ok_or(ConfigError::Overflow)?;
        Ok(codec)
    }
}

impl DelimitedCodec {
    /// Frames ended by `delimiter` (non-empty, any bytes).
    pub fn builder(delimiter: &[u8]) -> DelimitedCodecBuilder {
        DelimitedCodecBuilder {
            delimiter: delimiter.to_vec(),
            lines: false,
            keep_delimiter: false,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }

    /// Lines ended by `\n` or `\r\n`; encodes with `\n`.
    pub fn lines() -> DelimitedCodecBuilder {
        DelimitedCodecBuilder {
            lines: true,
            ..Self::builder(b"\n")
        }
    }

    fn delimiter(&self) -> &[u8] {
        match &self.search {
            Search::Byte(byte) => std::slice::from_ref(byte),
            Search::Bytes(finder) => finder.needle(),
        }
    }

    /// The longest terminator a frame can end with.
    fn terminator_max(&self) -> usize {
        if self.lines {
            2
        } else {
            self.delimiter().len()
        }
    }

    fn find(&self, haystack: &[u8]) -> Option<usize> {
        match &self.search {
            Search::Byte(byte) => memchr::memchr(*byte, haystack),
            Search::Bytes(finder) => finder.find(haystack),
        }
    }

    /// Where `payload` followed by the delimiter would first match the
    /// delimiter, if that is before the appended one.
    fn delimiter_in(&self, payload: &[u8]) -> Option<usize> {
        if let Some(at) = self.find(payload) {
            return Some(at);
        }
        // A match straddling the end: payload ends with delim[..k] and the
        // appended delimiter starts with delim[k..].
        let delimiter = self.delimiter();
        let d = delimiter.len();
        (1..d.min(payload.len() + 1))
            .rev()
            .find(|&k| payload.ends_with(&delimiter[..k]) && delimiter[k..] == delimiter[..d - k])
            .map(|k| payload.len() - k)
    }
}

impl Decoder for DelimitedCodec {
    fn decode(&mut self, buf: &[u8]) -> Result<Option<Frame>, FrameError> {
        let delimiter_len = self.delimiter().len();
        // Any acceptable frame ends within this window; looking further is wasted work.
        let window = &buf[..buf.len().min(self.max + self.terminator_max())];
        let from = self.scanned.min(window.len());
        match self.find(&window[from..]) {
            Some(found) => {
                self.scanned = 0;
                let at = from + found;
                let strip_cr = self.lines && buf[..at].ends_with(b"\r");
                let payload_end = at - usize::from(strip_cr);
                if payload_end > self.max {
                    return Err(FrameError::TooLong {
                        len: payload_end as u64,
                        max: self.max,
                    });
                }
                let len = at + delimiter_len;
                let end = if self.keep_delimiter {
                    len
                } else {
                    payload_end
                };
                Ok(Some(Frame {
                    payload: 0..end,
                    len,
                }))
            }
            None if window.len() == self.max + self.terminator_max() => {
                self.scanned = 0;
                Err(FrameError::TooLong {
                    len: self.max as u64 + 1,
                    max: self.max,
                })
            }
            None => {
                // A delimiter split across reads may start in the last len-1 bytes.
                self.scanned = window.len().saturating_sub(delimiter_len - 1);
                Ok(None)
            }
        }
    }

    fn max_buffered(&self) -> usize {
        self.max + self.terminator_max()
    }
}

impl Encoder for DelimitedCodec {
    fn encode(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        if payload.len() > self.max {
            return Err(FrameError::PayloadTooLong {
                len: payload.len(),
                max: self.max,
            });
        }
        if let Some(at) = self.delimiter_in(payload) {
            return Err(FrameError::ContainsDelimiter { at });
        }
        // A line that itself ends in `\r` would lose it to the decoder's
        // stripping; `\r\n` is a valid terminator that keeps it.
        let terminator = if self.lines && payload.ends_with(b"\r") {
            b"\r\n"
        } else {
            self.delimiter()
        };
        out.reserve(payload.len() + terminator.len());
        out.extend_from_slice(payload);
        out.extend_from_slice(terminator);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(codec: &mut DelimitedCodec, chunks: &[&[u8]]) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(frame) = codec.decode(&buf)? {
                out.push(buf[frame.payload].to_vec());
                buf.drain(..frame.len);
            }
        }
        codec.decode_eof(&buf)?;
        Ok(out)
    }

    #[test]
    fn builder_refuses_empty_delimiter_and_zero_max() {
        assert_eq!(
            DelimitedCodec::builder(b"").build().unwrap_err(),
            ConfigError::EmptyDelimiter
        );
        assert_eq!(
            DelimitedCodec::lines()
                .max_frame_len(0)
                .build()
                .unwrap_err(),
            ConfigError::ZeroMaxFrameLen
        );
        assert_eq!(
            DelimitedCodec::builder(b"ab")
                .max_frame_len(usize::MAX - 1)
                .build()
                .unwrap_err(),
            ConfigError::Overflow
        );
    }

    #[test]
    fn multi_byte_delimiter_split_across_chunks() {
        let mut c = DelimitedCodec::builder(b"<END>").build().unwrap();
        let got = frames(&mut c, &[b"hello<E", b"N", b"D><END", b">x<", b"END>"]).unwrap();
        assert_eq!(got, [&b"hello"[..], b"", b"x"]);
    }

    #[test]
    fn scan_resumes_where_it_stopped() {
        let mut c = DelimitedCodec::builder(b"\r\n").build().unwrap();
        assert_eq!(c.decode(b"abcdef\r").unwrap(), None);
        assert_eq!(c.scanned, 6, "only the trailing \\r can start a delimiter");
        assert_eq!(
            c.decode(b"abcdef\r\n").unwrap(),
            Some(Frame {
                payload: 0..6,
                len: 8
            })
        );
        assert_eq!(c.scanned, 0);
    }

    #[test]
    fn lines_cr_lf_split_between_cr_and_lf() {
        let mut c = DelimitedCodec::lines().build().unwrap();
        let got = frames(&mut c, &[b"one\r", b"\ntwo\n", b"\r", b"\n", b"a\rb\r\n"]).unwrap();
        assert_eq!(got, [&b"one"[..], b"two", b"", b"a\rb"]);
    }

    #[test]
    fn crlf_strictly_needs_cr_lf() {
        let mut c = DelimitedCodec::builder(b"\r\n").build().unwrap();
        assert_eq!(frames(&mut c, &[b"a\nb\r\n"]).unwrap(), [b"a\nb"]);
    }

    #[test]
    fn keep_delimiter_keeps_it_in_the_payload() {
        let mut c = DelimitedCodec::lines()
            .keep_delimiter(true)
            .build()
            .unwrap();
        assert_eq!(
            frames(&mut c, &[b"a\r\nb\n"]).unwrap(),
            [&b"a\r\n"[..], b"b\n"]
        );
        let mut c = DelimitedCodec::builder(b"\0")
            .keep_delimiter(true)
            .build()
            .unwrap();
        assert_eq!(frames(&mut c, &[b"a\0"]).unwrap(), [b"a\0"]);
    }

    #[test]
    fn max_accepted_max_plus_one_rejected() {
        let mut c = DelimitedCodec::builder(b"--")
            .max_frame_len(4)
            .build()
            .unwrap();
        assert_eq!(frames(&mut c, &[b"abcd--"]).unwrap(), [b"abcd"]);
        // max + delimiter - 1 bytes without a delimiter may still end in one; one more cannot.
        assert_eq!(c.decode(b"abcd-").unwrap(), None);
        assert_eq!(
            c.decode(b"abcd--").unwrap(),
            Some(Frame {
                payload: 0..4,
                len: 6
            })
        );
        assert_eq!(c.decode(b"abcde").unwrap(), None);
        assert_eq!(
            c.decode(b"abcde-"),
            Err(FrameError::TooLong { len: 5, max: 4 })
        );
    }

    #[test]
    fn lines_max_counts_the_line_without_terminator() {
        let mut c = DelimitedCodec::lines().max_frame_len(3).build().unwrap();
        assert_eq!(
            frames(&mut c, &[b"abc\r\nabc\n"]).unwrap(),
            [b"abc", b"abc"]
        );
        assert_eq!(c.decode(b"abcd"), Ok(None));
        assert_eq!(
            c.decode(b"abcd\n"),
            Err(FrameError::TooLong { len: 4, max: 3 })
        );
        assert_eq!(
            c.decode(b"abcde"),
            Err(FrameError::TooLong { len: 4, max: 3 })
        );
    }

    #[test]
    fn eof_with_a_partial_frame_is_truncated() {
        let mut c = DelimitedCodec::lines().build().unwrap();
        assert_eq!(
            frames(&mut c, &[b"a\nb"]),
            Err(FrameError::Truncated { buffered: 1 })
        );
    }

    #[test]
    fn encode_refuses_payloads_that_would_not_come_back() {
        let c = DelimitedCodec::builder(b"aa")
            .max_frame_len(8)
            .build()
            .unwrap();
        let mut out = b"x".to_vec();
        assert_eq!(
            c.encode(b"baab", &mut out),
            Err(FrameError::ContainsDelimiter { at: 1 })
        );
        // "ba" + "aa" would decode as "b".
        assert_eq!(
            c.encode(b"ba", &mut out),
            Err(FrameError::ContainsDelimiter { at: 1 })
        );
        assert_eq!(
            c.encode(&[b'b'; 9], &mut out),
            Err(FrameError::PayloadTooLong { len: 9, max: 8 })
        );
        assert_eq!(out, b"x", "out unchanged on error");
        c.encode(b"ab", &mut out).unwrap();
        assert_eq!(out, b"xabaa");

        let lines = DelimitedCodec::lines().build().unwrap();
        assert_eq!(
            lines.encode(b"a\nb", &mut out),
            Err(FrameError::ContainsDelimiter { at: 1 })
        );
        out.clear();
        lines.encode(b"a\r", &mut out).unwrap();
        assert_eq!(
            out, b"a\r\r\n",
            "a line ending in \\r survives the decoder's stripping"
        );
    }
}
