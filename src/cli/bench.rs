//! `sockloop bench`: an echo server loaded with many connections from one
//! thread, every byte checked.

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use sockloop::bench::{self, ClientTls, Mode};
use sockloop::codec::Framing;
use sockloop::sys::Addr;

use super::parse::{parse_addr, parse_duration, parse_plot_path, parse_size, refuse_zero};
use super::tls_args::BenchTlsArgs;
use crate::server::print_line;

/// The arguments of `sockloop bench`.
#[derive(Args)]
pub(super) struct BenchArgs {
    /// Echo server to load (IP:PORT, [IPv6]:PORT, HOST:PORT or unix:PATH);
    /// without it, an echo server starts in this process.
    #[arg(long, value_parser = parse_addr)]
    pub(super) target: Option<Addr>,
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
    window_fifo: Option<PathBuf>,
    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pub(super) tls: BenchTlsArgs,
    /// Write the latency percentile curve of the measured window to this
    /// file, as SVG (latency against percentile, log scale of 1/(1-p)).
    #[arg(long, value_name = "FILE.svg", value_parser = parse_plot_path)]
    plot: Option<PathBuf>,
}

impl BenchArgs {
    /// The run these flags ask for, with `tls` towards the target.
    pub(super) fn options(&self, tls: Option<ClientTls>) -> bench::Options {
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

    /// Runs the load and prints its report; fails if any echo was wrong.
    pub(super) fn run(&self) -> io::Result<()> {
        let tls = self.tls.client(self.target.as_ref())?;
        let report = bench::run(&self.options(tls))?;
        for error in &report.errors {
            // Ignored: a failed run says so in its exit status, even with stderr gone.
            let _ = writeln!(io::stderr().lock(), "bench: error: {error}");
        }
        if self.json {
            print_line(report.to_json())?;
        } else {
            print_line(&report)?;
        }
        match report.error_count {
            0 => Ok(()),
            n => Err(io::Error::other(format!("bench failed with {n} errors"))),
        }
    }
}
