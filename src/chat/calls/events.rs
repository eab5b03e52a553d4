//! `Chat`: the second demo's protocol. Typed events both ways: the first
//! must be `USER_JOINED` with the member's name; then messages, typing and
//! `USER_LEFT`. A member sees messages (its own too), typing (others'),
//! joins and leaves, and the server's `SystemEvent`s. The browser's
//! `Subscribe` uses the same encoding.

use bytes::{Bytes, BytesMut};

use super::pipeline::next_batch;
use super::{encode_into, encode_one};
use crate::chat::core::{
    Batch, Encode, Event, Frames, Need, Notice, Participant, Replay, unix_now,
};
use crate::framing::Status;
use crate::pb::chat::{
    ChatMessageEvent, ClientEvent, ServerEvent, SystemEvent, TypingEvent, TypingEventType,
    UserEvent, UserEventType, client_event, server_event,
};
use crate::rpc::Streaming;

/// `Chat`'s encoding of the room.
#[derive(Debug, Clone, Copy)]
pub struct EventsEncoder;

/// A `SystemEvent` from the server.
fn system(text: &str, epoch: &str, end_of_history: bool) -> ServerEvent {
    ServerEvent {
        event: Some(server_event::Event::SystemEvent(SystemEvent {
            message: text.to_owned(),
            timestamp: unix_now(),
            epoch: epoch.to_owned(),
            end_of_history,
        })),
    }
}

/// One event as a `ServerEvent`.
fn server_event(user: &str, timestamp: i64, id: Option<u64>, event: &Event) -> ServerEvent {
    let event = match event {
        Event::Message { text } => server_event::Event::ChatMessage(ChatMessageEvent {
            message: text.clone(),
            username: user.to_owned(),
            timestamp,
            id: id.unwrap_or_default(),
        }),
        Event::Typing { started } => server_event::Event::TypingEvent(TypingEvent {
            username: user.to_owned(),
            timestamp,
            r#type: if *started {
                TypingEventType::TypingStart
            } else {
                TypingEventType::TypingStop
            }
            .into(),
        }),
        Event::Joined | Event::Left => server_event::Event::UserEvent(UserEvent {
            r#type: if matches!(event, Event::Joined) {
                UserEventType::UserJoined
            } else {
                UserEventType::UserLeft
            }
            .into(),
            username: user.to_owned(),
            timestamp,
        }),
    };
    ServerEvent { event: Some(event) }
}

impl Encode for EventsEncoder {
    /// Every event for the others; the same for the sender, less its own
    /// typing (the copy is shared when there is no typing to leave out).
    fn batch(&self, batch: &Batch<'_>, need: Need) -> Frames {
        let typing = batch
            .events
            .iter()
            .any(|e| matches!(e, Event::Typing { .. }));
        let mut all = BytesMut::new();
        let mut echoed = BytesMut::new();
        for (id, event) in batch.numbered() {
            let encoded = server_event(batch.user, batch.timestamp, id, event);
            if need.others || (need.sender && !typing) {
                encode_into(&encoded, &mut all);
            }
            if need.sender && typing && !matches!(event, Event::Typing { .. }) {
                encode_into(&encoded, &mut echoed);
            }
        }
        let all = all.freeze();
        let sender = match (need.sender, typing) {
            (false, _) => Bytes::new(),
            (true, false) => all.clone(),
            (true, true) => echoed.freeze(),
        };
        Frames {
            others: if need.others { all } else { Bytes::new() },
            sender,
        }
    }

    fn notice(&self, notice: &Notice) -> Bytes {
        match notice {
            Notice::Say(text) | Notice::ShuttingDown(text) => encode_one(&system(text, "", false)),
            Notice::EpochChanged { text, epoch } => encode_one(&system(text, epoch, false)),
        }
    }
}

/// The replay as `Chat` frames: notices, messages, then the end-of-history
/// `SystemEvent` carrying the epoch.
pub fn replay_frames(replay: &Replay) -> Bytes {
    let mut buf = BytesMut::new();
    for notice in &replay.notices {
        encode_into(&system(notice, "", false), &mut buf);
    }
    for m in &replay.messages {
        let event = ServerEvent {
            event: Some(server_event::Event::ChatMessage(ChatMessageEvent {
                message: m.text.clone(),
                username: m.user.clone(),
                timestamp: m.timestamp,
                id: m.id,
            })),
        };
        encode_into(&event, &mut buf);
    }
    let end = match &replay.epoch {
        Some(epoch) => match replay.messages.len() {
            1 => format!("end of history: 1 earlier message (history epoch {epoch})"),
            n => format!("end of history: {n} earlier messages (history epoch {epoch})"),
        },
        None => "end of history: none available".to_owned(),
    };
    let epoch = replay.epoch.as_deref().unwrap_or_default();
    encode_into(&system(&end, epoch, true), &mut buf);
    buf.freeze()
}

/// The name in the first event, which must be `USER_JOINED`.
pub fn joining_name(first: Option<ClientEvent>) -> Result<String, Status> {
    match first.and_then(|e| e.event) {
        Some(client_event::Event::UserEvent(u)) if u.r#type == UserEventType::UserJoined as i32 => {
            Ok(u.username)
        }
        _ => Err(Status::invalid_argument(
            "the first event must be a USER_JOINED user event with a username",
        )),
    }
}

/// The member's reader: each batch of events is one turn; a typing
/// indicator the client never stopped is expired meanwhile.
pub async fn read(
    participant: &Participant,
    stream: &mut Streaming<ClientEvent>,
) -> Result<(), Status> {
    loop {
        let batch = tokio::select! {
            batch = next_batch(stream) => batch?,
            () = participant.typing_expired() => continue,
        };
        let Some(batch) = batch else {
            return Ok(());
        };
        let metrics = participant.membership().hub().config().metrics;
        metrics.messages_received.add(batch.len() as u64);
        if play(participant, batch) == Flow::Left {
            return Ok(());
        }
        tokio::task::consume_budget().await;
    }
}

/// Whether the member goes on after a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Stays,
    Left,
}

/// One batch of events as one turn (synchronous: a turn holds the
/// participant's lock, never across an `.await`).
fn play(participant: &Participant, batch: Vec<ClientEvent>) -> Flow {
    let mut turn = participant.turn();
    for message in batch {
        match message.event {
            Some(client_event::Event::ChatMessage(m)) => {
                if let Err(refusal) = turn.say(&m.message) {
                    participant.refuse(&refusal);
                }
            }
            Some(client_event::Event::TypingEvent(t)) => {
                if t.r#type == TypingEventType::TypingStart as i32 {
                    turn.typing(true);
                } else if t.r#type == TypingEventType::TypingStop as i32 {
                    turn.typing(false);
                }
            }
            Some(client_event::Event::UserEvent(u)) => {
                if u.r#type == UserEventType::UserLeft as i32 {
                    turn.finish();
                    return Flow::Left;
                }
                participant.notify("you have already joined");
            }
            None => {}
        }
    }
    turn.finish();
    Flow::Stays
}
