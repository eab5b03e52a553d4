//! The gRPC-Web gateway over real HTTP/1.1: requests written by hand, byte
//! for byte, and an independent gRPC-Web client (Connect's, under Node)
//! calling the unary and server-streaming RPCs; gRPC-Web over h2c; calls
//! served in process. The rules of the session RPCs themselves, over
//! native gRPC, are in `tests/web_sessions.rs`.
//!
//! The server and the gateway run in this process, wired as `chat-server
//! --web-addr` wires them: the gateway serves its calls with the native
//! server's services, in process.

mod common;

use common::WAIT;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::session::{code_of, next_event};
use grpc_chat::chat::{ChatConfig, ChatService, RateLimit};
use grpc_chat::client::Channel;
use grpc_chat::framing::grpc_web::{Frame, TextDecoder};
use grpc_chat::pb::chat::{
    ChatServiceClient, ChatServiceServer, ClientEvent, SendMessageRequest, SubscribeEvent,
    SubscribeRequest, UserEvent, UserEventType, client_event, server_event, subscribe_event,
};
use grpc_chat::rpc::Request;
use grpc_chat::server::Server;
use grpc_chat::web::Gateway;
use grpc_chat::{Code, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::timeout;

/// A native chat server and the gateway in front of it, stopped on drop.
struct Web {
    native: SocketAddr,
    web: SocketAddr,
    hub: std::sync::Arc<grpc_chat::chat::Hub>,
    _native: common::in_process::Running,
    _stop_web: oneshot::Sender<()>,
}

async fn start(config: ChatConfig) -> Web {
    start_service(ChatService::new(config)).await
}

async fn start_service(chat: ChatService) -> Web {
    let hub = chat.hub().clone();
    let native = common::in_process::start(ChatServiceServer::new(chat)).await;
    let (web, stop_web) = start_gateway(native.server.clone(), |_| {}).await;
    Web {
        native: native.addr,
        web,
        hub,
        _native: native,
        _stop_web: stop_web,
    }
}

/// The gateway, serving its calls with `server` in process, on a free port
/// with a 200 ms shutdown grace and `configure` applied; stopped when the
/// returned sender is used or dropped.
async fn start_gateway(
    server: Server,
    configure: impl FnOnce(&mut grpc_chat::web::Builder),
) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let web = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let mut builder = Gateway::builder(server);
    builder.shutdown_grace(common::in_process::SHUTDOWN_GRACE);
    configure(&mut builder);
    let gateway = builder.build();
    tokio::spawn(async move {
        gateway
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await
    });
    (web, stop)
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

/// An HTTP/1.1 response, its body de-chunked.
struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `head` then each of `chunks` as a separate write, reads the
/// response to the end (the request says `connection: close`).
async fn exchange(addr: SocketAddr, head: &str, chunks: &[&[u8]]) -> HttpResponse {
    try_exchange(addr, head, chunks)
        .await
        .expect("an HTTP response")
}

/// POSTs `body` in one piece to `path` with `content_type`; the response.
async fn post(addr: SocketAddr, path: &str, content_type: &str, body: &[u8]) -> HttpResponse {
    exchange(
        addr,
        &post_head(path, content_type, Some(body.len())),
        &[body],
    )
    .await
}

/// [`exchange`], or `None` when the server closed the connection without
/// answering.
async fn try_exchange(addr: SocketAddr, head: &str, chunks: &[&[u8]]) -> Option<HttpResponse> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    // Writes to a connection the server already closed may fail: what
    // counts is what comes back.
    let _ = tcp.write_all(head.as_bytes()).await;
    for chunk in chunks {
        let _ = tcp.write_all(chunk).await;
        let _ = tcp.flush().await;
    }
    let mut raw = Vec::new();
    let read = timeout(WAIT, tcp.read_to_end(&mut raw))
        .await
        .expect("response within the deadline");
    if read.is_err() || raw.is_empty() {
        return None;
    }
    Some(parse_response(&raw))
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of response head");
    let head = std::str::from_utf8(&raw[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let mut rest = &raw[end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(
                std::str::from_utf8(&rest[..line_end])
                    .unwrap()
                    .split(';')
                    .next()
                    .unwrap(),
                16,
            )
            .unwrap();
            rest = &rest[line_end + 2..];
            if size == 0 {
                break;
            }
            body.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        body
    } else {
        rest.to_vec()
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

/// Opens a raw HTTP/1.1 gRPC-Web `Subscribe` as "ann" in room "tea" and
/// returns the connection, the response still to be read.
async fn subscribe_ann_to_tea(web: &Web) -> TcpStream {
    // One gRPC-Web data frame: flag 00, length 00 00 00 0a, then
    // Subscribe { username: "ann", room: "tea" }: 0a 03 "ann" 12 03 "tea".
    let subscribe: &[u8] = &[
        0x00, 0x00, 0x00, 0x00, 0x0a, 0x0a, 0x03, b'a', b'n', b'n', 0x12, 0x03, b't', b'e', b'a',
    ];
    let mut tcp = TcpStream::connect(web.web).await.unwrap();
    let head = post_head(
        "/chat.ChatService/Subscribe",
        "application/grpc-web+proto",
        Some(subscribe.len()),
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(subscribe).await.unwrap();
    tcp
}

fn post_head(path: &str, content_type: &str, length: Option<usize>) -> String {
    let framing = match length {
        Some(n) => format!("content-length: {n}\r\n"),
        None => "transfer-encoding: chunked\r\n".to_owned(),
    };
    format!(
        "POST {path} HTTP/1.1\r\nhost: chat.test\r\ncontent-type: {content_type}\r\n\
         x-grpc-web: 1\r\norigin: http://page.test\r\nconnection: close\r\n{framing}\r\n"
    )
}

/// The binary request of `Who { room: "tea" }`:
/// flag 00 | length 00 00 00 05 | field 1 (0x0a), 3 bytes, "tea".
const WHO_TEA: &[u8] = &[0x00, 0x00, 0x00, 0x00, 0x05, 0x0a, 0x03, b't', b'e', b'a'];

/// "grpc-status:0\r\n" in a trailers frame: flag 80 | length 15.
const STATUS_OK_FRAME: &[u8] = b"\x80\x00\x00\x00\x0fgrpc-status:0\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_call_in_binary_mode_byte_for_byte() {
    let web = start(no_rate_limit()).await;
    let response = post(
        web.web,
        "/chat.ChatService/Who",
        "application/grpc-web+proto",
        WHO_TEA,
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("application/grpc-web+proto")
    );
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some("http://page.test")
    );
    assert!(
        response
            .header("access-control-expose-headers")
            .is_some_and(|v| v.contains("grpc-status") && v.contains("grpc-message"))
    );
    // WhoResponse { room: "tea", users: [] }: one data frame, exactly the
    // native message, then the trailers frame.
    let mut expected = vec![0x00, 0x00, 0x00, 0x00, 0x05, 0x0a, 0x03, b't', b'e', b'a'];
    expected.extend_from_slice(STATUS_OK_FRAME);
    assert_eq!(response.body, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_call_in_text_mode_with_oddly_cut_chunks() {
    let web = start(no_rate_limit()).await;
    // base64 of WHO_TEA is "AAAAAAUKA3RlYQ==" (16 characters), sent as HTTP
    // chunks of 3, 6 and 7 characters: no cut on a 4-character boundary.
    let text = b"AAAAAAUKA3RlYQ==";
    let chunk = |part: &[u8]| {
        let mut c = format!("{:x}\r\n", part.len()).into_bytes();
        c.extend_from_slice(part);
        c.extend_from_slice(b"\r\n");
        c
    };
    let (a, b, c) = (chunk(&text[..3]), chunk(&text[3..9]), chunk(&text[9..]));
    let response = exchange(
        web.web,
        &post_head(
            "/chat.ChatService/Who",
            "application/grpc-web-text+proto",
            None,
        ),
        &[&a, &b, &c, b"0\r\n\r\n"],
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("content-type"),
        Some("application/grpc-web-text+proto")
    );
    // Each chunk of the response is its own padded base64 run:
    // "AAAAAAUKA3RlYQ==" (the message) and the trailers frame's run.
    assert_eq!(
        std::str::from_utf8(&response.body).unwrap(),
        "AAAAAAUKA3RlYQ==gAAAAA9ncnBjLXN0YXR1czowDQo="
    );
    let mut decoded = bytes::BytesMut::new();
    let mut decoder = TextDecoder::new();
    decoder.push(&response.body, &mut decoded).unwrap();
    decoder.finish().unwrap();
    assert_eq!(&decoded[..WHO_TEA.len()], WHO_TEA);
    assert_eq!(&decoded[WHO_TEA.len()..], STATUS_OK_FRAME);
}

/// Reads every frame of a binary gRPC-Web body; returns the data payloads
/// and the trailers.
fn frames(body: &[u8]) -> (Vec<Vec<u8>>, Vec<(String, String)>) {
    let mut buf = bytes::BytesMut::from(body);
    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(frame) = Frame::parse(&mut buf).unwrap() {
        assert!(trailers.is_none(), "a frame after the trailers");
        match frame {
            Frame::Data { payload, .. } => data.push(payload.to_vec()),
            Frame::Trailers(t) => trailers = Some(t),
        }
    }
    assert!(buf.is_empty(), "bytes left after the last frame");
    (data, trailers.expect("a trailers frame"))
}

fn trailer<'a>(trailers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    trailers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_errors_come_back_as_trailers_frames() {
    let web = start(no_rate_limit()).await;
    // An unknown method: the native server answers trailers-only; its
    // status moves into the body.
    let response = post(
        web.web,
        "/chat.ChatService/Nope",
        "application/grpc-web",
        WHO_TEA,
    )
    .await;
    assert_eq!(response.status, 200);
    let (data, trailers) = frames(&response.body);
    assert!(data.is_empty());
    assert_eq!(
        trailer(&trailers, "grpc-status"),
        Some("12"),
        "{trailers:?}"
    );
    // The native server's validation: a room name with a control character.
    // WhoRequest { room: "a\x07" }: 0a 02 61 07.
    let bad_room: &[u8] = &[0x00, 0x00, 0x00, 0x00, 0x04, 0x0a, 0x02, b'a', 0x07];
    let response = post(
        web.web,
        "/chat.ChatService/Who",
        "application/grpc-web",
        bad_room,
    )
    .await;
    let (_, trailers) = frames(&response.body);
    assert_eq!(trailer(&trailers, "grpc-status"), Some("3"), "{trailers:?}");
    assert!(trailer(&trailers, "grpc-message").is_some_and(|m| m.contains("room name")));
    // A message frame cut short: the native decoder's error, unchanged.
    let response = exchange(
        web.web,
        &post_head("/chat.ChatService/Who", "application/grpc-web", Some(7)),
        &[&WHO_TEA[..7]],
    )
    .await;
    let (_, trailers) = frames(&response.body);
    assert_ne!(trailer(&trailers, "grpc-status"), Some("0"), "{trailers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_refusals() {
    let web = start(no_rate_limit()).await;
    // Text mode that is not base64: INVALID_ARGUMENT, as a text-mode
    // trailers frame.
    let response = exchange(
        web.web,
        &post_head(
            "/chat.ChatService/Who",
            "application/grpc-web-text",
            Some(4),
        ),
        &[b"!!!!"],
    )
    .await;
    assert_eq!(response.status, 200);
    let mut decoded = bytes::BytesMut::new();
    TextDecoder::new()
        .push(&response.body, &mut decoded)
        .unwrap();
    let (_, trailers) = frames(&decoded);
    assert_eq!(trailer(&trailers, "grpc-status"), Some("3"), "{trailers:?}");

    // Another codec: 415, plain HTTP.
    let response = exchange(
        web.web,
        &post_head(
            "/chat.ChatService/Who",
            "application/grpc-web+json",
            Some(2),
        ),
        &[b"{}"],
    )
    .await;
    assert_eq!(response.status, 415);

    // CORS preflight.
    let response = exchange(
        web.web,
        "OPTIONS /chat.ChatService/Who HTTP/1.1\r\nhost: chat.test\r\norigin: http://page.test\r\n\
         access-control-request-method: POST\r\n\
         access-control-request-headers: content-type,x-grpc-web,x-user-agent,grpc-timeout\r\n\
         connection: close\r\n\r\n",
        &[],
    )
    .await;
    assert_eq!(response.status, 204);
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some("http://page.test")
    );
    let allowed = response.header("access-control-allow-headers").unwrap();
    for header in ["content-type", "x-grpc-web", "x-user-agent", "grpc-timeout"] {
        assert!(allowed.contains(header), "{header} not in {allowed}");
    }
    assert!(
        response
            .header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );

    // The page.
    let response = exchange(
        web.web,
        "GET / HTTP/1.1\r\nhost: chat.test\r\nconnection: close\r\n\r\n",
        &[],
    )
    .await;
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(response.header("content-security-policy").is_some());
    assert!(String::from_utf8_lossy(&response.body).contains("app.js"));
    let response = exchange(
        web.web,
        "GET /nope HTTP/1.1\r\nhost: chat.test\r\nconnection: close\r\n\r\n",
        &[],
    )
    .await;
    assert_eq!(response.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streaming_over_http1_arrives_as_it_is_sent() {
    let web = start(no_rate_limit()).await;
    let mut tcp = subscribe_ann_to_tea(&web).await;
    // The stream stays open; read until the session event and the welcome
    // notice have come, without waiting for the end.
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = timeout(WAIT, tcp.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "connection closed early");
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw);
        if text.contains("welcome to tea, ann") {
            break raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    // The first event is the session; the token is 32 hex digits.
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains("ann") && text.contains("tea"));

    // A native Chat member in the room sees the web member and vice versa.
    let channel = Channel::connect(web.native.to_string()).await.unwrap();
    let client = ChatServiceClient::new(channel);
    let mut request = Request::new(());
    request.metadata_mut().insert("chat-room", "tea").unwrap();
    let mut native = client.chat(request).await.unwrap();
    native
        .send(&ClientEvent {
            event: Some(client_event::Event::UserEvent(UserEvent {
                r#type: UserEventType::UserJoined.into(),
                username: "nat".into(),
                timestamp: 0,
            })),
        })
        .await
        .unwrap();
    loop {
        let n = timeout(WAIT, tcp.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "connection closed early");
        raw.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&raw).contains("nat") {
            break;
        }
    }
    // Closing the browser's connection ends the session: the native member
    // sees ann leave.
    drop(tcp);
    loop {
        let event = timeout(WAIT, native.message())
            .await
            .expect("ann's leave within the deadline")
            .unwrap()
            .expect("the Chat call goes on");
        if let Some(server_event::Event::UserEvent(u)) = event.event {
            if u.username == "ann" && u.r#type == UserEventType::UserLeft as i32 {
                break;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_mid_stream_becomes_the_trailers_frame() {
    let web = start(no_rate_limit()).await;
    let mut tcp = subscribe_ann_to_tea(&web).await;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&raw).contains("welcome to tea") {
        let n = timeout(WAIT, tcp.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "connection closed early");
        raw.extend_from_slice(&buf[..n]);
    }
    // The server shuts down: members get a notice, then UNAVAILABLE.
    web.hub.shutdown("maintenance");
    timeout(WAIT, tcp.read_to_end(&mut raw))
        .await
        .expect("the stream ends")
        .unwrap();
    let response = parse_response(&raw);
    let (data, trailers) = frames(&response.body);
    let events: Vec<SubscribeEvent> = data
        .iter()
        .map(|d| prost::Message::decode(&d[..]).unwrap())
        .collect();
    assert!(matches!(
        events.first().and_then(|e| e.event.as_ref()),
        Some(subscribe_event::Event::SessionStarted(_))
    ));
    assert!(matches!(
        events.last().and_then(|e| e.event.as_ref()),
        Some(subscribe_event::Event::SystemEvent(s)) if s.message == "maintenance"
    ));
    assert_eq!(
        trailer(&trailers, "grpc-status"),
        Some("14"),
        "{trailers:?}"
    );
    assert_eq!(trailer(&trailers, "grpc-message"), Some("maintenance"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed_and_others_go_on() {
    let server =
        common::in_process::server(ChatServiceServer::new(ChatService::new(no_rate_limit())));
    let (web, _stop_web) = start_gateway(server, |gateway| {
        gateway.max_connections(1);
    })
    .await;
    // The first connection holds the only slot (it has sent nothing yet).
    let mut holder = TcpStream::connect(web).await.unwrap();
    // Wait until it is served: a request on it is answered.
    holder
        .write_all(b"GET /nope HTTP/1.1\r\nhost: chat.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = timeout(WAIT, holder.read(&mut buf)).await.unwrap().unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 404"));
    // A second one is closed at once, without an answer.
    let mut refused = TcpStream::connect(web).await.unwrap();
    let _ = refused
        .write_all(b"GET / HTTP/1.1\r\nhost: chat.test\r\n\r\n")
        .await;
    let mut rest = Vec::new();
    let read = timeout(WAIT, refused.read_to_end(&mut rest)).await.unwrap();
    assert!(read.is_err() || rest.is_empty(), "answered over the limit");
    // The first is still served; once it is gone there is room again.
    holder
        .write_all(b"GET /nope HTTP/1.1\r\nhost: chat.test\r\n\r\n")
        .await
        .unwrap();
    let n = timeout(WAIT, holder.read(&mut buf)).await.unwrap().unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 404"));
    drop(holder);
    // The slot is released when the server sees the close: wait until a
    // request is answered again.
    let later = common::wait::wait_for_some("room again after the holder left", async || {
        try_exchange(
            web,
            "GET /nope HTTP/1.1\r\nhost: chat.test\r\nconnection: close\r\n\r\n",
            &[],
        )
        .await
    })
    .await;
    assert_eq!(later.status, 404);
}

// --- the page's own modules ----------------------------------------------

#[test]
fn page_framing_and_protobuf_modules() {
    ensure_web_setup();
    let out = std::process::Command::new("node")
        .arg("--test")
        .arg("test/page-modules.test.mjs")
        .current_dir(common::repo_root().join("web"))
        .stdin(Stdio::null())
        .output()
        .expect("node is installed");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// --- an independent client ---------------------------------------------

/// Runs `scripts/setup-web.sh` once per test process (Chromium, npm ci).
fn ensure_web_setup() {
    static SETUP: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let result = SETUP.get_or_init(|| {
        let out = std::process::Command::new("bash")
            .arg(common::repo_root().join("scripts/setup-web.sh"))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run scripts/setup-web.sh: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "scripts/setup-web.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_web_client_under_node() {
    ensure_web_setup();
    let web = start(no_rate_limit()).await;
    let descriptors =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("chat-descriptors.bin");
    std::fs::write(&descriptors, grpc_chat::pb::FILE_DESCRIPTOR_SET).unwrap();
    let script = common::repo_root().join("web/test/connect-client.mjs");
    let child = tokio::process::Command::new("node")
        .arg(&script)
        .arg(format!("http://{}", web.web))
        .arg(&descriptors)
        .arg("node-room")
        .current_dir(common::repo_root().join("web"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node is installed");
    let out = timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the Node client finishes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for step in [
        "ok unary who",
        "ok subscribe session",
        "ok join seen",
        "ok message delivered",
        "ok typing seen",
        "ok errors as statuses",
        "ok leave ends session",
        "ok grpc-web over h2c",
    ] {
        assert!(stdout.contains(step), "{step} missing:\n{stdout}\n{stderr}");
    }
}

// --- bearer tokens (chat-server --auth-tokens) ---------------------------

fn with_bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", &format!("Bearer {token}"))
        .unwrap();
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_rule_sessions_as_they_rule_chat() {
    let config = no_rate_limit();
    let tokens =
        grpc_chat::chat::TokenTable::parse("tok-alice alice\ntok-bob bob\n", &config.limits)
            .unwrap();
    let web = start_service(ChatService::new(config).with_tokens(tokens)).await;

    // Through the gateway: the authorization header is the call's metadata.
    let who = |auth: Option<&str>| {
        let auth = auth.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
        format!(
            "POST /chat.ChatService/Who HTTP/1.1\r\nhost: chat.test\r\n\
             content-type: application/grpc-web+proto\r\n{auth}connection: close\r\n\
             content-length: {}\r\n\r\n",
            WHO_TEA.len()
        )
    };
    let refused = exchange(web.web, &who(None), &[WHO_TEA]).await;
    let (_, trailers) = frames(&refused.body);
    assert_eq!(
        trailer(&trailers, "grpc-status"),
        Some("16"),
        "{trailers:?}"
    );
    let allowed = exchange(web.web, &who(Some("tok-bob")), &[WHO_TEA]).await;
    let (_, trailers) = frames(&allowed.body);
    assert_eq!(trailer(&trailers, "grpc-status"), Some("0"), "{trailers:?}");

    let client = ChatServiceClient::new(Channel::connect(web.native.to_string()).await.unwrap());
    // No token: UNAUTHENTICATED. Another user's name: PERMISSION_DENIED.
    for (request, expected) in [
        (
            Request::new(SubscribeRequest {
                username: "alice".into(),
                ..Default::default()
            }),
            Code::Unauthenticated,
        ),
        (
            with_bearer(
                SubscribeRequest {
                    username: "bob".into(),
                    ..Default::default()
                },
                "tok-alice",
            ),
            Code::PermissionDenied,
        ),
    ] {
        let code = match client.subscribe(request).await {
            Err(status) => status.code(),
            Ok(response) => code_of(response.into_inner().message().await),
        };
        assert_eq!(code, expected);
    }
    // No name: the token's.
    let mut stream = client
        .subscribe(with_bearer(SubscribeRequest::default(), "tok-alice"))
        .await
        .unwrap()
        .into_inner();
    let subscribe_event::Event::SessionStarted(session) = next_event(&mut stream).await else {
        panic!("the first event is not the session");
    };
    assert_eq!(session.username, "alice");
    let send = |bearer: Option<&str>| {
        let message = SendMessageRequest {
            token: session.token.clone(),
            message: "hi".into(),
        };
        match bearer {
            Some(t) => with_bearer(message, t),
            None => Request::new(message),
        }
    };
    // The session token alone is not enough, nor with bob's bearer token.
    assert_eq!(
        code_of(client.send_message(send(None)).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code_of(client.send_message(send(Some("tok-bob"))).await),
        Code::PermissionDenied
    );
    client.send_message(send(Some("tok-alice"))).await.unwrap();
}

/// The interop `TestService` behind a gateway; the gateway's address and
/// its stop handle.
async fn start_interop_gateway() -> (SocketAddr, oneshot::Sender<()>) {
    use grpc_chat::interop::server::InteropService;
    use grpc_chat::pb::grpc_testing::TestServiceServer;
    start_gateway(
        common::in_process::server(TestServiceServer::new(InteropService)),
        |_| {},
    )
    .await
}

/// `message` as one uncompressed gRPC message: flag 0 | length | payload.
fn framed(message: &impl prost::Message) -> bytes::Bytes {
    let payload = message.encode_to_vec();
    let mut out = vec![0u8];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    out.into()
}

#[tokio::test]
async fn grpc_web_over_h2c_is_full_duplex() {
    // Over HTTP/2 a gRPC-Web client may stream its requests: the first
    // response must come back while the request stream is still open, so
    // the gateway may not wait for the whole body before calling upstream.
    use grpc_chat::pb::grpc_testing::{ResponseParameters, StreamingOutputCallRequest};
    let (web, _stop_web) = start_interop_gateway().await;
    let tcp = TcpStream::connect(web).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::post(format!(
        "http://{web}/grpc.testing.TestService/FullDuplexCall"
    ))
    .header("content-type", "application/grpc-web+proto")
    .header("x-grpc-web", "1")
    .body(())
    .unwrap();
    let (response, mut send) = client.send_request(request, false).unwrap();
    let ask = |size| StreamingOutputCallRequest {
        response_parameters: vec![ResponseParameters {
            size,
            ..Default::default()
        }],
        ..Default::default()
    };
    send.send_data(framed(&ask(3)), false).unwrap();
    let response = timeout(WAIT, response).await.unwrap().unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/grpc-web+proto"
    );
    let mut body = response.into_body();
    let first = timeout(WAIT, body.data())
        .await
        .expect("the first response before the request stream ends")
        .unwrap()
        .unwrap();
    // flag 0 | length 7 | payload { body: 3 zero bytes } (field 1, then
    // its field 2 with 3 bytes: 0a 05 12 03 00 00 00)
    assert_eq!(&first[..5], &[0, 0, 0, 0, 7]);
    let _ = body.flow_control().release_capacity(first.len());
    send.send_data(framed(&ask(1)), true).unwrap();
    let mut rest = Vec::new();
    while let Some(chunk) = timeout(WAIT, body.data()).await.unwrap() {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        rest.extend_from_slice(&chunk);
    }
    let mut buf = bytes::BytesMut::from(&rest[..]);
    let second = Frame::parse(&mut buf).unwrap().unwrap();
    assert!(matches!(second, Frame::Data { .. }), "{second:?}");
    let end = Frame::parse(&mut buf).unwrap().unwrap();
    let Frame::Trailers(trailers) = end else {
        panic!("expected the trailers frame, got {end:?}");
    };
    assert!(
        trailers.iter().any(|(k, v)| k == "grpc-status" && v == "0"),
        "{trailers:?}"
    );
}

#[tokio::test]
async fn a_refused_request_with_a_body_leaves_the_connection_usable() {
    // The gateway reads a small body before refusing the request, so an
    // HTTP/1.1 client reads the refusal and can go on with the connection.
    let (web, _stop_web) = start_interop_gateway().await;
    let mut tcp = TcpStream::connect(web).await.unwrap();
    let body = [0u8; 1000];
    let head = format!(
        "DELETE /grpc.testing.TestService/EmptyCall HTTP/1.1\r\nhost: t\r\n\
         content-type: application/grpc-web\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    // The body comes a moment after the head, as from a client that
    // streams it: a server that answers without reading it closes the
    // connection on it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = tcp.write_all(&body).await;
    // Without the drain, this write fails: the server closed the
    // connection on the unread body ("broken pipe").
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    timeout(WAIT, tcp.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 405"), "{text}");
    assert!(
        text.contains("HTTP/1.1 200"),
        "the second request was not answered: {text}"
    );
}

/// A request body of one chunk, for calls made in process.
struct OneChunk(Option<bytes::Bytes>);

impl grpc_chat::rpc::RecvBody for OneChunk {
    fn poll_chunk(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<bytes::Bytes, Status>>> {
        std::task::Poll::Ready(self.0.take().map(Ok))
    }

    fn poll_end(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<grpc_chat::framing::MetadataMap, Status>> {
        std::task::Poll::Ready(Ok(grpc_chat::framing::MetadataMap::new()))
    }
}

#[tokio::test(start_paused = true)]
async fn in_process_calls_wait_for_their_reader() {
    // The gateway's way in: a server-streaming call that wants to send
    // 16 messages of 16 KiB may queue no more than the server's send buffer
    // (32 KiB) ahead of a reader that takes nothing; taken, the rest flows.
    use grpc_chat::interop::server::InteropService;
    use grpc_chat::pb::grpc_testing::{
        ResponseParameters, StreamingOutputCallRequest, TestServiceServer,
    };
    use grpc_chat::server::{DEFAULT_MAX_SEND_BUFFER_SIZE, LocalEvent};
    let server = common::in_process::server(TestServiceServer::new(InteropService));
    let calls = server.local_connection("127.0.0.1:9".parse().unwrap());
    let size = 16 * 1024;
    let request = StreamingOutputCallRequest {
        response_parameters: (0..16)
            .map(|_| ResponseParameters {
                size,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let body: Box<dyn grpc_chat::rpc::RecvBody> = Box::new(OneChunk(Some(framed(&request))));
    let mut native = http::Request::new(body);
    *native.method_mut() = http::Method::POST;
    *native.uri_mut() = "/grpc.testing.TestService/StreamingOutputCall"
        .parse()
        .unwrap();
    native.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/grpc"),
    );
    let mut response = calls.call(native);
    match response.event().await {
        Some(LocalEvent::Headers { response, end }) => {
            assert_eq!(response.status(), 200);
            assert!(!end);
        }
        other => panic!("expected headers, got {other:?}"),
    }
    // With the clock paused, this sleep ends once every task is idle: the
    // server has sent all it can without the reader.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut ahead = 0;
    while let std::task::Poll::Ready(Some(LocalEvent::Data(data))) = response.poll_event(&mut cx) {
        ahead += data.len();
    }
    assert!(ahead > 0, "nothing sent");
    assert!(
        ahead <= DEFAULT_MAX_SEND_BUFFER_SIZE,
        "{ahead} bytes queued ahead of the reader"
    );
    // Read on: every message, then the status.
    let mut total = ahead;
    let trailers = loop {
        match timeout(WAIT, response.event()).await.unwrap() {
            Some(LocalEvent::Data(data)) => total += data.len(),
            Some(LocalEvent::Trailers(trailers)) => break trailers,
            other => panic!("expected data or trailers, got {other:?}"),
        }
    };
    // Each message: the 5-byte prefix, then StreamingOutputCallResponse
    // { payload (tag, 3-byte length) { body (tag, 3-byte length) } }.
    assert_eq!(total, 16 * (5 + 4 + 4 + size as usize));
    assert_eq!(trailers["grpc-status"], "0");
}
