//! Echo: every byte a peer sends comes back to it, in order.
//!
//! The whole service is `on_data`: queue the input as output, and say it was
//! all consumed. The reactor does the rest — it sends the reply when the
//! callback returns, stops reading a peer that does not read its replies
//! (backpressure), and on the peer's FIN flushes what is owed, then closes.

use std::net::SocketAddr;

use crate::reactor::{ConnId, Context, Service};

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
