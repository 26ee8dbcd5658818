//! One connection: its socket, its buffers and timers, and where it is in
//! its life.
//!
//! Where it is lives in three small enums — the connection as a whole
//! ([`Phase`]), its input ([`Reading`]) and its output ([`Writing`]) — plus
//! a few facts that hold in any of them ([`Flags`]). Each enum value says
//! what may still happen, so a combination that makes no sense (a FIN sent
//! on a connect in progress, a read after the close) cannot be written down.

use std::time::Instant;

use super::buffer::Buffer;
use super::close::CloseReason;
use super::timer::TimerId;
use super::token::{ConnId, Table};
use crate::sys::Addr;

/// The connection as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// An outgoing connect in progress: no reads, no writes, and no FIN yet
    /// (shutting down a socket in SYN_SENT aborts the connect). A close
    /// asked for meanwhile happens once it is up and flushed.
    Connecting { close_when_up: bool },
    /// Connected, its PROXY header or TLS handshake awaited: the service
    /// hears of it once both are done; what it writes meanwhile waits.
    Handshaking { close_when_up: bool },
    /// Established; each direction is as `reading` and `writing` say.
    Open,
    /// Closes once everything owed to the peer is flushed.
    Closing,
    /// Closes as soon as the callback that asked returns; nothing more is sent.
    Aborting(CloseReason),
    /// Deregistered and reported to the service; the slot waits for the
    /// turn to end, so no event of this batch reaches its next owner.
    Closed,
}

/// The input direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reading {
    /// Read and handed to the service.
    Open,
    /// Shutting down: the service still gets the `left` bytes that had
    /// arrived before the shutdown, and no more.
    Draining { left: usize },
    /// Shutting down, the service has had its last input: whatever the peer
    /// still sends is read and dropped until it closes, so that closing
    /// with unread input does not send RST.
    Discarding,
    /// The peer's FIN was read.
    Ended,
}

/// The output direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writing {
    Open,
    /// FIN goes once everything queued is flushed; nothing more is taken.
    FinWhenFlushed,
    /// FIN sent.
    Finished,
}

/// Facts that hold whatever the phase.
#[derive(Debug, Default)]
pub(crate) struct Flags {
    /// The service asked not to read for now.
    pub(crate) paused: bool,
    /// Output it feeds is above the high watermark: reading waits for it to drain.
    pub(crate) backpressured: bool,
    /// The kernel reported the peer's FIN, maybe before we read up to it.
    pub(crate) peer_fin: bool,
    /// On the reactor's list of reads to do before the next wait.
    pub(crate) scheduled: bool,
    /// On the reactor's list of connections with deferred work.
    pub(crate) deferred: bool,
    /// We opened it (`connect`), rather than accepted it.
    pub(crate) outbound: bool,
    /// The close sends RST (`SO_LINGER` 0) rather than FIN.
    pub(crate) reset: bool,
    /// A graceful shutdown ended its input.
    pub(crate) shut_down: bool,
    /// Accepted on a PROXY protocol listener, its header not read yet.
    pub(crate) awaiting_proxy: bool,
    /// Accepted on the metrics listener: answered by the reactor, never
    /// seen by the service.
    pub(crate) metrics: bool,
}

/// A connection as the reactor keeps its books: everything but its socket
/// (which lives in [`Io`](super::kernel::Io), out of a service's reach).
pub(crate) struct Connection {
    pub(crate) peer: Addr,
    pub(crate) opened: Instant,
    pub(crate) phase: Phase,
    pub(crate) reading: Reading,
    pub(crate) writing: Writing,
    pub(crate) flags: Flags,
    /// A partial message the service left unconsumed; empty otherwise.
    pub(crate) input: Buffer,
    /// What the kernel has not taken yet; empty otherwise.
    pub(crate) output: Buffer,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    /// Last byte read or written: the idle timer's reference.
    pub(crate) last_active: Instant,
    /// Last time the kernel took some of our output: the write timer's reference.
    pub(crate) last_write: Instant,
    /// When the first byte of the partial message in `input` arrived: the
    /// frame timer's reference.
    pub(crate) partial_since: Option<Instant>,
    pub(crate) idle_timer: Option<TimerId>,
    pub(crate) write_timer: Option<TimerId>,
    pub(crate) frame_timer: Option<TimerId>,
    /// Whose input fills this connection's output, when not its own (a relay
    /// pair): that one stops being read while this output is backed up.
    pub(crate) fed_by: Option<ConnId>,
    /// Its reply held back until the batch of events ends: an index into
    /// the reactor's held replies. While one is held, `output` is empty.
    pub(crate) held_reply: Option<usize>,
    /// Zero-copy relaying: its input goes through a pipe straight into this
    /// peer's socket...
    pub(crate) spliced_to: Option<ConnId>,
    /// ...and this many bytes of it are in the pipe now.
    pub(crate) piped: usize,
    /// A TLS connection's protocol, cipher suite, SNI and ALPN, once its
    /// handshake is done.
    pub(crate) tls: Option<Box<str>>,
}

impl Connection {
    pub(crate) fn new(peer: Addr, phase: Phase, now: Instant) -> Connection {
        Connection {
            peer,
            opened: now,
            phase,
            reading: Reading::Open,
            writing: Writing::Open,
            flags: Flags::default(),
            input: Buffer::default(),
            output: Buffer::default(),
            bytes_in: 0,
            bytes_out: 0,
            last_active: now,
            last_write: now,
            partial_since: None,
            idle_timer: None,
            write_timer: None,
            frame_timer: None,
            fed_by: None,
            held_reply: None,
            spliced_to: None,
            piped: 0,
            tls: None,
        }
    }

    /// Whether its input goes straight to a peer by splice(2).
    pub(crate) fn is_spliced(&self) -> bool {
        self.spliced_to.is_some()
    }

    /// Whether its input goes to the service now.
    pub(crate) fn wants_read(&self) -> bool {
        self.phase == Phase::Open
            && matches!(self.reading, Reading::Open | Reading::Draining { .. })
            && !self.flags.paused
            && !self.flags.backpressured
    }

    /// Whether the service may still queue output for it.
    pub(crate) fn takes_output(&self) -> bool {
        (self.is_pending() || self.phase == Phase::Open) && self.writing == Writing::Open
    }

    /// Whether it is not up yet: connecting, or in its TLS handshake. Its
    /// output waits, and no FIN can go.
    pub(crate) fn is_pending(&self) -> bool {
        matches!(
            self.phase,
            Phase::Connecting { .. } | Phase::Handshaking { .. }
        )
    }

    pub(crate) fn received(&mut self, n: usize, now: Instant) {
        self.bytes_in += n as u64;
        self.last_active = now;
    }

    pub(crate) fn wrote(&mut self, n: usize, now: Instant) {
        if n > 0 {
            self.bytes_out += n as u64;
            self.last_active = now;
            self.last_write = now;
        }
    }

    /// One word for the connection table.
    pub(crate) fn state(&self) -> &'static str {
        match (self.phase, self.reading, self.writing) {
            (Phase::Connecting { .. }, ..) => "connecting",
            (Phase::Handshaking { .. }, ..) => "handshaking",
            (_, Reading::Discarding, _) => "lingering",
            (Phase::Closing | Phase::Aborting(_) | Phase::Closed, ..) => "closing",
            (_, Reading::Draining { .. }, _) => "draining",
            _ if self.flags.backpressured => "backpressured",
            _ if self.flags.paused => "paused",
            (_, Reading::Ended, _) => "read-closed",
            (_, _, Writing::Finished) => "write-closed",
            _ => "open",
        }
    }
}

impl Table<Connection> {
    /// `id`'s connection, unless it has been closed this turn.
    pub(crate) fn live(&self, id: ConnId) -> Option<&Connection> {
        self.get(id).filter(|c| c.phase != Phase::Closed)
    }

    pub(crate) fn live_mut(&mut self, id: ConnId) -> Option<&mut Connection> {
        self.get_mut(id).filter(|c| c.phase != Phase::Closed)
    }
}
