//! Chat for clients without client streaming (browsers over gRPC-Web):
//! `Subscribe`, `SendMessage` and `SetTyping`, tied together by a session.
//!
//! ```text
//!   Subscribe(name, room,     ──▶ joins the room as a `Chat` member would
//!     [last_id, epoch])        ◀── SessionStarted { token }   (always first)
//!        │                     ◀── history replay / what was missed, then
//!        │                         the end-of-history SystemEvent (epoch)
//!        │                     ◀── the room's live events, as ServerEvent bytes
//!   SendMessage(token, text) ─┐
//!   SetTyping(token, START) ──┴▶ look the session up, apply Chat's rules,
//!                                publish as that member
//! ```
//!
//! A session is the `Subscribe` call: it starts with the call and ends with
//! it (the client closed it, the connection dropped, the member was
//! disconnected), and its membership leaves the room then, exactly as a
//! `Chat` call's does. The token is 128 random bits, known only to the
//! subscriber, so nobody else can speak in its name.
//!
//! The member is an ordinary [`Protocol::Events`] member: `SubscribeEvent`
//! keeps `ServerEvent`'s field numbers, so the room's encoded events go to a
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
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tracing::info;

use super::history;
use super::ratelimit::TokenBucket;
use super::room::{Event, Membership, Protocol};
use super::service::{
    ChatService, announce_join, chat_replay_frames, read_replay, replay_headers, resolve_name,
    resume_point, run_member, send_replay,
};
use super::{ChatConfig, DEFAULT_ROOM, validate};
use crate::framing::{MetadataMap, Status};
use crate::metrics::METRICS;
use crate::pb::chat::{
    SendMessageRequest, SendMessageResponse, SessionStarted, SetTypingRequest, SetTypingResponse,
    SubscribeEvent, SubscribeRequest, TypingEventType, subscribe_event,
};
use crate::rpc::{Request, Response};
use crate::server::ResponseSink;

/// The live sessions of a service, by token.
#[derive(Debug, Default)]
pub struct Sessions {
    by_token: Mutex<HashMap<String, Arc<Session>>>,
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

    fn get(&self, token: &str) -> Result<Arc<Session>, Status> {
        self.by_token.lock().get(token).cloned().ok_or_else(|| {
            Status::not_found("no such session: it has ended, or the token is wrong")
        })
    }
}

/// One subscriber's session.
#[derive(Debug)]
struct Session {
    membership: Membership,
    name: String,
    bucket: Mutex<TokenBucket>,
    /// When the typing indicator expires; `None`: not typing.
    typing_until: Mutex<Option<tokio::time::Instant>>,
    /// Wakes the expiry timer when `typing_until` changes.
    typing_changed: Notify,
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

fn room_from(asked: &str, config: &ChatConfig) -> Result<String, Status> {
    if asked.is_empty() {
        return Ok(DEFAULT_ROOM.to_owned());
    }
    validate::name(asked, &config.limits)
        .map(str::to_owned)
        .map_err(|why| Status::invalid_argument(format!("room name {why}")))
}

impl Session {
    /// Ends an indicator that was never stopped, like `Chat`'s reader does.
    /// Never returns on its own: the call ends through the writer.
    async fn expire_typing(&self) -> Result<(), Status> {
        loop {
            let changed = self.typing_changed.notified();
            tokio::pin!(changed);
            // Register before reading the deadline, so a change made in
            // between still wakes us.
            changed.as_mut().enable();
            let deadline = *self.typing_until.lock();
            match deadline {
                None => changed.await,
                Some(at) => {
                    tokio::select! {
                        () = &mut changed => {}
                        () = tokio::time::sleep_until(at) => {
                            let mut until = self.typing_until.lock();
                            // Published under the typing lock, here as in the
                            // two calls, so that starts and stops reach the
                            // room in the order they were decided.
                            if until.is_some_and(|at| at <= tokio::time::Instant::now()) {
                                *until = None;
                                self.membership.publish(&[Event::Typing { started: false }]);
                            }
                        }
                    }
                }
            }
        }
    }
}

impl ChatService {
    /// `Subscribe`: joins, announces the session, then runs the member.
    pub(super) async fn subscribe_session(
        &self,
        request: Request<SubscribeRequest>,
        mut sink: ResponseSink<SubscribeEvent>,
    ) -> Result<(), Status> {
        let config = self.config();
        let token_user = self.authenticate(request.metadata())?;
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
            None => resume_point(request.metadata())?,
        };
        let asked = request.into_inner();
        let room = room_from(&asked.room, config)?;
        let name = resolve_name(&asked.username, token_user.as_deref(), config)?;
        let membership = self.hub().join(&room, Protocol::Events)?;
        let _counted = METRICS.join_room(&room);
        membership.claim_name(&name)?;
        let replay = Box::pin(read_replay(
            self.hub().history(),
            &membership,
            resume,
            config,
        ))
        .await?;
        sink.set_header_metadata(replay_headers(&replay));
        let token = new_token()?;
        let session = Arc::new(Session {
            membership,
            name: name.clone(),
            bucket: Mutex::new(TokenBucket::new(config.rate_limit, Instant::now())),
            typing_until: Mutex::new(None),
            typing_changed: Notify::new(),
        });
        self.sessions()
            .by_token
            .lock()
            .insert(token.clone(), Arc::clone(&session));
        let _registered = Registered {
            sessions: self.sessions(),
            token: token.clone(),
        };
        // First, before anything the room says: the token.
        sink.send(&SubscribeEvent {
            event: Some(subscribe_event::Event::SessionStarted(SessionStarted {
                token,
                username: name.clone(),
                room: room.clone(),
            })),
        })
        .await?;
        // Then the room's past (or what this client missed), then live.
        Box::pin(send_replay(&mut sink, chat_replay_frames(&replay), config)).await?;
        info!(room, user = %name, protocol = "Subscribe", replayed = replay.messages.len(), "joined");
        let membership = &session.membership;
        announce_join(membership, &room, &name);
        drop(replay);
        let reader = std::pin::pin!(session.expire_typing());
        run_member(membership, reader, &mut sink, config).await
    }

    /// The session a call's token names. When the server requires bearer
    /// tokens, the call must carry one too, and it must be the session's
    /// user's: a session token alone does not outlive the right to speak.
    fn session_of(&self, metadata: &MetadataMap, token: &str) -> Result<Arc<Session>, Status> {
        let user = self.authenticate(metadata)?;
        let session = self.sessions().get(token)?;
        if let Some(user) = user {
            if user.to_lowercase() != session.name.to_lowercase() {
                return Err(Status::permission_denied(format!(
                    "your token belongs to {user:?}, not to this session's user"
                )));
            }
        }
        Ok(session)
    }

    /// `SendMessage`: `Chat`'s validation and rate limit, then publish.
    pub(super) async fn send_in_session(
        &self,
        request: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        let config = self.config();
        let session = self.session_of(request.metadata(), &request.get_ref().token)?;
        let asked = request.into_inner();
        METRICS.messages_received.inc();
        let text = match validate::message(&asked.message, &config.limits) {
            Ok(text) => text,
            // As in Chat, a blank message is quietly dropped.
            Err(validate::Invalid::Empty) => return Ok(Response::new(SendMessageResponse {})),
            Err(why) => {
                return Err(Status::invalid_argument(format!(
                    "message not delivered: it {why}"
                )));
            }
        };
        if let Err(wait) = session.bucket.lock().try_take(Instant::now()) {
            METRICS.rate_limited.inc();
            return Err(Status::resource_exhausted(format!(
                "message not delivered: rate limited (at most {} messages per second); try again in {} ms",
                config.rate_limit.rate,
                wait.as_millis().max(1)
            )));
        }
        let mut events = Vec::with_capacity(2);
        let mut typing = session.typing_until.lock();
        // Sending ends typing, as in Chat.
        if typing.take().is_some() {
            events.push(Event::Typing { started: false });
        }
        events.push(Event::Message {
            text: text.into_owned(),
        });
        session.membership.publish(&events);
        drop(typing);
        session.typing_changed.notify_one();
        Ok(Response::new(SendMessageResponse {}))
    }

    /// `SetTyping`: only changes are published; a repeated start extends
    /// the expiry.
    pub(super) async fn typing_in_session(
        &self,
        request: Request<SetTypingRequest>,
    ) -> Result<Response<SetTypingResponse>, Status> {
        let session = self.session_of(request.metadata(), &request.get_ref().token)?;
        let asked = request.into_inner();
        let mut until = session.typing_until.lock();
        let changed = if asked.r#type == TypingEventType::TypingStart as i32 {
            let was_off = until.is_none();
            *until = Some(tokio::time::Instant::now() + self.config().typing_timeout);
            was_off
        } else if asked.r#type == TypingEventType::TypingStop as i32 {
            until.take().is_some()
        } else {
            return Err(Status::invalid_argument(
                "typing type must be TYPING_START or TYPING_STOP",
            ));
        };
        if changed {
            session.membership.publish(&[Event::Typing {
                started: until.is_some(),
            }]);
        }
        drop(until);
        session.typing_changed.notify_one();
        tracing::trace!(user = %session.name, "typing");
        Ok(Response::new(SetTypingResponse {}))
    }
}
