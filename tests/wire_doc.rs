//! `docs/wire.md` is the output of this test: a real `ChatStream` exchange
//! and a trailers-only error between our client and our chat server,
//! recorded by a TCP tap between them and rendered frame by frame by
//! `grpc_chat::wire_trace` (HTTP/2 frame headers, HPACK header blocks
//! decoded, gRPC prefixes, protobuf fields). The test fails when the document
//! would change; regenerate it with
//!
//! ```sh
//! UPDATE_WIRE_DOC=1 cargo test --test wire_doc
//! ```
//!
//! What could vary from run to run is pinned or masked: the client sends a
//! fixed `:authority` (`localhost:50053`, not the tap's port); the one
//! server-stamped time is masked; each step waits for its last frame in both
//! directions before the next begins, and lists the client's frames, then the
//! server's, each in wire order.
//!
//! The second test runs the binaries with `--trace-wire`: `chat-server` and
//! `chat-client`, then `interop-server --trace-wire=hex` with
//! `interop-client --trace-wire`.

mod common;

use common::WAIT;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{CLIENT_TIMEOUT, Server, cargo_bin, chat_server, run_client};
use grpc_chat::chat::history::DEFAULT_HISTORY_LEN;
use grpc_chat::chat::history::memory::MemoryHistory;
use grpc_chat::chat::{ChatConfig, ChatService};
use grpc_chat::client::{BidiCall, Channel};
use grpc_chat::pb::chat::{ChatMessage, ChatServiceClient, ChatServiceServer, WhoRequest};
use grpc_chat::rpc::Request;
use grpc_chat::wire_trace::{Conversation, Direction, MessageTypes, Mode, Record};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::timeout;

/// The `:authority` the client sends: the server's default address, so the
/// bytes do not depend on the tap's port.
const AUTHORITY: &str = "localhost:50053";

/// What the tap has seen: every frame, rendered, in arrival order.
#[derive(Default)]
struct Recording {
    records: Mutex<Vec<Record>>,
    changed: Notify,
}

impl Recording {
    /// Waits until a record in `direction` at index `from` or later matches
    /// `check`.
    async fn wait_for(
        &self,
        from: usize,
        direction: Direction,
        what: &str,
        check: impl Fn(&Record) -> bool,
    ) {
        let found = timeout(WAIT, async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                let seen = self
                    .records
                    .lock()
                    .iter()
                    .skip(from)
                    .any(|r| r.direction == direction && check(r));
                if seen {
                    return;
                }
                changed.await;
            }
        })
        .await;
        if found.is_err() {
            let seen: String = self.records.lock().iter().map(|r| r.text.clone()).collect();
            panic!("the tap never saw {what}; it saw:\n{seen}");
        }
    }

    fn len(&self) -> usize {
        self.records.lock().len()
    }

    /// Records from `from` on: the client's, then the server's.
    fn step(&self, from: usize) -> String {
        self.step_sorted(from, |_| 0)
    }

    /// Records from `from` on: the client's, then the server's, each sorted
    /// by `key` (a stable sort: equal keys keep their wire order).
    fn step_sorted(&self, from: usize, key: impl Fn(&Record) -> u8) -> String {
        let records = self.records.lock();
        let mut out = String::new();
        for direction in [Direction::ClientToServer, Direction::ServerToClient] {
            let mut these: Vec<&Record> = records
                .iter()
                .skip(from)
                .filter(|r| r.direction == direction)
                .collect();
            these.sort_by_key(|r| key(r));
            for record in these {
                out.push_str(&record.text);
            }
        }
        out
    }
}

/// A TCP tap on a free port: one connection, forwarded to `server`, every
/// byte fed to a [`Conversation`] before it goes on.
async fn tap(server: std::net::SocketAddr, recording: Arc<Recording>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let upstream = TcpStream::connect(server).await.unwrap();
        client.set_nodelay(true).unwrap();
        upstream.set_nodelay(true).unwrap();
        let types = MessageTypes::from_descriptor_set(grpc_chat::pb::FILE_DESCRIPTOR_SET).unwrap();
        let conversation = Arc::new(Mutex::new(Conversation::new(Mode::Hex, types)));
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = upstream.into_split();
        let pump = |mut from: tokio::net::tcp::OwnedReadHalf,
                    mut to: tokio::net::tcp::OwnedWriteHalf,
                    direction: Direction| {
            let conversation = Arc::clone(&conversation);
            let recording = Arc::clone(&recording);
            async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match from.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let chunk = &buf[..n];
                    let records = conversation.lock().feed(direction, chunk);
                    recording.records.lock().extend(records);
                    recording.changed.notify_waiters();
                    if to.write_all(chunk).await.is_err() {
                        break;
                    }
                }
                let _ = to.shutdown().await;
            }
        };
        tokio::join!(
            pump(client_read, server_write, Direction::ClientToServer),
            pump(server_read, client_write, Direction::ServerToClient),
        );
    });
    port
}

fn is(kind: &str, stream: u32, flags: u8) -> impl Fn(&Record) -> bool {
    let kind = kind.to_owned();
    move |r: &Record| {
        r.header.is_some_and(|h| {
            h.kind_name() == kind && h.stream == stream && h.flags & flags == flags
        })
    }
}

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;

async fn next(call: &mut BidiCall<ChatMessage, ChatMessage>) -> ChatMessage {
    timeout(WAIT, call.message())
        .await
        .expect("no message in time")
        .expect("the call failed")
        .expect("the call ended")
}

/// Protobuf varint encoding of `v`, as hex (to mask it in the document).
fn varint_hex(mut v: u64) -> String {
    let mut bytes = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            bytes.push(byte);
            break;
        }
        bytes.push(byte | 0x80);
    }
    grpc_chat::wire_trace::hex(&bytes)
}

/// Runs the exchange and returns each step's frames, rendered.
async fn record_exchange() -> Vec<String> {
    let server = common::in_process::start(
        // A fixed history epoch: it is sent as a response header, and a
        // random one would change the header block's bytes on every run.
        ChatServiceServer::new(ChatService::with_history(
            ChatConfig::default(),
            Arc::new(MemoryHistory::with_epoch(
                DEFAULT_HISTORY_LEN,
                "5eed0fc0ffee0001",
            )),
        )),
    )
    .await;
    let server_addr = server.addr;
    let recording = Arc::new(Recording::default());
    let port = tap(server_addr, Arc::clone(&recording)).await;
    // Bob and the test's own questions go straight to the server.
    let direct = ChatServiceClient::new(Channel::connect(server_addr.to_string()).await.unwrap());

    let mut steps = Vec::new();
    use Direction::{ClientToServer as C2S, ServerToClient as S2C};

    // 1. Connection: preface and SETTINGS both ways, each acknowledged.
    let from = recording.len();
    let channel = Channel::builder(format!("127.0.0.1:{port}"))
        .authority(AUTHORITY)
        .connect()
        .await
        .unwrap();
    recording
        .wait_for(
            from,
            C2S,
            "the client's SETTINGS ACK",
            is("SETTINGS", 0, ACK),
        )
        .await;
    recording
        .wait_for(
            from,
            S2C,
            "the server's SETTINGS ACK",
            is("SETTINGS", 0, ACK),
        )
        .await;
    recording
        .wait_for(
            from,
            S2C,
            "the server's WINDOW_UPDATE",
            is("WINDOW_UPDATE", 0, 0),
        )
        .await;
    // Each side sends its WINDOW_UPDATE and its ACK of the peer's SETTINGS
    // in whichever order its I/O happens to run: show them in one order.
    steps.push(recording.step_sorted(from, |r| match r.header {
        None => 0,
        Some(h) if h.kind_name() == "SETTINGS" && h.flags & ACK == 0 => 1,
        Some(h) if h.kind_name() == "WINDOW_UPDATE" => 2,
        Some(_) => 3,
    }));

    // 2. Alice opens ChatStream in room "wire"; the server answers with
    // response headers at once (she is a member from now on).
    let from = recording.len();
    let client = ChatServiceClient::new(channel);
    let mut request = Request::new(());
    request.metadata_mut().insert("chat-room", "wire").unwrap();
    let mut alice = client.chat_stream(request).await.unwrap();
    recording
        .wait_for(from, C2S, "alice's request headers", is("HEADERS", 1, 0))
        .await;
    recording
        .wait_for(from, S2C, "the response headers", is("HEADERS", 1, 0))
        .await;
    steps.push(recording.step(from));

    // 3. Alice's first message, which binds her name.
    let from = recording.len();
    alice
        .send(&ChatMessage {
            user: "alice".into(),
            message: "hello".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    recording
        .wait_for(from, C2S, "alice's message", is("DATA", 1, 0))
        .await;
    // She is named in the room before Bob speaks.
    timeout(WAIT, async {
        loop {
            let who = direct
                .who(WhoRequest {
                    room: "wire".into(),
                })
                .await
                .unwrap()
                .into_inner();
            if who.users == ["alice"] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("alice never listed in room wire");
    steps.push(recording.step(from));

    // 4. Bob, on his own connection, says hi: the server sends it to Alice.
    let from = recording.len();
    let mut request = Request::new(());
    request.metadata_mut().insert("chat-room", "wire").unwrap();
    let mut bob = direct.chat_stream(request).await.unwrap();
    bob.send(&ChatMessage {
        user: "bob".into(),
        message: "hi alice".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    recording
        .wait_for(from, S2C, "bob's message to alice", is("DATA", 1, 0))
        .await;
    let heard = next(&mut alice).await;
    assert_eq!((heard.user.as_str(), heard.id), ("bob", 2));
    let timestamp = heard.timestamp;
    steps.push(recording.step(from));

    // 5. Alice closes her side; the server ends the call with status 0.
    let from = recording.len();
    alice.close_send().unwrap();
    recording
        .wait_for(from, C2S, "alice's END_STREAM", is("DATA", 1, END_STREAM))
        .await;
    recording
        .wait_for(from, S2C, "the trailers", is("HEADERS", 1, END_STREAM))
        .await;
    assert_eq!(timeout(WAIT, alice.message()).await.unwrap().unwrap(), None);
    steps.push(recording.step(from));

    // 6. An error: Who with a room name holding a control character. The
    // server answers with trailers only.
    let from = recording.len();
    let refused = client
        .who(WhoRequest {
            room: "bad\troom".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), grpc_chat::Code::InvalidArgument);
    recording
        .wait_for(
            from,
            C2S,
            "the request's END_STREAM",
            is("DATA", 3, END_STREAM),
        )
        .await;
    recording
        .wait_for(
            from,
            S2C,
            "the trailers-only response",
            is("HEADERS", 3, END_STREAM),
        )
        .await;
    steps.push(recording.step(from));
    drop(bob);

    // The one thing that changes from run to run: the server's clock.
    let mask = |text: &String| {
        text.replace(&varint_hex(timestamp as u64), "tt tt tt tt tt")
            .replace(&timestamp.to_string(), "<unix time>")
    };
    steps.iter().map(mask).collect()
}

/// The document: prose around the recorded steps.
fn document(steps: &[String]) -> String {
    let prose: [(&str, &str); 6] = [
        (
            "1. The connection",
            "The client opens with the 24-byte preface, then its SETTINGS: a 1 MiB \
             window per stream (`INITIAL_WINDOW_SIZE`), and a WINDOW_UPDATE on \
             stream 0 that grows the connection's window from the default 65,535 \
             bytes to 2 MiB. The server sends its own SETTINGS (no HPACK dynamic \
             table for the headers the client sends, at most 256 concurrent \
             calls, 16 KiB frames and header lists) and grows its \
             connection window too. Each side acknowledges the other's SETTINGS \
             with an empty SETTINGS frame with the ACK flag. Stream 0 is the \
             connection itself. (A side's WINDOW_UPDATE and its ACK may cross \
             the wire in either order; they are shown WINDOW_UPDATE first.)",
        ),
        (
            "2. Alice opens a ChatStream call",
            "A call is an HTTP/2 stream: the client's first stream is 1 (client \
             streams are odd). Its HEADERS frame carries the request headers, \
             compressed with HPACK, shown representation by representation: \
             `83` is the static table's entry 3 (`:method: POST`), `86` entry 6 \
             (`:scheme: http`); the other fields are literals, their values \
             Huffman-coded, and none is added to a dynamic table: the server's \
             `HEADER_TABLE_SIZE = 0` in step 1 told the client it keeps none, \
             because every entry the client indexed the server would have to \
             store too, for the connection's life. gRPC needs \
             `:path` (`/service/method`), `content-type: application/grpc` and \
             `te: trailers`; `chat-room` is our own metadata. The server answers \
             with response headers at once, without END_STREAM: the call is open \
             both ways. Its `88` is static entry 8, `:status: 200`. Its other \
             fields are \"never indexed\", on every call of the connection: \
             grpc-java's OkHttp transport (Android's) sizes its own decoder by \
             the server's `HEADER_TABLE_SIZE = 0`, so any reference to an entry \
             the server had indexed would break it, and a chat connection \
             carries one call anyway.",
        ),
        (
            "3. Alice sends a message",
            "A DATA frame on stream 1 carries one gRPC message: the 5-byte prefix \
             (compressed-flag 0, then the length as 4 bytes big-endian) and the \
             protobuf bytes of `chat.ChatMessage`. Each field is a tag byte \
             (field number × 8 + wire type: `0a` is field 1, length-delimited), a \
             length, then the bytes. Nothing comes back: nobody else is in the \
             room yet, and ChatStream does not echo.",
        ),
        (
            "4. Bob speaks, Alice receives",
            "Bob is on another connection (not shown). The server stamps his \
             message with his bound name, the time and its position in the room \
             (`id` 2: Alice's was 1) and sends it to Alice in a DATA frame on her \
             stream. `timestamp` (field 3) and `id` (field 4) are varints. The \
             time is masked here (`<unix time>`, `tt`), the only part of this \
             document that changes from run to run.",
        ),
        (
            "5. Alice closes, the server ends the call",
            "Alice has nothing more to say: an empty DATA frame with END_STREAM \
             half-closes her side. The server finishes the call with trailers: a \
             second HEADERS frame, with END_STREAM, holding `grpc-status: 0`. The \
             status of a gRPC call always travels in trailers, after the \
             messages, never in the HTTP `:status`.",
        ),
        (
            "6. An error: trailers only",
            "A unary `Who` call on stream 3 (the next odd number), asking about a \
             room whose name holds a tab: HEADERS, a DATA frame holding the \
             message, and an empty DATA frame with END_STREAM (our client sends \
             the message, then closes its side). The handler refuses it before any response \
             message exists, so the server sends a single HEADERS frame with \
             END_STREAM: `:status: 200` and `content-type` together with \
             `grpc-status: 3` (INVALID_ARGUMENT) and `grpc-message`. This is the \
             trailers-only response. The request headers cost as much as in \
             step 2: without a dynamic table, every field is sent in full \
             again. So are the server's: it never indexes what it sends \
             (every field \"never indexed\"), on the second call as on the \
             first, so that a client which sizes its decoder by the server's \
             `HEADER_TABLE_SIZE = 0`, as grpc-java's OkHttp transport does, \
             can read every answer.",
        ),
    ];
    let mut doc = String::from(
        "# gRPC on the wire, frame by frame\n\n\
         A real exchange between our client (`grpc_chat::client::Channel`) and our \
         chat server, recorded by a TCP tap between them and decoded by \
         `src/wire_trace/` — the same decoder `--trace-wire=hex` uses. \
         Generated by `tests/wire_doc.rs`: `cargo test` fails when this file \
         differs from what a new run produces, and \
         `UPDATE_WIRE_DOC=1 cargo test --test wire_doc` rewrites it.\n\n\
         How to read it:\n\n\
         - Each frame starts with a title: direction, frame type, stream, flags \
         and payload length. The next line is the frame's 9-byte header: length \
         (3 bytes), type (1), flags (1), stream identifier (4).\n\
         - HEADERS frames show their HPACK header block, then the fields it \
         decodes to.\n\
         - DATA frames show each gRPC message: its 5-byte prefix, the message as \
         protobuf text, then its fields byte by byte (tag, length, value).\n\
         - Within a step, the client's frames come first, then the server's, each \
         in the order they crossed the wire; on the wire the two directions \
         interleave.\n\
         - The client sends `:authority: localhost:50053` (the server's default \
         address) rather than the tap's port, so the bytes stay the same from run \
         to run.\n\n\
         To watch your own calls the same way: `chat-server --trace-wire` \
         (or `--trace-wire=hex`), and the same flag on `chat-client`, \
         `interop-server` and `interop-client`.\n",
    );
    for ((title, text), frames) in prose.iter().zip(steps) {
        doc.push_str(&format!("\n## {title}\n\n{text}\n\n```text\n{frames}```\n"));
    }
    doc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wire_doc_matches_a_real_exchange() {
    let steps = record_exchange().await;
    assert_eq!(steps.len(), 6);
    let want = document(&steps);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/wire.md");
    if std::env::var_os("UPDATE_WIRE_DOC").is_some() {
        std::fs::write(&path, &want).expect("write docs/wire.md");
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    if have != want {
        let first = have
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(have.lines().count().min(want.lines().count()));
        panic!(
            "docs/wire.md is out of date (first difference at line {}):\n  file: {:?}\n  run:  {:?}\n\
             Regenerate it with `UPDATE_WIRE_DOC=1 cargo test --test wire_doc`.",
            first + 1,
            have.lines().nth(first).unwrap_or("<end>"),
            want.lines().nth(first).unwrap_or("<end>")
        );
    }
}

#[test]
fn trace_wire_flags_print_decoded_frames() {
    // chat-server --trace-wire with chat-client --trace-wire=hex.
    let server = chat_server(&["--trace-wire"]);
    let client = run_client(
        &cargo_bin("chat-client", option_env!("CARGO_BIN_EXE_chat-client")),
        &[
            "--address".into(),
            format!("127.0.0.1:{}", server.port),
            "--user".into(),
            "tracer".into(),
            "--trace-wire=hex".into(),
        ],
        CLIENT_TIMEOUT,
    );
    assert!(client.success(), "{}:\n{}", client.command, client.output);
    for expected in [
        "client → server  connection preface",
        ":path: /chat.ChatService/Chat",
        "  gRPC prefix: compressed-flag 0 · message length ",
        "  chat.ClientEvent user_event{type:USER_JOINED,username:\"tracer\"}",
        "  frame header: length ",
        "  trailers: the call's status",
    ] {
        assert!(
            client.output.contains(expected),
            "chat-client's trace lacks {expected:?}:\n{}",
            client.output
        );
    }
    let wait_for_server = |server: &Server, expected: &str| {
        let deadline = std::time::Instant::now() + WAIT;
        while !server.output().contains(expected) {
            assert!(
                std::time::Instant::now() < deadline,
                "chat-server's trace lacks {expected:?}:\n{}",
                server.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for_server(
        &server,
        "chat.ClientEvent user_event{type:USER_JOINED,username:\"tracer\"}",
    );
    wait_for_server(&server, "    grpc-status: 0");

    // interop-server --trace-wire=hex with interop-client --trace-wire.
    let interop = Server::spawn(
        &cargo_bin(
            "interop-server",
            option_env!("CARGO_BIN_EXE_interop-server"),
        ),
        |port| {
            vec![
                "--port".into(),
                port.to_string(),
                "--host".into(),
                "127.0.0.1".into(),
                "--trace-wire=hex".into(),
            ]
        },
    );
    let client = run_client(
        &cargo_bin(
            "interop-client",
            option_env!("CARGO_BIN_EXE_interop-client"),
        ),
        &[
            "--server_port".into(),
            interop.port.to_string(),
            "--test_case".into(),
            "large_unary".into(),
            "--trace-wire".into(),
        ],
        CLIENT_TIMEOUT,
    );
    assert!(client.success(), "{}:\n{}", client.command, client.output);
    assert!(
        client
            .output
            .contains("    :path: /grpc.testing.TestService/UnaryCall"),
        "{}",
        client.output
    );
    assert!(
        client
            .output
            .contains("| grpc.testing.SimpleResponse payload{body:"),
        "{}",
        client.output
    );
    wait_for_server(
        &interop,
        "  grpc.testing.SimpleRequest response_size:314159",
    );
    wait_for_server(&interop, "… (");
}
