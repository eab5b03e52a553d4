//! The chat domain: rooms, members, identity, validation, rate limits and
//! the fan-out of messages. It speaks both original chat protocols of
//! `proto/chat.proto` (`ChatStream` and `Chat`) and lets their members talk
//! to each other in the same room.
//!
//! This module knows gRPC only through the crate's own types (`Request`,
//! `Streaming`, `ResponseSink`, `Status`), and only in [`calls`] and
//! [`service`]; it never touches `h2` or `http`.
//!
//! # Layout
//!
//! * [`core`] — the chat with no protocol in it: rooms, their logs, members
//!   and the rules they speak under (a participant's lifecycle), the
//!   replay rule. Start here.
//! * [`calls`] — the protocol adapters (`ChatStream`, `Chat`, the browser's
//!   session calls) and the one pipeline every member goes through.
//! * [`service`] — `chat.ChatService`: each call to its adapter; `Who`,
//!   `HealthCheck`.
//! * [`history`] — the history store (in memory, or Redis shared by several
//!   servers), who numbers a room's batches, the resume contract.
//! * [`auth`] — bearer tokens that name their user (optional).
//! * [`validate`] — names and messages: lengths, no control characters.
//! * [`ratelimit`] — the per-member token bucket.
//!
//! `core`, `validate` and `ratelimit` know nothing of gRPC; `calls`,
//! `service` and `auth` are where the crate's gRPC types come in (never
//! `h2` or `http`).
//!
//! # Behaviour worth knowing
//!
//! * A member's name is bound once (by the first `ChatStream` message, or by
//!   the `USER_JOINED` event of `Chat`). A later `ChatStream` message that
//!   claims another `user` is **delivered under the bound name** (the claim
//!   is ignored and logged), so nobody can speak as someone else.
//! * Clients choose a room with the `chat-room` request metadata; without it
//!   they land in [`DEFAULT_ROOM`].
//! * With tokens ([`ChatService::with_tokens`]) the name comes from the
//!   token: a call without a valid one ends with `UNAUTHENTICATED`, and one
//!   that asks for a different name than its token's with
//!   `PERMISSION_DENIED` (an empty name takes the token's).
//!
//! # The resume contract
//!
//! (The full text is in [`history`]; other code builds on it, so it changes
//! only with care.)
//!
//! * Message ids: the server-assigned `ChatMessage.id` /
//!   `ChatMessageEvent.id` (field 4), increasing by one per message of a
//!   room.
//! * A room's history has an **epoch**, an opaque string that changes when
//!   the history was lost. The server tells it in the response header
//!   `chat-epoch` (both protocols) and in `SystemEvent.epoch` (field 3) of
//!   the `SystemEvent` that ends the replayed history (`end_of_history`,
//!   field 4) or announces an epoch change.
//! * A reconnecting client sends request metadata `chat-last-id: <id>` and
//!   `chat-epoch: <epoch>`; it receives every message after that id still in
//!   history, then live traffic — no gap, no duplicate — or a notice saying
//!   what could not be replayed.
//! * Without them, a joining client gets the newest `history_replay` (50)
//!   messages first; `ChatStream` clients learn how many from the response
//!   header `chat-replayed`.

pub mod auth;
pub mod calls;
pub mod core;
pub mod history;
pub mod ratelimit;
pub mod service;
pub mod validate;

use std::time::Duration;

pub use auth::{AUTHORIZATION_METADATA_KEY, TokenTable};
pub use core::{Hub, Presence};
pub use ratelimit::RateLimit;
pub use service::ChatService;
pub use validate::Limits;

/// The room of clients that do not choose one.
pub const DEFAULT_ROOM: &str = "lobby";
/// The request metadata key that chooses a room.
pub const ROOM_METADATA_KEY: &str = "chat-room";
/// Default for [`ChatConfig::max_queue_bytes`].
pub const DEFAULT_MAX_QUEUE_BYTES: usize = 8 * 1024 * 1024;
/// Default for [`ChatConfig::slow_grace`].
pub const DEFAULT_SLOW_GRACE: Duration = Duration::from_secs(5);
/// Default for [`ChatConfig::typing_timeout`].
pub const DEFAULT_TYPING_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for [`ChatConfig::max_members_per_room`].
pub const DEFAULT_MAX_MEMBERS_PER_ROOM: usize = 50_000;

/// Where a chat service built without a registry counts: nobody reads it.
static DISCARDED_METRICS: crate::metrics::Metrics = crate::metrics::Metrics::new();

/// Settings of the chat service.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// Where the service counts members, messages, refusals and evictions.
    /// Default: a private registry nobody reads; `chat-server` hands it
    /// the one `--metrics-addr` serves.
    pub metrics: &'static crate::metrics::Metrics,
    /// Bytes of encoded messages that may wait for one member before it is
    /// disconnected with `RESOURCE_EXHAUSTED`. Default
    /// [`DEFAULT_MAX_QUEUE_BYTES`]. Queued bytes are shared between members,
    /// so this bounds the memory a slow member can pin.
    pub max_queue_bytes: usize,
    /// How long a member's stream may stay blocked (its flow-control window
    /// closed) before it is disconnected with `RESOURCE_EXHAUSTED`. Default
    /// [`DEFAULT_SLOW_GRACE`].
    pub slow_grace: Duration,
    /// A typing indicator without a stop expires after this. Default
    /// [`DEFAULT_TYPING_TIMEOUT`].
    pub typing_timeout: Duration,
    /// Per-member message rate limit.
    pub rate_limit: RateLimit,
    /// Name and message length limits.
    pub limits: Limits,
    /// Members one room may hold. Default [`DEFAULT_MAX_MEMBERS_PER_ROOM`].
    pub max_members_per_room: usize,
    /// Messages replayed to a client joining without resume metadata.
    /// Default [`history::DEFAULT_REPLAY`].
    pub history_replay: usize,
    /// Messages kept per room by the embedded store, and the most a
    /// resuming client is sent. Default [`history::DEFAULT_HISTORY_LEN`].
    pub history_len: usize,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            metrics: &DISCARDED_METRICS,
            max_queue_bytes: DEFAULT_MAX_QUEUE_BYTES,
            slow_grace: DEFAULT_SLOW_GRACE,
            typing_timeout: DEFAULT_TYPING_TIMEOUT,
            rate_limit: RateLimit::default(),
            limits: Limits::default(),
            max_members_per_room: DEFAULT_MAX_MEMBERS_PER_ROOM,
            history_replay: history::DEFAULT_REPLAY,
            history_len: history::DEFAULT_HISTORY_LEN,
        }
    }
}
