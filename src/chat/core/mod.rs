//! The chat's core: rooms, members and the rules they speak under, with no
//! protocol in it — no `prost`, no gRPC status, no HTTP. The adapters in
//! [`calls`](super::calls) turn each protocol's messages into calls on
//! this core, and this core's events into each protocol's bytes.
//!
//! # One concept per file
//!
//! * [`event`] — what happens in a room ([`Event`], [`Notice`]), a numbered
//!   [`Batch`] of it, and [`Encode`]: the seam through which each protocol
//!   renders a batch, once, for every member who reads that protocol.
//! * [`error`] — why a member cannot join or take a name ([`ChatError`]),
//!   why a message was not delivered ([`Refusal`]).
//! * [`log`] — a room's log: a linked list of encoded batches that every
//!   member's cursor walks.
//! * [`member`] — one member's cursor, private notices, and how its call
//!   ends ([`Verdict`]).
//! * [`room`] — membership, unique names, presence, and the order of the
//!   log (numbering, appending, waking members, disconnecting laggards).
//! * [`hub`] — every room; joining ([`Membership`]), publishing through the
//!   [`Sequencer`](super::history::Sequencer), shutdown.
//! * [`participant`] — a member under the rules: name binding, rate limit,
//!   typing expiry, notices; its lifecycle as a state machine.
//! * [`replay`] — the no-gap/no-duplicate rule for a joining member.
//!
//! # One message, start to end
//!
//! A reader (an adapter) takes a batch of its client's messages and plays
//! them as one [`Turn`] of its [`Participant`]: each is validated and rate
//! limited ([`Turn::say`]). [`Turn::finish`] hands the batch to the hub,
//! which gives it to the sequencer; the sequencer has the room number it
//! (`Room::number_here`), or a shared store number it and hand it back
//! (`Room::apply`). Either way the room encodes it once per protocol
//! ([`Encode::batch`]), appends one node to its log and wakes the members
//! that sleep. Each member's writer (an adapter again) takes what its
//! cursor finds ([`Member::next_batch`]) and sends it.

pub mod error;
pub mod event;
pub mod hub;
pub mod log;
pub mod member;
pub mod participant;
pub mod replay;
pub mod room;

#[cfg(test)]
pub(crate) mod testing;

pub use error::{ChatError, Refusal};
pub use event::{Batch, Encode, Encoders, Event, Frames, Need, Notice, Protocol, unix_now};
pub use hub::{Hub, Membership};
pub use member::{Member, Outgoing, Verdict};
pub use participant::{Participant, Stage, Turn};
pub use replay::{Replay, Resume};
pub use room::Presence;
