//! Zero-copy relaying: socket → pipe → socket with splice(2), so payload
//! bytes never enter user space.

use std::io;
use std::os::fd::OwnedFd;

use nix::fcntl::{OFlag, SpliceFFlags, splice};
use nix::unistd::pipe2;

use crate::sys::Socket;
use crate::sys::os::Splice;
use crate::sys::unix::retry;

/// Whether [`Pipe`]s can be made on this OS.
pub const SPLICE: bool = true;

/// A non-blocking pipe used as the buffer between two sockets; it counts
/// the bytes it holds (its capacity, 64 KiB by default, bounds them).
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    len: usize,
}

const FLAGS: SpliceFFlags = SpliceFFlags::SPLICE_F_NONBLOCK.union(SpliceFFlags::SPLICE_F_MOVE);

impl Splice for Pipe {
    type Socket = Socket;

    fn new() -> io::Result<Pipe> {
        let (read, write) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        Ok(Pipe {
            read,
            write,
            len: 0,
        })
    }

    fn len(&self) -> usize {
        self.len
    }

    fn fill_from(&mut self, from: &Socket, max: usize) -> io::Result<usize> {
        let n = retry(|| splice(from, None, &self.write, None, max, FLAGS))?;
        self.len += n;
        Ok(n)
    }

    fn drain_into(&mut self, to: &Socket) -> io::Result<usize> {
        let n = retry(|| splice(&self.read, None, to, None, self.len, FLAGS))?;
        self.len -= n;
        Ok(n)
    }
}
