//! One room: who is in it, the names they hold, and the order of its log.
//!
//! ```text
//!  sender's task                 room (one lock)                   each member's task
//!  ─────────────                 ───────────────                   ──────────────────
//!  a batch of events ──▶ number its messages, encode it ONCE  ──▶  its cursor walks the
//!                        per protocol, append one node to the      log and sends what it
//!                        log; then, outside the lock, wake the     finds, coalesced, within
//!                        members that sleep                        its client's window
//! ```
//!
//! The room's lock is held while ids are assigned and the node appended, so
//! every member sees the room's messages in one order. Publishing never
//! waits for a recipient; a member too far behind is disconnected instead
//! (`deliver`).
//!
//! Who numbers a batch is not the room's choice: the hub's
//! [`Sequencer`](crate::chat::history::Sequencer) either has the room
//! number it now (`Room::number_here`) or has a shared store number it and
//! hands it back (`Room::apply`).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tracing::{debug, warn};

use super::error::ChatError;
use super::event::{Batch, Encoders, Event, Frames, Need, Notice, Protocol};
use super::log::{Node, Tail};
use super::member::{Member, Verdict};
use crate::chat::history::{Sequenced, StoredMessage, Submission};

/// Who is in a room: the members that have a name, sorted, and how many
/// have none yet (a `ChatStream` member is named by its first message, and
/// until then reads the room as a silent listener).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presence {
    /// Names of the members that have one, sorted: on every server
    /// sharing the store once [`Presence::merge_everywhere`] has been
    /// applied, else on this one.
    pub names: Vec<String>,
    /// The named members connected to this server, sorted.
    pub here: Vec<String>,
    /// Members without a name yet, on this server.
    pub listeners: usize,
}

impl Presence {
    /// Takes `everywhere` (the names held on every server) as the room's
    /// names, keeping this server's own too: a name bound here but not
    /// confirmed with the store yet is still here.
    pub fn merge_everywhere(&mut self, everywhere: Vec<String>) {
        let mut names = everywhere;
        for name in &self.here {
            if !names
                .iter()
                .any(|n| n.to_lowercase() == name.to_lowercase())
            {
                names.push(name.clone());
            }
        }
        names.sort();
        self.names = names;
    }
}

/// A node just appended, with the members to deliver it to.
type Appended = (Arc<Node>, Arc<Vec<Arc<Member>>>);

#[derive(Debug, Default)]
struct RoomState {
    /// Id of the last message.
    last_id: u64,
    /// The newest node of the log; new members start here.
    tail: Tail,
    /// Sorted by member id (ids only grow, and a join appends), so a
    /// sender is found by binary search. Copied on write (joins, leaves),
    /// so that a publisher can take a snapshot and deliver without holding
    /// the room lock.
    members: Arc<Vec<Arc<Member>>>,
    /// Members per protocol, indexed by [`Protocol::index`].
    counts: [usize; 2],
    /// Lowercased name → member id: names are unique in a room.
    names: HashMap<String, u64>,
    /// Set at shutdown: the log is complete, nothing more is published.
    closed: bool,
    /// The history epoch the room's members were told, once known.
    epoch: Option<String>,
    /// The highest id, numbered by a shared store, that the room has
    /// delivered (live, or by a repair), in `epoch`. A batch numbered by the
    /// store whose ids are all at or below it was delivered already — by a
    /// repair after a lost subscription (see `Room::repair`) — and is not
    /// delivered twice. Messages the room numbered itself (while the store
    /// was unreachable) do not count: their ids are not the store's.
    store_high: u64,
}

impl RoomState {
    fn protocol_of(&self, member: u64) -> Option<Protocol> {
        let at = self.members.binary_search_by_key(&member, |m| m.id).ok()?;
        self.members.get(at).map(|m| m.protocol())
    }

    /// Takes note of the store's epoch for the room; when it differs from
    /// the one members were told, returns the notice that history was lost.
    fn note_epoch(&mut self, epoch: &str) -> Option<Notice> {
        match &self.epoch {
            Some(known) if known == epoch => None,
            None => {
                self.epoch = Some(epoch.to_owned());
                None
            }
            Some(known) => {
                let text = format!(
                    "history was lost (the history store restarted empty): history epoch {known} is now {epoch}"
                );
                self.epoch = Some(epoch.to_owned());
                // Ids of two epochs are not comparable.
                self.store_high = 0;
                Some(Notice::EpochChanged {
                    text,
                    epoch: epoch.to_owned(),
                })
            }
        }
    }

    /// Appends a node; returns it with the members to deliver it to (the
    /// caller delivers after releasing the lock).
    fn append(&mut self, node: Node, room: &str) -> Option<Appended> {
        let Some(node) = self.tail.append(node) else {
            warn!(room, "room log out of step: node dropped");
            return None;
        };
        Some((node, Arc::clone(&self.members)))
    }

    /// A node of the server's own: each protocol's rendering of `notice`,
    /// for everyone.
    fn notice_node(&self, notice: &Notice, encoders: &Encoders) -> Node {
        let frames = Protocol::ALL.map(|p| {
            let bytes = if self.counts[p.index()] > 0 {
                encoders[p.index()].notice(notice)
            } else {
                Bytes::new()
            };
            Frames {
                others: bytes,
                sender: Bytes::new(),
            }
        });
        Node::new(0, frames)
    }

    /// Numbers `events` from `first_id` (or the room's next id), encodes
    /// them once per protocol someone reads, and appends them as one node.
    /// Returns the messages (for history) and the node to deliver.
    fn append_batch(
        &mut self,
        room: &str,
        batch: BatchOf<'_>,
        first_id: Option<u64>,
        encoders: &Encoders,
    ) -> (Vec<StoredMessage>, Option<Appended>) {
        let first_id = first_id.unwrap_or(self.last_id + 1);
        let view = Batch {
            user: batch.user,
            timestamp: batch.timestamp,
            first_id,
            events: batch.events,
        };
        let messages: Vec<StoredMessage> = view
            .numbered()
            .filter_map(|(id, event)| match (id, event) {
                (Some(id), Event::Message { text }) => Some(StoredMessage {
                    id,
                    user: batch.user.to_owned(),
                    text: text.clone(),
                    timestamp: batch.timestamp,
                }),
                _ => None,
            })
            .collect();
        if let Some(last) = messages.last() {
            self.last_id = self.last_id.max(last.id);
        }
        // Encode only the copies somebody will read.
        let sender = self.protocol_of(batch.sender);
        let frames = Protocol::ALL.map(|p| {
            let own = usize::from(sender == Some(p));
            let need = Need {
                others: self.counts[p.index()] > own,
                sender: own == 1,
            };
            if need.others || need.sender {
                encoders[p.index()].batch(&view, need)
            } else {
                Frames::default()
            }
        });
        let mut node = Node::new(batch.sender, frames);
        node.first_id = messages.first().map_or(0, |m| m.id);
        node.last_id = messages.last().map_or(0, |m| m.id);
        let appended = self.append(node, room);
        (messages, appended)
    }
}

/// What a room needs from its hub to append and deliver: the encoders,
/// how far behind a member may fall, and where evictions are counted.
#[derive(Debug, Clone, Copy)]
pub(super) struct Delivery<'a> {
    pub(super) encoders: &'a Encoders,
    pub(super) max_lag: usize,
    pub(super) metrics: &'static crate::metrics::Metrics,
}

impl Delivery<'_> {
    /// Wakes the members of each node just appended (after the room's lock
    /// is released), ending those too far behind.
    fn wake(&self, room: &str, appended: impl IntoIterator<Item = Appended>) {
        for (node, members) in appended {
            deliver(&node, &members, room, self.max_lag, self.metrics);
        }
    }
}

/// What [`RoomState::append_batch`] needs of a batch.
#[derive(Debug, Clone, Copy)]
struct BatchOf<'a> {
    sender: u64,
    user: &'a str,
    timestamp: i64,
    events: &'a [Event],
}

/// Lets every member know of a new node: members too far behind are
/// disconnected, sleeping writers woken. Runs outside the room lock, on a
/// snapshot of the member list, so other publishers are not held up.
fn deliver(
    node: &Arc<Node>,
    members: &[Arc<Member>],
    room: &str,
    max_lag: usize,
    metrics: &crate::metrics::Metrics,
) {
    for member in members {
        let lag = node
            .end_offset
            .saturating_sub(member.consumed.load(std::sync::atomic::Ordering::Relaxed));
        if lag > max_lag as u64 {
            if !member.is_ending() {
                warn!(
                    room,
                    user = member.name().map_or("(unnamed)", |n| &**n),
                    lag,
                    "member too far behind: disconnecting with RESOURCE_EXHAUSTED"
                );
                metrics.evicted_lagging.inc();
                member.end_now(Verdict::TooFarBehind { max_lag });
            }
            continue;
        }
        member.wake_if_waiting();
    }
}

/// One chat room.
#[derive(Debug)]
pub struct Room {
    name: String,
    state: Mutex<RoomState>,
}

impl Room {
    /// An empty room whose ids continue after `last_id` (a room emptied and
    /// created again must not reuse ids).
    pub(super) fn new(name: &str, last_id: u64) -> Room {
        Room {
            name: name.to_owned(),
            state: Mutex::new(RoomState {
                last_id,
                ..RoomState::default()
            }),
        }
    }

    /// The room's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds a member reading the log from now on, unless the room is full.
    pub(super) fn add(
        &self,
        id: u64,
        protocol: Protocol,
        max_members: usize,
    ) -> Result<Arc<Member>, ChatError> {
        let mut state = self.state.lock();
        if state.members.len() >= max_members {
            return Err(ChatError::RoomFull {
                room: self.name.clone(),
                max: max_members,
            });
        }
        // At the tail, under the room lock: the member gets exactly what is
        // published after this point.
        let member = Arc::new(Member::new(id, protocol, state.tail.node()));
        Arc::make_mut(&mut state.members).push(Arc::clone(&member));
        state.counts[protocol.index()] += 1;
        Ok(member)
    }

    /// Removes a member (and frees its name). Returns whether the room is
    /// empty now.
    pub(super) fn remove(&self, member: &Member) -> bool {
        let mut state = self.state.lock();
        let before = state.members.len();
        Arc::make_mut(&mut state.members).retain(|m| m.id != member.id);
        if state.members.len() < before {
            let count = &mut state.counts[member.protocol().index()];
            *count = count.saturating_sub(1);
        }
        if let Some(name) = member.name() {
            let key = name.to_lowercase();
            if state.names.get(&key) == Some(&member.id) {
                state.names.remove(&key);
            }
        }
        state.members.is_empty()
    }

    /// Whether nobody is in the room.
    pub(super) fn is_empty(&self) -> bool {
        self.state.lock().members.is_empty()
    }

    /// Gives `name` to `member`. Names are compared ignoring case, so
    /// "Alice" cannot pose as "alice".
    pub(super) fn claim(&self, member: &Member, name: &str) -> Result<(), ChatError> {
        let key = name.to_lowercase();
        let mut state = self.state.lock();
        match state.names.get(&key) {
            Some(&holder) if holder == member.id => return Ok(()),
            Some(_) => {
                return Err(ChatError::NameTaken {
                    name: name.to_owned(),
                    room: self.name.clone(),
                });
            }
            None => {}
        }
        if member.name.set(Arc::from(name)).is_err() {
            // Bound already, to another name: a member has one name.
            return Err(ChatError::NameTaken {
                name: name.to_owned(),
                room: self.name.clone(),
            });
        }
        state.names.insert(key, member.id);
        Ok(())
    }

    /// Who is in the room.
    pub fn presence(&self) -> Presence {
        let state = self.state.lock();
        let mut presence = Presence::default();
        for member in state.members.iter() {
            match member.name() {
                Some(name) => presence.names.push(name.to_string()),
                None => presence.listeners += 1,
            }
        }
        presence.names.sort();
        presence.here = presence.names.clone();
        presence
    }

    /// The member with id `id`, if it is in the room.
    pub(super) fn member(&self, id: u64) -> Option<Arc<Member>> {
        let state = self.state.lock();
        let at = state.members.binary_search_by_key(&id, |m| m.id).ok()?;
        state.members.get(at).cloned()
    }

    /// Takes note of the history epoch a joining member was told, unless
    /// the room knows one already.
    pub(super) fn note_epoch(&self, epoch: &str) {
        let mut state = self.state.lock();
        if state.epoch.is_none() {
            state.epoch = Some(epoch.to_owned());
        }
    }

    /// Raises the room's last id to `head` (see `Membership::note_head`).
    /// A room that has delivered nothing from the store yet (its first
    /// member here is joining) has everything up to `head` in that member's
    /// replay: a repair would start after it.
    pub(super) fn note_head(&self, head: u64) {
        let mut state = self.state.lock();
        state.last_id = state.last_id.max(head);
        if state.store_high == 0 {
            state.store_high = head;
        }
    }

    /// The highest store-numbered id the room has delivered, and its epoch.
    pub(super) fn store_high(&self) -> (u64, Option<String>) {
        let state = self.state.lock();
        (state.store_high, state.epoch.clone())
    }

    /// Delivers messages read from the store that the room missed (its
    /// server's subscription was lost, and they were published meanwhile):
    /// those above the store-numbered ids it delivered, in order, with their
    /// ids, if the store is still in the room's epoch. A batch among them
    /// that arrives live later is then not delivered again (`apply`).
    pub(super) fn repair(&self, epoch: &str, messages: &[StoredMessage], delivery: &Delivery<'_>) {
        let mut state = self.state.lock();
        if state.epoch.as_deref() != Some(epoch) {
            // Another epoch: the next batch tells the members history was
            // lost; ids of the old one cannot say what they missed.
            return;
        }
        let mut appended = Vec::new();
        for message in messages {
            if message.id <= state.store_high {
                continue;
            }
            let events = [Event::Message {
                text: message.text.clone(),
            }];
            let of = BatchOf {
                sender: 0,
                user: &message.user,
                timestamp: message.timestamp,
                events: &events,
            };
            let (_, node) = state.append_batch(&self.name, of, Some(message.id), delivery.encoders);
            appended.extend(node);
            state.store_high = message.id;
        }
        drop(state);
        if !appended.is_empty() {
            warn!(room = %self.name, messages = appended.len(), "delivered what the lost subscription missed");
        }
        delivery.wake(&self.name, appended);
    }

    /// The room's last message id, if the room still takes batches (it
    /// does until shutdown): a shared store that lost the room's history
    /// continues numbering above it.
    pub(super) fn open_floor(&self) -> Option<u64> {
        let state = self.state.lock();
        (!state.closed).then_some(state.last_id)
    }

    /// The room's last message id.
    #[cfg(test)]
    fn last_id(&self) -> u64 {
        self.state.lock().last_id
    }

    /// Numbers `batch` here and delivers it. `keep` gets its messages
    /// while the room's lock is held, so a store records them in the order
    /// members see them. `false` if the room is closed (shutting down).
    pub(super) fn number_here(
        &self,
        batch: &Submission,
        delivery: &Delivery<'_>,
        keep: &mut dyn FnMut(&[StoredMessage]),
    ) -> bool {
        let mut state = self.state.lock();
        if state.closed {
            return false;
        }
        let of = BatchOf {
            sender: batch.sender,
            user: &batch.user,
            timestamp: batch.timestamp,
            events: &batch.events,
        };
        let (messages, appended) = state.append_batch(&self.name, of, None, delivery.encoders);
        keep(&messages);
        drop(state);
        delivery.wake(&self.name, appended);
        true
    }

    /// Delivers a batch a shared store numbered (from any server). `own`:
    /// it came from this server, so its sender is one of our members.
    pub(super) fn apply(&self, batch: &Sequenced, own: bool, delivery: &Delivery<'_>) {
        let encoders = delivery.encoders;
        let mut state = self.state.lock();
        let mut appended = Vec::with_capacity(2);
        if let Some(notice) = state.note_epoch(&batch.epoch) {
            warn!(room = %self.name, epoch = %batch.epoch, "history epoch changed: the store lost the room's history");
            let node = state.notice_node(&notice, encoders);
            appended.extend(state.append(node, &self.name));
        }
        let messages = batch
            .events
            .iter()
            .filter(|e| matches!(e, Event::Message { .. }))
            .count() as u64;
        let last = (messages > 0).then(|| batch.first_id + messages - 1);
        let repaired = last.is_some_and(|last| last <= state.store_high);
        if let Some(last) = last {
            state.store_high = state.store_high.max(last);
        }
        if repaired && !(batch.flushed && own) {
            debug!(room = %self.name, first_id = batch.first_id, "batch delivered by a repair already");
        } else if !(batch.flushed && own) {
            // (A flushed batch of ours was delivered here while the store
            // was unreachable.)
            let of = BatchOf {
                sender: if own { batch.sender } else { 0 },
                user: &batch.user,
                timestamp: batch.timestamp,
                events: &batch.events,
            };
            let (_, node) = state.append_batch(&self.name, of, Some(batch.first_id), encoders);
            appended.extend(node);
        }
        drop(state);
        delivery.wake(&self.name, appended);
    }

    /// Closes the room for shutdown: the notice is the last node of its
    /// log, and every member's call ends once it has sent it. `false` if
    /// the room was closed already.
    pub(super) fn close(&self, notice: &str, delivery: &Delivery<'_>) -> bool {
        let encoders = delivery.encoders;
        let mut state = self.state.lock();
        if std::mem::replace(&mut state.closed, true) {
            return false;
        }
        let node = state.notice_node(&Notice::ShuttingDown(notice.to_owned()), encoders);
        let appended = state.append(node, &self.name);
        drop(state);
        if let Some((node, members)) = appended {
            deliver(&node, &members, &self.name, usize::MAX, delivery.metrics);
            for member in members.iter() {
                member.close(Verdict::ShuttingDown(notice.to_owned()));
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{drain, encoders};
    use super::*;

    fn submission(sender: u64, user: &str, events: Vec<Event>) -> Submission {
        Submission {
            room: "r".into(),
            sender,
            user: user.into(),
            timestamp: 0,
            events,
            floor: 0,
        }
    }

    fn delivery(encoders: &Encoders, max_lag: usize) -> Delivery<'_> {
        static METRICS: crate::metrics::Metrics = crate::metrics::Metrics::new();
        Delivery {
            encoders,
            max_lag,
            metrics: &METRICS,
        }
    }

    fn say(text: &str) -> Event {
        Event::Message { text: text.into() }
    }

    #[tokio::test]
    async fn numbering_continues_and_every_member_reads_one_order() {
        let room = Room::new("r", 41);
        let ann = room.add(1, Protocol::Events, 10).unwrap();
        let bob = room.add(2, Protocol::Stream, 10).unwrap();
        room.claim(&ann, "ann").unwrap();
        room.claim(&bob, "bob").unwrap();
        let enc = encoders();
        let mut kept = Vec::new();
        let mut keep = |m: &[StoredMessage]| kept.extend(m.iter().map(|m| m.id));
        room.number_here(
            &submission(1, "ann", vec![say("a"), say("b")]),
            &delivery(&enc, usize::MAX),
            &mut keep,
        );
        room.number_here(
            &submission(2, "bob", vec![say("c")]),
            &delivery(&enc, usize::MAX),
            &mut keep,
        );
        assert_eq!(kept, [42, 43, 44]);
        // `Chat` members see their own messages; `ChatStream` members do not.
        assert_eq!(
            drain(&ann),
            ["events ann#42 a", "events ann#43 b", "events bob#44 c"]
        );
        assert_eq!(drain(&bob), ["stream ann#42 a", "stream ann#43 b"]);
        assert_eq!(room.last_id(), 44);
    }

    #[test]
    fn names_are_unique_ignoring_case_and_freed_on_leave() {
        let room = Room::new("r", 0);
        let a = room.add(1, Protocol::Events, 10).unwrap();
        let b = room.add(2, Protocol::Events, 10).unwrap();
        room.claim(&a, "Alice").unwrap();
        assert!(matches!(
            room.claim(&b, "alice"),
            Err(ChatError::NameTaken { .. })
        ));
        assert_eq!(room.presence().names, ["Alice"]);
        assert_eq!(room.presence().listeners, 1);
        assert!(!room.remove(&a));
        room.claim(&b, "alice").unwrap();
        assert!(room.remove(&b));
    }

    #[test]
    fn a_full_room_refuses() {
        let room = Room::new("r", 0);
        room.add(1, Protocol::Events, 1).unwrap();
        assert!(matches!(
            room.add(2, Protocol::Events, 1),
            Err(ChatError::RoomFull { max: 1, .. })
        ));
    }

    #[tokio::test]
    async fn a_member_too_far_behind_is_ended_now() {
        let room = Room::new("r", 0);
        let ann = room.add(1, Protocol::Events, 10).unwrap();
        room.claim(&ann, "ann").unwrap();
        let slow = room.add(2, Protocol::Events, 10).unwrap();
        let enc = encoders();
        let big = "x".repeat(100);
        for _ in 0..3 {
            room.number_here(
                &submission(1, "ann", vec![say(&big)]),
                &delivery(&enc, 250),
                &mut |_| {},
            );
        }
        assert_eq!(
            slow.must_end_now().await,
            Verdict::TooFarBehind { max_lag: 250 }
        );
    }

    #[tokio::test]
    async fn a_closed_room_takes_nothing_and_ends_its_members_after_the_notice() {
        let room = Room::new("r", 0);
        let ann = room.add(1, Protocol::Events, 10).unwrap();
        room.claim(&ann, "ann").unwrap();
        let enc = encoders();
        assert!(room.close("bye", &delivery(&enc, usize::MAX)));
        assert!(!room.close("bye", &delivery(&enc, usize::MAX)));
        assert!(!room.number_here(
            &submission(1, "ann", vec![say("late")]),
            &delivery(&enc, usize::MAX),
            &mut |_| {}
        ));
        assert_eq!(drain(&ann), ["events notice bye"]);
        assert!(matches!(
            ann.next_batch().await,
            super::super::member::Outgoing::End(Verdict::ShuttingDown(_))
        ));
    }

    #[tokio::test]
    async fn a_store_numbered_batch_keeps_its_ids_and_a_new_epoch_is_announced() {
        let room = Room::new("r", 0);
        let ann = room.add(1, Protocol::Events, 10).unwrap();
        let enc = encoders();
        let batch = |first_id, epoch: &str| Sequenced {
            room: "r".into(),
            origin: 9,
            sender: 5,
            user: "zed".into(),
            timestamp: 0,
            first_id,
            epoch: epoch.into(),
            events: vec![say("hi")],
            flushed: false,
        };
        room.apply(&batch(10, "e1"), false, &delivery(&enc, usize::MAX));
        room.apply(&batch(1, "e2"), false, &delivery(&enc, usize::MAX));
        assert_eq!(
            drain(&ann),
            [
                "events zed#10 hi",
                "events notice history was lost (the history store restarted empty): history epoch e1 is now e2",
                "events zed#1 hi"
            ]
        );
    }

    #[tokio::test]
    async fn a_repair_delivers_what_was_missed_once() {
        let room = Room::new("r", 0);
        let ann = room.add(1, Protocol::Events, 10).unwrap();
        let enc = encoders();
        let d = delivery(&enc, usize::MAX);
        let batch = |first_id, texts: &[&str], flushed| Sequenced {
            room: "r".into(),
            origin: 9,
            sender: 5,
            user: "zed".into(),
            timestamp: 0,
            first_id,
            epoch: "e".into(),
            events: texts.iter().map(|t| say(t)).collect(),
            flushed,
        };
        let stored = |id, text: &str| StoredMessage {
            id,
            user: "zed".into(),
            text: text.into(),
            timestamp: 0,
        };
        room.apply(&batch(1, &["a", "b"], false), false, &d);
        // The subscription was lost while 3..5 were published; the stream
        // holds 1..5. Only what was missed is delivered.
        let stream: Vec<StoredMessage> = ["a", "b", "c", "d", "e"]
            .iter()
            .zip(1..)
            .map(|(t, id)| stored(id, t))
            .collect();
        room.repair("e", &stream, &d);
        // 4..5 arrive live after all (published just as the subscription
        // came back), then 6: only 6 is new.
        room.apply(&batch(4, &["d", "e"], false), false, &d);
        room.apply(&batch(6, &["f"], true), false, &d);
        // Another epoch's stream says nothing about this one's ids.
        room.repair("other", &[stored(7, "x")], &d);
        assert_eq!(
            drain(&ann),
            [
                "events zed#1 a",
                "events zed#2 b",
                "events zed#3 c",
                "events zed#4 d",
                "events zed#5 e",
                "events zed#6 f"
            ]
        );
    }
}
