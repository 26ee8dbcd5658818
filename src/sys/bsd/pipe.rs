//! No splice(2) off Linux: a relay copies through user space instead.

use std::convert::Infallible;
use std::io;

use crate::sys::Socket;

/// Whether [`Pipe::new`] works on this OS.
pub const SPLICE: bool = false;

/// Never made here: it exists so that code with a splice path compiles on
/// every OS, and [`Pipe::new`] says why there is none.
pub struct Pipe {
    never: Infallible,
}

impl Pipe {
    pub fn new() -> io::Result<Pipe> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "splice(2) is Linux-only",
        ))
    }

    pub fn len(&self) -> usize {
        match self.never {}
    }

    pub fn is_empty(&self) -> bool {
        match self.never {}
    }

    pub fn fill_from(&mut self, _: &Socket, _: usize) -> io::Result<usize> {
        match self.never {}
    }

    pub fn drain_into(&mut self, _: &Socket) -> io::Result<usize> {
        match self.never {}
    }
}
