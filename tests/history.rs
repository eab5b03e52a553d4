//! History, replay, resume and scale-out, end to end: `chat-server`
//! processes (the embedded store, or a real `redis-server` started by the
//! test on a free port, persistence off) with the Go peer
//! (`go-chat-client`, grpc-go: `ChatStream` and `Chat`) and `chat-client` in
//! line mode.
//!
//! | test | what it shows (issue 5, "What it must show") |
//! |---|---|
//! | `replay_on_join_memory`, `replay_on_join_redis` | 1: the last N messages, before live ones, for all three clients |
//! | `resume_after_connection_killed` | 2: cut off while messages flow, every message once, in order |
//! | `two_servers_one_redis_one_order` | 3: one conversation, one order, joins and typing across servers |
//! | `redis_killed_and_restarted` | 4: live chat through the outage; history and the epoch change after |
//! | `redis_unreachable_at_start` | the server starts without Redis, serves live chat, and catches up when it appears |
//! | `server_restarted_clients_resume` | 5: SIGTERM and restart: 0 lost, 0 duplicated |
//! | `resume_past_the_trimmed_history_is_told` | a resume beyond what history keeps, or from another epoch, is told so |
//! | `a_slow_reader_disconnected_resumes` | a member cut off by the slow-reader rule resumes with nothing lost or doubled |
//! | `bad_resume_metadata_is_refused` | `INVALID_ARGUMENT` for a malformed `chat-last-id` |
//!
//! Messages are counted by text (`m1`, `m2`, …, unique per test) and id;
//! every wait polls for an event with a deadline.

mod common;

use common::WAIT;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::json::{Json, parse_flat_object};
use common::redis::{Proxy, RedisServer};
use common::{
    CLIENT_TIMEOUT, ChatPeer, Collected, Peer, Server, cargo_bin, chat_peer_args, chat_server,
    chat_server_on, free_port, run_client,
};

type Fields = BTreeMap<String, Json>;

fn s<'a>(f: &'a Fields, key: &str) -> &'a str {
    f.get(key).and_then(Json::as_str).unwrap_or("")
}

fn n(f: &Fields, key: &str) -> u64 {
    match f.get(key) {
        Some(Json::Num(x)) => *x as u64,
        _ => 0,
    }
}

fn flag(f: &Fields, key: &str) -> bool {
    f.get(key) == Some(&Json::Bool(true))
}

fn texts(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|i| format!("m{i}")).collect()
}

/// A `go-chat-client` process: one member, its output lines as events.
struct Go {
    peer: Peer,
    inbox: Arc<Collected<Fields>>,
    label: String,
}

impl Go {
    fn start(port: u16, room: &str, user: &str, protocol: &str, extra: &[String]) -> Go {
        let mut args = chat_peer_args(port, room, user, protocol);
        args.extend(["--timeout".to_owned(), "300s".to_owned()]);
        args.extend(extra.iter().cloned());
        let (program, args) = ChatPeer::Go.command(args);
        let inbox = Arc::new(Collected::default());
        let sink = Arc::clone(&inbox);
        let label = format!("go:{user}");
        let peer = Peer::spawn(&program, &args, &label, move |line| {
            if let Some(fields) = parse_flat_object(&line) {
                sink.push(fields);
            }
        });
        Go { peer, inbox, label }
    }

    /// A `Chat` member that has seen its welcome.
    fn chat(port: u16, room: &str, user: &str, extra: &[String]) -> Go {
        let go = Go::start(port, room, user, "chat", extra);
        go.wait("welcome", |e| {
            s(e, "kind") == "system" && s(e, "text").starts_with("welcome")
        });
        go
    }

    fn send(&mut self, text: &str) {
        self.peer.send_line(&format!("send {text}"));
    }

    fn send_all(&mut self, texts: &[String]) {
        for t in texts {
            self.send(t);
        }
    }

    fn wait(&self, what: &str, pred: impl Fn(&Fields) -> bool) -> Fields {
        self.inbox
            .wait(WAIT, |events| events.iter().find(|e| pred(e)).cloned())
            .unwrap_or_else(|| panic!("{} never got {what}: {:#?}", self.label, self.events()))
    }

    fn events(&self) -> Vec<Fields> {
        self.inbox.snapshot()
    }

    /// Chat messages received: (id, user, text).
    fn messages(&self) -> Vec<(u64, String, String)> {
        self.events()
            .iter()
            .filter(|e| s(e, "kind") == "message")
            .map(|e| (n(e, "id"), s(e, "user").to_owned(), s(e, "text").to_owned()))
            .collect()
    }

    /// Waits until a message with this text has arrived.
    fn wait_text(&self, text: &str) {
        self.wait(&format!("message {text:?}"), |e| {
            s(e, "kind") == "message" && s(e, "text") == text
        });
    }

    /// The epoch of the end-of-history notice.
    fn epoch(&self) -> String {
        let end = self.wait("the end of history", |e| flag(e, "end_of_history"));
        s(&end, "epoch").to_owned()
    }

    /// Resume metadata from what this member saw.
    fn resume_args(&self) -> Vec<String> {
        let last = self.messages().last().map_or(0, |m| m.0);
        vec![
            "--md".into(),
            format!("chat-last-id={last}"),
            "--md".into(),
            format!("chat-epoch={}", self.epoch()),
        ]
    }
}

/// A `chat-client` in line mode, its stdout lines collected.
struct Line {
    child: Child,
    _stdin: ChildStdin,
    lines: Arc<Collected<String>>,
    label: String,
}

impl Line {
    fn start(port: u16, room: &str, user: &str) -> Line {
        let bin = cargo_bin("chat-client", option_env!("CARGO_BIN_EXE_chat-client"));
        let mut child = Command::new(bin)
            .args(["--address", &format!("127.0.0.1:{port}")])
            .args(["--user", user, "--room", room])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chat-client");
        let lines = Arc::new(Collected::default());
        let sink = Arc::clone(&lines);
        let stdout = child.stdout.take().expect("piped stdout");
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(line) => sink.push(line),
                    Err(_) => return,
                }
            }
        });
        let stdin = child.stdin.take().expect("piped stdin");
        let line = Line {
            child,
            _stdin: stdin,
            lines,
            label: format!("chat-client:{user}"),
        };
        line.wait("its welcome", |l| l.starts_with("-- welcome"));
        line
    }

    fn wait(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.lines
            .wait(WAIT, |lines| lines.iter().find(|l| pred(l)).cloned())
            .unwrap_or_else(|| {
                panic!(
                    "{} never printed {what}:\n{}",
                    self.label,
                    self.lines.snapshot().join("\n")
                )
            })
    }

    /// The texts of the lines `[user] text` from `user`.
    fn said_by(&self, user: &str) -> Vec<String> {
        let prefix = format!("[{user}] ");
        self.lines
            .snapshot()
            .iter()
            .filter_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
            .collect()
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `chat-server` arguments with Redis.
fn with_redis(redis: &RedisServer) -> Vec<String> {
    vec![
        "--rate-limit".into(),
        "0".into(),
        "--redis".into(),
        redis.url(),
    ]
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// The `HealthCheck` status string, as grpc-go reads it.
fn health(server: &Server) -> String {
    let bin = common::interop_bin("go-chat-client");
    let args = [
        "--addr",
        &format!("127.0.0.1:{}", server.port),
        "--protocol",
        "health",
    ]
    .map(str::to_owned)
    .to_vec();
    let run = run_client(&bin, &args, CLIENT_TIMEOUT);
    run.output
        .lines()
        .filter_map(parse_flat_object)
        .find(|e| s(e, "kind") == "health")
        .map(|e| s(&e, "status").to_owned())
        .unwrap_or_else(|| format!("(no answer: {})", run.output))
}

/// Polls `HealthCheck` until its status satisfies `pred`.
fn wait_health(server: &Server, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = health(server);
        if pred(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "health never became {what}; last: {status}\n{}",
            server.output()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Asserts `got` is exactly `want`, in order, and ids strictly increase.
fn assert_once_in_order(who: &str, got: &[(u64, String, String)], want: &[String]) {
    let got_texts: Vec<&str> = got.iter().map(|m| m.2.as_str()).collect();
    let want: Vec<&str> = want.iter().map(String::as_str).collect();
    assert_eq!(got_texts, want, "{who}: every message once, in order");
    assert!(
        got.windows(2).all(|w| w[0].0 < w[1].0),
        "{who}: ids increase: {:?}",
        got.iter().map(|m| m.0).collect::<Vec<_>>()
    );
}

fn replay_on_join(extra: &[String]) {
    let mut args = vec![
        "--rate-limit".to_owned(),
        "0".into(),
        "--history-replay".into(),
        "4".into(),
    ];
    args.extend(extra.iter().cloned());
    let mut server = chat_server(&refs(&args));
    let room = "replay";
    let mut ann = Go::chat(server.port, room, "ann", &[]);
    ann.send_all(&texts(1..=6));
    ann.wait_text("m6");
    let ids: Vec<u64> = ann.messages().iter().map(|m| m.0).collect();

    // ChatStream (grpc-go): the header says how many are replayed.
    let cat = Go::start(server.port, room, "cat", "chat-stream", &[]);
    let ready = cat.wait("ready", |e| s(e, "kind") == "ready");
    assert_eq!(s(&ready, "replayed"), "4", "{ready:?}");
    assert!(!s(&ready, "epoch").is_empty(), "an epoch header: {ready:?}");
    cat.wait_text("m6");

    // Chat (grpc-go): messages, then the end-of-history notice.
    let bob = Go::chat(server.port, room, "bob", &[]);
    assert_eq!(
        bob.epoch(),
        s(&ready, "epoch"),
        "one epoch for both protocols"
    );

    // chat-client.
    let dan = Line::start(server.port, room, "dan");
    dan.wait("the end of history", |l| {
        l == "-- end of history (4 messages) --"
    });

    ann.send("live");
    let want: Vec<String> = ["m3", "m4", "m5", "m6", "live"].map(str::to_owned).to_vec();
    for member in [&cat, &bob] {
        member.wait_text("live");
        assert_once_in_order(&member.label, &member.messages(), &want);
    }
    // The replay is the newest four, with the ids they had.
    assert_eq!(
        bob.messages()[..4].iter().map(|m| m.0).collect::<Vec<_>>(),
        ids[2..]
    );
    // Chat: replayed messages come before the notice, live ones after.
    let events = bob.events();
    let end = events
        .iter()
        .position(|e| flag(e, "end_of_history"))
        .unwrap();
    let at = |text: &str| {
        events
            .iter()
            .position(|e| s(e, "text") == text)
            .unwrap_or(usize::MAX)
    };
    assert!(at("m6") < end && end < at("live"), "{events:#?}");
    dan.wait("the live message", |l| l == "[ann] live");
    assert_eq!(dan.said_by("ann"), want, "chat-client: replay, then live");
    server.assert_running();
}

/// Item 1 with the embedded store.
#[test]
fn replay_on_join_memory() {
    replay_on_join(&[]);
}

/// Item 1 with Redis.
#[test]
fn replay_on_join_redis() {
    let redis = RedisServer::start();
    replay_on_join(&["--redis".to_owned(), redis.url()]);
}

/// Item 2: a Go `Chat` client killed and started again with its last id,
/// and `chat-client` whose connection is cut (and held off) by a proxy,
/// while messages keep flowing: each ends with every message exactly once,
/// in order.
#[test]
fn resume_after_connection_killed() {
    let redis = RedisServer::start();
    let mut server = chat_server(&refs(&with_redis(&redis)));
    let room = "resume";
    let mut ann = Go::chat(server.port, room, "ann", &[]);
    let bob = Go::chat(server.port, room, "bob", &[]);
    let proxy = Proxy::start(server.port);
    let dan = Line::start(proxy.port, room, "dan");

    ann.send_all(&texts(1..=40));
    bob.wait_text("m40");
    dan.wait("m40", |l| l == "[ann] m40");

    // Cut both off; messages go on meanwhile.
    let resume = bob.resume_args();
    let before = bob.messages();
    drop(bob);
    proxy.cut(true);
    ann.wait("bob's leave", |e| {
        s(e, "kind") == "user" && s(e, "type") == "USER_LEFT" && s(e, "user") == "bob"
    });
    ann.send_all(&texts(41..=80));
    ann.wait_text("m80");

    let bob = Go::chat(server.port, room, "bob", &resume);
    proxy.open();
    ann.send_all(&texts(81..=120));
    bob.wait_text("m120");
    dan.wait("m120", |l| l == "[ann] m120");

    let mut seen = before;
    seen.extend(bob.messages());
    assert_once_in_order("bob (two connections)", &seen, &texts(1..=120));
    assert_eq!(
        dan.said_by("ann"),
        texts(1..=120),
        "chat-client across the cut"
    );
    dan.wait("its reconnection", |l| l == "-- reconnected --");
    server.assert_running();
}

/// Item 3: two servers on one Redis are one chat: both Chat members see
/// both senders' messages in one order (the ChatStream member and
/// `chat-client` too), and joins, typing and leaves cross servers.
#[test]
fn two_servers_one_redis_one_order() {
    let redis = RedisServer::start();
    let mut a = chat_server(&refs(&with_redis(&redis)));
    let mut b = chat_server(&refs(&with_redis(&redis)));
    let room = "scale";
    let mut bob = Go::chat(b.port, room, "bob", &[]);
    let cat = Go::start(b.port, room, "cat", "chat-stream", &[]);
    cat.wait("ready", |e| s(e, "kind") == "ready");
    let mut ann = Go::chat(a.port, room, "ann", &[]);
    bob.wait("ann joining on the other server", |e| {
        s(e, "kind") == "user" && s(e, "type") == "USER_JOINED" && s(e, "user") == "ann"
    });
    let dan = Line::start(a.port, room, "dan");
    ann.wait("dan joining", |e| {
        s(e, "type") == "USER_JOINED" && s(e, "user") == "dan"
    });
    bob.wait("dan joining on the other server", |e| {
        s(e, "type") == "USER_JOINED" && s(e, "user") == "dan"
    });
    ann.peer.send_line("typing start");
    bob.wait("ann typing on the other server", |e| {
        s(e, "kind") == "typing" && s(e, "type") == "TYPING_START" && s(e, "user") == "ann"
    });

    // Both send at once.
    let from_ann: Vec<String> = (1..=40).map(|i| format!("a{i}")).collect();
    let from_bob: Vec<String> = (1..=40).map(|i| format!("b{i}")).collect();
    for (x, y) in from_ann.iter().zip(&from_bob) {
        ann.send(x);
        bob.send(y);
    }
    for m in [&ann, &bob, &cat] {
        m.wait_text("a40");
        m.wait_text("b40");
    }
    dan.wait("a40", |l| l == "[ann] a40");
    dan.wait("b40", |l| l == "[bob] b40");

    let order = ann.messages();
    assert_eq!(order.len(), 80, "{order:?}");
    assert!(
        order.windows(2).all(|w| w[0].0 < w[1].0),
        "ids increase: {order:?}"
    );
    assert_eq!(
        bob.messages(),
        order,
        "bob (server B) and ann (server A): one order"
    );
    assert_eq!(
        cat.messages(),
        order,
        "the ChatStream member on B: the same order"
    );
    let dan_order: Vec<String> = dan
        .lines
        .snapshot()
        .iter()
        .filter_map(|l| {
            l.strip_prefix("[ann] ")
                .or_else(|| l.strip_prefix("[bob] "))
                .map(str::to_owned)
        })
        .collect();
    let texts: Vec<String> = order.iter().map(|m| m.2.clone()).collect();
    assert_eq!(dan_order, texts, "chat-client on A: the same order");

    ann.peer.send_line("leave");
    bob.wait("ann leaving on the other server", |e| {
        s(e, "type") == "USER_LEFT" && s(e, "user") == "ann"
    });
    a.assert_running();
    b.assert_running();
}

/// Item 4: Redis killed mid-run, then restarted (empty: no persistence).
/// Live chat goes on throughout; `HealthCheck` says DEGRADED meanwhile;
/// afterwards the members are told the epoch changed, and history holds the
/// messages sent during the outage, with the ids the members saw.
#[test]
fn redis_killed_and_restarted() {
    let mut redis = RedisServer::start();
    let mut args = with_redis(&redis);
    args.extend(["--history-replay".to_owned(), "100".to_owned()]);
    let mut server = chat_server(&refs(&args));
    let room = "outage";
    let mut ann = Go::chat(server.port, room, "ann", &[]);
    let bob = Go::chat(server.port, room, "bob", &[]);
    let dan = Line::start(server.port, room, "dan");
    let old_epoch = bob.epoch();
    assert_eq!(health(&server), "SERVING");

    ann.send_all(&texts(1..=10));
    bob.wait_text("m10");

    redis.kill();
    let degraded = wait_health(&server, "DEGRADED", |s| s.starts_with("DEGRADED"));
    assert!(degraded.contains("redis"), "{degraded}");
    ann.send_all(&texts(11..=20));
    bob.wait_text("m20");
    dan.wait("m20 during the outage", |l| l == "[ann] m20");

    redis.restart();
    wait_health(&server, "SERVING again", |s| s == "SERVING");
    let changed = bob.wait("the epoch change", |e| {
        s(e, "kind") == "system" && !s(e, "epoch").is_empty() && !flag(e, "end_of_history")
    });
    let new_epoch = s(&changed, "epoch").to_owned();
    assert_ne!(new_epoch, old_epoch);
    dan.wait("the epoch change", |l| l.starts_with("-- history was lost"));
    ann.send_all(&texts(21..=30));
    bob.wait_text("m30");
    dan.wait("m30", |l| l == "[ann] m30");

    let seen = bob.messages();
    assert_once_in_order("bob, through the outage", &seen, &texts(1..=30));
    assert_eq!(
        dan.said_by("ann"),
        texts(1..=30),
        "chat-client, through the outage"
    );

    // History (the new epoch's) holds what was said during the outage and
    // after, with the same ids; what came before was lost with Redis.
    let eve = Go::chat(server.port, room, "eve", &[]);
    assert_eq!(eve.epoch(), new_epoch);
    let replayed = eve.messages();
    assert_eq!(replayed, seen[10..].to_vec(), "eve's replay");
    let stored: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg("chat:{outage}:log")
        .arg("-")
        .arg("+")
        .query(&mut redis.connection())
        .expect("XRANGE");
    assert_eq!(stored.len(), 20, "{stored:?}");
    assert!(
        server.output().contains("redis unreachable") || server.output().contains("write failed"),
        "the outage is logged:\n{}",
        server.output()
    );
    server.assert_running();
}

/// Redis not there when the server starts: it serves live chat anyway
/// (`DEGRADED`), finds Redis when it appears, and writes what was said
/// meanwhile to history.
#[test]
fn redis_unreachable_at_start() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let mut server = chat_server(&["--rate-limit", "0", "--redis", &url]);
    let status = health(&server);
    assert!(status.starts_with("DEGRADED"), "{status}");
    let mut ann = Go::chat(server.port, "early", "ann", &[]);
    ann.wait("the notice", |e| {
        s(e, "kind") == "system" && s(e, "text").starts_with("history is unavailable")
    });
    let bob = Go::chat(server.port, "early", "bob", &[]);
    ann.send_all(&texts(1..=5));
    bob.wait_text("m5");

    let _redis = RedisServer::start_on(port);
    wait_health(&server, "SERVING", |s| s == "SERVING");
    ann.send_all(&texts(6..=8));
    bob.wait_text("m8");
    assert_once_in_order("bob", &bob.messages(), &texts(1..=8));
    let eve = Go::chat(server.port, "early", "eve", &[]);
    assert_once_in_order("eve's replay", &eve.messages(), &texts(1..=8));
    assert!(
        server.output().contains("redis unreachable"),
        "{}",
        server.output()
    );
    server.assert_running();
}

/// Item 5: a server is stopped with SIGTERM while another server on the
/// same Redis keeps the conversation going, then started again: its
/// clients resume (the Go client with its last id and epoch, `chat-client`
/// on its own) with nothing lost and nothing twice.
#[test]
fn server_restarted_clients_resume() {
    let redis = RedisServer::start();
    let args = with_redis(&redis);
    let port = free_port();
    let mut a = chat_server_on(port, &refs(&args));
    let b = chat_server(&refs(&args));
    let room = "restart";
    let mut ann = Go::chat(b.port, room, "ann", &[]);
    let bob = Go::chat(port, room, "bob", &[]);
    let dan = Line::start(port, room, "dan");

    ann.send_all(&texts(1..=30));
    bob.wait_text("m30");
    dan.wait("m30", |l| l == "[ann] m30");

    let kill = Command::new("kill")
        .args(["-TERM", &a.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());
    assert!(
        a.wait_exit(WAIT).is_some(),
        "server A did not exit:\n{}",
        a.output()
    );
    bob.wait("the end of its call", |e| s(e, "kind") == "status");
    let resume = bob.resume_args();
    let before = bob.messages();
    drop(bob);

    ann.send_all(&texts(31..=60));
    ann.wait_text("m60");
    drop(a);
    let mut a = chat_server_on(port, &refs(&args));
    let bob = Go::chat(port, room, "bob", &resume);
    dan.wait("its reconnection", |l| l == "-- reconnected --");
    ann.send_all(&texts(61..=90));
    bob.wait_text("m90");
    dan.wait("m90", |l| l == "[ann] m90");

    let mut seen = before;
    seen.extend(bob.messages());
    assert_once_in_order("bob, across the restart", &seen, &texts(1..=90));
    assert_eq!(
        dan.said_by("ann"),
        texts(1..=90),
        "chat-client, across the restart"
    );
    a.assert_running();
}

/// Resume metadata that is not a message id is refused with
/// INVALID_ARGUMENT, and the server serves on.
#[test]
fn bad_resume_metadata_is_refused() {
    let mut server = chat_server(&["--rate-limit", "0"]);
    let go = Go::start(
        server.port,
        "bad",
        "ann",
        "chat",
        &["--md".into(), "chat-last-id=yesterday".into()],
    );
    let status = go.wait("the call's status", |e| s(e, "kind") == "status");
    assert_eq!(s(&status, "code"), "InvalidArgument", "{status:?}");
    assert!(s(&status, "message").contains("chat-last-id"), "{status:?}");
    let _ok = Go::chat(server.port, "bad", "ann", &[]);
    server.assert_running();
}

/// A resume from further back than history reaches: the client is told
/// how many messages are gone and gets what there is (`Chat`), and a
/// `ChatStream` client resuming gets the rest with the count in its header.
#[test]
fn resume_past_the_trimmed_history_is_told() {
    let mut server = chat_server(&["--rate-limit", "0", "--history-len", "5"]);
    let room = "trimmed";
    let mut ann = Go::chat(server.port, room, "ann", &[]);
    ann.send_all(&texts(1..=10));
    ann.wait_text("m10");
    let epoch = ann.epoch();
    let ids: Vec<u64> = ann.messages().iter().map(|m| m.0).collect();
    let resume = |last: u64| {
        vec![
            "--md".to_owned(),
            format!("chat-last-id={last}"),
            "--md".to_owned(),
            format!("chat-epoch={epoch}"),
        ]
    };

    // Last saw m1: m2..m5 are trimmed (5 kept: m6..m10).
    let bob = Go::chat(server.port, room, "bob", &resume(ids[0]));
    let notice = bob.wait("the notice", |e| {
        s(e, "kind") == "system" && s(e, "text").contains("no longer in history")
    });
    assert!(s(&notice, "text").starts_with("4 messages"), "{notice:?}");
    bob.epoch();
    assert_once_in_order("bob", &bob.messages(), &texts(6..=10));

    // Last saw m8: exactly m9 and m10.
    let cat = Go::start(server.port, room, "cat", "chat-stream", &resume(ids[7]));
    let ready = cat.wait("ready", |e| s(e, "kind") == "ready");
    assert_eq!(s(&ready, "replayed"), "2", "{ready:?}");
    cat.wait_text("m10");
    ann.send("live");
    cat.wait_text("live");
    let want: Vec<String> = ["m9", "m10", "live"].map(str::to_owned).to_vec();
    assert_once_in_order("cat", &cat.messages(), &want);

    // Another epoch (as after a server restart): told, and given the latest.
    let dora = Go::chat(
        server.port,
        room,
        "dora",
        &[
            "--md".into(),
            "chat-last-id=3".into(),
            "--md".into(),
            "chat-epoch=0123456789abcdef".into(),
        ],
    );
    dora.wait("the notice", |e| {
        s(e, "kind") == "system" && s(e, "text").starts_with("history was lost")
    });
    assert_eq!(dora.epoch(), epoch);
    server.assert_running();
}

/// Splits gRPC frames (5-byte prefix, then the message) and decodes them.
fn decode_frames(mut buf: &[u8]) -> Vec<grpc_chat::pb::chat::ChatMessage> {
    use prost::Message as _;
    let mut out = Vec::new();
    while buf.len() >= 5 {
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        let frame = &buf[5..5 + len];
        out.push(grpc_chat::pb::chat::ChatMessage::decode(frame).expect("a ChatMessage"));
        buf = &buf[5 + len..];
    }
    assert!(buf.is_empty(), "a partial frame");
    out
}

/// A member disconnected for not reading (the slow-reader rule:
/// `RESOURCE_EXHAUSTED`) resumes like any other: with the last id it got
/// before the disconnection, it receives the rest, each message once.
#[test]
fn a_slow_reader_disconnected_resumes() {
    let mut server = chat_server(&["--rate-limit", "0", "--slow-grace-secs", "0.5"]);
    let room = "slow";
    let mut ann = Go::chat(server.port, room, "ann", &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let address = format!("127.0.0.1:{}", server.port);
    // The stalled member speaks raw HTTP/2 with a 64 KiB window and reads
    // nothing until the server has given up on it.
    let response = runtime.block_on(async {
        let socket = tokio::net::TcpStream::connect(&address).await.unwrap();
        let (h2, connection) = h2::client::Builder::new()
            .initial_window_size(65_535)
            .handshake::<_, bytes::Bytes>(socket)
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut h2 = h2.ready().await.unwrap();
        let request = http::Request::post(format!("http://{address}/chat.ChatService/ChatStream"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("chat-room", room)
            .body(())
            .unwrap();
        let (response, _send) = h2.send_request(request, false).unwrap();
        let response = response.await.unwrap();
        // Keep the request side open: the member stays until the server ends it.
        std::mem::forget(_send);
        response
    });
    let epoch = response
        .headers()
        .get("chat-epoch")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(!epoch.is_empty());

    // 100 messages of ~1 KiB: more than the stalled member's window.
    let pad = "x".repeat(1000);
    let long: Vec<String> = (1..=100).map(|i| format!("m{i}:{pad}")).collect();
    ann.send_all(&long);
    ann.wait_text(&long[99]);
    // The server gives up on it after the grace period, and says so.
    let deadline = Instant::now() + WAIT;
    while !server.output().contains("client stopped reading") {
        assert!(
            Instant::now() < deadline,
            "no disconnection:\n{}",
            server.output()
        );
        thread::sleep(Duration::from_millis(20));
    }

    let (got, status) = runtime.block_on(async {
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        loop {
            let Ok(next) = tokio::time::timeout(WAIT, body.data()).await else {
                panic!("no end of the stalled stream after {} bytes", bytes.len());
            };
            let Some(chunk) = next else {
                break;
            };
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
        let trailers = tokio::time::timeout(WAIT, body.trailers())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let status = trailers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (decode_frames(&bytes), status)
    });
    assert_eq!(status, "8", "RESOURCE_EXHAUSTED");
    assert!(
        got.len() < 100,
        "the stalled member got only part: {}",
        got.len()
    );
    let last = got.last().map_or(0, |m| m.id);

    // It comes back with what it saw.
    let resumed = Go::start(
        server.port,
        room,
        "zed",
        "chat-stream",
        &[
            "--md".into(),
            format!("chat-last-id={last}"),
            "--md".into(),
            format!("chat-epoch={epoch}"),
        ],
    );
    resumed.wait_text(&long[99]);
    ann.send("live");
    resumed.wait_text("live");
    let mut seen: Vec<(u64, String, String)> =
        got.into_iter().map(|m| (m.id, m.user, m.message)).collect();
    seen.extend(resumed.messages());
    let mut want = long.clone();
    want.push("live".into());
    assert_once_in_order("the slow reader, before and after", &seen, &want);
    server.assert_running();
}
