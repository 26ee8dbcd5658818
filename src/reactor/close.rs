//! Why a connection ended.

use std::fmt;
use std::io;

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer sent FIN and everything owed to it was flushed.
    Peer,
    /// A socket error: reset, broken pipe, and so on.
    Error(io::ErrorKind),
    /// The service closed it.
    Local,
    /// The peer broke the protocol (a frame error, say).
    Protocol,
    /// No traffic either way for the idle timeout.
    Idle,
    /// The peer took none of our pending output for the write timeout.
    WriteTimeout,
    /// The peer left a frame incomplete for the frame timeout.
    FrameTimeout,
    /// The peer did not send its PROXY header or finish its TLS handshake
    /// within the handshake timeout.
    HandshakeTimeout,
    /// Over the connection limit, or out of file descriptors: closed on accept.
    Limit,
    /// The server shut down.
    Shutdown,
    /// A TLS peer's stream ended without its close_notify (a TCP FIN
    /// alone): cut short, maybe by an attacker, so not a clean end.
    TlsTruncated,
    /// Shed, its backlog among the largest, when the output of all the
    /// reactor's connections passed [`Config::max_buffered`](super::Config::max_buffered).
    OverBudget,
    /// The kernel gave up on the peer (`ETIMEDOUT` on a read or write):
    /// keepalive probes went unanswered, or sent data stayed unacknowledged
    /// past the user timeout (or the kernel's own retransmission limit).
    TcpTimeout,
}

impl CloseReason {
    pub(crate) const COUNT: usize = 13;

    pub(crate) fn slot(self) -> usize {
        match self {
            CloseReason::Peer => 0,
            CloseReason::Error(_) => 1,
            CloseReason::Local => 2,
            CloseReason::Protocol => 3,
            CloseReason::Idle => 4,
            CloseReason::WriteTimeout => 5,
            CloseReason::Limit => 6,
            CloseReason::Shutdown => 7,
            CloseReason::FrameTimeout => 8,
            CloseReason::HandshakeTimeout => 9,
            CloseReason::TlsTruncated => 10,
            CloseReason::OverBudget => 11,
            CloseReason::TcpTimeout => 12,
        }
    }

    /// Why a read, write or pending socket error of `kind` ends a
    /// connection: a timeout there is the kernel's verdict on the peer.
    pub(crate) fn failed(kind: io::ErrorKind) -> CloseReason {
        match kind {
            io::ErrorKind::TimedOut => CloseReason::TcpTimeout,
            kind => CloseReason::Error(kind),
        }
    }

    /// Short names, in slot order, for summaries.
    pub(crate) const NAMES: [&'static str; Self::COUNT] = [
        "peer",
        "error",
        "local",
        "protocol",
        "idle",
        "write-timeout",
        "limit",
        "shutdown",
        "frame-timeout",
        "handshake-timeout",
        "tls-truncated",
        "over-budget",
        "tcp-timeout",
    ];
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Peer => f.write_str("peer closed"),
            CloseReason::Error(kind) => write!(f, "error: {kind}"),
            CloseReason::Local => f.write_str("closed by service"),
            CloseReason::Protocol => f.write_str("protocol error"),
            CloseReason::Idle => f.write_str("idle timeout"),
            CloseReason::WriteTimeout => f.write_str("write timeout"),
            CloseReason::FrameTimeout => f.write_str("frame timeout"),
            CloseReason::HandshakeTimeout => f.write_str("handshake timeout"),
            CloseReason::Limit => f.write_str("connection limit"),
            CloseReason::Shutdown => f.write_str("server shutdown"),
            CloseReason::TlsTruncated => f.write_str("TLS stream cut short (no close_notify)"),
            CloseReason::OverBudget => f.write_str("over the output budget"),
            CloseReason::TcpTimeout => f.write_str(
                "the kernel gave up on the peer (keepalive probes unanswered, \
                 or data unacknowledged past the user timeout)",
            ),
        }
    }
}
