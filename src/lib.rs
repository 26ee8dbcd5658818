//! sockloop: a hand-rolled, single-threaded readiness reactor for TCP.
//!
//! Layers, each knowing only those below it: [`sys`] (the OS: epoll or
//! kqueue, sockets, the only `unsafe`), [`codec`] (sans-IO framing),
//! [`metrics`] (the Prometheus page and what a scrape is answered, sans-IO),
//! [`reactor`] (the event loop, connections and their buffers), [`app`]
//! (services on it) and [`mod@bench`] (the load generator, a client on the
//! same reactor). [`stderr`] takes the diagnostics of them all, so that none
//! ever waits for stderr; [`tls`] makes TLS settings from files.
//!
//! # Your first service
//!
//! A server on sockloop is a [`Service`](reactor::Service): plain code that
//! the [`Reactor`](reactor::Reactor) calls when something happens to a
//! connection. It never sees a file descriptor or a readiness flag; it sees a
//! [`ConnId`](reactor::ConnId), the bytes that arrived, and a
//! [`Context`](reactor::Context) through which it writes, closes, pauses
//! reading, connects and sets timers. Four steps:
//!
//! 1. Write the service: [`on_connect`](reactor::Service::on_connect) makes
//!    the per-connection state, [`on_data`](reactor::Service::on_data) gets
//!    every byte not yet consumed and returns how many it consumed. The rest
//!    (half a message, say) is offered again with more behind it.
//! 2. Make a reactor with a [`Config`](reactor::Config) (the defaults suit
//!    most servers) and the service.
//! 3. [`listen`](reactor::Reactor::listen) on an address; port 0 picks a free
//!    one and the address actually bound is returned.
//! 4. [`run`](reactor::Reactor::run) it. Another thread stops it through a
//!    [`Handle`](reactor::Handle); a program that wants SIGINT/SIGTERM to
//!    shut it down gracefully calls
//!    [`handle_signals`](reactor::Reactor::handle_signals) first.
//!
//! An echo that answers in capitals, and a client on another thread that
//! checks it and then stops the server:
//!
//! ```
//! use std::io::{Read, Write};
//! use std::net::TcpStream;
//! use std::time::Duration;
//!
//! use sockloop::reactor::{Addr, Config, ConnId, Context, ListenOptions, Reactor, Service};
//!
//! struct Shout;
//!
//! impl Service for Shout {
//!     type Conn = (); // no state per connection
//!
//!     fn on_connect(&mut self, _ctx: &mut Context<'_>, _id: ConnId, _peer: &Addr) {}
//!
//!     fn on_data(&mut self, ctx: &mut Context<'_>, id: ConnId, _: &mut (), input: &[u8]) -> usize {
//!         ctx.write(id, &input.to_ascii_uppercase());
//!         input.len() // all consumed
//!     }
//! }
//!
//! let mut reactor = Reactor::new(Config::default(), Shout)?;
//! let addr = reactor.listen(&"127.0.0.1:0".parse()?, &ListenOptions::default())?;
//! let server = addr.ip().expect("a TCP address");
//! let handle = reactor.handle();
//!
//! let client = std::thread::spawn(move || {
//!     let talk = || -> std::io::Result<Vec<u8>> {
//!         let mut stream = TcpStream::connect(server)?;
//!         stream.set_read_timeout(Some(Duration::from_secs(10)))?;
//!         stream.write_all(b"hello")?;
//!         let mut reply = [0; 5];
//!         stream.read_exact(&mut reply)?;
//!         Ok(reply.to_vec())
//!     };
//!     let reply = talk();
//!     handle.stop().expect("the reactor is running"); // whatever happened
//!     reply
//! });
//!
//! reactor.run()?; // returns once the client calls `stop`
//! assert_eq!(client.join().unwrap()?, b"HELLO");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Where to read on:
//!
//! - [`reactor::Service`]: every callback, with a line chat as its example;
//!   [`reactor::Context`]: what a callback can do, with a client that makes
//!   its own connections; [`reactor::Config`]: limits and timeouts;
//!   [`reactor::Handle`]: counters, the connection table and stopping, from
//!   another thread.
//! - [`codec`]: when the bytes carry messages (lines, length-prefixed or
//!   fixed-size frames), a decoder finds them in what `on_data` is given.
//! - [`app::echo`]: the real echo servers, a few lines each.
//! - [`threads`]: one reactor per thread (per core), each with its own
//!   listener, under a supervisor that takes the signals.
//! - `docs/tour.md` in the repository: from a blocking echo to this reactor,
//!   one runnable step at a time, then framing, backpressure, half-close,
//!   Nagle, socket buffers and debugging with `--trace`, `strace` and `ss`.

#![deny(unsafe_code)]
// Every public item says what it is: the library is read as much as it is
// called.
#![deny(missing_docs)]

pub mod app;
pub mod bench;
pub mod codec;
pub mod metrics;
pub mod reactor;
pub mod stderr;
pub mod sys;
pub mod threads;
#[cfg(feature = "tls")]
pub mod tls;
