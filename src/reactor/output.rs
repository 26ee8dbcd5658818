//! Output: where a service's write goes, the held replies and when they are
//! sent, flushing a backlog, and backpressure.
//!
//! A write to the connection being served lands in the shared `out` buffer
//! (or, for an echo, is only remembered as a range of the read arena) and is
//! held until its group of events is handled. A write to any other
//! connection sends that one's held reply first, so order holds. Whatever
//! the kernel refuses becomes that connection's backlog, its own buffer,
//! flushed when the socket turns writable. A backlog above the high
//! watermark stops reading the connection that feeds it, until it drains
//! below the low one; while the output of all connections is over half
//! their budget, any backlog does, until it has drained (see `budget`).

use std::io;

use super::buffer::Arena;
use super::close::CloseReason;
use super::conn::Phase;
use super::kernel::{Handles, Kernel};
use super::state::State;
use super::stats::Stats;
use super::token::ConnId;
use super::trace::trace_io;
use crate::sys::os::Os;

impl State {
    /// Where a write to `id` goes: the shared buffer while `id` is being
    /// served and has no backlog, else its own output buffer. `None` if it
    /// takes no more output.
    pub(crate) fn output_for(&mut self, id: ConnId, arena: &[u8]) -> Option<&mut Vec<u8>> {
        if self.replies.serving != Some(id) {
            self.unhold_reply(id, arena);
        }
        let conn = self.conns.live_mut(id)?;
        if !conn.takes_output() {
            return None;
        }
        if self.replies.serving == Some(id) && conn.output().is_empty() {
            return Some(&mut self.replies.out);
        }
        if !conn.flags.deferred {
            conn.flags.deferred = true;
            self.deferred.push(id);
        }
        Some(conn.output_mut().tail_mut())
    }

    /// Puts `id`'s held reply, if it has one, at the front of its backlog:
    /// older bytes go first when something else is written to it. (Rare:
    /// a service writes to another connection's held reply only if that one
    /// was served earlier in the batch.)
    fn unhold_reply(&mut self, id: ConnId, arena: &[u8]) {
        let Some(conn) = self.conns.live_mut(id) else {
            return;
        };
        if let Some(i) = conn.held_reply.take() {
            conn.output_mut()
                .extend(self.replies.held[i as usize].slice(arena, &self.replies.out));
            self.defer(id);
        }
    }

    /// Brings the books up to date after a write to `id`: the output of all
    /// connections, backpressure on whoever feeds `id` (stop reading it
    /// above the high watermark, resume below the low one; see
    /// [`pace`](Self::pace)), a drain the service watches, and the write
    /// timer, which a backlog starts.
    pub(crate) fn after_write(&mut self, id: ConnId) {
        let Some(conn) = self.conns.live_mut(id) else {
            return;
        };
        conn.count_output(&mut self.stats.buffered_output);
        let pending = conn.output().len();
        // The common case, a connection that fed its own reply and has
        // nothing left: no backpressure to lift, no drain to report, no timer.
        if pending == 0
            && conn.fed_by.is_none()
            && !conn.flags.backpressured
            && self.drain_watch.is_empty()
        {
            return;
        }
        let source = conn.fed_by.unwrap_or(id);
        self.stats.peak_pending_output = self.stats.peak_pending_output.max(pending);
        self.pace(source, id, pending);
        if pending <= self.config.low_watermark
            && let Some(i) = self.drain_watch.iter().position(|&w| w == id)
        {
            self.drain_watch.swap_remove(i);
            self.drained.push(id);
        }
        if pending > 0 {
            self.arm_write_timer(id);
        }
    }

    /// Pauses or resumes reading `source`, which feeds `id`'s `pending`
    /// bytes of output, by the watermarks (both zero while the output of
    /// all connections is over half the budget).
    fn pace(&mut self, source: ConnId, id: ConnId, pending: usize) {
        let tight = self.stats.buffered_output > self.config.max_buffered / 2;
        let (high, low) = if tight {
            (0, 0)
        } else {
            (self.config.high_watermark, self.config.low_watermark)
        };
        let trace = self.config.trace;
        let Some(src) = self.conns.live_mut(source) else {
            return;
        };
        if pending > high && !src.flags.backpressured {
            src.flags.backpressured = true;
            trace_io!(
                trace,
                "{source} reading paused: {id} has {pending} bytes pending"
            );
            if tight {
                self.paused_for_budget(source);
            }
        } else if pending <= low && src.flags.backpressured {
            src.flags.backpressured = false;
            trace_io!(
                trace,
                "{source} reading resumed: {id} has {pending} bytes pending"
            );
            self.schedule_read(source);
        }
    }
}

/// The callback serving `id` returned: what it wrote to `id` is held
/// until the batch ends. An older held reply of `id` goes out first.
pub(super) fn hold_reply<O: Os>(
    state: &mut State,
    kernel: &mut Kernel<O>,
    arena: &Arena,
    id: ConnId,
) -> io::Result<()> {
    let held = state.replies.end_serving(id);
    let older = match state.conns.live(id) {
        Some(c) if held.len() > 0 && !matches!(c.phase, Phase::Aborting(_)) => c.held_reply,
        _ => return Ok(()),
    };
    if older.is_some() {
        send_held_reply(state, kernel, arena, id)?;
    }
    let Some(conn) = state.conns.live_mut(id) else {
        return Ok(());
    };
    if conn.output().is_empty() {
        conn.held_reply = Some(state.replies.held.len() as u32);
        state.replies.held.push(held);
    } else {
        // The older reply did not all fit: the kernel is full, queue behind it.
        conn.output_mut()
            .extend(held.slice(&arena.bytes, &state.replies.out));
        state.after_write(id);
    }
    Ok(())
}

/// Sends `id`'s held reply now, if it has one; what the kernel does not
/// take becomes its backlog. A reply held for a connection being aborted
/// is dropped.
fn send_held_reply<O: Os>(
    state: &mut State,
    kernel: &mut Kernel<O>,
    arena: &Arena,
    id: ConnId,
) -> io::Result<()> {
    let (Some(conn), Some(handles)) = (state.conns.live_mut(id), kernel.handles_mut(id)) else {
        return Ok(());
    };
    let Some(i) = conn.held_reply.take() else {
        return Ok(());
    };
    if matches!(conn.phase, Phase::Aborting(_)) {
        return Ok(());
    }
    let data = state.replies.held[i as usize].slice(&arena.bytes, &state.replies.out);
    let sent = send(&mut state.stats, state.config.trace, id, handles, data)?;
    conn.wrote(sent, state.stamp);
    if sent < data.len() {
        conn.output_mut().extend(&data[sent..]);
    }
    state.after_write(id);
    Ok(())
}

/// Sends the write the callback that just returned made to another
/// connection from the read arena, where it lies; what the kernel does
/// not take becomes that connection's backlog. A relay's bytes go out
/// this way without a copy or an allocation in between.
pub(super) fn send_forward<O: Os>(state: &mut State, kernel: &mut Kernel<O>, arena: &Arena) {
    let Some((id, range)) = state.replies.forward.take() else {
        return;
    };
    let (Some(conn), Some(handles)) = (state.conns.live_mut(id), kernel.handles_mut(id)) else {
        return;
    };
    if matches!(conn.phase, Phase::Aborting(_)) {
        return;
    }
    let data = &arena.bytes[range];
    match send(&mut state.stats, state.config.trace, id, handles, data) {
        Ok(sent) => {
            conn.wrote(sent, state.stamp);
            if sent < data.len() {
                // The kernel is full: the rest goes out when it turns writable.
                conn.output_mut().extend(&data[sent..]);
            } else {
                // TLS may hold records back: the flush sees to them.
                state.defer(id);
            }
            state.after_write(id);
        }
        Err(e) => state.abort(id, CloseReason::failed(e.kind())),
    }
}

/// Writes `id`'s held reply and backlog until they are out or the kernel is full.
pub(super) fn flush<O: Os>(
    state: &mut State,
    kernel: &mut Kernel<O>,
    arena: &Arena,
    id: ConnId,
) -> io::Result<()> {
    send_held_reply(state, kernel, arena, id)?;
    let Some(conn) = state.conns.live_mut(id) else {
        return Ok(());
    };
    // Output held for a connect (or handshake) in progress still counts
    // for backpressure.
    if let (false, Some(handles)) = (conn.is_pending(), kernel.handles_mut(id)) {
        // Records TLS holds from before go first.
        handles.flush_tls()?;
        let pending = conn.output();
        let sent = send(&mut state.stats, state.config.trace, id, handles, pending)?;
        conn.wrote(sent, state.stamp);
        conn.consume_output(sent);
    }
    state.after_write(id);
    Ok(())
}

/// Sends the replies held back during this batch, oldest first.
pub(super) fn send_held_replies<O: Os>(
    state: &mut State,
    kernel: &mut Kernel<O>,
    arena: &mut Arena,
) {
    for i in 0..state.replies.held.len() {
        let id = state.replies.held[i].id;
        if let Err(e) = send_held_reply(state, kernel, arena, id) {
            state.abort(id, CloseReason::failed(e.kind()));
        }
    }
    state.replies.clear();
    arena.used = 0;
}

/// Writes as much of `data` as the kernel takes; returns how much that was.
fn send<O: Os>(
    stats: &mut Stats,
    trace: bool,
    id: ConnId,
    handles: &mut Handles<O>,
    data: &[u8],
) -> io::Result<usize> {
    let mut sent = 0;
    while sent < data.len() {
        stats.writes += 1;
        match handles.write(&data[sent..]) {
            Ok(n) => {
                let left = data.len() - sent;
                let partial = if n < left { " (partial)" } else { "" };
                trace_io!(trace, "{id} write {n} of {left}{partial}");
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
