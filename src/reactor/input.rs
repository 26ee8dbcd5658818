//! Input: reading a connection, handing its bytes to the service, and the
//! end of its input.
//!
//! A readable connection is read until a short read says the kernel has no
//! more (edge-triggering reports the next bytes), or until its per-turn
//! budget is spent: then it is served again before the next wait, so one
//! fast sender cannot starve the rest. Every read lands in the shared arena;
//! only what the service leaves unconsumed (a partial message) is copied
//! into the connection's own buffer, so a partial message costs what was
//! received of it.
//!
//! [`Reactor::read`] is the coordinator's loop: a read, then the service
//! (through [`Reactor::call`]), then the next read. The reads themselves
//! are functions of the books, the sockets and the arena.

use std::io;
use std::ops::Range;

use log::{debug, warn};

use super::buffer::Arena;
use super::callback::Callback;
use super::close::CloseReason;
use super::conn::{Connection, ProxyStep, Reading, Writing};
use super::kernel::Kernel;
use super::service::Service;
use super::state::State;
use super::stats::Stats;
use super::timer::Stamp;
use super::token::ConnId;
use super::trace::trace_io;
use super::{Reactor, handshake, output, scrape, splice};
use crate::sys::os::Os;

/// What one read of a connection gave.
enum Read {
    /// Bytes, in this range of the arena; `more` if the socket may hold
    /// more now (the read filled what it asked for, or a FIN is queued);
    /// `last` if they are the last a shutdown lets through.
    Data {
        range: Range<usize>,
        more: bool,
        last: bool,
    },
    /// The peer's FIN.
    Eof,
    /// Nothing to hand over: the socket is drained, the connection does
    /// not want input, or it is gone.
    Nothing,
}

impl<S: Service, O: Os> Reactor<S, O> {
    /// Reads `id` until the kernel is drained, the budget is spent, or the
    /// connection stops wanting input, handing each read to the service.
    pub(super) fn read(&mut self, id: ConnId) {
        let mut budget = self.state.config.read_budget;
        loop {
            let Some(conn) = self.state.conns.live(id) else {
                return;
            };
            if conn.reading == Reading::Discarding {
                discard(&mut self.state, &mut self.kernel, &mut self.arena, id);
                return self.apply();
            }
            let (metrics, sniff) = (conn.flags.metrics, conn.flags.proxy == ProxyStep::Sniffing);
            // Its first bytes are looked at before any go by splice.
            if conn.is_spliced() && conn.input().is_empty() && !sniff {
                return match splice::read(&mut self.state, &mut self.kernel, id) {
                    splice::Read::Ended => self.input_ended(id),
                    splice::Read::Drained => {
                        self.state.end_input(id);
                        self.input_ended(id);
                    }
                    splice::Read::Paused => self.apply(),
                };
            }
            let (range, more, drained) =
                match read_once(&mut self.state, &mut self.kernel, &mut self.arena, id) {
                    Read::Data { range, more, last } => (range, more, last),
                    Read::Eof => return self.input_ended(id),
                    Read::Nothing => return self.apply(),
                };
            let n = range.len();
            if metrics {
                let (state, kernel, arena) = (&mut self.state, &self.kernel, &self.arena);
                scrape::answer(state, kernel, arena, &self.service, id, range);
                self.apply();
            } else if sniff
                && handshake::untrusted_header(
                    &mut self.state,
                    id,
                    &self.arena.bytes[range.clone()],
                )
            {
                return self.apply();
            } else {
                self.call(Callback::Data(id, range));
            }
            if drained {
                self.state.end_input(id);
                return self.input_ended(id);
            }
            if !more || self.state.conns.live(id).is_none() {
                return;
            }
            budget = budget.saturating_sub(n);
            if budget == 0 {
                return self.state.schedule_read(id);
            }
        }
    }

    /// The service hears that `id`'s input has ended, with what it left
    /// unconsumed; a connection whose output has ended too is closed.
    pub(super) fn input_ended(&mut self, id: ConnId) {
        if self.state.conns.live(id).is_some_and(|c| c.flags.metrics) {
            // It ended before its request did: nothing to answer.
            self.state.close_when_flushed(id);
            self.apply();
        } else {
            self.call(Callback::ReadClosed(id));
        }
        // Both directions are done: nothing is left for this socket.
        if self.state.conns.live(id).is_some_and(Connection::is_done) {
            self.close(id, CloseReason::Peer);
            self.apply();
        }
    }
}

/// One read of `id` into the arena, as much as a read chunk (while shutting
/// down, no more than what had arrived before). A failure ends the
/// connection ([`State::read_failed`]).
#[inline(always)]
fn read_once<O: Os>(
    state: &mut State,
    kernel: &mut Kernel<O>,
    arena: &mut Arena,
    id: ConnId,
) -> Read {
    let room = arena_room(state, kernel, arena);
    let Some(conn) = state.conns.live_mut(id) else {
        return Read::Nothing;
    };
    if !conn.wants_read() {
        return Read::Nothing;
    }
    let max = match conn.reading {
        Reading::Draining { left } => (left as usize).min(room.len()),
        _ => room.len(),
    };
    let peer_fin = conn.flags.peer_fin;
    let Some(handles) = kernel.handles_mut(id) else {
        return Read::Nothing;
    };
    state.stats.reads += 1;
    let n = match handles.read(&mut arena.bytes[room.start..][..max]) {
        Ok(0) => {
            trace_io!(state.config.trace, "{id} read EOF");
            debug!("{id}: peer sent FIN");
            conn.reading = Reading::Ended;
            return Read::Eof;
        }
        Ok(n) => n,
        Err(e) => {
            state.read_failed(id, "read", e);
            return Read::Nothing;
        }
    };
    trace_io!(state.config.trace, "{id} read {n}");
    // A short read emptied the socket; edge-triggering reports the next
    // bytes, so another read would only say EAGAIN. Unless a FIN is
    // queued, or TLS holds the session's end: that read is how we see it.
    let more = n == max || peer_fin || handles.end_unread();
    let last = received(conn, &mut state.stats, state.stamp, n);
    if n == max {
        splice::if_bulk(state, kernel, id);
    }
    Read::Data {
        range: room.start..room.start + n,
        more,
        last,
    }
}

/// Counts `n` bytes read from `conn`; true if they were the last that a
/// shutdown lets through to the service.
fn received(conn: &mut Connection, stats: &mut Stats, now: Stamp, n: usize) -> bool {
    conn.received(n, now);
    stats.bytes_in += n as u64;
    match &mut conn.reading {
        Reading::Draining { left } => {
            *left = left.saturating_sub(u32::try_from(n).unwrap_or(u32::MAX));
            *left == 0
        }
        Reading::AwaitingFirst => true,
        _ => false,
    }
}

/// Where the next read into the arena goes: a read chunk of room, made
/// by sending the held replies if this batch has filled the arena.
fn arena_room<O: Os>(state: &mut State, kernel: &mut Kernel<O>, arena: &mut Arena) -> Range<usize> {
    let chunk = state.config.read_chunk.max(1);
    if let Some(room) = arena.room(chunk) {
        return room;
    }
    output::send_held_replies(state, kernel, arena);
    arena.used..arena.used + chunk
}

impl State {
    /// Shutting down: the service has had every byte that arrived before
    /// the shutdown, and is to hear the end of its input as if the peer had
    /// sent FIN (the caller tells it). What the peer sends from now on is
    /// read and dropped.
    pub(super) fn end_input(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.live_mut(id) {
            conn.reading = Reading::Discarding;
            conn.flags.shut_down = true;
        }
        self.schedule_read(id);
    }

    /// Counts `n` bytes read from `id`; true if they were the last that a
    /// shutdown lets through to the service.
    pub(super) fn received(&mut self, id: ConnId, n: usize) -> bool {
        match self.conns.live_mut(id) {
            Some(conn) => received(conn, &mut self.stats, self.stamp, n),
            None => false,
        }
    }

    /// A read or splice that failed: EAGAIN means the socket is drained;
    /// anything else ends the connection.
    pub(super) fn read_failed(&mut self, id: ConnId, op: &str, e: io::Error) {
        if e.kind() == io::ErrorKind::WouldBlock {
            trace_io!(self.config.trace, "{id} {op} EAGAIN");
            self.stats.eagain_reads += 1;
            return;
        }
        trace_io!(self.config.trace, "{id} {op} error: {e}");
        let reason = match e.kind() {
            // Only TLS says these, after its handshake: a FIN without
            // close_notify (logged by whoever it could mislead: a relay)...
            io::ErrorKind::UnexpectedEof => CloseReason::TlsTruncated,
            // ...and records that are not what they claim.
            io::ErrorKind::InvalidData => {
                warn!("{id} {}: TLS: {e}; closing", self.peer_label(id));
                CloseReason::Error(e.kind())
            }
            kind => CloseReason::failed(kind),
        };
        self.abort(id, reason);
    }
}

/// Reads and drops whatever a shutting-down connection's peer still
/// sends (or a metrics client's after its answer), within the same
/// per-turn budget as any read, until it closes.
fn discard<O: Os>(state: &mut State, kernel: &mut Kernel<O>, arena: &mut Arena, id: ConnId) {
    let trace = state.config.trace;
    let mut budget = state.config.read_budget;
    loop {
        let room = arena_room(state, kernel, arena);
        let (Some(conn), Some(handles)) = (state.conns.live_mut(id), kernel.handles_mut(id)) else {
            return;
        };
        state.stats.reads += 1;
        // What a TLS peer cuts short now was to be dropped anyway.
        let read = handles
            .read(&mut arena.bytes[room])
            .or_else(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => Ok(0),
                _ => Err(e),
            });
        match read {
            Ok(0) => {
                trace_io!(trace, "{id} read EOF (discarding)");
                conn.reading = Reading::Ended;
                if conn.writing == Writing::Finished {
                    // Ours to close: shutting down, or the metrics
                    // responder done with its answer.
                    let reason = if conn.flags.shut_down {
                        CloseReason::Shutdown
                    } else {
                        CloseReason::Local
                    };
                    state.abort(id, reason);
                } else {
                    // Output may still be owed; the close follows its flush.
                    state.defer(id);
                }
                return;
            }
            Ok(n) => {
                trace_io!(trace, "{id} read {n} (discarded)");
                conn.bytes_in += n as u64;
                state.stats.bytes_in += n as u64;
                budget = budget.saturating_sub(n);
                if budget == 0 {
                    return state.schedule_read(id);
                }
            }
            Err(e) => return state.read_failed(id, "read", e),
        }
    }
}
