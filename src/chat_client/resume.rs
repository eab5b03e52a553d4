//! What the session remembers between calls: where to resume in each room
//! it has been in ([`Rooms`], [`Resume`]: the last message id and its
//! history epoch), and which of its own messages the server has not echoed
//! yet ([`Echoes`]).

use std::collections::HashMap;

use super::display::same_name;
use crate::chat::DEFAULT_ROOM;
use crate::pb::chat::{ServerEvent, server_event};

/// Where the session is, and where to resume in each room it has been in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rooms {
    /// The room joined, or to join (the `chat-room` of every call).
    pub(super) current: String,
    /// Where to resume from in `current`.
    pub(super) resume: Resume,
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
/// back yet, so that [`Outgoing::Finish`](super::session::Outgoing::Finish) leaves only once they are shown.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::DEFAULT_ROOM;
    use crate::pb::chat::{ChatMessageEvent, server_event};

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
}
