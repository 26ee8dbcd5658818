//! A real HAProxy in front of the servers a test starts, for the tests that
//! are ignored where none is installed (.ci/run installs it).

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{IO_TIMEOUT, wait_until};

/// HAProxy, run by a test, killed and its files removed however it ends.
pub struct Haproxy {
    child: Child,
    dir: PathBuf,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where haproxy is: on PATH, or in the sbin folders a user's PATH may lack.
fn find_haproxy() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("haproxy"))
        .find(|file| file.is_file())
}

impl Haproxy {
    /// Runs haproxy in the foreground with `config`, the text of a
    /// haproxy.cfg, its output to a log file beside it.
    pub fn start(config: &str) -> Haproxy {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let bin =
            find_haproxy().expect("haproxy on PATH or in /usr/sbin (apt-get install -y haproxy)");
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sockloop-haproxy-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config_path = dir.join("haproxy.cfg");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.join("haproxy.log")).unwrap();
        let child = Command::new(bin)
            .arg("-db")
            .arg("-f")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start haproxy");
        Haproxy { child, dir }
    }

    /// What it has written so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default()
    }

    /// A connection to its frontend on 127.0.0.1:`port`, once it listens.
    pub fn connect(&mut self, port: u16) -> TcpStream {
        let stream = wait_until("haproxy to listen", || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("haproxy exited ({status}):\n{}", self.log());
            }
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream
    }
}
