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

use std::io;
use std::ops::Range;

use log::{debug, warn};

use super::Reactor;
use super::callback::Callback;
use super::close::CloseReason;
use super::conn::{Reading, Writing};
use super::egress;
use super::service::Service;
use super::state::State;
use super::token::ConnId;
use super::trace::trace_io;
use crate::sys::os::Os;

impl<S: Service, O: Os> Reactor<S, O> {
    /// Reads `id` until the kernel is drained, the budget is spent, or the
    /// connection stops wanting input.
    pub(super) fn read(&mut self, id: ConnId) {
        let mut budget = self.state.config.read_budget;
        loop {
            let room = self.arena_room();
            let Some(conn) = self.state.conns.live_mut(id) else {
                return;
            };
            if conn.reading == Reading::Discarding {
                return self.discard(id);
            }
            if conn.is_spliced() && conn.input().is_empty() {
                return self.splice_read(id);
            }
            if !conn.wants_read() {
                return;
            }
            // While shutting down, read no further than what had arrived.
            let max = match conn.reading {
                Reading::Draining { left } => (left as usize).min(room.len()),
                _ => room.len(),
            };
            let peer_fin = conn.flags.peer_fin;
            let Some(handles) = self.kernel.handles_mut(id) else {
                return;
            };
            self.state.stats.reads += 1;
            let n = match handles.read(&mut self.arena.bytes[room.start..][..max]) {
                Ok(0) => return self.read_eof(id),
                Ok(n) => n,
                Err(e) => return self.read_failed(id, "read", e),
            };
            trace_io!(self.state.config.trace, "{id} read {n}");
            let drained = self.received(id, n);
            let range = room.start..room.start + n;
            if conn_is_metrics(&self.state, id) {
                self.answer_metrics(id, range);
            } else {
                self.call(Callback::Data(id, range));
            }
            if drained {
                return self.end_input(id);
            }
            if n == max {
                self.splice_if_bulk(id);
            }
            // A short read emptied the socket; edge-triggering reports the
            // next bytes, so another read would only say EAGAIN. Unless a
            // FIN is queued: that read is how we see it.
            if self.state.conns.live(id).is_none() || (n < max && !peer_fin) {
                return;
            }
            budget = budget.saturating_sub(n);
            if budget == 0 {
                return self.state.schedule_read(id);
            }
        }
    }

    /// Counts `n` bytes read from `id`; true if they were the last that a
    /// shutdown lets through to the service.
    pub(super) fn received(&mut self, id: ConnId, n: usize) -> bool {
        let Some(conn) = self.state.conns.live_mut(id) else {
            return false;
        };
        conn.received(n, self.state.stamp);
        self.state.stats.bytes_in += n as u64;
        if let Reading::Draining { left } = &mut conn.reading {
            *left = left.saturating_sub(u32::try_from(n).unwrap_or(u32::MAX));
            return *left == 0;
        }
        false
    }

    /// The peer's FIN: the service hears that its input has ended.
    fn read_eof(&mut self, id: ConnId) {
        trace_io!(self.state.config.trace, "{id} read EOF");
        debug!("{id}: peer sent FIN");
        if let Some(conn) = self.state.conns.live_mut(id) {
            conn.reading = Reading::Ended;
        }
        self.input_ended(id);
    }

    /// A read or splice that failed: EAGAIN means the socket is drained;
    /// anything else ends the connection.
    pub(super) fn read_failed(&mut self, id: ConnId, op: &str, e: io::Error) {
        if e.kind() == io::ErrorKind::WouldBlock {
            trace_io!(self.state.config.trace, "{id} {op} EAGAIN");
            self.state.stats.eagain_reads += 1;
            return;
        }
        trace_io!(self.state.config.trace, "{id} {op} error: {e}");
        let reason = match e.kind() {
            // Only TLS says these, after its handshake: a FIN without
            // close_notify (logged by whoever it could mislead: a relay)...
            io::ErrorKind::UnexpectedEof => CloseReason::TlsTruncated,
            // ...and records that are not what they claim.
            io::ErrorKind::InvalidData => {
                warn!("{id} {}: TLS: {e}; closing", self.state.peer_label(id));
                CloseReason::Error(e.kind())
            }
            kind => CloseReason::Error(kind),
        };
        self.close(id, reason);
        self.apply();
    }

    /// Where the next read into the arena goes: a read chunk of room, made
    /// by sending the held replies if this batch has filled the arena.
    fn arena_room(&mut self) -> Range<usize> {
        let chunk = self.state.config.read_chunk.max(1);
        if let Some(room) = self.arena.room(chunk) {
            return room;
        }
        egress::send_held_replies(&mut self.state, &mut self.kernel, &mut self.arena);
        self.apply();
        self.arena.used..self.arena.used + chunk
    }

    /// The service hears that `id`'s input has ended, with what it left
    /// unconsumed.
    pub(super) fn input_ended(&mut self, id: ConnId) {
        if conn_is_metrics(&self.state, id) {
            // It ended before its request did: nothing to answer.
            self.state.close_when_flushed(id);
            self.apply();
        } else {
            self.call(Callback::ReadClosed(id));
        }
        // Both directions are done: nothing is left for this socket.
        if self
            .state
            .conns
            .live(id)
            .is_some_and(|c| c.writing == Writing::Finished && c.reading == Reading::Ended)
        {
            self.close(id, CloseReason::Peer);
            self.apply();
        }
    }

    /// Shutting down: the service has had every byte that arrived before
    /// the shutdown, and hears the end of its input as if the peer had sent
    /// FIN. What the peer sends from now on is read and dropped.
    pub(super) fn end_input(&mut self, id: ConnId) {
        if let Some(conn) = self.state.conns.live_mut(id) {
            conn.reading = Reading::Discarding;
            conn.flags.shut_down = true;
        }
        self.input_ended(id);
        self.state.schedule_read(id);
    }

    /// Reads and drops whatever a shutting-down connection's peer still
    /// sends (or a metrics client's after its answer), within the same
    /// per-turn budget as any read, until it closes.
    fn discard(&mut self, id: ConnId) {
        let trace = self.state.config.trace;
        let mut budget = self.state.config.read_budget;
        loop {
            let room = self.arena_room();
            let (Some(conn), Some(handles)) =
                (self.state.conns.live_mut(id), self.kernel.handles_mut(id))
            else {
                return;
            };
            self.state.stats.reads += 1;
            // What a TLS peer cuts short now was to be dropped anyway.
            let read = handles
                .read(&mut self.arena.bytes[room])
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
                        self.close(id, reason);
                    } else {
                        // Output may still be owed; the close follows its flush.
                        self.state.defer(id);
                    }
                    return self.apply();
                }
                Ok(n) => {
                    trace_io!(trace, "{id} read {n} (discarded)");
                    conn.bytes_in += n as u64;
                    self.state.stats.bytes_in += n as u64;
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        return self.state.schedule_read(id);
                    }
                }
                Err(e) => return self.read_failed(id, "read", e),
            }
        }
    }
}

/// Whether `id` is a metrics connection, answered by the reactor itself.
fn conn_is_metrics(state: &State, id: ConnId) -> bool {
    state.conns.live(id).is_some_and(|c| c.flags.metrics)
}
