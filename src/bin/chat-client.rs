//! `chat-client`: a terminal chat client for `chat-server` (the `Chat`
//! event protocol). A full-screen TUI on a terminal; one line per event when
//! stdin/stdout are pipes, for scripts.
//!
//! ```text
//! chat-client                                   # asks your name; 127.0.0.1:50053, lobby
//! chat-client --user alice --room rust
//! printf 'hello\n/quit\n' | chat-client --user bot
//! chat-client --address chat.example:50053 --tls --user alice --token "$(cat token)"
//! CHAT_TOKEN=... chat-client --tls --ca ca.pem --user alice
//! ```
//!
//! The logic lives in `grpc_chat::chat_client`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use grpc_chat::chat_client::session::Transport;
use grpc_chat::chat_client::{self, DEFAULT_ADDRESS, DEFAULT_CONNECT_RETRIES, Options};
use grpc_chat::client::{DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_KEEPALIVE_TIMEOUT};
use grpc_chat::tls;

/// Chat in a grpc-chat room from the terminal.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Server address: HOST:PORT, or HOST for port 50053.
    #[arg(long, default_value = DEFAULT_ADDRESS)]
    address: String,
    /// Your name (asked for when missing; in line mode the first input line).
    #[arg(long)]
    user: Option<String>,
    /// The room to join (the server's default room when missing).
    #[arg(long)]
    room: Option<String>,
    /// Line mode: retries when the server cannot be reached at startup
    /// before giving up (the TUI retries until you quit).
    #[arg(long, default_value_t = DEFAULT_CONNECT_RETRIES)]
    connect_retries: u32,
    /// Use line mode even on a terminal.
    #[arg(long)]
    line: bool,
    /// Line mode: prefix each line with the local time (HH:MM).
    #[arg(long)]
    timestamps: bool,
    /// Connect with TLS (trusting the system's roots, or --ca).
    #[arg(long)]
    tls: bool,
    /// With --tls: trust the CA certificate(s) in this PEM file instead of
    /// the system's roots.
    #[arg(long, requires = "tls")]
    ca: Option<PathBuf>,
    /// With --tls: the name the server's certificate must carry, if not the
    /// host of --address.
    #[arg(long, requires = "tls")]
    server_name: Option<String>,
    /// Token for servers that require one (sent as `authorization: Bearer`).
    /// Defaults to the CHAT_TOKEN environment variable, which keeps it out of
    /// the process list.
    #[arg(long)]
    token: Option<String>,
    /// Seconds between keepalive PINGs, to notice a dead server or network
    /// path while nobody talks (0 turns them off).
    #[arg(long, default_value_t = DEFAULT_KEEPALIVE_INTERVAL.as_secs_f64())]
    keepalive_secs: f64,
    /// Print every HTTP/2 frame to stderr, decoded: headers, gRPC messages as
    /// protobuf text, trailers (`--trace-wire`); `--trace-wire=hex` adds
    /// the bytes. With the TUI, redirect
    /// stderr (`2>trace.txt`).
    #[arg(long, value_name = "MODE", num_args = 0..=1, require_equals = true, default_missing_value = "text")]
    trace_wire: Option<grpc_chat::wire_trace::Mode>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let address = match chat_client::address::with_default_port(&args.address) {
        Ok(address) => address,
        Err(why) => {
            eprintln!("chat-client: --address {}: {why}", args.address);
            return ExitCode::from(2);
        }
    };
    // Logs go to stderr only when asked for (RUST_LOG): they would garble
    // the TUI.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let mut transport = Transport {
        token: args
            .token
            .clone()
            .or_else(|| std::env::var("CHAT_TOKEN").ok())
            .filter(|t| !t.is_empty()),
        server_name: args.server_name.clone(),
        wire_trace: args.trace_wire.map(wire_trace),
        ..Transport::default()
    };
    match Duration::try_from_secs_f64(args.keepalive_secs) {
        Ok(interval) if interval.is_zero() => transport.keepalive = None,
        Ok(interval) => transport.keepalive = Some((interval, DEFAULT_KEEPALIVE_TIMEOUT)),
        Err(e) => {
            eprintln!("chat-client: --keepalive-secs: {e}");
            return ExitCode::from(2);
        }
    }
    if args.tls {
        match tls::client_config(args.ca.as_deref()) {
            Ok(config) => transport.tls = Some(config),
            Err(e) => {
                eprintln!("chat-client: TLS: {e}");
                return ExitCode::from(2);
            }
        }
    }
    chat_client::run(Options {
        address,
        user: args.user,
        room: args.room,
        connect_retries: args.connect_retries,
        force_line_mode: args.line,
        timestamps: args.timestamps,
        transport,
    })
    .await
}

/// The `--trace-wire` trace: to stderr, with our services' message types
/// (they are compiled in, so decoding them cannot fail in practice; if it
/// did, messages would be shown by size, and the program would still run).
fn wire_trace(mode: grpc_chat::wire_trace::Mode) -> grpc_chat::wire_trace::WireTrace {
    use grpc_chat::wire_trace::{MessageTypes, WireTrace};
    let types =
        MessageTypes::from_descriptor_set(grpc_chat::pb::FILE_DESCRIPTOR_SET).unwrap_or_default();
    WireTrace::stderr(mode).with_types(types)
}
