//! The one place the service is called. Every callback goes through
//! [`Reactor::call`]: it lends the service a [`Context`] over the reactor's
//! books, calls the one method the [`Callback`] names with that
//! connection's state, and then carries out what the service asked for
//! (writes, closes, connects, timers) with [`Reactor::apply`]. The parts
//! of the reactor never call the service themselves: they say what
//! happened, and the coordinator calls here.

use std::io;
use std::ops::Range;

use super::Reactor;
use super::buffer::Arena;
use super::close::CloseReason;
use super::service::{Context, Service};
use super::state::State;
use super::token::ConnId;
use crate::sys::os::Os;

/// What the service is told.
pub(super) enum Callback {
    /// `on_connect`: the connection is up; the service makes its state.
    Connect(ConnId),
    /// `on_data`: bytes were just read into this range of the read arena.
    Data(ConnId, Range<usize>),
    /// `on_read_closed`: no more input will come.
    ReadClosed(ConnId),
    /// `on_timer`, with the service's tag.
    Timer(ConnId, u64),
    /// `on_alarm`, with the service's tag.
    Alarm(u64),
    /// `on_drained`: the backlog it watched is down to the low watermark.
    Drained(ConnId),
    /// `on_close`, or for a connect that never came up `on_connect_failed`
    /// (with what went wrong, if known).
    Closed(ConnId, CloseReason, Option<io::Error>),
    /// `on_wake`: another thread woke the reactor.
    Wake,
    /// `on_shutdown`: a graceful shutdown began.
    Shutdown,
}

impl<S: Service, O: Os> Reactor<S, O> {
    /// Runs one callback and carries out what it asked for. Inlined, with
    /// `on_data`'s path: every message comes through here; the other
    /// callbacks are out of line.
    #[inline]
    pub(super) fn call(&mut self, callback: Callback) {
        let (state, arena) = (&mut self.state, &mut self.arena);
        let (service, service_conns) = (&mut self.service, &mut self.service_conns);
        match callback {
            Callback::Data(id, range) => data(service, service_conns, state, arena, id, range),
            other => not_data(service, service_conns, state, arena, other),
        }
        self.apply();
    }
}

/// Every callback but `on_data`.
#[inline(never)]
fn not_data<S: Service>(
    service: &mut S,
    service_conns: &mut Vec<Option<S::Conn>>,
    state: &mut State,
    arena: &mut Arena,
    callback: Callback,
) {
    match callback {
        Callback::Connect(id) => connect(service, service_conns, state, arena, id),
        Callback::Data(id, range) => data(service, service_conns, state, arena, id, range),
        Callback::ReadClosed(id) => {
            if let (Some(service_conn), Some(conn)) =
                (slot(service_conns, id), state.conns.live_mut(id))
            {
                let input = conn.take_input();
                conn.tidy();
                state.replies.begin_serving(id);
                let ctx = &mut Context::new(state, &arena.bytes);
                service.on_read_closed(ctx, id, service_conn, input.as_slice());
            }
        }
        Callback::Timer(id, tag) => {
            if let (Some(service_conn), Some(_)) = (slot(service_conns, id), state.conns.live(id)) {
                let ctx = &mut Context::new(state, &arena.bytes);
                service.on_timer(ctx, id, service_conn, tag);
            }
        }
        Callback::Alarm(tag) => service.on_alarm(&mut Context::new(state, &arena.bytes), tag),
        Callback::Drained(id) => {
            if let (Some(service_conn), Some(_)) = (slot(service_conns, id), state.conns.live(id)) {
                let ctx = &mut Context::new(state, &arena.bytes);
                service.on_drained(ctx, id, service_conn);
            }
        }
        Callback::Closed(id, reason, error) => {
            closed(service, service_conns, state, arena, id, reason, error);
        }
        Callback::Wake => service.on_wake(&mut Context::new(state, &arena.bytes)),
        Callback::Shutdown => service.on_shutdown(&mut Context::new(state, &arena.bytes)),
    }
}

/// The service's state for `id`, if it has made one.
fn slot<C>(service_conns: &mut [Option<C>], id: ConnId) -> Option<&mut C> {
    service_conns.get_mut(id.index())?.as_mut()
}

fn connect<S: Service>(
    service: &mut S,
    service_conns: &mut Vec<Option<S::Conn>>,
    state: &mut State,
    arena: &Arena,
    id: ConnId,
) {
    // The metrics responder needs no state until the request is in.
    let metrics = state.conns.live(id).is_some_and(|c| c.flags.metrics);
    let Some(peer) = state.peer(id).filter(|_| !metrics).cloned() else {
        return;
    };
    state.replies.begin_serving(id);
    let ctx = &mut Context::new(state, &arena.bytes);
    let service_conn = service.on_connect(ctx, id, &peer);
    if service_conns.len() <= id.index() {
        service_conns.resize_with(id.index() + 1, || None);
    }
    service_conns[id.index()] = Some(service_conn);
    // What it wrote waited for this: it goes once the callback returns.
    state.defer(id);
}

/// Hands the bytes just read into `range` of the arena to the service, and
/// keeps what it leaves. Fresh input is handed over where it was read, so
/// that echoes and forwards of it need no copy; behind a partial message
/// left from before, it is appended to that and handed over from there.
#[inline(always)]
fn data<S: Service>(
    service: &mut S,
    service_conns: &mut [Option<S::Conn>],
    state: &mut State,
    arena: &mut Arena,
    id: ConnId,
    range: Range<usize>,
) {
    let (Some(service_conn), Some(conn)) = (slot(service_conns, id), state.conns.live_mut(id))
    else {
        return;
    };
    let left_before = conn.input().len();
    state.replies.begin_serving(id);
    let used = if left_before == 0 {
        // Held echoes may point into these bytes: the next read goes after them.
        arena.used = range.end;
        let input = &arena.bytes[range.clone()];
        let ctx = &mut Context::with_input(state, &arena.bytes, input, Some(range.start));
        let used = service.on_data(ctx, id, service_conn, input);
        if used >= input.len() {
            // All taken, as before: no partial message to keep or time.
            return;
        }
        if let Some(conn) = state.conns.live_mut(id) {
            conn.extend_input(&input[used..]);
        }
        used
    } else {
        conn.extend_input(&arena.bytes[range]);
        let mut input = conn.take_input();
        let ctx = &mut Context::with_input(state, &arena.bytes, input.as_slice(), None);
        let used = service.on_data(ctx, id, service_conn, input.as_slice());
        input.consume(used);
        if let Some(conn) = state.conns.live_mut(id) {
            conn.keep_input(input);
        }
        used
    };
    state.track_partial(id, left_before, used);
}

fn closed<S: Service>(
    service: &mut S,
    service_conns: &mut [Option<S::Conn>],
    state: &mut State,
    arena: &Arena,
    id: ConnId,
    reason: CloseReason,
    error: Option<io::Error>,
) {
    let outbound = state.conns.get(id).is_some_and(|c| c.flags.outbound);
    let ctx = &mut Context::new(state, &arena.bytes);
    if let Some(service_conn) = service_conns.get_mut(id.index()).and_then(Option::take) {
        service.on_close(ctx, id, service_conn, reason);
    } else if outbound {
        let error = error.unwrap_or_else(|| {
            let why = format!("connect abandoned: {reason}");
            io::Error::new(io::ErrorKind::ConnectionAborted, why)
        });
        service.on_connect_failed(ctx, id, error);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::reactor::{Addr, Config, ConnId, Context, Reactor, Service};

    /// Sets two alarms when first woken, cancels one, and notes what fires.
    #[derive(Default)]
    struct Alarms {
        fired: Vec<u64>,
    }

    impl Service for Alarms {
        type Conn = ();

        fn on_connect(&mut self, _: &mut Context<'_>, _: ConnId, _: &Addr) {}

        fn on_data(&mut self, _: &mut Context<'_>, _: ConnId, _: &mut (), input: &[u8]) -> usize {
            input.len()
        }

        fn on_wake(&mut self, ctx: &mut Context<'_>) {
            ctx.set_alarm(Duration::from_millis(20), 1);
            let cancelled = ctx.set_alarm(Duration::from_millis(5), 2);
            ctx.cancel_timer(cancelled);
        }

        fn on_alarm(&mut self, _: &mut Context<'_>, tag: u64) {
            self.fired.push(tag);
        }
    }

    #[test]
    fn an_alarm_fires_without_a_connection_and_a_cancelled_one_never() {
        let mut reactor = Reactor::new(Config::default(), Alarms::default()).unwrap();
        reactor.handle().wake().unwrap();
        for _ in 0..100 {
            if !reactor.service().fired.is_empty() {
                break;
            }
            reactor.turn().unwrap();
        }
        assert_eq!(reactor.service().fired, [1]);
        assert_eq!(reactor.stats().connected, 0);
    }
}
