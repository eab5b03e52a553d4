//! Header blocks, one direction of a connection: HEADERS and CONTINUATION
//! fragments put together, decoded with HPACK, and shown field by field.
//!
//! ```text
//!   client → server  HEADERS  stream 1  END_HEADERS  (77 bytes)
//!     request headers
//!       :method: POST
//!       :path: /chat.ChatService/ChatStream
//! ```
//!
//! HPACK is stateful: every block may add to a dynamic table that later
//! blocks refer to by index, so the decoder must see every block of its
//! direction, in order, and whole — RFC 9113 §6.10: a block that does not
//! fit in one frame "is continued" in CONTINUATION frames, and only the
//! last (END_HEADERS) completes it. Each direction has its own table
//! (RFC 7541 §2.2), hence one [`HeaderBlocks`] per direction.

use std::fmt::Write as _;

use super::hpack_view;
use super::render::{Mode, hex_rows};
use crate::http2::frame::{FLAG_END_HEADERS, FrameHead};

/// Decoded header fields, name and value, in block order.
pub(super) type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// A header block put together: the stream, the flags of the HEADERS frame
/// that began it (END_STREAM lives there), the whole block.
pub(super) struct Block {
    pub(super) stream: u32,
    pub(super) flags: u8,
    pub(super) bytes: Vec<u8>,
}

/// The header-block state of one direction.
pub(super) struct HeaderBlocks {
    /// HPACK state of this direction.
    hpack: loona_hpack::Decoder<'static>,
    /// A block continued in CONTINUATION frames, so far.
    pending: Option<Block>,
}

impl HeaderBlocks {
    pub(super) fn new() -> Self {
        HeaderBlocks {
            hpack: loona_hpack::Decoder::new(),
            pending: None,
        }
    }

    /// The header block fragment of a HEADERS frame: the whole block when
    /// the frame has END_HEADERS, otherwise `None` and the fragment is kept
    /// for the CONTINUATION frames to come.
    pub(super) fn headers(
        &mut self,
        head: FrameHead,
        fragment: &[u8],
        mode: Mode,
        text: &mut String,
    ) -> Option<Block> {
        let block = Block {
            stream: head.stream,
            flags: head.flags,
            bytes: fragment.to_vec(),
        };
        if head.flags & FLAG_END_HEADERS != 0 {
            return Some(block);
        }
        self.pending = Some(block);
        if mode == Mode::Hex {
            text.push_str("  header block fragment (HPACK), continued:\n");
            hex_rows(text, "    ", fragment, 16);
        }
        None
    }

    /// A CONTINUATION frame's fragment: the whole block when it has
    /// END_HEADERS, otherwise `None`.
    pub(super) fn continuation(
        &mut self,
        head: FrameHead,
        payload: &[u8],
        mode: Mode,
        text: &mut String,
    ) -> Option<Block> {
        let Some(mut block) = self.pending.take() else {
            text.push_str("  (CONTINUATION without a header block in progress)\n");
            return None;
        };
        block.bytes.extend_from_slice(payload);
        if head.flags & FLAG_END_HEADERS != 0 {
            return Some(block);
        }
        self.pending = Some(block);
        if mode == Mode::Hex {
            hex_rows(text, "    ", payload, 16);
        }
        None
    }

    /// The fields of a whole block, or the line that says why it did not
    /// decode (after which this direction's HPACK state is lost: the trace
    /// of the direction must stop).
    pub(super) fn decode(&mut self, block: &[u8]) -> Result<Fields, String> {
        // A tracer must never take the connection down: should the HPACK
        // decoder panic on bytes it does not expect, the trace of this
        // direction stops and the connection carries on.
        let hpack = &mut self.hpack;
        let decoded =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hpack.decode(block)));
        match decoded {
            Ok(Ok(fields)) => Ok(fields),
            Ok(Err(e)) => Err(format!(
                "  (HPACK error {e:?}: trace of this direction stopped)\n"
            )),
            Err(_) => Err("  (HPACK decoder failed: trace of this direction stopped)\n".to_owned()),
        }
    }
}

/// Appends the fields of `block`: in text mode one line each; in hex mode
/// each representation's bytes (RFC 7541 §6) with the field it decodes to.
pub(super) fn render_fields(text: &mut String, mode: Mode, block: &[u8], fields: &Fields) {
    let field_text = |(name, value): &(Vec<u8>, Vec<u8>)| {
        format!(
            "{}: {}",
            String::from_utf8_lossy(name),
            String::from_utf8_lossy(value)
        )
    };
    let parts = match mode {
        // Only when the split agrees with the decoder on the number of
        // fields: otherwise the pairing below would mislabel them.
        Mode::Hex => hpack_view::parts(block)
            .filter(|parts| parts.iter().filter(|p| p.emits).count() == fields.len()),
        Mode::Text => None,
    };
    match parts {
        Some(parts) => {
            let _ = writeln!(
                text,
                "  header block (HPACK, {} bytes), field by field:",
                block.len()
            );
            let mut decoded = fields.iter();
            for part in parts {
                let bytes = block.get(part.range.clone()).unwrap_or_default();
                hex_rows(text, "    ", bytes, 16);
                let field = if part.emits {
                    decoded.next().map(field_text).unwrap_or_default()
                } else {
                    String::new()
                };
                let _ = writeln!(
                    text,
                    "      ↳ {}{}",
                    part.description,
                    if field.is_empty() {
                        String::new()
                    } else {
                        format!(": {field}")
                    }
                );
            }
        }
        None => {
            if mode == Mode::Hex {
                let _ = writeln!(text, "  header block (HPACK, {} bytes):", block.len());
                hex_rows(text, "    ", block, 16);
            }
            for field in fields {
                let _ = writeln!(text, "    {}", field_text(field));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http2::frame::{CONTINUATION, HEADERS};

    fn head(kind: u8, flags: u8) -> FrameHead {
        FrameHead {
            length: 0,
            kind,
            flags,
            stream: 5,
        }
    }

    #[test]
    fn a_block_continued_is_decoded_whole() {
        let mut blocks = HeaderBlocks::new();
        let mut text = String::new();
        // 0x00 (literal, not indexed, new name) · 1 "k" · 1 "v", cut after
        // the name.
        let block = [0x00, 1, b'k', 1, b'v'];
        assert!(
            blocks
                .headers(head(HEADERS, 0), &block[..3], Mode::Text, &mut text)
                .is_none()
        );
        let whole = blocks
            .continuation(
                head(CONTINUATION, FLAG_END_HEADERS),
                &block[3..],
                Mode::Text,
                &mut text,
            )
            .unwrap();
        assert_eq!((whole.stream, whole.bytes.as_slice()), (5, &block[..]));
        let fields = blocks.decode(&whole.bytes).unwrap();
        render_fields(&mut text, Mode::Text, &whole.bytes, &fields);
        assert_eq!(text, "    k: v\n");
    }

    #[test]
    fn a_stray_continuation_and_a_bad_block_are_notes() {
        let mut blocks = HeaderBlocks::new();
        let mut text = String::new();
        let none = blocks.continuation(
            head(CONTINUATION, FLAG_END_HEADERS),
            &[],
            Mode::Text,
            &mut text,
        );
        assert!(none.is_none());
        assert!(
            text.contains("CONTINUATION without a header block"),
            "{text}"
        );
        assert!(blocks.decode(&[0xff, 0xff]).unwrap_err().contains("HPACK"));
    }
}
