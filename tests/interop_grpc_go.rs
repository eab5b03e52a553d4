//! Interop tests against grpc-go (the standard gRPC interop test cases).
//!
//! * `go_client_<case>`: grpc-go's interop client against our `interop-server`.
//! * `ours_against_go_server_<case>`: our `interop-client` against grpc-go's
//!   interop server.
//! * `compression_<case>`: our Go compression client (tests/interop/
//!   compression-client, grpc-go based) against our `interop-server`.
//! * `ours_against_go_server_<compression case>`: our `interop-client`
//!   against tests/interop/compression-server, which is grpc-go's interop
//!   server plus the compression features (grpc-go's own server implements
//!   none of them and has no gzip decompressor).
//!
//! The Go peers are built by scripts/setup-interop.sh, which the helpers run
//! once per test process (quick when up to date; needs Go on the first run).
//! Each test starts its own server on a free 127.0.0.1 port and kills it
//! when done; each client run is killed after 60 s.

mod common;

use std::path::PathBuf;

use common::{Server, assert_client_passes, cargo_bin, interop_bin};

fn our_server_bin() -> PathBuf {
    cargo_bin(
        "interop-server",
        option_env!("CARGO_BIN_EXE_interop-server"),
    )
}

fn our_client_bin() -> PathBuf {
    cargo_bin(
        "interop-client",
        option_env!("CARGO_BIN_EXE_interop-client"),
    )
}

/// Our interop-server: `interop-server --port N --use_tls=false`.
fn start_our_server() -> Server {
    Server::spawn(&our_server_bin(), |port| {
        vec![format!("--port={port}"), "--use_tls=false".into()]
    })
}

/// A grpc-go based server (`go-interop-server` or `go-compression-server`).
fn start_go_server(name: &str) -> Server {
    Server::spawn(&interop_bin(name), |port| {
        vec![format!("--port={port}"), "--use_tls=false".into()]
    })
}

/// Arguments of an interop client (grpc-go's flag set, which ours follows).
fn client_args(port: u16, case: &str) -> Vec<String> {
    vec![
        "--server_host=127.0.0.1".into(),
        format!("--server_port={port}"),
        format!("--test_case={case}"),
        "--use_tls=false".into(),
    ]
}

/// grpc-go's interop client runs `case` against our interop-server.
fn go_client_against_ours(case: &str) {
    let client = interop_bin("go-interop-client");
    let mut server = start_our_server();
    assert_client_passes(&client, &client_args(server.port, case), &mut server);
}

/// Our interop-client runs `case` against grpc-go's interop server.
fn ours_against_go_server(case: &str, go_server: &str) {
    let client = our_client_bin();
    let mut server = start_go_server(go_server);
    assert_client_passes(&client, &client_args(server.port, case), &mut server);
}

/// Our Go compression client runs `case` against our interop-server.
fn compression_client_against_ours(case: &str) {
    let client = interop_bin("go-compression-client");
    let mut server = start_our_server();
    let args = client_args(server.port, case);
    assert_client_passes(&client, &args, &mut server);
}

macro_rules! interop_tests {
    ($runner:expr; $($name:ident => $case:literal,)*) => {
        $(
            #[test]
            fn $name() {
                ($runner)($case);
            }
        )*
    };
}

// (a) grpc-go's interop client -> our interop-server.
interop_tests! { go_client_against_ours;
    go_client_empty_unary => "empty_unary",
    go_client_large_unary => "large_unary",
    go_client_client_streaming => "client_streaming",
    go_client_server_streaming => "server_streaming",
    go_client_ping_pong => "ping_pong",
    go_client_empty_stream => "empty_stream",
    go_client_custom_metadata => "custom_metadata",
    go_client_status_code_and_message => "status_code_and_message",
    go_client_special_status_message => "special_status_message",
    go_client_unimplemented_method => "unimplemented_method",
    go_client_unimplemented_service => "unimplemented_service",
    go_client_cancel_after_begin => "cancel_after_begin",
    go_client_cancel_after_first_response => "cancel_after_first_response",
    go_client_timeout_on_sleeping_server => "timeout_on_sleeping_server",
}

// (b) our interop-client -> grpc-go's interop server.
interop_tests! { |case| ours_against_go_server(case, "go-interop-server");
    ours_against_go_server_empty_unary => "empty_unary",
    ours_against_go_server_large_unary => "large_unary",
    ours_against_go_server_client_streaming => "client_streaming",
    ours_against_go_server_server_streaming => "server_streaming",
    ours_against_go_server_ping_pong => "ping_pong",
    ours_against_go_server_empty_stream => "empty_stream",
    ours_against_go_server_custom_metadata => "custom_metadata",
    ours_against_go_server_status_code_and_message => "status_code_and_message",
    ours_against_go_server_special_status_message => "special_status_message",
    ours_against_go_server_unimplemented_method => "unimplemented_method",
    ours_against_go_server_unimplemented_service => "unimplemented_service",
    ours_against_go_server_cancel_after_begin => "cancel_after_begin",
    ours_against_go_server_cancel_after_first_response => "cancel_after_first_response",
    ours_against_go_server_timeout_on_sleeping_server => "timeout_on_sleeping_server",
}

// (c) compression: our Go compression client -> our interop-server ...
interop_tests! { compression_client_against_ours;
    compression_client_compressed_unary => "client_compressed_unary",
    compression_server_compressed_unary => "server_compressed_unary",
    compression_client_compressed_streaming => "client_compressed_streaming",
    compression_server_compressed_streaming => "server_compressed_streaming",
}

// ... and our interop-client -> grpc-go's interop server with compression.
interop_tests! { |case| ours_against_go_server(case, "go-compression-server");
    ours_against_go_server_client_compressed_unary => "client_compressed_unary",
    ours_against_go_server_server_compressed_unary => "server_compressed_unary",
    ours_against_go_server_client_compressed_streaming => "client_compressed_streaming",
    ours_against_go_server_server_compressed_streaming => "server_compressed_streaming",
}
