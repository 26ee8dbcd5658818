//! Reaching a running reactor from another thread: a command queue plus the
//! waker that makes the loop look at it.

use std::io;
use std::sync::Arc;
use std::sync::mpsc::{self, Sender, SyncSender};
use std::time::Duration;

use super::stats::{ConnInfo, Stats};

/// Wakes the reactor's poller, whatever the OS.
pub(crate) type WakeFn = Arc<dyn Fn() -> io::Result<()> + Send + Sync>;

pub(crate) enum Command {
    Stop,
    Shutdown,
    Stats(SyncSender<Stats>),
    Connections(SyncSender<Vec<ConnInfo>>),
}

/// Cheap to clone and `Send`: query or stop a reactor from any thread.
///
/// A reactor runs on one thread; a `Handle` taken from it
/// ([`Reactor::handle`](super::Reactor::handle)) goes to others. Its
/// questions are answered by the loop itself, between two turns, so they
/// see a consistent state. Here the reactor is built on its own thread and
/// sends its address and handle back; the main thread talks to it as a
/// client, reads its counters and connection table, then asks for a
/// graceful shutdown, which ends `run` once the client has gone:
///
/// ```
/// use std::io::{Read, Write};
/// use std::net::TcpStream;
/// use std::sync::mpsc;
/// use std::time::Duration;
///
/// use sockloop::app::echo::Echo;
/// use sockloop::reactor::{Config, ListenOptions, Reactor};
///
/// let (tx, rx) = mpsc::channel();
/// let server = std::thread::spawn(move || -> std::io::Result<u64> {
///     let mut reactor = Reactor::new(Config::default(), Echo)?;
///     let addr = reactor.listen(&"127.0.0.1:0".parse().unwrap(), &ListenOptions::default())?;
///     tx.send((addr, reactor.handle())).unwrap();
///     reactor.run()?;
///     Ok(reactor.stats().bytes_out)
/// });
/// let (addr, handle) = rx.recv()?;
///
/// let mut client = TcpStream::connect(addr.ip().unwrap())?;
/// client.set_read_timeout(Some(Duration::from_secs(10)))?;
/// client.write_all(b"ping")?;
/// client.read_exact(&mut [0; 4])?;
///
/// let stats = handle.stats()?;
/// assert_eq!((stats.accepted, stats.active, stats.bytes_in), (1, 1, 4));
/// let table = handle.connections()?;
/// assert_eq!(table.len(), 1);
/// assert_eq!((table[0].bytes_in, table[0].pending_output), (4, 0));
///
/// handle.shutdown()?; // stop accepting; finish the connections there are
/// drop(client);       // this one finishes: FIN
/// assert_eq!(server.join().unwrap()?, 4);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Handle {
    wake: WakeFn,
    commands: Sender<Command>,
}

/// How long a query waits for a busy loop to answer before giving up.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

impl Handle {
    pub(crate) fn new(wake: WakeFn, commands: Sender<Command>) -> Self {
        Handle { wake, commands }
    }

    /// Asks the loop to return from `run` now, dropping every connection.
    pub fn stop(&self) -> io::Result<()> {
        self.send(Command::Stop)
    }

    /// Starts a graceful shutdown, as SIGTERM does: stop accepting, let every
    /// connection finish with what it had sent, then return from `run`.
    pub fn shutdown(&self) -> io::Result<()> {
        self.send(Command::Shutdown)
    }

    /// Wakes the loop, which calls its service's
    /// [`on_wake`](super::Service::on_wake): how another thread tells a
    /// service that it left something for it.
    pub fn wake(&self) -> io::Result<()> {
        (self.wake)()
    }

    /// The reactor's counters, as the loop has them between two turns.
    pub fn stats(&self) -> io::Result<Stats> {
        self.ask(Command::Stats)
    }

    /// A snapshot of every open connection, taken between two turns.
    pub fn connections(&self) -> io::Result<Vec<ConnInfo>> {
        self.ask(Command::Connections)
    }

    fn ask<T>(&self, command: impl FnOnce(SyncSender<T>) -> Command) -> io::Result<T> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(command(tx))?;
        rx.recv_timeout(REPLY_TIMEOUT)
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "reactor did not answer"))
    }

    fn send(&self, command: Command) -> io::Result<()> {
        self.commands
            .send(command)
            .map_err(|_| io::Error::new(io::ErrorKind::NotConnected, "reactor has stopped"))?;
        (self.wake)()
    }
}
