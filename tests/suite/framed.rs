//! Framed echo through the built binary: every framing kind survives any
//! split of the stream, and a peer that breaks the framing loses only its
//! own connection.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::Stdio;
use std::thread;

use sockloop::codec::{Codec, Encoder, Framing};

use crate::common::{IO_TIMEOUT, Server, read_to_eof, round_trip};

const KINDS: [&str; 11] = [
    "raw",
    "lines",
    "crlf",
    "len:u8",
    "len:u16be",
    "len:u16le",
    "len:u32be",
    "len:u32le",
    "len:u64be",
    "len:u64le",
    "fixed:5",
];

fn encode_all(kind: &str, payloads: &[&[u8]]) -> Vec<u8> {
    let codec = Codec::new(kind.parse::<Framing>().unwrap(), 1 << 20).unwrap();
    let mut wire = Vec::new();
    for p in payloads {
        codec.encode(p, &mut wire).unwrap();
    }
    wire
}

/// Sends `wire` in two writes cut at `cut` (with a pause between, so they
/// arrive as separate reads), half-closes, and returns the whole reply.
fn send_split(server: &Server, wire: &[u8], cut: usize) -> Vec<u8> {
    let mut stream = server.connect();
    stream.set_nodelay(true).unwrap();
    stream.write_all(&wire[..cut]).unwrap();
    thread::sleep(std::time::Duration::from_millis(1));
    stream.write_all(&wire[cut..]).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    read_to_eof(&mut stream)
}

#[test]
fn every_framing_echoes_frames_split_at_every_byte() {
    for kind in KINDS {
        let server = Server::start(&[], &["echo", "--framing", kind], Stdio::null());
        let payloads: Vec<&[u8]> = if kind == "fixed:5" {
            vec![b"hello", b"world", b"12345"]
        } else {
            vec![b"hello", b"", b"a somewhat longer frame"]
        };
        let wire = encode_all(kind, &payloads);
        for cut in 0..=wire.len() {
            assert_eq!(
                send_split(&server, &wire, cut),
                wire,
                "{kind}, split at {cut}"
            );
        }
    }
}

#[test]
fn lines_mode_takes_crlf_and_answers_lf() {
    let server = Server::start(&[], &["echo", "--framing", "lines"], Stdio::null());
    let wire = b"one\r\ntwo\nthree\r\n";
    for cut in 0..=wire.len() {
        assert_eq!(
            send_split(&server, wire, cut),
            b"one\ntwo\nthree\n",
            "split at {cut}"
        );
    }
}

/// 20 well-behaved clients keep echoing while `offend` breaks the framing:
/// only the offender is cut off, and it gets nothing for its bad frame.
fn only_the_offender_is_closed(kind: &str, good_frame: &[u8], offend: impl FnOnce(&mut TcpStream)) {
    let server = Server::start(
        &[],
        &["echo", "--framing", kind, "--max-frame", "1KiB"],
        Stdio::null(),
    );
    let mut good: Vec<TcpStream> = (0..20).map(|_| server.connect()).collect();
    for c in &mut good {
        assert_eq!(round_trip(c, good_frame), good_frame);
    }
    let mut bad = server.connect();
    offend(&mut bad);
    let mut rest = Vec::new();
    match bad.read_to_end(&mut rest) {
        Ok(_) => assert!(
            rest.is_empty(),
            "the offender got {} bytes back",
            rest.len()
        ),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
    }
    for c in &mut good {
        assert_eq!(round_trip(c, good_frame), good_frame);
    }
}

#[test]
fn a_length_header_over_the_maximum_closes_only_that_connection() {
    let good = encode_all("len:u32be", &[b"fine"]);
    only_the_offender_is_closed("len:u32be", &good, |bad| {
        // A header announcing 1 MiB, over --max-frame 1KiB; no payload follows.
        bad.write_all(&(1u32 << 20).to_be_bytes()).unwrap();
    });
}

#[test]
fn a_line_longer_than_the_maximum_closes_only_that_connection() {
    only_the_offender_is_closed("lines", b"fine\n", |bad| {
        bad.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        // No delimiter, ever: the server must give up after about 1 KiB.
        let junk = vec![b'x'; 4096];
        for _ in 0..16 {
            if bad.write_all(&junk).is_err() {
                break;
            }
        }
    });
}
