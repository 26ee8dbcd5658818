//! The `sockloop` command line.

use std::fmt;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand};
use log::{error, info, warn};

use sockloop::app::echo::{Echo, FramedEcho};
use sockloop::app::hub::{Hub, SlowPolicy};
use sockloop::app::relay::{Balance, Relay, SpliceMode};
use sockloop::bench::{self, Mode};
use sockloop::codec::proxy::Version as ProxyVersion;
use sockloop::codec::{Codec, DEFAULT_MAX_FRAME_LEN, Framing};
use sockloop::reactor::{Config, Reactor, Service};
use sockloop::stderr;
use sockloop::sys::{self, Addr, ListenOptions, SocketOptions, raise_fd_limit};
use sockloop::threads::{self, Supervisor};

#[derive(Parser)]
#[command(
    version,
    about = "A hand-rolled epoll/kqueue reactor for TCP, and servers on it"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Echo every byte, or every frame, back to its sender.
    Echo(EchoArgs),
    /// Proxy each client to an upstream (round-robin or least-conn, failed ones skipped), both ways.
    Relay(RelayArgs),
    /// Relay every frame a client sends to every other connected client.
    Hub(HubArgs),
    /// Load an echo server with many connections from one thread; verify every byte.
    Bench(BenchArgs),
    /// Write a self-signed certificate and key to try TLS with: DIR/cert.pem, DIR/key.pem.
    #[cfg(feature = "tls")]
    Cert(CertArgs),
}

#[cfg(feature = "tls")]
#[derive(Args)]
struct CertArgs {
    /// Directory for cert.pem and key.pem (made if it does not exist).
    #[arg(long)]
    out: std::path::PathBuf,
    /// The name the certificate is for, a DNS name or an IP address
    /// (127.0.0.1 and ::1 are always in it).
    #[arg(long, default_value = "localhost", value_parser = parse_cert_name)]
    name: String,
    /// Replace cert.pem and key.pem if they are there already (refused
    /// otherwise: a key thrown away cannot be had back).
    #[arg(long)]
    force: bool,
}

/// TLS on a server's listener.
#[derive(Args)]
struct TlsArgs {
    /// Serve TLS with this certificate chain (PEM; `sockloop cert` makes one).
    #[cfg(feature = "tls")]
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[cfg(feature = "tls")]
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// ALPN protocols to offer, most preferred first (e.g. h2,http/1.1).
    #[cfg(feature = "tls")]
    #[arg(long, value_delimiter = ',')]
    alpn: Vec<String>,
    /// Close a client that has not finished its TLS handshake (and sent its
    /// PROXY header, with --proxy-protocol) within this long.
    #[arg(long, default_value = "10s", value_parser = refuse_zero(parse_duration))]
    handshake_timeout: Duration,
}

impl TlsArgs {
    /// Whether the listener serves TLS.
    fn on(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls_cert.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    /// Listens on `addr`, with TLS if asked.
    fn listen<S: Service>(
        &self,
        reactor: &mut Reactor<S>,
        addr: &Addr,
        options: &ListenOptions,
    ) -> io::Result<Addr> {
        #[cfg(feature = "tls")]
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            let config = sockloop::tls::server_config(cert, key, &self.alpn)?;
            return reactor.listen_tls(addr, options, config);
        }
        reactor.listen(addr, options)
    }
}

#[derive(Args)]
struct RelayArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Where to connect each client (IP:PORT, [IPv6]:PORT, HOST:PORT or
    /// unix:PATH); repeat for several, picked by --balance.
    #[arg(long, required = true, value_parser = parse_addr)]
    upstream: Vec<Addr>,
    /// round-robin: each upstream in turn; least-conn: the one with the
    /// fewest pairs open or connecting (ties in turn).
    #[arg(long, default_value = "round-robin")]
    balance: Balance,
    /// How long an upstream connect (its TLS handshake included) may take
    /// before the next upstream is tried (the client is closed once each
    /// has been tried).
    #[arg(long, default_value = "5s", value_parser = refuse_zero(parse_duration))]
    connect_timeout: Duration,
    /// After a failed connect, skip that upstream this long, twice as long
    /// after each further failure (at most 64 times this), until a connect
    /// to it succeeds; when all are down they are tried anyway (0 = never skip).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    upstream_down_time: Duration,
    /// Start each upstream connection with a PROXY protocol header, v1
    /// (text) or v2 (binary): the client's address, and the listening
    /// address as the destination.
    #[arg(long, value_name = "VERSION")]
    send_proxy: Option<ProxyVersion>,
    /// Move bytes socket → pipe → socket with splice(2), never through user
    /// space (Linux only): `auto` (the default when no value is given) once
    /// a read fills a whole chunk, `always` from the start.
    #[arg(long, value_name = "WHEN", num_args = 0..=1, default_missing_value = "auto")]
    splice: Option<SpliceMode>,
    #[command(flatten)]
    upstream_tls: UpstreamTlsArgs,
}

/// TLS towards the bench's target.
#[derive(Args)]
struct BenchTlsArgs {
    /// Connect with TLS: each connection starts with a full handshake, and
    /// the connects line counts handshakes/s (with --ca or --insecure).
    #[cfg(feature = "tls")]
    #[arg(long, requires = "target")]
    tls: bool,
    /// With --tls: trust the certificates in this PEM file.
    #[cfg(feature = "tls")]
    #[arg(long, value_name = "PEM", requires = "tls")]
    ca: Option<std::path::PathBuf>,
    /// With --tls: take any certificate the target shows.
    #[cfg(feature = "tls")]
    #[arg(long, requires = "tls", conflicts_with = "ca")]
    insecure: bool,
}

impl BenchTlsArgs {
    /// The TLS settings for connects to `target`, if asked for.
    fn client(&self, target: Option<&Addr>) -> io::Result<Option<bench::ClientTls>> {
        #[cfg(feature = "tls")]
        if let (true, Some(target)) = (self.tls, target) {
            let trust = trust(self.ca.as_deref(), self.insecure, "--tls", "--ca")?;
            return Ok(Some(bench::ClientTls {
                config: sockloop::tls::client_config(&trust, &[])?,
                name: sockloop::tls::name_of(target)
                    .unwrap_or_else(|| "localhost".try_into().expect("a valid name")),
            }));
        }
        let _ = target;
        Ok(None)
    }
}

/// Whom a TLS client trusts: the roots in the file of `ca_flag`, or anyone
/// with --insecure; `flag` turned TLS on and needs one of them.
#[cfg(feature = "tls")]
fn trust(
    ca: Option<&std::path::Path>,
    insecure: bool,
    flag: &str,
    ca_flag: &str,
) -> Result<sockloop::tls::Trust, Usage> {
    use sockloop::tls::Trust;
    match (ca, insecure) {
        (Some(pem), _) => Ok(Trust::Roots(pem.to_owned())),
        (None, true) => Ok(Trust::Anyone),
        (None, false) => Err(Usage(format!(
            "{flag} needs {ca_flag} PEM (the certificates to trust) or --insecure (trust any)"
        ))),
    }
}

/// A relay's TLS settings towards its upstreams, and the name their
/// certificates must carry (by default their IP addresses).
#[cfg(feature = "tls")]
type UpstreamTls = (std::sync::Arc<rustls::ClientConfig>, Option<ServerName>);

/// The name a TLS peer's certificate must carry.
#[cfg(feature = "tls")]
type ServerName = rustls::pki_types::ServerName<'static>;

/// TLS towards a relay's upstreams.
#[derive(Args)]
struct UpstreamTlsArgs {
    /// Speak TLS to the upstreams (with --upstream-ca or --insecure).
    #[cfg(feature = "tls")]
    #[arg(long)]
    upstream_tls: bool,
    /// With --upstream-tls: trust the certificates in this PEM file (a
    /// self-signed one trusts itself).
    #[cfg(feature = "tls")]
    #[arg(long, value_name = "PEM", requires = "upstream_tls")]
    upstream_ca: Option<std::path::PathBuf>,
    /// With --upstream-tls: take any certificate the upstream shows (tests
    /// against your own servers only).
    #[cfg(feature = "tls")]
    #[arg(long, requires = "upstream_tls", conflicts_with = "upstream_ca")]
    insecure: bool,
    /// With --upstream-tls: the name the upstream's certificate must carry
    /// (default: the upstream's IP address).
    #[cfg(feature = "tls")]
    #[arg(long, value_name = "NAME", requires = "upstream_tls")]
    upstream_name: Option<String>,
}

impl UpstreamTlsArgs {
    /// Whether the upstreams get TLS.
    fn on(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.upstream_tls;
        #[cfg(not(feature = "tls"))]
        false
    }

    /// With `--upstream-tls`: whom to trust, and the name the upstreams'
    /// certificates must carry (`None`: each one's IP address).
    #[cfg(feature = "tls")]
    fn settings(
        &self,
        upstreams: &[Addr],
    ) -> Result<Option<(sockloop::tls::Trust, Option<ServerName>)>, Usage> {
        if !self.upstream_tls {
            return Ok(None);
        }
        let trust = trust(
            self.upstream_ca.as_deref(),
            self.insecure,
            "--upstream-tls",
            "--upstream-ca",
        )?;
        let name = self.upstream_name.as_deref().map(|name| {
            sockloop::tls::server_name(name).map_err(|e| Usage(format!("--upstream-name {e}")))
        });
        let name = name.transpose()?;
        if name.is_none()
            && let Some(unix) = upstreams.iter().find(|a| a.ip().is_none())
        {
            return Err(Usage(format!(
                "--upstream {unix} has no IP address to check a certificate against: give --upstream-name"
            )));
        }
        Ok(Some((trust, name)))
    }

    /// The TLS settings towards `upstreams` and the name their
    /// certificates must carry, if asked for; `alpn` is what the relay
    /// offers where the client agreed on none with it.
    #[cfg(feature = "tls")]
    fn client(&self, upstreams: &[Addr], alpn: &[String]) -> io::Result<Option<UpstreamTls>> {
        let Some((trust, name)) = self.settings(upstreams)? else {
            return Ok(None);
        };
        Ok(Some((sockloop::tls::client_config(&trust, alpn)?, name)))
    }
}

#[derive(Args)]
struct BenchArgs {
    /// Echo server to load (IP:PORT, [IPv6]:PORT, HOST:PORT or unix:PATH);
    /// without it, an echo server starts in this process.
    #[arg(long, value_parser = parse_addr)]
    target: Option<Addr>,
    /// Connections to open; to a 127.x target, past --per-source of them
    /// they come from 127.0.0.2, 127.0.0.3, ... for more ephemeral ports.
    #[arg(long, default_value_t = 50)]
    conns: usize,
    /// Open connections at this many per second (default: up to 128
    /// connecting at a time, the next as soon as one is up).
    #[arg(long)]
    connect_rate: Option<u64>,
    /// Connections per source address to a 127.x target (default: half the
    /// kernel's ephemeral port range).
    #[arg(long)]
    per_source: Option<usize>,
    /// Hold every connection open and send one --size message on each per
    /// --interval, staggered over the interval; each echo is checked and timed.
    #[arg(long, conflicts_with_all = ["mode", "depth", "rate"])]
    idle: bool,
    /// With --idle: each connection's gap between messages.
    #[arg(long, default_value = "1s", value_parser = refuse_zero(parse_duration), requires = "idle")]
    interval: Duration,
    /// Payload bytes per request (e.g. 64, 4KiB).
    #[arg(long, default_value = "64", value_parser = parse_size)]
    size: usize,
    /// pingpong: DEPTH requests in flight per connection; stream: send back to
    /// back within a window of bytes.
    #[arg(long, default_value = "pingpong")]
    mode: Mode,
    /// Requests in flight per connection (stream: at least this many).
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Length of the measured window.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
    /// Load before the measured window, not counted.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Requests per second across all connections (default: as fast as echoes return).
    #[arg(long)]
    rate: Option<u64>,
    /// Frame requests (and decode echoes) with this codec; see `echo --framing`.
    #[arg(long, default_value = "raw")]
    framing: Framing,
    /// Report the CPU time this server process spends during the measured window.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Write `enable` to this FIFO when the measured window opens and
    /// `disable` when it closes, e.g. for `perf stat --control fifo:PATH -D -1`.
    #[arg(long)]
    window_fifo: Option<std::path::PathBuf>,
    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tls: BenchTlsArgs,
    /// Write the latency percentile curve of the measured window to this
    /// file, as SVG (latency against percentile, log scale of 1/(1-p)).
    #[arg(long, value_name = "FILE.svg", value_parser = parse_plot_path)]
    plot: Option<std::path::PathBuf>,
}

#[derive(Args)]
struct EchoArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// raw, lines, crlf, len:u8, len:u16be, len:u16le, len:u32be, len:u32le,
    /// len:u64be, len:u64le or fixed:N.
    #[arg(long, default_value = "raw")]
    framing: Framing,
    #[command(flatten)]
    limits: FrameLimits,
}

#[derive(Args)]
struct HubArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// lines, crlf, len:u8, len:u16be, len:u16le, len:u32be, len:u32le,
    /// len:u64be, len:u64le or fixed:N (raw has no frames to relay whole).
    #[arg(long)]
    framing: Framing,
    #[command(flatten)]
    limits: FrameLimits,
    /// A subscriber with more unsent bytes than --high-watermark is
    /// disconnected, misses frames until it catches up (drop), or holds
    /// every publisher unread until it is back under a quarter of it (block).
    #[arg(long, default_value = "disconnect")]
    slow_policy: SlowPolicy,
}

/// `DEFAULT_MAX_FRAME_LEN` as `--help` shows it.
const DEFAULT_MAX_FRAME: &str = "8MiB";

/// `--frame-timeout`'s default, as `--help` shows it.
const DEFAULT_FRAME_TIMEOUT: &str = "30s";

/// Limits on one frame, for servers that decode frames.
#[derive(Args)]
struct FrameLimits {
    /// Largest frame payload accepted; a peer that sends a bigger one is disconnected.
    #[arg(long, default_value = DEFAULT_MAX_FRAME, value_parser = refuse_zero(parse_size))]
    max_frame: usize,
    /// Close a connection whose frame is still incomplete this long after
    /// its first byte arrived (a peer trickling a frame it never finishes;
    /// 0 = never).
    #[arg(long, default_value = DEFAULT_FRAME_TIMEOUT, value_parser = parse_duration)]
    frame_timeout: Duration,
}

impl FrameLimits {
    fn config(&self, server: &ServerArgs) -> Config {
        Config {
            frame_timeout: nonzero(self.frame_timeout),
            ..server.config()
        }
    }

    /// The codec for `framing` under this limit; its error names both flags.
    fn codec(&self, framing: Framing) -> Result<Codec, Usage> {
        Codec::new(framing, self.max_frame).map_err(|e| {
            Usage(format!(
                "--framing {framing} with --max-frame {}: {e}",
                self.max_frame
            ))
        })
    }
}

/// Options every server takes, in the order of README's table.
#[derive(Args)]
struct ServerArgs {
    /// Address to listen on: IP:PORT, [IPv6]:PORT ([::] takes IPv4 too),
    /// HOST:PORT or unix:PATH; port 0 picks a free one (printed at start).
    #[arg(long, default_value = "127.0.0.1:7878", value_parser = parse_addr)]
    listen: Addr,
    /// Connections beyond this many are accepted and closed at once (--metrics
    /// scrapes not counted); unlimited by default.
    #[arg(long, default_value_t = usize::MAX, hide_default_value = true,
          value_parser = refuse_zero(parse_count))]
    max_conns: usize,
    /// Kernel queue of connections waiting to be accepted (capped by the
    /// kernel's somaxconn, which the start log states).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(i32).range(1..))]
    backlog: i32,
    /// Stop reading a peer whose unsent replies exceed this (e.g. 1MiB, 256KiB).
    #[arg(long, default_value = "1MiB", value_parser = refuse_zero(parse_size))]
    high_watermark: usize,
    /// Unsent output all connections of a reactor may hold together: from
    /// half of it on, a peer whose replies back up is not read until they
    /// drain; past it, the largest backlogs are closed.
    #[arg(long, default_value = "256MiB", value_parser = refuse_zero(parse_size))]
    max_buffered: usize,
    /// Close connections with no traffic either way for this long (500ms, 30s, 2m; 0 = never).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Give a peer whose output backs up this long to take all of that backlog, else
    /// close it: a backlog must drain, not a byte of it (0 = never).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    write_timeout: Duration,
    /// On SIGINT/SIGTERM, how long open connections get to finish before they are closed.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    shutdown_timeout: Duration,
    /// Log a one-line summary of the counters this often (e.g. 10s); off by default.
    #[arg(long, value_parser = parse_duration)]
    stats_interval: Option<Duration>,
    /// Print one line per readiness event and I/O call to stderr.
    #[arg(long)]
    trace: bool,
    /// Spin on non-blocking polls this long before sleeping (e.g. 50us): lower
    /// latency for a busy core; off by default.
    #[arg(long, value_parser = parse_duration)]
    busy_poll: Option<Duration>,
    /// Hold up to this many replies and send them back to back, after the
    /// reads that caused them; the end of each wait sends what is held
    /// anyway (0 or 1: send each at once).
    #[arg(long, default_value_t = Config::default().hold_replies)]
    hold_replies: usize,
    /// Leave Nagle's algorithm on (TCP_NODELAY off).
    #[arg(long)]
    no_nodelay: bool,
    /// Reactors, each on a thread of its own with its own listener
    /// (SO_REUSEPORT: the kernel spreads connections); 0 = one per CPU.
    /// TCP only: a unix: listener takes one.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Pin reactor i to the i-th CPU the process may run on (Linux).
    #[arg(long)]
    pin: bool,
    /// SO_RCVBUF for accepted sockets.
    #[arg(long, value_parser = refuse_zero(parse_size))]
    rcvbuf: Option<usize>,
    /// SO_SNDBUF for accepted sockets.
    #[arg(long, value_parser = refuse_zero(parse_size))]
    sndbuf: Option<usize>,
    #[command(flatten)]
    tls: TlsArgs,
    /// Expect a PROXY protocol header (v1 or v2, as HAProxy's send-proxy
    /// sends) at the start of every connection, before TLS if any: the
    /// client it names is the peer in logs and the connection table. A
    /// connection without a valid one is closed.
    #[arg(long)]
    proxy_protocol: bool,
    /// Serve the counters at http://ADDR/metrics in the Prometheus text
    /// format, from the same loop (port 0 picks a free one; the log says which).
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    metrics: Option<Addr>,
}

impl ServerArgs {
    /// How many reactors to run: `--threads`, 0 read as one per CPU (one
    /// where the count cannot be had).
    fn reactors(&self) -> usize {
        match self.threads {
            0 => cpus(),
            n => n,
        }
    }

    fn config(&self) -> Config {
        Config {
            max_conns: self.max_conns,
            high_watermark: self.high_watermark,
            low_watermark: self.high_watermark / 4,
            max_buffered: self.max_buffered,
            idle_timeout: nonzero(self.idle_timeout),
            write_timeout: nonzero(self.write_timeout),
            shutdown_timeout: self.shutdown_timeout,
            trace: self.trace,
            busy_poll: self.busy_poll.and_then(nonzero),
            hold_replies: self.hold_replies,
            handshake_timeout: self.tls.handshake_timeout,
            proxy_protocol: self.proxy_protocol,
            socket: SocketOptions {
                nodelay: !self.no_nodelay,
                recv_buffer: self.rcvbuf,
                send_buffer: self.sndbuf,
            },
            ..Config::default()
        }
    }
}

/// The CPUs this process may run on (1 if that cannot be told).
fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A refusal of the command line: arguments that cannot work, together or
/// on this system. `main` prints it as clap prints its own, and exits 2.
#[derive(Debug)]
struct Usage(String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// A refusal found once the server is being set up (its own address is
/// known only then), carried up to `main` as an `io::Error`.
impl From<Usage> for io::Error {
    fn from(usage: Usage) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, usage)
    }
}

fn refuse(why: impl Into<String>) -> Result<(), Usage> {
    Err(Usage(why.into()))
}

// The checks of the command line, in one place: `check` refuses what cannot
// work (exit status 2, the flag named), `surprises` warns about what works
// but is likely not what was meant. Value parsers refuse a value that is
// wrong on its own (`--backlog 0`); these look at flags together.

impl Command {
    /// Refuses arguments that cannot work, before anything starts.
    fn check(&self) -> Result<(), Usage> {
        match self {
            Command::Echo(args) => {
                args.server.check(false)?;
                match args.framing {
                    Framing::Raw => Ok(()),
                    framing => args.limits.codec(framing).map(drop),
                }
            }
            Command::Relay(args) => args.check(),
            // Raw "frames" are whatever one read returned: relayed, they would
            // interleave senders mid-message.
            Command::Hub(HubArgs {
                framing: Framing::Raw,
                ..
            }) => refuse("hub needs a --framing with message boundaries, not raw"),
            Command::Hub(args) => {
                args.server.check(false)?;
                args.limits.codec(args.framing).map(drop)
            }
            Command::Bench(args) => args.check(),
            // Its --name is checked as it is parsed.
            #[cfg(feature = "tls")]
            Command::Cert(_) => Ok(()),
        }
    }

    /// What to warn about before starting.
    fn surprises(&self) -> Vec<String> {
        match self {
            Command::Echo(args) => {
                let mut warnings = args.server.surprises(false);
                if args.framing == Framing::Raw {
                    warnings.extend(args.limits.unused_with_raw());
                }
                warnings
            }
            Command::Relay(args) => {
                let mut warnings = args.server.surprises(args.upstream_tls.on());
                if let (Some(version), Addr::Unix(_)) = (args.send_proxy, &args.server.listen) {
                    let header = match version {
                        ProxyVersion::V1 => "`PROXY UNKNOWN`",
                        ProxyVersion::V2 => "a LOCAL header",
                    };
                    warnings.push(format!(
                        "--send-proxy {version} with a unix: listener: clients have no IP \
                         address to name, so each upstream gets {header}"
                    ));
                }
                warnings
            }
            Command::Hub(args) => args.server.surprises(false),
            Command::Bench(_) => Vec::new(),
            #[cfg(feature = "tls")]
            Command::Cert(_) => Vec::new(),
        }
    }
}

impl TlsArgs {
    /// Refuses ALPN with no TLS to carry it: on the listener, or
    /// (`upstream_tls`) a relay's towards its upstreams.
    fn check(&self, upstream_tls: bool) -> Result<(), Usage> {
        #[cfg(feature = "tls")]
        if !self.alpn.is_empty() && !self.on() && !upstream_tls {
            return refuse(format!(
                "--alpn {} needs TLS to offer it in: --tls-cert and --tls-key \
                 (or, in a relay, --upstream-tls)",
                self.alpn.join(",")
            ));
        }
        let _ = upstream_tls;
        Ok(())
    }
}

impl BenchTlsArgs {
    /// Refuses `--tls` with no word on whom to trust.
    fn check(&self) -> Result<(), Usage> {
        #[cfg(feature = "tls")]
        if self.tls {
            trust(self.ca.as_deref(), self.insecure, "--tls", "--ca")?;
        }
        Ok(())
    }
}

impl UpstreamTlsArgs {
    /// Refuses `--upstream-tls` settings that cannot work with `upstreams`.
    fn check(&self, upstreams: &[Addr]) -> Result<(), Usage> {
        #[cfg(feature = "tls")]
        self.settings(upstreams)?;
        let _ = upstreams;
        Ok(())
    }
}

impl RelayArgs {
    /// Refuses relay flags that cannot work, alone or together.
    fn check(&self) -> Result<(), Usage> {
        let upstream_tls = self.upstream_tls.on();
        self.server.check(upstream_tls)?;
        for upstream in &self.upstream {
            refuse_port_zero("--upstream", upstream)?;
        }
        if self.splice.is_some() && !sys::SPLICE {
            return refuse(
                "--splice needs splice(2), which only Linux has: run the relay without it",
            );
        }
        if self.splice.is_some() && (self.server.tls.on() || upstream_tls) {
            return refuse(
                "--splice moves bytes as they are, and TLS must decrypt them: use one or the other",
            );
        }
        self.upstream_tls.check(&self.upstream)
    }
}

/// Refuses port 0 where something is to be connected to: only a listener
/// takes it (as "any free port"); a connect to it fails every time.
fn refuse_port_zero(flag: &str, addr: &Addr) -> Result<(), Usage> {
    match addr.ip() {
        Some(ip) if ip.port() == 0 => refuse(format!(
            "{flag} {addr}: port 0 cannot be connected to (it means \"any free port\" \
             only to a listener)"
        )),
        _ => Ok(()),
    }
}

impl BenchArgs {
    /// Refuses bench flags that cannot make a run (`bench::check` has the
    /// rules of the run itself).
    fn check(&self) -> Result<(), Usage> {
        if let Some(target) = &self.target {
            refuse_port_zero("--target", target)?;
        }
        self.tls.check()?;
        bench::check(&self.options(None)).map_err(Usage)
    }
}

impl FrameLimits {
    /// Warnings for limits set to no effect: raw bytes have no frames.
    fn unused_with_raw(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.max_frame != DEFAULT_MAX_FRAME_LEN {
            warnings.push("--max-frame has no effect with --framing raw".to_owned());
        }
        if Ok(self.frame_timeout) != parse_duration(DEFAULT_FRAME_TIMEOUT) {
            warnings.push("--frame-timeout has no effect with --framing raw".to_owned());
        }
        warnings
    }
}

/// The longest `--busy-poll` that is still a short spin.
const LONGEST_SPIN: Duration = Duration::from_millis(1);

impl ServerArgs {
    /// Refuses server flags that cannot work together or here;
    /// `upstream_tls`: a relay speaks TLS to its upstreams.
    fn check(&self, upstream_tls: bool) -> Result<(), Usage> {
        if self.pin && !sys::PIN {
            return refuse(
                "--pin needs sched_setaffinity(2), which only Linux has: run without it",
            );
        }
        let count = self.reactors();
        if count > 1 && matches!(self.listen, Addr::Unix(_)) {
            return refuse(format!(
                "--threads {count} with a unix: listener: SO_REUSEPORT spreads TCP \
                 connections only, so a Unix-domain path takes one reactor (--threads 1)"
            ));
        }
        // One reactor's counters would be a fraction passed off as the whole.
        if count > 1 && self.metrics.is_some() {
            return refuse(
                "--metrics serves one reactor's counters: not yet with --threads above 1",
            );
        }
        self.tls.check(upstream_tls)
    }

    /// Server values that are legal but likely not what was meant, as
    /// warnings; `upstream_tls` as for [`check`](Self::check).
    fn surprises(&self, upstream_tls: bool) -> Vec<String> {
        let defaults = Config::default();
        let mut warnings = Vec::new();
        if self.high_watermark < defaults.read_chunk {
            warnings.push(format!(
                "--high-watermark {} is less than one read ({} bytes): the reply to a \
                 single read can pass it, and that peer stops being read",
                self.high_watermark, defaults.read_chunk
            ));
        }
        if self.hold_replies > defaults.event_capacity {
            warnings.push(format!(
                "--hold-replies {} is more than the {} events one wait returns: the end \
                 of each wait sends what is held, so it means \"hold for the whole wait\"",
                self.hold_replies, defaults.event_capacity
            ));
        }
        if let Some(spin) = self.busy_poll.filter(|spin| *spin > LONGEST_SPIN) {
            warnings.push(format!(
                "--busy-poll {spin:?} spins that long before each sleep: a reactor with \
                 any traffic keeps its core busy (tens of µs are usual)"
            ));
        }
        let cpus = cpus();
        if self.threads > cpus {
            warnings.push(format!(
                "--threads {} is more than the {cpus} CPUs this process may use: \
                 reactors share cores, and each holds descriptors of its own",
                self.threads
            ));
        }
        let handshake = self.tls.handshake_timeout;
        let handshakes = self.tls.on() || self.proxy_protocol || upstream_tls;
        if let Some(idle) = nonzero(self.idle_timeout).filter(|idle| handshake > *idle)
            && handshakes
        {
            warnings.push(format!(
                "--handshake-timeout {handshake:?} is longer than --idle-timeout {idle:?}: \
                 a client that stalls its handshake keeps its slot longer than an idle one"
            ));
        }
        warnings
    }
}

/// Wraps a value parser to refuse zero, for knobs where it means nothing sensible.
fn refuse_zero<T: Default + PartialEq + 'static>(
    parse: fn(&str) -> Result<T, String>,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {
    move |text| match parse(text)? {
        value if value == T::default() => Err("must be more than 0".to_owned()),
        value => Ok(value),
    }
}

fn parse_count(text: &str) -> Result<usize, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("not a count: {text:?}"))
}

/// Parses a byte count: `4096`, `64K`, `64KiB`, `1M`, `1MiB`, `1G` (binary units).
fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => return Err(format!("unknown unit {other:?} (use K, M or G)")),
    };
    let value: usize = digits
        .parse()
        .map_err(|_| format!("not a size: {text:?}"))?;
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("too large: {text:?}"))
}

/// An SVG file to write a chart to, in a directory that exists: checked
/// before the run, not found wanting after it.
fn parse_plot_path(text: &str) -> Result<std::path::PathBuf, String> {
    let path = std::path::PathBuf::from(text);
    let svg = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
    if !svg {
        return Err(format!(
            "the chart is SVG: name a file ending in .svg, not {text:?}"
        ));
    }
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
            Err(format!("no directory {} to write it in", dir.display()))
        }
        _ if path.is_dir() => Err(format!("{text} is a directory")),
        _ => Ok(path),
    }
}

/// A name for `sockloop cert`: one a certificate can carry.
#[cfg(feature = "tls")]
fn parse_cert_name(text: &str) -> Result<String, String> {
    sockloop::tls::check_cert_name(text)
        .map(|()| text.to_owned())
        .map_err(|e| e.to_string())
}

fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// Parses a duration: `50us`, `500ms`, `30s`, `2m`, `1h`; a bare number is seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: u64 = digits
        .parse()
        .map_err(|_| format!("not a duration: {text:?}"))?;
    let us_per_unit = match unit {
        "us" => 1,
        "ms" => 1_000,
        "" | "s" => 1_000_000,
        "m" => 60_000_000,
        "h" => 3_600_000_000,
        other => return Err(format!("unknown unit {other:?} (use us, ms, s, m or h)")),
    };
    value
        .checked_mul(us_per_unit)
        .map(Duration::from_micros)
        .ok_or_else(|| format!("too long: {text:?}"))
}

/// A server's reactors, bound, and the supervisor that will run them.
struct Bound<S: Service> {
    supervisor: Supervisor,
    reactors: Vec<Reactor<S>>,
    local: Addr,
}

/// Makes the reactors of a server that keeps about `fds_per_client`
/// descriptors per client, each with its own `make()` service and its own
/// listener (the first binds, the others share its port); serving starts
/// with [`run_server`].
fn bind<S: Service>(
    args: &ServerArgs,
    config: Config,
    mut make: impl FnMut() -> S,
    fds_per_client: u64,
) -> io::Result<Bound<S>> {
    let count = args.reactors();
    // Before any thread exists, so that no thread takes these signals the default way.
    let supervisor = Supervisor::new()?;
    let fd_limit = raise_fd_limit()?;
    // Past this many the table's doublings are few, each one wait; up to it
    // the table costs at most about half a megabyte.
    if let Err(e) = sys::grow_fd_table(fd_limit.min(1 << 16)) {
        warn!("could not grow the descriptor table up front: {e}");
    }
    let (backlog, note) = backlog_within_somaxconn(args.backlog, sys::somaxconn());
    let options = ListenOptions {
        backlog,
        reuse_port: count > 1,
    };
    let mut reactors = Vec::with_capacity(count);
    let mut addr = args.listen.clone();
    for _ in 0..count {
        let mut reactor = Reactor::new(config.clone(), make())?;
        addr = args
            .tls
            .listen(&mut reactor, &addr, &options)
            .map_err(|e| io::Error::new(e.kind(), format!("listen on {addr}: {e}")))?;
        reactors.push(reactor);
    }
    info!("accept queue: backlog {backlog} ({note})");
    if count > 1 {
        info!("{count} reactors, each with its own listener on {addr} (SO_REUSEPORT)");
    }
    if let Some(metrics) = &args.metrics {
        let bound = reactors[0]
            .listen_metrics(metrics, &options)
            .map_err(|e| io::Error::new(e.kind(), format!("--metrics {metrics}: {e}")))?;
        info!("metrics on http://{bound}/metrics");
    }
    log_room(fd_limit, fds_per_client);
    Ok(Bound {
        supervisor,
        reactors,
        local: addr,
    })
}

/// Logs how many clients the descriptors left make room for, once every
/// descriptor of the server's own is open: stdio, the supervisor's, and each
/// reactor's poller, wake-up, listener and spare (and the metrics listener).
fn log_room(fd_limit: u64, fds_per_client: u64) {
    let each = match fds_per_client {
        1 => String::new(),
        n => format!(" at {n} descriptors each"),
    };
    match sys::open_descriptors() {
        Ok(open) => info!(
            "file descriptor limit {fd_limit}, {open} in use: room for about {} clients{each}",
            fd_limit.saturating_sub(open) / fds_per_client
        ),
        Err(e) => info!("file descriptor limit {fd_limit} (how many are in use is unknown: {e})"),
    }
}

/// The backlog `listen` is given: what was asked, cut down to the kernel's
/// cap (which would cut it silently anyway), and how to say so at start.
fn backlog_within_somaxconn(asked: i32, somaxconn: Option<u32>) -> (i32, String) {
    match somaxconn.map(|cap| i32::try_from(cap).unwrap_or(i32::MAX)) {
        Some(cap) if asked > cap => (
            cap,
            format!("somaxconn {cap}; --backlog {asked} asked for more: raise net.core.somaxconn"),
        ),
        Some(cap) => (asked, format!("somaxconn {cap}")),
        None => (asked, "somaxconn unknown here".to_owned()),
    }
}

fn serve<S>(
    args: &ServerArgs,
    config: Config,
    make: impl FnMut() -> S,
    fds_per_client: u64,
) -> io::Result<()>
where
    S: Service + Send + 'static,
    S::Conn: Send,
{
    run_server(bind(args, config, make, fds_per_client)?, args)
}

fn run_server<S>(server: Bound<S>, args: &ServerArgs) -> io::Result<()>
where
    S: Service + Send + 'static,
    S::Conn: Send,
{
    let Bound {
        supervisor,
        reactors,
        local,
    } = server;
    // Scripts and tests read this line to learn the port: print it exactly once, at once.
    print_line(format_args!("listening on {local}"))?;
    info!("serving on {local}");
    let options = threads::Options {
        pin: args.pin,
        stats_interval: args.stats_interval.and_then(nonzero),
    };
    let outcome = supervisor.run(reactors, &options)?;
    if let Some(spread) = outcome.spread() {
        info!("{spread}");
    }
    info!("stopped: {}", outcome.total());
    if outcome.forced {
        return Err(io::Error::other("shutdown cut short by a second signal"));
    }
    Ok(())
}

/// Writes one line to stdout at once. A reader that has gone (`| head -1`)
/// took all it wanted: not an error, and no reason to stop.
fn print_line(line: impl fmt::Display) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        result => result.map_err(|e| io::Error::new(e.kind(), format!("stdout: {e}"))),
    }
}

/// Runs the relay of `args` until it is told to stop.
fn run_relay(args: &RelayArgs) -> io::Result<()> {
    let config = Config {
        connect_timeout: args.connect_timeout,
        ..args.server.config()
    };
    #[cfg(feature = "tls")]
    let tls = args
        .upstream_tls
        .client(&args.upstream, &args.server.tls.alpn)?;
    // Each reactor balances its own clients over the upstreams.
    let make = || {
        let relay = Relay::new(args.upstream.clone())
            .with_balance(args.balance)
            .with_down_time(args.upstream_down_time);
        let relay = match args.send_proxy {
            Some(version) => relay.with_send_proxy(version),
            None => relay,
        };
        #[cfg(feature = "tls")]
        let relay = match &tls {
            Some((config, name)) => relay.with_upstream_tls(config.clone(), name.clone()),
            None => relay,
        };
        match args.splice {
            Some(mode) => relay.with_splice_mode(mode),
            None => relay,
        }
    };
    // Two sockets per client; splice adds a pipe (two descriptors) each way,
    // with `auto` only for the directions that carry bulk data.
    let fds_per_client = match args.splice {
        Some(SpliceMode::Always) => 6,
        Some(SpliceMode::Auto) | None => 2,
    };
    bind(&args.server, config, make, fds_per_client).and_then(|server| {
        refuse_own_upstream(&server.local, &args.upstream)?;
        for reactor in &server.reactors {
            // The destination of the PROXY headers: known only now.
            reactor.service().set_listen_addr(server.local.clone());
        }
        run_server(server, &args.server)
    })
}

/// Refuses an upstream that is this relay itself: each client would make it
/// connect to itself again, until it runs out of descriptors.
fn refuse_own_upstream(local: &Addr, upstreams: &[Addr]) -> Result<(), Usage> {
    let loops = |upstream: &&Addr| match (*upstream, local) {
        (Addr::Ip(to), Addr::Ip(at)) => reaches(*to, *at, sys::is_own_address),
        (Addr::Unix(to), Addr::Unix(at)) => same_file(to, at),
        _ => false,
    };
    match upstreams.iter().find(loops) {
        Some(upstream) => refuse(format!(
            "--upstream {upstream} is this relay itself (it listens on {local}): \
             each client would be relayed back to the relay, without end"
        )),
        None => Ok(()),
    }
}

/// Whether a connection to `upstream` would arrive at a listener bound to
/// `listen`; `is_own` says whether this host has an address.
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

/// Parses an address, looking a host name up at once: `localhost:7878`
/// becomes the first address it resolves to.
fn parse_addr(text: &str) -> Result<Addr, String> {
    let found = Addr::resolve(text).map_err(|e| e.to_string())?;
    if found.len() > 1 {
        info!("{text} resolves to {}: using {}", found.len(), found[0]);
    }
    Ok(found[0].clone())
}

impl BenchArgs {
    /// The run these flags ask for, with `tls` towards the target.
    fn options(&self, tls: Option<bench::ClientTls>) -> bench::Options {
        bench::Options {
            target: self.target.clone(),
            conns: self.conns,
            size: self.size,
            mode: if self.idle { Mode::Idle } else { self.mode },
            depth: self.depth,
            duration: self.duration,
            warmup: self.warmup,
            rate: self.rate,
            framing: self.framing,
            server_pid: self.server_pid,
            window_fifo: self.window_fifo.clone(),
            plot: self.plot.clone(),
            tls,
            interval: self.interval,
            connect_rate: self.connect_rate,
            per_source: self.per_source,
        }
    }
}

fn run_bench(args: &BenchArgs) -> io::Result<()> {
    let tls = args.tls.client(args.target.as_ref())?;
    let report = bench::run(&args.options(tls))?;
    for error in &report.errors {
        // Ignored: a failed run says so in its exit status, even with stderr gone.
        let _ = writeln!(io::stderr().lock(), "bench: error: {error}");
    }
    if args.json {
        print_line(report.to_json())?;
    } else {
        print_line(&report)?;
    }
    match report.error_count {
        0 => Ok(()),
        n => Err(io::Error::other(format!("bench failed with {n} errors"))),
    }
}

impl Command {
    /// Runs the command, its arguments checked.
    fn run(&self) -> io::Result<()> {
        match self {
            Command::Echo(args) => match args.framing {
                Framing::Raw => serve(&args.server, args.server.config(), || Echo, 1),
                framing => {
                    let codec = args.limits.codec(framing)?;
                    let config = args.limits.config(&args.server);
                    serve(&args.server, config, || FramedEcho::new(codec.clone()), 1)
                }
            },
            Command::Relay(args) => run_relay(args),
            Command::Hub(args) => run_hub(args),
            Command::Bench(args) => run_bench(args),
            #[cfg(feature = "tls")]
            Command::Cert(args) => write_cert(args),
        }
    }

    /// The subcommand's name, as typed.
    fn name(&self) -> &'static str {
        match self {
            Command::Echo(_) => "echo",
            Command::Relay(_) => "relay",
            Command::Hub(_) => "hub",
            Command::Bench(_) => "bench",
            #[cfg(feature = "tls")]
            Command::Cert(_) => "cert",
        }
    }
}

fn run_hub(args: &HubArgs) -> io::Result<()> {
    let codec = args.limits.codec(args.framing)?;
    let make = || Hub::new(codec.clone(), args.slow_policy, args.server.high_watermark);
    let config = args.limits.config(&args.server);
    let mut server = bind(&args.server, config, make, 1)?;
    if server.reactors.len() > 1 {
        let hubs = server.reactors.iter_mut();
        Hub::mesh(hubs.map(|r| (r.handle(), r.service_mut())));
    }
    run_server(server, &args.server)
}

#[cfg(feature = "tls")]
fn write_cert(args: &CertArgs) -> io::Result<()> {
    use sockloop::tls::{replace_self_signed, write_self_signed};
    let write = if args.force {
        replace_self_signed
    } else {
        write_self_signed
    };
    let (cert, key) = write(&args.out, &args.name)?;
    print_line(format_args!(
        "wrote {} and {} (for {}, 127.0.0.1 and ::1)",
        cert.display(),
        key.display(),
        args.name
    ))
}

fn main() -> ExitCode {
    stderr::init_logger("info");
    let cli = Cli::parse();
    let result = cli.command.check().map_err(io::Error::from).and_then(|()| {
        for warning in cli.command.surprises() {
            warn!("{warning}");
        }
        cli.command.run()
    });
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.get_ref().and_then(|e| e.downcast_ref::<Usage>()) {
            Some(usage) => refusal(&cli.command, usage),
            None => {
                error!("{e}");
                ExitCode::FAILURE
            }
        },
    };
    // Bounded: a stderr that nobody reads must not keep the process alive.
    stderr::flush(Duration::from_secs(2));
    code
}

/// Prints a refusal as clap prints its own, with the subcommand's usage
/// line, after whatever was logged before it; exit status 2, as clap's.
fn refusal(command: &Command, usage: &Usage) -> ExitCode {
    stderr::flush(Duration::from_secs(2));
    let mut cli = Cli::command();
    cli.build();
    let kind = clap::error::ErrorKind::ValueValidation;
    let error = match cli.find_subcommand_mut(command.name()) {
        Some(subcommand) => subcommand.error(kind, usage),
        None => cli.error(kind, usage),
    };
    // Ignored: the exit status says it all the same.
    let _ = error.print();
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
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

    fn surprises(args: &[&str]) -> Vec<String> {
        let cli = Cli::try_parse_from([&["sockloop"], args].concat()).expect("valid arguments");
        cli.command.surprises()
    }

    #[test]
    fn legal_but_surprising_values_are_named_in_a_warning() {
        assert_eq!(surprises(&["echo"]), Vec::<String>::new());
        assert_eq!(
            surprises(&["echo", "--framing", "lines", "--max-frame", "1K"]).len(),
            0
        );
        let cases = [
            (
                &["echo", "--high-watermark", "4K"][..],
                "--high-watermark 4096",
            ),
            (
                &["hub", "--framing", "lines", "--hold-replies", "5000"],
                "--hold-replies 5000",
            ),
            (&["echo", "--max-frame", "1K"], "--max-frame"),
            (&["echo", "--frame-timeout", "5s"], "--frame-timeout"),
            (&["echo", "--busy-poll", "2ms"], "--busy-poll 2ms"),
            (
                &["echo", "--proxy-protocol", "--idle-timeout", "5s"],
                "--handshake-timeout 10s is longer than --idle-timeout 5s",
            ),
            (
                &[
                    "relay",
                    "--upstream",
                    "127.0.0.1:1",
                    "--listen",
                    "unix:/tmp/relay.sock",
                    "--send-proxy",
                    "v2",
                ],
                "--send-proxy v2",
            ),
        ];
        for (args, flag) in cases {
            let warnings = surprises(args);
            assert!(
                warnings.len() == 1 && warnings[0].starts_with(flag),
                "{args:?}: {warnings:?}"
            );
        }
    }

    fn refusal(args: &[&str]) -> Option<String> {
        let cli = Cli::try_parse_from([&["sockloop"], args].concat()).expect("valid arguments");
        cli.command.check().err().map(|usage| usage.0)
    }

    /// Each of `cases` is refused with a message that starts as given, or
    /// (given "") accepted.
    fn assert_refusals(cases: &[(&[&str], &str)]) {
        for &(args, refused) in cases {
            let found = refusal(args);
            match refused {
                "" => assert_eq!(found, None, "{args:?}"),
                refused => assert!(
                    found.as_deref().is_some_and(|f| f.starts_with(refused)),
                    "{args:?}: {found:?}"
                ),
            }
        }
    }

    #[test]
    fn flags_that_cannot_work_together_are_refused_naming_them() {
        assert_refusals(&[
            (&["echo"], ""),
            (&["relay", "--upstream", "127.0.0.1:1"], ""),
            (&["bench"], ""),
            (
                &["relay", "--upstream", "[::1]:0"],
                "--upstream [::1]:0: port 0",
            ),
            (&["bench", "--depth", "0"], "--depth must be"),
            (
                &["bench", "--framing", "len:u8", "--size", "300"],
                "--framing len:u8 with --size 300",
            ),
        ]);
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_flags_that_cannot_work_are_refused_naming_them() {
        assert_refusals(&[
            (&["echo", "--alpn", "h2"], "--alpn h2 needs TLS"),
            (
                &[
                    "relay",
                    "--upstream",
                    "127.0.0.1:1",
                    "--alpn",
                    "h2",
                    "--upstream-tls",
                    "--insecure",
                ],
                "",
            ),
            (
                &["relay", "--upstream", "127.0.0.1:1", "--upstream-tls"],
                "--upstream-tls needs",
            ),
            (
                &["bench", "--target", "127.0.0.1:1", "--tls"],
                "--tls needs --ca",
            ),
            (
                &[
                    "relay",
                    "--upstream",
                    "127.0.0.1:1",
                    "--upstream-tls",
                    "--insecure",
                    "--upstream-name",
                    "a b",
                ],
                "--upstream-name",
            ),
        ]);
    }

    #[test]
    fn the_backlog_is_capped_by_somaxconn_and_the_note_says_so() {
        assert_eq!(
            backlog_within_somaxconn(4096, Some(4096)),
            (4096, "somaxconn 4096".to_owned())
        );
        assert_eq!(backlog_within_somaxconn(100, Some(4096)).0, 100);
        let (backlog, note) = backlog_within_somaxconn(10_000, Some(4096));
        assert_eq!(backlog, 4096);
        assert!(
            note.starts_with("somaxconn 4096; --backlog 10000"),
            "{note}"
        );
        assert_eq!(backlog_within_somaxconn(4096, None).0, 4096);
        // A cap beyond i32 (FreeBSD's is a u_int) never turns negative.
        assert_eq!(backlog_within_somaxconn(4096, Some(u32::MAX)).0, 4096);
    }

    #[test]
    fn the_max_frame_default_shown_is_the_real_one() {
        assert_eq!(parse_size(DEFAULT_MAX_FRAME), Ok(DEFAULT_MAX_FRAME_LEN));
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
    fn a_plot_goes_to_a_file_in_a_directory_that_exists() {
        assert!(parse_plot_path("latency.svg").is_ok());
        assert!(parse_plot_path("/tmp/latency.svg").is_ok());
        assert!(parse_plot_path("/no/such/dir/latency.svg").is_err());
        assert!(parse_plot_path("/tmp").is_err());
        assert!(parse_plot_path("latency.png").is_err());
        assert!(parse_plot_path("latency").is_err());
        assert!(parse_plot_path("LATENCY.SVG").is_ok());
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("50us"), Ok(Duration::from_micros(50)));
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("ms").is_err());
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("12parsecs").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }
}
