//! One member's side of a room: its cursor in the room's log, the notices
//! meant for it alone, and how its call must end.
//!
//! The member's writer (the task sending to its client) asks
//! [`Member::next_batch`] for the next bytes to send. Publishers never wait
//! for a member: they append to the log and, if the member's writer sleeps,
//! wake it (`Member::wake_if_waiting`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::event::Protocol;
use super::log::Node;

/// Why a member's call ends, as the core decides it. The adapters turn it
/// into a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The member is done (it left, or its client closed its side).
    Done,
    /// More than `max_lag` bytes of the room waited for this member.
    TooFarBehind {
        /// The bound it crossed.
        max_lag: usize,
    },
    /// The server is shutting down; says so.
    ShuttingDown(String),
    /// A member on another server held the member's name first (it was
    /// bound here while the shared store was unreachable). Says so, in the
    /// words the member reads. (One `String`, like `ShuttingDown`: a
    /// verdict is kept by every member, so it stays small.)
    NameLost(String),
}

/// How a member's call must end, once decided.
#[derive(Debug, Clone)]
enum Ending {
    /// Send what is pending, then end.
    AfterFlush(Verdict),
    /// End now; what is pending is dropped.
    Now(Verdict),
}

/// What [`Member::next_batch`] hands the member's writer.
#[derive(Debug)]
pub enum Outgoing {
    /// Bytes to send (length-prefixed messages, possibly several).
    Frames(Bytes),
    /// The call must end.
    End(Verdict),
}

/// Most bytes coalesced into one send (see [`Member::next_batch`]).
const MAX_COALESCE: usize = 16 * 1024;
/// Node frames at least this big are sent without copying.
const COPY_LIMIT: usize = 4 * 1024;

/// One connected member of a room.
#[derive(Debug)]
pub struct Member {
    pub(super) id: u64,
    protocol: Protocol,
    /// Its name, once bound (the one place a member's name is kept; the
    /// room indexes it to keep names unique).
    pub(super) name: OnceLock<Arc<str>>,
    /// The last node this member's writer has taken (its read position).
    cursor: Mutex<Arc<Node>>,
    /// `end_offset` of the cursor, readable by publishers without the lock.
    pub(super) consumed: AtomicU64,
    /// Nodes whose messages all have ids up to this were sent from history
    /// already: they are skipped (the replay rule, see
    /// [`replay`](super::replay)).
    skip_upto: AtomicU64,
    /// Notices for this member only, already encoded.
    private: Mutex<VecDeque<Bytes>>,
    /// Set when the call must end.
    ending: Mutex<Option<Ending>>,
    /// The writer is asleep and wants a wake-up on the next publish.
    waiting: AtomicBool,
    wake: Notify,
}

impl Member {
    /// A member reading the log from `start` on.
    pub(super) fn new(id: u64, protocol: Protocol, start: &Arc<Node>) -> Member {
        Member {
            id,
            protocol,
            name: OnceLock::new(),
            cursor: Mutex::new(Arc::clone(start)),
            consumed: AtomicU64::new(start.end_offset),
            skip_upto: AtomicU64::new(0),
            private: Mutex::new(VecDeque::new()),
            ending: Mutex::new(None),
            waiting: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    /// A number unique to this member within its hub (for logs).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The encoding this member reads.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Its name, once bound.
    pub fn name(&self) -> Option<&Arc<str>> {
        self.name.get()
    }

    /// The id of the oldest chat message waiting in this member's log
    /// (`None`: none has arrived yet). Meaningful before the writer starts,
    /// while the log still holds everything since the join.
    pub(super) fn first_live_id(&self) -> Option<u64> {
        let mut node = Arc::clone(&self.cursor.lock());
        loop {
            let next = Arc::clone(node.next.get()?);
            if next.first_id != 0 {
                return Some(next.first_id);
            }
            node = next;
        }
    }

    /// Skips live nodes whose messages all have ids up to `id`: the member
    /// was sent them from history. Set before the writer starts.
    pub(super) fn skip_replayed(&self, id: u64) {
        self.skip_upto.store(id, Ordering::Relaxed);
    }

    /// Wakes the writer if it sleeps.
    pub(super) fn wake_if_waiting(&self) {
        if self.waiting.swap(false, Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    /// Whether the end of the call has been decided.
    pub(super) fn is_ending(&self) -> bool {
        self.ending.lock().is_some()
    }

    fn end(&self, ending: Ending) {
        let mut slot = self.ending.lock();
        if slot.is_none() {
            *slot = Some(ending);
        }
        drop(slot);
        self.wake.notify_one();
    }

    /// Ends the call with `verdict` once everything published before now
    /// is sent. The first decision wins.
    pub fn close(&self, verdict: Verdict) {
        self.end(Ending::AfterFlush(verdict));
    }

    /// Ends the call at once with `verdict`; what is pending is dropped.
    pub(super) fn end_now(&self, verdict: Verdict) {
        self.end(Ending::Now(verdict));
    }

    /// Completes once the call must end at once (the member fell too far
    /// behind). The writer waits on this while a send is blocked on the
    /// client's window: it would otherwise learn of the end only after the
    /// send — for a client that stopped reading, when the slow-reader grace
    /// runs out, while the log it holds on to keeps growing.
    pub async fn must_end_now(&self) -> Verdict {
        loop {
            // Created before the check: `end` stores a permit if nobody
            // waits yet, so a wake between the check and the await is kept.
            let woken = self.wake.notified();
            if let Some(Ending::Now(verdict)) = self.ending.lock().clone() {
                return verdict;
            }
            woken.await;
        }
    }

    /// Queues an encoded notice for this member alone.
    pub(super) fn push_private(&self, frames: Bytes) {
        if frames.is_empty() {
            return;
        }
        self.private.lock().push_back(frames);
        self.wake.notify_one();
    }

    /// Waits for something to send, or the end of the call.
    ///
    /// Small node frames are coalesced, up to `MAX_COALESCE` bytes, into one
    /// copy, so the writer hands the transport one payload instead of many.
    /// Frames of `COPY_LIMIT` bytes or more go out as they are: they are big
    /// enough already, and sending the shared bytes avoids copying them once
    /// per member.
    pub async fn next_batch(&self) -> Outgoing {
        loop {
            if let Some(Ending::Now(verdict)) = self.ending.lock().clone() {
                return Outgoing::End(verdict);
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
            if let Some(Ending::AfterFlush(verdict)) = self.ending.lock().clone() {
                return Outgoing::End(verdict);
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

    /// What [`Member::next_batch`] would hand over now, without waiting
    /// (`None`: nothing yet). For tests.
    #[cfg(test)]
    pub(crate) fn take_now(&self) -> Option<Bytes> {
        let mut out = BytesMut::new();
        if let Some(frames) = self.take_from_log() {
            out.extend_from_slice(&frames);
        }
        for notice in self.private.lock().drain(..) {
            out.extend_from_slice(&notice);
        }
        (!out.is_empty()).then(|| out.freeze())
    }

    /// Walks the log from the cursor, collecting this member's frames.
    fn take_from_log(&self) -> Option<Bytes> {
        static NONE: Bytes = Bytes::new();
        let mut cursor = self.cursor.lock();
        let mut first: Option<Bytes> = None;
        let mut coalesced: Option<BytesMut> = None;
        loop {
            let Some(next) = cursor.next.get().cloned() else {
                break;
            };
            // The replay rule's one check (see `replay`): a node is one
            // batch, sequenced atomically, so it is either wholly in the
            // member's replay or not at all.
            let replayed =
                next.last_id != 0 && next.last_id <= self.skip_upto.load(Ordering::Relaxed);
            let frames = if replayed {
                &NONE
            } else {
                next.frames_for(self.id, self.protocol)
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
