//! Request header abuse: content-type, method, `:path`, `grpc-timeout`,
//! size and count.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_wrong_or_missing_content_type_is_415() {
    let t = Target::start(&[]).await;
    let hello = grpc_message(&[]);
    for content_type in ["application/json", "text/html", "application/grpcx", ""] {
        let headers = [("content-type", content_type), ("te", "trailers")];
        let answer = chat_stream_call(&t.address, &headers, &hello).await;
        assert_eq!(
            answer.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
    }
    let answer = chat_stream_call(&t.address, &[("te", "trailers")], &hello).await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "missing");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_get_is_405() {
    let t = Target::start(&[]).await;
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        let answer = call(&t.address, method.clone(), CHAT_STREAM, GRPC, b"").await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(answer.headers["allow"], "POST");
    }
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_malformed_grpc_timeout_is_internal() {
    let t = Target::start(&[]).await;
    // Empty, no unit, nine digits (the spec allows eight), negative, an
    // unknown unit, a unit alone, overflow-bait.
    for value in ["", "1", "123456789S", "-1S", "1x", "S", "99999999H "] {
        let headers = [
            ("content-type", "application/grpc"),
            ("grpc-timeout", value),
        ];
        let answer = chat_stream_call(&t.address, &headers, &[]).await;
        assert_status(&answer, Code::Internal, &format!("grpc-timeout {value:?}"));
        assert!(answer.grpc_message().contains("grpc-timeout"));
    }
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_missing_path_is_reset_and_unknown_paths_are_unimplemented() {
    let t = Target::start(&[]).await;
    // Without `:path` the request is malformed HTTP/2 (RFC 9113 §8.3.1):
    // h2 answers RST_STREAM(PROTOCOL_ERROR) and the handler never runs.
    let (mut socket, mut frames) = raw_connection(&t.address).await;
    let block = raw::header_block(None);
    socket
        .write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &block))
        .await
        .unwrap();
    let reset = next_frame_where(&mut frames, &mut socket, |f| f.stream == 1).await;
    assert_eq!(reset.kind, RST_STREAM, "{reset:?}");
    assert_eq!(reset.error_code(), Some(0x1), "PROTOCOL_ERROR");
    // The connection itself is still usable: a well-formed request on it.
    let block = raw::chat_stream_header_block();
    socket
        .write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 3, &block))
        .await
        .unwrap();
    let answer = next_frame_where(&mut frames, &mut socket, |f| f.stream == 3).await;
    assert_eq!(answer.kind, HEADERS, "{answer:?}");

    for path in [
        "/chat.ChatService/NoSuchMethod",
        "/chat.NoSuchService/ChatStream",
        "/no-method",
        "/a/b/c",
        "/",
    ] {
        let answer = call(&t.address, Method::POST, path, GRPC, &grpc_message(&[])).await;
        assert_status(&answer, Code::Unimplemented, path);
        assert!(answer.trailers.is_none(), "{path}: trailers-only");
    }
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_oversized_block_is_431() {
    let t = Target::start(&[]).await;
    // One 10 KiB value: over the 8 KiB header list limit.
    let big = "v".repeat(10 * 1024);
    let headers = [
        ("content-type", "application/grpc"),
        ("x-big", big.as_str()),
    ];
    let answer = chat_stream_call(&t.address, &headers, &grpc_message(&[])).await;
    assert_eq!(answer.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    t.finish().await;
}

/// Sends a `Who` request with `entries` metadata entries `x-m<i>: 1` on a
/// new connection: its answer, or the connection error that ended it.
async fn who_with_metadata(address: &str, entries: usize) -> Result<Answer, h2::Error> {
    let mut client = raw::connect(address).await;
    let mut request = http::Request::post(format!("http://{address}{WHO}"))
        .header("content-type", "application/grpc");
    for i in 0..entries {
        request = request.header(format!("x-m{i}"), "1");
    }
    let (response, mut send) = client.send_request(request.body(()).unwrap(), false)?;
    // The server may have answered (or closed) already.
    let _ = send.send_data(Bytes::from(grpc_message(&[])), true);
    let response = timeout(WAIT, response).await.expect("no answer")?;
    Ok(read_answer(response).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_thousands_of_metadata_entries_are_refused() {
    let t = Target::start(&[]).await;
    // Each entry costs its name, its value and 32 bytes (RFC 9113 §6.5.2).
    // 300 tiny entries are ~11 KiB of header list: over the 8 KiB limit,
    // so this request gets 431 and the connection lives on.
    let answer = who_with_metadata(&t.address, 300).await.unwrap();
    assert_eq!(answer.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // 3000 are ~110 KiB, over four times the limit: h2 takes that for
    // abuse and ends the whole connection with GOAWAY(ENHANCE_YOUR_CALM)
    // rather than keep decoding. Sent as raw frames (a 30 KiB HPACK block
    // in HEADERS + CONTINUATION) so that we read the GOAWAY while writing.
    let mut block = raw::header_block(Some(WHO));
    for i in 0..3000 {
        raw::push_header(&mut block, &format!("x-m{i}"), "1");
    }
    let (socket, frames) = raw_connection(&t.address).await;
    let bytes = raw::header_frames(1, &block, true);
    let (goaway, _) = flood(socket, frames, move |i| (i == 0).then(|| bytes.clone())).await;
    let goaway = goaway.expect("no GOAWAY");
    assert_eq!(
        goaway.error_code(),
        Some(0xb),
        "ENHANCE_YOUR_CALM: {goaway:?}"
    );
    // A hundred entries fit, and the call is served.
    let answer = who_with_metadata(&t.address, 100).await.unwrap();
    assert_status(&answer, Code::Ok, "100 metadata entries");
    t.finish().await;
}
