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

    pub fn stats(&self) -> io::Result<Stats> {
        self.ask(Command::Stats)
    }

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
