//! Relay: a TCP proxy. Each accepted client gets its own connection to an
//! upstream (round-robin or least-conn over the list); bytes flow both ways.
//!
//! The reactor carries the hard parts once the two sides are linked:
//! a side stops being read while the other side's output is backed up, bytes
//! from a client whose upstream is still connecting wait (bounded by the same
//! rule), and a socket closes once both its directions are done. What is left
//! here is the pairing, the choice of upstream, FIN propagation and failure
//! handling:
//!
//! - an upstream connect that is refused or times out, or whose TLS
//!   handshake fails or is not done within the connect timeout, is tried
//!   again on the next upstream (each at most once per client) before the
//!   client is given up. What the client sent meanwhile was queued for the failed connection
//!   and went down with it, so the relay keeps a copy of it while a connect is
//!   in progress and another upstream is left to try, and queues it for the
//!   next one behind its PROXY header; nothing had left for the failed one;
//! - an upstream whose connect failed is skipped for a while (its down time,
//!   doubling while it keeps failing, reset by a success), unless every
//!   upstream left to try is down;
//! - with a PROXY protocol version set, each upstream connection starts with
//!   a header naming the client and the relay's listening address, queued
//!   right after the connect and so ahead of anything the client sends;
//! - with upstream TLS set, each upstream connection is a TLS client, and a
//!   client that agreed on an ALPN protocol with this relay (its listener
//!   terminating TLS) has only that protocol offered upstream, so both hops
//!   speak the same one;
//! - given a [`CurrentUpstreams`] ([`Relay::with_reloads`]), a relay takes
//!   its newer set when its reactor is woken, or at its next client at the
//!   latest: new clients go to the new set,
//!   pairs open keep the upstream they have, and a connect in progress that
//!   fails is tried again on the new set's upstreams;
//! - given [`SniRoutes`] ([`Relay::by_server_name`]), nothing is connected
//!   for a client until its TLS ClientHello is whole: its server name picks
//!   the upstreams (an exact name, else a wildcard, else the default ones),
//!   and every byte is relayed untouched, the hello included. A client
//!   whose hello is not one, or whose name has no route and no default, is
//!   closed, logged and counted. The hello is held as a partial message,
//!   so the reactor's frame timeout closes a client that stalls in it.

mod sni;
// TLS towards the upstreams (and `Relay::with_upstream_tls`), or, built
// without the `tls` feature, a kind of upstream TLS that no relay has.
#[cfg_attr(not(feature = "tls"), path = "relay/tls_off.rs")]
mod tls;
mod upstreams;

pub use sni::SniRoutes;
pub use upstreams::{CurrentUpstreams, UpstreamSet, UpstreamsError, parse_upstreams};

use std::cell::OnceCell;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use slab::Slab;

use crate::codec::client_hello;
use crate::codec::proxy::{self, Addresses, Version};
use crate::reactor::{Addr, CloseReason, ConnId, Context, MetricKind, MetricsText, Service};

/// The pool of the default upstreams (`--upstream`), first in `pools`.
const DEFAULT_POOL: usize = 0;

/// How long an upstream is skipped after a failed connect, unless told
/// otherwise ([`Relay::with_down_time`]).
pub const DEFAULT_DOWN_TIME: Duration = Duration::from_secs(2);

/// An upstream that keeps failing is skipped for at most this many times
/// its first down time.
pub const MAX_DOWN_FACTOR: u32 = 64;

/// How a relay picks each client's upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Balance {
    /// Each in turn.
    #[default]
    RoundRobin,
    /// The one with the fewest pairs open or connecting; ties in turn.
    LeastConn,
}

impl FromStr for Balance {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "round-robin" => Ok(Self::RoundRobin),
            "least-conn" => Ok(Self::LeastConn),
            other => Err(format!(
                "unknown balance `{other}`: expected round-robin or least-conn"
            )),
        }
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RoundRobin => "round-robin",
            Self::LeastConn => "least-conn",
        })
    }
}

/// When a relay moves bytes with splice(2) rather than through user space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpliceMode {
    /// Each direction once one read fills a whole read chunk: bulk
    /// transfers go zero-copy, small requests and replies stay on the copy
    /// path, which costs them fewer syscalls (splice takes two per read).
    Auto,
    /// Every byte, from the start.
    Always,
}

impl FromStr for SpliceMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "always" => Ok(Self::Always),
            other => Err(format!(
                "unknown splice mode `{other}`: expected auto or always"
            )),
        }
    }
}

/// The relay service: pairs each client with an upstream connection of its
/// own and carries bytes, FINs and failures between the two.
pub struct Relay {
    /// The default upstreams first ([`DEFAULT_POOL`]), then those of each
    /// SNI route, in the order of [`SniRoutes::targets`].
    pools: Vec<Pool>,
    /// Where a client goes by the server name of its ClientHello, if the
    /// relay routes by it.
    routes: Option<SniRoutes>,
    /// Clients closed because their first bytes were no ClientHello.
    bad_hellos: u64,
    /// Clients closed because no route took their server name.
    unrouted: u64,
    /// Move bytes with splice(2) once both sides are up, where the OS can.
    splice: Option<SpliceMode>,
    /// The PROXY protocol header each upstream connection starts with, if any.
    send_proxy: Option<Version>,
    /// Where clients connect to: the destination PROXY headers name. Set
    /// once the listener is bound, when the relay is already in its reactor.
    listen_addr: OnceCell<Addr>,
    /// Client and upstream of each pair; both sides' state is its key.
    pairs: Slab<Pair>,
    /// Upstream connects in progress: upstream id → its pair.
    connecting: HashMap<ConnId, usize>,
    /// Speak TLS to the upstreams.
    tls: Option<tls::UpstreamTls>,
    /// Where newer sets of upstreams are published, if they may change.
    reloads: Option<Arc<CurrentUpstreams>>,
}

impl Relay {
    /// `upstreams` must not be empty.
    pub fn new(upstreams: Vec<Addr>) -> Relay {
        assert!(!upstreams.is_empty(), "a relay needs an upstream");
        Relay::with_pools(upstreams, None)
    }

    /// A relay that reads each client's TLS ClientHello before it
    /// connects, and sends it to the upstreams `routes` gives its server
    /// name, else to `default` (round-robin, or by
    /// [`with_balance`](Self::with_balance), as those of each route).
    /// `default` may be empty: then a client whose name has no route is
    /// closed. `routes` must not be empty.
    pub fn by_server_name(routes: SniRoutes, default: Vec<Addr>) -> Relay {
        assert!(!routes.is_empty(), "a relay by server name needs a route");
        Relay::with_pools(default, Some(routes))
    }

    fn with_pools(default: Vec<Addr>, routes: Option<SniRoutes>) -> Relay {
        let pool = |addrs| Pool::new(addrs, Balance::RoundRobin, DEFAULT_DOWN_TIME);
        let routed = routes.iter().flat_map(|r| r.targets().iter().cloned());
        Relay {
            pools: std::iter::once(default).chain(routed).map(pool).collect(),
            routes,
            bad_hellos: 0,
            unrouted: 0,
            splice: None,
            send_proxy: None,
            listen_addr: OnceCell::new(),
            pairs: Slab::new(),
            connecting: HashMap::new(),
            tls: None,
            reloads: None,
        }
    }

    /// Takes each newer set published in `current` when its reactor is
    /// woken ([`Handle::wake`](crate::reactor::Handle::wake)), or before
    /// the next client if that comes first: new clients go to it, pairs
    /// open keep their upstream. `/metrics` shows the set's
    /// generation and the reloads `current` refused.
    pub fn with_reloads(mut self, current: Arc<CurrentUpstreams>) -> Relay {
        self.reloads = Some(current);
        self
    }

    /// Relays with splice(2) instead of copying through user space. Where
    /// the OS has none ([`sys::SPLICE`](crate::sys::SPLICE) is false), the
    /// first pair says so in a warning and every pair copies.
    pub fn with_splice(self) -> Relay {
        self.with_splice_mode(SpliceMode::Always)
    }

    /// As [`with_splice`](Self::with_splice), with `mode` saying when.
    pub fn with_splice_mode(mut self, mode: SpliceMode) -> Relay {
        self.splice = Some(mode);
        self
    }

    /// Picks each client's upstream by `balance` (round-robin by default).
    pub fn with_balance(mut self, balance: Balance) -> Relay {
        for pool in &mut self.pools {
            pool.balance = balance;
        }
        self
    }

    /// Skips an upstream whose connect failed for `down_time` (doubling
    /// while it keeps failing, up to [`MAX_DOWN_FACTOR`] times); zero never
    /// skips one. [`DEFAULT_DOWN_TIME`] by default.
    pub fn with_down_time(mut self, down_time: Duration) -> Relay {
        for pool in &mut self.pools {
            pool.down_time = down_time;
        }
        self
    }

    /// Starts each upstream connection with a PROXY protocol header of
    /// `version`: the client's address, and as the destination the address
    /// given to [`set_listen_addr`](Self::set_listen_addr). Where either is
    /// not an IP address (a Unix-domain socket), or the listening address
    /// was never given, the header names none: v1 `PROXY UNKNOWN`, v2 `LOCAL`.
    pub fn with_send_proxy(mut self, version: Version) -> Relay {
        self.send_proxy = Some(version);
        self
    }

    /// Where clients connect to, for the PROXY headers. The relay is inside
    /// its reactor by the time the listener is bound, so this takes `&self`;
    /// only the first call counts.
    pub fn set_listen_addr(&self, addr: Addr) {
        let _ = self.listen_addr.set(addr);
    }

    /// Upstream connects in progress.
    pub fn pending_connects(&self) -> usize {
        self.connecting.len()
    }

    /// Pairs with at least one side still open.
    pub fn open_pairs(&self) -> usize {
        self.pairs.len()
    }
}

/// A client and its upstream.
struct Pair {
    /// `None` once the client's side has closed.
    client: Option<ConnId>,
    client_addr: ClientAddr,
    /// Its ClientHello is awaited: nothing is connected yet.
    awaiting_hello: bool,
    /// The pool its upstreams come from (an index into `pools`).
    pool: usize,
    /// The upstream it goes to (a key of its pool), or last tried.
    upstream: usize,
    /// The upstream connection, connecting or up; `None` once closed.
    upstream_conn: Option<ConnId>,
    /// While the upstream connect is in progress.
    connecting: Option<Connecting>,
}

#[derive(Default)]
struct Connecting {
    /// Upstreams tried for this client, the one connecting last.
    tried: Vec<usize>,
    /// What the client has sent so far, while another upstream is left to
    /// try if this one fails: it went into the connecting upstream's output
    /// too, and is lost with it.
    early: Vec<u8>,
    /// The client has sent FIN.
    fin: bool,
}

/// A client's address and, if its TLS certificate named it, who it is:
/// how log lines name the client, and what its PROXY header says.
struct ClientAddr {
    addr: Addr,
    identity: Option<Box<str>>,
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.identity {
            Some(identity) => write!(f, "{} as {identity:?}", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

/// One side of a pair: the key of the pair it belongs to.
pub struct Side {
    pair: usize,
}

impl Relay {
    /// The addresses a PROXY header names for a client at `client`.
    fn proxy_addresses(&self, client: &Addr) -> Option<Addresses> {
        Some(Addresses {
            source: client.ip()?,
            destination: self.listen_addr.get()?.ip()?,
        })
    }

    /// The PROXY header of `version` for pair `key`'s upstream: in v2, for
    /// a client that came over TLS, with the SSL field (its TLS version and
    /// the name on its certificate) that HAProxy's `send-proxy-v2-ssl-cn`
    /// sends.
    fn proxy_header(&self, ctx: &Context<'_>, key: usize, version: Version) -> Vec<u8> {
        let client = &self.pairs[key].client_addr;
        let addresses = self.proxy_addresses(&client.addr);
        let tls = self.pairs[key].client.and_then(|id| ctx.tls(id));
        let mut out = Vec::new();
        match (version, addresses, tls) {
            (Version::V2, Some(a), Some(tls)) => {
                let version = openssl_version_name(tls);
                let ssl = proxy::Ssl::of_client(version.as_deref(), client.identity.as_deref());
                proxy::encode_v2_with_ssl(a.source, a.destination, &ssl, &mut out);
            }
            _ => proxy::encode(version, addresses, &mut out),
        }
        out
    }

    /// Starts pair `key`'s upstream connect on the next upstream it has not
    /// tried, queueing the PROXY header, what the client has sent so far and
    /// its FIN. False once every upstream has been tried. A connect that
    /// fails, even at once, is heard of in `on_connect_failed`.
    fn connect_next(&mut self, ctx: &mut Context<'_>, key: usize) -> bool {
        let header = self.send_proxy.map(|v| self.proxy_header(ctx, key, v));
        let pair = &mut self.pairs[key];
        let (Some(client), Some(connecting)) = (pair.client, pair.connecting.as_mut()) else {
            return false;
        };
        let pool = &mut self.pools[pair.pool];
        let Some(i) = pool.pick(ctx.now(), &connecting.tried) else {
            return false;
        };
        connecting.tried.push(i);
        let addr = &pool.upstreams[&i].addr;
        let up = match &mut self.tls {
            Some(tls) => match tls.connect(ctx, addr, client) {
                Ok(up) => up,
                Err(e) => {
                    let from = ctx.peer_label(client);
                    warn!("relay {client} {from} → {addr}: no TLS session: {e}");
                    return false;
                }
            },
            None => ctx.connect(addr, None),
        };
        debug!("{client} from {} → {up} to {addr}", pair.client_addr);
        pool.upstream(i).pairs += 1;
        pair.upstream = i;
        pair.upstream_conn = Some(up);
        self.connecting.insert(up, key);
        ctx.link(client, up);
        // The connection is not up: all of this is queued, in this order.
        if let Some(header) = header {
            ctx.write(up, &header);
        }
        if !connecting.early.is_empty() {
            ctx.write(up, &connecting.early);
        }
        if connecting.fin {
            ctx.shutdown_write(up);
        }
        if !pool.untried_left(&connecting.tried) {
            // No other upstream to fall back on: no copy needed.
            connecting.early = Vec::new();
        }
        true
    }

    /// Takes the latest set of upstreams, if it is newer than the pool's.
    fn take_newer_set(&mut self) {
        let Some(reloads) = &self.reloads else {
            return;
        };
        let pool = &mut self.pools[DEFAULT_POOL];
        if reloads.generation() > pool.generation {
            let set = reloads.latest();
            pool.replace(&set.addrs, set.generation);
            debug!("upstreams of generation {} taken", set.generation);
        }
    }

    /// Pair `key`'s upstream `id` is up.
    fn upstream_up(&mut self, ctx: &mut Context<'_>, id: ConnId, addr: &Addr, key: usize) -> Side {
        let pair = &mut self.pairs[key];
        pair.connecting = None;
        if let Some(failed) = self.pools[pair.pool].succeeded(pair.upstream) {
            info!("upstream {addr} is back, after {failed} failed connects");
        }
        let Some(client) = pair.client else {
            ctx.close(id);
            return Side { pair: key };
        };
        debug!(
            "{client} from {}{}: upstream {id} at {addr} is up{}",
            pair.client_addr,
            tls_note(ctx.tls(client)),
            tls_note(ctx.tls(id)),
        );
        // What the client sent meanwhile goes out now, and later bytes by
        // splice if asked (falling back to copying).
        let spliced = match self.splice {
            None => Ok(()),
            Some(SpliceMode::Auto) => ctx.splice_bulk(client, id),
            Some(SpliceMode::Always) => ctx.splice(client, id),
        };
        if let Err(e) = spliced {
            warn!(
                "relay {client} {} → {addr}: no splice ({e}), copying instead",
                ctx.peer_label(client)
            );
            // It will not come back for the next pair.
            if e.kind() == io::ErrorKind::Unsupported {
                self.splice = None;
            }
        }
        Side { pair: key }
    }
}

/// Where a client routed by its ClientHello stands after its latest bytes.
enum Routing {
    /// The hello is not whole yet: its bytes stay unconsumed.
    Incomplete,
    /// Its upstream is connecting: its bytes go there.
    Connecting,
    /// Closed: no hello, or nowhere to go.
    Refused,
}

impl Relay {
    /// Pair `key`'s `client` has sent `input`, and nothing is connected for
    /// it yet: once `input` holds its whole ClientHello, the server name
    /// picks a pool and the connect starts.
    fn route_by_hello(
        &mut self,
        ctx: &mut Context<'_>,
        client: ConnId,
        key: usize,
        input: &[u8],
    ) -> Routing {
        let client_addr = &self.pairs[key].client_addr;
        let hello = match client_hello::decode(input) {
            Ok(None) => return Routing::Incomplete,
            Ok(Some(hello)) => hello,
            Err(e) => {
                self.bad_hellos += 1;
                warn!("relay {client_addr}: {e}; closing");
                ctx.abort(client, CloseReason::Protocol);
                return Routing::Refused;
            }
        };
        let name = hello.server_name.as_deref();
        let Some(pool) = self.pool_for(name) else {
            self.unrouted += 1;
            let name = name.map_or_else(|| "none".to_owned(), |n| format!("`{n}`"));
            warn!(
                "relay {client_addr}: no route for server name {name} and no default upstream; closing"
            );
            ctx.abort(client, CloseReason::Local);
            return Routing::Refused;
        };
        debug!("relay {client_addr}: server name {name:?}");
        let pair = &mut self.pairs[key];
        pair.awaiting_hello = false;
        pair.pool = pool;
        if !self.connect_next(ctx, key) {
            ctx.abort(client, CloseReason::Local);
            return Routing::Refused;
        }
        Routing::Connecting
    }

    /// The pool for a client asking for `name`: its route's, else the
    /// default one unless that is empty.
    fn pool_for(&self, name: Option<&str>) -> Option<usize> {
        let routes = self.routes.as_ref()?;
        let routed = name.and_then(|name| routes.route(name));
        let default = (!self.pools[DEFAULT_POOL].current.is_empty()).then_some(DEFAULT_POOL);
        // Routes' pools follow the default one.
        routed.map(|i| i + 1).or(default)
    }

    fn write_sni_metrics(&self, out: &mut MetricsText) {
        out.single(
            "sockloop_sni_bad_hellos_total",
            MetricKind::Counter,
            "Clients closed because their first bytes were not a TLS ClientHello the relay reads.",
            self.bad_hellos,
        );
        out.single(
            "sockloop_sni_unrouted_total",
            MetricKind::Counter,
            "Clients closed because no --route-sni took their server name and there is no default upstream.",
            self.unrouted,
        );
    }
}

/// Whether a failed connect says something about the upstream (refused,
/// timed out, unreachable, no such socket file, its queue full, a TLS
/// handshake it failed or cut short), rather than about this host (out of
/// descriptors, say).
fn blames_upstream(kind: io::ErrorKind) -> bool {
    use io::ErrorKind::*;
    matches!(
        kind,
        ConnectionRefused
            | ConnectionReset
            | BrokenPipe
            | InvalidData
            | UnexpectedEof
            | TimedOut
            | HostUnreachable
            | NetworkUnreachable
            | NetworkDown
            | NotFound
            | PermissionDenied
            | WouldBlock
    )
}

impl Service for Relay {
    type Conn = Option<Side>;

    fn on_connect(&mut self, ctx: &mut Context<'_>, id: ConnId, addr: &Addr) -> Option<Side> {
        if let Some(key) = self.connecting.remove(&id) {
            return Some(self.upstream_up(ctx, id, addr, key));
        }
        // The wake that brings a newer set may come after this client, in
        // the same turn: a client accepted once it is published goes to it.
        self.take_newer_set();
        let key = self.pairs.insert(Pair {
            client: Some(id),
            client_addr: ClientAddr {
                addr: addr.clone(),
                identity: ctx.peer_identity(id).map(Box::from),
            },
            awaiting_hello: self.routes.is_some(),
            pool: DEFAULT_POOL,
            upstream: 0,
            upstream_conn: None,
            connecting: Some(Connecting::default()),
        });
        if self.routes.is_some() {
            // Its ClientHello says where it goes.
            return Some(Side { pair: key });
        }
        if !self.connect_next(ctx, key) {
            // Only a TLS session that would not start; its close removes the pair.
            ctx.abort(id, CloseReason::Local);
        }
        Some(Side { pair: key })
    }

    fn on_connect_failed(&mut self, ctx: &mut Context<'_>, id: ConnId, error: io::Error) {
        let Some(key) = self.connecting.remove(&id) else {
            return;
        };
        let pair = &mut self.pairs[key];
        let i = pair.upstream;
        pair.upstream_conn = None;
        let pool = &mut self.pools[pair.pool];
        let upstream = pool.upstreams[&i].addr.clone();
        // The reactor gave it up (a shutdown's deadline), the upstream did not fail.
        let abandoned = error.kind() == io::ErrorKind::ConnectionAborted;
        if !abandoned && blames_upstream(error.kind()) {
            pool.failed(i, ctx.now(), &error);
        }
        // Last: an upstream of an older set goes with its last pair.
        pool.detach(i);
        if !abandoned && self.connect_next(ctx, key) {
            debug!(
                "relay {} → {upstream}: {error}; trying the next upstream",
                self.pairs[key].client_addr
            );
            return;
        }
        let pair = &mut self.pairs[key];
        pair.connecting = None;
        match pair.client {
            Some(client) => warn!(
                "relay {client} {} → {upstream}: {error}; closing the client",
                ctx.peer_label(client)
            ),
            None => warn!("relay {} → {upstream}: {error}", pair.client_addr),
        }
        match pair.client {
            // Its close removes the pair.
            Some(client) => ctx.abort(client, CloseReason::Error(error.kind())),
            None => {
                self.pairs.remove(key);
            }
        }
    }

    fn on_data(
        &mut self,
        ctx: &mut Context<'_>,
        id: ConnId,
        side: &mut Option<Side>,
        input: &[u8],
    ) -> usize {
        let Some(key) = side
            .as_ref()
            .map(|s| s.pair)
            .filter(|&k| self.pairs.contains(k))
        else {
            return input.len();
        };
        if self.pairs[key].awaiting_hello {
            match self.route_by_hello(ctx, id, key, input) {
                Routing::Incomplete => return 0,
                Routing::Refused => return input.len(),
                Routing::Connecting => {}
            }
        }
        let pair = &mut self.pairs[key];
        let peer = if pair.client == Some(id) {
            if let Some(connecting) = &mut pair.connecting
                && self.pools[pair.pool].untried_left(&connecting.tried)
            {
                connecting.early.extend_from_slice(input);
            }
            pair.upstream_conn
        } else {
            pair.client
        };
        if !peer.is_some_and(|peer| ctx.forward(peer, 0..input.len())) {
            ctx.abort(id, CloseReason::Local);
        }
        input.len()
    }

    fn on_read_closed(
        &mut self,
        ctx: &mut Context<'_>,
        id: ConnId,
        side: &mut Option<Side>,
        _: &[u8],
    ) {
        let Some(pair) = side.as_ref().and_then(|s| self.pairs.get_mut(s.pair)) else {
            return ctx.close(id);
        };
        if pair.awaiting_hello {
            debug!(
                "relay {}: closed before its whole ClientHello",
                pair.client_addr
            );
            return ctx.close(id);
        }
        let peer = if pair.client == Some(id) {
            if let Some(connecting) = &mut pair.connecting {
                connecting.fin = true;
            }
            pair.upstream_conn
        } else {
            pair.client
        };
        // Pass the FIN on once the bytes before it are through.
        if let Some(peer) = peer {
            ctx.shutdown_write(peer);
        }
    }

    fn on_close(
        &mut self,
        ctx: &mut Context<'_>,
        id: ConnId,
        side: Option<Side>,
        reason: CloseReason,
    ) {
        let Some(Side { pair: key }) = side else {
            return;
        };
        let Some(pair) = self.pairs.get_mut(key) else {
            return;
        };
        let peer = if pair.client == Some(id) {
            pair.client = None;
            // A client gone before its upstream is up: that connect is abandoned.
            if pair.connecting.take().is_some()
                && let Some(up) = pair.upstream_conn.take()
            {
                self.connecting.remove(&up);
                self.pools[pair.pool].detach(pair.upstream);
                ctx.abort(up, reason);
            }
            pair.upstream_conn
        } else {
            pair.upstream_conn = None;
            self.pools[pair.pool].detach(pair.upstream);
            pair.client
        };
        if pair.client.is_none() && pair.upstream_conn.is_none() {
            self.pairs.remove(key);
        }
        let Some(peer) = peer else {
            return;
        };
        match reason {
            // Both directions finished: the other side winds down by itself.
            CloseReason::Peer => ctx.close(peer),
            // Nothing was in flight (idle), or the relay itself or the
            // shutdown ended the pair: the other side is closed alike.
            CloseReason::Idle | CloseReason::Local | CloseReason::Shutdown => {
                ctx.abort(peer, reason);
            }
            // A stream cut short on one side (a TLS one without its
            // close_notify, one whose peer vanished, one that stopped
            // reading or was shed) must not look complete on the other.
            CloseReason::Error(_)
            | CloseReason::TlsTruncated
            | CloseReason::TcpTimeout
            | CloseReason::WriteTimeout
            | CloseReason::OverBudget
            | CloseReason::Protocol
            | CloseReason::FrameTimeout
            | CloseReason::HandshakeTimeout
            | CloseReason::Limit => {
                warn!(
                    "relay: {id} ({}) {reason}; resetting {peer} ({})",
                    addr_or_unknown(ctx.peer_addr(id)),
                    addr_or_unknown(ctx.peer_addr(peer)),
                );
                // The kernel gave up on one peer, not on both.
                let cut_short = match reason {
                    CloseReason::TcpTimeout => CloseReason::Error(io::ErrorKind::TimedOut),
                    reason => reason,
                };
                ctx.reset(peer, cut_short);
            }
        }
    }

    fn on_wake(&mut self, _: &mut Context<'_>) {
        self.take_newer_set();
    }

    fn metrics(&self, now: Instant, out: &mut MetricsText) {
        let default = &self.pools[DEFAULT_POOL];
        default.write_metrics(now, out);
        out.single(
            "sockloop_upstreams_generation",
            MetricKind::Gauge,
            "The set of upstreams new clients go to: 1 at start, +1 per reload taken.",
            default.generation,
        );
        out.single(
            "sockloop_upstreams_reloads_rejected_total",
            MetricKind::Counter,
            "Reloads of the upstreams file refused (unreadable, or a bad line): the set stayed.",
            self.reloads.as_ref().map_or(0, |r| r.rejected()),
        );
        if self.routes.is_some() {
            self.write_sni_metrics(out);
        }
    }
}

/// A connection's TLS summary (protocol, suite, SNI, ALPN) for a log line.
/// The TLS version at the front of a TLS summary (`TLSv1_3 …`), as
/// OpenSSL names it (`TLSv1.3`): what receivers of PROXY headers expect.
fn openssl_version_name(summary: &str) -> Option<String> {
    let version = summary.split(' ').next()?;
    version
        .starts_with("TLSv")
        .then(|| version.replace('_', "."))
}

fn tls_note(summary: Option<&str>) -> String {
    summary.map_or_else(String::new, |s| format!(" ({s})"))
}

fn addr_or_unknown(addr: Option<&Addr>) -> String {
    addr.map_or_else(|| "gone".to_string(), |a| a.to_string())
}

/// The upstreams, their health and their load: which one a connect goes
/// to. Told the time rather than reading it, so that it is tested without
/// sockets or sleeps.
///
/// An upstream is known by its key in `upstreams`, never given to another
/// (a client's list of upstreams tried stays true across reloads): a
/// reload replaces `current`, and an upstream that is no longer in it goes
/// when its last pair does.
struct Pool {
    /// The current set's upstreams, and those of older sets still in use.
    upstreams: HashMap<usize, Upstream>,
    /// The key the next upstream new to the pool gets.
    next_key: usize,
    /// The current set, in order: keys of `upstreams`.
    current: Vec<usize>,
    /// The current set's: 1 at start, +1 per reload taken.
    generation: u64,
    balance: Balance,
    down_time: Duration,
    /// Where the next turn starts, in `current`.
    next: usize,
}

struct Upstream {
    addr: Addr,
    /// Pairs open or connecting through it.
    pairs: usize,
    /// Failed connects since it was last up, counting only those that were
    /// tried when it was due.
    failures: u32,
    /// Skipped until then, after a failed connect.
    down_until: Option<Instant>,
}

impl Pool {
    fn new(addrs: Vec<Addr>, balance: Balance, down_time: Duration) -> Pool {
        let mut pool = Pool {
            upstreams: HashMap::new(),
            next_key: 0,
            current: Vec::new(),
            generation: 0,
            balance,
            down_time,
            next: 0,
        };
        pool.replace(&addrs, 1);
        pool
    }

    /// Makes `addrs` the set new connects go to. An upstream in the old
    /// set and the new keeps its pairs and its health; one only in the old
    /// stays while pairs use it. The turn starts again at the first.
    fn replace(&mut self, addrs: &[Addr], generation: u64) {
        let mut current = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let known = self.upstreams.iter().find(|(_, u)| u.addr == *addr);
            let key = match known {
                Some((&key, _)) => key,
                None => {
                    let key = self.next_key;
                    self.next_key += 1;
                    let fresh = Upstream {
                        addr: addr.clone(),
                        pairs: 0,
                        failures: 0,
                        down_until: None,
                    };
                    self.upstreams.insert(key, fresh);
                    key
                }
            };
            current.push(key);
        }
        self.upstreams
            .retain(|key, u| u.pairs > 0 || current.contains(key));
        self.current = current;
        self.generation = generation;
        self.next = 0;
    }

    /// Upstream `i`, of the current set or used by a pair.
    fn upstream(&mut self, i: usize) -> &mut Upstream {
        self.upstreams.get_mut(&i).expect("an upstream of the pool")
    }

    /// Whether the current set has an upstream not in `tried`.
    fn untried_left(&self, tried: &[usize]) -> bool {
        self.current.iter().any(|key| !tried.contains(key))
    }

    /// Each current upstream's pairs, whether it is being skipped, and its failures
    /// in a row, labelled by its address.
    fn write_metrics(&self, now: Instant, out: &mut MetricsText) {
        type Value = fn(&Upstream, Instant) -> u64;
        let gauges: [(&str, &str, Value); 3] = [
            (
                "sockloop_upstream_pairs",
                "Relayed pairs open or connecting through the upstream.",
                |u, _| u.pairs as u64,
            ),
            (
                "sockloop_upstream_down",
                "1 while the upstream is skipped after failed connects.",
                |u, now| u64::from(u.down_until.is_some_and(|t| t > now)),
            ),
            (
                "sockloop_upstream_failures",
                "Failed connects to the upstream since it was last up.",
                |u, _| u64::from(u.failures),
            ),
        ];
        for (name, help, value) in gauges {
            out.family(name, MetricKind::Gauge, help);
            for u in self.current.iter().map(|&key| &self.upstreams[&key]) {
                out.sample(name, &[("upstream", &u.addr.to_string())], value(u, now));
            }
        }
    }

    /// The upstream for a connect, among those of the current set not in
    /// `tried`: by the balance among those that are up, or, if all of those
    /// left are down, among those (better a try than refusing the client).
    /// `None` once every one has been tried.
    fn pick(&mut self, now: Instant, tried: &[usize]) -> Option<usize> {
        let up = |u: &Upstream| u.down_until.is_none_or(|t| t <= now);
        self.choose(|i, u| !tried.contains(&i) && up(u))
            .or_else(|| self.choose(|i, _| !tried.contains(&i)))
    }

    /// Round-robin: the first eligible one from where the last turn ended;
    /// least-conn: the one with the fewest pairs, the first of those from
    /// there on a tie. The next turn starts after it.
    fn choose(&mut self, eligible: impl Fn(usize, &Upstream) -> bool) -> Option<usize> {
        let n = self.current.len();
        // Positions in `current`.
        let mut best: Option<usize> = None;
        for at in (self.next..n).chain(0..self.next) {
            let key = self.current[at];
            let u = &self.upstreams[&key];
            if !eligible(key, u) {
                continue;
            }
            match self.balance {
                Balance::RoundRobin => {
                    best = Some(at);
                    break;
                }
                Balance::LeastConn => {
                    let fewer = |b: usize| u.pairs < self.upstreams[&self.current[b]].pairs;
                    if best.is_none_or(fewer) {
                        best = Some(at);
                    }
                }
            }
        }
        let at = best?;
        self.next = (at + 1) % n;
        Some(self.current[at])
    }

    /// A pair through upstream `i` has closed, or its connect has ended.
    /// An upstream no longer in the set goes with its last pair.
    fn detach(&mut self, i: usize) {
        let pairs = &mut self.upstream(i).pairs;
        debug_assert!(*pairs > 0, "more pairs closed than opened");
        *pairs = pairs.saturating_sub(1);
        if *pairs == 0 && !self.current.contains(&i) {
            self.upstreams.remove(&i);
        }
    }

    /// A connect to upstream `i` failed at `now`. If it was up, or its down
    /// time was over, it is down again for twice as long as the last time
    /// (the first time: the down time); a connect tried while it was still
    /// down (every upstream was) changes nothing.
    fn failed(&mut self, i: usize, now: Instant, error: &io::Error) {
        let base = self.down_time;
        let u = self.upstream(i);
        if u.down_until.is_some_and(|t| t > now) {
            return;
        }
        u.failures = u.failures.saturating_add(1);
        let factor = 1u32
            .checked_shl(u.failures - 1)
            .unwrap_or(u32::MAX)
            .min(MAX_DOWN_FACTOR);
        let down = base.saturating_mul(factor);
        u.down_until = Some(now + down);
        if u.failures == 1 {
            warn!(
                "upstream {} is down ({error}): skipped for {down:?}",
                u.addr
            );
        } else {
            warn!(
                "upstream {} is still down ({error}, {} failed connects): skipped for {down:?}",
                u.addr, u.failures
            );
        }
    }

    /// A connect to upstream `i` succeeded: it is up. How many connects had
    /// failed before, if any.
    fn succeeded(&mut self, i: usize) -> Option<u32> {
        let u = self.upstream(i);
        let failures = std::mem::take(&mut u.failures);
        u.down_until = None;
        (failures > 0).then_some(failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 127.0.0.1, port 9000 + `i`.
    fn local(i: u16) -> Addr {
        Addr::from(std::net::SocketAddr::from(([127, 0, 0, 1], 9000 + i)))
    }

    fn pool(n: u16, balance: Balance) -> Pool {
        Pool::new((0..n).map(local).collect(), balance, Duration::from_secs(2))
    }

    fn refused() -> io::Error {
        io::Error::from(io::ErrorKind::ConnectionRefused)
    }

    /// The upstreams `n` first tries go to, each attached as it is picked.
    fn picks(pool: &mut Pool, now: Instant, n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| {
                let i = pool.pick(now, &[]).unwrap();
                pool.upstream(i).pairs += 1;
                i
            })
            .collect()
    }

    #[test]
    fn round_robin_takes_each_in_turn() {
        let mut pool = pool(3, Balance::RoundRobin);
        assert_eq!(picks(&mut pool, Instant::now(), 7), [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn least_conn_takes_the_fewest_pairs_and_breaks_ties_in_turn() {
        let mut pool = pool(3, Balance::LeastConn);
        let now = Instant::now();
        assert_eq!(picks(&mut pool, now, 3), [0, 1, 2]);
        // Upstream 1's pairs close: it alone has the fewest.
        pool.upstream(1).pairs = 0;
        assert_eq!(picks(&mut pool, now, 1), [1]);
        // A tie of all three: in turn, from after the last one picked.
        assert_eq!(picks(&mut pool, now, 3), [2, 0, 1]);
        pool.upstream(0).pairs = 10;
        assert_eq!(picks(&mut pool, now, 4), [2, 1, 2, 1]);
    }

    #[test]
    fn a_client_tries_each_upstream_at_most_once() {
        let mut pool = pool(3, Balance::RoundRobin);
        let now = Instant::now();
        assert_eq!(pool.pick(now, &[0]), Some(1));
        assert_eq!(pool.pick(now, &[1, 2]), Some(0));
        assert_eq!(pool.pick(now, &[0, 1, 2]), None);
    }

    #[test]
    fn a_failed_upstream_is_skipped_for_its_down_time_doubling_while_it_fails() {
        let mut pool = pool(2, Balance::RoundRobin);
        let t0 = Instant::now();
        pool.failed(0, t0, &refused());
        assert_eq!(picks(&mut pool, t0, 3), [1, 1, 1], "0 is skipped");
        let s = Duration::from_secs;
        assert_eq!(picks(&mut pool, t0 + s(1), 1), [1]);
        // Down time over: it is tried again, and fails again: 4 s this time.
        let t1 = t0 + s(2);
        assert_eq!(pool.pick(t1, &[]), Some(0));
        pool.failed(0, t1, &refused());
        assert_eq!(pool.upstreams[&0].down_until, Some(t1 + s(4)));
        assert_eq!(picks(&mut pool, t1 + s(3), 2), [1, 1]);
        let t2 = t1 + s(4);
        pool.failed(0, t2, &refused());
        assert_eq!(pool.upstreams[&0].down_until, Some(t2 + s(8)));
        // A connect that had started before it went down fails meanwhile:
        // that does not make it longer.
        pool.failed(0, t2 + s(1), &refused());
        assert_eq!(pool.upstreams[&0].down_until, Some(t2 + s(8)));
        // Success resets it.
        assert_eq!(pool.succeeded(0), Some(3));
        assert_eq!(pool.succeeded(0), None);
        pool.failed(0, t2 + s(2), &refused());
        assert_eq!(pool.upstreams[&0].down_until, Some(t2 + s(4)));
    }

    #[test]
    fn the_down_time_stops_doubling_at_its_cap() {
        let mut pool = pool(1, Balance::RoundRobin);
        let mut now = Instant::now();
        for _ in 0..40 {
            pool.failed(0, now, &refused());
            now = pool.upstreams[&0].down_until.unwrap();
        }
        let last = pool.upstreams[&0].down_until.unwrap();
        pool.failed(0, now, &refused());
        let cap = Duration::from_secs(2) * MAX_DOWN_FACTOR;
        assert_eq!(pool.upstreams[&0].down_until, Some(last + cap));
    }

    #[test]
    fn when_every_upstream_left_is_down_one_is_tried_anyway() {
        let mut pool = pool(3, Balance::LeastConn);
        let now = Instant::now();
        pool.failed(0, now, &refused());
        pool.failed(2, now, &refused());
        assert_eq!(pool.pick(now, &[]), Some(1));
        // 1 was tried for this client: of the down ones, the least loaded.
        pool.upstream(0).pairs = 1;
        assert_eq!(pool.pick(now, &[1]), Some(2));
        assert_eq!(pool.pick(now, &[1, 2]), Some(0));
    }

    #[test]
    fn a_reload_sends_new_connects_to_the_new_set_while_old_upstreams_stay_for_their_pairs() {
        let mut pool = pool(2, Balance::RoundRobin);
        let now = Instant::now();
        assert_eq!(picks(&mut pool, now, 2), [0, 1], "a pair on each");
        pool.failed(1, now, &refused());
        // 9001 stays in the new set, 9000 does not, 9005 is new.
        pool.replace(&[local(1), local(5)], 2);
        assert_eq!(
            (pool.current.as_slice(), pool.generation),
            ([1, 2].as_slice(), 2)
        );
        assert!(
            pool.upstreams[&1].down_until.is_some(),
            "9001 keeps its health"
        );
        assert_eq!(picks(&mut pool, now, 2), [2, 2], "9001 is down, 9000 gone");
        // A connect in progress that had tried 9000 has both of the new set left.
        assert!(pool.untried_left(&[0]));
        assert!(!pool.untried_left(&[0, 1, 2]));
        let mut page = MetricsText::default();
        pool.write_metrics(now, &mut page);
        let page = page.as_str();
        assert!(
            page.contains("sockloop_upstream_pairs{upstream=\"127.0.0.1:9005\"} 2"),
            "{page}"
        );
        assert!(
            !page.contains("127.0.0.1:9000"),
            "only the current set is shown: {page}"
        );
        // 9000's last pair closes: it goes; 9001's does: it stays, in the set.
        pool.detach(0);
        pool.detach(1);
        assert!(!pool.upstreams.contains_key(&0) && pool.upstreams.contains_key(&1));
        // A set that drops an upstream nobody uses drops it at once.
        pool.replace(&[local(5)], 3);
        assert_eq!(pool.upstreams.len(), 1);
        assert_eq!(pool.pick(now, &[]), Some(2));
        // A client that tried 9000 (key 0) before it went must not find a
        // new upstream under that key.
        pool.replace(&[local(7)], 4);
        assert_eq!(pool.pick(now, &[0]), Some(3));
    }

    #[test]
    fn balances_parse_as_users_type_them() {
        assert_eq!("least-conn".parse(), Ok(Balance::LeastConn));
        assert_eq!("round-robin".parse(), Ok(Balance::RoundRobin));
        assert!("random".parse::<Balance>().is_err());
        assert_eq!(Balance::LeastConn.to_string(), "least-conn");
    }
}
