//! The reactor's state apart from the service: connections, their buffers,
//! the poller, timers and counters — what a [`Context`](super::Context) lends
//! to a service during a callback.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::mpsc;
use std::time::Instant;

use super::Config;
use super::buffer::Buffer;
use super::handle::Command;
use super::service::CloseReason;
use super::stats::Stats;
use super::timer::{TimerId, TimerKind, Timers};
use super::token::{ConnId, Table, Token};
use crate::sys::{Interest, Listener, Pipe, Poller, Signals, Socket, SpareFd};

/// Writes one `--trace` line when tracing is on; costs one branch when off.
macro_rules! trace_io {
    ($on:expr, $($arg:tt)*) => {
        if $on {
            $crate::reactor::core::trace_line(format_args!($($arg)*));
        }
    };
}
pub(crate) use trace_io;

pub(crate) fn trace_line(args: fmt::Arguments<'_>) {
    crate::stderr::line(format_args!("trace {args}"));
}

#[derive(Default)]
pub(crate) struct Flags {
    /// The service asked not to read for now.
    pub(crate) paused: bool,
    /// Output is above the high watermark: reading waits for it to drain.
    pub(crate) backpressured: bool,
    /// The kernel told us the peer sent FIN, maybe before we read up to it.
    pub(crate) peer_fin: bool,
    /// We read the FIN: no more input.
    pub(crate) read_closed: bool,
    pub(crate) close_when_flushed: bool,
    pub(crate) abort: Option<CloseReason>,
    /// Shutting down, the service has had its last input: whatever the peer
    /// still sends is read and dropped, and a close becomes FIN, then wait
    /// for the peer to close too, rather than close with unread input
    /// (which sends RST).
    pub(crate) linger: bool,
    /// The service asked for FIN once the output is flushed.
    pub(crate) shut_write_when_flushed: bool,
    /// FIN sent: nothing more can be written.
    pub(crate) write_closed: bool,
    /// An outgoing connect still in progress: no reads, no writes yet, and
    /// no FIN: shutting down a socket in SYN_SENT aborts the connect.
    pub(crate) connecting: bool,
    /// We opened it (`connect`), rather than accepted it.
    pub(crate) outbound: bool,
    /// Close with RST (`SO_LINGER` 0) rather than FIN.
    pub(crate) reset: bool,
    /// Queued on the ready list.
    pub(crate) ready: bool,
    /// Queued on the touched list.
    pub(crate) touched: bool,
    /// Deregistered and reported to the service; the slot waits for the turn to end.
    pub(crate) closed: bool,
}

pub(crate) struct Connection {
    pub(crate) socket: Socket,
    pub(crate) peer: SocketAddr,
    pub(crate) opened: Instant,
    pub(crate) input: Buffer,
    pub(crate) output: Buffer,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    /// Last byte read or written: the idle timer's reference.
    pub(crate) last_active: Instant,
    /// Last time the kernel took some of our output: the write timer's reference.
    pub(crate) last_write: Instant,
    pub(crate) idle_timer: Option<TimerId>,
    pub(crate) write_timer: Option<TimerId>,
    /// When the first byte of the partial message the service left in
    /// `input` arrived: the frame timeout's reference.
    pub(crate) partial_since: Option<Instant>,
    pub(crate) frame_timer: Option<TimerId>,
    /// Shutting down: how many more received bytes the service still gets.
    pub(crate) drain_left: Option<usize>,
    /// Whose input fills this connection's output, when not its own (a relay
    /// pair): that one stops being read while this output is backed up.
    pub(crate) fed_by: Option<ConnId>,
    /// Its reply held back until the batch ends: an index into `Core::held`.
    /// While one is held, `output` is empty.
    pub(crate) held: Option<usize>,
    /// Zero-copy relaying: this connection's input goes through a pipe
    /// straight into `peer`'s socket.
    pub(crate) splice: Option<Box<Splice>>,
    pub(crate) flags: Flags,
}

impl Connection {
    pub(crate) fn new(socket: Socket, peer: SocketAddr, now: Instant) -> Connection {
        Connection {
            socket,
            peer,
            opened: now,
            input: Buffer::default(),
            output: Buffer::default(),
            bytes_in: 0,
            bytes_out: 0,
            last_active: now,
            last_write: now,
            idle_timer: None,
            write_timer: None,
            partial_since: None,
            frame_timer: None,
            drain_left: None,
            fed_by: None,
            held: None,
            splice: None,
            flags: Flags::default(),
        }
    }

    pub(crate) fn wants_read(&self) -> bool {
        let f = &self.flags;
        !(f.paused
            || f.backpressured
            || f.read_closed
            || f.close_when_flushed
            || f.abort.is_some()
            || f.connecting)
    }

    pub(crate) fn takes_output(&self) -> bool {
        let f = &self.flags;
        !(f.close_when_flushed || f.abort.is_some() || f.shut_write_when_flushed || f.write_closed)
    }

    pub(crate) fn received(&mut self, n: usize, now: Instant) {
        self.bytes_in += n as u64;
        self.last_active = now;
    }

    fn wrote(&mut self, n: usize, now: Instant) {
        if n > 0 {
            self.bytes_out += n as u64;
            self.last_active = now;
            self.last_write = now;
        }
    }

    pub(crate) fn state(&self) -> &'static str {
        let f = &self.flags;
        if f.connecting {
            "connecting"
        } else if f.linger && f.write_closed {
            "lingering"
        } else if f.close_when_flushed || f.abort.is_some() {
            "closing"
        } else if self.drain_left.is_some() {
            "draining"
        } else if f.backpressured {
            "backpressured"
        } else if f.paused {
            "paused"
        } else if f.read_closed {
            "read-closed"
        } else if f.write_closed {
            "write-closed"
        } else {
            "open"
        }
    }
}

pub(crate) struct Splice {
    pub(crate) peer: ConnId,
    pub(crate) pipe: Pipe,
}

/// A reply held back until the current batch of events is handled, so that
/// the batch's replies leave back to back after all of its reads. Bunched
/// sends cost the kernel less than sends spread between reads.
pub(crate) struct Held {
    pub(crate) id: ConnId,
    bytes: HeldBytes,
}

/// Where a held reply lies: in the reactor's read arena (an echo of input
/// that arrived in this batch), or in the shared output buffer.
enum HeldBytes {
    Arena(Range<usize>),
    Out(Range<usize>),
}

impl Held {
    fn len(&self) -> usize {
        match &self.bytes {
            HeldBytes::Arena(r) | HeldBytes::Out(r) => r.len(),
        }
    }

    fn slice<'a>(&self, arena: &'a [u8], out: &'a [u8]) -> &'a [u8] {
        match &self.bytes {
            HeldBytes::Arena(r) => &arena[r.clone()],
            HeldBytes::Out(r) => &out[r.clone()],
        }
    }
}

impl Table<Connection> {
    /// `id`'s connection, unless it has been closed this turn.
    pub(crate) fn live(&self, id: ConnId) -> Option<&Connection> {
        self.get(id).filter(|c| !c.flags.closed)
    }

    pub(crate) fn live_mut(&mut self, id: ConnId) -> Option<&mut Connection> {
        self.get_mut(id).filter(|c| !c.flags.closed)
    }
}

pub(crate) struct ListenerSlot {
    pub(crate) listener: Listener,
    pub(crate) ready: bool,
    /// Out of descriptors: not accepting until a timer says to try again.
    pub(crate) paused: bool,
    pub(crate) backoff_ms: u64,
}

pub(crate) struct Core {
    pub(crate) config: Config,
    pub(crate) poller: Poller,
    pub(crate) signals: Option<Signals>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) command_tx: mpsc::Sender<Command>,
    pub(crate) listeners: Vec<ListenerSlot>,
    pub(crate) spare_fd: SpareFd,
    pub(crate) conns: Table<Connection>,
    /// Output of the connections served in this batch while they have no
    /// backlog: most replies go from here to the kernel and never touch a
    /// per-connection buffer. Cleared when the batch's replies are sent.
    pub(crate) out: Vec<u8>,
    /// The connection being served, and where its bytes in `out` begin.
    pub(crate) out_owner: Option<ConnId>,
    out_mark: usize,
    /// A reply that is a piece of the input being delivered (an echo), as a
    /// range of the read arena: it is sent from there, never copied.
    pub(crate) out_input: Option<Range<usize>>,
    /// Replies held until the batch ends, oldest first.
    pub(crate) held: Vec<Held>,
    /// Connections with deferred work: output to flush, a close to carry out.
    pub(crate) touched: Vec<ConnId>,
    /// Connections and listeners to serve before the next wait.
    pub(crate) ready: VecDeque<Token>,
    /// Closed during this turn; their slots are freed after it.
    pub(crate) dead: Vec<ConnId>,
    pub(crate) timers: Timers,
    /// Read once per turn: precise enough for timeouts, and free for traffic.
    pub(crate) now: Instant,
    pub(crate) stats: Stats,
    pub(crate) shutting_down: bool,
    /// A second shutdown request came: stop without draining.
    pub(crate) forced: bool,
    pub(crate) stopped: bool,
}

impl Core {
    pub(crate) fn new(
        config: Config,
        poller: Poller,
        command_tx: mpsc::Sender<Command>,
        commands: mpsc::Receiver<Command>,
        timers: Timers,
        now: Instant,
    ) -> Core {
        Core {
            config,
            poller,
            signals: None,
            commands,
            command_tx,
            listeners: Vec::new(),
            spare_fd: SpareFd::new(),
            conns: Table::new(),
            out: Vec::new(),
            out_owner: None,
            out_mark: 0,
            out_input: None,
            held: Vec::new(),
            touched: Vec::new(),
            ready: VecDeque::new(),
            dead: Vec::new(),
            timers,
            now,
            stats: Stats::default(),
            shutting_down: false,
            forced: false,
            stopped: false,
        }
    }

    pub(crate) fn touch(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.live_mut(id)
            && !conn.flags.touched
        {
            conn.flags.touched = true;
            self.touched.push(id);
        }
    }

    /// Queues a read of `id` before the next wait: it may have data whose
    /// edge was reported while we were not reading.
    pub(crate) fn schedule_read(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.live_mut(id)
            && !conn.flags.ready
        {
            conn.flags.ready = true;
            self.ready.push_back(Token::Conn(id));
        }
    }

    /// Registers a new connection (accepted, or connecting) under a fresh id.
    pub(crate) fn add(&mut self, socket: Socket, peer: SocketAddr) -> io::Result<ConnId> {
        socket.apply(&self.config.socket)?;
        let id = self.conns.next_id();
        self.poller
            .register(&socket, Token::Conn(id).to_u64(), Interest::ReadWrite)?;
        self.stats.interest_changes += 1;
        let mut conn = Connection::new(socket, peer, self.now);
        conn.idle_timer = self
            .config
            .idle_timeout
            .map(|t| self.timers.add(self.now + t, TimerKind::Idle(id)));
        self.conns.insert(conn);
        self.stats.active += 1;
        Ok(id)
    }

    /// Starts connecting to `addr`; the service hears `on_connect` once the
    /// connection is up, or `on_connect_failed`.
    pub(crate) fn connect(
        &mut self,
        addr: SocketAddr,
        local: Option<SocketAddr>,
    ) -> io::Result<ConnId> {
        let id = self.add(Socket::connect(addr, local)?, addr)?;
        if let Some(conn) = self.conns.live_mut(id) {
            conn.flags.connecting = true;
            conn.flags.outbound = true;
        }
        self.timers.add(
            self.now + self.config.connect_timeout,
            TimerKind::Connect(id),
        );
        trace_io!(self.config.trace, "{id} connect to {addr}");
        Ok(id)
    }

    /// Bytes owed to `id`: its held reply and output buffer, plus what its
    /// splice peer has read into the pipe towards it.
    pub(crate) fn pending_output(&self, id: ConnId) -> Option<usize> {
        let conn = self.conns.live(id)?;
        if let Some(i) = conn.held {
            return Some(self.held[i].len());
        }
        if let Some(splice) = &conn.splice {
            let piped = self.conns.live(splice.peer).and_then(|p| p.splice.as_ref());
            return Some(conn.output.len() + piped.map_or(0, |s| s.pipe.len()));
        }
        Some(conn.output.len())
    }

    /// Moves `src`'s pipe into its peer's socket, once the peer's own output
    /// buffer has gone out (it holds older bytes).
    pub(crate) fn pump(&mut self, src: ConnId) -> Result<(), (ConnId, io::Error)> {
        let Some(dst) = self
            .conns
            .live(src)
            .and_then(|c| c.splice.as_ref())
            .map(|s| s.peer)
        else {
            return Ok(());
        };
        let Some((from, to)) = self.conns.get2_mut(src, dst) else {
            return Ok(());
        };
        let Some(splice) = from.splice.as_mut() else {
            return Ok(());
        };
        // Older bytes queued for `dst` go first: until they have, the pipe
        // stays full and `src` waits, woken when that queue drains.
        let blocked = to.flags.closed || to.flags.connecting || !to.output.is_empty();
        while !blocked && !splice.pipe.is_empty() {
            match splice.pipe.drain_into(&to.socket) {
                Ok(n) => {
                    trace_io!(self.config.trace, "{dst} splice {n} from {src}");
                    self.stats.writes += 1;
                    self.stats.bytes_out += n as u64;
                    self.stats.bytes_spliced += n as u64;
                    to.wrote(n, self.now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.stats.eagain_writes += 1;
                    break;
                }
                Err(e) => return Err((dst, e)),
            }
        }
        if splice.pipe.is_empty() {
            if from.flags.backpressured {
                from.flags.backpressured = false;
                self.schedule_read(src);
            }
            // A FIN may have been waiting for these bytes.
            self.touch(dst);
        } else {
            from.flags.backpressured = true;
        }
        Ok(())
    }

    /// The service consumed `used` bytes of an input of which `left_before`
    /// were left from earlier calls: a partial message that remains started
    /// now, unless it is the one left before (then its clock runs on).
    pub(crate) fn track_partial(&mut self, id: ConnId, left_before: usize, used: usize) {
        let Some(conn) = self.conns.live_mut(id) else {
            return;
        };
        if conn.input.is_empty() {
            conn.partial_since = None;
        } else if used >= left_before || conn.partial_since.is_none() {
            conn.partial_since = Some(self.now);
            if conn.frame_timer.is_none() {
                self.arm_frame_timer(id);
            }
        }
    }

    /// One frame timer per connection, set for when its partial message is
    /// due; a message completed meanwhile leaves it to find nothing to do.
    pub(crate) fn arm_frame_timer(&mut self, id: ConnId) {
        let Some(timeout) = self.config.frame_timeout else {
            return;
        };
        if let Some(conn) = self.conns.live_mut(id)
            && let Some(since) = conn.partial_since
        {
            conn.frame_timer = Some(self.timers.add(since + timeout, TimerKind::Frame(id)));
        }
    }

    /// Where a write to `id` goes: the shared buffer while `id` is being
    /// served and has no backlog, else its own output buffer.
    pub(crate) fn output_for(&mut self, id: ConnId, arena: &[u8]) -> Option<&mut Vec<u8>> {
        if self.out_owner != Some(id)
            && let Err(e) = self.send_held(id, arena)
        {
            // Older bytes must go first; without them the connection is done.
            self.abort(id, CloseReason::Error(e.kind()));
        }
        let conn = self.conns.live_mut(id)?;
        if !conn.takes_output() {
            return None;
        }
        if self.out_owner == Some(id) && conn.output.is_empty() {
            return Some(&mut self.out);
        }
        if !conn.flags.touched {
            conn.flags.touched = true;
            self.touched.push(id);
        }
        Some(conn.output.tail_mut())
    }

    pub(crate) fn abort(&mut self, id: ConnId, reason: CloseReason) {
        if let Some(conn) = self.conns.live_mut(id) {
            conn.flags.abort = Some(reason);
            self.touch(id);
        }
    }

    /// As [`abort`](Self::abort), and the close sends RST.
    pub(crate) fn reset(&mut self, id: ConnId, reason: CloseReason) {
        if let Some(conn) = self.conns.live_mut(id) {
            conn.flags.reset = true;
        }
        self.abort(id, reason);
    }

    /// Writes `id`'s held reply and backlog until they are out or the kernel is full.
    pub(crate) fn flush(&mut self, id: ConnId, arena: &[u8]) -> io::Result<()> {
        self.send_held(id, arena)?;
        let Some(conn) = self.conns.live_mut(id) else {
            return Ok(());
        };
        // Output held for a connect in progress still counts for backpressure.
        if !conn.flags.connecting {
            let sent = send(
                &mut self.stats,
                self.config.trace,
                id,
                &conn.socket,
                conn.output.as_slice(),
            )?;
            conn.wrote(sent, self.now);
            conn.output.consume(sent);
        }
        self.after_write(id);
        Ok(())
    }

    /// A callback serving `id` begins: its writes to `id` go to `out`.
    pub(crate) fn begin_serving(&mut self, id: ConnId) {
        self.out_owner = Some(id);
        self.out_mark = self.out.len();
    }

    /// Whether the callback being served has written to `out`.
    pub(crate) fn wrote_out(&self) -> bool {
        self.out.len() > self.out_mark
    }

    /// The callback serving `id` returned: what it wrote to `id` is held
    /// until the batch ends. An older held reply of `id` goes out first.
    pub(crate) fn hold_reply(&mut self, id: ConnId, arena: &[u8]) -> io::Result<()> {
        self.out_owner = None;
        let bytes = match self.out_input.take() {
            Some(range) => HeldBytes::Arena(range),
            None => HeldBytes::Out(self.out_mark..self.out.len()),
        };
        let held = Held { id, bytes };
        if held.len() == 0 || self.conns.live(id).is_none_or(|c| c.flags.abort.is_some()) {
            return Ok(());
        }
        self.send_held(id, arena)?;
        let Some(conn) = self.conns.live_mut(id) else {
            return Ok(());
        };
        if conn.output.is_empty() {
            conn.held = Some(self.held.len());
            self.held.push(held);
        } else {
            // The older reply did not all fit: the kernel is full, queue behind it.
            conn.output.extend(held.slice(arena, &self.out));
            self.after_write(id);
        }
        Ok(())
    }

    /// Sends `id`'s held reply now, if it has one; what the kernel does not
    /// take becomes its backlog. A reply held for a connection being aborted
    /// is dropped.
    pub(crate) fn send_held(&mut self, id: ConnId, arena: &[u8]) -> io::Result<()> {
        let Some(conn) = self.conns.live_mut(id) else {
            return Ok(());
        };
        let Some(i) = conn.held.take() else {
            return Ok(());
        };
        if conn.flags.abort.is_some() {
            return Ok(());
        }
        let data = self.held[i].slice(arena, &self.out);
        let sent = send(&mut self.stats, self.config.trace, id, &conn.socket, data)?;
        conn.wrote(sent, self.now);
        conn.output.extend(&data[sent..]);
        self.after_write(id);
        Ok(())
    }

    /// Backpressure: stop reading the connection that feeds this output
    /// above the high watermark, resume it below the low one. A backlog also
    /// starts the write timer.
    fn after_write(&mut self, id: ConnId) {
        let Some(conn) = self.conns.live_mut(id) else {
            return;
        };
        let pending = conn.output.len();
        let source = conn.fed_by.unwrap_or(id);
        self.stats.peak_pending_output = self.stats.peak_pending_output.max(pending);
        let (high, low, trace) = (
            self.config.high_watermark,
            self.config.low_watermark,
            self.config.trace,
        );
        if let Some(src) = self.conns.live_mut(source) {
            if pending > high && !src.flags.backpressured {
                src.flags.backpressured = true;
                trace_io!(
                    trace,
                    "{source} reading paused: {id} has {pending} bytes pending"
                );
            } else if pending <= low && src.flags.backpressured {
                src.flags.backpressured = false;
                trace_io!(
                    trace,
                    "{source} reading resumed: {id} has {pending} bytes pending"
                );
                self.schedule_read(source);
            }
        }
        let Some(conn) = self.conns.live_mut(id) else {
            return;
        };
        if pending > 0
            && conn.write_timer.is_none()
            && let Some(timeout) = self.config.write_timeout
        {
            conn.last_write = self.now;
            conn.write_timer = Some(self.timers.add(self.now + timeout, TimerKind::Write(id)));
        }
    }
}

/// Writes as much of `data` as the kernel takes; returns how much that was.
fn send(
    stats: &mut Stats,
    trace: bool,
    id: ConnId,
    socket: &Socket,
    data: &[u8],
) -> io::Result<usize> {
    let mut sent = 0;
    while sent < data.len() {
        stats.writes += 1;
        match socket.write(&data[sent..]) {
            Ok(n) => {
                let partial = if n < data.len() - sent {
                    " (partial)"
                } else {
                    ""
                };
                trace_io!(trace, "{id} write {n} of {}{partial}", data.len() - sent);
                sent += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                stats.eagain_writes += 1;
                trace_io!(trace, "{id} write EAGAIN");
                break;
            }
            Err(e) => {
                trace_io!(trace, "{id} write error: {e}");
                return Err(e);
            }
        }
    }
    stats.bytes_out += sent as u64;
    Ok(sent)
}
