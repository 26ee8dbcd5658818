//! Tokio TCP proxy: one task per client, `copy_bidirectional` to its upstream,
//! on a current_thread runtime — the baseline `benches/relay_peers.sh` puts
//! beside HAProxy and `sockloop relay`.
//!
//! Run: `cargo run --release --example proxy_tokio -- LISTEN UPSTREAM`
//! (e.g. `127.0.0.1:0 127.0.0.1:6379`); it prints `listening on ADDR` once
//! bound.
//!
//! Each task connects to the upstream, then `copy_bidirectional` moves bytes
//! both ways through two 8 KiB buffers (tokio's default), passes a FIN on once
//! the bytes before it are through, and returns when both directions are
//! done. Like `sockloop relay`, both sockets get TCP_NODELAY: a proxy that
//! held small writes back for Nagle's algorithm would add a round trip to
//! every request.

#![deny(unsafe_code)]

use std::env;
use std::io::{self, Write};
use std::process;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Builder;

fn main() -> io::Result<()> {
    let args: Vec<String> = env::args().skip(1).collect();
    let [listen, upstream] = args.as_slice() else {
        eprintln!("usage: proxy_tokio LISTEN UPSTREAM   (e.g. 127.0.0.1:0 127.0.0.1:6379)");
        process::exit(2)
    };
    // What `#[tokio::main(flavor = "current_thread")]` expands to.
    let runtime = Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(serve(listen, upstream.clone()))
}

async fn serve(listen: &str, upstream: String) -> io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;

    loop {
        match listener.accept().await {
            Ok((client, _peer)) => {
                let upstream = upstream.clone();
                // A failed upstream or a reset ends only this client's task.
                tokio::spawn(async move {
                    if let Err(e) = proxy(client, &upstream).await {
                        eprintln!("proxy_tokio: {e}");
                    }
                });
            }
            Err(e) => eprintln!("proxy_tokio: accept: {e}"),
        }
    }
}

/// Relays `client` to a new connection to `upstream` until both sides are done.
async fn proxy(mut client: TcpStream, upstream: &str) -> io::Result<()> {
    let mut server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}
