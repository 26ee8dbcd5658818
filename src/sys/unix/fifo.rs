//! Opening a FIFO to write to without waiting for its reader.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Opens the FIFO at `path` for writing. Non-blocking, so that a FIFO
/// nobody reads fails at once (`ENXIO`) instead of hanging the open.
pub fn open_fifo_for_writing(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}
