//! `interop-client`: runs the standard gRPC interop test cases against an
//! interop server (ours, or grpc-go's), with grpc-go's flag names.
//!
//! ```text
//! interop-client --server_host 127.0.0.1 --server_port 10000 --test_case large_unary
//! interop-client --server_port 10000 --test_case all
//! ```

use std::process::ExitCode;

use clap::Parser;
use grpc_chat::client::Channel;
use grpc_chat::interop::client::{TEST_CASES, run_case};

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
    /// The case to run, or `all`.
    #[arg(long = "test_case", default_value = "large_unary")]
    test_case: String,
    /// Print every HTTP/2 frame to stderr, decoded: headers, gRPC messages as
    /// protobuf text, trailers (`--trace-wire`); `--trace-wire=hex` adds
    /// the bytes.
    #[arg(long, value_name = "MODE", num_args = 0..=1, require_equals = true, default_missing_value = "text")]
    trace_wire: Option<grpc_chat::wire_trace::Mode>,
    /// Accepted for compatibility with grpc-go's flags; only `false` is
    /// supported for now.
    #[arg(long = "use_tls", default_value_t = false, action = clap::ArgAction::Set)]
    use_tls: bool,
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
    if let Some(mode) = args.trace_wire {
        grpc_chat::wire_trace::enable(grpc_chat::wire_trace::WireTrace::stderr(mode));
    }
    if args.use_tls {
        eprintln!("--use_tls=true is not supported yet");
        return ExitCode::from(2);
    }
    let address = format!("{}:{}", args.server_host, args.server_port);
    let channel = match Channel::connect(address.clone()).await {
        Ok(channel) => channel,
        Err(status) => {
            eprintln!("cannot reach {address}: {status}");
            return ExitCode::FAILURE;
        }
    };
    let cases: Vec<&str> = if args.test_case == "all" {
        TEST_CASES.to_vec()
    } else {
        vec![args.test_case.as_str()]
    };
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
