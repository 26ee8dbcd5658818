//! Relay: a TCP proxy. Each accepted client gets its own connection to an
//! upstream (round-robin over the list); bytes flow both ways.
//!
//! The reactor carries the hard parts once the two sides are linked:
//! a side stops being read while the other side's output is backed up, bytes
//! from a client whose upstream is still connecting wait (bounded by the same
//! rule), and a socket closes once both its directions are done. What is left
//! here is the pairing, FIN propagation and failure handling.

use std::collections::HashMap;
use std::io;

use log::{debug, warn};

use crate::reactor::{Addr, CloseReason, ConnId, Context, Service};

pub struct Relay {
    upstreams: Vec<Addr>,
    /// Move bytes with splice(2) once both sides are up, where the OS can.
    splice: bool,
    next: usize,
    /// Upstream connects in progress: upstream id → the client it serves.
    connecting: HashMap<ConnId, Pending>,
}

impl Relay {
    /// `upstreams` must not be empty.
    pub fn new(upstreams: Vec<Addr>) -> Relay {
        assert!(!upstreams.is_empty(), "a relay needs an upstream");
        Relay {
            upstreams,
            splice: false,
            next: 0,
            connecting: HashMap::new(),
        }
    }
}

impl Relay {
    /// Upstream connects in progress.
    pub fn pending_connects(&self) -> usize {
        self.connecting.len()
    }

    /// Relays with splice(2) instead of copying through user space. Where
    /// the OS has none ([`sys::SPLICE`](crate::sys::SPLICE) is false), the
    /// first pair says so in a warning and every pair copies.
    pub fn with_splice(mut self) -> Relay {
        self.splice = true;
        self
    }
}

struct Pending {
    client: ConnId,
    client_addr: Addr,
    upstream: Addr,
}

/// One side of a pair; `peer` is the other side.
pub struct Side {
    peer: ConnId,
}

impl Service for Relay {
    type Conn = Option<Side>;

    fn on_connect(&mut self, ctx: &mut Context<'_>, id: ConnId, addr: &Addr) -> Option<Side> {
        if let Some(Pending {
            client,
            client_addr,
            ..
        }) = self.connecting.remove(&id)
        {
            debug!("{client} from {client_addr}: upstream {id} at {addr} is up");
            // The upstream is up: what the client sent meanwhile goes out now,
            // and later bytes by splice if asked (falling back to copying).
            if self.splice
                && let Err(e) = ctx.splice(client, id)
            {
                warn!("relay {client_addr} → {addr}: no splice ({e}), copying instead");
                // It will not come back for the next pair.
                self.splice = e.kind() != io::ErrorKind::Unsupported;
            }
            return Some(Side { peer: client });
        }
        let upstream = self.upstreams[self.next % self.upstreams.len()].clone();
        self.next = self.next.wrapping_add(1);
        let up = ctx.connect(&upstream, None);
        debug!("{id} from {addr} → {up} to {upstream}");
        ctx.link(id, up);
        let pending = Pending {
            client: id,
            client_addr: addr.clone(),
            upstream,
        };
        self.connecting.insert(up, pending);
        Some(Side { peer: up })
    }

    fn on_connect_failed(&mut self, ctx: &mut Context<'_>, id: ConnId, error: std::io::Error) {
        if let Some(p) = self.connecting.remove(&id) {
            warn!(
                "relay {} → {}: {error}; closing the client",
                p.client_addr, p.upstream
            );
            ctx.abort(p.client, CloseReason::Error(error.kind()));
        }
    }

    fn on_data(
        &mut self,
        ctx: &mut Context<'_>,
        id: ConnId,
        side: &mut Option<Side>,
        input: &[u8],
    ) -> usize {
        if let Some(side) = side
            && !ctx.write(side.peer, input)
        {
            ctx.abort(id, CloseReason::Local);
        }
        input.len()
    }

    fn on_read_closed(
        &mut self,
        ctx: &mut Context<'_>,
        id: ConnId,
        side: &mut Option<Side>,
        _: &[u8],
    ) {
        match side {
            // Pass the FIN on once the bytes before it are through.
            Some(side) => ctx.shutdown_write(side.peer),
            None => ctx.close(id),
        }
    }

    fn on_close(
        &mut self,
        ctx: &mut Context<'_>,
        id: ConnId,
        side: Option<Side>,
        reason: CloseReason,
    ) {
        let Some(side) = side else { return };
        // A client gone before its upstream is up: that connect is abandoned.
        self.connecting.remove(&side.peer);
        match reason {
            // Both directions finished: the other side winds down by itself.
            CloseReason::Peer => ctx.close(side.peer),
            // A stream cut short on one side must not look complete on the other.
            CloseReason::Error(_) => {
                warn!(
                    "relay: {id} ({}) {reason}; resetting {} ({})",
                    addr_or_unknown(ctx.peer_addr(id)),
                    side.peer,
                    addr_or_unknown(ctx.peer_addr(side.peer)),
                );
                ctx.reset(side.peer, reason);
            }
            _ => ctx.abort(side.peer, reason),
        }
    }
}

fn addr_or_unknown(addr: Option<&Addr>) -> String {
    addr.map_or_else(|| "gone".to_string(), |a| a.to_string())
}
