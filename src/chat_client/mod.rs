//! The terminal chat client behind the `chat-client` binary: the `Chat`
//! event protocol of `chat.ChatService`, as a full-screen TUI on a terminal
//! or as plain lines on pipes.
//!
//! # Layout
//!
//! Pure logic (no I/O, time passed in), unit-tested in place:
//!
//! * [`address`] — `--address` as `host:port`, the default port when none
//!   is given.
//! * [`sanitize`] — neutralising control characters and escape sequences in
//!   peer text before it reaches a terminal.
//! * [`display`] — a [`DisplayLine`](display::DisplayLine) per event and its
//!   text: `[you] hi`, `[alice] hi`, `* bob joined`, `-- notice --`; local
//!   `HH:MM`; stable name colours.
//! * [`command`] — what a typed line means: a message, `/me`, `/join`,
//!   `/leave`, `/rooms`, `/who`, `/names`, `/help`, `/clear`, `/quit`.
//! * [`typing`] — the typing state machines: ours (START on the first key,
//!   STOP after 2 s idle or on send) and everyone else's typing line.
//! * [`view`] — the conversation built from session updates, shared by both
//!   front ends.
//! * [`input`] — the editable input line.
//! * [`app`] — the TUI's state and key bindings.
//! * [`render`] — drawing the TUI with `ratatui`, wrapping and scrolling,
//!   the member list.
//!
//! I/O:
//!
//! * [`session`] — the connection: join, events both ways, moving between
//!   rooms with a resume point per room, reconnection with backoff, leave.
//! * `call.rs` — one call of the session: dial, open `Chat` in a room,
//!   `Who` and `Rooms` beside it.
//! * [`session_config`] — where and as whom to connect, the defaults, the
//!   backoff between attempts.
//! * [`failure`] — why the client is not connected, in words that name the
//!   flag to change.
//! * [`resume`] — where to resume in each room, and which of our own
//!   messages have not come back yet.
//! * [`line`](mod@line) — line mode (stdin/stdout are not a terminal).
//! * [`tui`] — terminal setup and restore, the TUI event loop.

pub mod address;
pub mod app;
mod call;
pub mod command;
pub mod display;
pub mod failure;
pub mod input;
pub mod line;
pub mod render;
pub mod resume;
pub mod sanitize;
pub mod session;
pub mod session_config;
pub mod tui;
pub mod typing;
pub mod view;

use std::io::IsTerminal;
use std::process::ExitCode;

/// The default server address (its port is [`address::DEFAULT_PORT`]).
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:50053";
/// Default for [`Options::connect_retries`].
pub const DEFAULT_CONNECT_RETRIES: u32 = 3;

/// How the client was asked to run (the binary maps its flags onto this).
#[derive(Debug, Clone)]
pub struct Options {
    /// Server address, `host:port`.
    pub address: String,
    /// The user name; asked for when `None`.
    pub user: Option<String>,
    /// The room; `None` for the server's default.
    pub room: Option<String>,
    /// Line mode only: retries after a failed first connection before giving
    /// up with an error. (The TUI keeps retrying and says so.)
    pub connect_retries: u32,
    /// Line mode even on a terminal.
    pub force_line_mode: bool,
    /// Line mode: prefix lines with the local time.
    pub timestamps: bool,
    /// TLS, token and keepalive settings.
    pub transport: session::Transport,
}

/// Whether both stdin and stdout are a terminal (then the TUI runs).
pub fn on_terminal() -> bool {
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

/// Runs the client to its end: the TUI on a terminal, line mode otherwise.
pub async fn run(options: Options) -> ExitCode {
    if !options.force_line_mode && on_terminal() {
        tui::run(options).await
    } else {
        line::run(options).await
    }
}
