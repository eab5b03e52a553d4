//! SIGTERM while a room is busy, against a `chat-server` process: the
//! server stops taking messages, tells every `Chat` member, delivers every
//! message it accepted to every member, sends GOAWAY, and exits within its
//! grace period. Checked by counting: each member must have received exactly
//! the room's messages 1..=N (ids are positions in the room), whatever the
//! moment the signal landed, and each sender's delivered messages must be a
//! prefix of what it sent (accepted in order, nothing accepted then lost).

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::chat_server;
use common::member::Member;
use grpc_chat::client::{Channel, ResponseStream};
use grpc_chat::pb::chat::{ChatMessage, ChatServiceClient, ServerEvent, server_event};
use grpc_chat::rpc::Request;
use grpc_chat::{Code, Status};
use tokio::task::JoinHandle;

/// The server's grace period in this test.
const GRACE_SECS: u64 = 5;
const SENDERS: [&str; 4] = ["ann", "ben", "cat", "dan"];
const ROOM: &str = "flush";

/// What one `Chat` member received until its call ended.
#[derive(Debug, Default)]
struct Received {
    /// (id, user, text) of every chat message, in order.
    messages: Vec<(u64, String, String)>,
    notices: Vec<String>,
    end: Option<Status>,
}

/// Reads a member's events until the call ends.
async fn read_all(mut stream: ResponseStream<ServerEvent>) -> Received {
    let mut got = Received::default();
    loop {
        match stream.message().await {
            Ok(Some(event)) => match event.event {
                Some(server_event::Event::ChatMessage(m)) => {
                    got.messages.push((m.id, m.username, m.message));
                }
                Some(server_event::Event::SystemEvent(s)) => got.notices.push(s.message),
                _ => {}
            },
            Ok(None) => {
                got.end = Some(Status::ok());
                return got;
            }
            Err(status) => {
                got.end = Some(status);
                return got;
            }
        }
    }
}

/// Panics, saying where, unless `got` equals `expected` (without printing
/// thousands of ids).
fn assert_same(what: &str, got: &[u64], expected: &[u64]) {
    if got == expected {
        return;
    }
    let at = got
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(expected.len()));
    let around = |v: &[u64]| v[at.saturating_sub(2)..(at + 3).min(v.len())].to_vec();
    panic!(
        "{what}: {} ids, expected {}; first difference at index {at}: got {:?}, expected {:?}",
        got.len(),
        expected.len(),
        around(got),
        around(expected)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_every_accepted_message_and_exits_within_the_grace_period() {
    let grace = GRACE_SECS.to_string();
    // The slow-reader rule is tested elsewhere; here a test reader that
    // falls behind on a busy machine must not be cut off for it.
    let mut server = chat_server(&[
        "--rate-limit",
        "0",
        "--shutdown-grace-secs",
        &grace,
        "--max-queue-bytes",
        "1000000000",
        "--slow-grace-secs",
        "60",
    ]);
    let address = format!("127.0.0.1:{}", server.port);

    // Senders, each on its own connection; all in the room before the
    // first message.
    let mut members = Vec::new();
    for name in SENDERS {
        let channel = Channel::connect(address.clone()).await.unwrap();
        members.push((name, Member::join(&channel, ROOM, name).await));
    }
    // A ChatStream member that only listens (its first message binds its
    // name, and is itself a room message).
    let stream_channel = Channel::connect(address.clone()).await.unwrap();
    let mut listener = ChatServiceClient::new(stream_channel)
        .chat_stream({
            let mut r = Request::new(());
            r.metadata_mut().insert("chat-room", ROOM).unwrap();
            r
        })
        .await
        .unwrap();
    listener
        .send(&ChatMessage {
            user: "listener".into(),
            message: "listening".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // The listener is in the room (its message arrived) before anyone else
    // says anything, so it must see every later message.
    let mut listener_id = 0;
    for (name, member) in members.iter_mut() {
        loop {
            match member.next().await.unwrap() {
                Some(server_event::Event::ChatMessage(m)) if m.username == "listener" => {
                    listener_id = m.id;
                    break;
                }
                Some(_) => continue,
                None => panic!("{name}'s call ended"),
            }
        }
    }

    // Each sender sends as fast as it can until the server stops it.
    let mut readers: Vec<JoinHandle<Received>> = Vec::new();
    let mut writers: Vec<JoinHandle<usize>> = Vec::new();
    for (name, member) in members {
        let (mut sink, stream) = member.call.split();
        writers.push(tokio::spawn(async move {
            let mut sent = 0;
            while sink
                .send(&common::member::text_event(&format!("{name} {sent}")))
                .await
                .is_ok()
            {
                sent += 1;
                // Fast, but not so fast that the readers in this same
                // process fall far behind.
                if sent % 16 == 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            sent
        }));
        readers.push(tokio::spawn(read_all(stream)));
    }
    let heard = Arc::new(AtomicUsize::new(0));
    let listener_heard = Arc::clone(&heard);
    let listener_reader = tokio::spawn(async move {
        let mut ids = Vec::new();
        let end = loop {
            match listener.message().await {
                Ok(Some(m)) => {
                    ids.push((m.id, m.user));
                    listener_heard.fetch_add(1, Ordering::Relaxed);
                }
                Ok(None) => break Status::ok(),
                Err(status) => break status,
            }
        };
        (ids, end)
    });

    // Once the room is busy, SIGTERM.
    common::wait_until("the listener hearing 200 messages", async || {
        heard.load(Ordering::Relaxed) >= 200
    })
    .await;
    let signalled = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());

    let exited = tokio::task::spawn_blocking(move || {
        let status = server.wait_exit(Duration::from_secs(GRACE_SECS + 10));
        (status, signalled.elapsed(), server)
    });
    let mut received = BTreeMap::new();
    for (name, reader) in SENDERS.iter().zip(readers) {
        received.insert(*name, reader.await.unwrap());
    }
    let mut sent = BTreeMap::new();
    for (name, writer) in SENDERS.iter().zip(writers) {
        sent.insert(*name, writer.await.unwrap());
    }
    let (listener_ids, listener_end) = listener_reader.await.unwrap();
    let (status, took, server) = exited.await.unwrap();

    // The server exited cleanly, within the grace period (plus a second
    // for the final flush and process exit), after sending GOAWAY.
    let status = status.expect("the server did not exit");
    assert!(status.success(), "exit status {status}");
    assert!(
        took < Duration::from_secs(GRACE_SECS + 1),
        "exited {took:?} after SIGTERM"
    );
    let log = server.output();
    assert!(log.contains("sending GOAWAY"), "{log}");
    // Ending every member's call with UNAVAILABLE is the server's own doing,
    // not a failure to log once per connection (10,000 members would make
    // 10,000 lines).
    assert!(!log.contains("call refused"), "{log}");

    // N: the last message the room accepted.
    let n = received
        .values()
        .flat_map(|r| r.messages.iter().map(|m| m.0))
        .max()
        .expect("messages were exchanged");
    assert!(n > 50, "only {n} messages before SIGTERM");
    // Everything after the listener's message, which every member read
    // before the senders started.
    let everything: Vec<u64> = (listener_id + 1..=n).collect();
    for (name, got) in &received {
        let ids: Vec<u64> = got.messages.iter().map(|m| m.0).collect();
        let end = got.end.as_ref().expect("ended");
        assert_eq!(end.code(), Code::Unavailable, "{name}: {end:?}");
        assert_same(&format!("{name}'s messages"), &ids, &everything);
        assert!(
            got.notices
                .iter()
                .any(|n| n.contains("the server is shutting down")),
            "{name} was not told: {:?}",
            got.notices
        );
        // Each sender's delivered messages are "name 0", "name 1", ... with
        // no gap: accepted in order, none accepted and then lost.
        for sender in SENDERS {
            let texts: Vec<&str> = got
                .messages
                .iter()
                .filter(|m| m.1 == sender)
                .map(|m| m.2.as_str())
                .collect();
            if let Some(i) = (0..texts.len()).find(|&i| texts[i] != format!("{sender} {i}")) {
                panic!("{name}'s view of {sender}: message {i} is {:?}", texts[i]);
            }
            assert!(texts.len() <= sent[sender]);
        }
    }
    // The ChatStream listener got the same.
    let ids: Vec<u64> = listener_ids.iter().map(|m| m.0).collect();
    assert_same("the ChatStream listener's messages", &ids, &everything);
    assert_eq!(listener_end.code(), Code::Unavailable, "{listener_end:?}");
}
