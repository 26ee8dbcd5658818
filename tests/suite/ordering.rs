//! Replies to the connection being served are held until the batch of events
//! ends, so that the batch's sends go out together. Whatever else is written
//! to that connection in the meantime must still come after them.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use sockloop::reactor::{Addr, Config, ConnId, Context, Service};

use crate::common::{TestServer, read_to_eof};

/// Echoes each read, then, from a callback that is not serving the
/// connection (a timer due in the same turn), writes how many bytes it has
/// echoed so far: `|N|`.
struct EchoThenCount;

impl Service for EchoThenCount {
    type Conn = u64;

    fn on_connect(&mut self, _: &mut Context<'_>, _: ConnId, _: &Addr) -> u64 {
        0
    }

    fn on_data(
        &mut self,
        ctx: &mut Context<'_>,
        id: ConnId,
        echoed: &mut u64,
        input: &[u8],
    ) -> usize {
        assert!(ctx.echo(0..input.len()));
        *echoed += input.len() as u64;
        ctx.set_timer(id, Duration::ZERO, *echoed);
        input.len()
    }

    fn on_timer(&mut self, ctx: &mut Context<'_>, id: ConnId, _: &mut u64, echoed: u64) {
        // Refused once the peer's FIN has closed the connection for writes.
        ctx.write(id, format!("|{echoed}|").as_bytes());
    }
}

/// Checks that every `|N|` in `reply` comes after at least N data bytes (a
/// timer may fire after several reads), and that the data is `sent`; returns
/// how many counts there were.
fn check_counts(reply: &[u8], sent: &[u8]) -> usize {
    let (mut data, mut counts) = (Vec::new(), 0);
    let mut parts = reply.split(|&b| b == b'|');
    while let Some(bytes) = parts.next() {
        data.extend_from_slice(bytes);
        if let Some(count) = parts.next() {
            let count: usize = std::str::from_utf8(count).unwrap().parse().unwrap();
            assert!(count <= data.len(), "|{count}| after {} bytes", data.len());
            counts += 1;
        }
    }
    assert!(data == sent, "echoed data differs");
    counts
}

#[test]
fn a_write_from_a_timer_follows_the_held_echo() {
    let server = TestServer::start(Config::default(), || EchoThenCount);
    let mut stream = server.connect();
    stream.set_nodelay(true).unwrap();
    let mut sent = Vec::new();
    for word in [&b"one"[..], b"two", b"three"] {
        stream.write_all(word).unwrap();
        sent.extend_from_slice(word);
        let mut reply = vec![0; word.len() + format!("|{}|", sent.len()).len()];
        stream.read_exact(&mut reply).unwrap();
        assert_eq!(
            reply,
            [word, format!("|{}|", sent.len()).as_bytes()].concat()
        );
    }
}

#[test]
fn a_write_from_a_timer_follows_a_held_echo_the_kernel_took_only_part_of() {
    // A small send buffer and a client that reads late: echoes go out in part.
    let mut config = Config::default();
    config.socket.send_buffer = Some(4096);
    let server = TestServer::start(config, || EchoThenCount);
    let mut stream = server.connect();
    let sent: Vec<u8> = (0..512 << 10).map(|i| b'a' + (i % 26) as u8).collect();
    let mut writer = stream.try_clone().unwrap();
    let reply = std::thread::scope(|s| {
        s.spawn(|| {
            writer.write_all(&sent).unwrap();
            writer.shutdown(Shutdown::Write).unwrap();
        });
        std::thread::sleep(Duration::from_millis(50));
        read_to_eof(&mut stream)
    });
    assert!(check_counts(&reply, &sent) > 0);
}

/// Echoes, and says goodbye when the peer finishes sending.
struct EchoThenBye;

impl Service for EchoThenBye {
    type Conn = ();

    fn on_connect(&mut self, _: &mut Context<'_>, _: ConnId, _: &Addr) {}

    fn on_data(&mut self, ctx: &mut Context<'_>, _: ConnId, _: &mut (), input: &[u8]) -> usize {
        ctx.echo(0..input.len());
        input.len()
    }

    fn on_read_closed(&mut self, ctx: &mut Context<'_>, id: ConnId, _: &mut (), _: &[u8]) {
        ctx.write(id, b"bye");
        ctx.close(id);
    }
}

#[test]
fn a_reply_to_fin_in_the_same_batch_follows_the_held_echo() {
    let server = TestServer::start(Config::default(), || EchoThenBye);
    for _ in 0..20 {
        let mut stream = server.connect();
        // Data and FIN together: one event, whose echo is still held when
        // the end of input is read.
        stream.write_all(b"hello").unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_to_eof(&mut stream), b"hellobye");
    }
}
