//! Telling the process that started this one how it is doing, by the
//! convention of sd_notify(3): a datagram of `KEY=VALUE` lines to the
//! Unix-domain socket that `NOTIFY_SOCKET` names — a path, or `@name` in
//! Linux's abstract namespace. systemd reads it for a `Type=notify`
//! service; a server replacing itself can read it from its successor.

use std::env;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockType, UnixAddr};

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
        let socket = datagram_socket()?;
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

/// A non-blocking, close-on-exec Unix-domain datagram socket.
fn datagram_socket() -> io::Result<OwnedFd> {
    let socket = socket::socket(AddressFamily::Unix, SockType::Datagram, SOCKET_FLAGS, None)?;
    prepare(&socket)?;
    Ok(socket)
}

/// The socket a child's states come to: its path is the child's
/// `NOTIFY_SOCKET`. The file is removed when it closes.
pub struct NotifyListener {
    socket: OwnedFd,
    path: PathBuf,
    /// The directory made for it, removed after it.
    dir: Option<PathBuf>,
}

impl NotifyListener {
    /// Binds a datagram socket at `path`, which must not exist.
    pub fn bind(path: &Path) -> io::Result<NotifyListener> {
        let socket = datagram_socket()?;
        socket::bind(socket.as_raw_fd(), &UnixAddr::new(path)?)?;
        Ok(NotifyListener {
            socket,
            path: path.to_owned(),
            dir: None,
        })
    }

    /// Binds one in a directory of its own, made in the temporary
    /// directory and open to this user only, so that no other user can
    /// send it a `READY=1`; both are removed when it closes.
    pub fn in_private_dir() -> io::Result<NotifyListener> {
        static MADE: AtomicU64 = AtomicU64::new(0);
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        let name = format!("sockloop-{}-{n}", std::process::id());
        let dir = env::temp_dir().join(name);
        fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let bound = NotifyListener::bind(&dir.join("notify"));
        let Ok(mut listener) = bound else {
            let _ = fs::remove_dir(&dir);
            return bound;
        };
        listener.dir = Some(dir);
        Ok(listener)
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits up to `timeout` for `READY=1` from process `pid` (the
    /// `MAINPID` it names, if it names one): true once it came, false when
    /// the time ran out first. Other states are read and passed over.
    pub fn wait_ready(&self, pid: u32, timeout: Duration) -> io::Result<bool> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let wait = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
            if super::retry(|| poll(&mut fds, wait))? == 0 {
                return Ok(false);
            }
            let fd = self.socket.as_raw_fd();
            let n = match super::retry(|| socket::recv(fd, &mut buf, MsgFlags::empty())) {
                Ok(n) => n,
                Err(nix::errno::Errno::EAGAIN) => continue,
                Err(e) => return Err(e.into()),
            };
            if says_ready(&String::from_utf8_lossy(&buf[..n]), pid) {
                return Ok(true);
            }
        }
    }
}

impl Drop for NotifyListener {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        if let Some(dir) = &self.dir {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Whether `state` holds `READY=1` from `pid`: its `MAINPID`, if named.
fn says_ready(state: &str, pid: u32) -> bool {
    let mut ready = false;
    let mut from = None;
    for line in state.lines() {
        match line.split_once('=') {
            Some(("READY", "1")) => ready = true,
            Some(("MAINPID", main)) => from = main.parse::<u32>().ok(),
            _ => {}
        }
    }
    ready && from.is_none_or(|main| main == pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_counts_only_from_the_process_it_names() {
        assert!(says_ready("READY=1", 7));
        assert!(says_ready("READY=1\nMAINPID=7", 7));
        assert!(says_ready("STATUS=up\nMAINPID=7\nREADY=1\n", 7));
        assert!(!says_ready("READY=1\nMAINPID=8", 7));
        assert!(!says_ready("STOPPING=1", 7));
        assert!(!says_ready("READY=0\nMAINPID=7", 7));
    }
}
