//! The simplest TCP echo server: blocking std::net, one client at a time.
//!
//! Run: `cargo run --release --example echo_blocking -- [ADDR]`
//!
//! Every call here blocks the only thread until the kernel has something for
//! it. While one client is being served the loop is not back at `accept()`, so
//! a second client waits. Its `connect()` still succeeds (the kernel finishes
//! the handshake and parks the connection in the listen backlog) and its bytes
//! sit in the kernel's receive buffer; nobody answers until the first client
//! hangs up.

#![deny(unsafe_code)]

use std::env;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};

fn main() -> io::Result<()> {
    let addr = env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7878".into());
    let listener = TcpListener::bind(&addr)?;
    // Port 0 asks the kernel for a free port; report the one it chose.
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;

    for stream in listener.incoming() {
        match stream {
            // A failing client ends only its own session, never the server.
            Ok(stream) => {
                let _ = echo(stream);
            }
            Err(e) => eprintln!("accept: {e}"),
        }
    }
    Ok(())
}

/// Sends back everything the peer sends, until it closes its side.
fn echo(mut stream: TcpStream) -> io::Result<()> {
    // Without this, Nagle's algorithm may hold back small replies.
    stream.set_nodelay(true)?;
    let mut buf = [0u8; 16 * 1024];
    loop {
        // `read` returns 0 only at end of stream: the peer sent FIN. Everything
        // it sent before has already been echoed, so we can close.
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n])?;
    }
    // `stream` drops here, which closes the socket.
}
