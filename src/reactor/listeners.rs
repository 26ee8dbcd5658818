//! The listening sockets: a part of its own, owning them, the spare
//! descriptor and the back-off. [`Listeners::accept`] hands out one
//! waiting connection at a time; what becomes of it is the caller's.
//!
//! Out of file descriptors, a waiting connection is accepted with the
//! spare descriptor kept for the purpose and closed at once, so the
//! listener's queue drains instead of staying readable and spinning the
//! loop; if even that fails, accepting pauses for a while, backing off.

use std::io;
use std::time::{Duration, Instant};

use log::warn;

use super::close::CloseReason;
use super::stats::Stats;
use super::timer::{TimerKind, Timers};
use super::tls::ServerTls;
use super::token::Token;
use crate::sys::Addr;
use crate::sys::os::{AcceptError, Interest, Listen, Os, Register, Spare};

/// After running out of file descriptors, accepting pauses this long at
/// first, doubling up to the maximum while it keeps failing.
const ACCEPT_BACKOFF_MS: (u64, u64) = (10, 1000);

/// Who answers the connections a listener accepts.
#[derive(Clone)]
pub enum Serve {
    /// The service, in plaintext.
    Service,
    /// The service, over TLS: it hears of a connection (`on_connect`) once
    /// its handshake is done, and sees plaintext.
    Tls(ServerTls),
    /// The reactor's own metrics responder: the counters in the Prometheus
    /// text format, one `GET /metrics` answered and the connection closed,
    /// never seen by the service. These connections have a budget of their
    /// own, apart from [`Config::max_conns`](super::Config::max_conns): a
    /// few at once, a few seconds each.
    Metrics,
}

struct Slot<O: Os> {
    listener: O::Listener,
    serve: Serve,
    /// On the list of work to do before the next wait (its budget ran out).
    scheduled: bool,
    /// Out of descriptors: not accepting until a timer says to try again.
    paused: bool,
    backoff_ms: u64,
}

/// A reactor's listeners, by the index their token carries.
pub(crate) struct Listeners<O: Os> {
    slots: Vec<Slot<O>>,
    spare_fd: O::SpareFd,
}

/// What one try at accepting from a listener gave.
pub(crate) enum Accepted<O: Os> {
    /// A new connection, and who answers it.
    Conn(O::Socket, Addr, Serve),
    /// Nobody came this time (a peer gave up while queued, or one was shed
    /// for want of descriptors): try again.
    Nobody,
    /// Nobody is waiting, or accepting is paused: stop.
    Done,
}

impl<O: Os> Listeners<O> {
    pub(crate) fn new() -> Listeners<O> {
        Listeners {
            slots: Vec::new(),
            spare_fd: O::SpareFd::new(),
        }
    }

    /// Registers a bound listener with `poller` and says where its
    /// connections go; returns its address.
    pub(crate) fn add(
        &mut self,
        poller: &O::Poller,
        listener: O::Listener,
        serve: Serve,
    ) -> io::Result<Addr> {
        let token = Token::Listener(self.slots.len());
        poller.register(&listener, token.to_u64(), Interest::Readable)?;
        let local = listener.local_addr().clone();
        self.slots.push(Slot {
            listener,
            serve,
            scheduled: false,
            paused: false,
            backoff_ms: ACCEPT_BACKOFF_MS.0,
        });
        Ok(local)
    }

    /// One try at accepting from listener `i`. A failure to accept pauses
    /// it, with a timer in `timers` to resume.
    pub(crate) fn accept(
        &mut self,
        i: usize,
        stats: &mut Stats,
        timers: &mut Timers,
        now: Instant,
    ) -> Accepted<O> {
        let Some(slot) = self.slots.get_mut(i).filter(|slot| !slot.paused) else {
            return Accepted::Done;
        };
        let error = match slot.listener.accept() {
            Ok((socket, peer)) => {
                slot.backoff_ms = ACCEPT_BACKOFF_MS.0;
                return Accepted::Conn(socket, peer, slot.serve.clone());
            }
            Err(AcceptError::WouldBlock) => return Accepted::Done,
            // The peer gave up while queued: only that connection is lost.
            Err(AcceptError::PeerAborted) => return Accepted::Nobody,
            // The kernel looks for a free descriptor before it looks at
            // the queue, so this comes even when nobody is waiting.
            Err(AcceptError::OutOfDescriptors(e)) => match self.shed(i, stats) {
                Ok(()) => return Accepted::Nobody,
                Err(AcceptError::WouldBlock) => return Accepted::Done,
                Err(_) => e,
            },
            Err(AcceptError::Other(e)) => e,
        };
        self.pause(i, &error, timers, now);
        Accepted::Done
    }

    /// Listener `i` spent its budget for this turn: true if it is to be put
    /// on the list of work before the next wait (it is not on it already).
    pub(crate) fn reschedule(&mut self, i: usize) -> bool {
        self.slots
            .get_mut(i)
            .is_some_and(|slot| !std::mem::replace(&mut slot.scheduled, true))
    }

    /// Listener `i`'s turn on that list came: true if it is still there to serve.
    pub(crate) fn take_turn(&mut self, i: usize) -> bool {
        let Some(slot) = self.slots.get_mut(i) else {
            return false;
        };
        slot.scheduled = false;
        true
    }

    /// Listener `i`'s back-off is over: true if it is still there to serve.
    pub(crate) fn resume(&mut self, i: usize) -> bool {
        let Some(slot) = self.slots.get_mut(i) else {
            return false;
        };
        slot.paused = false;
        true
    }

    /// Out of descriptors: frees the spare to accept one waiting connection
    /// and close it at once. `WouldBlock` if nobody was waiting.
    fn shed(&mut self, i: usize, stats: &mut Stats) -> Result<(), AcceptError> {
        if !self.spare_fd.release() {
            return Err(AcceptError::Other(io::Error::other("no spare descriptor")));
        }
        // The accepted socket closes at the end of this statement, before the
        // spare is taken back.
        let shed = self.slots[i].listener.accept().map(|(_, peer)| peer);
        self.spare_fd.restore();
        if let Ok(peer) = &shed {
            stats.accepted += 1;
            stats.count_close(CloseReason::Limit);
            let n = stats.closed_by(CloseReason::Limit);
            if n.is_power_of_two() {
                let s = if n == 1 { "" } else { "s" };
                warn!(
                    "out of file descriptors: {n} new connection{s} closed at once so far \
                     (last from {peer})"
                );
            }
        }
        shed.map(drop)
    }

    fn pause(&mut self, i: usize, err: &io::Error, timers: &mut Timers, now: Instant) {
        let slot = &mut self.slots[i];
        warn!(
            "accept failed: {err}; pausing accepts for {} ms",
            slot.backoff_ms
        );
        slot.paused = true;
        let at = now + Duration::from_millis(slot.backoff_ms);
        slot.backoff_ms = (slot.backoff_ms * 2).min(ACCEPT_BACKOFF_MS.1);
        timers.add(at, TimerKind::ResumeAccept(i));
    }

    /// Descriptors were freed: takes the spare back if an earlier attempt
    /// found none.
    pub(crate) fn restore_spare(&mut self) {
        self.spare_fd.restore();
    }

    /// Stops accepting for good: every listener is deregistered and closed.
    pub(crate) fn close_all(&mut self, poller: &O::Poller) {
        for slot in self.slots.drain(..) {
            if let Err(e) = poller.deregister(&slot.listener) {
                warn!("deregister listener: {e}");
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn spare_fd(&mut self) -> &mut O::SpareFd {
        &mut self.spare_fd
    }
}
