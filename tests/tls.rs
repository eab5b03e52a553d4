//! TLS (rustls, ALPN `h2`) end to end, with certificates made at test time
//! (`common::tls`):
//!
//! * grpc-go's interop client passes the standard cases with `--use_tls`
//!   against our `interop-server --use_tls`;
//! * our `interop-client --use_tls` passes them against grpc-go's interop
//!   server with TLS;
//! * `chat-client --tls --ca` processes chat through a TLS `chat-server`;
//! * a failed or stalled handshake (plaintext to a TLS port, an untrusted
//!   certificate, silence) closes that connection only, while a good client
//!   goes on being served.

mod common;

use common::WAIT;

use std::io::Read;
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tls::TestPki;
use common::{Collected, Peer, Server, assert_client_passes, cargo_bin, chat_server, interop_bin};
use grpc_chat::Code;
use grpc_chat::client::Channel;
use grpc_chat::health::{HealthReporter, HealthServer};
use grpc_chat::interop::client::STANDARD_CASES;
use grpc_chat::pb::grpc_health_v1::{HealthCheckRequest, HealthClient};
use tokio::net::TcpListener;

/// grpc-go's client flags for TLS with our test CA; the certificate is made
/// for the name grpc-go's interop tests use.
fn tls_client_args(pki: &TestPki, port: u16, case: &str) -> Vec<String> {
    vec![
        "--server_host=127.0.0.1".into(),
        format!("--server_port={port}"),
        format!("--test_case={case}"),
        "--use_tls=true".into(),
        "--use_test_ca=true".into(),
        format!("--ca_file={}", TestPki::arg(&pki.ca)),
        "--server_host_override=foo.test.google.fr".into(),
    ]
}

#[test]
fn go_interop_client_passes_every_case_against_our_tls_server() {
    let pki = TestPki::generate();
    let client = interop_bin("go-interop-client");
    let server_bin = cargo_bin(
        "interop-server",
        option_env!("CARGO_BIN_EXE_interop-server"),
    );
    let mut server = Server::spawn(&server_bin, |port| {
        vec![
            format!("--port={port}"),
            "--host=127.0.0.1".into(),
            "--use_tls".into(),
            format!("--tls_cert_file={}", TestPki::arg(&pki.cert)),
            format!("--tls_key_file={}", TestPki::arg(&pki.key)),
        ]
    });
    for &case in STANDARD_CASES {
        assert_client_passes(
            &client,
            &tls_client_args(&pki, server.port, case),
            &mut server,
        );
    }
}

#[test]
fn our_interop_client_passes_every_case_against_grpc_go_over_tls() {
    let pki = TestPki::generate();
    let client = cargo_bin(
        "interop-client",
        option_env!("CARGO_BIN_EXE_interop-client"),
    );
    let mut server = Server::spawn(&interop_bin("go-interop-server"), |port| {
        vec![
            format!("--port={port}"),
            "--use_tls=true".into(),
            format!("--tls_cert_file={}", TestPki::arg(&pki.cert)),
            format!("--tls_key_file={}", TestPki::arg(&pki.key)),
        ]
    });
    for &case in STANDARD_CASES {
        assert_client_passes(
            &client,
            &tls_client_args(&pki, server.port, case),
            &mut server,
        );
    }
}

/// A `chat-client` in line mode over TLS, its stdout lines collected.
fn tls_chat_client(pki: &TestPki, port: u16, user: &str) -> (Peer, Arc<Collected<String>>) {
    let lines = Arc::new(Collected::default());
    let sink = Arc::clone(&lines);
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_chat-client"));
    let args: Vec<String> = [
        "--address",
        &format!("localhost:{port}"),
        "--tls",
        "--ca",
        &TestPki::arg(&pki.ca),
        "--user",
        user,
        "--room",
        "secure",
        "--line",
    ]
    .map(str::to_owned)
    .to_vec();
    let peer = Peer::spawn(&bin, &args, user, move |line| sink.push(line));
    (peer, lines)
}

fn wait_line(lines: &Collected<String>, who: &str, wanted: &str) {
    let found = lines.wait(WAIT, |seen| seen.iter().any(|l| l == wanted).then_some(()));
    assert!(
        found.is_some(),
        "{who} never printed {wanted:?}; got {:?}",
        lines.snapshot()
    );
}

#[test]
fn chat_clients_chat_through_a_tls_chat_server() {
    let pki = TestPki::generate();
    let mut server = chat_server(&[
        "--rate-limit",
        "0",
        "--tls-cert",
        &TestPki::arg(&pki.cert),
        "--tls-key",
        &TestPki::arg(&pki.key),
    ]);
    let (mut bob, bob_lines) = tls_chat_client(&pki, server.port, "bob");
    wait_line(
        &bob_lines,
        "bob",
        "-- welcome to secure, bob: you are the only one here --",
    );
    let (mut alice, alice_lines) = tls_chat_client(&pki, server.port, "alice");
    wait_line(&bob_lines, "bob", "* alice joined");
    alice.send_line("hello over TLS");
    wait_line(&bob_lines, "bob", "[alice] hello over TLS");
    wait_line(&alice_lines, "alice", "[you] hello over TLS");
    bob.send_line("and back");
    wait_line(&alice_lines, "alice", "[bob] and back");
    server.assert_running();
    assert!(
        server.output().contains("serving TLS"),
        "{}",
        server.output()
    );
    alice.close_stdin();
    bob.close_stdin();
}

/// A health server with TLS and a short handshake timeout in this process;
/// returns its port and the stop handle.
async fn tls_health_server(pki: &TestPki) -> (u16, tokio::sync::oneshot::Sender<()>) {
    let reporter = HealthReporter::new();
    reporter.set_serving("");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = grpc_chat::server::Server::builder()
        .tls(grpc_chat::tls::server_config(&pki.cert, &pki.key).unwrap())
        .handshake_timeout(Duration::from_millis(500))
        .shutdown_grace(Duration::from_millis(200))
        .add_service(HealthServer::new(reporter.service()))
        .build();
    tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    (port, stop)
}

async fn tls_channel(pki: &TestPki, port: u16) -> Result<Channel, grpc_chat::Status> {
    Channel::builder(format!("localhost:{port}"))
        .tls(grpc_chat::tls::client_config(Some(&pki.ca)).unwrap())
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

async fn healthy(channel: &Channel) -> bool {
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_ok()
}

/// Reads from `socket` until the server closes it; returns how long that took.
fn time_until_closed(mut socket: TcpStream) -> Duration {
    let start = Instant::now();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match socket.read(&mut buf) {
            Ok(0) | Err(_) => return start.elapsed(),
            Ok(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_handshakes_cost_nobody_else_anything() {
    let pki = TestPki::generate();
    let (port, _stop) = tls_health_server(&pki).await;
    let good = tls_channel(&pki, port)
        .await
        .expect("good TLS client connects");
    assert!(healthy(&good).await);

    // Plaintext HTTP/2 to the TLS port: not a ClientHello, so the handshake
    // fails and the server closes the connection.
    let addr = format!("127.0.0.1:{port}");
    let plaintext = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || {
            let mut socket = TcpStream::connect(addr).unwrap();
            std::io::Write::write_all(&mut socket, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
            time_until_closed(socket)
        }
    });
    // A connection that says nothing at all: closed by the handshake timeout.
    let silent = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || time_until_closed(TcpStream::connect(addr).unwrap())
    });
    // Our plaintext client: its call fails with UNAVAILABLE, not hangs.
    let plain_client = Channel::builder(addr.clone())
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy();
    let refused = HealthClient::new(plain_client)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    // A TLS client that trusts another CA: its handshake fails on its side.
    let other_pki = TestPki::generate();
    let distrusting = tls_channel(&other_pki, port).await.unwrap_err();
    assert_eq!(distrusting.code(), Code::Unavailable);
    assert!(
        distrusting.message().contains("TLS handshake"),
        "{}",
        distrusting.message()
    );

    assert!(plaintext.await.unwrap() < WAIT, "plaintext peer not closed");
    let silent_for = silent.await.unwrap();
    assert!(
        silent_for >= Duration::from_millis(400) && silent_for < WAIT,
        "a silent peer is closed by the handshake timeout (500 ms), took {silent_for:?}"
    );
    // The good client noticed nothing, and new ones still get in.
    assert!(healthy(&good).await);
    let another = tls_channel(&pki, port).await.expect("still accepting");
    assert!(healthy(&another).await);
}
