//! `conformance-client`: the client program the Connect conformance runner
//! (`connectconformance --mode client`) starts. It reads
//! `ClientCompatRequest`s on stdin until EOF, makes each call with our
//! client, and writes a `ClientCompatResponse` per call on stdout. See
//! `grpc_chat::conformance::client` and docs/conformance.md.

use clap::Parser;

/// Makes the calls the Connect conformance runner sends on stdin
/// (ClientCompatRequest) and reports each result on stdout
/// (ClientCompatResponse); exits at EOF once every call has ended.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _args = Args::parse();
    // Logs go to stderr: stdout carries the results to the runner.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .init();
    let mut stdin = tokio::io::stdin();
    let run = grpc_chat::conformance::client::run(&mut stdin, tokio::io::stdout());
    // SIGTERM means stop now, calls in progress or not.
    tokio::select! {
        result = run => match result {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("conformance-client: {e}");
                std::process::ExitCode::FAILURE
            }
        },
        () = grpc_chat::server::shutdown_signal() => std::process::ExitCode::FAILURE,
    }
}
