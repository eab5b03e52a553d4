//! The server's answers to requests it must refuse, seen on the wire.
//!
//! These tests speak raw HTTP/2 with the `h2` crate (no gRPC client in
//! between), so they see exactly what a peer sees: the HTTP status, whether
//! the answer is trailers-only (a single HEADERS frame with END_STREAM), and
//! the `grpc-status` / `grpc-message` values. The server under test serves the
//! interop `TestService` on 127.0.0.1:0.

mod common;

use common::WAIT;

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use common::raw::{GRPC, PREFACE_AND_SETTINGS, call, connect, until_closed};
use grpc_chat::interop::server::InteropService;
use grpc_chat::pb::grpc_testing::TestServiceServer;
use grpc_chat::server::Server;
use http::{Method, StatusCode};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// The interop `TestService` on a free port, serving until the test ends.
async fn start() -> String {
    start_with(|_| {}).await
}

const EMPTY_CALL: &str = "/grpc.testing.TestService/EmptyCall";

/// An empty protobuf message as one gRPC message:
/// flag 0 | length 0x00000000 | (no payload)
const EMPTY_MESSAGE: &[u8] = &[0x00, 0x00, 0x00, 0x00, 0x00];

#[tokio::test]
async fn empty_call_is_answered_with_headers_message_trailers() {
    let address = start().await;
    let answer = call(&address, Method::POST, EMPTY_CALL, GRPC, EMPTY_MESSAGE).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["content-type"], "application/grpc");
    // The response message: flag 0 | length 0 — an empty `Empty`.
    assert_eq!(answer.body, EMPTY_MESSAGE);
    assert!(answer.trailers.is_some(), "not trailers-only");
    assert_eq!(answer.grpc_status(), Some("0"));
}

#[tokio::test]
async fn get_is_refused_with_405() {
    let address = start().await;
    let answer = call(&address, Method::GET, EMPTY_CALL, GRPC, b"").await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.headers["allow"], "POST");
}

#[tokio::test]
async fn a_non_grpc_content_type_is_refused_with_415() {
    let address = start().await;
    for content_type in ["application/json", "text/plain", "application/grpcx"] {
        let headers = [("content-type", content_type), ("te", "trailers")];
        let answer = call(&address, Method::POST, EMPTY_CALL, &headers, EMPTY_MESSAGE).await;
        assert_eq!(
            answer.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type}"
        );
    }
    let answer = call(
        &address,
        Method::POST,
        EMPTY_CALL,
        &[("te", "trailers")],
        b"",
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "missing");
}

#[tokio::test]
async fn unknown_service_and_method_are_unimplemented_trailers_only() {
    let address = start().await;
    for path in [
        "/grpc.testing.NoSuchService/EmptyCall",
        "/grpc.testing.TestService/NoSuchMethod",
        "/not-a-grpc-path",
    ] {
        let answer = call(&address, Method::POST, path, GRPC, EMPTY_MESSAGE).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        assert!(answer.trailers.is_none(), "{path}: trailers-only expected");
        assert_eq!(answer.grpc_status(), Some("12"), "{path}");
    }
}

#[tokio::test]
async fn a_malformed_grpc_timeout_is_refused() {
    let address = start().await;
    for timeout_value in ["", "1", "123456789S", "-1S", "1x", "S"] {
        let headers = [
            ("content-type", "application/grpc"),
            ("grpc-timeout", timeout_value),
        ];
        let answer = call(&address, Method::POST, EMPTY_CALL, &headers, EMPTY_MESSAGE).await;
        assert_eq!(answer.grpc_status(), Some("13"), "{timeout_value:?}");
    }
}

#[tokio::test]
async fn an_unknown_grpc_encoding_is_unimplemented_with_the_accepted_list() {
    let address = start().await;
    let headers = [
        ("content-type", "application/grpc"),
        ("grpc-encoding", "snappy"),
    ];
    let answer = call(&address, Method::POST, EMPTY_CALL, &headers, EMPTY_MESSAGE).await;
    assert_eq!(answer.grpc_status(), Some("12"));
    assert!(answer.grpc_message().contains("snappy"));
    let accepted = answer.headers.get("grpc-accept-encoding").unwrap();
    assert!(accepted.to_str().unwrap().contains("gzip"));
}

#[tokio::test]
async fn a_message_cut_short_by_end_stream_is_internal() {
    let address = start().await;
    // flag 0 | length 10 | only 3 of the 10 bytes, then END_STREAM.
    let truncated = [0x00, 0x00, 0x00, 0x00, 0x0a, 0x01, 0x02, 0x03];
    let answer = call(&address, Method::POST, EMPTY_CALL, GRPC, &truncated).await;
    assert_eq!(answer.grpc_status(), Some("13"));
    // Half a prefix is cut short too.
    let answer = call(&address, Method::POST, EMPTY_CALL, GRPC, &[0x00, 0x00]).await;
    assert_eq!(answer.grpc_status(), Some("13"));
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_resource_exhausted() {
    let address = start().await;
    // flag 0 | length 0x7fffffff (2 GiB) — refused from the prefix alone,
    // before anything is allocated.
    let huge = [0x00, 0x7f, 0xff, 0xff, 0xff];
    let answer = call(&address, Method::POST, EMPTY_CALL, GRPC, &huge).await;
    assert_eq!(answer.grpc_status(), Some("8"));
}

#[tokio::test]
async fn a_compressed_flag_without_grpc_encoding_is_internal() {
    let address = start().await;
    // flag 1 (compressed) | length 0, but no grpc-encoding header.
    let answer = call(
        &address,
        Method::POST,
        EMPTY_CALL,
        GRPC,
        &[0x01, 0, 0, 0, 0],
    )
    .await;
    assert_eq!(answer.grpc_status(), Some("13"));
}

#[tokio::test]
async fn invalid_protobuf_is_internal() {
    let address = start().await;
    // flag 0 | length 2 | field 1, wire type 2 (length-delimited), length 5 —
    // but the message ends there.
    let garbage = [0x00, 0x00, 0x00, 0x00, 0x02, 0x0a, 0x05];
    let path = "/grpc.testing.TestService/UnaryCall";
    let answer = call(&address, Method::POST, path, GRPC, &garbage).await;
    assert_eq!(answer.grpc_status(), Some("13"));
}

#[tokio::test]
async fn the_server_keeps_serving_after_bad_requests() {
    let address = start().await;
    let mut client = connect(&address).await;
    // A burst of bad streams on one connection, then a good one on the same
    // connection: the bad ones cost their own streams only.
    for _ in 0..20 {
        let request = http::Request::post(format!("http://{address}{EMPTY_CALL}"))
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        let (_response, mut send) = client.send_request(request, false).unwrap();
        send.send_data(Bytes::from_static(&[0x05, 0xff]), true)
            .unwrap();
    }
    let answer = call(&address, Method::POST, EMPTY_CALL, GRPC, EMPTY_MESSAGE).await;
    assert_eq!(answer.grpc_status(), Some("0"));
}

#[tokio::test]
async fn a_deadline_ends_a_sleeping_call_with_deadline_exceeded() {
    let address = start().await;
    // StreamingOutputCall asked to wait 2 s before its one response, with a
    // 50 ms deadline.
    //   field 2 (response_parameters), length 6:
    //     field 1 (size) = 1; field 2 (interval_us) = 2_000_000 (varint 0x80 0x89 0x7a)
    let request: &[u8] = &[0x12, 0x06, 0x08, 0x01, 0x10, 0x80, 0x89, 0x7a];
    let mut body = BytesMut::new();
    body.put_u8(0);
    body.put_u32(8);
    body.put_slice(request);
    let headers = [
        ("content-type", "application/grpc"),
        ("grpc-timeout", "50m"),
    ];
    let started = std::time::Instant::now();
    let path = "/grpc.testing.TestService/StreamingOutputCall";
    let answer = call(&address, Method::POST, path, &headers, &body).await;
    assert_eq!(answer.grpc_status(), Some("4"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "not after the sleep"
    );
}

/// A server with short timers, for the connection-lifecycle tests.
async fn start_with(configure: impl FnOnce(&mut grpc_chat::server::Builder)) -> String {
    common::in_process::start_with(TestServiceServer::new(InteropService), configure)
        .await
        .detach()
}

#[tokio::test]
async fn a_connection_that_never_sends_the_preface_is_closed() {
    use tokio::io::AsyncWriteExt;
    let address = start_with(|b| {
        b.handshake_timeout(Duration::from_millis(200));
    })
    .await;
    let silent = TcpStream::connect(&address).await.unwrap();
    assert!(until_closed(silent, WAIT).await < Duration::from_secs(2));
    // Half a preface, then nothing: the same.
    let mut stalled = TcpStream::connect(&address).await.unwrap();
    stalled
        .write_all(&PREFACE_AND_SETTINGS[..10])
        .await
        .unwrap();
    assert!(until_closed(stalled, WAIT).await < Duration::from_secs(2));
    // Meanwhile the server serves everyone else.
    let answer = call(&address, Method::POST, EMPTY_CALL, GRPC, EMPTY_MESSAGE).await;
    assert_eq!(answer.grpc_status(), Some("0"));
}

#[tokio::test]
async fn a_peer_that_does_not_answer_pings_is_closed() {
    use tokio::io::AsyncWriteExt;
    let address = start_with(|b| {
        b.keepalive_interval(Some(Duration::from_millis(100)))
            .keepalive_timeout(Duration::from_millis(200));
    })
    .await;
    // Completes the handshake, then never reads again: the server's PING is
    // never acknowledged.
    let mut mute = TcpStream::connect(&address).await.unwrap();
    mute.write_all(PREFACE_AND_SETTINGS).await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(until_closed(mute, WAIT).await < Duration::from_secs(2));
}

#[tokio::test]
async fn an_idle_connection_gets_goaway() {
    let address = start_with(|b| {
        b.idle_timeout(Some(Duration::from_millis(200)));
    })
    .await;
    let socket = TcpStream::connect(&address).await.unwrap();
    let (client, connection) = h2::client::handshake(socket).await.unwrap();
    // With no stream open, the server sends GOAWAY and the connection ends.
    let ended = timeout(WAIT, connection).await;
    assert!(ended.is_ok(), "the idle connection was not closed");
    drop(client);
}

#[tokio::test]
async fn shutdown_drains_calls_in_flight_and_refuses_new_ones() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        .shutdown_grace(Duration::from_secs(3))
        .add_service(TestServiceServer::new(InteropService))
        .build();
    let serving = tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));

    // A call that answers after 300 ms: field 2 (response_parameters), length 6:
    // size 1, interval_us 300_000 (varint 0xe0 0xa7 0x12).
    let request: &[u8] = &[0x12, 0x06, 0x08, 0x01, 0x10, 0xe0, 0xa7, 0x12];
    let mut body = BytesMut::new();
    body.put_u8(0);
    body.put_u32(8);
    body.put_slice(request);
    let in_flight = {
        let address = address.clone();
        tokio::spawn(async move {
            let path = "/grpc.testing.TestService/StreamingOutputCall";
            call(&address, Method::POST, path, GRPC, &body).await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = stop.send(());

    let answer = in_flight.await.unwrap();
    assert_eq!(
        answer.grpc_status(),
        Some("0"),
        "the call in flight finished"
    );
    assert_eq!(answer.body.len(), 5 + 5, "with its one response");
    timeout(WAIT, serving).await.unwrap().unwrap().unwrap();
    assert!(
        TcpStream::connect(&address).await.is_err(),
        "no new connections after shutdown"
    );
}

/// `message` as one uncompressed gRPC message: flag 0 | length | payload.
fn framed(message: &impl prost::Message) -> Vec<u8> {
    let payload = message.encode_to_vec();
    let mut out = vec![0u8];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

#[tokio::test]
async fn a_unary_call_with_no_or_two_requests_is_unimplemented() {
    // statuscodes.md: UNIMPLEMENTED for a "Request cardinality violation
    // (method requires exactly one request but client sent some other
    // number of requests)".
    let address = start().await;
    let two = [EMPTY_MESSAGE, EMPTY_MESSAGE].concat();
    for body in [&b""[..], &two[..]] {
        let answer = call(&address, Method::POST, EMPTY_CALL, GRPC, body).await;
        assert_eq!(answer.grpc_status(), Some("12"), "{} bytes", body.len());
    }
}

#[tokio::test]
async fn a_codec_other_than_proto_is_refused_with_415() {
    let address = start().await;
    for content_type in ["application/grpc+json", "application/grpc+foo"] {
        let headers = [("content-type", content_type), ("te", "trailers")];
        let answer = call(&address, Method::POST, EMPTY_CALL, &headers, EMPTY_MESSAGE).await;
        assert_eq!(
            answer.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type}"
        );
    }
    let headers = [
        ("content-type", "application/grpc+proto"),
        ("te", "trailers"),
    ];
    let answer = call(&address, Method::POST, EMPTY_CALL, &headers, EMPTY_MESSAGE).await;
    assert_eq!(answer.grpc_status(), Some("0"));
}

#[tokio::test]
async fn initial_metadata_set_before_an_error_is_sent_as_headers() {
    // The handler sets initial metadata (the echoed header), then fails
    // before any message: the metadata must arrive as headers, then the
    // status as trailers — not folded into one trailers-only frame, where a
    // client would find it among the trailers.
    use grpc_chat::pb::grpc_testing::{EchoStatus, StreamingOutputCallRequest};
    let address = start().await;
    let request = StreamingOutputCallRequest {
        response_status: Some(EchoStatus {
            code: 2,
            message: "boom".into(),
        }),
        ..Default::default()
    };
    let headers = [
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("x-grpc-test-echo-initial", "hello"),
    ];
    let answer = call(
        &address,
        Method::POST,
        "/grpc.testing.TestService/FullDuplexCall",
        &headers,
        &framed(&request),
    )
    .await;
    assert_eq!(answer.headers["x-grpc-test-echo-initial"], "hello");
    assert!(
        answer.headers.get("grpc-status").is_none(),
        "not trailers-only"
    );
    let trailers = answer
        .trailers
        .as_ref()
        .expect("trailers after the headers");
    assert_eq!(trailers["grpc-status"], "2");
    assert!(trailers.get("x-grpc-test-echo-initial").is_none());
}
