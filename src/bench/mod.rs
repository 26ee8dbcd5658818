//! The load generator behind `sockloop bench`: many client connections from
//! one thread, on the same [`Reactor`] the servers use.
//!
//! [`run`] connects `conns` clients to the target (or to an echo server it
//! starts in-process), as fast as it can or at a bounded `--connect-rate`,
//! timing each connect; lets them warm up, measures for the duration, then
//! collects every outstanding echo and closes each connection cleanly. Every
//! echoed byte is checked against what was sent (module `pattern`); any mismatch,
//! short echo or connection error ends the run and is reported, and so do
//! failed connects once every connect has settled (with their count and the
//! first few errors).

mod client;
mod json;
mod pattern;
pub mod plot;
#[cfg(feature = "tls")]
mod tls;
#[cfg(not(feature = "tls"))]
#[path = "tls_off.rs"]
mod tls;

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use client::{LoadClient, Plan};
use hdrhistogram::Histogram;
use json::JsonObject;
use pattern::Pattern;
pub use tls::ClientTls;

use crate::app::echo::{Echo, FramedEcho};
use crate::codec::{Codec, DEFAULT_MAX_FRAME_LEN, Encoder, Framing};
use crate::reactor::{Addr, Config, ConnId, Handle, Reactor, Service};
use crate::sys::{
    ListenOptions, cpu_time, ephemeral_ports, grow_fd_table, open_fifo_for_writing, raise_fd_limit,
};

/// The ports a client connection takes its port from where the kernel does
/// not say (the IANA range, the BSDs' default).
const DEFAULT_EPHEMERAL_PORTS: RangeInclusive<u16> = 49152..=65535;
/// Connects in progress at once, without `--connect-rate`: a burst of SYNs
/// beyond the server's accept backlog is dropped and retried only a second
/// later.
const CONNECTS_AT_ONCE: usize = 128;
/// Under `--connect-rate`: the most connects started between two turns of
/// the loop, so that completions are seen (and timed) while a storm goes on.
const CONNECTS_PER_TURN: usize = 256;
/// Stream mode: bytes in flight per connection, and across all of them.
const STREAM_WINDOW: usize = 256 << 10;
const STREAM_BUDGET: usize = 64 << 20;
/// Descriptors besides the connections: stdio, the poller and its wake-up,
/// the echo's listener.
const FD_RESERVE: u64 = 32;

/// How the clients load the target: `--mode`, or `--idle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Up to `depth` requests outstanding per connection, each timed.
    Pingpong,
    /// Requests sent back to back within a window of bytes, each timed.
    Stream,
    /// Every connection held open, one request on each per interval (`--idle`).
    Idle,
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pingpong" => Ok(Mode::Pingpong),
            "stream" => Ok(Mode::Stream),
            other => Err(format!(
                "unknown mode {other:?}: expected pingpong or stream (or --idle)"
            )),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Pingpong => "pingpong",
            Mode::Stream => "stream",
            Mode::Idle => "idle",
        })
    }
}

/// What to run; the `sockloop bench` flags.
#[derive(Debug, Clone)]
pub struct Options {
    /// `None`: start an echo server in this process and use that.
    pub target: Option<Addr>,
    /// Client connections, all held open for the run.
    pub conns: usize,
    /// Payload bytes per request.
    pub size: usize,
    /// How requests are sent; see [`Mode`].
    pub mode: Mode,
    /// Requests in flight per connection (stream mode: at least this many).
    pub depth: usize,
    /// Length of the measured window.
    pub duration: Duration,
    /// Load before the measured window, not counted.
    pub warmup: Duration,
    /// Requests per second across all connections; `None`: as fast as echoes return.
    pub rate: Option<u64>,
    /// How requests are framed and echoes decoded.
    pub framing: Framing,
    /// A server process whose CPU time over the measured window is reported.
    pub server_pid: Option<u32>,
    /// A FIFO that hears `enable` when the measured window opens and
    /// `disable` when it closes: the control channel of `perf stat --control`.
    pub window_fifo: Option<std::path::PathBuf>,
    /// Where to write the latency percentile curve of the run, as SVG.
    pub plot: Option<std::path::PathBuf>,
    /// Connect with TLS: every connection starts with a full handshake.
    pub tls: Option<ClientTls>,
    /// Idle mode: each connection's gap between requests.
    pub interval: Duration,
    /// Connects started per second; `None`: up to `CONNECTS_AT_ONCE` (128) in
    /// progress at a time, each next one as soon as one settles.
    pub connect_rate: Option<u64>,
    /// Connections to a loopback target per source address before the next
    /// (127.0.0.2, 127.0.0.3, …); `None`: from the kernel's range of
    /// ephemeral ports ([`ports_per_source`]).
    pub per_source: Option<usize>,
}

/// How the connects went.
#[derive(Debug, Clone)]
pub struct ConnectReport {
    /// Connects started (the run may end before it starts them all).
    pub attempted: usize,
    /// Connects that completed.
    pub established: usize,
    /// From the first connect call to the last connection up.
    pub elapsed: Duration,
    /// Connect latency percentiles in nanoseconds, from the call to the
    /// loop seeing the connection established: p50, p99, max.
    pub latency_ns: [u64; 3],
    /// Connects that failed, before or after they started.
    pub failures: usize,
    /// The first few failures.
    pub failure_examples: Vec<String>,
    /// Idle mode: from the first connect call to the last connection's
    /// first echo (every connection accepted and served once), and the
    /// percentiles (p50, p99, max) of that time per connection.
    pub served: Option<(Duration, [u64; 3])>,
    /// CPU time the server process used from the first connect call until
    /// every connection was up (idle mode: and served).
    pub server_cpu: Option<Duration>,
    /// Source addresses used (1: the kernel chose; more: 127.0.0.2, …).
    pub sources: usize,
}

impl ConnectReport {
    /// Connections established per second over [`elapsed`](Self::elapsed).
    pub fn per_second(&self) -> f64 {
        per_second(self.established as f64, self.elapsed)
    }

    /// Idle mode: connections accepted and served once, per second.
    pub fn served_per_second(&self) -> Option<f64> {
        self.served
            .map(|(elapsed, _)| per_second(self.established as f64, elapsed))
    }

    /// Server CPU per connection over the connecting phase, in µs.
    pub fn server_cpu_us_per_conn(&self) -> Option<f64> {
        let cpu = self.server_cpu?;
        (self.established > 0).then(|| cpu.as_secs_f64() * 1e6 / self.established as f64)
    }
}

/// The measured window's numbers, and what went wrong.
#[derive(Debug, Clone)]
pub struct Report {
    /// What was asked for.
    pub options: Options,
    /// Requests per connection outstanding at once.
    pub in_flight: usize,
    /// Length of the measured window (zero if the run failed before it).
    pub elapsed: Duration,
    /// Round trips completed within the window.
    pub msgs: u64,
    /// Round-trip percentiles in nanoseconds: p50, p90, p99, p99.9, max.
    pub latency_ns: [u64; 5],
    /// CPU time the server process used over the window.
    pub server_cpu: Option<Duration>,
    /// The first few errors; `error_count` counts them all.
    pub errors: Vec<String>,
    /// Every error of the run, counted.
    pub error_count: usize,
    /// How the connects went.
    pub connect: ConnectReport,
}

impl Report {
    /// Round trips per second over the measured window.
    pub fn msgs_per_sec(&self) -> f64 {
        per_second(self.msgs as f64, self.elapsed)
    }

    /// Echoed payload (one direction), in 10^6 bytes per second.
    pub fn mb_per_sec(&self) -> f64 {
        per_second((self.msgs * self.options.size as u64) as f64, self.elapsed) / 1e6
    }

    /// The server's CPU time per round trip, in µs: what compare.sh ranks
    /// servers by. `None` without a server pid or a round trip.
    pub fn server_cpu_us_per_msg(&self) -> Option<f64> {
        let cpu = self.server_cpu?;
        (self.msgs > 0).then(|| cpu.as_secs_f64() * 1e6 / self.msgs as f64)
    }

    /// One JSON object on one line, for scripts.
    pub fn to_json(&self) -> String {
        let o = &self.options;
        let [p50, p90, p99, p999, max] = self.latency_ns.map(microseconds);
        let mut json = JsonObject::new();
        json.string("mode", &o.mode.to_string())
            .string("framing", &o.framing.to_string())
            .value("conns", o.conns)
            .value("size", o.size)
            .value("depth", o.depth)
            .value("in_flight", self.in_flight)
            .value_or_null("rate", o.rate)
            .decimal("duration_s", self.elapsed.as_secs_f64(), 3)
            .value("msgs", self.msgs)
            .decimal("msgs_per_sec", self.msgs_per_sec(), 1)
            .decimal("mb_per_sec", self.mb_per_sec(), 3)
            .decimal("p50_us", p50, 1)
            .decimal("p90_us", p90, 1)
            .decimal("p99_us", p99, 1)
            .decimal("p999_us", p999, 1)
            .decimal("max_us", max, 1)
            .decimal_or_null("server_cpu_s", self.server_cpu.map(|t| t.as_secs_f64()), 3)
            .decimal_or_null("server_cpu_us_per_msg", self.server_cpu_us_per_msg(), 3);
        self.connect.write_json(&mut json, o);
        json.value("errors", self.error_count);
        json.finish()
    }
}

impl ConnectReport {
    /// The connect members of [`Report::to_json`].
    fn write_json(&self, json: &mut JsonObject, options: &Options) {
        let [p50, p99, max] = self.latency_ns.map(microseconds);
        let served_us = |i: usize| self.served.map(|(_, ns)| microseconds(ns[i]));
        let interval = (options.mode == Mode::Idle).then_some(options.interval);
        json.value("tls", options.tls.is_some())
            .value_or_null("connect_rate", options.connect_rate)
            .decimal_or_null("interval_s", interval.map(|t| t.as_secs_f64()), 3)
            .value("connects", self.established)
            .decimal("connect_s", self.elapsed.as_secs_f64(), 3)
            .decimal("connects_per_sec", self.per_second(), 1)
            .decimal("connect_p50_us", p50, 1)
            .decimal("connect_p99_us", p99, 1)
            .decimal("connect_max_us", max, 1)
            .value("connect_failures", self.failures)
            .strings("connect_errors", &self.failure_examples)
            .decimal_or_null("served_s", self.served.map(|(t, _)| t.as_secs_f64()), 3)
            .decimal_or_null("served_per_sec", self.served_per_second(), 3)
            .decimal_or_null("served_p50_us", served_us(0), 3)
            .decimal_or_null("served_p99_us", served_us(1), 3)
            .decimal_or_null("served_max_us", served_us(2), 3)
            .decimal_or_null(
                "connect_server_cpu_s",
                self.server_cpu.map(|t| t.as_secs_f64()),
                3,
            )
            .decimal_or_null(
                "connect_server_cpu_us_per_conn",
                self.server_cpu_us_per_conn(),
                3,
            )
            .value("sources", self.sources);
    }
}

/// Nanoseconds in µs.
fn microseconds(ns: u64) -> f64 {
    ns as f64 / 1e3
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        let [p50, p90, p99, p999, max] = self.latency_ns.map(microseconds);
        writeln!(
            f,
            "{} {} B, {} connections, {} in flight each, framing {}: {} round trips in {:.2} s",
            o.mode,
            o.size,
            o.conns,
            self.in_flight,
            o.framing,
            self.msgs,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "throughput  {:.0} msgs/s  {:.2} MB/s",
            self.msgs_per_sec(),
            self.mb_per_sec()
        )?;
        writeln!(
            f,
            "latency us  p50 {p50:.1}  p90 {p90:.1}  p99 {p99:.1}  p99.9 {p999:.1}  max {max:.1}"
        )?;
        write_connects(f, &self.connect, self.options.tls.is_some())?;
        match (self.server_cpu, self.server_cpu_us_per_msg()) {
            (Some(cpu), Some(per_msg)) => writeln!(
                f,
                "server CPU  {:.3} s  {per_msg:.2} us per message",
                cpu.as_secs_f64()
            )?,
            _ if self.options.server_pid.is_some() => writeln!(f, "server CPU  n/a")?,
            _ => {}
        }
        write!(f, "errors      {}", self.error_count)
    }
}

/// The connect lines of the text report; with TLS, each connect is a
/// handshake too.
fn write_connects(f: &mut fmt::Formatter<'_>, c: &ConnectReport, tls: bool) -> fmt::Result {
    let [p50, p99, max] = c.latency_ns.map(microseconds);
    let from = match c.sources {
        1 => String::new(),
        n => format!(" from {n} source addresses"),
    };
    let what = if tls { "handshakes " } else { "connects   " };
    writeln!(
        f,
        "{what} {} of {} in {:.3} s{from} ({:.0}/s)  latency us  p50 {p50:.1}  p99 {p99:.1}  max {max:.1}",
        c.established,
        c.attempted,
        c.elapsed.as_secs_f64(),
        c.per_second(),
    )?;
    if let (Some((elapsed, ns)), Some(rate)) = (c.served, c.served_per_second()) {
        let [p50, p99, max] = ns.map(microseconds);
        writeln!(
            f,
            "served      every connection echoed once {:.3} s after the first connect ({rate:.0}/s)  us  p50 {p50:.1}  p99 {p99:.1}  max {max:.1}",
            elapsed.as_secs_f64()
        )?;
    }
    if let Some(us) = c.server_cpu_us_per_conn() {
        writeln!(
            f,
            "            server CPU while connecting {us:.1} us per connection"
        )?;
    }
    if c.failures > 0 {
        writeln!(f, "connect failures {}", c.failures)?;
        for example in &c.failure_examples {
            writeln!(f, "  {example}")?;
        }
    }
    Ok(())
}

/// A progress line on stderr. Unlike `eprintln!`, it does not panic when
/// nobody reads stderr any more (`2>&1 | head -1`): that is no reason to
/// stop a run.
fn progress(line: fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr().lock(), "bench: {line}");
}

fn per_second(count: f64, elapsed: Duration) -> f64 {
    if elapsed.is_zero() {
        0.0
    } else {
        count / elapsed.as_secs_f64()
    }
}

/// Refuses options that cannot make a run, naming the flag: what `run`
/// checks first, for a front end to check before anything starts.
pub fn check(options: &Options) -> Result<(), String> {
    let at_least_one = [
        ("--conns", options.conns),
        ("--size", options.size),
        ("--depth", options.depth),
        ("--per-source", options.per_source.unwrap_or(1)),
    ];
    if let Some((flag, _)) = at_least_one.iter().find(|(_, value)| *value == 0) {
        return Err(format!("{flag} must be at least 1"));
    }
    for (flag, rate) in [
        ("--rate", options.rate),
        ("--connect-rate", options.connect_rate),
    ] {
        if rate == Some(0) {
            return Err(format!("{flag} must be at least 1 per second"));
        }
    }
    if options.duration.is_zero() {
        return Err("--duration must be more than 0: the measured window is empty".into());
    }
    if options.mode == Mode::Idle && options.interval.is_zero() {
        return Err("--interval must be more than 0".into());
    }
    if let Framing::Fixed(len) = options.framing
        && len != options.size
    {
        return Err(format!(
            "--framing fixed:{len} carries {len}-byte payloads: use --size {len}"
        ));
    }
    codec(options, &pattern(options)).map(drop)
}

/// The codec for the run's requests, if it frames them; fails now, not on
/// the first request, if the framing cannot carry a payload of `--size`.
fn codec(options: &Options, pattern: &Pattern) -> Result<Option<Codec>, String> {
    let framing = options.framing;
    let codec = match framing {
        Framing::Raw => return Ok(None),
        framing => Codec::new(framing, options.size),
    };
    let fail =
        |e: &dyn fmt::Display| format!("--framing {framing} with --size {}: {e}", options.size);
    let codec = codec.map_err(|e| fail(&e))?;
    codec
        .encode(pattern.slice(0, 0, options.size), &mut Vec::new())
        .map_err(|e| fail(&e))?;
    Ok(Some(codec))
}

/// The bytes the run sends: never a delimiter of its framing.
fn pattern(options: &Options) -> Pattern {
    let delimited = matches!(options.framing, Framing::Lines | Framing::Crlf);
    Pattern::new(options.size, delimited)
}

/// Runs the load. `Err` is a setup problem (bad options, no descriptors);
/// a run that went wrong returns a report with errors in it.
pub fn run(options: &Options) -> io::Result<Report> {
    check(options).map_err(invalid_input)?;
    reserve_descriptors(options)?;
    let pattern = pattern(options);
    let codec = codec(options, &pattern).map_err(invalid_input)?;
    let in_flight = in_flight(options);
    // Kept to the end: dropped after the reactor, the echo stops once every client has gone.
    let (_local_echo, target) = match &options.target {
        Some(target) => (None, target.clone()),
        None => {
            let echo = LocalEcho::start(options.framing, options.size)?;
            let addr = echo.addr.clone();
            (Some(echo), addr)
        }
    };
    let plan = plan(options, &target, in_flight, codec)?;
    let connects = Connects {
        options,
        target: &target,
        per_source: options.per_source.unwrap_or_else(|| {
            ports_per_source(ephemeral_ports().unwrap_or(DEFAULT_EPHEMERAL_PORTS))
        }),
    };
    let mut reactor = Reactor::new(client_config(), LoadClient::new(plan, pattern)?)?;
    while !reactor.service().is_done() {
        connects.start_due(&mut reactor);
        let client = reactor.service();
        if client.is_done() {
            break;
        }
        if connects.waiting(client) && client.open() == 0 {
            // Nothing to wake the loop (no connect under way, no connection
            // to carry a timer): sleep until the next connect is due.
            connects.sleep_until_next(&reactor);
            continue;
        }
        reactor.turn()?;
    }
    report(reactor.service(), in_flight, &connects)
}

/// Options that cannot make a run, as the error of [`run`].
fn invalid_input(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// Raises the limit of open files for every connection of the run (both
/// ends with the in-process echo), or says why it cannot.
fn reserve_descriptors(options: &Options) -> io::Result<()> {
    let fds_per_conn = if options.target.is_none() { 2 } else { 1 };
    let fd_limit = raise_fd_limit()?;
    let needed = options.conns as u64 * fds_per_conn + FD_RESERVE;
    if needed > fd_limit {
        let hint = if options.target.is_none() {
            " (the in-process echo holds the other end of each connection: use --target for more)"
        } else {
            ""
        };
        return Err(invalid_input(format!(
            "{} connections need about {needed} file descriptors, the limit is {fd_limit}{hint}",
            options.conns
        )));
    }
    grow_fd_table(needed)
}

/// Requests outstanding per connection at once: in stream mode, enough to
/// fill its window of bytes.
fn in_flight(options: &Options) -> usize {
    match options.mode {
        Mode::Pingpong => options.depth,
        Mode::Idle => 1,
        Mode::Stream => {
            let window = STREAM_WINDOW.min(STREAM_BUDGET / options.conns);
            options.depth.max(window / options.size)
        }
    }
}

/// What the load client is to do against `target`; opens the window FIFO.
fn plan(
    options: &Options,
    target: &Addr,
    in_flight: usize,
    codec: Option<Codec>,
) -> io::Result<Plan> {
    Ok(Plan {
        target: target.clone(),
        conns: options.conns,
        size: options.size,
        in_flight,
        codec,
        interval: match options.mode {
            Mode::Idle => Some(options.interval),
            _ => options
                .rate
                .map(|rate| Duration::from_secs_f64(options.conns as f64 / rate as f64)),
        },
        idle: options.mode == Mode::Idle,
        connect_rate: options.connect_rate,
        warmup: options.warmup,
        duration: options.duration,
        server_pid: options.server_pid,
        window_fifo: options
            .window_fifo
            .as_ref()
            .map(|path| {
                open_fifo_for_writing(path).map_err(|e| {
                    io::Error::new(e.kind(), format!("window FIFO {}: {e}", path.display()))
                })
            })
            .transpose()?,
    })
}

/// The clients' reactor settings.
fn client_config() -> Config {
    Config {
        // Our own window bounds what is queued; reading must never pause for it.
        high_watermark: usize::MAX,
        low_watermark: usize::MAX,
        connect_timeout: Duration::from_secs(10),
        ..Config::default()
    }
}

/// The connects of a run: when each is due, where it comes from, and how
/// it starts. The client counts how they went, in its `Launches`.
struct Connects<'a> {
    options: &'a Options,
    target: &'a Addr,
    /// Connections per source address; see [`source_address`].
    per_source: usize,
}

impl Connects<'_> {
    /// Starts the connects due now. Before the first, takes the server's
    /// CPU time, for the CPU it spends on the connects.
    fn start_due(&self, reactor: &mut Reactor<LoadClient>) {
        let (launched, settled, first) = {
            let l = reactor.service().launches().borrow();
            (l.launched, l.settled(), l.first)
        };
        let now = reactor.now();
        let due = connects_due(self.options, launched, settled, now - first.unwrap_or(now));
        if launched == 0
            && due > 0
            && let Some(pid) = self.options.server_pid
        {
            // Unreadable (another OS): the report says n/a.
            reactor.service().launches().borrow_mut().server_cpu =
                cpu_time(pid).ok().map(|t| (t, None));
        }
        for index in launched..launched + due {
            let local = source_address(self.target, index, self.per_source);
            let began = reactor.now();
            let result = connect(reactor, self.target, local, self.options.tls.as_ref());
            let mut launches = reactor.service().launches().borrow_mut();
            match result {
                Ok(id) => launches.started(id, began),
                Err(e) => launches.failed_at_once(local, &e),
            }
        }
    }

    /// Whether more connects are to come and every one started so far has
    /// settled: the loop waits for the next one to be due.
    fn waiting(&self, client: &LoadClient) -> bool {
        let l = client.launches().borrow();
        l.launched < self.options.conns && l.launched == l.settled()
    }

    /// Under `--connect-rate`, sleeps until the next connect is due.
    fn sleep_until_next(&self, reactor: &Reactor<LoadClient>) {
        let (launched, first) = {
            let l = reactor.service().launches().borrow();
            (l.launched, l.first)
        };
        if let (Some(rate), Some(first)) = (self.options.connect_rate, first) {
            let next = first + Duration::from_secs_f64(launched as f64 / rate as f64);
            thread::sleep(next.saturating_duration_since(reactor.now()));
        }
    }
}

/// The report of a finished run, from what the client saw; writes the
/// latency plot if one was asked for.
fn report(client: &LoadClient, in_flight: usize, connects: &Connects<'_>) -> io::Result<Report> {
    let options = connects.options;
    let verdict = client.launches().borrow().verdict();
    let window = client.window();
    let (errors, error_count) = client.errors();
    let mut errors = errors.to_vec();
    let error_count = error_count + usize::from(verdict.is_some());
    errors.extend(verdict);
    let connect = connect_report(client, options.conns, connects.per_source, connects.target);
    let h = &window.latency;
    if let Some(path) = &options.plot {
        plot::bench_run(path, options, h)?;
        progress(format_args!("wrote latency plot to {}", path.display()));
    }
    Ok(Report {
        options: options.clone(),
        in_flight,
        elapsed: match (window.start, window.end) {
            (Some(start), Some(end)) => end.duration_since(start),
            _ => Duration::ZERO,
        },
        msgs: window.msgs,
        latency_ns: [
            h.value_at_quantile(0.50),
            h.value_at_quantile(0.90),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
        ],
        server_cpu: window
            .server_cpu
            .map(|(start, end)| end.saturating_sub(start)),
        errors,
        error_count,
        connect,
    })
}

/// Starts a connect to `target`, with TLS if asked.
fn connect<S: Service>(
    reactor: &mut Reactor<S>,
    target: &Addr,
    local: Option<SocketAddr>,
    tls: Option<&ClientTls>,
) -> io::Result<ConnId> {
    match tls {
        Some(tls) => tls.connect(reactor, target, local),
        None => reactor.connect(target, local),
    }
}

/// How many connects to start now, `elapsed` after the first: under
/// `--connect-rate` those due by now (at most [`CONNECTS_PER_TURN`]),
/// otherwise enough to keep [`CONNECTS_AT_ONCE`] under way.
fn connects_due(options: &Options, launched: usize, settled: usize, elapsed: Duration) -> usize {
    let left = options.conns - launched;
    match options.connect_rate {
        Some(rate) => {
            let by_now = (elapsed.as_secs_f64() * rate as f64) as usize + 1;
            by_now
                .min(options.conns)
                .saturating_sub(launched)
                .min(CONNECTS_PER_TURN)
        }
        None => CONNECTS_AT_ONCE
            .saturating_sub(launched - settled)
            .min(left),
    }
}

fn connect_report(
    client: &LoadClient,
    conns: usize,
    per_source: usize,
    target: &Addr,
) -> ConnectReport {
    let l = client.launches().borrow();
    let percentiles = |h: &Histogram<u64>| {
        [
            h.value_at_quantile(0.50),
            h.value_at_quantile(0.99),
            h.max(),
        ]
    };
    let since_first = |at: Option<Instant>| match (l.first, at) {
        (Some(first), Some(at)) => at.duration_since(first),
        _ => Duration::ZERO,
    };
    let (served_at, served_latency) = client.served();
    ConnectReport {
        attempted: l.launched,
        established: l.established,
        elapsed: since_first(l.last_up),
        latency_ns: percentiles(&l.latency),
        failures: l.failures,
        failure_examples: l.failure_examples.clone(),
        served: served_at.map(|at| (since_first(Some(at)), percentiles(served_latency))),
        server_cpu: l
            .server_cpu
            .and_then(|(start, end)| Some(end?.saturating_sub(start))),
        sources: (0..conns)
            .step_by(per_source.max(1))
            .map(|i| source_address(target, i, per_source))
            .collect::<BTreeSet<_>>()
            .len(),
    }
}

/// Connections to one loopback destination per source address: half the
/// kernel's range of ephemeral ports. The other half is for everything
/// else, above all the TIME_WAIT sockets of the run before (they hold their
/// ports for 60 s): as a source address fills up, each connect searches
/// longer for a free port. Measured here (32768–60999, so 14,116 each): 19,000
/// connects at 5,000/s right after a run like it went at 1,024/s with a p99
/// of 0.9 s from one address, and at 5,000/s with a p99 of 0.8 ms from two.
pub fn ports_per_source(range: RangeInclusive<u16>) -> usize {
    (range.len() / 2).max(1)
}

/// Where connection `i` connects from. To a loopback target the first
/// `per_source` connections come from wherever the kernel picks (127.0.0.1,
/// any free ephemeral port); the next `per_source` are bound to 127.0.0.2,
/// then 127.0.0.3, and so on, each address with ports of its own. (Linux
/// answers for all of 127.0.0.0/8; macOS and the BSDs only for the
/// addresses given to `lo0`.) Elsewhere the kernel picks.
fn source_address(target: &Addr, i: usize, per_source: usize) -> Option<SocketAddr> {
    let group = i / per_source.max(1);
    match target.ip().map(|addr| addr.ip()) {
        Some(IpAddr::V4(ip)) if ip.is_loopback() && group > 0 => {
            let host = 1 + group;
            let octets = [(host >> 16) as u8, (host >> 8) as u8, host as u8];
            Some(SocketAddr::new(
                Ipv4Addr::new(127, octets[0], octets[1], octets[2]).into(),
                0,
            ))
        }
        _ => None,
    }
}

/// The echo server of a run without `--target`, on its own thread.
struct LocalEcho {
    addr: Addr,
    handle: Handle,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl LocalEcho {
    fn start(framing: Framing, size: usize) -> io::Result<LocalEcho> {
        match framing {
            Framing::Raw => Self::spawn(|| Ok(Echo)),
            framing => {
                let max = size.max(DEFAULT_MAX_FRAME_LEN);
                Self::spawn(move || {
                    Codec::new(framing, max)
                        .map(FramedEcho::new)
                        .map_err(io::Error::other)
                })
            }
        }
    }

    fn spawn<S: Service>(
        make: impl FnOnce() -> io::Result<S> + Send + 'static,
    ) -> io::Result<LocalEcho> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = thread::Builder::new().name("echo".into()).spawn(move || {
            let started = make().and_then(|service| {
                let mut reactor = Reactor::new(Config::default(), service)?;
                let loopback = Addr::Ip(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
                let options = ListenOptions {
                    backlog: 4096,
                    ..ListenOptions::default()
                };
                let addr = reactor.listen(&loopback, &options)?;
                Ok((reactor, addr))
            });
            match started {
                Ok((mut reactor, addr)) => {
                    let _ = tx.send(Ok((addr, reactor.handle())));
                    reactor.run()
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    Ok(())
                }
            }
        })?;
        let (addr, handle) = rx
            .recv()
            .map_err(|_| io::Error::other("the echo server thread died"))??;
        Ok(LocalEcho {
            addr,
            handle,
            thread: Some(thread),
        })
    }
}

impl Drop for LocalEcho {
    fn drop(&mut self) {
        let _ = self.handle.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(conns: usize, connect_rate: Option<u64>) -> Options {
        Options {
            target: None,
            conns,
            size: 64,
            mode: Mode::Pingpong,
            depth: 1,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            rate: None,
            framing: Framing::Raw,
            server_pid: None,
            window_fifo: None,
            plot: None,
            tls: None,
            interval: Duration::from_secs(1),
            connect_rate,
            per_source: None,
        }
    }

    #[test]
    fn each_source_address_takes_half_the_port_range() {
        // This project's machines: 32768-60999.
        assert_eq!(ports_per_source(32768..=60999), 14_116);
        assert_eq!(ports_per_source(DEFAULT_EPHEMERAL_PORTS), 8_192);
        assert_eq!(ports_per_source(40000..=40000), 1);
    }

    #[test]
    fn loopback_clients_spread_over_source_addresses_once_one_is_used_up() {
        let target: Addr = "127.0.0.1:7878".parse().unwrap();
        let from = |i| source_address(&target, i, 1000).map(|a| a.to_string());
        assert_eq!(from(0), None, "the first group: wherever the kernel picks");
        assert_eq!(from(999), None);
        assert_eq!(from(1000).as_deref(), Some("127.0.0.2:0"));
        assert_eq!(from(2999).as_deref(), Some("127.0.0.3:0"));
        // Past 127.0.0.255 the next octet moves.
        assert_eq!(from(255_000).as_deref(), Some("127.0.1.0:0"));
        let remote: Addr = "10.0.0.1:7878".parse().unwrap();
        assert_eq!(source_address(&remote, 5000, 1000), None);
    }

    #[test]
    fn connects_are_due_by_the_rate_or_kept_to_a_window() {
        let paced = options(1000, Some(100));
        // The first at once, then one per 10 ms.
        assert_eq!(connects_due(&paced, 0, 0, Duration::ZERO), 1);
        assert_eq!(connects_due(&paced, 1, 0, Duration::from_millis(5)), 0);
        assert_eq!(connects_due(&paced, 1, 1, Duration::from_millis(25)), 2);
        // Never more than the run's connections, nor than a turn's share.
        assert_eq!(connects_due(&paced, 990, 990, Duration::from_secs(60)), 10);
        let storm = options(10_000, Some(1_000_000));
        assert_eq!(
            connects_due(&storm, 0, 0, Duration::from_secs(1)),
            CONNECTS_PER_TURN
        );
        let window = options(1000, None);
        assert_eq!(
            connects_due(&window, 0, 0, Duration::ZERO),
            CONNECTS_AT_ONCE
        );
        assert_eq!(connects_due(&window, 200, 100, Duration::ZERO), 28);
        assert_eq!(connects_due(&window, 990, 990, Duration::ZERO), 10);
    }
}
