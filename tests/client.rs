//! The client `Channel` over real TCP: reconnecting after the server went
//! away, deadlines sent as `grpc-timeout`, and an unreachable server reported
//! as `UNAVAILABLE`; and, against a scripted raw HTTP/2 server, answers our
//! own server never gives: trailers-only metadata, a `grpc-status` in
//! headers that do not end the stream, the wrong number of unary responses,
//! messages still buffered when the client cancels.

use std::time::Duration;

use grpc_chat::Code;
use grpc_chat::client::Channel;
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

/// What [`scripted_server`] answers to every call.
#[derive(Clone, Copy, Debug)]
enum Script {
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
/// call as `script` says, so the client meets answers our own server never
/// gives.
async fn scripted_server(script: Script) -> String {
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
                        match script {
                            Script::TrailersOnly => {
                                let mut response = headers(Some("5"));
                                response
                                    .headers_mut()
                                    .insert("x-meta", "a".parse().unwrap());
                                let _ = respond.send_response(response, true);
                            }
                            Script::StatusInHeadersThenTrailers => {
                                let mut stream =
                                    respond.send_response(headers(Some("8")), false).unwrap();
                                let _ = stream.send_data(empty, false);
                                let _ = stream.send_trailers(trailers("9"));
                            }
                            Script::Messages(n) => {
                                let mut stream =
                                    respond.send_response(headers(None), false).unwrap();
                                for _ in 0..n {
                                    let _ = stream.send_data(empty.clone(), false);
                                }
                                let _ = stream.send_trailers(trailers("0"));
                            }
                            Script::TwoThenSilence => {
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
    let address = scripted_server(Script::TrailersOnly).await;
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
    let address = scripted_server(Script::StatusInHeadersThenTrailers).await;
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
        let address = scripted_server(Script::Messages(n)).await;
        let client = TestServiceClient::new(Channel::connect(address).await.unwrap());
        let status = client.empty_call(Empty::default()).await.unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented, "{n} messages");
    }
}

#[tokio::test]
async fn after_a_cancel_no_buffered_message_is_delivered() {
    let address = scripted_server(Script::TwoThenSilence).await;
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
