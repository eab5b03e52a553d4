//! Rooms, members and the fan-out between them.
//!
//! # How a message travels
//!
//! ```text
//!  sender's task                     room (one lock)                  each member's task
//!  ─────────────                     ───────────────                  ──────────────────
//!  reads a batch of messages ──▶ assign ids, encode the batch  ──▶  its cursor walks the log:
//!                                ONCE per protocol, append one       node → node → node …
//!                                node to the room's log, wake        and sends what it finds,
//!                                the members that sleep              coalesced, within the
//!                                                                    client's flow-control window
//!
//!  the room's log:   [node 41] ─▶ [node 42] ─▶ [node 43] ─▶ (tail)
//!                        ▲             ▲                        ▲
//!                     a slow        a member                 members that
//!                     member        catching up              are up to date
//! ```
//!
//! Three choices make this cheap and fair:
//!
//! * **Encode once, share the bytes.** A batch is serialised into gRPC frames
//!   once per protocol and appended to the room's log as one `Node`. No
//!   member gets a copy or even a queue entry: each member's task holds a
//!   cursor (an `Arc` of the last node it sent) and follows the `next` links.
//!   Publishing costs, per member, an atomic check and — only if the member
//!   sleeps — a wake-up.
//! * **Batch on both ends.** The sender's task takes every message already
//!   received before publishing, and a member's task sends everything it has
//!   not sent yet in one go: under load, the work per message shrinks.
//! * **Nobody waits for anybody.** Publishing never blocks on a recipient. A
//!   member that stops reading stalls only its own task (waiting for its
//!   window) and keeps the nodes after its cursor alive — so how far behind it
//!   may fall is bounded ([`ChatConfig::max_queue_bytes`]); past that, or past
//!   the grace period, it is disconnected with `RESOURCE_EXHAUSTED`. Members
//!   that read lose nothing. Nodes nobody needs any more are freed by `Arc`.
//!
//! The room lock is held while ids are assigned and nodes appended, so every
//! member sees the room's messages in one order.
//!
//! # With a shared history store (Redis)
//!
//! Several servers then share a room, so no single room lock can order it:
//! a publisher hands its batch to the store ([`History::submit`]), which has
//! Redis number it, and every server — the publisher's too — appends the
//! batch when it comes back ([`Deliver::sequenced`]), in Redis's order, with
//! Redis's ids. Only while Redis is unreachable does the room number and
//! deliver its own members' batches again ([`Deliver::local`]). See
//! [`history::redis`](super::history::redis).
//!
//! [`History::submit`]: super::history::History::submit

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::framing::Status;
use crate::pb::chat::{
    ChatMessage, ChatMessageEvent, ServerEvent, SystemEvent, TypingEvent, TypingEventType,
    UserEvent, UserEventType, server_event,
};

use super::ChatConfig;
use super::history::memory::MemoryHistory;
use super::history::{Deliver, Sequenced, SharedHistory, StoredMessage, Submission};

/// Which of the two chat protocols a member speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `ChatStream`: `ChatMessage` both ways; sees other people's messages only.
    Stream,
    /// `Chat`: typed events; sees messages (its own too), typing, joins and leaves.
    Events,
}

/// Unix time in seconds, as the protocols carry it.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Something that happens in a room.
#[derive(Debug, Clone)]
pub enum Event {
    /// A chat message (its id is assigned when published).
    Message { text: String },
    /// Typing started (`true`) or stopped.
    Typing { started: bool },
    /// The sender joined.
    Joined,
    /// The sender left.
    Left,
}

/// One published batch: a node of the room's log, shared by every member.
#[derive(Debug)]
struct Node {
    /// Who published it (0: the server itself, or a member of another
    /// server sharing the history store).
    sender: u64,
    /// Id of its first chat message (0: it has none).
    first_id: u64,
    /// Id of its last chat message (0: it has none). A member joining with a
    /// replay from history skips nodes already in that replay.
    last_id: u64,
    /// `ChatMessage` frames, for `ChatStream` members other than the sender.
    stream: Bytes,
    /// `ServerEvent` frames, for `Chat` members other than the sender.
    events: Bytes,
    /// `ServerEvent` frames for the sender, when they differ from `events`
    /// (typing is not echoed); `None` means "same as `events`".
    events_to_sender: Option<Bytes>,
    /// Bytes published to the room up to and including this node: a member's
    /// lag is the tail's offset minus the offset of its cursor.
    end_offset: u64,
    /// The next node, once published.
    next: OnceLock<Arc<Node>>,
}

impl Node {
    /// A node carrying these frames (its offset and link are set on append).
    fn new(sender: u64, stream: Bytes, events: Bytes, events_to_sender: Option<Bytes>) -> Self {
        Node {
            sender,
            first_id: 0,
            last_id: 0,
            stream,
            events,
            events_to_sender,
            end_offset: 0,
            next: OnceLock::new(),
        }
    }

    /// The frames of this node that `member` must receive.
    fn frames_for(&self, member: &Member) -> &Bytes {
        static NONE: Bytes = Bytes::new();
        let own = self.sender == member.id;
        match (member.protocol, own) {
            (Protocol::Stream, false) => &self.stream,
            (Protocol::Stream, true) => &NONE,
            (Protocol::Events, false) => &self.events,
            (Protocol::Events, true) => self.events_to_sender.as_ref().unwrap_or(&self.events),
        }
    }
}

impl Drop for Node {
    /// Frees a long chain of nodes iteratively: the default recursive drop
    /// of `next` could overflow the stack when a slow member let thousands of
    /// nodes pile up behind its cursor.
    fn drop(&mut self) {
        let mut next = self.next.take();
        while let Some(node) = next {
            next = match Arc::try_unwrap(node) {
                Ok(mut node) => node.next.take(),
                Err(_) => None,
            };
        }
    }
}

/// How a member's call must end, once decided.
#[derive(Debug, Clone)]
enum Ending {
    /// Send what is pending, then end the call with this status.
    AfterFlush(Status),
    /// End the call now with this status; what is pending is dropped.
    Now(Status),
}

/// One connected stream of a room.
#[derive(Debug)]
pub struct Member {
    id: u64,
    protocol: Protocol,
    /// The last node this member's writer has taken (its read position).
    cursor: Mutex<Arc<Node>>,
    /// `end_offset` of the cursor, readable by publishers without the lock.
    consumed: AtomicU64,
    /// Nodes whose messages all have ids up to this were replayed from
    /// history already: they are skipped (see [`Member::skip_replayed`]).
    skip_upto: AtomicU64,
    /// Notices for this member only (rate limited, too long, …).
    private: Mutex<VecDeque<Bytes>>,
    /// Set when the call must end.
    ending: Mutex<Option<Ending>>,
    /// The writer is asleep and wants a wake-up on the next publish.
    waiting: AtomicBool,
    wake: Notify,
}

/// What [`Member::next_batch`] hands the member's writer.
#[derive(Debug)]
pub enum Outgoing {
    /// Frames to send (already length-prefixed, possibly several messages).
    Frames(Bytes),
    /// The call must end with this status.
    End(Status),
}

/// Most bytes coalesced into one send (see [`Member::next_batch`]).
const MAX_COALESCE: usize = 16 * 1024;
/// Node frames at least this big are sent without copying.
const COPY_LIMIT: usize = 4 * 1024;

impl Member {
    /// A number unique to this member within the hub (for logs).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The member's protocol.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The id of the oldest chat message waiting in this member's live log
    /// (`None`: none has arrived yet). Called before the member's writer
    /// starts, so the log still holds everything since the join.
    pub fn first_live_id(&self) -> Option<u64> {
        let mut node = Arc::clone(&self.cursor.lock());
        loop {
            let next = Arc::clone(node.next.get()?);
            if next.first_id != 0 {
                return Some(next.first_id);
            }
            node = next;
        }
    }

    /// Skips live messages with ids up to `id`: the member was sent them
    /// from history. Set before the member's writer starts.
    pub fn skip_replayed(&self, id: u64) {
        self.skip_upto.store(id, Ordering::Relaxed);
    }

    /// Wakes the writer if it sleeps.
    fn wake_if_waiting(&self) {
        if self.waiting.swap(false, Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    /// Decides how the call ends (the first decision wins) and wakes the writer.
    fn end(&self, ending: Ending) {
        let mut slot = self.ending.lock();
        if slot.is_none() {
            *slot = Some(ending);
        }
        drop(slot);
        self.wake.notify_one();
    }

    /// Ends the member's call with `status` once everything published before
    /// now is sent.
    pub fn close(&self, status: Status) {
        self.end(Ending::AfterFlush(status));
    }

    /// Completes, with its status, once the call must end at once (the
    /// member fell too far behind, or was disconnected). The writer waits
    /// on this while a send is blocked on the client's window: it would
    /// otherwise learn of the end only after the send — which, for a client
    /// that stopped reading, is when the slow-reader grace runs out, while
    /// the log it holds on to keeps growing.
    pub async fn must_end_now(&self) -> Status {
        loop {
            // Created before the check: `end` stores a permit if nobody
            // waits yet, so a wake between the check and the await is kept.
            let woken = self.wake.notified();
            if let Some(Ending::Now(status)) = self.ending.lock().clone() {
                return status;
            }
            woken.await;
        }
    }

    /// Queues a notice for this member alone.
    fn push_private(&self, frames: Bytes) {
        self.private.lock().push_back(frames);
        self.wake.notify_one();
    }

    /// Waits for something to send, or the end of the call.
    ///
    /// Small node frames are coalesced, up to `MAX_COALESCE` bytes, into
    /// one copy, so the member's task hands `h2` one DATA payload instead of
    /// many. Frames of `COPY_LIMIT` bytes or more go out as they are: they
    /// are big enough already, and sending the shared bytes avoids copying
    /// them once per member.
    pub async fn next_batch(&self) -> Outgoing {
        loop {
            if let Some(Ending::Now(status)) = self.ending.lock().clone() {
                return Outgoing::End(status);
            }
            // Room messages first, then notices for this member alone: a
            // notice about something (a welcome, a refused message) follows
            // what the room had already said.
            let from_log = self.take_from_log();
            let notices: Vec<Bytes> = self.private.lock().drain(..).collect();
            match (from_log, notices.is_empty()) {
                (Some(frames), true) => return Outgoing::Frames(frames),
                (None, true) => {}
                (from_log, false) => {
                    // Notices are rare: one copy to keep them in one send.
                    let mut buf = BytesMut::new();
                    if let Some(frames) = from_log {
                        buf.extend_from_slice(&frames);
                    }
                    for notice in notices {
                        buf.extend_from_slice(&notice);
                    }
                    return Outgoing::Frames(buf.freeze());
                }
            }
            if let Some(Ending::AfterFlush(status)) = self.ending.lock().clone() {
                return Outgoing::End(status);
            }
            // Sleep until a publisher sees `waiting` — but look once more
            // after raising the flag: a node published in between would
            // otherwise not wake us.
            self.waiting.store(true, Ordering::SeqCst);
            if self.cursor.lock().next.get().is_some() {
                self.waiting.store(false, Ordering::SeqCst);
                continue;
            }
            self.wake.notified().await;
        }
    }

    /// Walks the log from the cursor, collecting this member's frames.
    fn take_from_log(&self) -> Option<Bytes> {
        let mut cursor = self.cursor.lock();
        let mut first: Option<Bytes> = None;
        let mut coalesced: Option<BytesMut> = None;
        loop {
            let Some(next) = cursor.next.get().cloned() else {
                break;
            };
            static NONE: Bytes = Bytes::new();
            // A member that joined with a replay gets, in its log, the
            // messages sequenced between its join and the history read: the
            // replay has them already. A node is one batch, sequenced
            // atomically, so it is either wholly in the replay or not at all.
            let replayed =
                next.last_id != 0 && next.last_id <= self.skip_upto.load(Ordering::Relaxed);
            let frames = if replayed {
                &NONE
            } else {
                next.frames_for(self)
            };
            if !frames.is_empty() {
                let pending = coalesced.as_ref().map_or(0, BytesMut::len)
                    + first.as_ref().map_or(0, Bytes::len);
                if pending > 0
                    && (frames.len() >= COPY_LIMIT || pending + frames.len() > MAX_COALESCE)
                {
                    // Send what we have; this node waits for the next batch.
                    break;
                }
                match (&mut first, &mut coalesced) {
                    (None, None) => first = Some(frames.clone()),
                    (Some(one), None) => {
                        let mut buf =
                            BytesMut::with_capacity(MAX_COALESCE.min(one.len() + frames.len() * 4));
                        buf.extend_from_slice(one);
                        buf.extend_from_slice(frames);
                        first = None;
                        coalesced = Some(buf);
                    }
                    (_, Some(buf)) => buf.extend_from_slice(frames),
                }
            }
            self.consumed.store(next.end_offset, Ordering::Relaxed);
            *cursor = next;
            if first.as_ref().is_some_and(|f| f.len() >= COPY_LIMIT) {
                break;
            }
        }
        coalesced.map(BytesMut::freeze).or(first)
    }
}

/// A member's place in its room; leaving the room happens on drop, so a call
/// that ends any way (error, reset, deadline) leaves cleanly.
#[derive(Debug)]
pub struct Membership {
    hub: Arc<Hub>,
    room: Arc<Room>,
    member: Arc<Member>,
    /// Whether the member's typing indicator is on, so leaving can turn it
    /// off for the others.
    typing: AtomicBool,
}

impl Membership {
    /// The member.
    pub fn member(&self) -> &Arc<Member> {
        &self.member
    }

    /// The room's name.
    pub fn room_name(&self) -> &str {
        &self.room.name
    }

    /// Takes `name` for this member. `ALREADY_EXISTS` if a live member of
    /// the room has it (compared case-insensitively, so "Alice" cannot pose
    /// as "alice").
    pub fn claim_name(&self, name: &str) -> Result<(), Status> {
        let key = name.to_lowercase();
        let mut state = self.room.state.lock();
        if let Some(&holder) = state.names.get(&key) {
            if holder != self.member.id {
                return Err(Status::already_exists(format!(
                    "the name {name:?} is in use in room {:?}",
                    self.room.name
                )));
            }
            return Ok(());
        }
        state.names.insert(key, self.member.id);
        if let Some(slot) = Arc::make_mut(&mut state.members)
            .iter_mut()
            .find(|slot| slot.member.id == self.member.id)
        {
            slot.name = Some(Arc::from(name));
        }
        Ok(())
    }

    /// Publishes events from this member to the room, in order. Returns
    /// `false` if the room no longer accepts anything (the server is
    /// shutting down); the member is told if a message was among them.
    pub fn publish(&self, events: &[Event]) -> bool {
        for event in events {
            if let Event::Typing { started } = event {
                self.typing.store(*started, Ordering::Relaxed);
            }
        }
        let started = std::time::Instant::now();
        let published = self.room.publish(self.member.id, events, &self.hub);
        crate::metrics::METRICS.fanout.observe(started.elapsed());
        if !published && events.iter().any(|e| matches!(e, Event::Message { .. })) {
            self.notify("message not delivered: the server is shutting down");
        }
        published
    }

    /// Sends a notice to this member only.
    pub fn notify(&self, text: &str) {
        let frames = match self.member.protocol {
            Protocol::Stream => encode_one(&ChatMessage {
                user: "server".into(),
                message: text.to_owned(),
                timestamp: unix_now(),
                id: 0,
            }),
            Protocol::Events => encode_one(&system_event(text)),
        };
        self.member.push_private(frames);
    }

    /// Who is in the member's room (the member included).
    pub fn presence(&self) -> Presence {
        self.room.presence()
    }

    /// The hub the member is in.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Takes note of the history epoch this member was told, unless the
    /// room knows one already: a later batch of another epoch then makes the
    /// room tell its members that history was lost.
    pub fn note_epoch(&self, epoch: &str) {
        let mut state = self.room.state.lock();
        if state.epoch.is_none() {
            state.epoch = Some(epoch.to_owned());
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let named = self
            .room
            .state
            .lock()
            .members
            .iter()
            .find(|slot| slot.member.id == self.member.id)
            .and_then(|slot| slot.name.clone());
        if named.is_some() {
            let events: &[Event] = if self.typing.load(Ordering::Relaxed) {
                &[Event::Typing { started: false }, Event::Left]
            } else {
                &[Event::Left]
            };
            let _ = self.room.publish(self.member.id, events, &self.hub);
        }
        let now_empty = {
            let mut state = self.room.state.lock();
            let before = state.members.len();
            Arc::make_mut(&mut state.members).retain(|slot| slot.member.id != self.member.id);
            if state.members.len() < before {
                state.count(self.member.protocol, false);
            }
            if let Some(name) = &named {
                state.names.remove(&name.to_lowercase());
            }
            state.members.is_empty()
        };
        self.hub.active.fetch_sub(1, Ordering::Relaxed);
        if let Some(name) = named {
            info!(room = %self.room.name, user = %name, "left");
        }
        if now_empty {
            self.hub.remove_room_if_empty(&self.room);
        }
    }
}

/// A node just appended, with the members to deliver it to.
type Appended = (Arc<Node>, Arc<Vec<Slot>>);

/// A member in the room's list.
#[derive(Debug, Clone)]
struct Slot {
    member: Arc<Member>,
    name: Option<Arc<str>>,
}

#[derive(Debug)]
struct RoomState {
    /// Id of the last message.
    last_id: u64,
    /// The newest node of the log; new members start here.
    tail: Arc<Node>,
    /// Copied on write (joins, leaves, names), so that a publisher can take
    /// a snapshot and deliver without holding the room lock.
    members: Arc<Vec<Slot>>,
    /// Members speaking `ChatStream`.
    stream_members: usize,
    /// Members speaking `Chat`.
    event_members: usize,
    /// Lowercased name → member id.
    names: HashMap<String, u64>,
    /// Set by [`Hub::shutdown`]: the log is complete, nothing more is
    /// published, so what members flush is everything the room accepted.
    closed: bool,
    /// The history epoch the room's members were told (shared stores), if
    /// known yet.
    epoch: Option<String>,
}

impl RoomState {
    /// Takes note of the store's epoch for the room. When it differs from
    /// the one members were told, returns the notice telling them that the
    /// history was lost, to append to the log.
    fn note_epoch(&mut self, epoch: &str) -> Option<Node> {
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
                let stream = encode_one(&ChatMessage {
                    user: "server".into(),
                    message: text.clone(),
                    timestamp: unix_now(),
                    id: 0,
                });
                let mut event = system_event(&text);
                if let Some(server_event::Event::SystemEvent(system)) = &mut event.event {
                    system.epoch = epoch.to_owned();
                }
                Some(Node::new(0, stream, encode_one(&event), None))
            }
        }
    }

    /// Keeps the per-protocol member counts in step with `members`.
    fn count(&mut self, protocol: Protocol, joined: bool) {
        let counter = match protocol {
            Protocol::Stream => &mut self.stream_members,
            Protocol::Events => &mut self.event_members,
        };
        if joined {
            *counter += 1;
        } else {
            *counter = counter.saturating_sub(1);
        }
    }

    /// Appends a node to the log. Returns it with the members to deliver it
    /// to; the caller delivers with [`deliver`] after releasing the lock.
    fn append(&mut self, mut node: Node, room: &str) -> Option<Appended> {
        let size = node.stream.len().max(node.events.len());
        node.end_offset = self.tail.end_offset + size as u64;
        let node = Arc::new(node);
        // Only this room's lock holder appends, so `next` is always unset.
        if self.tail.next.set(Arc::clone(&node)).is_err() {
            warn!(room, "room log out of step: node dropped");
            return None;
        }
        self.tail = Arc::clone(&node);
        Some((node, Arc::clone(&self.members)))
    }
}

/// Lets every member know of a new node: members too far behind are
/// disconnected, sleeping writers are woken.
///
/// This runs outside the room lock, on a snapshot of the member list, so
/// other publishers are not held up meanwhile.
fn deliver(node: &Arc<Node>, members: &[Slot], room: &str, max_lag: usize) {
    for slot in members {
        let member = &slot.member;
        let lag = node
            .end_offset
            .saturating_sub(member.consumed.load(Ordering::Relaxed));
        if lag > max_lag as u64 {
            let already = member.ending.lock().is_some();
            if !already {
                warn!(
                    room,
                    user = slot.name.as_deref().unwrap_or("(unnamed)"),
                    lag,
                    "member too far behind: disconnecting with RESOURCE_EXHAUSTED"
                );
                crate::metrics::METRICS.evicted_lagging.inc();
                member.end(Ending::Now(Status::resource_exhausted(format!(
                    "too far behind: more than {max_lag} bytes of messages waiting for this client"
                ))));
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

fn encode_into<M: prost::Message>(message: &M, buf: &mut BytesMut) {
    // Messages the server builds are far below any size limit.
    if let Err(status) = crate::codec::encode(message, None, usize::MAX, buf) {
        warn!(%status, "could not encode a chat event");
    }
}

fn encode_one<M: prost::Message>(message: &M) -> Bytes {
    let mut buf = BytesMut::new();
    encode_into(message, &mut buf);
    buf.freeze()
}

fn system_event(text: &str) -> ServerEvent {
    ServerEvent {
        event: Some(server_event::Event::SystemEvent(SystemEvent {
            message: text.to_owned(),
            timestamp: unix_now(),
            ..Default::default()
        })),
    }
}

/// Who is in a room: the members that have a name, sorted, and how many
/// have none yet (a `ChatStream` member is named by its first message, and
/// until then receives the room as a silent listener).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presence {
    /// Names of the members that have one, sorted.
    pub names: Vec<String>,
    /// Members without a name yet.
    pub listeners: usize,
}

impl Room {
    fn presence(&self) -> Presence {
        let state = self.state.lock();
        let mut presence = Presence::default();
        for slot in state.members.iter() {
            match slot.name.as_deref() {
                Some(name) => presence.names.push(name.to_owned()),
                None => presence.listeners += 1,
            }
        }
        presence.names.sort();
        presence
    }

    /// Publishes `events` of member `sender`. With a store that sequences
    /// (Redis), the batch goes to the store and comes back to every server
    /// through [`Room::apply`]; otherwise the room numbers it and delivers
    /// it at once.
    /// `false` if the room is closed (the server is shutting down).
    fn publish(&self, sender: u64, events: &[Event], hub: &Hub) -> bool {
        let mut state = self.state.lock();
        if state.closed {
            return false;
        }
        let Some(user) = state
            .members
            .iter()
            .find(|s| s.member.id == sender)
            .and_then(|s| s.name.clone())
        else {
            return true;
        };
        let timestamp = unix_now();
        if hub.history.sequences() {
            let floor = state.last_id;
            drop(state);
            hub.history.submit(Submission {
                room: self.name.clone(),
                sender,
                user: user.to_string(),
                timestamp,
                events: events.to_vec(),
                floor,
            });
            return true;
        }
        let (messages, appended) =
            self.append_events(&mut state, sender, &user, events, None, timestamp);
        // Recorded under the room lock, so history holds the room's
        // messages in the order members see them.
        hub.history.record(&self.name, messages);
        drop(state);
        if let Some((node, members)) = appended {
            deliver(&node, &members, &self.name, hub.config.max_queue_bytes);
        }
        true
    }

    /// Numbers and delivers a batch here, because the store that should
    /// have sequenced it is unreachable. Returns its messages for the store.
    fn publish_unsequenced(&self, batch: &Submission, hub: &Hub) -> Vec<StoredMessage> {
        let mut state = self.state.lock();
        let (messages, appended) = self.append_events(
            &mut state,
            batch.sender,
            &batch.user,
            &batch.events,
            None,
            batch.timestamp,
        );
        drop(state);
        if let Some((node, members)) = appended {
            deliver(&node, &members, &self.name, hub.config.max_queue_bytes);
        }
        messages
    }

    /// Delivers a batch sequenced by the shared store (from any server).
    fn apply(&self, batch: &Sequenced, hub: &Hub) {
        let mut state = self.state.lock();
        let mut appended = Vec::with_capacity(2);
        if let Some(notice) = state.note_epoch(&batch.epoch) {
            warn!(room = %self.name, epoch = %batch.epoch, "history epoch changed: the store lost the room's history");
            appended.extend(state.append(notice, &self.name));
        }
        let own = batch.origin == hub.node_id;
        if batch.flushed && own {
            // Delivered here while the store was unreachable.
        } else {
            let sender = if own { batch.sender } else { 0 };
            let (_, node) = self.append_events(
                &mut state,
                sender,
                &batch.user,
                &batch.events,
                Some(batch.first_id),
                batch.timestamp,
            );
            appended.extend(node);
        }
        drop(state);
        for (node, members) in appended {
            deliver(&node, &members, &self.name, hub.config.max_queue_bytes);
        }
    }

    /// Encodes `events` once per protocol the room needs, as one node, and
    /// appends it. Message ids start at `first_id` when the store assigned
    /// them, else at the room's next id. Returns the messages (for history)
    /// and the node with the members to deliver it to.
    fn append_events(
        &self,
        state: &mut RoomState,
        sender: u64,
        user: &str,
        events: &[Event],
        first_id: Option<u64>,
        timestamp: i64,
    ) -> (Vec<StoredMessage>, Option<Appended>) {
        let sender_protocol = state
            .members
            .iter()
            .find(|s| s.member.id == sender)
            .map(|s| s.member.protocol);
        // Encode only for the kinds of recipient the room has.
        let want_stream =
            state.stream_members > usize::from(sender_protocol == Some(Protocol::Stream));
        let want_events = state.event_members > 0;
        let want_sender_copy = sender_protocol == Some(Protocol::Events)
            && events.iter().any(|e| matches!(e, Event::Typing { .. }));
        let mut next_id = first_id.unwrap_or(state.last_id + 1);
        let mut messages = Vec::new();
        let (mut stream, mut others, mut to_sender) =
            (BytesMut::new(), BytesMut::new(), BytesMut::new());
        for event in events {
            let (server_event, echo) = match event {
                Event::Message { text } => {
                    let id = next_id;
                    next_id += 1;
                    state.last_id = state.last_id.max(id);
                    messages.push(StoredMessage {
                        id,
                        user: user.to_owned(),
                        text: text.clone(),
                        timestamp,
                    });
                    if want_stream {
                        let message = ChatMessage {
                            user: user.to_owned(),
                            message: text.clone(),
                            timestamp,
                            id,
                        };
                        encode_into(&message, &mut stream);
                    }
                    let event = server_event::Event::ChatMessage(ChatMessageEvent {
                        message: text.clone(),
                        username: user.to_owned(),
                        timestamp,
                        id,
                    });
                    (event, true)
                }
                Event::Typing { started } => {
                    let kind = if *started {
                        TypingEventType::TypingStart
                    } else {
                        TypingEventType::TypingStop
                    };
                    let event = server_event::Event::TypingEvent(TypingEvent {
                        username: user.to_owned(),
                        timestamp,
                        r#type: kind.into(),
                    });
                    // Typing goes to the others only.
                    (event, false)
                }
                Event::Joined | Event::Left => {
                    let kind = if matches!(event, Event::Joined) {
                        UserEventType::UserJoined
                    } else {
                        UserEventType::UserLeft
                    };
                    let event = server_event::Event::UserEvent(UserEvent {
                        r#type: kind.into(),
                        username: user.to_owned(),
                        timestamp,
                    });
                    (event, true)
                }
            };
            if want_events {
                let event = ServerEvent {
                    event: Some(server_event),
                };
                encode_into(&event, &mut others);
                if want_sender_copy && echo {
                    encode_into(&event, &mut to_sender);
                }
            }
        }
        let mut node = Node::new(
            sender,
            stream.freeze(),
            others.freeze(),
            want_sender_copy.then(|| to_sender.freeze()),
        );
        node.first_id = messages.first().map_or(0, |m| m.id);
        node.last_id = messages.last().map_or(0, |m| m.id);
        let appended = state.append(node, &self.name);
        (messages, appended)
    }
}

/// Every room of the server.
#[derive(Debug)]
pub struct Hub {
    rooms: Mutex<HashMap<String, Arc<Room>>>,
    next_member: AtomicU64,
    active: AtomicUsize,
    draining: AtomicBool,
    started: Instant,
    pub(crate) config: ChatConfig,
    /// Where history is kept (and, for a shared store, who sequences).
    history: SharedHistory,
    /// This server's id among those sharing a history store.
    node_id: u64,
}

impl Hub {
    /// An empty hub with the embedded history store
    /// ([`MemoryHistory`], keeping [`ChatConfig::history_len`] messages per
    /// room).
    pub fn new(config: ChatConfig) -> Arc<Hub> {
        let history = Arc::new(MemoryHistory::new(config.history_len));
        Hub::with_history(config, history)
    }

    /// An empty hub keeping history in `history`, whose background work
    /// (if any) starts now. Must be called inside a Tokio runtime for
    /// stores that have background work (Redis).
    pub fn with_history(config: ChatConfig, history: SharedHistory) -> Arc<Hub> {
        let hub = Arc::new(Hub {
            rooms: Mutex::new(HashMap::new()),
            next_member: AtomicU64::new(1),
            active: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            started: Instant::now(),
            config,
            history,
            node_id: super::history::random_u64(),
        });
        let weak: Weak<Hub> = Arc::downgrade(&hub);
        let weak: Weak<dyn Deliver> = weak;
        hub.history.start(weak);
        hub
    }

    /// The history store.
    pub fn history(&self) -> &SharedHistory {
        &self.history
    }

    /// The room, if it exists on this server.
    fn room(&self, name: &str) -> Option<Arc<Room>> {
        self.rooms.lock().get(name).cloned()
    }

    /// Adds a member to `room` (created if needed). It receives everything
    /// published from now on.
    pub fn join(self: &Arc<Self>, room: &str, protocol: Protocol) -> Result<Membership, Status> {
        if self.is_draining() {
            return Err(Status::unavailable("the server is shutting down"));
        }
        let room = {
            let mut rooms = self.rooms.lock();
            Arc::clone(rooms.entry(room.to_owned()).or_insert_with(|| {
                Arc::new(Room {
                    name: room.to_owned(),
                    state: Mutex::new(RoomState {
                        // Ids continue from history: a room emptied and
                        // created again must not reuse them.
                        last_id: self.history.last_id(room),
                        epoch: None,
                        tail: Arc::new(Node::new(0, Bytes::new(), Bytes::new(), None)),
                        members: Arc::new(Vec::new()),
                        stream_members: 0,
                        event_members: 0,
                        names: HashMap::new(),
                        closed: false,
                    }),
                })
            }))
        };
        let member = {
            let mut state = room.state.lock();
            if state.members.len() >= self.config.max_members_per_room {
                return Err(Status::resource_exhausted(format!(
                    "room {:?} is full ({} members)",
                    room.name, self.config.max_members_per_room
                )));
            }
            // Joining under the room lock, at the tail: the member gets
            // exactly what is published after this point.
            let member = Arc::new(Member {
                id: self.next_member.fetch_add(1, Ordering::Relaxed),
                protocol,
                consumed: AtomicU64::new(state.tail.end_offset),
                skip_upto: AtomicU64::new(0),
                cursor: Mutex::new(Arc::clone(&state.tail)),
                private: Mutex::new(VecDeque::new()),
                ending: Mutex::new(None),
                waiting: AtomicBool::new(false),
                wake: Notify::new(),
            });
            Arc::make_mut(&mut state.members).push(Slot {
                member: Arc::clone(&member),
                name: None,
            });
            state.count(protocol, true);
            member
        };
        self.active.fetch_add(1, Ordering::Relaxed);
        Ok(Membership {
            hub: Arc::clone(self),
            room,
            member,
            typing: AtomicBool::new(false),
        })
    }

    fn remove_room_if_empty(&self, room: &Arc<Room>) {
        let mut rooms = self.rooms.lock();
        let empty = room.state.lock().members.is_empty();
        if empty {
            if let Some(current) = rooms.get(&room.name) {
                if Arc::ptr_eq(current, room) {
                    rooms.remove(&room.name);
                }
            }
        }
    }

    /// Who is in `room` (nobody if the room does not exist).
    pub fn presence_in(&self, room: &str) -> Presence {
        let room = self.rooms.lock().get(room).cloned();
        room.map(|room| room.presence()).unwrap_or_default()
    }

    /// Members connected right now.
    pub fn active_members(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Time since the hub was created.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Begins shutdown: every room is closed (from now on nothing is
    /// published, so a message is either in a room's log or was refused
    /// with a notice to its sender), every member is told (Chat members get
    /// a `SystemEvent` at the end of the log), and each call ends with
    /// `UNAVAILABLE` once everything queued for it is sent.
    ///
    /// **History hook:** when this returns, every room's log is final.
    /// A history store flushes after this call (and before the process
    /// exits) to persist everything any member was sent.
    pub fn shutdown(&self, notice: &str) {
        self.draining.store(true, Ordering::Relaxed);
        let rooms: Vec<Arc<Room>> = self.rooms.lock().values().cloned().collect();
        let event = encode_one(&system_event(notice));
        for room in rooms {
            let mut state = room.state.lock();
            if std::mem::replace(&mut state.closed, true) {
                // Already shut down.
                continue;
            }
            let node = Node::new(0, Bytes::new(), event.clone(), None);
            // The notice goes through the log, so it arrives after every
            // message published before it.
            let appended = state.append(node, &room.name);
            drop(state);
            if let Some((node, members)) = appended {
                deliver(&node, &members, &room.name, usize::MAX);
                for slot in members.iter() {
                    slot.member.close(Status::unavailable(notice));
                }
            }
        }
    }
}

impl Deliver for Hub {
    fn node_id(&self) -> u64 {
        self.node_id
    }

    fn sequenced(&self, batch: Sequenced) {
        // A room nobody is in on this server needs nothing: its history is
        // in the store.
        if let Some(room) = self.room(&batch.room) {
            room.apply(&batch, self);
        }
    }

    fn local(&self, batch: Submission) -> Vec<StoredMessage> {
        match self.room(&batch.room) {
            Some(room) => room.publish_unsequenced(&batch, self),
            // Everyone left meanwhile: nobody to deliver to, and no room to
            // number the messages. They are dropped, with a note.
            None => {
                let lost = batch.texts().count();
                if lost > 0 {
                    warn!(room = %batch.room, lost, "history store unreachable and the room is gone: messages not kept");
                }
                Vec::new()
            }
        }
    }
}
