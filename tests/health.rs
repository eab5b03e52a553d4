//! `grpc.health.v1.Health`: our service through our generated client, in
//! process, and `chat-server`'s health as grpc-go's `grpc-health-probe` sees
//! it, including during a graceful shutdown.
//!
//! The probe comes from `scripts/setup-interop.sh` (`tests/interop/bin/`).

mod common;

use common::WAIT;

use std::process::Command;

use common::in_process::Running;
use common::{CLIENT_TIMEOUT, chat_server, interop_bin, run_client};
use grpc_chat::Code;
use grpc_chat::client::Channel;
use grpc_chat::health::{HealthReporter, HealthServer};
use grpc_chat::pb::chat::{ChatMessage, ChatServiceClient};
use grpc_chat::pb::grpc_health_v1::health_check_response::ServingStatus;
use grpc_chat::pb::grpc_health_v1::{HealthCheckRequest, HealthCheckResponse, HealthClient};
use grpc_chat::rpc::{Request, Streaming};
use tokio::time::timeout;

const CHAT: &str = "chat.ChatService";

fn request(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_owned(),
    }
}

/// A health service serving "" and `chat.ChatService`, on a free port; the
/// reporter, a client, and the stop handle (the server stops when dropped).
async fn start() -> (HealthReporter, HealthClient, Running) {
    let reporter = HealthReporter::new();
    reporter.set_serving("");
    reporter.set_serving(CHAT);
    let running = common::in_process::start(HealthServer::new(reporter.service())).await;
    let channel = Channel::connect(running.address.clone()).await.unwrap();
    (reporter, HealthClient::new(channel), running)
}

async fn check(client: &HealthClient, service: &str) -> Result<ServingStatus, Code> {
    match timeout(WAIT, client.check(request(service))).await {
        Ok(Ok(response)) => Ok(response.into_inner().status()),
        Ok(Err(status)) => Err(status.code()),
        Err(_) => panic!("Check({service:?}) timed out"),
    }
}

async fn watch(client: &HealthClient, service: &str) -> Streaming<HealthCheckResponse> {
    timeout(WAIT, client.watch(request(service)))
        .await
        .expect("Watch timed out")
        .expect("Watch failed")
        .into_inner()
}

/// The next status on a Watch stream.
async fn next(stream: &mut Streaming<HealthCheckResponse>) -> Option<ServingStatus> {
    timeout(WAIT, stream.message())
        .await
        .expect("no Watch update in time")
        .expect("Watch stream failed")
        .map(|r| r.status())
}

#[tokio::test]
async fn check_reports_registered_services_and_not_found_for_others() {
    let (_reporter, client, _stop) = start().await;
    assert_eq!(check(&client, "").await, Ok(ServingStatus::Serving));
    assert_eq!(check(&client, CHAT).await, Ok(ServingStatus::Serving));
    assert_eq!(check(&client, "no.Such").await, Err(Code::NotFound));
}

#[tokio::test]
async fn check_follows_status_changes() {
    let (reporter, client, _stop) = start().await;
    reporter.set_not_serving(CHAT);
    assert_eq!(check(&client, CHAT).await, Ok(ServingStatus::NotServing));
    assert_eq!(check(&client, "").await, Ok(ServingStatus::Serving));
    reporter.set_serving(CHAT);
    assert_eq!(check(&client, CHAT).await, Ok(ServingStatus::Serving));
}

#[tokio::test]
async fn watch_sends_the_status_then_each_change() {
    let (reporter, client, _stop) = start().await;
    let mut stream = watch(&client, CHAT).await;
    assert_eq!(next(&mut stream).await, Some(ServingStatus::Serving));
    reporter.set_not_serving(CHAT);
    assert_eq!(next(&mut stream).await, Some(ServingStatus::NotServing));
    reporter.set_serving(CHAT);
    assert_eq!(next(&mut stream).await, Some(ServingStatus::Serving));
}

#[tokio::test]
async fn watch_of_an_unknown_service_waits_for_it() {
    let (reporter, client, _stop) = start().await;
    let mut stream = watch(&client, "late.Service").await;
    assert_eq!(next(&mut stream).await, Some(ServingStatus::ServiceUnknown));
    reporter.set_serving("late.Service");
    assert_eq!(next(&mut stream).await, Some(ServingStatus::Serving));
}

#[tokio::test]
async fn shutdown_sends_not_serving_and_ends_watches() {
    let (reporter, client, _stop) = start().await;
    let mut stream = watch(&client, "").await;
    assert_eq!(next(&mut stream).await, Some(ServingStatus::Serving));
    reporter.shutdown();
    assert_eq!(next(&mut stream).await, Some(ServingStatus::NotServing));
    assert_eq!(next(&mut stream).await, None, "Watch ends after shutdown");
    assert_eq!(check(&client, CHAT).await, Ok(ServingStatus::NotServing));
}

/// `grpc-health-probe -addr 127.0.0.1:PORT [extra...]` to completion.
fn probe(port: u16, extra: &[&str]) -> common::ClientRun {
    let mut args = vec![format!("-addr=127.0.0.1:{port}")];
    args.extend(extra.iter().map(|s| s.to_string()));
    run_client(&interop_bin("grpc-health-probe"), &args, CLIENT_TIMEOUT)
}

#[test]
fn grpc_health_probe_sees_chat_server_serving_then_draining() {
    let mut server = chat_server(&["--shutdown-grace-secs", "3"]);
    let port = server.port;

    for extra in [&[][..], &["-service=chat.ChatService"][..]] {
        let run = probe(port, extra);
        assert!(
            run.success(),
            "{} should pass against a serving chat-server:\n{}",
            run.command,
            run.output
        );
    }
    let unknown = probe(port, &["-service=no.Such"]);
    assert!(
        !unknown.success(),
        "{} should fail for an unknown service:\n{}",
        unknown.command,
        unknown.output
    );
    server.assert_running();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (mut member, mut health) = runtime.block_on(async {
        let channel = Channel::connect(format!("127.0.0.1:{port}")).await.unwrap();
        // A ChatStream member keeps a call in flight, so the server drains
        // instead of stopping at once.
        let chat = ChatServiceClient::new(channel.clone());
        let mut member = chat.chat_stream(Request::new(())).await.unwrap();
        member
            .send(&ChatMessage {
                user: "prober".into(),
                message: "hello".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut health = watch(&HealthClient::new(channel), "").await;
        assert_eq!(next(&mut health).await, Some(ServingStatus::Serving));
        (member, health)
    });

    let kill = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success(), "kill -TERM failed: {kill}");

    // A connection open before the signal hears NOT_SERVING before the drain.
    runtime.block_on(async {
        assert_eq!(next(&mut health).await, Some(ServingStatus::NotServing));
    });
    // A new probe either reaches the draining server (NOT_SERVING, exit 4) or
    // finds the listener closed (exit 2): not healthy either way.
    let draining = probe(port, &["-connect-timeout=2s", "-rpc-timeout=2s"]);
    assert!(
        draining.status.is_some() && !draining.success(),
        "{} should fail while chat-server drains:\n{}",
        draining.command,
        draining.output
    );

    // The member's call ends (the hub closes it at shutdown) and the server
    // exits within its grace period.
    runtime.block_on(async {
        let _ = timeout(WAIT, async {
            while let Ok(Some(_)) = member.message().await {}
        })
        .await;
    });
    let exited = server.wait_exit(WAIT);
    assert!(
        exited.is_some(),
        "chat-server did not exit after SIGTERM:\n{}",
        server.output()
    );
}
