//! Replies on their way out: where the service's writes land during a
//! callback, and the replies held back until a batch of events is handled.
//!
//! A reply to the connection being served is not sent when its callback
//! returns. It is held — as a range of the read arena when it is a piece of
//! the input (an echo, never copied), else as a range of the shared `out`
//! buffer — and the held replies of a group of events go out back to back
//! after that group's reads: bunched sends cost the kernel less than sends
//! spread between reads.

use std::ops::Range;

use super::conn::Connection;
use super::token::{ConnId, Table};

/// A reply held back until the current batch of events is handled.
pub(crate) struct Held {
    pub(crate) id: ConnId,
    bytes: HeldBytes,
}

/// Where a held reply lies.
enum HeldBytes {
    Arena(Range<usize>),
    Out(Range<usize>),
}

impl Held {
    pub(crate) fn len(&self) -> usize {
        match &self.bytes {
            HeldBytes::Arena(r) | HeldBytes::Out(r) => r.len(),
        }
    }

    pub(crate) fn slice<'a>(&self, arena: &'a [u8], out: &'a [u8]) -> &'a [u8] {
        match &self.bytes {
            HeldBytes::Arena(r) => &arena[r.clone()],
            HeldBytes::Out(r) => &out[r.clone()],
        }
    }
}

#[derive(Default)]
pub(crate) struct Replies {
    /// Output of the connections served in this batch while they have no
    /// backlog: most replies go from here to the kernel and never touch a
    /// per-connection buffer. Cleared when the batch's replies are sent.
    pub(crate) out: Vec<u8>,
    /// The connection being served, and where its bytes in `out` begin.
    pub(crate) serving: Option<ConnId>,
    mark: usize,
    /// A reply that is a piece of the input being delivered (an echo), as a
    /// range of the read arena: it is sent from there, never copied.
    pub(crate) echo: Option<Range<usize>>,
    /// A write to another connection (a relay's peer) that is a piece of
    /// the input being delivered, as a range of the read arena: sent from
    /// there as soon as the callback returns, never copied. Only while that
    /// connection has nothing else queued, so order holds.
    pub(crate) forward: Option<(ConnId, Range<usize>)>,
    /// Replies held until the batch ends, oldest first.
    pub(crate) held: Vec<Held>,
}

impl Replies {
    /// A callback serving `id` begins: its writes to `id` go to `out`.
    pub(crate) fn begin_serving(&mut self, id: ConnId) {
        self.serving = Some(id);
        self.mark = self.out.len();
    }

    /// Keeps `range` of the read arena, bytes of the input being delivered,
    /// as what goes next to `to`, rather than copying it; false if it must
    /// be copied. The two named cases of the one output queue:
    ///
    /// - an **echo**, to the connection being served: held with the batch's
    ///   other replies, if nothing was written to it before in this callback;
    /// - a **forward**, to another connection (a relay's peer): sent as soon
    ///   as the callback returns, one per callback.
    ///
    /// Either only while `to` has nothing else queued, so order holds.
    pub(crate) fn keep_input(
        &mut self,
        to: ConnId,
        range: Range<usize>,
        conns: &Table<Connection>,
    ) -> bool {
        let Some(conn) = conns.live(to) else {
            return false;
        };
        let idle = conn.takes_output() && conn.output().is_empty();
        if self.serving == Some(to) {
            if self.echo.is_some() || self.wrote_out() || !idle {
                return false;
            }
            self.echo = Some(range);
        } else {
            let queued = conn.is_pending() || conn.held_reply.is_some() || conn.is_spliced();
            if self.forward.is_some() || !idle || queued {
                return false;
            }
            self.forward = Some((to, range));
        }
        true
    }

    /// Whether the callback being served has written to `out`.
    pub(crate) fn wrote_out(&self) -> bool {
        self.out.len() > self.mark
    }

    /// The callback serving `id` returned: what it wrote to `id`.
    pub(crate) fn end_serving(&mut self, id: ConnId) -> Held {
        self.serving = None;
        let bytes = match self.echo.take() {
            Some(range) => HeldBytes::Arena(range),
            None => HeldBytes::Out(self.mark..self.out.len()),
        };
        Held { id, bytes }
    }

    /// Every held reply is out: the buffers start over.
    pub(crate) fn clear(&mut self) {
        self.held.clear();
        self.out.clear();
    }
}
