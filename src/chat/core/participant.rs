//! A participant: one member as the rules of the chat see it. It owns
//! everything about the member that is not the room's: its name binding,
//! its rate bucket, its typing indicator and when it expires, and the
//! notices it is owed. Every protocol's reader drives one, so the rules are
//! written once.
//!
//! # Lifecycle
//!
//! ```text
//!             Hub::join                      take_name                      drop
//!  (admitted) ─────────▶  Listening  ──────────────────────────▶  Named  ─────────▶  Left
//!                         reads the room,                          speaks; the room
//!                         says nothing                             heard "joined"
//!                            │                                     (`announce`, or the
//!                            └───────────────── drop ──────────┐    first batch)
//!                                                              ▼
//!                                                  Left (silently: nobody knew the name)
//! ```
//!
//! `Chat` and the browser's `Subscribe` name the member before its replay
//! (their first request carries the name) and announce it after; a
//! `ChatStream` member stays `Listening` until its first message names it
//! (`take_name`, then [`Turn::identify`]), and "joined" goes out in the same
//! batch as that message. Naming claims the name on every server sharing
//! the store (see [`crate::chat::history::roster`]). Leaving is
//! dropping: a `Named` participant's "left" (and, if it was typing, the end
//! of its indicator) is published then, whatever ended the call.

use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::info;

use super::error::{ChatError, Refusal};
use super::event::Event;
use super::hub::Membership;
use super::member::Member;
use crate::chat::ratelimit::TokenBucket;
use crate::chat::validate::{self, Limits};

/// Where a participant is in its life (see the module's diagram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// In the room, reading it, without a name.
    Listening,
    /// Has a name (kept by its [`Member`]) and may speak.
    Named,
    /// Gone.
    Left,
}

/// Which of a member's offences have been logged. A member is told about
/// every refused message (it is its own conversation), but the log gets one
/// line per member and kind of offence: a client flooding bad or excessive
/// messages must not be able to flood the server's log with them.
#[derive(Debug, Default)]
struct Logged {
    invalid: bool,
    rate_limited: bool,
    impersonation: bool,
}

/// What the participant's rules keep between turns.
#[derive(Debug)]
struct Speaker {
    stage: Stage,
    bucket: TokenBucket,
    /// When the typing indicator expires; `None`: not typing.
    typing_until: Option<Instant>,
    /// The room has been told the member joined.
    announced: bool,
    logged: Logged,
}

/// One member and the rules it speaks under. See the module docs.
#[derive(Debug)]
pub struct Participant {
    membership: Membership,
    speaker: Mutex<Speaker>,
    /// Wakes [`Participant::typing_expired`] when the indicator changes.
    typing_changed: Notify,
}

/// The name a member may have: the one asked for, checked against the
/// token's user when tokens are required. An empty request takes the
/// token's name; a different one is refused rather than silently replaced,
/// because it is either a misconfigured client or an attempt to speak as
/// someone else.
pub fn resolve_name(
    asked: &str,
    token_user: Option<&str>,
    limits: &Limits,
) -> Result<String, ChatError> {
    if let Some(user) = token_user {
        let asked = asked.trim();
        if asked.is_empty() || asked.to_lowercase() == user.to_lowercase() {
            return Ok(user.to_owned());
        }
        return Err(ChatError::NotYourName {
            token_user: user.to_owned(),
            asked: asked.to_owned(),
        });
    }
    validate::name(asked, limits)
        .map(str::to_owned)
        .map_err(|why| ChatError::InvalidName {
            what: "user name",
            why,
        })
}

impl Participant {
    /// A participant for a member that has just joined (`Listening`).
    pub fn new(membership: Membership) -> Participant {
        let limit = membership.hub().config().rate_limit;
        Participant {
            membership,
            speaker: Mutex::new(Speaker {
                stage: Stage::Listening,
                bucket: TokenBucket::new(limit, Instant::now().into_std()),
                typing_until: None,
                announced: false,
                logged: Logged::default(),
            }),
            typing_changed: Notify::new(),
        }
    }

    /// Its place in the room.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The member (cursor, notices, ending).
    pub fn member(&self) -> &Arc<Member> {
        self.membership.member()
    }

    /// Its name, once it has one.
    pub fn name(&self) -> Option<&Arc<str>> {
        self.member().name()
    }

    /// Where it is in its life.
    pub fn stage(&self) -> Stage {
        self.speaker.lock().stage
    }

    /// Names the member: `Chat` and `Subscribe` before the replay (the name
    /// comes with the first request), a `ChatStream` member before its
    /// first turn (the name comes with its first message). The name is
    /// claimed on every server sharing the store first (a round trip to it,
    /// hence `async`), then bound here. Nobody is told yet: see
    /// [`Participant::announce`] and [`Turn::identify`].
    pub async fn take_name(
        &self,
        asked: &str,
        token_user: Option<&str>,
    ) -> Result<Arc<str>, ChatError> {
        let limits = &self.membership.hub().config().limits;
        let name = resolve_name(asked, token_user, limits)?;
        if let Some(bound) = self.name() {
            // Named already (a second first message cannot happen, but the
            // rule is simple): a member has one name.
            return Ok(Arc::clone(bound));
        }
        self.membership.claim(&name).await?;
        self.speaker.lock().stage = Stage::Named;
        Ok(self.name().cloned().unwrap_or_else(|| Arc::from(name)))
    }

    /// Tells the room the member joined, and the member who else is here:
    /// the named members, and the silent listeners (members that have not
    /// spoken, so have no name yet) counted, since they read the room too.
    /// The names are those on every server sharing the store, when it can
    /// say.
    pub async fn announce(&self) {
        let Some(name) = self.name().cloned() else {
            return;
        };
        let room = self.membership.room_name();
        self.speaker.lock().announced = true;
        self.membership.publish(&[Event::Joined]);
        let presence = self.membership.presence_everywhere().await;
        let mut others: Vec<String> = presence
            .names
            .into_iter()
            .filter(|n| **n != *name)
            .collect();
        match presence.listeners {
            0 => {}
            1 => others.push("1 member who has not spoken yet".to_owned()),
            n => others.push(format!("{n} members who have not spoken yet")),
        }
        self.notify(&if others.is_empty() {
            format!("welcome to {room}, {name}: you are the only one here")
        } else {
            format!(
                "welcome to {room}, {name}: also here: {}",
                others.join(", ")
            )
        });
    }

    /// Sends a notice to this member only.
    pub fn notify(&self, text: &str) {
        self.membership.notify(text);
    }

    /// Tells the member why a message was not delivered (a blank one is
    /// not worth a word).
    pub fn refuse(&self, refusal: &Refusal) {
        if *refusal != Refusal::Empty {
            self.notify(&refusal.to_string());
        }
    }

    /// Starts a turn: what the member does next is collected, then
    /// published as one batch by [`Turn::finish`]. The participant's rules
    /// are held for the turn, so turns (and typing expiry) reach the room
    /// in the order they were decided.
    pub fn turn(&self) -> Turn<'_> {
        Turn {
            participant: self,
            speaker: self.speaker.lock(),
            events: Vec::new(),
        }
    }

    /// When the typing indicator expires (`None`: not typing).
    pub fn typing_deadline(&self) -> Option<Instant> {
        self.speaker.lock().typing_until
    }

    /// Completes when a typing indicator the member never stopped has
    /// expired — and has been turned off for everyone else. Pending while
    /// the member is not typing.
    pub async fn typing_expired(&self) {
        loop {
            let changed = self.typing_changed.notified();
            tokio::pin!(changed);
            // Registered before the deadline is read, so a change made in
            // between still wakes us.
            changed.as_mut().enable();
            let Some(at) = self.typing_deadline() else {
                changed.await;
                continue;
            };
            tokio::select! {
                () = &mut changed => {}
                // Boxed: the timer is large, and most members are not typing.
                () = Box::pin(tokio::time::sleep_until(at)) => {
                    if self.expire_typing_if_due() {
                        return;
                    }
                }
            }
        }
    }
}

impl Participant {
    /// Turns the typing indicator off for everyone if it is due. (A sync
    /// step of its own: a turn holds a lock, never across an `.await`.)
    fn expire_typing_if_due(&self) -> bool {
        let mut turn = self.turn();
        if turn
            .speaker
            .typing_until
            .is_none_or(|at| at > Instant::now())
        {
            return false;
        }
        turn.speaker.typing_until = None;
        turn.events.push(Event::Typing { started: false });
        turn.finish();
        true
    }
}

impl Drop for Participant {
    fn drop(&mut self) {
        let speaker = self.speaker.get_mut();
        if speaker.stage == Stage::Named {
            let events: &[Event] = if speaker.typing_until.is_some() {
                &[Event::Typing { started: false }, Event::Left]
            } else {
                &[Event::Left]
            };
            self.membership.publish(events);
        }
        speaker.stage = Stage::Left;
    }
}

/// One turn of a participant: collects its events, publishes them as one
/// batch on [`Turn::finish`].
#[derive(Debug)]
pub struct Turn<'a> {
    participant: &'a Participant,
    speaker: MutexGuard<'a, Speaker>,
    events: Vec<Event>,
}

impl Turn<'_> {
    /// A `ChatStream` message's claim to a name. The member was named by
    /// [`Participant::take_name`] before its first turn; the first message
    /// of a member not announced yet announces it ("joined" goes out with
    /// this turn). A message that claims another name is delivered under the
    /// bound name, and logged once.
    pub fn identify(&mut self, claimed: &str) {
        let participant = self.participant;
        if self.speaker.stage == Stage::Named && !self.speaker.announced {
            self.speaker.announced = true;
            info!(
                room = participant.membership.room_name(),
                user = %participant.name().map_or("", |n| &**n),
                protocol = ?participant.member().protocol(),
                "joined"
            );
            self.events.push(Event::Joined);
            // The message that named the member claims its own name.
            return;
        }
        let bound = participant.name().map_or("", |n| &**n);
        if claimed.trim() != bound
            && !std::mem::replace(&mut self.speaker.logged.impersonation, true)
        {
            info!(
                room = participant.membership.room_name(),
                user = %bound,
                claimed = %claimed,
                "message claims another name: delivered under the bound name"
            );
        }
    }

    /// A chat message: validated and rate limited, then (with the end of a
    /// typing indicator before it, if one was on) part of this turn.
    pub fn say(&mut self, raw: &str) -> Result<(), Refusal> {
        let participant = self.participant;
        let config = participant.membership.hub().config();
        let room = participant.membership.room_name();
        let member = participant.member().id();
        if self.speaker.stage != Stage::Named {
            return Err(Refusal::Unnamed);
        }
        let text = match validate::message(raw, &config.limits) {
            Ok(text) => text,
            Err(validate::Invalid::Empty) => return Err(Refusal::Empty),
            Err(why) => {
                if !std::mem::replace(&mut self.speaker.logged.invalid, true) {
                    info!(
                        room,
                        member,
                        reason = %why,
                        "message refused (further refusals for this member are not logged)"
                    );
                }
                return Err(Refusal::Invalid(why));
            }
        };
        if let Err(wait) = self.speaker.bucket.try_take(Instant::now().into_std()) {
            if !std::mem::replace(&mut self.speaker.logged.rate_limited, true) {
                info!(
                    room,
                    member,
                    rate = config.rate_limit.rate,
                    burst = config.rate_limit.burst,
                    "rate limit reached (further refusals for this member are not logged)"
                );
            }
            config.metrics.rate_limited.inc();
            return Err(Refusal::RateLimited {
                rate: config.rate_limit.rate,
                wait,
            });
        }
        if self.speaker.typing_until.take().is_some() {
            self.events.push(Event::Typing { started: false });
        }
        self.events.push(Event::Message {
            text: text.into_owned(),
        });
        Ok(())
    }

    /// The typing indicator on or off. Only changes are published; a
    /// repeated start extends the expiry.
    pub fn typing(&mut self, started: bool) {
        if self.speaker.stage != Stage::Named {
            // Nobody could be told who is typing.
            return;
        }
        if started {
            if self.speaker.typing_until.is_none() {
                self.events.push(Event::Typing { started: true });
            }
            let timeout = self.participant.membership.hub().config().typing_timeout;
            self.speaker.typing_until = Some(Instant::now() + timeout);
        } else if self.speaker.typing_until.take().is_some() {
            self.events.push(Event::Typing { started: false });
        }
    }

    /// Publishes the turn's events as one batch. If the room took nothing
    /// (the server is shutting down) and a message was among them, the
    /// member is told. `false` then.
    ///
    /// Every event of a turn comes from a named member: `say` and `typing`
    /// refuse or ignore an unnamed one, and `identify` names it first.
    pub fn finish(self) -> bool {
        let participant = self.participant;
        let published = self.events.is_empty() || participant.membership.publish(&self.events);
        if !published
            && self
                .events
                .iter()
                .any(|e| matches!(e, Event::Message { .. }))
        {
            participant.refuse(&Refusal::ShuttingDown);
        }
        drop(self.speaker);
        participant.typing_changed.notify_one();
        published
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::testing::{drain, encoders};
    use super::*;
    use crate::chat::ChatConfig;
    use crate::chat::core::{Hub, Protocol};
    use crate::chat::ratelimit::RateLimit;

    fn hub(config: ChatConfig) -> Arc<Hub> {
        Hub::new(config, encoders())
    }

    async fn member(hub: &Arc<Hub>, protocol: Protocol, name: Option<&str>) -> Participant {
        let p = Participant::new(hub.join("r", protocol).unwrap());
        if let Some(name) = name {
            p.take_name(name, None).await.unwrap();
        }
        p
    }

    #[tokio::test]
    async fn a_first_message_names_a_listener_and_announces_it_with_the_message() {
        let hub = hub(ChatConfig::default());
        let watcher = member(&hub, Protocol::Events, Some("wat")).await;
        let bob = member(&hub, Protocol::Stream, None).await;
        assert_eq!(bob.stage(), Stage::Listening);
        assert_eq!(hub.presence_in("r").listeners, 1);
        bob.take_name("bob", None).await.unwrap();
        let mut turn = bob.turn();
        turn.identify("bob");
        turn.say("hi").unwrap();
        // A later claim to another name is ignored: still bob.
        turn.identify("mallory");
        turn.say("again").unwrap();
        assert!(turn.finish());
        assert_eq!(bob.stage(), Stage::Named);
        assert_eq!(
            drain(watcher.member()),
            ["events bob joined", "events bob#1 hi", "events bob#2 again"]
        );
        assert_eq!(hub.presence_in("r").names, ["bob", "wat"]);
    }

    #[tokio::test]
    async fn a_name_in_use_or_not_the_tokens_is_refused() {
        let hub = hub(ChatConfig::default());
        let _ann = member(&hub, Protocol::Events, Some("ann")).await;
        let other = member(&hub, Protocol::Events, None).await;
        assert!(matches!(
            other.take_name("ANN", None).await,
            Err(ChatError::NameTaken { .. })
        ));
        assert!(matches!(
            other.take_name("bob", Some("carol")).await,
            Err(ChatError::NotYourName { .. })
        ));
        // An empty request takes the token's name.
        assert_eq!(&*other.take_name("", Some("carol")).await.unwrap(), "carol");
    }

    #[tokio::test]
    async fn nothing_is_said_before_a_name() {
        let hub = hub(ChatConfig::default());
        let watcher = member(&hub, Protocol::Events, Some("wat")).await;
        let quiet = member(&hub, Protocol::Events, None).await;
        let mut turn = quiet.turn();
        assert_eq!(turn.say("hello"), Err(Refusal::Unnamed));
        turn.typing(true);
        assert!(turn.finish());
        assert!(drain(watcher.member()).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_refuses_past_the_burst_and_refills_with_time() {
        let hub = hub(ChatConfig {
            rate_limit: RateLimit {
                rate: 2.0,
                burst: 2.0,
            },
            ..ChatConfig::default()
        });
        let ann = member(&hub, Protocol::Events, Some("ann")).await;
        let mut turn = ann.turn();
        turn.say("1").unwrap();
        turn.say("2").unwrap();
        assert!(matches!(
            turn.say("3"),
            Err(Refusal::RateLimited { rate, wait }) if rate == 2.0 && wait == Duration::from_millis(500)
        ));
        turn.finish();
        tokio::time::advance(Duration::from_millis(500)).await;
        let mut turn = ann.turn();
        turn.say("4").unwrap();
        turn.finish();
        let ids: Vec<String> = drain(ann.member());
        assert_eq!(ids, ["events ann#1 1", "events ann#2 2", "events ann#3 4"]);
    }

    #[tokio::test(start_paused = true)]
    async fn typing_expires_for_everyone_else_when_never_stopped() {
        let hub = hub(ChatConfig::default());
        let watcher = member(&hub, Protocol::Events, Some("wat")).await;
        let ann = member(&hub, Protocol::Events, Some("ann")).await;
        let mut turn = ann.turn();
        turn.typing(true);
        turn.finish();
        // A refresh extends the expiry without a second start.
        tokio::time::advance(Duration::from_secs(3)).await;
        let mut turn = ann.turn();
        turn.typing(true);
        turn.finish();
        let started = tokio::time::Instant::now();
        ann.typing_expired().await;
        assert_eq!(started.elapsed(), crate::chat::DEFAULT_TYPING_TIMEOUT);
        assert_eq!(
            drain(watcher.member()),
            ["events ann typing true", "events ann typing false"]
        );
        // The typer's own stream shows none of it.
        assert!(drain(ann.member()).is_empty());
    }

    #[tokio::test]
    async fn saying_something_ends_typing_and_leaving_ends_both() {
        let hub = hub(ChatConfig::default());
        let watcher = member(&hub, Protocol::Events, Some("wat")).await;
        let ann = member(&hub, Protocol::Events, Some("ann")).await;
        let mut turn = ann.turn();
        turn.typing(true);
        turn.say("done").unwrap();
        turn.typing(true);
        turn.finish();
        drop(ann);
        assert_eq!(
            drain(watcher.member()),
            [
                "events ann typing true",
                "events ann typing false",
                "events ann#1 done",
                "events ann typing true",
                "events ann typing false",
                "events ann left"
            ]
        );
        assert_eq!(hub.presence_in("r").names, ["wat"]);
    }

    #[tokio::test]
    async fn a_listener_leaves_without_a_word_and_the_welcome_counts_it() {
        let hub = hub(ChatConfig::default());
        let watcher = member(&hub, Protocol::Events, Some("wat")).await;
        let listener = member(&hub, Protocol::Stream, None).await;
        let ann = member(&hub, Protocol::Events, Some("ann")).await;
        ann.announce().await;
        assert_eq!(
            drain(ann.member()),
            [
                "events ann joined",
                "events notice welcome to r, ann: also here: wat, 1 member who has not spoken yet"
            ]
        );
        drop(listener);
        assert_eq!(drain(watcher.member()), ["events ann joined"]);
    }

    #[tokio::test]
    async fn at_shutdown_a_message_is_refused_with_a_notice() {
        let hub = hub(ChatConfig::default());
        let ann = member(&hub, Protocol::Events, Some("ann")).await;
        hub.shutdown("bye");
        let mut turn = ann.turn();
        turn.say("late").unwrap();
        assert!(!turn.finish());
        assert_eq!(
            drain(ann.member()),
            [
                "events notice bye",
                "events notice message not delivered: the server is shutting down"
            ]
        );
        assert!(hub.join("r", Protocol::Events).is_err());
    }
}
