//! Property tests of the PROXY protocol codec: every header encoded for a
//! random pair of addresses decodes back to them, in both versions, however
//! the bytes arrive (`Ok(None)` until the last byte of the header is in);
//! and no input, random or a valid header with bytes changed, makes the
//! decoder panic, hesitate past its bound or change its mind.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;
use sockloop::codec::fuzz;
use sockloop::codec::proxy::{
    self, Addresses, Command, ProxyHeader, V1_MAX_LEN, V2_SIGNATURE, Version,
};

fn v4() -> impl Strategy<Value = SocketAddr> {
    (any::<u32>(), any::<u16>())
        .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
}

fn v6() -> impl Strategy<Value = SocketAddr> {
    // Runs of zeros now and then, so that `::` compression is exercised.
    (any::<[u16; 8]>(), any::<u8>(), any::<u16>()).prop_map(|(mut segments, zeros, port)| {
        let start = usize::from(zeros % 8);
        let run = usize::from(zeros / 32);
        for s in segments.iter_mut().skip(start).take(run) {
            *s = 0;
        }
        SocketAddr::new(IpAddr::V6(Ipv6Addr::from(segments)), port)
    })
}

/// Two addresses of one family.
fn pair() -> impl Strategy<Value = Addresses> {
    prop_oneof![(v4(), v4()), (v6(), v6())].prop_map(|(source, destination)| Addresses {
        source,
        destination,
    })
}

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![Just(Version::V1), Just(Version::V2)]
}

fn encoded(version: Version, addresses: Addresses) -> Vec<u8> {
    let mut wire = Vec::new();
    match version {
        Version::V1 => proxy::encode_v1(addresses.source, addresses.destination, &mut wire),
        Version::V2 => proxy::encode_v2(addresses.source, addresses.destination, &mut wire),
    }
    wire
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn encode_then_decode_gives_back_the_addresses(
        version in version(),
        addresses in pair(),
        data in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut wire = encoded(version, addresses);
        let len = wire.len();
        prop_assert!(len <= V1_MAX_LEN || version == Version::V2);
        let expected = ProxyHeader { version, command: Command::Proxy, addresses: Some(addresses) };
        // The client's own bytes behind the header are not the decoder's.
        wire.extend_from_slice(&data);
        prop_assert_eq!(proxy::decode(&wire), Ok(Some((expected, len))));
        prop_assert_eq!(expected.source(), Some(addresses.source));
    }

    #[test]
    fn every_prefix_short_of_the_header_is_incomplete_and_every_longer_one_decodes_the_same(
        version in version(),
        addresses in pair(),
        data in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut wire = encoded(version, addresses);
        let len = wire.len();
        wire.extend_from_slice(&data);
        let expected = proxy::decode(&wire);
        for k in 0..len {
            prop_assert_eq!(proxy::decode(&wire[..k]), Ok(None), "prefix of {} bytes", k);
        }
        for k in len..=wire.len() {
            prop_assert_eq!(&proxy::decode(&wire[..k]), &expected, "prefix of {} bytes", k);
        }
    }

    /// As the reactor would: reads of any size appended to what is
    /// buffered, the decoder asked again after each.
    #[test]
    fn a_header_arriving_in_reads_of_any_size_decodes_once_complete(
        version in version(),
        addresses in pair(),
        reads in proptest::collection::vec(1usize..20, 1..60),
    ) {
        let wire = encoded(version, addresses);
        let mut buf = Vec::new();
        let mut rest = &wire[..];
        let mut reads = reads.into_iter().chain(std::iter::repeat(usize::MAX));
        loop {
            let n = reads.next().unwrap_or(1).min(rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            match proxy::decode(&buf) {
                Ok(None) => prop_assert!(!rest.is_empty(), "complete but undecided"),
                Ok(Some((header, len))) => {
                    prop_assert!(rest.is_empty(), "decided before the last byte");
                    prop_assert_eq!(len, wire.len());
                    prop_assert_eq!(header.addresses, Some(addresses));
                    break;
                }
                Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
            }
        }
    }

    #[test]
    fn addresses_of_two_families_decode_as_ipv6_with_the_ipv4_one_mapped(
        version in version(),
        a in v4(),
        b in v6(),
        swap in any::<bool>(),
    ) {
        let (source, destination) = if swap { (b, a) } else { (a, b) };
        let wire = encoded(version, Addresses { source, destination });
        let mapped = |s: SocketAddr| match s.ip() {
            IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), s.port()),
            IpAddr::V6(_) => s,
        };
        let (header, _) = proxy::decode(&wire).unwrap().unwrap();
        prop_assert_eq!(header.addresses, Some(Addresses {
            source: mapped(source),
            destination: mapped(destination),
        }));
    }

    /// The fuzz body (decides once, bounded, re-encodes), on inputs that
    /// start like a header so that they get past the first byte.
    #[test]
    fn no_input_makes_the_decoder_panic_hesitate_or_change_its_mind(
        start in prop_oneof![
            Just(b"PROXY ".to_vec()),
            Just(b"PROXY TCP4 ".to_vec()),
            Just(b"PROXY TCP6 ".to_vec()),
            Just(V2_SIGNATURE.to_vec()),
            Just([&V2_SIGNATURE[..], &[0x21]].concat()),
            Just(Vec::new()),
        ],
        tail in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        fuzz::proxy(&[start, tail].concat());
    }

    #[test]
    fn a_valid_header_with_bytes_changed_never_panics(
        version in version(),
        addresses in pair(),
        tlvs in proptest::collection::vec(any::<u8>(), 0..40),
        changes in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut wire = encoded(version, addresses);
        if version == Version::V2 {
            // Lengthen the block so that random TLV bytes follow the addresses.
            let len = u16::from_be_bytes([wire[14], wire[15]]) + tlvs.len() as u16;
            wire[14..16].copy_from_slice(&len.to_be_bytes());
            wire.extend_from_slice(&tlvs);
        }
        for (at, byte) in changes {
            let i = at.index(wire.len());
            wire[i] = byte;
        }
        fuzz::proxy(&wire);
    }
}
