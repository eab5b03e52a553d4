//! `chat-server`: the grpc-chat server (`chat.ChatService`, and
//! `grpc.health.v1.Health` on the same port).
//!
//! ```text
//! chat-server                                  # 0.0.0.0:50053, default limits
//! chat-server --addr 127.0.0.1:50102 --rate-limit 0
//! RUST_LOG=debug chat-server
//! chat-server --web-addr 127.0.0.1:8080          # also the web page and gRPC-Web
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use grpc_chat::chat::{ChatConfig, ChatService, Limits, RateLimit};
use grpc_chat::health::{HealthReporter, HealthServer};
use grpc_chat::pb::chat::ChatServiceServer;
use grpc_chat::server::{Server, shutdown_signal};
use tokio::net::TcpListener;
use tracing::info;

/// The grpc-chat server: both original chat protocols, in rooms.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:50053")]
    addr: SocketAddr,
    /// Chat messages per second per client (0 turns rate limiting off).
    #[arg(long, default_value_t = grpc_chat::chat::ratelimit::DEFAULT_RATE)]
    rate_limit: f64,
    /// Messages a client may send in one burst.
    #[arg(long, default_value_t = grpc_chat::chat::ratelimit::DEFAULT_BURST)]
    rate_burst: f64,
    /// Longest user name, in characters.
    #[arg(long, default_value_t = grpc_chat::chat::validate::DEFAULT_MAX_NAME_CHARS)]
    max_name_chars: usize,
    /// Longest message, in characters.
    #[arg(long, default_value_t = grpc_chat::chat::validate::DEFAULT_MAX_MESSAGE_CHARS)]
    max_message_chars: usize,
    /// Bytes that may wait for one client before it is disconnected.
    #[arg(long, default_value_t = grpc_chat::chat::DEFAULT_MAX_QUEUE_BYTES)]
    max_queue_bytes: usize,
    /// Seconds a client may leave its messages unread before it is disconnected.
    #[arg(long, default_value_t = grpc_chat::chat::DEFAULT_SLOW_GRACE.as_secs_f64())]
    slow_grace_secs: f64,
    /// Seconds after which a typing indicator without a stop expires.
    #[arg(long, default_value_t = grpc_chat::chat::DEFAULT_TYPING_TIMEOUT.as_secs_f64())]
    typing_timeout_secs: f64,
    /// Members one room may hold.
    #[arg(long, default_value_t = grpc_chat::chat::DEFAULT_MAX_MEMBERS_PER_ROOM)]
    max_room_members: usize,
    /// Concurrent calls per connection.
    #[arg(long, default_value_t = grpc_chat::server::DEFAULT_MAX_CONCURRENT_STREAMS)]
    max_concurrent_streams: u32,
    /// Largest message accepted from a client, in bytes.
    #[arg(long, default_value_t = grpc_chat::framing::DEFAULT_MAX_RECV_MESSAGE_SIZE)]
    max_recv_message_size: usize,
    /// Seconds in-flight calls get to finish at shutdown.
    #[arg(long, default_value_t = grpc_chat::server::DEFAULT_SHUTDOWN_GRACE.as_secs_f64())]
    shutdown_grace_secs: f64,
    /// Also serve the chat web page and gRPC-Web (HTTP/1.1) on this address.
    #[arg(long)]
    web_addr: Option<SocketAddr>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Runtime worker threads; 0 means one per CPU core. 1 runs everything
    /// on a single thread (no cross-thread wake-ups).
    #[arg(long, default_value_t = 0)]
    worker_threads: usize,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn seconds(s: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|e| format!("invalid duration {s}: {e}"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let runtime = match args.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if n > 0 {
                builder.worker_threads(n);
            }
            builder.enable_all().build()?
        }
    };
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
    }

    let config = ChatConfig {
        max_queue_bytes: args.max_queue_bytes,
        slow_grace: seconds(args.slow_grace_secs)?,
        typing_timeout: seconds(args.typing_timeout_secs)?,
        rate_limit: RateLimit {
            rate: args.rate_limit,
            burst: args.rate_burst,
        },
        limits: Limits {
            max_name_chars: args.max_name_chars,
            max_message_chars: args.max_message_chars,
        },
        max_members_per_room: args.max_room_members,
    };
    let chat = ChatService::new(config);
    let hub = std::sync::Arc::clone(chat.hub());
    let health = HealthReporter::new();
    // "" is the server as a whole.
    health.set_serving("");
    health.set_serving(ChatServiceServer::<ChatService>::NAME);
    let health_service = health.service();

    let listener = TcpListener::bind(args.addr).await?;
    info!(addr = %listener.local_addr()?, "chat-server listening");
    // The web gateway stops with the server (see `serve_web`).
    let (stop_web, web_stopped) = tokio::sync::watch::channel(());
    let web = match args.web_addr {
        Some(addr) => Some(serve_web(addr, &args, &chat, &health, web_stopped).await?),
        None => None,
    };
    let shutdown = async move {
        shutdown_signal().await;
        drop(stop_web);
        // Health checkers hear first, while the listener still answers, so
        // they stop sending new clients here before the drain begins.
        health.set_not_serving("");
        health.set_not_serving(ChatServiceServer::<ChatService>::NAME);
        // Ends open Watch calls, which would otherwise hold their
        // connections open for the whole grace period.
        health.shutdown();
        // Tell members first, so their calls end with a reason rather than
        // by the connection closing under them.
        hub.shutdown("the server is shutting down");
    };
    Server::builder()
        .max_concurrent_streams(args.max_concurrent_streams)
        .max_recv_message_size(args.max_recv_message_size)
        .shutdown_grace(seconds(args.shutdown_grace_secs)?)
        .add_service(ChatServiceServer::new(chat))
        .add_service(HealthServer::new(health_service))
        .build()
        .serve(listener, shutdown)
        .await?;
    if let Some(web) = web {
        web.await??;
    }
    Ok(())
}

/// Starts the web front: the gRPC-Web gateway and the page on `addr`, and
/// the native server it forwards calls to, on a loopback port of its own.
///
/// That inner server is built like the public one, with the same services
/// (clones share the chat's rooms), so web calls meet the same routing and
/// limits; being plain HTTP/2 on loopback, it is independent of how the
/// public port is set up.
async fn serve_web(
    addr: SocketAddr,
    args: &Args,
    chat: &ChatService,
    health: &HealthReporter,
    stopped: tokio::sync::watch::Receiver<()>,
) -> Result<tokio::task::JoinHandle<std::io::Result<()>>, Box<dyn std::error::Error>> {
    let web_listener = TcpListener::bind(addr).await?;
    let inner_listener = TcpListener::bind("127.0.0.1:0").await?;
    let inner_addr = inner_listener.local_addr()?;
    let grace = seconds(args.shutdown_grace_secs)?;
    let inner = Server::builder()
        .max_concurrent_streams(args.max_concurrent_streams)
        .max_recv_message_size(args.max_recv_message_size)
        .shutdown_grace(grace)
        .add_service(ChatServiceServer::new(chat.clone()))
        .add_service(HealthServer::new(health.service()))
        .build();
    let gateway = grpc_chat::web::Gateway::builder(inner_addr)
        .shutdown_grace(grace)
        .build();
    info!(addr = %web_listener.local_addr()?, "chat-server web page and gRPC-Web listening");
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<()>| async move {
        // Err: the sender was dropped, which is the signal.
        while stopped.changed().await.is_ok() {}
    };
    let inner_stopped = until_stopped(stopped.clone());
    let inner_task = tokio::spawn(async move { inner.serve(inner_listener, inner_stopped).await });
    Ok(tokio::spawn(async move {
        gateway.serve(web_listener, until_stopped(stopped)).await?;
        inner_task.await.map_err(std::io::Error::other)?
    }))
}
