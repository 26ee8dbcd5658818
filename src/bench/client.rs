//! The load: one [`LoadClient`] service drives every connection of the run
//! on one reactor, and keeps the clock of the run's phases.
//!
//! Each connection keeps up to `in_flight` requests outstanding, sends the
//! next as soon as a reply frees a slot (or, under `--rate`, when its schedule
//! says so), checks every echoed byte against the pattern it sent, and times
//! each request from the callback that queued it to the callback that saw the
//! last byte of its echo. Phases: connecting, warmup, measuring, draining
//! (no new requests; each connection sends FIN once its echoes are all back
//! and must then see the server's FIN), done. A single error ends the run.

use std::collections::VecDeque;
use std::io::{self, Write};
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

/// What the run is: fixed before the first connection.
pub(crate) struct Plan {
    pub(crate) target: Addr,
    pub(crate) conns: usize,
    pub(crate) size: usize,
    /// Requests outstanding per connection.
    pub(crate) in_flight: usize,
    /// `None`: raw bytes, where messages are counted by size.
    pub(crate) codec: Option<Codec>,
    /// Under `--rate`: each connection's gap between requests.
    pub(crate) interval: Option<Duration>,
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
    /// Under `--rate`: when the next request is due, and whether a timer waits for it.
    next_due: Instant,
    send_timer: bool,
    /// FIN sent: draining.
    shut: bool,
}

pub struct LoadClient {
    plan: Plan,
    pattern: Pattern,
    phase: Phase,
    started: Instant,
    /// Open connections by index.
    ids: Vec<Option<ConnId>>,
    connected: usize,
    failed_connects: usize,
    finished: usize,
    /// The connection carrying the clock timer.
    tick: Option<ConnId>,
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
        // Nanoseconds, three significant digits, up to a minute.
        let histogram =
            || Histogram::new_with_bounds(1, 60_000_000_000, 3).map_err(io::Error::other);
        let now = Instant::now();
        Ok(LoadClient {
            ids: Vec::with_capacity(plan.conns),
            plan,
            pattern,
            phase: Phase::Connecting,
            started: now,
            connected: 0,
            failed_connects: 0,
            finished: 0,
            tick: None,
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

    pub(crate) fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Connections that came up or failed to: the rest are still connecting.
    pub(crate) fn settled_connects(&self) -> usize {
        self.connected + self.failed_connects
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
        let count = match self.plan.interval {
            None => free,
            Some(interval) => {
                let mut due = 0;
                while due < free && conn.next_due <= now {
                    conn.next_due += interval;
                    due += 1;
                }
                if due < free && !conn.send_timer {
                    conn.send_timer = ctx.set_timer(id, conn.next_due - now, TAG_SEND).is_some();
                }
                due
            }
        };
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
        match self.phase {
            Phase::Warmup { until } if now >= until => {
                self.window.latency.reset();
                self.window.start = Some(now);
                self.window.server_cpu = self.server_cpu().map(|t| (t, t));
                self.signal_window("enable");
                self.phase = Phase::Measuring {
                    until: now + self.plan.duration,
                };
                progress(format_args!("measuring for {:?}", self.plan.duration));
            }
            Phase::Measuring { until } if now >= until => {
                self.window.end = Some(now);
                self.signal_window("disable");
                if let (Some((start, _)), Some(end)) = (self.window.server_cpu, self.server_cpu()) {
                    self.window.server_cpu = Some((start, end));
                }
                self.phase = Phase::Draining {
                    until: now + DRAIN_TIMEOUT,
                };
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

    fn progress(&mut self, now: Instant) {
        let phase = match self.phase {
            Phase::Connecting => "connecting",
            Phase::Warmup { .. } => "warmup",
            Phase::Measuring { .. } => "measuring",
            Phase::Draining { .. } => "draining",
            Phase::Done => "done",
        };
        let open = self.ids.iter().flatten().count();
        let rate = self.recent_msgs as f64 / PROGRESS_EVERY.as_secs_f64();
        progress(format_args!(
            "{:5.1}s {phase:<10} conns {open}/{}  {rate:>10.0} msgs/s  {:>8.1} MB/s  p99 {:>9.1} us  errors {}",
            now.duration_since(self.started).as_secs_f64(),
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

    fn server_cpu(&mut self) -> Option<Duration> {
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
        let now = Instant::now();
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
            // Staggered, so that paced connections do not all send at once.
            next_due: now
                + self.plan.interval.map_or(Duration::ZERO, |gap| {
                    gap.mul_f64(index as f64 / self.plan.conns as f64)
                }),
            send_timer: false,
            shut: false,
        };
        if self.connected == self.plan.conns && self.phase == Phase::Connecting {
            progress(format_args!(
                "{} connections up; warming up for {:?}",
                self.connected, self.plan.warmup
            ));
            self.phase = Phase::Warmup {
                until: now + self.plan.warmup,
            };
        }
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
        let now = Instant::now();
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

    fn on_connect_failed(&mut self, _ctx: &mut Context<'_>, _id: ConnId, error: io::Error) {
        self.failed_connects += 1;
        self.fail(None, format!("connecting to {}: {error}", self.plan.target));
    }

    fn on_timer(&mut self, ctx: &mut Context<'_>, id: ConnId, conn: &mut ClientConn, tag: u64) {
        let now = Instant::now();
        match tag {
            TAG_TICK => self.tick = None,
            TAG_SEND => conn.send_timer = false,
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
        if matches!(self.phase, Phase::Draining { .. }) && self.finished == self.connected {
            self.phase = Phase::Done;
        }
    }
}
