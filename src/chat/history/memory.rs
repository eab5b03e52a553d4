//! The embedded history store: a bounded log per room, in this process.
//!
//! This is the default, so `chat-server` runs with no other service. As the
//! [`Sequencer`], it has each room number its own batches (under the room's
//! lock) and records the messages here as they are numbered; a
//! room's log outlives the room (a room is dropped when its last member
//! leaves, its history is not). The epoch is drawn once per store, so a
//! restarted server has a new one and resuming clients are told their
//! history is gone.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use parking_lot::Mutex;

use super::roster::{Census, Claim, Holder, Roster};
use super::{
    BoxFuture, Deliver, History, HistoryError, Page, Sequencer, Since, StoreHealth, StoredMessage,
    Submission, new_epoch,
};

/// The embedded store. See the module docs.
#[derive(Debug)]
pub struct MemoryHistory {
    epoch: String,
    len: usize,
    rooms: Mutex<HashMap<String, RoomLog>>,
}

#[derive(Debug, Default)]
struct RoomLog {
    /// Id of the newest message recorded (kept when the log is trimmed).
    last_id: u64,
    messages: VecDeque<StoredMessage>,
}

impl MemoryHistory {
    /// Keeps messages a room has just numbered (in id order: the room calls
    /// this under its lock).
    pub fn record(&self, room: &str, messages: &[StoredMessage]) {
        if messages.is_empty() {
            return;
        }
        let mut rooms = self.rooms.lock();
        let log = match rooms.get_mut(room) {
            Some(log) => log,
            None => rooms.entry(room.to_owned()).or_default(),
        };
        for message in messages {
            log.last_id = log.last_id.max(message.id);
            log.messages.push_back(message.clone());
        }
        while log.messages.len() > self.len {
            log.messages.pop_front();
        }
    }

    /// A store keeping the newest `len` messages of each room.
    pub fn new(len: usize) -> Self {
        MemoryHistory {
            epoch: new_epoch(),
            len,
            rooms: Mutex::new(HashMap::new()),
        }
    }

    /// A store whose epoch is `epoch` rather than a random one: for
    /// reproducible recordings (`tests/wire_doc.rs` prints the epoch header
    /// byte by byte). A real server must not reuse an epoch across restarts,
    /// or a resuming client could not tell that history was lost.
    pub fn with_epoch(len: usize, epoch: impl Into<String>) -> Self {
        MemoryHistory {
            epoch: epoch.into(),
            len,
            rooms: Mutex::new(HashMap::new()),
        }
    }

    /// The store's epoch (one for all rooms).
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Reads a page without waiting (the store is local).
    pub fn page_now(&self, room: &str, since: Since) -> Page {
        let rooms = self.rooms.lock();
        let Some(log) = rooms.get(room) else {
            return Page {
                epoch: self.epoch.clone(),
                head: 0,
                messages: Vec::new(),
            };
        };
        let (after, limit) = match since {
            Since::Latest { limit } => (0, limit),
            Since::After { id, limit } => (id, limit),
        };
        // Ids are consecutive, so the first message with a greater id is
        // found by arithmetic, not by a scan.
        let first_id = log.messages.front().map_or(log.last_id + 1, |m| m.id);
        let skip = usize::try_from((after + 1).saturating_sub(first_id)).unwrap_or(usize::MAX);
        let wanted = log.messages.len().saturating_sub(skip);
        let skip = skip.max(log.messages.len().saturating_sub(limit.min(wanted)));
        Page {
            epoch: self.epoch.clone(),
            head: log.last_id,
            messages: log.messages.iter().skip(skip).cloned().collect(),
        }
    }
}

impl Sequencer for MemoryHistory {
    fn publish(&self, batch: Submission, rooms: &dyn Deliver) -> bool {
        let room = batch.room.clone();
        rooms.number_here(batch, &mut |messages| self.record(&room, messages))
    }
}

/// One server: the room's own check is the whole rule, and presence is
/// what the hub knows.
impl Roster for MemoryHistory {
    fn claim<'a>(
        &'a self,
        _room: &'a str,
        _name: &'a str,
        _holder: Holder,
    ) -> BoxFuture<'a, Claim> {
        Box::pin(async { Claim::Held })
    }

    fn release(&self, _room: &str, _name: &str, _holder: Holder) {}

    fn names<'a>(&'a self, _room: &'a str) -> BoxFuture<'a, Option<Vec<String>>> {
        Box::pin(async { None })
    }

    fn census(&self) -> BoxFuture<'_, Option<Census>> {
        Box::pin(async { None })
    }
}

impl History for MemoryHistory {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn last_id(&self, room: &str) -> u64 {
        self.rooms.lock().get(room).map_or(0, |log| log.last_id)
    }

    fn page(&self, room: &str, since: Since) -> BoxFuture<'_, Result<Page, HistoryError>> {
        let page = self.page_now(room, since);
        Box::pin(async move { Ok(page) })
    }

    fn health(&self) -> StoreHealth {
        StoreHealth::Ok
    }

    fn errors(&self) -> u64 {
        0
    }

    fn flush(&self, _within: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: u64) -> StoredMessage {
        StoredMessage {
            id,
            user: "ann".into(),
            text: format!("m{id}"),
            timestamp: 1,
        }
    }

    fn ids(page: &Page) -> Vec<u64> {
        page.messages.iter().map(|m| m.id).collect()
    }

    #[test]
    fn keeps_the_newest_and_pages_by_id() {
        let store = MemoryHistory::new(5);
        store.record("r", &(1..=8).map(msg).collect::<Vec<_>>());
        assert_eq!(store.last_id("r"), 8);
        let latest = store.page_now("r", Since::Latest { limit: 3 });
        assert_eq!((latest.head, ids(&latest)), (8, vec![6, 7, 8]));
        let all = store.page_now("r", Since::Latest { limit: 50 });
        assert_eq!(ids(&all), vec![4, 5, 6, 7, 8]);
        let after = store.page_now("r", Since::After { id: 5, limit: 50 });
        assert_eq!(ids(&after), vec![6, 7, 8]);
        assert_eq!(after.missing_after(5), 0);
        // 2 and 3 were trimmed.
        let gap = store.page_now("r", Since::After { id: 1, limit: 50 });
        assert_eq!(ids(&gap), vec![4, 5, 6, 7, 8]);
        assert_eq!(gap.missing_after(1), 2);
        // Limited: the newest of what was missed.
        let limited = store.page_now("r", Since::After { id: 4, limit: 2 });
        assert_eq!(ids(&limited), vec![7, 8]);
        let none = store.page_now("r", Since::After { id: 8, limit: 50 });
        assert!(none.messages.is_empty());
        let future = store.page_now("r", Since::After { id: 99, limit: 50 });
        assert!(future.messages.is_empty());
    }

    #[test]
    fn unknown_room_is_empty_with_the_epoch() {
        let store = MemoryHistory::new(5);
        let page = store.page_now("nowhere", Since::Latest { limit: 3 });
        assert_eq!(page.head, 0);
        assert_eq!(page.epoch, store.epoch());
        assert!(page.messages.is_empty());
    }
}
