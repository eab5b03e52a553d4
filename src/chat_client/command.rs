//! What a line the user typed means: a message to send, or a command.
//!
//! ```text
//! hello            → a message "hello"
//! /me waves        → a message "/me waves" (shown as `* alice waves`)
//! //etc/hosts      → a message "/etc/hosts" (a doubled slash escapes)
//! /who             → ask the server who is in the room (the Who RPC)
//! /join #kitchen    → move to room "kitchen" (a leading # is dropped)
//! /leave            → back to the default room, lobby
//! /rooms            → the rooms with members, and how many (the Rooms RPC)
//! /names            → show or hide the member list (the TUI; /who in line mode)
//! /help, /quit, /clear
//! ```

/// A line of input, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Send this text as a chat message.
    Say(String),
    /// Leave the room and exit (`/quit`, `/exit`, `/q`).
    Quit,
    /// Show the commands (`/help`, `/?`).
    Help,
    /// List who is in the room (`/who`).
    Who,
    /// Show or hide the member list (`/names`, `/nicklist`).
    Names,
    /// Move to this room (`/join ROOM`, `/j`): trimmed, without a leading
    /// `#`, never empty.
    Join(String),
    /// Leave this room for the default one (`/leave`, `/part`).
    Leave,
    /// List the rooms with members (`/rooms`, `/list`).
    Rooms,
    /// Clear the message pane (`/clear`).
    Clear,
    /// Nothing to do (a blank line).
    Nothing,
    /// `/something` we do not know, or a command used wrongly; the text says
    /// what went wrong.
    Invalid(String),
}

/// The help text, one line per entry.
pub const HELP: &[&str] = &[
    "commands:",
    "  /join ROOM   move to ROOM; back in a room, you see what you missed",
    "  /leave       back to lobby, the default room",
    "  /rooms       the rooms with people in them, and how many",
    "  /who         who is in this room",
    "  /names       show or hide the member list (F2, Ctrl-N)",
    "  /me ACTION   say what you do: * NAME ACTION",
    "  /clear       clear the screen",
    "  /quit        leave the chat (also Ctrl-C, Ctrl-D)",
    "  //text       send text that starts with /",
    "keys: PgUp/PgDn scroll, Up/Down scroll when the input is empty,",
    "  Ctrl-Up/Down any time, Esc back to the bottom, Tab completes names,",
    "  F2 or Ctrl-N shows or hides the member list",
];

/// Whether `line` (typed so far) is a command rather than something to
/// say: it starts with `/`, but not `//` (an escaped slash) or `/me ` (an
/// action, which is said). Typing one is not typing to the room.
pub fn is_command(line: &str) -> bool {
    line.starts_with('/')
        && !line.starts_with("//")
        && !line.starts_with(super::display::ACTION_PREFIX)
}

/// Parses one line of input (without its line ending).
pub fn parse(line: &str) -> Command {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Command::Nothing;
    }
    if let Some(escaped) = line.strip_prefix("//") {
        return Command::Say(format!("/{escaped}"));
    }
    let Some(command) = line.strip_prefix('/') else {
        return Command::Say(line.to_owned());
    };
    let (name, rest) = match command.split_once(char::is_whitespace) {
        Some((name, rest)) => (name, rest.trim()),
        None => (command, ""),
    };
    match name.to_lowercase().as_str() {
        "quit" | "exit" | "q" => Command::Quit,
        "help" | "?" => Command::Help,
        "who" => Command::Who,
        "names" | "nicklist" => Command::Names,
        "rooms" | "list" => Command::Rooms,
        "leave" | "part" => Command::Leave,
        "join" | "j" => match super::session::room_name(rest) {
            room if room.is_empty() => Command::Invalid("usage: /join ROOM".to_owned()),
            room => Command::Join(room),
        },
        "clear" => Command::Clear,
        "me" if rest.is_empty() => Command::Invalid("usage: /me ACTION".to_owned()),
        "me" => Command::Say(format!("{}{rest}", super::display::ACTION_PREFIX)),
        _ => Command::Invalid(format!(
            "unknown command /{name} (try /help; start with // to send a /)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let say = |s: &str| Command::Say(s.to_owned());
        let cases = [
            ("hello", say("hello")),
            ("  spaced  ", say("  spaced  ")),
            ("hello\r\n", say("hello")),
            ("", Command::Nothing),
            ("   ", Command::Nothing),
            ("/quit", Command::Quit),
            ("/QUIT", Command::Quit),
            ("/exit", Command::Quit),
            ("/q", Command::Quit),
            ("/help", Command::Help),
            ("/who", Command::Who),
            ("/names", Command::Names),
            ("/join kitchen", Command::Join("kitchen".into())),
            ("/JOIN  #kitchen ", Command::Join("kitchen".into())),
            ("/j tea", Command::Join("tea".into())),
            ("/join", Command::Invalid("usage: /join ROOM".into())),
            ("/join #", Command::Invalid("usage: /join ROOM".into())),
            ("/leave", Command::Leave),
            ("/part", Command::Leave),
            ("/rooms", Command::Rooms),
            ("/list", Command::Rooms),
            ("/clear", Command::Clear),
            ("/me waves", say("/me waves")),
            ("/me   waves  twice ", say("/me waves  twice")),
            ("//etc/hosts", say("/etc/hosts")),
            (
                "/",
                Command::Invalid("unknown command / (try /help; start with // to send a /)".into()),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input), want, "{input:?}");
        }
        assert!(matches!(parse("/me"), Command::Invalid(_)));
        for (typed, command) in [
            ("/join kit", true),
            ("/", true),
            ("/m", true),
            ("/me waves", false),
            ("//etc", false),
            ("hello /join", false),
            ("", false),
        ] {
            assert_eq!(is_command(typed), command, "{typed:?}");
        }
        assert!(matches!(parse("/frobnicate x"), Command::Invalid(m) if m.contains("/frobnicate")));
    }
}
