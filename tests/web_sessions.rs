//! The rules of the browser's session RPCs (`Subscribe`, `SendMessage`,
//! `SetTyping`) over native gRPC: the same names, rooms, limits and
//! replay rules as `Chat`. The gRPC-Web gateway that carries them for
//! browsers is tested in `tests/web.rs`.

mod common;

use std::time::Duration;

use common::WAIT;

use common::session::{code_of, next_event, subscribe};
use grpc_chat::Code;
use grpc_chat::chat::{ChatConfig, ChatService, RateLimit};
use grpc_chat::client::Channel;
use grpc_chat::pb::chat::{
    ChatServiceClient, ChatServiceServer, SendMessageRequest, SetTypingRequest, SubscribeEvent,
    SubscribeRequest, TypingEventType, UserEventType, subscribe_event,
};
use grpc_chat::rpc::{Request, Streaming};
use tokio::time::timeout;

/// A chat server with `config` on a free port, stopped when dropped.
async fn start(config: ChatConfig) -> common::in_process::Running {
    common::in_process::start(ChatServiceServer::new(ChatService::new(config))).await
}

fn no_rate_limit() -> ChatConfig {
    ChatConfig {
        rate_limit: RateLimit {
            rate: 0.0,
            burst: 1.0,
        },
        ..ChatConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_rules_match_chat() {
    let config = ChatConfig {
        rate_limit: RateLimit {
            rate: 0.5,
            burst: 2.0,
        },
        typing_timeout: Duration::from_millis(300),
        ..ChatConfig::default()
    };
    let web = start(config).await;
    let client = ChatServiceClient::new(Channel::connect(web.address.clone()).await.unwrap());

    // Names and rooms are validated as in Chat.
    let bad = client
        .subscribe(Request::new(SubscribeRequest {
            username: "   ".into(),
            ..Default::default()
        }))
        .await;
    let code = match bad {
        Err(status) => status.code(),
        Ok(response) => code_of(response.into_inner().message().await),
    };
    assert_eq!(code, Code::InvalidArgument);

    let (alice, mut alice_events) = subscribe(&client, "alice", "den").await;
    let (bob, mut bob_events) = subscribe(&client, "bob", "den").await;
    // Tokens are distinct secrets.
    assert_ne!(alice, bob);
    assert_eq!(alice.len(), 32);

    // Rate limit: a burst of 2, then RESOURCE_EXHAUSTED.
    for text in ["one", "two"] {
        client
            .send_message(Request::new(SendMessageRequest {
                token: bob.clone(),
                message: text.into(),
            }))
            .await
            .unwrap();
    }
    let third = client
        .send_message(Request::new(SendMessageRequest {
            token: bob.clone(),
            message: "three".into(),
        }))
        .await;
    let status = third.expect_err("the third message is refused");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("rate limited"));
    // Alice got exactly "one" and "two" (after bob's join and the welcome).
    let mut said = Vec::new();
    while said.len() < 2 {
        if let subscribe_event::Event::ChatMessage(m) = next_event(&mut alice_events).await {
            assert_eq!(m.username, "bob");
            said.push(m.message);
        }
    }
    assert_eq!(said, ["one", "two"]);

    // Typing: a start reaches the others (not the typist), and expires.
    client
        .set_typing(Request::new(SetTypingRequest {
            token: alice.clone(),
            r#type: TypingEventType::TypingStart.into(),
        }))
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        if let subscribe_event::Event::TypingEvent(t) = next_event(&mut bob_events).await {
            assert_eq!(t.username, "alice");
            seen.push(t.r#type);
        }
    }
    assert_eq!(
        seen,
        [
            TypingEventType::TypingStart as i32,
            TypingEventType::TypingStop as i32
        ]
    );
    let unknown = client
        .set_typing(Request::new(SetTypingRequest {
            token: alice.clone(),
            r#type: 0,
        }))
        .await;
    assert_eq!(code_of(unknown), Code::InvalidArgument);

    // Bob's subscription ends: his token is void, alice sees him leave.
    drop(bob_events);
    loop {
        if let subscribe_event::Event::UserEvent(u) = next_event(&mut alice_events).await {
            if u.username == "bob" && u.r#type == UserEventType::UserLeft as i32 {
                break;
            }
        }
    }
    let late = client
        .send_message(Request::new(SendMessageRequest {
            token: bob,
            message: "hello?".into(),
        }))
        .await;
    assert_eq!(code_of(late), Code::NotFound);
}

// --- history and resume ----------------------------------------------------

/// Reads a fresh or resumed subscription up to its end-of-history notice:
/// the replayed messages' (id, text) and the epoch.
async fn replayed(stream: &mut Streaming<SubscribeEvent>) -> (Vec<(u64, String)>, String) {
    let mut messages = Vec::new();
    loop {
        match next_event(stream).await {
            subscribe_event::Event::ChatMessage(m) => messages.push((m.id, m.message)),
            subscribe_event::Event::SystemEvent(s) if s.end_of_history => {
                return (messages, s.epoch);
            }
            _ => {}
        }
    }
}

async fn say(client: &ChatServiceClient, token: &str, text: &str) {
    client
        .send_message(Request::new(SendMessageRequest {
            token: token.into(),
            message: text.into(),
        }))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_replays_history_and_resumes_without_gap_or_duplicate() {
    let web = start(no_rate_limit()).await;
    let client = ChatServiceClient::new(Channel::connect(web.address.clone()).await.unwrap());

    let (alice, mut alice_events) = subscribe(&client, "alice", "past").await;
    let (none, _) = replayed(&mut alice_events).await;
    assert!(none.is_empty(), "a new room has no history: {none:?}");
    for text in ["one", "two", "three"] {
        say(&client, &alice, text).await;
    }

    // A fresh join gets the history after the session event.
    let (_, mut bob_events) = subscribe(&client, "bob", "past").await;
    let (history, epoch) = replayed(&mut bob_events).await;
    let texts: Vec<&str> = history.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts, ["one", "two", "three"]);
    assert!(!epoch.is_empty());
    let last_seen = history.last().unwrap().0;

    // Bob goes away (alice sees him leave); two messages are said meanwhile.
    drop(bob_events);
    loop {
        if let subscribe_event::Event::UserEvent(u) = next_event(&mut alice_events).await {
            if u.username == "bob" && u.r#type == UserEventType::UserLeft as i32 {
                break;
            }
        }
    }
    say(&client, &alice, "four").await;
    say(&client, &alice, "five").await;

    // Resuming from the last id seen brings exactly those two, then live.
    let mut resumed = client
        .subscribe(Request::new(SubscribeRequest {
            username: "bob".into(),
            room: "past".into(),
            last_id: Some(last_seen),
            epoch: epoch.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    // The leave is published just before the name is released: in the
    // rare case the new call lands in between, ALREADY_EXISTS, try again.
    let first = loop {
        match timeout(WAIT, resumed.message()).await.unwrap() {
            Ok(Some(event)) => break event,
            Err(status) if status.code() == Code::AlreadyExists => {
                tokio::task::yield_now().await;
                resumed = client
                    .subscribe(Request::new(SubscribeRequest {
                        username: "bob".into(),
                        room: "past".into(),
                        last_id: Some(last_seen),
                        epoch: epoch.clone(),
                    }))
                    .await
                    .unwrap()
                    .into_inner();
            }
            other => panic!("resume failed: {other:?}"),
        }
    };
    assert!(matches!(
        first.event,
        Some(subscribe_event::Event::SessionStarted(_))
    ));
    let (missed, same_epoch) = replayed(&mut resumed).await;
    let texts: Vec<&str> = missed.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts, ["four", "five"]);
    assert_eq!(missed[0].0, last_seen + 1);
    assert_eq!(same_epoch, epoch);
    say(&client, &alice, "six").await;
    loop {
        if let subscribe_event::Event::ChatMessage(m) = next_event(&mut resumed).await {
            assert_eq!(m.message, "six", "nothing twice, nothing skipped");
            break;
        }
    }

    // An epoch from elsewhere: told that history was lost, given the latest.
    let mut carol_events = client
        .subscribe(Request::new(SubscribeRequest {
            username: "carol".into(),
            room: "past".into(),
            last_id: Some(2),
            epoch: "0123456789abcdef".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    let mut lost_notice = false;
    loop {
        match next_event(&mut carol_events).await {
            subscribe_event::Event::SystemEvent(s) if s.end_of_history => break,
            subscribe_event::Event::SystemEvent(s) => {
                lost_notice |= s.message.contains("history was lost");
            }
            _ => {}
        }
    }
    assert!(lost_notice);

    // A malformed epoch is refused.
    let bad = client
        .subscribe(Request::new(SubscribeRequest {
            username: "dave".into(),
            room: "past".into(),
            last_id: Some(1),
            epoch: "not an epoch!".into(),
        }))
        .await;
    let code = match bad {
        Err(status) => status.code(),
        Ok(response) => code_of(response.into_inner().message().await),
    };
    assert_eq!(code, Code::InvalidArgument);
}
