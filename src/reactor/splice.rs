//! Zero-copy relaying: a spliced connection's input goes socket → pipe →
//! peer socket by splice(2), never through user space, and the service no
//! longer sees it.
//!
//! The pipe is filled only when empty, so an EAGAIN from the fill means the
//! socket, not the pipe, has nothing more. A pipe that cannot drain — the
//! peer's socket is full, or the peer still has older bytes queued — stops
//! reading its source; the source is woken when the peer's output drains.

use std::io;

use log::warn;

use super::Reactor;
use super::close::CloseReason;
use super::conn::{Phase, Reading};
use super::kernel::Stage;
use super::service::Service;
use super::token::ConnId;
use super::trace::trace_io;
use crate::sys::os::{Os, Splice};

impl<S: Service, O: Os> Reactor<S, O> {
    /// Makes the pipes of the pairs callbacks asked to splice. A pair whose
    /// pipes cannot be made goes on copying.
    pub(super) fn start_requested_splices(&mut self) {
        for (a, b) in std::mem::take(&mut self.state.splices) {
            let pipes = O::pipe().and_then(|pa| Ok((pa, O::pipe()?)));
            let (pa, pb) = match pipes {
                Ok(pipes) => pipes,
                Err(e) => {
                    warn!("{a} and {b}: no pipes for splice ({e}); copying instead");
                    continue;
                }
            };
            let live =
                |id| self.state.conns.live(id).is_some() && self.kernel.handles(id).is_some();
            if !(live(a) && live(b)) {
                continue;
            }
            // Ciphertext cannot be relayed as it is: TLS pairs copy.
            let tls = |id| self.kernel.handles(id).is_some_and(|h| h.tls().is_some());
            if tls(a) || tls(b) {
                warn!("{a} and {b}: TLS on a side; copying instead of splicing");
                continue;
            }
            if let Some(h) = self.kernel.handles_mut(a) {
                h.stage = Some(Box::new(Stage::Pipe(pa)));
            }
            if let Some(h) = self.kernel.handles_mut(b) {
                h.stage = Some(Box::new(Stage::Pipe(pb)));
            }
            for (id, peer) in [(a, b), (b, a)] {
                if let Some(conn) = self.state.conns.live_mut(id) {
                    conn.set_spliced_to(peer);
                }
                // Data may already wait in the socket, its edge spent.
                self.state.schedule_read(id);
            }
        }
    }

    /// The spliced read path, within the same per-turn budget as any read.
    pub(super) fn splice_read(&mut self, id: ConnId) {
        let mut budget = self.state.config.read_budget;
        let chunk = self.state.config.read_chunk;
        loop {
            let Some(conn) = self.state.conns.live_mut(id) else {
                return;
            };
            if conn.piped() > 0 {
                self.pump(id);
                if self
                    .state
                    .conns
                    .live(id)
                    .is_none_or(|c| c.flags.backpressured)
                {
                    return;
                }
                continue;
            }
            if !conn.wants_read() {
                return;
            }
            // While shutting down, take no more than what had arrived.
            let max = match conn.reading {
                Reading::Draining { left } => (left as usize).min(chunk),
                _ => chunk,
            };
            let Some(handles) = self.kernel.handles_mut(id) else {
                return;
            };
            let Some(Stage::Pipe(pipe)) = handles.stage.as_deref_mut() else {
                return;
            };
            self.state.stats.reads += 1;
            let n = match pipe.fill_from(&handles.socket, max) {
                Ok(0) => {
                    trace_io!(self.state.config.trace, "{id} splice EOF");
                    conn.reading = Reading::Ended;
                    return self.input_ended(id);
                }
                Ok(n) => n,
                Err(e) => return self.read_failed(id, "splice", e),
            };
            conn.set_piped(pipe.len());
            trace_io!(self.state.config.trace, "{id} splice {n} into pipe");
            if self.received(id, n) {
                self.pump(id);
                return self.end_input(id);
            }
            budget = budget.saturating_sub(n);
            if budget == 0 {
                self.pump(id);
                return self.state.schedule_read(id);
            }
        }
    }

    /// Moves `src`'s pipe into its peer's socket, once the peer's own output
    /// buffer has gone out (it holds older bytes); a failed write closes the
    /// peer.
    pub(super) fn pump(&mut self, src: ConnId) {
        if let Err((dst, e)) = self.drain_pipe(src) {
            self.close(dst, CloseReason::Error(e.kind()));
        }
        self.apply_deferred();
    }

    fn drain_pipe(&mut self, src: ConnId) -> Result<(), (ConnId, io::Error)> {
        let state = &mut self.state;
        let Some(dst) = state.conns.live(src).and_then(|c| c.spliced_to()) else {
            return Ok(());
        };
        let Some((from, to)) = state.conns.get2_mut(src, dst) else {
            return Ok(());
        };
        let Some((pipe, socket)) = self.kernel.pipe_and_socket(src, dst) else {
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
        from.set_piped(pipe.len());
        if pipe.is_empty() {
            if from.flags.backpressured {
                from.flags.backpressured = false;
                state.schedule_read(src);
            }
            // A FIN may have been waiting for these bytes.
            state.defer(dst);
        } else {
            from.flags.backpressured = true;
        }
        Ok(())
    }
}
