//! `chat-server --metrics-addr`: scraped over plain HTTP/1.1 (a `GET` on a
//! `std` socket, as a Prometheus server would send it), while real members
//! connect, talk, hit the rate limit and stall — and the numbers move.

mod common;

use common::WAIT;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::chat_stream::{next_from, say, wait_named};
use common::{chat_server, free_port};
use grpc_chat::client::Channel;
use grpc_chat::pb::chat::ChatServiceClient;
use grpc_chat::rpc::Request;
use tokio::runtime::Runtime;

/// `GET path` on `port`: the status line and the body.
fn get(port: u16, path: &str) -> (String, String) {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
    socket.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        socket,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).expect("read response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {response:?}"));
    let status = head.lines().next().unwrap_or_default().to_owned();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{head}"
    );
    (status, body.to_owned())
}

/// Every sample of a scrape: `name{labels}` → value.
fn scrape(port: u16) -> BTreeMap<String, f64> {
    let (status, body) = get(port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let mut samples = BTreeMap::new();
    for line in body.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("malformed sample line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("malformed value in {line:?}"));
        samples.insert(name.to_owned(), value);
    }
    samples
}

fn sample(samples: &BTreeMap<String, f64>, name: &str) -> f64 {
    samples.get(name).copied().unwrap_or(0.0)
}

/// Scrapes until `check` holds for the sample `name` (counters are bumped
/// right after the event a client sees, so a scrape may come a moment
/// early); panics with the last scrape after [`WAIT`].
fn wait_for(port: u16, name: &str, check: impl Fn(f64) -> bool) -> BTreeMap<String, f64> {
    wait_until(port, name, |samples| check(sample(samples, name)))
}

/// Scrapes until `check` holds for the whole scrape; panics with the last
/// scrape after [`WAIT`], saying it waited for `what`.
fn wait_until(
    port: u16,
    what: &str,
    check: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + WAIT;
    loop {
        let samples = scrape(port);
        if check(&samples) {
            return samples;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: never true; last scrape: {samples:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A ChatStream call in `room` that never reads: its stream window is 16
/// bytes, so the first message the server sends it blocks. Its one message
/// names it `staller` (with no text). Returns what keeps the call open.
async fn stalled_member(
    port: u16,
    room: &str,
) -> (h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>) {
    let socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (h2, connection) = h2::client::Builder::new()
        .initial_window_size(16)
        .handshake::<_, bytes::Bytes>(socket)
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut h2 = h2.ready().await.unwrap();
    let request = http::Request::post(format!(
        "http://127.0.0.1:{port}/chat.ChatService/ChatStream"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("chat-room", room)
    .body(())
    .unwrap();
    let (response, mut send) = h2.send_request(request, false).unwrap();
    // Length-prefixed by hand: flag 0, 4-byte big-endian length, protobuf.
    let message = prost::Message::encode_to_vec(&say("staller", ""));
    let mut frame = vec![0];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    send.send_data(frame.into(), false).unwrap();
    (response, send)
}

#[test]
fn metrics_move_with_members_messages_limits_and_stalls() {
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let server = chat_server(&[
        "--metrics-addr",
        &metrics_addr,
        "--rate-limit",
        "1",
        "--rate-burst",
        "2",
        "--slow-grace-secs",
        "1",
    ]);
    let port = server.port;

    // Before anyone talks: every metric is there, at zero.
    let (status, body) = get(metrics_port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    for name in [
        "chat_connections_total",
        "chat_connections_open",
        "chat_room_members",
        "chat_messages_received_total",
        "chat_messages_delivered_total",
        "chat_member_evictions_total",
        "chat_rate_limited_total",
        "chat_redis_errors_total",
        "chat_fanout_seconds",
    ] {
        assert!(
            body.contains(&format!("# TYPE {name} ")),
            "{name} missing:\n{body}"
        );
    }
    let before = scrape(metrics_port);
    assert_eq!(sample(&before, "chat_messages_received_total"), 0.0);
    assert_eq!(sample(&before, "chat_fanout_seconds_count"), 0.0);
    assert_eq!(get(metrics_port, "/nope").0, "HTTP/1.1 404 Not Found");

    let runtime = Runtime::new().unwrap();
    // Two members on one connection, named by a first message each; then
    // Alice speaks and Bob hears.
    let mut calls = runtime.block_on(async {
        let channel = Channel::connect(format!("127.0.0.1:{port}")).await.unwrap();
        let client = ChatServiceClient::new(channel);
        let mut calls = Vec::new();
        for name in ["alice", "bob"] {
            let mut request = Request::new(());
            request
                .metadata_mut()
                .insert("chat-room", "gauges")
                .unwrap();
            let mut call = client.chat_stream(request).await.unwrap();
            call.send(&say(name, "here")).await.unwrap();
            calls.push(call);
        }
        wait_named(&client, "gauges", &["alice", "bob"]).await;
        calls[0].send(&say("alice", "hi")).await.unwrap();
        loop {
            if next_from(&mut calls[1], "alice").await.message == "hi" {
                break;
            }
        }
        calls
    });
    let after = wait_for(metrics_port, "chat_messages_delivered_total", |n| n >= 1.0);
    assert_eq!(sample(&after, "chat_connections_total"), 1.0);
    assert_eq!(sample(&after, "chat_connections_open"), 1.0);
    assert_eq!(sample(&after, "chat_room_members{room=\"gauges\"}"), 2.0);
    assert_eq!(sample(&after, "chat_messages_received_total"), 3.0);
    assert!(sample(&after, "chat_fanout_seconds_count") >= 1.0);
    assert_eq!(
        sample(&after, "chat_fanout_seconds_bucket{le=\"+Inf\"}"),
        sample(&after, "chat_fanout_seconds_count")
    );

    // Burst 2, both tokens spent on "here" and "hi" (less what refilled at
    // 1/s meanwhile): of four more messages at once, at least two are
    // refused.
    runtime.block_on(async {
        for i in 0..4 {
            calls[0]
                .send(&say("alice", &format!("m{i}")))
                .await
                .unwrap();
        }
    });
    // The four may arrive in more than one read: wait for all of them, then
    // for their verdicts (a message is counted as received when it is
    // decoded, and refused a moment later: several that arrive in one DATA
    // frame are all counted before the first is judged).
    wait_for(metrics_port, "chat_messages_received_total", |n| n == 7.0);
    let limited = wait_for(metrics_port, "chat_rate_limited_total", |n| n >= 2.0);
    assert_eq!(
        sample(&limited, "chat_messages_received_total"),
        7.0,
        "{limited:#?}"
    );

    // A member that never reads is disconnected after the 1 s grace.
    let stalled = runtime.block_on(async {
        let stalled = stalled_member(port, "stall").await;
        let mut request = Request::new(());
        request.metadata_mut().insert("chat-room", "stall").unwrap();
        let channel = Channel::connect(format!("127.0.0.1:{port}")).await.unwrap();
        let client = ChatServiceClient::new(channel);
        // The staller must be in the room before Carol speaks.
        wait_named(&client, "stall", &["staller"]).await;
        let mut speaker = client.chat_stream(request).await.unwrap();
        speaker
            .send(&say("carol", "a message longer than sixteen bytes"))
            .await
            .unwrap();
        (stalled, speaker)
    });
    let evicted = wait_for(
        metrics_port,
        "chat_member_evictions_total{reason=\"stalled\"}",
        |n| n == 1.0,
    );
    assert_eq!(sample(&evicted, "chat_connections_total"), 3.0);
    assert_eq!(
        sample(&evicted, "chat_member_evictions_total{reason=\"lagging\"}"),
        0.0
    );

    // Everyone leaves: the rooms' gauges go, the connections close.
    drop(stalled);
    drop(calls);
    drop(runtime);
    // (A connection may close before its calls' tasks have finished: wait
    // for both.)
    wait_until(
        metrics_port,
        "no connection open and no room listed",
        |samples| {
            sample(samples, "chat_connections_open") == 0.0
                && !samples.keys().any(|k| k.starts_with("chat_room_members"))
        },
    );
    drop(server);
}
