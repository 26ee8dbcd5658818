//! sockloop: a hand-rolled, single-threaded readiness reactor for TCP.

pub mod codec;
pub mod sys;
