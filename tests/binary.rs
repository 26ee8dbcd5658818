//! The built `sockloop` binary, driven by an independent client: Python's socket module.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Kills and reaps the server however the test ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `sockloop ARGS --listen 127.0.0.1:0` and returns it with the port it printed.
fn start(args: &[&str]) -> (Server, u16) {
    let child = Command::new(env!("CARGO_BIN_EXE_sockloop"))
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sockloop");
    let mut server = Server(child);
    let stdout = server.0.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let port = line
        .trim()
        .strip_prefix("listening on 127.0.0.1:")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .expect("port");
    (server, port)
}

const PY_ECHO_CLIENT: &str = r#"
import hashlib, os, socket, sys, threading
port, size = int(sys.argv[1]), int(sys.argv[2])
data = os.urandom(size)
s = socket.create_connection(("127.0.0.1", port), timeout=30)
def send():
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send)
t.start()
got = bytearray()
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    got += chunk
t.join()
s.close()
if got != data:
    sys.exit(f"echo mismatch: sent {len(data)} bytes, got {len(got)}")
print("ok", len(got), hashlib.sha256(got).hexdigest())
"#;

#[test]
fn python_client_echoes_a_megabyte_through_the_binary() {
    let (_server, port) = start(&["echo"]);
    let out = Command::new("python3")
        .args(["-c", PY_ECHO_CLIENT, &port.to_string(), "1000000"])
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client failed: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("ok 1000000 "), "{stdout}");
}
