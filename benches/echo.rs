//! Echo over loopback, in-process: sockloop's `Echo` against a tokio
//! `current_thread` echo (one task per connection, 4 KiB buffer, as
//! `examples/echo_tokio.rs`), each server on its own thread.
//!
//! Both groups drive the server with the same blocking std client from the
//! bench thread: write one message on every connection, then read every echo
//! back and compare it. `rtt_64B` is that with one connection (a round trip);
//! `64conns_4KiB` has 64 connections, so one turn of the server sees many
//! ready sockets at once.

#![deny(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sockloop::app::echo::Echo;
use sockloop::reactor::{Config, Reactor};
use sockloop::sys::ListenOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream as TokioStream};

/// A hang fails the bench instead of stalling it.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Per-task buffer of the tokio echo, as in `examples/echo_tokio.rs`.
const TOKIO_BUF: usize = 4096;

#[derive(Clone, Copy)]
enum Kind {
    Sockloop,
    TokioCurrentThread,
}

impl Kind {
    const ALL: [Kind; 2] = [Kind::Sockloop, Kind::TokioCurrentThread];

    fn name(self) -> &'static str {
        match self {
            Kind::Sockloop => "sockloop",
            Kind::TokioCurrentThread => "tokio_current_thread",
        }
    }
}

/// An echo server on 127.0.0.1, port 0, on its own thread until `stop`.
struct Server {
    addr: SocketAddr,
    stop: Box<dyn FnOnce()>,
    thread: JoinHandle<()>,
}

impl Server {
    fn start(kind: Kind) -> Server {
        match kind {
            Kind::Sockloop => Self::sockloop(),
            Kind::TokioCurrentThread => Self::tokio_current_thread(),
        }
    }

    fn sockloop() -> Server {
        let (tx, rx) = mpsc::channel();
        let thread = thread::spawn(move || {
            let mut reactor = Reactor::new(Config::default(), Echo).expect("reactor");
            let loopback = SocketAddr::from(([127, 0, 0, 1], 0)).into();
            let addr = reactor
                .listen(&loopback, &ListenOptions::default())
                .expect("listen")
                .ip()
                .expect("an IP address");
            tx.send((addr, reactor.handle()))
                .expect("bench thread waits");
            reactor.run().expect("reactor run");
        });
        let (addr, handle) = rx.recv().expect("reactor started");
        Server {
            addr,
            stop: Box::new(move || handle.stop().expect("stop reactor")),
            thread,
        }
    }

    fn tokio_current_thread() -> Server {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("listen");
        let addr = listener.local_addr().expect("local addr");
        let accept = runtime.spawn(accept_loop(listener));
        let abort = accept.abort_handle();
        // Aborting the accept loop ends `block_on`; dropping the runtime then
        // drops every connection task with its socket.
        let thread = thread::spawn(move || {
            let _ = runtime.block_on(accept);
        });
        Server {
            addr,
            stop: Box::new(move || abort.abort()),
            thread,
        }
    }

    fn stop(self) {
        (self.stop)();
        self.thread.join().expect("server thread");
    }
}

async fn accept_loop(listener: TcpListener) {
    loop {
        let (socket, _) = listener.accept().await.expect("accept");
        tokio::spawn(async move {
            let _ = echo(socket).await;
        });
    }
}

async fn echo(mut socket: TokioStream) -> io::Result<()> {
    socket.set_nodelay(true)?;
    let mut buf = vec![0u8; TOKIO_BUF];
    loop {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        socket.write_all(&buf[..n]).await?;
    }
}

/// `conns` blocking connections, each with its own message of `size` bytes
/// (distinct per connection, so an echo on the wrong socket is caught).
struct Clients {
    conns: Vec<(TcpStream, Vec<u8>)>,
    back: Vec<u8>,
}

impl Clients {
    fn connect(addr: SocketAddr, conns: usize, size: usize) -> Clients {
        let conns = (0..conns)
            .map(|i| {
                let stream = TcpStream::connect(addr).expect("connect");
                stream.set_nodelay(true).unwrap();
                stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
                let msg = (0..size).map(|j| (i * 131 + j * 7) as u8).collect();
                (stream, msg)
            })
            .collect();
        Clients {
            conns,
            back: vec![0; size],
        }
    }

    /// One message out on every connection, then every echo in. All sends go
    /// first so the server has them all in flight (64 × 4 KiB fits easily in
    /// the socket buffers, so this cannot deadlock).
    fn round(&mut self) {
        for (stream, msg) in &mut self.conns {
            stream.write_all(msg).expect("write");
        }
        for (stream, msg) in &mut self.conns {
            stream.read_exact(&mut self.back).expect("read echo");
            assert!(self.back == *msg, "echo differs from what was sent");
        }
    }
}

/// One group: each server started once, benched with the same client, stopped.
fn compare(c: &mut Criterion, group: &str, conns: usize, size: usize) {
    let mut group = c.benchmark_group(group);
    group.throughput(Throughput::Elements(conns as u64));
    for kind in Kind::ALL {
        let server = Server::start(kind);
        let mut clients = Clients::connect(server.addr, conns, size);
        group.bench_function(kind.name(), |b| b.iter(|| clients.round()));
        drop(clients);
        server.stop();
    }
    group.finish();
}

fn rtt(c: &mut Criterion) {
    compare(c, "echo/rtt_64B", 1, 64);
}

fn many_conns(c: &mut Criterion) {
    compare(c, "echo/64conns_4KiB", 64, 4096);
}

criterion_group! {
    name = benches;
    // Short, so `cargo bench --bench echo` takes about a minute.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = rtt, many_conns
}
criterion_main!(benches);
