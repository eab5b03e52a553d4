//! Token mode (`chat-server --auth-tokens FILE`), against a real server:
//!
//! * without a valid token (none, wrong scheme, unknown token) every chat
//!   call ends with `UNAUTHENTICATED`, trailers-only, saying what is wrong;
//!   `HealthCheck` stays open;
//! * the token decides the name: a different name is `PERMISSION_DENIED`, an
//!   empty one takes the token's, in both protocols;
//! * grpc-go's client (our Go peer with `--token`) and `chat-client --token`
//!   get in with a token and are refused without.

mod common;

use common::WAIT;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::json::{Json, parse_flat_object};
use common::member::{Member, chat_request};
use common::{ChatPeer, Collected, Peer, Server, chat_peer_args, chat_server};
use grpc_chat::client::Channel;
use grpc_chat::pb::chat::{
    ChatMessage, ChatServiceClient, HealthCheckRequest, RoomsRequest, UserEventType, WhoRequest,
    server_event,
};
use grpc_chat::rpc::Request;
use grpc_chat::{Code, Status};

const ROOM: &str = "vault";

/// A token file: comments, a blank line, two users (alice has two tokens).
const TOKENS: &str = "\
# grpc-chat tokens: <token> <user>

alice-token-1   alice
alice-token-2   alice
bob-token       bob
";

/// A `chat-server --auth-tokens` process with [`TOKENS`]; the file lives as
/// long as the returned guard.
fn server_with_tokens() -> (Server, TokenFile) {
    let file = TokenFile::write(TOKENS);
    let server = chat_server(&[
        "--rate-limit",
        "0",
        "--auth-tokens",
        &file.0.to_string_lossy(),
    ]);
    (server, file)
}

struct TokenFile(PathBuf);

impl TokenFile {
    fn write(text: &str) -> TokenFile {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "tokens-{}-{:?}.txt",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, text).unwrap();
        TokenFile(path)
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn channel(server: &Server) -> Channel {
    Channel::connect(format!("127.0.0.1:{}", server.port))
        .await
        .unwrap()
}

fn with_authorization<T>(mut request: Request<T>, value: Option<&str>) -> Request<T> {
    if let Some(value) = value {
        request
            .metadata_mut()
            .insert("authorization", value)
            .unwrap();
    }
    request
}

/// How a `Chat` call with this `authorization` value (if any) ends.
async fn chat_refusal(channel: &Channel, authorization: Option<&str>, name: &str) -> Status {
    let mut request = chat_request(ROOM, None);
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value)
            .unwrap();
    }
    match Member::try_join(channel, request, name).await {
        Ok(_) => panic!("{name} got in with authorization {authorization:?}"),
        Err(status) => status,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_valid_token_are_unauthenticated() {
    let (server, _file) = server_with_tokens();
    let channel = channel(&server).await;
    for (authorization, says) in [
        (None, "requires a token"),
        (Some("alice-token-1"), "Bearer <token>"),
        (Some("Basic alice-token-1"), "Bearer <token>"),
        (Some("Bearer alice-token-3"), "invalid token"),
        (Some("Bearer alice-token-"), "invalid token"),
    ] {
        let status = chat_refusal(&channel, authorization, "alice").await;
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{authorization:?}: {status:?}"
        );
        assert!(
            status.message().contains(says),
            "{authorization:?}: {}",
            status.message()
        );
        assert!(!status.message().contains("alice-token"), "{status:?}");
    }

    // ChatStream and Who too; HealthCheck stays open for load balancers.
    let client = ChatServiceClient::new(channel.clone());
    let mut stream = client
        .chat_stream(Request::new(()))
        .await
        .expect("the call opens");
    let _ = stream
        .send(&ChatMessage {
            user: "alice".into(),
            message: "hi".into(),
            ..Default::default()
        })
        .await;
    let status = stream.message().await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let who = client
        .who(Request::new(WhoRequest { room: ROOM.into() }))
        .await
        .unwrap_err();
    assert_eq!(who.code(), Code::Unauthenticated, "{who:?}");
    let health = client
        .health_check(Request::new(HealthCheckRequest {}))
        .await
        .expect("HealthCheck needs no token");
    assert_eq!(health.into_inner().status, "SERVING");
    // Who with a token works.
    let who = client
        .who(with_authorization(
            Request::new(WhoRequest { room: ROOM.into() }),
            Some("Bearer bob-token"),
        ))
        .await
        .expect("Who with a token");
    assert!(who.into_inner().users.is_empty());
    // Rooms follows Who's rules.
    let rooms = client
        .rooms(Request::new(RoomsRequest {}))
        .await
        .unwrap_err();
    assert_eq!(rooms.code(), Code::Unauthenticated, "{rooms:?}");
    client
        .rooms(with_authorization(
            Request::new(RoomsRequest {}),
            Some("Bearer bob-token"),
        ))
        .await
        .expect("Rooms with a token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_is_a_trailers_only_response() {
    let (server, _file) = server_with_tokens();
    let socket = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let (h2, connection) = h2::client::handshake(socket).await.unwrap();
    tokio::spawn(connection);
    let mut h2 = h2.ready().await.unwrap();
    let request = http::Request::post(format!(
        "http://127.0.0.1:{}/chat.ChatService/Chat",
        server.port
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .unwrap();
    let (response, _send) = h2.send_request(request, false).unwrap();
    let response = tokio::time::timeout(WAIT, response).await.unwrap().unwrap();
    // One HEADERS frame with END_STREAM: :status 200 and the gRPC status.
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["grpc-status"], "16");
    assert!(
        response.headers()["grpc-message"]
            .to_str()
            .unwrap()
            .contains("requires a token")
    );
    assert!(response.body().is_end_stream(), "not trailers-only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_decides_the_name() {
    let (server, _file) = server_with_tokens();
    let channel = channel(&server).await;

    // The token's own name, in any case: in, under the token's spelling.
    let mut alice = Member::try_join(&channel, chat_request(ROOM, Some("alice-token-1")), "Alice")
        .await
        .expect("alice's token, alice's name");
    // Someone else's name: refused.
    let denied = Member::try_join(&channel, chat_request(ROOM, Some("bob-token")), "alice")
        .await
        .err()
        .expect("bob's token cannot be alice");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(
        denied.message().contains("belongs to \"bob\""),
        "{denied:?}"
    );
    // No name: the token's.
    let mut bob = Member::try_join(&channel, chat_request(ROOM, Some("bob-token")), "")
        .await
        .expect("an empty name takes the token's");
    alice
        .wait_user_event("bob", UserEventType::UserJoined, WAIT)
        .await;
    bob.say("it's me").await.unwrap();
    loop {
        match alice.next().await.unwrap() {
            Some(server_event::Event::ChatMessage(m)) => {
                assert_eq!(
                    (m.username.as_str(), m.message.as_str()),
                    ("bob", "it's me")
                );
                break;
            }
            Some(_) => continue,
            None => panic!("alice's call ended"),
        }
    }

    // ChatStream: the first message's user is checked the same way.
    let client = ChatServiceClient::new(channel.clone());
    let mut mallory = client
        .chat_stream(chat_request(ROOM, Some("alice-token-2")))
        .await
        .unwrap();
    let _ = mallory
        .send(&ChatMessage {
            user: "bob".into(),
            message: "I am bob".into(),
            ..Default::default()
        })
        .await;
    let status = loop {
        match mallory.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let mut streamer = client
        .chat_stream(chat_request(ROOM, Some("alice-token-2")))
        .await
        .unwrap();
    // Alice's other device takes over her name once she has left.
    drop(alice);
    bob.wait_user_event("alice", UserEventType::UserLeft, WAIT)
        .await;
    streamer
        .send(&ChatMessage {
            user: String::new(),
            message: "from my other device".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    loop {
        match bob.next().await.unwrap() {
            Some(server_event::Event::ChatMessage(m)) => {
                assert_eq!(
                    (m.username.as_str(), m.message.as_str()),
                    ("alice", "from my other device")
                );
                break;
            }
            Some(_) => continue,
            None => panic!("bob's call ended"),
        }
    }
}

/// A Go peer's JSON lines.
fn go_peer(
    server: &Server,
    user: &str,
    extra: &[&str],
) -> (Peer, Arc<Collected<BTreeMap<String, Json>>>) {
    let mut args = chat_peer_args(server.port, ROOM, user, "chat");
    args.extend(extra.iter().map(|s| s.to_string()));
    let (program, args) = ChatPeer::Go.command(args);
    let lines = Arc::new(Collected::default());
    let sink = Arc::clone(&lines);
    let peer = Peer::spawn(&program, &args, &format!("go:{user}"), move |line| {
        if let Some(fields) = parse_flat_object(&line) {
            sink.push(fields);
        }
    });
    (peer, lines)
}

fn field<'a>(fields: &'a BTreeMap<String, Json>, key: &str) -> &'a str {
    fields.get(key).and_then(Json::as_str).unwrap_or("")
}

/// Waits for the Go peer's final status line; returns its code.
fn go_status(lines: &Collected<BTreeMap<String, Json>>) -> String {
    lines
        .wait(WAIT, |seen| {
            seen.iter()
                .find(|f| field(f, "kind") == "status")
                .map(|f| format!("{}: {}", field(f, "code"), field(f, "message")))
        })
        .unwrap_or_else(|| panic!("no status line: {:?}", lines.snapshot()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_go_clients_need_a_token() {
    let (server, _file) = server_with_tokens();
    let channel = channel(&server).await;
    let mut bob = Member::try_join(&channel, chat_request(ROOM, Some("bob-token")), "bob")
        .await
        .unwrap();

    let (_peer, lines) = go_peer(&server, "alice", &[]);
    let status = go_status(&lines);
    assert!(status.starts_with("Unauthenticated: "), "{status}");
    let (_peer, lines) = go_peer(&server, "alice", &["--token", "bob-token"]);
    let status = go_status(&lines);
    assert!(status.starts_with("PermissionDenied: "), "{status}");

    let (mut alice, lines) = go_peer(&server, "alice", &["--token", "alice-token-2"]);
    let welcomed = lines.wait(WAIT, |seen| {
        seen.iter()
            .any(|f| field(f, "kind") == "system" && field(f, "text").contains("welcome"))
            .then_some(())
    });
    assert!(welcomed.is_some(), "{:?}", lines.snapshot());
    alice.send_line("send hello from go");
    loop {
        match bob.next().await.unwrap() {
            Some(server_event::Event::ChatMessage(m)) => {
                assert_eq!(
                    (m.username.as_str(), m.message.as_str()),
                    ("alice", "hello from go")
                );
                break;
            }
            Some(_) => continue,
            None => panic!("bob's call ended"),
        }
    }
}

#[test]
fn chat_client_sends_its_token() {
    let (server, _file) = server_with_tokens();
    let address = format!("127.0.0.1:{}", server.port);
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_chat-client"));
    let args = |token: Option<&str>| -> Vec<String> {
        let mut args: Vec<String> = ["--address", &address, "--user", "alice", "--room", ROOM]
            .map(str::to_owned)
            .to_vec();
        args.extend(["--line", "--connect-retries", "0"].map(str::to_owned));
        if let Some(token) = token {
            args.extend(["--token".to_owned(), token.to_owned()]);
        }
        args
    };

    let lines = Arc::new(Collected::default());
    let sink = Arc::clone(&lines);
    let mut alice = Peer::spawn(&bin, &args(Some("alice-token-1")), "alice", move |line| {
        sink.push(line)
    });
    let welcomed = lines.wait(WAIT, |seen| {
        seen.iter()
            .any(|l| l.contains("welcome to vault, alice"))
            .then_some(())
    });
    assert!(
        welcomed.is_some(),
        "{:?}
{}",
        lines.snapshot(),
        alice.stderr()
    );
    // `/who` and `/rooms` carry the token too (before, `/who` was refused).
    alice.send_line("/who");
    alice.send_line("/rooms");
    let answered = lines.wait(WAIT, |seen| {
        let has = |want: &str| seen.iter().any(|l| l == want);
        (has("-- in vault: alice (1) --") && has("  #vault · 1 member (you are here)"))
            .then_some(())
    });
    assert!(answered.is_some(), "{:?}", lines.snapshot());
    alice.close_stdin();

    // Without a token (and none in CHAT_TOKEN): refused, and told why.
    let output = Command::new(&bin)
        .args(args(None))
        .env_remove("CHAT_TOKEN")
        .stdin(Stdio::piped())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "got in without a token:\n{text}");
    assert!(text.contains("requires a token"), "{text}");
}
