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

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::timeout;
use tracing::debug;

use super::call::{Joined, answer, authorized, event, join, open, user_event};
use super::failure::is_refusal;
pub use super::failure::{
    Cause, Mismatch, disconnect_notice, disconnect_reason, explain, mismatch, reason,
    short_duration,
};
pub use super::resume::{Echoes, Resume, Rooms, room_name};
pub use super::session_config::{
    Backoff, DEFAULT_BACKOFF_MAX, DEFAULT_BACKOFF_MIN, DEFAULT_CONNECT_TIMEOUT, SessionConfig,
    Transport,
};
use super::typing::Signal;
use crate::Status;
use crate::pb::chat::{
    ChatMessageEvent, RoomsRequest, RoomsResponse, ServerEvent, TypingEvent, TypingEventType,
    UserEventType, WhoRequest, WhoResponse, client_event,
};

/// How long leaving waits for the server to end the call, so the
/// `USER_LEFT` is on the wire before the process exits.
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long [`Outgoing::Finish`] waits for the server to echo the messages
/// sent on the call before leaving anyway (a message the server refused
/// never comes back).
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(3);
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
