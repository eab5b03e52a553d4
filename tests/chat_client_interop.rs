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

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::{Peer, Server, cargo_bin, interop_bin, interop_path, interop_python};

/// Longest wait for any one expected thing.
const WAIT: Duration = Duration::from_secs(15);

/// Lines a child wrote to stdout, shared with the reader thread.
#[derive(Default)]
struct Lines {
    lines: Mutex<Vec<String>>,
    changed: Condvar,
}

impl Lines {
    fn push(&self, line: String) {
        self.lines.lock().unwrap().push(line);
        self.changed.notify_all();
    }

    fn snapshot(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits up to [`WAIT`] until `check` returns `Some` for the lines so far.
    fn wait<T>(&self, mut check: impl FnMut(&[String]) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + WAIT;
        let mut lines = self.lines.lock().unwrap();
        loop {
            if let Some(found) = check(&lines) {
                return Some(found);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            lines = self.changed.wait_timeout(lines, left).unwrap().0;
        }
    }
}

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
        let found = self.out.wait(|lines| {
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

/// Parses one flat JSON object as the peers print it: string values decoded,
/// other values (numbers, booleans, null) kept as written.
fn parse_flat_object(line: &str) -> Option<BTreeMap<String, String>> {
    struct Cursor<'a> {
        s: &'a [u8],
        i: usize,
    }
    impl Cursor<'_> {
        fn ws(&mut self) {
            while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
                self.i += 1;
            }
        }
        fn eat(&mut self, c: u8) -> bool {
            self.ws();
            let hit = self.s.get(self.i) == Some(&c);
            self.i += usize::from(hit);
            hit
        }
        fn hex4(&mut self) -> Option<u32> {
            let hex = std::str::from_utf8(self.s.get(self.i..self.i + 4)?).ok()?;
            self.i += 4;
            u32::from_str_radix(hex, 16).ok()
        }
        fn string(&mut self) -> Option<String> {
            if !self.eat(b'"') {
                return None;
            }
            let mut out = Vec::new();
            loop {
                let c = *self.s.get(self.i)?;
                self.i += 1;
                let ch = match c {
                    b'"' => return String::from_utf8(out).ok(),
                    b'\\' => {
                        let e = *self.s.get(self.i)?;
                        self.i += 1;
                        match e {
                            b'"' | b'\\' | b'/' => char::from(e),
                            b'n' => '\n',
                            b't' => '\t',
                            b'r' => '\r',
                            b'b' => '\u{8}',
                            b'f' => '\u{c}',
                            b'u' => {
                                let hi = self.hex4()?;
                                if (0xD800..0xDC00).contains(&hi) {
                                    if self.s.get(self.i..self.i + 2) != Some(b"\\u") {
                                        return None;
                                    }
                                    self.i += 2;
                                    let lo = self.hex4()?;
                                    char::from_u32(
                                        0x10000
                                            + ((hi - 0xD800) << 10)
                                            + (lo.checked_sub(0xDC00)?),
                                    )?
                                } else {
                                    char::from_u32(hi)?
                                }
                            }
                            _ => return None,
                        }
                    }
                    c => {
                        out.push(c);
                        continue;
                    }
                };
                out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
            }
        }
        fn value(&mut self) -> Option<String> {
            self.ws();
            if self.s.get(self.i) == Some(&b'"') {
                return self.string();
            }
            let start = self.i;
            while self
                .s
                .get(self.i)
                .is_some_and(|c| !matches!(c, b',' | b'}') && !c.is_ascii_whitespace())
            {
                self.i += 1;
            }
            let raw = std::str::from_utf8(&self.s[start..self.i]).ok()?;
            (!raw.is_empty()).then(|| raw.to_owned())
        }
    }

    let mut cur = Cursor {
        s: line.as_bytes(),
        i: 0,
    };
    let mut map = BTreeMap::new();
    if !cur.eat(b'{') {
        return None;
    }
    if !cur.eat(b'}') {
        loop {
            let key = cur.string()?;
            if !cur.eat(b':') {
                return None;
            }
            map.insert(key, cur.value()?);
            if !cur.eat(b',') {
                if !cur.eat(b'}') {
                    return None;
                }
                break;
            }
        }
    }
    cur.ws();
    (cur.i == cur.s.len()).then_some(map)
}

type Event = BTreeMap<String, String>;

fn field<'a>(event: &'a Event, key: &str) -> &'a str {
    event.get(key).map_or("", String::as_str)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Implementation {
    Python,
    Go,
}

/// A `ChatStream` client of another gRPC implementation, driven by the
/// `tests/interop/chat/` peers' stdin commands.
struct StreamPeer {
    label: String,
    peer: Peer,
    out: Arc<Lines>,
}

impl StreamPeer {
    fn join(implementation: Implementation, server: &Server, room: &str, user: &str) -> Self {
        let args: Vec<String> = [
            "--addr",
            &format!("127.0.0.1:{}", server.port),
            "--room",
            room,
            "--user",
            user,
            "--protocol",
            "chat-stream",
        ]
        .map(str::to_owned)
        .to_vec();
        let (label, program, args) = match implementation {
            Implementation::Python => {
                let script = interop_path("chat/py_client.py")
                    .to_string_lossy()
                    .into_owned();
                let args = [vec![script], args].concat();
                (format!("py:{user}"), interop_python(), args)
            }
            Implementation::Go => (format!("go:{user}"), interop_bin("go-chat-client"), args),
        };
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
                        ("kind".to_owned(), "unparsed".to_owned()),
                        ("text".to_owned(), l.clone()),
                    ])
                })
            })
            .collect()
    }

    /// The first event (so far or within [`WAIT`]) that matches.
    fn wait_for(&self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        self.out
            .wait(|lines| Self::events(lines).into_iter().find(|e| pred(e)))
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

/// `chat-server --addr 127.0.0.1:PORT --rate-limit 0` on a free port.
fn chat_server() -> Server {
    let bin = cargo_bin("chat-server", option_env!("CARGO_BIN_EXE_chat-server"));
    Server::spawn(&bin, |port| {
        ["--addr", &format!("127.0.0.1:{port}"), "--rate-limit", "0"]
            .map(str::to_owned)
            .to_vec()
    })
}

/// alice and bob (`chat-client`, line mode) and `peer_user` (a ChatStream
/// client of `implementation`) in one room, each saying something.
fn line_clients_chat_with_a_chat_stream_peer(implementation: Implementation, peer_user: &str) {
    let mut server = chat_server();
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
    line_clients_chat_with_a_chat_stream_peer(Implementation::Python, "pyuser");
}

#[test]
fn line_clients_and_a_go_chat_stream_client_share_a_room() {
    line_clients_chat_with_a_chat_stream_peer(Implementation::Go, "gouser");
}
