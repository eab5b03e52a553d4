//! Chat for clients without client streaming (browsers over gRPC-Web):
//! `Subscribe`, `SendMessage` and `SetTyping`, tied together by a session.
//!
//! ```text
//!   Subscribe(name, room,     ──▶ the pipeline's join, as a `Chat` member
//!     [last_id, epoch])        ◀── SessionStarted { token }   (always first)
//!        │                     ◀── history replay / what was missed, then
//!        │                         the end-of-history SystemEvent (epoch)
//!        │                     ◀── the room's live events, as ServerEvent bytes
//!   SendMessage(token, text) ─┐
//!   SetTyping(token, START) ──┴▶ look the session up; a turn of its
//!                                participant, as `Chat`'s reader plays one
//! ```
//!
//! A session is the `Subscribe` call: it starts with the call and ends with
//! it (the client closed it, the connection dropped, the member was
//! disconnected), and its member leaves the room then, exactly as a `Chat`
//! call's does. The token is 128 random bits, known only to the subscriber,
//! so nobody else can speak in its name.
//!
//! The member reads `Chat`'s encoding: `SubscribeEvent` keeps
//! `ServerEvent`'s field numbers, so the room's encoded events go to a
//! subscriber unchanged, and `Chat` and `Subscribe` members see each other.
//! Refusals that `Chat` reports with a `SystemEvent` (too long, rate
//! limited) are the error status of the `SendMessage` call here: the caller
//! is right there to hear it.
//!
//! History and resume follow `Chat`'s contract (`docs/history.md`): without
//! `last_id` the newest messages are replayed; with `last_id` (and `epoch`)
//! exactly those missed; `chat-last-id` / `chat-epoch` request metadata work
//! too when the fields are unset.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::status::refusal_status;
use super::{events, pipeline};
use crate::chat::auth::TokenTable;
use crate::chat::core::{Hub, Participant, Protocol, Refusal};
use crate::chat::history;
use crate::framing::{MetadataMap, Status};
use crate::pb::chat::{
    SendMessageRequest, SessionStarted, SetTypingRequest, SubscribeEvent, SubscribeRequest,
    TypingEventType, subscribe_event,
};
use crate::rpc::Request;
use crate::server::ResponseSink;

/// The live sessions of a service, by token.
#[derive(Debug, Default)]
pub struct Sessions {
    by_token: Mutex<HashMap<String, Arc<Participant>>>,
}

impl Sessions {
    /// Sessions open right now.
    pub fn len(&self) -> usize {
        self.by_token.lock().len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The session a call's token names. When the server requires bearer
    /// tokens, the call must carry one too, and it must be the session's
    /// user's: a session token alone does not outlive the right to speak.
    fn get(
        &self,
        tokens: Option<&TokenTable>,
        metadata: &MetadataMap,
        token: &str,
    ) -> Result<Arc<Participant>, Status> {
        let user = pipeline::authenticate(tokens, metadata)?;
        let session = self.by_token.lock().get(token).cloned().ok_or_else(|| {
            Status::not_found("no such session: it has ended, or the token is wrong")
        })?;
        if let Some(user) = user {
            let name = session.name().map_or("", |n| &**n);
            if user.to_lowercase() != name.to_lowercase() {
                return Err(Status::permission_denied(format!(
                    "your token belongs to {user:?}, not to this session's user"
                )));
            }
        }
        Ok(session)
    }
}

/// Removes a session from the table when its `Subscribe` call ends, however
/// it ends.
struct Registered<'a> {
    sessions: &'a Sessions,
    token: String,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.sessions.by_token.lock().remove(&self.token);
    }
}

/// 128 bits from the operating system's generator, in hex.
fn new_token() -> Result<String, Status> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| Status::internal(format!("no randomness for a session token: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `Subscribe`: the pipeline's join (named by the request), the session
/// token first, then the replay, then the member runs until the call ends.
/// Its "reader" only expires the typing indicator: what the member says
/// arrives in other calls.
pub async fn subscribe(
    hub: &Arc<Hub>,
    sessions: &Sessions,
    tokens: Option<&TokenTable>,
    request: Request<SubscribeRequest>,
    mut sink: ResponseSink<SubscribeEvent>,
) -> Result<(), Status> {
    let token_user = pipeline::authenticate(tokens, request.metadata())?;
    // Resume as `Chat` does: from the request's fields (a browser cannot
    // always set metadata), or else from its metadata.
    let resume = match request.get_ref().last_id {
        Some(last_id) => {
            let epoch = &request.get_ref().epoch;
            history::parse_resume(
                Some(&last_id.to_string()),
                (!epoch.is_empty()).then_some(epoch.as_str()),
            )
            .map_err(Status::invalid_argument)?
        }
        None => pipeline::resume_point(request.metadata())?,
    };
    let asked = request.into_inner();
    let room = pipeline::room_from(&asked.room, hub.config())?;
    let joined = Box::pin(pipeline::join(
        hub,
        &room,
        resume,
        Protocol::Events,
        Some((&asked.username, token_user.as_deref())),
        &mut sink,
    ))
    .await?;
    let participant = joined.participant;
    let _counted = joined.counted;
    let token = new_token()?;
    sessions
        .by_token
        .lock()
        .insert(token.clone(), Arc::clone(&participant));
    let _registered = Registered {
        sessions,
        token: token.clone(),
    };
    // First, before anything the room says: the token.
    let username = participant
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default();
    sink.send(&SubscribeEvent {
        event: Some(subscribe_event::Event::SessionStarted(SessionStarted {
            token,
            username,
            room,
            max_message_chars: u32::try_from(hub.config().limits.max_message_chars)
                .unwrap_or(u32::MAX),
        })),
    })
    .await?;
    let frames = events::replay_frames(&joined.replay);
    pipeline::welcome(&participant, joined.replay, frames, &mut sink).await?;
    let reader = std::pin::pin!(async {
        loop {
            participant.typing_expired().await;
        }
    });
    pipeline::run(&participant, reader, &mut sink).await
}

/// `SendMessage`: `Chat`'s rules, as one turn of the session's participant.
pub fn send_message(
    sessions: &Sessions,
    tokens: Option<&TokenTable>,
    request: &Request<SendMessageRequest>,
) -> Result<(), Status> {
    let asked = request.get_ref();
    let participant = sessions.get(tokens, request.metadata(), &asked.token)?;
    let hub = participant.membership().hub();
    hub.config().metrics.messages_received.inc();
    let mut turn = participant.turn();
    match turn.say(&asked.message) {
        Ok(()) => {}
        // As in Chat, a blank message is quietly dropped.
        Err(Refusal::Empty) => return Ok(()),
        Err(refusal) => return Err(refusal_status(&refusal)),
    }
    turn.finish();
    Ok(())
}

/// `SetTyping`: only changes are published; a repeated start extends the
/// expiry.
pub fn set_typing(
    sessions: &Sessions,
    tokens: Option<&TokenTable>,
    request: &Request<SetTypingRequest>,
) -> Result<(), Status> {
    let asked = request.get_ref();
    let participant = sessions.get(tokens, request.metadata(), &asked.token)?;
    let started = if asked.r#type == TypingEventType::TypingStart as i32 {
        true
    } else if asked.r#type == TypingEventType::TypingStop as i32 {
        false
    } else {
        return Err(Status::invalid_argument(
            "typing type must be TYPING_START or TYPING_STOP",
        ));
    };
    let mut turn = participant.turn();
    turn.typing(started);
    turn.finish();
    Ok(())
}
