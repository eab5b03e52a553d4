//! The hostile-input suite: a real `chat-server` process, a well-behaved
//! pair of clients chatting on their own connections (the *canary*), and an
//! offender speaking raw HTTP/2 — through the `h2` crate, or as frames
//! written by hand where `h2` would refuse to misbehave.
//!
//! Every test is one kind of abuse. Each checks two things:
//!
//! 1. the offender gets the right outcome: the gRPC status, HTTP status,
//!    RST_STREAM or GOAWAY the protocol calls for;
//! 2. the canary notices nothing: every message its sender sent during the
//!    case arrived, in order, with no gap, none later than [`LATE`] (a
//!    generous bound — this proves "not stalled", not a latency target), and
//!    the server process is still running.
//!
//! The server runs with small limits (see [`LIMITS`]) so that each limit is
//! reached in a few bytes. The PING flood (GOAWAY `ENHANCE_YOUR_CALM`) is
//! covered with the keepalive policy, not here.
//!
//! `docs/hardening.md` lists what each case defends against.
//!
//! # Layout
//!
//! This file holds the harness (the server under test, the canary, the
//! helpers every case uses); the cases live in one module per attack
//! family:
//!
//! * `framing.rs` — the 5-byte prefix, compression, the message inside;
//! * `headers.rs` — content-type, method, `:path`, `grpc-timeout`, size and
//!   count of the request headers;
//! * `http2.rs` — stream limits, rapid reset, CONTINUATION floods, the
//!   preface, flow-control windows;
//! * `chat.rs` — impersonation, oversized names and messages, control
//!   characters, floods, join storms;
//! * `limits.rs` — each offence logged once per offender; connection, queue
//!   and message-size limits.

#[path = "../common/mod.rs"]
mod common;

mod chat;
mod framing;
mod headers;
mod http2;
mod limits;

use std::io::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::raw::{
    self, Answer, CONTINUATION, END_HEADERS, END_STREAM, Frame, GOAWAY, GRPC, HEADERS, PING,
    RST_STREAM, WAIT, WINDOW_UPDATE, call, drain_to_status, frame, raw_chat_stream_with,
    raw_connection, read_answer, until_closed,
};
use grpc_chat::client::{BidiCall, Channel};
use grpc_chat::pb::chat::{
    ChatMessage, ChatServiceClient, ClientEvent, UserEvent, UserEventType, WhoResponse,
    client_event,
};
use grpc_chat::rpc::Request;
use grpc_chat::{Code, Status};
use http::{Method, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// The limits the server under test runs with, small so that each is
/// reached quickly. The canary stays well inside them (50 messages/s).
const LIMITS: &[&str] = &[
    "--rate-limit",
    "100",
    "--rate-burst",
    "100",
    "--max-name-chars",
    "16",
    "--max-message-chars",
    "200",
    "--max-recv-message-size",
    "65536",
    "--max-header-list-size",
    "8192",
    "--max-concurrent-streams",
    "16",
    "--handshake-timeout-secs",
    "0.5",
    "--slow-grace-secs",
    "0.5",
    "--log-format",
    "json",
];

/// A canary message arriving later than this after it was sent is "late".
/// Generous on purpose: the machine is shared, and what matters is that
/// the offender cannot stall everyone else, not a latency figure.
const LATE: Duration = Duration::from_secs(3);
/// The canary's pace.
const CANARY_INTERVAL: Duration = Duration::from_millis(20);
/// The fewest messages the canary sends during one case.
const MIN_CANARY: u64 = 10;
/// The room the canary talks in.
const CANARY_ROOM: &str = "canary";
/// The canary sender's name.
const CANARY_TX: &str = "canary-tx";

const CHAT_STREAM: &str = "/chat.ChatService/ChatStream";
const WHO: &str = "/chat.ChatService/Who";

/// One time base for the whole test process, so a message can carry the
/// time it was sent.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// What the canary saw over one case.
#[derive(Debug)]
struct CanaryReport {
    sent: u64,
    received: u64,
    max_delay: Duration,
    problems: Vec<String>,
}

/// The chat-server under test, with the canary talking through it.
struct Target {
    server: common::Server,
    address: String,
    stop_canary: watch::Sender<bool>,
    canary: JoinHandle<CanaryReport>,
}

impl Target {
    /// `chat-server` with [`LIMITS`] overridden by `extra` flags, and a
    /// running canary.
    async fn start(extra: &[&str]) -> Target {
        // LIMITS is flag/value pairs; a flag in `extra` replaces its pair.
        let args: Vec<&str> = LIMITS
            .chunks(2)
            .filter(|pair| !extra.contains(&pair[0]))
            .flatten()
            .chain(extra)
            .copied()
            .collect();
        let server = tokio::task::block_in_place(|| common::chat_server(&args));
        let address = format!("127.0.0.1:{}", server.port);
        let (stop_canary, stopped) = watch::channel(false);
        let canary = start_canary(address.clone(), stopped).await;
        Target {
            server,
            address,
            stop_canary,
            canary,
        }
    }

    /// Stops the canary and checks its report and that the server runs.
    async fn finish(mut self) {
        let _ = self.stop_canary.send(true);
        let report = timeout(Duration::from_secs(30), self.canary)
            .await
            .expect("the canary did not finish")
            .expect("the canary panicked");
        self.server.assert_running();
        assert!(
            report.problems.is_empty() && report.received == report.sent,
            "the canary noticed: {report:?}\n--- server output ---\n{}",
            self.server.output()
        );
        assert!(
            report.max_delay < LATE,
            "a canary message was late: {report:?}"
        );
        assert!(
            report.sent >= MIN_CANARY,
            "the canary barely ran: {report:?}"
        );
    }

    /// The server's log so far (JSON lines).
    fn log(&self) -> String {
        self.server.output()
    }
}

fn say(user: &str, text: &str) -> ChatMessage {
    ChatMessage {
        user: user.into(),
        message: text.into(),
        ..Default::default()
    }
}

fn in_room<T>(message: T, room: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("chat-room", room).unwrap();
    request
}

async fn chat_client(address: &str) -> ChatServiceClient {
    ChatServiceClient::new(Channel::connect(address.to_owned()).await.unwrap())
}

/// Starts the canary: a receiver, then a sender on another connection,
/// both `ChatStream` members of [`CANARY_ROOM`]. The sender sends
/// `"<n> <micros since base>"` every [`CANARY_INTERVAL`] until `stop`; the
/// receiver checks each arrives in order and in time. Returns when both are
/// members.
async fn start_canary(
    address: String,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<CanaryReport> {
    let mut rx = chat_client(&address)
        .await
        .chat_stream(in_room((), CANARY_ROOM))
        .await
        .unwrap();
    rx.send(&say("canary-rx", "hi")).await.unwrap();
    // The response headers are sent once the server has made the stream a
    // member: from then on it receives everything published.
    timeout(WAIT, rx.headers())
        .await
        .expect("canary-rx joined")
        .unwrap();
    let mut tx = chat_client(&address)
        .await
        .chat_stream(in_room((), CANARY_ROOM))
        .await
        .unwrap();
    // The sender's first message binds its name; the receiver seeing it
    // means both are in.
    tx.send(&say(CANARY_TX, "start")).await.unwrap();
    loop {
        let m = timeout(WAIT, rx.message())
            .await
            .expect("canary start")
            .unwrap()
            .unwrap();
        if m.user == CANARY_TX {
            break;
        }
    }
    let (last_tx, last_rx) = watch::channel::<Option<u64>>(None);
    let sender = tokio::spawn(async move {
        let mut n = 0u64;
        let mut tick = tokio::time::interval(CANARY_INTERVAL);
        loop {
            // However short the case, the canary sends at least
            // MIN_CANARY messages through it.
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed(), if n >= MIN_CANARY => break,
            }
            let at = base().elapsed().as_micros();
            if let Err(e) = tx.send(&say(CANARY_TX, &format!("{n} {at}"))).await {
                return Err(format!("canary send {n} failed: {e}"));
            }
            n += 1;
        }
        let _ = last_tx.send(Some(n));
        // Keep the stream open until the receiver is done; read what the
        // server sends this member (nothing, normally).
        Ok((tx, n))
    });
    tokio::spawn(async move {
        let mut expected = 0u64;
        let mut max_delay = Duration::ZERO;
        let mut problems = Vec::new();
        let mut last_rx = last_rx;
        loop {
            if let Some(total) = *last_rx.borrow() {
                if expected >= total {
                    break;
                }
            }
            let next = tokio::select! {
                m = timeout(Duration::from_secs(10), rx.message()) => m,
                _ = last_rx.changed() => continue,
            };
            let m = match next {
                Ok(Ok(Some(m))) => m,
                Ok(Ok(None)) => {
                    problems.push("the canary receiver's stream ended".into());
                    break;
                }
                Ok(Err(status)) => {
                    problems.push(format!("the canary receiver failed: {status}"));
                    break;
                }
                Err(_) => {
                    problems.push(format!("nothing for 10 s after message {expected}"));
                    break;
                }
            };
            if m.user != CANARY_TX {
                continue; // someone else in the room (a case may join it)
            }
            let mut parts = m.message.split(' ');
            let n: u64 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(u64::MAX);
            let at: u128 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            if n != expected {
                problems.push(format!("expected message {expected}, got {:?}", m.message));
                break;
            }
            let delay = base()
                .elapsed()
                .saturating_sub(Duration::from_micros(at as u64));
            max_delay = max_delay.max(delay);
            expected += 1;
        }
        let sent = match sender.await {
            Ok(Ok((_tx, n))) => n,
            Ok(Err(e)) => {
                problems.push(e);
                0
            }
            Err(e) => {
                problems.push(format!("canary sender panicked: {e}"));
                0
            }
        };
        // The sender needs a few ticks to have run at all.
        CanaryReport {
            sent,
            received: expected,
            max_delay,
            problems,
        }
    })
}

/// Lets `n` canary intervals pass: the pause between two polls of
/// something the test waits for.
async fn canary_ticks(n: u32) {
    tokio::time::sleep(CANARY_INTERVAL * n).await;
}

/// The named members of `room`, from a `Who` call over raw HTTP/2.
async fn who(address: &str, room: &str) -> Vec<String> {
    let request = grpc_chat::pb::chat::WhoRequest { room: room.into() };
    let answer = call(
        address,
        Method::POST,
        WHO,
        GRPC,
        &grpc_message(&prost::Message::encode_to_vec(&request)),
    )
    .await;
    assert_status(&answer, Code::Ok, "Who");
    <WhoResponse as prost::Message>::decode(answer.body.get(5..).unwrap_or_default())
        .unwrap()
        .users
}

/// One gRPC message: flag 0 | length (4 bytes, big-endian) | payload.
fn grpc_message(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn encoded(message: &impl prost::Message) -> Bytes {
    let mut buf = BytesMut::new();
    grpc_chat::codec::encode(message, None, usize::MAX, &mut buf).unwrap();
    buf.freeze()
}

/// A `ChatStream` call with `body` (then END_STREAM); its answer.
async fn chat_stream_call(address: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
    call(address, Method::POST, CHAT_STREAM, headers, body).await
}

fn assert_status(answer: &Answer, code: Code, case: &str) {
    assert_eq!(answer.status, StatusCode::OK, "{case}: HTTP status");
    let expected = (code as i32).to_string();
    assert_eq!(
        answer.grpc_status(),
        Some(expected.as_str()),
        "{case}: grpc-status (message {:?})",
        answer.grpc_message()
    );
}

/// Peak resident memory of a process, from `/proc/<pid>/status` (VmHWM).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

// Helpers more than one family uses: raw HTTP/2 frames (`http2.rs`,
// `headers.rs`) and chat members (`chat.rs`, `limits.rs`).

/// Reads frames until one satisfies `pred`; panics if the connection closes.
async fn next_frame_where(
    frames: &mut raw::FrameReader,
    socket: &mut TcpStream,
    mut pred: impl FnMut(&Frame) -> bool,
) -> Frame {
    loop {
        let f = frames
            .next(socket)
            .await
            .expect("the server closed the connection");
        if pred(&f) {
            return f;
        }
    }
}

/// Reads frames until the connection closes; returns the GOAWAY among them.
async fn goaway_then_close(
    frames: &mut raw::FrameReader,
    socket: &mut (impl tokio::io::AsyncReadExt + Unpin),
) -> Option<Frame> {
    let mut goaway = None;
    while let Some(f) = frames.next(socket).await {
        if f.kind == GOAWAY {
            goaway = Some(f);
        }
    }
    goaway
}

/// Writes the frames `next` produces (until it returns `None`) while
/// reading what the server answers, until the server closes the
/// connection. Reading at the same time matters: a server that closes a
/// socket with our bytes still unread makes its kernel send a reset, which
/// could discard its GOAWAY before we read it. Returns the GOAWAY and how
/// many frames were written before writing failed.
async fn flood(
    socket: TcpStream,
    mut frames: raw::FrameReader,
    mut next: impl FnMut(usize) -> Option<Vec<u8>> + Send + 'static,
) -> (Option<Frame>, usize) {
    let (mut read_half, mut write_half) = socket.into_split();
    let writer = tokio::spawn(async move {
        let mut written = 0;
        while let Some(bytes) = next(written) {
            if write_half.write_all(&bytes).await.is_err() {
                break;
            }
            written += 1;
        }
        (written, write_half)
    });
    let goaway = timeout(
        Duration::from_secs(20),
        goaway_then_close(&mut frames, &mut read_half),
    )
    .await
    .expect("the server did not close the connection");
    let (written, _write_half) = writer.await.unwrap();
    (goaway, written)
}

const ROOM: &str = "hostile";

async fn next_message(
    call: &mut BidiCall<ChatMessage, ChatMessage>,
) -> Result<ChatMessage, Status> {
    match timeout(WAIT, call.message()).await {
        Ok(Ok(Some(m))) => Ok(m),
        Ok(Ok(None)) => Err(Status::ok()),
        Ok(Err(status)) => Err(status),
        Err(_) => panic!("nothing received in {WAIT:?}"),
    }
}

/// A `ChatStream` member of [`ROOM`] whose first message (`"hi"`) claims
/// the name `name`. Returns once it is a member.
async fn member(address: &str, name: &str) -> BidiCall<ChatMessage, ChatMessage> {
    let mut call = chat_client(address)
        .await
        .chat_stream(in_room((), ROOM))
        .await
        .unwrap();
    call.send(&say(name, "hi")).await.unwrap();
    // Response headers mean the server made it a member (see the canary):
    // whatever is published from now on reaches it.
    let _ = timeout(WAIT, call.headers())
        .await
        .expect("no response headers");
    call
}

/// The witness's next message not from the server (notices skipped).
async fn next_said(witness: &mut BidiCall<ChatMessage, ChatMessage>) -> ChatMessage {
    loop {
        let m = next_message(witness)
            .await
            .expect("the witness's stream ended");
        if m.user != "server" {
            return m;
        }
    }
}

/// The member's next notice from the server (others' messages skipped: a
/// member that joined just before it may still be saying "hi").
async fn next_notice(call: &mut BidiCall<ChatMessage, ChatMessage>) -> ChatMessage {
    loop {
        let m = next_message(call).await.expect("the stream ended");
        if m.user == "server" {
            return m;
        }
    }
}

/// The status a member's call ended with (messages before it skipped).
async fn end_of(call: &mut BidiCall<ChatMessage, ChatMessage>) -> Status {
    loop {
        match next_message(call).await {
            Ok(_) => continue,
            Err(status) => return status,
        }
    }
}
