//! Zero-copy relaying: a spliced connection's input goes socket → pipe →
//! peer socket by splice(2), never through user space, and the service no
//! longer sees it.
//!
//! The pipe is refilled while the peer drains it, up to a read chunk held
//! in it: a fill that finds the pipe empty and says EAGAIN means the socket
//! has nothing more; one that finds bytes still in it may have met a full
//! pipe instead (its slots, not its bytes, ran out), so the source waits
//! for the drain and then tries again. A pipe that cannot drain — the
//! peer's socket is full, or the peer still has older bytes queued — stops
//! reading its source once it holds a read chunk; the source is woken when
//! the pipe drains.
//!
//! A pair asked to splice only bulk transfers (`Context::splice_bulk`)
//! copies until a read of one side fills a whole read chunk: then that
//! side gets its pipe and is spliced from then on. Pairs that only ever
//! exchange small messages hold no pipes.

use std::io;

use log::warn;

use super::close::CloseReason;
use super::conn::{Phase, Reading};
use super::kernel::{Kernel, Stage};
use super::state::State;
use super::token::ConnId;
use super::trace::trace_io;
use crate::sys::os::{Os, Splice};

/// How a spliced read ended.
pub(super) enum Read {
    /// The peer's FIN: the end of its input.
    Ended,
    /// The last bytes a shutdown lets through are in the pipe.
    Drained,
    /// For now: the socket is drained, the pipe is full, the budget is
    /// spent (it is scheduled again), or the connection failed.
    Paused,
}

/// Makes the pipes of the pairs callbacks asked to splice. A pair whose
/// pipes cannot be made goes on copying.
pub(super) fn start<O: Os>(state: &mut State, kernel: &mut Kernel<O>) {
    for (a, b) in std::mem::take(&mut state.splices) {
        if !(has_socket(state, kernel, a)
            && has_socket(state, kernel, b)
            && plain_pair(kernel, a, b))
        {
            continue;
        }
        let pipes = O::Pipe::new().and_then(|pa| Ok((pa, O::Pipe::new()?)));
        let (pa, pb) = match pipes {
            Ok(pipes) => pipes,
            Err(e) => {
                warn!("{a} and {b}: no pipes for splice ({e}); copying instead");
                continue;
            }
        };
        if let Some(h) = kernel.handles_mut(a) {
            h.stage = Some(Box::new(Stage::Pipe(pa)));
        }
        if let Some(h) = kernel.handles_mut(b) {
            h.stage = Some(Box::new(Stage::Pipe(pb)));
        }
        for (id, peer) in [(a, b), (b, a)] {
            if let Some(conn) = state.conns.live_mut(id) {
                conn.set_spliced_to(peer);
            }
            // Data may already wait in the socket, its edge spent.
            state.schedule_read(id);
        }
    }
}

/// A read of `id` just filled a whole chunk: if its pair splices bulk
/// transfers, its input goes to the peer (what it feeds) by splice from
/// now on, through a pipe made now. A side that cannot have one (TLS, or
/// no pipe to be had) goes on copying.
pub(super) fn if_bulk<O: Os>(state: &mut State, kernel: &mut Kernel<O>, id: ConnId) {
    let Some(conn) = state.conns.live(id) else {
        return;
    };
    let Some(peer) = conn.fed_by.filter(|_| conn.flags.splice_bulk) else {
        return;
    };
    // A peer not connected yet: asked again on a later full read.
    if !has_socket(state, kernel, peer) {
        return;
    }
    if let Some(conn) = state.conns.live_mut(id) {
        conn.flags.splice_bulk = false;
    }
    if !plain_pair(kernel, id, peer) {
        return;
    }
    let pipe = match O::Pipe::new() {
        Ok(pipe) => pipe,
        Err(e) => return warn!("{id}: no pipe for splice ({e}); copying instead"),
    };
    if let Some(h) = kernel.handles_mut(id) {
        h.stage = Some(Box::new(Stage::Pipe(pipe)));
    }
    if let Some(conn) = state.conns.live_mut(id) {
        conn.set_spliced_to(peer);
    }
    trace_io!(state.config.trace, "{id} bulk: splicing from now on");
}

fn has_socket<O: Os>(state: &State, kernel: &Kernel<O>, id: ConnId) -> bool {
    state.conns.live(id).is_some() && kernel.socket(id).is_some()
}

/// Whether neither side of a pair speaks TLS (warned if one does):
/// ciphertext is relayed by copy, through the sessions, never spliced
/// as it is.
fn plain_pair<O: Os>(kernel: &Kernel<O>, a: ConnId, b: ConnId) -> bool {
    let plain = !(kernel.has_tls(a) || kernel.has_tls(b));
    if !plain {
        warn!("{a} and {b}: TLS on a side; copying instead of splicing");
    }
    plain
}

/// The spliced read path, within the same per-turn budget as any read:
/// pass the pipe on and fill it again, until the socket is drained, the
/// pipe holds a chunk the peer does not take, or the budget is spent.
pub(super) fn read<O: Os>(state: &mut State, kernel: &mut Kernel<O>, id: ConnId) -> Read {
    let mut budget = state.config.read_budget;
    let chunk = state.config.read_chunk;
    loop {
        if state.conns.live(id).is_some_and(|c| c.piped() > 0) {
            pump(state, kernel, id);
        }
        let Some(conn) = state.conns.live_mut(id) else {
            return Read::Paused;
        };
        if !conn.wants_read() {
            return Read::Paused;
        }
        // While shutting down, take no more than what had arrived.
        let max = match conn.reading {
            Reading::Draining { left } => (left as usize).min(chunk),
            _ => chunk,
        };
        let Some(handles) = kernel.handles_mut(id) else {
            return Read::Paused;
        };
        let Some(Stage::Pipe(pipe)) = handles.stage.as_deref_mut() else {
            return Read::Paused;
        };
        let held = pipe.len();
        state.stats.reads += 1;
        let n = match pipe.fill_from(&handles.socket, max) {
            Ok(0) => {
                trace_io!(state.config.trace, "{id} splice EOF");
                conn.reading = Reading::Ended;
                pump(state, kernel, id);
                return Read::Ended;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && held > 0 => {
                // The pipe may be full: try again once it drains.
                trace_io!(state.config.trace, "{id} splice EAGAIN, pipe not empty");
                conn.flags.backpressured = true;
                return Read::Paused;
            }
            Err(e) => {
                state.read_failed(id, "splice", e);
                return Read::Paused;
            }
        };
        conn.set_piped(pipe.len());
        trace_io!(state.config.trace, "{id} splice {n} into pipe");
        if state.received(id, n) {
            pump(state, kernel, id);
            return Read::Drained;
        }
        budget = budget.saturating_sub(n);
        if budget == 0 {
            pump(state, kernel, id);
            state.schedule_read(id);
            return Read::Paused;
        }
    }
}

/// Moves `src`'s pipe into its peer's socket, once the peer's own output
/// buffer has gone out (it holds older bytes); a failed write closes the
/// peer.
pub(super) fn pump<O: Os>(state: &mut State, kernel: &mut Kernel<O>, src: ConnId) {
    if let Err((dst, e)) = drain_pipe(state, kernel, src) {
        state.abort(dst, CloseReason::failed(e.kind()));
    }
}

fn drain_pipe<O: Os>(
    state: &mut State,
    kernel: &mut Kernel<O>,
    src: ConnId,
) -> Result<(), (ConnId, io::Error)> {
    let Some(dst) = state.conns.live(src).and_then(|c| c.spliced_to()) else {
        return Ok(());
    };
    let Some((from, to)) = state.conns.get2_mut(src, dst) else {
        return Ok(());
    };
    let Some((pipe, socket)) = kernel.pipe_and_socket(src, dst) else {
        return Ok(());
    };
    // Older bytes queued for `dst` go first: until they have, the pipe
    // stays full and `src` waits, woken when that queue drains.
    let blocked = !matches!(to.phase, Phase::Open | Phase::Closing) || !to.output().is_empty();
    while !blocked && !pipe.is_empty() {
        match pipe.drain_into(socket) {
            Ok(n) => {
                trace_io!(state.config.trace, "{dst} splice {n} from {src}");
                state.stats.writes += 1;
                state.stats.bytes_out += n as u64;
                state.stats.bytes_spliced += n as u64;
                to.wrote(n, state.stamp);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                state.stats.eagain_writes += 1;
                break;
            }
            Err(e) => return Err((dst, e)),
        }
    }
    let moved = from.piped() > pipe.len();
    from.set_piped(pipe.len());
    // Its last bytes were all it waited for (`Connection::is_done`).
    let done = from.is_done() && from.phase == Phase::Open;
    if from.piped() >= state.config.read_chunk {
        // A chunk waits for the peer: that is enough in flight.
        from.flags.backpressured = true;
    } else if moved && from.flags.backpressured {
        from.flags.backpressured = false;
        state.schedule_read(src);
    }
    if pipe.is_empty() {
        // A FIN may have been waiting for these bytes.
        state.defer(dst);
    } else {
        // `dst` owes these bytes as it would its own output.
        state.arm_write_timer(dst);
    }
    if done {
        state.abort(src, CloseReason::Peer);
    }
    Ok(())
}
