//! Sans-IO framing: bytes in, frames out.
