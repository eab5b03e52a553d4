//! `chat-server`: the grpc-chat server (`chat.ChatService`, and
//! `grpc.health.v1.Health` and server reflection on the same port).
//!
//! ```text
//! chat-server                                  # 0.0.0.0:50053, default limits
//! chat-server --addr 127.0.0.1:50102 --rate-limit 0
//! chat-server --tls-cert cert.pem --tls-key key.pem --auth-tokens tokens.txt
//! chat-server --metrics-addr 127.0.0.1:9100    # Prometheus text at /metrics
//! RUST_LOG=debug chat-server
//! chat-server --redis redis://127.0.0.1:6379   # history in Redis; servers on one Redis are one chat
//! chat-server --web-addr 127.0.0.1:8080          # also the web page and gRPC-Web
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use grpc_chat::chat::history::redis::{RedisHistory, RedisOptions};
use grpc_chat::chat::{ChatConfig, ChatService, Limits, RateLimit, TokenTable};
use grpc_chat::health::{HealthReporter, HealthServer};
use grpc_chat::pb::chat::ChatServiceServer;
use grpc_chat::reflection::ReflectionService;
use grpc_chat::server::{Builder, Server, shutdown_signal};
use tokio::net::TcpListener;
use tracing::{info, warn};

/// The grpc-chat server: both original chat protocols, in rooms.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:50053")]
    addr: SocketAddr,
    /// Serve Prometheus metrics over HTTP/1.1 at http://ADDR/metrics (off
    /// unless given).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,
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
    /// Largest message accepted from a client, in bytes (after
    /// decompression too).
    #[arg(long, default_value_t = grpc_chat::framing::DEFAULT_MAX_RECV_MESSAGE_SIZE)]
    max_recv_message_size: usize,
    /// Largest message the server sends, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_SEND_MESSAGE_SIZE)]
    max_send_message_size: usize,
    /// Connections served at once; more are answered with GOAWAY and closed.
    #[arg(long, default_value_t = grpc_chat::server::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Connections the kernel may hold ready for the server to accept (the
    /// listen backlog; the kernel caps it at net.core.somaxconn). Too small,
    /// and a storm of joins overflows it: clients are delayed or reset.
    #[arg(long, default_value_t = grpc_chat::server::DEFAULT_LISTEN_BACKLOG)]
    listen_backlog: u32,
    /// Largest request header block, in bytes (HTTP/2
    /// SETTINGS_MAX_HEADER_LIST_SIZE); bigger ones are answered with 431.
    #[arg(long, default_value_t = grpc_chat::server::DEFAULT_MAX_HEADER_LIST_SIZE)]
    max_header_list_size: u32,
    /// Seconds a new connection has to send the HTTP/2 preface and SETTINGS.
    #[arg(long, default_value_t = grpc_chat::server::DEFAULT_HANDSHAKE_TIMEOUT.as_secs_f64())]
    handshake_timeout_secs: f64,
    /// Seconds in-flight calls get to finish at shutdown.
    #[arg(long, default_value_t = grpc_chat::server::DEFAULT_SHUTDOWN_GRACE.as_secs_f64())]
    shutdown_grace_secs: f64,
    /// Also serve the chat web page and gRPC-Web (HTTP/1.1) on this address.
    #[arg(long)]
    web_addr: Option<SocketAddr>,
    /// Serve TLS (ALPN h2) with this PEM certificate chain (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require a token on every chat call: a file of `<token> <user>` lines
    /// (`#` comments allowed); the token decides the user's name.
    #[arg(long)]
    auth_tokens: Option<PathBuf>,
    /// Seconds between keepalive PINGs to each client (0 turns them off); a
    /// client that does not answer within --keepalive-timeout-secs is
    /// disconnected and leaves its rooms.
    #[arg(long, default_value_t = grpc_chat::server::DEFAULT_KEEPALIVE_INTERVAL.as_secs_f64())]
    keepalive_interval_secs: f64,
    /// Seconds to wait for a keepalive PING's acknowledgement.
    #[arg(long, default_value_t = grpc_chat::server::DEFAULT_KEEPALIVE_TIMEOUT.as_secs_f64())]
    keepalive_timeout_secs: f64,
    /// Clients may PING at most this often (seconds); repeated faster PINGs
    /// get GOAWAY ENHANCE_YOUR_CALM.
    #[arg(long, default_value_t = grpc_chat::server::DEFAULT_MIN_PING_INTERVAL.as_secs_f64())]
    min_ping_interval_secs: f64,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Print every HTTP/2 frame to stderr, decoded: headers, gRPC messages as
    /// protobuf text, trailers (`--trace-wire`); `--trace-wire=hex` adds
    /// the bytes.
    #[arg(long, value_name = "MODE", num_args = 0..=1, require_equals = true, default_missing_value = "text")]
    trace_wire: Option<grpc_chat::wire_trace::Mode>,
    /// Runtime worker threads; 0 means one per CPU core. 1 runs everything
    /// on a single thread (no cross-thread wake-ups).
    #[arg(long, default_value_t = 0)]
    worker_threads: usize,
    /// Keep history in this Redis (redis://host:port[/db]); servers given the
    /// same Redis form one chat. Without it, history is kept in memory.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// Messages replayed to a client joining without resume metadata.
    #[arg(long, default_value_t = grpc_chat::chat::history::DEFAULT_REPLAY)]
    history_replay: usize,
    /// Messages of history kept per room.
    #[arg(long, default_value_t = grpc_chat::chat::history::DEFAULT_HISTORY_LEN)]
    history_len: usize,
    /// With --redis: messages queued while Redis is unreachable (the oldest
    /// are dropped beyond this).
    #[arg(long, default_value_t = grpc_chat::chat::history::DEFAULT_OUTAGE_QUEUE)]
    history_queue: usize,
}

/// Default for `--max-send-message-size`: the same 4 MiB as the receive
/// limit. (The library's default is no limit, like grpc-go's; a chat server's
/// largest reply, `Who` of a full room, stays far below this.)
const DEFAULT_MAX_SEND_MESSAGE_SIZE: usize = grpc_chat::framing::DEFAULT_MAX_RECV_MESSAGE_SIZE;

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
    if let Some(mode) = args.trace_wire {
        grpc_chat::wire_trace::enable(grpc_chat::wire_trace::WireTrace::stderr(mode));
    }
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
        history_replay: args.history_replay,
        history_len: args.history_len,
    };
    let limits = config.limits;
    let chat = match &args.redis {
        None => ChatService::new(config),
        Some(url) => {
            let options = RedisOptions {
                history_len: args.history_len,
                outage_queue: args.history_queue,
            };
            let redis = Arc::new(RedisHistory::new(url, options)?);
            let chat = ChatService::with_history(config, redis.clone());
            // Start in the normal mode when Redis is there; when it is not,
            // serve anyway (live chat only) and keep trying in the background.
            if redis.wait_connected(Duration::from_secs(3)).await {
                info!(url, "history in redis");
            } else {
                warn!(
                    url,
                    "redis unreachable: serving live chat only, retrying in the background"
                );
            }
            chat
        }
    };
    let mut chat = chat;
    if let Some(path) = &args.auth_tokens {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--auth-tokens {}: {e}", path.display()))?;
        let tokens = TokenTable::parse(&text, &limits)
            .map_err(|e| format!("--auth-tokens {}: {e}", path.display()))?;
        info!(tokens = tokens.len(), "tokens required");
        chat = chat.with_tokens(tokens);
    }
    let mut builder = Server::builder();
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        builder.tls(grpc_chat::tls::server_config(cert, key)?);
        info!("serving TLS");
    }
    configure(&mut builder, &args)?;
    let hub = std::sync::Arc::clone(chat.hub());
    let history = Arc::clone(hub.history());
    let health = HealthReporter::new();
    // "" is the server as a whole.
    health.set_serving("");
    health.set_serving(ChatServiceServer::<ChatService>::NAME);
    let health_service = health.service();
    let reflection = ReflectionService::new(
        grpc_chat::pb::FILE_DESCRIPTOR_SET,
        [
            ChatServiceServer::<ChatService>::NAME,
            HealthServer::<grpc_chat::health::HealthService>::NAME,
            grpc_chat::reflection::V1_SERVICE,
            grpc_chat::reflection::V1ALPHA_SERVICE,
        ],
    )?;

    // Metrics first: once the gRPC port answers, so does the metrics port.
    if let Some(addr) = args.metrics_addr {
        let metrics = TcpListener::bind(addr).await?;
        // Scrapes keep working while the chat server drains; the task ends
        // with the process.
        tokio::spawn(grpc_chat::metrics::serve(metrics, std::future::pending()));
    }
    let listener = grpc_chat::server::bind(args.addr, args.listen_backlog)?;
    info!(addr = %listener.local_addr()?, "chat-server listening");
    // The web gateway stops with the server (see `serve_web`).
    let (stop_web, web_stopped) = tokio::sync::watch::channel(());
    let web = match args.web_addr {
        Some(addr) => {
            // The server the gateway forwards to: configured as the public
            // one (TLS aside: it is on loopback), with the same services.
            let mut inner = Server::builder();
            configure(&mut inner, &args)?;
            inner
                .add_service(ChatServiceServer::new(chat.clone()))
                .add_service(HealthServer::new(health.service()))
                .add_service(reflection.v1())
                .add_service(reflection.v1alpha());
            let grace = seconds(args.shutdown_grace_secs)?;
            let web = serve_web(
                addr,
                inner.build(),
                grace,
                args.max_connections,
                web_stopped,
            );
            Some(web.await?)
        }
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
        // From here on no room accepts a message, so every log is final:
        // this is the point to flush a history store (persisting everything
        // any member was sent) before the connections drain.
    };
    builder
        .add_service(ChatServiceServer::new(chat))
        .add_service(HealthServer::new(health_service))
        .add_service(reflection.v1())
        .add_service(reflection.v1alpha())
        .build()
        .serve(listener, shutdown)
        .await?;
    // Batches still on their way to the history store are written before
    // the process exits, so resuming clients find them.
    history.flush(Duration::from_secs(3)).await;
    if let Some(web) = web {
        web.await??;
    }
    Ok(())
}

/// Settings shared by the public server and the web gateway's inner one.
fn configure(builder: &mut Builder, args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let keepalive = seconds(args.keepalive_interval_secs)?;
    builder
        .keepalive_interval((!keepalive.is_zero()).then_some(keepalive))
        .keepalive_timeout(seconds(args.keepalive_timeout_secs)?)
        .min_ping_interval(seconds(args.min_ping_interval_secs)?)
        .max_concurrent_streams(args.max_concurrent_streams)
        .max_recv_message_size(args.max_recv_message_size)
        .max_send_message_size(args.max_send_message_size)
        .max_connections(args.max_connections)
        .max_header_list_size(args.max_header_list_size)
        .handshake_timeout(seconds(args.handshake_timeout_secs)?)
        .shutdown_grace(seconds(args.shutdown_grace_secs)?);
    Ok(())
}

/// Starts the web front: the gRPC-Web gateway and the page on `addr`,
/// forwarding calls to `inner`, a native server of its own on a loopback
/// port.
///
/// `inner` is built like the public server, with the same services (clones
/// share the chat's rooms), so web calls meet the same routing, limits and
/// tokens; being plain HTTP/2 on loopback, it is independent of whether the
/// public port uses TLS.
async fn serve_web(
    addr: SocketAddr,
    inner: Server,
    grace: Duration,
    max_connections: usize,
    stopped: tokio::sync::watch::Receiver<()>,
) -> Result<tokio::task::JoinHandle<std::io::Result<()>>, Box<dyn std::error::Error>> {
    let web_listener = TcpListener::bind(addr).await?;
    let inner_listener = TcpListener::bind("127.0.0.1:0").await?;
    let inner_addr = inner_listener.local_addr()?;
    let gateway = grpc_chat::web::Gateway::builder(inner_addr)
        .shutdown_grace(grace)
        .max_connections(max_connections)
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
