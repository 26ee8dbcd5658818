//! The reactor's side of a metrics connection (a scrape): a listener
//! opened with [`Serve::Metrics`](super::Serve::Metrics) has its connections answered
//! here, never by the service. Their bytes go to
//! [`crate::metrics::responder`] until it has an answer, which is queued
//! like any reply; the connection closes once it is flushed, so a scrape
//! never blocks the loop and costs no more than a small client.
//!
//! Metrics connections have a budget of their own: at most
//! [`MAX_METRICS_CONNS`] at once, not counted against `Config::max_conns`
//! (clients at the limit cannot lock the scrapes out, nor scrapes the
//! clients), and each has [`METRICS_DEADLINE`] from its accept to send its
//! head and take its answer.

use std::ops::Range;
use std::time::Duration;

use super::buffer::Arena;
use super::conn::Reading;
use super::kernel::Kernel;
use super::service::Service;
use super::state::State;
use super::timer::ConnTimer;
use super::token::ConnId;
use crate::metrics::responder;
use crate::sys::os::{Os, Stream};

/// Metrics connections open at once; more are closed as they are accepted.
/// A Prometheus server scrapes one at a time.
pub(crate) const MAX_METRICS_CONNS: usize = 16;

/// How long a metrics connection may live: its whole request head must be
/// in by then however slowly it trickles (each byte renews the idle
/// timeout, so that is no bound), and its answer taken.
pub(crate) const METRICS_DEADLINE: Duration = Duration::from_secs(5);

/// Bytes for a metrics connection, just read into `range` of the arena:
/// kept until the request head is whole, then answered (the reactor's
/// counters, then the service's own families) and closed once flushed.
pub(super) fn answer<S: Service, O: Os>(
    state: &mut State,
    kernel: &Kernel<O>,
    arena: &Arena,
    service: &S,
    id: ConnId,
    range: Range<usize>,
) {
    let Some(conn) = state.conns.live_mut(id) else {
        return;
    };
    conn.extend_input(&arena.bytes[range]);
    let (stats, now) = (&state.stats, state.now);
    let Some(answer) = responder::answer(conn.input(), |page| {
        stats.write_metrics(page);
        service.metrics(now, page);
    }) else {
        return;
    };
    conn.release_buffers();
    let socket = kernel.socket(id);
    if answer.more || socket.is_some_and(|s| s.unread_len().is_ok_and(|n| n > 0)) {
        conn.reading = Reading::Discarding;
    }
    if let Some(out) = state.output_for(id, &arena.bytes) {
        out.extend_from_slice(&answer.response);
    }
    state.close_when_flushed(id);
}

impl State {
    /// `id` was accepted on the metrics listener: it counts against the
    /// metrics connections' own budget, and has until the deadline.
    pub(super) fn admit_metrics(&mut self, id: ConnId) {
        let Some(conn) = self.conns.live_mut(id) else {
            return;
        };
        conn.flags.metrics = true;
        self.admission.metrics_open += 1;
        let due = self.stamp.after(METRICS_DEADLINE);
        self.add_conn_timer(due, id, ConnTimer::Request);
    }
}
