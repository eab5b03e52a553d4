//! `interop-server`: the gRPC interop test server (`grpc.testing.TestService`),
//! for grpc-go's (or any) interop client; with server reflection, so
//! `grpcurl` can explore it.
//!
//! ```text
//! interop-server --port 10000
//! interop-server --port 10000 --use_tls --tls_cert_file cert.pem --tls_key_file key.pem
//! interop-server --port 10000 --max_receive_message_size=16777216
//! ```
//!
//! `--max_receive_message_size` exists for grpc-java's `very_large_request`
//! case, which sends a 10 MiB request: more than the library's 4 MiB default.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use grpc_chat::framing::DEFAULT_MAX_RECV_MESSAGE_SIZE;
use grpc_chat::interop::server::InteropService;
use grpc_chat::pb::grpc_testing::TestServiceServer;
use grpc_chat::reflection::{ReflectionService, V1_SERVICE, V1ALPHA_SERVICE};
use grpc_chat::server::{Server, shutdown_signal};
use grpc_chat::tls;
use tokio::net::TcpListener;

/// The gRPC interop test server.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Port to listen on (all interfaces unless --host is given).
    #[arg(long, default_value_t = 10000)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value_t = Ipv4Addr::UNSPECIFIED.into())]
    host: std::net::IpAddr,
    /// Print every HTTP/2 frame to stderr, decoded: headers, gRPC messages as
    /// protobuf text, trailers (`--trace-wire`); `--trace-wire=hex` adds
    /// the bytes.
    #[arg(long, value_name = "MODE", num_args = 0..=1, require_equals = true, default_missing_value = "text")]
    trace_wire: Option<grpc_chat::wire_trace::Mode>,
    /// Serve TLS (ALPN h2) with --tls_cert_file and --tls_key_file.
    #[arg(long = "use_tls", default_value_t = false, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    use_tls: bool,
    /// PEM certificate chain (with --use_tls).
    #[arg(long = "tls_cert_file")]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key (with --use_tls).
    #[arg(long = "tls_key_file")]
    tls_key_file: Option<PathBuf>,
    /// The largest request message accepted, in bytes (after
    /// decompression); a larger one fails with RESOURCE_EXHAUSTED. The
    /// default is the library's (4 MiB).
    #[arg(long = "max_receive_message_size", value_name = "BYTES",
          default_value_t = DEFAULT_MAX_RECV_MESSAGE_SIZE)]
    max_receive_message_size: usize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let mut builder = Server::builder();
    builder.max_recv_message_size(args.max_receive_message_size);
    if let Some(mode) = args.trace_wire {
        builder.wire_trace(wire_trace(mode));
    }
    if args.use_tls {
        let (Some(cert), Some(key)) = (&args.tls_cert_file, &args.tls_key_file) else {
            return Err("--use_tls needs --tls_cert_file and --tls_key_file".into());
        };
        builder.tls(tls::server_config(cert, key)?);
    }
    let reflection = ReflectionService::new(
        grpc_chat::pb::FILE_DESCRIPTOR_SET,
        [
            TestServiceServer::<InteropService>::NAME,
            V1_SERVICE,
            V1ALPHA_SERVICE,
        ],
    )?;
    let listener = TcpListener::bind(SocketAddr::new(args.host, args.port)).await?;
    builder
        .add_service(TestServiceServer::new(InteropService))
        .add_service(reflection.v1())
        .add_service(reflection.v1alpha())
        .build()
        .serve(listener, shutdown_signal())
        .await?;
    Ok(())
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
