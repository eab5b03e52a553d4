//! Server metrics in the Prometheus text format, served over HTTP/1.1 (hyper)
//! on `chat-server --metrics-addr`.
//!
//! The registry is a set of atomics ([`Metrics`]): the code that sees an
//! event bumps a counter with one call, and a scrape reads every value
//! without stopping anyone. The process's registry is [`METRICS`], which
//! the binary serves; the server is handed it through its builder
//! (`server::Builder::metrics`) rather than reaching for it, so a server in a
//! test counts into a registry of its own, and [`serve`] is told which
//! registry to render. The chat service and the Redis store are handed it
//! the same way (`ChatConfig::metrics`, `RedisOptions::metrics`): nothing
//! in the library reaches for [`METRICS`]; only the binaries name it.
//! Relaxed atomics are enough: each figure is read on its own, and a scrape
//! that sees one counter a moment before another is still a fair picture.
//!
//! What is counted, and where:
//!
//! | metric | type | where it moves |
//! |---|---|---|
//! | `chat_connections_total`, `chat_connections_open` | counter, gauge | an HTTP/2 connection completes its handshake / closes (`server/connection.rs`, into the registry given to `server::Builder::metrics`) |
//! | `chat_room_members{room}` | gauge | a chat call joins / leaves a room (`chat/calls/pipeline.rs`) |
//! | `chat_messages_received_total` | counter | messages (`ChatStream`) and events (`Chat`) read from chat clients (`chat/calls/stream.rs`, `events.rs`, `session.rs`) |
//! | `chat_messages_delivered_total` | counter | messages (chat messages, events, notices) handed to HTTP/2 for a member (`chat/calls/pipeline.rs`) |
//! | `chat_member_evictions_total{reason}` | counter | a member disconnected for not reading: `stalled` (blocked past the grace period) or `lagging` (too far behind the room's log) |
//! | `chat_rate_limited_total` | counter | a message refused by the rate limit |
//! | `chat_redis_errors_total` | counter | an error talking to Redis (`chat/history/redis/mod.rs`) |
//! | `chat_fanout_seconds` | histogram | publishing one batch to a room: encoding it once per protocol, appending it to the room's log and waking every member |
//!
//! Rendering ([`Metrics::render`]) is pure and tested against a byte fixture;
//! [`serve`] is the only I/O.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tracing::{debug, info};

/// The process's metrics.
pub static METRICS: Metrics = Metrics::new();

/// The content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (seconds) of the `chat_fanout_seconds` buckets: from 10 µs
/// (a room of a few members) to 1 s (something is badly wrong).
pub const FANOUT_BUCKETS: [f64; 11] = [
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
];

/// A number that only goes up.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Zero.
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The value now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A number that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Zero.
    pub const fn new() -> Self {
        Gauge(AtomicI64::new(0))
    }
    /// Adds `n` (negative to subtract).
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The value now.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Observations counted into the fixed buckets [`FANOUT_BUCKETS`].
#[derive(Debug)]
pub struct Histogram {
    /// `buckets[i]` counts observations `<= FANOUT_BUCKETS[i]` and above the
    /// previous bound (not cumulative: rendering sums them up).
    buckets: [AtomicU64; FANOUT_BUCKETS.len()],
    /// Observations above the last bound.
    over: AtomicU64,
    /// Sum of all observations, in nanoseconds.
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Empty.
    pub const fn new() -> Self {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; FANOUT_BUCKETS.len()],
            over: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        match FANOUT_BUCKETS.iter().position(|&bound| seconds <= bound) {
            Some(i) => match self.buckets.get(i) {
                Some(bucket) => bucket.fetch_add(1, Ordering::Relaxed),
                None => self.over.fetch_add(1, Ordering::Relaxed),
            },
            None => self.over.fetch_add(1, Ordering::Relaxed),
        };
        let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// Every metric of the server. The process uses [`METRICS`]; tests make
/// their own with [`Metrics::new`].
#[derive(Debug)]
pub struct Metrics {
    /// HTTP/2 connections that completed their handshake.
    pub connections_total: Counter,
    /// HTTP/2 connections open now.
    pub connections_open: Gauge,
    /// Messages read from chat clients: `ChatStream` messages and `Chat`
    /// events after the first.
    pub messages_received: Counter,
    /// Messages handed to HTTP/2 for members, one per recipient: chat
    /// messages, events and the server's notices.
    pub messages_delivered: Counter,
    /// Members disconnected because their stream stayed blocked past the
    /// slow-reader grace period.
    pub evicted_stalled: Counter,
    /// Members disconnected because they fell more than `max_queue_bytes`
    /// behind the room's log.
    pub evicted_lagging: Counter,
    /// Messages refused by the rate limit.
    pub rate_limited: Counter,
    /// Errors talking to Redis.
    pub redis_errors_total: Counter,
    /// Time to publish one batch to a room.
    pub fanout: Histogram,
    /// Members per room; a room is removed when its count falls to zero, so
    /// the label set follows the live rooms.
    rooms: Mutex<BTreeMap<String, i64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts a member in its room while it lives (see [`Metrics::join_room`]).
#[derive(Debug)]
#[must_use = "the member is counted only while this guard lives"]
pub struct RoomMember {
    metrics: &'static Metrics,
    room: String,
}

impl Drop for RoomMember {
    fn drop(&mut self) {
        self.metrics.room_add(&self.room, -1);
    }
}

/// Counts an open connection while it lives (see
/// [`Metrics::connection_opened`]).
#[derive(Debug)]
#[must_use = "the connection is counted only while this guard lives"]
pub struct OpenConnection {
    metrics: &'static Metrics,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics.connections_open.add(-1);
    }
}

/// How many whole length-prefixed gRPC messages `frames` holds (the frames
/// the chat service hands to HTTP/2 are always whole messages).
pub fn count_messages(frames: &[u8]) -> u64 {
    let mut rest = frames;
    let mut n = 0;
    while let Ok(Some(prefix)) = crate::framing::Prefix::parse(rest) {
        let Some(after) = usize::try_from(prefix.len)
            .ok()
            .and_then(|len| len.checked_add(crate::framing::PREFIX_LEN))
            .and_then(|end| rest.get(end..))
        else {
            break;
        };
        n += 1;
        rest = after;
    }
    n
}

impl Metrics {
    /// Every value zero.
    pub const fn new() -> Self {
        Metrics {
            connections_total: Counter::new(),
            connections_open: Gauge::new(),
            messages_received: Counter::new(),
            messages_delivered: Counter::new(),
            evicted_stalled: Counter::new(),
            evicted_lagging: Counter::new(),
            rate_limited: Counter::new(),
            redis_errors_total: Counter::new(),
            fanout: Histogram::new(),
            rooms: Mutex::new(BTreeMap::new()),
        }
    }

    /// Counts a new connection, open until the guard is dropped.
    pub fn connection_opened(&'static self) -> OpenConnection {
        self.connections_total.inc();
        self.connections_open.add(1);
        OpenConnection { metrics: self }
    }

    /// Counts a member of `room` until the guard is dropped.
    pub fn join_room(&'static self, room: &str) -> RoomMember {
        self.room_add(room, 1);
        RoomMember {
            metrics: self,
            room: room.to_owned(),
        }
    }

    fn room_add(&self, room: &str, n: i64) {
        let mut rooms = self.rooms.lock();
        let count = rooms.entry(room.to_owned()).or_insert(0);
        *count += n;
        if *count <= 0 {
            rooms.remove(room);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        // `write!` into a String cannot fail.
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[(String, String)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in lines {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let plain = |value: String| vec![(String::new(), value)];
        metric(
            "chat_connections_total",
            "counter",
            "HTTP/2 connections accepted (handshake completed).",
            &plain(self.connections_total.get().to_string()),
        );
        metric(
            "chat_connections_open",
            "gauge",
            "HTTP/2 connections open now.",
            &plain(self.connections_open.get().to_string()),
        );
        let rooms: Vec<(String, String)> = self
            .rooms
            .lock()
            .iter()
            .map(|(room, n)| {
                (
                    format!("{{room=\"{}\"}}", escape_label(room)),
                    n.to_string(),
                )
            })
            .collect();
        metric(
            "chat_room_members",
            "gauge",
            "Members connected to each room now.",
            &rooms,
        );
        metric(
            "chat_messages_received_total",
            "counter",
            "Messages read from chat clients (ChatStream messages, Chat events).",
            &plain(self.messages_received.get().to_string()),
        );
        metric(
            "chat_messages_delivered_total",
            "counter",
            "Messages handed to HTTP/2 for members, one per recipient (chat messages, events, server notices).",
            &plain(self.messages_delivered.get().to_string()),
        );
        metric(
            "chat_member_evictions_total",
            "counter",
            "Members disconnected for not reading: stalled past the grace period, or lagging too far behind.",
            &[
                (
                    "{reason=\"stalled\"}".to_owned(),
                    self.evicted_stalled.get().to_string(),
                ),
                (
                    "{reason=\"lagging\"}".to_owned(),
                    self.evicted_lagging.get().to_string(),
                ),
            ],
        );
        metric(
            "chat_rate_limited_total",
            "counter",
            "Chat messages refused by the rate limit.",
            &plain(self.rate_limited.get().to_string()),
        );
        metric(
            "chat_redis_errors_total",
            "counter",
            "Errors talking to Redis.",
            &plain(self.redis_errors_total.get().to_string()),
        );
        // Prometheus buckets are cumulative: each counts every observation
        // up to its bound, and `+Inf` equals `_count`.
        let mut lines = Vec::with_capacity(FANOUT_BUCKETS.len() + 3);
        let mut cumulative = 0;
        for (bound, bucket) in FANOUT_BUCKETS.iter().zip(&self.fanout.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            lines.push((format!("_bucket{{le=\"{bound}\"}}"), cumulative.to_string()));
        }
        cumulative += self.fanout.over.load(Ordering::Relaxed);
        lines.push(("_bucket{le=\"+Inf\"}".to_owned(), cumulative.to_string()));
        let sum = self.fanout.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        lines.push(("_sum".to_owned(), sum.to_string()));
        lines.push((
            "_count".to_owned(),
            self.fanout.count.load(Ordering::Relaxed).to_string(),
        ));
        metric(
            "chat_fanout_seconds",
            "histogram",
            "Time to publish one batch of messages to a room: encode once per protocol, append to the room's log, wake every member.",
            &lines,
        );
        out
    }
}

/// A label value as the text format wants it: backslash, double quote and
/// newline escaped.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Answers one HTTP request: `GET /metrics` (or `/`) renders `metrics`.
async fn respond(
    metrics: &'static Metrics,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, content_type: &'static str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(content_type),
        );
        response
    };
    Ok(match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics" | "/") => reply(StatusCode::OK, CONTENT_TYPE, metrics.render()),
        (&Method::GET, _) => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: metrics are at /metrics\n".into(),
        ),
        _ => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        ),
    })
}

/// Serves `metrics` (the process's: [`METRICS`]) over HTTP/1.1 on
/// `listener` until `shutdown` completes. Each connection runs in its own
/// task; they end with the process.
pub async fn serve(
    listener: TcpListener,
    metrics: &'static Metrics,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving metrics");
    }
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    tokio::spawn(async move {
                        let served = hyper::server::conn::http1::Builder::new()
                            .serve_connection(
                                TokioIo::new(socket),
                                service_fn(move |request| respond(metrics, request)),
                            )
                            .await;
                        if let Err(e) = served {
                            debug!(%peer, error = %e, "metrics connection failed");
                        }
                    });
                }
                Err(e) => {
                    debug!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registry with something in every metric, rendered: this is the
    /// exact text a scraper reads.
    const FIXTURE: &str = r#"# HELP chat_connections_total HTTP/2 connections accepted (handshake completed).
# TYPE chat_connections_total counter
chat_connections_total 3
# HELP chat_connections_open HTTP/2 connections open now.
# TYPE chat_connections_open gauge
chat_connections_open 2
# HELP chat_room_members Members connected to each room now.
# TYPE chat_room_members gauge
chat_room_members{room="a \"quoted\" \\ room"} 1
chat_room_members{room="lobby"} 2
# HELP chat_messages_received_total Messages read from chat clients (ChatStream messages, Chat events).
# TYPE chat_messages_received_total counter
chat_messages_received_total 5
# HELP chat_messages_delivered_total Messages handed to HTTP/2 for members, one per recipient (chat messages, events, server notices).
# TYPE chat_messages_delivered_total counter
chat_messages_delivered_total 9
# HELP chat_member_evictions_total Members disconnected for not reading: stalled past the grace period, or lagging too far behind.
# TYPE chat_member_evictions_total counter
chat_member_evictions_total{reason="stalled"} 1
chat_member_evictions_total{reason="lagging"} 0
# HELP chat_rate_limited_total Chat messages refused by the rate limit.
# TYPE chat_rate_limited_total counter
chat_rate_limited_total 4
# HELP chat_redis_errors_total Errors talking to Redis.
# TYPE chat_redis_errors_total counter
chat_redis_errors_total 0
# HELP chat_fanout_seconds Time to publish one batch of messages to a room: encode once per protocol, append to the room's log, wake every member.
# TYPE chat_fanout_seconds histogram
chat_fanout_seconds_bucket{le="0.00001"} 1
chat_fanout_seconds_bucket{le="0.00005"} 1
chat_fanout_seconds_bucket{le="0.0001"} 2
chat_fanout_seconds_bucket{le="0.0005"} 2
chat_fanout_seconds_bucket{le="0.001"} 2
chat_fanout_seconds_bucket{le="0.005"} 2
chat_fanout_seconds_bucket{le="0.01"} 2
chat_fanout_seconds_bucket{le="0.05"} 2
chat_fanout_seconds_bucket{le="0.1"} 2
chat_fanout_seconds_bucket{le="0.5"} 2
chat_fanout_seconds_bucket{le="1"} 2
chat_fanout_seconds_bucket{le="+Inf"} 3
chat_fanout_seconds_sum 2.000105
chat_fanout_seconds_count 3
"#;

    #[test]
    fn renders_the_text_format() {
        // `join_room` and `connection_opened` want a registry that lives for
        // the whole program, as METRICS does.
        let metrics: &'static Metrics = Box::leak(Box::new(Metrics::new()));
        let _c1 = metrics.connection_opened();
        let _c2 = metrics.connection_opened();
        drop(metrics.connection_opened());
        let _l1 = metrics.join_room("lobby");
        let _l2 = metrics.join_room("lobby");
        let _q = metrics.join_room("a \"quoted\" \\ room");
        // A room whose last member left is not listed.
        drop(metrics.join_room("gone"));
        metrics.messages_received.add(5);
        metrics.messages_delivered.add(9);
        metrics.evicted_stalled.inc();
        metrics.rate_limited.add(4);
        metrics.fanout.observe(Duration::from_micros(5));
        metrics.fanout.observe(Duration::from_micros(100)); // on a bound: counted in it
        metrics.fanout.observe(Duration::from_secs(2));
        assert_eq!(metrics.render(), FIXTURE);
    }

    #[test]
    fn counts_whole_messages_in_frames() {
        // flag 0 | length 2 | "hi", then flag 0 | length 0, then half a prefix.
        let frames = [0, 0, 0, 0, 2, b'h', b'i', 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(count_messages(&frames), 2);
        assert_eq!(count_messages(&frames[..6]), 0, "a truncated message");
        assert_eq!(count_messages(&[]), 0);
    }
}
