//! Services built on the reactor.

pub mod echo;
mod frames;
pub mod hub;
pub mod relay;
