//! gRPC messages inside the DATA frames of one stream, one direction:
//! reassembled across frames, each shown as its 5-byte prefix and its
//! protobuf.
//!
//! ```text
//!   DATA frame 1: 00 00 00 00 07 0a 05     DATA frame 2: 61 6c 69 63 65
//!                 \__prefix___/ \___________ one message ____________/
//! ```
//!
//! A DATA frame boundary is not a message boundary: the sender's HTTP/2
//! cuts frames where flow control and buffers say, so one message may span
//! frames and one frame may hold several. This keeps the bytes of an
//! incomplete message until the rest arrives, reading each prefix with the
//! crate's own [`Prefix`] parser (`framing/message.rs`), the one the server
//! and client decode with. A message over [`MAX_TRACED_MESSAGE`] is reported
//! by size and its bytes skipped, not buffered.

use std::fmt::Write as _;

use prost_reflect::{DynamicMessage, MessageDescriptor};

use super::protobuf::annotate_fields;
use super::render::{MAX_TEXT_CHARS, Mode, hex, hex_rows, truncate};
use crate::framing::{PREFIX_LEN, Prefix};

/// gRPC messages larger than this are reported by size only.
const MAX_TRACED_MESSAGE: usize = 4 * 1024 * 1024;

/// The message stream of one stream in one direction.
#[derive(Debug, Default)]
pub(super) struct Messages {
    /// Bytes of a gRPC message not complete yet.
    partial: Vec<u8>,
    /// Bytes still to skip of a message too large to trace.
    skip: usize,
    /// A prefix did not parse: what follows cannot be split into messages.
    broken: bool,
}

impl Messages {
    /// Takes the (unpadded) data of the next DATA frame and renders the
    /// messages it completes. Returns whether the frame held data beyond
    /// the rest of a skipped message.
    pub(super) fn data(
        &mut self,
        mut data: &[u8],
        mode: Mode,
        message_type: Option<&MessageDescriptor>,
        text: &mut String,
    ) -> bool {
        if self.skip > 0 {
            let n = self.skip.min(data.len());
            self.skip -= n;
            data = data.get(n..).unwrap_or_default();
            let _ = writeln!(text, "  ({n} more bytes of a message too large to trace)");
        }
        if self.broken {
            if !data.is_empty() {
                let _ = writeln!(text, "  ({} bytes after a bad gRPC prefix)", data.len());
            }
            return !data.is_empty();
        }
        self.partial.extend_from_slice(data);
        loop {
            let prefix = match Prefix::parse(&self.partial) {
                Ok(Some(prefix)) => prefix,
                Ok(None) => break,
                // PROTOCOL-HTTP2.md: "Compressed-Flag → 0 / 1 # encoded as 1
                // byte unsigned integer". Anything else means these bytes are
                // not (or no longer) gRPC messages, and no later length can be
                // trusted.
                Err(e) => {
                    let _ = writeln!(
                        text,
                        "  ({e}: the rest of this stream is not traced as messages)"
                    );
                    self.partial.clear();
                    self.broken = true;
                    break;
                }
            };
            let length = prefix.len as usize;
            if length > MAX_TRACED_MESSAGE {
                let _ = writeln!(
                    text,
                    "  gRPC message  flag {} | length {length} | (too large to trace)",
                    u8::from(prefix.compressed)
                );
                let have = self.partial.len().saturating_sub(PREFIX_LEN);
                self.skip = length.saturating_sub(have);
                self.partial.clear();
                break;
            }
            let Some(body) = self.partial.get(PREFIX_LEN..PREFIX_LEN + length) else {
                break;
            };
            render_message(text, mode, prefix, body, message_type);
            self.partial.drain(..PREFIX_LEN + length);
        }
        if !self.partial.is_empty() {
            let _ = writeln!(
                text,
                "  ({} bytes of a gRPC message that goes on in the next DATA frame)",
                self.partial.len()
            );
        }
        !data.is_empty()
    }
}

/// One gRPC message: `flag | length | protobuf as text`, and in hex mode its
/// prefix and fields byte by byte.
fn render_message(
    text: &mut String,
    mode: Mode,
    prefix: Prefix,
    body: &[u8],
    message_type: Option<&MessageDescriptor>,
) {
    let flag = u8::from(prefix.compressed);
    let prefix = prefix.to_bytes();
    let type_name = message_type.map_or("(unknown type)", |t| t.full_name());
    if flag == 1 {
        // PROTOCOL-HTTP2.md: "Compressed-Flag → 0 / 1 # encoded as 1 byte
        // unsigned integer"; 1 means compressed with the stream's
        // grpc-encoding, which we do not undo here.
        let _ = writeln!(
            text,
            "  gRPC message  flag {flag} | length {} | {type_name}, compressed (grpc-encoding)",
            body.len()
        );
        if mode == Mode::Hex {
            let _ = writeln!(
                text,
                "  {}  prefix: compressed-flag {flag} · length {}",
                hex(&prefix),
                body.len()
            );
            hex_rows(text, "    ", body, 16);
        }
        return;
    }
    let as_text = match message_type {
        Some(descriptor) => match DynamicMessage::decode(descriptor.clone(), body) {
            Ok(message) => {
                let shown = message.to_string();
                if shown.is_empty() {
                    "(all fields default: no bytes)".to_owned()
                } else {
                    shown
                }
            }
            Err(e) => format!("(does not decode as {type_name}: {e})"),
        },
        None => "(no descriptor for this method)".to_owned(),
    };
    let as_text = truncate(as_text, MAX_TEXT_CHARS);
    match mode {
        Mode::Text => {
            let _ = writeln!(
                text,
                "  gRPC message  flag {flag} | length {} | {type_name} {as_text}",
                body.len()
            );
        }
        Mode::Hex => {
            let _ = writeln!(
                text,
                "  {}  gRPC prefix: compressed-flag {flag} · message length {}",
                hex(&prefix),
                body.len()
            );
            let _ = writeln!(text, "  {type_name} {as_text}");
            annotate_fields(text, "    ", body, message_type, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(messages: &mut Messages, data: &[u8]) -> String {
        let mut text = String::new();
        messages.data(data, Mode::Text, None, &mut text);
        text
    }

    #[test]
    fn a_message_split_across_frames_and_two_in_one() {
        let mut messages = Messages::default();
        // prefix 0 | length 2 | "hi", cut after 3 bytes; then a second
        // message, empty (prefix 0 | length 0), in the same frame.
        assert_eq!(
            feed(&mut messages, &[0, 0, 0]),
            "  (3 bytes of a gRPC message that goes on in the next DATA frame)\n"
        );
        assert_eq!(
            feed(&mut messages, &[0, 2, b'h', b'i', 0, 0, 0, 0, 0]),
            concat!(
                "  gRPC message  flag 0 | length 2 | (unknown type) (no descriptor for this method)\n",
                "  gRPC message  flag 0 | length 0 | (unknown type) (no descriptor for this method)\n",
            )
        );
    }

    #[test]
    fn a_flag_other_than_0_or_1_stops_the_message_view() {
        let mut messages = Messages::default();
        let out = feed(&mut messages, &[2, 0, 0, 0, 1, 0xff]);
        assert!(out.contains("invalid compressed flag 2"), "{out}");
        assert_eq!(
            feed(&mut messages, &[0, 0, 0, 0, 0]),
            "  (5 bytes after a bad gRPC prefix)\n"
        );
    }

    #[test]
    fn a_huge_message_is_skipped_not_buffered() {
        let mut messages = Messages::default();
        // prefix 0 | length 0x01000000 (16 MiB), then 3 bytes of it.
        let out = feed(&mut messages, &[0, 1, 0, 0, 0, 1, 2, 3]);
        assert!(
            out.contains("length 16777216 | (too large to trace)"),
            "{out}"
        );
        assert_eq!(messages.skip, (1 << 24) - 3);
        assert!(messages.partial.is_empty());
    }
}
