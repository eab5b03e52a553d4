//! The TUI's state and what each key does. No terminal I/O: keys come in as
//! `crossterm` events, what to send goes out as [`Outgoing`], and the time is
//! passed in, so the whole keyboard behaviour is unit-testable.

use std::collections::VecDeque;
use std::time::Instant;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::command::{self, Command};
use super::display::{DisplayLine, Entry, Speaker, now_unix};
use super::input::Input;
use super::sanitize::sanitize;
use super::session::{Outgoing, Update};
use super::typing::TypingSender;
use super::view::{Change, ChatView, Connection};
use crate::chat::DEFAULT_ROOM;

/// Lines kept in the message pane; older ones are dropped.
pub const MAX_LINES: usize = 5_000;

/// Everything the TUI shows and edits.
#[derive(Debug)]
pub struct App {
    /// Conversation state shared with line mode.
    pub view: ChatView,
    /// The message pane's lines, oldest first.
    pub lines: Vec<DisplayLine>,
    /// The typing line, if anyone is typing.
    pub typing_line: Option<String>,
    /// Messages typed while not connected, oldest first: shown below the
    /// conversation marked pending until the server's echo of each arrives
    /// (the session sends them, in order, once it is back in the room).
    pub pending: VecDeque<String>,
    /// The input line.
    pub input: Input,
    /// Rows scrolled up from the bottom (0: following new messages).
    pub scroll: usize,
    /// Lines that arrived while scrolled up.
    pub unread: usize,
    /// Rows in the message pane at the last draw (for paging).
    pub page: usize,
    /// Whether the member list is shown (F2, Ctrl-N, `/names`).
    pub show_members: bool,
    /// The server address, for the status bar.
    pub address: String,
    /// Set once the user asked to leave.
    pub quitting: bool,
    /// Our typing indicator.
    typing: TypingSender,
}

impl App {
    /// A fresh screen for `user` in `room` at `address`.
    pub fn new(user: &str, room: &str, address: &str) -> Self {
        let mut view = ChatView::new(user);
        view.set_room(room);
        App {
            view,
            lines: Vec::new(),
            typing_line: None,
            pending: VecDeque::new(),
            input: Input::new(),
            scroll: 0,
            unread: 0,
            page: 10,
            show_members: false,
            address: address.to_owned(),
            quitting: false,
            typing: TypingSender::new(),
        }
    }

    /// Adds a line to the pane.
    pub fn push(&mut self, line: DisplayLine) {
        if self.scroll > 0 {
            self.unread += 1;
        }
        self.lines.push(line);
        if self.lines.len() > MAX_LINES {
            let excess = self.lines.len() - MAX_LINES;
            self.lines.drain(..excess);
        }
    }

    fn apply(&mut self, changes: Vec<Change>) {
        for change in changes {
            match change {
                Change::Line(line) => {
                    self.delivered(&line);
                    self.push(line);
                }
                Change::Typing(line) => self.typing_line = line,
            }
        }
    }

    /// A line of ours came back from the server: the pending message it is
    /// (the first with its text) is pending no more. A message the session
    /// gave up on ([`Update::NotSent`]) is not pending either.
    fn delivered(&mut self, line: &DisplayLine) {
        let text = match &line.entry {
            Entry::Message {
                from: Speaker::You,
                text,
            } => text.clone(),
            Entry::Action {
                own: true, text, ..
            } => format!("{}{text}", super::display::ACTION_PREFIX),
            _ => return,
        };
        if let Some(at) = self.pending.iter().position(|p| sanitize(p) == text) {
            self.pending.remove(at);
        }
    }

    /// Applies an update from the session.
    pub fn update(&mut self, update: &Update, now: Instant) {
        if let Update::NotSent(text) = update {
            if let Some(at) = self.pending.iter().position(|p| p == text) {
                self.pending.remove(at);
            }
        }
        if let Update::Disconnected { .. } | Update::Switched { .. } = update {
            // The indicator belonged to the lost call, or the room left.
            self.typing.reset();
        }
        if let Update::Switched { .. } = update {
            // To the bottom, to see the new room.
            self.scroll_down(usize::MAX);
        }
        let changes = self.view.update(update, now);
        self.apply(changes);
    }

    /// Time passed: our typing may stop, theirs may expire.
    pub fn tick(&mut self, now: Instant) -> Vec<Outgoing> {
        let changes = self.view.tick(now);
        self.apply(changes);
        self.typing
            .tick(now)
            .map(Outgoing::Typing)
            .into_iter()
            .collect()
    }

    /// When [`tick`](Self::tick) next has work (our idle typing stop).
    pub fn deadline(&self) -> Option<Instant> {
        self.typing.deadline()
    }

    /// Scrolls up by `rows` (toward older lines).
    pub fn scroll_up(&mut self, rows: usize) {
        // The renderer clamps to the top, knowing the wrapped height.
        self.scroll = self.scroll.saturating_add(rows);
    }

    /// Scrolls down by `rows`; at the bottom the unread count clears.
    pub fn scroll_down(&mut self, rows: usize) {
        self.scroll = self.scroll.saturating_sub(rows);
        if self.scroll == 0 {
            self.unread = 0;
        }
    }

    /// An edit happened: typing started or continues, or stopped when the
    /// line is now empty or a command (`/join …` tells the room nothing).
    fn edited(&mut self, now: Instant, out: &mut Vec<Outgoing>) {
        let signal = if self.input.is_empty() || command::is_command(self.input.text()) {
            self.typing.stop()
        } else {
            self.typing.key(now)
        };
        out.extend(signal.map(Outgoing::Typing));
    }

    /// Pasted text goes into the input line.
    pub fn paste(&mut self, text: &str, now: Instant) -> Vec<Outgoing> {
        let mut out = Vec::new();
        self.input.insert_str(text);
        self.edited(now, &mut out);
        out
    }

    /// Handles a key; returns what to send.
    pub fn key(&mut self, key: KeyEvent, now: Instant) -> Vec<Outgoing> {
        let mut out = Vec::new();
        if key.kind == KeyEventKind::Release {
            return out;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let moved = key
            .modifiers
            .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT | KeyModifiers::SHIFT);
        // Each arm says whether it edited the input (which drives typing).
        let edited = match key.code {
            KeyCode::Char('c') if ctrl => self.quit(&mut out),
            KeyCode::Char('d') if ctrl && self.input.is_empty() => self.quit(&mut out),
            KeyCode::Char('d') if ctrl => self.input.delete(),
            KeyCode::Char('w') if ctrl => self.input.delete_word(),
            KeyCode::Char('u') if ctrl => self.input.delete_to_start(),
            KeyCode::Char('k') if ctrl => self.input.delete_to_end(),
            KeyCode::Char('a') if ctrl => {
                self.input.home();
                false
            }
            KeyCode::Char('e') if ctrl => {
                self.input.end();
                false
            }
            KeyCode::Char('n') if ctrl => {
                self.toggle_members(&mut out);
                false
            }
            KeyCode::F(2) => {
                self.toggle_members(&mut out);
                false
            }
            KeyCode::Char(_) if ctrl || key.modifiers.contains(KeyModifiers::ALT) => false,
            KeyCode::Char(c) => {
                self.input.insert(c);
                true
            }
            KeyCode::Backspace => self.input.backspace(),
            KeyCode::Delete => self.input.delete(),
            KeyCode::Tab => {
                let members: Vec<String> = self.view.members().map(str::to_owned).collect();
                self.input.complete(members.iter().map(String::as_str))
            }
            KeyCode::Enter => {
                self.enter(&mut out);
                false
            }
            code => {
                self.navigate(code, ctrl, moved);
                false
            }
        };
        if edited {
            self.edited(now, &mut out);
        }
        out
    }

    /// Keys that move the cursor or scroll the pane.
    fn navigate(&mut self, code: KeyCode, ctrl: bool, moved: bool) {
        let page = self.page.saturating_sub(1).max(1);
        match code {
            KeyCode::Left => self.input.left(),
            KeyCode::Right => self.input.right(),
            KeyCode::Home if ctrl => self.scroll_up(usize::MAX / 2),
            KeyCode::End if ctrl => self.scroll_down(usize::MAX),
            KeyCode::Home => self.input.home(),
            KeyCode::End => self.input.end(),
            KeyCode::PageUp => self.scroll_up(page),
            KeyCode::PageDown => self.scroll_down(page),
            KeyCode::Up if moved || self.input.is_empty() => self.scroll_up(1),
            KeyCode::Down if moved || self.input.is_empty() => self.scroll_down(1),
            KeyCode::Esc => self.scroll_down(usize::MAX),
            _ => {}
        }
    }

    /// Shows or hides the member list; shown, it is refreshed at once
    /// (the event loop refreshes it on a timer while it stays shown).
    fn toggle_members(&mut self, out: &mut Vec<Outgoing>) {
        self.show_members = !self.show_members;
        if self.show_members && *self.view.connection() == Connection::Connected {
            self.view.expect_silent_who();
            out.push(Outgoing::Who);
        }
    }

    /// Asks to leave (once). Returns false: quitting edits nothing.
    fn quit(&mut self, out: &mut Vec<Outgoing>) -> bool {
        if !self.quitting {
            self.quitting = true;
            out.push(Outgoing::Leave);
        }
        false
    }

    /// `/join`: the session moves; while not connected it will once it is.
    fn join(&mut self, room: String, out: &mut Vec<Outgoing>) {
        if *self.view.connection() != Connection::Connected {
            let line = self.view.local(&format!(
                "not connected: will join #{} once connected",
                sanitize(&room)
            ));
            self.push(line);
        }
        out.push(Outgoing::Join(room));
    }

    fn enter(&mut self, out: &mut Vec<Outgoing>) {
        let line = self.input.take();
        let stop = self.typing.stop();
        match command::parse(&line) {
            Command::Say(text) => {
                if *self.view.connection() != Connection::Connected {
                    self.pending.push_back(text.clone());
                }
                out.push(Outgoing::Message(text));
                // Back to the bottom to see it arrive.
                self.scroll_down(usize::MAX);
            }
            Command::Quit => {
                self.quit(out);
            }
            Command::Who => out.push(Outgoing::Who),
            Command::Names => self.toggle_members(out),
            Command::Rooms => out.push(Outgoing::Rooms),
            Command::Join(room) => self.join(room, out),
            Command::Leave if self.view.room() == DEFAULT_ROOM => {
                let line = self.view.local(&format!(
                    "you are in {DEFAULT_ROOM}, the default room: /join ROOM moves, /quit leaves the chat"
                ));
                self.push(line);
            }
            Command::Leave => self.join(DEFAULT_ROOM.to_owned(), out),
            Command::Help => {
                for text in command::HELP {
                    self.push(DisplayLine::new(
                        now_unix(),
                        Entry::Info((*text).to_owned()),
                    ));
                }
            }
            Command::Clear => {
                self.lines.clear();
                self.scroll = 0;
                self.unread = 0;
            }
            Command::Nothing => {}
            Command::Invalid(why) => {
                let line = self.view.local(&why);
                self.push(line);
            }
        }
        // After the message: the server clears the indicator with the
        // message anyway, so peers see both change together.
        out.extend(stop.map(Outgoing::Typing));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat_client::typing::Signal;
    use std::time::Duration;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }
    fn ctrl(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
    }
    fn type_str(app: &mut App, s: &str, now: Instant) -> Vec<Outgoing> {
        s.chars()
            .flat_map(|c| app.key(key(KeyCode::Char(c)), now))
            .collect()
    }

    #[test]
    fn typing_then_enter_sends_start_message_stop() {
        let t = Instant::now();
        let mut app = App::new("alice", "lobby", "x");
        let mut sent = type_str(&mut app, "hi", t);
        sent.extend(app.key(key(KeyCode::Enter), t));
        assert_eq!(
            sent,
            [
                Outgoing::Typing(Signal::Start),
                Outgoing::Message("hi".into()),
                Outgoing::Typing(Signal::Stop),
            ]
        );
        assert!(app.input.is_empty());
    }

    #[test]
    fn idle_typing_stops_and_clearing_stops() {
        let t = Instant::now();
        let mut app = App::new("alice", "lobby", "x");
        type_str(&mut app, "h", t);
        assert_eq!(app.deadline(), Some(t + Duration::from_secs(2)));
        assert_eq!(
            app.tick(t + Duration::from_secs(2)),
            [Outgoing::Typing(Signal::Stop)]
        );
        assert_eq!(
            type_str(&mut app, "i", t + Duration::from_secs(3)),
            [Outgoing::Typing(Signal::Start)]
        );
        // Erasing everything is not typing any more.
        app.key(key(KeyCode::Backspace), t);
        assert_eq!(
            app.key(key(KeyCode::Backspace), t),
            [Outgoing::Typing(Signal::Stop)]
        );
    }

    #[test]
    fn typing_a_command_is_not_typing() {
        let t = Instant::now();
        let mut app = App::new("alice", "lobby", "x");
        assert!(type_str(&mut app, "/join tea", t).is_empty());
        app.key(key(KeyCode::Enter), t);
        assert_eq!(
            type_str(&mut app, "/me waves", t),
            [Outgoing::Typing(Signal::Start)],
            "an action is said: typing from the space after /me"
        );
        app.key(ctrl('u'), t);
        assert_eq!(
            type_str(&mut app, "//x", t),
            [Outgoing::Typing(Signal::Start)]
        );
    }

    #[test]
    fn quitting() {
        let t = Instant::now();
        let mut app = App::new("alice", "lobby", "x");
        assert_eq!(app.key(ctrl('c'), t), [Outgoing::Leave]);
        assert!(app.quitting);
        assert!(app.key(ctrl('c'), t).is_empty(), "leave once");

        let mut app = App::new("alice", "lobby", "x");
        type_str(&mut app, "ab", t);
        app.key(key(KeyCode::Left), t);
        app.key(ctrl('d'), t);
        assert_eq!(app.input.text(), "a", "Ctrl-D deletes when there is text");
        app.key(ctrl('u'), t);
        assert_eq!(app.key(ctrl('d'), t), [Outgoing::Leave]);

        let mut app = App::new("alice", "lobby", "x");
        type_str(&mut app, "/quit", t);
        assert!(app.key(key(KeyCode::Enter), t).contains(&Outgoing::Leave));
    }

    #[test]
    fn commands() {
        let t = Instant::now();
        let mut app = App::new("alice", "lobby", "x");
        type_str(&mut app, "/who", t);
        assert!(app.key(key(KeyCode::Enter), t).contains(&Outgoing::Who));
        type_str(&mut app, "/help", t);
        app.key(key(KeyCode::Enter), t);
        assert_eq!(app.lines.len(), command::HELP.len());
        type_str(&mut app, "/clear", t);
        app.key(key(KeyCode::Enter), t);
        assert!(app.lines.is_empty());
        type_str(&mut app, "/bogus", t);
        let sent = app.key(key(KeyCode::Enter), t);
        assert!(!sent.iter().any(|o| matches!(o, Outgoing::Message(_))));
        assert!(app.lines[0].plain().contains("unknown command"));
    }

    #[test]
    fn rooms_and_the_member_list() {
        let t = Instant::now();
        let mut app = App::new("alice", "lobby", "x");
        // What is sent besides typing signals (a command typed is typing).
        let enter = |app: &mut App| -> Vec<Outgoing> {
            let mut sent = app.key(key(KeyCode::Enter), t);
            sent.retain(|o| !matches!(o, Outgoing::Typing(_)));
            sent
        };
        // Not connected yet: the /join waits, and says so.
        type_str(&mut app, "/join #tea", t);
        assert_eq!(enter(&mut app), [Outgoing::Join("tea".into())]);
        assert!(
            app.lines[0]
                .plain()
                .contains("will join #tea once connected")
        );
        app.update(&Update::Connected { reconnected: false }, t);
        // In lobby, /leave has nowhere to go.
        type_str(&mut app, "/leave", t);
        assert!(enter(&mut app).is_empty());
        assert!(app.lines.last().unwrap().plain().contains("default room"));
        app.update(&Update::Switched { room: "tea".into() }, t);
        assert_eq!(app.view.room(), "tea");
        type_str(&mut app, "/leave", t);
        assert_eq!(enter(&mut app), [Outgoing::Join("lobby".into())]);
        type_str(&mut app, "/rooms", t);
        assert_eq!(enter(&mut app), [Outgoing::Rooms]);
        // F2, Ctrl-N and /names toggle the list; shown, it is refreshed.
        assert_eq!(app.key(key(KeyCode::F(2)), t), [Outgoing::Who]);
        assert!(app.show_members);
        assert!(app.key(ctrl('n'), t).is_empty());
        assert!(!app.show_members);
        type_str(&mut app, "/names", t);
        assert_eq!(enter(&mut app), [Outgoing::Who]);
        assert!(app.show_members);
    }

    #[test]
    fn scrolling_keys() {
        let t = Instant::now();
        let mut app = App::new("alice", "lobby", "x");
        app.page = 11;
        app.key(key(KeyCode::PageUp), t);
        assert_eq!(app.scroll, 10);
        app.key(key(KeyCode::Up), t);
        assert_eq!(app.scroll, 11, "Up scrolls while the input is empty");
        app.push(DisplayLine::notice(0, "new"));
        assert_eq!(app.unread, 1);
        type_str(&mut app, "x", t);
        app.key(key(KeyCode::Up), t);
        assert_eq!(app.scroll, 11, "but not while typing");
        app.key(KeyEvent::new(KeyCode::Up, KeyModifiers::CONTROL), t);
        assert_eq!(app.scroll, 12, "unless with a modifier");
        app.key(key(KeyCode::PageDown), t);
        assert_eq!(app.scroll, 2);
        app.key(key(KeyCode::Esc), t);
        assert_eq!((app.scroll, app.unread), (0, 0));
    }

    #[test]
    fn tab_completes_members() {
        let t = Instant::now();
        let mut app = App::new("alice", "lobby", "x");
        app.update(
            &Update::Who(Ok(crate::pb::chat::WhoResponse {
                room: "lobby".into(),
                users: vec!["alice".into(), "bob".into()],
                listeners: 0,
                ..Default::default()
            })),
            t,
        );
        type_str(&mut app, "b", t);
        app.key(key(KeyCode::Tab), t);
        assert_eq!(app.input.text(), "bob: ");
    }

    #[test]
    fn lines_typed_while_not_connected_are_pending_until_echoed() {
        use crate::pb::chat::{ChatMessageEvent, ServerEvent, SystemEvent, server_event};
        let t = Instant::now();
        let mut app = App::new("alice", "lobby", "x");
        type_str(&mut app, "one", t);
        app.key(key(KeyCode::Enter), t);
        type_str(&mut app, "/me waves", t);
        app.key(key(KeyCode::Enter), t);
        assert_eq!(app.pending, ["one", "/me waves"]);
        let echo = |text: &str| {
            Update::Event(ServerEvent {
                event: Some(server_event::Event::ChatMessage(ChatMessageEvent {
                    username: "alice".into(),
                    message: text.into(),
                    ..Default::default()
                })),
            })
        };
        app.update(&Update::Connected { reconnected: false }, t);
        app.update(
            &Update::Event(ServerEvent {
                event: Some(server_event::Event::SystemEvent(SystemEvent {
                    end_of_history: true,
                    ..Default::default()
                })),
            }),
            t,
        );
        app.update(&echo("one"), t);
        assert_eq!(app.pending, ["/me waves"]);
        app.update(&echo("/me waves"), t);
        assert!(app.pending.is_empty());
        // Connected: nothing is pending.
        type_str(&mut app, "two", t);
        app.key(key(KeyCode::Enter), t);
        assert!(app.pending.is_empty());
    }

    #[test]
    fn lines_are_capped() {
        let mut app = App::new("alice", "lobby", "x");
        for i in 0..MAX_LINES + 10 {
            app.push(DisplayLine::notice(0, &i.to_string()));
        }
        assert_eq!(app.lines.len(), MAX_LINES);
        assert_eq!(app.lines[0].plain(), "-- 10 --");
    }
}
