//! Property tests of the ClientHello reader: a generated hello, with any
//! server name and extensions, in records of any size and read in chunks
//! of any size, gives back its name exactly when its last record is in;
//! and arbitrary bytes never panic it or make it wait past its cap.

use proptest::prelude::*;
use sockloop::codec::client_hello::{self, ClientHello, HelloError};

/// A DNS name of 1 to 4 labels, some letters in upper case.
fn server_name() -> impl Strategy<Value = String> {
    proptest::collection::vec("[a-zA-Z0-9][a-zA-Z0-9_-]{0,20}", 1..5).prop_map(|l| l.join("."))
}

/// Extensions other than server_name (type 0), each of up to 300 bytes.
fn extensions() -> impl Strategy<Value = Vec<(u16, Vec<u8>)>> {
    let extension = (
        1u16..=u16::MAX,
        proptest::collection::vec(any::<u8>(), 0..300),
    );
    proptest::collection::vec(extension, 0..8)
}

/// Feeds `wire` in chunks of `chunks` sizes (cycled) the way the relay
/// does: decode the whole buffer after each read, until it decides.
/// The decision and how many bytes were buffered when it came.
fn fed_in_chunks(
    wire: &[u8],
    chunks: &[usize],
) -> (Result<Option<ClientHello>, HelloError>, usize) {
    let mut buffered = 0;
    for &chunk in chunks.iter().cycle() {
        buffered = (buffered + chunk).min(wire.len());
        let decided = client_hello::decode(&wire[..buffered]);
        if decided != Ok(None) || buffered == wire.len() {
            return (decided, buffered);
        }
    }
    unreachable!("chunks are never empty");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn a_generated_hello_gives_its_lowercased_name_however_it_is_split(
        name in proptest::option::of(server_name()),
        extensions in extensions(),
        record_len in prop_oneof![1usize..40, 40usize..=16384],
        chunks in proptest::collection::vec(1usize..200, 1..20),
        after in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut wire = Vec::new();
        client_hello::encode(name.as_deref(), &extensions, record_len, &mut wire);
        let len = wire.len();
        // What the client sends after its hello is not the reader's.
        wire.extend_from_slice(&after);
        let expected = ClientHello { server_name: name.map(|n| n.to_ascii_lowercase()), len };
        let (decided, buffered) = fed_in_chunks(&wire, &chunks);
        if len <= client_hello::DEFAULT_MAX_LEN {
            prop_assert_eq!(decided, Ok(Some(expected)));
            prop_assert!(buffered >= len, "decided with {} of {} bytes", buffered, len);
        } else {
            let too_long = matches!(decided, Err(HelloError::TooLong { .. }));
            prop_assert!(too_long, "{:?}", decided);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_never_wait_past_the_cap(
        head in prop_oneof![Just(vec![]), Just(vec![22, 3]), Just(vec![22, 3, 1, 0])],
        body in proptest::collection::vec(any::<u8>(), 0..600),
        max in 6usize..700,
    ) {
        let wire = [head, body].concat();
        for k in 0..=wire.len() {
            match client_hello::decode_with_max(&wire[..k], max) {
                Ok(None) => prop_assert!(k < max, "{} bytes undecided under a cap of {}", k, max),
                Ok(Some(hello)) => prop_assert!(hello.len <= k && hello.len <= max),
                Err(_) => {}
            }
        }
    }
}
