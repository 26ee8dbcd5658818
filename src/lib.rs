//! sockloop: a hand-rolled, single-threaded readiness reactor for TCP.
//!
//! Layers, each knowing only those below it: [`sys`] (the OS: epoll or
//! kqueue, sockets, the only `unsafe`), [`codec`] (sans-IO framing),
//! [`reactor`] (the event loop, connections and their buffers), [`app`]
//! (services on it) and [`bench`] (the load generator, a client on the same
//! reactor). [`stderr`] takes the diagnostics of them all, so that none ever
//! waits for stderr; [`tls`] makes TLS settings from files.

pub mod app;
pub mod bench;
pub mod codec;
pub mod reactor;
pub mod stderr;
pub mod sys;
#[cfg(feature = "tls")]
pub mod tls;
