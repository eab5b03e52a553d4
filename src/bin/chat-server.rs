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
//!
//! # Start-up failures
//!
//! Everything that can be wrong with the flags is found before the server
//! says it is listening: settings are checked, files read and every listener
//! bound first. A failure is one line on stderr naming the flag, its value
//! and what to do, and the exit status is non-zero (2 for a flag clap
//! rejects, 1 for the rest):
//!
//! ```text
//! chat-server: --web-addr 127.0.0.1:8080: the address is already in use; stop what listens there or choose another port with --web-addr
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
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
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long)]
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
    /// Several URLs (repeated, or comma-separated) are the seed nodes of a
    /// Redis Cluster.
    #[arg(long, value_name = "URL", value_delimiter = ',')]
    redis: Vec<String>,
    /// With one --redis URL: it is a node of a Redis Cluster, not a single
    /// instance (several URLs always are).
    #[arg(long, requires = "redis")]
    redis_cluster: bool,
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
    /// With --redis: how long a member's name stays held after its server
    /// stops renewing it (the server died); renewed every third of this.
    #[arg(long, value_name = "SECS", default_value_t = grpc_chat::chat::history::redis::DEFAULT_NAME_LEASE.as_secs_f64())]
    name_lease_secs: f64,
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

/// A start-up failure, as the one line the user sees after `chat-server: `:
/// the flag, its value, what is wrong and what to do.
#[derive(Debug)]
struct StartupError(String);

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StartupError {
    /// `FLAG VALUE: what`.
    fn flag(flag: &str, value: impl fmt::Display, what: impl fmt::Display) -> Self {
        StartupError(format!("{flag} {value}: {what}"))
    }
}

/// A flag's seconds as a `Duration`: finite and not negative.
fn seconds(flag: &str, s: f64) -> Result<Duration, StartupError> {
    Duration::try_from_secs_f64(s)
        .map_err(|_| StartupError::flag(flag, s, "not a duration; give seconds, 0 or more"))
}

/// Why a listener could not be bound, and what to do about it.
fn listen_error(flag: &str, addr: SocketAddr, e: &std::io::Error) -> StartupError {
    use std::io::ErrorKind;
    let what = match e.kind() {
        ErrorKind::AddrInUse => format!(
            "the address is already in use; stop what listens there or choose another port with {flag}"
        ),
        ErrorKind::PermissionDenied => format!(
            "not allowed to listen there (ports below 1024 need privileges); choose a port above 1023 with {flag}"
        ),
        ErrorKind::AddrNotAvailable => format!(
            "no interface of this machine has that address; use 0.0.0.0 (every interface), 127.0.0.1 (this machine only) or one of its addresses with {flag}"
        ),
        _ => format!("cannot listen there ({e}); choose another address with {flag}"),
    };
    StartupError::flag(flag, addr, what)
}

/// A PEM file named by `flag` that cannot be read at all.
fn readable(flag: &str, path: &Path) -> Result<(), StartupError> {
    std::fs::File::open(path).map(drop).map_err(|e| {
        StartupError::flag(
            flag,
            path.display(),
            format!("cannot read it ({e}); give a readable PEM file"),
        )
    })
}

/// The TLS configuration from `--tls-cert` and `--tls-key`, each file's
/// problem reported under its own flag.
fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, StartupError> {
    readable("--tls-cert", cert)?;
    readable("--tls-key", key)?;
    // The TLS layer's messages start with the file's name, which the flag
    // and value already say.
    let detail = |path: &Path, e: &grpc_chat::tls::TlsError| {
        let text = e.to_string();
        let prefix = format!("{}: ", path.display());
        text.strip_prefix(&prefix).unwrap_or(&text).to_owned()
    };
    grpc_chat::tls::load_certificates(cert).map_err(|e| {
        StartupError::flag(
            "--tls-cert",
            cert.display(),
            format!("{}; give the certificate chain in PEM", detail(cert, &e)),
        )
    })?;
    grpc_chat::tls::load_private_key(key).map_err(|e| {
        StartupError::flag(
            "--tls-key",
            key.display(),
            format!(
                "{}; give the certificate's private key in PEM",
                detail(key, &e)
            ),
        )
    })?;
    grpc_chat::tls::server_config(cert, key).map_err(|e| {
        let both = format!("{} and {}: ", cert.display(), key.display());
        let text = e.to_string();
        let why = text.strip_prefix(&both).unwrap_or(&text);
        StartupError(format!(
            "--tls-cert {} with --tls-key {}: {why}; give the key that belongs to the certificate",
            cert.display(),
            key.display()
        ))
    })
}

/// The token table of `--auth-tokens`.
fn tokens(path: &Path, limits: &Limits) -> Result<TokenTable, StartupError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        StartupError::flag(
            "--auth-tokens",
            path.display(),
            format!("cannot read it ({e}); give a readable file of `<token> <user>` lines"),
        )
    })?;
    TokenTable::parse(&text, limits).map_err(|e| {
        StartupError::flag(
            "--auth-tokens",
            path.display(),
            format!("{e}; each line is `<token> <user>` (`#` starts a comment)"),
        )
    })
}

/// Flags that make sense alone but not together.
fn check_combinations(args: &Args) -> Result<(), StartupError> {
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), None) => {
            return Err(StartupError::flag(
                "--tls-cert",
                cert.display(),
                "needs --tls-key, the certificate's private key",
            ));
        }
        (None, Some(key)) => {
            return Err(StartupError::flag(
                "--tls-key",
                key.display(),
                "needs --tls-cert, the certificate it is the key of",
            ));
        }
        _ => {}
    }
    // Two listeners on one address: the second bind would fail with "in
    // use", which does not say that it is this very server.
    let listeners = [
        ("--addr", Some(args.addr)),
        ("--web-addr", args.web_addr),
        ("--metrics-addr", args.metrics_addr),
    ];
    for (i, (flag, addr)) in listeners.iter().enumerate() {
        let Some(addr) = addr else { continue };
        if addr.port() == 0 {
            continue; // any free port: never the same
        }
        if let Some((other, _)) = listeners[..i].iter().find(|(_, a)| *a == Some(*addr)) {
            return Err(StartupError::flag(
                flag,
                addr,
                format!("is also {other}; give each listener its own port"),
            ));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // clap's first line names the flag and the value; the rest is
            // usage the one-line rule leaves to --help.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("chat-server: {first}; see chat-server --help");
            return ExitCode::from(2);
        }
    };
    let runtime = match args.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if n > 0 {
                builder.worker_threads(n);
            }
            builder.enable_all().build()
        }
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!(
                "chat-server: --worker-threads {}: cannot start the runtime ({e})",
                args.worker_threads
            );
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat-server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Every listener, bound before anything is announced.
struct Listeners {
    /// `--addr`: gRPC.
    grpc: TcpListener,
    /// `--metrics-addr`.
    metrics: Option<TcpListener>,
    /// `--web-addr`: the page and gRPC-Web.
    web: Option<TcpListener>,
}

/// Binds `--addr`, `--metrics-addr` and `--web-addr`, naming the flag of
/// the one that fails.
async fn bind_all(args: &Args) -> Result<Listeners, StartupError> {
    let grpc = grpc_chat::server::bind(args.addr, args.listen_backlog)
        .map_err(|e| listen_error("--addr", args.addr, &e))?;
    let metrics = match args.metrics_addr {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| listen_error("--metrics-addr", addr, &e))?,
        ),
        None => None,
    };
    let web = match args.web_addr {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| listen_error("--web-addr", addr, &e))?,
        ),
        None => None,
    };
    Ok(Listeners { grpc, metrics, web })
}

/// An error while serving (after start-up), as one line.
fn serving_error(e: impl fmt::Display) -> StartupError {
    StartupError(format!("stopped: {e}"))
}

async fn serve(args: Args) -> Result<(), StartupError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
    }

    check_combinations(&args)?;
    let config = ChatConfig {
        metrics: &grpc_chat::metrics::METRICS,
        max_queue_bytes: args.max_queue_bytes,
        slow_grace: seconds("--slow-grace-secs", args.slow_grace_secs)?,
        typing_timeout: seconds("--typing-timeout-secs", args.typing_timeout_secs)?,
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
    let grace = seconds("--shutdown-grace-secs", args.shutdown_grace_secs)?;
    let mut builder = Server::builder();
    configure(&mut builder, &args)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls_config(cert, key)?),
        _ => None,
    };
    let tokens = match &args.auth_tokens {
        Some(path) => Some(tokens(path, &limits)?),
        None => None,
    };
    let redis = if args.redis.is_empty() {
        None
    } else {
        let options = RedisOptions {
            history_len: args.history_len,
            outage_queue: args.history_queue,
            metrics: &grpc_chat::metrics::METRICS,
            name_lease: seconds("--name-lease-secs", args.name_lease_secs)?,
        };
        let urls = args.redis.join(",");
        let store = if args.redis_cluster || args.redis.len() > 1 {
            RedisHistory::cluster(&args.redis, options)
        } else {
            RedisHistory::new(&urls, options)
        };
        let redis = store.map_err(|e| {
            let e = e.to_string();
            // "redis url: <why>": the flag says which URL.
            let why = e.strip_prefix("redis url: ").unwrap_or(&e).to_owned();
            StartupError::flag(
                "--redis",
                &urls,
                format!("not a Redis URL ({why}); give redis://HOST[:PORT][/DB]"),
            )
        })?;
        Some(Arc::new(redis))
    };
    let reflection = ReflectionService::new(
        grpc_chat::pb::FILE_DESCRIPTOR_SET,
        [
            ChatServiceServer::<ChatService>::NAME,
            HealthServer::<grpc_chat::health::HealthService>::NAME,
            grpc_chat::reflection::V1_SERVICE,
            grpc_chat::reflection::V1ALPHA_SERVICE,
        ],
    )
    .map_err(|e| StartupError(format!("reflection: {e}")))?;
    // Every flag is good: now the ports, all before any is announced.
    let listeners = bind_all(&args).await?;

    let chat = match redis {
        None => ChatService::new(config),
        Some(redis) => {
            let url = args.redis.join(",");
            let url = url.as_str();
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
    if let Some(tokens) = tokens {
        info!(tokens = tokens.len(), "tokens required");
        chat = chat.with_tokens(tokens);
    }
    if let Some(tls) = tls {
        builder.tls(tls);
        info!("serving TLS");
    }
    let hub = std::sync::Arc::clone(chat.hub());
    let history = Arc::clone(hub.history());
    let health = HealthReporter::new();
    // "" is the server as a whole.
    health.set_serving("");
    health.set_serving(ChatServiceServer::<ChatService>::NAME);
    let health_service = health.service();

    if let Some(metrics) = listeners.metrics {
        if let Ok(addr) = metrics.local_addr() {
            info!(%addr, "metrics listening");
        }
        // Scrapes keep working while the chat server drains; the task ends
        // with the process.
        tokio::spawn(grpc_chat::metrics::serve(
            metrics,
            &grpc_chat::metrics::METRICS,
            std::future::pending(),
        ));
    }
    let server = builder
        .add_service(ChatServiceServer::new(chat))
        .add_service(HealthServer::new(health_service))
        .add_service(reflection.v1())
        .add_service(reflection.v1alpha())
        .build();
    // The web gateway serves its calls with this same server, in process,
    // and stops with it (see `serve_web`).
    let (stop_web, web_stopped) = tokio::sync::watch::channel(());
    let web = listeners.web.map(|listener| {
        serve_web(
            listener,
            server.clone(),
            grace,
            args.max_connections,
            web_stopped,
        )
    });
    let listener = listeners.grpc;
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "chat-server listening");
    }
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
    server
        .serve(listener, shutdown)
        .await
        .map_err(serving_error)?;
    // Batches still on their way to the history store are written before
    // the process exits, so resuming clients find them.
    history.flush(Duration::from_secs(3)).await;
    if let Some(web) = web {
        web.await.map_err(serving_error)?.map_err(serving_error)?;
    }
    Ok(())
}

/// The server's settings, from the flags.
fn configure(builder: &mut Builder, args: &Args) -> Result<(), StartupError> {
    let keepalive = seconds("--keepalive-interval-secs", args.keepalive_interval_secs)?;
    if let Some(mode) = args.trace_wire {
        builder.wire_trace(wire_trace(mode));
    }
    builder
        // Counted where `--metrics-addr` serves them from.
        .metrics(&grpc_chat::metrics::METRICS)
        .keepalive_interval((!keepalive.is_zero()).then_some(keepalive))
        .keepalive_timeout(seconds(
            "--keepalive-timeout-secs",
            args.keepalive_timeout_secs,
        )?)
        .min_ping_interval(seconds(
            "--min-ping-interval-secs",
            args.min_ping_interval_secs,
        )?)
        .max_concurrent_streams(args.max_concurrent_streams)
        .max_recv_message_size(args.max_recv_message_size)
        .max_send_message_size(args.max_send_message_size)
        .max_connections(args.max_connections)
        .max_header_list_size(args.max_header_list_size)
        .handshake_timeout(seconds(
            "--handshake-timeout-secs",
            args.handshake_timeout_secs,
        )?)
        .shutdown_grace(seconds("--shutdown-grace-secs", args.shutdown_grace_secs)?);
    Ok(())
}

/// Starts the web front on its bound listener: the gRPC-Web gateway and
/// the page, serving calls with `server` — the public server's services,
/// routing and limits — in process (TLS aside: the web front has its own).
fn serve_web(
    web_listener: TcpListener,
    server: Server,
    grace: Duration,
    max_connections: usize,
    stopped: tokio::sync::watch::Receiver<()>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let gateway = grpc_chat::web::Gateway::builder(server)
        .shutdown_grace(grace)
        .max_connections(max_connections)
        .build();
    if let Ok(addr) = web_listener.local_addr() {
        info!(%addr, "chat-server web page and gRPC-Web listening");
    }
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<()>| async move {
        // Err: the sender was dropped, which is the signal.
        while stopped.changed().await.is_ok() {}
    };
    tokio::spawn(async move { gateway.serve(web_listener, until_stopped(stopped)).await })
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
