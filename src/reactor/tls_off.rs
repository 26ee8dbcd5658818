//! Without the `tls` feature no connection has a TLS stage: this type has
//! no values, so the code that would use one is never reached.

use std::io;

use crate::sys::os::Stream;

pub(crate) enum Tls {}

/// What a TLS listener would hand each connection it accepts: nothing can
/// be one in a build without TLS, so [`Serve::Tls`](super::Serve::Tls)
/// cannot be made.
#[derive(Clone)]
pub enum ServerTls {}

/// Whether a handshake failed for the client's certificate: never, here.
pub(crate) fn is_client_cert_refusal(_: &io::Error) -> bool {
    false
}

impl Tls {
    pub(crate) fn server(config: ServerTls) -> io::Result<Tls> {
        match config {}
    }

    pub(crate) fn handshake(&mut self, _: &impl Stream) -> io::Result<bool> {
        match *self {}
    }

    pub(crate) fn read(&mut self, _: &impl Stream, _: &mut [u8]) -> io::Result<usize> {
        match *self {}
    }

    pub(crate) fn write(&mut self, _: &impl Stream, _: &[u8]) -> io::Result<usize> {
        match *self {}
    }

    pub(crate) fn flush(&mut self, _: &impl Stream) -> io::Result<()> {
        match *self {}
    }

    pub(crate) fn end_unread(&self) -> bool {
        match *self {}
    }

    pub(crate) fn has_unsent(&self) -> bool {
        match *self {}
    }

    pub(crate) fn close(&mut self, _: &impl Stream) -> io::Result<()> {
        match *self {}
    }

    pub(crate) fn describe(&self) -> String {
        match *self {}
    }

    pub(crate) fn peer_identity(&self) -> Option<String> {
        match *self {}
    }
}
