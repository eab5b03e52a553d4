//! 10,000 members on one server (ignored by default: it needs raised file
//! limits and a minute of the machine). Run it with
//!
//! ```sh
//! ulimit -n 20000    # this process and the server each hold 10,000 sockets
//! cargo test --release --test load -- --ignored --nocapture
//! ```
//!
//! A `chat-server` process gets 10,000 `ChatStream` members, each on its own
//! connection, that never send (so joining costs no C² traffic); one more
//! member sends a message, and all 10,000 must receive it. The server must
//! still hold every member afterwards. Its RSS per member is printed, not
//! asserted (figures belong in docs/benchmarks.md; the yardstick is
//! `ROWS=6 ../shared/bench/compare.sh`).

mod common;

use std::time::{Duration, Instant};

use common::chat_server;
use grpc_chat::client::Channel;
use grpc_chat::pb::chat::{ChatMessage, ChatServiceClient, HealthCheckRequest};
use grpc_chat::rpc::Request;
use tokio::task::JoinSet;

const MEMBERS: usize = 10_000;
/// Connections opened at once while joining.
const BATCH: usize = 500;

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn active_members(client: &ChatServiceClient) -> usize {
    client
        .health_check(Request::new(HealthCheckRequest {}))
        .await
        .map(|r| r.into_inner().active_clients as usize)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "10,000 connections: run with `ulimit -n 20000; cargo test --release --test load -- --ignored`"]
async fn ten_thousand_members_all_receive_a_broadcast() {
    let server = chat_server(&["--rate-limit", "0"]);
    let address = format!("127.0.0.1:{}", server.port);
    let probe = ChatServiceClient::new(Channel::connect(address.clone()).await.unwrap());
    let rss_before = vm_rss_kib(server.pid());

    // Join: each member on its own connection, its stream open, silent.
    let started = Instant::now();
    let mut listeners = Vec::with_capacity(MEMBERS);
    for batch in 0..MEMBERS.div_ceil(BATCH) {
        let mut joining = JoinSet::new();
        for _ in 0..BATCH.min(MEMBERS - batch * BATCH) {
            let address = address.clone();
            joining.spawn(async move {
                let channel = Channel::connect(address).await.unwrap_or_else(|status| {
                    panic!("connect failed ({status}); is `ulimit -n` at least 20000?")
                });
                ChatServiceClient::new(channel)
                    .chat_stream(Request::new(()))
                    .await
                    .expect("open ChatStream")
            });
        }
        while let Some(call) = joining.join_next().await {
            listeners.push(call.unwrap());
        }
        // Pace the joins to the server: the next batch waits until it has
        // taken in all but one batch of the members so far.
        let deadline = Instant::now() + Duration::from_secs(60);
        while active_members(&probe).await + BATCH < listeners.len() {
            assert!(
                Instant::now() < deadline,
                "the server stopped taking members"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Held: the server counts every one of them as a member.
    let deadline = Instant::now() + Duration::from_secs(60);
    while active_members(&probe).await < MEMBERS {
        if Instant::now() > deadline {
            let log = server.output();
            let problems: Vec<&str> = log
                .lines()
                .filter(|l| !l.contains(" INFO ") || l.contains("handshake"))
                .take(20)
                .collect();
            panic!(
                "only {} of {MEMBERS} members after 60 s; server log:\n{}",
                active_members(&probe).await,
                problems.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let joined_in = started.elapsed();
    let rss_held = vm_rss_kib(server.pid());

    // One broadcast.
    let mut sender = probe.chat_stream(Request::new(())).await.unwrap();
    sender
        .send(&ChatMessage {
            user: "announcer".into(),
            message: "hello, ten thousand".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let sent_at = Instant::now();
    let mut receiving = JoinSet::new();
    for mut call in listeners {
        receiving.spawn(async move {
            let got = tokio::time::timeout(Duration::from_secs(60), call.message()).await;
            let ok = matches!(&got, Ok(Ok(Some(m))) if m.user == "announcer" && m.message == "hello, ten thousand");
            (ok, call)
        });
    }
    let mut received = 0;
    let mut calls = Vec::with_capacity(MEMBERS);
    while let Some(done) = receiving.join_next().await {
        let (ok, call) = done.unwrap();
        received += usize::from(ok);
        calls.push(call);
    }
    let delivered_in = sent_at.elapsed();
    assert_eq!(received, MEMBERS, "members that received the broadcast");
    // Still all held (plus the announcer).
    assert!(active_members(&probe).await > MEMBERS);

    let per_member = (rss_held.saturating_sub(rss_before)) * 1024 / MEMBERS as u64;
    println!(
        "{MEMBERS} members joined in {joined_in:.1?}; broadcast delivered to all in \
         {delivered_in:.1?}; server RSS {rss_before} KiB -> {rss_held} KiB held \
         ({per_member} B per member, including its connection)"
    );
    drop(calls);
}
