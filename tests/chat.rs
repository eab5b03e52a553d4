//! End-to-end tests of the chat service through our own client layer, over
//! real TCP on 127.0.0.1: both protocols, rooms, identity, validation, rate
//! limits, typing expiry, the slow-reader rule and HealthCheck.
//!
//! Go and Python clients are exercised in `tests/chat_interop.rs`.

mod common;

use common::WAIT;

use std::time::Duration;

use common::in_process::Running;
use common::raw::{drain_to_status, raw_chat_stream};
use grpc_chat::chat::{ChatConfig, ChatService, RateLimit};
use grpc_chat::client::{BidiCall, Channel};
use grpc_chat::pb::chat::{
    ChatMessage, ChatMessageEvent, ChatServiceClient, ChatServiceServer, ClientEvent,
    HealthCheckRequest, ServerEvent, TypingEvent, TypingEventType, UserEvent, UserEventType,
    client_event, server_event,
};
use grpc_chat::rpc::Request;
use grpc_chat::{Code, Status};
use tokio::time::timeout;

/// A chat server on a free port, stopped when dropped.
struct TestServer {
    address: String,
    hub: std::sync::Arc<grpc_chat::chat::Hub>,
    _running: Running,
}

async fn start(config: ChatConfig) -> TestServer {
    let chat = ChatService::new(config);
    let hub = chat.hub().clone();
    let running = common::in_process::start(ChatServiceServer::new(chat)).await;
    TestServer {
        address: running.address.clone(),
        hub,
        _running: running,
    }
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

async fn client(server: &TestServer) -> ChatServiceClient {
    ChatServiceClient::new(Channel::connect(server.address.clone()).await.unwrap())
}

fn in_room<T>(message: T, room: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("chat-room", room).unwrap();
    request
}

async fn next<Out: prost::Message + Default, In: prost::Message>(
    call: &mut BidiCall<In, Out>,
) -> Out {
    timeout(WAIT, call.message())
        .await
        .expect("timed out waiting for a message")
        .expect("stream failed")
        .expect("stream ended")
}

async fn end_status<Out: prost::Message + Default, In: prost::Message>(
    call: &mut BidiCall<In, Out>,
) -> Status {
    loop {
        match timeout(WAIT, call.message()).await.expect("timed out") {
            Ok(Some(_)) => continue,
            Ok(None) => return Status::ok(),
            Err(status) => return status,
        }
    }
}

fn say(user: &str, text: &str) -> ChatMessage {
    ChatMessage {
        user: user.into(),
        message: text.into(),
        ..Default::default()
    }
}

fn event(e: client_event::Event) -> ClientEvent {
    ClientEvent { event: Some(e) }
}

fn join(name: &str) -> ClientEvent {
    event(client_event::Event::UserEvent(UserEvent {
        r#type: UserEventType::UserJoined.into(),
        username: name.into(),
        timestamp: 0,
    }))
}

fn text(message: &str) -> ClientEvent {
    event(client_event::Event::ChatMessage(ChatMessageEvent {
        message: message.into(),
        ..Default::default()
    }))
}

fn typing(kind: TypingEventType) -> ClientEvent {
    event(client_event::Event::TypingEvent(TypingEvent {
        r#type: kind.into(),
        ..Default::default()
    }))
}

/// Reads events until one matches, returning it (others are skipped).
async fn until<In: prost::Message>(
    call: &mut BidiCall<In, ServerEvent>,
    mut pred: impl FnMut(&server_event::Event) -> bool,
) -> server_event::Event {
    loop {
        let e = next(call).await.event.expect("empty event");
        if pred(&e) {
            return e;
        }
    }
}

/// The next event on `call` that is not a `SystemEvent` (notices such as
/// the welcome are skipped).
async fn next_non_system<In: prost::Message>(
    call: &mut BidiCall<In, ServerEvent>,
) -> server_event::Event {
    until(call, |e| !matches!(e, server_event::Event::SystemEvent(_))).await
}

/// The next user event on `call` (other events skipped), as (name, type).
async fn next_user_event<In: prost::Message>(
    call: &mut BidiCall<In, ServerEvent>,
) -> (String, UserEventType) {
    match until(call, |e| matches!(e, server_event::Event::UserEvent(_))).await {
        server_event::Event::UserEvent(u) => (
            u.username,
            UserEventType::try_from(u.r#type).unwrap_or(UserEventType::UserUnknown),
        ),
        other => unreachable!("until() returned {other:?}"),
    }
}

#[tokio::test]
async fn chat_stream_broadcasts_to_the_others_only() {
    let server = start(no_rate_limit()).await;
    let c = client(&server).await;
    let mut alice = c.chat_stream(Request::new(())).await.unwrap();
    let mut bob = c.chat_stream(Request::new(())).await.unwrap();
    // Bob is a member before he speaks: he receives Alice's first message.
    alice.send(&say("Alice", "Hi Bob!\n")).await.unwrap();
    let got = next(&mut bob).await;
    assert_eq!(got.user, "Alice");
    assert_eq!(got.message, "Hi Bob!", "trailing newline trimmed");
    assert!(got.timestamp > 1_600_000_000, "server stamps Unix seconds");
    assert!(got.id > 0, "server assigns an id");

    bob.send(&say("Bob", "Hi Alice!")).await.unwrap();
    let got = next(&mut alice).await;
    assert_eq!(
        (got.user.as_str(), got.message.as_str()),
        ("Bob", "Hi Alice!")
    );
    // Alice never hears her own message back: the next thing she gets is Bob's
    // second one.
    bob.send(&say("Bob", "second")).await.unwrap();
    assert_eq!(next(&mut alice).await.message, "second");
}

#[tokio::test]
async fn chat_stream_keeps_the_bound_name() {
    let server = start(no_rate_limit()).await;
    let c = client(&server).await;
    let mut mallory = c.chat_stream(Request::new(())).await.unwrap();
    let mut bob = c.chat_stream(Request::new(())).await.unwrap();
    mallory.send(&say("mallory", "hello")).await.unwrap();
    assert_eq!(next(&mut bob).await.user, "mallory");
    mallory.send(&say("alice", "I am alice now")).await.unwrap();
    let got = next(&mut bob).await;
    assert_eq!(
        got.user, "mallory",
        "a later message cannot change the name"
    );
    assert_eq!(got.message, "I am alice now");
}

/// `count` ChatStream members named s0, s1, …, each bound by a first message.
async fn named_senders(
    c: &ChatServiceClient,
    count: usize,
) -> Vec<BidiCall<ChatMessage, ChatMessage>> {
    let mut senders = Vec::new();
    for i in 0..count {
        let mut s = c.chat_stream(Request::new(())).await.unwrap();
        s.send(&say(&format!("s{i}"), "hello")).await.unwrap();
        senders.push(s);
    }
    senders
}

/// The next `count` numbered chat messages ("i:n") a `Chat` member receives,
/// as `(id, text)`; other events and messages are skipped.
async fn chat_messages_seen(
    watcher: &mut BidiCall<ClientEvent, ServerEvent>,
    count: usize,
) -> Vec<(u64, String)> {
    let mut seen = Vec::new();
    while seen.len() < count {
        if let server_event::Event::ChatMessage(m) = next(watcher).await.event.unwrap() {
            if m.message.contains(':') {
                seen.push((m.id, m.message));
            }
        }
    }
    seen
}

/// Checks one watcher's view of the room, `(id, text)` per message, where
/// sender `i` sent "i:0", "i:1", …: ids increase, and each sender's messages
/// arrived once each, in the order it sent them.
fn assert_room_order(seen: &[(u64, String)], senders: usize, per_sender: usize) {
    let ids: Vec<u64> = seen.iter().map(|(id, _)| *id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    for i in 0..senders {
        let mine: Vec<&str> = seen
            .iter()
            .map(|(_, m)| m.as_str())
            .filter(|m| m.starts_with(&format!("{i}:")))
            .collect();
        let want: Vec<String> = (0..per_sender).map(|n| format!("{i}:{n}")).collect();
        assert_eq!(mine, want, "sender {i}'s messages, once each, in order");
    }
}

#[tokio::test]
async fn one_order_for_everyone() {
    let server = start(no_rate_limit()).await;
    let c = client(&server).await;
    let senders = named_senders(&c, 3).await;
    let mut watchers = Vec::new();
    for _ in 0..2 {
        watchers.push(c.chat(Request::new(())).await.unwrap());
    }
    for (i, w) in watchers.iter_mut().enumerate() {
        w.send(&join(&format!("w{i}"))).await.unwrap();
    }
    // Once everyone is in the room, all three senders talk at once.
    common::chat_stream::wait_named(&c, "lobby", &["s0", "s1", "s2", "w0", "w1"]).await;
    let per_sender = 50;
    let mut tasks = Vec::new();
    for (i, mut s) in senders.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for n in 0..per_sender {
                s.send(&say(&format!("s{i}"), &format!("{i}:{n}")))
                    .await
                    .unwrap();
            }
            s
        }));
    }
    let mut orders = Vec::new();
    for w in &mut watchers {
        orders.push(chat_messages_seen(w, 3 * per_sender).await);
    }
    assert_eq!(orders[0], orders[1], "both watchers see one order");
    assert_room_order(&orders[0], 3, per_sender);
    for t in tasks {
        t.await.unwrap();
    }
}

/// A member's writer sends each message on its own when the room is quiet,
/// and coalesces several nodes of the log into one send when it is behind;
/// a send that fits the window goes out at once, one that does not waits.
/// A member switches between these all the time, so this runs paced senders
/// (watchers idle between messages) alongside bursts (watchers behind) and
/// checks that every watcher, of either protocol, still gets every message
/// once, in the room's order.
#[tokio::test]
async fn paced_and_burst_senders_keep_one_order() {
    let server = start(no_rate_limit()).await;
    let c = client(&server).await;
    let senders = named_senders(&c, 4).await;
    let mut stream_watchers = Vec::new();
    for _ in 0..2 {
        stream_watchers.push(c.chat_stream(Request::new(())).await.unwrap());
    }
    let mut chat_watcher = c.chat(Request::new(())).await.unwrap();
    chat_watcher.send(&join("watcher")).await.unwrap();
    // Everyone in the room: the named senders and watcher, and the two
    // silent ChatStream watchers as listeners.
    common::wait_until(
        "the senders and all three watchers in the room",
        async || {
            let who = c
                .who(grpc_chat::pb::chat::WhoRequest {
                    room: "lobby".into(),
                })
                .await
                .unwrap()
                .into_inner();
            who.listeners >= 2
                && ["s0", "s1", "s2", "s3", "watcher"]
                    .iter()
                    .all(|n| who.users.iter().any(|u| u == n))
        },
    )
    .await;

    let per_sender = 200;
    let mut tasks = Vec::new();
    for (i, mut s) in senders.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for n in 0..per_sender {
                s.send(&say(&format!("s{i}"), &format!("{i}:{n}")))
                    .await
                    .unwrap();
                // Senders 0 and 1 pace themselves (watchers idle in
                // between), 2 and 3 burst in runs of 50.
                if i < 2 && n % 5 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                } else if i >= 2 && n % 50 == 49 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            s
        }));
    }
    let total = 4 * per_sender;
    let mut orders = Vec::new();
    for w in &mut stream_watchers {
        let mut seen = Vec::new();
        while seen.len() < total {
            let m: ChatMessage = next(w).await;
            if m.message.contains(':') {
                seen.push((m.id, m.message));
            }
        }
        orders.push(seen);
    }
    orders.push(chat_messages_seen(&mut chat_watcher, total).await);
    assert_eq!(
        orders[0], orders[1],
        "both ChatStream watchers see one order"
    );
    assert_eq!(orders[0], orders[2], "the Chat watcher sees the same order");
    assert_room_order(&orders[0], 4, per_sender);
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn chat_first_event_must_be_a_join() {
    let server = start(no_rate_limit()).await;
    let c = client(&server).await;
    let mut call = c.chat(Request::new(())).await.unwrap();
    call.send(&text("hello?")).await.unwrap();
    let status = end_status(&mut call).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("USER_JOINED"), "{status}");
}

#[tokio::test]
async fn a_name_in_use_is_refused() {
    let server = start(no_rate_limit()).await;
    let c = client(&server).await;
    let mut first = c.chat(Request::new(())).await.unwrap();
    first.send(&join("alice")).await.unwrap();
    until(&mut first, |e| {
        matches!(e, server_event::Event::UserEvent(_))
    })
    .await;
    let mut second = c.chat(Request::new(())).await.unwrap();
    second.send(&join("Alice")).await.unwrap();
    assert_eq!(end_status(&mut second).await.code(), Code::AlreadyExists);
    // The same name in another room is fine.
    let mut elsewhere = c.chat(in_room((), "kitchen")).await.unwrap();
    elsewhere.send(&join("alice")).await.unwrap();
    let e = until(&mut elsewhere, |e| {
        matches!(e, server_event::Event::UserEvent(_))
    })
    .await;
    assert!(matches!(e, server_event::Event::UserEvent(u) if u.username == "alice"));
}

#[tokio::test]
async fn joins_messages_typing_and_leaves_reach_chat_clients() {
    let config = ChatConfig {
        typing_timeout: Duration::from_millis(300),
        ..no_rate_limit()
    };
    let server = start(config).await;
    let c = client(&server).await;
    let mut alice = c.chat(Request::new(())).await.unwrap();
    alice.send(&join("alice")).await.unwrap();
    until(&mut alice, |e| {
        matches!(e, server_event::Event::UserEvent(_))
    })
    .await;

    let mut bob = c.chat(Request::new(())).await.unwrap();
    bob.send(&join("bob")).await.unwrap();
    assert_eq!(
        next_user_event(&mut alice).await,
        ("bob".to_owned(), UserEventType::UserJoined)
    );

    // A message reaches everyone, the sender included.
    bob.send(&text("hi all")).await.unwrap();
    for call in [&mut alice, &mut bob] {
        let e = until(call, |e| matches!(e, server_event::Event::ChatMessage(_))).await;
        assert!(
            matches!(&e, server_event::Event::ChatMessage(m)
            if m.username == "bob" && m.message == "hi all"),
            "{e:?}"
        );
    }

    // Typing goes to the others; without a stop it expires by itself.
    bob.send(&typing(TypingEventType::TypingStart))
        .await
        .unwrap();
    let e = until(&mut alice, |e| {
        matches!(e, server_event::Event::TypingEvent(_))
    })
    .await;
    assert!(matches!(&e, server_event::Event::TypingEvent(t)
        if t.username == "bob" && t.r#type == TypingEventType::TypingStart as i32));
    let started = tokio::time::Instant::now();
    let e = until(&mut alice, |e| {
        matches!(e, server_event::Event::TypingEvent(_))
    })
    .await;
    assert!(matches!(&e, server_event::Event::TypingEvent(t)
        if t.username == "bob" && t.r#type == TypingEventType::TypingStop as i32));
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "expired, not echoed"
    );

    // Leaving is announced.
    bob.send(&event(client_event::Event::UserEvent(UserEvent {
        r#type: UserEventType::UserLeft.into(),
        username: "bob".into(),
        timestamp: 0,
    })))
    .await
    .unwrap();
    assert_eq!(
        next_user_event(&mut alice).await,
        ("bob".to_owned(), UserEventType::UserLeft)
    );
}

#[tokio::test]
async fn both_protocols_share_a_room() {
    let server = start(no_rate_limit()).await;
    let c = client(&server).await;
    let mut events = c.chat(in_room((), "mixed")).await.unwrap();
    events.send(&join("eve")).await.unwrap();
    until(&mut events, |e| {
        matches!(e, server_event::Event::UserEvent(_))
    })
    .await;
    let mut stream = c.chat_stream(in_room((), "mixed")).await.unwrap();
    let mut outsider = c.chat_stream(Request::new(())).await.unwrap();
    outsider
        .send(&say("outsider", "not for you"))
        .await
        .unwrap();

    stream.send(&say("sam", "from ChatStream")).await.unwrap();
    let e = until(&mut events, |e| {
        matches!(e, server_event::Event::ChatMessage(_))
    })
    .await;
    assert!(
        matches!(&e, server_event::Event::ChatMessage(m)
        if m.username == "sam" && m.message == "from ChatStream"),
        "{e:?}"
    );

    events.send(&text("from Chat")).await.unwrap();
    let got = next(&mut stream).await;
    assert_eq!(
        (got.user.as_str(), got.message.as_str()),
        ("eve", "from Chat")
    );
}

#[tokio::test]
async fn control_characters_and_long_messages_are_refused_with_a_notice() {
    let server = start(no_rate_limit()).await;
    let c = client(&server).await;
    let mut alice = c.chat(Request::new(())).await.unwrap();
    alice.send(&join("alice")).await.unwrap();
    let mut bob = c.chat(Request::new(())).await.unwrap();
    bob.send(&join("bob")).await.unwrap();
    until(
        &mut alice,
        |e| matches!(e, server_event::Event::UserEvent(u) if u.username == "bob"),
    )
    .await;

    bob.send(&text("\u{1b}[2Jgotcha")).await.unwrap();
    let e = until(
        &mut bob,
        |e| matches!(e, server_event::Event::SystemEvent(s) if s.message.contains("not delivered")),
    )
    .await;
    assert!(
        matches!(&e, server_event::Event::SystemEvent(s) if s.message.contains("control character"))
    );
    bob.send(&text(&"x".repeat(5000))).await.unwrap();
    let e = until(
        &mut bob,
        |e| matches!(e, server_event::Event::SystemEvent(s) if s.message.contains("not delivered")),
    )
    .await;
    assert!(matches!(&e, server_event::Event::SystemEvent(s) if s.message.contains("too long")));
    // Alice saw neither: the next message she gets is the clean one.
    bob.send(&text("clean")).await.unwrap();
    let e = until(&mut alice, |e| {
        matches!(e, server_event::Event::ChatMessage(_))
    })
    .await;
    assert!(matches!(&e, server_event::Event::ChatMessage(m) if m.message == "clean"));

    let mut bad = c.chat(Request::new(())).await.unwrap();
    bad.send(&join("evil\u{7}")).await.unwrap();
    assert_eq!(end_status(&mut bad).await.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn rate_limited_messages_get_a_system_event() {
    let config = ChatConfig {
        rate_limit: RateLimit {
            rate: 1.0,
            burst: 3.0,
        },
        ..ChatConfig::default()
    };
    let server = start(config).await;
    let c = client(&server).await;
    let mut alice = c.chat(Request::new(())).await.unwrap();
    alice.send(&join("alice")).await.unwrap();
    for n in 0..5 {
        alice.send(&text(&format!("m{n}"))).await.unwrap();
    }
    let mut delivered = Vec::new();
    let mut limited = 0;
    while delivered.len() + limited < 5 {
        match next(&mut alice).await.event.unwrap() {
            server_event::Event::ChatMessage(m) => delivered.push(m.message),
            server_event::Event::SystemEvent(s) if s.message.contains("rate limited") => {
                limited += 1
            }
            _ => {}
        }
    }
    assert_eq!(delivered, ["m0", "m1", "m2"]);
    assert_eq!(limited, 2);
}

#[tokio::test]
async fn health_check_reports_live_figures() {
    let server = start(no_rate_limit()).await;
    let c = client(&server).await;
    let h = c
        .health_check(HealthCheckRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((h.status.as_str(), h.active_clients), ("SERVING", 0));
    let mut a = c.chat_stream(Request::new(())).await.unwrap();
    a.send(&say("a", "hi")).await.unwrap();
    let mut b = c.chat(Request::new(())).await.unwrap();
    b.send(&join("b")).await.unwrap();
    until(&mut b, |e| matches!(e, server_event::Event::UserEvent(_))).await;
    let h = c
        .health_check(HealthCheckRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.active_clients, 2);
    drop(a);
    common::wait_until("a cancelled member counted out", async || {
        let h = c
            .health_check(HealthCheckRequest {})
            .await
            .unwrap()
            .into_inner();
        h.active_clients == 1
    })
    .await;
}

#[tokio::test]
async fn shutdown_tells_chat_clients() {
    let server = start(no_rate_limit()).await;
    let c = client(&server).await;
    let mut alice = c.chat(Request::new(())).await.unwrap();
    alice.send(&join("alice")).await.unwrap();
    until(&mut alice, |e| {
        matches!(e, server_event::Event::UserEvent(_))
    })
    .await;
    server.hub.shutdown("the server is shutting down");
    let e = until(
        &mut alice,
        |e| matches!(e, server_event::Event::SystemEvent(s) if !s.message.starts_with("welcome")),
    )
    .await;
    assert!(
        matches!(&e, server_event::Event::SystemEvent(s) if s.message.contains("shutting down"))
    );
    assert_eq!(end_status(&mut alice).await.code(), Code::Unavailable);
    let h = c
        .health_check(HealthCheckRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.status, "DRAINING");
}

/// A member that stops reading is disconnected after the grace period with
/// RESOURCE_EXHAUSTED, while a reading member gets every message.
///
/// The stalled member speaks raw HTTP/2 (the `h2` crate) so that nothing on
/// its side reads or returns flow-control window: exactly a client that
/// stopped reading.
#[tokio::test]
async fn a_stalled_reader_is_disconnected_and_the_others_lose_nothing() {
    let config = ChatConfig {
        slow_grace: Duration::from_millis(300),
        ..no_rate_limit()
    };
    let server = start(config).await;
    let c = client(&server).await;
    let mut reader = c.chat_stream(Request::new(())).await.unwrap();
    reader.send(&say("reader", "hi")).await.unwrap();

    let mut hello = bytes::BytesMut::new();
    grpc_chat::codec::encode(&say("sloth", "hi"), None, usize::MAX, &mut hello).unwrap();
    let (response, _send) = raw_chat_stream(&server.address, hello.freeze()).await;
    let response = timeout(WAIT, response).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(next(&mut reader).await.user, "sloth");

    let mut sender = c.chat_stream(Request::new(())).await.unwrap();
    sender.send(&say("sender", "hi")).await.unwrap();
    assert_eq!(next(&mut reader).await.user, "sender");

    let total = 2000;
    let payload = "p".repeat(200);
    let send_task = tokio::spawn(async move {
        for n in 0..total {
            sender
                .send(&say("sender", &format!("{n} {payload}")))
                .await
                .unwrap();
        }
        sender
    });
    for n in 0..total {
        let got = next(&mut reader).await;
        assert!(
            got.message.starts_with(&format!("{n} ")),
            "lost or reordered at {n}"
        );
    }
    let _sender = send_task.await.unwrap();
    // The stalled member has now been blocked on its window since the burst;
    // once the grace period has run out, it is no longer in the room.
    common::wait_until("the stalled member disconnected", async || {
        let who = c
            .who(grpc_chat::pb::chat::WhoRequest {
                room: "lobby".into(),
            })
            .await
            .unwrap()
            .into_inner();
        !who.users.iter().any(|u| u == "sloth")
    })
    .await;

    // Now drain the stalled stream: what fit in its window, then the status.
    let (received, status) = drain_to_status(response.into_body()).await;
    assert!(
        received < 200 * total,
        "the stalled member got only what its window allowed"
    );
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
}

#[tokio::test]
async fn who_lists_the_named_members_of_a_room() {
    let server = start(no_rate_limit()).await;
    let c = client(&server).await;
    let mut bob = c.chat(in_room((), "den")).await.unwrap();
    bob.send(&join("bob")).await.unwrap();
    until(&mut bob, |e| matches!(e, server_event::Event::UserEvent(_))).await;
    let mut ann = c.chat_stream(in_room((), "den")).await.unwrap();
    ann.send(&say("ann", "hi")).await.unwrap();
    until(&mut bob, |e| {
        matches!(e, server_event::Event::ChatMessage(_))
    })
    .await;
    let who = c
        .who(grpc_chat::pb::chat::WhoRequest { room: "den".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(who.users, ["ann", "bob"]);
    let lobby = c
        .who(grpc_chat::pb::chat::WhoRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!((lobby.room.as_str(), lobby.users.len()), ("lobby", 0));
}

/// `Rooms` lists the rooms that have members, with how many (named or
/// not), sorted by name; a room everyone left is gone from the list.
#[tokio::test]
async fn rooms_lists_the_rooms_with_members() {
    let server = start(no_rate_limit()).await;
    let c = client(&server).await;
    let mut bob = c.chat(in_room((), "den")).await.unwrap();
    bob.send(&join("bob")).await.unwrap();
    until(&mut bob, |e| matches!(e, server_event::Event::UserEvent(_))).await;
    let mut cat = c.chat(in_room((), "attic")).await.unwrap();
    cat.send(&join("cat")).await.unwrap();
    until(&mut cat, |e| matches!(e, server_event::Event::UserEvent(_))).await;
    let mut quiet = c.chat_stream(in_room((), "den")).await.unwrap();
    quiet.headers().await.unwrap();
    let rooms = |c: grpc_chat::pb::chat::ChatServiceClient| async move {
        let list = c
            .rooms(grpc_chat::pb::chat::RoomsRequest {})
            .await
            .unwrap()
            .into_inner()
            .rooms;
        list.into_iter()
            .map(|r| (r.name, r.members))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        rooms(c.clone()).await,
        [("attic".to_owned(), 1), ("den".to_owned(), 2)]
    );
    drop(cat);
    let deadline = tokio::time::Instant::now() + WAIT;
    while rooms(c.clone()).await.len() > 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "attic never emptied"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(rooms(c.clone()).await, [("den".to_owned(), 2)]);
}

/// A `ChatStream` member is named by its first message; until then it
/// reads the room without a name. `Who` and a joining member's welcome
/// count it, so nobody is told they are alone while someone reads along.
#[tokio::test]
async fn silent_chat_stream_members_are_counted_as_listeners() {
    let server = start(no_rate_limit()).await;
    let c = client(&server).await;
    let mut silent = c.chat_stream(in_room((), "nook")).await.unwrap();
    // Its call is open (headers back) before anyone asks.
    silent.headers().await.unwrap();
    let who = c
        .who(grpc_chat::pb::chat::WhoRequest {
            room: "nook".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((who.users.len(), who.listeners), (0, 1));

    let mut bob = c.chat(in_room((), "nook")).await.unwrap();
    bob.send(&join("bob")).await.unwrap();
    let welcome = until(
        &mut bob,
        |e| matches!(e, server_event::Event::SystemEvent(s) if s.message.starts_with("welcome")),
    )
    .await;
    let server_event::Event::SystemEvent(welcome) = welcome else {
        unreachable!("until returned the matching event");
    };
    assert_eq!(
        welcome.message,
        "welcome to nook, bob: also here: 1 member who has not spoken yet"
    );
    // Once it speaks it has a name, and is no longer a listener.
    silent.send(&say("quiet", "hello")).await.unwrap();
    until(&mut bob, |e| {
        matches!(e, server_event::Event::ChatMessage(_))
    })
    .await;
    let who = c
        .who(grpc_chat::pb::chat::WhoRequest {
            room: "nook".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (who.users, who.listeners),
        (vec!["bob".into(), "quiet".into()], 0)
    );
}

#[tokio::test]
async fn chat_members_see_chat_stream_members_join_and_leave() {
    let server = start(no_rate_limit()).await;
    let c = client(&server).await;
    let mut watcher = c.chat(Request::new(())).await.unwrap();
    watcher.send(&join("watcher")).await.unwrap();
    until(&mut watcher, |e| {
        matches!(e, server_event::Event::UserEvent(_))
    })
    .await;
    let mut streamer = c.chat_stream(Request::new(())).await.unwrap();
    streamer.send(&say("streamer", "hello")).await.unwrap();
    let e = next_non_system(&mut watcher).await;
    assert!(
        matches!(&e, server_event::Event::UserEvent(u)
        if u.username == "streamer" && u.r#type == UserEventType::UserJoined as i32),
        "{e:?}"
    );
    let e = next_non_system(&mut watcher).await;
    assert!(matches!(&e, server_event::Event::ChatMessage(m) if m.username == "streamer"));
    drop(streamer);
    assert_eq!(
        next_user_event(&mut watcher).await,
        ("streamer".to_owned(), UserEventType::UserLeft)
    );
}

#[tokio::test]
async fn leaving_while_typing_stops_the_indicator() {
    let server = start(no_rate_limit()).await;
    let c = client(&server).await;
    let mut alice = c.chat(Request::new(())).await.unwrap();
    alice.send(&join("alice")).await.unwrap();
    until(&mut alice, |e| {
        matches!(e, server_event::Event::UserEvent(_))
    })
    .await;
    let mut bob = c.chat(Request::new(())).await.unwrap();
    bob.send(&join("bob")).await.unwrap();
    bob.send(&typing(TypingEventType::TypingStart))
        .await
        .unwrap();
    let e = until(&mut alice, |e| {
        matches!(e, server_event::Event::TypingEvent(_))
    })
    .await;
    assert!(
        matches!(&e, server_event::Event::TypingEvent(t) if t.r#type == TypingEventType::TypingStart as i32)
    );
    drop(bob);
    let e = next_non_system(&mut alice).await;
    assert!(
        matches!(&e, server_event::Event::TypingEvent(t)
        if t.username == "bob" && t.r#type == TypingEventType::TypingStop as i32),
        "{e:?}"
    );
    let e = next_non_system(&mut alice).await;
    assert!(
        matches!(&e, server_event::Event::UserEvent(u) if u.r#type == UserEventType::UserLeft as i32)
    );
}

/// A bad message right behind a good one (same DATA frame): the good one is
/// delivered, and the call still ends with the bad one's status — the error
/// must not be lost while the good message is being published.
#[tokio::test]
async fn an_error_behind_a_good_message_is_not_lost() {
    let server = start(no_rate_limit()).await;
    let c = client(&server).await;
    let mut watcher = c.chat_stream(Request::new(())).await.unwrap();
    watcher.send(&say("watcher", "hi")).await.unwrap();

    let mut data = bytes::BytesMut::new();
    grpc_chat::codec::encode(&say("mallory", "first"), None, usize::MAX, &mut data).unwrap();
    // flag 0 | length 0x7fffffff: over any limit, refused from the prefix.
    data.extend_from_slice(&[0x00, 0x7f, 0xff, 0xff, 0xff]);
    let (response, _send) = raw_chat_stream(&server.address, data.freeze()).await;

    assert_eq!(next(&mut watcher).await.message, "first");
    let response = timeout(WAIT, response).await.unwrap().unwrap();
    let (_, status) = drain_to_status(response.into_body()).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
}

#[tokio::test]
async fn a_full_room_and_a_bad_room_name_are_refused() {
    let config = ChatConfig {
        max_members_per_room: 1,
        ..no_rate_limit()
    };
    let server = start(config).await;
    let c = client(&server).await;
    let mut first = c.chat(in_room((), "tiny")).await.unwrap();
    first.send(&join("first")).await.unwrap();
    until(&mut first, |e| {
        matches!(e, server_event::Event::UserEvent(_))
    })
    .await;
    let mut second = c.chat(in_room((), "tiny")).await.unwrap();
    second.send(&join("second")).await.unwrap();
    let status = end_status(&mut second).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(status.message().contains("full"), "{status}");

    // A room name is held to the rules of user names (here: at most 32
    // characters).
    let mut bad = c.chat_stream(in_room((), &"r".repeat(33))).await.unwrap();
    bad.send(&say("x", "hi")).await.unwrap();
    assert_eq!(end_status(&mut bad).await.code(), Code::InvalidArgument);
}
