//! One way into the chat for every protocol: **admit → join → welcome →
//! run**.
//!
//! ```text
//!  admit     token, room, resume point: checked from the request metadata
//!    │       before the call's future is made
//!  join      into the room (Listening); named now if the first request
//!    │       carried the name; history read by the replay rule; the
//!    │       response headers say the epoch and how much is replayed
//!  welcome   the replay sent (after whatever the protocol sends first:
//!    │       the browser's session token); a named member announced
//!  run       the protocol's reader and the member's writer, side by side,
//!            until the call ends
//! ```
//!
//! Each member's call runs two loops in its own task: the **reader** takes
//! what the client sends and plays it as turns of its participant (an
//! adapter's `read`); the **writer** (`write_loop`) sends whatever the
//! room queued for the member, waiting on the client's flow-control window,
//! and ends the call if the client stays blocked past the grace period.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tracing::{debug, info};

use super::status::{status_of, verdict_status};
use crate::chat::auth::TokenTable;
use crate::chat::core::{self, Hub, Outgoing, Participant, Protocol, Replay, Resume};
use crate::chat::history::{self, EPOCH_METADATA_KEY, LAST_ID_METADATA_KEY, REPLAYED_METADATA_KEY};
use crate::chat::{ChatConfig, DEFAULT_ROOM, ROOM_METADATA_KEY, validate};
use crate::framing::{MetadataMap, Status};
use crate::metrics::RoomMember;
use crate::rpc::Streaming;
use crate::server::ResponseSink;

/// Most messages taken from one client before fanning them out together.
const MAX_BATCH: usize = 256;

/// What a chat call's request metadata decided.
#[derive(Debug)]
pub struct Admission {
    /// The user its token names, when tokens are required.
    pub token_user: Option<String>,
    /// The room asked for (or the default room).
    pub room: String,
    /// Where a reconnecting client resumes.
    pub resume: Resume,
}

/// The user a call's token names; `None` when tokens are not required.
pub fn authenticate(
    tokens: Option<&TokenTable>,
    metadata: &MetadataMap,
) -> Result<Option<String>, Status> {
    let Some(tokens) = tokens else {
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

/// A room name from a request, or the default room for an empty one.
pub fn room_from(asked: &str, config: &ChatConfig) -> Result<String, Status> {
    if asked.is_empty() {
        return Ok(DEFAULT_ROOM.to_owned());
    }
    validate::name(asked, &config.limits)
        .map(str::to_owned)
        .map_err(|why| Status::invalid_argument(format!("room name {why}")))
}

/// The resume point in a call's metadata (see [`history`] for the
/// contract).
pub fn resume_point(metadata: &MetadataMap) -> Result<Resume, Status> {
    history::parse_resume(
        metadata.get(LAST_ID_METADATA_KEY),
        metadata.get(EPOCH_METADATA_KEY),
    )
    .map_err(Status::invalid_argument)
}

/// Step 1, **admit**: a chat call's token, room (`chat-room` metadata) and
/// resume point. The error is boxed because the result is kept in the
/// call's future for its whole life, and a successful call should not pay
/// for the room a status takes.
pub fn admit(
    tokens: Option<&TokenTable>,
    metadata: &MetadataMap,
    config: &ChatConfig,
) -> Result<Admission, Box<Status>> {
    let checked = || {
        Ok(Admission {
            token_user: authenticate(tokens, metadata)?,
            room: match metadata.get(ROOM_METADATA_KEY) {
                None => DEFAULT_ROOM.to_owned(),
                // Present but empty is a mistake, not a wish for the default.
                Some(raw) => validate::name(raw, &config.limits)
                    .map(str::to_owned)
                    .map_err(|why| Status::invalid_argument(format!("room name {why}")))?,
            },
            resume: resume_point(metadata)?,
        })
    };
    checked().map_err(Box::new)
}

/// A member that has joined, and what it is owed before live traffic.
pub struct Joined {
    /// The member under the chat's rules.
    pub participant: Arc<Participant>,
    /// Counts the member in the room's metrics while it lives.
    pub counted: RoomMember,
    /// What history it is sent.
    pub replay: Replay,
}

/// Step 2, **join**: into `room` as a `protocol` member, named now if
/// `name` is given (with the token's user to check it against), with its
/// replay read and the replay's headers set on the response.
pub async fn join<T: prost::Message>(
    hub: &Arc<Hub>,
    room: &str,
    resume: Resume,
    protocol: Protocol,
    name: Option<(&str, Option<&str>)>,
    sink: &mut ResponseSink<T>,
) -> Result<Joined, Status> {
    let membership = hub.join(room, protocol).map_err(status_of)?;
    let counted = hub.config().metrics.join_room(room);
    let participant = Arc::new(Participant::new(membership));
    if let Some((asked, token_user)) = name {
        participant
            .take_name(asked, token_user)
            .await
            .map_err(status_of)?;
    }
    // Subscribed before history is read: see `history::Sequencer::follow`.
    participant.membership().follow().await;
    let replay = Box::pin(core::replay::read(
        hub.history().as_ref(),
        participant.membership(),
        resume,
        hub.config(),
    ))
    .await;
    sink.set_header_metadata(replay_headers(&replay));
    Ok(Joined {
        participant,
        counted,
        replay,
    })
}

/// The response headers telling a client the epoch and how many messages
/// are replayed.
fn replay_headers(replay: &Replay) -> MetadataMap {
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

/// Step 3, **welcome**: sends the replay (`frames`, in the protocol's
/// encoding), bounded like every other send by the slow-reader grace
/// period — or, with nothing to replay, the headers alone, so the client
/// knows it is in — and announces a named member to the room.
pub async fn welcome<T: prost::Message>(
    participant: &Participant,
    replay: Replay,
    frames: Bytes,
    sink: &mut ResponseSink<T>,
) -> Result<(), Status> {
    let config = participant.membership().hub().config();
    if frames.is_empty() {
        sink.flush_headers()?;
    } else {
        match tokio::time::timeout(config.slow_grace, sink.send_encoded(frames)).await {
            Ok(sent) => sent?,
            Err(_) => {
                return Err(Status::resource_exhausted(format!(
                    "this client did not read its history for {:?}",
                    config.slow_grace
                )));
            }
        }
    }
    let room = participant.membership().room_name();
    let replayed = replay.messages.len();
    let protocol = participant.member().protocol();
    match participant.name() {
        Some(name) => {
            info!(room, user = %name, ?protocol, replayed, "joined");
            participant.announce().await;
        }
        None => debug!(room, ?protocol, replayed, "member connected, not named yet"),
    }
    Ok(())
}

/// Step 4, **run**: the reader and the writer together. An error on
/// either side ends the call at once; a clean end of the reader (the
/// client closed its side, or left) lets the writer send what is still
/// queued first.
///
/// `reader` is pinned by the caller, so that it is stored once, in the
/// caller's future (an idle member's call state is most of what it costs).
pub async fn run<T: prost::Message, R: Future<Output = Result<(), Status>>>(
    participant: &Participant,
    mut reader: Pin<&mut R>,
    sink: &mut ResponseSink<T>,
) -> Result<(), Status> {
    let writer = write_loop(participant, sink);
    tokio::pin!(writer);
    let mut reading = true;
    loop {
        tokio::select! {
            read = reader.as_mut(), if reading => {
                read?;
                reading = false;
                participant.member().close(core::Verdict::Done);
            }
            written = &mut writer => return written,
        }
    }
}

/// Reads the next batch: waits for one message, then takes every message
/// already received (up to `MAX_BATCH`) without waiting. `None` when the
/// client has closed its side.
pub async fn next_batch<T: prost::Message + Default>(
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
    participant: &Participant,
    sink: &mut ResponseSink<T>,
) -> Result<(), Status> {
    let member = participant.member();
    let metrics = participant.membership().hub().config().metrics;
    loop {
        match member.next_batch().await {
            Outgoing::Frames(frames) => {
                let messages = crate::metrics::count_messages(&frames);
                // Most sends fit the client's window and finish at once,
                // without a future. Only a send that has to wait gets one —
                // boxed, with its timer — so an idle member's writer holds
                // no room for it (see docs/benchmarks.md, memory per member).
                if let Some(frames) = sink.try_send_encoded(frames)? {
                    Box::pin(send_waiting(participant, sink, frames)).await?;
                }
                metrics.messages_delivered.add(messages);
            }
            Outgoing::End(verdict) => return verdict_status(verdict),
        }
    }
}

/// Sends frames that did not fit the client's window: waits for it to
/// open, but no longer than the slow-reader grace period, and no longer
/// than the member may stay in the room (it may fall too far behind
/// meanwhile).
async fn send_waiting<T: prost::Message>(
    participant: &Participant,
    sink: &mut ResponseSink<T>,
    frames: Bytes,
) -> Result<(), Status> {
    let config = participant.membership().hub().config();
    let grace = config.slow_grace;
    tokio::select! {
        sent = tokio::time::timeout(grace, sink.send_encoded(frames)) => match sent {
            Ok(sent) => sent,
            Err(_) => {
                config.metrics.evicted_stalled.inc();
                info!(
                    room = participant.membership().room_name(),
                    "client stopped reading: disconnecting with RESOURCE_EXHAUSTED"
                );
                Err(Status::resource_exhausted(format!(
                    "this client did not read its messages for {grace:?}"
                )))
            }
        },
        // Fell too far behind while blocked: end now, not when the grace
        // runs out.
        verdict = participant.member().must_end_now() => verdict_status(verdict),
    }
}
