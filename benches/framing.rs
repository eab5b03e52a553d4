//! Framing throughput: encode and decode of small and 1 MiB messages, a 1 MiB message
//! arriving as 16 KiB DATA frames, and gzip of a compressible 1 MiB message.
//!
//! Run with `cargo bench --bench framing` (about a minute: short measurement times).

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

use grpc_chat::framing::{
    DEFAULT_MAX_RECV_MESSAGE_SIZE, DEFAULT_MAX_SEND_MESSAGE_SIZE, Decoder, Encoding, encode_message,
};

const SMALL: usize = 32;
const LARGE: usize = 1024 * 1024;
const FRAME: usize = 16 * 1024;

/// Incompressible bytes (xorshift), like an encrypted or already-compressed payload.
fn noise(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// Chat-history-like text: compresses well, but not trivially.
fn chat_text(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut i = 0u64;
    while out.len() < len {
        let line = format!(
            "{{\"room\":\"general\",\"user\":\"user{}\",\"seq\":{i},\"text\":\"message number {i} says hello\"}}\n",
            i % 97
        );
        out.extend_from_slice(line.as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

fn framed(payload: &[u8], compression: Option<Encoding>) -> Bytes {
    let mut wire = BytesMut::new();
    encode_message(
        payload,
        compression,
        DEFAULT_MAX_SEND_MESSAGE_SIZE,
        &mut wire,
    )
    .expect("bench payloads are within limits");
    wire.freeze()
}

fn bench_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for (name, payload) in [("32B", noise(SMALL)), ("1MiB", noise(LARGE))] {
        group.throughput(Throughput::Bytes(payload.len() as u64));
        let mut dst = BytesMut::with_capacity(payload.len() + 5);
        group.bench_function(name, |b| {
            b.iter(|| {
                dst.clear();
                encode_message(black_box(&payload), None, usize::MAX, &mut dst).unwrap();
                black_box(dst.len())
            })
        });
    }
    let text = chat_text(LARGE);
    group.throughput(Throughput::Bytes(LARGE as u64));
    let mut dst = BytesMut::new();
    group.bench_function("1MiB_gzip", |b| {
        b.iter(|| {
            dst.clear();
            encode_message(black_box(&text), Some(Encoding::Gzip), usize::MAX, &mut dst).unwrap();
            black_box(dst.len())
        })
    });
    group.finish();
}

fn bench_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    // Whole message already buffered: the decoder splits it off without copying, so
    // this measures the prefix parse and bookkeeping, not a memcpy.
    for (name, payload) in [("32B", noise(SMALL)), ("1MiB", noise(LARGE))] {
        let wire = framed(&payload, None);
        group.throughput(Throughput::Bytes(payload.len() as u64));
        group.bench_function(name, |b| {
            b.iter_batched(
                || BytesMut::from(&wire[..]),
                |mut buf| {
                    let mut decoder = Decoder::new(Encoding::Identity);
                    decoder.decode(&mut buf).unwrap().unwrap()
                },
                BatchSize::SmallInput,
            )
        });
    }

    // The realistic path: 16 KiB DATA frames appended to the receive buffer one by
    // one (that append is the one copy), decode attempted after each.
    let wire = framed(&noise(LARGE), None);
    let frames: Vec<Bytes> = wire.chunks(FRAME).map(Bytes::copy_from_slice).collect();
    group.throughput(Throughput::Bytes(LARGE as u64));
    group.bench_function("1MiB_in_16KiB_frames", |b| {
        b.iter(|| {
            let mut decoder = Decoder::new(Encoding::Identity);
            let mut buf = BytesMut::new();
            let mut got = None;
            for frame in &frames {
                buf.extend_from_slice(frame);
                if let Some(msg) = decoder.decode(&mut buf).unwrap() {
                    got = Some(msg);
                }
            }
            got.unwrap()
        })
    });

    let text = chat_text(LARGE);
    let wire = framed(&text, Some(Encoding::Gzip));
    println!(
        "gzip: 1 MiB of chat text compresses to {} bytes ({:.1}%)",
        wire.len() - 5,
        100.0 * (wire.len() - 5) as f64 / LARGE as f64
    );
    group.throughput(Throughput::Bytes(LARGE as u64));
    group.bench_function("1MiB_gzip", |b| {
        b.iter_batched(
            || BytesMut::from(&wire[..]),
            |mut buf| {
                let mut decoder = Decoder::new(Encoding::Gzip);
                decoder.max_message_size(DEFAULT_MAX_RECV_MESSAGE_SIZE);
                decoder.decode(&mut buf).unwrap().unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_encode, bench_decode
}
criterion_main!(benches);
