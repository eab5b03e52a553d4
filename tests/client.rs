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
