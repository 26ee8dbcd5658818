//! Echo: what a peer sends comes back to it, in order.
//!
//! [`Echo`] returns raw bytes: the whole service is `on_data` — queue the
//! input as output and say it was all consumed. The reactor does the rest: it
//! sends the reply straight from where it was read (together with the other
//! replies of the same group of events), stops reading a peer that does
//! not read its replies (backpressure), and on the peer's FIN flushes what is
//! owed, then closes.
//!
//! [`FramedEcho`] decodes frames and encodes each one back with the same
//! codec; a peer that breaks the framing loses its connection and nothing else.

use super::frames;
use crate::codec::{Codec, Encoder};
use crate::reactor::{Addr, ConnId, Context, Service};

/// Raw byte echo.
#[derive(Debug, Default)]
pub struct Echo;

impl Service for Echo {
    type Conn = ();

    fn on_connect(&mut self, _ctx: &mut Context<'_>, _id: ConnId, _peer: &Addr) {}

    fn on_data(
        &mut self,
        ctx: &mut Context<'_>,
        _id: ConnId,
        _conn: &mut (),
        input: &[u8],
    ) -> usize {
        ctx.echo(0..input.len());
        input.len()
    }
}

/// Frame-by-frame echo.
pub struct FramedEcho {
    codec: Codec,
}

impl FramedEcho {
    /// Each connection gets its own copy of `codec` (decoders keep scan state).
    pub fn new(codec: Codec) -> Self {
        FramedEcho { codec }
    }
}

/// A [`FramedEcho`] connection's state: its own decoder, and the peer's
/// address for the message that tells why a connection was dropped.
pub struct FramedConn {
    codec: Codec,
    peer: Addr,
}

impl Service for FramedEcho {
    type Conn = FramedConn;

    fn on_connect(&mut self, _ctx: &mut Context<'_>, _id: ConnId, peer: &Addr) -> FramedConn {
        FramedConn {
            codec: self.codec.clone(),
            peer: peer.clone(),
        }
    }

    fn on_data(
        &mut self,
        ctx: &mut Context<'_>,
        id: ConnId,
        conn: &mut FramedConn,
        input: &[u8],
    ) -> usize {
        let done = frames::decode_all(&mut conn.codec, input, |codec, payload| {
            ctx.write_with(id, |out| codec.encode(payload, out))
                .unwrap_or(Ok(()))
        });
        ctx.count_frames(done.frames, done.frames);
        done.consumed(ctx, id, input)
    }

    fn on_read_closed(
        &mut self,
        ctx: &mut Context<'_>,
        id: ConnId,
        conn: &mut FramedConn,
        unconsumed: &[u8],
    ) {
        frames::finish(ctx, id, &mut conn.codec, &conn.peer, unconsumed);
    }
}
