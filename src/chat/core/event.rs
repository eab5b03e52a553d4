//! The core's vocabulary: what happens in a room ([`Event`], [`Notice`]),
//! a numbered batch of it ([`Batch`]), and the one seam through which the
//! protocols come in: [`Encode`], which turns a batch into one protocol's
//! bytes.
//!
//! The core knows that members read the room in one of two encodings
//! ([`Protocol`]) — it keeps one copy of every batch per encoding, shared by
//! all members who read it — but not what the encodings are: that is the
//! business of the adapters in [`calls`](crate::chat::calls).

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// Which encoding of the room a member receives. The adapter of each
/// protocol supplies the [`Encode`] for its variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `ChatStream`'s encoding.
    Stream,
    /// `Chat`'s encoding (also the browser session's).
    Events,
}

impl Protocol {
    /// Both, in the order of [`Encoders`].
    pub const ALL: [Protocol; 2] = [Protocol::Stream, Protocol::Events];

    /// This protocol's place in per-protocol arrays.
    pub const fn index(self) -> usize {
        match self {
            Protocol::Stream => 0,
            Protocol::Events => 1,
        }
    }
}

/// Unix time in seconds, as the protocols carry it.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Something a member does in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A chat message (numbered when its batch is sequenced).
    Message {
        /// What was said, validated.
        text: String,
    },
    /// Typing started (`true`) or stopped.
    Typing {
        /// Started or stopped.
        started: bool,
    },
    /// The member joined (it has a name now).
    Joined,
    /// The member left.
    Left,
}

/// Something the server says, to one member or to a whole room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A plain notice ("welcome …", "message not delivered: …").
    Say(String),
    /// The history store lost the room's history: its epoch changed.
    EpochChanged {
        /// What to tell the members.
        text: String,
        /// The new epoch.
        epoch: String,
    },
    /// The server is shutting down; the last thing a room's log holds.
    ShuttingDown(String),
}

/// A sequenced batch of one member's events, as the encoders see it: chat
/// messages in it are numbered `first_id`, `first_id + 1`, … in order.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// The sender's name.
    pub user: &'a str,
    /// Unix seconds, stamped when the sender's server took the batch.
    pub timestamp: i64,
    /// The id of the first chat message (if any).
    pub first_id: u64,
    /// What happened, in order.
    pub events: &'a [Event],
}

impl Batch<'_> {
    /// The events with the id of each chat message (`None` for the others).
    pub fn numbered(&self) -> impl Iterator<Item = (Option<u64>, &Event)> {
        let mut next = self.first_id;
        self.events.iter().map(move |event| match event {
            Event::Message { .. } => {
                next += 1;
                (Some(next - 1), event)
            }
            _ => (None, event),
        })
    }
}

/// Which copies of a batch an encoder must produce: the room asks only for
/// the ones someone will read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// For members other than the sender.
    pub others: bool,
    /// For the sender itself (if it reads this encoding).
    pub sender: bool,
}

/// One protocol's bytes of a batch: what the others get, and what its
/// sender gets (the same bytes, shared, when they do not differ). A copy
/// not asked for is empty.
#[derive(Debug, Clone, Default)]
pub struct Frames {
    /// For every member of this encoding but the sender.
    pub others: Bytes,
    /// For the sender.
    pub sender: Bytes,
}

/// Turns core events into one protocol's bytes: length-prefixed messages,
/// ready to go out on any member's stream. Implemented by the adapters;
/// the room calls it once per batch and protocol.
pub trait Encode: Send + Sync + fmt::Debug {
    /// The frames of a batch, the copies in `need` filled in.
    fn batch(&self, batch: &Batch<'_>, need: Need) -> Frames;
    /// The frames of a notice (empty if this protocol does not show it).
    fn notice(&self, notice: &Notice) -> Bytes;
}

/// One encoder per [`Protocol`], indexed by [`Protocol::index`].
pub type Encoders = [Arc<dyn Encode>; 2];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_numbered_in_order_and_other_events_are_not() {
        let events = [
            Event::Joined,
            Event::Message { text: "a".into() },
            Event::Typing { started: false },
            Event::Message { text: "b".into() },
        ];
        let batch = Batch {
            user: "ann",
            timestamp: 0,
            first_id: 7,
            events: &events,
        };
        let ids: Vec<Option<u64>> = batch.numbered().map(|(id, _)| id).collect();
        assert_eq!(ids, [None, Some(7), None, Some(8)]);
    }
}
