//! The connection to the server: one task that dials, joins the room with
//! `USER_JOINED`, passes events both ways, and reconnects with backoff when
//! the connection breaks. The user interface talks to it through two
//! channels and never sees a socket or a `Status`.
//!
//! ```text
//!   UI ── Outgoing (message, typing, /who, /rooms, /join, leave) ──▶ session task ──▶ server
//!   UI ◀── Update (events, connected, switched, disconnected) ──── session task ◀── server
//! ```
//!
//! States of the task:
//!
//! ```text
//!            ok                        stream error / end
//! Dialling ─────▶ Joined ───────────────────────────────▶ Waiting(backoff) ──▶ Dialling
//!    │ refused       │ Leave: USER_LEFT, half-close,            │ Leave
//!    ▼               ▼ wait for the server's end                ▼
//! Waiting         Done                                         Done
//!    (at startup, after `startup_attempts` failures: GaveUp)
//! ```
//!
//! A call is "joined" only once the server's first event arrives: a name in
//! use or a bad room is reported as the call's status, after the `USER_JOINED`
//! was sent. A refusal, or a failure that shows the client is set up
//! differently from the server ([`Mismatch`]: TLS on one side only, no
//! token), ends the session at once with [`explain`]'s words: retrying
//! would change nothing.
//!
//! Messages asked for while not joined (dialling, waiting out a backoff, or
//! one whose send failed as the connection broke) are **held** and sent in
//! the order they were asked for as soon as the next call is joined, before
//! anything asked later. They are dropped, each reported
//! [`Update::NotSent`], only when the user leaves first.
//!
//! Leaving comes in two kinds: [`Outgoing::Leave`] goes at once;
//! [`Outgoing::Finish`] (a script's end of input) first waits, bounded by
//! [`FINISH_TIMEOUT`], for the server to echo every message sent on the call
//! ([`Echoes`]), so that what the server sent for them is passed on.
//!
//! Every reconnection **resumes**: the call carries `chat-last-id` (the last
//! chat message id seen) and `chat-epoch` (the history epoch it belongs to),
//! so the server replays exactly what was missed (see
//! [`crate::chat::history`]). The epoch is learnt from the `SystemEvent`s
//! that carry one.
//!
//! # Changing rooms
//!
//! [`Outgoing::Join`] moves the session to another room on the same
//! connection (`switch`). The new room's call is opened **first**: a room
//! the server refuses (a bad name, our name in use there) ends only that
//! call, reported [`Update::JoinFailed`], and the session stays where it
//! was. Once the new call is joined, the old room is left as on `/quit`
//! (`USER_LEFT`, half-close, what it still sends passed on), then
//! [`Update::Switched`] separates the two rooms' events. The resume point is
//! kept **per room** ([`Rooms`]): going back to a room resumes where we
//! left it rather than replaying its newest messages again.
//!
//! ```text
//!  joined in A ── Join(B) ──▶ open B ──refused──▶ JoinFailed, still in A
//!                                │ first event
//!                                ▼
//!                   leave A (USER_LEFT, half-close, drain)
//!                                ▼
//!                   Switched { B }, B's first event, … joined in B
//! ```
//!
//! A `/join` asked while not connected is held in order with the messages
//! (a script's `/join` usually comes before the server answers) and carried
//! out once joined.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tracing::debug;

use super::display::same_name;
use super::typing::Signal;
use crate::chat::history::{EPOCH_METADATA_KEY, LAST_ID_METADATA_KEY};
use crate::chat::{AUTHORIZATION_METADATA_KEY, DEFAULT_ROOM, ROOM_METADATA_KEY};
use crate::client::{Channel, RequestSink};
use crate::pb::chat::{
    ChatMessageEvent, ChatServiceClient, ClientEvent, RoomsRequest, RoomsResponse, ServerEvent,
    TypingEvent, TypingEventType, UserEvent, UserEventType, WhoRequest, WhoResponse, client_event,
    server_event,
};
use crate::rpc::Request;
use crate::{Code, Status};

/// Default for [`SessionConfig::backoff_min`].
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Default for [`SessionConfig::backoff_max`].
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Default for [`SessionConfig::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long leaving waits for the server to end the call, so the
/// `USER_LEFT` is on the wire before the process exits.
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long [`Outgoing::Finish`] waits for the server to echo the messages
/// sent on the call before leaving anyway (a message the server refused
/// never comes back).
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(3);
/// Events buffered between the connection and the session task. When the
/// UI falls this far behind, reading stops and HTTP/2 flow control pushes
/// back on the server.
const INBOUND_BUFFER: usize = 256;

/// Where and as whom to chat.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Server address, `host:port`.
    pub address: String,
    /// The user name sent with `USER_JOINED`.
    pub user: String,
    /// The room (`chat-room` metadata); `None` for the server's default.
    pub room: Option<String>,
    /// Connection attempts before giving up when the first connection cannot
    /// be made; `None` retries for ever. Once connected, reconnecting never
    /// gives up.
    pub startup_attempts: Option<u32>,
    /// The first reconnection delay; it doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// The longest reconnection delay.
    pub backoff_max: Duration,
    /// How long dialling plus joining may take.
    pub connect_timeout: Duration,
    /// TLS, server name, token, keepalive.
    pub transport: Transport,
}

/// How the client reaches the server and proves who it is.
#[derive(Clone)]
pub struct Transport {
    /// TLS settings; `None` for plaintext.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// The name the server's certificate must carry, if not the address's host.
    pub server_name: Option<String>,
    /// Sent as `authorization: Bearer <token>` (servers run with
    /// `--auth-tokens` require it).
    pub token: Option<String>,
    /// Keepalive PING interval and ACK timeout, so a dead server or path is
    /// noticed while nobody talks; `None` turns it off.
    pub keepalive: Option<(Duration, Duration)>,
    /// Traces every frame (`--trace-wire`); `None` for no trace.
    pub wire_trace: Option<crate::wire_trace::WireTrace>,
}

impl Default for Transport {
    fn default() -> Self {
        Transport {
            tls: None,
            server_name: None,
            token: None,
            keepalive: Some((
                crate::client::DEFAULT_KEEPALIVE_INTERVAL,
                crate::client::DEFAULT_KEEPALIVE_TIMEOUT,
            )),
            wire_trace: None,
        }
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: never in a log line.
        f.debug_struct("Transport")
            .field("tls", &self.tls.is_some())
            .field("server_name", &self.server_name)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("keepalive", &self.keepalive)
            .finish()
    }
}

impl SessionConfig {
    /// Defaults for everything but who and where.
    pub fn new(address: impl Into<String>, user: impl Into<String>, room: Option<String>) -> Self {
        SessionConfig {
            address: address.into(),
            user: user.into(),
            room,
            startup_attempts: None,
            backoff_min: DEFAULT_BACKOFF_MIN,
            backoff_max: DEFAULT_BACKOFF_MAX,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            transport: Transport::default(),
        }
    }
}

/// What the UI asks of the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// Send a chat message.
    Message(String),
    /// Send a typing event.
    Typing(Signal),
    /// Ask who is in the room; answered by [`Update::Who`].
    Who,
    /// Ask which rooms have members; answered by [`Update::Rooms`].
    Rooms,
    /// Move to this room (`/join`): answered by [`Update::Switched`] or
    /// [`Update::JoinFailed`]. While not connected it waits, in order with
    /// the messages, for the next call.
    Join(String),
    /// Leave now: `USER_LEFT`, half-close, then [`Update::Left`]. While
    /// not connected: stop trying, report held messages
    /// [`Update::NotSent`], then [`Update::Left`].
    Leave,
    /// Leave once everything sent so far is delivered and the server's
    /// echo of it has been passed on (the end of a script's input: the
    /// script sees its own lines). The wait for the echoes is bounded by
    /// [`FINISH_TIMEOUT`]. Before the first connection the session keeps
    /// trying, delivers, then leaves; if it never connects the session ends
    /// with [`Update::GaveUp`]. While reconnecting after a lost connection
    /// it is [`Outgoing::Leave`].
    Finish,
}

/// What the session tells the UI.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// Joined the room; `reconnected` after an earlier connection was lost.
    Connected {
        /// Whether this is a reconnection.
        reconnected: bool,
    },
    /// An event from the server.
    Event(ServerEvent),
    /// The answer to [`Outgoing::Who`].
    Who(Result<WhoResponse, String>),
    /// The answer to [`Outgoing::Rooms`].
    Rooms(Result<RoomsResponse, String>),
    /// Now in `room` after [`Outgoing::Join`]: the earlier room's call has
    /// ended; the events from here on are the new room's, starting with its
    /// replayed history.
    Switched {
        /// The room joined.
        room: String,
    },
    /// [`Outgoing::Join`] failed; the session is still in its room.
    JoinFailed {
        /// The room asked for.
        room: String,
        /// Why, for the user (the server's refusal, or "you are already
        /// there").
        reason: String,
    },
    /// Not connected; a new attempt follows. The notice says why and when.
    Disconnected {
        /// For the user, e.g. "connection lost, reconnecting in 2s".
        notice: String,
        /// Why, without the when: the same from one failed attempt to the
        /// next while nothing changes ("connection lost", "cannot connect
        /// to h:1: connection refused").
        reason: String,
        /// When the next attempt starts.
        retry_in: Duration,
    },
    /// A message was dropped unsent: the user left while not connected.
    NotSent(String),
    /// The session ended without the user asking: cannot connect, or the
    /// server refused us (name in use, invalid room...). Says why.
    GaveUp(String),
    /// The session ended after [`Outgoing::Leave`].
    Left,
}

/// Reconnection delays: `min`, doubling to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Delays from `min` doubling up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Back to `min` (after a successful connection).
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// "0.5s", "2s", "10s".
pub fn short_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

/// Why we are not connected.
#[derive(Debug, Clone)]
pub enum Cause {
    /// The call or connection ended while joined.
    Lost(Status),
    /// Dialling or joining failed.
    ConnectFailed(Status),
}

/// The notice shown while waiting to reconnect.
pub fn disconnect_notice(cause: &Cause, retry_in: Duration) -> String {
    let when = short_duration(retry_in);
    match cause {
        // Unavailable is the connection breaking or the server going away;
        // its message is transport detail the user cannot act on.
        Cause::Lost(status) if status.code() == Code::Unavailable => {
            format!("connection lost, reconnecting in {when}")
        }
        Cause::Lost(status) => {
            format!("disconnected: {}; reconnecting in {when}", reason(status))
        }
        Cause::ConnectFailed(status) => {
            format!("{}; retrying in {when}", reason(status))
        }
    }
}

/// Why we are not connected, without when the next attempt is: what stays
/// the same over failed attempts while nothing changes.
pub fn disconnect_reason(cause: &Cause) -> String {
    match cause {
        Cause::Lost(status) if status.code() == Code::Unavailable => "connection lost".to_owned(),
        Cause::Lost(status) => format!("disconnected: {}", reason(status)),
        Cause::ConnectFailed(status) => reason(status),
    }
}

/// A status as one short phrase for the user.
pub fn reason(status: &Status) -> String {
    if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        status.message().to_owned()
    }
}

/// A mismatch between how this client connects and what the server speaks,
/// recognised from the failure it causes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    /// We speak plaintext HTTP/2 to a TLS port: the server's TLS records
    /// read as an HTTP/2 frame header with an impossible length (a TLS
    /// alert `15 03 03 …` is a 1.3 MB frame), so h2 reports a frame size
    /// error before anything else.
    PlaintextToTls,
    /// We start TLS on a plaintext port: the server's HTTP/2 SETTINGS is
    /// not a TLS record.
    TlsToPlaintext,
    /// The server requires a token and we sent none.
    NoToken,
    /// The server refused the token we sent.
    BadToken,
}

/// Which [`Mismatch`], if any, explains a failure to join.
pub fn mismatch(status: &Status, transport: &Transport) -> Option<Mismatch> {
    let message = status.message();
    match (status.code(), &transport.tls, &transport.token) {
        (Code::Unauthenticated, _, None) => Some(Mismatch::NoToken),
        (Code::Unauthenticated, _, Some(_)) => Some(Mismatch::BadToken),
        (_, None, _) if message.contains("frame with invalid size") => {
            Some(Mismatch::PlaintextToTls)
        }
        (_, Some(_), _)
            if message.contains("TLS handshake") && message.contains("InvalidContentType") =>
        {
            Some(Mismatch::TlsToPlaintext)
        }
        _ => None,
    }
}

/// A failure to join as one phrase for the user: for a [`Mismatch`], its
/// likely cause and the flag that changes it; otherwise [`reason`].
pub fn explain(status: &Status, transport: &Transport) -> String {
    match mismatch(status, transport) {
        Some(Mismatch::PlaintextToTls) => format!(
            "the server does not answer in plaintext HTTP/2; it probably expects TLS: add --tls \
             (and --ca FILE for a private CA) ({})",
            reason(status)
        ),
        Some(Mismatch::TlsToPlaintext) => format!(
            "the server does not answer TLS; it probably speaks plaintext: leave out --tls ({})",
            reason(status)
        ),
        Some(Mismatch::NoToken) => "the server requires a token: give it with --token TOKEN \
             or in the CHAT_TOKEN environment variable"
            .to_owned(),
        Some(Mismatch::BadToken) => format!(
            "the server refused the token ({}): check --token or CHAT_TOKEN",
            reason(status)
        ),
        None => reason(status),
    }
}

/// Whether a failure to join should end the session rather than be retried:
/// the server understood us and said no.
fn is_refusal(status: &Status, reconnecting: bool) -> bool {
    match status.code() {
        Code::InvalidArgument
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::Unimplemented
        | Code::FailedPrecondition => true,
        // On a reconnection our old membership may not have been noticed as
        // gone yet: the name frees up shortly.
        Code::AlreadyExists => !reconnecting,
        _ => false,
    }
}

/// Starts the session task; returns its two channel ends.
pub fn start(
    config: SessionConfig,
) -> (
    mpsc::UnboundedSender<Outgoing>,
    mpsc::UnboundedReceiver<Update>,
) {
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (up_tx, up_rx) = mpsc::unbounded_channel();
    tokio::spawn(run(config, out_rx, up_tx));
    (out_tx, up_rx)
}

/// A joined call.
struct Joined {
    client: ChatServiceClient,
    sink: RequestSink<ClientEvent>,
    /// Events (and finally the end) read by `reader`.
    inbound: mpsc::Receiver<Result<ServerEvent, Status>>,
    reader: JoinHandle<()>,
}

impl Drop for Joined {
    fn drop(&mut self) {
        // Dropping the response stream in the reader cancels the call
        // (RST_STREAM) if it is still open.
        self.reader.abort();
    }
}

/// Something asked while not connected.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Asked {
    /// A message to send.
    Say(String),
    /// A room to move to.
    Join(String),
}

/// Requests made while not connected, carried out once joined, in the
/// order they were made, before anything asked later.
#[derive(Debug, Default)]
struct Held {
    /// Messages to send and rooms to move to, oldest first.
    asked: VecDeque<Asked>,
    /// Leave right after carrying them out ([`Outgoing::Finish`]).
    finish: bool,
}

/// Where the session is, and where to resume in each room it has been in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rooms {
    /// The room joined, or to join (the `chat-room` of every call).
    current: String,
    /// Where to resume from in `current`.
    resume: Resume,
    /// Where to resume from in the rooms left earlier.
    earlier: HashMap<String, Resume>,
}

impl Rooms {
    /// Starting in `room` (the server's default when `None`), with nothing
    /// seen anywhere.
    pub fn new(room: Option<&str>) -> Self {
        Rooms {
            current: room_name(room.unwrap_or(DEFAULT_ROOM)),
            resume: Resume::default(),
            earlier: HashMap::new(),
        }
    }

    /// The room joined, or to join.
    pub fn current(&self) -> &str {
        &self.current
    }

    /// Where to resume from in the current room.
    pub fn resume(&self) -> &Resume {
        &self.resume
    }

    /// Where to resume from in `room` if we move there: where we left it,
    /// or nothing (a first visit replays the room's newest messages).
    pub fn resume_in(&self, room: &str) -> Resume {
        self.earlier.get(room).cloned().unwrap_or_default()
    }

    /// Now in `room`, resuming from `resume` there; the room we leave
    /// keeps its resume point for a later return.
    pub fn enter(&mut self, room: String, resume: Resume) {
        let left = std::mem::replace(&mut self.current, room);
        let seen = std::mem::replace(&mut self.resume, resume);
        self.earlier.remove(&self.current);
        self.earlier.insert(left, seen);
    }
}

/// A room name as the server will take it: trimmed, and without the `#`
/// an IRC user types in front (`/join #tea` is `tea`).
pub fn room_name(asked: &str) -> String {
    let name = asked.trim();
    name.strip_prefix('#').unwrap_or(name).trim().to_owned()
}

/// Our own messages on the current call that the server has not echoed
/// back yet, so that [`Outgoing::Finish`] leaves only once they are shown.
///
/// The server sends every message of a room to every member, the sender
/// included; that copy is the only sign that it was accepted and the only
/// way its id and time reach us. Messages from our own name that arrive in
/// the replayed history (before `end_of_history`) are older ones, not
/// echoes: someone of the same name sent them earlier.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Echoes {
    /// Messages sent and not yet seen back.
    awaiting: usize,
    /// The replay is over: our own messages from now on are echoes.
    live: bool,
}

impl Echoes {
    /// A new call: nothing sent on it, the replay ahead.
    pub fn new() -> Self {
        Self::default()
    }

    /// We sent a message.
    pub fn sent(&mut self) {
        self.awaiting += 1;
    }

    /// Takes note of an event from the server, for user `me`.
    pub fn observe(&mut self, event: &ServerEvent, me: &str) {
        match &event.event {
            Some(server_event::Event::SystemEvent(s)) if s.end_of_history => self.live = true,
            Some(server_event::Event::ChatMessage(m))
                if self.live && same_name(&m.username, me) =>
            {
                self.awaiting = self.awaiting.saturating_sub(1);
            }
            _ => {}
        }
    }

    /// Whether every message sent has come back.
    pub fn settled(&self) -> bool {
        self.awaiting == 0
    }
}

/// How a joined call ended.
enum Ended {
    Left,
    Lost(Status),
}

/// The session task.
async fn run(
    config: SessionConfig,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    updates: mpsc::UnboundedSender<Update>,
) {
    let mut backoff = Backoff::new(config.backoff_min, config.backoff_max);
    let mut ever_joined = false;
    let mut failed_attempts = 0u32;
    // Which room, and where to resume from on the next connection.
    let mut rooms = Rooms::new(config.room.as_deref());
    // What was asked while not connected: done once joined (a script's
    // input usually arrives before the server answers; a person types on
    // while the connection is down).
    let mut held = Held::default();
    loop {
        let cause = match join(&config, &rooms.current, &mut rooms.resume).await {
            Ok((mut joined, first)) => {
                backoff.reset();
                failed_attempts = 0;
                let _ = updates.send(Update::Connected {
                    reconnected: ever_joined,
                });
                ever_joined = true;
                let mut call = Call {
                    rooms: &mut rooms,
                    echoes: Echoes::new(),
                    finish_by: None,
                };
                call.forward(first, &config.user, &updates);
                match send_held(&config, &mut joined, &mut held, &mut call, &updates).await {
                    Err(status) => Cause::Lost(status),
                    Ok(()) => {
                        call.finish_by = held
                            .finish
                            .then(|| tokio::time::Instant::now() + FINISH_TIMEOUT);
                        match serve(
                            &config,
                            &mut joined,
                            &mut outgoing,
                            &updates,
                            call,
                            &mut held,
                        )
                        .await
                        {
                            Ended::Left => {
                                let _ = updates.send(Update::Left);
                                return;
                            }
                            Ended::Lost(status) => Cause::Lost(status),
                        }
                    }
                }
            }
            Err(status)
                if is_refusal(&status, ever_joined)
                    || mismatch(&status, &config.transport).is_some() =>
            {
                // Trying again changes nothing: say what to change.
                let _ = updates.send(Update::GaveUp(explain(&status, &config.transport)));
                return;
            }
            Err(status) => {
                failed_attempts += 1;
                if !ever_joined
                    && config
                        .startup_attempts
                        .is_some_and(|most| failed_attempts >= most)
                {
                    let _ = updates.send(Update::GaveUp(explain(&status, &config.transport)));
                    return;
                }
                Cause::ConnectFailed(status)
            }
        };
        let delay = backoff.next_delay();
        debug!(?cause, ?delay, "not connected");
        let _ = updates.send(Update::Disconnected {
            notice: disconnect_notice(&cause, delay),
            reason: disconnect_reason(&cause),
            retry_in: delay,
        });
        if wait(delay, &mut outgoing, &updates, &mut held, ever_joined)
            .await
            .is_break()
        {
            // Leaving while messages wait: say which were dropped.
            for asked in held.asked.drain(..) {
                if let Asked::Say(text) = asked {
                    let _ = updates.send(Update::NotSent(text));
                }
            }
            let _ = updates.send(Update::Left);
            return;
        }
    }
}

/// Carries out what was held, in order, on a new call: sends the messages
/// and moves rooms. On a failed send the unsent ones (the failed one first)
/// stay held for the next call.
async fn send_held(
    config: &SessionConfig,
    joined: &mut Joined,
    held: &mut Held,
    call: &mut Call<'_>,
    updates: &mpsc::UnboundedSender<Update>,
) -> Result<(), Status> {
    while let Some(asked) = held.asked.pop_front() {
        match asked {
            Asked::Say(text) => {
                if let Err((status, text)) = say(joined, text).await {
                    held.asked.push_front(Asked::Say(text));
                    return Err(status);
                }
                call.echoes.sent();
            }
            Asked::Join(room) => switch(config, joined, call, &room, updates).await,
        }
    }
    Ok(())
}

/// Sends a chat message on the call; gives the text back if that fails.
async fn say(joined: &mut Joined, text: String) -> Result<(), (Status, String)> {
    let message = event(client_event::Event::ChatMessage(ChatMessageEvent {
        message: text,
        ..Default::default()
    }));
    match joined.sink.send(&message).await {
        Ok(()) => Ok(()),
        Err(status) => match message.event {
            Some(client_event::Event::ChatMessage(m)) => Err((status, m.message)),
            _ => Err((status, String::new())),
        },
    }
}

/// Waits out a backoff delay, answering the UI meanwhile: messages and
/// `/join`s go to `held`, carried out in order once joined.
/// [`Outgoing::Finish`] before the first connection is held too (a
/// script's input can end before the server is reached); after it, a
/// finish leaves at once (then the held messages are reported
/// [`Update::NotSent`]). `Break` when the user left.
async fn wait(
    delay: Duration,
    outgoing: &mut mpsc::UnboundedReceiver<Outgoing>,
    updates: &mpsc::UnboundedSender<Update>,
    held: &mut Held,
    ever_joined: bool,
) -> std::ops::ControlFlow<()> {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            () = &mut sleep => return std::ops::ControlFlow::Continue(()),
            out = outgoing.recv() => match out {
                None | Some(Outgoing::Leave) => return std::ops::ControlFlow::Break(()),
                Some(Outgoing::Finish) if ever_joined => {
                    return std::ops::ControlFlow::Break(());
                }
                Some(Outgoing::Finish) => held.finish = true,
                Some(Outgoing::Message(text)) => held.asked.push_back(Asked::Say(text)),
                Some(Outgoing::Join(room)) => held.asked.push_back(Asked::Join(room)),
                Some(Outgoing::Who) => {
                    let _ = updates.send(Update::Who(Err("not connected".to_owned())));
                }
                Some(Outgoing::Rooms) => {
                    let _ = updates.send(Update::Rooms(Err("not connected".to_owned())));
                }
                // Typing means nothing to a room we are not in.
                Some(Outgoing::Typing(_)) => {}
            },
        }
    }
}

fn event(event: client_event::Event) -> ClientEvent {
    ClientEvent { event: Some(event) }
}

fn user_event(kind: UserEventType, user: &str) -> ClientEvent {
    event(client_event::Event::UserEvent(UserEvent {
        r#type: kind.into(),
        username: user.to_owned(),
        timestamp: 0,
    }))
}

/// What the session knows to resume from: the last chat message id seen
/// and the history epoch it belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resume {
    /// The id of the last chat message seen.
    pub last_id: Option<u64>,
    /// The history epoch of that id.
    pub epoch: Option<String>,
    /// The highest id seen on the current call.
    call_max: Option<u64>,
}

impl Resume {
    /// A new call begins.
    pub fn new_call(&mut self) {
        self.call_max = None;
    }

    /// Takes note of an event from the server.
    pub fn observe(&mut self, event: &ServerEvent) {
        match &event.event {
            Some(server_event::Event::ChatMessage(m)) if m.id > 0 => {
                self.call_max = Some(self.call_max.map_or(m.id, |max| max.max(m.id)));
                self.last_id = Some(self.last_id.map_or(m.id, |last| last.max(m.id)));
            }
            Some(server_event::Event::SystemEvent(s))
                if !s.epoch.is_empty() && self.epoch.as_deref() != Some(s.epoch.as_str()) =>
            {
                // The end of a replay in another epoch than ours: what we
                // had is gone, and the ids seen on this call (the replay)
                // are all that count. A change announced while connected
                // keeps ids increasing, so the last id stands.
                if s.end_of_history {
                    self.last_id = self.call_max;
                }
                self.epoch = Some(s.epoch.clone());
            }
            _ => {}
        }
    }
}

/// A request carrying the token, if there is one.
fn authorized<T>(message: T, transport: &Transport) -> Result<Request<T>, Status> {
    let mut request = Request::new(message);
    if let Some(token) = &transport.token {
        request
            .metadata_mut()
            .insert(AUTHORIZATION_METADATA_KEY, &format!("Bearer {token}"))
            .map_err(|_| {
                Status::invalid_argument("the token must be printable ASCII without spaces")
            })?;
    }
    Ok(request)
}

/// Dials the server.
async fn dial(config: &SessionConfig) -> Result<ChatServiceClient, Status> {
    let mut builder = Channel::builder(config.address.clone());
    builder.connect_timeout(config.connect_timeout);
    let transport = &config.transport;
    if let Some((interval, timeout)) = transport.keepalive {
        builder.keepalive(interval, timeout);
    }
    if let Some(tls) = &transport.tls {
        builder.tls(std::sync::Arc::clone(tls));
    }
    if let Some(name) = &transport.server_name {
        builder.server_name(name.clone());
    }
    if let Some(trace) = &transport.wire_trace {
        builder.wire_trace(trace.clone());
    }
    Ok(ChatServiceClient::new(builder.connect().await?))
}

/// Opens `Chat` in `room` on a connection (resuming from `resume`), sends
/// `USER_JOINED` and waits for the first event.
async fn open(
    config: &SessionConfig,
    client: ChatServiceClient,
    room: &str,
    resume: &mut Resume,
) -> Result<(Joined, ServerEvent), Status> {
    resume.new_call();
    let mut request = authorized((), &config.transport)?;
    request
        .metadata_mut()
        .insert(ROOM_METADATA_KEY, room)
        .map_err(|_| {
            // gRPC's ASCII metadata: printable ASCII, 0x20-0x7E.
            Status::invalid_argument(format!(
                "room name {room:?} cannot be sent: the chat-room metadata takes printable \
                 ASCII only"
            ))
        })?;
    if let Some(id) = resume.last_id {
        // Digits and the server's own epoch: valid header values; a
        // failure would only mean a fresh join.
        let _ = request
            .metadata_mut()
            .insert(LAST_ID_METADATA_KEY, &id.to_string());
        if let Some(epoch) = &resume.epoch {
            let _ = request.metadata_mut().insert(EPOCH_METADATA_KEY, epoch);
        }
    }
    let (mut sink, mut stream) = client.chat(request).await?.split();
    // If the server refuses the call it may end it before reading: the
    // send then fails, and the reason is the response's status.
    let sent = sink
        .send(&user_event(UserEventType::UserJoined, &config.user))
        .await;
    let first = match stream.message().await {
        Ok(Some(first)) => first,
        Ok(None) => return Err(Status::unavailable("the server ended the call at once")),
        Err(status) => return Err(status),
    };
    sent?;
    let (tx, inbound) = mpsc::channel(INBOUND_BUFFER);
    let reader = tokio::spawn(async move {
        loop {
            let item = match stream.message().await {
                Ok(Some(event)) => Ok(event),
                Ok(None) => Err(Status::unavailable("the server ended the chat")),
                Err(status) => Err(status),
            };
            let end = item.is_err();
            if tx.send(item).await.is_err() || end {
                return;
            }
        }
    });
    Ok((
        Joined {
            client,
            sink,
            inbound,
            reader,
        },
        first,
    ))
}

/// Dials, then [`open`]s the chat in `room`, within the connect timeout.
async fn join(
    config: &SessionConfig,
    room: &str,
    resume: &mut Resume,
) -> Result<(Joined, ServerEvent), Status> {
    let attempt = async { open(config, dial(config).await?, room, resume).await };
    timeout(config.connect_timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(Status::unavailable(format!(
                "timed out joining at {}",
                config.address
            )))
        })
}

/// What [`serve`] keeps track of on one call.
struct Call<'a> {
    /// Which room, and where to resume from, across calls.
    rooms: &'a mut Rooms,
    /// Our messages not echoed yet.
    echoes: Echoes,
    /// Set by [`Outgoing::Finish`]: leave once `echoes` settles, or at this
    /// time.
    finish_by: Option<tokio::time::Instant>,
}

impl Call<'_> {
    /// Passes a server event on, remembering where to resume from and
    /// which of our messages came back.
    fn forward(&mut self, event: ServerEvent, me: &str, updates: &mpsc::UnboundedSender<Update>) {
        self.rooms.resume.observe(&event);
        self.echoes.observe(&event, me);
        let _ = updates.send(Update::Event(event));
    }

    /// Whether a finish was asked for and nothing is left to wait for.
    fn finished(&self) -> bool {
        self.finish_by.is_some() && self.echoes.settled()
    }
}

/// A `/who` or `/rooms` answer for the user: the response, or why not.
async fn answer<Q, A>(
    request: Result<Request<Q>, Status>,
    call: impl AsyncFnOnce(Request<Q>) -> Result<crate::rpc::Response<A>, Status>,
) -> Result<A, String> {
    let request = request.map_err(|status| reason(&status))?;
    match timeout(DEFAULT_CONNECT_TIMEOUT, call(request)).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => Err(reason(&status)),
        Err(_) => Err("timed out".to_owned()),
    }
}

/// Runs a joined call until it breaks or the user leaves. A message that
/// cannot be sent goes to `held`, for the next call.
async fn serve(
    config: &SessionConfig,
    joined: &mut Joined,
    outgoing: &mut mpsc::UnboundedReceiver<Outgoing>,
    updates: &mpsc::UnboundedSender<Update>,
    mut call: Call<'_>,
    held: &mut Held,
) -> Ended {
    loop {
        if call.finished() {
            leave(config, joined, updates, &mut call.rooms.resume).await;
            return Ended::Left;
        }
        // Only polled while finishing (the `if` below).
        let finish_by = call.finish_by.unwrap_or_else(tokio::time::Instant::now);
        tokio::select! {
            item = joined.inbound.recv() => match item {
                Some(Ok(event)) => call.forward(event, &config.user, updates),
                Some(Err(status)) => return Ended::Lost(status),
                None => return Ended::Lost(Status::unavailable("connection lost")),
            },
            () = tokio::time::sleep_until(finish_by), if call.finish_by.is_some() => {
                debug!("leaving without every echo");
                leave(config, joined, updates, &mut call.rooms.resume).await;
                return Ended::Left;
            }
            out = outgoing.recv() => match out {
                None | Some(Outgoing::Leave) => {
                    leave(config, joined, updates, &mut call.rooms.resume).await;
                    return Ended::Left;
                }
                Some(Outgoing::Finish) => {
                    call.finish_by
                        .get_or_insert_with(|| tokio::time::Instant::now() + FINISH_TIMEOUT);
                }
                // On tasks of their own: a slow answer holds up no event.
                Some(Outgoing::Who) => {
                    let request = authorized(
                        WhoRequest { room: call.rooms.current().to_owned() },
                        &config.transport,
                    );
                    let (client, updates) = (joined.client.clone(), updates.clone());
                    tokio::spawn(async move {
                        let who = answer(request, async |r| client.who(r).await).await;
                        let _ = updates.send(Update::Who(who));
                    });
                }
                Some(Outgoing::Rooms) => {
                    let request = authorized(RoomsRequest {}, &config.transport);
                    let (client, updates) = (joined.client.clone(), updates.clone());
                    tokio::spawn(async move {
                        let rooms = answer(request, async |r| client.rooms(r).await).await;
                        let _ = updates.send(Update::Rooms(rooms));
                    });
                }
                Some(Outgoing::Join(room)) => {
                    switch(config, joined, &mut call, &room, updates).await;
                }
                Some(Outgoing::Message(text)) => {
                    if let Err((status, text)) = say(joined, text).await {
                        held.asked.push_back(Asked::Say(text));
                        return Ended::Lost(status);
                    }
                    call.echoes.sent();
                }
                Some(Outgoing::Typing(signal)) => {
                    let kind = match signal {
                        Signal::Start => TypingEventType::TypingStart,
                        Signal::Stop => TypingEventType::TypingStop,
                    };
                    let typing = event(client_event::Event::TypingEvent(TypingEvent {
                        r#type: kind.into(),
                        ..Default::default()
                    }));
                    if let Err(status) = joined.sink.send(&typing).await {
                        return Ended::Lost(status);
                    }
                }
            },
        }
    }
}

/// Moves the session to room `to` on the same connection (see [Changing
/// rooms](self#changing-rooms)): the new call is opened first, so that a
/// refusal leaves the session where it was ([`Update::JoinFailed`]); then
/// the old room is left as on `/quit`, and [`Update::Switched`] comes
/// before the new room's first event. Resumes in `to` from where we last
/// were there.
async fn switch(
    config: &SessionConfig,
    joined: &mut Joined,
    call: &mut Call<'_>,
    to: &str,
    updates: &mpsc::UnboundedSender<Update>,
) {
    let to = room_name(to);
    if to == call.rooms.current() {
        let _ = updates.send(Update::JoinFailed {
            room: to,
            reason: "you are already there".to_owned(),
        });
        return;
    }
    let mut resume = call.rooms.resume_in(&to);
    let opened = timeout(
        config.connect_timeout,
        open(config, joined.client.clone(), &to, &mut resume),
    )
    .await
    .unwrap_or_else(|_| Err(Status::unavailable("timed out")));
    let (new, first) = match opened {
        Ok(opened) => opened,
        Err(status) => {
            // A connection that broke meanwhile is noticed by the old
            // call's reader, and reconnects as usual.
            let _ = updates.send(Update::JoinFailed {
                room: to,
                reason: explain(&status, &config.transport),
            });
            return;
        }
    };
    // What the old room still sends (the echo of a message just sent, the
    // leave itself) is passed on before the switch.
    leave(config, joined, updates, &mut call.rooms.resume).await;
    // Dropping the old call cancels it if the server has not ended it yet.
    *joined = new;
    call.rooms.enter(to.clone(), resume);
    call.echoes = Echoes::new();
    let _ = updates.send(Update::Switched { room: to });
    call.forward(first, &config.user, updates);
}

/// Sends `USER_LEFT`, half-closes, and waits (briefly) for the server to end
/// the call, so the leave is delivered before the process exits. What the
/// server sends meanwhile is still passed on, and counts toward `resume`.
async fn leave(
    config: &SessionConfig,
    joined: &mut Joined,
    updates: &mpsc::UnboundedSender<Update>,
    resume: &mut Resume,
) {
    let _ = joined
        .sink
        .send(&user_event(UserEventType::UserLeft, &config.user))
        .await;
    let _ = joined.sink.close();
    let _ = timeout(LEAVE_TIMEOUT, async {
        while let Some(Ok(event)) = joined.inbound.recv().await {
            resume.observe(&event);
            let _ = updates.send(Update::Event(event));
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        let delays: Vec<u128> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(
            delays,
            [500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]
        );
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(500));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(short_duration(Duration::from_millis(500)), "0.5s");
        assert_eq!(short_duration(Duration::from_secs(2)), "2s");
        assert_eq!(short_duration(Duration::from_secs(10)), "10s");
        assert_eq!(short_duration(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn notices() {
        let lost = Cause::Lost(Status::unavailable("connection lost: broken pipe"));
        assert_eq!(
            disconnect_notice(&lost, Duration::from_secs(2)),
            "connection lost, reconnecting in 2s"
        );
        let kicked = Cause::Lost(Status::resource_exhausted("too slow"));
        assert_eq!(
            disconnect_notice(&kicked, Duration::from_millis(500)),
            "disconnected: too slow; reconnecting in 0.5s"
        );
        let refused = Cause::ConnectFailed(Status::unavailable("cannot connect to h:1: refused"));
        assert_eq!(
            disconnect_notice(&refused, Duration::from_secs(4)),
            "cannot connect to h:1: refused; retrying in 4s"
        );
    }

    fn message(id: u64) -> ServerEvent {
        ServerEvent {
            event: Some(server_event::Event::ChatMessage(ChatMessageEvent {
                id,
                ..Default::default()
            })),
        }
    }

    fn epoch(epoch: &str, end_of_history: bool) -> ServerEvent {
        ServerEvent {
            event: Some(server_event::Event::SystemEvent(
                crate::pb::chat::SystemEvent {
                    epoch: epoch.into(),
                    end_of_history,
                    ..Default::default()
                },
            )),
        }
    }

    #[test]
    fn resume_follows_ids_and_epochs() {
        let mut r = Resume::default();
        r.new_call();
        for e in [message(3), message(4), epoch("a", true), message(5)] {
            r.observe(&e);
        }
        assert_eq!((r.last_id, r.epoch.as_deref()), (Some(5), Some("a")));
        // Reconnected to a server whose history was lost: the replay of
        // the new epoch starts low again, and replaces what we had.
        r.new_call();
        for e in [message(1), message(2), epoch("b", true)] {
            r.observe(&e);
        }
        assert_eq!((r.last_id, r.epoch.as_deref()), (Some(2), Some("b")));
        // Same epoch: a plain resume.
        r.new_call();
        for e in [message(3), epoch("b", true), message(4)] {
            r.observe(&e);
        }
        assert_eq!((r.last_id, r.epoch.as_deref()), (Some(4), Some("b")));
        // Announced while connected: ids keep increasing.
        r.observe(&epoch("c", false));
        assert_eq!((r.last_id, r.epoch.as_deref()), (Some(4), Some("c")));
        // Nothing replayed in a new epoch: nothing to resume from.
        r.new_call();
        r.observe(&epoch("d", true));
        assert_eq!((r.last_id, r.epoch.as_deref()), (None, Some("d")));
    }

    fn said(user: &str) -> ServerEvent {
        ServerEvent {
            event: Some(server_event::Event::ChatMessage(ChatMessageEvent {
                username: user.into(),
                id: 7,
                ..Default::default()
            })),
        }
    }

    #[test]
    fn echoes_count_only_live_messages_of_our_name() {
        let mut e = Echoes::new();
        assert!(e.settled(), "nothing sent");
        e.sent();
        e.sent();
        // The replay: our name's older messages are not echoes.
        e.observe(&said("bot"), "bot");
        assert!(!e.settled());
        e.observe(&epoch("a", true), "bot");
        e.observe(&said("alice"), "bot");
        e.observe(&said("BOT"), "bot");
        assert!(!e.settled(), "one of two back");
        e.observe(&said("bot"), "bot");
        assert!(e.settled());
        e.observe(&said("bot"), "bot");
        assert!(e.settled(), "more echoes than sent never go negative");
    }

    #[test]
    fn mismatches_name_the_flag_to_change() {
        let plain = Transport::default();
        let with_token = Transport {
            token: Some("t".into()),
            ..Transport::default()
        };
        let frame = Status::unavailable(
            "this client's HTTP/2 layer (h2) detected a protocol violation by the server and \
             sent GOAWAY FRAME_SIZE_ERROR (h2: connection error detected: frame with invalid size)",
        );
        assert_eq!(mismatch(&frame, &plain), Some(Mismatch::PlaintextToTls));
        assert!(explain(&frame, &plain).contains("add --tls"));
        let who = Status::unauthenticated("this server requires a token");
        assert_eq!(mismatch(&who, &plain), Some(Mismatch::NoToken));
        assert!(explain(&who, &plain).contains("--token TOKEN"));
        assert_eq!(mismatch(&who, &with_token), Some(Mismatch::BadToken));
        assert_eq!(mismatch(&Status::unavailable("refused"), &plain), None);
        assert_eq!(explain(&Status::unavailable("refused"), &plain), "refused");
    }

    #[test]
    fn each_room_keeps_its_resume_point() {
        let mut rooms = Rooms::new(Some(" #tea "));
        assert_eq!(rooms.current(), "tea");
        rooms.resume.new_call();
        rooms.resume.observe(&message(7));
        // First visit to kitchen: nothing to resume from.
        let kitchen = rooms.resume_in("kitchen");
        assert_eq!(kitchen, Resume::default());
        rooms.enter("kitchen".into(), kitchen);
        rooms.resume.new_call();
        rooms.resume.observe(&message(3));
        // Back to tea: from message 7, where we left it.
        let tea = rooms.resume_in("tea");
        assert_eq!(tea.last_id, Some(7));
        rooms.enter("tea".into(), tea);
        assert_eq!((rooms.current(), rooms.resume().last_id), ("tea", Some(7)));
        assert_eq!(rooms.resume_in("kitchen").last_id, Some(3));
        assert!(
            !rooms.earlier.contains_key("tea"),
            "the current room is not 'earlier'"
        );
        assert_eq!(Rooms::new(None).current(), DEFAULT_ROOM);
        assert_eq!(room_name("  # x y "), "x y");
    }

    #[test]
    fn refusals() {
        assert!(is_refusal(&Status::invalid_argument("bad name"), false));
        assert!(is_refusal(&Status::already_exists("taken"), false));
        assert!(!is_refusal(&Status::already_exists("taken"), true));
        assert!(!is_refusal(&Status::unavailable("down"), false));
        assert!(!is_refusal(&Status::resource_exhausted("full"), true));
    }
}
