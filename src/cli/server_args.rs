//! The options every server takes (`ServerArgs`), and the limits on one
//! frame for those that decode frames (`FrameLimits`): what they make of
//! them, a reactor's [`Config`] and the start-up's [`Plan`].

use std::cell::RefCell;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use sockloop::codec::cidr::Cidr;
use sockloop::codec::{Codec, Framing};
use sockloop::reactor::{Config, SourceLimits, Sources};
use sockloop::sys::{self, Addr, Keepalive, PassedListener, SocketOptions};
use sockloop::threads;

use super::parse::{
    nonzero, parse_addr, parse_cidr, parse_count, parse_duration, parse_keepalive, parse_rate,
    parse_size, parse_u32, refuse_zero,
};
use super::tls_args::TlsArgs;
use super::usage::Usage;
use crate::server::Plan;

/// Options every server takes, in the order of README's table.
#[derive(Args)]
pub(super) struct ServerArgs {
    /// Address to listen on: IP:PORT, [IPv6]:PORT ([::] takes IPv4 too),
    /// HOST:PORT or unix:PATH; port 0 picks a free one (printed at start).
    /// Not bound when listening sockets are passed (systemd's LISTEN_FDS).
    #[arg(long, default_value = "127.0.0.1:7878", value_parser = parse_addr)]
    pub(super) listen: Addr,
    /// The listening sockets the parent passed (LISTEN_FDS), served instead
    /// of --listen; the plan takes them.
    #[arg(skip)]
    pub(super) passed: RefCell<Vec<PassedListener>>,
    /// Connections beyond this many are accepted and closed at once (--metrics
    /// scrapes not counted); unlimited by default.
    #[arg(long, default_value_t = usize::MAX, hide_default_value = true,
          value_parser = refuse_zero(parse_count))]
    pub(super) max_conns: usize,
    /// Kernel queue of connections waiting to be accepted (capped by the
    /// kernel's somaxconn, which the start log states).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(i32).range(1..))]
    pub(super) backlog: i32,
    /// Stop reading a peer whose unsent replies exceed this (e.g. 1MiB, 256KiB).
    #[arg(long, default_value = "1MiB", value_parser = refuse_zero(parse_size))]
    pub(super) high_watermark: usize,
    /// Unsent output all connections of a reactor may hold together: from
    /// half of it on, a peer whose replies back up is not read until they
    /// drain; past it, the largest backlogs are closed.
    #[arg(long, default_value = "256MiB", value_parser = refuse_zero(parse_size))]
    pub(super) max_buffered: usize,
    /// Close connections with no traffic either way for this long (500ms, 30s, 2m; 0 = never).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub(super) idle_timeout: Duration,
    /// Give a peer whose output backs up this long to take all of that backlog, else
    /// close it: a backlog must drain, not a byte of it (0 = never).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub(super) write_timeout: Duration,
    /// On SIGINT/SIGTERM, how long open connections get to finish before they are closed.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub(super) shutdown_timeout: Duration,
    /// Log a one-line summary of the counters this often (e.g. 10s); off by default.
    #[arg(long, value_parser = parse_duration)]
    pub(super) stats_interval: Option<Duration>,
    /// Print one line per readiness event and I/O call to stderr.
    #[arg(long)]
    pub(super) trace: bool,
    /// Spin on non-blocking polls this long before sleeping (e.g. 50us): lower
    /// latency for a busy core; off by default.
    #[arg(long, value_parser = parse_duration)]
    pub(super) busy_poll: Option<Duration>,
    /// Hold up to this many replies and send them back to back, after the
    /// reads that caused them; the end of each wait sends what is held
    /// anyway (0 or 1: send each at once).
    #[arg(long, default_value_t = Config::default().hold_replies)]
    pub(super) hold_replies: usize,
    /// Leave Nagle's algorithm on (TCP_NODELAY off).
    #[arg(long)]
    pub(super) no_nodelay: bool,
    /// Reactors, each on a thread of its own with its own listener
    /// (SO_REUSEPORT: the kernel spreads connections); 0 = one per CPU.
    /// TCP only: a unix: listener takes one.
    #[arg(long, default_value_t = 1)]
    pub(super) threads: usize,
    /// Pin reactor i to the i-th CPU the process may run on (Linux).
    #[arg(long)]
    pub(super) pin: bool,
    /// SO_RCVBUF for accepted sockets.
    #[arg(long, value_parser = refuse_zero(parse_size))]
    pub(super) rcvbuf: Option<usize>,
    /// SO_SNDBUF for accepted sockets.
    #[arg(long, value_parser = refuse_zero(parse_size))]
    pub(super) sndbuf: Option<usize>,
    /// Keepalive probes on connections silent for IDLE: every INTERVAL,
    /// COUNT of them unanswered end the connection (whole seconds, e.g.
    /// 60s,10s,6; IDLE alone keeps the kernel's INTERVAL and COUNT; off).
    #[arg(long, value_name = "IDLE[,INTERVAL,COUNT]", default_value = DEFAULT_KEEPALIVE,
          value_parser = parse_keepalive)]
    pub(super) tcp_keepalive: Keepalive,
    /// Sent data unacknowledged this long ends the connection
    /// (TCP_USER_TIMEOUT, Linux): a peer gone, or one whose window stays
    /// shut. Default: twice --write-timeout's value (0 = off).
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub(super) tcp_user_timeout: Option<Duration>,
    #[command(flatten)]
    pub(super) tls: TlsArgs,
    /// Expect a PROXY protocol header (v1 or v2, as HAProxy's send-proxy
    /// sends) at the start of every connection, before TLS if any: the
    /// client it names is the peer in logs and the connection table. A
    /// connection without a valid one is closed.
    #[arg(long)]
    pub(super) proxy_protocol: bool,
    /// Believe PROXY headers only from these sources (CIDRs, comma-separated;
    /// a bare address is one host); implies --proxy-protocol. Any other
    /// source is served as a direct client under its own address, and one
    /// that sends a header anyway is closed.
    #[arg(long, value_name = "CIDR,...", value_delimiter = ',', value_parser = parse_cidr)]
    pub(super) proxy_protocol_from: Vec<Cidr>,
    /// Connections one client address (the one a trusted PROXY header
    /// names) may have open at once; more are closed as they come.
    #[arg(long, value_name = "N", value_parser = refuse_zero(parse_u32))]
    pub(super) max_conns_per_source: Option<u32>,
    /// New connections one client address may open per second (N/s, in
    /// bursts of N); more are closed as they come.
    #[arg(long, value_name = "N/s", value_parser = parse_rate)]
    pub(super) conn_rate_per_source: Option<u32>,
    /// Client addresses the table of the two limits above keeps at most;
    /// one with connections open is never dropped to make room.
    #[arg(long, value_name = "N", default_value_t = SourceLimits::DEFAULT_CAPACITY,
          value_parser = refuse_zero(parse_count))]
    pub(super) source_table_size: usize,
    /// Serve the counters at http://ADDR/metrics in the Prometheus text
    /// format, from the same loop (port 0 picks a free one; the log says which).
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    pub(super) metrics: Option<Addr>,
    /// Write the process id to PATH once listening (removed at exit if it
    /// still holds ours); SIGUSR2's new process writes its own there.
    #[arg(long, value_name = "PATH")]
    pub(super) pid_file: Option<PathBuf>,
    /// On SIGUSR2: how long the new process has to say it serves; one that
    /// takes longer is killed, and this one serves on.
    #[arg(long, value_name = "D", default_value = "10s", value_parser = refuse_zero(parse_duration))]
    pub(super) ready_timeout: Duration,
}

impl ServerArgs {
    /// How many reactors to run: `--threads`, 0 read as one per CPU (one
    /// where the count cannot be had).
    pub(super) fn reactors(&self) -> usize {
        match self.threads {
            0 => cpus(),
            n => n,
        }
    }

    /// The reactors' settings.
    pub(super) fn config(&self) -> Config {
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
            proxy_protocol: self.proxy_protocol || !self.proxy_protocol_from.is_empty(),
            proxy_from: self.proxy_protocol_from.clone(),
            per_source: self.source_limits().map(Sources::new),
            socket: SocketOptions {
                nodelay: !self.no_nodelay,
                recv_buffer: self.rcvbuf,
                send_buffer: self.sndbuf,
                keepalive: Some(self.tcp_keepalive).filter(|k| !k.idle.is_zero()),
                user_timeout: self.user_timeout(),
            },
            ..Config::default()
        }
    }

    /// The limits per source, if any is set: one table for all reactors.
    fn source_limits(&self) -> Option<SourceLimits> {
        let (max_conns, rate) = (self.max_conns_per_source, self.conn_rate_per_source);
        (max_conns.is_some() || rate.is_some()).then_some(SourceLimits {
            max_conns,
            rate,
            capacity: self.source_table_size,
        })
    }

    /// `--tcp-user-timeout`, by default twice the write timeout: a live
    /// peer that takes too little of its backlog is the write timeout's to
    /// close, under its own reason, before the kernel's timer could race
    /// it; the kernel's is the backstop for what the write timeout cannot
    /// see (all that is owed already in the kernel). None where the OS has
    /// no such timer (an explicit one is refused there).
    pub(super) fn user_timeout(&self) -> Option<Duration> {
        let timeout = self.tcp_user_timeout.unwrap_or(2 * self.write_timeout);
        nonzero(timeout).filter(|_| sys::USER_TIMEOUT)
    }

    /// What the start-up is to make: listeners, reactors, threads. It
    /// takes the sockets passed: a second plan has none.
    pub(super) fn plan(&self) -> Plan {
        Plan {
            listen: self.listen.clone(),
            passed: self.passed.take(),
            tls: self.tls.listener(),
            backlog: self.backlog,
            reactors: self.reactors(),
            metrics: self.metrics.clone(),
            threads: threads::Options {
                pin: self.pin,
                stats_interval: self.stats_interval.and_then(nonzero),
                reload: None,
            },
            pid_file: self.pid_file.clone(),
            ready_timeout: self.ready_timeout,
        }
    }
}

/// The CPUs this process may run on (1 if that cannot be told).
pub(super) fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `--tcp-keepalive`'s default: a dead peer of an idle connection is found
/// within two minutes, even with `--idle-timeout 0`; a live one never ends
/// by it (its kernel answers the probes).
const DEFAULT_KEEPALIVE: &str = "60s,10s,6";

/// `DEFAULT_MAX_FRAME_LEN` as `--help` shows it.
const DEFAULT_MAX_FRAME: &str = "8MiB";

/// `--frame-timeout`'s default, as `--help` shows it.
pub(super) const DEFAULT_FRAME_TIMEOUT: &str = "30s";

/// Limits on one frame, for servers that decode frames.
#[derive(Args)]
pub(super) struct FrameLimits {
    /// Largest frame payload accepted; a peer that sends a bigger one is disconnected.
    #[arg(long, default_value = DEFAULT_MAX_FRAME, value_parser = refuse_zero(parse_size))]
    pub(super) max_frame: usize,
    /// Close a connection whose frame is still incomplete this long after
    /// its first byte arrived (a peer trickling a frame it never finishes;
    /// 0 = never).
    #[arg(long, default_value = DEFAULT_FRAME_TIMEOUT, value_parser = parse_duration)]
    pub(super) frame_timeout: Duration,
}

impl FrameLimits {
    /// The reactors' settings: `server`'s, with the frame timeout.
    pub(super) fn config(&self, server: &ServerArgs) -> Config {
        Config {
            frame_timeout: nonzero(self.frame_timeout),
            ..server.config()
        }
    }

    /// The codec for `framing` under this limit; its error names both flags.
    pub(super) fn codec(&self, framing: Framing) -> Result<Codec, Usage> {
        Codec::new(framing, self.max_frame).map_err(|e| {
            Usage(format!(
                "--framing {framing} with --max-frame {}: {e}",
                self.max_frame
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use sockloop::codec::DEFAULT_MAX_FRAME_LEN;

    use super::super::{Cli, Command};
    use super::*;

    fn socket_options(args: &[&str]) -> SocketOptions {
        let cli = Cli::try_parse_from([&["sockloop", "echo"], args].concat()).unwrap();
        let Command::Echo(echo) = cli.command else {
            unreachable!("an echo command line")
        };
        echo.server.config().socket
    }

    #[test]
    fn the_user_timeout_is_twice_the_write_timeout_unless_given() {
        let secs = |n| sys::USER_TIMEOUT.then(|| Duration::from_secs(n));
        assert_eq!(socket_options(&[]).user_timeout, secs(60));
        assert_eq!(
            socket_options(&["--write-timeout", "5s"]).user_timeout,
            secs(10)
        );
        assert_eq!(socket_options(&["--write-timeout", "0"]).user_timeout, None);
        let given = ["--write-timeout", "0", "--tcp-user-timeout", "7s"];
        assert_eq!(socket_options(&given).user_timeout, secs(7));
        let off = ["--tcp-user-timeout", "0"];
        assert_eq!(socket_options(&off).user_timeout, None);
    }

    #[test]
    fn keepalive_is_on_by_default_and_off_says_so() {
        let probes = Some((Duration::from_secs(10), 6));
        let on = socket_options(&[]).keepalive.unwrap();
        assert_eq!((on.idle, on.probes), (Duration::from_secs(60), probes));
        assert_eq!(socket_options(&["--tcp-keepalive", "off"]).keepalive, None);
    }

    #[test]
    fn the_max_frame_default_shown_is_the_real_one() {
        assert_eq!(parse_size(DEFAULT_MAX_FRAME), Ok(DEFAULT_MAX_FRAME_LEN));
    }
}
