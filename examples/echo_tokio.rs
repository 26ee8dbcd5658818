//! Tokio echo server: one task per connection, in either runtime flavour.
//!
//! Run: `cargo run --release --example echo_tokio -- [ADDR] [--flavor current_thread|multi_thread]`
//! (default flavour: current_thread). `ECHO_BUF` sets the per-task buffer
//! size in bytes (default 4096).
//!
//! The code of each task reads like the blocking thread-per-connection server,
//! but `.await` hands the thread back to the runtime instead of blocking it.
//! The runtime waits on epoll for all sockets at once and resumes whichever
//! task can make progress. `current_thread` runs every task on this one
//! thread, like a hand-rolled reactor; `multi_thread` spreads tasks over one
//! worker per core.

#![deny(unsafe_code)]

use std::env;
use std::io::{self, Write};
use std::process;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Builder;

const DEFAULT_BUF: usize = 4096;

fn main() -> io::Result<()> {
    let mut addr = String::from("127.0.0.1:7878");
    let mut multi_thread = false;
    let mut args = env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--flavor" => match args.next().as_deref() {
                Some("current_thread") => multi_thread = false,
                Some("multi_thread") => multi_thread = true,
                _ => usage("--flavor takes current_thread or multi_thread"),
            },
            _ => addr = arg,
        }
    }
    // The buffer lives as long as the connection, so it sets the memory an
    // idle connection costs: this is what a 4 KiB vs 64 KiB run compares.
    let buf_size = match env::var("ECHO_BUF") {
        Ok(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => usage("ECHO_BUF must be a positive number of bytes"),
        },
        Err(_) => DEFAULT_BUF,
    };

    // What `#[tokio::main(flavor = "...")]` expands to, chosen at run time.
    let runtime = if multi_thread {
        Builder::new_multi_thread().enable_all().build()?
    } else {
        Builder::new_current_thread().enable_all().build()?
    };
    runtime.block_on(serve(&addr, buf_size))
}

async fn serve(addr: &str, buf_size: usize) -> io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;

    loop {
        match listener.accept().await {
            Ok((socket, _peer)) => {
                // A task is a few hundred bytes plus its buffer, far cheaper
                // than a thread. A peer error ends only its own task.
                tokio::spawn(async move {
                    let _ = echo(socket, buf_size).await;
                });
            }
            Err(e) => eprintln!("accept: {e}"),
        }
    }
}

/// Sends back everything the peer sends, until it closes its side.
async fn echo(mut socket: TcpStream, buf_size: usize) -> io::Result<()> {
    socket.set_nodelay(true)?;
    let mut buf = vec![0u8; buf_size];
    loop {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            return Ok(()); // FIN: all data echoed; dropping `socket` closes it.
        }
        socket.write_all(&buf[..n]).await?;
    }
}

fn usage(msg: &str) -> ! {
    eprintln!("echo_tokio: {msg}");
    eprintln!("usage: [ECHO_BUF=bytes] echo_tokio [ADDR] [--flavor current_thread|multi_thread]");
    process::exit(2)
}
