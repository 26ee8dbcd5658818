//! The event loop: wait for readiness, dispatch it, send what the services
//! wrote, and do it again.
//!
//! One turn: [`Poll::wait`] fills the event array, with a timeout taken
//! from the nearest timer; each event names a listener, a wake-up, the
//! signals or a connection by [`ConnId`] (slot + generation, so an event
//! for a slot that changed owner is dropped). Then the timers that are due
//! run, and the connections and listeners whose budget ran out are served
//! again; the held replies go out; the slots of connections closed during
//! the turn are freed.
//!
//! `Reactor` is the coordinator, and the only caller of the service
//! (`callback.rs`, `Reactor::call`). The parts own their state —
//! `listeners` (the listening sockets), `kernel` (the poller and each
//! connection's socket), `state` (the books a service's [`Context`]
//! borrows), `buffer` (the read arena), `reply` (replies on their way
//! out), `timer`, `stats` — and the steps are functions of the parts they
//! name in their arguments: `input` (reading), `output` (sending),
//! `accept` (admitting and connecting), `handshake` (PROXY and TLS),
//! `splice`, `timeouts`, `budget`, `scrape`. A step never calls the
//! service: it says what became of a connection (a read's result, a first
//! step, or `State::abort` for one that must end)
//! and the coordinator acts on it. `lifecycle` holds the coordinator's
//! `apply`, `close`, timers and shutdown.

mod accept;
mod budget;
mod buffer;
mod callback;
mod close;
mod config;
mod conn;
mod handle;
mod handshake;
mod input;
mod kernel;
mod lifecycle;
mod listeners;
mod output;
mod reply;
mod scrape;
mod service;
mod sources;
mod splice;
mod state;
mod stats;
mod timeouts;
mod timer;
mod token;
mod trace;
// TLS between socket and service, or (without the feature) a stage that
// no connection has.
#[cfg_attr(not(feature = "tls"), path = "tls_off.rs")]
mod tls;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::metrics::{MetricKind, MetricsText};
use accept::{Connect, First};
use buffer::Arena;
use callback::Callback;
pub use close::CloseReason;
pub use config::Config;
use conn::Phase;
use handle::Command;
pub use handle::Handle;
pub use service::{Context, Service};
pub use sources::{SourceLimits, Sources};
use state::State;
pub use stats::{ConnInfo, Stats, format_table, format_tables};
pub use timer::TimerId;
pub use token::ConnId;
use token::Token;
pub(crate) use token::label_ids_with_reactor;
use trace::trace_io;

use crate::sys::os::{Listen, Os, Poll, Readiness, SignalSource, Stream, Wake};
pub use crate::sys::{Addr, ListenOptions, SocketOptions};
use crate::sys::{Real, SignalKind};
use kernel::Kernel;
use listeners::Listeners;
pub use listeners::Serve;
pub use tls::ServerTls;

/// A single-threaded reactor running one [`Service`], on the OS `O`: this
/// machine's ([`Real`]) unless a test puts a simulated one in its place.
///
/// Make one with a [`Config`] and the service, [`listen`](Self::listen)
/// and/or [`connect`](Self::connect), then either [`run`](Self::run) it until
/// it is stopped (through a [`Handle`], a signal or
/// [`shutdown`](Self::shutdown)), or drive it yourself one
/// [`turn`](Self::turn) at a time: one wait for events and everything they
/// call for. The crate's front page has the whole first server; here, the
/// library's own line echo for one client, turned in a loop that ends when
/// that client has gone (bounded by an idle timeout, so that a turn never
/// waits for ever):
///
/// ```
/// use std::io::{BufRead, BufReader, Write};
/// use std::net::TcpStream;
/// use std::time::Duration;
///
/// use sockloop::app::echo::FramedEcho;
/// use sockloop::codec::{Codec, Framing};
/// use sockloop::reactor::{CloseReason, Config, ListenOptions, Reactor};
///
/// let codec = Codec::new(Framing::Lines, 1024)?;
/// let config = Config { idle_timeout: Some(Duration::from_secs(5)), ..Config::default() };
/// let mut reactor = Reactor::new(config, FramedEcho::new(codec))?;
/// let addr = reactor.listen(&"127.0.0.1:0".parse()?, &ListenOptions::default())?;
/// let server = addr.ip().expect("a TCP address");
///
/// let client = std::thread::spawn(move || -> std::io::Result<String> {
///     let mut stream = TcpStream::connect(server)?;
///     stream.set_read_timeout(Some(Duration::from_secs(10)))?;
///     stream.write_all(b"one\r\ntw")?; // a line and a half
///     stream.write_all(b"o\n")?;        // ...and the rest of the second
///     let mut lines = String::new();
///     let mut reader = BufReader::new(stream);
///     reader.read_line(&mut lines)?;
///     reader.read_line(&mut lines)?;
///     Ok(lines) // dropping the stream sends FIN
/// });
///
/// while reactor.stats().closed == 0 {
///     reactor.turn()?;
/// }
/// // `\r\n` ends a line as `\n` does; each line comes back ending in `\n`.
/// assert_eq!(client.join().unwrap()?, "one\ntwo\n");
/// let stats = reactor.stats();
/// assert_eq!((stats.accepted, stats.frames_in), (1, 2));
/// assert_eq!(stats.closed_by(CloseReason::Peer), 1); // its FIN, not the timeout
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Reactor<S: Service, O: Os = Real> {
    state: State,
    kernel: Kernel<O>,
    listeners: Listeners<O>,
    service: S,
    /// The service's state for each connection, by slot.
    service_conns: Vec<Option<S::Conn>>,
    arena: Arena,
}

impl<S: Service> Reactor<S> {
    /// A reactor on this machine's OS.
    pub fn new(config: Config, service: S) -> io::Result<Self> {
        Reactor::with_os(config, service)
    }
}

impl<S: Service, O: Os> Reactor<S, O> {
    /// A reactor on the OS `O`.
    pub fn with_os(config: Config, service: S) -> io::Result<Self> {
        let poller = O::Poller::new(config.event_capacity, Token::Waker.to_u64())?;
        let arena = Arena::new(config.read_chunk);
        Ok(Reactor {
            state: State::new(config, O::now, O::SPLICE),
            kernel: Kernel::new(poller),
            listeners: Listeners::new(),
            service,
            service_conns: Vec::new(),
            arena,
        })
    }

    /// Starts listening on `addr`, TCP or Unix-domain, for the service;
    /// returns the address actually bound (the real port when `addr` asks
    /// for port 0).
    pub fn listen(&mut self, addr: &Addr, options: &ListenOptions) -> io::Result<Addr> {
        self.listen_as(addr, options, Serve::Service)
    }

    /// As [`listen`](Self::listen), its connections served as `serve`
    /// says: by the service, over TLS, or by the reactor's own metrics
    /// responder.
    pub fn listen_as(
        &mut self,
        addr: &Addr,
        options: &ListenOptions,
        serve: Serve,
    ) -> io::Result<Addr> {
        self.adopt(O::Listener::bind(addr, options)?, serve)
    }

    /// Serves the connections of `listener`, a listening socket made
    /// elsewhere (passed by systemd, or by the process this one replaces),
    /// as `serve` says; returns its address.
    pub fn adopt(&mut self, listener: O::Listener, serve: Serve) -> io::Result<Addr> {
        self.listeners.add(&self.kernel.poller, listener, serve)
    }

    /// Opens a connection to `addr` (from `local`, if given) from outside any
    /// callback, as a client does before it has heard of anything; then as
    /// [`Context::connect`]: the service hears `on_connect` or `on_connect_failed`.
    pub fn connect(&mut self, addr: &Addr, local: Option<SocketAddr>) -> io::Result<ConnId> {
        accept::connect_now(&mut self.state, &mut self.kernel, addr, local, None)
    }

    /// As [`connect`](Self::connect), over TLS: see [`Context::connect_tls`].
    #[cfg(feature = "tls")]
    pub fn connect_tls(
        &mut self,
        addr: &Addr,
        local: Option<SocketAddr>,
        config: Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
    ) -> io::Result<ConnId> {
        let tls = tls::Tls::client(config, name)?;
        accept::connect_now(&mut self.state, &mut self.kernel, addr, local, Some(tls))
    }

    /// SIGINT and SIGTERM start a graceful shutdown (a second one stops at
    /// once); SIGUSR1 prints the connection table; SIGHUP and SIGUSR2 are
    /// logged and otherwise ignored (a reload or an upgrade is the
    /// supervisor's, in [`threads`](crate::threads)). Call it before starting any thread: on
    /// Linux it blocks those signals in the calling thread.
    pub fn handle_signals(&mut self) -> io::Result<()> {
        let signals = O::Signals::new(&self.kernel.poller, Token::Signals.to_u64())?;
        self.kernel.signals = Some(signals);
        Ok(())
    }

    /// A handle that other threads use to query, shut down or stop this reactor.
    pub fn handle(&self) -> Handle {
        let waker = self.kernel.poller.waker();
        Handle::new(
            Arc::new(move || waker.wake()),
            self.state.command_tx.clone(),
        )
    }

    /// What the reactor's clock says now: [`Context::now`] for code outside
    /// the callbacks (a load generator timing the connects it starts).
    pub fn now(&self) -> Instant {
        self.state.clock_now()
    }

    /// The counters, for the thread that runs the reactor (a
    /// [`Handle`] asks from others).
    pub fn stats(&self) -> Stats {
        self.state.stats
    }

    /// The service, to read what it kept (after `run`, say).
    pub fn service(&self) -> &S {
        &self.service
    }

    /// The service, to change it outside its callbacks.
    pub fn service_mut(&mut self) -> &mut S {
        &mut self.service
    }

    /// True if the last `run` ended because a second shutdown request cut
    /// the graceful one short.
    pub fn was_forced(&self) -> bool {
        self.state.forced
    }

    /// False once stopped, or once a graceful shutdown has closed every
    /// connection: what ends [`run`](Self::run), for a caller that turns the
    /// loop itself.
    pub fn is_running(&self) -> bool {
        !self.state.stopped
    }

    /// Tells the service it starts ([`Service::on_start`]), then runs until
    /// stopped, or until a graceful shutdown has closed every connection.
    pub fn run(&mut self) -> io::Result<()> {
        self.call(Callback::Start);
        while self.is_running() {
            self.turn()?;
        }
        Ok(())
    }

    /// One wait and everything it reported.
    pub fn turn(&mut self) -> io::Result<()> {
        let timeout = if self.state.scheduled.is_empty() {
            let next = self.state.timers.next_deadline();
            next.map(|at| self.state.until(at))
        } else {
            Some(Duration::ZERO)
        };
        let (busy_poll, polls) = (self.state.config.busy_poll, &mut self.state.stats.polls);
        let n = self.kernel.wait(timeout, busy_poll, polls)?;
        self.state.set_now(O::now());
        self.state.stats.events += n as u64;
        for i in 0..n {
            let event = self.kernel.poller.event(i);
            self.dispatch(event);
            if self.state.replies.held.len() >= self.state.config.hold_replies {
                output::send_held_replies(&mut self.state, &mut self.kernel, &mut self.arena);
                self.apply();
            }
        }
        self.run_timers();
        // Connections and listeners whose budget ran out in an earlier
        // turn. Only what was queued before now: newcomers wait one turn,
        // so one that refills its budget cannot starve the poller.
        for _ in 0..self.state.scheduled.len() {
            match self.state.scheduled.pop_front() {
                Some(Token::Conn(id)) if self.state.take_turn(id) => self.read(id),
                Some(Token::Listener(i)) if self.listeners.take_turn(i) => self.accept(i),
                _ => {}
            }
        }
        output::send_held_replies(&mut self.state, &mut self.kernel, &mut self.arena);
        self.apply();
        // Backlogs that drained during the turn.
        while let Some(id) = self.state.drained.pop() {
            self.call(Callback::Drained(id));
        }
        self.enforce_budget();
        if !self.state.dead.is_empty() {
            free_slots(&mut self.state, &mut self.kernel);
            // Descriptors were freed: take the spare back if an earlier
            // attempt found none.
            self.listeners.restore_spare();
        }
        if self.state.shutting_down && self.state.stats.active == 0 {
            self.state.stopped = true;
        }
        Ok(())
    }

    /// A snapshot of every open connection.
    pub fn connections(&self) -> Vec<ConnInfo> {
        self.state.snapshot()
    }

    fn dispatch(&mut self, event: <O::Poller as Poll>::Event) {
        match Token::from_u64(event.token()) {
            Token::Conn(id) => self.on_conn_event(id, event),
            Token::Listener(i) => self.accept(i),
            Token::Waker => {
                while let Ok(command) = self.state.commands.try_recv() {
                    match command {
                        Command::Stop => self.state.stopped = true,
                        Command::Shutdown => self.shutdown(),
                        Command::Stats(reply) => drop(reply.send(self.state.stats)),
                        Command::Connections(reply) => drop(reply.send(self.connections())),
                    }
                }
                self.call(Callback::Wake);
            }
            Token::Signals => {
                while let Some(signal) = self.kernel.next_signal() {
                    match signal {
                        SignalKind::Terminate => self.shutdown(),
                        SignalKind::Report => {
                            crate::stderr::line(format_args!(
                                "{}",
                                format_table(&self.connections())
                            ));
                        }
                        SignalKind::Reload => log::info!("SIGHUP: nothing to reload here"),
                        // Only a supervisor has the listeners and the command line to hand over.
                        SignalKind::Upgrade => log::info!("SIGUSR2: no upgrade here; ignored"),
                    }
                }
            }
        }
    }

    fn on_conn_event(&mut self, id: ConnId, event: <O::Poller as Poll>::Event) {
        let Some(conn) = self.state.conns.live_mut(id) else {
            self.state.stats.stale_events += 1;
            return;
        };
        trace_io!(
            self.state.config.trace,
            "{id} event{}{}{}{}",
            if event.is_readable() { " readable" } else { "" },
            if event.is_writable() { " writable" } else { "" },
            if event.is_read_closed() { " hup" } else { "" },
            if event.is_error() { " error" } else { "" },
        );
        // Before the first steps too: a PROXY header cut short by FIN shows
        // only here.
        conn.flags.peer_fin |= event.is_read_closed();
        let phase = conn.phase;
        match phase {
            Phase::Connecting { .. } => {
                match accept::finish_connect(&mut self.state, &mut self.kernel, id, &event) {
                    Connect::NotUp => return self.apply(),
                    Connect::Up(First::Handshake) => return self.handshake(id),
                    Connect::Up(First::Open) => self.call(Callback::Connect(id)),
                    Connect::WasUp => {}
                }
            }
            Phase::Handshaking { .. } => return self.handshake(id),
            _ => {}
        }
        let Some(conn) = self.state.conns.live_mut(id) else {
            return;
        };
        if event.is_error() {
            // A reset or similar: nothing more can be sent or received.
            let error = self.kernel.socket(id).and_then(Stream::take_error);
            let kind = error.map_or(io::ErrorKind::ConnectionReset, |e| e.kind());
            self.close(id, CloseReason::failed(kind));
            return self.apply();
        }
        if event.is_writable() {
            if !conn.output().is_empty() || self.kernel.tls_unsent(id) {
                self.state.defer(id);
                self.apply();
            }
            // The peer splicing into this one: its pipe waits for room here.
            if let Some(src) = self.state.spliced_from(id) {
                splice::pump(&mut self.state, &mut self.kernel, src);
                self.apply();
            }
        }
        if event.is_readable() || event.is_read_closed() {
            self.read(id);
        }
    }
}

/// Frees the slots of the connections closed during the turn, and their
/// sockets with them: only now may an fd number go to a new connection.
fn free_slots<O: Os>(state: &mut State, kernel: &mut Kernel<O>) {
    // Taken out and put back, keeping its capacity.
    let mut dead = std::mem::take(&mut state.dead);
    for id in dead.drain(..) {
        state.remove(id);
        kernel.detach(id);
    }
    state.dead = dead;
    let conns = &state.conns;
    state.drain_watch.retain(|&id| conns.live(id).is_some());
}
