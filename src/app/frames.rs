//! The frame loop the framed services share: decode every complete frame in
//! a connection's input, and report a stream that ended mid-frame.

use log::{debug, warn};

use crate::codec::{Codec, Decoder, FrameError};
use crate::reactor::{Addr, CloseReason, ConnId, Context};

/// What one pass over a connection's input found.
pub(crate) struct Decoded {
    /// Bytes of the input that whole frames took up.
    pub(crate) used: usize,
    pub(crate) frames: u64,
    /// The error that stopped the pass, if any; frames before it are whole.
    pub(crate) error: Option<FrameError>,
}

impl Decoded {
    /// How much of `input` the service consumed. On a frame error the sender
    /// is logged and cut off — nothing more goes to it, not even replies
    /// still queued — and the rest of its input is dropped with it.
    pub(crate) fn consumed(self, ctx: &mut Context<'_>, id: ConnId, input: &[u8]) -> usize {
        match self.error {
            None => self.used,
            Some(e) => {
                warn!("{id} {}: {e}; closing", ctx.peer_label(id));
                ctx.abort(id, CloseReason::Protocol);
                input.len()
            }
        }
    }
}

/// Calls `each` with the payload of every complete frame at the front of
/// `input`, until the input runs out or a frame (or `each`) fails.
pub(crate) fn decode_all(
    codec: &mut Codec,
    input: &[u8],
    mut each: impl FnMut(&Codec, &[u8]) -> Result<(), FrameError>,
) -> Decoded {
    let mut done = Decoded {
        used: 0,
        frames: 0,
        error: None,
    };
    loop {
        let rest = &input[done.used..];
        match codec.decode(rest) {
            Ok(Some(frame)) => {
                if let Err(e) = each(codec, &rest[frame.payload]) {
                    done.error = Some(e);
                    return done;
                }
                done.used += frame.len;
                done.frames += 1;
            }
            Ok(None) => return done,
            Err(e) => {
                done.error = Some(e);
                return done;
            }
        }
    }
}

/// The peer sent FIN: a partial frame left behind is logged and counted,
/// then the connection closes once its output is flushed.
pub(crate) fn finish(
    ctx: &mut Context<'_>,
    id: ConnId,
    codec: &mut Codec,
    peer: &Addr,
    unconsumed: &[u8],
) {
    if let Err(e) = codec.decode_eof(unconsumed) {
        debug!("{id} from {peer}: closed mid-frame: {e}");
        ctx.count_truncated_frame();
    }
    ctx.close(id);
}
