//! History and scale-out on Redis: a Redis Stream per room, ids assigned by
//! Redis, each server fed from the Pub/Sub channels of the rooms it has
//! members in. One instance, or a Redis Cluster (see `backend`).
//!
//! # Keys
//!
//! ```text
//! chat:{room}:seq     INCR counter: the room's last message id
//! chat:{room}:log     Stream of messages, entry id "<message id>-0",
//!                     fields u (user) t (text) ts (unix seconds) n (server)
//!                     and f (1: written from an outage queue),
//!                     trimmed with MAXLEN ~ --history-len
//! chat:{room}:epoch   the room's history epoch (16 hex digits)
//! chat:{room}:events  Pub/Sub channel: the room's sequenced batches
//!                     (sharded Pub/Sub on a cluster; see `subscriber`)
//! chat:{room}:names   names held in the room, as leases (see `roster`)
//! chat:nodes          members per server (see `roster`)
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
//! stream under those ids and PUBLISHes the batch, ids included, on the
//! room's channel. Redis runs a room's scripts one at a time, and one
//! subscriber connection receives published messages in the order they were
//! published, so every server with members in the room — the sender's too —
//! receives its batches in the same order, ids already increasing: no reorder buffer is needed, and
//! join/leave/typing (published by the same script, without ids) fall into
//! the same order.
//!
//! Streams with `XREAD BLOCK` would also give one order, but a server would
//! need a blocking read per room (or one multi-key read rebuilt as rooms
//! come and go), and it would poll even rooms that are idle. Pub/Sub costs
//! one connection per server whatever the rooms (one subscription per room
//! it has members in); the stream is still there
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
//!   script keeps an id when it is still free, else gives the batch the next
//!   ones) and published marked `flushed` with the ids history gave it, so
//!   other servers deliver it and this one does not again.
//! * Subscription lost (with or without the rest): once subscribed again,
//!   each room repairs what was published meanwhile from its stream (see
//!   `subscriber`).
//! * Restarted empty: the room's epoch key is gone, so the next script
//!   creates a new epoch — with the counter starting at the id this server
//!   had reached, so ids keep increasing for connected clients — and every
//!   server tells its members the epoch changed (see
//!   [`room`](crate::chat::core::room)).
//!
//! While Redis is down each server is an island: its members talk among
//! themselves, and what they said reaches other servers' members when Redis
//! is back (late, out of the live order). Two servers writing one room
//! during the same outage may both use an id; the flush script gives the
//! later one a new id in history. Names taken during an outage are settled
//! when it ends (see `roster`).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prost::Message as _;
use redis::Value;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::{
    BoxFuture, DEFAULT_HISTORY_LEN, DEFAULT_OUTAGE_QUEUE, Deliver, History, HistoryError, Page,
    Sequenced, Sequencer, Since, StoreHealth, StoredMessage, Submission, new_epoch,
};
use crate::chat::core::Event;

mod backend;
mod roster;
mod subscriber;
mod wire;
mod writer;

use backend::{Backend, Conn};
pub use roster::DEFAULT_NAME_LEASE;
use roster::{Leases, keeper};
use subscriber::{Follow, subscriber};
use wire::parse_page;
use writer::writer;

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
/// that is still free, and publishes it with the first id it got (its ids
/// stay consecutive: if the first is kept, every one is; if not, each gets
/// the next after the room's last).
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
local first = 0
for i = 9, #ARGV, 2 do
  local id = tonumber(ARGV[i])
  local current = tonumber(redis.call('GET', KEYS[1]) or '0')
  if id > current then
    redis.call('SET', KEYS[1], id)
  else
    id = redis.call('INCR', KEYS[1])
  end
  if first == 0 then first = id end
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], id .. '-0',
    'u', ARGV[5], 't', ARGV[i + 1], 'ts', ARGV[6], 'n', ARGV[7], 'f', '1')
end
redis.call('PUBLISH', ARGV[3], first .. ' ' .. epoch .. ' ' .. ARGV[4])
return first
";

/// Reads what a room's stream holds after an id, with who wrote each entry:
/// the repair after a lost subscription (see `subscriber`).
///
/// KEYS: log, epoch. ARGV: after, count.
const GAP_SCRIPT: &str = r"
local epoch = redis.call('GET', KEYS[2]) or ''
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1] .. '-0', '+', 'COUNT', ARGV[2])
return {epoch, entries}
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
    /// Where errors talking to Redis are counted (`chat_redis_errors_total`).
    /// Default: a private registry nobody reads.
    pub metrics: &'static crate::metrics::Metrics,
    /// How long a claimed name stays held without being renewed: a server
    /// that dies loses its members' names after this (see `roster`).
    pub name_lease: Duration,
}

/// Where a store built without a registry counts its errors.
static DISCARDED_METRICS: crate::metrics::Metrics = crate::metrics::Metrics::new();

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            history_len: DEFAULT_HISTORY_LEN,
            outage_queue: DEFAULT_OUTAGE_QUEUE,
            metrics: &DISCARDED_METRICS,
            name_lease: DEFAULT_NAME_LEASE,
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
    /// One Redis, or a cluster.
    backend: Backend,
    options: RedisOptions,
    /// Errors met talking to Redis.
    errors: Arc<AtomicU64>,
    writer_up: AtomicBool,
    subscriber_up: AtomicBool,
    /// Messages waiting in the outage queue.
    queued: AtomicUsize,
    /// Per room, the highest per-server batch number received back from
    /// Redis (per room: on a cluster, rooms on different shards come back
    /// in no common order).
    own_seen: Mutex<HashMap<String, u64>>,
    /// The last id seen per room (for rooms created here later).
    last_ids: Mutex<HashMap<String, u64>>,
    /// The last error, for health reports.
    last_error: Mutex<String>,
    /// A connection for page reads (multiplexed: clones share it).
    reader: tokio::sync::Mutex<Option<Conn>>,
    /// Signalled when the subscription is lost, so an idle writer stops
    /// trusting its connection at once rather than on its next write.
    lost: tokio::sync::Notify,
    /// The names this server's members hold (see `roster`).
    leases: Mutex<Leases>,
    /// Names let go while Redis could not be told: room, lowercased name,
    /// holder. The keeper tells it.
    releases: Mutex<Vec<(String, String, crate::chat::history::roster::Holder)>>,
    /// Rooms to start or stop receiving, to the subscriber task.
    follows: mpsc::UnboundedSender<Follow>,
}

impl Shared {
    fn error(&self, what: &str, error: &dyn fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        // The figure `--metrics-addr` exports, in the registry we were given.
        self.options.metrics.redis_errors_total.inc();
        *self.last_error.lock() = format!("{what}: {error}");
    }

    async fn connect(&self) -> redis::RedisResult<Conn> {
        self.backend.connect().await
    }

    /// A script's text for this backend: `PUBLISH` becomes `SPUBLISH` on a
    /// cluster (see `backend`).
    fn script(&self, source: &str) -> redis::Script {
        let publish = format!("'{}'", self.backend.publish_command());
        redis::Script::new(&source.replace("'PUBLISH'", &publish))
    }

    /// The highest batch number of this server seen back in `room`.
    fn own_seen(&self, room: &str) -> u64 {
        self.own_seen.lock().get(room).copied().unwrap_or(0)
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
    /// Taken by [`Sequencer::start`].
    inbox: Mutex<Option<mpsc::UnboundedReceiver<Work>>>,
    /// Taken by [`Sequencer::start`].
    follow_inbox: Mutex<Option<mpsc::UnboundedReceiver<Follow>>>,
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
        RedisHistory::with_backend(Backend::open(&[url.to_owned()], false)?, options)
    }

    /// A store on a Redis Cluster, reached through any of `seeds`
    /// (`redis://host:port` each; one is enough, more survive one being
    /// down). A room's keys and channel live on one shard; rooms spread
    /// over the shards.
    pub fn cluster(seeds: &[String], options: RedisOptions) -> Result<Self, HistoryError> {
        RedisHistory::with_backend(Backend::open(seeds, true)?, options)
    }

    fn with_backend(backend: Backend, options: RedisOptions) -> Result<Self, HistoryError> {
        let (work, inbox) = mpsc::unbounded_channel();
        let (follows, follow_inbox) = mpsc::unbounded_channel();
        Ok(RedisHistory {
            shared: Arc::new(Shared {
                backend,
                options,
                errors: Arc::new(AtomicU64::new(0)),
                writer_up: AtomicBool::new(false),
                subscriber_up: AtomicBool::new(false),
                queued: AtomicUsize::new(0),
                own_seen: Mutex::new(HashMap::new()),
                last_ids: Mutex::new(HashMap::new()),
                last_error: Mutex::new("not connected yet".to_owned()),
                reader: tokio::sync::Mutex::new(None),
                lost: tokio::sync::Notify::new(),
                leases: Mutex::new(HashMap::new()),
                releases: Mutex::new(Vec::new()),
                follows,
            }),
            work,
            inbox: Mutex::new(Some(inbox)),
            follow_inbox: Mutex::new(Some(follow_inbox)),
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
        let (Some(inbox), Some(follows)) =
            (self.inbox.lock().take(), self.follow_inbox.lock().take())
        else {
            warn!("redis history started twice: ignored");
            return;
        };
        tokio::spawn(subscriber(Arc::clone(&self.shared), hub.clone(), follows));
        tokio::spawn(keeper(Arc::clone(&self.shared), hub.clone()));
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

    /// Subscribes to the room's channel; ready once Redis confirmed it.
    fn follow<'a>(&'a self, room: &'a str) -> Option<BoxFuture<'a, ()>> {
        Some(Box::pin(async move {
            let (done, subscribed) = oneshot::channel();
            if self
                .shared
                .follows
                .send(Follow::Start(room.to_owned(), done))
                .is_ok()
            {
                // An error means the subscription failed and the connection
                // is being made again (it will subscribe the room): go on.
                let _ = subscribed.await;
            }
        }))
    }

    fn unfollow(&self, room: &str) {
        let _ = self.shared.follows.send(Follow::Stop(room.to_owned()));
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
