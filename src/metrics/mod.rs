//! The counters over HTTP, in the Prometheus text format, knowing nothing
//! of sockets or the reactor: [`MetricsText`] writes the page (the
//! reactor's counters, then a service's own families), and `responder`
//! decides what a metrics connection is answered from the bytes it sent
//! (its request head read by [`codec::http`](crate::codec::http)). The
//! reactor's side of a metrics connection — admitting it, its deadline,
//! handing its bytes over and queuing the answer — is `reactor/scrape.rs`.

pub(crate) mod responder;
mod text;

pub use text::{MetricKind, MetricsText};
