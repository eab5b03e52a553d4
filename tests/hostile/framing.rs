//! gRPC framing abuse: the 5-byte prefix, compression, the message inside.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_truncated_message_then_end_stream_is_internal() {
    let t = Target::start(&[]).await;
    // flag 0 | length 10 | only 3 of the 10 bytes, then END_STREAM.
    let truncated = [0x00, 0x00, 0x00, 0x00, 0x0a, 0x01, 0x02, 0x03];
    let answer = chat_stream_call(&t.address, GRPC, &truncated).await;
    assert_status(&answer, Code::Internal, "truncated body");
    // Two bytes of a prefix, then END_STREAM.
    let answer = chat_stream_call(&t.address, GRPC, &[0x00, 0x00]).await;
    assert_status(&answer, Code::Internal, "truncated prefix");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_declared_length_over_the_limit_is_refused_from_the_prefix() {
    let t = Target::start(&[]).await;
    // flag 0 | length 0x7fffffff (2 GiB), and the stream stays open: the
    // answer comes from the five prefix bytes alone, before any body (none
    // will come) and without reserving the declared length.
    let (response, _keep_open) = raw_chat_stream_with(
        &t.address,
        65_535,
        &[],
        Bytes::from_static(&[0x00, 0x7f, 0xff, 0xff, 0xff]),
    )
    .await;
    let response = timeout(WAIT, response).await.unwrap().unwrap();
    let (_, status) = drain_to_status(response.into_body()).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    // Just over the configured 64 KiB: the same.
    let answer = chat_stream_call(&t.address, GRPC, &[0x00, 0x00, 0x01, 0x00, 0x01]).await;
    assert_status(&answer, Code::ResourceExhausted, "64 KiB + 1");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_compressed_flag_without_grpc_encoding_is_internal() {
    let t = Target::start(&[]).await;
    // flag 1 (compressed) | length 3 | "abc" — but the request has no
    // grpc-encoding header, so there is nothing to decompress it with.
    let answer = chat_stream_call(&t.address, GRPC, &[0x01, 0, 0, 0, 3, b'a', b'b', b'c']).await;
    assert_status(&answer, Code::Internal, "compressed without encoding");
    // A flag that is neither 0 nor 1.
    let answer = chat_stream_call(&t.address, GRPC, &[0x02, 0, 0, 0, 0]).await;
    assert_status(&answer, Code::Internal, "flag 2");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_unknown_grpc_encoding_is_unimplemented_with_the_accepted_list() {
    let t = Target::start(&[]).await;
    let headers = [
        ("content-type", "application/grpc"),
        ("grpc-encoding", "br"),
    ];
    let answer = chat_stream_call(&t.address, &headers, &[0x01, 0, 0, 0, 0]).await;
    assert_status(&answer, Code::Unimplemented, "grpc-encoding br");
    assert!(answer.trailers.is_none(), "trailers-only");
    let accepted = answer.headers["grpc-accept-encoding"].to_str().unwrap();
    assert!(accepted.contains("gzip"), "{accepted}");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_gzip_bomb_is_capped_at_the_message_limit() {
    let t = Target::start(&[]).await;
    // 32 MiB of zeros gzip to about 32 KiB: under the 64 KiB wire limit, so
    // the server has to start decompressing — and must stop at 64 KiB.
    let bomb = {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1024 * 1024];
        for _ in 0..32 {
            gz.write_all(&zeros).unwrap();
        }
        gz.finish().unwrap()
    };
    assert!(bomb.len() < 65_536, "the bomb is {} bytes", bomb.len());
    let mut body = vec![0x01]; // compressed
    body.extend_from_slice(&(bomb.len() as u32).to_be_bytes());
    body.extend_from_slice(&bomb);
    let headers = [
        ("content-type", "application/grpc"),
        ("grpc-encoding", "gzip"),
    ];
    for _ in 0..4 {
        let answer = chat_stream_call(&t.address, &headers, &body).await;
        assert_status(&answer, Code::ResourceExhausted, "gzip bomb");
        assert!(
            answer.grpc_message().contains("decompression"),
            "{}",
            answer.grpc_message()
        );
    }
    // Had any of the four been inflated, the server would have held 32 MiB
    // at once; its peak stays far below.
    let peak = peak_rss_kib(t.server.pid());
    assert!(peak < 28 * 1024, "server peak RSS {peak} KiB");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_invalid_protobuf_is_internal() {
    let t = Target::start(&[]).await;
    // field 1 (user), wire type 2, length 5 — but the message ends there.
    let answer = chat_stream_call(&t.address, GRPC, &grpc_message(&[0x0a, 0x05])).await;
    assert_status(&answer, Code::Internal, "truncated field");
    // Wire type 7 does not exist.
    let answer = chat_stream_call(&t.address, GRPC, &grpc_message(&[0x0f, 0x00])).await;
    assert_status(&answer, Code::Internal, "wire type 7");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_invalid_utf8_in_a_string_field_is_internal() {
    let t = Target::start(&[]).await;
    // field 1 (user), wire type 2, length 2, bytes ff fe: not UTF-8, which
    // proto3 requires of a `string`.
    let answer = chat_stream_call(&t.address, GRPC, &grpc_message(&[0x0a, 0x02, 0xff, 0xfe])).await;
    assert_status(&answer, Code::Internal, "invalid UTF-8 user");
    // A valid name, then field 2 (message) with a lone continuation byte.
    let answer = chat_stream_call(
        &t.address,
        GRPC,
        &grpc_message(&[0x0a, 0x01, b'm', 0x12, 0x01, 0x80]),
    )
    .await;
    assert_status(&answer, Code::Internal, "invalid UTF-8 message");
    t.finish().await;
}
