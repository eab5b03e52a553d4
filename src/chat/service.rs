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
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tracing::{debug, info, warn};

use super::auth::TokenTable;
use super::history::{
    self, EPOCH_METADATA_KEY, LAST_ID_METADATA_KEY, REPLAYED_METADATA_KEY, SharedHistory, Since,
    StoreHealth, StoredMessage,
};
use super::ratelimit::TokenBucket;
use super::room::{Event, Hub, Membership, Outgoing, Protocol, unix_now};
use super::session::Sessions;
use super::{ChatConfig, DEFAULT_ROOM, ROOM_METADATA_KEY, validate};
use crate::framing::{MetadataMap, Status};
use crate::metrics::METRICS;
use crate::pb::chat::{
    ChatMessage, ChatMessageEvent, ClientEvent, HealthCheckRequest, HealthCheckResponse,
    SendMessageRequest, SendMessageResponse, ServerEvent, SetTypingRequest, SetTypingResponse,
    SubscribeEvent, SubscribeRequest, SystemEvent, TypingEventType, UserEventType, WhoRequest,
    WhoResponse, client_event, server_event,
};
use crate::rpc::{Request, Response, Streaming};
use crate::server::ResponseSink;

/// Most messages taken from one client before fanning them out together.
const MAX_BATCH: usize = 256;
/// How long a joining client waits for history before it gets live
/// messages only (the store may be unreachable).
const HISTORY_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The chat service. Cheap to clone: clones share the hub.
#[derive(Debug, Clone)]
pub struct ChatService {
    hub: Arc<Hub>,
    /// Sessions of `Subscribe` callers ([`session`](super::session)).
    sessions: Arc<Sessions>,
    /// When set, every call needs a token, and the token names the user.
    tokens: Option<Arc<TokenTable>>,
}

impl ChatService {
    /// A service with its own hub and the embedded history store.
    pub fn new(config: ChatConfig) -> Self {
        ChatService {
            hub: Hub::new(config),
            sessions: Arc::default(),
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
    pub(super) fn authenticate(&self, metadata: &MetadataMap) -> Result<Option<String>, Status> {
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

    /// A service with its own hub keeping history in `history` (e.g.
    /// [`RedisHistory`](super::history::redis::RedisHistory)). Call inside a
    /// Tokio runtime: the store's background work starts here.
    pub fn with_history(config: ChatConfig, history: SharedHistory) -> Self {
        ChatService {
            hub: Hub::with_history(config, history),
            sessions: Arc::default(),
            tokens: None,
        }
    }

    /// The hub of rooms (for shutdown and figures).
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub(super) fn config(&self) -> &ChatConfig {
        &self.hub.config
    }

    /// The open `Subscribe` sessions.
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
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
pub(super) fn resolve_name(
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

/// What a joining client is sent before live traffic.
#[derive(Debug, Default)]
pub(super) struct Replay {
    /// The room's history epoch (`None`: history could not be read).
    epoch: Option<String>,
    /// Messages from history, oldest first.
    pub(super) messages: Vec<StoredMessage>,
    /// Notices about what could not be replayed.
    notices: Vec<String>,
}

/// Where a reconnecting client asks to resume: the last id it saw and the
/// epoch of that id (`None`: a fresh join).
pub(super) type Resume = Option<(u64, Option<String>)>;

/// The resume point in a call's metadata (see [`history`] for the
/// contract). Read before the call's future starts, so the metadata is not
/// kept for the member's whole life.
/// Tells the room that `name` joined, and the member who else is here:
/// the named members, and the silent listeners (`ChatStream` members that
/// have not spoken, so have no name yet) counted, since they read the room
/// too.
pub(super) fn announce_join(membership: &Membership, room: &str, name: &str) {
    membership.publish(&[Event::Joined]);
    let presence = membership.presence();
    let mut others: Vec<String> = presence.names.into_iter().filter(|n| n != name).collect();
    match presence.listeners {
        0 => {}
        1 => others.push("1 member who has not spoken yet".to_owned()),
        n => others.push(format!("{n} members who have not spoken yet")),
    }
    membership.notify(&if others.is_empty() {
        format!("welcome to {room}, {name}: you are the only one here")
    } else {
        format!(
            "welcome to {room}, {name}: also here: {}",
            others.join(", ")
        )
    });
}

/// What a chat call's request metadata decided, checked before the call's
/// future is made.
#[derive(Debug)]
pub(super) struct Admission {
    /// The user its token names, when tokens are required.
    token_user: Option<String>,
    room: String,
    resume: Resume,
}

impl ChatService {
    /// Checks a chat call's token, room and resume point. The error is boxed
    /// because the result is kept in the call's future for its whole life,
    /// and a successful call should not pay for the room a status takes.
    fn admit(&self, metadata: &MetadataMap) -> Result<Admission, Box<Status>> {
        let checked = || {
            Ok(Admission {
                token_user: self.authenticate(metadata)?,
                room: room_name(metadata, self.config())?,
                resume: resume_point(metadata)?,
            })
        };
        checked().map_err(Box::new)
    }
}

pub(super) fn resume_point(metadata: &MetadataMap) -> Result<Resume, Status> {
    history::parse_resume(
        metadata.get(LAST_ID_METADATA_KEY),
        metadata.get(EPOCH_METADATA_KEY),
    )
    .map_err(Status::invalid_argument)
}

/// Reads what a joining member gets from history, as its resume metadata
/// asks (see [`history`] for the contract), and makes its live log skip
/// what the replay holds.
pub(super) async fn read_replay(
    history: &SharedHistory,
    membership: &Membership,
    resume: Resume,
    config: &ChatConfig,
) -> Result<Replay, Status> {
    let room = membership.room_name();
    let latest = Since::Latest {
        limit: config.history_replay,
    };
    let since = match resume {
        Some((id, _)) => Since::After {
            id,
            limit: config.history_len,
        },
        None => latest,
    };
    let read = |since| async move {
        match tokio::time::timeout(HISTORY_READ_TIMEOUT, history.page(room, since)).await {
            Ok(Ok(page)) => Some(page),
            Ok(Err(error)) => {
                warn!(room, %error, "history unavailable for a joining member");
                None
            }
            Err(_) => {
                warn!(room, "history read timed out for a joining member");
                None
            }
        }
    };
    let Some(mut page) = read(since).await else {
        return Ok(Replay {
            notices: vec!["history is unavailable right now: live messages only".to_owned()],
            ..Replay::default()
        });
    };
    let mut notices = Vec::new();
    let resume_id = resume.as_ref().map(|(id, _)| *id);
    if let Some((id, epoch)) = resume {
        match epoch {
            Some(epoch) if epoch != page.epoch => {
                notices.push(format!(
                    "history was lost since you were last here (history epoch {epoch} is now {}): \
                     showing the latest messages",
                    page.epoch
                ));
                let Some(latest) = read(latest).await else {
                    return Ok(Replay {
                        epoch: Some(page.epoch),
                        notices,
                        ..Replay::default()
                    });
                };
                page = latest;
            }
            _ => {
                let missing = page.missing_after(id);
                if missing > 0 {
                    notices.push(format!(
                        "{missing} messages you missed are no longer in history"
                    ));
                }
            }
        }
    }
    // The member has been in the room's live log since it joined, and the
    // live messages up to `page.head` will be skipped as replayed. If the
    // read came late (a busy room, a slow store), the newest-N window may
    // start after live messages the member already holds: those would then
    // be neither replayed nor delivered. Read again from the oldest of them.
    // (A resume already reads everything after its id that history keeps.)
    let reaches_back_to = page.messages.first().map_or(page.head + 1, |m| m.id);
    if let (None, Some(first_live)) = (resume_id, membership.member().first_live_id()) {
        if first_live < reaches_back_to {
            let wider = Since::After {
                id: first_live - 1,
                limit: config.history_len,
            };
            if let Some(wider) = read(wider).await {
                if wider.epoch == page.epoch {
                    page = wider;
                }
            }
        }
    }
    membership.note_epoch(&page.epoch);
    membership.member().skip_replayed(page.head);
    Ok(Replay {
        epoch: Some(page.epoch),
        messages: page.messages,
        notices,
    })
}

/// The response headers telling a client the epoch and how many messages
/// are replayed.
pub(super) fn replay_headers(replay: &Replay) -> MetadataMap {
    let mut headers = MetadataMap::new();
    // Both values are digits or the store's own hex epoch: valid header
    // values, so an error here cannot happen and would only drop a header.
    // Not indexed by HPACK: a chat connection usually carries one call, so a
    // table entry would never be used again, yet each idle member's
    // connection would keep it.
    if let Some(epoch) = &replay.epoch {
        let _ = headers.insert_unindexed(EPOCH_METADATA_KEY, epoch);
    }
    let _ = headers.insert_unindexed(REPLAYED_METADATA_KEY, &replay.messages.len().to_string());
    headers
}

fn encode_into<M: prost::Message>(message: &M, buf: &mut BytesMut) {
    if let Err(status) = crate::codec::encode(message, None, usize::MAX, buf) {
        warn!(%status, "could not encode a replayed message");
    }
}

fn system(text: String, epoch: Option<&str>, end_of_history: bool) -> ServerEvent {
    ServerEvent {
        event: Some(server_event::Event::SystemEvent(SystemEvent {
            message: text,
            timestamp: unix_now(),
            epoch: epoch.unwrap_or_default().to_owned(),
            end_of_history,
        })),
    }
}

/// The replay as `Chat` frames: notices, messages, then the
/// end-of-history `SystemEvent` carrying the epoch.
pub(super) fn chat_replay_frames(replay: &Replay) -> Bytes {
    let mut buf = BytesMut::new();
    for notice in &replay.notices {
        encode_into(&system(notice.clone(), None, false), &mut buf);
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
    encode_into(&system(end, replay.epoch.as_deref(), true), &mut buf);
    buf.freeze()
}

/// The replay as `ChatStream` frames: the messages (the first
/// `chat-replayed` of the stream), then notices from user "server".
fn stream_replay_frames(replay: &Replay) -> Bytes {
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
        let message = ChatMessage {
            user: "server".into(),
            message: notice.clone(),
            timestamp: unix_now(),
            id: 0,
        };
        encode_into(&message, &mut buf);
    }
    buf.freeze()
}

/// Sends the replay, bounded like every other send by the slow-reader
/// grace period.
pub(super) async fn send_replay<T: prost::Message>(
    sink: &mut ResponseSink<T>,
    frames: Bytes,
    config: &ChatConfig,
) -> Result<(), Status> {
    if frames.is_empty() {
        return Ok(());
    }
    match tokio::time::timeout(config.slow_grace, sink.send_encoded(frames)).await {
        Ok(sent) => sent,
        Err(_) => Err(Status::resource_exhausted(format!(
            "this client did not read its history for {:?}",
            config.slow_grace
        ))),
    }
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
                let messages = crate::metrics::count_messages(&frames);
                // Most sends fit the client's window and finish at once,
                // without a future. Only a send that has to wait gets one —
                // boxed, with its timer — so an idle member's writer holds
                // no room for it (see docs/benchmarks.md, memory per member).
                if let Some(frames) = sink.try_send_encoded(frames)? {
                    Box::pin(send_waiting(membership, sink, config, frames)).await?;
                }
                METRICS.messages_delivered.add(messages);
            }
            Outgoing::End(status) if status.code() == crate::framing::Code::Ok => return Ok(()),
            Outgoing::End(status) => return Err(status),
        }
    }
}

/// Sends frames that did not fit the client's window: waits for it to open,
/// but no longer than the slow-reader grace period, and no longer than the
/// member may stay in the room (it may fall too far behind meanwhile).
async fn send_waiting<T: prost::Message>(
    membership: &Membership,
    sink: &mut ResponseSink<T>,
    config: &ChatConfig,
    frames: Bytes,
) -> Result<(), Status> {
    tokio::select! {
        sent = tokio::time::timeout(config.slow_grace, sink.send_encoded(frames)) => match sent {
            Ok(sent) => sent,
            Err(_) => {
                METRICS.evicted_stalled.inc();
                info!(
                    room = membership.room_name(),
                    "client stopped reading: disconnecting with RESOURCE_EXHAUSTED"
                );
                Err(Status::resource_exhausted(format!(
                    "this client did not read its messages for {:?}",
                    config.slow_grace
                )))
            }
        },
        // Fell too far behind while blocked: end now, not when the grace
        // runs out.
        status = membership.member().must_end_now() => Err(status),
    }
}

/// Runs a member's reader and writer together. An error on either side ends
/// the call at once; a clean end of the reader (the client closed its side,
/// or left) lets the writer send what is still queued first.
///
/// `reader` is pinned by the caller, so that it is stored once, in the
/// caller's future (an idle member's call state is most of what it costs).
pub(super) async fn run_member<
    T: prost::Message,
    R: std::future::Future<Output = Result<(), Status>>,
>(
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

/// Which of a member's offences have been logged. A member is told about
/// every refused message (it is its own conversation), but the log gets one
/// line per member and kind of offence: a client flooding bad or excessive
/// messages must not be able to flood the server's log with them.
#[derive(Debug, Default)]
struct Logged {
    invalid: bool,
    rate_limited: bool,
}

/// Validates and rate-limits one chat message; tells the member why not when
/// it is refused.
fn accept_message(
    membership: &Membership,
    bucket: &mut TokenBucket,
    raw: &str,
    config: &ChatConfig,
    logged: &mut Logged,
) -> Option<String> {
    let text = match validate::message(raw, &config.limits) {
        Ok(text) => text,
        // A blank line is not worth a complaint.
        Err(validate::Invalid::Empty) => return None,
        Err(why) => {
            if !std::mem::replace(&mut logged.invalid, true) {
                info!(
                    room = membership.room_name(),
                    member = membership.member().id(),
                    reason = %why,
                    "message refused (further refusals for this member are not logged)"
                );
            }
            membership.notify(&format!("message not delivered: it {why}"));
            return None;
        }
    };
    if let Err(wait) = bucket.try_take(Instant::now()) {
        if !std::mem::replace(&mut logged.rate_limited, true) {
            info!(
                room = membership.room_name(),
                member = membership.member().id(),
                rate = config.rate_limit.rate,
                burst = config.rate_limit.burst,
                "rate limit reached (further refusals for this member are not logged)"
            );
        }
        METRICS.rate_limited.inc();
        membership.notify(&format!(
            "message not delivered: rate limited (at most {} messages per second); try again in {} ms",
            config.rate_limit.rate,
            wait.as_millis().max(1)
        ));
        return None;
    }
    Some(text.into_owned())
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
        let mut logged = Logged::default();
        loop {
            // A sender that never runs out of input would otherwise keep
            // this task busy indefinitely: take turns with the other tasks.
            // Yielding here, before the read, rather than after publishing,
            // means no batch is held across an `.await` but the read's:
            // the future needs no room for one while the member is idle.
            tokio::task::consume_budget().await;
            let Some(batch) = next_batch(stream).await? else {
                break;
            };
            METRICS.messages_received.add(batch.len() as u64);
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
                if let Some(text) = accept_message(
                    membership,
                    &mut bucket,
                    &message.message,
                    config,
                    &mut logged,
                ) {
                    events.push(Event::Message { text });
                }
            }
            if !events.is_empty() {
                membership.publish(&events);
            }
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
        let mut logged = Logged::default();
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
            METRICS.messages_received.add(batch.len() as u64);
            let mut events = Vec::with_capacity(batch.len());
            for message in batch {
                match message.event {
                    Some(client_event::Event::ChatMessage(m)) => {
                        if let Some(text) =
                            accept_message(membership, &mut bucket, &m.message, config, &mut logged)
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
        let admitted = self.admit(request.metadata());
        let (_, mut stream) = request.into_parts();
        async move {
            let admission = admitted.as_ref().map_err(|status| Status::clone(status))?;
            // A member from the moment the stream opens: it receives before it
            // has said anything (and so before it has a name).
            let membership = self.hub.join(&admission.room, Protocol::Stream)?;
            let _counted = METRICS.join_room(&admission.room);
            // In a block of its own: the replay's storage then ends with the
            // block instead of staying in the future for the call's life.
            {
                let replay = Box::pin(read_replay(
                    self.hub.history(),
                    &membership,
                    admission.resume.clone(),
                    self.config(),
                ))
                .await?;
                sink.set_header_metadata(replay_headers(&replay));
                sink.flush_headers()?;
                Box::pin(send_replay(
                    &mut sink,
                    stream_replay_frames(&replay),
                    self.config(),
                ))
                .await?;
                debug!(
                    room = admission.room,
                    replayed = replay.messages.len(),
                    "ChatStream member connected"
                );
            }
            let reader = std::pin::pin!(self.stream_reader(
                &membership,
                &mut stream,
                admission.token_user.as_deref()
            ));
            run_member(&membership, reader, &mut sink, self.config()).await
        }
    }

    // Not an `async fn`, for the reason given at `chat_stream`.
    fn chat(
        &self,
        request: Request<Streaming<ClientEvent>>,
        sink: ResponseSink<ServerEvent>,
    ) -> impl std::future::Future<Output = Result<(), Status>> + Send {
        let admitted = self.admit(request.metadata());
        let (_, stream) = request.into_parts();
        self.chat_member(admitted, stream, sink)
    }

    async fn health_check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let status = if self.hub.is_draining() {
            "DRAINING".to_owned()
        } else {
            match self.hub.history().health() {
                StoreHealth::Ok => "SERVING".to_owned(),
                StoreHealth::Degraded(why) => format!("DEGRADED: {why}"),
            }
        };
        Ok(Response::new(HealthCheckResponse {
            status,
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
        let presence = self.hub.presence_in(&room);
        Ok(Response::new(WhoResponse {
            room,
            users: presence.names,
            listeners: u32::try_from(presence.listeners).unwrap_or(u32::MAX),
        }))
    }

    // The browser-friendly calls live in `session.rs`.

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
        sink: ResponseSink<SubscribeEvent>,
    ) -> Result<(), Status> {
        self.subscribe_session(request, sink).await
    }

    async fn send_message(
        &self,
        request: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        self.send_in_session(request).await
    }

    async fn set_typing(
        &self,
        request: Request<SetTypingRequest>,
    ) -> Result<Response<SetTypingResponse>, Status> {
        self.typing_in_session(request).await
    }
}

impl ChatService {
    /// The `Chat` call once its metadata is checked.
    /// Not an `async fn`, for the reasons given at `chat_stream`.
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    fn chat_member(
        &self,
        admitted: Result<Admission, Box<Status>>,
        mut stream: Streaming<ClientEvent>,
        mut sink: ResponseSink<ServerEvent>,
    ) -> impl std::future::Future<Output = Result<(), Status>> + Send {
        async move {
            let config = self.config();
            let admission = admitted.as_ref().map_err(|status| Status::clone(status))?;
            let room = &admission.room;
            // Joining happens in a block: what only the join needs (the
            // first event, the name, the replay) then has no storage in the
            // future once the member settles in.
            let (membership, _counted) = {
                let first = stream.message().await?;
                let name = match first.and_then(|e| e.event) {
                    Some(client_event::Event::UserEvent(u))
                        if u.r#type == UserEventType::UserJoined as i32 =>
                    {
                        resolve_name(&u.username, admission.token_user.as_deref(), config)?
                    }
                    _ => {
                        return Err(Status::invalid_argument(
                            "the first event must be a USER_JOINED user event with a username",
                        ));
                    }
                };
                let membership = self.hub.join(room, Protocol::Events)?;
                let counted = METRICS.join_room(room);
                membership.claim_name(&name)?;
                let replay = Box::pin(read_replay(
                    self.hub.history(),
                    &membership,
                    admission.resume.clone(),
                    config,
                ))
                .await?;
                sink.set_header_metadata(replay_headers(&replay));
                Box::pin(send_replay(&mut sink, chat_replay_frames(&replay), config)).await?;
                info!(room, user = %name, protocol = "Chat", replayed = replay.messages.len(), "joined");
                announce_join(&membership, room, &name);
                (membership, counted)
            };
            let reader = std::pin::pin!(self.events_reader(&membership, &mut stream));
            run_member(&membership, reader, &mut sink, config).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member that joined before a burst, whose history read comes only
    /// after it (a busy room, a slow store), still gets every message of
    /// the burst: the newest-N window alone would start in its middle.
    #[tokio::test]
    async fn a_late_history_read_reaches_back_to_the_join() {
        let config = ChatConfig {
            history_replay: 5,
            ..ChatConfig::default()
        };
        let hub = Hub::new(config.clone());
        let speaker = hub.join("r", Protocol::Events).unwrap();
        speaker.claim_name("ann").unwrap();
        let listener = hub.join("r", Protocol::Events).unwrap();
        listener.claim_name("bob").unwrap();
        for i in 0..40 {
            speaker.publish(&[Event::Message {
                text: format!("m{i}"),
            }]);
        }
        // Only now does the listener's history read happen.
        let replay = read_replay(hub.history(), &listener, None, &config)
            .await
            .unwrap();
        let ids: Vec<u64> = replay.messages.iter().map(|m| m.id).collect();
        assert_eq!(ids, (1..=40).collect::<Vec<u64>>());
    }

    /// Without a late read, a fresh join gets the newest N and no more.
    #[tokio::test]
    async fn a_fresh_join_gets_the_newest_messages() {
        let config = ChatConfig {
            history_replay: 5,
            ..ChatConfig::default()
        };
        let hub = Hub::new(config.clone());
        let speaker = hub.join("r", Protocol::Events).unwrap();
        speaker.claim_name("ann").unwrap();
        for i in 0..40 {
            speaker.publish(&[Event::Message {
                text: format!("m{i}"),
            }]);
        }
        let listener = hub.join("r", Protocol::Events).unwrap();
        let replay = read_replay(hub.history(), &listener, None, &config)
            .await
            .unwrap();
        let ids: Vec<u64> = replay.messages.iter().map(|m| m.id).collect();
        assert_eq!(ids, (36..=40).collect::<Vec<u64>>());
    }
}
