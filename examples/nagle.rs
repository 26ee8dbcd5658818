//! Nagle's algorithm meets a delayed acknowledgement: the write-write-read
//! trap.
//!
//! Run: `cargo run --release --example nagle -- ADDR [--nodelay]`
//!
//! ADDR is an echo of length-prefixed frames, such as `sockloop echo
//! --framing len:u16be`. Each request is written in two pieces — the 2-byte
//! length, then the 100-byte body — and then the client waits for the echo.
//! With Nagle's algorithm on (the default for a new socket), the body is
//! held back until the length's segment has been acknowledged. The server
//! has nothing to answer yet (half a frame), so it acknowledges only when
//! its delayed-ACK timer fires: every request waits for that timer. With
//! `--nodelay` (TCP_NODELAY) the body leaves at once. Writing each request
//! in one call avoids the trap as well.

#![deny(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const REQUESTS: usize = 20;
const BODY: usize = 100;

fn run(addr: &str, nodelay: bool) -> io::Result<()> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(nodelay)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let body = [b'x'; BODY];
    let mut times = Vec::with_capacity(REQUESTS);
    let mut echo = [0u8; 2 + BODY];
    for _ in 0..REQUESTS {
        let start = Instant::now();
        stream.write_all(&(BODY as u16).to_be_bytes())?; // write
        stream.write_all(&body)?; // write
        stream.read_exact(&mut echo)?; // read
        times.push(start.elapsed());
    }
    times.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "TCP_NODELAY {}: {REQUESTS} requests written as 2 + {BODY} bytes: \
         median round trip {:.0} µs, max {:.0} µs",
        if nodelay { "on" } else { "off (Nagle on)" },
        us(times[REQUESTS / 2]),
        us(times[REQUESTS - 1])
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args
        .first()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:7878".into());
    let nodelay = args.iter().any(|a| a == "--nodelay");
    match run(&addr, nodelay) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nagle: {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}
