//! Line-mode `chat-client` processes and a `ChatStream` client of another
//! gRPC implementation in one room of a `chat-server` process.
//!
//! Two `chat-client`s (alice and bob, stdin and stdout piped, so line mode)
//! and a Python (grpcio, `tests/interop/chat/py_client.py`) or Go (grpc-go,
//! `go-chat-client`) peer on the old `ChatStream` protocol each say
//! something. The `chat-client`s must print exactly the lines of
//! `src/chat_client/display.rs` (`[you] …`, `[name] …`, `* name joined`,
//! `* name left`, `-- notice --`), including the join the server announces
//! when the ChatStream member's first message binds its name, and its leave;
//! the peer must get alice's and bob's messages exactly once, under their
//! names.
//!
//! `scripts/setup-interop.sh` (run once by the helpers, quick when up to
//! date) provides the peers. Every wait is bounded by [`WAIT`]; children are
//! killed when dropped.

mod common;

use common::WAIT;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::json::{Json, parse_flat_object};
use common::{ChatPeer, Collected, Peer, Server, cargo_bin, chat_peer_args, chat_server};

/// Lines a child wrote to stdout, shared with the reader thread.
type Lines = Collected<String>;

/// Starts `program args...` as a [`Peer`] whose stdout lines go to `Lines`.
fn spawn_collected(program: &std::path::Path, args: &[String], label: &str) -> (Peer, Arc<Lines>) {
    let lines = Arc::new(Lines::default());
    let sink = Arc::clone(&lines);
    let peer = Peer::spawn(program, args, label, move |line| sink.push(line));
    (peer, lines)
}

// ---------------------------------------------------------------------------
// The chat-client processes.

/// A `chat-client` process in line mode.
struct LineClient {
    user: String,
    peer: Peer,
    out: Arc<Lines>,
    /// Lines of stdout already matched by [`LineClient::expect`].
    seen: usize,
}

impl LineClient {
    fn join(server: &Server, room: &str, user: &str) -> LineClient {
        let bin = cargo_bin("chat-client", option_env!("CARGO_BIN_EXE_chat-client"));
        let args = [
            "--address",
            &format!("127.0.0.1:{}", server.port),
            "--user",
            user,
            "--room",
            room,
        ]
        .map(str::to_owned);
        let (peer, out) = spawn_collected(&bin, &args, &format!("chat-client:{user}"));
        LineClient {
            user: user.to_owned(),
            peer,
            out,
            seen: 0,
        }
    }

    fn say(&mut self, line: &str) {
        self.peer.send_line(line);
    }

    fn dump(&self) -> String {
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
            self.user,
            self.out.snapshot().join("\n"),
            self.user,
            self.peer.stderr()
        )
    }

    /// Waits for exactly this stdout line after the last one matched.
    fn expect(&mut self, want: &str) {
        let seen = self.seen;
        let found = self.out.wait(WAIT, |lines| {
            lines[seen..]
                .iter()
                .position(|l| l == want)
                .map(|i| seen + i + 1)
        });
        match found {
            Some(next) => self.seen = next,
            None => panic!(
                "{} never printed {want:?} within {WAIT:?}\n{}",
                self.user,
                self.dump()
            ),
        }
    }

    /// Waits for the process to exit successfully.
    fn expect_clean_exit(&mut self) {
        match self.peer.wait_exit(WAIT) {
            Some(status) if status.success() => {}
            Some(status) => panic!("{} exited with {status}\n{}", self.user, self.dump()),
            None => panic!(
                "{} did not exit within {WAIT:?}\n{}",
                self.user,
                self.dump()
            ),
        }
    }

    /// Everything it printed, once it has exited.
    fn transcript(&self) -> Vec<String> {
        self.out.snapshot()
    }
}

// ---------------------------------------------------------------------------
// The ChatStream peer (Python or Go) and its JSON lines.

/// One JSON line of the peer.
type Event = BTreeMap<String, Json>;

/// A string field's text ("" if it is missing or not a string).
fn field<'a>(event: &'a Event, key: &str) -> &'a str {
    event.get(key).and_then(Json::as_str).unwrap_or("")
}

/// A `ChatStream` client of another gRPC implementation, driven by the
/// `tests/interop/chat/` peers' stdin commands.
struct StreamPeer {
    label: String,
    peer: Peer,
    out: Arc<Lines>,
}

impl StreamPeer {
    fn join(implementation: ChatPeer, server: &Server, room: &str, user: &str) -> Self {
        let args = chat_peer_args(server.port, room, user, "chat-stream");
        let (program, args) = implementation.command(args);
        let label = format!("{}:{user}", implementation.short());
        let (peer, out) = spawn_collected(&program, &args, &label);
        StreamPeer { label, peer, out }
    }

    fn cmd(&mut self, line: &str) {
        self.peer.send_line(line);
    }

    fn events(lines: &[String]) -> Vec<Event> {
        lines
            .iter()
            .map(|l| {
                parse_flat_object(l).unwrap_or_else(|| {
                    BTreeMap::from([
                        ("kind".to_owned(), "unparsed".into()),
                        ("text".to_owned(), l.as_str().into()),
                    ])
                })
            })
            .collect()
    }

    /// The first event (so far or within [`WAIT`]) that matches.
    fn wait_for(&self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        self.out
            .wait(WAIT, |lines| {
                Self::events(lines).into_iter().find(|e| pred(e))
            })
            .unwrap_or_else(|| {
                panic!(
                    "{}: no {what} within {WAIT:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    self.label,
                    self.out.snapshot().join("\n"),
                    self.peer.stderr()
                )
            })
    }

    fn all_events(&self) -> Vec<Event> {
        Self::events(&self.out.snapshot())
    }
}

// ---------------------------------------------------------------------------
// The test.

/// alice and bob (`chat-client`, line mode) and `peer_user` (a ChatStream
/// client of `implementation`) in one room, each saying something.
fn line_clients_chat_with_a_chat_stream_peer(implementation: ChatPeer, peer_user: &str) {
    let mut server = chat_server(&["--rate-limit", "0"]);
    let room = "mixed";

    let mut alice = LineClient::join(&server, room, "alice");
    alice.expect("-- welcome to mixed, alice: you are the only one here --");
    let mut bob = LineClient::join(&server, room, "bob");
    bob.expect("-- welcome to mixed, bob: also here: alice --");
    alice.expect("* bob joined");

    // A ChatStream member is in the room (it has its response headers) but
    // has no name until its first message binds one: only then do the Chat
    // members hear that it joined, just before what it said.
    let mut peer = StreamPeer::join(implementation, &server, room, peer_user);
    peer.wait_for("ready", |e| field(e, "kind") == "ready");
    let peer_text = format!("hello from {peer_user}, ça va?");
    peer.cmd(&format!("send {peer_text}"));
    for client in [&mut alice, &mut bob] {
        client.expect(&format!("* {peer_user} joined"));
        client.expect(&format!("[{peer_user}] {peer_text}"));
    }

    let is_message = |user: &'static str, text: &'static str| {
        move |e: &Event| {
            field(e, "kind") == "message" && field(e, "user") == user && field(e, "text") == text
        }
    };
    alice.say("hi all, alice here");
    alice.expect("[you] hi all, alice here");
    bob.expect("[alice] hi all, alice here");
    peer.wait_for("alice's message", is_message("alice", "hi all, alice here"));

    bob.say("and bob");
    bob.expect("[you] and bob");
    alice.expect("[bob] and bob");
    peer.wait_for("bob's message", is_message("bob", "and bob"));

    // The peer half-closes its stream: the server ends the call, and the
    // room hears that it left.
    peer.cmd("close");
    let status = peer.wait_for("final status", |e| field(e, "kind") == "status");
    assert_eq!(
        field(&status, "code"),
        "OK",
        "{}: closing ends the call cleanly: {status:?}",
        peer.label
    );
    for client in [&mut alice, &mut bob] {
        client.expect(&format!("* {peer_user} left"));
    }

    // The call is over (its status is the last line), so the peer has all it
    // will ever get: alice's and bob's messages once each, in order, under
    // their names, and not its own (ChatStream senders are not echoed).
    let heard: Vec<(String, String)> = peer
        .all_events()
        .iter()
        .filter(|e| field(e, "kind") == "message")
        .map(|e| (field(e, "user").to_owned(), field(e, "text").to_owned()))
        .collect();
    let want = [("alice", "hi all, alice here"), ("bob", "and bob")]
        .map(|(u, t)| (u.to_owned(), t.to_owned()))
        .to_vec();
    assert_eq!(
        heard, want,
        "{}: what the ChatStream peer heard",
        peer.label
    );
    let unexpected: Vec<Event> = peer
        .all_events()
        .into_iter()
        // (The Go peer also reports each request it sent, from grpc-go's stats.)
        .filter(|e| !["ready", "message", "sent", "status"].contains(&field(e, "kind")))
        .collect();
    assert!(
        unexpected.is_empty(),
        "{}: nothing but messages on ChatStream: {unexpected:?}",
        peer.label
    );

    alice.say("/quit");
    alice.expect_clean_exit();
    bob.expect("* alice left");
    bob.peer.close_stdin();
    bob.expect_clean_exit();

    // Each chat-client printed exactly these lines, in this order, and
    // nothing else.
    let peer_said = format!("[{peer_user}] {peer_text}");
    let (joined, left) = (
        format!("* {peer_user} joined"),
        format!("* {peer_user} left"),
    );
    assert_eq!(
        alice.transcript(),
        [
            "-- welcome to mixed, alice: you are the only one here --",
            "* bob joined",
            &joined,
            &peer_said,
            "[you] hi all, alice here",
            "[bob] and bob",
            &left,
        ],
        "alice's stdout"
    );
    assert_eq!(
        bob.transcript(),
        [
            "-- welcome to mixed, bob: also here: alice --",
            &joined,
            &peer_said,
            "[alice] hi all, alice here",
            "[you] and bob",
            &left,
            "* alice left",
        ],
        "bob's stdout"
    );
    server.assert_running();
}

#[test]
fn line_clients_and_a_python_chat_stream_client_share_a_room() {
    line_clients_chat_with_a_chat_stream_peer(ChatPeer::Python, "pyuser");
}

#[test]
fn line_clients_and_a_go_chat_stream_client_share_a_room() {
    line_clients_chat_with_a_chat_stream_peer(ChatPeer::Go, "gouser");
}
