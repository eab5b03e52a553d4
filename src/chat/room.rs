//! Rooms, members and the fan-out between them.
//!
//! # How a message travels
//!
//! ```text
//!  sender's task                     room (one lock)                each member's task
//!  ─────────────                     ───────────────                ──────────────────
//!  reads a batch of messages ──▶ assign ids, encode the batch  ──▶ outbox: [Bytes, Bytes, …]
//!                                ONCE per protocol, push the         │ woken (Notify)
//!                                same `Bytes` to every outbox        ▼
//!                                                               take everything queued,
//!                                                               one send within the
//!                                                               client's flow-control window
//! ```
//!
//! Three choices make this cheap and fair:
//!
//! * **Encode once, share the bytes.** A batch is serialised into gRPC frames
//!   once per protocol; every recipient's outbox gets a clone of the same
//!   [`Bytes`] (a reference count, not a copy).
//! * **Batch on both ends.** The sender's task takes every message already
//!   received before fanning out, and a member's task sends everything queued
//!   for it in one go: under load, the work per message shrinks.
//! * **Nobody waits for anybody.** Publishing never blocks on a recipient: it
//!   only appends to outboxes. A member that stops reading stalls only its own
//!   task (waiting for its window); its outbox is bounded, and if it stays
//!   stuck past the grace period it is disconnected with `RESOURCE_EXHAUSTED`.
//!   Members that read lose nothing.
//!
//! The room lock is held while ids are assigned and outboxes appended, so
//! every member sees the room's messages in one order.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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

/// Where a member's outbox stands.
#[derive(Debug, Clone)]
enum OutboxState {
    Open,
    /// Send what is queued, then end the call with this status.
    Closing(Status),
    /// End the call now with this status; what is queued is dropped.
    Kicked(Status),
}

/// The frames waiting to be sent to one member.
#[derive(Debug)]
struct Outbox {
    frames: VecDeque<Bytes>,
    bytes: usize,
    state: OutboxState,
}

/// One connected stream of a room.
#[derive(Debug)]
pub struct Member {
    id: u64,
    protocol: Protocol,
    outbox: Mutex<Outbox>,
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

/// What became of frames pushed to a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Push {
    Queued,
    /// The outbox overflowed just now: the member is being disconnected.
    Kicked,
    /// The member is already leaving; nothing queued.
    Dropped,
}

/// Most bytes coalesced into one send (see [`take`]).
const MAX_COALESCE: usize = 16 * 1024;
/// Frame buffers at least this big are sent without copying (see [`take`]).
const COPY_LIMIT: usize = 4 * 1024;

impl Member {
    /// The member's protocol.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Appends frames; kicks the member if its outbox would go over `limit`.
    fn push(&self, frames: &Bytes, limit: usize) -> Push {
        let mut outbox = self.outbox.lock();
        match outbox.state {
            OutboxState::Open => {}
            OutboxState::Closing(_) | OutboxState::Kicked(_) => return Push::Dropped,
        }
        if outbox.bytes + frames.len() > limit {
            outbox.frames = VecDeque::new();
            outbox.bytes = 0;
            outbox.state = OutboxState::Kicked(Status::resource_exhausted(format!(
                "too far behind: more than {limit} bytes of messages waiting for this client"
            )));
            drop(outbox);
            self.wake.notify_one();
            return Push::Kicked;
        }
        let was_empty = outbox.frames.is_empty();
        outbox.bytes += frames.len();
        outbox.frames.push_back(frames.clone());
        drop(outbox);
        // The writer takes everything queued when it wakes, so only the first
        // frame of a backlog needs to wake it.
        if was_empty {
            self.wake.notify_one();
        }
        Push::Queued
    }

    /// Ends the member's call once its queue is sent.
    pub fn close(&self, status: Status) {
        let mut outbox = self.outbox.lock();
        if let OutboxState::Open = outbox.state {
            outbox.state = OutboxState::Closing(status);
        }
        drop(outbox);
        self.wake.notify_one();
    }

    /// Waits for something to send (see [`take`]), or the end of the call.
    pub async fn next_batch(&self) -> Outgoing {
        loop {
            {
                let mut outbox = self.outbox.lock();
                if let OutboxState::Kicked(status) = &outbox.state {
                    return Outgoing::End(status.clone());
                }
                if !outbox.frames.is_empty() {
                    return Outgoing::Frames(take(&mut outbox));
                }
                if let OutboxState::Closing(status) = &outbox.state {
                    return Outgoing::End(status.clone());
                }
            }
            // `notify_one` stores a permit when nobody waits, so a push between
            // the check above and this await is not lost.
            self.wake.notified().await;
        }
    }
}

/// Takes the next buffer to send from the outbox.
///
/// Small frame buffers (a few messages each) are coalesced, up to
/// [`MAX_COALESCE`] bytes, into one copy, so the member's task hands `h2` one
/// DATA payload instead of many; under load this is where most of the saving
/// per delivery comes from. A buffer of [`COPY_LIMIT`] bytes or more goes out
/// as it is: it is already big enough, and sending the shared bytes avoids
/// copying them once per member.
fn take(outbox: &mut Outbox) -> Bytes {
    let Some(first) = outbox.frames.pop_front() else {
        return Bytes::new();
    };
    let mut total = first.len();
    let mut count = 0;
    if total < COPY_LIMIT {
        for frame in &outbox.frames {
            if frame.len() >= COPY_LIMIT || total + frame.len() > MAX_COALESCE {
                break;
            }
            total += frame.len();
            count += 1;
        }
    }
    outbox.bytes -= total;
    if count == 0 {
        return first;
    }
    let mut buf = BytesMut::with_capacity(total);
    buf.extend_from_slice(&first);
    for frame in outbox.frames.drain(..count) {
        buf.extend_from_slice(&frame);
    }
    buf.freeze()
}

/// A member's place in its room; leaving the room happens on drop, so a call
/// that ends any way (error, reset, deadline) leaves cleanly.
#[derive(Debug)]
pub struct Membership {
    hub: Arc<Hub>,
    room: Arc<Room>,
    member: Arc<Member>,
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
        if let Some(slot) = state
            .members
            .iter_mut()
            .find(|slot| slot.member.id == self.member.id)
        {
            slot.name = Some(Arc::from(name));
        }
        Ok(())
    }

    /// Publishes events from this member to the room, in order.
    pub fn publish(&self, events: &[Event]) {
        self.room.publish(self.member.id, events, &self.hub.config);
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
            Protocol::Events => encode_one(&ServerEvent {
                event: Some(server_event::Event::SystemEvent(SystemEvent {
                    message: text.to_owned(),
                    timestamp: unix_now(),
                })),
            }),
        };
        if self.member.push(&frames, self.hub.config.max_queue_bytes) == Push::Kicked {
            warn!(room = %self.room.name, "member too far behind: disconnecting with RESOURCE_EXHAUSTED");
        }
    }

    /// Names of the room's members that have one, sorted.
    pub fn names(&self) -> Vec<String> {
        self.room.names()
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let name = {
            let state = self.room.state.lock();
            state
                .members
                .iter()
                .find(|slot| slot.member.id == self.member.id)
                .and_then(|slot| slot.name.clone())
        };
        if name.is_some() {
            self.room
                .publish(self.member.id, &[Event::Left], &self.hub.config);
        }
        let now_empty = {
            let mut state = self.room.state.lock();
            state
                .members
                .retain(|slot| slot.member.id != self.member.id);
            if let Some(name) = &name {
                state.names.remove(&name.to_lowercase());
            }
            state.members.is_empty()
        };
        self.hub.active.fetch_sub(1, Ordering::Relaxed);
        if let Some(name) = name {
            info!(room = %self.room.name, user = %name, "left");
        }
        if now_empty {
            self.hub.remove_room_if_empty(&self.room);
        }
    }
}

/// A member in the room's list.
#[derive(Debug)]
struct Slot {
    member: Arc<Member>,
    name: Option<Arc<str>>,
}

#[derive(Debug, Default)]
struct RoomState {
    /// Id of the last message.
    next_id: u64,
    members: Vec<Slot>,
    /// Members speaking `ChatStream`.
    stream_members: usize,
    /// Members speaking `Chat`.
    event_members: usize,
    /// Lowercased name → member id.
    names: HashMap<String, u64>,
}

impl RoomState {
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
}

/// One chat room.
#[derive(Debug)]
pub struct Room {
    name: String,
    state: Mutex<RoomState>,
}

/// Frames of one batch, for each kind of recipient.
#[derive(Default)]
struct Encoded {
    /// `ChatMessage` frames for `ChatStream` members other than the sender.
    stream: BytesMut,
    /// `ServerEvent` frames for `Chat` members other than the sender.
    events_others: BytesMut,
    /// `ServerEvent` frames for the sender, when it speaks `Chat` (no typing
    /// echo).
    events_sender: BytesMut,
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

impl Room {
    fn names(&self) -> Vec<String> {
        let state = self.state.lock();
        let mut names: Vec<String> = state
            .members
            .iter()
            .filter_map(|slot| slot.name.as_deref().map(str::to_owned))
            .collect();
        names.sort();
        names
    }

    fn publish(&self, sender: u64, events: &[Event], config: &ChatConfig) {
        let mut state = self.state.lock();
        let Some(sender_slot) = state.members.iter().find(|s| s.member.id == sender) else {
            return;
        };
        let Some(user) = sender_slot.name.clone() else {
            return;
        };
        let sender_protocol = sender_slot.member.protocol;
        // Encode only for the kinds of recipient the room has.
        let want_stream = state.stream_members > usize::from(sender_protocol == Protocol::Stream);
        let want_events = state.event_members > 0;
        let want_sender_copy = sender_protocol == Protocol::Events
            && events.iter().any(|e| matches!(e, Event::Typing { .. }));
        let timestamp = unix_now();
        let mut encoded = Encoded::default();
        for event in events {
            let (server_event, to_sender) = match event {
                Event::Message { text } => {
                    state.next_id += 1;
                    let id = state.next_id;
                    if want_stream {
                        let message = ChatMessage {
                            user: user.to_string(),
                            message: text.clone(),
                            timestamp,
                            id,
                        };
                        encode_into(&message, &mut encoded.stream);
                    }
                    let event = server_event::Event::ChatMessage(ChatMessageEvent {
                        message: text.clone(),
                        username: user.to_string(),
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
                        username: user.to_string(),
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
                        username: user.to_string(),
                        timestamp,
                    });
                    (event, true)
                }
            };
            if want_events {
                let event = ServerEvent {
                    event: Some(server_event),
                };
                encode_into(&event, &mut encoded.events_others);
                if want_sender_copy && to_sender {
                    encode_into(&event, &mut encoded.events_sender);
                }
            }
        }
        let stream = encoded.stream.freeze();
        let others = encoded.events_others.freeze();
        let to_sender = if want_sender_copy {
            encoded.events_sender.freeze()
        } else {
            others.clone()
        };
        let limit = config.max_queue_bytes;
        for slot in &state.members {
            let member = &slot.member;
            let frames = match (member.protocol, member.id == sender) {
                (Protocol::Stream, false) => &stream,
                (Protocol::Stream, true) => continue,
                (Protocol::Events, false) => &others,
                (Protocol::Events, true) if sender_protocol == Protocol::Events => &to_sender,
                (Protocol::Events, true) => continue,
            };
            if frames.is_empty() {
                continue;
            }
            if member.push(frames, limit) == Push::Kicked {
                warn_kicked(&self.name, slot);
            }
        }
    }
}

/// Logs a kick, once per offender (`push` reports `Kicked` only once).
fn warn_kicked(room: &str, slot: &Slot) {
    warn!(
        room,
        user = slot.name.as_deref().unwrap_or("(unnamed)"),
        "member too far behind: disconnecting with RESOURCE_EXHAUSTED"
    );
}

/// Every room of the server.
#[derive(Debug)]
pub struct Hub {
    rooms: Mutex<HashMap<String, Arc<Room>>>,
    next_member: AtomicU64,
    active: AtomicUsize,
    draining: std::sync::atomic::AtomicBool,
    started: Instant,
    pub(crate) config: ChatConfig,
}

impl Hub {
    /// An empty hub.
    pub fn new(config: ChatConfig) -> Arc<Hub> {
        Arc::new(Hub {
            rooms: Mutex::new(HashMap::new()),
            next_member: AtomicU64::new(1),
            active: AtomicUsize::new(0),
            draining: std::sync::atomic::AtomicBool::new(false),
            started: Instant::now(),
            config,
        })
    }

    /// Adds a member to `room` (created if needed). It receives from now on.
    pub fn join(self: &Arc<Self>, room: &str, protocol: Protocol) -> Result<Membership, Status> {
        if self.is_draining() {
            return Err(Status::unavailable("the server is shutting down"));
        }
        let room = {
            let mut rooms = self.rooms.lock();
            Arc::clone(rooms.entry(room.to_owned()).or_insert_with(|| {
                Arc::new(Room {
                    name: room.to_owned(),
                    state: Mutex::new(RoomState::default()),
                })
            }))
        };
        let member = Arc::new(Member {
            id: self.next_member.fetch_add(1, Ordering::Relaxed),
            protocol,
            outbox: Mutex::new(Outbox {
                frames: VecDeque::new(),
                bytes: 0,
                state: OutboxState::Open,
            }),
            wake: Notify::new(),
        });
        {
            let mut state = room.state.lock();
            if state.members.len() >= self.config.max_members_per_room {
                return Err(Status::resource_exhausted(format!(
                    "room {:?} is full ({} members)",
                    room.name, self.config.max_members_per_room
                )));
            }
            state.members.push(Slot {
                member: Arc::clone(&member),
                name: None,
            });
            state.count(protocol, true);
        }
        self.active.fetch_add(1, Ordering::Relaxed);
        Ok(Membership {
            hub: Arc::clone(self),
            room,
            member,
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

    /// Names of the members of `room` that have one, sorted (empty if the
    /// room does not exist).
    pub fn names_in(&self, room: &str) -> Vec<String> {
        let room = self.rooms.lock().get(room).cloned();
        room.map(|room| room.names()).unwrap_or_default()
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

    /// Begins shutdown: every member is told (Chat members get a
    /// `SystemEvent`), then its call ends with `UNAVAILABLE` once what is
    /// queued for it is sent.
    pub fn shutdown(&self, notice: &str) {
        self.draining.store(true, Ordering::Relaxed);
        let rooms: Vec<Arc<Room>> = self.rooms.lock().values().cloned().collect();
        let event = encode_one(&ServerEvent {
            event: Some(server_event::Event::SystemEvent(SystemEvent {
                message: notice.to_owned(),
                timestamp: unix_now(),
            })),
        });
        for room in rooms {
            let state = room.state.lock();
            for slot in &state.members {
                if slot.member.protocol == Protocol::Events {
                    let _ = slot.member.push(&event, usize::MAX);
                }
                slot.member.close(Status::unavailable(notice));
            }
        }
    }
}
