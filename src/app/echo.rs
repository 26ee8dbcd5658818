//! Echo: what a peer sends comes back to it, in order.
//!
//! [`Echo`] returns raw bytes: the whole service is `on_data` — queue the
//! input as output and say it was all consumed. The reactor does the rest: it
//! sends the reply when the callback returns, stops reading a peer that does
//! not read its replies (backpressure), and on the peer's FIN flushes what is
//! owed, then closes.
//!
//! [`FramedEcho`] decodes frames and encodes each one back with the same
//! codec; a peer that breaks the framing loses its connection and nothing else.

use std::net::SocketAddr;

use log::{debug, warn};

use crate::codec::{Codec, Decoder, Encoder};
use crate::reactor::{CloseReason, ConnId, Context, Service};

/// Raw byte echo.
#[derive(Debug, Default)]
pub struct Echo;

impl Service for Echo {
    type Conn = ();

    fn on_connect(&mut self, _ctx: &mut Context<'_>, _id: ConnId, _peer: SocketAddr) {}

    fn on_data(
        &mut self,
        ctx: &mut Context<'_>,
        id: ConnId,
        _conn: &mut (),
        input: &[u8],
    ) -> usize {
        ctx.write(id, input);
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

pub struct FramedConn {
    codec: Codec,
    peer: SocketAddr,
}

impl Service for FramedEcho {
    type Conn = FramedConn;

    fn on_connect(&mut self, _ctx: &mut Context<'_>, _id: ConnId, peer: SocketAddr) -> FramedConn {
        FramedConn {
            codec: self.codec.clone(),
            peer,
        }
    }

    fn on_data(
        &mut self,
        ctx: &mut Context<'_>,
        id: ConnId,
        conn: &mut FramedConn,
        input: &[u8],
    ) -> usize {
        let mut used = 0;
        let mut frames = 0;
        let result = loop {
            let rest = &input[used..];
            match conn.codec.decode(rest) {
                Ok(Some(frame)) => {
                    let payload = &rest[frame.payload];
                    let codec = &conn.codec;
                    if let Some(Err(e)) = ctx.write_with(id, |out| codec.encode(payload, out)) {
                        break Err(e);
                    }
                    used += frame.len;
                    frames += 1;
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        ctx.count_frames(frames, frames);
        if let Err(e) = result {
            warn!("{id} from {}: {e}; closing", conn.peer);
            // Nothing more goes to this peer, not even replies still queued.
            ctx.abort(id, CloseReason::Protocol);
            return input.len();
        }
        used
    }

    fn on_read_closed(
        &mut self,
        ctx: &mut Context<'_>,
        id: ConnId,
        conn: &mut FramedConn,
        unconsumed: &[u8],
    ) {
        if let Err(e) = conn.codec.decode_eof(unconsumed) {
            debug!("{id} from {}: closed mid-frame: {e}", conn.peer);
            ctx.count_truncated_frame();
        }
        ctx.close(id);
    }
}
