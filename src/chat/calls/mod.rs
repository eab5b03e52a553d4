//! The protocol adapters: each chat protocol's calls, as thin as they can
//! be. An adapter turns its wire messages into calls on the
//! [`core`](super::core) and the core's events into its own encoding
//! ([`Encode`](crate::chat::core::Encode)); everything else — joining, replay, the member's writer —
//! is the one [`pipeline`] all three entry points share.
//!
//! * [`stream`] — `ChatStream`: `ChatMessage` both ways; a member is named
//!   by its first message and sees other people's messages only.
//! * [`events`] — `Chat`: typed events; the first names the member; it
//!   sees messages (its own too), typing, joins and leaves.
//! * [`session`] — `Subscribe`, `SendMessage`, `SetTyping`: `Chat` for
//!   clients without client streaming (browsers), tied by a session token.
//! * [`pipeline`] — admit → join → replay → run, for all three.
//!
//! This is also where the core's plain errors become gRPC statuses
//! ([`status_of`], [`refusal_status`], [`verdict_status`]).

pub mod events;
pub mod pipeline;
pub mod session;
pub mod stream;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tracing::warn;

use super::core::{ChatError, Encoders, Refusal, Verdict};
use crate::framing::Status;

/// The encoders of both protocols, for the hub.
pub fn encoders() -> Encoders {
    [
        Arc::new(stream::StreamEncoder),
        Arc::new(events::EventsEncoder),
    ]
}

/// The status a call ends with when the core refuses it.
pub fn status_of(error: ChatError) -> Status {
    let text = error.to_string();
    match error {
        ChatError::ShuttingDown => Status::unavailable(text),
        ChatError::RoomFull { .. } => Status::resource_exhausted(text),
        ChatError::NameTaken { .. } => Status::already_exists(text),
        ChatError::InvalidName { .. } => Status::invalid_argument(text),
        ChatError::NotYourName { .. } => Status::permission_denied(text),
    }
}

/// The status of a `SendMessage` call whose message was refused (the
/// streaming protocols tell their member with a notice instead).
pub fn refusal_status(refusal: &Refusal) -> Status {
    let text = refusal.to_string();
    match refusal {
        Refusal::Empty | Refusal::Invalid(_) => Status::invalid_argument(text),
        Refusal::RateLimited { .. } => Status::resource_exhausted(text),
        Refusal::Unnamed => Status::failed_precondition(text),
        Refusal::ShuttingDown => Status::unavailable(text),
    }
}

/// How a member's call ends, from the core's verdict.
pub fn verdict_status(verdict: Verdict) -> Result<(), Status> {
    match verdict {
        Verdict::Done => Ok(()),
        Verdict::TooFarBehind { max_lag } => Err(Status::resource_exhausted(format!(
            "too far behind: more than {max_lag} bytes of messages waiting for this client"
        ))),
        Verdict::ShuttingDown(notice) => Err(Status::unavailable(notice)),
    }
}

/// Appends one length-prefixed message. Messages the server builds are far
/// below any size limit; should one not encode, it is logged and left out.
fn encode_into<M: prost::Message>(message: &M, buf: &mut BytesMut) {
    if let Err(status) = crate::codec::encode(message, None, usize::MAX, buf) {
        warn!(%status, "could not encode a chat message");
    }
}

/// One length-prefixed message.
fn encode_one<M: prost::Message>(message: &M) -> Bytes {
    let mut buf = BytesMut::new();
    encode_into(message, &mut buf);
    buf.freeze()
}
