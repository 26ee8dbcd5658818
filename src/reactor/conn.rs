//! One connection: its socket, its buffers and timers, and where it is in
//! its life.
//!
//! Where it is lives in three small enums — the connection as a whole
//! ([`Phase`]), its input ([`Reading`]) and its output ([`Writing`]) — plus
//! a few facts that hold in any of them ([`Flags`]). Each enum value says
//! what may still happen, so a combination that makes no sense (a FIN sent
//! on a connect in progress, a read after the close) cannot be written down.

use super::buffer::Buffer;
use super::close::CloseReason;
use super::timer::Stamp;
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
    Draining { left: u32 },
    /// Shutting down before the peer sent a byte to the service: a client
    /// that has just connected (or finished its PROXY header or TLS
    /// handshake), its request on the way. Its first read still goes to the
    /// service, and its input ends after it (the shutdown timeout bounds
    /// the wait).
    AwaitingFirst,
    /// Shutting down, the service has had its last input (or the metrics
    /// responder has answered): whatever the peer still sends is read and
    /// dropped until it closes, so that closing with unread input does not
    /// send RST.
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
    /// Where it is with the PROXY protocol header.
    pub(crate) proxy: ProxyStep,
    /// Accepted on the metrics listener: answered by the reactor, never
    /// seen by the service.
    pub(crate) metrics: bool,
    /// Its write timer is set.
    pub(crate) write_timer: bool,
    /// Its frame timer is set.
    pub(crate) frame_timer: bool,
    /// Its input is to be spliced to its peer once a read fills a whole
    /// chunk (`Context::splice_bulk`).
    pub(crate) splice_bulk: bool,
}

/// What an accepted connection owes or may not send of the PROXY
/// protocol: one byte for what two flags would say.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProxyStep {
    /// Nothing (anymore).
    #[default]
    Done,
    /// Accepted on a PROXY protocol listener from a source it believes:
    /// its header is not read yet.
    Awaiting,
    /// Accepted from a source outside `Config::proxy_from`: its first
    /// bytes are to be checked for a header it may not send.
    Sniffing,
}

/// A connection as the reactor keeps its books, in the slab: what the
/// events of an established connection touch. What only its setup and the
/// connection table need is in [`About`]; its socket is in
/// [`Handles`](super::kernel::Handles), out of a service's reach. An idle connection
/// holds no heap memory: the buffers and their clocks ([`Backlog`]) exist
/// only while there is a partial message or unsent output, and splicing and
/// TLS facts ([`Rare`]) only on the connections that have them.
pub(crate) struct Connection {
    pub(crate) phase: Phase,
    pub(crate) reading: Reading,
    pub(crate) writing: Writing,
    pub(crate) flags: Flags,
    backlog: Option<Box<Backlog>>,
    rare: Option<Box<Rare>>,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    /// Last byte read or written: the idle timer's reference.
    pub(crate) last_active: Stamp,
    /// Whose input fills this connection's output, when not its own (a relay
    /// pair): that one stops being read while this output is backed up.
    pub(crate) fed_by: Option<ConnId>,
    /// Its reply held back until the batch of events ends: an index into
    /// the reactor's held replies. While one is held, the output is empty.
    pub(crate) held_reply: Option<u32>,
}

/// A connection's bytes in memory, while it has any.
struct Backlog {
    /// A partial message the service left unconsumed; empty otherwise.
    input: Buffer,
    /// What the kernel has not taken yet; empty otherwise.
    output: Buffer,
    /// How much of `output` the reactor's total of buffered output counts:
    /// brought up to date by [`Connection::count_output`] after each write.
    counted: usize,
    /// The count of bytes sent (`bytes_out`) the peer must have taken by
    /// the write timer's deadline: what was owed when the timer was set.
    drain_target: u64,
    /// When the first byte of the partial message in `input` arrived: the
    /// frame timer's reference.
    partial_since: Option<Stamp>,
}

/// What few connections have.
#[derive(Default)]
struct Rare {
    /// Zero-copy relaying: its input goes through a pipe straight into this
    /// peer's socket...
    spliced_to: Option<ConnId>,
    /// ...and this many bytes of it are in the pipe now.
    piped: usize,
    /// A TLS connection's protocol, cipher suite, SNI and ALPN, once its
    /// handshake is done.
    tls: Option<Box<str>>,
    /// The socket's own peer, when a PROXY header named another: the
    /// balancer it came through.
    via: Option<Addr>,
    /// Who the client's verified certificate says it is (`--tls-client-ca`).
    identity: Option<Box<str>>,
}

/// What only a connection's setup, its log lines and the connection table
/// need: kept beside the slab, by slot, so that events do not carry it
/// through the cache.
pub(crate) struct About {
    pub(crate) peer: Addr,
    pub(crate) opened: Stamp,
}

impl Connection {
    pub(crate) fn new(phase: Phase, now: Stamp) -> Connection {
        Connection {
            phase,
            reading: Reading::Open,
            writing: Writing::Open,
            flags: Flags::default(),
            backlog: None,
            rare: None,
            bytes_in: 0,
            bytes_out: 0,
            last_active: now,
            fed_by: None,
            held_reply: None,
        }
    }

    /// The partial message the service left unconsumed.
    pub(crate) fn input(&self) -> &[u8] {
        self.backlog.as_ref().map_or(&[], |b| b.input.as_slice())
    }

    /// What the kernel has not taken yet.
    pub(crate) fn output(&self) -> &[u8] {
        self.backlog.as_ref().map_or(&[], |b| b.output.as_slice())
    }

    fn backlog(&mut self) -> &mut Backlog {
        // A backlog begun while the write timer runs owes nothing by that
        // deadline: the timer then sets what it owes by the next.
        let sent = self.bytes_out;
        self.backlog.get_or_insert_with(|| {
            Box::new(Backlog {
                input: Buffer::default(),
                output: Buffer::default(),
                counted: 0,
                drain_target: sent,
                partial_since: None,
            })
        })
    }

    pub(crate) fn output_mut(&mut self) -> &mut Buffer {
        &mut self.backlog().output
    }

    /// The kernel took `n` bytes of the output. ([`count_output`](Self::count_output),
    /// which follows every write, frees the backlog if that emptied it.)
    pub(crate) fn consume_output(&mut self, n: usize) {
        if let Some(b) = &mut self.backlog {
            b.output.consume(n);
        }
    }

    /// Brings `total`, the output the reactor counts for all its
    /// connections, up to date with this one's: the one place where output
    /// that grew or shrank since the last call is added or taken off.
    pub(crate) fn count_output(&mut self, total: &mut usize) {
        if let Some(b) = &mut self.backlog {
            *total = *total - b.counted + b.output.len();
            b.counted = b.output.len();
        }
        self.tidy();
    }

    /// The partial message, taken out to hand to the service whole; the
    /// backlog stays for [`keep_input`](Self::keep_input) to refill.
    pub(crate) fn take_input(&mut self) -> Buffer {
        self.backlog
            .as_mut()
            .map(|b| std::mem::take(&mut b.input))
            .unwrap_or_default()
    }

    /// Puts back what the service left of the input.
    pub(crate) fn keep_input(&mut self, input: Buffer) {
        if !input.is_empty() {
            self.backlog().input = input;
        }
        self.tidy();
    }

    /// Appends to the partial message.
    pub(crate) fn extend_input(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.backlog().input.extend(bytes);
        }
    }

    /// Drops both buffers; returns how much output the reactor's total
    /// counted for them, to take off it.
    pub(crate) fn release_buffers(&mut self) -> usize {
        self.backlog.take().map_or(0, |b| b.counted)
    }

    /// Frees the backlog once it holds no bytes (and the reactor's total
    /// counts none of it): an idle connection keeps none.
    pub(crate) fn tidy(&mut self) {
        if self
            .backlog
            .as_ref()
            .is_some_and(|b| b.input.is_empty() && b.output.is_empty() && b.counted == 0)
        {
            self.backlog = None;
        }
    }

    /// The `bytes_out` the write timer waits for. A backlog freed while
    /// the timer ran (all taken, then more owed) owes nothing by it.
    pub(crate) fn drain_target(&self) -> u64 {
        self.backlog
            .as_ref()
            .map_or(self.bytes_out, |b| b.drain_target)
    }

    /// The write timer is set: the `owed` bytes (its output, and any in its
    /// splice peer's pipe) must be taken by its deadline.
    pub(crate) fn owe_by_deadline(&mut self, owed: usize) {
        let target = self.bytes_out + owed as u64;
        self.backlog().drain_target = target;
    }

    pub(crate) fn partial_since(&self) -> Option<Stamp> {
        self.backlog.as_ref()?.partial_since
    }

    /// Starts (or with `None`, ends) the partial message's clock.
    pub(crate) fn set_partial_since(&mut self, since: Option<Stamp>) {
        match (&mut self.backlog, since) {
            (Some(b), _) => b.partial_since = since,
            (None, None) => {}
            (None, Some(_)) => self.backlog().partial_since = since,
        }
    }

    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Where its input goes by splice(2), if it does.
    pub(crate) fn spliced_to(&self) -> Option<ConnId> {
        self.rare.as_ref()?.spliced_to
    }

    pub(crate) fn set_spliced_to(&mut self, peer: ConnId) {
        self.rare().spliced_to = Some(peer);
    }

    /// Both directions are over and nothing of its input waits in a pipe
    /// for its peer: nothing is left for its socket to do.
    pub(crate) fn is_done(&self) -> bool {
        self.writing == Writing::Finished && self.reading == Reading::Ended && self.piped() == 0
    }

    /// Bytes of its input in the pipe to its splice peer.
    pub(crate) fn piped(&self) -> usize {
        self.rare.as_ref().map_or(0, |r| r.piped)
    }

    pub(crate) fn set_piped(&mut self, n: usize) {
        if n > 0 || self.rare.is_some() {
            self.rare().piped = n;
        }
    }

    /// A TLS connection's summary, once its handshake is done.
    pub(crate) fn tls(&self) -> Option<&str> {
        self.rare.as_ref()?.tls.as_deref()
    }

    pub(crate) fn set_tls(&mut self, summary: String) {
        self.rare().tls = Some(summary.into());
    }

    /// Whether it was counted against the limits of its source (if there
    /// are any, and it has an IP address): every connection accepted for
    /// the service is, at accept or once its PROXY header is read, unless
    /// it was refused — and then it never got past either. Told from the
    /// flags, as a flag of its own would cost every connection 8 bytes.
    pub(crate) fn counted_per_source(&self) -> bool {
        !self.flags.outbound && !self.flags.metrics && self.flags.proxy != ProxyStep::Awaiting
    }

    /// The balancer a PROXY header came through, when it named a client.
    pub(crate) fn via(&self) -> Option<&Addr> {
        self.rare.as_ref()?.via.as_ref()
    }

    pub(crate) fn set_via(&mut self, balancer: Addr) {
        self.rare().via = Some(balancer);
    }

    /// Who the client's verified certificate says it is, if it showed one.
    pub(crate) fn identity(&self) -> Option<&str> {
        self.rare.as_ref()?.identity.as_deref()
    }

    pub(crate) fn set_identity(&mut self, identity: String) {
        self.rare().identity = Some(identity.into());
    }

    /// Whether its input goes straight to a peer by splice(2).
    pub(crate) fn is_spliced(&self) -> bool {
        self.spliced_to().is_some()
    }

    /// Whether its input goes to the service now.
    pub(crate) fn wants_read(&self) -> bool {
        self.phase == Phase::Open
            && matches!(
                self.reading,
                Reading::Open | Reading::Draining { .. } | Reading::AwaitingFirst
            )
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

    pub(crate) fn received(&mut self, n: usize, now: Stamp) {
        self.bytes_in += n as u64;
        self.last_active = now;
    }

    pub(crate) fn wrote(&mut self, n: usize, now: Stamp) {
        if n > 0 {
            self.bytes_out += n as u64;
            self.last_active = now;
        }
    }

    /// One word for the connection table.
    pub(crate) fn state(&self) -> &'static str {
        match (self.phase, self.reading, self.writing) {
            (Phase::Connecting { .. }, ..) => "connecting",
            (Phase::Handshaking { .. }, ..) => "handshaking",
            (_, Reading::Discarding, _) => "lingering",
            (Phase::Closing | Phase::Aborting(_) | Phase::Closed, ..) => "closing",
            (_, Reading::Draining { .. } | Reading::AwaitingFirst, _) => "draining",
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

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use super::*;
    use crate::reactor::kernel::Handles;
    use crate::sys::Real;

    /// What every connection costs, beside the kernel's socket: its slab
    /// entry, its [`About`] and its handles. Idle connections are what a
    /// server has most of; a field added here costs each of them. (The
    /// figures before the split: a 320-byte entry and 32 bytes of handles.)
    #[test]
    fn a_connection_stays_small() {
        let entry = size_of::<(std::num::NonZeroU32, Connection)>();
        let about = size_of::<Option<About>>();
        let handles = size_of::<Option<Handles<Real>>>();
        eprintln!(
            "entry {entry}, about {about}, handles {handles}; boxed while used: backlog {}, rare {}",
            size_of::<Backlog>(),
            size_of::<Rare>()
        );
        assert!(entry <= 88, "slab entry of {entry} bytes");
        assert!(about <= 40, "About of {about} bytes");
        assert!(handles <= 16, "handles of {handles} bytes");
    }
}
