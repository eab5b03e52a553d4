//! History and scale-out on Redis: a Redis Stream per room, ids assigned by
//! Redis, every server fed from one Pub/Sub channel.
//!
//! # Keys
//!
//! ```text
//! chat:{room}:seq     INCR counter: the room's last message id
//! chat:{room}:log     Stream of messages, entry id "<message id>-0",
//!                     fields u (user) t (text) ts (unix seconds) n (server),
//!                     trimmed with MAXLEN ~ --history-len
//! chat:{room}:epoch   the room's history epoch (16 hex digits)
//! chat:events         Pub/Sub channel: every sequenced batch, all rooms
//! ```
//!
//! # Why the order comes from Redis, and why Pub/Sub
//!
//! Several servers may publish to one room at once. If a server delivered
//! its own members' messages before Redis numbered them, two servers would
//! each show their own messages first and the conversation would read
//! differently on each. So **no server delivers a batch before Redis has
//! sequenced it**: a server hands each batch to one Lua script (below) that,
//! atomically, INCRBYs the room's counter, XADDs the messages to the room's
//! stream under those ids and PUBLISHes the batch, ids included, on
//! `chat:events`. Redis runs scripts one at a time, and one subscriber
//! connection receives published messages in the order they were published,
//! so every server — the sender's too — receives every batch in the same
//! order, ids already increasing: no reorder buffer is needed, and
//! join/leave/typing (published by the same script, without ids) fall into
//! the same order.
//!
//! Streams with `XREAD BLOCK` would also give one order, but a server would
//! need a blocking read per room (or one multi-key read rebuilt as rooms
//! come and go), and it would poll even rooms that are idle. Pub/Sub costs
//! one connection per server whatever the rooms; the stream is still there
//! for what Pub/Sub cannot do — history for joining and resuming clients.
//!
//! Batches are pipelined: the writer task takes every batch waiting (up to
//! `MAX_PIPELINE`) and sends their scripts in one round trip, so the
//! publish path never awaits Redis and throughput does not pay a round trip
//! per message.
//!
//! # Faults
//!
//! ```text
//!          connect + subscribe ok, queue flushed
//!   Down ──────────────────────────────────────▶ Up
//!    ▲  │ (retry every RETRY)                    │
//!    │  ▼                                        │ a write fails, or the
//!   Down: batches are numbered and delivered     │ subscription ends
//!   by the rooms here (live chat goes on),  ◀────┘
//!   queued (bounded) for Redis
//! ```
//!
//! * Unreachable at start: the server serves live chat as above and keeps
//!   trying; `HealthCheck` says `DEGRADED: …`.
//! * Lost mid-run: the same; batches whose script may not have run are
//!   delivered here unless the subscription already brought them back
//!   (each batch carries a per-server number to tell).
//! * Back: the queue is written with the ids the members saw (the flush
//!   script keeps an id when it is still free) and published marked
//!   `flushed`, so other servers deliver it and this one does not again.
//! * Restarted empty: the room's epoch key is gone, so the next script
//!   creates a new epoch — with the counter starting at the id this server
//!   had reached, so ids keep increasing for connected clients — and every
//!   server tells its members the epoch changed (see
//!   [`Room`](crate::chat::room)).
//!
//! While Redis is down each server is an island: its members talk among
//! themselves, and what they said reaches other servers' members when Redis
//! is back (late, out of the live order). Two servers writing one room
//! during the same outage may both use an id; the flush script gives the
//! later one a new id in history.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prost::Message as _;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Value};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::{
    BoxFuture, DEFAULT_HISTORY_LEN, DEFAULT_OUTAGE_QUEUE, Deliver, History, HistoryError, Page,
    Sequenced, Sequencer, Since, StoreHealth, StoredMessage, Submission, new_epoch,
};
use crate::chat::core::Event;

/// The Pub/Sub channel carrying every sequenced batch.
pub const EVENTS_CHANNEL: &str = "chat:events";
/// How often a lost Redis is tried again.
pub const RETRY: Duration = Duration::from_millis(500);
/// Most batches sent in one pipeline.
const MAX_PIPELINE: usize = 512;
/// Connect timeout for every connection to Redis.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A command without an answer for this long counts as a lost connection.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a failed write waits for the subscription to show whether the
/// scripts ran after all.
const SETTLE: Duration = Duration::from_secs(1);

/// Sequences a batch: see the module docs.
///
/// KEYS: seq, log, epoch. ARGV: epoch if new, maxlen, channel, payload,
/// user, timestamp, server, floor, texts…
const SEQUENCE_SCRIPT: &str = r"
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[3], epoch)
  redis.call('SET', KEYS[1], ARGV[8])
end
local n = #ARGV - 8
local last = redis.call('INCRBY', KEYS[1], n)
local first = last - n + 1
for i = 1, n do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], (first + i - 1) .. '-0',
    'u', ARGV[5], 't', ARGV[8 + i], 'ts', ARGV[6], 'n', ARGV[7])
end
redis.call('PUBLISH', ARGV[3], first .. ' ' .. epoch .. ' ' .. ARGV[4])
return first
";

/// Writes a batch delivered while Redis was unreachable, keeping each id
/// that is still free.
///
/// KEYS: seq, log, epoch. ARGV: epoch if new, maxlen, channel, payload,
/// user, timestamp, server, floor, then id and text pairs.
const FLUSH_SCRIPT: &str = r"
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[3], epoch)
  redis.call('SET', KEYS[1], ARGV[8])
end
for i = 9, #ARGV, 2 do
  local id = tonumber(ARGV[i])
  local current = tonumber(redis.call('GET', KEYS[1]) or '0')
  if id > current then
    redis.call('SET', KEYS[1], id)
  else
    id = redis.call('INCR', KEYS[1])
  end
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], id .. '-0',
    'u', ARGV[5], 't', ARGV[i + 1], 'ts', ARGV[6], 'n', ARGV[7])
end
redis.call('PUBLISH', ARGV[3], '0 ' .. epoch .. ' ' .. ARGV[4])
return 0
";

/// Reads a page: the epoch (created if missing), the last id, and entries
/// newest first.
///
/// KEYS: seq, log, epoch. ARGV: epoch if new, floor, after ('' for the
/// newest), count.
const PAGE_SCRIPT: &str = r"
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[3], epoch)
  redis.call('SET', KEYS[1], ARGV[2])
end
local head = tonumber(redis.call('GET', KEYS[1]) or '0')
local low = '-'
if ARGV[3] ~= '' then low = '(' .. ARGV[3] .. '-0' end
local entries = {}
if tonumber(ARGV[4]) > 0 then
  entries = redis.call('XREVRANGE', KEYS[2], '+', low, 'COUNT', ARGV[4])
end
return {epoch, head, entries}
";

/// Settings of [`RedisHistory`].
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Messages kept per room's stream (approximately: `MAXLEN ~`).
    pub history_len: usize,
    /// Most messages queued while Redis is unreachable; the oldest are
    /// dropped beyond it (and counted as errors).
    pub outage_queue: usize,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            history_len: DEFAULT_HISTORY_LEN,
            outage_queue: DEFAULT_OUTAGE_QUEUE,
        }
    }
}

/// What the writer task is asked to do.
enum Work {
    Submit(Submission),
    /// Answer once everything submitted before is written (or queued).
    Flush(oneshot::Sender<()>),
}

/// State shared by the store, its writer and its subscriber.
struct Shared {
    client: Client,
    options: RedisOptions,
    /// Errors met talking to Redis.
    errors: Arc<AtomicU64>,
    writer_up: AtomicBool,
    subscriber_up: AtomicBool,
    /// Messages waiting in the outage queue.
    queued: AtomicUsize,
    /// The highest per-server batch number received back from Redis.
    own_seen: AtomicU64,
    /// The last id seen per room (for rooms created here later).
    last_ids: Mutex<HashMap<String, u64>>,
    /// The last error, for health reports.
    last_error: Mutex<String>,
    /// A connection for page reads (multiplexed: clones share it).
    reader: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// Signalled when the subscription is lost, so an idle writer stops
    /// trusting its connection at once rather than on its next write.
    lost: tokio::sync::Notify,
}

impl Shared {
    fn error(&self, what: &str, error: &dyn fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        // The process-wide figure `--metrics-addr` exports.
        crate::metrics::record_redis_error();
        *self.last_error.lock() = format!("{what}: {error}");
    }

    async fn connect(&self) -> redis::RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    fn note_last_id(&self, room: &str, id: u64) {
        let mut ids = self.last_ids.lock();
        match ids.get_mut(room) {
            Some(last) => *last = (*last).max(id),
            None => {
                ids.insert(room.to_owned(), id);
            }
        }
    }
}

/// The Redis store. See the module docs.
pub struct RedisHistory {
    shared: Arc<Shared>,
    work: mpsc::UnboundedSender<Work>,
    /// Taken by [`History::start`].
    inbox: Mutex<Option<mpsc::UnboundedReceiver<Work>>>,
}

impl fmt::Debug for RedisHistory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisHistory")
            .field("health", &self.health())
            .field("errors", &self.errors())
            .finish()
    }
}

impl RedisHistory {
    /// A store on the Redis at `url` (`redis://host:port[/db]`). Only the
    /// URL is checked here: connecting happens in the background once
    /// started, and goes on until it succeeds.
    pub fn new(url: &str, options: RedisOptions) -> Result<Self, HistoryError> {
        let client = Client::open(url).map_err(|e| HistoryError(format!("redis url: {e}")))?;
        let (work, inbox) = mpsc::unbounded_channel();
        Ok(RedisHistory {
            shared: Arc::new(Shared {
                client,
                options,
                errors: Arc::new(AtomicU64::new(0)),
                writer_up: AtomicBool::new(false),
                subscriber_up: AtomicBool::new(false),
                queued: AtomicUsize::new(0),
                own_seen: AtomicU64::new(0),
                last_ids: Mutex::new(HashMap::new()),
                last_error: Mutex::new("not connected yet".to_owned()),
                reader: tokio::sync::Mutex::new(None),
                lost: tokio::sync::Notify::new(),
            }),
            work,
            inbox: Mutex::new(Some(inbox)),
        })
    }

    /// The error counter, shared: for a metrics exporter to read.
    pub fn error_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.shared.errors)
    }

    /// Waits up to `within` for the first connection and subscription:
    /// lets a server start in the normal mode when Redis is there.
    pub async fn wait_connected(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.health() == StoreHealth::Ok {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

fn keys(room: &str) -> [String; 3] {
    [
        format!("chat:{{{room}}}:seq"),
        format!("chat:{{{room}}}:log"),
        format!("chat:{{{room}}}:epoch"),
    ]
}

impl Sequencer for RedisHistory {
    fn start(&self, hub: Weak<dyn Deliver>) {
        let Some(inbox) = self.inbox.lock().take() else {
            warn!("redis history started twice: ignored");
            return;
        };
        tokio::spawn(subscriber(Arc::clone(&self.shared), hub.clone()));
        tokio::spawn(writer(Arc::clone(&self.shared), hub, inbox));
    }

    /// To the writer task, which has Redis number the batch; it comes back
    /// through the subscription (or, while Redis is unreachable, is
    /// numbered here: `Deliver::number_here`).
    fn publish(&self, batch: Submission, _rooms: &dyn Deliver) -> bool {
        // Fails only once the writer task is gone (the runtime is shutting
        // down): nothing can be delivered any more then.
        let _ = self.work.send(Work::Submit(batch));
        true
    }
}

impl History for RedisHistory {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn last_id(&self, room: &str) -> u64 {
        self.shared.last_ids.lock().get(room).copied().unwrap_or(0)
    }

    fn page(&self, room: &str, since: Since) -> BoxFuture<'_, Result<Page, HistoryError>> {
        let room = room.to_owned();
        Box::pin(async move {
            let (after, limit) = match since {
                Since::Latest { limit } => (String::new(), limit),
                Since::After { id, limit } => (id.to_string(), limit),
            };
            let floor = self.last_id(&room);
            let mut attempt = 0;
            loop {
                attempt += 1;
                let mut slot = self.shared.reader.lock().await;
                let mut conn = match slot.as_ref() {
                    Some(conn) => conn.clone(),
                    None => match self.shared.connect().await {
                        Ok(mut conn) => {
                            // Loaded up front: otherwise every read racing
                            // on a fresh Redis would meet NOSCRIPT first.
                            if let Err(e) = redis::Script::new(PAGE_SCRIPT)
                                .prepare_invoke()
                                .load_async(&mut conn)
                                .await
                            {
                                self.shared.error("history read: script load", &e);
                            }
                            *slot = Some(conn.clone());
                            conn
                        }
                        Err(e) => {
                            self.shared.error("history read: connect", &e);
                            return Err(HistoryError(format!("redis unreachable: {e}")));
                        }
                    },
                };
                drop(slot);
                let result: redis::RedisResult<Value> = redis::Script::new(PAGE_SCRIPT)
                    .key(&keys(&room)[..])
                    .arg(new_epoch())
                    .arg(floor)
                    .arg(&after)
                    .arg(limit)
                    .invoke_async(&mut conn)
                    .await;
                match result {
                    Ok(value) => return parse_page(value).map_err(HistoryError),
                    Err(e) => {
                        self.shared.error("history read", &e);
                        // The connection may be a dead one from before a
                        // restart: one more try on a new connection.
                        *self.shared.reader.lock().await = None;
                        if attempt >= 2 {
                            return Err(HistoryError(format!("redis: {e}")));
                        }
                    }
                }
            }
        })
    }

    fn health(&self) -> StoreHealth {
        let s = &self.shared;
        if s.writer_up.load(Ordering::Relaxed) && s.subscriber_up.load(Ordering::Relaxed) {
            return StoreHealth::Ok;
        }
        StoreHealth::Degraded(format!(
            "redis unreachable ({}); live chat only, {} messages queued for history",
            s.last_error.lock(),
            s.queued.load(Ordering::Relaxed)
        ))
    }

    fn errors(&self) -> u64 {
        self.shared.errors.load(Ordering::Relaxed)
    }

    fn flush(&self, within: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let (done, wait) = oneshot::channel();
            if self.work.send(Work::Flush(done)).is_err() {
                return;
            }
            if tokio::time::timeout(within, wait).await.is_err() {
                warn!("history flush timed out");
            }
            let queued = self.shared.queued.load(Ordering::Relaxed);
            if queued > 0 {
                warn!(
                    queued,
                    "redis unreachable at shutdown: queued messages are not kept"
                );
            }
        })
    }
}

// ---------------------------------------------------------------------------
// The payload of a published batch.
//
// ```text
// "<first id> <epoch> <WireBatch, protobuf>"
// ```
//
// The first id and the epoch are written by the script (the sender cannot
// know them); the rest is the sender's, passed through as bytes.

#[derive(Clone, PartialEq, prost::Message)]
struct WireBatch {
    #[prost(string, tag = "1")]
    room: String,
    #[prost(uint64, tag = "2")]
    origin: u64,
    #[prost(uint64, tag = "3")]
    sender: u64,
    #[prost(string, tag = "4")]
    user: String,
    #[prost(int64, tag = "5")]
    timestamp: i64,
    #[prost(message, repeated, tag = "6")]
    events: Vec<WireEvent>,
    /// Delivered by its origin while Redis was down.
    #[prost(bool, tag = "7")]
    flushed: bool,
    /// For flushed batches: the id of the first message, as delivered.
    #[prost(uint64, tag = "8")]
    first_id: u64,
    /// The origin's own number for the batch.
    #[prost(uint64, tag = "9")]
    seq_no: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WireEvent {
    /// 1 message, 2 typing started, 3 typing stopped, 4 joined, 5 left.
    #[prost(uint32, tag = "1")]
    kind: u32,
    #[prost(string, tag = "2")]
    text: String,
}

fn to_wire(events: &[Event]) -> Vec<WireEvent> {
    events
        .iter()
        .map(|e| match e {
            Event::Message { text } => WireEvent {
                kind: 1,
                text: text.clone(),
            },
            Event::Typing { started } => WireEvent {
                kind: if *started { 2 } else { 3 },
                text: String::new(),
            },
            Event::Joined => WireEvent {
                kind: 4,
                text: String::new(),
            },
            Event::Left => WireEvent {
                kind: 5,
                text: String::new(),
            },
        })
        .collect()
}

fn from_wire(events: Vec<WireEvent>) -> Vec<Event> {
    events
        .into_iter()
        .filter_map(|e| match e.kind {
            1 => Some(Event::Message { text: e.text }),
            2 => Some(Event::Typing { started: true }),
            3 => Some(Event::Typing { started: false }),
            4 => Some(Event::Joined),
            5 => Some(Event::Left),
            // A newer server's event kind: skipped rather than misread.
            _ => None,
        })
        .collect()
}

/// Parses a published payload. Pure: bytes in, batch out.
fn parse_published(payload: &[u8]) -> Result<(Sequenced, u64), String> {
    let mut parts = payload.splitn(3, |&b| b == b' ');
    let (Some(first), Some(epoch), Some(blob)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("payload without id and epoch".into());
    };
    let first: u64 = std::str::from_utf8(first)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("payload id is not a number")?;
    let epoch = std::str::from_utf8(epoch)
        .map_err(|_| "payload epoch is not text")?
        .to_owned();
    let wire = WireBatch::decode(blob).map_err(|e| format!("payload batch: {e}"))?;
    let first_id = if wire.flushed { wire.first_id } else { first };
    Ok((
        Sequenced {
            room: wire.room,
            origin: wire.origin,
            sender: wire.sender,
            user: wire.user,
            timestamp: wire.timestamp,
            first_id,
            epoch,
            events: from_wire(wire.events),
            flushed: wire.flushed,
        },
        wire.seq_no,
    ))
}

/// Parses the page script's reply `{epoch, head, entries newest first}`.
fn parse_page(value: Value) -> Result<Page, String> {
    let Value::Array(mut parts) = value else {
        return Err(format!("page reply is not an array: {value:?}"));
    };
    if parts.len() != 3 {
        return Err(format!("page reply has {} parts, not 3", parts.len()));
    }
    let entries = parts.pop().unwrap_or(Value::Nil);
    let head = match parts.pop() {
        Some(Value::Int(n)) => u64::try_from(n).map_err(|_| "negative head id")?,
        other => return Err(format!("page head is not a number: {other:?}")),
    };
    let epoch = match parts.pop() {
        Some(Value::BulkString(b)) => String::from_utf8(b).map_err(|_| "epoch is not text")?,
        Some(Value::SimpleString(s)) => s,
        other => return Err(format!("page epoch is not text: {other:?}")),
    };
    let entries = match entries {
        Value::Array(entries) => entries,
        Value::Nil => Vec::new(),
        other => return Err(format!("page entries are not an array: {other:?}")),
    };
    let mut messages = Vec::with_capacity(entries.len());
    for entry in entries.into_iter().rev() {
        messages.push(parse_entry(entry)?);
    }
    Ok(Page {
        epoch,
        head,
        messages,
    })
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// One stream entry: `["<id>-0", [field, value, ...]]`.
fn parse_entry(entry: Value) -> Result<StoredMessage, String> {
    let Value::Array(parts) = entry else {
        return Err("stream entry is not an array".into());
    };
    let (Some(id), Some(Value::Array(fields))) = (parts.first(), parts.get(1)) else {
        return Err("stream entry without id and fields".into());
    };
    let id = text(id).ok_or("stream entry id is not text")?;
    let id: u64 = id
        .split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .ok_or_else(|| format!("stream entry id {id:?}"))?;
    let mut message = StoredMessage {
        id,
        user: String::new(),
        text: String::new(),
        timestamp: 0,
    };
    for pair in fields.chunks(2) {
        let (Some(key), Some(value)) = (pair.first().and_then(text), pair.get(1).and_then(text))
        else {
            continue;
        };
        match key.as_str() {
            "u" => message.user = value,
            "t" => message.text = value,
            "ts" => message.timestamp = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    Ok(message)
}

// ---------------------------------------------------------------------------
// The subscriber: every server's one way in for sequenced batches.

async fn subscriber(shared: Arc<Shared>, hub: Weak<dyn Deliver>) {
    let mut reported = false;
    loop {
        let connected = async {
            let mut pubsub = shared.client.get_async_pubsub().await?;
            pubsub.subscribe(EVENTS_CHANNEL).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connected).await {
            Ok(Ok(pubsub)) => {
                info!(channel = EVENTS_CHANNEL, "redis: subscribed");
                reported = false;
                shared.subscriber_up.store(true, Ordering::SeqCst);
                let mut messages = pubsub.into_on_message();
                loop {
                    let next = std::future::poll_fn(|cx| {
                        futures_core::Stream::poll_next(std::pin::Pin::new(&mut messages), cx)
                    })
                    .await;
                    let Some(message) = next else {
                        break;
                    };
                    let Some(hub) = hub.upgrade() else {
                        return;
                    };
                    match parse_published(message.get_payload_bytes()) {
                        Ok((batch, seq_no)) => {
                            let count = batch
                                .events
                                .iter()
                                .filter(|e| matches!(e, Event::Message { .. }))
                                .count() as u64;
                            if count > 0 {
                                shared.note_last_id(&batch.room, batch.first_id + count - 1);
                            }
                            if batch.origin == hub.node_id() && !batch.flushed {
                                shared.own_seen.fetch_max(seq_no, Ordering::SeqCst);
                            }
                            hub.sequenced(batch);
                        }
                        Err(why) => {
                            shared.error("redis: bad published batch", &why);
                            warn!(%why, "redis: published batch ignored");
                        }
                    }
                }
                shared.subscriber_up.store(false, Ordering::SeqCst);
                shared.lost.notify_waiters();
                shared.error("redis subscription", &"connection lost");
                warn!("redis: subscription lost; live chat goes on locally, retrying");
            }
            Ok(Err(e)) => {
                shared.error("redis subscribe", &e);
                if !reported {
                    warn!(error = %e, "redis: cannot subscribe; retrying every {RETRY:?}");
                    reported = true;
                }
            }
            Err(_) => {
                shared.error("redis subscribe", &"timed out");
                if !reported {
                    warn!("redis: subscribing timed out; retrying every {RETRY:?}");
                    reported = true;
                }
            }
        }
        if hub.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(RETRY).await;
    }
}

// ---------------------------------------------------------------------------
// The writer: sequences submissions, or delivers them here while Redis is
// down, and writes the outage queue when it is back.

/// A batch delivered here while Redis was down, waiting to be written.
struct Queued {
    batch: Submission,
    messages: Vec<StoredMessage>,
}

/// The writer's connection and its scripts.
struct Link {
    conn: MultiplexedConnection,
    sequence: redis::Script,
    flush: redis::Script,
}

async fn open_link(shared: &Shared) -> redis::RedisResult<Link> {
    let mut conn = shared.connect().await?;
    let sequence = redis::Script::new(SEQUENCE_SCRIPT);
    let flush = redis::Script::new(FLUSH_SCRIPT);
    // Loaded on every connection: a restarted Redis has lost its script cache.
    sequence.prepare_invoke().load_async(&mut conn).await?;
    flush.prepare_invoke().load_async(&mut conn).await?;
    Ok(Link {
        conn,
        sequence,
        flush,
    })
}

/// The script arguments both scripts share, after the keys.
fn common_args(
    cmd: &mut redis::Cmd,
    shared: &Shared,
    batch: &Submission,
    payload: Vec<u8>,
    node: u64,
) {
    cmd.arg(new_epoch())
        .arg(shared.options.history_len)
        .arg(EVENTS_CHANNEL)
        .arg(payload)
        .arg(&batch.user)
        .arg(batch.timestamp)
        .arg(node)
        .arg(batch.floor);
}

fn evalsha(script: &redis::Script, room: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(3).arg(&keys(room)[..]);
    cmd
}

async fn writer(
    shared: Arc<Shared>,
    hub: Weak<dyn Deliver>,
    mut inbox: mpsc::UnboundedReceiver<Work>,
) {
    let mut link: Option<Link> = None;
    let mut outage: VecDeque<Queued> = VecDeque::new();
    let mut next_try = Instant::now();
    let mut next_seq_no: u64 = 0;
    let mut reported_down = false;
    let mut last_report = Instant::now();
    loop {
        let Some(node) = hub.upgrade().map(|h| h.node_id()) else {
            return;
        };
        if link.is_none() && Instant::now() >= next_try {
            match open_link(&shared).await {
                Ok(l) => {
                    info!("redis: connected");
                    link = Some(l);
                }
                Err(e) => {
                    shared.error("redis connect", &e);
                    next_try = Instant::now() + RETRY;
                    if !reported_down || last_report.elapsed() > Duration::from_secs(30) {
                        warn!(error = %e, queued = shared.queued.load(Ordering::Relaxed),
                            "redis unreachable: live chat goes on, history writes are queued; retrying");
                        reported_down = true;
                        last_report = Instant::now();
                    }
                }
            }
        }
        let subscribed = shared.subscriber_up.load(Ordering::SeqCst);
        if let (Some(l), true, false) = (link.as_mut(), subscribed, outage.is_empty()) {
            match write_queued(&shared, l, &outage, node).await {
                Ok(()) => {
                    let written: usize = outage.iter().map(|q| q.messages.len()).sum();
                    info!(
                        messages = written,
                        "redis: queued messages written to history"
                    );
                    outage.clear();
                    shared.queued.store(0, Ordering::Relaxed);
                }
                Err(e) => {
                    shared.error("redis flush", &e);
                    link = None;
                    next_try = Instant::now() + RETRY;
                }
            }
        }
        let up = link.is_some() && subscribed && outage.is_empty();
        if up && !shared.writer_up.swap(true, Ordering::SeqCst) && reported_down {
            info!("redis: back; history and scale-out resumed");
            reported_down = false;
        }
        if !up {
            shared.writer_up.store(false, Ordering::SeqCst);
        }

        // Wait for work; while down, also wake up to retry.
        let first = if up {
            tokio::select! {
                work = inbox.recv() => work,
                () = shared.lost.notified() => {
                    // Most likely Redis itself went away: start afresh.
                    link = None;
                    next_try = Instant::now();
                    continue;
                }
            }
        } else {
            tokio::select! {
                work = inbox.recv() => work,
                () = tokio::time::sleep(RETRY) => continue,
            }
        };
        let Some(first) = first else {
            return;
        };
        let mut batches = Vec::new();
        let mut acks = Vec::new();
        let mut next = Some(first);
        while let Some(work) = next.take() {
            match work {
                Work::Submit(batch) => batches.push(batch),
                Work::Flush(ack) => acks.push(ack),
            }
            if batches.len() < MAX_PIPELINE {
                next = inbox.try_recv().ok();
            }
        }
        let numbered: Vec<(u64, Submission)> = batches
            .into_iter()
            .map(|b| {
                next_seq_no += 1;
                (next_seq_no, b)
            })
            .collect();

        let mut unsent = numbered;
        if let (true, Some(l)) = (up, link.as_mut()) {
            match sequence(&shared, l, &unsent, node).await {
                Ok(()) => unsent.clear(),
                Err(e) => {
                    shared.error("redis write", &e);
                    warn!(error = %e, "redis: write failed; delivering locally until it is back");
                    link = None;
                    shared.writer_up.store(false, Ordering::SeqCst);
                    reported_down = true;
                    last_report = Instant::now();
                    next_try = Instant::now() + RETRY;
                    // Batches whose script ran come back through the
                    // subscription (until it notices the loss too); give it
                    // a moment, then deliver the rest here.
                    let settle = Instant::now() + SETTLE;
                    while shared.subscriber_up.load(Ordering::SeqCst) && Instant::now() < settle {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    let seen = shared.own_seen.load(Ordering::SeqCst);
                    unsent.retain(|(n, _)| *n > seen);
                }
            }
        }
        if !unsent.is_empty() {
            let Some(hub) = hub.upgrade() else {
                return;
            };
            for (_, batch) in unsent {
                let mut messages = Vec::new();
                let delivered =
                    hub.number_here(batch.clone(), &mut |m| messages.extend_from_slice(m));
                if !delivered {
                    // Everyone left meanwhile (or the server is shutting
                    // down): nobody to deliver to, no room to number them.
                    let lost = batch.texts().count();
                    if lost > 0 {
                        warn!(room = %batch.room, lost, "history store unreachable and the room is gone: messages not kept");
                    }
                    continue;
                }
                queue(&shared, &mut outage, Queued { batch, messages });
            }
        }
        for ack in acks {
            let _ = ack.send(());
        }
    }
}

/// Adds to the outage queue, dropping the oldest beyond the bound.
fn queue(shared: &Shared, outage: &mut VecDeque<Queued>, item: Queued) {
    let limit = shared.options.outage_queue;
    let mut queued = shared.queued.load(Ordering::Relaxed) + item.messages.len();
    outage.push_back(item);
    while queued > limit {
        let Some(dropped) = outage.pop_front() else {
            break;
        };
        queued -= dropped.messages.len();
        shared.error("redis outage queue", &"full: oldest messages dropped");
        warn!(
            dropped = dropped.messages.len(),
            limit, "redis outage queue full: oldest messages will not be in history"
        );
    }
    shared.queued.store(queued, Ordering::Relaxed);
}

/// Sends the sequence script for each batch, in one pipeline.
async fn sequence(
    shared: &Shared,
    link: &mut Link,
    batches: &[(u64, Submission)],
    node: u64,
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    for (seq_no, batch) in batches {
        let payload = WireBatch {
            room: batch.room.clone(),
            origin: node,
            sender: batch.sender,
            user: batch.user.clone(),
            timestamp: batch.timestamp,
            events: to_wire(&batch.events),
            flushed: false,
            first_id: 0,
            seq_no: *seq_no,
        }
        .encode_to_vec();
        let mut cmd = evalsha(&link.sequence, &batch.room);
        common_args(&mut cmd, shared, batch, payload, node);
        for text in batch.texts() {
            cmd.arg(text);
        }
        pipe.add_command(cmd).ignore();
    }
    debug!(batches = batches.len(), "redis: sequencing");
    pipe.query_async::<()>(&mut link.conn).await
}

/// Writes the outage queue with the ids its messages were delivered with.
async fn write_queued(
    shared: &Shared,
    link: &mut Link,
    outage: &VecDeque<Queued>,
    node: u64,
) -> redis::RedisResult<()> {
    let mut pipe = redis::pipe();
    for queued in outage {
        let batch = &queued.batch;
        let payload = WireBatch {
            room: batch.room.clone(),
            origin: node,
            sender: batch.sender,
            user: batch.user.clone(),
            timestamp: batch.timestamp,
            events: to_wire(&batch.events),
            flushed: true,
            first_id: queued.messages.first().map_or(0, |m| m.id),
            seq_no: 0,
        }
        .encode_to_vec();
        let mut cmd = evalsha(&link.flush, &batch.room);
        // A new epoch continues from just before the first queued id.
        let floor = queued
            .messages
            .first()
            .map_or(batch.floor, |m| m.id.saturating_sub(1));
        let batch_floor = Submission {
            floor,
            ..batch.clone()
        };
        common_args(&mut cmd, shared, &batch_floor, payload, node);
        for message in &queued.messages {
            cmd.arg(message.id).arg(&message.text);
        }
        pipe.add_command(cmd).ignore();
    }
    pipe.query_async::<()>(&mut link.conn).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn published_batches_round_trip() {
        let wire = WireBatch {
            room: "lobby".into(),
            origin: 7,
            sender: 3,
            user: "ann".into(),
            timestamp: 1_700_000_000,
            events: to_wire(&[
                Event::Typing { started: false },
                Event::Message {
                    text: "hi there".into(),
                },
                Event::Message {
                    text: "again".into(),
                },
                Event::Left,
            ]),
            flushed: false,
            first_id: 0,
            seq_no: 12,
        };
        // What the script publishes: "<first id> <epoch> <batch>".
        let mut payload = b"41 00aa11bb22cc33dd ".to_vec();
        payload.extend(wire.encode_to_vec());
        let (batch, seq_no) = parse_published(&payload).unwrap();
        assert_eq!(seq_no, 12);
        assert_eq!(
            (batch.first_id, batch.epoch.as_str()),
            (41, "00aa11bb22cc33dd")
        );
        assert_eq!(
            (batch.origin, batch.sender, batch.user.as_str()),
            (7, 3, "ann")
        );
        assert_eq!(batch.events.len(), 4);
        assert!(matches!(&batch.events[1], Event::Message { text } if text == "hi there"));
        assert!(matches!(batch.events[3], Event::Left));

        // A flushed batch keeps the ids it was delivered with.
        let flushed = WireBatch {
            flushed: true,
            first_id: 9,
            ..wire
        };
        let mut payload = b"0 e1 ".to_vec();
        payload.extend(flushed.encode_to_vec());
        let (batch, _) = parse_published(&payload).unwrap();
        assert!(batch.flushed);
        assert_eq!(batch.first_id, 9);
    }

    #[test]
    fn bad_payloads_are_errors() {
        assert!(parse_published(b"").is_err());
        assert!(parse_published(b"12 only").is_err());
        assert!(parse_published(b"x e \x08\x01").is_err());
        // A truncated protobuf.
        assert!(parse_published(b"1 e \x0a\x10ab").is_err());
    }

    #[test]
    fn pages_parse_newest_first_into_oldest_first() {
        let entry = |id: &str, text: &str| {
            Value::Array(vec![
                bulk(id),
                Value::Array(vec![
                    bulk("u"),
                    bulk("ann"),
                    bulk("t"),
                    bulk(text),
                    bulk("ts"),
                    bulk("17"),
                    bulk("n"),
                    bulk("99"),
                ]),
            ])
        };
        let reply = Value::Array(vec![
            bulk("ep"),
            Value::Int(12),
            Value::Array(vec![entry("12-0", "c"), entry("11-0", "b")]),
        ]);
        let page = parse_page(reply).unwrap();
        assert_eq!(page.epoch, "ep");
        assert_eq!(page.head, 12);
        let got: Vec<(u64, &str)> = page
            .messages
            .iter()
            .map(|m| (m.id, m.text.as_str()))
            .collect();
        assert_eq!(got, vec![(11, "b"), (12, "c")]);
        assert_eq!(page.messages[0].timestamp, 17);

        let empty = Value::Array(vec![bulk("ep"), Value::Int(0), Value::Array(vec![])]);
        assert!(parse_page(empty).unwrap().messages.is_empty());
        assert!(parse_page(Value::Int(3)).is_err());
        assert!(parse_page(Value::Array(vec![bulk("ep"), Value::Int(-1), Value::Nil])).is_err());
    }
}
