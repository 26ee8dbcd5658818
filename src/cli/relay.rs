//! `sockloop relay`: each client to an upstream, both ways.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use log::{info, warn};
use sockloop::app::relay::{
    Balance, CurrentUpstreams, Relay, SniRoutes, SpliceMode, parse_upstreams,
};
use sockloop::codec::proxy::Version as ProxyVersion;
use sockloop::reactor::Config;
use sockloop::sys::{self, Addr};
use sockloop::threads::Reload;

use super::parse::{parse_addr, parse_duration, refuse_zero};
use super::server_args::ServerArgs;
use super::tls::UpstreamTls;
use super::tls_args::UpstreamTlsArgs;
use super::usage::{Usage, refuse};
use crate::server;

/// The arguments of `sockloop relay`.
#[derive(Args)]
pub(super) struct RelayArgs {
    #[command(flatten)]
    pub(super) server: ServerArgs,
    /// Where to connect each client (IP:PORT, [IPv6]:PORT, HOST:PORT or
    /// unix:PATH); repeat for several, picked by --balance.
    /// With --route-sni: where names without a route go.
    #[arg(long, required_unless_present_any = ["upstreams_file", "route_sni"],
          value_parser = parse_addr)]
    pub(super) upstream: Vec<Addr>,
    /// Read the upstreams from FILE, one a line (`#` comments, blank lines
    /// allowed), instead of --upstream; SIGHUP reads it again: new clients
    /// go to the new set, pairs open keep theirs, and a file that cannot be
    /// read or has a bad line keeps the set there is.
    #[arg(long, value_name = "FILE", conflicts_with = "upstream")]
    pub(super) upstreams_file: Option<PathBuf>,
    /// round-robin: each upstream in turn; least-conn: the one with the
    /// fewest pairs open or connecting (ties in turn).
    #[arg(long, default_value = "round-robin")]
    pub(super) balance: Balance,
    /// How long an upstream connect (its TLS handshake included) may take
    /// before the next upstream is tried (the client is closed once each
    /// has been tried).
    #[arg(long, default_value = "5s", value_parser = refuse_zero(parse_duration))]
    pub(super) connect_timeout: Duration,
    /// After a failed connect, skip that upstream this long, twice as long
    /// after each further failure (at most 64 times this), until a connect
    /// to it succeeds; when all are down they are tried anyway (0 = never skip).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub(super) upstream_down_time: Duration,
    /// Start each upstream connection with a PROXY protocol header, v1
    /// (text) or v2 (binary): the client's address, and the listening
    /// address as the destination.
    #[arg(long, value_name = "VERSION")]
    pub(super) send_proxy: Option<ProxyVersion>,
    /// Move bytes socket → pipe → socket with splice(2), never through user
    /// space (Linux only): `auto` (the default when no value is given) once
    /// a read fills a whole chunk, `always` from the start.
    #[arg(long, value_name = "WHEN", num_args = 0..=1, default_missing_value = "auto")]
    pub(super) splice: Option<SpliceMode>,
    #[command(flatten)]
    pub(super) upstream_tls: UpstreamTlsArgs,
    /// Route TLS clients by the server name of their ClientHello, without
    /// terminating TLS: NAME is a DNS name or `*.example.test` (one label;
    /// an exact name wins); repeat for more names, or more upstreams of
    /// one. Names without a route go to --upstream; without one, they are
    /// closed. A hello not whole within --handshake-timeout is closed.
    #[arg(long, value_name = "NAME=UPSTREAM", value_parser = parse_route,
          conflicts_with_all = ["tls_cert", "upstream_tls"])]
    pub(super) route_sni: Vec<(String, Addr)>,
}

/// `NAME=UPSTREAM` of --route-sni; the name is checked by [`SniRoutes::add`].
fn parse_route(text: &str) -> Result<(String, Addr), String> {
    let (name, upstream) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not NAME=UPSTREAM"))?;
    Ok((name.to_owned(), parse_addr(upstream)?))
}

impl RelayArgs {
    /// The relay each reactor runs (each balances its own clients over the
    /// upstreams of `current`, taking each newer set), speaking `tls` to
    /// them if given.
    fn relay(
        &self,
        current: &Arc<CurrentUpstreams>,
        routes: Option<&SniRoutes>,
        tls: Option<&UpstreamTls>,
    ) -> Relay {
        let default = current.latest().addrs.clone();
        let relay = match routes {
            Some(routes) => Relay::by_server_name(routes.clone(), default),
            None => Relay::new(default),
        };
        let relay = relay
            .with_reloads(current.clone())
            .with_balance(self.balance)
            .with_down_time(self.upstream_down_time);
        let relay = match self.send_proxy {
            Some(version) => relay.with_send_proxy(version),
            None => relay,
        };
        let relay = match tls {
            Some(tls) => tls.configure(relay),
            None => relay,
        };
        match self.splice {
            Some(mode) => relay.with_splice_mode(mode),
            None => relay,
        }
    }

    /// Runs the relay until it is told to stop.
    pub(super) fn run(&self) -> io::Result<()> {
        let routes = self.sni_routes()?;
        let config = Config {
            connect_timeout: self.connect_timeout,
            // A ClientHello is held as a partial message until it is whole.
            frame_timeout: routes.as_ref().map(|_| self.server.tls.handshake_timeout),
            ..self.server.config()
        };
        let tls = self.upstream_tls.settings(&self.server.tls.alpn)?;
        let upstreams = match &self.upstreams_file {
            Some(file) => read_upstreams(file)?,
            None => self.upstream.clone(),
        };
        let current = Arc::new(CurrentUpstreams::new(upstreams));
        let make = || self.relay(&current, routes.as_ref(), tls.as_ref());
        // Two sockets per client; splice adds a pipe (two descriptors) each way,
        // with `auto` only for the directions that carry bulk data.
        let fds_per_client = match self.splice {
            Some(SpliceMode::Always) => 6,
            Some(SpliceMode::Auto) | None => 2,
        };
        let mut plan = self.server.plan();
        let server = server::bind(&plan, config, make, fds_per_client)?;
        let origin = match &self.upstreams_file {
            Some(file) => file_origin(file),
            None => "--upstream ".to_owned(),
        };
        refuse_own_upstream(&server.local, &current.latest().addrs, &origin)?;
        let routed = self.route_sni.iter().map(|(_, upstream)| upstream.clone());
        refuse_own_upstream(&server.local, &routed.collect::<Vec<_>>(), "--route-sni ")?;
        if let Some(file) = &self.upstreams_file {
            plan.threads.reload = Some(reload_on_hangup(file, current, &server.local));
        }
        for reactor in &server.reactors {
            // The destination of the PROXY headers: known only now.
            reactor.service().set_listen_addr(server.local.clone());
        }
        server.run(&plan.threads)
    }

    /// The routes of --route-sni, if any; an error names the one refused.
    fn sni_routes(&self) -> Result<Option<SniRoutes>, Usage> {
        if self.route_sni.is_empty() {
            return Ok(None);
        }
        let mut routes = SniRoutes::new();
        for (name, upstream) in &self.route_sni {
            routes
                .add(name, upstream.clone())
                .map_err(|e| Usage(format!("--route-sni {name}={upstream}: {e}")))?;
        }
        Ok(Some(routes))
    }
}

/// The upstreams of `file`; an error names the file, and the line that is
/// not an upstream.
fn read_upstreams(file: &Path) -> Result<Vec<Addr>, Usage> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Usage(format!("--upstreams-file {}: {e}", file.display())))?;
    parse_upstreams(&text, parse_addr)
        .map_err(|e| Usage(format!("--upstreams-file {}: {e}", file.display())))
}

/// SIGHUP for a relay with an upstreams file: reads it again and, if it is
/// good (and the relay is not among its upstreams), has every reactor take
/// it; otherwise says why and keeps the set there is.
fn reload_on_hangup(file: &Path, current: Arc<CurrentUpstreams>, local: &Addr) -> Reload {
    let (file, local) = (file.to_owned(), local.clone());
    Reload::new(move |handles| {
        let read = read_upstreams(&file).and_then(|addrs| {
            refuse_own_upstream(&local, &addrs, &file_origin(&file)).map(|()| addrs)
        });
        match current.reload(read) {
            Ok(generation) => {
                let set = current.latest();
                let listed: Vec<String> = set.addrs.iter().map(Addr::to_string).collect();
                info!(
                    "SIGHUP: upstreams of generation {generation} from {}: {}",
                    file.display(),
                    listed.join(", ")
                );
                for handle in handles {
                    // One that has stopped has no new clients to send anywhere.
                    let _ = handle.wake();
                }
            }
            Err(refused) => warn!(
                "SIGHUP: {refused}; keeping the upstreams of generation {}",
                current.latest().generation
            ),
        }
    })
}

/// How a refusal names an upstream of `file`.
fn file_origin(file: &Path) -> String {
    format!("--upstreams-file {}: upstream ", file.display())
}

/// Refuses an upstream that is this relay itself, naming it after `origin`
/// (where it came from): each client would make it connect to itself
/// again, until it runs out of descriptors.
fn refuse_own_upstream(local: &Addr, upstreams: &[Addr], origin: &str) -> Result<(), Usage> {
    let loops = |upstream: &&Addr| match (*upstream, local) {
        (Addr::Ip(to), Addr::Ip(at)) => reaches(*to, *at, sys::is_own_address),
        (Addr::Unix(to), Addr::Unix(at)) => same_file(to, at),
        _ => false,
    };
    match upstreams.iter().find(loops) {
        Some(upstream) => refuse(format!(
            "{origin}{upstream} is this relay itself (it listens on {local}): \
             each client would be relayed back to the relay, without end"
        )),
        None => Ok(()),
    }
}

/// Whether a connection to `upstream` would arrive at a listener bound to
/// `listen`; `is_own` says whether this host has an address (loopback
/// addresses count as its own whatever it says).
fn reaches(upstream: SocketAddr, listen: SocketAddr, is_own: impl Fn(IpAddr) -> bool) -> bool {
    if upstream.port() != listen.port() {
        return false;
    }
    // `::ffff:127.0.0.1` is 127.0.0.1 on the wire.
    let (to, at) = (upstream.ip().to_canonical(), listen.ip().to_canonical());
    // The kernel sends a connect to 0.0.0.0 or [::] to this host (Linux: to
    // its loopback; BSD: maybe its first address): refuse it whatever `at` is.
    if to.is_unspecified() {
        return true;
    }
    let local = || to.is_loopback() || is_own(to);
    match at {
        // A wildcard listener takes every local address of its family;
        // [::] takes IPv4 too, as IPV6_V6ONLY is left off.
        IpAddr::V4(ip) if ip.is_unspecified() => to.is_ipv4() && local(),
        IpAddr::V6(ip) if ip.is_unspecified() => local(),
        at => at == to,
    }
}

/// Whether two paths name one file (as given, or once resolved).
fn same_file(a: &Path, b: &Path) -> bool {
    a == b
        || a.canonicalize()
            .ok()
            .is_some_and(|a| b.canonicalize().ok() == Some(a))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::{Cli, Command};
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    /// `reaches` with a host that owns 127.0.0.1/8, ::1 and 10.1.2.3.
    fn reaches_here(upstream: &str, listen: &str) -> bool {
        reaches(addr(upstream), addr(listen), |ip| {
            ip == "10.1.2.3".parse::<IpAddr>().unwrap()
        })
    }

    #[test]
    fn an_upstream_reaches_its_own_listener_on_the_same_address_and_port() {
        assert!(reaches_here("127.0.0.1:7992", "127.0.0.1:7992"));
        assert!(reaches_here("[::1]:7992", "[::1]:7992"));
        assert!(reaches_here("127.0.0.1:7992", "[::ffff:127.0.0.1]:7992"));
        assert!(!reaches_here("127.0.0.1:7993", "127.0.0.1:7992"));
        assert!(!reaches_here("127.0.0.2:7992", "127.0.0.1:7992"));
        assert!(!reaches_here("10.1.2.3:7992", "127.0.0.1:7992"));
    }

    #[test]
    fn a_wildcard_listener_is_reached_through_any_address_of_this_host() {
        assert!(reaches_here("127.0.0.1:7992", "0.0.0.0:7992"));
        assert!(reaches_here("127.9.9.9:7992", "0.0.0.0:7992"));
        assert!(reaches_here("10.1.2.3:7992", "0.0.0.0:7992"));
        assert!(!reaches_here("10.1.2.4:7992", "0.0.0.0:7992"));
        assert!(!reaches_here("127.0.0.1:7993", "0.0.0.0:7992"));
        // An IPv4 wildcard takes no IPv6; an IPv6 wildcard takes both.
        assert!(!reaches_here("[::1]:7992", "0.0.0.0:7992"));
        assert!(reaches_here("[::1]:7992", "[::]:7992"));
        assert!(reaches_here("127.0.0.1:7992", "[::]:7992"));
        assert!(reaches_here("10.1.2.3:7992", "[::]:7992"));
        assert!(!reaches_here("10.1.2.4:7992", "[::]:7992"));
    }

    #[test]
    fn an_unspecified_upstream_counts_as_this_host() {
        assert!(reaches_here("0.0.0.0:7992", "127.0.0.1:7992"));
        assert!(reaches_here("0.0.0.0:7992", "0.0.0.0:7992"));
        assert!(reaches_here("[::]:7992", "10.1.2.3:7992"));
        assert!(!reaches_here("0.0.0.0:7993", "0.0.0.0:7992"));
    }

    #[test]
    fn the_upstream_down_time_shown_is_the_real_one() {
        let cli = Cli::try_parse_from(["sockloop", "relay", "--upstream", "127.0.0.1:1"]).unwrap();
        let Command::Relay(args) = cli.command else {
            panic!("not a relay");
        };
        assert_eq!(
            args.upstream_down_time,
            sockloop::app::relay::DEFAULT_DOWN_TIME
        );
        // As --help says: "at most 64 times this".
        assert_eq!(sockloop::app::relay::MAX_DOWN_FACTOR, 64);
        assert_eq!(args.balance, Balance::RoundRobin);
        assert_eq!(args.send_proxy, None);
    }

    #[test]
    fn the_upstreams_come_from_the_flag_or_the_file_never_both() {
        let relay = |args: &[&str]| Cli::try_parse_from([&["sockloop", "relay"], args].concat());
        let both = relay(&["--upstream", "127.0.0.1:1", "--upstreams-file", "up.txt"]);
        let refused = both.err().expect("both were taken");
        assert_eq!(refused.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert_eq!(refused.exit_code(), 2);
        let neither = relay(&[])
            .err()
            .expect("a relay without upstreams was taken");
        assert_eq!(
            neither.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        let Ok(Cli {
            command: Command::Relay(args),
            ..
        }) = relay(&["--upstreams-file", "up.txt"])
        else {
            panic!("--upstreams-file alone was refused");
        };
        assert_eq!(args.upstreams_file, Some(PathBuf::from("up.txt")));
        assert!(args.upstream.is_empty());
    }

    #[test]
    fn an_upstreams_file_that_cannot_be_read_is_refused_with_its_name() {
        let missing = Path::new("/nonexistent/sockloop-upstreams.txt");
        let refused = read_upstreams(missing).unwrap_err().to_string();
        assert!(
            refused.starts_with("--upstreams-file /nonexistent/sockloop-upstreams.txt: "),
            "{refused}"
        );
    }
}
