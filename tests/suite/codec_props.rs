//! Property tests: every codec, fed the way the reactor feeds it (append a read,
//! decode until `None`, consume `len`), gives back exactly the frames that were
//! encoded, however the stream is split; and no input makes a decoder panic or
//! hold more than its bound. The same for an HTTP request head.

use proptest::prelude::*;
use proptest::sample::select;
use sockloop::codec::fuzz::{Feed, feed};
use sockloop::codec::http::decode_request_head;
use sockloop::codec::{
    Codec, Decoder, DelimitedCodec, Encoder, Endian, FixedCodec, FrameError, Framing, LengthCodec,
    RawCodec,
};

/// A codec under test, with what the test needs to know about it.
#[derive(Debug, Clone)]
struct Config {
    codec: Codec,
    /// The delimiter is kept in the payload.
    keep: bool,
    /// An upper bound on `max_buffered()`: max frame plus the largest header or delimiter.
    bound: usize,
}

fn length_parts() -> impl Strategy<Value = (usize, Endian, usize, i64, usize)> {
    let endian = prop_oneof![Just(Endian::Big), Just(Endian::Little)];
    (
        select(vec![1usize, 2, 4, 8]),
        endian,
        0usize..4,
        0u8..3,
        -3i64..=3,
        1usize..400,
    )
        .prop_map(|(width, endian, offset, kind, small, max)| {
            let adjustment = match kind {
                0 => 0,
                // The length field counts the whole header too.
                1 => -((offset + width) as i64),
                _ => small,
            };
            (width, endian, offset, adjustment, max)
        })
}

fn build_length(
    (width, endian, offset, adjustment, max): (usize, Endian, usize, i64, usize),
) -> Result<LengthCodec, sockloop::codec::ConfigError> {
    LengthCodec::builder()
        .width(width)
        .endian(endian)
        .offset(offset)
        .adjustment(adjustment)
        .max_frame_len(max)
        .build()
}

fn length_config() -> impl Strategy<Value = Config> {
    length_parts().prop_filter_map("config refused", |parts| {
        let codec = build_length(parts).ok()?;
        Some(Config {
            codec: Codec::Length(codec),
            keep: false,
            bound: parts.4 + parts.2 + parts.0,
        })
    })
}

const DELIMITERS: [&[u8]; 8] = [
    b"\n", b"\r\n", b"\0", b"ab", b"aa", b"aab", b"abab", b"--END--",
];

fn delimited_config() -> impl Strategy<Value = Config> {
    let delimiter = prop_oneof![select(DELIMITERS.to_vec()).prop_map(Some), Just(None)];
    (delimiter, any::<bool>(), 1usize..300).prop_map(|(delimiter, keep, max)| {
        let mut builder = match delimiter {
            Some(d) => DelimitedCodec::builder(d),
            None => DelimitedCodec::lines(),
        };
        let codec = builder.keep_delimiter(keep).max_frame_len(max).build();
        Config {
            codec: Codec::Delimited(codec.expect("non-empty delimiter")),
            keep,
            bound: max + delimiter.map_or(2, <[u8]>::len),
        }
    })
}

/// Every configuration whose frames survive an encode/decode round trip.
fn framed_config() -> impl Strategy<Value = Config> {
    let from_spec = (
        select(vec!["lines", "crlf", "len:u8", "len:u16le", "len:u64be"]),
        1usize..300,
    )
        .prop_map(|(spec, max)| {
            let framing: Framing = spec.parse().expect("valid spec");
            let codec = Codec::new(framing, max).expect("valid framing");
            Config {
                bound: max + 8,
                codec,
                keep: false,
            }
        });
    let fixed = (1usize..64).prop_map(|len| Config {
        codec: Codec::Fixed(FixedCodec::new(len, len).expect("len >= 1")),
        keep: false,
        bound: len,
    });
    prop_oneof![length_config(), delimited_config(), fixed, from_spec]
}

fn any_config() -> impl Strategy<Value = Config> {
    let raw = (1usize..300).prop_map(|max| Config {
        codec: Codec::Raw(RawCodec::new(max).expect("max >= 1")),
        keep: false,
        bound: max,
    });
    prop_oneof![4 => framed_config(), 1 => raw]
}

/// Bytes that make delimiters and headers likely, and some of anything.
fn stream_byte() -> impl Strategy<Value = u8> {
    prop_oneof![3 => select(b"ab\r\n\0-END".to_vec()), 1 => any::<u8>()]
}

/// How the stream is cut into reads.
#[derive(Debug, Clone)]
enum Chunking {
    Bytewise,
    Whole,
    Sizes(Vec<usize>),
}

impl Chunking {
    fn sizes(&self) -> Box<dyn Iterator<Item = usize> + '_> {
        match self {
            Self::Bytewise => Box::new(std::iter::repeat(1)),
            Self::Whole => Box::new(std::iter::empty()),
            Self::Sizes(sizes) => Box::new(sizes.iter().copied().cycle()),
        }
    }
}

fn chunking() -> impl Strategy<Value = Chunking> {
    prop_oneof![
        Just(Chunking::Bytewise),
        Just(Chunking::Whole),
        prop::collection::vec(1usize..40, 1..20).prop_map(Chunking::Sizes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// decode(encode(frames)) == frames for every codec and any split of the stream.
    #[test]
    fn any_split_gives_back_the_encoded_frames(
        config in framed_config(),
        payloads in prop::collection::vec(prop::collection::vec(stream_byte(), 0..120), 0..12),
        chunking in chunking(),
    ) {
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for mut payload in payloads {
            if let Codec::Fixed(_) = config.codec {
                payload.resize(config.codec.max_buffered(), b'f');
            }
            let before = wire.clone();
            match config.codec.encode(&payload, &mut wire) {
                // A kept delimiter comes back as part of the payload.
                Ok(()) if config.keep => expected.push(wire[before.len()..].to_vec()),
                Ok(()) => expected.push(payload),
                Err(e) => {
                    prop_assert_eq!(&wire, &before, "out changed on error");
                    let refusal_is_legit = matches!(
                        e,
                        FrameError::PayloadTooLong { .. }
                            | FrameError::PayloadTooShort { .. }
                            | FrameError::ContainsDelimiter { .. }
                    );
                    prop_assert!(refusal_is_legit, "unexpected refusal {e}");
                }
            }
        }
        let got = feed(&mut config.codec.clone(), &wire, chunking.sizes());
        prop_assert_eq!(got, Feed { frames: expected, end: Ok(()) });
    }

    /// Arbitrary bytes: no panic, every frame well-formed and bounded, and less
    /// than `max_buffered()` (≤ max frame + header/delimiter) held between reads
    /// (asserted inside `feed`).
    #[test]
    fn arbitrary_bytes_stay_bounded(
        config in any_config(),
        stream in prop::collection::vec(stream_byte(), 0..2000),
        chunking in chunking(),
    ) {
        prop_assert!(config.codec.max_buffered() <= config.bound);
        let _ = feed(&mut config.codec.clone(), &stream, chunking.sizes());
    }

    /// A length header over the max (or negative) is refused the moment its
    /// last byte arrives, before any payload; a good one waits for the payload.
    #[test]
    fn length_header_is_judged_when_complete(
        parts in length_parts(),
        random in any::<u64>(),
        excess in 1u64..1000,
        over_max in any::<bool>(),
    ) {
        let (width, endian, offset, adjustment, _) = parts;
        let Ok(mut codec) = build_length(parts) else {
            return Err(TestCaseError::reject("config refused"));
        };
        let field_max = u64::MAX >> (64 - 8 * width);
        let max = codec.max_frame_len() as i128;
        let field = if over_max {
            u64::try_from(max - i128::from(adjustment) + i128::from(excess)).unwrap_or(u64::MAX)
        } else {
            random & field_max
        };
        prop_assume!(field <= field_max);

        let mut header = vec![0xa5; offset];
        match endian {
            Endian::Big => header.extend_from_slice(&field.to_be_bytes()[8 - width..]),
            Endian::Little => header.extend_from_slice(&field.to_le_bytes()[..width]),
        }
        for partial in 0..header.len() {
            prop_assert_eq!(codec.decode(&header[..partial]), Ok(None));
        }
        let payload_len = i128::from(field) + i128::from(adjustment);
        let verdict = codec.decode(&header);
        if payload_len < 0 {
            prop_assert_eq!(verdict, Err(FrameError::NegativeLength { header: field, adjustment }));
        } else if payload_len > max {
            prop_assert_eq!(verdict, Err(FrameError::TooLong { len: payload_len as u64, max: max as usize }));
        } else if payload_len == 0 {
            prop_assert!(matches!(verdict, Ok(Some(_))));
        } else {
            prop_assert_eq!(verdict, Ok(None));
        }
    }
}

/// Bytes that make request heads, and broken ones, often.
fn http_piece() -> impl Strategy<Value = &'static [u8]> {
    select(vec![
        &b"GET"[..],
        b" ",
        b"/metrics",
        b"HTTP/1.1",
        b"\r\n",
        b"\n",
        b"\r",
        b"X: a",
    ])
}

proptest! {
    /// An HTTP request head is decided once, on the bytes received however
    /// they were split: more bytes never change the answer, a head taken is
    /// within the bound, and nothing past the bound is waited on.
    #[test]
    fn a_request_head_is_decided_once_and_within_its_bound(
        pieces in proptest::collection::vec(http_piece(), 0..40),
        max_len in 1usize..120,
    ) {
        let wire = pieces.concat();
        let whole = decode_request_head(&wire, max_len);
        let mut decided = None;
        for end in 0..=wire.len() {
            let answer = decode_request_head(&wire[..end], max_len);
            match &answer {
                Ok(None) => {
                    prop_assert!(decided.is_none(), "undecided again at {}", end);
                    prop_assert!(end < max_len);
                }
                Ok(Some(head)) => prop_assert!(head.len <= max_len.min(end)),
                Err(_) => {}
            }
            if answer != Ok(None) {
                prop_assert_eq!(&answer, &whole, "at {}", end);
                decided.get_or_insert(end);
            }
        }
    }
}
