//! Server reflection as `grpcurl` (fullstorydev/grpcurl, built by
//! `scripts/setup-interop.sh`) uses it against a real `chat-server`: `list`,
//! `describe`, a unary `HealthCheck` whose figures follow the room, and a
//! `ChatStream` exchange fed from grpcurl's stdin (`-d @`) with one of our
//! own clients in the same room. The older `grpc.reflection.v1alpha` name is
//! checked with our generated client and with grpcurl against a server that
//! offers only that name (grpcurl falls back to it).

mod common;

use common::WAIT;

use std::sync::Arc;

use common::chat_stream::{members, next_from, say};
use common::in_process::InProcessServer;
use common::{CLIENT_TIMEOUT, ClientRun, Collected, Peer, chat_server, interop_bin, run_client};
use grpc_chat::client::Channel;
use grpc_chat::pb::grpc_reflection_v1alpha::server_reflection_request::MessageRequest;
use grpc_chat::pb::grpc_reflection_v1alpha::server_reflection_response::MessageResponse;
use grpc_chat::pb::grpc_reflection_v1alpha::{ServerReflectionClient, ServerReflectionRequest};
use grpc_chat::reflection::ReflectionService;
use grpc_chat::rpc::Request;
use prost::Message as _;
use prost_reflect::prost_types::FileDescriptorProto;
use tokio::runtime::Runtime;
use tokio::time::timeout;

/// `grpcurl -plaintext <flags...> 127.0.0.1:PORT <verb...>` to completion;
/// panics unless it succeeds.
fn grpcurl_with(port: u16, flags: &[&str], verb: &[&str]) -> String {
    let mut all = vec!["-plaintext".to_owned()];
    all.extend(flags.iter().map(|s| s.to_string()));
    all.push(format!("127.0.0.1:{port}"));
    all.extend(verb.iter().map(|s| s.to_string()));
    let run: ClientRun = run_client(&interop_bin("grpcurl"), &all, CLIENT_TIMEOUT);
    assert!(run.success(), "{} failed:\n{}", run.command, run.output);
    run.output
}

/// `grpcurl -plaintext 127.0.0.1:PORT <verb...>`.
fn grpcurl(port: u16, verb: &[&str]) -> String {
    grpcurl_with(port, &[], verb)
}

/// The field lines of `message NAME { ... }` in a `.proto` text (comments and
/// blank lines dropped, whitespace normalised).
fn message_fields(proto: &str, name: &str) -> Vec<String> {
    let start = format!("message {name} {{");
    let body = proto
        .split_once(&start)
        .unwrap_or_else(|| panic!("no `{start}` in:\n{proto}"))
        .1;
    let body = body.split_once('}').expect("message closes").0;
    body.lines()
        .map(|line| line.split("//").next().unwrap_or("").trim())
        .filter(|line| !line.is_empty())
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn grpcurl_lists_the_services_of_chat_server() {
    let server = chat_server(&[]);
    let list = grpcurl(server.port, &["list"]);
    let services: Vec<&str> = list.lines().map(str::trim).collect();
    for expected in [
        "chat.ChatService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            services.contains(&expected),
            "`grpcurl list` lacks {expected}:\n{list}"
        );
    }
    // Methods of one service, resolved through file_containing_symbol.
    let methods = grpcurl(server.port, &["list", "chat.ChatService"]);
    for method in ["ChatStream", "Chat", "HealthCheck", "Who", "Rooms"] {
        let full = format!("chat.ChatService.{method}");
        assert!(
            methods.lines().any(|l| l.trim() == full),
            "`grpcurl list chat.ChatService` lacks {full}:\n{methods}"
        );
    }
}

#[test]
fn grpcurl_describes_chat_message_as_our_proto_does() {
    let server = chat_server(&[]);
    // grpcurl prints message types fully qualified (`.chat.ChatMessageEvent`);
    // our proto names them relative to the package.
    let described = grpcurl(server.port, &["describe", "chat.ChatMessage"]).replace(" .chat.", " ");
    assert!(
        described.starts_with("chat.ChatMessage is a message:"),
        "unexpected describe output:\n{described}"
    );
    let proto = std::fs::read_to_string(common::repo_root().join("proto/chat.proto")).unwrap();
    let ours = message_fields(&proto, "ChatMessage");
    assert_eq!(ours.len(), 4, "proto/chat.proto's ChatMessage: {ours:?}");
    assert_eq!(message_fields(&described, "ChatMessage"), ours);

    // A message whose fields name types from the same file, and an enum.
    let event = grpcurl(server.port, &["describe", "chat.ServerEvent"]).replace(" .chat.", " ");
    assert_eq!(
        message_fields(&event, "ServerEvent"),
        message_fields(&proto, "ServerEvent")
    );
    // Unknown symbols are an error, not an empty answer.
    let missing = run_client(
        &interop_bin("grpcurl"),
        &[
            "-plaintext".into(),
            format!("127.0.0.1:{}", server.port),
            "describe".into(),
            "chat.NoSuchThing".into(),
        ],
        CLIENT_TIMEOUT,
    );
    assert!(
        !missing.success() && missing.output.contains("chat.NoSuchThing"),
        "{} should fail:\n{}",
        missing.command,
        missing.output
    );
}

/// `active_clients` of a `chat.ChatService/HealthCheck` made by grpcurl
/// (proto3 JSON leaves out zero values, so absent means 0).
fn active_clients(port: u16) -> i64 {
    let out = grpcurl_with(port, &["-d", "{}"], &["chat.ChatService/HealthCheck"]);
    assert!(
        out.contains("\"status\": \"SERVING\""),
        "HealthCheck output:\n{out}"
    );
    match out.split_once("\"activeClients\": ") {
        None => 0,
        Some((_, rest)) => rest
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("activeClients is not a number:\n{out}")),
    }
}

#[test]
fn grpcurl_health_check_reports_live_figures() {
    let server = chat_server(&[]);
    let port = server.port;
    let before = active_clients(port);
    assert_eq!(before, 0);

    let runtime = Runtime::new().unwrap();
    let calls = runtime.block_on(members(port, "figures", &["alice", "bob"]));
    assert_eq!(active_clients(port), 2);
    drop(calls);
    drop(runtime);
}

#[test]
fn grpcurl_chat_stream_exchange_from_stdin() {
    let server = chat_server(&[]);
    let port = server.port;
    let runtime = Runtime::new().unwrap();
    let mut calls = runtime.block_on(members(port, "curl-room", &["carol"]));
    let carol = &mut calls[0];

    let lines: Arc<Collected<String>> = Arc::default();
    let sink = Arc::clone(&lines);
    let args: Vec<String> = [
        "-plaintext",
        "-H",
        "chat-room: curl-room",
        "-d",
        "@",
        &format!("127.0.0.1:{port}"),
        "chat.ChatService/ChatStream",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut curl = Peer::spawn(&interop_bin("grpcurl"), &args, "grpcurl", move |line| {
        sink.push(line)
    });
    // grpcurl reads JSON messages from stdin and sends each as it is read.
    curl.send_line(r#"{"user": "curl", "message": "hello from grpcurl"}"#);

    // Carol, in the same room, receives it under the name it bound.
    let heard = runtime.block_on(next_from(carol, "curl"));
    assert_eq!(
        (heard.user.as_str(), heard.message.as_str()),
        ("curl", "hello from grpcurl")
    );
    assert!(
        heard.id > 0 && heard.timestamp > 0,
        "server-stamped: {heard:?}"
    );

    // And grpcurl prints what Carol says, as JSON.
    runtime.block_on(async { carol.send(&say("carol", "hi grpcurl")).await.unwrap() });
    let printed = lines.wait(WAIT, |lines| {
        let text = lines.join("\n");
        text.contains("\"message\": \"hi grpcurl\"").then_some(text)
    });
    let text = printed.unwrap_or_else(|| {
        panic!(
            "grpcurl did not print Carol's message; stdout:\n{}\nstderr:\n{}",
            lines.snapshot().join("\n"),
            curl.stderr()
        )
    });
    assert!(text.contains("\"user\": \"carol\""), "{text}");

    // End of stdin half-closes the stream; the server ends the call with OK.
    curl.close_stdin();
    let status = curl.wait_exit(WAIT);
    assert!(
        status.is_some_and(|s| s.success()),
        "grpcurl should exit 0 after its stdin closes ({status:?}):\n{}",
        curl.stderr()
    );
}

/// Asks `question` on a v1alpha reflection stream and returns the answer.
async fn ask_v1alpha(client: &ServerReflectionClient, question: MessageRequest) -> MessageResponse {
    let mut call = client
        .server_reflection_info(Request::new(()))
        .await
        .unwrap();
    call.send(&ServerReflectionRequest {
        host: String::new(),
        message_request: Some(question),
    })
    .await
    .unwrap();
    let response = timeout(WAIT, call.message())
        .await
        .expect("no answer in time")
        .unwrap()
        .expect("an answer");
    response.message_response.expect("a message_response")
}

#[test]
fn v1alpha_answers_our_client_and_grpcurl() {
    let server = chat_server(&[]);
    let runtime = Runtime::new().unwrap();
    runtime.block_on(async {
        let channel = Channel::connect(format!("127.0.0.1:{}", server.port))
            .await
            .unwrap();
        let client = ServerReflectionClient::new(channel);
        let MessageResponse::ListServicesResponse(list) =
            ask_v1alpha(&client, MessageRequest::ListServices(String::new())).await
        else {
            panic!("expected a service list");
        };
        assert!(list.service.iter().any(|s| s.name == "chat.ChatService"));

        let MessageResponse::FileDescriptorResponse(files) = ask_v1alpha(
            &client,
            MessageRequest::FileContainingSymbol("chat.ChatMessage".into()),
        )
        .await
        else {
            panic!("expected a file");
        };
        let file = FileDescriptorProto::decode(files.file_descriptor_proto[0].as_slice()).unwrap();
        assert_eq!(file.name(), "chat.proto");
        let message = file
            .message_type
            .iter()
            .find(|m| m.name() == "ChatMessage")
            .expect("ChatMessage in chat.proto");
        let fields: Vec<(&str, i32)> = message
            .field
            .iter()
            .map(|f| (f.name(), f.number()))
            .collect();
        assert_eq!(
            fields,
            [("user", 1), ("message", 2), ("timestamp", 3), ("id", 4)]
        );

        let MessageResponse::ErrorResponse(error) = ask_v1alpha(
            &client,
            MessageRequest::FileByFilename("missing.proto".into()),
        )
        .await
        else {
            panic!("expected an error");
        };
        assert_eq!(error.error_code, grpc_chat::Code::NotFound as i32);
    });

    // A server offering only v1alpha: grpcurl tries v1, gets UNIMPLEMENTED,
    // and falls back.
    let reflection = ReflectionService::new(
        grpc_chat::pb::FILE_DESCRIPTOR_SET,
        [grpc_chat::reflection::V1ALPHA_SERVICE],
    )
    .unwrap();
    let old = InProcessServer::start(reflection.v1alpha());
    let list = grpcurl(old.port, &["list"]);
    assert_eq!(
        list.trim(),
        "grpc.reflection.v1alpha.ServerReflection",
        "grpcurl against a v1alpha-only server"
    );
    let described = grpcurl(
        old.port,
        &["describe", "grpc.reflection.v1alpha.ServerReflection"],
    );
    assert!(
        described.contains("rpc ServerReflectionInfo"),
        "{described}"
    );
}

#[test]
fn grpcurl_explores_and_calls_interop_server() {
    let server = common::Server::spawn(
        &common::cargo_bin(
            "interop-server",
            option_env!("CARGO_BIN_EXE_interop-server"),
        ),
        |port| {
            vec![
                "--port".into(),
                port.to_string(),
                "--host".into(),
                "127.0.0.1".into(),
            ]
        },
    );
    let list = grpcurl(server.port, &["list"]);
    assert!(
        list.lines().any(|l| l.trim() == "grpc.testing.TestService"),
        "{list}"
    );
    // TestService lives in test.proto, its messages in messages.proto and
    // empty.proto: describing it needs the imports reflection sends along.
    let described = grpcurl(server.port, &["describe", "grpc.testing.TestService"]);
    assert!(
        described.contains("rpc UnaryCall ( .grpc.testing.SimpleRequest ) returns ( .grpc.testing.SimpleResponse );"),
        "{described}"
    );
    // A call whose request and response types come from the imported file.
    let out = grpcurl_with(
        server.port,
        &["-d", r#"{"response_size": 3}"#],
        &["grpc.testing.TestService/UnaryCall"],
    );
    assert!(
        out.contains(r#""body": "AAAA""#),
        "three zero bytes, base64:\n{out}"
    );
}
