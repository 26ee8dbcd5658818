//! Which upstreams a TLS client goes to, by the server name in its
//! ClientHello: `--route-sni NAME=UPSTREAM`, an exact name or a wildcard
//! `*.example.test` that stands for one label.

use std::collections::HashMap;

use crate::codec::client_hello;
use crate::reactor::Addr;

/// Server names, exact or wildcard, and the upstreams each goes to. A
/// name given more than once has several upstreams, balanced and failed
/// over as the default ones are.
#[derive(Debug, Clone, Default)]
pub struct SniRoutes {
    /// Lowercase name → index in `targets`.
    exact: HashMap<String, usize>,
    /// What follows `*.` in a wildcard, lowercase → index in `targets`.
    wildcard: HashMap<String, usize>,
    /// The upstreams of each route, in the order first given.
    targets: Vec<Vec<Addr>>,
}

impl SniRoutes {
    /// No routes.
    pub fn new() -> SniRoutes {
        SniRoutes::default()
    }

    /// Sends clients asking for `pattern` (a DNS name, or `*.` and one)
    /// to `upstream`, besides any upstream it was given before. Names are
    /// compared without regard to case.
    pub fn add(&mut self, pattern: &str, upstream: Addr) -> Result<(), String> {
        let pattern = pattern.to_ascii_lowercase();
        let (table, name) = match pattern.strip_prefix("*.") {
            Some(suffix) => (&mut self.wildcard, suffix),
            None => (&mut self.exact, pattern.as_str()),
        };
        client_hello::check_host_name(name.as_bytes())
            .map_err(|why| format!("server name `{pattern}` {why}"))?;
        let next = self.targets.len();
        let i = *table.entry(name.to_owned()).or_insert(next);
        if i == next {
            self.targets.push(Vec::new());
        }
        self.targets[i].push(upstream);
        Ok(())
    }

    /// Whether no route was added.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The routes' upstreams, in the order [`route`](Self::route) counts them.
    pub(super) fn targets(&self) -> &[Vec<Addr>] {
        &self.targets
    }

    /// The route for a lowercase server name: an exact one, else a wildcard
    /// whose suffix is all but the name's first label.
    pub(super) fn route(&self, name: &str) -> Option<usize> {
        if let Some(&i) = self.exact.get(name) {
            return Some(i);
        }
        let (label, suffix) = name.split_once('.')?;
        self.wildcard
            .get(suffix)
            .filter(|_| !label.is_empty())
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(port: u16) -> Addr {
        Addr::from(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    }

    fn routes(list: &[(&str, u16)]) -> SniRoutes {
        let mut routes = SniRoutes::new();
        for &(pattern, port) in list {
            routes.add(pattern, upstream(port)).unwrap();
        }
        routes
    }

    #[test]
    fn an_exact_name_wins_over_a_wildcard_that_stands_for_one_label() {
        let routes = routes(&[("*.example.test", 1), ("a.example.test", 2), ("B.test", 3)]);
        let port = |name: &str| routes.route(name).map(|i| &routes.targets()[i]);
        assert_eq!(port("a.example.test"), Some(&vec![upstream(2)]));
        assert_eq!(port("x.example.test"), Some(&vec![upstream(1)]));
        assert_eq!(
            port("b.test"),
            Some(&vec![upstream(3)]),
            "case does not count"
        );
        assert_eq!(port("example.test"), None, "the wildcard needs a label");
        assert_eq!(port("y.x.example.test"), None, "and only one");
        assert_eq!(port("c.test"), None);
    }

    #[test]
    fn a_name_given_twice_has_both_upstreams() {
        let routes = routes(&[("a.test", 1), ("b.test", 2), ("A.test", 3)]);
        assert_eq!(
            routes.targets(),
            [vec![upstream(1), upstream(3)], vec![upstream(2)]]
        );
        assert!(!routes.is_empty());
    }

    #[test]
    fn patterns_that_no_name_matches_are_refused() {
        let mut routes = SniRoutes::new();
        for bad in [
            "", "a..test", "*.", "a.*.test", "*a.test", "a test", "a.test.",
        ] {
            let refused = routes.add(bad, upstream(1));
            assert!(refused.is_err(), "{bad:?} accepted");
        }
        assert!(routes.is_empty());
    }
}
