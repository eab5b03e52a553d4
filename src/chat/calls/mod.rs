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
//! * [`status`] — the core's plain errors and verdicts as gRPC statuses.

pub mod events;
pub mod pipeline;
pub mod session;
pub mod status;
pub mod stream;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tracing::warn;

use super::core::Encoders;

/// The encoders of both protocols, for the hub.
pub fn encoders() -> Encoders {
    [
        Arc::new(stream::StreamEncoder),
        Arc::new(events::EventsEncoder),
    ]
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
