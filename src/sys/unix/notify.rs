//! Telling the process that started this one how it is doing, by the
//! convention of sd_notify(3): a datagram of `KEY=VALUE` lines to the
//! Unix-domain socket that `NOTIFY_SOCKET` names — a path, or `@name` in
//! Linux's abstract namespace. systemd reads it for a `Type=notify`
//! service; a server replacing itself can read it from its successor.

use std::env;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{self, AddressFamily, SockType, UnixAddr};

use super::birth::{SEND_FLAGS, SOCKET_FLAGS, prepare};

/// Where the states go: a socket of our own and the address to send to.
pub struct Notifier {
    socket: OwnedFd,
    to: UnixAddr,
    /// `NOTIFY_SOCKET` as it was given, to name it in errors.
    name: String,
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` asks for, if it is set.
    pub fn from_env() -> io::Result<Option<Notifier>> {
        match env::var("NOTIFY_SOCKET") {
            Ok(name) if !name.is_empty() => Notifier::to(&name).map(Some),
            _ => Ok(None),
        }
    }

    /// A notifier that sends to `name`: a path, or `@name` (Linux).
    pub fn to(name: &str) -> io::Result<Notifier> {
        let to = notify_addr(name)
            .map_err(|e| io::Error::new(e.kind(), format!("NOTIFY_SOCKET={name}: {e}")))?;
        let socket = socket::socket(AddressFamily::Unix, SockType::Datagram, SOCKET_FLAGS, None)?;
        prepare(&socket)?;
        Ok(Notifier {
            socket,
            to,
            name: name.to_owned(),
        })
    }

    /// `READY=1`, with this process's id: it is serving.
    pub fn ready(&self) -> io::Result<()> {
        self.send(&format!("READY=1\nMAINPID={}", std::process::id()))
    }

    /// `STOPPING=1`: a graceful shutdown has begun.
    pub fn stopping(&self) -> io::Result<()> {
        self.send("STOPPING=1")
    }

    /// One datagram of `state`: `KEY=VALUE` lines. It never blocks: a
    /// reader whose queue is full makes it fail (`WouldBlock`).
    pub fn send(&self, state: &str) -> io::Result<()> {
        let fd = self.socket.as_raw_fd();
        super::retry(|| socket::sendto(fd, state.as_bytes(), &self.to, SEND_FLAGS))
            .map(drop)
            .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("{}: {e}", self.name)))
    }
}

/// The address `NOTIFY_SOCKET` names.
fn notify_addr(name: &str) -> io::Result<UnixAddr> {
    match name.strip_prefix('@') {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        Some(name) => Ok(UnixAddr::new_abstract(name.as_bytes())?),
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        Some(_) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "an abstract socket name (@): only Linux has them",
        )),
        None => Ok(UnixAddr::new(name)?),
    }
}
