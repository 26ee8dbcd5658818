//! Thread-per-connection echo server: blocking std::net, one OS thread each.
//!
//! Run: `cargo run --release --example echo_threads -- [ADDR]`
//!
//! The classic way to serve many clients with blocking sockets: the main
//! thread only accepts, and each connection gets its own thread that may block
//! as long as it likes. Simple and fast for a few hundred clients; the cost is
//! one kernel thread (and its stack) per connection, and a context switch
//! every time a different client has data.

#![deny(unsafe_code)]

use std::env;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

/// Per-connection buffer, on the thread's own stack: no heap allocation.
const BUF_SIZE: usize = 16 * 1024;

fn main() -> io::Result<()> {
    let addr = env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7878".into());
    let listener = TcpListener::bind(&addr)?;
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;

    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        // `thread::spawn` would panic if the OS refuses a new thread; the
        // builder hands us the error instead, and we drop just this client.
        let spawned = thread::Builder::new().spawn(move || {
            // A peer error (reset, ...) ends this thread only.
            let _ = echo(stream);
        });
        if let Err(e) = spawned {
            eprintln!("spawn: {e}");
        }
    }
    Ok(())
}

/// Sends back everything the peer sends, until it closes its side.
fn echo(mut stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = [0u8; BUF_SIZE];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(()); // FIN: all data echoed, close by dropping `stream`.
        }
        stream.write_all(&buf[..n])?;
    }
}
