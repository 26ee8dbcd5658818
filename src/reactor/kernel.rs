//! What a reactor holds of the operating system for its connections: the
//! poller, the signals, and each connection's socket and pipe.
//!
//! Kept apart from [`State`](super::state::State), which a service's
//! `Context` borrows: a service can reach the reactor's bookkeeping but
//! never a socket, and `Context` stays the same type whatever the OS.

use std::io;
use std::time::Duration;

use super::tls::Tls;
use super::token::ConnId;
use log::warn;

use crate::sys::SignalKind;
use crate::sys::os::{Os, Poll, SignalSource, Stream};

/// A connection's OS resources: its socket, and what few connections have
/// beside it (boxed, so that the rest pay one pointer for it).
pub(crate) struct Handles<O: Os> {
    pub(crate) socket: O::Socket,
    pub(crate) stage: Option<Box<Stage<O>>>,
}

/// Between a connection's socket and its service. (TLS state is some
/// kilobytes: boxed again, so that a pipe does not take as much.)
pub(crate) enum Stage<O: Os> {
    Tls(Box<Tls>),
    /// Zero-copy relaying: its input goes through this pipe to its peer.
    Pipe(O::Pipe),
}

impl<O: Os> Handles<O> {
    /// Plaintext from the connection: through TLS, if it has it.
    // Inlined: every read and write of every message comes through here.
    #[inline]
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.stage.as_deref_mut() {
            Some(Stage::Tls(tls)) => tls.read(&self.socket, buf),
            _ => self.socket.read(buf),
        }
    }

    #[inline]
    pub(crate) fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self.stage.as_deref_mut() {
            Some(Stage::Tls(tls)) => tls.write(&self.socket, data),
            _ => self.socket.write(data),
        }
    }

    /// Whether a short read still left something to read: the end of a
    /// TLS session, when its close_notify came with the last plaintext.
    #[inline]
    pub(crate) fn end_unread(&self) -> bool {
        match self.stage.as_deref() {
            Some(Stage::Tls(tls)) => tls.end_unread(),
            _ => false,
        }
    }

    /// Sends what TLS holds ready; whether anything is still unsent.
    pub(crate) fn flush_tls(&mut self) -> io::Result<bool> {
        match self.stage.as_deref_mut() {
            Some(Stage::Tls(tls)) => tls.flush(&self.socket).map(|()| tls.has_unsent()),
            _ => Ok(false),
        }
    }

    pub(crate) fn tls(&self) -> Option<&Tls> {
        match self.stage.as_deref() {
            Some(Stage::Tls(tls)) => Some(tls),
            _ => None,
        }
    }

    pub(crate) fn set_tls(&mut self, tls: Tls) {
        self.stage = Some(Box::new(Stage::Tls(Box::new(tls))));
    }
}

pub(crate) struct Kernel<O: Os> {
    pub(crate) poller: O::Poller,
    pub(crate) signals: Option<O::Signals>,
    /// By slab slot; the slot's owner is whoever holds it in `State::conns`,
    /// so callers check that a connection is live before they look here.
    handles: Vec<Option<Handles<O>>>,
}

impl<O: Os> Kernel<O> {
    pub(crate) fn new(poller: O::Poller) -> Kernel<O> {
        Kernel {
            poller,
            signals: None,
            handles: Vec::new(),
        }
    }

    /// Waits for events; `polls` counts the waits. With `busy_poll`, first
    /// spins on zero-timeout waits for up to that long: a reply then costs
    /// no sleep and wake-up, at the price of a busy core.
    pub(crate) fn wait(
        &mut self,
        timeout: Option<Duration>,
        busy_poll: Option<Duration>,
        polls: &mut u64,
    ) -> io::Result<usize> {
        if let Some(spin) = busy_poll
            && timeout != Some(Duration::ZERO)
        {
            let until = O::now() + timeout.map_or(spin, |t| t.min(spin));
            loop {
                *polls += 1;
                let n = self.poller.wait(Some(Duration::ZERO))?;
                if n > 0 {
                    return Ok(n);
                }
                if O::now() >= until {
                    break;
                }
                std::hint::spin_loop();
            }
        }
        *polls += 1;
        self.poller.wait(timeout)
    }

    /// The next signal that came, if any (a failure to read them is logged).
    pub(crate) fn next_signal(&self) -> Option<SignalKind> {
        match self.signals.as_ref()?.next() {
            Ok(signal) => signal,
            Err(e) => {
                warn!("reading signals: {e}");
                None
            }
        }
    }

    pub(crate) fn attach(&mut self, id: ConnId, socket: O::Socket) {
        if self.handles.len() <= id.index() {
            self.handles.resize_with(id.index() + 1, || None);
        }
        self.handles[id.index()] = Some(Handles {
            socket,
            stage: None,
        });
    }

    /// Drops `id`'s socket and pipe, closing them: only once the slot is free.
    pub(crate) fn detach(&mut self, id: ConnId) {
        if let Some(handles) = self.handles.get_mut(id.index()) {
            *handles = None;
        }
    }

    pub(crate) fn handles(&self, id: ConnId) -> Option<&Handles<O>> {
        self.handles.get(id.index())?.as_ref()
    }

    pub(crate) fn handles_mut(&mut self, id: ConnId) -> Option<&mut Handles<O>> {
        self.handles.get_mut(id.index())?.as_mut()
    }

    /// Whether `id` speaks TLS: its bytes on the wire cannot go through a
    /// pipe as they are.
    pub(crate) fn has_tls(&self, id: ConnId) -> bool {
        self.handles(id).and_then(Handles::tls).is_some()
    }

    /// Whether TLS holds records for `id` that the socket has not taken.
    pub(crate) fn tls_unsent(&self, id: ConnId) -> bool {
        self.handles(id)
            .and_then(Handles::tls)
            .is_some_and(|tls| tls.has_unsent())
    }

    pub(crate) fn socket(&self, id: ConnId) -> Option<&O::Socket> {
        self.handles(id).map(|h| &h.socket)
    }

    /// Two connections' resources at once: `src`'s pipe and `dst`'s socket.
    pub(crate) fn pipe_and_socket(
        &mut self,
        src: ConnId,
        dst: ConnId,
    ) -> Option<(&mut O::Pipe, &O::Socket)> {
        let (a, b) = (src.index(), dst.index());
        if a == b || a.max(b) >= self.handles.len() {
            return None;
        }
        let (low, high) = self.handles.split_at_mut(a.max(b));
        let (from, to) = if a < b {
            (&mut low[a], &high[0])
        } else {
            (&mut high[0], &low[b])
        };
        match from.as_mut()?.stage.as_deref_mut() {
            Some(Stage::Pipe(pipe)) => Some((pipe, &to.as_ref()?.socket)),
            _ => None,
        }
    }
}
