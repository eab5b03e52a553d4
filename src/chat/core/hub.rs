//! The hub: every room of the server, joining and leaving, and shutdown.
//! It is also where batches meet their [`Sequencer`]: a member's batch goes
//! to the sequencer, and comes back to the hub numbered ([`Deliver`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracing::info;

use super::error::ChatError;
use super::event::{Encoders, Event, Notice, Protocol, unix_now};
use super::member::{Member, Verdict};
use super::room::{Delivery, Presence, Room};
use crate::chat::ChatConfig;
use crate::chat::history::memory::MemoryHistory;
use crate::chat::history::roster::{Census, Claim, Holder, Roster};
use crate::chat::history::{
    Deliver, Sequenced, Sequencer, SharedHistory, Store, StoredMessage, Submission,
};

/// Every room of the server.
#[derive(Debug)]
pub struct Hub {
    rooms: Mutex<HashMap<String, Arc<Room>>>,
    next_member: AtomicU64,
    active: AtomicUsize,
    draining: AtomicBool,
    started: Instant,
    config: ChatConfig,
    /// Where history is read.
    history: SharedHistory,
    /// Who numbers batches.
    sequencer: Arc<dyn Sequencer>,
    /// Who holds which name on every server sharing the store.
    roster: Arc<dyn Roster>,
    /// Each protocol's encoding of a batch.
    encoders: Encoders,
    /// This server's id among those sharing a history store.
    node_id: u64,
}

impl Hub {
    /// An empty hub with the embedded history store ([`MemoryHistory`],
    /// keeping [`ChatConfig::history_len`] messages per room).
    pub fn new(config: ChatConfig, encoders: Encoders) -> Arc<Hub> {
        let store = Arc::new(MemoryHistory::new(config.history_len));
        Hub::with_store(config, store, encoders)
    }

    /// An empty hub keeping history in `store`, which also numbers its
    /// batches; its background work (if any) starts now, so call inside a
    /// Tokio runtime for stores that have some (Redis).
    pub fn with_store<S: Store + 'static>(
        config: ChatConfig,
        store: Arc<S>,
        encoders: Encoders,
    ) -> Arc<Hub> {
        let history: SharedHistory = store.clone();
        let roster: Arc<dyn Roster> = store.clone();
        let hub = Arc::new(Hub {
            rooms: Mutex::new(HashMap::new()),
            next_member: AtomicU64::new(1),
            active: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            started: Instant::now(),
            config,
            history,
            sequencer: store,
            roster,
            encoders,
            node_id: crate::chat::history::random_u64(),
        });
        let weak: Weak<Hub> = Arc::downgrade(&hub);
        let weak: Weak<dyn Deliver> = weak;
        hub.sequencer.start(weak);
        hub
    }

    /// The service's settings.
    pub fn config(&self) -> &ChatConfig {
        &self.config
    }

    /// The history store.
    pub fn history(&self) -> &SharedHistory {
        &self.history
    }

    /// Encodes a notice for one member.
    pub(super) fn encode_notice(&self, protocol: Protocol, notice: &Notice) -> bytes::Bytes {
        self.encoders[protocol.index()].notice(notice)
    }

    /// What a room needs to append and deliver a batch.
    fn delivery(&self) -> Delivery<'_> {
        Delivery {
            encoders: &self.encoders,
            max_lag: self.config.max_queue_bytes,
            metrics: self.config.metrics,
        }
    }

    fn room(&self, name: &str) -> Option<Arc<Room>> {
        self.rooms.lock().get(name).cloned()
    }

    /// Adds a member to `room` (created if needed). It receives everything
    /// published from now on, and leaves when the [`Membership`] drops.
    pub fn join(self: &Arc<Self>, room: &str, protocol: Protocol) -> Result<Membership, ChatError> {
        if self.is_draining() {
            return Err(ChatError::ShuttingDown);
        }
        let room = {
            let mut rooms = self.rooms.lock();
            Arc::clone(
                rooms
                    .entry(room.to_owned())
                    .or_insert_with(|| Arc::new(Room::new(room, self.history.last_id(room)))),
            )
        };
        let id = self.next_member.fetch_add(1, Ordering::Relaxed);
        let member = room.add(id, protocol, self.config.max_members_per_room)?;
        self.active.fetch_add(1, Ordering::Relaxed);
        Ok(Membership {
            hub: Arc::clone(self),
            room,
            member,
        })
    }

    /// Publishes `events` of `member` (who must have a name) in `room`.
    /// `false` if the room takes nothing more (the server is shutting down).
    fn publish(&self, room: &Room, member: &Member, events: &[Event]) -> bool {
        let Some(user) = member.name() else {
            return false;
        };
        let Some(floor) = room.open_floor() else {
            return false;
        };
        let started = Instant::now();
        let batch = Submission {
            room: room.name().to_owned(),
            sender: member.id,
            user: user.to_string(),
            timestamp: unix_now(),
            events: events.to_vec(),
            floor,
        };
        let published = self.sequencer.publish(batch, self);
        self.config.metrics.fanout.observe(started.elapsed());
        published
    }

    fn remove_room_if_empty(&self, room: &Arc<Room>) {
        let mut rooms = self.rooms.lock();
        if room.is_empty() {
            if let Some(current) = rooms.get(room.name()) {
                if Arc::ptr_eq(current, room) {
                    rooms.remove(room.name());
                    // Under the rooms lock: a member creating the room again
                    // asks to follow it after this.
                    self.sequencer.unfollow(room.name());
                }
            }
        }
    }

    /// Who is in `room` on this server (nobody if the room does not exist).
    pub fn presence_in(&self, room: &str) -> Presence {
        self.room(room)
            .map(|room| room.presence())
            .unwrap_or_default()
    }

    /// Who is in `room` on every server sharing the store: the named
    /// members everywhere (when the store can say) and this server's
    /// listeners. See [`Presence`].
    pub async fn presence_everywhere(&self, room: &str) -> Presence {
        let mut presence = self.presence_in(room);
        if let Some(names) = self.roster.names(room).await {
            presence.merge_everywhere(names);
        }
        presence
    }

    /// Servers sharing the store and their members, when it can say.
    pub async fn census(&self) -> Option<Census> {
        self.roster.census().await
    }

    /// Every room with members, and how many, sorted by name.
    pub fn rooms(&self) -> Vec<(String, usize)> {
        let rooms: Vec<Arc<Room>> = self.rooms.lock().values().cloned().collect();
        let mut list: Vec<(String, usize)> = rooms
            .iter()
            .map(|room| {
                let presence = room.presence();
                (
                    room.name().to_owned(),
                    presence.names.len() + presence.listeners,
                )
            })
            .filter(|(_, members)| *members > 0)
            .collect();
        list.sort();
        list
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
    /// with a notice to its sender), every member is told (`Chat` members
    /// get the notice at the end of the log), and each call ends once
    /// everything queued for it is sent.
    ///
    /// **History hook:** when this returns, every room's log is final. A
    /// history store flushes after this call (and before the process
    /// exits) to persist everything any member was sent.
    pub fn shutdown(&self, notice: &str) {
        self.draining.store(true, Ordering::Relaxed);
        let rooms: Vec<Arc<Room>> = self.rooms.lock().values().cloned().collect();
        for room in rooms {
            room.close(notice, &self.delivery());
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
            let own = batch.origin == self.node_id;
            room.apply(&batch, own, &self.delivery());
        }
    }

    fn number_here(&self, batch: Submission, keep: &mut dyn FnMut(&[StoredMessage])) -> bool {
        match self.room(&batch.room) {
            Some(room) => room.number_here(&batch, &self.delivery(), keep),
            None => false,
        }
    }

    fn name_lost(&self, room: &str, member: u64, name: &str) {
        if let Some(member) = self.room(room).and_then(|r| r.member(member)) {
            member.close(Verdict::NameLost(format!(
                "the name {name:?} in room {room:?} belongs to a member on another server, who \
                 held it first (this server could not reach Redis when you joined): join again \
                 under another name"
            )));
        }
    }

    fn members_here(&self) -> u64 {
        self.active_members() as u64
    }

    fn store_high(&self, room: &str) -> Option<u64> {
        let (high, epoch) = self.room(room)?.store_high();
        // A room that knows no epoch yet has nothing to compare with.
        epoch.map(|_| high)
    }

    fn repair(&self, room: &str, epoch: &str, messages: Vec<StoredMessage>) {
        if let Some(room) = self.room(room) {
            room.repair(epoch, &messages, &self.delivery());
        }
    }
}

/// A member's place in its room. Leaving happens on drop, so a call that
/// ends any way (error, reset, deadline) leaves cleanly.
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
        self.room.name()
    }

    /// The hub the member is in.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Who the member is in the roster.
    fn holder(&self) -> Holder {
        Holder {
            node: self.hub.node_id,
            member: self.member.id,
        }
    }

    /// Gives the member `name`, unique in the room ignoring case — on
    /// every server sharing the store: claimed in the roster first, then
    /// bound in the room here.
    pub(super) async fn claim(&self, name: &str) -> Result<(), ChatError> {
        let room = self.room.name();
        let taken = || ChatError::NameTaken {
            name: name.to_owned(),
            room: room.to_owned(),
        };
        match self.hub.roster.claim(room, name, self.holder()).await {
            Claim::Held => {}
            Claim::Taken => return Err(taken()),
            Claim::Unconfirmed(why) => {
                info!(room, user = name, %why, "name not confirmed with the other servers yet");
            }
        }
        let bound = self.room.claim(&self.member, name);
        if bound.is_err() {
            self.hub.roster.release(room, name, self.holder());
        }
        bound
    }

    /// Publishes events from this (named) member, in order. `false` if
    /// the room takes nothing more, or the member has no name yet.
    pub(super) fn publish(&self, events: &[Event]) -> bool {
        self.hub.publish(&self.room, &self.member, events)
    }

    /// Sends a notice to this member only.
    pub fn notify(&self, text: &str) {
        let frames = self
            .hub
            .encode_notice(self.member.protocol(), &Notice::Say(text.to_owned()));
        self.member.push_private(frames);
    }

    /// Waits until the room's batches numbered by other servers reach this
    /// server (at once with the embedded store): call before reading
    /// history, so that nothing falls between the page and live traffic.
    pub async fn follow(&self) {
        if let Some(subscribed) = self.hub.sequencer.follow(self.room.name()) {
            subscribed.await;
        }
    }

    /// Who is in the member's room on this server (the member included).
    pub fn presence(&self) -> Presence {
        self.room.presence()
    }

    /// Who is in the member's room on every server sharing the store.
    pub async fn presence_everywhere(&self) -> Presence {
        self.hub.presence_everywhere(self.room.name()).await
    }

    /// Takes note of the history epoch this member was told, unless the
    /// room knows one already: a later batch of another epoch then makes
    /// the room tell its members that history was lost.
    pub(super) fn note_epoch(&self, epoch: &str) {
        self.room.note_epoch(epoch);
    }

    /// Takes note of the newest id history held when this member's page
    /// was read: if the room ever has to number batches itself (a shared
    /// store became unreachable), it continues above it. (A server learns a
    /// room's ids only from the rooms it receives.)
    pub(super) fn note_head(&self, head: u64) {
        self.room.note_head(head);
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        let now_empty = self.room.remove(&self.member);
        self.hub.active.fetch_sub(1, Ordering::Relaxed);
        if let Some(name) = self.member.name() {
            info!(room = %self.room.name(), user = %name, "left");
            self.hub
                .roster
                .release(self.room.name(), name, self.holder());
        }
        if now_empty {
            self.hub.remove_room_if_empty(&self.room);
        }
    }
}
