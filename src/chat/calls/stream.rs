//! `ChatStream`: the first demo's protocol. `ChatMessage` both ways; the
//! first message names the member; it sees other people's messages (and
//! the server's notices, from user "server"), never its own.

use bytes::{Bytes, BytesMut};

use super::pipeline::next_batch;
use super::status::status_of;
use super::{encode_into, encode_one};
use crate::chat::core::{
    Batch, Encode, Event, Frames, Need, Notice, Participant, Replay, unix_now,
};
use crate::framing::Status;
use crate::pb::chat::ChatMessage;
use crate::rpc::Streaming;

/// `ChatStream`'s encoding of the room.
#[derive(Debug, Clone, Copy)]
pub struct StreamEncoder;

/// A message from the server itself.
fn from_server(text: &str) -> ChatMessage {
    ChatMessage {
        user: "server".into(),
        message: text.to_owned(),
        timestamp: unix_now(),
        id: 0,
    }
}

impl Encode for StreamEncoder {
    /// Chat messages only, for the others; nothing for the sender (the
    /// original client prints its own lines itself).
    fn batch(&self, batch: &Batch<'_>, need: Need) -> Frames {
        let mut others = BytesMut::new();
        if need.others {
            for (id, event) in batch.numbered() {
                if let (Some(id), Event::Message { text }) = (id, event) {
                    let message = ChatMessage {
                        user: batch.user.to_owned(),
                        message: text.clone(),
                        timestamp: batch.timestamp,
                        id,
                    };
                    encode_into(&message, &mut others);
                }
            }
        }
        Frames {
            others: others.freeze(),
            sender: Bytes::new(),
        }
    }

    /// From user "server"; a `ChatStream` client learns of shutdown from
    /// the call's status alone.
    fn notice(&self, notice: &Notice) -> Bytes {
        match notice {
            Notice::Say(text) | Notice::EpochChanged { text, .. } => encode_one(&from_server(text)),
            Notice::ShuttingDown(_) => Bytes::new(),
        }
    }
}

/// The replay as `ChatStream` frames: the messages (the first
/// `chat-replayed` of the stream), then notices from user "server".
pub fn replay_frames(replay: &Replay) -> Bytes {
    let mut buf = BytesMut::new();
    for m in &replay.messages {
        let message = ChatMessage {
            user: m.user.clone(),
            message: m.text.clone(),
            timestamp: m.timestamp,
            id: m.id,
        };
        encode_into(&message, &mut buf);
    }
    for notice in &replay.notices {
        encode_into(&from_server(notice), &mut buf);
    }
    buf.freeze()
}

/// The member's reader: each batch of messages the client sent is one turn.
/// The first message names the member; a refused message is explained to
/// it in a notice.
pub async fn read(
    participant: &Participant,
    stream: &mut Streaming<ChatMessage>,
    token_user: Option<&str>,
) -> Result<(), Status> {
    loop {
        // A sender that never runs out of input would otherwise keep this
        // task busy indefinitely: take turns with the other tasks. Yielding
        // here, before the read, rather than after publishing, means no
        // batch is held across an `.await` but the read's: the future needs
        // no room for one while the member is idle.
        tokio::task::consume_budget().await;
        let Some(batch) = next_batch(stream).await? else {
            return Ok(());
        };
        let metrics = participant.membership().hub().config().metrics;
        metrics.messages_received.add(batch.len() as u64);
        if participant.name().is_none() {
            // The first message names the member, on every server: a round
            // trip to the shared store. Boxed with the batch it holds, so
            // that an idle member's future keeps no room for either.
            Box::pin(name_then_play(participant, batch, token_user)).await?;
        } else {
            play(participant, batch);
        }
    }
}

/// The first batch: names the member after its first message (see
/// `Participant::take_name`), then plays the batch. A name refused ends the
/// call.
async fn name_then_play(
    participant: &Participant,
    batch: Vec<ChatMessage>,
    token_user: Option<&str>,
) -> Result<(), Status> {
    let claimed = batch.first().map_or("", |m| m.user.as_str());
    participant
        .take_name(claimed, token_user)
        .await
        .map_err(status_of)?;
    play(participant, batch);
    Ok(())
}

/// One batch of messages as one turn (synchronous: a turn holds the
/// participant's lock, never across an `.await`).
fn play(participant: &Participant, batch: Vec<ChatMessage>) {
    let mut turn = participant.turn();
    for message in batch {
        turn.identify(&message.user);
        if let Err(refusal) = turn.say(&message.message) {
            participant.refuse(&refusal);
        }
    }
    turn.finish();
}
