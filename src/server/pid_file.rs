//! `--pid-file PATH`: this process's id, for scripts and for whoever sends
//! SIGUSR2. A process that takes over from this one writes its own there.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The pid file while this process runs: removed when dropped if it still
/// names this process (a successor's is left alone).
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Writes this process's id to `path`, whole or not at all: a reader
    /// never sees half of it (written beside it, then renamed over it).
    pub fn write(path: &Path) -> io::Result<PidFile> {
        let mut beside = path.as_os_str().to_owned();
        beside.push(format!(".{}.tmp", std::process::id()));
        let written = fs::write(&beside, own_id()).and_then(|()| fs::rename(&beside, path));
        if written.is_err() {
            let _ = fs::remove_file(&beside);
        }
        written
            .map_err(|e| io::Error::new(e.kind(), format!("--pid-file {}: {e}", path.display())))?;
        Ok(PidFile {
            path: path.to_owned(),
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if fs::read_to_string(&self.path).is_ok_and(|held| held == own_id()) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// What the file holds: this process's id and a newline.
fn own_id() -> String {
    format!("{}\n", std::process::id())
}
