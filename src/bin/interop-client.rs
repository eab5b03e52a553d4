//! `interop-client`: runs the standard gRPC interop test cases against an
//! interop server (ours, or grpc-go's), with grpc-go's flag names.
//!
//! ```text
//! interop-client --server_host 127.0.0.1 --server_port 10000 --test_case large_unary
//! interop-client --server_port 10000 --test_case all
//! interop-client --server_port 10000 --test_case empty_unary,large_unary,ping_pong
//! interop-client --server_port 10000 --use_tls --use_test_ca --ca_file ca.pem \
//!     --server_host_override foo.test.google.fr --test_case all
//! ```
//!
//! Every case of one run goes over one `Channel`, so one connection carries
//! them in turn (and a later case finds the connection as the earlier ones
//! left it); each prints `PASS <case>` or `FAIL <case>: <why>`, and the exit
//! status is non-zero if any failed.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use grpc_chat::client::Channel;
use grpc_chat::interop::client::{run_case, test_cases};
use grpc_chat::tls;

/// The gRPC interop test client.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Server host.
    #[arg(long = "server_host", default_value = "127.0.0.1")]
    server_host: String,
    /// Server port.
    #[arg(long = "server_port", default_value_t = 10000)]
    server_port: u16,
    /// The cases to run, comma-separated (`empty_unary,large_unary`), or
    /// `all`; all of them over one channel, in the order given.
    #[arg(long = "test_case", default_value = "large_unary")]
    test_case: String,
    /// Print every HTTP/2 frame to stderr, decoded: headers, gRPC messages as
    /// protobuf text, trailers (`--trace-wire`); `--trace-wire=hex` adds
    /// the bytes.
    #[arg(long, value_name = "MODE", num_args = 0..=1, require_equals = true, default_missing_value = "text")]
    trace_wire: Option<grpc_chat::wire_trace::Mode>,
    /// Connect with TLS (ALPN h2).
    #[arg(long = "use_tls", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    use_tls: bool,
    /// Trust the CA in --ca_file instead of the system's roots.
    #[arg(long = "use_test_ca", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    use_test_ca: bool,
    /// PEM file of the CA certificate(s) to trust (with --use_tls).
    #[arg(long = "ca_file")]
    ca_file: Option<PathBuf>,
    /// The name the server's certificate must carry, if not --server_host.
    #[arg(long = "server_host_override")]
    server_host_override: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let address = format!("{}:{}", args.server_host, args.server_port);
    let mut builder = Channel::builder(address.clone());
    if let Some(mode) = args.trace_wire {
        builder.wire_trace(wire_trace(mode));
    }
    if args.use_tls {
        let ca = match (&args.ca_file, args.use_test_ca) {
            (Some(ca), _) => Some(ca.as_path()),
            (None, false) => None,
            (None, true) => {
                eprintln!("--use_test_ca needs --ca_file");
                return ExitCode::from(2);
            }
        };
        match tls::client_config(ca) {
            Ok(config) => builder.tls(config),
            Err(e) => {
                eprintln!("TLS: {e}");
                return ExitCode::from(2);
            }
        };
        if let Some(name) = args
            .server_host_override
            .as_deref()
            .filter(|n| !n.is_empty())
        {
            builder.server_name(name);
        }
    }
    let channel = match builder.connect().await {
        Ok(channel) => channel,
        Err(status) => {
            eprintln!("cannot reach {address}: {status}");
            return ExitCode::FAILURE;
        }
    };
    let cases = selected_cases(&args.test_case);
    if cases.is_empty() {
        eprintln!("--test_case names no case");
        return ExitCode::from(2);
    }
    let mut failed = 0;
    for case in &cases {
        match run_case(&channel, case).await {
            Ok(()) => println!("PASS {case}"),
            Err(why) => {
                failed += 1;
                println!("FAIL {case}: {why}");
            }
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The cases `--test_case` names: `all`, or a comma-separated list (blank
/// items skipped, so a trailing comma is harmless).
fn selected_cases(flag: &str) -> Vec<&str> {
    if flag.trim() == "all" {
        return test_cases().collect();
    }
    flag.split(',')
        .map(str::trim)
        .filter(|case| !case.is_empty())
        .collect()
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
