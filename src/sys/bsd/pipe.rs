//! No splice(2) off Linux: a relay copies through user space instead.

use std::convert::Infallible;
use std::io;

use crate::sys::Socket;
use crate::sys::os::Splice;

/// Whether [`Pipe`]s can be made on this OS.
pub const SPLICE: bool = false;

/// Never made here: it exists so that code with a splice path compiles on
/// every OS, and `Pipe::new` says why there is none.
pub struct Pipe {
    never: Infallible,
}

impl Splice for Pipe {
    type Socket = Socket;

    fn new() -> io::Result<Pipe> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "splice(2) is Linux-only",
        ))
    }

    fn len(&self) -> usize {
        match self.never {}
    }

    fn fill_from(&mut self, _: &Socket, _: usize) -> io::Result<usize> {
        match self.never {}
    }

    fn drain_into(&mut self, _: &Socket) -> io::Result<usize> {
        match self.never {}
    }
}
