//! Go, Python and Rust clients of `chat.ChatService` together in one room of
//! the `chat-server` binary.
//!
//! * Go: `tests/interop/chat/goclient` (grpc-go, its own go.mod), with code
//!   generated from our `proto/chat.proto` by protoc-gen-go/-go-grpc.
//! * Python: `tests/interop/chat/py_client.py` (grpcio), with code generated
//!   from the same proto by grpcio-tools.
//! * Rust: our own client layer (`Channel` + `ChatServiceClient`), in a
//!   thread of this process.
//!
//! `scripts/setup-interop.sh` (run by the helpers, quick when up to date)
//! generates the code and builds the Go peer. Every member is driven with the
//! same line commands (`send <text>`, `typing start|stop`, `leave`, `close`,
//! `quit`) and reports what it receives as [`Event`]s: the Go and Python
//! peers print one JSON object per line, the Rust member builds the same
//! objects itself. Each test starts its own server on a free port; every wait
//! is bounded by [`WAIT`] and polls for the expected event.

mod common;

use common::WAIT;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::json::{Json, parse_flat_object};
use common::{ChatPeer, Collected, Peer, Server, chat_peer_args, chat_server};
use grpc_chat::client::{Channel, RequestSink};
use grpc_chat::pb::chat::{
    ChatMessage, ChatMessageEvent, ChatServiceClient, ClientEvent, ServerEvent, TypingEvent,
    TypingEventType, UserEvent, UserEventType, client_event, server_event,
};
use grpc_chat::rpc::Request;
use grpc_chat::{Code, Status};
use tokio::sync::mpsc;

// ---------------------------------------------------------------------------
// Events: flat JSON objects.

/// Something a member received (or its call's final status), with the time
/// it arrived.
#[derive(Debug, Clone)]
struct Event {
    at: Instant,
    fields: BTreeMap<String, Json>,
}

impl Event {
    /// An event that arrived just now.
    fn new(fields: BTreeMap<String, Json>) -> Event {
        Event {
            at: Instant::now(),
            fields,
        }
    }

    fn str(&self, key: &str) -> &str {
        self.fields.get(key).and_then(Json::as_str).unwrap_or("")
    }

    fn num(&self, key: &str) -> f64 {
        match self.fields.get(key) {
            Some(Json::Num(n)) => *n,
            _ => f64::NAN,
        }
    }

    fn flag(&self, key: &str) -> bool {
        self.fields.get(key) == Some(&Json::Bool(true))
    }

    fn kind(&self) -> &str {
        self.str("kind")
    }

    fn is(&self, kind: &str, kind_type: &str, user: &str) -> bool {
        self.kind() == kind && self.str("type") == kind_type && self.str("user") == user
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields: Vec<String> = self
            .fields
            .iter()
            .filter(|(k, _)| k.as_str() != "timestamp")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        write!(f, "{}", fields.join(" "))
    }
}

fn fields<const N: usize>(pairs: [(&str, Json); N]) -> BTreeMap<String, Json> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// A chat message as every member reports it: (id, user, text).
type Said = (u64, String, String);

fn said(e: &Event) -> Said {
    (
        e.num("id") as u64,
        e.str("user").into(),
        e.str("text").into(),
    )
}

// ---------------------------------------------------------------------------
// Members.

/// The events one member received so far, shared with whoever produces them
/// (a peer's stdout reader thread, or the Rust member's thread).
type Inbox = Collected<Event>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    ChatStream,
    Chat,
}

impl Protocol {
    fn flag(self) -> &'static str {
        match self {
            Protocol::ChatStream => "chat-stream",
            Protocol::Chat => "chat",
        }
    }
}

enum Input {
    Process(Peer),
    Rust(mpsc::UnboundedSender<String>),
}

/// One member of a room: a Go or Python peer process, or our Rust client.
struct Member {
    label: String,
    user: String,
    inbox: Arc<Inbox>,
    input: Input,
}

impl Member {
    /// A Go peer (grpc-go).
    fn go(server: &Server, room: &str, user: &str, protocol: Protocol, extra: &[&str]) -> Member {
        Member::peer(ChatPeer::Go, server, room, user, protocol, extra)
    }

    /// A Python peer (grpcio).
    fn py(server: &Server, room: &str, user: &str, protocol: Protocol, extra: &[&str]) -> Member {
        Member::peer(ChatPeer::Python, server, room, user, protocol, extra)
    }

    fn peer(
        which: ChatPeer,
        server: &Server,
        room: &str,
        user: &str,
        protocol: Protocol,
        extra: &[&str],
    ) -> Member {
        let mut args = chat_peer_args(server.port, room, user, protocol.flag());
        args.extend(extra.iter().map(|s| s.to_string()));
        let (program, args) = which.command(args);
        let label = format!("{}:{user}", which.short());
        Member::process(&program, &args, label, user)
    }

    fn process(program: &std::path::Path, args: &[String], label: String, user: &str) -> Member {
        let inbox = Arc::new(Inbox::default());
        let sink = Arc::clone(&inbox);
        let peer = Peer::spawn(program, args, &label, move |line| {
            let parsed = parse_flat_object(&line);
            sink.push(Event::new(parsed.unwrap_or_else(|| {
                fields([("kind", "unparsed".into()), ("text", line.into())])
            })));
        });
        Member {
            label,
            user: user.to_owned(),
            inbox,
            input: Input::Process(peer),
        }
    }

    /// A member using our client layer, in its own thread and runtime.
    fn rust(server: &Server, room: &str, user: &str, protocol: Protocol) -> Member {
        let inbox = Arc::new(Inbox::default());
        let (commands, receiver) = mpsc::unbounded_channel();
        let addr = format!("127.0.0.1:{}", server.port);
        let (room_name, user_name, sink) = (room.to_owned(), user.to_owned(), Arc::clone(&inbox));
        thread::Builder::new()
            .name(format!("rust:{user}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                let end = runtime.block_on(rust_member(
                    addr, room_name, user_name, protocol, receiver, &sink,
                ));
                sink.push(Event::new(status_fields(
                    &end.err().unwrap_or_else(Status::ok),
                )));
            })
            .expect("spawn Rust member");
        Member {
            label: format!("rust:{user}"),
            user: user.to_owned(),
            inbox,
            input: Input::Rust(commands),
        }
    }

    /// Sends one command line (`send <text>`, `typing start`, ...).
    fn cmd(&mut self, line: &str) {
        match &mut self.input {
            Input::Process(peer) => peer.send_line(line),
            Input::Rust(commands) => {
                let _ = commands.send(line.to_owned());
            }
        }
    }

    fn events(&self) -> Vec<Event> {
        self.inbox.snapshot()
    }

    fn fail(&self, what: &str) -> ! {
        let events: Vec<String> = self.events().iter().map(|e| format!("  {e}")).collect();
        let stderr = match &self.input {
            Input::Process(peer) => peer.stderr(),
            Input::Rust(_) => String::new(),
        };
        panic!(
            "{}: no {what} within {WAIT:?}\n--- received ---\n{}\n--- stderr ---\n{stderr}",
            self.label,
            events.join("\n")
        );
    }

    /// The first event (received so far or within [`WAIT`]) that matches.
    fn wait_for(&self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        self.inbox
            .wait(WAIT, |events| events.iter().find(|e| pred(e)).cloned())
            .unwrap_or_else(|| self.fail(what))
    }

    /// Waits until `n` events match, and returns them.
    fn wait_count(&self, what: &str, n: usize, pred: impl Fn(&Event) -> bool) -> Vec<Event> {
        self.inbox
            .wait(WAIT, |events| {
                let found: Vec<Event> = events.iter().filter(|e| pred(e)).cloned().collect();
                (found.len() >= n).then_some(found)
            })
            .unwrap_or_else(|| self.fail(&format!("{n} × {what}")))
    }

    /// Waits until the member is in the room: a ChatStream member has its
    /// response headers, a Chat member its welcome notice.
    fn ready(self, protocol: Protocol) -> Member {
        match protocol {
            Protocol::ChatStream => self.wait_for("ready", |e| e.kind() == "ready"),
            // (After the end-of-history notice, which is a system event too.)
            Protocol::Chat => self.wait_for("welcome", |e| {
                e.kind() == "system" && e.str("text").starts_with("welcome")
            }),
        };
        self
    }

    /// The call's final status (the last event).
    fn status(&self) -> Event {
        self.wait_for("final status", |e| e.kind() == "status")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // A process is killed by `Peer`'s drop; the Rust member cancels its
        // call and its thread ends.
        if let Input::Rust(commands) = &self.input {
            let _ = commands.send("quit".into());
        }
    }
}

/// Runs a one-shot HealthCheck with a Go or Python peer; returns the
/// `health` event.
fn health(server: &Server, which: ChatPeer) -> Event {
    let args: Vec<String> = ["--addr", &format!("127.0.0.1:{}", server.port)]
        .into_iter()
        .chain(["--protocol", "health"])
        .map(str::to_owned)
        .collect();
    let (program, args) = which.command(args);
    let label = format!("{}:health", which.short());
    let mut member = Member::process(&program, &args, label, "");
    if let Input::Process(peer) = &mut member.input {
        peer.close_stdin();
    }
    let status = member.status();
    assert_eq!(
        status.str("code"),
        "OK",
        "{}: HealthCheck failed: {status}",
        member.label
    );
    member.wait_for("health", |e| e.kind() == "health")
}

// ---------------------------------------------------------------------------
// The Rust member.

/// Go's spelling of a status code (`codes.Code.String()`), as the peers print.
fn code_name(code: Code) -> String {
    match code {
        Code::Ok => "OK".into(),
        Code::Cancelled => "Canceled".into(),
        other => format!("{other:?}"),
    }
}

fn status_fields(status: &Status) -> BTreeMap<String, Json> {
    fields([
        ("kind", "status".into()),
        ("code", code_name(status.code()).into()),
        ("message", status.message().into()),
    ])
}

fn server_event_fields(event: ServerEvent, me: &str) -> BTreeMap<String, Json> {
    match event.event {
        Some(server_event::Event::ChatMessage(m)) => fields([
            ("kind", "message".into()),
            ("you", (m.username == me).into()),
            ("user", m.username.into()),
            ("text", m.message.into()),
            ("id", m.id.into()),
            ("timestamp", m.timestamp.into()),
        ]),
        Some(server_event::Event::UserEvent(u)) => fields([
            ("kind", "user".into()),
            ("type", u.r#type().as_str_name().into()),
            ("user", u.username.into()),
            ("timestamp", u.timestamp.into()),
        ]),
        Some(server_event::Event::TypingEvent(t)) => fields([
            ("kind", "typing".into()),
            ("type", t.r#type().as_str_name().into()),
            ("user", t.username.into()),
            ("timestamp", t.timestamp.into()),
        ]),
        Some(server_event::Event::SystemEvent(s)) => fields([
            ("kind", "system".into()),
            ("text", s.message.into()),
            ("timestamp", s.timestamp.into()),
        ]),
        None => fields([("kind", "unknown".into())]),
    }
}

fn user_event(kind: UserEventType, name: &str) -> ClientEvent {
    ClientEvent {
        event: Some(client_event::Event::UserEvent(UserEvent {
            r#type: kind.into(),
            username: name.into(),
            timestamp: 0,
        })),
    }
}

/// The Chat request for one command line.
fn chat_request(user: &str, cmd: &str, arg: &str) -> Option<ClientEvent> {
    let event = match cmd {
        "send" => client_event::Event::ChatMessage(ChatMessageEvent {
            message: arg.into(),
            username: user.into(),
            ..Default::default()
        }),
        "typing" => client_event::Event::TypingEvent(TypingEvent {
            username: user.into(),
            r#type: if arg == "stop" {
                TypingEventType::TypingStop
            } else {
                TypingEventType::TypingStart
            }
            .into(),
            ..Default::default()
        }),
        "join" => return Some(user_event(UserEventType::UserJoined, arg)),
        "leave" => return Some(user_event(UserEventType::UserLeft, user)),
        _ => return None,
    };
    Some(ClientEvent { event: Some(event) })
}

/// Sends the requests for command lines until `close` (half-close), `quit`
/// (cancel) or the test drops the member.
async fn forward<T: prost::Message>(
    mut commands: mpsc::UnboundedReceiver<String>,
    mut sink: RequestSink<T>,
    request: impl Fn(&str, &str) -> Option<T>,
) {
    while let Some(line) = commands.recv().await {
        let (cmd, arg) = line.split_once(' ').unwrap_or((&line, ""));
        match cmd {
            "close" => break,
            "quit" => return sink.cancel(),
            _ => {
                if let Some(message) = request(cmd, arg) {
                    if sink.send(&message).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
    let _ = sink.close();
}

async fn rust_member(
    addr: String,
    room: String,
    user: String,
    protocol: Protocol,
    commands: mpsc::UnboundedReceiver<String>,
    inbox: &Inbox,
) -> Result<(), Status> {
    let client = ChatServiceClient::new(Channel::connect(addr).await?);
    let mut request = Request::new(());
    request
        .metadata_mut()
        .insert("chat-room", &room)
        .expect("room names in these tests are ASCII");
    match protocol {
        Protocol::ChatStream => {
            let mut call = client.chat_stream(request).await?;
            call.headers().await?;
            inbox.push(Event::new(fields([("kind", "ready".into())])));
            let (sink, mut stream) = call.split();
            let me = user.clone();
            tokio::spawn(forward(commands, sink, move |cmd, arg| {
                (cmd == "send").then(|| ChatMessage {
                    user: me.clone(),
                    message: arg.into(),
                    ..Default::default()
                })
            }));
            while let Some(m) = stream.message().await? {
                inbox.push(Event::new(fields([
                    ("kind", "message".into()),
                    ("user", m.user.into()),
                    ("text", m.message.into()),
                    ("id", m.id.into()),
                    ("timestamp", m.timestamp.into()),
                ])));
            }
        }
        Protocol::Chat => {
            let (mut sink, mut stream) = client.chat(request).await?.split();
            sink.send(&user_event(UserEventType::UserJoined, &user))
                .await?;
            let me = user.clone();
            tokio::spawn(forward(commands, sink, move |cmd, arg| {
                chat_request(&me, cmd, arg)
            }));
            while let Some(event) = stream.message().await? {
                inbox.push(Event::new(server_event_fields(event, &user)));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The tests.

/// A Go ChatStream client, a Python ChatStream client and a Go Chat client
/// talk at once; a Rust Chat client listens. Every member sees every
/// message of the others exactly once, all in one order (the server's ids),
/// under the sender's name; ChatStream senders do not get their own back,
/// Chat senders do (marked as theirs).
#[test]
fn three_speakers_every_member_sees_one_order_exactly_once() {
    use Protocol::{Chat, ChatStream};
    let mut server = chat_server(&["--rate-limit", "0"]);
    let room = "order";
    let alice = Member::go(&server, room, "alice", ChatStream, &[]);
    let carol = Member::py(&server, room, "carol", ChatStream, &[]);
    let bob = Member::go(&server, room, "bob", Chat, &[]);
    let rusty = Member::rust(&server, room, "rusty", Chat);
    let mut alice = alice.ready(ChatStream);
    let mut carol = carol.ready(ChatStream);
    let mut bob = bob.ready(Chat);
    let rusty = rusty.ready(Chat);

    // The three speakers talk at once, each at its own pace (a line every
    // few milliseconds, so their messages interleave in the room).
    const N: usize = 25;
    thread::scope(|s| {
        for speaker in [&mut alice, &mut carol, &mut bob] {
            s.spawn(move || {
                for n in 0..N {
                    let line = format!("send {}#{n}", speaker.user);
                    speaker.cmd(&line);
                    thread::sleep(Duration::from_millis(4));
                }
            });
        }
    });
    let is_test_message = |e: &Event| e.kind() == "message" && e.str("text").contains('#');
    // Bob hears everyone, himself included: once he has all 3N, every
    // message has its id. Then one last message from him; everything before
    // it in the room's order has reached a member once it has that one.
    bob.wait_count("test message", 3 * N, is_test_message);
    bob.cmd("send the end");
    let members = [&alice, &carol, &bob, &rusty];
    let heard: Vec<Vec<(Said, bool)>> = members
        .iter()
        .map(|m| {
            m.wait_for("\"the end\"", |e| {
                e.kind() == "message" && e.str("text") == "the end"
            });
            m.events()
                .iter()
                .filter(|e| is_test_message(e))
                .map(|e| (said(e), e.flag("you")))
                .collect()
        })
        .collect();

    // Bob's view is the room's order: all 3N, ids increasing, each under the
    // name its text carries, his own marked "you".
    let order: Vec<Said> = heard[2].iter().map(|(s, _)| s.clone()).collect();
    assert_eq!(order.len(), 3 * N, "bob: every message exactly once");
    assert!(
        order.windows(2).all(|w| w[0].0 < w[1].0),
        "bob: ids increase: {order:?}"
    );
    for ((_, user, text), you) in &heard[2] {
        assert_eq!(
            text.split('#').next(),
            Some(user.as_str()),
            "bob: {text:?} arrived under the name {user:?}"
        );
        assert_eq!(*you, user == "bob", "bob: only his own messages are his");
    }
    for speaker in ["alice", "carol", "bob"] {
        let texts: Vec<&str> = order
            .iter()
            .filter(|(_, user, _)| user == speaker)
            .map(|(_, _, text)| text.as_str())
            .collect();
        let sent: Vec<String> = (0..N).map(|n| format!("{speaker}#{n}")).collect();
        assert_eq!(
            texts, sent,
            "{speaker}'s messages, each once, in sending order"
        );
    }
    // Everyone else sees exactly that order, minus (for ChatStream) their own.
    let hears_own = [false, false, true, true];
    for ((member, heard), hears_own) in members.iter().zip(&heard).zip(hears_own) {
        let want: Vec<Said> = order
            .iter()
            .filter(|(_, user, _)| hears_own || *user != member.user)
            .cloned()
            .collect();
        let got: Vec<Said> = heard.iter().map(|(s, _)| s.clone()).collect();
        assert_eq!(
            got, want,
            "{}: the room's order, each message once",
            member.label
        );
    }
    let switches = order.windows(2).filter(|w| w[0].1 != w[1].1).count();
    eprintln!(
        "{} messages; the speaker changed {switches} times",
        order.len()
    );
    assert!(
        switches >= 2,
        "the speakers' messages interleave: {order:?}"
    );
    server.assert_running();
}

/// Joins and leaves (a USER_LEFT event, and a cancelled call), typing start
/// and stop, and a typing indicator that expires reach the Chat members of
/// every kind (Go, Python, Rust); nobody hears their own typing.
#[test]
fn join_leave_and_typing_reach_chat_clients() {
    use Protocol::Chat;
    let mut server = chat_server(&["--typing-timeout-secs", "1"]);
    let room = "events";
    let rusty = Member::rust(&server, room, "rusty", Chat).ready(Chat);
    let mut bob = Member::go(&server, room, "bob", Chat, &[]).ready(Chat);
    let welcome = bob.wait_for("welcome", |e| {
        e.kind() == "system" && e.str("text").starts_with("welcome")
    });
    assert!(
        welcome.str("text").contains("rusty"),
        "bob's welcome names who is here: {welcome}"
    );
    rusty.wait_for("bob joined", |e| e.is("user", "USER_JOINED", "bob"));
    let mut dora = Member::py(&server, room, "dora", Chat, &[]).ready(Chat);
    for m in [&rusty, &bob] {
        m.wait_for("dora joined", |e| e.is("user", "USER_JOINED", "dora"));
    }

    bob.cmd("typing start");
    for m in [&rusty, &dora] {
        m.wait_for("bob typing", |e| e.is("typing", "TYPING_START", "bob"));
    }
    bob.cmd("typing stop");
    for m in [&rusty, &dora] {
        m.wait_for("bob stopped typing", |e| {
            e.is("typing", "TYPING_STOP", "bob")
        });
    }

    // Dora starts typing and never stops: the server expires it (1 s here).
    dora.cmd("typing start");
    for m in [&rusty, &bob] {
        let started = m.wait_for("dora typing", |e| e.is("typing", "TYPING_START", "dora"));
        let expired = m.wait_for("dora's typing expired", |e| {
            e.is("typing", "TYPING_STOP", "dora")
        });
        let after = expired.at.duration_since(started.at);
        assert!(
            after >= Duration::from_millis(500),
            "{}: dora's typing stopped {after:?} after it started: too soon for the 1 s expiry",
            m.label
        );
    }

    dora.cmd("leave");
    for m in [&rusty, &bob] {
        m.wait_for("dora left", |e| e.is("user", "USER_LEFT", "dora"));
    }
    assert_eq!(
        dora.status().str("code"),
        "OK",
        "leaving ends dora's call cleanly"
    );

    // Bob cancels his call instead of saying goodbye: he leaves all the same.
    bob.cmd("quit");
    rusty.wait_for("bob left", |e| e.is("user", "USER_LEFT", "bob"));

    for m in [&rusty, &bob, &dora] {
        let own_typing: Vec<String> = m
            .events()
            .iter()
            .filter(|e| e.kind() == "typing" && e.str("user") == m.user)
            .map(ToString::to_string)
            .collect();
        assert!(
            own_typing.is_empty(),
            "{} heard its own typing: {own_typing:?}",
            m.label
        );
    }
    server.assert_running();
}

/// A Chat call whose first event is not USER_JOINED with a name ends with
/// INVALID_ARGUMENT, seen as codes.InvalidArgument by grpc-go (and by grpcio).
#[test]
fn bad_first_event_gives_invalid_argument() {
    use Protocol::Chat;
    let mut server = chat_server(&[]);
    let no_join = ["--join=false"];
    let cases = [
        ("a message first", "send hello?", false),
        ("USER_LEFT first", "leave", false),
        ("USER_JOINED without a name", "join ", false),
        ("a message first (Python)", "send hello?", true),
    ];
    let mut members: Vec<(&str, Member)> = cases
        .iter()
        .map(|&(what, first, python)| {
            let mut m = if python {
                Member::py(&server, "bad", "eve", Chat, &no_join)
            } else {
                Member::go(&server, "bad", "eve", Chat, &no_join)
            };
            m.cmd(first);
            (what, m)
        })
        .collect();
    for (what, m) in &mut members {
        let status = m.status();
        assert_eq!(status.str("code"), "InvalidArgument", "{what}: {status}");
        assert!(
            !status.str("message").is_empty(),
            "{what}: the status says why"
        );
    }
    server.assert_running();
}

/// A second member may not take a name in use in the room (compared without
/// case): ALREADY_EXISTS for a Go Chat client, a Python ChatStream client and
/// our Rust client; the first holder is unaffected.
#[test]
fn duplicate_name_gives_already_exists() {
    use Protocol::{Chat, ChatStream};
    let mut server = chat_server(&["--rate-limit", "0"]);
    let room = "names";
    let mut bob = Member::go(&server, room, "bob", Chat, &[]).ready(Chat);
    let go_bob = Member::go(&server, room, "Bob", Chat, &[]);
    let mut py_bob = Member::py(&server, room, "bob", ChatStream, &[]).ready(ChatStream);
    py_bob.cmd("send I am bob too");
    let rust_bob = Member::rust(&server, room, "BOB", Chat);
    for m in [&go_bob, &py_bob, &rust_bob] {
        let status = m.status();
        assert_eq!(status.str("code"), "AlreadyExists", "{}: {status}", m.label);
    }
    bob.cmd("send still me");
    let mine = bob.wait_for("his own message", |e| e.kind() == "message");
    assert_eq!(
        (mine.str("user"), mine.str("text"), mine.flag("you")),
        ("bob", "still me", true),
        "the impostors' messages never reached the room"
    );
    let strangers: Vec<String> = bob
        .events()
        .iter()
        .filter(|e| e.kind() == "user" && e.str("user") != "bob")
        .map(ToString::to_string)
        .collect();
    assert!(
        strangers.is_empty(),
        "refused members never joined: {strangers:?}"
    );
    server.assert_running();
}

/// A Go Chat client over the rate limit gets a SystemEvent for each refused
/// message; the accepted ones reach the room (and itself) once each.
#[test]
fn rate_limited_go_chat_client_gets_a_system_event() {
    use Protocol::Chat;
    let mut server = chat_server(&["--rate-limit", "1", "--rate-burst", "2"]);
    let room = "limits";
    let rusty = Member::rust(&server, room, "rusty", Chat).ready(Chat);
    let mut bob = Member::go(&server, room, "bob", Chat, &[]).ready(Chat);
    const SENT: usize = 6;
    for n in 0..SENT {
        bob.cmd(&format!("send bob#{n}"));
    }
    let is_limited = |e: &Event| e.kind() == "system" && e.str("text").contains("rate limit");
    let is_mine = |e: &Event| e.kind() == "message" && e.str("text").starts_with("bob#");
    // Each message is either delivered (back to bob too) or refused with a
    // notice to bob alone.
    let outcome = bob
        .inbox
        .wait(WAIT, |events| {
            let delivered = events.iter().filter(|e| is_mine(e)).count();
            let refused = events.iter().filter(|e| is_limited(e)).count();
            (delivered + refused >= SENT).then_some((delivered, refused))
        })
        .unwrap_or_else(|| bob.fail("an outcome for each of the 6 messages"));
    let (delivered, refused) = outcome;
    assert!(
        refused >= 1,
        "6 messages at once with a burst of 2: some refused"
    );
    assert!(delivered >= 2, "the burst of 2 is delivered");
    assert_eq!(delivered + refused, SENT, "one outcome per message");
    let texts = |m: &Member| -> Vec<String> {
        m.wait_count("bob's delivered messages", delivered, is_mine)
            .iter()
            .map(|e| e.str("text").to_owned())
            .collect()
    };
    let bobs = texts(&bob);
    assert_eq!(bobs[..2], ["bob#0", "bob#1"], "the burst is the first two");
    assert_eq!(texts(&rusty), bobs, "rusty gets what was delivered");
    assert!(
        !rusty.events().iter().any(is_limited),
        "the notice goes to the sender alone"
    );
    server.assert_running();
}

/// Go clients that gzip every message (grpc.UseCompressor(gzip)), on both
/// protocols, are understood: Python and Rust members get their texts
/// intact, and they in turn hear the others.
#[test]
fn gzip_compressing_go_client_is_understood() {
    use Protocol::{Chat, ChatStream};
    let mut server = chat_server(&["--rate-limit", "0"]);
    let room = "gzip";
    let carol = Member::py(&server, room, "carol", ChatStream, &[]);
    let rusty = Member::rust(&server, room, "rusty", Chat);
    let zed = Member::go(&server, room, "zed", Chat, &["--gzip"]);
    let yan = Member::go(&server, room, "yan", ChatStream, &["--gzip"]);
    let mut carol = carol.ready(ChatStream);
    let rusty = rusty.ready(Chat);
    let mut zed = zed.ready(Chat);
    let mut yan = yan.ready(ChatStream);

    let long = "squeeze me ".repeat(100).trim_end().to_owned();
    zed.cmd(&format!("send {long}"));
    zed.cmd("send tiny");
    yan.cmd("send from yan, zipped");
    for m in [&carol, &rusty] {
        let texts: Vec<(String, String)> = m
            .wait_count("the zipped messages", 3, |e| {
                e.kind() == "message" && ["zed", "yan"].contains(&e.str("user"))
            })
            .iter()
            .map(|e| (e.str("user").to_owned(), e.str("text").to_owned()))
            .collect();
        for want in [
            ("zed", long.as_str()),
            ("zed", "tiny"),
            ("yan", "from yan, zipped"),
        ] {
            assert!(
                texts.iter().any(|(u, t)| (u.as_str(), t.as_str()) == want),
                "{}: {want:?} among {texts:?}",
                m.label
            );
        }
    }
    // grpc-go's own account: the long message went out compressed.
    let sent = zed.wait_for("the long message sent", |e| {
        e.kind() == "sent" && e.num("length") > long.len() as f64
    });
    assert!(
        sent.num("compressed_length") < sent.num("length") / 4.0,
        "zed compressed the long message: {sent}"
    );
    // And the compressing clients hear the others.
    carol.cmd("send hello zippers");
    for m in [&zed, &yan] {
        m.wait_for("carol's message", |e| {
            e.kind() == "message" && e.str("user") == "carol" && e.str("text") == "hello zippers"
        });
    }
    server.assert_running();
}

/// HealthCheck (Go and Python callers) reports SERVING, the members
/// connected right now and an uptime that advances.
#[test]
fn health_check_returns_live_figures() {
    use Protocol::{Chat, ChatStream};
    let mut server = chat_server(&[]);
    let first = health(&server, ChatPeer::Go);
    assert_eq!(first.str("status"), "SERVING", "{first}");
    assert_eq!(first.num("active_clients"), 0.0, "nobody yet: {first}");
    let uptime = first.num("uptime_seconds");
    assert!(uptime >= 0.0, "{first}");

    let bob = Member::go(&server, "health", "bob", Chat, &[]);
    let carol = Member::py(&server, "health", "carol", ChatStream, &[]);
    let rusty = Member::rust(&server, "other-room", "rusty", Chat);
    let mut members = vec![bob.ready(Chat), carol.ready(ChatStream), rusty.ready(Chat)];
    for which in [ChatPeer::Go, ChatPeer::Python] {
        let h = health(&server, which);
        assert_eq!(
            h.num("active_clients"),
            3.0,
            "three members, two rooms: {h}"
        );
    }

    // They leave in three ways: closing the stream, cancelling, dropping.
    members[0].cmd("close");
    members[1].cmd("quit");
    members.truncate(2);
    let deadline = Instant::now() + WAIT;
    loop {
        let h = health(&server, ChatPeer::Go);
        if h.num("active_clients") == 0.0 && h.num("uptime_seconds") > uptime {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "members still counted or uptime stuck after {WAIT:?}: {h} (first: {first})"
        );
        thread::sleep(Duration::from_millis(100));
    }
    server.assert_running();
}
