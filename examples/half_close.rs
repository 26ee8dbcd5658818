//! Half-close, and why closing with unread input sends a reset (RST).
//!
//! Run: `cargo run --release --example half_close`
//!
//! 1. Half-close: the client sends a request and then `shutdown(Write)`
//!    (a FIN: "I have no more to send"), and keeps reading. The server reads
//!    to the end of the stream (`read` returns 0), answers, and closes. The
//!    answer still arrives after the client's own FIN.
//! 2. Close after reading everything: the peer reads the end of the stream
//!    (0), a clean FIN.
//! 3. Close with unread input: the server closes without reading what the
//!    client sent. The kernel cannot deliver those bytes any more, so it
//!    says so with a reset instead of a FIN, and the client's next read
//!    fails with "connection reset" — even if the server had answered
//!    before closing, that answer may be lost with it. A server that wants
//!    a clean close reads (and drops) what is left first, which is what
//!    sockloop's reactor does when it shuts a connection down.

#![deny(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

fn pair(listener: &TcpListener) -> io::Result<(TcpStream, TcpStream)> {
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    for s in [&client, &server] {
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
    }
    Ok((client, server))
}

/// What the client's next read says.
fn next_read(client: &mut TcpStream) -> String {
    let mut buf = [0u8; 64];
    match client.read(&mut buf) {
        Ok(0) => "0 bytes: end of stream (FIN)".to_owned(),
        Ok(n) => format!("{n} bytes"),
        Err(e) => format!("error: {e}"),
    }
}

fn main() -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;

    // 1. Half-close.
    let (mut client, mut server) = pair(&listener)?;
    let answer = thread::spawn(move || -> io::Result<()> {
        let mut request = Vec::new();
        server.read_to_end(&mut request)?; // until the client's FIN
        write!(server, "got {} bytes", request.len())?;
        Ok(()) // dropping `server` closes it: FIN
    });
    client.write_all(b"request")?;
    client.shutdown(Shutdown::Write)?;
    let mut reply = String::new();
    client.read_to_string(&mut reply)?;
    answer.join().expect("server thread")?;
    println!("1. client sent 7 bytes and FIN, then read {reply:?} and the server's FIN");

    // 2. Everything read, then close.
    let (mut client, mut server) = pair(&listener)?;
    client.write_all(b"hello!")?;
    server.read_exact(&mut [0; 6])?;
    drop(server);
    println!(
        "2. server read all 6 bytes, closed; client's next read: {}",
        next_read(&mut client)
    );

    // 3. Closed with input unread.
    let (mut client, server) = pair(&listener)?;
    client.write_all(b"hello!")?;
    server.peek(&mut [0; 1])?; // the bytes have arrived, and stay unread
    drop(server);
    println!(
        "3. server closed with 6 bytes unread; client's next read: {}",
        next_read(&mut client)
    );
    Ok(())
}
