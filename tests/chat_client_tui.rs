//! End-to-end tests of the `chat-client` TUI: the real binary in a
//! pseudo-terminal of a fixed size (`portable-pty`), its output parsed into a
//! screen (`vt100`), keys typed into the terminal as a person would, and the
//! screen read back row by row — the typing line, the input line and where
//! the cursor is, what a peer's escape sequences turn into.
//!
//! Against a real `chat-server` process, or (to send what a real server
//! never would) a hostile server in this process, as in `chat_client.rs`.
//!
//! Every wait polls the screen with a deadline; nothing sleeps for a fixed
//! time.
//!
//! The screen, 80×20:
//!
//! ```text
//! row 0        status bar      " #lobby · alice · 127.0.0.1:… · connected · 2 here"
//! rows 1..=17  message pane    "12:01 [bob] hi" (from the top down)
//! row 18       typing line     "* bob typing..."
//! row 19       input line      "> half-typ"
//! ```
//!
//! `capture_quickstart_screens` (ignored) prints the screens of a short
//! conversation for `docs/quickstart.md`.

mod common;

use common::WAIT;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::num::NonZeroU16;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use common::hostile::{Hostile, message, notice};
use common::{Server, chat_server_on, free_port};
use portable_pty::{CommandBuilder, MasterPty, PtySize, native_pty_system};

/// The terminal's size.
const ROWS: u16 = 20;
const COLS: u16 = 80;
/// Rows of the layout.
const STATUS_ROW: u16 = 0;
const TYPING_ROW: u16 = ROWS - 2;
const INPUT_ROW: u16 = ROWS - 1;

/// How soon a client must be gone once its terminal is, or once it is
/// told to terminate: "promptly", as a person would judge it.
const GONE_WITHIN: Duration = Duration::from_secs(1);

/// A `chat-server` process without a rate limit on `port`, with `extra`
/// arguments; killed when dropped.
fn chat_server(port: u16, extra: &[&str]) -> Server {
    chat_server_on(port, &[&["--rate-limit", "0"], extra].concat())
}

/// Records what the terminal was asked to do besides drawing text.
#[derive(Default)]
struct Recorder {
    /// Window titles set (OSC 0/2).
    titles: Vec<Vec<u8>>,
}

impl vt100::Callbacks for Recorder {
    fn set_window_title(&mut self, _: &mut vt100::Screen, title: &[u8]) {
        self.titles.push(title.to_vec());
    }
    fn set_window_icon_name(&mut self, _: &mut vt100::Screen, name: &[u8]) {
        self.titles.push(name.to_vec());
    }
}

/// The terminal's side of the pty: every byte the client wrote, and the
/// screen they make.
struct Terminal {
    parser: vt100::Parser<Recorder>,
    raw: Vec<u8>,
}

/// The screen at one moment.
struct Snapshot {
    rows: Vec<String>,
    cursor: (u16, u16),
    cursor_hidden: bool,
    screen: vt100::Screen,
    /// How many output bytes had been read.
    raw_len: usize,
}

impl Snapshot {
    /// Row `i` without trailing blanks.
    fn row(&self, i: u16) -> &str {
        self.rows[usize::from(i)].trim_end()
    }

    /// The message pane's rows, without trailing blanks.
    fn pane(&self) -> Vec<&str> {
        (STATUS_ROW + 1..TYPING_ROW).map(|i| self.row(i)).collect()
    }

    /// The first pane row whose text after the time (`HH:MM `) is `text`.
    fn pane_row(&self, text: &str) -> Option<u16> {
        (STATUS_ROW + 1..TYPING_ROW).find(|&i| pane_text(self.row(i)) == Some(text))
    }

    fn has_line(&self, text: &str) -> bool {
        self.pane_row(text).is_some()
    }

    fn dump(&self) -> String {
        let mut out = String::new();
        for (i, row) in self.rows.iter().enumerate() {
            out.push_str(&format!("{i:2}|{}\n", row.trim_end()));
        }
        out.push_str(&format!("cursor {:?}", self.cursor));
        out
    }
}

/// A pane row's text after its `HH:MM ` time.
fn pane_text(row: &str) -> Option<&str> {
    let (time, rest) = row.split_at_checked(6)?;
    let b = time.as_bytes();
    let is_time = b[..2].iter().all(u8::is_ascii_digit)
        && b[2] == b':'
        && b[3..5].iter().all(u8::is_ascii_digit)
        && b[5] == b' ';
    is_time.then_some(rest)
}

/// A `chat-client` in a pseudo-terminal; killed (SIGHUP, then SIGKILL) when
/// dropped.
struct Tui {
    name: String,
    child: Box<dyn portable_pty::Child + Send + Sync>,
    /// The keyboard; `None` once the terminal is closed.
    keys: Option<Box<dyn Write + Send>>,
    term: Arc<Mutex<Terminal>>,
    /// Kept open: closing it (and every copy of it) hangs the client up.
    master: Option<Box<dyn MasterPty + Send>>,
    /// Tells the output reader to close its copy of the master after its
    /// next read.
    stop_reading: Arc<AtomicBool>,
    /// Receives once the output reader has closed its copy.
    reader_done: mpsc::Receiver<()>,
}

impl Tui {
    /// `chat-client --address 127.0.0.1:PORT --user USER [--room ROOM]`.
    fn start(port: u16, user: &str, room: Option<&str>) -> Tui {
        Tui::spawn(port, user, room, false)
    }

    /// The same client in a session of its own (`setsid -w`): the terminal
    /// is not its controlling terminal, so its hangup sends no SIGHUP, and
    /// the client learns of it only from the terminal itself (the case of a
    /// client started in the background, or under `nohup`).
    fn start_without_sighup(port: u16, user: &str, room: Option<&str>) -> Tui {
        Tui::spawn(port, user, room, true)
    }

    fn spawn(port: u16, user: &str, room: Option<&str>, own_session: bool) -> Tui {
        let pair = native_pty_system()
            .openpty(PtySize {
                rows: ROWS,
                cols: COLS,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("cannot open a pty");
        let client = env!("CARGO_BIN_EXE_chat-client");
        let mut cmd = if own_session {
            // The shell and `setsid -w` ignore the hangup and wait for the
            // client, so their exit is the client's.
            let mut cmd = CommandBuilder::new("sh");
            cmd.args(["-c", r#"trap '' HUP; exec setsid -w "$0" "$@""#, client]);
            cmd
        } else {
            CommandBuilder::new(client)
        };
        cmd.args(["--address", &format!("127.0.0.1:{port}"), "--user", user]);
        if let Some(room) = room {
            cmd.args(["--room", room]);
        }
        cmd.env("TERM", "xterm-256color");
        cmd.env_remove("RUST_LOG");
        let child = pair
            .slave
            .spawn_command(cmd)
            .expect("cannot start chat-client");
        // Only the client holds the terminal's end now: its exit ends reads.
        drop(pair.slave);

        let mut reader = pair.master.try_clone_reader().expect("pty reader");
        let keys = pair.master.take_writer().expect("pty writer");
        let term = Arc::new(Mutex::new(Terminal {
            parser: vt100::Parser::new_with_callbacks(
                NonZeroU16::new(ROWS).unwrap(),
                NonZeroU16::new(COLS).unwrap(),
                0,
                Recorder::default(),
            ),
            raw: Vec::new(),
        }));
        let sink = Arc::clone(&term);
        let stop_reading = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&stop_reading);
        let (done, reader_done) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut term = sink.lock().unwrap();
                        term.parser.process(&buf[..n]);
                        term.raw.extend_from_slice(&buf[..n]);
                    }
                }
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
            drop(reader);
            let _ = done.send(());
        });
        Tui {
            name: user.to_owned(),
            child,
            keys: Some(keys),
            term,
            master: Some(pair.master),
            stop_reading,
            reader_done,
        }
    }

    /// Types `keys` (`\r` is Enter).
    fn type_keys(&mut self, keys: &str) {
        let k = self.keys.as_mut().expect("the terminal is closed");
        k.write_all(keys.as_bytes()).unwrap();
        k.flush().unwrap();
    }

    /// Closes the terminal under the client, as a killed tmux server or a
    /// dropped SSH session does: every copy of the pty's master side is
    /// closed, which hangs up the client's side.
    fn close_terminal(&mut self) {
        // The output reader holds a copy of the master, blocked in a read:
        // it closes it after the next output, which a key brings (the
        // client redraws its input line).
        self.stop_reading.store(true, Ordering::Relaxed);
        self.type_keys("x");
        self.reader_done
            .recv_timeout(WAIT)
            .expect("the client never wrote after a key");
        self.keys = None;
        self.master = None;
    }

    /// Sends the client SIGTERM (as `kill` or a service manager does).
    fn terminate(&self) {
        let pid = self.child.process_id().expect("the client's pid");
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill -TERM {pid}: {status:?}");
    }

    /// Waits (at most `within`) for the process to exit; returns whether it
    /// did.
    fn exited_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if let Some(_status) = self.child.try_wait().unwrap() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn snapshot(&self) -> Snapshot {
        let term = self.term.lock().unwrap();
        let screen = term.parser.screen();
        Snapshot {
            rows: screen.rows(0, COLS).collect(),
            cursor: screen.cursor_position(),
            cursor_hidden: screen.hide_cursor(),
            screen: screen.clone(),
            raw_len: term.raw.len(),
        }
    }

    /// Output bytes from `from` on.
    fn raw_since(&self, from: usize) -> Vec<u8> {
        self.term.lock().unwrap().raw[from..].to_vec()
    }

    fn titles(&self) -> Vec<Vec<u8>> {
        self.term.lock().unwrap().parser.callbacks().titles.clone()
    }

    /// Waits until the screen satisfies `pred`, within `within`; returns it.
    fn wait_within(
        &self,
        within: Duration,
        what: &str,
        pred: impl Fn(&Snapshot) -> bool,
    ) -> Snapshot {
        let deadline = Instant::now() + within;
        loop {
            let snap = self.snapshot();
            if pred(&snap) {
                return snap;
            }
            if Instant::now() > deadline {
                panic!(
                    "{}'s screen never showed {what} (within {within:?}):\n{}",
                    self.name,
                    snap.dump()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The screen once the client has stopped writing for a moment: a
    /// whole frame, not one caught half-drawn with the cursor mid-screen.
    fn settled(&self) -> Snapshot {
        let deadline = Instant::now() + WAIT;
        let mut last = self.snapshot().raw_len;
        loop {
            thread::sleep(Duration::from_millis(150));
            let snap = self.snapshot();
            if snap.raw_len == last {
                return snap;
            }
            assert!(
                Instant::now() < deadline,
                "{}'s screen never settled",
                self.name
            );
            last = snap.raw_len;
        }
    }

    fn wait_for(&self, what: &str, pred: impl Fn(&Snapshot) -> bool) -> Snapshot {
        self.wait_within(WAIT, what, pred)
    }

    /// Waits for a pane line whose text (after the time) is `text`.
    fn wait_line(&self, text: &str) -> Snapshot {
        self.wait_for(&format!("the line {text:?}"), |s| s.has_line(text))
    }

    /// Waits until the client is connected, with `here` people in the room.
    fn wait_connected(&self, here: usize) -> Snapshot {
        let want = format!("· connected · {here} here");
        self.wait_for(&format!("{want:?} in the status bar"), |s| {
            s.row(STATUS_ROW).contains(&want)
        })
    }

    /// Asks the client to leave (Ctrl-U to empty the input, `/quit`) and
    /// waits for it to exit cleanly.
    fn quit(&mut self) {
        self.type_keys("\x15/quit\r");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{} exited with {status:?}", self.name);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit:\n{}",
                self.name,
                self.snapshot().dump()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Some(pid) = self.child.process_id() {
                // A client under `setsid -w` is the wrapper's child.
                let _ = Command::new("pkill")
                    .args(["-KILL", "-P", &pid.to_string()])
                    .status();
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Two TUI clients in room `tea`, both connected and seeing each other.
fn alice_and_bob(port: u16) -> (Tui, Tui) {
    let alice = Tui::start(port, "alice", Some("tea"));
    alice.wait_line("-- welcome to tea, alice: you are the only one here --");
    let bob = Tui::start(port, "bob", Some("tea"));
    bob.wait_line("-- welcome to tea, bob: also here: alice --");
    alice.wait_line("* bob joined");
    alice.wait_connected(2);
    bob.wait_connected(2);
    (alice, bob)
}

#[test]
fn typing_indicator_shows_and_clears() {
    let port = free_port();
    // The server's own expiry far away: only the client's idle STOP can
    // clear the indicator within the test's bounds.
    let _server = chat_server(port, &["--typing-timeout-secs", "60"]);
    let (mut alice, mut bob) = alice_and_bob(port);
    let blank = |s: &Snapshot| s.row(TYPING_ROW).is_empty();
    assert!(blank(&alice.snapshot()), "{}", alice.snapshot().dump());

    // Bob types, no Enter: alice sees him typing; bob sees his input.
    bob.type_keys("hel");
    let screen = alice.wait_for("bob typing", |s| s.row(TYPING_ROW) == "* bob typing...");
    assert_eq!(screen.row(INPUT_ROW), ">", "alice's input is untouched");
    let screen = bob.wait_for("bob's input", |s| s.row(INPUT_ROW) == "> hel");
    assert!(
        blank(&screen),
        "no indicator for oneself:\n{}",
        screen.dump()
    );

    // Enter: the message arrives on both screens and alice's indicator goes.
    bob.type_keys("lo\r");
    let screen = alice.wait_for("bob's message and no indicator", |s| {
        s.has_line("[bob] hello") && blank(s)
    });
    assert!(!screen.has_line("[you] hello"), "{}", screen.dump());
    let screen = bob.wait_for("bob's own message", |s| s.has_line("[you] hello"));
    assert_eq!(screen.row(INPUT_ROW), ">", "the input is cleared on send");
    // And stays gone: no late START after the message.
    let screen = alice.settled();
    assert!(blank(&screen), "{}", screen.dump());

    // Bob types and stops: after the client's 2 s idle timer the indicator
    // clears, though the text stays in his input line.
    bob.type_keys("x");
    let typed = Instant::now();
    alice.wait_for("bob typing again", |s| {
        s.row(TYPING_ROW) == "* bob typing..."
    });
    alice.wait_within(
        Duration::from_secs(5),
        "the indicator clear when idle",
        blank,
    );
    let idle = typed.elapsed();
    assert!(
        idle >= Duration::from_millis(1_900),
        "cleared after {idle:?}: before the 2 s idle timer"
    );
    let screen = bob.snapshot();
    assert_eq!(screen.row(INPUT_ROW), "> x", "{}", screen.dump());

    // Typing again starts it again.
    bob.type_keys("y");
    alice.wait_for("bob typing once more", |s| {
        s.row(TYPING_ROW) == "* bob typing..."
    });

    bob.quit();
    alice.wait_line("* bob left");
    alice.wait_for("the indicator gone with bob", blank);
    alice.quit();
}

#[test]
fn incoming_message_keeps_a_half_typed_line() {
    let port = free_port();
    let _server = chat_server(port, &[]);
    let (mut alice, mut bob) = alice_and_bob(port);

    alice.type_keys("half-typ");
    let at_end = (INPUT_ROW, 10); // "> half-typ" is 10 columns
    let before = alice.wait_for("the half-typed line", |s| {
        s.row(INPUT_ROW) == "> half-typ" && s.cursor == at_end
    });
    bob.wait_for("alice typing", |s| s.row(TYPING_ROW) == "* alice typing...");

    bob.type_keys("a message while you type\r");
    alice.wait_line("[bob] a message while you type");
    let after = alice.settled();
    assert_eq!(after.row(INPUT_ROW), "> half-typ", "\n{}", after.dump());
    assert_eq!(after.cursor, at_end, "cursor moved:\n{}", after.dump());
    assert!(!after.cursor_hidden, "cursor hidden:\n{}", after.dump());
    // Only the pane changed: the line landed below the earlier ones.
    let old = before.pane();
    let new = after.pane();
    let kept = old.iter().take_while(|r| !r.is_empty()).count();
    assert_eq!(old[..kept], new[..kept], "\n{}", after.dump());

    // It is the real input, not just what is drawn: finish and send it.
    alice.type_keys("ed\r");
    bob.wait_line("[alice] half-typed");
    alice.wait_line("[you] half-typed");

    bob.quit();
    alice.quit();
}

/// While the server is down, the status bar follows the attempts (one line
/// in the pane per reason, not one per retry), and lines typed meanwhile
/// show as pending, then go out in the order typed once the client is back.
#[test]
fn lines_typed_while_the_server_is_down_are_pending_then_sent_in_order() {
    let port = free_port();
    let server = chat_server(port, &[]);
    let (mut alice, mut bob) = alice_and_bob(port);

    drop(server); // killed: no goodbye
    // Lost (retry in 0.5s), then three refused attempts (1s, 2s, 4s).
    let screen = alice.wait_for("the fourth retry in the status bar", |s| {
        s.row(STATUS_ROW)
            .contains("reconnecting… · retry in 4s · cannot connect")
    });
    let count = |s: &Snapshot, what: &str| s.pane().iter().filter(|r| r.contains(what)).count();
    assert_eq!(count(&screen, "connection lost"), 1, "{}", screen.dump());
    assert_eq!(count(&screen, "cannot connect"), 1, "{}", screen.dump());

    alice.type_keys("one\r");
    alice.type_keys("two\r");
    let screen = alice.wait_for("two pending lines", |s| {
        let pane = s.pane();
        pane.contains(&"--:-- [you] one (pending)") && pane.contains(&"--:-- [you] two (pending)")
    });
    assert!(
        screen.row(STATUS_ROW).contains("2 pending"),
        "{}",
        screen.dump()
    );

    let _server = chat_server(port, &[]);
    let screen = alice.wait_for("both sent, nothing pending", |s| {
        s.has_line("[you] one") && s.has_line("[you] two") && !s.row(STATUS_ROW).contains("pending")
    });
    assert!(
        !screen.pane().iter().any(|r| r.contains("(pending)")),
        "{}",
        screen.dump()
    );
    assert!(
        screen.pane_row("[you] one") < screen.pane_row("[you] two"),
        "{}",
        screen.dump()
    );
    let screen = bob.wait_for("alice's lines", |s| {
        s.has_line("[alice] one") && s.has_line("[alice] two")
    });
    assert!(
        screen.pane_row("[alice] one") < screen.pane_row("[alice] two"),
        "in the order typed:\n{}",
        screen.dump()
    );
    bob.quit();
    alice.quit();
}

/// A terminal that goes away (a killed tmux server, a dropped SSH session)
/// ends the client promptly, and it leaves the room as on `/quit`. Here the
/// hangup also sends the client SIGHUP, as it does to a shell's foreground
/// job.
#[test]
fn a_closed_terminal_ends_the_client() {
    let port = free_port();
    let _server = chat_server(port, &[]);
    let (mut alice, mut bob) = alice_and_bob(port);
    alice.close_terminal();
    assert!(
        alice.exited_within(GONE_WITHIN),
        "alice still runs {GONE_WITHIN:?} after her terminal closed"
    );
    bob.wait_line("* alice left");
    bob.quit();
}

/// The same without SIGHUP: only the terminal's reads and `ioctl`s failing
/// tell the client (before, it read the dead terminal in a loop at full
/// speed, for ever).
#[test]
fn a_closed_terminal_ends_the_client_without_sighup() {
    let port = free_port();
    let _server = chat_server(port, &[]);
    let mut alice = Tui::start_without_sighup(port, "alice", Some("tea"));
    alice.wait_line("-- welcome to tea, alice: you are the only one here --");
    let mut bob = Tui::start(port, "bob", Some("tea"));
    alice.wait_line("* bob joined");
    bob.wait_connected(2);
    alice.close_terminal();
    assert!(
        alice.exited_within(GONE_WITHIN),
        "alice still runs {GONE_WITHIN:?} after her terminal closed"
    );
    bob.wait_line("* alice left");
    bob.quit();
}

/// SIGTERM ends the client promptly: it leaves the room and puts the
/// terminal back (main screen, not the TUI's alternate one). While still
/// dialling, it does not wait for the dial.
#[test]
fn sigterm_ends_the_client() {
    let port = free_port();
    let _server = chat_server(port, &[]);
    let (mut alice, mut bob) = alice_and_bob(port);
    alice.terminate();
    assert!(
        alice.exited_within(GONE_WITHIN),
        "alice still runs {GONE_WITHIN:?} after SIGTERM"
    );
    bob.wait_line("* alice left");
    alice
        .reader_done
        .recv_timeout(WAIT)
        .expect("the terminal's output never ended");
    let screen = alice.snapshot();
    assert!(
        !screen.screen.alternate_screen(),
        "the terminal was not restored:\n{}",
        screen.dump()
    );
    bob.quit();

    // A server that accepts the connection and never answers: the client
    // is still joining (for up to its 5 s connect timeout) when told to go.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let mut carol = Tui::start(silent_port, "carol", None);
    carol.wait_for("the status bar", |s| {
        s.row(STATUS_ROW).contains("connecting")
    });
    carol.terminate();
    assert!(
        carol.exited_within(GONE_WITHIN),
        "carol still runs {GONE_WITHIN:?} after SIGTERM:\n{}",
        carol.snapshot().dump()
    );
}

/// A server that sends what the real one refuses to relay, once the client
/// says something (its screen is drawn by then): a name, a message and a
/// notice full of terminal escape sequences, then a harmless line to know
/// they all arrived.
#[test]
fn escape_sequences_from_peers_are_shown_inert() {
    let server = Hostile {
        on_join: vec![message("mallory", "before")],
        on_message: vec![
            message("eve\x1b[2J", "\x1b]0;pwned\x07hi\r[bob] fake\x1b[H\x1b[31m"),
            notice("\u{9b}31mred\u{202e}"),
            message("mallory", "after"),
        ],
    }
    .start();

    let mut alice = Tui::start(server.port, "alice", None);
    alice.wait_line("[mallory] before");
    let before = alice.settled();
    let before_row = before.pane_row("[mallory] before").unwrap();
    let status = before.row(STATUS_ROW).to_owned();
    assert!(status.starts_with(" #lobby · alice"), "{}", before.dump());

    alice.type_keys("go\r");
    alice.wait_line("[mallory] after");
    let after = alice.settled();
    let raw = alice.raw_since(before.raw_len);

    // Shown as text, on the rows they should be on.
    let hostile = r"[eve\x1b[2J] \x1b]0;pwned\x07hi\x0d[bob] fake\x1b[H\x1b[31m";
    assert!(after.has_line(hostile), "\n{}", after.dump());
    let notice = r"-- \x9b31mred\u{202e} --";
    assert!(after.has_line(notice), "\n{}", after.dump());
    // Nothing cleared, moved or overwritten: the earlier line is where it
    // was, the status bar and the input line are intact.
    assert_eq!(
        after.pane_row("[mallory] before"),
        Some(before_row),
        "\n{}",
        after.dump()
    );
    assert_eq!(after.row(STATUS_ROW), status, "\n{}", after.dump());
    assert_eq!(after.row(INPUT_ROW), ">", "\n{}", after.dump());
    assert_eq!(after.cursor, (INPUT_ROW, 2), "\n{}", after.dump());
    assert!(
        !after.pane().iter().any(|r| r.starts_with("[bob]")),
        "a faked line:\n{}",
        after.dump()
    );
    // Not coloured by the injected CSI: "red" is drawn like the rest of
    // the notice.
    let row = after.pane_row(notice).unwrap();
    let col = u16::try_from(after.row(row).find("red").unwrap()).unwrap();
    let dash = after.screen.cell(row, 6).unwrap().fgcolor();
    let red = after.screen.cell(row, col).unwrap().fgcolor();
    assert_eq!(red, dash, "the notice changed colour mid-way");
    // The terminal was never told to set its title, and none of the
    // sequences went out raw.
    assert!(alice.titles().is_empty(), "title set: {:?}", alice.titles());
    for bad in [&b"\x1b]"[..], b"\x1b[2J", b"\xc2\x9b", b"pwned\x07", b"\r["] {
        assert!(
            !raw.windows(bad.len()).any(|w| w == bad),
            "{:?} reached the terminal",
            String::from_utf8_lossy(bad)
        );
    }

    alice.quit();
}

/// Prints the screens of a short conversation for `docs/quickstart.md`:
///
/// ```text
/// cargo test --test chat_client_tui -- --ignored --nocapture capture_quickstart_screens
/// ```
///
/// The server listens on the quick start's default port, 50053, when it is
/// free (so the status bar reads as it will for a reader), on another port
/// otherwise; the clients join the default room, as in the quick start.
#[test]
#[ignore = "prints screens for the docs"]
fn capture_quickstart_screens() {
    let port = if TcpListener::bind("127.0.0.1:50053").is_ok() {
        50053
    } else {
        free_port()
    };
    let _server = chat_server(port, &[]);
    let mut alice = Tui::start(port, "alice", None);
    alice.wait_connected(1);
    let mut bob = Tui::start(port, "bob", None);
    alice.wait_line("* bob joined");
    bob.wait_connected(2);

    alice.type_keys("hi bob! did the release build pass?\r");
    bob.wait_line("[alice] hi bob! did the release build pass?");
    bob.type_keys("yes, all green. tagging v0.1.0 now\r");
    alice.wait_line("[bob] yes, all green. tagging v0.1.0 now");
    alice.type_keys("/me does a little dance\r");
    bob.wait_line("* alice does a little dance");
    bob.type_keys("/who\r");
    bob.wait_line("-- in lobby: alice, bob (2) --");
    alice.type_keys("great, I'll write the ann");
    bob.wait_for("alice typing", |s| s.row(TYPING_ROW) == "* alice typing...");
    alice.wait_for("the half-typed line", |s| {
        s.row(INPUT_ROW) == "> great, I'll write the ann"
    });

    for tui in [&alice, &bob] {
        let snap = tui.snapshot();
        println!("--- {} ({COLS}x{ROWS}) ---", tui.name);
        for row in &snap.rows {
            println!("{}", row.trim_end());
        }
    }
    bob.quit();
    alice.quit();
}

/// The member list's first column (the client draws it in the rightmost
/// 20 columns of the message pane).
const MEMBERS_COL: usize = (COLS - 20) as usize;

impl Snapshot {
    /// The member list's rows (`"│ alice"`), without trailing blanks; when
    /// it is hidden, whatever the message pane has in those columns.
    fn members(&self) -> Vec<String> {
        (STATUS_ROW + 1..TYPING_ROW)
            .map(|i| {
                let row: String = self.rows[usize::from(i)]
                    .chars()
                    .skip(MEMBERS_COL)
                    .collect();
                row.trim_end().to_owned()
            })
            .collect()
    }

    /// Whether the member list is shown: its border down the left.
    fn members_shown(&self) -> bool {
        self.members().iter().all(|r| r.starts_with('│'))
    }

    /// How many pane rows show `text` after their time.
    fn count_line(&self, text: &str) -> usize {
        (STATUS_ROW + 1..TYPING_ROW)
            .filter(|&i| pane_text(self.row(i)) == Some(text))
            .count()
    }
}

/// `/join` moves to another room on the same connection: the status bar
/// names it, a separator line divides the rooms, the new room's history
/// and live traffic follow, and the room left sees us go. Back in a room,
/// the client resumes: it shows what was said meanwhile, and nothing it
/// had shown already. `/leave` goes back to lobby, and says so in lobby.
#[test]
fn join_moves_between_rooms_and_resumes_each() {
    let port = free_port();
    let _server = chat_server(port, &[]);
    let (mut alice, mut bob) = alice_and_bob(port);
    bob.type_keys("first in tea\r");
    alice.wait_line("[bob] first in tea");
    let mut carol = Tui::start(port, "carol", Some("kitchen"));
    carol.wait_connected(1);
    carol.type_keys("earlier in kitchen\r");
    carol.wait_line("[you] earlier in kitchen");

    alice.type_keys("/join #kitchen\r");
    let screen = alice.wait_for("kitchen's welcome", |s| {
        s.has_line("-- welcome to kitchen, alice: also here: carol --")
    });
    let order = [
        "[bob] first in tea",
        "──── #kitchen ────",
        "[carol] earlier in kitchen",
        "-- end of history (1 message) --",
        "-- welcome to kitchen, alice: also here: carol --",
    ];
    let rows: Vec<Option<u16>> = order.iter().map(|l| screen.pane_row(l)).collect();
    assert!(
        rows.iter().all(Option::is_some) && rows.is_sorted(),
        "{order:?} in order:\n{}",
        screen.dump()
    );
    alice.wait_connected(2);
    assert!(
        alice
            .snapshot()
            .row(STATUS_ROW)
            .starts_with(" #kitchen · alice"),
        "{}",
        alice.snapshot().dump()
    );
    bob.wait_line("* alice left");
    carol.wait_line("* alice joined");

    // Live in kitchen, both ways; tea goes on without her.
    carol.type_keys("live in kitchen\r");
    alice.wait_line("[carol] live in kitchen");
    alice.type_keys("hi carol\r");
    carol.wait_line("[alice] hi carol");
    bob.type_keys("missed in tea\r");
    bob.wait_line("[you] missed in tea");

    // Back to tea: only what she missed is replayed.
    alice.type_keys("/join tea\r");
    let screen = alice.wait_for("tea's welcome again", |s| {
        s.has_line("──── #tea ────") && s.has_line("-- welcome to tea, alice: also here: bob --")
    });
    let back = screen.pane_row("──── #tea ────").unwrap();
    assert!(
        screen.pane_row("[bob] missed in tea") > Some(back),
        "{}",
        screen.dump()
    );
    assert_eq!(
        screen.count_line("[bob] first in tea"),
        1,
        "replayed again:\n{}",
        screen.dump()
    );
    assert_eq!(
        screen.count_line("-- end of history (1 message) --"),
        2,
        "one message replayed in each room:\n{}",
        screen.dump()
    );
    bob.wait_line("* alice joined");
    carol.wait_line("* alice left");
    bob.type_keys("welcome back\r");
    alice.wait_line("[bob] welcome back");

    // /leave: to lobby; in lobby, nowhere to go.
    alice.type_keys("/leave\r");
    alice.wait_line("──── #lobby ────");
    alice.wait_for("#lobby in the status bar", |s| {
        s.row(STATUS_ROW).starts_with(" #lobby · alice")
    });
    alice.type_keys("/leave\r");
    alice.wait_for("the notice that lobby is the default room", |s| {
        s.pane()
            .iter()
            .any(|r| r.contains("you are in lobby, the default room"))
    });
    bob.wait_line("* alice left");

    carol.quit();
    bob.quit();
    alice.quit();
}

/// `/rooms` lists the rooms with their member counts, ours marked; a room
/// the server refuses leaves us where we were, with its reason; F2 shows
/// the member list, which follows joins, and hides it again, as `/names`
/// does.
#[test]
fn rooms_refusals_and_the_member_list() {
    let port = free_port();
    let _server = chat_server(port, &[]);
    let (mut alice, mut bob) = alice_and_bob(port);
    let mut carol = Tui::start(port, "carol", Some("kitchen"));
    carol.wait_connected(1);

    alice.type_keys("/rooms\r");
    let screen = alice.wait_line("  #tea · 2 members (you are here)");
    let listing = [
        "-- 2 rooms: --",
        "  #kitchen · 1 member",
        "  #tea · 2 members (you are here)",
    ];
    let rows: Vec<Option<u16>> = listing.iter().map(|l| screen.pane_row(l)).collect();
    assert!(
        rows.iter().all(Option::is_some) && rows.is_sorted(),
        "{}",
        screen.dump()
    );

    // A name the server keeps for itself: refused, still in tea.
    alice.type_keys("/join server\r");
    let screen = alice.wait_for("the refusal", |s| {
        // The line wraps: read the pane as words.
        let pane = s.pane().join(" ");
        let words = pane.split_whitespace().collect::<Vec<_>>().join(" ");
        words.contains("cannot join #server: room name is reserved for the server; still in #tea")
    });
    assert!(
        screen.row(STATUS_ROW).starts_with(" #tea · alice"),
        "{}",
        screen.dump()
    );
    bob.type_keys("still there?\r");
    alice.wait_line("[bob] still there?");

    // F2: the member list, us among them.
    assert!(!alice.snapshot().members_shown());
    alice.type_keys("\x1bOQ");
    alice.wait_for("the member list", |s| {
        s.members()[..3] == ["│ 2 here", "│ alice", "│ bob"]
    });
    carol.type_keys("/join tea\r");
    alice.wait_for("carol in the member list", |s| {
        s.members()[..4] == ["│ 3 here", "│ alice", "│ bob", "│ carol"]
    });
    alice.type_keys("\x1bOQ");
    alice.wait_for("the member list hidden", |s| !s.members_shown());
    alice.type_keys("/names\r");
    alice.wait_for("the member list again", |s| {
        s.members()[..4] == ["│ 3 here", "│ alice", "│ bob", "│ carol"]
    });

    carol.quit();
    alice.wait_for("carol gone from the list", |s| {
        s.members()[..3] == ["│ 2 here", "│ alice", "│ bob"] && s.members()[3].starts_with('│')
    });
    bob.quit();
    alice.quit();
}
