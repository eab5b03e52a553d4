//! The client `Channel` over real TCP: reconnecting after the server went
//! away, deadlines sent as `grpc-timeout`, and an unreachable server reported
//! as `UNAVAILABLE`; and, against a scripted raw HTTP/2 server, answers our
//! own server never gives: trailers-only metadata, a `grpc-status` in
//! headers that do not end the stream, the wrong number of unary responses,
//! messages still buffered when the client cancels; and a read given up
//! while the headers are awaited, which must leave the call usable.

use std::time::Duration;

use grpc_chat::Code;
use grpc_chat::client::Channel;
use grpc_chat::http2::FrameHead;
use grpc_chat::interop::server::InteropService;
use grpc_chat::pb::grpc_testing::{
    Empty, ResponseParameters, StreamingOutputCallRequest, TestServiceClient, TestServiceServer,
};
use grpc_chat::rpc::Request;
use grpc_chat::server::Server;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Serves the interop service on `address` until `stop` fires.
async fn serve_on(address: &str) -> (oneshot::Sender<()>, JoinHandle<std::io::Result<()>>) {
    let listener = TcpListener::bind(address).await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = Server::builder()
        .shutdown_grace(Duration::from_millis(100))
        .add_service(TestServiceServer::new(InteropService))
        .build();
    let task = tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    (stop, task)
}

#[tokio::test]
async fn a_channel_reconnects_after_the_server_restarts() {
    let address = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let (stop, task) = serve_on(&address).await;
    let client = TestServiceClient::new(Channel::connect(address.clone()).await.unwrap());
    client.empty_call(Empty {}).await.unwrap();

    // The server goes away: calls fail with UNAVAILABLE, not a panic or a hang.
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    let status = client.empty_call(Empty {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status}");

    // It comes back on the same address: the same channel dials again.
    let (_stop, _task) = serve_on(&address).await;
    client.empty_call(Empty {}).await.unwrap();
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    let address = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let status = Channel::connect(address).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("cannot connect"), "{status}");
}

#[tokio::test]
async fn a_deadline_ends_a_server_streaming_call_mid_stream() {
    let address = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let (_stop, _task) = serve_on(&address).await;
    let client = TestServiceClient::new(Channel::connect(address).await.unwrap());
    // Three responses 200 ms apart, with a 300 ms deadline: the first arrives,
    // then the call ends with DEADLINE_EXCEEDED.
    let parameter = ResponseParameters {
        size: 10,
        interval_us: 200_000,
        ..Default::default()
    };
    let mut request = Request::new(StreamingOutputCallRequest {
        response_parameters: vec![parameter; 3],
        ..Default::default()
    });
    request.set_timeout(Duration::from_millis(300));
    let mut stream = client
        .streaming_output_call(request)
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
    let status = loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the call ended OK despite its deadline"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
}

/// A one-connection HTTP/2 "server" of hand-written frames: it answers the
/// preface with an empty SETTINGS and an ACK of the client's, waits for the
/// first request's HEADERS, then writes `then` and holds the socket open.
async fn scripted_server(then: Vec<u8>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        // SETTINGS (empty) | SETTINGS ACK: 9-octet headers, no payload.
        socket
            .write_all(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0, 0, 0, 0, 0x4, 0x1, 0, 0, 0, 0])
            .await
            .unwrap();
        // Read until a HEADERS frame (type 0x1) has arrived: skip the
        // 24-octet preface, then walk frame headers.
        let mut seen = Vec::new();
        let mut chunk = [0u8; 4096];
        'read: loop {
            let n = socket.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed before its request");
            seen.extend_from_slice(&chunk[..n]);
            let mut at = 24;
            while let Some(head) = seen.get(at..).and_then(FrameHead::peek) {
                if head.kind == grpc_chat::http2::frame::HEADERS {
                    break 'read;
                }
                at += grpc_chat::http2::frame::HEADER_LEN + head.length as usize;
            }
        }
        socket.write_all(&then).await.unwrap();
        // Held open: the client must act on what it was sent, not on EOF.
        let _ = socket.read(&mut chunk).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    address
}

/// A status caused by the server says so: the server's GOAWAY
/// ENHANCE_YOUR_CALM (debug data "too_many_pings", as grpc-go sends) ends
/// the call UNAVAILABLE, as in grpc-go's client (a GOAWAY ends the
/// connection, not the call's meaning), and its message names the server
/// as the sender, the code and the debug data.
#[tokio::test]
async fn a_goaway_from_the_server_is_reported_as_the_servers() {
    // GOAWAY: length 22 | type 0x7 | flags 0 | stream 0 | last stream 0 |
    // error 0xb ENHANCE_YOUR_CALM | "too_many_pings"
    let mut goaway = vec![0, 0, 22, 0x7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xb];
    goaway.extend_from_slice(b"too_many_pings");
    let address = scripted_server(goaway).await;
    let client = TestServiceClient::new(Channel::connect(address).await.unwrap());
    let status = client.empty_call(Request::new(Empty {})).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("the server sent GOAWAY ENHANCE_YOUR_CALM"),
        "{status:?}"
    );
    assert!(status.message().contains("too_many_pings"), "{status:?}");
}

/// A status caused by our own `h2` detecting a broken rule says that too:
/// a DATA frame on stream 0 is a connection error (RFC 9113 §6.1: "If a
/// DATA frame is received whose Stream Identifier field is 0x00, the
/// recipient MUST respond with a connection error of type
/// PROTOCOL_ERROR"), which our side raises and sends.
#[tokio::test]
async fn a_protocol_error_our_h2_detects_is_reported_as_ours() {
    // DATA: length 1 | type 0x0 | flags 0 | stream 0 | one octet.
    let address = scripted_server(vec![0, 0, 1, 0x0, 0, 0, 0, 0, 0, b'x']).await;
    let client = TestServiceClient::new(Channel::connect(address).await.unwrap());
    let status = client.empty_call(Request::new(Empty {})).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().starts_with(
            "this client's HTTP/2 layer (h2) detected a protocol violation by the server \
             and sent GOAWAY PROTOCOL_ERROR"
        ),
        "{status:?}"
    );
}

/// What [`answering_server`] answers to every call.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// One HEADERS frame with END_STREAM: status 5 and `x-meta: a`.
    TrailersOnly,
    /// `grpc-status: 8` in headers that do not end the stream, one message,
    /// then trailers with `grpc-status: 9`.
    StatusInHeadersThenTrailers,
    /// This many empty messages, then trailers with status 0.
    Messages(usize),
    /// Two empty messages in one DATA frame, then nothing (the stream
    /// stays open).
    TwoThenSilence,
}

/// An HTTP/2 server (the `h2` crate, no gRPC layer) that answers every
/// call as `answer` says, so the client meets answers our own server never
/// gives.
async fn answering_server(answer: Answer) -> String {
    use bytes::Bytes;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((request, mut respond))) = connection.accept().await {
                    tokio::spawn(async move {
                        // Kept open (not read) for the life of the answer.
                        let _body = request.into_body();
                        let headers = |status: Option<&str>| {
                            let mut response = http::Response::builder()
                                .status(200)
                                .header("content-type", "application/grpc");
                            if let Some(status) = status {
                                response = response.header("grpc-status", status);
                            }
                            response.body(()).unwrap()
                        };
                        let trailers = |status: &str| {
                            let mut map = http::HeaderMap::new();
                            map.insert("grpc-status", status.parse().unwrap());
                            map
                        };
                        // flag 0 | length 0: an empty message.
                        let empty = Bytes::from_static(&[0, 0, 0, 0, 0]);
                        match answer {
                            Answer::TrailersOnly => {
                                let mut response = headers(Some("5"));
                                response
                                    .headers_mut()
                                    .insert("x-meta", "a".parse().unwrap());
                                let _ = respond.send_response(response, true);
                            }
                            Answer::StatusInHeadersThenTrailers => {
                                let mut stream =
                                    respond.send_response(headers(Some("8")), false).unwrap();
                                let _ = stream.send_data(empty, false);
                                let _ = stream.send_trailers(trailers("9"));
                            }
                            Answer::Messages(n) => {
                                let mut stream =
                                    respond.send_response(headers(None), false).unwrap();
                                for _ in 0..n {
                                    let _ = stream.send_data(empty.clone(), false);
                                }
                                let _ = stream.send_trailers(trailers("0"));
                            }
                            Answer::TwoThenSilence => {
                                let mut stream =
                                    respond.send_response(headers(None), false).unwrap();
                                let two = [&empty[..], &empty[..]].concat();
                                let _ = stream.send_data(Bytes::from(two), false);
                                tokio::time::sleep(Duration::from_secs(30)).await;
                            }
                        }
                    });
                }
            });
        }
    });
    address
}

#[tokio::test]
async fn a_trailers_only_answer_has_trailing_metadata_and_no_headers() {
    let address = answering_server(Answer::TrailersOnly).await;
    let client = TestServiceClient::new(Channel::connect(address).await.unwrap());
    let call = client.full_duplex_call(Request::new(())).await.unwrap();
    let (mut tx, mut rx) = call.split();
    tx.close().unwrap();
    // grpc-go's client reports the same: the one frame is the trailers.
    assert!(rx.headers().await.unwrap().is_empty());
    let status = rx.message().await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.metadata().get("x-meta"), Some("a"));
}

#[tokio::test]
async fn grpc_status_in_headers_that_do_not_end_the_stream_is_ignored() {
    // PROTOCOL-HTTP2.md: only a HEADERS frame with END_STREAM is
    // Trailers-Only; the status is the trailers' one.
    let address = answering_server(Answer::StatusInHeadersThenTrailers).await;
    let client = TestServiceClient::new(Channel::connect(address).await.unwrap());
    let status = client.empty_call(Empty::default()).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn a_unary_answer_with_no_or_two_messages_is_unimplemented() {
    // statuscodes.md: UNIMPLEMENTED for a "Response cardinality violation
    // (method requires exactly one response but server sent some other
    // number of responses)".
    for n in [0, 2] {
        let address = answering_server(Answer::Messages(n)).await;
        let client = TestServiceClient::new(Channel::connect(address).await.unwrap());
        let status = client.empty_call(Empty::default()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented, "{n} messages");
    }
}

#[tokio::test]
async fn after_a_cancel_no_buffered_message_is_delivered() {
    let address = answering_server(Answer::TwoThenSilence).await;
    let client = TestServiceClient::new(Channel::connect(address).await.unwrap());
    let call = client.full_duplex_call(Request::new(())).await.unwrap();
    let (mut tx, mut rx) = call.split();
    // Both messages arrive in one DATA frame: the second is buffered when
    // the first is read.
    assert!(rx.message().await.unwrap().is_some());
    tx.cancel();
    let status = rx.message().await.unwrap_err();
    assert_eq!(status.code(), Code::Cancelled);
}

#[tokio::test]
async fn a_read_given_up_before_the_headers_leaves_the_call_usable() {
    // Our server sends a full-duplex call's headers with its first answer:
    // until the client asks for one, a read waits for the headers. A read
    // given up meanwhile (a timeout here, a `select!` branch elsewhere) must
    // leave the call as it was.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let server = Server::builder()
        .add_service(TestServiceServer::new(InteropService))
        .build();
    tokio::spawn(server.serve(listener, std::future::pending::<()>()));
    let client = TestServiceClient::new(Channel::connect(address).await.unwrap());
    let mut call = client.full_duplex_call(Request::new(())).await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(100), call.message()).await;
    assert!(early.is_err(), "nothing to read yet: {early:?}");
    call.send(&StreamingOutputCallRequest {
        response_parameters: vec![ResponseParameters {
            size: 3,
            ..Default::default()
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let answer = call.message().await.expect("the call still works");
    assert_eq!(
        answer.and_then(|a| a.payload).map(|p| p.body.len()),
        Some(3)
    );
}
