//! Fuzz bodies, shared by the cargo-fuzz targets in `fuzz/` (nightly) and by
//! `tests/suite/fuzz_corpus.rs` (stable replay of the corpus), and the reactor-style
//! driver the property tests use. Each function panics when an invariant breaks.
//!
//! A fuzz input is a few config bytes (codec shape, max frame length, chunking)
//! followed by the byte stream a peer would send.

use super::{Decoder, DelimitedCodec, Encoder, Endian, FixedCodec, FrameError, LengthCodec};

/// The frames a stream decoded to, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feed {
    /// Each decoded frame's payload, in order.
    pub frames: Vec<Vec<u8>>,
    /// `decode_eof`'s result, or the first decode error.
    pub end: Result<(), FrameError>,
}

/// Feeds `stream` to `decoder` the way the reactor does: append a chunk to the
/// unconsumed bytes, decode until `Ok(None)`, drop each frame's `len` bytes.
/// Chunk sizes come from `chunks` (0 counts as 1); when it runs out, the rest
/// is one chunk.
///
/// Asserts that every frame lies inside the buffer, consumes at least one byte
/// and at most `max_buffered()`, and that `Ok(None)` leaves fewer than
/// `max_buffered()` bytes buffered — so a peer can make us hold at most that
/// plus one read.
pub fn feed<D: Decoder>(
    decoder: &mut D,
    stream: &[u8],
    chunks: impl IntoIterator<Item = usize>,
) -> Feed {
    let bound = decoder.max_buffered();
    let mut chunks = chunks.into_iter();
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let n = chunks.next().unwrap_or(rest.len()).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&buf) {
                Ok(Some(frame)) => {
                    let range = &frame.payload;
                    assert!(
                        range.start <= range.end && range.end <= frame.len,
                        "payload {range:?} outside frame of {} bytes",
                        frame.len
                    );
                    assert!(frame.len >= 1, "empty frame would loop forever");
                    assert!(frame.len <= buf.len(), "frame longer than the buffer");
                    assert!(frame.len <= bound, "frame longer than max_buffered {bound}");
                    frames.push(buf[frame.payload].to_vec());
                    buf.drain(..frame.len);
                }
                Ok(None) => break,
                Err(end) => {
                    return Feed {
                        frames,
                        end: Err(end),
                    };
                }
            }
        }
        assert!(
            buf.len() < bound,
            "{} bytes buffered waiting for a frame, max_buffered {bound}",
            buf.len()
        );
    }
    let end = decoder.decode_eof(&buf);
    Feed { frames, end }
}

/// Pseudo-random chunk sizes in `1..=max_chunk`, reproducible from `seed`.
pub fn chunk_sizes(seed: u8, max_chunk: usize) -> impl Iterator<Item = usize> {
    let mut state = u64::from(seed);
    std::iter::repeat_with(move || {
        // A 64-bit LCG (Knuth's MMIX constants); the high bits are good enough here.
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        1 + (state >> 33) as usize % max_chunk.max(1)
    })
}

/// Checks `codec` on `stream`: chunked and whole-buffer decoding agree, and,
/// if `round_trips`, each decoded payload re-encodes to a frame that decodes
/// back to it.
fn check<C: Decoder + Encoder + Clone>(
    codec: &C,
    stream: &[u8],
    seed: u8,
    max_chunk: usize,
    round_trips: bool,
) {
    let chunked = feed(&mut codec.clone(), stream, chunk_sizes(seed, max_chunk));
    let whole = feed(&mut codec.clone(), stream, None);
    assert_eq!(chunked, whole, "chunking changed the outcome");
    if !round_trips {
        return;
    }
    for payload in chunked.frames {
        let mut wire = Vec::new();
        if let Err(e) = codec.encode(&payload, &mut wire) {
            panic!("decoded payload {payload:?} does not re-encode: {e}");
        }
        let again = feed(&mut codec.clone(), &wire, None);
        assert_eq!(again.frames, [payload], "re-encoded frame {wire:?}");
        assert_eq!(again.end, Ok(()));
    }
}

/// Config bytes: shape (width, endian, offset), adjustment (i8), max (u16be,
/// plus one), max chunk, chunk seed.
pub fn length(data: &[u8]) {
    let Some(([shape, adjustment, max_hi, max_lo, max_chunk, seed], stream)) =
        data.split_first_chunk()
    else {
        return;
    };
    let endian = if shape & 4 == 0 {
        Endian::Big
    } else {
        Endian::Little
    };
    let built = LengthCodec::builder()
        .width([1, 2, 4, 8][usize::from(shape & 3)])
        .endian(endian)
        .offset(usize::from((shape >> 3) & 3))
        .adjustment(i64::from(*adjustment as i8))
        .max_frame_len(usize::from(u16::from_be_bytes([*max_hi, *max_lo])) + 1)
        .build();
    // Refusals are the builder's job, tested on their own.
    if let Ok(codec) = built {
        check(&codec, stream, *seed, usize::from(*max_chunk) + 1, true);
    }
}

/// Config bytes: shape (delimiter length 1–4, lines mode, keep delimiter),
/// four delimiter bytes, max (u16be, plus one), max chunk, chunk seed.
pub fn delimited(data: &[u8]) {
    let Some(([shape, d0, d1, d2, d3, max_hi, max_lo, max_chunk, seed], stream)) =
        data.split_first_chunk()
    else {
        return;
    };
    let delimiter = [*d0, *d1, *d2, *d3];
    let mut builder = if shape & 4 == 0 {
        DelimitedCodec::builder(&delimiter[..=usize::from(shape & 3)])
    } else {
        DelimitedCodec::lines()
    };
    let keep = shape & 8 != 0;
    let built = builder
        .keep_delimiter(keep)
        .max_frame_len(usize::from(u16::from_be_bytes([*max_hi, *max_lo])) + 1)
        .build();
    let codec = built.unwrap_or_else(|e| panic!("a non-empty delimiter builds: {e}"));
    // A kept delimiter is part of the payload, which then cannot be encoded.
    check(&codec, stream, *seed, usize::from(*max_chunk) + 1, !keep);
}

/// Config bytes: frame size (u16be, low 12 bits, plus one), max chunk, chunk seed.
pub fn fixed(data: &[u8]) {
    let Some(([len_hi, len_lo, max_chunk, seed], stream)) = data.split_first_chunk() else {
        return;
    };
    let len = usize::from(u16::from_be_bytes([*len_hi, *len_lo]) & 0x0fff) + 1;
    let codec = FixedCodec::new(len, len).unwrap_or_else(|e| panic!("1..=4096 builds: {e}"));
    check(&codec, stream, *seed, usize::from(*max_chunk) + 1, true);
}

/// What `decode` decides on `data`: the shortest prefix it does not call
/// incomplete, and its answer there, or `None` if even the whole input is
/// incomplete. Asserts that it decides within `cap` bytes and, since the
/// decoders keep no state, that more bytes behind the decision (the next
/// eight prefixes and the whole input) change nothing.
fn decided_once<'a, T, E>(
    data: &'a [u8],
    cap: usize,
    decode: impl Fn(&'a [u8]) -> Result<Option<T>, E>,
) -> Option<(usize, Result<Option<T>, E>)>
where
    T: PartialEq + std::fmt::Debug,
    E: PartialEq + std::fmt::Debug,
{
    let (decided, first) = (0..=data.len()).find_map(|k| match decode(&data[..k]) {
        Ok(None) => {
            assert!(k < cap, "{k} bytes buffered undecided, cap {cap}");
            None
        }
        decided => Some((k, decided)),
    })?;
    for k in (decided + 1..=data.len()).take(8).chain([data.len()]) {
        assert_eq!(decode(&data[..k]), first, "prefix of {k} bytes");
    }
    Some((decided, first))
}

/// The whole input is what a peer sent first on a connection that must
/// start with a PROXY header. Checks that [`decode`](super::proxy::decode)
/// decides once and for all: `Ok(None)` for every prefix up to some length
/// (with fewer bytes than the cap of its version), then one and the same
/// result for every longer prefix; that a header it accepts ends exactly
/// there; and that it encodes back to a header that decodes to the same
/// version and addresses.
pub fn proxy(data: &[u8]) {
    use super::proxy::{self, V1_MAX_LEN, V2_MAX_LEN, Version};

    let cap = if data.first() == Some(&b'P') {
        V1_MAX_LEN
    } else {
        V2_MAX_LEN
    };
    let Some((decided, Ok(Some((header, len))))) = decided_once(data, cap, proxy::decode) else {
        return;
    };
    assert_eq!(len, decided, "a header ends where it was decided");
    let mut wire = Vec::new();
    proxy::encode(header.version, header.addresses, &mut wire);
    let again = proxy::decode(&wire);
    let Ok(Some((back, back_len))) = again else {
        panic!("{header:?} re-encoded as {wire:?} decodes to {again:?}");
    };
    assert_eq!(back_len, wire.len());
    assert_eq!(
        (back.version, back.addresses),
        (header.version, header.addresses)
    );
    if header.version == Version::V2 && header.addresses.is_none() {
        assert_eq!(back.command, proxy::Command::Local);
    }
}

/// The whole input is what a TLS client sent first. Checks that
/// [`decode`](super::client_hello::decode) decides once and for all, as
/// [`proxy`] checks its decoder: `Ok(None)` for every prefix up to some
/// length (always fewer bytes than the cap), then one and the same result
/// for every longer prefix; that a hello it accepts ends where its last
/// record does, exactly there; and that its server name, written into a
/// hello of its own (in one record and in records of 7 bytes), reads back
/// the same.
pub fn client_hello(data: &[u8]) {
    use super::client_hello::{self, DEFAULT_MAX_LEN};

    let Some((decided, Ok(Some(hello)))) =
        decided_once(data, DEFAULT_MAX_LEN, client_hello::decode)
    else {
        return;
    };
    assert_eq!(hello.len, decided, "a hello ends where it was decided");
    for record_len in [16384, 7] {
        let mut wire = Vec::new();
        client_hello::encode(hello.server_name.as_deref(), &[], record_len, &mut wire);
        let again = client_hello::decode(&wire);
        assert_eq!(
            again.map(|h| h.and_then(|h| h.server_name)),
            Ok(hello.server_name.clone()),
            "{hello:?} re-encoded as {wire:?}"
        );
    }
}

/// The whole input is what a Redis server sent. Checks that
/// [`decode`](super::resp::decode) decides once and for all, as [`proxy`]
/// checks its decoder: `Ok(None)` for every prefix up to some length, then
/// one and the same result for every longer prefix; that a reply it
/// accepts ends exactly there, within the input, and re-encodes to bytes
/// that decode to the same reply; and that the input, cut at its zero
/// bytes, is a command whose encoding decodes back to its arguments.
pub fn resp(data: &[u8]) {
    use super::resp::{self, Reply};

    let args: Vec<&[u8]> = data.split(|&b| b == 0).collect();
    let mut command = Vec::new();
    resp::encode_command(&mut command, &args);
    let bulks = args.iter().map(|arg| Reply::Bulk(arg)).collect();
    assert_eq!(
        resp::decode(&command),
        Ok(Some((Reply::Array(bulks), command.len())))
    );

    // No cap: a bulk string may keep a decoder waiting up to MAX_BULK.
    let Some((decided, Ok(Some((reply, len))))) = decided_once(data, usize::MAX, resp::decode)
    else {
        return;
    };
    assert_eq!(len, decided, "a reply ends where it was decided");
    let mut wire = Vec::new();
    resp::encode_reply(&mut wire, &reply);
    assert_eq!(
        resp::decode(&wire),
        Ok(Some((reply.clone(), wire.len()))),
        "{reply:?} re-encoded as {wire:?}"
    );
}
