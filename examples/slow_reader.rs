//! A client that sends and does not read: how much does an echo server take
//! before it stops reading (backpressure)?
//!
//! Run: `cargo run --release --example slow_reader -- ADDR [--hold SECONDS]`
//!
//! It writes as fast as the socket takes bytes, reading nothing back, until
//! no write has made progress for half a second: the server has stopped
//! reading, because its replies have nowhere to go. What it took by then is
//! the sum of the buffers on the way — this client's send buffer, the
//! server's receive buffer, whatever the server holds in user space (for
//! sockloop, up to `--high-watermark`), the server's send buffer and this
//! client's receive buffer. With `--hold` it then waits, so that `ss -tnm`
//! or sockloop's SIGUSR1 table can be looked at, and finally reads every
//! byte of the echo back and checks it.

#![deny(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::socket::{getsockopt, sockopt};

/// No progress for this long: the server has stopped reading.
const STALLED: Duration = Duration::from_millis(500);
/// Bounds, so that a server without backpressure cannot keep us here.
const MAX_BYTES: usize = 256 << 20;
const MAX_TIME: Duration = Duration::from_secs(20);
const CHUNK: usize = 64 << 10;

/// Byte `i` of the stream: a pattern with a prime period, checked on the way back.
fn byte(i: usize) -> u8 {
    (i % 251) as u8
}

fn kib(n: usize) -> String {
    format!("{:.0} KiB", n as f64 / 1024.0)
}

fn run(addr: &str, hold: Duration) -> io::Result<()> {
    let mut stream = TcpStream::connect(addr)?;
    println!(
        "client socket: SO_SNDBUF {}, SO_RCVBUF {} (as the kernel reports them)",
        kib(getsockopt(&stream, sockopt::SndBuf)?),
        kib(getsockopt(&stream, sockopt::RcvBuf)?)
    );
    stream.set_nonblocking(true)?;
    let chunk: Vec<u8> = (0..CHUNK + 251).map(byte).collect();
    let (start, mut progress, mut sent) = (Instant::now(), Instant::now(), 0);
    while progress.elapsed() < STALLED && sent < MAX_BYTES && start.elapsed() < MAX_TIME {
        let from = sent % 251;
        match stream.write(&chunk[from..from + CHUNK]) {
            Ok(n) => {
                sent += n;
                progress = Instant::now();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
    if progress.elapsed() < STALLED {
        println!(
            "sent {} and the server still reads: no backpressure seen",
            kib(sent)
        );
    } else {
        println!("sent {} before the server stopped taking more", kib(sent));
    }
    if !hold.is_zero() {
        println!(
            "holding for {} s: look at `ss -tnm` or send SIGUSR1 now",
            hold.as_secs()
        );
        thread::sleep(hold);
    }

    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.shutdown(Shutdown::Write)?;
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0;
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if let Some(bad) = (0..n).find(|&k| buf[k] != byte(got + k)) {
            return Err(io::Error::other(format!(
                "echo differs at byte {}",
                got + bad
            )));
        }
        got += n;
    }
    if got != sent {
        return Err(io::Error::other(format!(
            "echo ended after {got} of {sent} bytes"
        )));
    }
    println!(
        "read back {} of echo: every byte, in order, then the server's FIN",
        kib(got)
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args
        .first()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:7878".into());
    let hold = match args.iter().position(|a| a == "--hold") {
        Some(i) => match args.get(i + 1).and_then(|s| s.parse().ok()) {
            Some(secs) => Duration::from_secs(secs),
            None => {
                eprintln!("slow_reader: --hold takes a number of seconds");
                return ExitCode::FAILURE;
            }
        },
        None => Duration::ZERO,
    };
    match run(&addr, hold) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("slow_reader: {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}
