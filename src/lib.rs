//! sockloop: a hand-rolled, single-threaded readiness reactor for TCP.
//!
//! Layers, each knowing only those below it: [`sys`] (the OS: epoll,
//! sockets, the only `unsafe`), [`codec`] (sans-IO framing), [`reactor`] (the
//! event loop, connections and their buffers), [`app`] (services on it) and
//! [`bench`] (the load generator, a client on the same reactor).

pub mod app;
pub mod bench;
pub mod codec;
pub mod reactor;
pub mod sys;
