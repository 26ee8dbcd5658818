//! The TLS baseline: a tokio-rustls echo server, one task per connection on
//! tokio's current_thread runtime.
//!
//! Run: `cargo run --release --example echo_tokio_rustls -- ADDR CERT.pem KEY.pem`
//! (`sockloop cert --out DIR` writes a pair).
//!
//! It takes its rustls settings from `sockloop::tls::server_config`, the
//! ones `sockloop echo --tls-cert` uses (same provider, versions and
//! suites), so a comparison measures the two event loops, not two TLS
//! configurations.

#![deny(unsafe_code)]

use std::env;
use std::io::{self, Write};
use std::path::Path;
use std::process;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// One TLS record's worth of plaintext.
const BUF: usize = 16 << 10;

fn main() -> io::Result<()> {
    let args: Vec<String> = env::args().skip(1).collect();
    let [addr, cert, key] = args.as_slice() else {
        eprintln!("usage: echo_tokio_rustls ADDR CERT.pem KEY.pem");
        process::exit(2);
    };
    let config = sockloop::tls::server_config(Path::new(cert), Path::new(key), &[])?;
    let acceptor = TlsAcceptor::from(config);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(addr, acceptor))
}

async fn serve(addr: &str, acceptor: TlsAcceptor) -> io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    println!("listening on {}", listener.local_addr()?);
    io::stdout().flush()?;
    loop {
        match listener.accept().await {
            Ok((socket, _peer)) => {
                let acceptor = acceptor.clone();
                // A failed handshake or a reset ends only its own task.
                tokio::spawn(async move {
                    let _ = echo(acceptor, socket).await;
                });
            }
            Err(e) => eprintln!("accept: {e}"),
        }
    }
}

/// Handshakes, then sends back all the plaintext the peer sends until it
/// closes; then close_notify.
async fn echo(acceptor: TlsAcceptor, socket: TcpStream) -> io::Result<()> {
    socket.set_nodelay(true)?;
    let mut tls = acceptor.accept(socket).await?;
    let mut buf = vec![0u8; BUF];
    loop {
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            return tls.shutdown().await;
        }
        tls.write_all(&buf[..n]).await?;
    }
}
