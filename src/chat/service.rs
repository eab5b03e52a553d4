//! `chat.ChatService`: the two chat protocols and `HealthCheck`.
//!
//! Each member's call runs two loops side by side in its own task:
//!
//! * the **reader** takes what the client sends, validates it, applies the
//!   rate limit and publishes it to the room ([`room`](super::room));
//! * the **writer** sends whatever the room queued for this member, waiting
//!   on the client's flow-control window, and ends the call if the client
//!   stays blocked past the grace period.
//!
//! The call ends when either loop ends: the client closed its side, the
//! member was disconnected, or the server is shutting down.

use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use tracing::{debug, info};

use super::auth::TokenTable;
use super::ratelimit::TokenBucket;
use super::room::{Event, Hub, Membership, Outgoing, Protocol};
use super::{ChatConfig, DEFAULT_ROOM, ROOM_METADATA_KEY, validate};
use crate::framing::{MetadataMap, Status};
use crate::pb::chat::{
    ChatMessage, ClientEvent, HealthCheckRequest, HealthCheckResponse, ServerEvent,
    TypingEventType, UserEventType, WhoRequest, WhoResponse, client_event,
};
use crate::rpc::{Request, Response, Streaming};
use crate::server::ResponseSink;

/// Most messages taken from one client before fanning them out together.
const MAX_BATCH: usize = 256;

/// The chat service. Cheap to clone: clones share the hub.
#[derive(Debug, Clone)]
pub struct ChatService {
    hub: Arc<Hub>,
    /// When set, every call needs a token, and the token names the user.
    tokens: Option<Arc<TokenTable>>,
}

impl ChatService {
    /// A service with its own hub.
    pub fn new(config: ChatConfig) -> Self {
        ChatService {
            hub: Hub::new(config),
            tokens: None,
        }
    }

    /// Requires a token from `tokens` on every call (`HealthCheck` aside, so
    /// load balancers need none); the token's user is the member's name.
    pub fn with_tokens(mut self, tokens: TokenTable) -> Self {
        self.tokens = Some(Arc::new(tokens));
        self
    }

    /// The user a call's token names; `None` when tokens are not required.
    fn authenticate(&self, metadata: &MetadataMap) -> Result<Option<String>, Status> {
        let Some(tokens) = &self.tokens else {
            return Ok(None);
        };
        match tokens.authenticate(metadata) {
            Ok(user) => Ok(Some(user.to_owned())),
            Err(status) => {
                debug!(reason = status.message(), "call refused: UNAUTHENTICATED");
                Err(status)
            }
        }
    }

    /// The hub of rooms (for shutdown and figures).
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    fn config(&self) -> &ChatConfig {
        &self.hub.config
    }
}

/// The room asked for in the `chat-room` metadata, or the default room.
fn room_name(metadata: &MetadataMap, config: &ChatConfig) -> Result<String, Status> {
    match metadata.get(ROOM_METADATA_KEY) {
        None => Ok(DEFAULT_ROOM.to_owned()),
        Some(raw) => validate::name(raw, &config.limits)
            .map(str::to_owned)
            .map_err(|why| Status::invalid_argument(format!("room name {why}"))),
    }
}

/// The member's name: the one asked for, checked against the token's user
/// when tokens are required. An empty request takes the token's name; a
/// different one is refused rather than silently replaced, because it is
/// either a misconfigured client or an attempt to speak as someone else.
fn resolve_name(
    asked: &str,
    token_user: Option<&str>,
    config: &ChatConfig,
) -> Result<String, Status> {
    if let Some(user) = token_user {
        let asked = asked.trim();
        if asked.is_empty() || asked.to_lowercase() == user.to_lowercase() {
            return Ok(user.to_owned());
        }
        return Err(Status::permission_denied(format!(
            "your token belongs to {user:?}, not {asked:?}"
        )));
    }
    validate::name(asked, &config.limits)
        .map(str::to_owned)
        .map_err(|why| Status::invalid_argument(format!("user name {why}")))
}

/// Reads the next batch: waits for one message, then takes every message
/// already received (up to [`MAX_BATCH`]) without waiting. `None` when the
/// client has closed its side.
async fn next_batch<T: prost::Message + Default>(
    stream: &mut Streaming<T>,
) -> Result<Option<Vec<T>>, Status> {
    let Some(first) = stream.message().await? else {
        return Ok(None);
    };
    let mut batch = vec![first];
    // Polling with a no-op waker asks "is another message here already?"
    // without registering interest; the next `.await` registers the real
    // waker again.
    let mut cx = Context::from_waker(Waker::noop());
    while batch.len() < MAX_BATCH {
        match stream.poll_message(&mut cx) {
            Poll::Ready(Ok(Some(message))) => batch.push(message),
            // An error is deliberately left for the next read, which reports
            // it again: the messages before it are published first.
            Poll::Ready(Ok(None)) | Poll::Ready(Err(_)) | Poll::Pending => break,
        }
    }
    Ok(Some(batch))
}

/// The member's writer: sends what the room queues for it until the call
/// must end.
async fn write_loop<T: prost::Message>(
    membership: &Membership,
    sink: &mut ResponseSink<T>,
    config: &ChatConfig,
) -> Result<(), Status> {
    loop {
        match membership.member().next_batch().await {
            Outgoing::Frames(frames) => {
                // Most sends fit the client's window and finish at once; only
                // a send that has to wait gets a timer, so the common case
                // costs no timer registration.
                let send = sink.send_encoded(frames);
                tokio::pin!(send);
                let first = std::future::poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx))).await;
                let sent = match first {
                    Poll::Ready(sent) => sent,
                    // The timer is boxed: it is large, and most calls never
                    // need one.
                    Poll::Pending => {
                        match Box::pin(tokio::time::timeout(config.slow_grace, send)).await {
                            Ok(sent) => sent,
                            Err(_) => {
                                info!(
                                    room = membership.room_name(),
                                    "client stopped reading: disconnecting with RESOURCE_EXHAUSTED"
                                );
                                return Err(Status::resource_exhausted(format!(
                                    "this client did not read its messages for {:?}",
                                    config.slow_grace
                                )));
                            }
                        }
                    }
                };
                sent?;
            }
            Outgoing::End(status) if status.code() == crate::framing::Code::Ok => return Ok(()),
            Outgoing::End(status) => return Err(status),
        }
    }
}

/// Runs a member's reader and writer together. An error on either side ends
/// the call at once; a clean end of the reader (the client closed its side,
/// or left) lets the writer send what is still queued first.
///
/// `reader` is pinned by the caller, so that it is stored once, in the
/// caller's future (an idle member's call state is most of what it costs).
async fn run_member<T: prost::Message, R: std::future::Future<Output = Result<(), Status>>>(
    membership: &Membership,
    mut reader: std::pin::Pin<&mut R>,
    sink: &mut ResponseSink<T>,
    config: &ChatConfig,
) -> Result<(), Status> {
    let writer = write_loop(membership, sink, config);
    tokio::pin!(writer);

    let mut reading = true;
    loop {
        tokio::select! {
            read = reader.as_mut(), if reading => {
                read?;
                reading = false;
                membership.member().close(Status::ok());
            }
            written = &mut writer => return written,
        }
    }
}

/// Validates and rate-limits one chat message; tells the member why not when
/// it is refused.
fn accept_message(
    membership: &Membership,
    bucket: &mut TokenBucket,
    raw: &str,
    config: &ChatConfig,
) -> Option<String> {
    let text = match validate::message(raw, &config.limits) {
        Ok(text) => text,
        // A blank line is not worth a complaint.
        Err(validate::Invalid::Empty) => return None,
        Err(why) => {
            membership.notify(&format!("message not delivered: it is {why}"));
            return None;
        }
    };
    if let Err(wait) = bucket.try_take(Instant::now()) {
        membership.notify(&format!(
            "message not delivered: rate limited (at most {} messages per second); try again in {} ms",
            config.rate_limit.rate,
            wait.as_millis().max(1)
        ));
        return None;
    }
    Some(text.to_owned())
}

impl ChatService {
    async fn stream_reader(
        &self,
        membership: &Membership,
        stream: &mut Streaming<ChatMessage>,
        token_user: Option<&str>,
    ) -> Result<(), Status> {
        let config = self.config();
        let mut bucket = TokenBucket::new(config.rate_limit, Instant::now());
        let mut name: Option<String> = None;
        let mut warned_impersonation = false;
        while let Some(batch) = next_batch(stream).await? {
            let mut events = Vec::with_capacity(batch.len());
            for message in batch {
                match &name {
                    None => {
                        // The first message binds the member's name.
                        let claimed = resolve_name(&message.user, token_user, config)?;
                        let claimed = claimed.as_str();
                        membership.claim_name(claimed)?;
                        info!(
                            room = membership.room_name(),
                            user = claimed,
                            protocol = "ChatStream",
                            "joined"
                        );
                        // Chat members see ChatStream members come and go too.
                        events.push(Event::Joined);
                        name = Some(claimed.to_owned());
                    }
                    Some(bound) => {
                        if message.user.trim() != bound && !warned_impersonation {
                            warned_impersonation = true;
                            info!(
                                room = membership.room_name(),
                                user = %bound,
                                claimed = %message.user,
                                "message claims another name: delivered under the bound name"
                            );
                        }
                    }
                }
                if let Some(text) =
                    accept_message(membership, &mut bucket, &message.message, config)
                {
                    events.push(Event::Message { text });
                }
            }
            if !events.is_empty() {
                membership.publish(&events);
            }
            // A sender that never runs out of input would otherwise keep this
            // task busy indefinitely: take turns with the other tasks.
            tokio::task::consume_budget().await;
        }
        Ok(())
    }

    async fn events_reader(
        &self,
        membership: &Membership,
        stream: &mut Streaming<ClientEvent>,
    ) -> Result<(), Status> {
        let config = self.config();
        let mut bucket = TokenBucket::new(config.rate_limit, Instant::now());
        let mut typing_until: Option<tokio::time::Instant> = None;
        loop {
            let batch = tokio::select! {
                batch = next_batch(stream) => batch?,
                () = sleep_until(typing_until) => {
                    // The client said it started typing and never said it
                    // stopped: expire the indicator for everyone else.
                    typing_until = None;
                    membership.publish(&[Event::Typing { started: false }]);
                    continue;
                }
            };
            let Some(batch) = batch else {
                return Ok(());
            };
            let mut events = Vec::with_capacity(batch.len());
            for message in batch {
                match message.event {
                    Some(client_event::Event::ChatMessage(m)) => {
                        if let Some(text) =
                            accept_message(membership, &mut bucket, &m.message, config)
                        {
                            if typing_until.take().is_some() {
                                events.push(Event::Typing { started: false });
                            }
                            events.push(Event::Message { text });
                        }
                    }
                    Some(client_event::Event::TypingEvent(t)) => {
                        let started = t.r#type == TypingEventType::TypingStart as i32;
                        let stopped = t.r#type == TypingEventType::TypingStop as i32;
                        if started {
                            // Only changes are published; a refresh just
                            // extends the expiry.
                            if typing_until.is_none() {
                                events.push(Event::Typing { started: true });
                            }
                            typing_until =
                                Some(tokio::time::Instant::now() + config.typing_timeout);
                        } else if stopped && typing_until.take().is_some() {
                            events.push(Event::Typing { started: false });
                        }
                    }
                    Some(client_event::Event::UserEvent(u)) => {
                        if u.r#type == UserEventType::UserLeft as i32 {
                            if !events.is_empty() {
                                membership.publish(&events);
                            }
                            return Ok(());
                        }
                        membership.notify("you have already joined");
                    }
                    None => {}
                }
            }
            if !events.is_empty() {
                membership.publish(&events);
            }
            tokio::task::consume_budget().await;
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        // Boxed so that the (large, cache-line aligned) timer is not part of
        // every member's call state.
        Some(at) => Box::pin(tokio::time::sleep_until(at)).await,
        None => std::future::pending().await,
    }
}

impl crate::pb::chat::ChatService for ChatService {
    // Not an `async fn`: the request is taken apart before the future is
    // made, so the future holds the message stream once rather than also a
    // dead copy of the whole request (see `run_member`).
    fn chat_stream(
        &self,
        request: Request<Streaming<ChatMessage>>,
        mut sink: ResponseSink<ChatMessage>,
    ) -> impl std::future::Future<Output = Result<(), Status>> + Send {
        let checked = self
            .authenticate(request.metadata())
            .and_then(|token_user| Ok((token_user, room_name(request.metadata(), self.config())?)));
        let (_, mut stream) = request.into_parts();
        async move {
            let (token_user, room) = checked?;
            // A member from the moment the stream opens: it receives before it
            // has said anything (and so before it has a name).
            let membership = self.hub.join(&room, Protocol::Stream)?;
            sink.flush_headers()?;
            debug!(room, "ChatStream member connected");
            let reader =
                std::pin::pin!(self.stream_reader(&membership, &mut stream, token_user.as_deref()));
            run_member(&membership, reader, &mut sink, self.config()).await
        }
    }

    // Not an `async fn`, for the reason given at `chat_stream`.
    fn chat(
        &self,
        request: Request<Streaming<ClientEvent>>,
        sink: ResponseSink<ServerEvent>,
    ) -> impl std::future::Future<Output = Result<(), Status>> + Send {
        let checked = self
            .authenticate(request.metadata())
            .and_then(|token_user| Ok((token_user, room_name(request.metadata(), self.config())?)));
        let (_, stream) = request.into_parts();
        self.chat_member(checked, stream, sink)
    }
    async fn health_check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let status = if self.hub.is_draining() {
            "DRAINING"
        } else {
            "SERVING"
        };
        Ok(Response::new(HealthCheckResponse {
            status: status.to_owned(),
            active_clients: i32::try_from(self.hub.active_members()).unwrap_or(i32::MAX),
            uptime_seconds: i64::try_from(self.hub.uptime().as_secs()).unwrap_or(i64::MAX),
        }))
    }

    async fn who(&self, request: Request<WhoRequest>) -> Result<Response<WhoResponse>, Status> {
        self.authenticate(request.metadata())?;
        let asked = request.into_inner().room;
        let room = if asked.is_empty() {
            DEFAULT_ROOM.to_owned()
        } else {
            validate::name(&asked, &self.config().limits)
                .map_err(|why| Status::invalid_argument(format!("room name {why}")))?
                .to_owned()
        };
        let users = self.hub.names_in(&room);
        Ok(Response::new(WhoResponse { room, users }))
    }
}

impl ChatService {
    /// The `Chat` call once its metadata is checked.
    async fn chat_member(
        &self,
        checked: Result<(Option<String>, String), Status>,
        mut stream: Streaming<ClientEvent>,
        mut sink: ResponseSink<ServerEvent>,
    ) -> Result<(), Status> {
        let config = self.config();
        let (token_user, room) = checked?;
        let first = stream.message().await?;
        let name = match first.and_then(|e| e.event) {
            Some(client_event::Event::UserEvent(u))
                if u.r#type == UserEventType::UserJoined as i32 =>
            {
                resolve_name(&u.username, token_user.as_deref(), config)?
            }
            _ => {
                return Err(Status::invalid_argument(
                    "the first event must be a USER_JOINED user event with a username",
                ));
            }
        };
        let membership = self.hub.join(&room, Protocol::Events)?;
        membership.claim_name(&name)?;
        info!(room, user = %name, protocol = "Chat", "joined");
        membership.publish(&[Event::Joined]);
        let others: Vec<String> = membership
            .names()
            .into_iter()
            .filter(|n| n != &name)
            .collect();
        membership.notify(&if others.is_empty() {
            format!("welcome to {room}, {name}: you are the only one here")
        } else {
            format!(
                "welcome to {room}, {name}: also here: {}",
                others.join(", ")
            )
        });
        let reader = std::pin::pin!(self.events_reader(&membership, &mut stream));
        run_member(&membership, reader, &mut sink, config).await
    }
}
