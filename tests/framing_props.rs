//! Property tests for `grpc_chat::framing`: what goes through the encoder comes out of
//! the decoder unchanged however the byte stream is cut into DATA frames, header
//! encodings round-trip, and no input from a peer makes the parsers panic.

use std::time::Duration;

use bytes::BytesMut;
use proptest::prelude::*;

use grpc_chat::framing::{
    Code, DEFAULT_MAX_SEND_MESSAGE_SIZE, Decoder, Encoding, MetadataMap, decode_grpc_message,
    encode_grpc_message, encode_message, format_timeout, parse_timeout,
};

/// One message to send: its payload, and whether to gzip it.
#[derive(Clone, Debug)]
struct Message {
    payload: Vec<u8>,
    gzip: bool,
}

/// Payloads up to 64 KiB, either noise (incompressible) or a repeating pattern
/// (compressible), derived from a seed so shrinking works on the length.
fn message() -> impl Strategy<Value = Message> {
    (
        0usize..=64 * 1024,
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(len, seed, noisy, gzip)| {
            let mut state = seed | 1;
            let payload = (0..len)
                .map(|i| {
                    if noisy {
                        // xorshift64
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        state.to_le_bytes()[0]
                    } else {
                        b"chat message "[i % 13]
                    }
                })
                .collect();
            Message { payload, gzip }
        })
}

/// Feeds `wire` to a decoder in chunks of the given sizes (cycled), like DATA frames
/// arriving, collecting every message.
fn decode_in_chunks(wire: &[u8], chunk_sizes: &[usize]) -> Vec<Vec<u8>> {
    let mut decoder = Decoder::new(Encoding::Gzip);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = wire;
    let mut sizes = chunk_sizes.iter().cycle();
    while !rest.is_empty() {
        let size = (*sizes.next().unwrap()).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        buf.extend_from_slice(chunk);
        while let Some(msg) = decoder.decode(&mut buf).unwrap() {
            out.push(msg.to_vec());
        }
    }
    decoder.finish(&buf).unwrap();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn messages_survive_arbitrary_frame_boundaries(
        messages in prop::collection::vec(message(), 0..8),
        chunk_sizes in prop::collection::vec(1usize..20_000, 1..16),
    ) {
        let mut wire = BytesMut::new();
        for m in &messages {
            let compression = m.gzip.then_some(Encoding::Gzip);
            encode_message(&m.payload, compression, DEFAULT_MAX_SEND_MESSAGE_SIZE, &mut wire)
                .unwrap();
        }
        let decoded = decode_in_chunks(&wire, &chunk_sizes);
        let expected: Vec<Vec<u8>> = messages.into_iter().map(|m| m.payload).collect();
        prop_assert_eq!(decoded, expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn timeout_format_parse_round_trip(
        secs in 0u64..=99_999_999 * 3_600,
        nanos in 0u32..1_000_000_000,
    ) {
        let d = Duration::new(secs, nanos);
        let text = format_timeout(d);
        let back = parse_timeout(text.as_bytes()).unwrap();
        let unit = match text.as_bytes().last() {
            Some(b'n') => Duration::from_nanos(1),
            Some(b'u') => Duration::from_micros(1),
            Some(b'm') => Duration::from_millis(1),
            Some(b'S') => Duration::from_secs(1),
            Some(b'M') => Duration::from_secs(60),
            Some(b'H') => Duration::from_secs(3_600),
            other => panic!("bad unit in {text:?}: {other:?}"),
        };
        prop_assert!(back >= d, "{:?} -> {} -> {:?}", d, text, back);
        prop_assert!(back - d < unit, "{:?} -> {} -> {:?}", d, text, back);
        prop_assert!(text.len() <= 9);
    }

    #[test]
    fn grpc_message_round_trips_any_unicode(msg in any::<String>()) {
        let encoded = encode_grpc_message(&msg);
        prop_assert!(encoded.bytes().all(|b| (0x20..=0x7E).contains(&b)));
        prop_assert_eq!(decode_grpc_message(encoded.as_bytes()), msg);
    }

    #[test]
    fn header_parsers_never_panic(raw in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode_grpc_message(&raw);
        let _ = parse_timeout(&raw);
        let code = Code::from_bytes(&raw);
        prop_assert!((0..=16).contains(&(code as i32)));
        let _ = Encoding::from_header(&raw);
        let _ = Encoding::negotiate(&raw);
        if let Ok(value) = http::HeaderValue::from_bytes(&raw) {
            let mut headers = http::HeaderMap::new();
            headers.insert("x-bin", value.clone());
            headers.insert("grpc-status", value.clone());
            headers.insert("grpc-message", value.clone());
            headers.insert("grpc-status-details-bin", value);
            let md = MetadataMap::from_headers(&headers);
            let _ = md.get_bin("x-bin");
            let _ = md.get_all_bin("x-bin").count();
            let _ = grpc_chat::framing::Status::from_trailers(&headers);
        }
    }
}

/// Bytes that look like framing often enough to reach every decoder state: prefixes
/// with flags 0..=2, lengths that may lie about the body, gzip-looking or random
/// bodies — interleaved with plain noise.
fn hostile_stream() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..32),
        (
            0u8..=2,
            prop::collection::vec(any::<u8>(), 0..48),
            -4i64..=4,
            any::<bool>()
        )
            .prop_map(|(flag, mut body, lie, gzip_magic)| {
                if gzip_magic && body.len() >= 3 {
                    body.splice(..3, [0x1f, 0x8b, 0x08]);
                }
                let len = (body.len() as i64 + lie).max(0) as u32;
                let mut out = vec![flag];
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&body);
                out
            }),
    ];
    prop::collection::vec(piece, 0..16).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn decoder_never_panics(
        bytes in prop_oneof![prop::collection::vec(any::<u8>(), 0..512), hostile_stream()],
        chunk_sizes in prop::collection::vec(1usize..64, 1..8),
        gzip in any::<bool>(),
        limit in 0usize..128,
    ) {
        let encoding = if gzip { Encoding::Gzip } else { Encoding::Identity };
        let mut decoder = Decoder::new(encoding);
        decoder.max_message_size(limit);
        let mut buf = BytesMut::new();
        let mut rest = &bytes[..];
        let mut sizes = chunk_sizes.iter().cycle();
        'feed: while !rest.is_empty() {
            let size = (*sizes.next().unwrap()).min(rest.len());
            let (chunk, tail) = rest.split_at(size);
            rest = tail;
            buf.extend_from_slice(chunk);
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(msg)) => prop_assert!(msg.len() <= limit),
                    Ok(None) => break,
                    Err(err) => {
                        // Every error maps to a status without panicking.
                        let status = grpc_chat::framing::Status::from(err);
                        prop_assert!(matches!(
                            status.code(),
                            Code::Internal | Code::ResourceExhausted
                        ));
                        break 'feed;
                    }
                }
            }
        }
        let _ = decoder.finish(&buf);
    }
}
