//! The frames that steer the connection rather than carry a call's content:
//! SETTINGS (each parameter by name), WINDOW_UPDATE, PING, RST_STREAM and
//! GOAWAY (error codes by name), each rendered in a line or two.
//!
//! ```text
//!   server → client  SETTINGS  stream 0  (18 bytes)
//!     MAX_CONCURRENT_STREAMS = 256
//!   client → server  WINDOW_UPDATE  stream 0  (4 bytes)
//!     the connection's window grows by 983041 bytes
//!   server → client  GOAWAY  stream 0  (8 bytes)
//!     no new streams: last stream processed 3, NO_ERROR (0x0)
//! ```
//!
//! Pure; a payload shorter than its frame type needs is shown as
//! "(malformed)", never indexed into.

use std::fmt::Write as _;

use super::render::{Mode, hex};
use crate::http2::frame::{FLAG_ACK, FrameHead};

/// SETTINGS: each parameter by name (RFC 9113 §6.5.2), or the ACK.
pub(super) fn settings(head: FrameHead, payload: &[u8], mode: Mode, text: &mut String) {
    if head.flags & FLAG_ACK != 0 {
        text.push_str("  acknowledges the peer's SETTINGS\n");
        return;
    }
    if payload.is_empty() {
        text.push_str("  (no parameters: every setting keeps its default)\n");
    }
    for entry in payload.chunks(6) {
        let Some(&[i0, i1, v0, v1, v2, v3]) = entry.first_chunk::<6>() else {
            text.push_str("  (malformed setting)\n");
            break;
        };
        let id = u16::from_be_bytes([i0, i1]);
        let value = u32::from_be_bytes([v0, v1, v2, v3]);
        let name = setting_name(id);
        if mode == Mode::Hex {
            let _ = writeln!(text, "  {}  {name} = {value}", hex(entry));
        } else {
            let _ = writeln!(text, "  {name} = {value}");
        }
    }
}

/// An error code of RST_STREAM or GOAWAY by name (RFC 9113 §7), and its
/// value.
fn error_code(code: u32) -> String {
    let name = match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "SETTINGS_TIMEOUT",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xa => "CONNECT_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        _ => return format!("error code 0x{code:x}"),
    };
    format!("{name} (0x{code:x})")
}

/// A SETTINGS parameter's name (RFC 9113 §6.5.2; ENABLE_CONNECT_PROTOCOL is
/// RFC 8441), or its identifier in hex: "An endpoint that receives a
/// SETTINGS frame with any unknown or unsupported identifier MUST ignore
/// that setting."
fn setting_name(id: u16) -> String {
    match id {
        0x1 => "HEADER_TABLE_SIZE".to_owned(),
        0x2 => "ENABLE_PUSH".to_owned(),
        0x3 => "MAX_CONCURRENT_STREAMS".to_owned(),
        0x4 => "INITIAL_WINDOW_SIZE".to_owned(),
        0x5 => "MAX_FRAME_SIZE".to_owned(),
        0x6 => "MAX_HEADER_LIST_SIZE".to_owned(),
        0x8 => "ENABLE_CONNECT_PROTOCOL".to_owned(),
        other => format!("0x{other:x}"),
    }
}

/// WINDOW_UPDATE: how much more the receiver may be sent (RFC 9113 §6.9),
/// on the connection (stream 0) or one stream.
pub(super) fn window_update(head: FrameHead, payload: &[u8], text: &mut String) {
    // "R: A reserved 1-bit field", then the 31-bit increment.
    let increment = payload
        .first_chunk::<4>()
        .map(|b| u32::from_be_bytes(*b) & 0x7fff_ffff);
    match increment {
        Some(n) if head.stream == 0 => {
            let _ = writeln!(text, "  the connection's window grows by {n} bytes");
        }
        Some(n) => {
            let _ = writeln!(text, "  this stream's window grows by {n} bytes");
        }
        None => text.push_str("  (malformed)\n"),
    }
}

/// PING: 8 opaque bytes, or the ACK echoing them (RFC 9113 §6.7).
pub(super) fn ping(head: FrameHead, payload: &[u8], text: &mut String) {
    let what = if head.flags & FLAG_ACK != 0 {
        "answer to a PING, same 8 bytes"
    } else {
        "are you there? (8 opaque bytes, echoed in the answer)"
    };
    let _ = writeln!(text, "  {what}: {}", hex(payload));
}

/// RST_STREAM: one stream ends, with an error code (RFC 9113 §6.4).
pub(super) fn rst_stream(payload: &[u8], text: &mut String) {
    match payload.first_chunk::<4>().map(|b| u32::from_be_bytes(*b)) {
        Some(code) => {
            let _ = writeln!(text, "  stream reset: {}", error_code(code));
        }
        None => text.push_str("  (malformed)\n"),
    }
}

/// GOAWAY: no new streams; the last one processed, an error code and
/// optional debug data (RFC 9113 §6.8).
pub(super) fn goaway(payload: &[u8], text: &mut String) {
    let last = payload
        .first_chunk::<4>()
        .map(|b| u32::from_be_bytes(*b) & 0x7fff_ffff);
    let code = payload
        .get(4..8)
        .and_then(|b| b.first_chunk::<4>())
        .map(|b| u32::from_be_bytes(*b));
    let (Some(last), Some(code)) = (last, code) else {
        text.push_str("  (malformed)\n");
        return;
    };
    let debug = payload.get(8..).unwrap_or_default();
    let _ = writeln!(
        text,
        "  no new streams: last stream processed {last}, {}{}",
        error_code(code),
        if debug.is_empty() {
            String::new()
        } else {
            format!(", debug data {:?}", String::from_utf8_lossy(debug))
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http2::frame::SETTINGS;

    fn head(kind: u8, flags: u8) -> FrameHead {
        FrameHead {
            length: 0,
            kind,
            flags,
            stream: 0,
        }
    }

    #[test]
    fn settings_by_name_and_unknown_ids_in_hex() {
        let mut text = String::new();
        // id 0x3 = 100 · id 0x99 = 1 · 5 stray bytes
        let payload = [0, 3, 0, 0, 0, 100, 0, 0x99, 0, 0, 0, 1, 0, 1, 0, 0, 0];
        settings(head(SETTINGS, 0), &payload, Mode::Text, &mut text);
        assert_eq!(
            text,
            "  MAX_CONCURRENT_STREAMS = 100\n  0x99 = 1\n  (malformed setting)\n"
        );
    }

    #[test]
    fn goaway_names_its_code_and_a_short_one_is_malformed() {
        let mut text = String::new();
        // last stream 3 · ENHANCE_YOUR_CALM · debug "calm"
        goaway(
            &[0, 0, 0, 3, 0, 0, 0, 0xb, b'c', b'a', b'l', b'm'],
            &mut text,
        );
        goaway(&[0, 0, 0], &mut text);
        assert_eq!(
            text,
            "  no new streams: last stream processed 3, ENHANCE_YOUR_CALM (0xb), debug data \"calm\"\n  (malformed)\n"
        );
    }
}
