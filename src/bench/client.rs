//! The load: one [`LoadClient`] service drives every connection of the run
//! on one reactor, and keeps the clock of the run's phases.
//!
//! Each connection keeps up to `in_flight` requests outstanding, sends the
//! next as soon as a reply frees a slot (or, under `--rate`, when its schedule
//! says so), checks every echoed byte against the pattern it sent, and times
//! each request from the callback that queued it to the callback that saw the
//! last byte of its echo. Phases: connecting, warmup, measuring, draining
//! (no new requests; each connection sends FIN once its echoes are all back
//! and must then see the server's FIN), done. A single error ends the run;
//! failed connects are counted instead, and end it once every connect has
//! settled ([`Launches::verdict`]).
//!
//! Connections are opened by [`super::run`], outside any callback, so each
//! connect is timed from the call that starts it; it books them in
//! [`Launches`], which the client reads in its callbacks.
//!
//! Idle mode: each connection sends one message (a hello) as soon as it is
//! up, and the warmup starts once every connection has had its hello
//! echoed. From then on each sends one message every interval, at its own
//! offset within the interval, so that the sends are spread evenly.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::pattern::Pattern;
use super::progress;
use crate::codec::{Codec, Decoder, Encoder};
use crate::reactor::{Addr, CloseReason, ConnId, Context, Service};
use crate::sys::cpu_time;

/// How often the clock timer fires when traffic alone does not call us.
const TICK: Duration = Duration::from_millis(100);
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How long echoes still owed at the end of the measured window may take.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Error messages kept; the rest are only counted.
const MAX_ERRORS_KEPT: usize = 10;

const TAG_TICK: u64 = 0;
const TAG_SEND: u64 = 1;
const TAG_DRAIN: u64 = 2;
/// Idle mode: a connection's first scheduled message is due.
const TAG_START: u64 = 3;
/// Under `--connect-rate`: the next connect is due.
const TAG_PACE: u64 = 4;

/// Failed connects, with nothing ever connected, after which the rest are
/// not tried: the target is down or refuses, and trying thousands more
/// would only take time.
const GIVE_UP_AFTER: usize = 64;
/// Connect failures whose message is kept.
const MAX_CONNECT_ERRORS_KEPT: usize = 5;

/// What the run is: fixed before the first connection.
pub(crate) struct Plan {
    pub(crate) target: Addr,
    pub(crate) conns: usize,
    pub(crate) size: usize,
    /// Requests outstanding per connection.
    pub(crate) in_flight: usize,
    /// `None`: raw bytes, where messages are counted by size.
    pub(crate) codec: Option<Codec>,
    /// Under `--rate`, and in idle mode: each connection's gap between requests.
    pub(crate) interval: Option<Duration>,
    /// Idle mode: one message per interval, and a hello first.
    pub(crate) idle: bool,
    /// Under `--connect-rate`: connects per second.
    pub(crate) connect_rate: Option<u64>,
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    /// A server process whose CPU time is read at the window's edges.
    pub(crate) server_pid: Option<u32>,
    /// Told `enable` and `disable` at the window's edges (`perf stat --control`).
    pub(crate) window_fifo: Option<std::fs::File>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Warmup { until: Instant },
    Measuring { until: Instant },
    Draining { until: Instant },
    Done,
}

/// What the measured window saw.
pub(crate) struct Window {
    pub(crate) start: Option<Instant>,
    pub(crate) end: Option<Instant>,
    pub(crate) msgs: u64,
    /// Round-trip times in nanoseconds.
    pub(crate) latency: Histogram<u64>,
    pub(crate) server_cpu: Option<(Duration, Duration)>,
}

/// The connects: when each began, how long each took, and which failed.
/// Written by `run` (each connect it starts, and each that fails at once)
/// and by the client's callbacks (each that completes or fails later).
pub(crate) struct Launches {
    conns: usize,
    /// The target, to name in failures.
    target: String,
    pub(crate) first: Option<Instant>,
    pub(crate) launched: usize,
    /// Started and not yet settled: which connect it was, and when it began.
    pending: HashMap<ConnId, (usize, Instant)>,
    pub(crate) established: usize,
    /// When the last connection came up.
    pub(crate) last_up: Option<Instant>,
    /// From the connect call to the callback that saw it established, in ns.
    pub(crate) latency: Histogram<u64>,
    pub(crate) failures: usize,
    /// The first few failures, each with the connection it was.
    pub(crate) failure_examples: Vec<String>,
    /// CPU time of the server process when the first connect began, and
    /// when every connection was up (in idle mode: and served).
    pub(crate) server_cpu: Option<(Duration, Option<Duration>)>,
}

impl Launches {
    fn new(conns: usize, target: &Addr) -> io::Result<Launches> {
        Ok(Launches {
            conns,
            target: target.to_string(),
            first: None,
            launched: 0,
            pending: HashMap::with_capacity(conns.min(1 << 16)),
            established: 0,
            last_up: None,
            latency: histogram()?,
            failures: 0,
            failure_examples: Vec::new(),
            server_cpu: None,
        })
    }

    /// Connects that have completed or failed.
    pub(crate) fn settled(&self) -> usize {
        self.established + self.failures
    }

    /// The next connect was started at `at`, as `id`.
    pub(crate) fn started(&mut self, id: ConnId, at: Instant) {
        self.first.get_or_insert(at);
        self.pending.insert(id, (self.launched, at));
        self.launched += 1;
    }

    /// The next connect, from `local` if given, failed in the call that
    /// started it.
    pub(crate) fn failed_at_once(&mut self, local: Option<SocketAddr>, error: &io::Error) {
        let from = local.map_or(String::new(), |l| format!(" from {}", l.ip()));
        let what = format!(
            "connection {}{from} to {}: {error}",
            self.launched, self.target
        );
        self.launched += 1;
        self.failed(what);
    }

    /// The connect of `id` failed after it started.
    fn failed_later(&mut self, id: ConnId, error: &io::Error) {
        let index = self.pending.remove(&id).map(|(index, _)| index);
        let which = index.map_or(String::new(), |i| format!(" {i}"));
        self.failed(format!("connection{which} to {}: {error}", self.target));
    }

    fn failed(&mut self, what: String) {
        self.failures += 1;
        if self.failure_examples.len() < MAX_CONNECT_ERRORS_KEPT {
            self.failure_examples.push(what);
        }
    }

    /// A connect completed at `now`; when it began.
    fn up(&mut self, id: ConnId, now: Instant) -> Option<Instant> {
        let (_, began) = self.pending.remove(&id)?;
        self.established += 1;
        self.last_up = Some(now);
        let nanos = u64::try_from(now.duration_since(began).as_nanos()).unwrap_or(u64::MAX);
        self.latency.saturating_record(nanos);
        Some(began)
    }

    /// Whether the connects failed the run: every one has settled and some
    /// failed, or the first [`GIVE_UP_AFTER`] all failed. Says how.
    pub(crate) fn verdict(&self) -> Option<String> {
        let first = self.failure_examples.first()?;
        if self.established == 0 && self.failures >= GIVE_UP_AFTER.min(self.conns) {
            let untried = self.conns - self.launched;
            let rest = if untried > 0 {
                format!("; {untried} not tried")
            } else {
                String::new()
            };
            return Some(format!(
                "all {} connects failed{rest}; the first: {first}",
                self.failures
            ));
        }
        (self.launched == self.conns && self.pending.is_empty()).then(|| {
            format!(
                "{} of {} connects failed; the first: {first}",
                self.failures, self.conns
            )
        })
    }
}

/// Nanoseconds, three significant digits, up to a minute.
fn histogram() -> io::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).map_err(io::Error::other)
}

/// One connection's place in its stream.
pub struct ClientConn {
    /// Order of establishment: names the connection in messages and picks its pattern.
    index: usize,
    /// Each connection decodes with its own copy (decoders keep scan state).
    codec: Option<Codec>,
    /// Requests sent and fully echoed.
    sent: u64,
    done: u64,
    /// Payload bytes echoed and checked.
    echoed: u64,
    /// When each outstanding request was queued, oldest first.
    sent_at: VecDeque<Instant>,
    /// Under `--rate` and in idle mode: when the next request is due (idle:
    /// `None` until the warmup starts), and whether a timer waits for it.
    next_due: Option<Instant>,
    send_timer: bool,
    /// When its connect began.
    launched_at: Option<Instant>,
    /// FIN sent: draining.
    shut: bool,
}

pub struct LoadClient {
    plan: Plan,
    pattern: Pattern,
    phase: Phase,
    /// When `phase` began: progress lines count from it.
    phase_began: Instant,
    /// Open connections by index.
    ids: Vec<Option<ConnId>>,
    connected: usize,
    finished: usize,
    /// The connects, shared with `run`, which starts them.
    launches: RefCell<Launches>,
    /// Idle mode: connections whose hello has been echoed, and when the last was.
    served: usize,
    served_at: Option<Instant>,
    /// Idle mode: from the first connect to each connection's first echo.
    served_latency: Histogram<u64>,
    /// The connection carrying the clock timer.
    tick: Option<ConnId>,
    /// The connection carrying the timer for the next connect, under `--connect-rate`.
    pace: Option<ConnId>,
    window: Window,
    next_progress: Instant,
    /// Since the last progress line.
    recent: Histogram<u64>,
    recent_msgs: u64,
    errors: Vec<String>,
    error_count: usize,
}

impl LoadClient {
    pub(crate) fn new(plan: Plan, pattern: Pattern) -> io::Result<LoadClient> {
        // Made before its reactor: the real clock, the one that reactor reads.
        let now = Instant::now();
        Ok(LoadClient {
            ids: Vec::with_capacity(plan.conns),
            launches: RefCell::new(Launches::new(plan.conns, &plan.target)?),
            plan,
            pattern,
            phase: Phase::Connecting,
            phase_began: now,
            connected: 0,
            finished: 0,
            served: 0,
            served_at: None,
            served_latency: histogram()?,
            tick: None,
            pace: None,
            window: Window {
                start: None,
                end: None,
                msgs: 0,
                latency: histogram()?,
                server_cpu: None,
            },
            next_progress: now + PROGRESS_EVERY,
            recent: histogram()?,
            recent_msgs: 0,
            errors: Vec::new(),
            error_count: 0,
        })
    }

    /// Over: the run ended, or its connects failed it.
    pub(crate) fn is_done(&self) -> bool {
        self.phase == Phase::Done || self.launches.borrow().verdict().is_some()
    }

    /// The connects, for `run` to book the ones it starts.
    pub(crate) fn launches(&self) -> &RefCell<Launches> {
        &self.launches
    }

    /// Connections open now.
    pub(crate) fn open(&self) -> usize {
        self.ids.iter().flatten().count()
    }

    /// Idle mode: when the last hello was echoed, and the spread from the
    /// first connect to each connection's first echo.
    pub(crate) fn served(&self) -> (Option<Instant>, &Histogram<u64>) {
        (self.served_at, &self.served_latency)
    }

    pub(crate) fn window(&self) -> &Window {
        &self.window
    }

    /// The first few errors, and how many there were in all.
    pub(crate) fn errors(&self) -> (&[String], usize) {
        (&self.errors, self.error_count)
    }

    fn fail(&mut self, index: Option<usize>, what: impl std::fmt::Display) {
        self.error_count += 1;
        if self.errors.len() < MAX_ERRORS_KEPT {
            self.errors.push(match index {
                Some(i) => format!("connection {i} to {}: {what}", self.plan.target),
                None => format!("{what}"),
            });
        }
        self.phase = Phase::Done;
    }

    /// Queues as many requests as the slots (and the rate) allow, or, once
    /// draining, sends FIN when nothing is outstanding.
    fn fill(&mut self, ctx: &mut Context<'_>, id: ConnId, conn: &mut ClientConn, now: Instant) {
        match self.phase {
            // Idle mode: only the hello until every connection is up.
            Phase::Connecting if self.plan.idle => {
                if conn.sent == 0 {
                    self.send(ctx, id, conn, now, 1);
                }
                return;
            }
            Phase::Connecting | Phase::Warmup { .. } | Phase::Measuring { .. } => {}
            Phase::Draining { .. } => {
                if conn.sent == conn.done && !conn.shut {
                    conn.shut = true;
                    ctx.shutdown_write(id);
                }
                return;
            }
            Phase::Done => return,
        }
        let free = self.plan.in_flight.saturating_sub(conn.sent_at.len());
        let count = match (self.plan.interval, &mut conn.next_due) {
            (None, _) => free,
            // Idle mode, before this connection's first scheduled message.
            (Some(_), None) => 0,
            (Some(interval), Some(next_due)) => {
                let mut due = 0;
                while due < free && *next_due <= now {
                    *next_due += interval;
                    due += 1;
                }
                if due < free && !conn.send_timer {
                    let wait = next_due.saturating_duration_since(now);
                    conn.send_timer = ctx.set_timer(id, wait, TAG_SEND).is_some();
                }
                due
            }
        };
        self.send(ctx, id, conn, now, count);
    }

    /// Queues the next `count` requests of `conn`.
    fn send(
        &mut self,
        ctx: &mut Context<'_>,
        id: ConnId,
        conn: &mut ClientConn,
        now: Instant,
        count: usize,
    ) {
        if count == 0 {
            return;
        }
        let size = self.plan.size;
        let (pattern, first) = (&self.pattern, conn.sent);
        let codec = conn.codec.as_ref();
        let encoded = ctx.write_with(id, |out| {
            (first..first + count as u64).try_for_each(|m| {
                let payload = pattern.slice(conn.index, m * size as u64, size);
                match codec {
                    Some(codec) => codec.encode(payload, out),
                    None => {
                        out.extend_from_slice(payload);
                        Ok(())
                    }
                }
            })
        });
        match encoded {
            Some(Ok(())) => {
                conn.sent += count as u64;
                conn.sent_at.extend(std::iter::repeat_n(now, count));
            }
            Some(Err(e)) => self.fail(Some(conn.index), format!("encoding a request: {e}")),
            None => {} // closing already; on_close says why
        }
    }

    /// Checks echoed raw bytes; messages complete by byte count.
    fn take_raw(
        &mut self,
        conn: &mut ClientConn,
        input: &[u8],
        now: Instant,
    ) -> Result<(), String> {
        let owed = conn.sent * self.plan.size as u64 - conn.echoed;
        if input.len() as u64 > owed {
            return Err(format!(
                "server sent {} bytes more than it was sent",
                input.len() as u64 - owed
            ));
        }
        self.check(conn, input)?;
        conn.echoed += input.len() as u64;
        while conn.echoed >= (conn.done + 1) * self.plan.size as u64 {
            self.complete(conn, now);
        }
        Ok(())
    }

    /// Decodes echoed frames, each of which must be the next request's payload.
    fn take_frames(
        &mut self,
        conn: &mut ClientConn,
        codec: &mut Codec,
        input: &[u8],
        now: Instant,
    ) -> Result<usize, String> {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            let frame = match codec.decode(rest) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(used),
                Err(e) => return Err(format!("echo does not decode: {e}")),
            };
            let payload = &rest[frame.payload];
            if conn.done == conn.sent {
                return Err("server sent a frame it was never sent".into());
            }
            if payload.len() != self.plan.size {
                return Err(format!(
                    "echoed frame {} has {} bytes of payload, sent {}",
                    conn.done,
                    payload.len(),
                    self.plan.size
                ));
            }
            self.check(conn, payload)?;
            conn.echoed += payload.len() as u64;
            self.complete(conn, now);
            used += frame.len;
        }
    }

    fn check(&self, conn: &ClientConn, echoed: &[u8]) -> Result<(), String> {
        match self.pattern.mismatch(conn.index, conn.echoed, echoed) {
            None => Ok(()),
            Some((at, want)) => {
                let pos = conn.echoed + at as u64;
                let size = self.plan.size as u64;
                Err(format!(
                    "echoed byte {pos} (message {}, offset {}) is 0x{:02x}, sent 0x{want:02x}",
                    pos / size,
                    pos % size,
                    echoed[at]
                ))
            }
        }
    }

    fn complete(&mut self, conn: &mut ClientConn, now: Instant) {
        conn.done += 1;
        if self.plan.idle && conn.done == 1 {
            // The hello: this connection is served.
            self.served += 1;
            self.served_at = Some(now);
            if let Some(began) = conn.launched_at {
                let nanos = u64::try_from(now.duration_since(began).as_nanos()).unwrap_or(u64::MAX);
                self.served_latency.saturating_record(nanos);
            }
        }
        let Some(sent) = conn.sent_at.pop_front() else {
            return;
        };
        let nanos = u64::try_from(now.duration_since(sent).as_nanos()).unwrap_or(u64::MAX);
        self.recent.saturating_record(nanos);
        self.recent_msgs += 1;
        if let Phase::Measuring { .. } = self.phase {
            self.window.latency.saturating_record(nanos);
            self.window.msgs += 1;
        }
    }

    /// The clock: phase changes and progress lines. Called from every
    /// callback, with the time that callback read anyway.
    fn advance(&mut self, ctx: &mut Context<'_>, id: ConnId, now: Instant) {
        if self.tick.is_none() && self.phase != Phase::Done {
            self.tick = ctx.set_timer(id, TICK, TAG_TICK).map(|_| id);
        }
        self.pace(ctx, id, now);
        match self.phase {
            Phase::Connecting if self.all_up() => self.connected_all(ctx, now),
            Phase::Warmup { until } if now >= until => {
                self.window.latency.reset();
                self.window.start = Some(now);
                self.window.server_cpu = self.server_cpu().map(|t| (t, t));
                self.signal_window("enable");
                let until = now + self.plan.duration;
                self.enter(Phase::Measuring { until }, now);
                progress(format_args!("measuring for {:?}", self.plan.duration));
            }
            Phase::Measuring { until } if now >= until => {
                self.window.end = Some(now);
                self.signal_window("disable");
                if let (Some((start, _)), Some(end)) = (self.window.server_cpu, self.server_cpu()) {
                    self.window.server_cpu = Some((start, end));
                }
                self.enter(
                    Phase::Draining {
                        until: now + DRAIN_TIMEOUT,
                    },
                    now,
                );
                progress(format_args!(
                    "measured window over; collecting the last echoes"
                ));
                // Connections waiting for nothing hear about it from a timer.
                for &id in self.ids.iter().flatten() {
                    ctx.set_timer(id, Duration::ZERO, TAG_DRAIN);
                }
            }
            Phase::Draining { until } if now >= until => {
                let open = self.ids.iter().flatten().count();
                self.fail(
                    None,
                    format!("{open} connections still owed echoes {DRAIN_TIMEOUT:?} after the end"),
                );
            }
            _ => {}
        }
        if now >= self.next_progress {
            self.next_progress = now + PROGRESS_EVERY;
            self.progress(now);
        }
    }

    /// Every connection is up, and in idle mode served its hello.
    fn all_up(&self) -> bool {
        self.connected == self.plan.conns && (!self.plan.idle || self.served == self.plan.conns)
    }

    /// The connecting phase is over: the warmup begins. In idle mode each
    /// connection's schedule starts at its own offset within the interval.
    fn connected_all(&mut self, ctx: &mut Context<'_>, now: Instant) {
        let cpu = self.server_cpu();
        if let Some((_, end)) = &mut self.launches.get_mut().server_cpu {
            *end = cpu;
        }
        let what = if self.plan.idle {
            "up and served once"
        } else {
            "up"
        };
        progress(format_args!(
            "{} connections {what}; warming up for {:?}",
            self.connected, self.plan.warmup
        ));
        let until = now + self.plan.warmup;
        self.enter(Phase::Warmup { until }, now);
        if let (true, Some(interval)) = (self.plan.idle, self.plan.interval) {
            let n = self.ids.len() as f64;
            for (index, id) in self.ids.iter().enumerate() {
                if let Some(id) = *id {
                    let offset = interval.mul_f64(index as f64 / n);
                    ctx.set_timer(id, offset, TAG_START);
                }
            }
        }
    }

    /// Under `--connect-rate`, keeps a timer armed for when the next
    /// connect is due, so that `run` gets the loop back in time to start it.
    fn pace(&mut self, ctx: &mut Context<'_>, id: ConnId, now: Instant) {
        let Some(rate) = self.plan.connect_rate else {
            return;
        };
        let launches = self.launches.get_mut();
        let (Some(first), true) = (launches.first, launches.launched < self.plan.conns) else {
            return;
        };
        if self.pace.is_some() || self.phase == Phase::Done {
            return;
        }
        let due = first + Duration::from_secs_f64(launches.launched as f64 / rate as f64);
        // Due already: `run` starts it as soon as this turn ends. (A timer
        // due now, set from a timer, would run again within the same turn.)
        let wait = due.saturating_duration_since(now);
        if !wait.is_zero() {
            self.pace = ctx.set_timer(id, wait, TAG_PACE).map(|_| id);
        }
    }

    /// Moves on to `phase`: its progress lines count from now, one a
    /// second, "1.0s measuring" one second into the measured window.
    fn enter(&mut self, phase: Phase, now: Instant) {
        self.phase = phase;
        self.phase_began = now;
        self.next_progress = now + PROGRESS_EVERY;
        self.recent.reset();
        self.recent_msgs = 0;
    }

    fn progress(&mut self, now: Instant) {
        let phase = match self.phase {
            Phase::Connecting => "connecting",
            Phase::Warmup { .. } => "warmup",
            Phase::Measuring { .. } => "measuring",
            Phase::Draining { .. } => "draining",
            Phase::Done => "done",
        };
        let open = self.open();
        let rate = self.recent_msgs as f64 / PROGRESS_EVERY.as_secs_f64();
        let failed = match self.launches.get_mut().failures {
            0 => String::new(),
            n => format!("  connects failed {n}"),
        };
        progress(format_args!(
            "{:5.1}s {phase:<10} conns {open}/{}  {rate:>10.0} msgs/s  {:>8.1} MB/s  p99 {:>9.1} us  errors {}{failed}",
            now.duration_since(self.phase_began).as_secs_f64(),
            self.plan.conns,
            rate * self.plan.size as f64 / 1e6,
            self.recent.value_at_quantile(0.99) as f64 / 1e3,
            self.error_count,
        ));
        self.recent.reset();
        self.recent_msgs = 0;
    }

    fn signal_window(&mut self, command: &str) {
        if let Some(fifo) = &mut self.plan.window_fifo
            && let Err(e) = writeln!(fifo, "{command}")
        {
            self.fail(None, format!("telling the window FIFO {command}: {e}"));
        }
    }

    /// CPU time of the server process so far, if one was named.
    pub(crate) fn server_cpu(&mut self) -> Option<Duration> {
        let pid = self.plan.server_pid?;
        match cpu_time(pid) {
            Ok(t) => Some(t),
            // Not readable on this OS: the report says "n/a".
            Err(e) if e.kind() == io::ErrorKind::Unsupported => None,
            Err(e) => {
                self.fail(None, format!("reading the CPU time of process {pid}: {e}"));
                None
            }
        }
    }
}

impl Service for LoadClient {
    type Conn = ClientConn;

    fn on_connect(&mut self, ctx: &mut Context<'_>, id: ConnId, _peer: &Addr) -> ClientConn {
        let now = ctx.now();
        let launched_at = self.launches.get_mut().up(id, now);
        let index = self.connected;
        self.connected += 1;
        self.ids.push(Some(id));
        let mut conn = ClientConn {
            index,
            codec: self.plan.codec.clone(),
            sent: 0,
            done: 0,
            echoed: 0,
            sent_at: VecDeque::with_capacity(self.plan.in_flight),
            // Staggered, so that paced connections do not all send at once;
            // idle connections are scheduled when the warmup starts.
            next_due: (!self.plan.idle).then(|| {
                now + self.plan.interval.map_or(Duration::ZERO, |gap| {
                    gap.mul_f64(index as f64 / self.plan.conns as f64)
                })
            }),
            send_timer: false,
            launched_at,
            shut: false,
        };
        self.advance(ctx, id, now);
        self.fill(ctx, id, &mut conn, now);
        conn
    }

    fn on_data(
        &mut self,
        ctx: &mut Context<'_>,
        id: ConnId,
        conn: &mut ClientConn,
        input: &[u8],
    ) -> usize {
        let now = ctx.now();
        let taken = match conn.codec.take() {
            None => self.take_raw(conn, input, now).map(|()| input.len()),
            Some(mut codec) => {
                let taken = self.take_frames(conn, &mut codec, input, now);
                conn.codec = Some(codec);
                taken
            }
        };
        match taken {
            Ok(used) => {
                self.advance(ctx, id, now);
                self.fill(ctx, id, conn, now);
                used
            }
            Err(what) => {
                self.fail(Some(conn.index), what);
                ctx.abort(id, CloseReason::Local);
                input.len()
            }
        }
    }

    fn on_read_closed(
        &mut self,
        ctx: &mut Context<'_>,
        id: ConnId,
        conn: &mut ClientConn,
        unconsumed: &[u8],
    ) {
        let sent = conn.sent * self.plan.size as u64;
        if !conn.shut {
            self.fail(
                Some(conn.index),
                format!(
                    "server closed the connection early, after echoing {} of {sent} bytes",
                    conn.echoed
                ),
            );
        } else if conn.done < conn.sent || !unconsumed.is_empty() {
            self.fail(
                Some(conn.index),
                format!(
                    "short echo: server closed after echoing {} of {sent} bytes ({} more in a partial frame)",
                    conn.echoed,
                    unconsumed.len()
                ),
            );
        } else {
            self.finished += 1;
        }
        ctx.close(id);
    }

    fn on_connect_failed(&mut self, _ctx: &mut Context<'_>, id: ConnId, error: io::Error) {
        let launches = self.launches.get_mut();
        launches.failed_later(id, &error);
        if launches.verdict().is_some() {
            self.phase = Phase::Done;
        }
    }

    fn on_timer(&mut self, ctx: &mut Context<'_>, id: ConnId, conn: &mut ClientConn, tag: u64) {
        let now = ctx.now();
        match tag {
            TAG_TICK => self.tick = None,
            TAG_SEND => conn.send_timer = false,
            TAG_START => conn.next_due = Some(now),
            TAG_PACE => self.pace = None,
            _ => {} // TAG_DRAIN: fill sends FIN if nothing is outstanding
        }
        self.advance(ctx, id, now);
        self.fill(ctx, id, conn, now);
    }

    fn on_close(
        &mut self,
        ctx: &mut Context<'_>,
        id: ConnId,
        conn: ClientConn,
        reason: CloseReason,
    ) {
        if let Some(slot) = self.ids.get_mut(conn.index) {
            *slot = None;
        }
        match reason {
            CloseReason::Peer | CloseReason::Local => {}
            reason => self.fail(Some(conn.index), reason),
        }
        if self.tick == Some(id) {
            // The clock moves to the next open connection.
            let n = self.ids.len();
            let next = (1..n).find_map(|k| self.ids[(conn.index + k) % n]);
            self.tick = next.and_then(|next| ctx.set_timer(next, TICK, TAG_TICK).map(|_| next));
        }
        if self.pace == Some(id) {
            // The next callback arms it again, on its own connection.
            self.pace = None;
        }
        if matches!(self.phase, Phase::Draining { .. }) && self.finished == self.connected {
            self.phase = Phase::Done;
        }
    }
}
