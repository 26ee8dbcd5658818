//! The addresses of this host's interfaces.

use std::net::IpAddr;

/// Whether `ip` is an address of one of this host's interfaces. Asked of
/// the interfaces, not by binding to it: with `ip_nonlocal_bind` on, any
/// bind succeeds. If they cannot be listed, no address counts.
pub fn is_own_address(ip: IpAddr) -> bool {
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return false;
    };
    interfaces.filter_map(|i| i.address).any(|address| {
        let v4 = address.as_sockaddr_in().map(|a| IpAddr::from(a.ip()));
        let v6 = address.as_sockaddr_in6().map(|a| IpAddr::from(a.ip()));
        v4.or(v6) == Some(ip)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_host_owns_its_loopback_address_and_no_multicast_group() {
        assert!(is_own_address(IpAddr::from([127, 0, 0, 1])));
        // Multicast groups are never an interface's own address.
        assert!(!is_own_address(IpAddr::from([224, 0, 0, 1])));
        assert!(!is_own_address("ff02::1".parse().unwrap()));
    }
}
