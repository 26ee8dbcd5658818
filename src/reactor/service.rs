//! What a service sees: connection ids, their bytes, and a [`Context`] to act
//! through. No file descriptors, no readiness flags.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use super::close::CloseReason;
use super::conn::Writing;
use super::state::State;
use super::timer::{TimerId, TimerKind};
use super::token::ConnId;
use crate::metrics::MetricsText;
use crate::sys::Addr;

/// An application on the reactor: plain state machine code, driven by calls.
///
/// The reactor calls [`on_connect`](Self::on_connect) when a connection is
/// up, [`on_data`](Self::on_data) whenever bytes arrive (with every byte not
/// consumed so far: TCP delivers a stream, not messages, so half a message
/// stays there until the rest comes), [`on_read_closed`](Self::on_read_closed)
/// at the peer's FIN, and [`on_close`](Self::on_close) once the connection is
/// gone. Each call gets a [`Context`] to act through; what it asks for is
/// carried out when the call returns. Only `on_connect` and `on_data` are
/// required.
///
/// A line chat: every line a member sends goes to every other member, with
/// the sender's name in front. Each member keeps its own line decoder (a
/// decoder remembers how far it has scanned); a line longer than 1 KiB cuts
/// off its sender, and nobody else.
///
/// ```
/// use std::io::{BufRead, BufReader, Write};
/// use std::net::TcpStream;
/// use std::time::Duration;
///
/// use sockloop::codec::{Codec, Decoder, Framing};
/// use sockloop::reactor::{
///     Addr, CloseReason, Config, ConnId, Context, ListenOptions, Reactor, Service,
/// };
///
/// #[derive(Default)]
/// struct Chat {
///     members: Vec<ConnId>,
/// }
///
/// struct Member {
///     lines: Codec,
/// }
///
/// impl Service for Chat {
///     type Conn = Member;
///
///     fn on_connect(&mut self, ctx: &mut Context<'_>, id: ConnId, _peer: &Addr) -> Member {
///         self.members.push(id);
///         ctx.write(id, format!("welcome, you are {id}\n").as_bytes());
///         Member { lines: Codec::new(Framing::Lines, 1024).expect("a valid codec") }
///     }
///
///     fn on_data(&mut self, ctx: &mut Context<'_>, id: ConnId, me: &mut Member, input: &[u8]) -> usize {
///         let mut used = 0;
///         loop {
///             let rest = &input[used..];
///             match me.lines.decode(rest) {
///                 Ok(Some(frame)) => {
///                     let line = &rest[frame.payload];
///                     for &other in self.members.iter().filter(|&&m| m != id) {
///                         ctx.write(other, format!("{id}: ").as_bytes());
///                         ctx.write(other, line);
///                         ctx.write(other, b"\n");
///                     }
///                     used += frame.len;
///                 }
///                 Ok(None) => return used, // half a line stays for next time
///                 Err(_too_long) => {
///                     ctx.abort(id, CloseReason::Protocol);
///                     return input.len();
///                 }
///             }
///         }
///     }
///
///     fn on_close(&mut self, _ctx: &mut Context<'_>, id: ConnId, _me: Member, _why: CloseReason) {
///         self.members.retain(|&m| m != id);
///     }
/// }
///
/// let mut reactor = Reactor::new(Config::default(), Chat::default())?;
/// let addr = reactor.listen(&"127.0.0.1:0".parse()?, &ListenOptions::default())?;
/// let server = addr.ip().expect("a TCP address");
/// let handle = reactor.handle();
///
/// let members = std::thread::spawn(move || {
///     let join = || -> std::io::Result<(TcpStream, BufReader<TcpStream>, String)> {
///         let stream = TcpStream::connect(server)?;
///         stream.set_read_timeout(Some(Duration::from_secs(10)))?;
///         let mut reader = BufReader::new(stream.try_clone()?);
///         let mut welcome = String::new();
///         reader.read_line(&mut welcome)?; // now the chat knows this member
///         Ok((stream, reader, welcome))
///     };
///     let talk = || -> std::io::Result<String> {
///         let (mut alice, _, _) = join()?;
///         let (_bob, mut bob_hears, bob_welcome) = join()?;
///         alice.write_all(b"hi b")?;
///         alice.write_all(b"ob\n")?; // one line, in two pieces
///         let mut heard = String::new();
///         bob_hears.read_line(&mut heard)?;
///         Ok(format!("{bob_welcome}{heard}"))
///     };
///     let result = talk();
///     handle.stop().expect("the reactor is running");
///     result
/// });
///
/// reactor.run()?;
/// let bob_saw = members.join().unwrap()?;
/// let mut lines = bob_saw.lines();
/// assert!(lines.next().unwrap().starts_with("welcome, you are c"));
/// assert!(lines.next().unwrap().ends_with(": hi bob"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Service {
    /// Per-connection state, kept by the reactor beside the connection.
    type Conn;

    /// A connection was accepted, or an outgoing one from
    /// [`Context::connect`] is established.
    fn on_connect(&mut self, ctx: &mut Context<'_>, id: ConnId, peer: &Addr) -> Self::Conn;

    /// New bytes arrived. `input` holds every byte not consumed so far;
    /// return how many of them are consumed. The rest is offered again, with
    /// more behind it, on the next call.
    fn on_data(
        &mut self,
        ctx: &mut Context<'_>,
        id: ConnId,
        conn: &mut Self::Conn,
        input: &[u8],
    ) -> usize;

    /// No more input will come: the peer sent FIN, or a graceful shutdown
    /// ended this connection's input after delivering what had arrived
    /// before it. `unconsumed` is what `on_data` left. By default the
    /// connection closes once everything queued for it is flushed.
    fn on_read_closed(
        &mut self,
        ctx: &mut Context<'_>,
        id: ConnId,
        conn: &mut Self::Conn,
        unconsumed: &[u8],
    ) {
        let _ = (conn, unconsumed);
        ctx.close(id);
    }

    /// An outgoing connection from [`Context::connect`] failed or timed out
    /// (with [`Context::connect_tls`], its handshake too); `id` is dead.
    fn on_connect_failed(&mut self, ctx: &mut Context<'_>, id: ConnId, error: io::Error) {
        let _ = (ctx, id, error);
    }

    /// A timer set with [`Context::set_timer`] for this connection fired.
    fn on_timer(&mut self, ctx: &mut Context<'_>, id: ConnId, conn: &mut Self::Conn, tag: u64) {
        let _ = (ctx, id, conn, tag);
    }

    /// An alarm set with [`Context::set_alarm`] went off. Unlike
    /// [`on_timer`](Self::on_timer) it belongs to no connection: a client
    /// waiting to try a connect again has none while it waits.
    fn on_alarm(&mut self, ctx: &mut Context<'_>, tag: u64) {
        let _ = (ctx, tag);
    }

    /// A graceful shutdown began: listeners are closed, and the run ends
    /// once every connection has. Connections the service opened for
    /// itself, that serve no client (links to a broker, say), are the
    /// service's to close here: the shutdown waits for them until its
    /// timeout otherwise.
    fn on_shutdown(&mut self, ctx: &mut Context<'_>) {
        let _ = ctx;
    }

    /// Another thread woke this reactor through a [`Handle`](super::Handle)
    /// ([`Handle::wake`](super::Handle::wake), or any query): a service fed
    /// from other threads takes here what they left for it.
    fn on_wake(&mut self, ctx: &mut Context<'_>) {
        let _ = ctx;
    }

    /// `id`'s backlog is at or below the low watermark, as
    /// [`Context::watch_drain`] asked to hear.
    fn on_drained(&mut self, ctx: &mut Context<'_>, id: ConnId, conn: &mut Self::Conn) {
        let _ = (ctx, id, conn);
    }

    /// The connection is gone; its id is dead from now on.
    fn on_close(
        &mut self,
        ctx: &mut Context<'_>,
        id: ConnId,
        conn: Self::Conn,
        reason: CloseReason,
    ) {
        let _ = (ctx, id, conn, reason);
    }

    /// Adds the service's own families to a `--metrics` page, after the
    /// reactor's counters (a relay's upstreams, say). `now` is the loop's
    /// clock. Nothing by default.
    fn metrics(&self, now: Instant, out: &mut MetricsText) {
        let _ = (now, out);
    }
}

/// The service's handle on the reactor during a callback. Every action is
/// carried out when the callback returns; a reply to the connection being
/// served goes out in one syscall, together with the other replies of the
/// same batch of events.
///
/// A service can be a client too: [`Reactor::connect`](super::Reactor::connect)
/// opens a first connection from outside any callback, and
/// [`Context::connect`] opens more from inside one; the service hears
/// [`Service::on_connect`] once each is up (or
/// [`Service::on_connect_failed`]). Here a client asks a plain blocking
/// server three questions, one connection each, one after the other: each
/// connection's [`on_close`](Service::on_close) opens the next. The server
/// answers each question with its length and closes, so the client's default
/// [`on_read_closed`](Service::on_read_closed) closes its side too.
///
/// ```
/// use std::io::{BufRead, BufReader, Write};
/// use std::net::TcpListener;
/// use std::time::Duration;
///
/// use sockloop::reactor::{Addr, CloseReason, Config, ConnId, Context, Reactor, Service};
///
/// // The server: answers each connection's first line with its length.
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// let server: Addr = listener.local_addr()?.into();
/// std::thread::spawn(move || {
///     for stream in listener.incoming().take(3).flatten() {
///         let mut line = String::new();
///         if BufReader::new(&stream).read_line(&mut line).is_ok() {
///             let _ = writeln!(&stream, "{}", line.trim_end().len());
///         }
///     }
/// });
///
/// struct Asker {
///     server: Addr,
///     questions: Vec<&'static str>,
///     answers: Vec<String>,
/// }
///
/// impl Service for Asker {
///     type Conn = Vec<u8>; // the answer so far
///
///     fn on_connect(&mut self, ctx: &mut Context<'_>, id: ConnId, _peer: &Addr) -> Vec<u8> {
///         let question = self.questions[self.answers.len()];
///         ctx.write(id, format!("{question}\n").as_bytes());
///         Vec::new()
///     }
///
///     fn on_data(&mut self, _: &mut Context<'_>, _: ConnId, answer: &mut Vec<u8>, input: &[u8]) -> usize {
///         answer.extend_from_slice(input);
///         input.len()
///     }
///
///     fn on_close(&mut self, ctx: &mut Context<'_>, _: ConnId, answer: Vec<u8>, _: CloseReason) {
///         self.answers.push(String::from_utf8_lossy(&answer).trim_end().to_owned());
///         if self.answers.len() < self.questions.len() {
///             // Opened once this callback returns; a failure, even at
///             // once, comes back as `on_connect_failed`.
///             ctx.connect(&self.server, None);
///         }
///     }
///
///     fn on_connect_failed(&mut self, _: &mut Context<'_>, _: ConnId, error: std::io::Error) {
///         self.answers.push(format!("connect failed: {error}"));
///     }
/// }
///
/// let asker = Asker {
///     server: server.clone(),
///     questions: vec!["why", "what for", "how come"],
///     answers: Vec::new(),
/// };
/// // The idle timeout arms a timer, so no turn waits for ever.
/// let config = Config { idle_timeout: Some(Duration::from_secs(5)), ..Config::default() };
/// let mut reactor = Reactor::new(config, asker)?;
/// reactor.connect(&server, None)?;
/// while reactor.service().answers.len() < 3 {
///     reactor.turn()?;
/// }
/// assert_eq!(reactor.service().answers, ["3", "8", "8"]);
/// assert_eq!(reactor.stats().connected, 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Context<'a> {
    state: &'a mut State,
    /// The reactor's read arena, where input and held echoes of it lie.
    arena: &'a [u8],
    /// The input `on_data` was given ([`echo`](Self::echo) and
    /// [`forward`](Self::forward) take ranges of it); empty in other callbacks.
    input: &'a [u8],
    /// Where `input` lies in `arena`, when it does (it is fresh from a
    /// read): pieces of it are then sent from there, never copied.
    input_at: Option<usize>,
}

impl<'a> Context<'a> {
    /// A context for a callback that has no input.
    pub(crate) fn new(state: &'a mut State, arena: &'a [u8]) -> Self {
        Context {
            state,
            arena,
            input: &[],
            input_at: None,
        }
    }

    /// A context for `on_data` with `input`, found in `arena` at `input_at`
    /// if it lies there.
    pub(crate) fn with_input(
        state: &'a mut State,
        arena: &'a [u8],
        input: &'a [u8],
        input_at: Option<usize>,
    ) -> Self {
        Context {
            state,
            arena,
            input,
            input_at,
        }
    }

    /// Queues `data`, new bytes, for `id`. False if that connection is gone
    /// or closing. To send bytes of the input on, use [`echo`](Self::echo)
    /// or [`forward`](Self::forward): they are not copied.
    pub fn write(&mut self, id: ConnId, data: &[u8]) -> bool {
        self.write_with(id, |out| out.extend_from_slice(data))
            .is_some()
    }

    /// Sends `input[range]` — bytes of the input this `on_data` call was
    /// given — back to the connection that sent them: an echo. False if it
    /// is closing. Panics if `range` is not within the input, as slicing does.
    ///
    /// While that connection has no backlog, the reply is kept as a range
    /// of the read buffer and sent from there, with the other replies of
    /// the same group of events, never copied.
    pub fn echo(&mut self, range: Range<usize>) -> bool {
        match self.state.replies.serving {
            Some(id) => self.forward(id, range),
            None => false,
        }
    }

    /// Queues `input[range]` — bytes of the input this `on_data` call was
    /// given — for `to`: a relay's bytes for its peer. False if `to` is
    /// gone or closing. Panics if `range` is not within the input.
    ///
    /// While `to` has nothing else queued, the bytes are sent from the read
    /// buffer as soon as the callback returns, never copied.
    pub fn forward(&mut self, to: ConnId, range: Range<usize>) -> bool {
        let input = self.input;
        let bytes = &input[range.clone()];
        if let Some(at) = self.input_at
            && !bytes.is_empty()
            && self.state.replies.keep_input(
                to,
                at + range.start..at + range.end,
                &self.state.conns,
            )
        {
            return true;
        }
        self.write(to, bytes)
    }

    /// Lets `f` append to `id`'s output (an encoder, say). `None` if that
    /// connection is gone or closing.
    pub fn write_with<R>(&mut self, id: ConnId, f: impl FnOnce(&mut Vec<u8>) -> R) -> Option<R> {
        // A reply remembered as a piece of the input goes first, to keep order.
        let replies = &mut self.state.replies;
        if replies.serving == Some(id)
            && let Some(range) = replies.echo.take()
        {
            replies.out.extend_from_slice(&self.arena[range]);
        }
        let forward = replies.forward.take_if(|(to, _)| *to == id);
        let out = self.state.output_for(id, self.arena)?;
        if let Some((_, range)) = forward {
            out.extend_from_slice(&self.arena[range]);
        }
        Some(f(out))
    }

    /// Closes `id` once everything queued for it is flushed.
    pub fn close(&mut self, id: ConnId) {
        self.state.close_when_flushed(id);
    }

    /// Opens a connection to `addr` (from `local`, if given), once this
    /// callback returns. Writes to it are held until it is up; then the
    /// service hears [`Service::on_connect`] or — on any failure, even one
    /// that comes at once, or after the connect timeout —
    /// [`Service::on_connect_failed`].
    pub fn connect(&mut self, addr: &Addr, local: Option<SocketAddr>) -> ConnId {
        self.state.request_connect(addr, local, None)
    }

    /// As [`connect`](Self::connect), over TLS to a server that must prove
    /// it is `name`: the service hears `on_connect` once the handshake is
    /// done, and writes and reads plaintext. The handshake is part of the
    /// connect: one that fails, or is not done within the connect timeout
    /// (counted from the start of the connect), is `on_connect_failed`,
    /// with an error that says why (of kind `InvalidData` for a certificate
    /// or protocol failure, `TimedOut` for the timeout). Fails at once only
    /// if rustls cannot start a session with `config`.
    #[cfg(feature = "tls")]
    pub fn connect_tls(
        &mut self,
        addr: &Addr,
        config: std::sync::Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
    ) -> io::Result<ConnId> {
        let tls = super::tls::Tls::client(config, name)?;
        Ok(self.state.request_connect(addr, None, Some(tls)))
    }

    /// Sends FIN to `id` once everything queued for it is flushed; reading
    /// goes on. No writes are taken after this.
    pub fn shutdown_write(&mut self, id: ConnId) {
        if let Some(conn) = self.state.conns.live_mut(id)
            && conn.writing == Writing::Open
        {
            conn.writing = Writing::FinWhenFlushed;
            self.state.defer(id);
        }
    }

    /// Makes `a` and `b` a relay pair for backpressure: `a` stops being read
    /// while `b`'s output is above the high watermark, and the other way round.
    pub fn link(&mut self, a: ConnId, b: ConnId) {
        for (from, to) in [(a, b), (b, a)] {
            if let Some(conn) = self.state.conns.live_mut(to) {
                conn.fed_by = Some(from);
            }
        }
    }

    /// Relays `a` and `b` to each other with splice(2) from now on: what
    /// one receives goes through a pipe into the other's socket without
    /// entering user space, and `on_data` is no longer called for either.
    /// Each side stops being read while its pipe cannot drain (the two are
    /// [`link`](Self::link)ed). The pipes are made once this callback
    /// returns; if a side speaks TLS or the OS cannot make them, the pair
    /// goes on copying (logged at warn). Where the OS has no splice(2) at all
    /// ([`sys::SPLICE`](crate::sys::SPLICE) is false) this fails at once
    /// with [`io::ErrorKind::Unsupported`] and changes nothing.
    pub fn splice(&mut self, a: ConnId, b: ConnId) -> io::Result<()> {
        self.request_splice(a, b, false)
    }

    /// As [`splice`](Self::splice), but each side goes on copying through
    /// `on_data` until one read fills a whole read chunk
    /// ([`Config::read_chunk`](super::Config::read_chunk)): from then on
    /// that side's input is spliced. Small requests and replies stay on the
    /// copy path, which costs fewer syscalls for them; bulk transfers go
    /// zero-copy. A side's pipe is made when it starts splicing, so a pair
    /// that never sends in bulk holds no more descriptors than its sockets.
    pub fn splice_bulk(&mut self, a: ConnId, b: ConnId) -> io::Result<()> {
        self.request_splice(a, b, true)
    }

    fn request_splice(&mut self, a: ConnId, b: ConnId, bulk: bool) -> io::Result<()> {
        if !self.state.splice_supported {
            let e = "splice(2) is not available on this OS";
            return Err(io::Error::new(io::ErrorKind::Unsupported, e));
        }
        if self.state.conns.live(a).is_none() || self.state.conns.live(b).is_none() {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "connection gone",
            ));
        }
        self.link(a, b);
        if bulk {
            for id in [a, b] {
                if let Some(conn) = self.state.conns.live_mut(id) {
                    conn.flags.splice_bulk = true;
                }
            }
        } else {
            self.state.splices.push((a, b));
        }
        Ok(())
    }

    /// The time now, by the reactor's clock (the OS's, or a simulated one).
    pub fn now(&self) -> Instant {
        self.state.clock_now()
    }

    /// Closes `id` now, discarding whatever it has not been sent.
    pub fn abort(&mut self, id: ConnId, reason: CloseReason) {
        self.state.abort(id, reason);
    }

    /// Closes `id` now with a reset (RST), discarding whatever it has not
    /// been sent: its peer sees the stream cut short, not a clean end. A
    /// relay does this to one side when the other was reset.
    pub fn reset(&mut self, id: ConnId, reason: CloseReason) {
        self.state.reset(id, reason);
    }

    /// For a TLS connection, once its handshake is done: its protocol,
    /// cipher suite, server name (SNI) and ALPN protocol, in one line.
    pub fn tls(&self, id: ConnId) -> Option<&str> {
        self.state.conns.get(id)?.tls()
    }

    /// For a TLS connection, the ALPN protocol agreed on in its handshake.
    pub fn alpn(&self, id: ConnId) -> Option<&str> {
        // The last field of the summary that `tls` returns.
        self.tls(id)?.split_once(" alpn=").map(|(_, alpn)| alpn)
    }

    /// Who `id`'s client is, as its TLS certificate says (its subject CN,
    /// or its first SAN), on a listener that asks for one
    /// (`--tls-client-ca`); the certificate was verified in the handshake.
    /// `None` for every other connection.
    pub fn peer_identity(&self, id: ConnId) -> Option<&str> {
        self.state.conns.get(id)?.identity()
    }

    /// The address of `id`'s peer; still known during `on_close`.
    pub fn peer_addr(&self, id: ConnId) -> Option<&Addr> {
        self.state.peer(id)
    }

    /// `id`'s peer as the reactor's log lines name it: `from ADDR` (`to
    /// ADDR` for a connection the service opened), and for a client a
    /// PROXY header named, the balancer it came through: `from
    /// 1.3.3.7:31337 via 10.0.0.5:41000`.
    pub fn peer_label(&self, id: ConnId) -> impl fmt::Display + '_ {
        self.state.peer_label(id)
    }

    /// Stops reading from `id` until [`resume_read`](Self::resume_read).
    pub fn pause_read(&mut self, id: ConnId) {
        if let Some(conn) = self.state.conns.live_mut(id) {
            conn.flags.paused = true;
        }
    }

    /// Reads `id` again after [`pause_read`](Self::pause_read). What arrived
    /// meanwhile is read before the next wait: an edge-triggered poller will
    /// not report it again.
    pub fn resume_read(&mut self, id: ConnId) {
        if let Some(conn) = self.state.conns.live_mut(id)
            && conn.flags.paused
        {
            conn.flags.paused = false;
            self.state.schedule_read(id);
        }
    }

    /// Asks for one [`Service::on_drained`] call once `id`'s backlog is at
    /// or below the low watermark (at the end of this turn if it already is).
    pub fn watch_drain(&mut self, id: ConnId) {
        let state = &mut *self.state;
        match state.pending_output(id) {
            Some(n) if n <= state.config.low_watermark => state.drained.push(id),
            Some(_) if !state.drain_watch.contains(&id) => state.drain_watch.push(id),
            _ => {}
        }
    }

    /// Calls [`Service::on_timer`] with `tag` after `after`, unless `id` has
    /// closed by then. `None` if it already has.
    pub fn set_timer(&mut self, id: ConnId, after: Duration, tag: u64) -> Option<TimerId> {
        self.state.conns.live(id)?;
        let at = self.state.now + after;
        Some(self.state.timers.add(at, TimerKind::Service(id, tag)))
    }

    /// Calls [`Service::on_alarm`] with `tag` after `after`: a timer of the
    /// service's own, for no connection. Cancel it with
    /// [`cancel_timer`](Self::cancel_timer).
    pub fn set_alarm(&mut self, after: Duration, tag: u64) -> TimerId {
        let at = self.state.now + after;
        self.state.timers.add(at, TimerKind::Alarm(tag))
    }

    /// Cancels a timer; one that has fired already is left alone.
    pub fn cancel_timer(&mut self, timer: TimerId) {
        self.state.timers.cancel(timer);
    }

    /// Adds to the reactor's frame counters.
    pub fn count_frames(&mut self, received: u64, sent: u64) {
        self.state.stats.frames_in += received;
        self.state.stats.frames_out += sent;
    }

    /// Counts a connection that ended with a partial frame buffered.
    pub fn count_truncated_frame(&mut self) {
        self.state.stats.truncated_frames += 1;
    }

    /// Bytes queued for `id` that the kernel has not taken yet.
    pub fn pending_output(&self, id: ConnId) -> Option<usize> {
        self.state.pending_output(id)
    }
}
