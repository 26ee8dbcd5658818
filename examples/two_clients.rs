//! Two clients against one echo server: does the second get its echo while
//! the first is still connected?
//!
//! Run: `cargo run --release --example two_clients -- ADDR`
//!
//! Client A connects, sends a line and reads its echo, and stays connected.
//! Client B then connects and sends a line, and waits up to one second for
//! the echo. If none comes, A hangs up and B waits again (up to five
//! seconds). Against `echo_blocking` B hears nothing until A has gone: the
//! server is inside A's read loop, not at `accept()`. Against
//! `echo_threads` (or any server of the later steps) B is answered at once.
//! The kernel completes B's handshake either way; B's `connect()` succeeds
//! and its bytes wait in the kernel until someone reads them.

#![deny(unsafe_code)]

use std::env;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// How long B waits for its echo while A is connected.
const PATIENCE: Duration = Duration::from_secs(1);
/// How long B waits once A has gone; after that the server is broken.
const LAST_WAIT: Duration = Duration::from_secs(5);

/// Reads `n` bytes within `timeout`; `Ok(None)` if they did not all come.
fn read_within(stream: &mut TcpStream, n: usize, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
    let deadline = Instant::now() + timeout;
    let mut got = vec![0; n];
    let mut filled = 0;
    while filled < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut got[filled..]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed",
                ));
            }
            Ok(k) => filled += k,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(Some(got))
}

/// A short time in µs, a long one in ms or s.
fn ms(d: Duration) -> String {
    match d.as_micros() {
        us if us < 10_000 => format!("{us} µs"),
        us if us < 1_000_000 => format!("{:.1} ms", us as f64 / 1e3),
        _ => format!("{:.1} s", d.as_secs_f64()),
    }
}

fn run(addr: &str) -> io::Result<bool> {
    let mut a = TcpStream::connect(addr)?;
    let start = Instant::now();
    a.write_all(b"hello from A\n")?;
    match read_within(&mut a, 13, LAST_WAIT)? {
        Some(_) => println!("A: connected, echo after {}", ms(start.elapsed())),
        None => {
            println!(
                "A: no echo within {}: is ADDR an echo server?",
                ms(LAST_WAIT)
            );
            return Ok(false);
        }
    }

    let mut b = TcpStream::connect(addr)?;
    println!("B: connected (the kernel completed the handshake)");
    let start = Instant::now();
    b.write_all(b"hello from B\n")?;
    if read_within(&mut b, 13, PATIENCE)?.is_some() {
        println!(
            "B: echo after {}, with A still connected",
            ms(start.elapsed())
        );
        a.shutdown(Shutdown::Both)?;
        println!("A: closed");
        return Ok(true);
    }
    println!("B: no echo within {} while A is connected", ms(PATIENCE));
    a.shutdown(Shutdown::Both)?;
    drop(a);
    let closed = Instant::now();
    println!("A: closed");
    match read_within(&mut b, 13, LAST_WAIT)? {
        Some(_) => {
            println!("B: echo {} after A closed", ms(closed.elapsed()));
            Ok(true)
        }
        None => {
            println!("B: still no echo {} after A closed", ms(LAST_WAIT));
            Ok(false)
        }
    }
}

fn main() -> ExitCode {
    let addr = env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7878".into());
    match run(&addr) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("two_clients: {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}
