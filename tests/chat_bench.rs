//! The `chat-bench` binary against our chat server, in this process, over
//! 127.0.0.1: small runs of both protocols must count every delivery exactly
//! once, and `--stall` must report the slow reader that the server
//! disconnects after its grace period. Also against the benchmark stick
//! `examples/fanout_floor.rs`, so the floor the benchmarks quote is a server
//! a real client can chat through.
//!
//! Each run is bounded twice: chat-bench's own `--timeout-s`, and a kill
//! here if the process outlives that.

mod common;

use std::time::Duration;

use common::in_process::Running;
use grpc_chat::chat::{ChatConfig, ChatService, RateLimit};
use grpc_chat::pb::chat::ChatServiceServer;

/// chat-bench's own limit per run.
const BENCH_TIMEOUT_S: u64 = 20;
/// Ours: the process is killed after this.
const KILL_AFTER: Duration = Duration::from_secs(BENCH_TIMEOUT_S + 15);

/// A chat server without a rate limit on a free port; stops when dropped.
struct TestServer {
    address: String,
    _running: Running,
}

async fn start(slow_grace: Duration) -> TestServer {
    let config = ChatConfig {
        rate_limit: RateLimit {
            rate: 0.0,
            burst: 1.0,
        },
        slow_grace,
        ..ChatConfig::default()
    };
    let running = common::in_process::start(ChatServiceServer::new(ChatService::new(config))).await;
    TestServer {
        address: running.address.clone(),
        _running: running,
    }
}

/// Runs chat-bench against `address` with `args` and `--json`; returns its
/// JSON line.
async fn bench(address: &str, args: &[&str]) -> String {
    let timeout = BENCH_TIMEOUT_S.to_string();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_chat-bench"))
        .args(["--addr", address, "--json", "--timeout-s", &timeout])
        .args(["--drain-ms", "1000"])
        .args(args)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(KILL_AFTER, run)
        .await
        .expect("chat-bench outlived its own timeout")
        .expect("cannot run chat-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chat-bench failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default().to_owned();
    eprintln!("{stderr}{line}");
    line
}

/// The raw value of `"key":` in a flat JSON object (a number, `true`, `null`,
/// a quoted string with its quotes, or a flat array with its brackets).
fn field<'a>(json: &'a str, key: &str) -> &'a str {
    let pattern = format!("\"{key}\":");
    let at = json
        .find(&pattern)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + pattern.len();
    let rest = &json[at..];
    let end = if let Some(quoted) = rest.strip_prefix('"') {
        quoted.find('"').map_or(rest.len(), |i| i + 2)
    } else if rest.starts_with('[') {
        rest.find(']').map_or(rest.len(), |i| i + 1)
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    &rest[..end]
}

fn number(json: &str, key: &str) -> u64 {
    field(json, key)
        .parse()
        .unwrap_or_else(|e| panic!("{key} in {json}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_stream_counts_every_delivery_once() {
    let server = start(Duration::from_secs(5)).await;
    let json = bench(
        &server.address,
        &["--clients", "5", "--senders", "2", "--messages", "50"],
    )
    .await;
    // 2 senders × 50 messages × 4 other members.
    assert_eq!(number(&json, "expected"), 400, "{json}");
    assert_eq!(number(&json, "delivered"), 400, "{json}");
    assert_eq!(number(&json, "lost"), 0, "{json}");
    assert_eq!(number(&json, "dups"), 0, "{json}");
    assert_eq!(
        number(&json, "echoes"),
        0,
        "ChatStream does not echo: {json}"
    );
    assert_eq!(number(&json, "stream_errors"), 0, "{json}");
    assert_eq!(number(&json, "ready"), 5, "{json}");
    assert_eq!(field(&json, "timed_out"), "false", "{json}");
    assert_eq!(field(&json, "protocol"), "\"chat-stream\"", "{json}");
    assert!(number(&json, "p50_us") > 0, "{json}");
    // Per message: its first delivery comes no later than its last, and
    // every delivery latency lies between a message's first and last.
    let (first, last) = (
        number(&json, "fanout_first_p50_us"),
        number(&json, "fanout_last_p50_us"),
    );
    assert!(0 < first && first <= last, "{json}");
    assert!(
        number(&json, "fanout_last_p99_us") <= number(&json, "max_us"),
        "{json}"
    );
}

/// A second run against the same server: the room's history now holds the
/// first run's messages, and every member is sent the newest 50 on joining.
/// Their markers look like this run's (same senders, same sequence numbers),
/// yet they are not this run's traffic: they are counted as replayed, never
/// as duplicates or echoes, under both protocols.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_counts_only_its_own_messages() {
    let server = start(Duration::from_secs(5)).await;
    for protocol in ["chat-stream", "chat", "chat-stream"] {
        let json = bench(
            &server.address,
            &[
                "--protocol",
                protocol,
                "--clients",
                "4",
                "--senders",
                "2",
                "--messages",
                "40",
            ],
        )
        .await;
        assert_eq!(number(&json, "delivered"), 240, "{json}");
        assert_eq!(number(&json, "dups"), 0, "{json}");
        let echoes = if protocol == "chat" { 80 } else { 0 };
        assert_eq!(number(&json, "echoes"), echoes, "{json}");
    }
    // The last run joined a room whose history held earlier runs.
    let json = bench(
        &server.address,
        &["--clients", "3", "--senders", "1", "--messages", "10"],
    )
    .await;
    assert!(number(&json, "replayed") > 0, "{json}");
    assert_eq!(number(&json, "dups"), 0, "{json}");
}

/// Members spread over rooms and servers: each room expects only its own
/// senders' messages, and the report says per room and per server what
/// arrived. (The same server twice stands for two servers here: what is
/// checked is the spreading and the counting; tests/history.rs has real
/// servers sharing a Redis.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_and_servers_are_reported_apart() {
    let server = start(Duration::from_secs(5)).await;
    let both = format!("{0},{0}", server.address);
    let json = bench(
        &both,
        &[
            "--rooms",
            "2",
            "--clients",
            "8",
            "--senders",
            "4",
            "--messages",
            "30",
        ],
    )
    .await;
    // Room 0 holds members 0, 2, 4, 6 (senders 0 and 2), room 1 the others:
    // 2 senders × 30 messages × 3 other members in each.
    assert_eq!(field(&json, "per_room_expected"), "[180,180]", "{json}");
    assert_eq!(field(&json, "per_room_delivered"), "[180,180]", "{json}");
    assert_eq!(number(&json, "delivered"), 360, "{json}");
    assert_eq!(number(&json, "dups"), 0, "{json}");
    // Connections alternate between the two addresses: members 0, 2, 4, 6
    // on the first, so each got its room's deliveries.
    assert_eq!(field(&json, "per_server_delivered"), "[180,180]", "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_protocol_counts_echoes_apart() {
    let server = start(Duration::from_secs(5)).await;
    let json = bench(
        &server.address,
        &[
            "--protocol",
            "chat",
            "--clients",
            "4",
            "--senders",
            "2",
            "--messages",
            "50",
            "--conns",
            "2",
        ],
    )
    .await;
    assert_eq!(number(&json, "conns"), 2, "{json}");
    assert_eq!(number(&json, "expected"), 300, "{json}");
    assert_eq!(number(&json, "delivered"), 300, "{json}");
    assert_eq!(number(&json, "lost"), 0, "{json}");
    assert_eq!(number(&json, "dups"), 0, "{json}");
    // Chat sends each member's messages back to it: counted, not delivered.
    assert_eq!(number(&json, "echoes"), 100, "{json}");
    // Joins and welcome notices are events, not deliveries.
    assert!(number(&json, "events") > 0, "{json}");
    assert_eq!(number(&json, "stream_errors"), 0, "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_member_is_reported_disconnected() {
    // The stalled member's 64 KiB stream window holds ~65 messages of 1000
    // bytes: full after ~0.7 s of 100 msg/s; the server then waits 300 ms
    // before ending its call, well within the 2 s of sending.
    let server = start(Duration::from_millis(300)).await;
    let json = bench(
        &server.address,
        &[
            "--clients",
            "4",
            "--senders",
            "1",
            "--messages",
            "200",
            "--rate",
            "100",
            "--payload",
            "1000",
            "--stall",
            "1",
        ],
    )
    .await;
    assert_eq!(number(&json, "stalled"), 1, "{json}");
    assert_eq!(number(&json, "stalled_disconnected"), 1, "{json}");
    // The others are not held up by the slow reader.
    assert_eq!(number(&json, "expected"), 400, "{json}");
    assert_eq!(number(&json, "delivered"), 400, "{json}");
    assert_eq!(number(&json, "lost"), 0, "{json}");
    assert_eq!(number(&json, "stream_errors"), 0, "{json}");
}

#[tokio::test]
async fn refuses_impossible_settings() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_chat-bench"))
        .args(["--addr", "127.0.0.1:9", "--clients", "3", "--stall", "2"])
        .args(["--senders", "1", "--timeout-s", "5"])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(KILL_AFTER, out)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid settings"), "{stderr}");
}

/// An example's program, next to the test binaries: `deps/..` is the
/// profile's directory, which holds `examples/`. `cargo build --examples`
/// puts it there (`scripts/test.sh` does, before the tests); `cargo test
/// --all-targets` alone builds examples only as test harnesses.
fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target/<profile>/deps/<test>");
    profile_dir.join("examples").join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_floor_serves_a_real_client() {
    use tokio::io::AsyncBufReadExt;

    let path = example("fanout_floor");
    let mut floor = tokio::process::Command::new(&path)
        .arg("127.0.0.1:0")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e} (build it first: `cargo build --example fanout_floor`; \
                 scripts/test.sh does)",
                path.display()
            )
        });
    // Its first line names the port it bound.
    let stderr = floor.stderr.take().expect("piped");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("fanout_floor did not start")
        .expect("reading its stderr")
        .unwrap_or_default();
    let address = first
        .strip_prefix("fanout_floor: listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .to_owned();

    let json = bench(
        &address,
        &["--clients", "4", "--senders", "2", "--messages", "100"],
    )
    .await;
    // 2 senders × 100 messages × 3 other members, each exactly once.
    assert_eq!(number(&json, "expected"), 600, "{json}");
    assert_eq!(number(&json, "delivered"), 600, "{json}");
    assert_eq!(number(&json, "dups"), 0, "{json}");
    assert_eq!(number(&json, "stream_errors"), 0, "{json}");

    // Messages bigger than one HTTP/2 frame (16,384 bytes) go out as
    // several DATA frames; a client would end the connection over one
    // oversized frame. 20 × 20 kB per sender stays within each reader's
    // window, so the floor has no reason to skip anyone.
    let json = bench(
        &address,
        &[
            "--clients",
            "3",
            "--senders",
            "1",
            "--messages",
            "20",
            "--payload",
            "20000",
        ],
    )
    .await;
    assert_eq!(number(&json, "delivered"), 40, "{json}");
    assert_eq!(number(&json, "lost"), 0, "{json}");
    assert_eq!(number(&json, "stream_errors"), 0, "{json}");
}
