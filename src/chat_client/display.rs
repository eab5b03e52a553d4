//! What the user sees: one [`DisplayLine`] per thing that happened, and its
//! plain-text form (line mode, and the words the TUI draws).
//!
//! ```text
//! [you] hello            own message (the server echoes it back)
//! [alice] hello          someone else's message, or a replayed one of ours
//!                        (history shows names; see `DisplayLine::replayed`)
//! * alice waves          an action (`/me waves`, sent as the text "/me waves")
//! * bob joined           a member joined
//! * bob left             a member left
//! -- rate limited --     a notice, from the server or from this client
//! ──── #kitchen ────     now in another room (after `/join`)
//! ```
//!
//! Text in a `DisplayLine` is already [sanitised](super::sanitize): building
//! one is the only way peer text enters the display, and the constructors
//! here do the sanitising.

use chrono::{DateTime, Local, TimeZone};

use super::sanitize::sanitize;

/// The prefix of a message that is an action (`/me waves` → `* alice waves`).
///
/// The `Chat` protocol has no action message, so an action travels as
/// ordinary text starting with `/me `: clients that know the convention (this
/// one) show it as an action; others show it as written.
pub const ACTION_PREFIX: &str = "/me ";

/// Who said something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Speaker {
    /// This client's user.
    You,
    /// Someone else, by name (sanitised).
    Other(String),
}

/// What a line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A chat message.
    Message {
        /// Who sent it.
        from: Speaker,
        /// The text (sanitised).
        text: String,
    },
    /// An action (`/me …`): `* name text`.
    Action {
        /// The actor's name (sanitised), also for our own actions.
        name: String,
        /// Whether the actor is this client's user.
        own: bool,
        /// What they do (sanitised).
        text: String,
    },
    /// Someone joined the room.
    Joined(String),
    /// Someone left the room.
    Left(String),
    /// A notice: from the server (`SystemEvent`) or from this client
    /// (connection state, `/who`).
    Notice(String),
    /// Help text from this client, shown as it is.
    Info(String),
    /// From here on, another room (sanitised name): the separator a
    /// `/join` draws.
    Room(String),
}

/// One line of the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayLine {
    /// When it happened, Unix seconds (server time for server events).
    pub time: i64,
    /// What happened.
    pub entry: Entry,
    /// Whether the line mentions this client's user by name (for
    /// highlighting).
    pub mentions_you: bool,
}

impl DisplayLine {
    /// A line with nothing highlighted.
    pub fn new(time: i64, entry: Entry) -> Self {
        DisplayLine {
            time,
            entry,
            mentions_you: false,
        }
    }

    /// A chat message from `username`; `me` is this client's user name.
    /// Messages starting with [`ACTION_PREFIX`] become actions.
    pub fn message(time: i64, username: &str, text: &str, me: &str) -> Self {
        Self::chat(time, username, text, me, same_name(username, me))
    }

    /// A message replayed from the room's history: shown under its
    /// sender's name even when that is ours (`[bot] hi`, not `[you] hi`),
    /// since someone of the same name may have sent it before we came; only
    /// the server's echo of what this client sent is `[you]`.
    pub fn replayed(time: i64, username: &str, text: &str, me: &str) -> Self {
        Self::chat(time, username, text, me, false)
    }

    fn chat(time: i64, username: &str, text: &str, me: &str, own: bool) -> Self {
        let name = sanitize(username).into_owned();
        let text = sanitize(text).into_owned();
        let mentions_you = !own && mentions(&text, me);
        let entry = match text.strip_prefix(ACTION_PREFIX) {
            Some(action) => Entry::Action {
                name,
                own,
                text: action.to_owned(),
            },
            None => Entry::Message {
                from: if own {
                    Speaker::You
                } else {
                    Speaker::Other(name)
                },
                text,
            },
        };
        DisplayLine {
            time,
            entry,
            mentions_you,
        }
    }

    /// A notice (server or local); `text` is sanitised.
    pub fn notice(time: i64, text: &str) -> Self {
        Self::new(time, Entry::Notice(sanitize(text).into_owned()))
    }

    /// `* name joined`.
    pub fn joined(time: i64, name: &str) -> Self {
        Self::new(time, Entry::Joined(sanitize(name).into_owned()))
    }

    /// `* name left`.
    pub fn left(time: i64, name: &str) -> Self {
        Self::new(time, Entry::Left(sanitize(name).into_owned()))
    }

    /// The line as plain text, without the time: what line mode prints.
    pub fn plain(&self) -> String {
        match &self.entry {
            Entry::Message {
                from: Speaker::You,
                text,
            } => format!("[you] {text}"),
            Entry::Message {
                from: Speaker::Other(name),
                text,
            } => format!("[{name}] {text}"),
            Entry::Action { name, text, .. } => format!("* {name} {text}"),
            Entry::Joined(name) => format!("* {name} joined"),
            Entry::Left(name) => format!("* {name} left"),
            Entry::Notice(text) => format!("-- {text} --"),
            Entry::Info(text) => text.clone(),
            Entry::Room(name) => format!("──── #{name} ────"),
        }
    }

    /// The local time of the line, `HH:MM`.
    pub fn clock(&self) -> String {
        clock(self.time)
    }
}

/// Unix seconds as local `HH:MM` (`--:--` for a time that cannot be shown).
pub fn clock(unix_seconds: i64) -> String {
    match DateTime::from_timestamp(unix_seconds, 0) {
        Some(utc) => Local
            .from_utc_datetime(&utc.naive_utc())
            .format("%H:%M")
            .to_string(),
        None => "--:--".to_owned(),
    }
}

/// The current time, Unix seconds.
pub fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Names are unique in a room regardless of case, so they compare that way.
pub fn same_name(a: &str, b: &str) -> bool {
    a.trim().to_lowercase() == b.trim().to_lowercase()
}

/// Whether `text` mentions `name` as a whole word (case-insensitive).
pub fn mentions(text: &str, name: &str) -> bool {
    let name = name.trim().to_lowercase();
    if name.is_empty() {
        return false;
    }
    let text = text.to_lowercase();
    text.match_indices(&name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

/// A stable palette slot for `name`, in `0..palette_len`: the same name gets
/// the same colour in every session and on every machine (FNV-1a of the
/// lower-cased name; `std`'s hasher is randomly seeded per process).
pub fn color_index(name: &str, palette_len: usize) -> usize {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = name
        .to_lowercase()
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    // `palette_len` is small; the remainder fits in usize on every platform.
    (hash % palette_len.max(1) as u64) as usize
}

/// "alice", "alice, bob", "alice, bob and 2 others".
pub fn name_list(names: &[String], at_most: usize) -> String {
    if names.len() <= at_most {
        return names.join(", ");
    }
    let shown = names[..at_most].join(", ");
    let more = names.len() - at_most;
    format!(
        "{shown} and {more} other{}",
        if more == 1 { "" } else { "s" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_formats() {
        let t = 1_700_000_000;
        let cases = [
            (
                DisplayLine::message(t, "alice", "hello", "alice"),
                "[you] hello",
            ),
            (
                DisplayLine::message(t, "Alice", "hello", "alice"),
                "[you] hello",
            ),
            (
                DisplayLine::message(t, "alice", "hello", "bob"),
                "[alice] hello",
            ),
            (
                DisplayLine::message(t, "alice", "/me waves", "bob"),
                "* alice waves",
            ),
            (
                DisplayLine::message(t, "bob", "/me waves", "bob"),
                "* bob waves",
            ),
            (DisplayLine::joined(t, "bob"), "* bob joined"),
            (DisplayLine::left(t, "bob"), "* bob left"),
            (DisplayLine::notice(t, "rate limited"), "-- rate limited --"),
        ];
        for (line, want) in cases {
            assert_eq!(line.plain(), want);
        }
    }

    #[test]
    fn peer_text_is_sanitised_in_every_field() {
        let line = DisplayLine::message(0, "ev\x1b[2Jil", "hi\x1b]0;x\x07", "me");
        assert_eq!(line.plain(), "[ev\\x1b[2Jil] hi\\x1b]0;x\\x07");
        assert_eq!(
            DisplayLine::notice(0, "\u{9b}31m").plain(),
            "-- \\x9b31m --"
        );
        assert_eq!(DisplayLine::joined(0, "a\rb").plain(), "* a\\x0db joined");
        let action = DisplayLine::message(0, "eve", "/me \x1b[1Abold", "me");
        assert_eq!(action.plain(), "* eve \\x1b[1Abold");
    }

    #[test]
    fn mentions_are_whole_words() {
        assert!(mentions("hi alice!", "alice"));
        assert!(mentions("ALICE: look", "alice"));
        assert!(!mentions("malice", "alice"));
        assert!(!mentions("alicea", "alice"));
        assert!(!mentions("anything", ""));
        let line = DisplayLine::message(0, "bob", "hey alice", "alice");
        assert!(line.mentions_you);
        let own = DisplayLine::message(0, "alice", "I am alice", "alice");
        assert!(!own.mentions_you, "talking about yourself is not a mention");
    }

    #[test]
    fn colours_are_stable_and_spread() {
        assert_eq!(color_index("alice", 12), color_index("alice", 12));
        assert_eq!(color_index("Alice", 12), color_index("alice", 12));
        // FNV-1a is fixed: this value does not change between runs or builds.
        assert_eq!(color_index("alice", 1 << 16), color_index("alice", 1 << 16));
        let names = [
            "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
        ];
        let slots: std::collections::HashSet<usize> =
            names.iter().map(|n| color_index(n, 12)).collect();
        assert!(
            slots.len() >= 4,
            "eight names should not share a few colours"
        );
        assert_eq!(
            color_index("x", 0),
            0,
            "an empty palette does not divide by zero"
        );
    }

    #[test]
    fn clock_is_hh_mm() {
        let c = clock(1_700_000_000);
        assert_eq!(c.len(), 5);
        assert_eq!(&c[2..3], ":");
        assert_eq!(clock(i64::MAX), "--:--");
    }

    #[test]
    fn name_lists() {
        let n = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(name_list(&n(&["a"]), 3), "a");
        assert_eq!(name_list(&n(&["a", "b", "c"]), 3), "a, b, c");
        assert_eq!(
            name_list(&n(&["a", "b", "c", "d"]), 3),
            "a, b, c and 1 other"
        );
        assert_eq!(
            name_list(&n(&["a", "b", "c", "d", "e"]), 2),
            "a, b and 3 others"
        );
    }
}
