//! The load generator behind `sockloop bench`: many client connections from
//! one thread, on the same [`Reactor`] the servers use.
//!
//! [`run`] connects `conns` clients to the target (or to an echo server it
//! starts in-process), lets them warm up, measures for the duration, then
//! collects every outstanding echo and closes each connection cleanly. Every
//! echoed byte is checked against what was sent (module `pattern`); any mismatch,
//! short echo or connection error ends the run and is reported.

mod client;
mod pattern;
pub mod plot;

use std::fmt;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::str::FromStr;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use client::{LoadClient, Plan};
use pattern::Pattern;

use crate::app::echo::{Echo, FramedEcho};
use crate::codec::{Codec, DEFAULT_MAX_FRAME_LEN, Encoder, Framing};
use crate::reactor::{Addr, Config, Handle, Reactor, Service};
use crate::sys::{ListenOptions, raise_fd_limit};

/// Past this many connections to a loopback target, clients bind to
/// 127.0.0.2, 127.0.0.3, … in turn: each source address has only about 28,000
/// ephemeral ports (32768–60999) per destination.
const CONNS_PER_SOURCE: usize = 20_000;
/// Connects in progress at once: a burst of SYNs beyond the server's accept
/// backlog is dropped and retried only a second later.
const CONNECTS_AT_ONCE: usize = 128;
/// Stream mode: bytes in flight per connection, and across all of them.
const STREAM_WINDOW: usize = 256 << 10;
const STREAM_BUDGET: usize = 64 << 20;
/// Descriptors besides the connections: stdio, the poller and its wake-up,
/// the echo's listener.
const FD_RESERVE: u64 = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Up to `depth` requests outstanding per connection, each timed.
    Pingpong,
    /// Requests sent back to back within a window of bytes, each timed.
    Stream,
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pingpong" => Ok(Mode::Pingpong),
            "stream" => Ok(Mode::Stream),
            other => Err(format!(
                "unknown mode {other:?}: expected pingpong or stream"
            )),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Pingpong => "pingpong",
            Mode::Stream => "stream",
        })
    }
}

/// What to run; the `sockloop bench` flags.
#[derive(Debug, Clone)]
pub struct Options {
    /// `None`: start an echo server in this process and use that.
    pub target: Option<Addr>,
    pub conns: usize,
    /// Payload bytes per request.
    pub size: usize,
    pub mode: Mode,
    pub depth: usize,
    pub duration: Duration,
    pub warmup: Duration,
    /// Requests per second across all connections; `None`: as fast as echoes return.
    pub rate: Option<u64>,
    pub framing: Framing,
    /// A server process whose CPU time over the measured window is reported.
    pub server_pid: Option<u32>,
    /// A FIFO that hears `enable` when the measured window opens and
    /// `disable` when it closes: the control channel of `perf stat --control`.
    pub window_fifo: Option<std::path::PathBuf>,
    /// Where to write the latency percentile curve of the run, as SVG.
    pub plot: Option<std::path::PathBuf>,
}

/// The measured window's numbers, and what went wrong.
#[derive(Debug, Clone)]
pub struct Report {
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
    pub error_count: usize,
}

impl Report {
    pub fn msgs_per_sec(&self) -> f64 {
        per_second(self.msgs as f64, self.elapsed)
    }

    /// Echoed payload (one direction), in 10^6 bytes per second.
    pub fn mb_per_sec(&self) -> f64 {
        per_second((self.msgs * self.options.size as u64) as f64, self.elapsed) / 1e6
    }

    pub fn server_cpu_us_per_msg(&self) -> Option<f64> {
        let cpu = self.server_cpu?;
        (self.msgs > 0).then(|| cpu.as_secs_f64() * 1e6 / self.msgs as f64)
    }

    /// One JSON object on one line, for scripts.
    pub fn to_json(&self) -> String {
        let o = &self.options;
        let [p50, p90, p99, p999, max] = self.latency_ns.map(|ns| ns as f64 / 1e3);
        let optional = |v: Option<f64>| v.map_or("null".to_owned(), |v| format!("{v:.3}"));
        format!(
            concat!(
                "{{\"mode\":\"{}\",\"framing\":\"{}\",\"conns\":{},\"size\":{},\"depth\":{},",
                "\"in_flight\":{},\"rate\":{},\"duration_s\":{:.3},\"msgs\":{},",
                "\"msgs_per_sec\":{:.1},\"mb_per_sec\":{:.3},\"p50_us\":{:.1},\"p90_us\":{:.1},",
                "\"p99_us\":{:.1},\"p999_us\":{:.1},\"max_us\":{:.1},\"server_cpu_s\":{},",
                "\"server_cpu_us_per_msg\":{},\"errors\":{}}}"
            ),
            o.mode,
            o.framing,
            o.conns,
            o.size,
            o.depth,
            self.in_flight,
            o.rate.map_or("null".to_owned(), |r| r.to_string()),
            self.elapsed.as_secs_f64(),
            self.msgs,
            self.msgs_per_sec(),
            self.mb_per_sec(),
            p50,
            p90,
            p99,
            p999,
            max,
            optional(self.server_cpu.map(|t| t.as_secs_f64())),
            optional(self.server_cpu_us_per_msg()),
            self.error_count,
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        let [p50, p90, p99, p999, max] = self.latency_ns.map(|ns| ns as f64 / 1e3);
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

/// Runs the load. `Err` is a setup problem (bad options, no descriptors);
/// a run that went wrong returns a report with errors in it.
pub fn run(options: &Options) -> io::Result<Report> {
    let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
    if options.conns == 0 || options.size == 0 || options.depth == 0 {
        return Err(invalid(
            "--conns, --size and --depth must be at least 1".into(),
        ));
    }
    if let Framing::Fixed(len) = options.framing
        && len != options.size
    {
        return Err(invalid(format!(
            "framing fixed:{len} carries {len}-byte payloads: use --size {len}"
        )));
    }
    if options.rate == Some(0) {
        return Err(invalid("--rate must be at least 1 per second".into()));
    }
    let fds_per_conn = if options.target.is_none() { 2 } else { 1 };
    let fd_limit = raise_fd_limit()?;
    let needed = options.conns as u64 * fds_per_conn + FD_RESERVE;
    if needed > fd_limit {
        let hint = if options.target.is_none() {
            " (the in-process echo holds the other end of each connection: use --target for more)"
        } else {
            ""
        };
        return Err(invalid(format!(
            "{} connections need about {needed} file descriptors, the limit is {fd_limit}{hint}",
            options.conns
        )));
    }

    let codec = match options.framing {
        Framing::Raw => None,
        framing => Some(Codec::new(framing, options.size).map_err(|e| invalid(e.to_string()))?),
    };
    let delimited = matches!(options.framing, Framing::Lines | Framing::Crlf);
    let pattern = Pattern::new(options.size, delimited);
    if let Some(codec) = &codec {
        // Fail now, not on the first request, if the framing cannot carry this size.
        codec
            .encode(pattern.slice(0, 0, options.size), &mut Vec::new())
            .map_err(|e| invalid(format!("framing {}: {e}", options.framing)))?;
    }
    let in_flight = match options.mode {
        Mode::Pingpong => options.depth,
        Mode::Stream => {
            let window = STREAM_WINDOW.min(STREAM_BUDGET / options.conns);
            options.depth.max(window / options.size)
        }
    };

    // Kept to the end: dropped after the reactor, the echo stops once every client has gone.
    let (_local_echo, target) = match &options.target {
        Some(target) => (None, target.clone()),
        None => {
            let echo = LocalEcho::start(options.framing, options.size)?;
            let addr = echo.addr.clone();
            (Some(echo), addr)
        }
    };
    let plan = Plan {
        target: target.clone(),
        conns: options.conns,
        size: options.size,
        in_flight,
        codec,
        interval: options
            .rate
            .map(|rate| Duration::from_secs_f64(options.conns as f64 / rate as f64)),
        warmup: options.warmup,
        duration: options.duration,
        server_pid: options.server_pid,
        window_fifo: options
            .window_fifo
            .as_ref()
            .map(|path| {
                // Non-blocking, so a FIFO nobody reads fails (ENXIO) instead of hanging.
                std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(path)
                    .map_err(|e| {
                        io::Error::new(e.kind(), format!("window FIFO {}: {e}", path.display()))
                    })
            })
            .transpose()?,
    };
    let config = Config {
        // Our own window bounds what is queued; reading must never pause for it.
        high_watermark: usize::MAX,
        low_watermark: usize::MAX,
        connect_timeout: Duration::from_secs(10),
        ..Config::default()
    };
    let mut reactor = Reactor::new(config, LoadClient::new(plan, pattern)?)?;
    let mut launched = 0;
    while !reactor.service().is_done() {
        let settled = reactor.service().settled_connects();
        while launched < options.conns && launched - settled < CONNECTS_AT_ONCE {
            reactor
                .connect(&target, source_address(&target, launched, options.conns))
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("opening connection {launched} to {target}: {e}"),
                    )
                })?;
            launched += 1;
        }
        reactor.turn()?;
    }

    let client = reactor.service();
    let window = client.window();
    let (errors, error_count) = client.errors();
    let h = &window.latency;
    if let Some(path) = &options.plot {
        plot::bench_run(path, options, h)?;
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
        errors: errors.to_vec(),
        error_count,
    })
}

/// Where connection `i` connects from, when ephemeral ports could run short.
fn source_address(target: &Addr, i: usize, conns: usize) -> Option<SocketAddr> {
    match target.ip().map(|addr| addr.ip()) {
        Some(IpAddr::V4(ip)) if ip.is_loopback() && conns > CONNS_PER_SOURCE => {
            let host = 2 + i / CONNS_PER_SOURCE;
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
                let options = ListenOptions { backlog: 4096 };
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
