//! Typing indicators, both ways, as state machines that are told the time
//! (so tests need no clock and no sleeping).
//!
//! **Ours** ([`TypingSender`]): driven by real keystrokes.
//!
//! ```text
//!            key / send START                 send or input cleared / send STOP
//!   Idle ─────────────────────────▶ Typing ─────────────────────────────────▶ Idle
//!                                    │  ▲     no key for IDLE_STOP / send STOP
//!                                    └──┘ key after REFRESH since the last START:
//!                                         send START again
//! ```
//!
//! The server forgets a START after its typing timeout (5 s by default) and
//! tells everyone we stopped; a long message would lose its indicator half
//! way, so a START is repeated every [`REFRESH`] while keys keep coming.
//!
//! **Theirs** ([`TypingIndicator`]): who else is typing, in the order they
//! started, for the line `* alice, bob typing...`.

use std::time::{Duration, Instant};

/// Our indicator stops after this long without a keystroke.
pub const IDLE_STOP: Duration = Duration::from_secs(2);
/// While typing, START is sent again this often (below the server's expiry).
pub const REFRESH: Duration = Duration::from_secs(3);
/// Someone else's indicator is dropped after this long without news, in case
/// their STOP never comes (the server normally sends one after its expiry).
pub const OTHERS_EXPIRY: Duration = Duration::from_secs(10);

/// What to tell the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// TYPING_START.
    Start,
    /// TYPING_STOP.
    Stop,
}

/// Our own typing state.
#[derive(Debug, Clone, Default)]
pub struct TypingSender {
    /// `Some` while typing: when the last START was sent and the last key
    /// was pressed.
    typing: Option<(Instant, Instant)>,
}

impl TypingSender {
    /// A sender that is idle.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether we are currently shown as typing.
    pub fn is_typing(&self) -> bool {
        self.typing.is_some()
    }

    /// A key that edits the input was pressed at `now`.
    pub fn key(&mut self, now: Instant) -> Option<Signal> {
        match &mut self.typing {
            None => {
                self.typing = Some((now, now));
                Some(Signal::Start)
            }
            Some((started, last_key)) => {
                *last_key = now;
                if now.saturating_duration_since(*started) >= REFRESH {
                    *started = now;
                    Some(Signal::Start)
                } else {
                    None
                }
            }
        }
    }

    /// The message was sent, or the input emptied: we stopped typing.
    pub fn stop(&mut self) -> Option<Signal> {
        self.typing.take().map(|_| Signal::Stop)
    }

    /// Time passed: STOP once no key came for [`IDLE_STOP`].
    pub fn tick(&mut self, now: Instant) -> Option<Signal> {
        match self.typing {
            Some((_, last_key)) if now.saturating_duration_since(last_key) >= IDLE_STOP => {
                self.stop()
            }
            _ => None,
        }
    }

    /// When [`tick`](Self::tick) next has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        self.typing.map(|(_, last_key)| last_key + IDLE_STOP)
    }

    /// Forget the state without a STOP (the connection it belonged to is
    /// gone; a new one starts idle).
    pub fn reset(&mut self) {
        self.typing = None;
    }
}

/// Who else is typing.
#[derive(Debug, Clone, Default)]
pub struct TypingIndicator {
    /// Names (sanitised) in the order they started, with when we last heard.
    typing: Vec<(String, Instant)>,
}

impl TypingIndicator {
    /// Nobody typing.
    pub fn new() -> Self {
        Self::default()
    }

    /// `name` started (or is still) typing. Returns whether the line changed.
    pub fn start(&mut self, name: &str, now: Instant) -> bool {
        match self.typing.iter_mut().find(|(n, _)| n == name) {
            Some((_, seen)) => {
                *seen = now;
                false
            }
            None => {
                self.typing.push((name.to_owned(), now));
                true
            }
        }
    }

    /// `name` stopped typing, sent a message, or left. Returns whether the
    /// line changed.
    pub fn stop(&mut self, name: &str) -> bool {
        let before = self.typing.len();
        self.typing.retain(|(n, _)| n != name);
        self.typing.len() != before
    }

    /// Drops indicators older than [`OTHERS_EXPIRY`]. Returns whether the
    /// line changed.
    pub fn tick(&mut self, now: Instant) -> bool {
        let before = self.typing.len();
        self.typing
            .retain(|(_, seen)| now.saturating_duration_since(*seen) < OTHERS_EXPIRY);
        self.typing.len() != before
    }

    /// Nobody is typing any more (the connection was lost).
    pub fn clear(&mut self) -> bool {
        let changed = !self.typing.is_empty();
        self.typing.clear();
        changed
    }

    /// `* alice typing...`, `* alice, bob typing...`, or `None`.
    pub fn line(&self) -> Option<String> {
        if self.typing.is_empty() {
            return None;
        }
        let names: Vec<String> = self.typing.iter().map(|(n, _)| n.clone()).collect();
        Some(format!(
            "* {} typing...",
            super::display::name_list(&names, 3)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn first_key_starts_idle_stops() {
        let t0 = Instant::now();
        let mut s = TypingSender::new();
        assert_eq!(s.tick(t0), None);
        assert_eq!(s.deadline(), None);
        assert_eq!(s.key(t0), Some(Signal::Start));
        assert_eq!(s.key(at(t0, 500)), None, "later keys say nothing");
        assert_eq!(s.deadline(), Some(at(t0, 2500)));
        assert_eq!(s.tick(at(t0, 2499)), None);
        assert_eq!(s.tick(at(t0, 2500)), Some(Signal::Stop));
        assert!(!s.is_typing());
        assert_eq!(s.tick(at(t0, 9000)), None, "STOP once");
        assert_eq!(s.key(at(t0, 9000)), Some(Signal::Start), "typing again");
    }

    #[test]
    fn sending_stops() {
        let t0 = Instant::now();
        let mut s = TypingSender::new();
        assert_eq!(s.stop(), None, "no STOP without a START");
        s.key(t0);
        assert_eq!(s.stop(), Some(Signal::Stop));
        assert_eq!(s.tick(at(t0, 5000)), None);
    }

    #[test]
    fn long_typing_refreshes_start() {
        let t0 = Instant::now();
        let mut s = TypingSender::new();
        assert_eq!(s.key(t0), Some(Signal::Start));
        let mut starts = 0;
        for ms in (250..=7000).step_by(250) {
            if s.key(at(t0, ms)) == Some(Signal::Start) {
                starts += 1;
            }
            assert_eq!(s.tick(at(t0, ms)), None, "keys keep it alive");
        }
        assert_eq!(starts, 2, "refreshed at 3 s and 6 s");
    }

    #[test]
    fn reset_forgets_without_stop() {
        let t0 = Instant::now();
        let mut s = TypingSender::new();
        s.key(t0);
        s.reset();
        assert_eq!(s.tick(at(t0, 3000)), None);
        assert_eq!(s.key(at(t0, 3000)), Some(Signal::Start));
    }

    #[test]
    fn indicator_lines() {
        let t0 = Instant::now();
        let mut i = TypingIndicator::new();
        assert_eq!(i.line(), None);
        assert!(i.start("alice", t0));
        assert_eq!(i.line().as_deref(), Some("* alice typing..."));
        assert!(!i.start("alice", at(t0, 100)), "a repeat changes nothing");
        assert!(i.start("bob", at(t0, 200)));
        assert_eq!(i.line().as_deref(), Some("* alice, bob typing..."));
        i.start("carol", t0);
        i.start("dave", t0);
        assert_eq!(
            i.line().as_deref(),
            Some("* alice, bob, carol and 1 other typing...")
        );
        assert!(i.stop("carol"));
        assert!(i.stop("dave"));
        assert!(!i.stop("nobody"));
        assert!(i.stop("alice"));
        assert_eq!(i.line().as_deref(), Some("* bob typing..."));
    }

    #[test]
    fn indicator_expires_without_stop() {
        let t0 = Instant::now();
        let mut i = TypingIndicator::new();
        i.start("alice", t0);
        i.start("bob", at(t0, 5000));
        assert!(!i.tick(at(t0, 9999)));
        assert!(i.tick(at(t0, 10_000)));
        assert_eq!(i.line().as_deref(), Some("* bob typing..."));
        assert!(i.clear());
        assert!(!i.clear());
    }
}
