//! What a reactor is told at start: limits, timeouts, buffer sizes.

use std::time::Duration;

use super::sources::Sources;
use crate::codec::cidr::{self, Cidr};
use crate::sys::{Addr, SocketOptions};

/// Knobs of a reactor. The defaults suit an echo server with many connections.
///
/// Change what you need and take the rest from the defaults. Every timeout
/// is off by default; here an idle timeout of 100 ms closes a client that
/// connects and says nothing, and the counters say why it closed:
///
/// ```
/// use std::io::Read;
/// use std::net::TcpStream;
/// use std::time::{Duration, Instant};
///
/// use sockloop::app::echo::Echo;
/// use sockloop::reactor::{CloseReason, Config, ListenOptions, Reactor};
///
/// let config = Config {
///     idle_timeout: Some(Duration::from_millis(100)),
///     high_watermark: 256 << 10, // stop reading a peer once 256 KiB of replies wait
///     low_watermark: 64 << 10,   // and start again below 64 KiB
///     ..Config::default()
/// };
/// let mut reactor = Reactor::new(config, Echo)?;
/// let addr = reactor.listen(&"127.0.0.1:0".parse()?, &ListenOptions::default())?;
/// let server = addr.ip().expect("a TCP address");
/// let handle = reactor.handle();
///
/// let silent = std::thread::spawn(move || {
///     let wait_for_close = || -> std::io::Result<(usize, Duration)> {
///         let start = Instant::now();
///         let mut stream = TcpStream::connect(server)?;
///         stream.set_read_timeout(Some(Duration::from_secs(10)))?;
///         let n = stream.read(&mut [0; 16])?; // 0: the server closed
///         Ok((n, start.elapsed()))
///     };
///     let result = wait_for_close();
///     handle.stop().expect("the reactor is running");
///     result
/// });
///
/// reactor.run()?;
/// let (n, waited) = silent.join().unwrap()?;
/// assert_eq!(n, 0);
/// assert!(waited >= Duration::from_millis(100));
/// assert_eq!(reactor.stats().closed_by(CloseReason::Idle), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Config {
    /// Connections beyond this many are accepted and closed at once, and
    /// logged at most once a second. A metrics listener's are not counted:
    /// they have a small budget of their own.
    pub max_conns: usize,
    /// Stop reading a connection whose unsent output is above this many bytes...
    pub high_watermark: usize,
    /// ...until it drains to this many.
    pub low_watermark: usize,
    /// The output all connections together may hold (their unsent bytes,
    /// not counting what the kernel holds). From half of it on, a
    /// connection whose output backs up at all is not read until that
    /// drains; past it, the connections with the largest backlogs are
    /// closed (RST) until the total is back at half. `usize::MAX`: no limit.
    pub max_buffered: usize,
    /// Bytes asked for by one `read`.
    pub read_chunk: usize,
    /// Bytes one connection may read per turn before others get theirs.
    pub read_budget: usize,
    /// Connections one listener may accept per turn. Small enough that a
    /// burst of new clients (each costing a relay an upstream connect) does
    /// not hold back the connections already served, large enough that a
    /// busy loop (up to `event_capacity` events a turn) still accepts fast.
    pub accept_budget: usize,
    /// Most events taken from the kernel per wait.
    pub event_capacity: usize,
    /// Close a connection with no traffic either way for this long.
    pub idle_timeout: Option<Duration>,
    /// Close a connection whose peer has not taken all the output that was
    /// pending when the timer was set, this long later. Taking a byte now
    /// and then does not count: a peer must drain its backlog, at least as
    /// fast as a backlog per timeout.
    pub write_timeout: Option<Duration>,
    /// Close a connection whose service has left a partial message (a frame
    /// not yet complete) unconsumed for this long since its first byte: a
    /// peer trickling bytes of a frame it never finishes (slowloris) does
    /// not keep its slot because every byte counts as traffic.
    pub frame_timeout: Option<Duration>,
    /// How long an accepted connection's PROXY header and TLS handshake may
    /// take before it is closed.
    pub handshake_timeout: Duration,
    /// How long a graceful shutdown may take before the rest is closed.
    pub shutdown_timeout: Duration,
    /// How long an outgoing connect may take, its TLS handshake included.
    pub connect_timeout: Duration,
    /// Log a one-line summary of the counters this often.
    pub stats_interval: Option<Duration>,
    /// One stderr line per readiness event and I/O call.
    pub trace: bool,
    /// Before sleeping in the poller, spin on non-blocking polls this long.
    pub busy_poll: Option<Duration>,
    /// How many replies to hold before sending them back to back: the sends
    /// of a group of events go out together after the group's reads. 0 or 1
    /// sends each reply as soon as its event is handled.
    pub hold_replies: usize,
    /// Every connection accepted for the service starts with a PROXY
    /// protocol header (v1 or v2), before TLS if any: the client it names
    /// is the connection's peer. One without a valid header is closed.
    pub proxy_protocol: bool,
    /// With `proxy_protocol`: the sources whose headers are believed. Empty:
    /// every source must send one (and is believed). Otherwise only these
    /// must; any other is served as a direct client, under its own
    /// address, and one that sends a header anyway is closed.
    pub proxy_from: Vec<Cidr>,
    /// Limits on each client address (the one a trusted PROXY header
    /// names), counted in one table by every reactor given a clone.
    pub per_source: Option<Sources>,
    /// Options for every accepted socket.
    pub socket: SocketOptions,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_conns: usize::MAX,
            high_watermark: 1 << 20,
            low_watermark: 256 << 10,
            max_buffered: 256 << 20,
            read_chunk: 64 << 10,
            read_budget: 256 << 10,
            accept_budget: 32,
            event_capacity: 1024,
            idle_timeout: None,
            write_timeout: None,
            frame_timeout: None,
            handshake_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            stats_interval: None,
            trace: false,
            busy_poll: None,
            hold_replies: 32,
            proxy_protocol: false,
            proxy_from: Vec::new(),
            per_source: None,
            socket: SocketOptions::default(),
        }
    }
}

impl Config {
    /// Whether a connection from `peer` starts with a PROXY header: on a
    /// PROXY listener, from a trusted source. A Unix-domain peer has no
    /// address to match a list against.
    pub(crate) fn expects_proxy_from(&self, peer: &Addr) -> bool {
        self.proxy_protocol
            && (self.proxy_from.is_empty()
                || peer
                    .ip()
                    .is_some_and(|ip| cidr::any_contains(&self.proxy_from, ip.ip())))
    }
}
