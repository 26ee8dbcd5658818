//! Why `recv` does not return messages: TCP carries a stream of bytes, and
//! where one read ends has nothing to do with where a write ended.
//!
//! Run: `cargo run --release --example recv_boundaries`
//!
//! Three scenes on one loopback connection:
//!
//! 1. Three small writes, then one read: the read returns all three
//!    together — the kernel queued them as one run of bytes.
//! 2. One write of 1 MiB, read with a 64 KiB buffer: many reads, of
//!    whatever sizes the kernel had ready.
//! 3. The cure: frame the messages (here a 2-byte length before each) and
//!    decode them with `sockloop::codec`, however the bytes are cut. The
//!    reads here take at most 5 bytes, to cut them as badly as possible.

#![deny(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use sockloop::codec::{Decoder, Encoder, LengthCodec};

/// Waits (bounded) until `n` bytes are queued for `stream`, so that a read
/// sees everything the writes sent.
fn wait_queued(stream: &TcpStream, n: usize) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut peek = vec![0; n];
    stream.set_nonblocking(true)?;
    while Instant::now() < deadline {
        match stream.peek(&mut peek) {
            Ok(k) if k >= n => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        thread::sleep(Duration::from_millis(1));
    }
    stream.set_nonblocking(false)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let mut client = TcpStream::connect(listener.local_addr()?)?;
    client.set_nodelay(true)?; // each write leaves as its own segment
    let (mut server, _) = listener.accept()?;
    server.set_read_timeout(Some(Duration::from_secs(5)))?;

    // 1. Three writes, one read.
    for part in ["one", "two", "three"] {
        client.write_all(part.as_bytes())?;
    }
    wait_queued(&server, 11)?;
    let mut buf = [0u8; 1024];
    let n = server.read(&mut buf)?;
    println!(
        "1. 3 writes (\"one\", \"two\", \"three\") -> 1 read of {n} bytes: {:?}",
        String::from_utf8_lossy(&buf[..n])
    );

    // 2. One big write, many reads.
    let big = 1 << 20;
    let mut writer = client.try_clone()?;
    let sender = thread::spawn(move || writer.write_all(&vec![7u8; big]));
    let mut sizes = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0;
    while total < big {
        let n = server.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sizes.push(n);
        total += n;
    }
    sender.join().expect("writer thread")?;
    println!(
        "2. 1 write of {big} bytes -> {} reads of {} to {} bytes",
        sizes.len(),
        sizes.iter().min().unwrap_or(&0),
        sizes.iter().max().unwrap_or(&0)
    );

    // 3. Length-prefixed frames, decoded across reads of at most 5 bytes.
    let mut codec = LengthCodec::builder()
        .width(2)
        .max_frame_len(1024)
        .build()?;
    let mut wire = Vec::new();
    for message in ["hello", "a longer message", "bye"] {
        codec.encode(message.as_bytes(), &mut wire)?;
    }
    client.write_all(&wire)?;
    let (mut input, mut reads, mut frames) = (Vec::new(), 0, Vec::new());
    while frames.len() < 3 {
        let mut small = [0u8; 5];
        let n = server.read(&mut small)?;
        if n == 0 {
            break;
        }
        reads += 1;
        input.extend_from_slice(&small[..n]);
        let mut used = 0;
        while let Some(frame) = codec.decode(&input[used..])? {
            frames.push(String::from_utf8_lossy(&input[used..][frame.payload]).into_owned());
            used += frame.len;
        }
        input.drain(..used);
    }
    println!(
        "3. 3 frames in {} bytes, read {reads} times (at most 5 bytes each) -> decoded {frames:?}",
        wire.len()
    );
    Ok(())
}
