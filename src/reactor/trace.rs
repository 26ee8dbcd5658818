//! `--trace`: one stderr line per readiness event and I/O call, for people
//! studying the loop.

/// Writes one trace line when tracing is on; costs one branch when off.
macro_rules! trace_io {
    ($on:expr, $($arg:tt)*) => {
        if $on {
            $crate::stderr::line(format_args!("trace {}", format_args!($($arg)*)));
        }
    };
}
pub(crate) use trace_io;
