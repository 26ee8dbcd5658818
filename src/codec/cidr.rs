//! Address blocks in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`), for
//! lists of trusted sources: parsed from text, matched against a peer's
//! address. Pure: no sockets, no lookups.
//!
//! ```
//! use sockloop::codec::cidr::Cidr;
//!
//! let balancers: Cidr = "10.0.0.0/24".parse().unwrap();
//! assert!(balancers.contains("10.0.0.5".parse().unwrap()));
//! assert!(!balancers.contains("10.0.1.5".parse().unwrap()));
//! // A bare address is one host; an IPv4 peer seen on an IPv6 socket matches.
//! let one: Cidr = "127.0.0.3".parse().unwrap();
//! assert_eq!(one.to_string(), "127.0.0.3/32");
//! assert!(one.contains("::ffff:127.0.0.3".parse().unwrap()));
//! ```

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A block of addresses: those whose first `prefix` bits are `network`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The block's first address (bits past the prefix are zero).
    network: IpAddr,
    prefix: u8,
}

/// Why a text is not a CIDR block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrError(String);

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CidrError {}

impl Cidr {
    /// The block of `prefix` leading bits of `addr`; `None` if the prefix is
    /// longer than the address (32 bits for IPv4, 128 for IPv6). Host bits
    /// set in `addr` are cleared: `10.0.0.5/8` is `10.0.0.0/8`.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let addr = addr.to_canonical();
        (prefix <= bits(addr)).then(|| Cidr {
            network: masked(addr, prefix),
            prefix,
        })
    }

    /// Whether `addr` is in the block. An IPv4 address mapped into IPv6
    /// (`::ffff:a.b.c.d`, how a `[::]` listener sees IPv4 peers) is taken
    /// as the IPv4 address it carries.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = addr.to_canonical();
        addr.is_ipv4() == self.network.is_ipv4() && masked(addr, self.prefix) == self.network
    }

    /// How many leading bits name the block.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }
}

/// The length of `addr` in bits.
fn bits(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// `addr` with all but its first `prefix` bits cleared.
fn masked(addr: IpAddr, prefix: u8) -> IpAddr {
    // A shift by the whole width is an overflow: a /0 keeps no bit.
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `ADDR/PREFIX`, or a bare `ADDR` for one host (/32 or /128).
    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| CidrError(format!("not an IP address: {addr:?} (in {text:?})")))?;
        let prefix = match prefix {
            None => bits(addr.to_canonical()),
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().unwrap_or(u8::MAX)
            }
            Some(p) => return Err(CidrError(format!("not a prefix length: {p:?}"))),
        };
        Cidr::new(addr, prefix).ok_or_else(|| {
            CidrError(format!(
                "/{prefix} is longer than the {} bits of {addr}",
                bits(addr.to_canonical())
            ))
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Whether `addr` is in any of `blocks`.
pub fn any_contains(blocks: &[Cidr], addr: IpAddr) -> bool {
    blocks.iter().any(|block| block.contains(addr))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    fn parse(text: &str) -> Result<Cidr, CidrError> {
        text.parse()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn blocks_of_both_families_parse_and_match() {
        let lan = parse("10.0.0.0/8").unwrap();
        assert!(lan.contains(ip("10.255.1.2")));
        assert!(!lan.contains(ip("11.0.0.1")));
        let doc = parse("2001:db8::/32").unwrap();
        assert!(doc.contains(ip("2001:db8:ffff::1")));
        assert!(!doc.contains(ip("2001:db9::1")));
        assert!(!doc.contains(ip("10.0.0.1")), "families never match");
        assert!(!lan.contains(ip("::a00:1")), "an IPv4-compatible v6 is v6");
        let all = parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("255.255.255.255")));
        assert!(!all.contains(ip("::1")));
        assert!(parse("::/0").unwrap().contains(ip("::1")));
    }

    #[test]
    fn a_bare_address_is_one_host_and_host_bits_are_cleared() {
        assert_eq!(parse("127.0.0.3").unwrap().to_string(), "127.0.0.3/32");
        assert_eq!(parse("::1").unwrap().to_string(), "::1/128");
        assert_eq!(parse(" 10.1.2.3/8 ").unwrap().to_string(), "10.0.0.0/8");
        let one = parse("127.0.0.3/32").unwrap();
        assert!(one.contains(ip("127.0.0.3")));
        assert!(!one.contains(ip("127.0.0.2")));
        // A [::] listener sees IPv4 peers mapped; the list is written in IPv4.
        assert!(one.contains(ip("::ffff:127.0.0.3")));
        assert_eq!(parse("::ffff:10.0.0.1").unwrap().to_string(), "10.0.0.1/32");
    }

    #[test]
    fn what_is_not_a_block_is_refused_saying_why() {
        for (text, why) in [
            ("10.0.0.0/33", "longer than the 32 bits"),
            ("::/129", "longer than the 128 bits"),
            ("10.0.0.0/", "not a prefix length"),
            ("10.0.0.0/-1", "not a prefix length"),
            ("10.0.0.0/+8", "not a prefix length"),
            ("10.0.0.0/99999", "longer than"),
            ("10.0.0/8", "not an IP address"),
            ("localhost", "not an IP address"),
            ("", "not an IP address"),
        ] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(why), "{text:?}: {error}");
        }
    }

    fn any_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
            any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        ]
    }

    /// `addr`'s bits as one number, and how many there are (mapped IPv4
    /// taken as IPv4): the reference `contains` is checked against.
    fn as_bits(addr: IpAddr) -> (u128, u32) {
        match addr.to_canonical() {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
            IpAddr::V6(a) => (u128::from(a), 128),
        }
    }

    proptest! {
        #[test]
        fn text_made_from_a_block_parses_back_to_it(addr in any_ip(), prefix in 0u8..=128) {
            if let Some(block) = Cidr::new(addr, prefix) {
                prop_assert_eq!(parse(&block.to_string()), Ok(block));
            } else {
                prop_assert!(prefix > 32 && addr.to_canonical().is_ipv4());
            }
        }

        #[test]
        fn an_address_is_in_a_block_when_its_leading_bits_agree(
            net in any_ip(), addr in any_ip(), prefix in 0u8..=128, agree in 0u32..=128,
        ) {
            let Some(block) = Cidr::new(net, prefix) else { return Ok(()) };
            // Half the time, an address that shares `agree` leading bits.
            let (net_bits, width) = as_bits(net);
            let (addr_bits, addr_width) = as_bits(addr);
            let addr = if agree % 2 == 0 && width == addr_width {
                let keep = (agree / 2).min(width);
                let mask = u128::MAX.checked_shl(width - keep).unwrap_or(0) & (u128::MAX >> (128 - width));
                let mixed = (net_bits & mask) | (addr_bits & !mask);
                if width == 32 { IpAddr::V4(Ipv4Addr::from(mixed as u32)) } else { IpAddr::V6(Ipv6Addr::from(mixed)) }
            } else {
                addr
            };
            let (bits, w) = as_bits(addr);
            let leading = |b: u128| b.checked_shr(w - u32::from(prefix)).unwrap_or(0);
            let expected = w == width && leading(bits) == leading(net_bits);
            prop_assert_eq!(block.contains(addr), expected, "{} in {}", addr, block);
            // The block's own first address is always in it.
            prop_assert!(block.contains(block.network));
        }

        #[test]
        fn no_text_makes_the_parser_panic(text in "[0-9a-fA-F:./ ]{0,48}") {
            let _ = parse(&text);
        }
    }
}
