//! Zero-copy relaying (Linux): a spliced connection's input goes socket →
//! pipe → peer socket by splice(2), never through user space, and the
//! service no longer sees it.
//!
//! The pipe is filled only when empty, so an EAGAIN from the fill means the
//! socket, not the pipe, has nothing more. A pipe that cannot drain — the
//! peer's socket is full, or the peer still has older bytes queued — stops
//! reading its source; the source is woken when the peer's output drains.

use std::io;

use super::Reactor;
use super::close::CloseReason;
use super::conn::{Phase, Reading};
use super::service::Service;
use super::state::State;
use super::token::ConnId;
use super::trace::trace_io;

impl<S: Service> Reactor<S> {
    /// The spliced read path, within the same per-turn budget as any read.
    pub(super) fn splice_read(&mut self, id: ConnId) {
        let mut budget = self.state.config.read_budget;
        let chunk = self.state.config.read_chunk;
        loop {
            let Some(conn) = self.state.conns.live_mut(id) else {
                return;
            };
            let Some(pipe_empty) = conn.splice.as_ref().map(|s| s.pipe.is_empty()) else {
                return;
            };
            if !pipe_empty {
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
                Reading::Draining { left } => left.min(chunk),
                _ => chunk,
            };
            let Some(splice) = conn.splice.as_mut() else {
                return;
            };
            self.state.stats.reads += 1;
            let n = match splice.pipe.fill_from(&conn.socket, max) {
                Ok(0) => {
                    trace_io!(self.state.config.trace, "{id} splice EOF");
                    conn.reading = Reading::Ended;
                    return self.input_ended(id);
                }
                Ok(n) => n,
                Err(e) => return self.read_failed(id, "splice", e),
            };
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

    /// Moves `src`'s pipe into its peer; a failed write closes the peer.
    pub(super) fn pump(&mut self, src: ConnId) {
        if let Err((dst, e)) = self.state.pump(src) {
            self.close(dst, CloseReason::Error(e.kind()));
        }
        self.apply_deferred();
    }
}

impl State {
    /// Moves `src`'s pipe into its peer's socket, once the peer's own output
    /// buffer has gone out (it holds older bytes).
    fn pump(&mut self, src: ConnId) -> Result<(), (ConnId, io::Error)> {
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
        let blocked = !matches!(to.phase, Phase::Open | Phase::Closing) || !to.output.is_empty();
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
            self.defer(dst);
        } else {
            from.flags.backpressured = true;
        }
        Ok(())
    }
}
