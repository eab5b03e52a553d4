//! What a member may say and be called: the checks on names and messages.
//!
//! Everything here is pure (strings in, verdicts out), so the rules are easy
//! to test and the same for both chat protocols.
//!
//! The rule that matters most: **no control characters**. A message is
//! printed on other people's terminals; if it could carry `ESC [ 2 J` (clear
//! screen) or an OSC sequence (set the window title, write the clipboard), one
//! member could draw on everyone's screen. So every C0 and C1 control
//! character (and DEL) is refused, in names and in messages. Trailing CR/LF is
//! trimmed first, because the original Go client sent each line with its
//! newline. TAB is the one control character a person types on purpose
//! (pasted tab-separated text): in a message it becomes a space, which moves
//! no cursor anywhere; in a name it is refused like the rest.

use std::borrow::Cow;
use std::fmt;

/// Default for [`Limits::max_name_chars`].
pub const DEFAULT_MAX_NAME_CHARS: usize = 32;
/// Default for [`Limits::max_message_chars`].
pub const DEFAULT_MAX_MESSAGE_CHARS: usize = 2000;

/// Names nobody may take: the server speaks under them.
pub const RESERVED_NAMES: &[&str] = &["server", "system", "you"];

/// Length limits, in Unicode scalar values (what a user would call characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest user name.
    pub max_name_chars: usize,
    /// Longest message.
    pub max_message_chars: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_name_chars: DEFAULT_MAX_NAME_CHARS,
            max_message_chars: DEFAULT_MAX_MESSAGE_CHARS,
        }
    }
}

/// Why a name or message was refused. The `Display` text is shown to the
/// member who sent it, after its subject: "user name …", "room name …",
/// "message not delivered: it …".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// Nothing left after trimming.
    Empty,
    /// Longer than the limit.
    TooLong { chars: usize, limit: usize },
    /// Contains the control character at this position.
    ControlCharacter { position: usize },
    /// A name the server keeps for itself.
    Reserved,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::Empty => f.write_str("is empty"),
            Invalid::TooLong { chars, limit } => {
                write!(f, "is too long ({chars} characters, at most {limit})")
            }
            Invalid::ControlCharacter { position } => write!(
                f,
                "contains a control character at position {position} (terminal escapes are not allowed)"
            ),
            Invalid::Reserved => f.write_str("is reserved for the server"),
        }
    }
}

/// Removes the line ending(s) the original clients sent along.
pub fn trim_line_end(text: &str) -> &str {
    text.trim_end_matches(['\r', '\n'])
}

fn check_text(text: &str, limit: usize) -> Result<(), Invalid> {
    if let Some(position) = text.chars().position(char::is_control) {
        return Err(Invalid::ControlCharacter { position });
    }
    let chars = text.chars().count();
    if chars > limit {
        return Err(Invalid::TooLong { chars, limit });
    }
    Ok(())
}

/// A user name: trimmed of surrounding whitespace, 1 to `max_name_chars`
/// characters, no control characters, not reserved.
pub fn name<'a>(raw: &'a str, limits: &Limits) -> Result<&'a str, Invalid> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(Invalid::Empty);
    }
    check_text(name, limits.max_name_chars)?;
    if RESERVED_NAMES
        .iter()
        .any(|reserved| reserved.eq_ignore_ascii_case(name))
    {
        return Err(Invalid::Reserved);
    }
    Ok(name)
}

/// A chat message: trailing CR/LF trimmed, each TAB made a space, then 1 to
/// `max_message_chars` characters without control characters. Inner spacing
/// is kept: it may be deliberate. Borrowed unless a TAB had to be replaced.
pub fn message<'a>(raw: &'a str, limits: &Limits) -> Result<Cow<'a, str>, Invalid> {
    let text = trim_line_end(raw);
    if text.trim().is_empty() {
        return Err(Invalid::Empty);
    }
    let text = if text.contains('\t') {
        Cow::Owned(text.replace('\t', " "))
    } else {
        Cow::Borrowed(text)
    };
    check_text(&text, limits.max_message_chars)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        max_name_chars: 8,
        max_message_chars: 10,
    };

    #[test]
    fn names() {
        assert_eq!(name("  alice ", &L), Ok("alice"));
        assert_eq!(name("Zoë", &L), Ok("Zoë"));
        assert_eq!(name("", &L), Err(Invalid::Empty));
        assert_eq!(name("   ", &L), Err(Invalid::Empty));
        assert_eq!(
            name("abcdefghi", &L),
            Err(Invalid::TooLong { chars: 9, limit: 8 })
        );
        // ESC: the start of every terminal escape sequence.
        assert_eq!(
            name("a\u{1b}[2J", &L),
            Err(Invalid::ControlCharacter { position: 1 })
        );
        // C1 control (CSI as one code point).
        assert_eq!(
            name("x\u{9b}", &L),
            Err(Invalid::ControlCharacter { position: 1 })
        );
        assert_eq!(name("Server", &L), Err(Invalid::Reserved));
        assert_eq!(name("you", &L), Err(Invalid::Reserved));
    }

    #[test]
    fn messages() {
        // The original Go client sent "text\n" (and Windows users "text\r\n").
        assert_eq!(message("hi there\r\n", &L).as_deref(), Ok("hi there"));
        assert_eq!(message("hi\n\n", &L).as_deref(), Ok("hi"));
        assert_eq!(message("  indented", &L).as_deref(), Ok("  indented"));
        assert_eq!(message("\r\n", &L), Err(Invalid::Empty));
        assert_eq!(message("   ", &L), Err(Invalid::Empty));
        assert_eq!(
            message("0123456789x", &L),
            Err(Invalid::TooLong {
                chars: 11,
                limit: 10
            })
        );
        // Ten characters of four bytes each are still ten characters.
        assert_eq!(message("😀😀😀😀😀😀😀😀😀😀", &L).map(|m| m.len()), Ok(40));
        // TAB is whitespace, not an escape: a space; a line of tabs is blank.
        assert_eq!(message("a\tb\tc", &L).as_deref(), Ok("a b c"));
        assert_eq!(message("\t\t\n", &L), Err(Invalid::Empty));
        assert!(matches!(message("no tabs", &L), Ok(Cow::Borrowed(_))));
        assert_eq!(
            message("bell\u{7}", &L),
            Err(Invalid::ControlCharacter { position: 4 })
        );
        assert_eq!(
            message("a\rb", &L),
            Err(Invalid::ControlCharacter { position: 1 })
        );
        assert_eq!(
            message("del\u{7f}", &L),
            Err(Invalid::ControlCharacter { position: 3 })
        );
    }

    #[test]
    fn messages_shown_to_the_sender_explain_themselves() {
        assert_eq!(
            Invalid::TooLong {
                chars: 11,
                limit: 10
            }
            .to_string(),
            "is too long (11 characters, at most 10)"
        );
        // Each reads after its subject.
        assert_eq!(
            format!(
                "message not delivered: it {}",
                Invalid::ControlCharacter { position: 2 }
            ),
            "message not delivered: it contains a control character at position 2 \
             (terminal escapes are not allowed)"
        );
        assert_eq!(
            format!("user name {}", Invalid::Reserved),
            "user name is reserved for the server"
        );
    }
}
