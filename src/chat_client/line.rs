//! Line mode: for pipes, scripts and tests. Each input line is a message or a
//! command; each event is printed as one plain line.
//!
//! ```text
//! $ printf 'alice\nhello\n/quit\n' | chat-client
//! -- welcome to lobby, alice: you are the only one here --
//! [you] hello
//! ```
//!
//! At the end of input (or `/quit`) the client leaves once the server has
//! echoed every message it sent, so a script always sees its own lines
//! (waiting at most [`FINISH_TIMEOUT`](super::session::FINISH_TIMEOUT) for
//! them). The room's replayed history comes first, messages under their
//! senders' names — ours too: `[you]` is only ever a live echo — then
//! `-- end of history (N messages) --`, then what is live:
//!
//! ```text
//! $ printf 'hello from a script\n' | chat-client --user bot --room kitchen
//! [bot] hello from a script          <- an earlier run, replayed
//! -- end of history (1 message) --
//! -- welcome to kitchen, bot: you are the only one here --
//! [you] hello from a script
//! ```
//!
//! `/join ROOM`, `/leave` and `/rooms` work as in the TUI: a `/join` before
//! the server is reached waits its turn, after the lines before it, and
//! the switch prints `──── #ROOM ────` before the new room's history.
//! `/names` lists the members, as `/who` does.
//!
//! The typing line is printed only when it changes to someone typing. Errors
//! that end the session go to stderr, with a non-zero exit status.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::Options;
use super::command::{self, Command};
use super::display::DisplayLine;
use super::session::{self, Outgoing, SessionConfig, Update, room_name};
use super::view::{Change, ChatView};
use crate::chat::DEFAULT_ROOM;

/// Reads stdin lines on a thread of its own (a blocking read cannot be
/// cancelled; the thread simply ends with the process). `None` at EOF.
fn stdin_lines() -> mpsc::UnboundedReceiver<Option<String>> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut stdin = stdin.lock();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match stdin.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(None);
                    return;
                }
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).to_owned();
                    if tx.send(Some(line)).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// Writes lines to stdout, optionally with the time.
struct Printer {
    timestamps: bool,
    /// The last typing line printed, to print only changes.
    typing: Option<String>,
}

impl Printer {
    fn line(&self, line: &DisplayLine) {
        if self.timestamps {
            self.raw(&format!("{} {}", line.clock(), line.plain()));
        } else {
            self.raw(&line.plain());
        }
    }

    fn raw(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        // A closed stdout (the reader went away) is not worth a panic.
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }

    fn change(&mut self, change: &Change) {
        match change {
            Change::Line(line) => self.line(line),
            Change::Typing(typing) => {
                if typing.is_some() && *typing != self.typing {
                    if let Some(text) = typing {
                        self.raw(text);
                    }
                }
                self.typing.clone_from(typing);
            }
        }
    }
}

/// Runs a line-mode session to its end.
pub async fn run(options: Options) -> ExitCode {
    let mut input = stdin_lines();
    let user = match &options.user {
        Some(user) => user.clone(),
        // As the original clients did: the first line is the name.
        None => match input.recv().await.flatten() {
            Some(line) => line,
            None => {
                eprintln!("chat-client: no user name (give --user NAME, or a first line)");
                return ExitCode::from(2);
            }
        },
    };
    let user = user.trim().to_owned();
    if user.is_empty() {
        eprintln!("chat-client: the user name is empty");
        return ExitCode::from(2);
    }

    let mut config =
        SessionConfig::new(options.address.clone(), user.clone(), options.room.clone());
    config.startup_attempts = Some(options.connect_retries.saturating_add(1));
    config.transport = options.transport.clone();
    let (outgoing, mut updates) = session::start(config);
    let mut view = ChatView::new(&user);
    if let Some(room) = &options.room {
        view.set_room(&room_name(room));
    }
    let mut printer = Printer {
        timestamps: options.timestamps,
        typing: None,
    };
    let mut leaving = false;
    let mut input_open = true;
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    loop {
        tokio::select! {
            update = updates.recv() => {
                let Some(update) = update else {
                    return ExitCode::SUCCESS;
                };
                match &update {
                    Update::Left => return ExitCode::SUCCESS,
                    Update::GaveUp(why) => {
                        eprintln!("chat-client: {why}");
                        return ExitCode::FAILURE;
                    }
                    _ => {}
                }
                for change in view.update(&update, Instant::now()) {
                    printer.change(&change);
                }
            }
            line = input.recv(), if input_open && !leaving => {
                let command = match line.flatten() {
                    Some(line) => command::parse(&line),
                    None => {
                        input_open = false;
                        Command::Quit
                    }
                };
                match command {
                    Command::Say(text) => {
                        let _ = outgoing.send(Outgoing::Message(text));
                    }
                    Command::Quit => {
                        // Deliver what came before first, even when the
                        // server is not reached yet.
                        leaving = true;
                        let _ = outgoing.send(Outgoing::Finish);
                    }
                    // No member pane here: /names lists them, as /who does.
                    Command::Who | Command::Names => {
                        let _ = outgoing.send(Outgoing::Who);
                    }
                    Command::Rooms => {
                        let _ = outgoing.send(Outgoing::Rooms);
                    }
                    Command::Join(room) => {
                        let _ = outgoing.send(Outgoing::Join(room));
                    }
                    // The session says so if we are in the default room
                    // already (the view may not know yet where a held
                    // /join will have taken us).
                    Command::Leave => {
                        let _ = outgoing.send(Outgoing::Join(DEFAULT_ROOM.to_owned()));
                    }
                    Command::Help => {
                        for text in command::HELP {
                            printer.raw(text);
                        }
                    }
                    Command::Clear | Command::Nothing => {}
                    Command::Invalid(why) => printer.line(&view.local(&why)),
                }
            }
            _ = &mut ctrl_c, if !leaving => {
                leaving = true;
                let _ = outgoing.send(Outgoing::Leave);
            }
            _ = ticks.tick() => {
                for change in view.tick(Instant::now()) {
                    printer.change(&change);
                }
            }
        }
    }
}
