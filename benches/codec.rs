//! Decode throughput: sockloop's codecs against tokio-util's on the same
//! bytes, fed the way a socket delivers them (64 KiB reads and 512 B reads).
//!
//! Our side is driven the reactor's way: one unconsumed buffer (a Vec and a
//! start offset), append each read, decode until `None`, consume `len` bytes,
//! and before a read move the unconsumed tail to the front once it is no
//! longer than what was consumed (cheap, and keeps the buffer cache-hot).
//! tokio-util gets a BytesMut with the same capacity, extended by each read,
//! decoded until `None`.

#![deny(unsafe_code)]

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sockloop::codec::{Codec, Decoder, Encoder, Framing};
use tokio_util::codec::{LengthDelimitedCodec, LinesCodec};

const STREAM_BYTES: usize = 1 << 20;
const MAX_FRAME_LEN: usize = 64 * 1024;
const READS: [(usize, &str); 2] = [(64 * 1024, "read64KiB"), (512, "read512B")];
const FRAMES: [(usize, &str); 2] = [(64, "64B"), (4096, "4KiB")];

/// About 1 MiB of `framing`-encoded frames with `size`-byte ASCII payloads.
fn stream(codec: &Codec, size: usize) -> (Vec<u8>, usize) {
    let payload: Vec<u8> = (b'a'..=b'z').cycle().take(size).collect();
    let mut wire = Vec::with_capacity(STREAM_BYTES + size + 8);
    let mut frames = 0;
    while wire.len() < STREAM_BYTES {
        codec.encode(&payload, &mut wire).expect("payload fits");
        frames += 1;
    }
    (wire, frames)
}

/// The reactor's loop; `on_frame` sees each payload. Returns the frame count.
fn ours(codec: &mut Codec, wire: &[u8], read: usize, mut on_frame: impl FnMut(&[u8])) -> usize {
    let mut buf = Vec::with_capacity(read + codec.max_buffered());
    let mut start = 0;
    let mut frames = 0;
    for chunk in wire.chunks(read) {
        if start >= buf.len() - start {
            buf.copy_within(start.., 0);
            buf.truncate(buf.len() - start);
            start = 0;
        }
        buf.extend_from_slice(chunk);
        while let Some(frame) = codec.decode(&buf[start..]).expect("valid stream") {
            on_frame(&buf[start..][frame.payload]);
            start += frame.len;
            frames += 1;
        }
    }
    frames
}

/// tokio-util's side: a BytesMut extended by each read, decoded until `None`.
fn tokio<D: tokio_util::codec::Decoder>(
    codec: &mut D,
    wire: &[u8],
    read: usize,
    capacity: usize,
) -> usize
where
    D::Error: std::fmt::Debug,
{
    let mut buf = BytesMut::with_capacity(capacity);
    let mut frames = 0;
    for chunk in wire.chunks(read) {
        buf.extend_from_slice(chunk);
        while let Some(frame) = codec.decode(&mut buf).expect("valid stream") {
            black_box(frame);
            frames += 1;
        }
    }
    frames
}

fn codec(spec: &str) -> Codec {
    Codec::new(spec.parse::<Framing>().expect("spec"), MAX_FRAME_LEN).expect("codec")
}

fn length(c: &mut Criterion) {
    for (size, size_name) in FRAMES {
        let (wire, frames) = stream(&codec("len:u32be"), size);
        for (read, read_name) in READS {
            let mut group = c.benchmark_group(format!("length_u32be/{size_name}/{read_name}"));
            group.throughput(Throughput::Bytes(wire.len() as u64));
            let ours_codec = codec("len:u32be");
            let capacity = read + ours_codec.max_buffered();
            let tokio_codec = || {
                LengthDelimitedCodec::builder()
                    .length_field_length(4)
                    .big_endian()
                    .max_frame_length(MAX_FRAME_LEN)
                    .new_codec()
            };
            assert_eq!(tokio(&mut tokio_codec(), &wire, read, capacity), frames);
            assert_eq!(ours(&mut ours_codec.clone(), &wire, read, |_| ()), frames);
            group.bench_function("sockloop", |b| {
                b.iter(|| {
                    ours(&mut ours_codec.clone(), &wire, read, |p| {
                        black_box(p);
                    })
                })
            });
            group.bench_function("tokio-util", |b| {
                b.iter(|| tokio(&mut tokio_codec(), &wire, read, capacity))
            });
            group.finish();
        }
    }
}

fn lines(c: &mut Criterion) {
    for (size, size_name) in FRAMES {
        let (wire, frames) = stream(&codec("lines"), size);
        for (read, read_name) in READS {
            let mut group = c.benchmark_group(format!("lines/{size_name}/{read_name}"));
            group.throughput(Throughput::Bytes(wire.len() as u64));
            let ours_codec = codec("lines");
            let capacity = read + ours_codec.max_buffered();
            let tokio_codec = || LinesCodec::new_with_max_length(MAX_FRAME_LEN);
            assert_eq!(tokio(&mut tokio_codec(), &wire, read, capacity), frames);
            assert_eq!(ours(&mut ours_codec.clone(), &wire, read, |_| ()), frames);
            group.bench_function("sockloop", |b| {
                b.iter(|| {
                    ours(&mut ours_codec.clone(), &wire, read, |p| {
                        black_box(p);
                    })
                })
            });
            // LinesCodec checks UTF-8 and copies each line into a new String:
            // the same work on our side, step by step.
            group.bench_function("sockloop+utf8", |b| {
                b.iter(|| {
                    ours(&mut ours_codec.clone(), &wire, read, |p| {
                        black_box(std::str::from_utf8(p).expect("ascii"));
                    })
                })
            });
            group.bench_function("sockloop+utf8+String", |b| {
                b.iter(|| {
                    ours(&mut ours_codec.clone(), &wire, read, |p| {
                        black_box(std::str::from_utf8(p).expect("ascii").to_owned());
                    })
                })
            });
            group.bench_function("tokio-util", |b| {
                b.iter(|| tokio(&mut tokio_codec(), &wire, read, capacity))
            });
            group.finish();
        }
    }
}

criterion_group!(benches, length, lines);
criterion_main!(benches);
