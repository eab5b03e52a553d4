//! Chat history: the store behind one trait ([`History`]), who numbers a
//! room's batches ([`Sequencer`]), the resume contract, and the types the
//! rooms and the stores exchange.
//!
//! Two stores implement both traits:
//!
//! * [`memory::MemoryHistory`] — the default: a bounded log per room in this
//!   process. `chat-server` needs no other service. As a sequencer it has
//!   the room number each batch at once, under the room's lock
//!   ([`Deliver::number_here`]), and records the messages.
//! * [`redis::RedisHistory`] — a Redis Stream per room, shared by every
//!   server given the same Redis. Ids are assigned **by Redis**, so several
//!   servers form one chat with one order: a batch goes to Redis and comes
//!   back, numbered, to every server ([`Deliver::sequenced`]); while Redis
//!   is unreachable the rooms number their batches here again. See that
//!   module for why.
//!
//! The two questions are separate traits because they are separate jobs:
//! the hub reads history through [`History`] whatever the store, and hands
//! every batch to its [`Sequencer`] without asking which kind it is. A
//! third, [`roster::Roster`], keeps names unique and presence whole across
//! the servers sharing a store.
//!
//! # The resume contract
//!
//! * A chat message's id is the server-assigned, increasing
//!   `ChatMessage.id` / `ChatMessageEvent.id` (field 4). Ids of one room
//!   increase by one per message, within one epoch.
//! * A room's history has an **epoch**: an opaque string (hex digits). It
//!   changes when the history was lost (the memory store: the server
//!   restarted; Redis: it restarted empty or the room's keys were deleted).
//!   Ids of two epochs must not be compared.
//! * The server tells the epoch to every client: in the response header
//!   [`EPOCH_METADATA_KEY`] (both protocols), and to `Chat` clients in the
//!   `SystemEvent` that ends the replayed history (`SystemEvent.epoch`, with
//!   `end_of_history = true`) and in the `SystemEvent` announcing an epoch
//!   change while connected (`SystemEvent.epoch` set, `end_of_history`
//!   false).
//! * A client (re)connecting sends request metadata
//!   [`LAST_ID_METADATA_KEY`]` = <last id it saw>` and
//!   [`EPOCH_METADATA_KEY`]` = <epoch it saw>`. The server then sends every
//!   message of the room with a greater id that history still holds, oldest
//!   first, then live traffic: no gap, no duplicate. If some of them are no
//!   longer in history (trimmed), or the epoch differs (history lost), the
//!   client is told so in a notice and gets what there is (for an epoch
//!   change: the newest replay-count messages). A `chat-last-id` without
//!   `chat-epoch` is taken to be of the current epoch.
//! * Without `chat-last-id`, a joining client gets the newest
//!   [`DEFAULT_REPLAY`] messages (`--history-replay`) before live traffic.
//! * `ChatStream` clients see where history ends from the response header
//!   [`REPLAYED_METADATA_KEY`] (how many of the first messages are
//!   replayed); `Chat` clients from the end-of-history `SystemEvent`.

pub mod memory;
pub mod redis;
pub mod roster;

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::core::Event;

/// Request metadata: the id of the last chat message the client saw.
pub const LAST_ID_METADATA_KEY: &str = "chat-last-id";
/// Request metadata: the history epoch of that id. Also a response header:
/// the room's current epoch.
pub const EPOCH_METADATA_KEY: &str = "chat-epoch";
/// Response header: how many of the first messages of the stream are
/// replayed from history.
pub const REPLAYED_METADATA_KEY: &str = "chat-replayed";
/// Default number of messages replayed to a joining client.
pub const DEFAULT_REPLAY: usize = 50;
/// Default number of messages kept per room.
pub const DEFAULT_HISTORY_LEN: usize = 1000;
/// Default bound of the messages a shared store queues while unreachable.
pub const DEFAULT_OUTAGE_QUEUE: usize = 10_000;

/// A future returned by a [`History`] method.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A chat message as history keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its id in the room (within the epoch).
    pub id: u64,
    /// Who sent it.
    pub user: String,
    /// What was said.
    pub text: String,
    /// Unix seconds, stamped by the server that received it.
    pub timestamp: i64,
}

/// Which messages a joining client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// The newest `limit` messages (a fresh join).
    Latest {
        /// At most this many.
        limit: usize,
    },
    /// Every message with an id greater than `id`, oldest first; if more
    /// than `limit` are kept, the newest `limit` of them.
    After {
        /// The last id the client saw.
        id: u64,
        /// At most this many.
        limit: usize,
    },
}

/// What history holds for a joining client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The room's epoch.
    pub epoch: String,
    /// The id of the room's newest message (0: none yet). A member joining
    /// now has everything up to here from the page, and must skip live
    /// messages with ids up to here.
    pub head: u64,
    /// The messages, oldest first.
    pub messages: Vec<StoredMessage>,
}

impl Page {
    /// How many messages after `after` are missing from this page (trimmed
    /// from history, or beyond the page's limit).
    pub fn missing_after(&self, after: u64) -> u64 {
        let first_kept = self.messages.first().map_or(self.head + 1, |m| m.id);
        first_kept.saturating_sub(after + 1)
    }
}

/// Why history could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryError(pub String);

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HistoryError {}

/// How the store is doing, for `HealthCheck` and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreHealth {
    /// Working.
    Ok,
    /// Not reachable: live chat goes on, history writes are queued. Says why.
    Degraded(String),
}

/// A batch of events one member published, handed to a shared store to be
/// sequenced (given ids in the one order every server sees).
#[derive(Debug, Clone)]
pub struct Submission {
    /// The room.
    pub room: String,
    /// The member who published (its id on this server).
    pub sender: u64,
    /// Its name.
    pub user: String,
    /// Unix seconds.
    pub timestamp: i64,
    /// What happened, in order.
    pub events: Vec<Event>,
    /// The room's last id on this server when submitted: if the store lost
    /// the room's history, its new epoch's ids continue from here, so ids
    /// seen by connected clients keep increasing.
    pub floor: u64,
}

impl Submission {
    /// The texts of its chat messages, in order.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.events.iter().filter_map(|e| match e {
            Event::Message { text } => Some(text.as_str()),
            _ => None,
        })
    }
}

/// A batch sequenced by a shared store, as every server receives it.
#[derive(Debug, Clone)]
pub struct Sequenced {
    /// The room.
    pub room: String,
    /// The server that submitted it ([`Deliver::node_id`]).
    pub origin: u64,
    /// The sender's member id on that server.
    pub sender: u64,
    /// The sender's name.
    pub user: String,
    /// Unix seconds.
    pub timestamp: i64,
    /// The id of its first chat message; the others follow by one.
    pub first_id: u64,
    /// The room's epoch.
    pub epoch: String,
    /// What happened, in order.
    pub events: Vec<Event>,
    /// Written while the store was unreachable and already delivered by
    /// its origin server (which therefore skips it).
    pub flushed: bool,
}

/// What a sequencer calls back into: the hub of rooms.
pub trait Deliver: Send + Sync {
    /// This server's id among the servers sharing a store.
    fn node_id(&self) -> u64;
    /// A batch a shared store numbered, from any server, in the store's
    /// order: the room appends it with those ids.
    fn sequenced(&self, batch: Sequenced);
    /// Has the batch's room number and deliver it now. `keep` receives its
    /// messages, with the ids given, while the room's lock is held — so a
    /// store records them in the order members see them. `false` if the
    /// room is gone or closed (nothing was delivered).
    fn number_here(&self, batch: Submission, keep: &mut dyn FnMut(&[StoredMessage])) -> bool;
    /// Member `member` of `room` lost `name` to a member of another server
    /// that held it first (claimed while the store was unreachable): it is
    /// told why and its call ends. See [`roster`].
    fn name_lost(&self, room: &str, member: u64, name: &str);
    /// Members connected to this server (for the census).
    fn members_here(&self) -> u64;
    /// The highest id numbered by the store that `room` has delivered
    /// here (`None`: no such room, or it knows no epoch yet): where a repair
    /// after a lost subscription reads from.
    fn store_high(&self, room: &str) -> Option<u64>;
    /// Messages of `room` (history epoch `epoch`) that were published while
    /// this server's subscription was lost, oldest first: delivered unless
    /// delivered already.
    fn repair(&self, room: &str, epoch: &str, messages: Vec<StoredMessage>);
}

/// Who numbers a room's batches (gives its messages their ids in the one
/// order every member sees).
pub trait Sequencer: Send + Sync + fmt::Debug {
    /// Starts background work delivering to `rooms`. Called once, when the
    /// hub is made; a sequencer without background work needs nothing.
    fn start(&self, rooms: Weak<dyn Deliver>) {
        let _ = rooms;
    }

    /// Takes a batch a member of this server published. It comes back
    /// numbered through `rooms`: at once ([`Deliver::number_here`]), or
    /// later from the shared store ([`Deliver::sequenced`]). Never blocks.
    /// `false` if it was refused (the room is closed: shutting down).
    fn publish(&self, batch: Submission, rooms: &dyn Deliver) -> bool;

    /// Starts receiving `room`'s batches numbered elsewhere (its first
    /// member on this server joined). The future completes once every batch
    /// numbered from now on will arrive through [`Deliver::sequenced`], so
    /// that a history page read after it leaves no gap; `None` when that is
    /// so already (a sequencer that numbers everything here: no future, no
    /// allocation per join).
    fn follow<'a>(&'a self, room: &'a str) -> Option<BoxFuture<'a, ()>> {
        let _ = room;
        None
    }

    /// Stops receiving `room`'s batches (its last member here left).
    fn unfollow(&self, room: &str) {
        let _ = room;
    }
}

/// A history store: what it keeps, and what a joining client reads.
pub trait History: Send + Sync + fmt::Debug {
    /// `"memory"` or `"redis"`, for logs.
    fn kind(&self) -> &'static str;

    /// The last id this server knows for `room` (0: none): where a room
    /// created now starts numbering when it has to.
    fn last_id(&self, room: &str) -> u64;

    /// Reads what a joining client gets.
    fn page(&self, room: &str, since: Since) -> BoxFuture<'_, Result<Page, HistoryError>>;

    /// How the store is doing.
    fn health(&self) -> StoreHealth;

    /// Errors met talking to the store so far (for metrics).
    fn errors(&self) -> u64;

    /// Waits (at most `within`) until everything submitted so far is
    /// written: called at shutdown.
    fn flush(&self, within: Duration) -> BoxFuture<'_, ()>;
}

/// Parses the resume metadata: `chat-last-id` (a decimal u64) and
/// `chat-epoch` (1–64 characters of `[0-9A-Za-z_-]`).
///
/// `Ok(None)` when no `chat-last-id` is given (a fresh join).
pub fn parse_resume(
    last_id: Option<&str>,
    epoch: Option<&str>,
) -> Result<Option<(u64, Option<String>)>, String> {
    let Some(raw) = last_id else {
        return Ok(None);
    };
    let id: u64 = raw
        .trim()
        .parse()
        .map_err(|_| format!("{LAST_ID_METADATA_KEY} {raw:?} is not a message id"))?;
    let epoch = match epoch.map(str::trim) {
        None | Some("") => None,
        Some(e)
            if e.len() <= 64
                && e.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Some(e.to_owned())
        }
        Some(e) => return Err(format!("{EPOCH_METADATA_KEY} {e:?} is not an epoch")),
    };
    Ok(Some((id, epoch)))
}

/// A fresh random epoch or node id: 64 bits from the standard library's
/// randomly seeded hasher (no extra crate needed for an identifier that only
/// has to differ between runs).
pub fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// A fresh epoch: 16 hex digits.
pub fn new_epoch() -> String {
    format!("{:016x}", random_u64())
}

/// The history store shared by the hub, and what the hub needs to know
/// about it.
pub type SharedHistory = Arc<dyn History>;

/// A store that is also its rooms' sequencer and the servers' roster
/// (both stores are).
pub trait Store: History + Sequencer + roster::Roster {}

impl<T: History + Sequencer + roster::Roster> Store for T {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_metadata() {
        assert_eq!(parse_resume(None, Some("ab")), Ok(None));
        assert_eq!(parse_resume(Some("42"), None), Ok(Some((42, None))));
        assert_eq!(
            parse_resume(Some(" 7 "), Some("00ff-x")),
            Ok(Some((7, Some("00ff-x".into()))))
        );
        assert_eq!(parse_resume(Some("7"), Some("")), Ok(Some((7, None))));
        assert!(parse_resume(Some("-1"), None).is_err());
        assert!(parse_resume(Some("x"), None).is_err());
        assert!(parse_resume(Some("1"), Some("a b")).is_err());
        assert!(parse_resume(Some("1"), Some(&"a".repeat(65))).is_err());
    }

    #[test]
    fn missing_counts_trimmed_messages() {
        let m = |id| StoredMessage {
            id,
            user: "a".into(),
            text: "t".into(),
            timestamp: 0,
        };
        let page = Page {
            epoch: "e".into(),
            head: 10,
            messages: vec![m(8), m(9), m(10)],
        };
        assert_eq!(page.missing_after(7), 0);
        assert_eq!(page.missing_after(4), 3);
        assert_eq!(page.missing_after(10), 0);
        let empty = Page {
            epoch: "e".into(),
            head: 10,
            messages: vec![],
        };
        assert_eq!(empty.missing_after(10), 0);
        assert_eq!(empty.missing_after(6), 4);
    }

    #[test]
    fn epochs_differ() {
        assert_ne!(new_epoch(), new_epoch());
        assert_eq!(new_epoch().len(), 16);
    }
}
