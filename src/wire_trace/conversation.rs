//! One HTTP/2 connection's traffic, both directions, turned into rendered
//! frames ([`Record`]s): the pure heart of the trace. Bytes of one direction
//! go in as they cross the socket, cut anywhere; each frame comes out once
//! whole.
//!
//! ```text
//!   feed(ClientToServer, bytes) ─▶ preface? ─▶ frame header (http2::FrameHead)
//!        ─▶ whole frame ─▶ HEADERS/CONTINUATION ─▶ headers.rs (HPACK)
//!                         DATA                   ─▶ messages.rs (gRPC messages)
//!                         SETTINGS, PING, …      ─▶ control.rs
//! ```
//!
//! This file owns what spans frames: the bytes of a frame not complete yet,
//! the state of each direction, and what is known of each stream (its
//! `:path`, hence its message types; whether a header block is its headers
//! or its trailers). Anything it cannot parse ends the trace of that
//! direction with a note; the connection is never affected.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use prost_reflect::MessageDescriptor;

use super::control;
use super::direction::Direction;
use super::headers::{Block, HeaderBlocks, render_fields};
use super::messages::Messages;
use super::protobuf::MessageTypes;
use super::render::{Mode, hex, hex_rows};
use crate::http2::frame::{
    CONTINUATION, DATA, FLAG_END_STREAM, FLAG_PADDED, FLAG_PRIORITY, FrameHead, GOAWAY, HEADER_LEN,
    HEADERS, PING, RST_STREAM, SETTINGS, WINDOW_UPDATE,
};

/// RFC 9113 §3.4: "the client connection preface starts with a sequence of 24
/// octets ... PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frames larger than this are not traced (the largest frame size a peer
/// may allow is 16 MiB - 1; our peers use far less).
const MAX_TRACED_FRAME: usize = 1 << 24;

/// One traced frame (or the connection preface), rendered.
#[derive(Debug, Clone)]
pub struct Record {
    /// Which way it went.
    pub direction: Direction,
    /// Its header; `None` for the connection preface and for trace notes.
    pub header: Option<FrameHead>,
    /// The rendering: a title line and indented detail lines, ending in a
    /// newline.
    pub text: String,
}

/// Per-direction parsing state.
struct DirectionState {
    /// Bytes received but not yet a whole frame.
    buffer: Vec<u8>,
    /// Client → server starts with the 24-byte preface.
    preface_pending: bool,
    /// HPACK state and header blocks in progress.
    headers: HeaderBlocks,
    /// Set when something could not be parsed: later bytes are ignored.
    failed: bool,
}

impl DirectionState {
    fn new(preface: bool) -> Self {
        DirectionState {
            buffer: Vec::new(),
            preface_pending: preface,
            headers: HeaderBlocks::new(),
            failed: false,
        }
    }
}

/// What the trace knows about one stream.
#[derive(Default)]
struct StreamState {
    /// `/package.Service/Method`, from the request headers.
    path: Option<String>,
    /// Request and response message types, from the method's descriptor.
    types: [Option<MessageDescriptor>; 2],
    /// Header blocks seen per direction (to tell headers from trailers).
    header_blocks: [u32; 2],
    /// The gRPC messages of each direction.
    messages: [Messages; 2],
}

/// One HTTP/2 connection's traffic, both directions, turned into
/// [`Record`]s. Pure: no I/O.
pub struct Conversation {
    mode: Mode,
    types: MessageTypes,
    directions: [DirectionState; 2],
    streams: BTreeMap<u32, StreamState>,
}

impl std::fmt::Debug for Conversation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conversation")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Conversation {
    /// A conversation that has seen nothing yet (the client preface comes
    /// first); gRPC messages are decoded with `types`.
    pub fn new(mode: Mode, types: MessageTypes) -> Self {
        Conversation {
            mode,
            types,
            directions: [DirectionState::new(true), DirectionState::new(false)],
            streams: BTreeMap::new(),
        }
    }

    /// Takes the next bytes travelling in `direction`; returns the frames
    /// they complete.
    pub fn feed(&mut self, direction: Direction, bytes: &[u8]) -> Vec<Record> {
        let mut records = Vec::new();
        let d = direction.index();
        let Some(state) = self.directions.get_mut(d) else {
            return records;
        };
        if state.failed {
            return records;
        }
        state.buffer.extend_from_slice(bytes);
        while let Some(state) = self.directions.get_mut(d) {
            if state.preface_pending {
                if state.buffer.len() < PREFACE.len() {
                    break;
                }
                let preface: Vec<u8> = state.buffer.drain(..PREFACE.len()).collect();
                state.preface_pending = false;
                if preface != PREFACE {
                    state.failed = true;
                    records.push(
                        self.note(direction, "not an HTTP/2 connection preface: trace stopped"),
                    );
                    break;
                }
                records.push(self.preface(direction, &preface));
                continue;
            }
            let Some(head) = FrameHead::peek(&state.buffer) else {
                break;
            };
            let length = head.length as usize;
            if length > MAX_TRACED_FRAME {
                state.failed = true;
                records.push(self.note(direction, "frame too large to trace: trace stopped"));
                break;
            }
            let total = HEADER_LEN + length;
            if state.buffer.len() < total {
                break;
            }
            let frame: Vec<u8> = state.buffer.drain(..total).collect();
            let payload = frame.get(HEADER_LEN..).unwrap_or_default();
            let record = self.frame(direction, head, &frame, payload);
            records.push(record);
        }
        records
    }

    fn note(&self, direction: Direction, text: &str) -> Record {
        Record {
            direction,
            header: None,
            text: format!("{}  ({text})\n", direction.arrow()),
        }
    }

    fn preface(&self, direction: Direction, preface: &[u8]) -> Record {
        let mut text = format!(
            "{}  connection preface  ({} bytes)\n",
            direction.arrow(),
            preface.len()
        );
        if self.mode == Mode::Hex {
            hex_rows(&mut text, "  ", preface, 16);
        }
        text.push_str("  \"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n\": the client speaks HTTP/2 from the first byte (no upgrade)\n");
        Record {
            direction,
            header: None,
            text,
        }
    }

    /// One whole frame: its title line, its header in hex mode, then its
    /// payload as its type says.
    fn frame(
        &mut self,
        direction: Direction,
        head: FrameHead,
        frame: &[u8],
        payload: &[u8],
    ) -> Record {
        let flags = head.flag_names();
        let mut text = format!(
            "{}  {}  stream {}{}{}  ({} bytes)\n",
            direction.arrow(),
            head.kind_name(),
            head.stream,
            if flags.is_empty() { "" } else { "  " },
            flags.join(" "),
            head.length
        );
        if self.mode == Mode::Hex {
            let octets = frame.get(..HEADER_LEN).unwrap_or_default();
            let _ = writeln!(
                text,
                "  {}  frame header: length {} · type 0x{:x} · flags 0x{:02x} · stream {}",
                hex(octets),
                head.length,
                head.kind,
                head.flags,
                head.stream
            );
        }
        let d = direction.index();
        match head.kind {
            DATA => self.data(direction, head, payload, &mut text),
            HEADERS => match header_block_fragment(head, payload) {
                Some(fragment) => {
                    let block = self.directions.get_mut(d).and_then(|state| {
                        state.headers.headers(head, fragment, self.mode, &mut text)
                    });
                    if let Some(block) = block {
                        self.decode_block(direction, &block, &mut text);
                    }
                }
                None => text.push_str("  (malformed padding)\n"),
            },
            CONTINUATION => {
                let block = self.directions.get_mut(d).and_then(|state| {
                    state
                        .headers
                        .continuation(head, payload, self.mode, &mut text)
                });
                if let Some(block) = block {
                    self.decode_block(direction, &block, &mut text);
                }
            }
            SETTINGS => control::settings(head, payload, self.mode, &mut text),
            WINDOW_UPDATE => control::window_update(head, payload, &mut text),
            PING => control::ping(head, payload, &mut text),
            RST_STREAM => control::rst_stream(payload, &mut text),
            GOAWAY => control::goaway(payload, &mut text),
            _ => {
                if self.mode == Mode::Hex {
                    hex_rows(&mut text, "  ", payload, 16);
                }
            }
        }
        Record {
            direction,
            header: Some(head),
            text,
        }
    }

    /// A whole header block: decoded, named (request headers, response
    /// headers, trailers, trailers-only) and rendered; the request's
    /// `:path` gives the stream its message types.
    fn decode_block(&mut self, direction: Direction, block: &Block, text: &mut String) {
        let d = direction.index();
        let Some(state) = self.directions.get_mut(d) else {
            return;
        };
        let fields = match state.headers.decode(&block.bytes) {
            Ok(fields) => fields,
            Err(note) => {
                state.failed = true;
                text.push_str(&note);
                return;
            }
        };
        let stream_state = self.streams.entry(block.stream).or_default();
        let seen = stream_state.header_blocks.get(d).copied().unwrap_or(0);
        if let Some(count) = stream_state.header_blocks.get_mut(d) {
            *count += 1;
        }
        let end_stream = block.flags & FLAG_END_STREAM != 0;
        let role = match (direction, seen, end_stream) {
            (Direction::ClientToServer, 0, _) => "request headers",
            (Direction::ClientToServer, _, _) => "trailers (unusual from a gRPC client)",
            (Direction::ServerToClient, 0, true) => {
                "trailers-only response: status without headers or messages"
            }
            (Direction::ServerToClient, 0, false) => "response headers",
            (Direction::ServerToClient, _, _) => "trailers: the call's status",
        };
        let _ = writeln!(text, "  {role}");
        render_fields(text, self.mode, &block.bytes, &fields);
        if direction == Direction::ClientToServer && seen == 0 {
            let path = fields
                .iter()
                .find(|(name, _)| name.as_slice() == b":path")
                .map(|(_, value)| String::from_utf8_lossy(value).into_owned());
            if let Some(path) = path {
                stream_state.types = self.types.of_method(&path);
                stream_state.path = Some(path);
            }
        }
    }

    /// A DATA frame: the gRPC messages its data completes.
    fn data(&mut self, direction: Direction, head: FrameHead, payload: &[u8], text: &mut String) {
        let d = direction.index();
        let Some(data) = unpadded(head, payload) else {
            text.push_str("  (malformed padding)\n");
            return;
        };
        let stream = self.streams.entry(head.stream).or_default();
        let message_type = stream.types.get(d).cloned().flatten();
        let Some(messages) = stream.messages.get_mut(d) else {
            return;
        };
        let had_data = messages.data(data, self.mode, message_type.as_ref(), text);
        if !had_data && head.flags & FLAG_END_STREAM != 0 {
            let _ = writeln!(
                text,
                "  (no data: END_STREAM closes the {}'s side of the stream)",
                direction.sender()
            );
        }
    }
}

/// The payload of a DATA (or HEADERS) frame without its padding (RFC 9113
/// §6.1): "Pad Length: An 8-bit field containing the length of the frame
/// padding", present only with the PADDED flag. `None` if the padding is
/// longer than the payload.
fn unpadded(head: FrameHead, payload: &[u8]) -> Option<&[u8]> {
    if head.flags & FLAG_PADDED == 0 {
        return Some(payload);
    }
    let (&pad, rest) = payload.split_first()?;
    rest.get(..rest.len().checked_sub(pad as usize)?)
}

/// The header block fragment of a HEADERS frame: without padding and the
/// priority fields (RFC 9113 §6.2: Exclusive, Stream Dependency and Weight,
/// 5 octets, present only with the PRIORITY flag).
fn header_block_fragment(head: FrameHead, payload: &[u8]) -> Option<&[u8]> {
    let unpadded = unpadded(head, payload)?;
    if head.flags & FLAG_PRIORITY != 0 {
        unpadded.get(5..)
    } else {
        Some(unpadded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http2::frame::FLAG_END_HEADERS;

    fn types() -> MessageTypes {
        MessageTypes::from_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET).unwrap()
    }

    fn feed_all(conversation: &mut Conversation, direction: Direction, bytes: &[u8]) -> String {
        conversation
            .feed(direction, bytes)
            .into_iter()
            .map(|r| r.text)
            .collect()
    }

    #[test]
    fn preface_settings_and_split_frames() {
        let mut c = Conversation::new(Mode::Text, types());
        let mut bytes = PREFACE.to_vec();
        // SETTINGS: length 6 · type 4 · flags 0 · stream 0 | id 3 = 100
        bytes.extend_from_slice(&[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100]);
        // Fed one byte at a time: frames appear once whole.
        let mut out = String::new();
        for b in &bytes {
            out += &feed_all(&mut c, Direction::ClientToServer, std::slice::from_ref(b));
        }
        assert_eq!(
            out,
            "client → server  connection preface  (24 bytes)\n  \"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n\": the client speaks HTTP/2 from the first byte (no upgrade)\n\
             client → server  SETTINGS  stream 0  (6 bytes)\n  MAX_CONCURRENT_STREAMS = 100\n"
        );
    }

    #[test]
    fn a_grpc_message_split_across_data_frames_is_decoded_by_its_method_type() {
        let mut c = Conversation::new(Mode::Text, types());
        let mut bytes = PREFACE.to_vec();
        // HEADERS, stream 1, END_HEADERS: HPACK literal without indexing,
        // new name ":path" (0x00, length 5, ":path", length 28, the path).
        let path = b"/chat.ChatService/ChatStream";
        let mut block = vec![0x00, 5];
        block.extend_from_slice(b":path");
        block.push(path.len() as u8);
        block.extend_from_slice(path);
        bytes.extend_from_slice(&[
            0,
            0,
            block.len() as u8,
            HEADERS,
            FLAG_END_HEADERS,
            0,
            0,
            0,
            1,
        ]);
        bytes.extend_from_slice(&block);
        // The message: prefix 0 | length 7, then field 1 (user) = "alice".
        let message = [0, 0, 0, 0, 7, 0x0a, 5, b'a', b'l', b'i', b'c', b'e'];
        // First DATA frame: the prefix and 2 bytes; the second: the rest.
        bytes.extend_from_slice(&[0, 0, 7, DATA, 0, 0, 0, 0, 1]);
        bytes.extend_from_slice(&message[..7]);
        bytes.extend_from_slice(&[0, 0, 5, DATA, FLAG_END_STREAM, 0, 0, 0, 1]);
        bytes.extend_from_slice(&message[7..]);
        let out = feed_all(&mut c, Direction::ClientToServer, &bytes);
        assert!(
            out.contains("    :path: /chat.ChatService/ChatStream\n"),
            "{out}"
        );
        assert!(
            out.contains("  (7 bytes of a gRPC message that goes on in the next DATA frame)\n"),
            "{out}"
        );
        assert!(
            out.contains("  gRPC message  flag 0 | length 7 | chat.ChatMessage user:\"alice\"\n"),
            "{out}"
        );
    }

    #[test]
    fn garbage_stops_the_trace_without_panicking() {
        let mut c = Conversation::new(Mode::Hex, types());
        let out = feed_all(
            &mut c,
            Direction::ClientToServer,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        assert!(out.contains("not an HTTP/2 connection preface"), "{out}");
        assert!(c.feed(Direction::ClientToServer, &[0; 100]).is_empty());
        // A bad HPACK block in the other direction.
        let bad = [0, 0, 2, HEADERS, FLAG_END_HEADERS, 0, 0, 0, 1, 0xff, 0xff];
        let out = feed_all(&mut c, Direction::ServerToClient, &bad);
        assert!(out.contains("HPACK"), "{out}");
        // Every prefix of a frame with bogus lengths.
        let mut c = Conversation::new(Mode::Hex, types());
        let _ = c.feed(Direction::ClientToServer, PREFACE);
        let data = [
            0,
            0,
            9,
            DATA,
            FLAG_PADDED,
            0,
            0,
            0,
            1,
            200,
            0,
            0,
            0,
            0,
            0xff,
            0,
            0,
            0,
        ];
        let out = feed_all(&mut c, Direction::ClientToServer, &data);
        assert!(out.contains("malformed padding"), "{out}");
    }
}
