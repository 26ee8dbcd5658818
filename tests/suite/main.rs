//! The integration tests, compiled as one binary: each file of this folder
//! is a module. One test crate instantiates the generic reactor and links
//! the dependencies once, where a crate per file did it 22 times.
//!
//! The tests of all modules share one process, and so its descriptor limit;
//! the two that need most of it (thousands of connections with both ends in
//! the test process) are binaries of their own: `tests/many_connections.rs`
//! and `tests/accept_storm.rs`.

#![deny(unsafe_code)]

#[path = "../common/mod.rs"]
mod common;
mod sim;

mod activation;
mod addresses;
mod bench;
mod binary;
mod charts;
mod client_hello;
mod codec_props;
mod echo;
mod federation;
mod framed;
mod fuzz_corpus;
mod hostile_peers;
mod hub;
mod lifecycle;
mod metrics;
mod mtls;
mod netns;
mod ordering;
mod partial_input;
mod past_one_machine;
mod proxy_listener;
mod proxy_protocol;
mod relay;
mod relay_upstreams;
mod reload;
mod sim_props;
mod sni_routing;
mod threads;
mod tls;
mod tour;
mod trust;
mod upgrade;
