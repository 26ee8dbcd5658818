//! README's "Past one machine", run as it is shown: its haproxy.cfg and its
//! command lines, with free ports in place of README's, a real HAProxy in
//! front of three echoes.

use std::net::SocketAddr;
use std::process::Stdio;

use nix::sys::signal::Signal;

use crate::common::haproxy::Haproxy;
use crate::common::{LogLines, Server, free_port, round_trip};

/// The ports README's section uses: HAProxy's frontend, then the echoes.
const FRONTEND_PORT: u16 = 7800;
const ECHO_PORTS: [u16; 3] = [7801, 7802, 7803];

/// Clients through HAProxy: two an echo, if leastconn spreads them evenly.
const CLIENTS: usize = 6;

/// The lines of the fenced block right after README's comment
/// `<!-- NAME: tests/suite/past_one_machine.rs ...`.
fn readme_block(name: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let marker = format!("<!-- {name}: tests/suite/past_one_machine.rs");
    let (_, after) = readme
        .split_once(&marker)
        .unwrap_or_else(|| panic!("no {marker:?} in README.md"));
    let mut lines = after.lines().skip(1);
    let fence = lines.next().unwrap_or_default();
    assert!(
        fence.starts_with("```"),
        "{marker:?} is followed by {fence:?}"
    );
    lines
        .take_while(|line| !line.starts_with("```"))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// `text` with `127.0.0.1:OLD` replaced by `127.0.0.1:NEW` for each pair,
/// every one of which must be in it.
fn on_ports(text: &str, ports: &[(u16, u16)]) -> String {
    ports.iter().fold(text.to_owned(), |text, (old, new)| {
        let old = format!("127.0.0.1:{old}");
        assert!(text.contains(&old), "no {old} in README's block:\n{text}");
        text.replace(&old, &format!("127.0.0.1:{new}"))
    })
}

/// Starts `sockloop ARGS...` as README's line says, at debug level so that
/// its log shows each connection. `Server` reads where it listens from its
/// first line, so `--listen` is handed over apart from the other arguments.
fn start_as_readme_says(line: &str) -> (Server, LogLines) {
    let mut args: Vec<&str> = line.split_whitespace().skip(1).collect();
    let at = args
        .iter()
        .position(|arg| *arg == "--listen")
        .unwrap_or_else(|| panic!("no --listen in {line:?}"));
    let listen = args.remove(at + 1);
    args.remove(at);
    let debug = ["env", "RUST_LOG=sockloop=debug"];
    let mut server = Server::start_on(&debug, &args, listen, Stdio::piped());
    let log = LogLines::new(server.take_stderr());
    (server, log)
}

/// The rows of `echo`'s connection table (SIGUSR1); its log's other lines
/// start with a `[time` prefix.
fn table_rows(echo: &Server, log: &mut LogLines) -> Vec<String> {
    let from = log.seen.len();
    echo.signal(Signal::SIGUSR1);
    log.wait_for(" connections");
    log.seen[from..]
        .iter()
        .filter(|line| line.starts_with('c'))
        .cloned()
        .collect()
}

// Ignored unless asked for, as .ci/run does where haproxy is installed.
#[test]
#[ignore = "needs haproxy (apt-get install -y haproxy)"]
fn readmes_haproxy_fleet_spreads_clients_and_each_echo_sees_their_own_address() {
    let frontend = free_port();
    let mut ports = vec![(FRONTEND_PORT, frontend)];
    ports.extend(ECHO_PORTS.map(|port| (port, free_port())));
    let config = on_ports(&readme_block("haproxy.cfg"), &ports);
    let commands = on_ports(&readme_block("servers"), &ports[1..]);
    assert!(
        commands
            .lines()
            .any(|line| line == "haproxy -f haproxy.cfg"),
        "{commands}"
    );
    let mut echoes: Vec<(Server, LogLines)> = commands
        .lines()
        .filter(|line| line.starts_with("sockloop "))
        .map(start_as_readme_says)
        .collect();
    assert_eq!(echoes.len(), ECHO_PORTS.len(), "{commands}");
    let mut haproxy = Haproxy::start(&config);

    // HAProxy checks each echo at once: before any client, a connection
    // is a check. It must pass the header's checks without a warning.
    for (_, log) in &mut echoes {
        let closed = log.wait_for("closed c");
        assert!(closed.contains("connection reset"), "{closed}");
    }

    let mut clients: Vec<_> = (0..CLIENTS).map(|_| haproxy.connect(frontend)).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        let message = format!("client {i} through haproxy");
        assert_eq!(round_trip(client, message.as_bytes()), message.as_bytes());
    }
    let tables: Vec<Vec<String>> = echoes
        .iter_mut()
        .map(|(echo, log)| table_rows(echo, log))
        .collect();
    for client in &clients {
        // Its own address, which only the PROXY header can have told.
        let me: SocketAddr = client.local_addr().unwrap();
        let rows = tables
            .iter()
            .flatten()
            .filter(|row| row.contains(&format!(" {me} ")));
        assert_eq!(rows.count(), 1, "{me} in {tables:#?}");
    }
    for table in &tables {
        assert!(!table.is_empty(), "an echo got no client: {tables:#?}");
    }
    for (_, log) in &echoes {
        let warnings: Vec<_> = log.seen.iter().filter(|l| l.contains("WARN")).collect();
        assert!(warnings.is_empty(), "{warnings:#?}");
    }
    assert!(!haproxy.log().contains("DOWN"), "{}", haproxy.log());
}
