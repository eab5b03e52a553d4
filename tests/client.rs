//! The client `Channel` over real TCP: reconnecting after the server went
//! away, deadlines sent as `grpc-timeout`, and an unreachable server reported
//! as `UNAVAILABLE`.

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
            while seen.len() >= at + 9 {
                let len = u32::from_be_bytes([0, seen[at], seen[at + 1], seen[at + 2]]) as usize;
                if seen[at + 3] == 0x1 {
                    break 'read;
                }
                at += 9 + len;
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
