//! Neutralising text from other people before it reaches a terminal.
//!
//! Everything a peer controls — names, messages, server notices, the member
//! list — passes through [`sanitize`] before it is printed or drawn. A
//! terminal treats some characters as commands, not text:
//!
//! ```text
//! ESC [ 2 J          "\x1b[2J"        clear the screen
//! ESC ] 0 ; … BEL    "\x1b]0;…\x07"   set the window title
//! CSI (C1)           "\u{9b}2J"       the same as ESC [ on some terminals
//! CR                 "\r"             overwrite the start of the line
//! U+202E             right-to-left override: text shown reversed
//! ```
//!
//! The server already refuses control characters in names and messages, but
//! the client must not rely on that: a different or compromised server, or a
//! future server bug, would otherwise be able to rewrite the user's screen.
//! Each dangerous character is replaced by a visible escape (`\x1b`,
//! `\u{202e}`), so the reader sees that something odd was sent rather than a
//! silent gap.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal as itself.
///
/// * C0 controls (U+0000–U+001F, including ESC, CR, LF and TAB), DEL
///   (U+007F) and C1 controls (U+0080–U+009F): `char::is_control`.
/// * Bidirectional embedding, override and isolate controls (U+202A–U+202E,
///   U+2066–U+2069): they reorder the text around them, which lets a message
///   look like something it is not ("Trojan Source").
pub fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every [unsafe](is_unsafe) character replaced by a visible
/// escape: `\xHH` for characters below U+0100, `\u{HHHH}` above. Borrows when
/// there is nothing to replace (the common case).
pub fn sanitize(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut clean = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !is_unsafe(c) {
            clean.push(c);
        } else if u32::from(c) < 0x100 {
            // Writing to a String cannot fail.
            let _ = write!(clean, "\\x{:02x}", u32::from(c));
        } else {
            let _ = write!(clean, "\\u{{{:x}}}", u32::from(c));
        }
    }
    Cow::Owned(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for text in ["hello", "Zoë says ✓", "emoji 🎉 and 中文", ""] {
            assert!(matches!(sanitize(text), Cow::Borrowed(t) if t == text));
        }
    }

    #[test]
    fn escape_sequences_become_visible() {
        // Clear screen, then red text.
        assert_eq!(sanitize("\x1b[2J\x1b[31mred"), "\\x1b[2J\\x1b[31mred");
        // Window title (OSC … BEL).
        assert_eq!(sanitize("\x1b]0;pwned\x07"), "\\x1b]0;pwned\\x07");
    }

    #[test]
    fn every_c0_c1_and_del_is_replaced() {
        for code in (0x00..=0x1f).chain([0x7f]).chain(0x80..=0x9f) {
            let c = char::from_u32(code).unwrap();
            let out = sanitize(&c.to_string()).into_owned();
            assert_eq!(out, format!("\\x{code:02x}"), "U+{code:04X}");
            assert!(!out.chars().any(char::is_control));
        }
    }

    #[test]
    fn line_breaks_and_carriage_returns_cannot_forge_lines() {
        assert_eq!(
            sanitize("hi\r[bob] I owe you\n* eve joined"),
            "hi\\x0d[bob] I owe you\\x0a* eve joined"
        );
    }

    #[test]
    fn bidi_overrides_are_replaced() {
        assert_eq!(sanitize("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(sanitize("\u{2066}x\u{2069}"), "\\u{2066}x\\u{2069}");
        // Ordinary right-to-left text is text.
        assert_eq!(sanitize("שלום"), "שלום");
    }
}
