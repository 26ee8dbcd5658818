//! The operating system: the one place that calls it, and the one place for `unsafe`.
