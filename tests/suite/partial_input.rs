//! The reactor's handling of input a service leaves unconsumed: a partial
//! message must be kept and offered again, whole, with what follows it.

use std::io::Write;
use std::net::SocketAddr;

use sockloop::reactor::{Addr, Config, ConnId, Context, Service};

use crate::common::{Rng, TestServer, read_to_eof};

/// Replies to each complete `\n`-terminated line with the line reversed;
/// never consumes a partial line.
struct ReverseLines;

impl Service for ReverseLines {
    type Conn = ();

    fn on_connect(&mut self, _: &mut Context<'_>, _: ConnId, _: &Addr) {}

    fn on_data(&mut self, ctx: &mut Context<'_>, id: ConnId, _: &mut (), input: &[u8]) -> usize {
        let mut used = 0;
        while let Some(end) = input[used..].iter().position(|&b| b == b'\n') {
            let line = &input[used..used + end];
            ctx.write_with(id, |out| {
                out.extend(line.iter().rev());
                out.push(b'\n');
            });
            used += end + 1;
        }
        used
    }
}

fn expected(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in text.split_inclusive(|&b| b == b'\n') {
        let body = line.strip_suffix(b"\n").unwrap();
        out.extend(body.iter().rev());
        out.push(b'\n');
    }
    out
}

/// Sends `text` in pieces cut at `cuts`, then FIN; returns the reply.
fn send_in_pieces(addr: SocketAddr, text: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(crate::common::IO_TIMEOUT))
        .unwrap();
    stream.set_nodelay(true).unwrap();
    let mut writer = stream.try_clone().unwrap();
    // Write from another thread: the replies must be read while we send, or
    // both sides' buffers fill and the server (rightly) stops reading.
    std::thread::scope(|s| {
        s.spawn(move || {
            let mut at = 0;
            for &cut in cuts.iter().chain(std::iter::once(&text.len())) {
                writer.write_all(&text[at..cut]).unwrap();
                at = cut;
            }
            writer.shutdown(std::net::Shutdown::Write).unwrap();
        });
        read_to_eof(&mut stream)
    })
}

#[test]
fn lines_split_at_every_byte_boundary_come_back_whole() {
    let server = TestServer::start(Config::default(), || ReverseLines);
    let text = b"first line\nsecond\n\nthe fourth, a bit longer\n";
    for cut in 0..=text.len() {
        let reply = send_in_pieces(server.addr, text, &[cut]);
        assert_eq!(reply, expected(text), "split at {cut}");
    }
}

#[test]
fn long_lines_straddling_many_reads_come_back_whole() {
    let server = TestServer::start(Config::default(), || ReverseLines);
    let mut rng = Rng::new(11);
    let mut text = Vec::new();
    for _ in 0..50 {
        let len = rng.range(0, 300_000);
        text.extend(rng.bytes(len).into_iter().map(|b| b'a' + b % 26));
        text.push(b'\n');
    }
    let cuts: Vec<usize> = (1..200).map(|i| i * text.len() / 200).collect();
    assert_eq!(send_in_pieces(server.addr, &text, &cuts), expected(&text));
}
