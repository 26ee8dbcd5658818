//! TLS as a stage between a connection's socket and its service: ciphertext
//! in from the socket and plaintext up to the service; the service's
//! plaintext down and ciphertext out. rustls is a sans-IO state machine, so
//! the reactor keeps owning the socket, the buffers and the timing; this
//! stage only moves bytes through it.
//!
//! It reads and writes as a socket does — plaintext, `Ok(0)` at the end,
//! `WouldBlock` when there is nothing — so the reactor's read and send paths
//! are the same for plain and TLS connections. It returns a short read only
//! once rustls holds no more plaintext and the socket no more ciphertext,
//! which is what edge-triggered reading relies on.

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

use crate::sys::os::Stream;

/// What a TLS listener ([`Serve::Tls`](super::Serve::Tls)) hands each
/// connection it accepts: rustls's server configuration.
pub type ServerTls = Arc<ServerConfig>;

/// Ciphertext rustls may hold unsent before a write takes no more.
const BUFFER_LIMIT: usize = 64 << 10;

/// The TLS state of one connection.
pub(crate) struct Tls {
    conn: Connection,
    /// Our close_notify is queued.
    closing: bool,
}

/// A socket seen as `io::Read` / `io::Write`, for rustls.
struct Wire<'a, S>(&'a S);

impl<S: Stream> Read for Wire<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<S: Stream> Write for Wire<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// A client a server refused for its certificate (none, or one not signed
/// by the CA it trusts): the error inside the `io::Error`, so that the
/// reactor can count it apart from other failed handshakes.
#[derive(Debug)]
struct ClientCertRefused(rustls::Error);

impl std::fmt::Display for ClientCertRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            rustls::Error::NoCertificatesPresented => f.write_str("client certificate: none sent"),
            other => write!(f, "client certificate refused: {other}"),
        }
    }
}

impl std::error::Error for ClientCertRefused {}

/// Whether a handshake failed because the client's certificate was refused.
pub(crate) fn is_client_cert_refusal(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<ClientCertRefused>())
}

impl Tls {
    pub(crate) fn server(config: Arc<ServerConfig>) -> io::Result<Tls> {
        let conn = ServerConnection::new(config).map_err(tls_error)?;
        Ok(Tls::new(conn.into()))
    }

    pub(crate) fn client(config: Arc<ClientConfig>, name: ServerName<'static>) -> io::Result<Tls> {
        let conn = ClientConnection::new(config, name).map_err(tls_error)?;
        Ok(Tls::new(conn.into()))
    }

    fn new(mut conn: Connection) -> Tls {
        conn.set_buffer_limit(Some(BUFFER_LIMIT));
        Tls {
            conn,
            closing: false,
        }
    }

    /// Moves the handshake on with what has arrived: `Ok(true)` once it is
    /// done, `Ok(false)` while it waits for the peer; an error ends it.
    pub(crate) fn handshake(&mut self, socket: &impl Stream) -> io::Result<bool> {
        loop {
            self.flush(socket)?;
            if !self.conn.is_handshaking() {
                return Ok(true);
            }
            match self.conn.read_tls(&mut Wire(socket)) {
                Ok(0) => {
                    let e = "the peer closed the connection during the TLS handshake";
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, e));
                }
                Ok(_) => self.process(socket)?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    /// Decrypts what `read_tls` took in; an alert rustls queues for a bad
    /// record still goes out before the error.
    fn process(&mut self, socket: &impl Stream) -> io::Result<()> {
        let processed = self.conn.process_new_packets();
        let _ = self.flush(socket);
        processed.map(drop).map_err(|e| self.error(e))
    }

    /// What went wrong; on a server, a certificate error is about the
    /// client's certificate.
    fn error(&self, e: rustls::Error) -> io::Error {
        let server = matches!(self.conn, Connection::Server(_));
        match e {
            rustls::Error::NoCertificatesPresented | rustls::Error::InvalidCertificate(_)
                if server =>
            {
                io::Error::new(io::ErrorKind::PermissionDenied, ClientCertRefused(e))
            }
            e => tls_error(e),
        }
    }

    /// On a server that asked for client certificates: who the client's
    /// certificate, verified, says it is (its subject CN, or its first
    /// SAN; see [`Names::identity`](crate::codec::x509::Names::identity)).
    /// `None` on a client: the server's certificate may not have been
    /// verified (`--insecure`).
    pub(crate) fn peer_identity(&self) -> Option<String> {
        let Connection::Server(server) = &self.conn else {
            return None;
        };
        let cert = server.peer_certificates()?.first()?;
        crate::codec::x509::names(cert)?.identity()
    }

    /// Plaintext into `buf`, as a socket read: `Ok(0)` once the peer has
    /// finished with its close_notify, `WouldBlock` when nothing has come.
    /// A TCP FIN without close_notify is `UnexpectedEof`: the stream may
    /// have been cut short, so it must not look complete (what came before
    /// it is returned first).
    pub(crate) fn read(&mut self, socket: &impl Stream, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        loop {
            match self.conn.reader().read(&mut buf[filled..]) {
                Ok(0) => return Ok(filled),
                Ok(n) => {
                    filled += n;
                    if filled == buf.len() {
                        return Ok(filled);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // rustls says so again on the next read.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && filled > 0 => {
                    return Ok(filled);
                }
                Err(e) => return Err(e),
            }
            match self.conn.read_tls(&mut Wire(socket)) {
                // The TCP FIN: the reader says how the session ended.
                Ok(0) => {}
                Ok(_) => self.process(socket)?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && filled > 0 => return Ok(filled),
                Err(e) => return Err(e),
            }
        }
    }

    /// Encrypts what of `data` fits in rustls's buffer and sends what the
    /// socket takes; `WouldBlock` if none of it fits yet.
    pub(crate) fn write(&mut self, socket: &impl Stream, data: &[u8]) -> io::Result<usize> {
        self.flush(socket)?;
        let n = self.conn.writer().write(data)?;
        self.flush(socket)?;
        if n == 0 && !data.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    /// Sends the records rustls holds, as far as the socket takes them.
    pub(crate) fn flush(&mut self, socket: &impl Stream) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut Wire(socket)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Whether records wait for the socket to take them.
    pub(crate) fn has_unsent(&self) -> bool {
        self.conn.wants_write()
    }

    /// Queues our close_notify and sends what it can: the FIN goes once
    /// [`has_unsent`](Self::has_unsent) is false.
    pub(crate) fn close(&mut self, socket: &impl Stream) -> io::Result<()> {
        if !self.closing {
            self.closing = true;
            self.conn.send_close_notify();
        }
        self.flush(socket)
    }

    /// The protocol, cipher suite, server name and ALPN protocol, for the
    /// connection table and `--trace`.
    pub(crate) fn describe(&self) -> String {
        let mut out = String::new();
        if let Some(version) = self.conn.protocol_version() {
            out.push_str(version.as_str().unwrap_or("TLS"));
        }
        if let Some(suite) = self.conn.negotiated_cipher_suite() {
            out.push(' ');
            out.push_str(suite.suite().as_str().unwrap_or("?"));
        }
        if let Connection::Server(server) = &self.conn
            && let Some(name) = server.server_name()
        {
            out.push_str(" sni=");
            out.push_str(name);
        }
        // Last: `Context::alpn` reads it from the end.
        if let Some(alpn) = self.conn.alpn_protocol() {
            out.push_str(" alpn=");
            out.push_str(&String::from_utf8_lossy(alpn));
        }
        out
    }
}
