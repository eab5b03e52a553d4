//! `chat-bench`: a load generator and stress test for any server of
//! `proto/chat.proto` (ours, or the peers in `../shared/bench`).
//!
//! ```text
//! chat-bench --addr 127.0.0.1:50053 --clients 100 --senders 10 --messages 1000
//! chat-bench --addr 127.0.0.1:50053 --clients 100 --senders 1 --messages 2000 --rate 1000
//! chat-bench --addr 127.0.0.1:50053 --protocol chat --clients 50 --senders 5 --messages 200
//! chat-bench --addr 127.0.0.1:50053 --stall 1 --rate 200 --server-pid "$(pidof chat-server)"
//! chat-bench ... --json          # one JSON line on stdout, the table on stderr
//! ```
//!
//! The method and figures are described in [`grpc_chat::bench`]; this file
//! maps flags onto [`Config`], draws the progress bar and prints the report.

use std::io::IsTerminal;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use grpc_chat::bench::{self, Config, Progress, Protocol, Stage};
use indicatif::{ProgressBar, ProgressStyle};

/// Measures a chat server: deliveries/s, latency percentiles, lost and
/// duplicated messages, and (with --server-pid) the server's CPU and memory.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The server, host:port. Repeat it (or give a comma-separated list)
    /// to spread the members over several servers sharing one Redis.
    #[arg(long, required = true, value_delimiter = ',')]
    addr: Vec<String>,
    /// Rooms to spread the members over (bench-0, bench-1, …; with 1, the
    /// server's default room).
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Members (C), each with its own call.
    #[arg(long, default_value_t = bench::DEFAULT_CLIENTS)]
    clients: usize,
    /// Members that send (S).
    #[arg(long, default_value_t = bench::DEFAULT_SENDERS)]
    senders: usize,
    /// Messages each sender sends (M).
    #[arg(long, default_value_t = bench::DEFAULT_MESSAGES)]
    messages: usize,
    /// Messages per second per sender; 0 sends as fast as the server takes them.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Bytes of message text.
    #[arg(long, default_value_t = bench::DEFAULT_PAYLOAD)]
    payload: usize,
    /// Which RPC the members use.
    #[arg(long, value_enum, default_value_t = ProtocolArg::ChatStream)]
    protocol: ProtocolArg,
    /// HTTP/2 connections, shared by the members (default: one per member).
    #[arg(long)]
    conns: Option<usize>,
    /// Members (the last N) that stop reading after the warm-up: the
    /// slow-reader benchmark.
    #[arg(long, default_value_t = 0)]
    stall: usize,
    /// Stream window of the stalled members, bytes.
    #[arg(long, default_value_t = bench::DEFAULT_STALL_WINDOW)]
    stall_window: u32,
    /// Stream window of the other members, bytes.
    #[arg(long, default_value_t = bench::DEFAULT_STREAM_WINDOW)]
    stream_window: u32,
    /// Connection window, bytes.
    #[arg(long, default_value_t = bench::DEFAULT_CONN_WINDOW)]
    conn_window: u32,
    /// Milliseconds without a delivery, after the last send, that end the run.
    #[arg(long, default_value_t = bench::DEFAULT_DRAIN.as_millis() as u64)]
    drain_ms: u64,
    /// Longest warm-up, seconds.
    #[arg(long, default_value_t = bench::DEFAULT_WARMUP.as_secs())]
    warmup_s: u64,
    /// The run stops by itself after this many seconds, whatever the server does.
    #[arg(long, default_value_t = bench::DEFAULT_TIMEOUT.as_secs())]
    timeout_s: u64,
    /// The server's process id: report its CPU time over the load and its peak RSS.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Members are named PREFIX0, PREFIX1, ...
    #[arg(long, default_value = "cb")]
    name_prefix: String,
    /// A label for the report.
    #[arg(long, default_value = "")]
    label: String,
    /// Print one JSON line on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
    /// No progress bar (there is none anyway when stderr is not a terminal).
    #[arg(long)]
    no_progress: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProtocolArg {
    /// `ChatStream`: the first message binds the name.
    ChatStream,
    /// `Chat`: typed events, joined with USER_JOINED.
    Chat,
}

/// The progress bar appears once the load has run this long, so short runs
/// print nothing but their report.
const PROGRESS_AFTER: Duration = Duration::from_millis(500);

/// Draws [`Progress`] reports as an indicatif bar on stderr.
struct Bar {
    enabled: bool,
    bar: Option<ProgressBar>,
    load_started: Option<std::time::Instant>,
}

impl Bar {
    fn update(&mut self, progress: Progress) {
        if !self.enabled {
            return;
        }
        match progress.stage {
            Stage::Connecting | Stage::WarmingUp => {}
            Stage::Load => {
                let started = *self
                    .load_started
                    .get_or_insert_with(std::time::Instant::now);
                if self.bar.is_none() && started.elapsed() >= PROGRESS_AFTER {
                    // The bar starts late and at a position well above 0, which
                    // would mislead indicatif's rate estimate: no rate shown.
                    let bar = ProgressBar::new(progress.expected).with_elapsed(started.elapsed());
                    let style = ProgressStyle::with_template(
                        "{elapsed_precise} [{bar:30}] {human_pos}/{human_len} deliveries",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
                    bar.set_style(style);
                    self.bar = Some(bar);
                }
                if let Some(bar) = &self.bar {
                    bar.set_position(progress.delivered);
                }
            }
            Stage::Finishing => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
            }
        }
    }
}

fn main() {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let config = Config {
        clients: args.clients,
        senders: args.senders,
        messages: args.messages,
        payload: args.payload,
        rate: args.rate,
        protocol: match args.protocol {
            ProtocolArg::ChatStream => Protocol::ChatStream,
            ProtocolArg::Chat => Protocol::Chat,
        },
        conns: args.conns.unwrap_or(0),
        stall: args.stall,
        stall_window: args.stall_window,
        stream_window: args.stream_window,
        conn_window: args.conn_window,
        drain: Duration::from_millis(args.drain_ms),
        warmup: Duration::from_secs(args.warmup_s),
        timeout: Duration::from_secs(args.timeout_s),
        server_pid: args.server_pid,
        name_prefix: args.name_prefix,
        label: args.label,
        addrs: args.addr,
        rooms: args.rooms,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("chat-bench: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let mut bar = Bar {
        enabled: !args.no_progress && std::io::stderr().is_terminal(),
        bar: None,
        load_started: None,
    };
    let code = match runtime.block_on(bench::run(&config, |p| bar.update(p))) {
        Ok(report) => {
            if args.json {
                eprint!("{}", report.table());
                println!("{}", report.to_json());
            } else {
                print!("{}", report.table());
            }
            0
        }
        Err(e) => {
            eprintln!("chat-bench: {e}");
            if matches!(e, bench::Error::Config(_)) {
                2
            } else {
                1
            }
        }
    };
    // Exit without waiting for calls that a stuck server may still hold open.
    std::process::exit(code);
}
