//! The conversation as the user sees it, built from session updates: display
//! lines, the typing line, the room, its member list and the connection
//! state. Both
//! front ends (line mode and the TUI) feed it the same [`Update`]s and draw
//! what it returns; it does no I/O and is told the time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::display::{DisplayLine, Entry, now_unix, same_name};
use super::sanitize::sanitize;
use super::session::Update;
use super::typing::TypingIndicator;
use crate::chat::DEFAULT_ROOM;
use crate::pb::chat::{RoomsResponse, ServerEvent, TypingEventType, UserEventType, server_event};

/// The connection as the status bar shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// Not joined yet.
    Connecting,
    /// Joined.
    Connected,
    /// Lost; trying again.
    Reconnecting,
    /// Ended.
    Closed,
}

/// What changed, for the front end to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new line of conversation.
    Line(DisplayLine),
    /// The typing line is now this (or gone).
    Typing(Option<String>),
}

/// The state behind the display.
#[derive(Debug)]
pub struct ChatView {
    /// This client's user name.
    me: String,
    /// The room we are in (or joining).
    room: String,
    /// Others typing.
    typing: TypingIndicator,
    /// Members of the room other than us, lower-cased name → name as shown
    /// (sanitised): from `/who` answers, joins and leaves.
    members: BTreeMap<String, String>,
    /// Members without a name yet (`ChatStream` clients that have not
    /// spoken), from the last `/who` answer.
    listeners: u32,
    /// `/who` answers to absorb without printing (asked for by the client
    /// itself, to learn the member list).
    silent_who: usize,
    /// The connection state.
    connection: Connection,
    /// Messages replayed from history on the current connection, until the
    /// end-of-history notice (`None` once it came).
    replayed: Option<usize>,
    /// While not connected: why, and the delay before the next attempt.
    disconnect: Option<(String, Duration)>,
    /// The reason last shown as a line since we were connected: the same
    /// reason on the next failed attempt is not shown again (the TUI's
    /// status bar, and nothing else, follows each attempt).
    shown_reason: Option<String>,
}

impl ChatView {
    /// A view for user `me`, in the default room until told otherwise
    /// ([`set_room`](Self::set_room)).
    pub fn new(me: &str) -> Self {
        ChatView {
            me: me.trim().to_owned(),
            room: DEFAULT_ROOM.to_owned(),
            typing: TypingIndicator::new(),
            members: BTreeMap::new(),
            listeners: 0,
            silent_who: 0,
            connection: Connection::Connecting,
            replayed: None,
            disconnect: None,
            shown_reason: None,
        }
    }

    /// While not connected after a failed attempt: why, and the delay
    /// before the next one.
    pub fn disconnect(&self) -> Option<(&str, Duration)> {
        self.disconnect
            .as_ref()
            .map(|(why, delay)| (why.as_str(), *delay))
    }

    /// This client's user name.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The connection state.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The room we are in, or joining (as the user gave it; not sanitised).
    pub fn room(&self) -> &str {
        &self.room
    }

    /// We are (about to be) in `room`.
    pub fn set_room(&mut self, room: &str) {
        room.clone_into(&mut self.room);
    }

    /// Other members, sorted (sanitised names).
    pub fn members(&self) -> impl Iterator<Item = &str> {
        self.members.values().map(String::as_str)
    }

    /// Everyone here, us included, sorted as [`members`](Self::members)
    /// are: `(name, is_us)`. Lazy, so that drawing a few rows of a long
    /// list costs a few rows.
    pub fn everyone(&self) -> impl Iterator<Item = (&str, bool)> {
        use std::ops::Bound::{Excluded, Unbounded};
        // `members` never holds us: we go between the names before and
        // after ours.
        let me = self.me.to_lowercase();
        let before = self
            .members
            .range::<str, _>((Unbounded, Excluded(me.as_str())));
        let after = self
            .members
            .range::<str, _>((Excluded(me.as_str()), Unbounded));
        before
            .map(|(_, name)| (name.as_str(), false))
            .chain(std::iter::once((self.me.as_str(), true)))
            .chain(after.map(|(_, name)| (name.as_str(), false)))
    }

    /// How many other members there are.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Members without a name yet, as of the last `/who` answer.
    pub fn listeners(&self) -> u32 {
        self.listeners
    }

    /// The typing line, if anyone is typing.
    pub fn typing_line(&self) -> Option<String> {
        self.typing.line()
    }

    /// The next `/who` answer only updates the member list.
    pub fn expect_silent_who(&mut self) {
        self.silent_who += 1;
    }

    /// A notice from this client, stamped now.
    pub fn local(&self, text: &str) -> DisplayLine {
        DisplayLine::notice(now_unix(), text)
    }

    /// Applies an update from the session.
    pub fn update(&mut self, update: &Update, now: Instant) -> Vec<Change> {
        let mut changes = Vec::new();
        match update {
            Update::Event(event) => self.event(event, now, &mut changes),
            Update::Connected { reconnected } => {
                self.connection = Connection::Connected;
                self.replayed = Some(0);
                self.disconnect = None;
                self.shown_reason = None;
                if *reconnected {
                    changes.push(Change::Line(self.local("reconnected")));
                }
            }
            Update::Disconnected {
                notice,
                reason,
                retry_in,
            } => {
                if self.connection == Connection::Connected {
                    self.connection = Connection::Reconnecting;
                }
                self.members.clear();
                self.listeners = 0;
                if self.typing.clear() {
                    changes.push(Change::Typing(None));
                }
                self.disconnect = Some((reason.clone(), *retry_in));
                if self.shown_reason.as_ref() != Some(reason) {
                    self.shown_reason = Some(reason.clone());
                    changes.push(Change::Line(self.local(notice)));
                }
            }
            Update::Who(answer) => {
                let silent = self.silent_who > 0;
                self.silent_who = self.silent_who.saturating_sub(1);
                match answer {
                    Ok(who) => {
                        // An answer about the room we just left (asked
                        // before a /join) says nothing about this one.
                        if who.room == self.room {
                            self.members = who
                                .users
                                .iter()
                                .filter(|n| !same_name(n, &self.me))
                                .map(|n| (n.to_lowercase(), sanitize(n).into_owned()))
                                .collect();
                            self.listeners = who.listeners;
                        }
                        if !silent {
                            let names: Vec<String> =
                                who.users.iter().map(|n| sanitize(n).into_owned()).collect();
                            let mut text = format!(
                                "in {}: {} ({})",
                                sanitize(&who.room),
                                names.join(", "),
                                names.len()
                            );
                            // ChatStream members have no name until they
                            // speak, but they read the room all the same.
                            match who.listeners {
                                0 => {}
                                1 => text.push_str("; 1 more has not spoken yet"),
                                n => text.push_str(&format!("; {n} more have not spoken yet")),
                            }
                            // Servers sharing a Redis are one room: say
                            // how much of it is on ours when not all is.
                            let here = who.local_users.len();
                            if here > 0 && here < names.len() {
                                text.push_str(&format!("; {here} on this server"));
                            }
                            changes.push(Change::Line(DisplayLine::notice(now_unix(), &text)));
                        }
                    }
                    Err(why) if !silent => {
                        changes.push(Change::Line(self.local(&format!("/who failed: {why}"))));
                    }
                    Err(_) => {}
                }
            }
            Update::Rooms(Ok(rooms)) => self.rooms(rooms, &mut changes),
            Update::Rooms(Err(why)) => {
                changes.push(Change::Line(self.local(&format!("/rooms failed: {why}"))));
            }
            Update::Switched { room } => {
                room.clone_into(&mut self.room);
                self.members.clear();
                self.listeners = 0;
                if self.typing.clear() {
                    changes.push(Change::Typing(None));
                }
                // The new room's history comes first.
                self.replayed = Some(0);
                changes.push(Change::Line(DisplayLine::new(
                    now_unix(),
                    Entry::Room(sanitize(room).into_owned()),
                )));
            }
            Update::JoinFailed { room, .. } if *room == self.room => {
                let text = format!("you are already in #{}", sanitize(room));
                changes.push(Change::Line(self.local(&text)));
            }
            Update::JoinFailed { room, reason } => {
                let text = format!(
                    "cannot join #{}: {}; still in #{}",
                    sanitize(room),
                    sanitize(reason),
                    sanitize(&self.room)
                );
                changes.push(Change::Line(self.local(&text)));
            }
            Update::NotSent(text) => {
                changes.push(Change::Line(
                    self.local(&format!("not connected: not sent: {text}")),
                ));
            }
            Update::GaveUp(why) => {
                self.connection = Connection::Closed;
                changes.push(Change::Line(self.local(why)));
            }
            Update::Left => self.connection = Connection::Closed,
        }
        changes
    }

    /// The `/rooms` answer: a line per room, ours marked.
    fn rooms(&self, answer: &RoomsResponse, changes: &mut Vec<Change>) {
        let now = now_unix();
        let header = match answer.rooms.len() {
            0 => "no rooms with people in them".to_owned(),
            1 => "1 room:".to_owned(),
            n => format!("{n} rooms:"),
        };
        changes.push(Change::Line(DisplayLine::notice(now, &header)));
        for room in &answer.rooms {
            let people = match room.members {
                1 => "1 member".to_owned(),
                n => format!("{n} members"),
            };
            let here = if room.name == self.room {
                " (you are here)"
            } else {
                ""
            };
            let text = format!("  #{} · {people}{here}", sanitize(&room.name));
            changes.push(Change::Line(DisplayLine::new(now, Entry::Info(text))));
        }
    }

    /// Time passed: expires stale typing indicators.
    pub fn tick(&mut self, now: Instant) -> Vec<Change> {
        if self.typing.tick(now) {
            vec![Change::Typing(self.typing.line())]
        } else {
            Vec::new()
        }
    }

    fn event(&mut self, event: &ServerEvent, now: Instant, changes: &mut Vec<Change>) {
        let Some(event) = &event.event else {
            return;
        };
        match event {
            server_event::Event::ChatMessage(m) => {
                // Before the end of the replay, a message is history: ours
                // only in name.
                let line = match &mut self.replayed {
                    Some(n) => {
                        *n += 1;
                        DisplayLine::replayed(m.timestamp, &m.username, &m.message, &self.me)
                    }
                    None => DisplayLine::message(m.timestamp, &m.username, &m.message, &self.me),
                };
                if self.typing.stop(&sanitize(&m.username)) {
                    changes.push(Change::Typing(self.typing.line()));
                }
                changes.push(Change::Line(line));
            }
            server_event::Event::TypingEvent(t) => {
                if same_name(&t.username, &self.me) {
                    return;
                }
                let name = sanitize(&t.username);
                let changed = if t.r#type == TypingEventType::TypingStart as i32 {
                    self.typing.start(&name, now)
                } else if t.r#type == TypingEventType::TypingStop as i32 {
                    self.typing.stop(&name)
                } else {
                    false
                };
                if changed {
                    changes.push(Change::Typing(self.typing.line()));
                }
            }
            server_event::Event::UserEvent(u) => {
                // Our own join comes back too; the welcome notice that
                // follows says it better.
                if same_name(&u.username, &self.me) {
                    return;
                }
                let name = sanitize(&u.username).into_owned();
                if u.r#type == UserEventType::UserJoined as i32 {
                    self.members.insert(u.username.to_lowercase(), name);
                    changes.push(Change::Line(DisplayLine::joined(u.timestamp, &u.username)));
                } else if u.r#type == UserEventType::UserLeft as i32 {
                    self.members.remove(&u.username.to_lowercase());
                    if self.typing.stop(&name) {
                        changes.push(Change::Typing(self.typing.line()));
                    }
                    changes.push(Change::Line(DisplayLine::left(u.timestamp, &u.username)));
                }
            }
            // The end of the replayed history: worth a line only when
            // something was replayed, to separate it from what is live.
            server_event::Event::SystemEvent(s) if s.end_of_history => {
                if let Some(n @ 1..) = self.replayed {
                    let text = match n {
                        1 => "end of history (1 message)".to_owned(),
                        n => format!("end of history ({n} messages)"),
                    };
                    changes.push(Change::Line(DisplayLine::notice(s.timestamp, &text)));
                }
                self.replayed = None;
            }
            server_event::Event::SystemEvent(s) => {
                changes.push(Change::Line(DisplayLine::notice(s.timestamp, &s.message)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::chat::{ChatMessageEvent, SystemEvent, TypingEvent, UserEvent, WhoResponse};

    fn ev(e: server_event::Event) -> Update {
        Update::Event(ServerEvent { event: Some(e) })
    }
    fn msg(user: &str, text: &str) -> Update {
        ev(server_event::Event::ChatMessage(ChatMessageEvent {
            message: text.into(),
            username: user.into(),
            timestamp: 1_700_000_000,
            id: 1,
        }))
    }
    fn user(kind: UserEventType, name: &str) -> Update {
        ev(server_event::Event::UserEvent(UserEvent {
            r#type: kind.into(),
            username: name.into(),
            timestamp: 1_700_000_000,
        }))
    }
    fn typing(kind: TypingEventType, name: &str) -> Update {
        ev(server_event::Event::TypingEvent(TypingEvent {
            username: name.into(),
            timestamp: 0,
            r#type: kind.into(),
        }))
    }
    fn plain(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                Change::Line(l) => l.plain(),
                Change::Typing(t) => format!("typing: {t:?}"),
            })
            .collect()
    }

    #[test]
    fn a_conversation() {
        let t = Instant::now();
        let mut v = ChatView::new("alice");
        let mut log = Vec::new();
        let steps = [
            Update::Connected { reconnected: false },
            end_of_history(),
            user(UserEventType::UserJoined, "alice"),
            ev(server_event::Event::SystemEvent(SystemEvent {
                message: "welcome to lobby, alice: you are the only one here".into(),
                timestamp: 0,
                ..Default::default()
            })),
            user(UserEventType::UserJoined, "bob"),
            typing(TypingEventType::TypingStart, "bob"),
            typing(TypingEventType::TypingStart, "alice"),
            msg("bob", "hi"),
            msg("alice", "hello"),
            msg("bob", "/me waves"),
            user(UserEventType::UserLeft, "bob"),
        ];
        for step in &steps {
            log.extend(plain(&v.update(step, t)));
        }
        assert_eq!(
            log,
            [
                "-- welcome to lobby, alice: you are the only one here --",
                "* bob joined",
                "typing: Some(\"* bob typing...\")",
                "typing: None",
                "[bob] hi",
                "[you] hello",
                "* bob waves",
                "* bob left",
            ]
        );
        assert_eq!(v.connection(), &Connection::Connected);
    }

    fn end_of_history() -> Update {
        ev(server_event::Event::SystemEvent(SystemEvent {
            message: "end of history: 1 earlier message".into(),
            end_of_history: true,
            epoch: "e".into(),
            timestamp: 0,
        }))
    }

    #[test]
    fn replayed_messages_are_history_even_under_our_name() {
        let t = Instant::now();
        let mut v = ChatView::new("bot");
        let mut log = Vec::new();
        for step in [
            Update::Connected { reconnected: false },
            msg("bot", "hello from a script"),
            msg("bot", "/me waves"),
            end_of_history(),
            msg("bot", "hello from a script"),
        ] {
            log.extend(plain(&v.update(&step, t)));
        }
        assert_eq!(
            log,
            [
                "[bot] hello from a script",
                "* bot waves",
                "-- end of history (2 messages) --",
                "[you] hello from a script",
            ]
        );
    }

    #[test]
    fn leaving_clears_typing_and_members() {
        let t = Instant::now();
        let mut v = ChatView::new("alice");
        v.update(&user(UserEventType::UserJoined, "bob"), t);
        v.update(&typing(TypingEventType::TypingStart, "bob"), t);
        assert_eq!(v.members().collect::<Vec<_>>(), ["bob"]);
        let changes = v.update(&user(UserEventType::UserLeft, "bob"), t);
        assert_eq!(plain(&changes), ["typing: None", "* bob left"]);
        assert_eq!(v.members().count(), 0);
    }

    fn down(notice: &str, reason: &str, secs: u64) -> Update {
        Update::Disconnected {
            notice: notice.into(),
            reason: reason.into(),
            retry_in: Duration::from_secs(secs),
        }
    }

    #[test]
    fn connection_notices() {
        let t = Instant::now();
        let mut v = ChatView::new("alice");
        v.update(&Update::Connected { reconnected: false }, t);
        v.update(&typing(TypingEventType::TypingStart, "bob"), t);
        let changes = v.update(
            &down("connection lost, reconnecting in 1s", "connection lost", 1),
            t,
        );
        assert_eq!(
            plain(&changes),
            ["typing: None", "-- connection lost, reconnecting in 1s --"]
        );
        assert_eq!(v.connection(), &Connection::Reconnecting);
        // Each failed attempt: a line for a new reason, none for a repeat;
        // the latest is always there for a status bar.
        let refused = "cannot connect to h:1: refused";
        let changes = v.update(&down(&format!("{refused}; retrying in 2s"), refused, 2), t);
        assert_eq!(
            plain(&changes),
            [format!("-- {refused}; retrying in 2s --")]
        );
        let changes = v.update(&down(&format!("{refused}; retrying in 4s"), refused, 4), t);
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(v.disconnect(), Some((refused, Duration::from_secs(4))));
        let changes = v.update(&Update::Connected { reconnected: true }, t);
        assert_eq!(plain(&changes), ["-- reconnected --"]);
        assert_eq!(v.disconnect(), None);
        // Lost again: the reasons count afresh.
        let changes = v.update(
            &down("connection lost, reconnecting in 1s", "connection lost", 1),
            t,
        );
        assert_eq!(
            plain(&changes),
            ["-- connection lost, reconnecting in 1s --"]
        );
    }

    #[test]
    fn who_answers() {
        let t = Instant::now();
        let mut v = ChatView::new("alice");
        let who = Update::Who(Ok(WhoResponse {
            room: "lobby".into(),
            users: vec!["alice".into(), "bob".into(), "e\x1bve".into()],
            listeners: 0,
            ..Default::default()
        }));
        v.expect_silent_who();
        assert!(
            v.update(&who, t).is_empty(),
            "a silent answer prints nothing"
        );
        assert_eq!(v.members().collect::<Vec<_>>(), ["bob", "e\\x1bve"]);
        assert_eq!(
            plain(&v.update(&who, t)),
            ["-- in lobby: alice, bob, e\\x1bve (3) --"]
        );
        // Members that have not spoken are counted, not named.
        let with_listeners = Update::Who(Ok(WhoResponse {
            room: "lobby".into(),
            users: vec!["alice".into()],
            listeners: 2,
            ..Default::default()
        }));
        let across_servers = Update::Who(Ok(WhoResponse {
            room: "lobby".into(),
            users: vec!["alice".into(), "bob".into(), "cat".into()],
            local_users: vec!["alice".into()],
            ..Default::default()
        }));
        assert_eq!(
            plain(&v.update(&across_servers, t)),
            ["-- in lobby: alice, bob, cat (3); 1 on this server --"]
        );
        assert_eq!(
            plain(&v.update(&with_listeners, t)),
            ["-- in lobby: alice (1); 2 more have not spoken yet --"]
        );
        assert_eq!(
            plain(&v.update(&Update::Who(Err("not connected".into())), t)),
            ["-- /who failed: not connected --"]
        );
    }

    #[test]
    fn switching_rooms() {
        let t = Instant::now();
        let mut v = ChatView::new("alice");
        v.set_room("tea");
        v.update(&Update::Connected { reconnected: false }, t);
        v.update(&end_of_history(), t);
        v.update(&user(UserEventType::UserJoined, "bob"), t);
        v.update(&typing(TypingEventType::TypingStart, "bob"), t);
        let failed = Update::JoinFailed {
            room: "x".repeat(3),
            reason: "room name is too long".into(),
        };
        assert_eq!(
            plain(&v.update(&failed, t)),
            ["-- cannot join #xxx: room name is too long; still in #tea --"]
        );
        let here = Update::JoinFailed {
            room: "tea".into(),
            reason: "you are already there".into(),
        };
        assert_eq!(
            plain(&v.update(&here, t)),
            ["-- you are already in #tea --"]
        );
        let changes = v.update(
            &Update::Switched {
                room: "kitchen".into(),
            },
            t,
        );
        assert_eq!(plain(&changes), ["typing: None", "──── #kitchen ────"]);
        assert_eq!((v.room(), v.member_count()), ("kitchen", 0));
        // The new room's history is history again.
        let log: Vec<String> = [msg("carol", "earlier"), end_of_history()]
            .iter()
            .flat_map(|u| plain(&v.update(u, t)))
            .collect();
        assert_eq!(log, ["[carol] earlier", "-- end of history (1 message) --"]);
        // A late answer about the room we left changes nothing here.
        let late = Update::Who(Ok(WhoResponse {
            room: "tea".into(),
            users: vec!["alice".into(), "bob".into()],
            listeners: 1,
            ..Default::default()
        }));
        v.expect_silent_who();
        v.update(&late, t);
        assert_eq!((v.member_count(), v.listeners()), (0, 0));
    }

    #[test]
    fn everyone_puts_us_among_the_members() {
        let t = Instant::now();
        let mut v = ChatView::new("Carol");
        let who = Update::Who(Ok(WhoResponse {
            room: "lobby".into(),
            users: vec!["alice".into(), "Carol".into(), "dave".into(), "bob".into()],
            listeners: 2,
            ..Default::default()
        }));
        v.expect_silent_who();
        v.update(&who, t);
        let everyone: Vec<(&str, bool)> = v.everyone().collect();
        assert_eq!(
            everyone,
            [
                ("alice", false),
                ("bob", false),
                ("Carol", true),
                ("dave", false)
            ]
        );
        assert_eq!(v.listeners(), 2);
    }

    #[test]
    fn rooms_answer() {
        use crate::pb::chat::RoomInfo;
        let t = Instant::now();
        let mut v = ChatView::new("alice");
        v.set_room("tea");
        let info = |name: &str, members| RoomInfo {
            name: name.into(),
            members,
        };
        let answer = Update::Rooms(Ok(RoomsResponse {
            rooms: vec![info("kitchen", 1), info("tea", 2)],
        }));
        assert_eq!(
            plain(&v.update(&answer, t)),
            [
                "-- 2 rooms: --",
                "  #kitchen · 1 member",
                "  #tea · 2 members (you are here)"
            ]
        );
        assert_eq!(
            plain(&v.update(&Update::Rooms(Err("not connected".into())), t)),
            ["-- /rooms failed: not connected --"]
        );
    }

    #[test]
    fn stale_typing_expires_on_tick() {
        let t = Instant::now();
        let mut v = ChatView::new("alice");
        v.update(&typing(TypingEventType::TypingStart, "bob"), t);
        assert!(v.tick(t).is_empty());
        let later = t + super::super::typing::OTHERS_EXPIRY;
        assert_eq!(v.tick(later), [Change::Typing(None)]);
    }
}
