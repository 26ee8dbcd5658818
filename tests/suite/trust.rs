//! Who a server believes and how much it lets one client do:
//! `--proxy-protocol-from` (PROXY headers believed only from the listed
//! balancers), `--max-conns-per-source` and `--conn-rate-per-source`, and
//! the bounded table behind them. Clients bind 127.0.0.2, 127.0.0.3, ...
//! as their source: on Linux the whole of 127/8 is loopback.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Stdio;

use nix::sys::signal::Signal;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
use sockloop::codec::proxy;

use crate::common::{IO_TIMEOUT, LogLines, Server, wait_until};
use crate::metrics::{scrape, value, with_metrics};

/// A connection to `server` from `source`.
fn connect_from(source: Ipv4Addr, server: SocketAddr) -> TcpStream {
    let SocketAddr::V4(server) = server else {
        panic!("an IPv4 server, not {server}");
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .unwrap();
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(source, 0)),
    )
    .unwrap_or_else(|e| panic!("bind {source}: {e}"));
    connect(fd.as_raw_fd(), &SockaddrIn::from(server)).unwrap();
    let stream = TcpStream::from(fd);
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Whether the server serves `stream`: `ping\n` comes back, rather than
/// the connection being closed.
fn served(stream: &mut TcpStream) -> bool {
    if stream.write_all(b"ping\n").is_err() {
        return false;
    }
    let mut back = [0; 5];
    match stream.read_exact(&mut back) {
        Ok(()) => {
            assert_eq!(&back, b"ping\n");
            true
        }
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset
            ) =>
        {
            false
        }
        Err(e) => panic!("neither served nor closed: {e}"),
    }
}

/// `stream`, to a PROXY listener, after a v1 header naming `client`.
fn introduced(mut stream: TcpStream, client: &str, server: SocketAddr) -> TcpStream {
    let mut header = Vec::new();
    proxy::encode_v1(client.parse().unwrap(), server, &mut header);
    stream.write_all(&header).unwrap();
    stream
}

fn started(args: &[&str]) -> (Server, LogLines) {
    let mut server = Server::start(&[], args, Stdio::piped());
    let log = LogLines::new(server.take_stderr());
    (server, log)
}

const OUTSIDER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const BALANCER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "binds 127.0.0.2 and 127.0.0.3, loopback on Linux only"
)]
fn a_proxy_header_is_believed_from_a_listed_source_and_refused_from_another() {
    let (server, mut log) = started(&[
        "echo",
        "--framing",
        "lines",
        "--max-frame",
        "64",
        "--proxy-protocol-from",
        "127.0.0.3/32",
    ]);
    // From outside the list, a header is refused, naming the real source.
    let mut outsider = introduced(
        connect_from(OUTSIDER, server.addr()),
        "1.3.3.7:31337",
        server.addr(),
    );
    assert!(!served(&mut outsider));
    let line = log.wait_for("not in --proxy-protocol-from");
    assert!(
        line.contains(" from 127.0.0.2:") && !line.contains("1.3.3.7"),
        "{line}"
    );

    // From outside the list with no header: a direct client, as itself.
    let mut direct = connect_from(OUTSIDER, server.addr());
    assert!(served(&mut direct));

    // From the list: the client it names is the peer.
    let mut balanced = introduced(
        connect_from(BALANCER, server.addr()),
        "1.3.3.7:31337",
        server.addr(),
    );
    assert!(served(&mut balanced));
    server.signal(Signal::SIGUSR1);
    log.wait_for(" 1.3.3.7:31337 ");
    log.wait_for(" connections"); // the table's last line
    let row = |peer: &str| {
        log.seen
            .iter()
            .any(|l| l.contains(peer) && l.contains(" open"))
    };
    assert!(
        row(" 1.3.3.7:31337 ") && row(" 127.0.0.2:"),
        "{:?}",
        log.seen
    );

    // A warn line about it names both the client and the balancer.
    balanced.write_all(&[b'x'; 100]).unwrap();
    let line = log.wait_for("1.3.3.7:31337 via 127.0.0.3:");
    assert!(line.contains("WARN") && line.contains("closing"), "{line}");
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "binds 127.0.0.2, loopback on Linux only"
)]
fn the_connection_past_a_source_s_limit_is_refused_while_another_source_is_served() {
    let (server, mut log) = started(&["echo", "--max-conns-per-source", "2"]);
    let mut held: Vec<TcpStream> = (0..2).map(|_| server.connect()).collect();
    for stream in &mut held {
        assert!(served(stream));
    }
    assert!(!served(&mut server.connect()));
    log.wait_for("refused 1 connection over --max-conns-per-source 2 (from 127.0.0.1:");
    assert!(served(&mut connect_from(OUTSIDER, server.addr())));
    // One of the two gone, 127.0.0.1 has room again.
    drop(held.pop());
    wait_until("room for 127.0.0.1 again", || {
        let mut stream = server.connect();
        served(&mut stream).then_some(stream)
    });
}

#[test]
fn behind_a_trusted_balancer_the_limit_is_the_named_client_s() {
    let (server, mut log) = started(&[
        "echo",
        "--proxy-protocol-from",
        "127.0.0.1",
        "--max-conns-per-source",
        "1",
    ]);
    let addr = server.addr();
    let mut first = introduced(server.connect(), "198.51.100.1:1000", addr);
    assert!(served(&mut first));
    let mut same = introduced(server.connect(), "198.51.100.1:1001", addr);
    assert!(!served(&mut same));
    let mut other = introduced(server.connect(), "198.51.100.2:1000", addr);
    assert!(served(&mut other));
    log.wait_for(
        "refused 1 connection over --max-conns-per-source 1 (from 198.51.100.1:1001 via 127.0.0.1:",
    );
}

#[test]
fn a_source_opening_connections_faster_than_its_rate_is_refused_and_counted() {
    let (server, metrics, mut log) = with_metrics(&["echo", "--conn-rate-per-source", "2/s"]);
    // A burst of two, then two a second: connections one after the other
    // soon find the bucket empty (unless each took half a second, and the
    // bound of 200 attempts stops the loop then).
    let mut outcomes = Vec::new();
    while outcomes.len() < 200 && outcomes.iter().all(|served| *served) {
        outcomes.push(served(&mut server.connect()));
    }
    assert!(
        outcomes[0] && outcomes[1],
        "the burst is served: {outcomes:?}"
    );
    let refused = outcomes.iter().filter(|served| !**served).count();
    assert!(refused > 0, "{outcomes:?}");
    let samples = scrape(&metrics);
    assert_eq!(
        value(&samples, "sockloop_source_refusals_total"),
        refused as f64
    );
    log.wait_for("over --conn-rate-per-source 2/s");
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "binds 127.1.x.y, loopback on Linux only"
)]
fn the_source_table_stays_bounded_when_thousands_of_sources_connect() {
    let (server, metrics, _log) = with_metrics(&[
        "echo",
        "--max-conns-per-source",
        "1",
        "--conn-rate-per-source",
        "1000/s",
        "--source-table-size",
        "64",
    ]);
    let mut held = server.connect();
    assert!(served(&mut held));
    const SOURCES: u32 = 3000;
    let first = u32::from(Ipv4Addr::new(127, 1, 0, 1));
    for n in 0..SOURCES {
        drop(connect_from(Ipv4Addr::from(first + n), server.addr()));
    }
    // Each is closed by its client, or refused when the table was full of
    // sources whose connections the server had not seen close yet.
    let closed = |samples: &HashMap<String, f64>, reason: &str| {
        value(
            samples,
            &format!("sockloop_closed_by_reason_total{{reason=\"{reason}\"}}"),
        )
    };
    let samples = wait_until("every source's connection closed", || {
        let samples = scrape(&metrics);
        let seen = closed(&samples, "peer") + closed(&samples, "limit");
        (seen >= f64::from(SOURCES)).then_some(samples)
    });
    let entries = value(&samples, "sockloop_source_table_entries");
    assert!((1.0..=64.0).contains(&entries), "{entries} entries");
    let refused = value(&samples, "sockloop_source_refusals_total");
    assert!(refused < f64::from(SOURCES) / 2.0, "{refused} refused");
    // The flood pushed out no source with a connection open.
    assert!(!served(&mut server.connect()));
    assert!(served(&mut held));
}
