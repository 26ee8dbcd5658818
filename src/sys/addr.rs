//! Socket addresses as users type them: `127.0.0.1:7878`, `[::1]:7878`,
//! `localhost:7878`, `unix:/run/echo.sock`.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

/// Where a socket is: an IP address and port, or the path of a Unix-domain
/// socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Addr {
    /// An IP address and a port.
    Ip(SocketAddr),
    /// For a connection accepted on a Unix-domain listener, the listener's
    /// path: the client's own end is almost always unnamed.
    Unix(Arc<Path>),
}

const UNIX_PREFIX: &str = "unix:";

impl Addr {
    /// The address `text` names, looking a host name up if it has one
    /// (`localhost:7878`): every address it resolves to, in the resolver's
    /// order. An address that needs no lookup comes back alone.
    pub fn resolve(text: &str) -> io::Result<Vec<Addr>> {
        match text.parse::<Addr>() {
            Ok(addr) => return Ok(vec![addr]),
            // No lookup makes a unix: address: the parser's word is the last.
            Err(e) if text.starts_with(UNIX_PREFIX) => {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, e));
            }
            Err(_) => {}
        }
        let found: Vec<Addr> = text
            .to_socket_addrs()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {text:?}: {e}")))?
            .map(Addr::Ip)
            .collect();
        if found.is_empty() {
            let e = format!("cannot resolve {text:?}: no addresses");
            return Err(io::Error::new(io::ErrorKind::NotFound, e));
        }
        Ok(found)
    }

    /// The IP address and port, unless this is a Unix-domain address.
    pub fn ip(&self) -> Option<SocketAddr> {
        match self {
            Addr::Ip(addr) => Some(*addr),
            Addr::Unix(_) => None,
        }
    }

    /// The path, if this is a Unix-domain address.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Addr::Ip(_) => None,
            Addr::Unix(path) => Some(path),
        }
    }
}

impl From<SocketAddr> for Addr {
    fn from(addr: SocketAddr) -> Addr {
        Addr::Ip(addr)
    }
}

/// An address that needs no lookup: `IP:PORT`, `[IPv6]:PORT` or `unix:PATH`.
impl FromStr for Addr {
    type Err = AddrParseError;

    fn from_str(text: &str) -> Result<Addr, AddrParseError> {
        if let Some(path) = text.strip_prefix(UNIX_PREFIX) {
            if path.is_empty() {
                return Err(AddrParseError(text.to_string()));
            }
            return Ok(Addr::Unix(Path::new(path).into()));
        }
        text.parse()
            .map(Addr::Ip)
            .map_err(|_| AddrParseError(text.to_string()))
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Ip(addr) => addr.fmt(f),
            Addr::Unix(path) => write!(f, "{UNIX_PREFIX}{}", path.display()),
        }
    }
}

/// Text that is not an address without a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrParseError(String);

impl fmt::Display for AddrParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The one way a unix: address fails to parse.
        if self.0.starts_with(UNIX_PREFIX) {
            return write!(f, "{:?}: the path after unix: is empty", self.0);
        }
        write!(
            f,
            "not an address: {:?} (expected IP:PORT, [IPv6]:PORT or unix:PATH)",
            self.0
        )
    }
}

impl std::error::Error for AddrParseError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_print_back_the_same() {
        for text in [
            "127.0.0.1:7878",
            "[::1]:7878",
            "[::]:0",
            "unix:/tmp/echo.sock",
        ] {
            let addr: Addr = text.parse().unwrap();
            assert_eq!(addr.to_string(), text);
        }
        assert_eq!(
            "unix:relative/path".parse::<Addr>().unwrap().path(),
            Some(Path::new("relative/path"))
        );
        for bad in ["unix:", "localhost:80", "127.0.0.1", "7878", ""] {
            assert!(bad.parse::<Addr>().is_err(), "{bad:?} parsed");
        }
        let empty = Addr::resolve("unix:").expect_err("an empty path");
        assert!(
            empty.to_string().contains("path after unix: is empty"),
            "{empty}"
        );
    }

    #[test]
    fn localhost_resolves_to_loopback_and_nonsense_does_not_resolve() {
        let found = Addr::resolve("localhost:7878").unwrap();
        assert!(!found.is_empty());
        for addr in found {
            let ip = addr.ip().expect("an IP address");
            assert!(ip.ip().is_loopback(), "{ip}");
            assert_eq!(ip.port(), 7878);
        }
        let err = Addr::resolve("no-such-host.invalid:80").unwrap_err();
        assert!(err.to_string().contains("no-such-host.invalid"), "{err}");
        assert_eq!(
            Addr::resolve("unix:/x").unwrap(),
            vec![Addr::Unix(Path::new("/x").into())]
        );
    }
}
