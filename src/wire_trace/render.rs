//! How much the trace shows ([`Mode`]) and how it shows bytes: [`hex`]
//! strings, rows of hex, and text cut to a readable length.
//!
//! ```text
//!   text mode:  gRPC message  flag 0 | length 7 | chat.ChatMessage user:"alice"
//!   hex mode:   00 00 00 00 07  gRPC prefix: compressed-flag 0 · message length 7
//!                 0a 05 61 6c 69 63 65                 1 user: "alice"
//! ```
//!
//! The limits here keep one huge frame or message from flooding the
//! terminal: a reader studying the wire wants its shape, not a megabyte of
//! hex.

use std::fmt::Write as _;
use std::str::FromStr;

/// Hex bytes shown per element in hex mode before "… N more bytes".
pub(super) const MAX_HEX_BYTES: usize = 256;
/// Characters of a message's text shown before "… N more characters".
pub(super) const MAX_TEXT_CHARS: usize = 1024;

/// How much the trace shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Frames, decoded headers, messages as protobuf text.
    Text,
    /// The same, plus the bytes of every element.
    Hex,
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "text" => Ok(Mode::Text),
            "hex" => Ok(Mode::Hex),
            other => Err(format!("unknown wire trace mode {other:?} (text or hex)")),
        }
    }
}

/// `de ad be ef`.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Hex rows of `width` bytes, at most [`MAX_HEX_BYTES`] in all.
pub(super) fn hex_rows(text: &mut String, indent: &str, bytes: &[u8], width: usize) {
    for (i, row) in bytes.chunks(width).enumerate() {
        if i * width >= MAX_HEX_BYTES {
            let _ = writeln!(text, "{indent}… ({} more bytes)", bytes.len() - i * width);
            break;
        }
        let _ = writeln!(text, "{indent}{}", hex(row));
    }
}

/// `text` cut after `max` characters, saying how much was left out.
pub(super) fn truncate(text: String, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text,
        Some((cut, _)) => {
            let left = text.get(cut..).map_or(0, |rest| rest.chars().count());
            format!(
                "{}… ({left} more characters)",
                text.get(..cut).unwrap_or_default()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_rows_stop_after_the_limit() {
        assert_eq!(hex(&[0xde, 0xad, 0xbe, 0xef]), "de ad be ef");
        let mut text = String::new();
        hex_rows(&mut text, "  ", &[0; MAX_HEX_BYTES + 20], 16);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), MAX_HEX_BYTES / 16 + 1);
        assert_eq!(lines.last(), Some(&"  … (20 more bytes)"));
    }

    #[test]
    fn truncation_counts_characters_not_bytes() {
        assert_eq!(truncate("héllo".into(), 10), "héllo");
        assert_eq!(truncate("héllo".into(), 2), "hé… (3 more characters)");
        assert_eq!("hex".parse::<Mode>(), Ok(Mode::Hex));
        assert!("binary".parse::<Mode>().is_err());
    }
}
