//! Services built on the reactor.

pub mod echo;
pub mod hub;
pub mod relay;
