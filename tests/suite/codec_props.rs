//! Property tests: every codec, fed the way the reactor feeds it (append a read,
//! decode until `None`, consume `len`), gives back exactly the frames that were
//! encoded, however the stream is split; and no input makes a decoder panic or
//! hold more than its bound. The same for an HTTP request head, and for
//! RESP replies (Redis's protocol).

use proptest::prelude::*;
use proptest::sample::select;
use sockloop::codec::fuzz::{Feed, feed};
use sockloop::codec::http::decode_request_head;
use sockloop::codec::resp::{self, Reply};
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

/// A RESP reply that owns its bytes, so that proptest can make one and a
/// decoded one can outlive the buffer it borrowed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tree {
    Simple(Vec<u8>),
    Error(Vec<u8>),
    Integer(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Tree>),
}

impl Tree {
    fn of(reply: &Reply<'_>) -> Self {
        match reply {
            Reply::Simple(text) => Self::Simple(text.to_vec()),
            Reply::Error(text) => Self::Error(text.to_vec()),
            Reply::Integer(n) => Self::Integer(*n),
            Reply::Bulk(payload) => Self::Bulk(payload.to_vec()),
            Reply::Nil => Self::Nil,
            Reply::Array(elements) => Self::Array(elements.iter().map(Self::of).collect()),
        }
    }

    fn reply(&self) -> Reply<'_> {
        match self {
            Self::Simple(text) => Reply::Simple(text),
            Self::Error(text) => Reply::Error(text),
            Self::Integer(n) => Reply::Integer(*n),
            Self::Bulk(payload) => Reply::Bulk(payload),
            Self::Nil => Reply::Nil,
            Self::Array(elements) => Reply::Array(elements.iter().map(Self::reply).collect()),
        }
    }

    fn wire(&self) -> Vec<u8> {
        let mut out = Vec::new();
        resp::encode_reply(&mut out, &self.reply());
        out
    }
}

/// Trees up to `resp::MAX_DEPTH` arrays deep, with lines and payloads that
/// hold RESP's own bytes.
fn tree() -> impl Strategy<Value = Tree> {
    let text = prop::collection::vec(select(b"OKER -:*$0".to_vec()), 0..20);
    let leaf = prop_oneof![
        text.clone().prop_map(Tree::Simple),
        text.prop_map(Tree::Error),
        any::<i64>().prop_map(Tree::Integer),
        prop::collection::vec(stream_byte(), 0..80).prop_map(Tree::Bulk),
        Just(Tree::Nil),
    ];
    leaf.prop_recursive(resp::MAX_DEPTH as u32, 64, 6, |inner| {
        prop::collection::vec(inner, 0..6).prop_map(Tree::Array)
    })
}

/// Pieces of RESP, whole and broken, to make arbitrary streams of.
fn resp_piece() -> impl Strategy<Value = &'static [u8]> {
    select(vec![
        &b"*2\r\n"[..],
        b"*-1\r\n",
        b"*1",
        b"$3\r\n",
        b"$-1\r\n",
        b"$-2",
        b"abc",
        b"\r\n",
        b"\r",
        b"\n",
        b":-12\r\n",
        b":99999999999999999999",
        b"+OK\r\n",
        b"-ERR x\r\n",
        b"?",
        b"00000000",
    ])
}

proptest! {
    /// An encoded tree is not taken before its last byte, is taken whole
    /// at it, and is taken the same with more bytes behind it.
    #[test]
    fn a_resp_reply_is_taken_whole_and_never_early(tree in tree(), tail in resp_piece()) {
        let wire = tree.wire();
        for k in 0..wire.len() {
            prop_assert_eq!(resp::decode(&wire[..k]), Ok(None), "prefix of {}", k);
        }
        let expected = Ok(Some((tree.reply(), wire.len())));
        prop_assert_eq!(&resp::decode(&wire), &expected);
        let followed = [&wire[..], tail].concat();
        prop_assert_eq!(&resp::decode(&followed), &expected);
    }

    /// Replies in a row, however the stream is cut into reads, decode to
    /// the same trees in the same order.
    #[test]
    fn resp_replies_in_a_row_decode_in_order_however_cut(
        trees in prop::collection::vec(tree(), 0..6),
        chunking in chunking(),
    ) {
        let wire: Vec<u8> = trees.iter().flat_map(Tree::wire).collect();
        let mut decoded = Vec::new();
        let mut buf = Vec::new();
        let mut rest = &wire[..];
        let mut sizes = chunking.sizes();
        while !rest.is_empty() {
            let n = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            while let Some((reply, len)) = resp::decode(&buf).expect("encoded replies decode") {
                decoded.push(Tree::of(&reply));
                buf.drain(..len);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decoded, trees);
    }

    /// A command is an array of bulk strings equal to its arguments.
    #[test]
    fn a_resp_command_decodes_as_its_arguments(
        args in prop::collection::vec(prop::collection::vec(stream_byte(), 0..40), 0..8),
    ) {
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let mut wire = Vec::new();
        resp::encode_command(&mut wire, &args);
        let bulks = args.iter().map(|arg| Reply::Bulk(arg)).collect();
        prop_assert_eq!(resp::decode(&wire), Ok(Some((Reply::Array(bulks), wire.len()))));
    }

    /// Arbitrary streams, mostly of RESP's pieces: the fuzz body's checks
    /// (no panic, decided once, a reply within the input that re-encodes
    /// to itself) hold.
    #[test]
    fn arbitrary_resp_bytes_are_decided_once(
        pieces in prop::collection::vec(prop_oneof![
            4 => resp_piece().prop_map(<[u8]>::to_vec),
            1 => prop::collection::vec(any::<u8>(), 1..4),
        ], 0..30),
    ) {
        sockloop::codec::fuzz::resp(&pieces.concat());
    }
}
