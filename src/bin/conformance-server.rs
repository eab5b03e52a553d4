//! `conformance-server`: the server program the Connect conformance runner
//! (`connectconformance --mode server`) starts. It reads a
//! `ServerCompatRequest` on stdin, serves `ConformanceService` on
//! 127.0.0.1 (gRPC natively, gRPC-Web through the gateway, with or without
//! TLS), writes a `ServerCompatResponse` on stdout, and runs until SIGTERM.
//! See `grpc_chat::conformance::server` and docs/conformance.md.

use clap::Parser;

/// Serves connectrpc.conformance.v1.ConformanceService for the Connect
/// conformance runner: reads a ServerCompatRequest on stdin, writes a
/// ServerCompatResponse on stdout, serves until SIGTERM.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _args = Args::parse();
    // Logs go to stderr: stdout carries the response to the runner.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .init();
    let mut stdin = tokio::io::stdin();
    let mut stdout = tokio::io::stdout();
    match grpc_chat::conformance::server::run(&mut stdin, &mut stdout).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conformance-server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
