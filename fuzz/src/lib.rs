//! The properties the fuzz targets check, one function per target, each
//! taking the fuzzer's raw bytes and panicking if a property fails.
//!
//! The same functions run in the ordinary test suite: `tests/fuzz_props.rs`
//! includes this file (`#[path]`) and drives each one with proptest, so the
//! properties are checked on every `cargo test`, while `cargo fuzz run
//! <target>` searches for counterexamples for as long as one cares to run
//! it. See `docs/fuzzing.md`.
//!
//! Every function here takes bytes a peer could have sent. "No panic" is
//! the first property of each; the others are what must hold of whatever
//! the parser accepts.
#![forbid(unsafe_code)]

use bytes::BytesMut;
use grpc_chat::chat::validate::{self, Limits};
use grpc_chat::framing::{
    Code, Decoder, Encoding, MetadataMap, Status, decode_grpc_message, encode_grpc_message,
    encode_message, format_timeout, parse_timeout,
};

/// What a decoder made of a byte stream: the messages, then the error that
/// stopped it (if any) as a gRPC code.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    messages: Vec<Vec<u8>>,
    error: Option<Code>,
}

/// Feeds `wire` to a fresh decoder in chunks of `sizes` (cycled), like DATA
/// frames arriving, then ends the stream.
fn decode_chunked(wire: &[u8], sizes: &[usize], encoding: Encoding, limit: usize) -> Decoded {
    let mut decoder = Decoder::new(encoding);
    decoder.max_message_size(limit);
    let mut buf = BytesMut::new();
    let mut messages = Vec::new();
    let mut rest = wire;
    let mut sizes = sizes.iter().copied().cycle();
    let error = 'feed: loop {
        if rest.is_empty() {
            break decoder.finish(&buf).err();
        }
        let size = sizes.next().unwrap_or(usize::MAX).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(message)) => messages.push(message.to_vec()),
                Ok(None) => break,
                Err(e) => break 'feed Some(e),
            }
        }
    };
    Decoded {
        messages,
        error: error.map(|e| Status::from(e).code()),
    }
}

/// The message decoder (`framing::Decoder`).
///
/// Input: byte 0 picks the encoding (bit 0: gzip) and the receive limit
/// (bits 1..: 0 to 127 × 64 bytes); bytes 1..=4 are DATA frame sizes; the
/// rest is the stream.
///
/// Properties:
/// * no panic, and every error is `INTERNAL` or `RESOURCE_EXHAUSTED`;
/// * no message longer than the limit comes out;
/// * DATA frame boundaries do not matter: the stream decoded in one piece
///   gives the same messages and the same error;
/// * each message, encoded again, decodes to itself.
pub fn decoder(data: &[u8]) {
    let Some((&config, rest)) = data.split_first() else {
        return;
    };
    let (sizes, wire) = rest.split_at(rest.len().min(4));
    let sizes: Vec<usize> = sizes.iter().map(|&s| usize::from(s)).collect();
    let encoding = if config & 1 == 1 {
        Encoding::Gzip
    } else {
        Encoding::Identity
    };
    let limit = usize::from(config >> 1) * 64;

    let chunked = decode_chunked(wire, &sizes, encoding, limit);
    if let Some(code) = chunked.error {
        assert!(
            matches!(code, Code::Internal | Code::ResourceExhausted),
            "{code:?}"
        );
    }
    for message in &chunked.messages {
        assert!(message.len() <= limit, "{} > {limit}", message.len());
    }
    let whole = decode_chunked(wire, &[], encoding, limit);
    assert_eq!(chunked, whole, "frame boundaries changed the outcome");

    for message in &chunked.messages {
        let mut again = BytesMut::new();
        encode_message(message, None, usize::MAX, &mut again).expect("no send limit");
        let back = decode_chunked(&again, &[], Encoding::Identity, limit);
        assert_eq!(back.messages, vec![message.clone()]);
        assert_eq!(back.error, None);
    }
}

/// `grpc-timeout` parsing.
///
/// Properties: no panic; a value that parses is 1 to 8 ASCII digits and a
/// unit; formatting what was parsed gives a value that parses to no less
/// (never a shorter timeout than the peer asked for), and formatting is
/// stable from there on.
pub fn grpc_timeout(data: &[u8]) {
    let Ok(parsed) = parse_timeout(data) else {
        return;
    };
    let (_, digits) = data.split_last().expect("a parsed value is not empty");
    assert!((1..=8).contains(&digits.len()));
    assert!(digits.iter().all(u8::is_ascii_digit));
    let text = format_timeout(parsed);
    let back = parse_timeout(text.as_bytes()).expect("our own format parses");
    assert!(back >= parsed, "{data:?} → {parsed:?} → {text} → {back:?}");
    assert_eq!(format_timeout(back), text);
}

/// `grpc-message` decoding (percent-decoding, lossy UTF-8).
///
/// Properties: no panic, whatever the bytes ("implementations MUST NOT
/// error or throw away the message"); bytes without `%` that are UTF-8 come
/// out unchanged; and the decoded text, encoded again, is printable ASCII
/// that decodes to the same text.
pub fn grpc_message(data: &[u8]) {
    let text = decode_grpc_message(data);
    if !data.contains(&b'%') {
        if let Ok(plain) = std::str::from_utf8(data) {
            assert_eq!(text, plain);
        }
    }
    let encoded = encode_grpc_message(&text);
    assert!(encoded.bytes().all(|b| (0x20..=0x7e).contains(&b)));
    assert_eq!(decode_grpc_message(encoded.as_bytes()), text);
}

/// `-bin` metadata: base64 values, possibly several joined with `,`.
///
/// Properties: no panic reading any header value as `-bin`; each part that
/// decodes, stored again with `insert_bin`, reads back the same; and any
/// bytes stored with `insert_bin` read back unchanged.
pub fn metadata_bin(data: &[u8]) {
    if let Ok(value) = http::HeaderValue::from_bytes(data) {
        let mut headers = http::HeaderMap::new();
        headers.append("trace-bin", value);
        let received = MetadataMap::from_headers(&headers);
        for bytes in received.get_all_bin("trace-bin").flatten() {
            let mut sent = MetadataMap::new();
            sent.insert_bin("trace-bin", &bytes).expect("valid key");
            assert_eq!(sent.get_bin("trace-bin"), Some(bytes));
        }
        let _ = received.get_bin("trace-bin");
    }
    let mut md = MetadataMap::new();
    md.insert_bin("x-bin", data).expect("valid key");
    assert_eq!(md.get_bin("x-bin").as_deref(), Some(data));
}

/// Chat validation of names and messages (`chat::validate`).
///
/// Input: byte 0 and 1 are the name and message limits; the rest, as
/// (lossy) UTF-8, is the text.
///
/// Properties: no panic; what is accepted is non-empty, within the limit
/// (in characters), free of control characters (no terminal escapes can
/// reach another member's screen), not a reserved name, and accepted again
/// unchanged (validation is idempotent).
pub fn chat_validation(data: &[u8]) {
    let [name_limit, message_limit, text @ ..] = data else {
        return;
    };
    let limits = Limits {
        max_name_chars: usize::from(*name_limit),
        max_message_chars: usize::from(*message_limit) * 8,
    };
    let text = String::from_utf8_lossy(text);
    if let Ok(name) = validate::name(&text, &limits) {
        assert!(!name.is_empty());
        assert!(name.chars().count() <= limits.max_name_chars);
        assert!(!name.chars().any(char::is_control), "{name:?}");
        assert!(
            !validate::RESERVED_NAMES
                .iter()
                .any(|r| r.eq_ignore_ascii_case(name))
        );
        assert_eq!(validate::name(name, &limits), Ok(name));
    }
    if let Ok(message) = validate::message(&text, &limits) {
        assert!(!message.trim().is_empty());
        assert!(message.chars().count() <= limits.max_message_chars);
        assert!(!message.chars().any(char::is_control), "{message:?}");
        assert_eq!(validate::message(&message, &limits), Ok(message.clone()));
    }
}
