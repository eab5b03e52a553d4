//! The fuzz targets' checks (`fuzz/src/lib.rs`), run under proptest on every
//! `cargo test`: one property per fuzz target, with strategies that reach
//! the interesting inputs quickly (well-formed prefixes that lie about
//! their length, gzip magic, percent escapes, base64, terminal escapes),
//! mixed with plain noise.
//!
//! `cargo fuzz` searches the same properties for far longer; see
//! `docs/fuzzing.md` for the commands and the exec counts of the last runs.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod checks;

use proptest::prelude::*;

/// Noise, or a stream of message prefixes (flags 0..=2, lengths that may lie
/// by a few bytes) with bodies that may start like gzip.
fn framed_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..24),
        (
            0u8..=2,
            prop::collection::vec(any::<u8>(), 0..64),
            -3i64..=3,
            any::<bool>(),
        )
            .prop_map(|(flag, mut body, lie, gzip)| {
                if gzip && body.len() >= 3 {
                    body.splice(..3, [0x1f, 0x8b, 0x08]);
                }
                let len = (body.len() as i64 + lie).max(0) as u32;
                let mut out = vec![flag];
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&body);
                out
            }),
        // A real gzip message, so the decompressing path succeeds too.
        prop::collection::vec(any::<u8>(), 0..200).prop_map(|payload| {
            let mut out = bytes::BytesMut::new();
            grpc_chat::framing::encode_message(
                &payload,
                Some(grpc_chat::framing::Encoding::Gzip),
                usize::MAX,
                &mut out,
            )
            .unwrap();
            out.to_vec()
        }),
    ];
    (
        any::<u8>(),
        prop::collection::vec(1u8..=40, 0..=4),
        prop::collection::vec(piece, 0..10),
    )
        .prop_map(|(config, sizes, pieces)| {
            // The decoder check reads byte 0 as its configuration and up to
            // four frame sizes after it.
            let mut sizes = sizes;
            sizes.resize(4, 0);
            let mut out = vec![config];
            out.extend(sizes);
            out.extend(pieces.concat());
            out
        })
}

/// Timeouts that are nearly right: digits (sometimes too many), a unit or a
/// wrong byte, or noise.
fn timeout_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..12),
        (
            prop::collection::vec(b'0'..=b'9', 0..11),
            prop::sample::select(b"HMSmunxs0 ".to_vec()),
        )
            .prop_map(|(mut digits, unit)| {
                digits.push(unit);
                digits
            }),
    ]
}

/// `grpc-message` values: noise, or text with `%` escapes, some broken.
fn message_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec(
            prop_oneof![
                Just(b"%".to_vec()),
                Just(b"%2".to_vec()),
                (any::<u8>()).prop_map(|b| format!("%{b:02X}").into_bytes()),
                (any::<u8>()).prop_map(|b| format!("%{b:02x}").into_bytes()),
                "[ -~]{0,8}".prop_map(String::into_bytes),
            ],
            0..12
        )
        .prop_map(|parts| parts.concat()),
    ]
}

/// `-bin` values: base64 (padded or not, several joined with `,`), or noise.
fn bin_bytes() -> impl Strategy<Value = Vec<u8>> {
    use base64::Engine as _;
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..48),
        prop::collection::vec(
            (prop::collection::vec(any::<u8>(), 0..16), any::<bool>()).prop_map(|(raw, padded)| {
                if padded {
                    base64::engine::general_purpose::STANDARD.encode(raw)
                } else {
                    base64::engine::general_purpose::STANDARD_NO_PAD.encode(raw)
                }
            }),
            1..4
        )
        .prop_map(|parts| parts.join(" , ").into_bytes()),
    ]
}

/// Chat text: limits, then names or messages with control characters,
/// escapes, line endings, reserved names, long runs.
fn chat_bytes() -> impl Strategy<Value = Vec<u8>> {
    let text = prop_oneof![
        any::<String>(),
        prop::collection::vec(
            prop_oneof![
                "[a-zA-Z ]{0,6}",
                Just("\u{1b}[2J".to_owned()),
                Just("\u{1b}]52;c;aGk=\u{7}".to_owned()),
                Just("\u{9b}".to_owned()),
                Just("\r\n".to_owned()),
                Just("\t".to_owned()),
                Just("Server".to_owned()),
                Just("😀".to_owned()),
            ],
            0..8
        )
        .prop_map(|parts| parts.concat()),
    ];
    (any::<u8>(), any::<u8>(), text).prop_map(|(n, m, text)| {
        let mut out = vec![n, m];
        out.extend(text.into_bytes());
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn fuzz_decoder(data in prop_oneof![framed_bytes(), prop::collection::vec(any::<u8>(), 0..512)]) {
        checks::decoder(&data);
    }

    #[test]
    fn fuzz_grpc_timeout(data in timeout_bytes()) {
        checks::grpc_timeout(&data);
    }

    #[test]
    fn fuzz_grpc_message(data in message_bytes()) {
        checks::grpc_message(&data);
    }

    #[test]
    fn fuzz_metadata_bin(data in bin_bytes()) {
        checks::metadata_bin(&data);
    }

    #[test]
    fn fuzz_chat_validation(data in chat_bytes()) {
        checks::chat_validation(&data);
    }
}
