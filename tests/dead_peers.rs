//! Dead peers and PING abuse, against real servers over real TCP:
//!
//! * a member whose client is killed with SIGKILL leaves the room (the
//!   kernel closes its socket);
//! * a member behind a network path that silently stops forwarding (a TCP
//!   proxy in this test that keeps both sockets open but passes nothing) is
//!   found by the server's keepalive PINGs and leaves, with a leave event,
//!   within the keepalive interval plus its timeout — while the same member
//!   behind a working path stays for many keepalive rounds;
//! * a client that PINGs too often gets GOAWAY `ENHANCE_YOUR_CALM`, and
//!   nobody else notices; a client whose keepalive respects the server's
//!   permitted interval keeps its connection.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::member::Member;
use common::{Collected, Peer, chat_server};
use grpc_chat::client::Channel;
use grpc_chat::health::{HealthReporter, HealthServer};
use grpc_chat::pb::chat::{ChatServiceClient, UserEventType, WhoRequest};
use grpc_chat::pb::grpc_health_v1::health_check_response::ServingStatus;
use grpc_chat::pb::grpc_health_v1::{HealthCheckRequest, HealthClient};
use grpc_chat::rpc::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Keepalive of the servers under test: PING every 500 ms, 500 ms to answer.
const KEEPALIVE: &str = "0.5";

async fn who(channel: &Channel, room: &str) -> Vec<String> {
    ChatServiceClient::new(channel.clone())
        .who(Request::new(WhoRequest { room: room.into() }))
        .await
        .expect("Who")
        .into_inner()
        .users
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_killed_with_sigkill_leaves_the_room() {
    let server = chat_server(&["--rate-limit", "0"]);
    let channel = Channel::connect(format!("127.0.0.1:{}", server.port))
        .await
        .unwrap();
    let mut observer = Member::join(&channel, "deadpeers", "observer").await;

    let lines = Arc::new(Collected::default());
    let sink = Arc::clone(&lines);
    let args: Vec<String> = [
        "--address",
        &format!("127.0.0.1:{}", server.port),
        "--user",
        "doomed",
        "--room",
        "deadpeers",
        "--line",
    ]
    .map(str::to_owned)
    .to_vec();
    let victim = Peer::spawn(
        &PathBuf::from(env!("CARGO_BIN_EXE_chat-client")),
        &args,
        "doomed",
        move |line| sink.push(line),
    );
    observer
        .wait_user_event("doomed", UserEventType::UserJoined, Duration::from_secs(15))
        .await;

    // SIGKILL: no chance to say goodbye.
    let killed = Command::new("kill")
        .args(["-KILL", &victim.pid().to_string()])
        .stderr(Stdio::inherit())
        .status()
        .unwrap();
    assert!(killed.success());
    observer
        .wait_user_event("doomed", UserEventType::UserLeft, Duration::from_secs(10))
        .await;
    assert_eq!(
        who(&channel, "deadpeers").await,
        vec!["observer".to_owned()]
    );
    drop(lines);
}

/// Copies `from` to `to` until `stalled` turns true; from then on it holds
/// both sockets open and passes nothing — a path that died without a FIN.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = stalled.wait_for(|s| *s) => break,
        };
        let now_stalled = *stalled.borrow();
        if now_stalled {
            break;
        }
        let Some(chunk) = buf.get(..n) else { return };
        if to.write_all(chunk).await.is_err() {
            return;
        }
    }
    // Keep the halves alive (and unread) until the test's runtime ends.
    std::future::pending::<()>().await;
    drop((from, to));
}

/// A TCP proxy to `upstream` on a free port; returns its address and the
/// switch that stalls every connection through it.
async fn stallable_proxy(upstream: String) -> (String, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (stall, stalled) = watch::channel(false);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                return;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::spawn(pump(client_read, server_write, stalled.clone()));
            tokio::spawn(pump(server_read, client_write, stalled.clone()));
        }
    });
    (address, stall)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_removes_a_member_behind_a_dead_path() {
    let server = chat_server(&[
        "--rate-limit",
        "0",
        "--keepalive-interval-secs",
        KEEPALIVE,
        "--keepalive-timeout-secs",
        KEEPALIVE,
    ]);
    let direct = Channel::connect(format!("127.0.0.1:{}", server.port))
        .await
        .unwrap();
    let (proxy, stall) = stallable_proxy(format!("127.0.0.1:{}", server.port)).await;
    let mut observer = Member::join(&direct, "halfopen", "observer").await;
    let proxied = Channel::connect(proxy).await.unwrap();
    let mut victim = Member::join(&proxied, "halfopen", "victim").await;
    observer
        .wait_user_event("victim", UserEventType::UserJoined, Duration::from_secs(10))
        .await;

    // While the path works, keepalive PINGs are answered: the member stays
    // through several rounds (and its messages arrive).
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        victim.say(&format!("still here {round}")).await.unwrap();
    }
    assert_eq!(
        who(&direct, "halfopen").await,
        vec!["observer".to_owned(), "victim".to_owned()]
    );

    // The path dies silently: no FIN, no RST, nothing.
    let stalled_at = Instant::now();
    stall.send(true).unwrap();
    observer
        .wait_user_event("victim", UserEventType::UserLeft, Duration::from_secs(15))
        .await;
    let took = stalled_at.elapsed();
    // The bound is the keepalive interval plus its timeout (1 s here); the
    // margin is for a busy machine, and is far below what the idle timeout
    // (300 s) would take.
    assert!(
        took < Duration::from_secs(6),
        "took {took:?} to notice the dead path"
    );
    assert_eq!(who(&direct, "halfopen").await, vec!["observer".to_owned()]);
    assert!(
        server.output().contains("keepalive PING not acknowledged"),
        "{}",
        server.output()
    );
}

/// A health server in this process that permits a PING every 200 ms.
async fn health_server() -> (String, HealthReporter, tokio::sync::oneshot::Sender<()>) {
    let reporter = HealthReporter::new();
    reporter.set_serving("");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = grpc_chat::server::Server::builder()
        .min_ping_interval(Duration::from_millis(200))
        .shutdown_grace(Duration::from_millis(200))
        .add_service(HealthServer::new(reporter.service()))
        .build();
    tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    (address, reporter, stop)
}

async fn serving(channel: &Channel) -> bool {
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_gets_goaway_enhance_your_calm() {
    let (address, _reporter, _stop) = health_server().await;
    let bystander = Channel::connect(address.clone()).await.unwrap();
    assert!(serving(&bystander).await);

    // Raw HTTP/2: PING after PING, each as soon as the last is answered.
    let socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    let (_send, mut connection) = h2::client::handshake(socket).await.unwrap();
    let mut pinger = connection.ping_pong().expect("ping_pong is available once");
    let driver = tokio::spawn(connection);
    let mut answered = 0;
    for _ in 0..50 {
        match tokio::time::timeout(Duration::from_secs(5), pinger.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => answered += 1,
            Ok(Err(_)) => break,
            Err(_) => panic!("a PING went unanswered without the connection closing"),
        }
    }
    // Two early PINGs are forgiven; the third strike closes (the first PING
    // is never a strike): four answered, or a couple more that were already
    // on their way when the connection's task sent the GOAWAY — never 50.
    assert!(answered <= 6, "{answered} PINGs answered before GOAWAY");
    let ended = tokio::time::timeout(Duration::from_secs(5), driver)
        .await
        .expect("the connection ends")
        .unwrap();
    let error = ended.expect_err("the connection ends with GOAWAY");
    assert!(error.is_go_away(), "{error:?}");
    assert_eq!(
        error.reason(),
        Some(h2::Reason::ENHANCE_YOUR_CALM),
        "{error:?}"
    );

    // The bystander noticed nothing.
    assert!(serving(&bystander).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_within_the_permitted_interval_is_fine() {
    let (address, reporter, _stop) = health_server().await;
    // Our client's keepalive at 300 ms, above the server's 200 ms minimum,
    // with a Watch call open the whole time.
    let channel = Channel::builder(address)
        .keepalive(Duration::from_millis(300), Duration::from_secs(2))
        .connect()
        .await
        .unwrap();
    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    // Ten keepalive rounds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Still the same call on the same connection: it sees the change.
    reporter.set_not_serving("");
    let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("an update")
        .expect("the Watch call is still alive")
        .expect("not ended");
    assert_eq!(next.status(), ServingStatus::NotServing);
}
