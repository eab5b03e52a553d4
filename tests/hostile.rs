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

mod common;

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

// ---------------------------------------------------------------------------
// gRPC framing
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_truncated_message_then_end_stream_is_internal() {
    let t = Target::start(&[]).await;
    // flag 0 | length 10 | only 3 of the 10 bytes, then END_STREAM.
    let truncated = [0x00, 0x00, 0x00, 0x00, 0x0a, 0x01, 0x02, 0x03];
    let answer = chat_stream_call(&t.address, GRPC, &truncated).await;
    assert_status(&answer, Code::Internal, "truncated body");
    // Two bytes of a prefix, then END_STREAM.
    let answer = chat_stream_call(&t.address, GRPC, &[0x00, 0x00]).await;
    assert_status(&answer, Code::Internal, "truncated prefix");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_declared_length_over_the_limit_is_refused_from_the_prefix() {
    let t = Target::start(&[]).await;
    // flag 0 | length 0x7fffffff (2 GiB), and the stream stays open: the
    // answer comes from the five prefix bytes alone, before any body (none
    // will come) and without reserving the declared length.
    let (response, _keep_open) = raw_chat_stream_with(
        &t.address,
        65_535,
        &[],
        Bytes::from_static(&[0x00, 0x7f, 0xff, 0xff, 0xff]),
    )
    .await;
    let response = timeout(WAIT, response).await.unwrap().unwrap();
    let (_, status) = drain_to_status(response.into_body()).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    // Just over the configured 64 KiB: the same.
    let answer = chat_stream_call(&t.address, GRPC, &[0x00, 0x00, 0x01, 0x00, 0x01]).await;
    assert_status(&answer, Code::ResourceExhausted, "64 KiB + 1");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_compressed_flag_without_grpc_encoding_is_internal() {
    let t = Target::start(&[]).await;
    // flag 1 (compressed) | length 3 | "abc" — but the request has no
    // grpc-encoding header, so there is nothing to decompress it with.
    let answer = chat_stream_call(&t.address, GRPC, &[0x01, 0, 0, 0, 3, b'a', b'b', b'c']).await;
    assert_status(&answer, Code::Internal, "compressed without encoding");
    // A flag that is neither 0 nor 1.
    let answer = chat_stream_call(&t.address, GRPC, &[0x02, 0, 0, 0, 0]).await;
    assert_status(&answer, Code::Internal, "flag 2");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_unknown_grpc_encoding_is_unimplemented_with_the_accepted_list() {
    let t = Target::start(&[]).await;
    let headers = [
        ("content-type", "application/grpc"),
        ("grpc-encoding", "br"),
    ];
    let answer = chat_stream_call(&t.address, &headers, &[0x01, 0, 0, 0, 0]).await;
    assert_status(&answer, Code::Unimplemented, "grpc-encoding br");
    assert!(answer.trailers.is_none(), "trailers-only");
    let accepted = answer.headers["grpc-accept-encoding"].to_str().unwrap();
    assert!(accepted.contains("gzip"), "{accepted}");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_gzip_bomb_is_capped_at_the_message_limit() {
    let t = Target::start(&[]).await;
    // 32 MiB of zeros gzip to about 32 KiB: under the 64 KiB wire limit, so
    // the server has to start decompressing — and must stop at 64 KiB.
    let bomb = {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1024 * 1024];
        for _ in 0..32 {
            gz.write_all(&zeros).unwrap();
        }
        gz.finish().unwrap()
    };
    assert!(bomb.len() < 65_536, "the bomb is {} bytes", bomb.len());
    let mut body = vec![0x01]; // compressed
    body.extend_from_slice(&(bomb.len() as u32).to_be_bytes());
    body.extend_from_slice(&bomb);
    let headers = [
        ("content-type", "application/grpc"),
        ("grpc-encoding", "gzip"),
    ];
    for _ in 0..4 {
        let answer = chat_stream_call(&t.address, &headers, &body).await;
        assert_status(&answer, Code::ResourceExhausted, "gzip bomb");
        assert!(
            answer.grpc_message().contains("decompression"),
            "{}",
            answer.grpc_message()
        );
    }
    // Had any of the four been inflated, the server would have held 32 MiB
    // at once; its peak stays far below.
    let peak = peak_rss_kib(t.server.pid());
    assert!(peak < 28 * 1024, "server peak RSS {peak} KiB");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_invalid_protobuf_is_internal() {
    let t = Target::start(&[]).await;
    // field 1 (user), wire type 2, length 5 — but the message ends there.
    let answer = chat_stream_call(&t.address, GRPC, &grpc_message(&[0x0a, 0x05])).await;
    assert_status(&answer, Code::Internal, "truncated field");
    // Wire type 7 does not exist.
    let answer = chat_stream_call(&t.address, GRPC, &grpc_message(&[0x0f, 0x00])).await;
    assert_status(&answer, Code::Internal, "wire type 7");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_invalid_utf8_in_a_string_field_is_internal() {
    let t = Target::start(&[]).await;
    // field 1 (user), wire type 2, length 2, bytes ff fe: not UTF-8, which
    // proto3 requires of a `string`.
    let answer = chat_stream_call(&t.address, GRPC, &grpc_message(&[0x0a, 0x02, 0xff, 0xfe])).await;
    assert_status(&answer, Code::Internal, "invalid UTF-8 user");
    // A valid name, then field 2 (message) with a lone continuation byte.
    let answer = chat_stream_call(
        &t.address,
        GRPC,
        &grpc_message(&[0x0a, 0x01, b'm', 0x12, 0x01, 0x80]),
    )
    .await;
    assert_status(&answer, Code::Internal, "invalid UTF-8 message");
    t.finish().await;
}

// ---------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_wrong_or_missing_content_type_is_415() {
    let t = Target::start(&[]).await;
    let hello = grpc_message(&[]);
    for content_type in ["application/json", "text/html", "application/grpcx", ""] {
        let headers = [("content-type", content_type), ("te", "trailers")];
        let answer = chat_stream_call(&t.address, &headers, &hello).await;
        assert_eq!(
            answer.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
    }
    let answer = chat_stream_call(&t.address, &[("te", "trailers")], &hello).await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "missing");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_get_is_405() {
    let t = Target::start(&[]).await;
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        let answer = call(&t.address, method.clone(), CHAT_STREAM, GRPC, b"").await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(answer.headers["allow"], "POST");
    }
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_malformed_grpc_timeout_is_internal() {
    let t = Target::start(&[]).await;
    // Empty, no unit, nine digits (the spec allows eight), negative, an
    // unknown unit, a unit alone, overflow-bait.
    for value in ["", "1", "123456789S", "-1S", "1x", "S", "99999999H "] {
        let headers = [
            ("content-type", "application/grpc"),
            ("grpc-timeout", value),
        ];
        let answer = chat_stream_call(&t.address, &headers, &[]).await;
        assert_status(&answer, Code::Internal, &format!("grpc-timeout {value:?}"));
        assert!(answer.grpc_message().contains("grpc-timeout"));
    }
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_missing_path_is_reset_and_unknown_paths_are_unimplemented() {
    let t = Target::start(&[]).await;
    // Without `:path` the request is malformed HTTP/2 (RFC 9113 §8.3.1):
    // h2 answers RST_STREAM(PROTOCOL_ERROR) and the handler never runs.
    let (mut socket, mut frames) = raw_connection(&t.address).await;
    let block = raw::header_block(None);
    socket
        .write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &block))
        .await
        .unwrap();
    let reset = next_frame_where(&mut frames, &mut socket, |f| f.stream == 1).await;
    assert_eq!(reset.kind, RST_STREAM, "{reset:?}");
    assert_eq!(reset.error_code(), Some(0x1), "PROTOCOL_ERROR");
    // The connection itself is still usable: a well-formed request on it.
    let block = raw::chat_stream_header_block();
    socket
        .write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 3, &block))
        .await
        .unwrap();
    let answer = next_frame_where(&mut frames, &mut socket, |f| f.stream == 3).await;
    assert_eq!(answer.kind, HEADERS, "{answer:?}");

    for path in [
        "/chat.ChatService/NoSuchMethod",
        "/chat.NoSuchService/ChatStream",
        "/no-method",
        "/a/b/c",
        "/",
    ] {
        let answer = call(&t.address, Method::POST, path, GRPC, &grpc_message(&[])).await;
        assert_status(&answer, Code::Unimplemented, path);
        assert!(answer.trailers.is_none(), "{path}: trailers-only");
    }
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_oversized_block_is_431() {
    let t = Target::start(&[]).await;
    // One 10 KiB value: over the 8 KiB header list limit.
    let big = "v".repeat(10 * 1024);
    let headers = [
        ("content-type", "application/grpc"),
        ("x-big", big.as_str()),
    ];
    let answer = chat_stream_call(&t.address, &headers, &grpc_message(&[])).await;
    assert_eq!(answer.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    t.finish().await;
}

/// Sends a `Who` request with `entries` metadata entries `x-m<i>: 1` on a
/// new connection: its answer, or the connection error that ended it.
async fn who_with_metadata(address: &str, entries: usize) -> Result<Answer, h2::Error> {
    let mut client = raw::connect(address).await;
    let mut request = http::Request::post(format!("http://{address}{WHO}"))
        .header("content-type", "application/grpc");
    for i in 0..entries {
        request = request.header(format!("x-m{i}"), "1");
    }
    let (response, mut send) = client.send_request(request.body(()).unwrap(), false)?;
    // The server may have answered (or closed) already.
    let _ = send.send_data(Bytes::from(grpc_message(&[])), true);
    let response = timeout(WAIT, response).await.expect("no answer")?;
    Ok(read_answer(response).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_thousands_of_metadata_entries_are_refused() {
    let t = Target::start(&[]).await;
    // Each entry costs its name, its value and 32 bytes (RFC 9113 §6.5.2).
    // 300 tiny entries are ~11 KiB of header list: over the 8 KiB limit,
    // so this request gets 431 and the connection lives on.
    let answer = who_with_metadata(&t.address, 300).await.unwrap();
    assert_eq!(answer.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // 3000 are ~110 KiB, over four times the limit: h2 takes that for
    // abuse and ends the whole connection with GOAWAY(ENHANCE_YOUR_CALM)
    // rather than keep decoding. Sent as raw frames (a 30 KiB HPACK block
    // in HEADERS + CONTINUATION) so that we read the GOAWAY while writing.
    let mut block = raw::header_block(Some(WHO));
    for i in 0..3000 {
        raw::push_header(&mut block, &format!("x-m{i}"), "1");
    }
    let (socket, frames) = raw_connection(&t.address).await;
    let bytes = raw::header_frames(1, &block, true);
    let (goaway, _) = flood(socket, frames, move |i| (i == 0).then(|| bytes.clone())).await;
    let goaway = goaway.expect("no GOAWAY");
    assert_eq!(
        goaway.error_code(),
        Some(0xb),
        "ENHANCE_YOUR_CALM: {goaway:?}"
    );
    // A hundred entries fit, and the call is served.
    let answer = who_with_metadata(&t.address, 100).await.unwrap();
    assert_status(&answer, Code::Ok, "100 metadata entries");
    t.finish().await;
}

// ---------------------------------------------------------------------------
// HTTP/2 abuse
// ---------------------------------------------------------------------------

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_more_concurrent_streams_than_allowed_are_refused() {
    let t = Target::start(&[]).await;
    let (mut socket, mut frames) = raw_connection(&t.address).await;
    // 17 ChatStream requests on streams 1, 3, …, 33, none ended: the server
    // allows 16 at once (SETTINGS_MAX_CONCURRENT_STREAMS), so the 17th is
    // refused with RST_STREAM(REFUSED_STREAM) — safe for a client to retry.
    let block = raw::chat_stream_header_block();
    let mut bytes = Vec::new();
    for i in 0..17u32 {
        bytes.extend(frame(HEADERS, END_HEADERS, 2 * i + 1, &block));
    }
    socket.write_all(&bytes).await.unwrap();
    let mut answered = std::collections::BTreeSet::new();
    let mut refused = None;
    while answered.len() < 16 || refused.is_none() {
        let f = next_frame_where(&mut frames, &mut socket, |f| f.stream != 0).await;
        match f.kind {
            HEADERS => {
                answered.insert(f.stream);
            }
            RST_STREAM => refused = Some(f),
            _ => {}
        }
    }
    let refused = refused.unwrap();
    assert_eq!(refused.stream, 33, "{refused:?}");
    assert_eq!(refused.error_code(), Some(0x7), "REFUSED_STREAM");
    assert_eq!(answered.len(), 16);
    assert!(!answered.contains(&33));
    // The connection is fine: PING is answered.
    socket
        .write_all(&frame(PING, 0, 0, b"hostile!"))
        .await
        .unwrap();
    let pong = next_frame_where(&mut frames, &mut socket, |f| f.kind == PING).await;
    assert_eq!(pong.payload, b"hostile!");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_open_and_reset_ends_the_connection_with_enhance_your_calm() {
    let t = Target::start(&[]).await;
    let (socket, frames) = raw_connection(&t.address).await;
    // 2000 × (HEADERS opening a ChatStream, then RST_STREAM(CANCEL) of the
    // same stream), written as fast as the socket takes them: the "rapid
    // reset" attack (CVE-2023-44487).
    // Each stream costs the server work but never counts against the
    // concurrent-stream limit.
    let block = raw::chat_stream_header_block();
    let (goaway, _) = flood(socket, frames, move |i| {
        if i >= 2000 {
            return None;
        }
        let id = 2 * i as u32 + 1;
        let mut bytes = frame(HEADERS, END_HEADERS, id, &block);
        // RST_STREAM payload: error code CANCEL (0x8).
        bytes.extend(frame(RST_STREAM, 0, id, &[0, 0, 0, 0x8]));
        Some(bytes)
    })
    .await;
    let goaway = goaway.expect("no GOAWAY");
    assert_eq!(
        goaway.error_code(),
        Some(0xb),
        "ENHANCE_YOUR_CALM: {goaway:?}"
    );
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_continuation_flood_ends_the_connection() {
    let t = Target::start(&[]).await;
    let (socket, frames) = raw_connection(&t.address).await;
    // HEADERS without END_HEADERS, then CONTINUATION frames that never end
    // the block (CVE-2024-27316 and friends): a server that buffered them
    // all would grow without bound. Each CONTINUATION carries one whole
    // header field, a literal without indexing:
    //   0x00 | name length 8 | "x-filler" | value length 100 | 100 × 'f'
    let mut field = vec![0x00, 8];
    field.extend_from_slice(b"x-filler");
    field.push(100);
    field.extend_from_slice(&[b'f'; 100]);
    let block = raw::chat_stream_header_block();
    let (goaway, sent) = flood(socket, frames, move |i| match i {
        0 => Some(frame(HEADERS, 0, 1, &block)),
        100_000.. => None,
        _ => Some(frame(CONTINUATION, 0, 1, &field)),
    })
    .await;
    assert!(sent < 100_000, "the server took {sent} CONTINUATION frames");
    let goaway = goaway.expect("no GOAWAY");
    // h2 counts CONTINUATION frames (ENHANCE_YOUR_CALM) and bytes of an
    // over-size block (COMPRESSION_ERROR); either ends it.
    let code = goaway.error_code();
    assert!(code == Some(0xb) || code == Some(0x9), "{goaway:?}");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_no_preface_or_half_a_preface_is_closed_after_the_handshake_timeout() {
    let t = Target::start(&[]).await;
    // Connects and says nothing.
    let silent = TcpStream::connect(&t.address).await.unwrap();
    // Half the preface, then nothing.
    let mut stalled = TcpStream::connect(&t.address).await.unwrap();
    stalled
        .write_all(&raw::PREFACE_AND_SETTINGS[..12])
        .await
        .unwrap();
    // Something that is not a preface at all (an HTTP/1.1 request): closed
    // at once.
    let mut garbage = TcpStream::connect(&t.address).await.unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let (silent, stalled, garbage) = tokio::join!(
        until_closed(silent, Duration::from_secs(10)),
        until_closed(stalled, Duration::from_secs(10)),
        until_closed(garbage, Duration::from_secs(10)),
    );
    // The handshake timeout is 0.5 s: not closed before it…
    assert!(silent >= Duration::from_millis(450), "{silent:?}");
    assert!(stalled >= Duration::from_millis(450), "{stalled:?}");
    // …but closed (until_closed fails after 10 s), and garbage sooner.
    assert!(garbage < silent, "{garbage:?} vs {silent:?}");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_window_update_abuse_is_a_connection_error() {
    let t = Target::start(&[]).await;
    // WINDOW_UPDATE on the connection (stream 0) with the largest increment,
    // 0x7fffffff: added to the 65,535 the window starts at, it passes the
    // 2^31 - 1 maximum, which RFC 9113 §6.9.1 makes a FLOW_CONTROL_ERROR
    // (0x3) for the whole connection.
    let (socket, frames) = raw_connection(&t.address).await;
    let (goaway, _) = flood(socket, frames, |i| {
        (i == 0).then(|| frame(WINDOW_UPDATE, 0, 0, &[0x7f, 0xff, 0xff, 0xff]))
    })
    .await;
    let goaway = goaway.expect("no GOAWAY");
    assert_eq!(
        goaway.error_code(),
        Some(0x3),
        "FLOW_CONTROL_ERROR: {goaway:?}"
    );
    // An increment of 0 on the connection is a PROTOCOL_ERROR (0x1).
    let (socket, frames) = raw_connection(&t.address).await;
    let (goaway, _) = flood(socket, frames, |i| {
        (i == 0).then(|| frame(WINDOW_UPDATE, 0, 0, &[0, 0, 0, 0]))
    })
    .await;
    let goaway = goaway.expect("no GOAWAY");
    assert_eq!(goaway.error_code(), Some(0x1), "PROTOCOL_ERROR: {goaway:?}");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_a_reader_that_never_opens_its_window_is_disconnected() {
    let t = Target::start(&[]).await;
    // A member of the canary's room with a 1 KiB stream window that it
    // never returns: the canary's traffic fills it within a second, then
    // the server waits the slow-reader grace (0.5 s) and ends the call.
    let hello = encoded(&say("sloth", "hi"));
    let (response, _keep_open) =
        raw_chat_stream_with(&t.address, 1024, &[("chat-room", CANARY_ROOM)], hello).await;
    let response = timeout(WAIT, response).await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // 1 KiB is ~30 canary messages (0.6 s), plus the 0.5 s grace. Wait
    // for the server to drop the member (its name leaves the room), polling
    // Who; if it never does, the drain below never ends either.
    let deadline = Instant::now() + WAIT;
    while who(&t.address, CANARY_ROOM)
        .await
        .contains(&"sloth".to_owned())
    {
        assert!(
            Instant::now() < deadline,
            "the stalled reader is still a member"
        );
        canary_ticks(5).await;
    }
    let (received, status) = drain_to_status(response.into_body()).await;
    assert!(
        received <= 1024,
        "got {received} bytes through a 1 KiB window"
    );
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(status.message().contains("did not read"), "{status}");
    t.finish().await;
}

// ---------------------------------------------------------------------------
// Chat
// ---------------------------------------------------------------------------

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_impersonation_is_delivered_under_the_bound_name() {
    let t = Target::start(&[]).await;
    let mut witness = member(&t.address, "witness").await;
    let mut mallory = member(&t.address, "mallory").await;
    assert_eq!(next_said(&mut witness).await.user, "mallory");
    // Claims to be the canary, the server, the witness: delivered as mallory.
    for claimed in [CANARY_TX, "server", "witness", ""] {
        mallory
            .send(&say(claimed, &format!("as {claimed}")))
            .await
            .unwrap();
        let got = next_said(&mut witness).await;
        assert_eq!(got.user, "mallory", "{got:?}");
        assert_eq!(got.message, format!("as {claimed}"));
    }
    // Taking a name in use (any case), or a reserved one, ends the call.
    let mut copycat = member(&t.address, "WITNESS").await;
    assert_eq!(end_of(&mut copycat).await.code(), Code::AlreadyExists);
    for reserved in ["server", "System", "you"] {
        let mut fake = member(&t.address, reserved).await;
        assert_eq!(
            end_of(&mut fake).await.code(),
            Code::InvalidArgument,
            "{reserved}"
        );
    }
    // The Chat protocol binds the name at USER_JOINED, with the same rules.
    let mut events = chat_client(&t.address)
        .await
        .chat(in_room((), ROOM))
        .await
        .unwrap();
    events
        .send(&ClientEvent {
            event: Some(client_event::Event::UserEvent(UserEvent {
                r#type: UserEventType::UserJoined.into(),
                username: "Mallory".into(),
                timestamp: 0,
            })),
        })
        .await
        .unwrap();
    let status = loop {
        match timeout(WAIT, events.message()).await.unwrap() {
            Ok(Some(_)) => continue,
            Ok(None) => break Status::ok(),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::AlreadyExists, "{status}");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_oversized_names_and_messages_are_refused() {
    let t = Target::start(&[]).await;
    let mut witness = member(&t.address, "witness").await;
    // 17 characters: over the 16 allowed.
    let mut long_name = member(&t.address, &"n".repeat(17)).await;
    let status = end_of(&mut long_name).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    assert!(status.message().contains("too long"), "{status}");

    let mut talker = member(&t.address, "talker").await;
    assert_eq!(next_said(&mut witness).await.user, "talker");
    // 201 characters: refused with a notice to the sender only…
    talker.send(&say("talker", &"m".repeat(201))).await.unwrap();
    let notice = next_notice(&mut talker).await;
    assert_eq!(notice.user, "server");
    assert!(notice.message.contains("too long"), "{notice:?}");
    // …and the witness's next message is the one after it.
    talker.send(&say("talker", "short")).await.unwrap();
    assert_eq!(next_said(&mut witness).await.message, "short");

    // A message larger than the 64 KiB receive limit ends the call.
    talker
        .send(&say("talker", &"m".repeat(70_000)))
        .await
        .unwrap();
    let status = end_of(&mut talker).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_control_characters_and_terminal_escapes_are_refused() {
    let t = Target::start(&[]).await;
    let mut witness = member(&t.address, "witness").await;
    for name in ["evil\u{1b}[2J", "bell\u{7}", "c1\u{9b}31m", "nul\u{0}"] {
        let mut m = member(&t.address, name).await;
        assert_eq!(
            end_of(&mut m).await.code(),
            Code::InvalidArgument,
            "{name:?}"
        );
    }
    let mut talker = member(&t.address, "talker").await;
    assert_eq!(next_said(&mut witness).await.user, "talker");
    let escapes = [
        "\u{1b}[2J\u{1b}[H",         // clear the screen, cursor home
        "\u{1b}]52;c;aGFja2Vk\u{7}", // OSC 52: write the clipboard
        "\u{1b}]0;pwned\u{7}",       // OSC 0: set the window title
        "\u{9b}31mred",              // C1 CSI: colour without ESC
        "bell\u{7}here",             // any C0 control (TAB excepted: a space)
        "bidi\u{85}next line",       // C1 NEL
        "del\u{7f}",                 // DEL
    ];
    for text in escapes {
        talker.send(&say("talker", text)).await.unwrap();
        let notice = next_notice(&mut talker).await;
        assert_eq!(notice.user, "server", "{text:?}");
        assert!(notice.message.contains("control character"), "{notice:?}");
    }
    talker.send(&say("talker", "plain")).await.unwrap();
    assert_eq!(next_said(&mut witness).await.message, "plain");
    // TAB is whitespace (pasted tab-separated text): delivered as a space.
    talker.send(&say("talker", "name\tscore")).await.unwrap();
    assert_eq!(next_said(&mut witness).await.message, "name score");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_a_flood_beyond_the_rate_limit_is_refused_with_notices() {
    let t = Target::start(&[]).await;
    let mut witness = member(&t.address, "witness").await;
    let flooder = member(&t.address, "flooder").await;
    assert_eq!(next_said(&mut witness).await.user, "flooder");
    let started = Instant::now();
    let total = 1000u32;
    let (mut sink, mut answers) = flooder.split();
    let flood = tokio::spawn(async move {
        for n in 0..total {
            sink.send(&say("flooder", &format!("f{n}"))).await.unwrap();
        }
        sink.close().unwrap();
    });
    // Everything the flooder sent is accounted for: each message either
    // reached the witness or came back as a rate-limit notice.
    let mut notices = 0u32;
    while let Some(m) = timeout(WAIT, answers.message()).await.unwrap().unwrap() {
        if m.user == "witness" {
            continue; // its "hi", if it was published after the flooder joined
        }
        assert_eq!(m.user, "server");
        assert!(m.message.contains("rate limited"), "{m:?}");
        notices += 1;
    }
    flood.await.unwrap();
    let elapsed = started.elapsed();
    let mut marker = member(&t.address, "marker").await;
    let mut delivered = 0u32;
    loop {
        let m = next_said(&mut witness).await;
        if m.user == "marker" {
            break;
        }
        assert_eq!(m.user, "flooder");
        delivered += 1;
    }
    assert_eq!(
        delivered + notices,
        total,
        "{delivered} delivered, {notices} refused"
    );
    // Burst 100, 100 per second after it (one extra for rounding).
    let allowed = 100.0 + 100.0 * elapsed.as_secs_f64() + 1.0;
    assert!(
        f64::from(delivered) <= allowed,
        "{delivered} delivered in {elapsed:?}"
    );
    assert!(notices > 0);
    marker.close_send().unwrap();
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_join_storm_against_a_full_room() {
    // The canary's room holds 64: the two canary members and 62 more.
    let t = Target::start(&["--max-room-members", "64"]).await;
    for round in 0..2 {
        let mut admitted = Vec::new();
        let mut refused = 0;
        let mut joins = Vec::new();
        // 100 joins over 10 connections (10 streams each), all at once.
        for c in 0..10 {
            let client = chat_client(&t.address).await;
            for s in 0..10 {
                let client = client.clone();
                joins.push(tokio::spawn(async move {
                    let mut call = client.chat_stream(in_room((), CANARY_ROOM)).await.unwrap();
                    // A refused member's stream may already be closed.
                    let _ = call.send(&say(&format!("j{round}-{c}-{s}"), "hi")).await;
                    // An admitted member hears the canary within a moment;
                    // a refused one gets its status.
                    match timeout(WAIT, call.message()).await.unwrap() {
                        Ok(Some(_)) => Ok(call),
                        Ok(None) => panic!("stream ended without a status"),
                        Err(status) => Err(status),
                    }
                }));
            }
        }
        for join in joins {
            match join.await.unwrap() {
                Ok(call) => admitted.push(call),
                Err(status) => {
                    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
                    assert!(status.message().contains("full"), "{status}");
                    refused += 1;
                }
            }
        }
        assert_eq!(admitted.len(), 62, "round {round}");
        assert_eq!(refused, 38, "round {round}");
        // All leave at once; the next round finds the places free again.
        drop(admitted);
        let deadline = Instant::now() + WAIT;
        loop {
            let names = who(&t.address, CANARY_ROOM).await;
            // Two names left: the canary's.
            if names.len() <= 2 {
                break;
            }
            assert!(Instant::now() < deadline, "members did not leave");
            canary_ticks(1).await;
        }
    }
    t.finish().await;
}

// ---------------------------------------------------------------------------
// Limits: logged once per offender
// ---------------------------------------------------------------------------

/// Log lines (JSON) whose `fields.message` contains `needle`.
fn log_lines<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.starts_with('{') && l.contains(needle))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_logged_once_per_offender() {
    let t = Target::start(&[]).await;
    let mut witness = member(&t.address, "witness").await;
    // Two members, each sending 20 over-long messages and then a flood past
    // the rate limit.
    for name in ["offender1", "offender2"] {
        let mut offender = member(&t.address, name).await;
        // (The witness first gets what the previous offender got through.)
        while next_said(&mut witness).await.user != name {}
        for _ in 0..20 {
            offender.send(&say(name, &"x".repeat(300))).await.unwrap();
        }
        for n in 0..300 {
            offender.send(&say(name, &format!("{n}"))).await.unwrap();
        }
        offender.close_send().unwrap();
        // Its stream ends once everything it sent was handled.
        assert_eq!(end_of(&mut offender).await.code(), Code::Ok);
    }
    // One connection sending 30 requests with the wrong content-type, and
    // 30 truncated messages.
    let mut client = raw::connect(&t.address).await;
    for i in 0..60 {
        let content_type = if i < 30 {
            "text/plain"
        } else {
            "application/grpc"
        };
        let request = http::Request::post(format!("http://{}{CHAT_STREAM}", t.address))
            .header("content-type", content_type)
            .body(())
            .unwrap();
        let (response, mut send) = client.send_request(request, false).unwrap();
        // (The server may have refused the request already.)
        let _ = send.send_data(Bytes::from_static(&[0, 0, 0, 0, 9, 1]), true);
        let _ = read_answer(timeout(WAIT, response).await.unwrap().unwrap()).await;
    }
    // A connection that floods RST_STREAMs: thousands of frames, one GOAWAY,
    // one line.
    let (socket, frames) = raw_connection(&t.address).await;
    let block = raw::chat_stream_header_block();
    let (goaway, _) = flood(socket, frames, move |i| {
        let id = 2 * u32::try_from(i).ok()? + 1;
        let mut bytes = frame(HEADERS, END_HEADERS, id, &block);
        bytes.extend(frame(RST_STREAM, 0, id, &[0, 0, 0, 0x8]));
        (i < 2000).then_some(bytes)
    })
    .await;
    assert!(goaway.is_some());

    // The server logs when h2 hands it the error, which may be just after
    // the peer saw the connection close: wait for the line.
    let deadline = Instant::now() + WAIT;
    while log_lines(&t.log(), "HTTP/2 protocol violation").is_empty() && Instant::now() < deadline {
        canary_ticks(1).await;
    }
    let log = t.log();
    let violations = log_lines(&log, "HTTP/2 protocol violation");
    assert_eq!(violations.len(), 1, "{violations:#?}");
    let refused = log_lines(&log, "message refused");
    assert_eq!(refused.len(), 2, "{refused:#?}");
    let limited = log_lines(&log, "rate limit reached");
    assert_eq!(limited.len(), 2, "{limited:#?}");
    let requests = log_lines(&log, "request refused");
    let calls = log_lines(&log, "call refused")
        .into_iter()
        .chain(log_lines(&log, "call failed"))
        .filter(|l| l.contains("further failures"))
        .count();
    // The raw connection's 60 offences: one line (the first refusal, 415).
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(
        calls, 0,
        "the raw connection's later offences went to debug"
    );
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_excess_connections_get_goaway_and_one_log_line() {
    // The canary holds two connections; room for three more.
    let t = Target::start(&["--max-connections", "5"]).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(raw_connection(&t.address).await);
    }
    // Ten more: each is told GOAWAY(NO_ERROR, last stream 0) and closed.
    for _ in 0..10 {
        let (mut socket, mut frames) = raw_connection(&t.address).await;
        let goaway = goaway_then_close(&mut frames, &mut socket)
            .await
            .expect("no GOAWAY for a connection over the limit");
        assert_eq!(goaway.error_code(), Some(0x0), "NO_ERROR: {goaway:?}");
        assert_eq!(&goaway.payload[..4], &[0, 0, 0, 0], "last stream 0");
    }
    // Through our client, the same is UNAVAILABLE.
    let refused = match Channel::connect(t.address.clone()).await {
        Err(status) => status,
        Ok(channel) => ChatServiceClient::new(channel)
            .who(Request::new(Default::default()))
            .await
            .expect_err("a call over the connection limit succeeded"),
    };
    assert_eq!(refused.code(), Code::Unavailable, "{refused}");
    // One held connection goes; the next one is served.
    drop(held.pop());
    let deadline = Instant::now() + WAIT;
    loop {
        let (mut socket, mut frames) = raw_connection(&t.address).await;
        // A connection still over the limit may be closed before the PING
        // is written (a broken pipe): that is "not served yet" too.
        let answer = match socket.write_all(&frame(PING, 0, 0, b"welcome?")).await {
            Err(_) => None,
            Ok(()) => loop {
                match frames.next(&mut socket).await {
                    Some(f) if f.kind == PING || f.kind == GOAWAY => break Some(f.kind),
                    Some(_) => continue,
                    None => break None,
                }
            },
        };
        if answer == Some(PING) {
            held.push((socket, frames));
            break;
        }
        // The server had not noticed the closed connection yet.
        assert!(Instant::now() < deadline, "no connection served again");
        canary_ticks(1).await;
    }
    let log = t.log();
    assert_eq!(
        log_lines(&log, "connection limit reached").len(),
        1,
        "{log}"
    );
    let below = log_lines(&log, "below the connection limit again");
    assert_eq!(below.len(), 1, "{log}");
    drop(held);
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_a_member_too_far_behind_is_disconnected_and_logged_once() {
    // A long grace, so the queue limit (2 KiB) is what ends it.
    let t = Target::start(&["--slow-grace-secs", "60", "--max-queue-bytes", "2048"]).await;
    let hello = encoded(&say("laggard", "hi"));
    let (response, _keep_open) =
        raw_chat_stream_with(&t.address, 1024, &[("chat-room", CANARY_ROOM)], hello).await;
    let response = timeout(WAIT, response).await.unwrap().unwrap();
    // The canary's ~2 KB/s fill the 1 KiB window, then the 2 KiB queue.
    let deadline = Instant::now() + Duration::from_secs(15);
    while who(&t.address, CANARY_ROOM)
        .await
        .contains(&"laggard".to_owned())
    {
        assert!(Instant::now() < deadline, "the laggard is still a member");
        canary_ticks(5).await;
    }
    let (_, status) = drain_to_status(response.into_body()).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(status.message().contains("too far behind"), "{status}");
    let log = t.log();
    assert_eq!(log_lines(&log, "member too far behind").len(), 1, "{log}");
    t.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_the_send_message_size_applies_to_replies() {
    let t = Target::start(&["--max-send-message-size", "16"]).await;
    // Who of the canary's room names both canary members: ~30 bytes, over
    // the 16 allowed. The reply is refused, not sent.
    let request = grpc_chat::pb::chat::WhoRequest {
        room: CANARY_ROOM.into(),
    };
    let answer = call(
        &t.address,
        Method::POST,
        WHO,
        GRPC,
        &grpc_message(&prost::Message::encode_to_vec(&request)),
    )
    .await;
    assert_status(&answer, Code::ResourceExhausted, "Who over the send limit");
    assert!(answer.body.is_empty(), "{:?}", answer.body);
    t.finish().await;
}
