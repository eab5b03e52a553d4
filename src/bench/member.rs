//! One benchmark member: its call, the task that writes to it and the task
//! that reads from it.
//!
//! ```text
//!   main task ──probe──┐                         ┌──> reader: marker → counts,
//!   sender task ─text──┼─> outbox ─> writer ─> call      latency, dedup bits
//!   (join, queued      ┘   (mpsc)    (sink)    (source)
//!    first)
//! ```
//!
//! Reading and writing are separate tasks on purpose: a server that stops
//! reading our requests while it still has responses for us would otherwise
//! deadlock a member that waits to send before it reads again.
//!
//! The two chat protocols differ only here, in [`Sink`] and [`Source`]:
//!
//! * `ChatStream` — the join is a marked text (`~cl~J|id`) whose `user`
//!   binds the member's name; every message is a `ChatMessage`.
//! * `Chat` — the join is `UserEvent(USER_JOINED)` with the name; messages
//!   are `ChatMessageEvent`s; the server may echo a member's own messages
//!   back and sends system notices and join/leave/typing events, which are
//!   counted apart and never as deliveries.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::marker::{self, Marker};
use super::{Protocol, Shared};
use crate::chat::ROOM_METADATA_KEY;
use crate::chat::history::REPLAYED_METADATA_KEY;
use crate::client::{RequestSink, ResponseStream};
use crate::framing::{MetadataMap, Status};
use crate::pb::chat::{
    ChatMessage, ChatMessageEvent, ChatServiceClient, ClientEvent, ServerEvent, UserEvent,
    UserEventType, client_event, server_event,
};
use crate::rpc::Request;

/// What goes into a member's outbox.
#[derive(Debug)]
pub(super) enum Outbound {
    /// Join the room (the first thing every member sends).
    Join,
    /// A chat message with this text.
    Text(String),
}

/// The sending half of a member's call, whichever the protocol.
enum Sink {
    Stream(RequestSink<ChatMessage>),
    Events(RequestSink<ClientEvent>),
}

/// The receiving half of a member's call.
enum Source {
    Stream(ResponseStream<ChatMessage>),
    Events(ResponseStream<ServerEvent>),
}

/// One thing read from a call.
enum Received {
    /// A chat message's text.
    Text(String),
    /// A chat message the server replayed from the room's history (an
    /// earlier run's, say): not this run's traffic, whatever its marker.
    Replayed,
    /// Anything else the server sends (`Chat` only): notices, joins, typing.
    Event,
}

impl Sink {
    async fn send(&mut self, id: usize, name: &str, out: Outbound) -> Result<(), Status> {
        match self {
            Sink::Stream(sink) => {
                let message = match out {
                    Outbound::Join => marker::join(id),
                    Outbound::Text(text) => text,
                };
                let message = ChatMessage {
                    user: name.to_owned(),
                    message,
                    ..ChatMessage::default()
                };
                sink.send(&message).await
            }
            Sink::Events(sink) => {
                let event = match out {
                    Outbound::Join => client_event::Event::UserEvent(UserEvent {
                        r#type: UserEventType::UserJoined.into(),
                        username: name.to_owned(),
                        timestamp: 0,
                    }),
                    Outbound::Text(message) => client_event::Event::ChatMessage(ChatMessageEvent {
                        message,
                        username: name.to_owned(),
                        ..ChatMessageEvent::default()
                    }),
                };
                sink.send(&ClientEvent { event: Some(event) }).await
            }
        }
    }
}

/// How many of a call's first chat messages are replayed history: our
/// server says so in the `chat-replayed` response header (both protocols);
/// a server that does not replay sends none, and then it is 0.
fn replayed_count(headers: &MetadataMap) -> u64 {
    headers
        .get(REPLAYED_METADATA_KEY)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

impl Source {
    /// The next thing the server sent; `Ok(None)` at a clean end of the call.
    /// `replay`: replayed messages still to come (`None`: the response
    /// headers, which say how many, are not read yet).
    async fn next(&mut self, replay: &mut Option<u64>) -> Result<Option<Received>, Status> {
        let text = match self {
            Source::Stream(source) => {
                if replay.is_none() {
                    *replay = Some(replayed_count(source.headers().await?));
                }
                source.message().await?.map(|m| m.message)
            }
            Source::Events(source) => {
                if replay.is_none() {
                    *replay = Some(replayed_count(source.headers().await?));
                }
                match source.message().await? {
                    None => None,
                    Some(e) => match e.event {
                        Some(server_event::Event::ChatMessage(m)) => Some(m.message),
                        _ => return Ok(Some(Received::Event)),
                    },
                }
            }
        };
        Ok(text.map(|text| match replay {
            Some(n) if *n > 0 => {
                *n -= 1;
                Received::Replayed
            }
            _ => Received::Text(text),
        }))
    }
}

/// Opens a member's call in `room` (`None`: the server's default room) and
/// splits it.
async fn open(
    client: &ChatServiceClient,
    protocol: Protocol,
    room: Option<&str>,
) -> Result<(Sink, Source), Status> {
    let request = || {
        let mut request = Request::new(());
        if let Some(room) = room {
            request
                .metadata_mut()
                .insert(ROOM_METADATA_KEY, room)
                .map_err(|e| Status::invalid_argument(format!("room {room:?}: {e}")))?;
        }
        Ok::<_, Status>(request)
    };
    Ok(match protocol {
        Protocol::ChatStream => {
            let (sink, source) = client.chat_stream(request()?).await?.split();
            (Sink::Stream(sink), Source::Stream(source))
        }
        Protocol::Chat => {
            let (sink, source) = client.chat(request()?).await?.split();
            (Sink::Events(sink), Source::Events(source))
        }
    })
}

/// What the main task tells the members, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Warm-up and load: every member reads.
    Read,
    /// The stalled members stop reading (after the warm-up, before the load).
    Stall,
    /// Measurement over: members stop; stalled ones look at how their call ended.
    Stop,
}

/// One member's own figures, summed by the main task at the end.
#[derive(Debug, Default)]
pub(super) struct MemberStats {
    /// Our own measured messages, sent back to us (`Chat` echoes).
    pub echoes: u64,
    /// Measured messages received more than once.
    pub dups: u64,
    /// Chat texts without a well-formed marker of this run.
    pub foreign: u64,
    /// Chat messages replayed from history on joining (not counted).
    pub replayed: u64,
    /// Non-message events (`Chat`: notices, joins, leaves, typing).
    pub events: u64,
    /// How the call failed, if it did (not for a stalled member; see `stall_end`).
    pub error: Option<String>,
    /// A stalled member whose call the server ended while it was not read: how.
    pub stall_end: Option<String>,
}

/// How a member is set up.
pub(super) struct MemberSpec {
    /// Index, 0-based; members `0..senders` send, the last `stall` stall.
    pub id: usize,
    /// The name it joins with.
    pub name: String,
    /// Whether it stops reading at [`Phase::Stall`].
    pub stalls: bool,
    /// Its room (an index), and the room's name for the `chat-room`
    /// metadata (`None`: the server's default room).
    pub room: usize,
    pub room_name: Option<String>,
    /// The server it talks to (an index into the run's addresses).
    pub server: usize,
}

/// Runs one member until [`Phase::Stop`] or the end of its call.
pub(super) async fn run(
    spec: MemberSpec,
    client: ChatServiceClient,
    protocol: Protocol,
    outbox: mpsc::Receiver<Outbound>,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
) -> MemberStats {
    let mut stats = MemberStats::default();
    let opened = tokio::select! {
        opened = open(&client, protocol, spec.room_name.as_deref()) => opened,
        _ = phase.wait_for(|p| *p == Phase::Stop) => return stats,
    };
    let (sink, mut source) = match opened {
        Ok(halves) => halves,
        Err(status) => {
            stats.error = Some(status.to_string());
            shared.failed.fetch_add(1, Relaxed);
            return stats;
        }
    };
    let writer = tokio::spawn(write(spec.id, spec.name.clone(), sink, outbox));
    read(&spec, &mut source, &shared, &mut phase, &mut stats).await;
    // Dropping both halves cancels the call (RST_STREAM(CANCEL)).
    writer.abort();
    stats
}

/// Sends what arrives in the outbox, in order, until it closes or the call fails.
async fn write(id: usize, name: String, mut sink: Sink, mut outbox: mpsc::Receiver<Outbound>) {
    while let Some(out) = outbox.recv().await {
        if sink.send(id, &name, out).await.is_err() {
            // The call is over; the reader reports how.
            return;
        }
    }
    // Everything sent: keep the call open (a half-close would make some
    // servers end the membership) until the member task is done with it.
    std::future::pending::<()>().await;
}

/// The reading loop: records every measured delivery once.
async fn read(
    spec: &MemberSpec,
    source: &mut Source,
    shared: &Shared,
    phase: &mut watch::Receiver<Phase>,
    stats: &mut MemberStats,
) {
    // One bit per (sender, seq): a delivery counts once, a repeat is a dup.
    let mut seen = vec![0u64; (shared.senders * shared.messages).div_ceil(64)];
    let mut heard_someone = false;
    // Read the phase now, not only on change: it may have moved on while
    // the call was opening.
    let mut now_phase = *phase.borrow_and_update();
    let mut replay = None;
    loop {
        match now_phase {
            Phase::Stop => return,
            Phase::Stall if spec.stalls => {
                stats.stall_end = stall(source, phase, shared).await;
                return;
            }
            Phase::Read | Phase::Stall => {}
        }
        let next = tokio::select! {
            next = source.next(&mut replay) => next,
            changed = phase.changed() => {
                now_phase = if changed.is_ok() { *phase.borrow_and_update() } else { Phase::Stop };
                continue;
            }
        };
        let text = match next {
            Ok(Some(Received::Text(text))) => text,
            Ok(Some(Received::Event)) => {
                stats.events += 1;
                continue;
            }
            Ok(Some(Received::Replayed)) => {
                stats.replayed += 1;
                continue;
            }
            Ok(None) => {
                stats.error = Some("the server ended the call (OK)".into());
                shared.failed.fetch_add(1, Relaxed);
                return;
            }
            Err(status) => {
                stats.error = Some(status.to_string());
                shared.failed.fetch_add(1, Relaxed);
                return;
            }
        };
        let now = shared.now_ns();
        shared.received_any.fetch_add(1, Relaxed);
        let Some(marker) = marker::parse(&text) else {
            stats.foreign += 1;
            continue;
        };
        if marker.from() == spec.id {
            if matches!(marker, Marker::Data { .. }) {
                stats.echoes += 1;
                shared.echoes.fetch_add(1, Relaxed);
            }
            continue;
        }
        if !heard_someone {
            heard_someone = true;
            shared.ready.fetch_add(1, Relaxed);
        }
        let Marker::Data {
            sender,
            seq,
            sent_ns,
        } = marker
        else {
            continue;
        };
        if sender >= shared.senders || seq >= shared.messages {
            // Marked, but not by this run (another chat-bench in the room).
            stats.foreign += 1;
            continue;
        }
        let bit = sender * shared.messages + seq;
        let (word, mask) = (bit / 64, 1u64 << (bit % 64));
        if seen[word] & mask != 0 {
            stats.dups += 1;
            continue;
        }
        seen[word] |= mask;
        shared.delivered.fetch_add(1, Relaxed);
        shared.last_delivery_ns.fetch_max(now, Relaxed);
        shared.record_latency(
            spec.id,
            spec.room,
            spec.server,
            bit,
            now.saturating_sub(sent_ns),
        );
    }
}

/// A stalled member: stops reading, but keeps its call (and connection) open
/// until [`Phase::Stop`], so HTTP/2 flow control fills up and the server's
/// sends to it block. Then says how the server ended the call meanwhile, if
/// it did (a server may rightly disconnect a member that does not read).
///
/// Messages the member's HTTP/2 connection had already buffered come before
/// the end of a call, so they are read first: the call counts as still open
/// if nothing arrives for 200 ms, or if messages still flow after 1 s.
async fn stall(
    source: &mut Source,
    phase: &mut watch::Receiver<Phase>,
    shared: &Shared,
) -> Option<String> {
    shared.stalled.fetch_add(1, Relaxed);
    let _ = phase.wait_for(|p| *p == Phase::Stop).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        let mut replay = Some(0);
        match tokio::time::timeout(Duration::from_millis(200), source.next(&mut replay)).await {
            Ok(Ok(Some(_))) if tokio::time::Instant::now() < deadline => {}
            Ok(Ok(None)) => return Some("end of call (OK)".into()),
            Ok(Err(status)) => return Some(status.to_string()),
            Ok(Ok(Some(_))) | Err(_) => return None,
        }
    }
}
