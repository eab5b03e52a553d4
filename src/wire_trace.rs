//! The wire trace (`--trace-wire`): every HTTP/2 frame of a connection,
//! decoded for a reader who wants to see what gRPC looks like on the wire.
//!
//! ```text
//! client → server  HEADERS  stream 1  END_HEADERS  (77 bytes)
//!   request headers
//!     :method: POST
//!     :path: /chat.ChatService/ChatStream
//!     content-type: application/grpc
//!     ...
//! client → server  DATA  stream 1  (19 bytes)
//!   gRPC message  flag 0 | length 14 | chat.ChatMessage user: "alice" message: "hello"
//! server → client  HEADERS  stream 1  END_STREAM END_HEADERS  (2 bytes)
//!   trailers
//!     grpc-status: 0
//! ```
//!
//! With `--trace-wire=hex` every frame also shows its bytes: the 9-byte frame
//! header with its fields, the HPACK header block, and each gRPC message as
//! its 5-byte prefix followed by its protobuf fields one by one.
//!
//! How it works: [`tap`] wraps a connection's socket ([`Tap`]) and copies
//! every byte read and written into a [`Conversation`], which is pure: it
//! takes bytes of one direction at a time and returns the frames they
//! complete, rendered ([`Record`]). It reassembles frames across reads, keeps
//! one HPACK decoder per direction (the header compression state of each
//! direction is separate, RFC 7541 §2.2), remembers each stream's `:path` to
//! know the protobuf types of its messages (looked up in
//! [`crate::pb::FILE_DESCRIPTOR_SET`]), and reassembles gRPC messages across
//! DATA frames — a DATA frame boundary is not a message boundary.
//!
//! The trace only observes: the bytes go through unchanged, and anything it
//! cannot parse ends the trace of that direction with a note, never the
//! connection. The binaries switch it on process-wide with [`enable`];
//! `src/server` and `src/client` call [`tap`] on each socket they open.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use parking_lot::Mutex;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MessageDescriptor};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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

/// Which way bytes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// From the client to the server.
    ClientToServer,
    /// From the server to the client.
    ServerToClient,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::ClientToServer => 0,
            Direction::ServerToClient => 1,
        }
    }

    /// `client → server` or `server → client`.
    pub fn arrow(self) -> &'static str {
        match self {
            Direction::ClientToServer => "client → server",
            Direction::ServerToClient => "server → client",
        }
    }
}

/// Which end of the connection a [`Tap`] sits on: it decides which direction
/// reads and writes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Reads are client → server.
    Server,
    /// Reads are server → client.
    Client,
}

/// Where traced records go.
pub type Sink = Arc<dyn Fn(&str) + Send + Sync>;

/// The process-wide trace setting: a [`Mode`] and a [`Sink`].
#[derive(Clone)]
pub struct WireTrace {
    mode: Mode,
    sink: Sink,
}

impl std::fmt::Debug for WireTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireTrace")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl WireTrace {
    /// Records go to `sink`, one call per record (a whole frame).
    pub fn new(mode: Mode, sink: Sink) -> Self {
        WireTrace { mode, sink }
    }

    /// Records go to standard error, each written whole so that records of
    /// concurrent connections do not interleave.
    pub fn stderr(mode: Mode) -> Self {
        Self::new(
            mode,
            Arc::new(|record: &str| {
                let mut err = io::stderr().lock();
                let _ = err.write_all(record.as_bytes());
                let _ = err.flush();
            }),
        )
    }
}

static GLOBAL: OnceLock<WireTrace> = OnceLock::new();

/// Turns the trace on for every connection this process opens or accepts
/// from now on. Only the first call has an effect.
pub fn enable(trace: WireTrace) {
    let _ = GLOBAL.set(trace);
}

/// Wraps `io` so that, if the trace is [`enable`]d, everything it carries is
/// traced; `label` names the connection (the peer's address). Without the
/// trace the wrapper passes calls straight through.
pub fn tap<T>(io: T, side: Side, label: impl std::fmt::Display) -> Tap<T> {
    let trace = GLOBAL.get().map(|trace| {
        Arc::new(Traced {
            conversation: Mutex::new(Conversation::new(trace.mode)),
            sink: Arc::clone(&trace.sink),
            label: label.to_string(),
        })
    });
    Tap { io, side, trace }
}

struct Traced {
    conversation: Mutex<Conversation>,
    sink: Sink,
    label: String,
}

impl Traced {
    fn feed(&self, direction: Direction, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let records = self.conversation.lock().feed(direction, bytes);
        for record in records {
            (self.sink)(&format!("[wire {}] {}", self.label, record.text));
        }
    }
}

/// A socket whose traffic is traced (see [`tap`]).
pub struct Tap<T> {
    io: T,
    side: Side,
    trace: Option<Arc<Traced>>,
}

impl<T> std::fmt::Debug for Tap<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap")
            .field("side", &self.side)
            .field("traced", &self.trace.is_some())
            .finish_non_exhaustive()
    }
}

impl<T> Tap<T> {
    fn inbound(&self) -> Direction {
        match self.side {
            Side::Server => Direction::ClientToServer,
            Side::Client => Direction::ServerToClient,
        }
    }
    fn outbound(&self) -> Direction {
        match self.side {
            Side::Server => Direction::ServerToClient,
            Side::Client => Direction::ClientToServer,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tap<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(trace)) = (&polled, &self.trace) {
            if let Some(new) = buf.filled().get(before..) {
                trace.feed(self.inbound(), new);
            }
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tap<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if let (Poll::Ready(Ok(n)), Some(trace)) = (&polled, &self.trace) {
            if let Some(written) = buf.get(..*n) {
                trace.feed(self.outbound(), written);
            }
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    // Untraced, vectored writes go straight through, so a connection without
    // the trace writes exactly as it would without the wrapper. Traced, the
    // wrapper says it has no vectored writes: `h2` then writes through
    // `poll_write`, where the trace sees the bytes.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.trace.is_none() {
            return Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        }
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &**b);
        self.poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        self.trace.is_none() && self.io.is_write_vectored()
    }
}

// ---------------------------------------------------------------------------
// The pure part: bytes in, rendered frames out.
// ---------------------------------------------------------------------------

/// RFC 9113 §3.4: "the client connection preface starts with a sequence of 24
/// octets ... PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// RFC 9113 §4.1: every frame begins with a fixed 9-octet header.
pub const FRAME_HEADER_LEN: usize = 9;
/// Frames larger than this are not traced (the largest frame size a peer
/// may allow is 16 MiB - 1; our peers use far less).
const MAX_TRACED_FRAME: usize = 1 << 24;
/// gRPC messages larger than this are reported by size only.
const MAX_TRACED_MESSAGE: usize = 4 * 1024 * 1024;
/// Hex bytes shown per element in hex mode before "… N more bytes".
const MAX_HEX_BYTES: usize = 256;
/// Characters of a message's text shown before "… N more characters".
const MAX_TEXT_CHARS: usize = 1024;

/// Frame types (RFC 9113 §6).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

/// Flags (RFC 9113 §6): their meaning depends on the frame type.
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;

/// The 9-byte header every HTTP/2 frame starts with (RFC 9113 §4.1):
///
/// ```text
/// +-----------------------------------------------+
/// |                 Length (24)                   |
/// +---------------+---------------+---------------+
/// |   Type (8)    |   Flags (8)   |
/// +-+-------------+---------------+-------------------------------+
/// |R|                 Stream Identifier (31)                      |
/// +=+=============================================================+
/// |                   Frame Payload (0...)                      ...
/// +---------------------------------------------------------------+
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length.
    pub length: u32,
    /// Frame type.
    pub kind: u8,
    /// Flags.
    pub flags: u8,
    /// Stream identifier (the reserved bit cleared).
    pub stream: u32,
}

impl FrameHeader {
    /// Reads a frame header from the start of `src`, if 9 bytes are there.
    pub fn parse(src: &[u8]) -> Option<FrameHeader> {
        let &[l0, l1, l2, kind, flags, s0, s1, s2, s3] = src.first_chunk::<FRAME_HEADER_LEN>()?;
        Some(FrameHeader {
            length: u32::from_be_bytes([0, l0, l1, l2]),
            kind,
            flags,
            // "R: A reserved 1-bit field ... MUST be ignored when receiving".
            stream: u32::from_be_bytes([s0, s1, s2, s3]) & 0x7fff_ffff,
        })
    }

    /// The frame type's name.
    pub fn kind_name(&self) -> String {
        match self.kind {
            DATA => "DATA".into(),
            HEADERS => "HEADERS".into(),
            PRIORITY => "PRIORITY".into(),
            RST_STREAM => "RST_STREAM".into(),
            SETTINGS => "SETTINGS".into(),
            PUSH_PROMISE => "PUSH_PROMISE".into(),
            PING => "PING".into(),
            GOAWAY => "GOAWAY".into(),
            WINDOW_UPDATE => "WINDOW_UPDATE".into(),
            CONTINUATION => "CONTINUATION".into(),
            other => format!("UNKNOWN(0x{other:x})"),
        }
    }

    /// The set flags' names, as this frame type defines them.
    pub fn flag_names(&self) -> Vec<&'static str> {
        let defined: &[(u8, &str)] = match self.kind {
            DATA => &[(END_STREAM, "END_STREAM"), (PADDED, "PADDED")],
            HEADERS => &[
                (END_STREAM, "END_STREAM"),
                (END_HEADERS, "END_HEADERS"),
                (PADDED, "PADDED"),
                (PRIORITY_FLAG, "PRIORITY"),
            ],
            SETTINGS | PING => &[(ACK, "ACK")],
            CONTINUATION => &[(END_HEADERS, "END_HEADERS")],
            PUSH_PROMISE => &[(END_HEADERS, "END_HEADERS"), (PADDED, "PADDED")],
            _ => &[],
        };
        defined
            .iter()
            .filter(|(bit, _)| self.flags & bit != 0)
            .map(|(_, name)| *name)
            .collect()
    }
}

/// One traced frame (or the connection preface), rendered.
#[derive(Debug, Clone)]
pub struct Record {
    /// Which way it went.
    pub direction: Direction,
    /// Its header; `None` for the connection preface and for trace notes.
    pub header: Option<FrameHeader>,
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
    /// HPACK state of this direction.
    hpack: loona_hpack::Decoder<'static>,
    /// A header block continued in CONTINUATION frames: stream, the flags of
    /// the HEADERS frame that began it, the fragments so far.
    pending_block: Option<(u32, u8, Vec<u8>)>,
    /// Set when something could not be parsed: later bytes are ignored.
    failed: bool,
}

impl DirectionState {
    fn new(preface: bool) -> Self {
        DirectionState {
            buffer: Vec::new(),
            preface_pending: preface,
            hpack: loona_hpack::Decoder::new(),
            pending_block: None,
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
    /// Bytes of a gRPC message not complete yet, per direction.
    partial: [Vec<u8>; 2],
    /// Bytes still to skip of a message too large to trace, per direction.
    skip: [usize; 2],
}

/// One HTTP/2 connection's traffic, both directions, turned into
/// [`Record`]s. Pure: no I/O.
pub struct Conversation {
    mode: Mode,
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

/// Our descriptors, decoded once.
fn pool() -> Option<&'static DescriptorPool> {
    static POOL: OnceLock<Option<DescriptorPool>> = OnceLock::new();
    POOL.get_or_init(|| DescriptorPool::decode(crate::pb::FILE_DESCRIPTOR_SET).ok())
        .as_ref()
}

/// The request and response types of `/package.Service/Method`.
fn method_types(path: &str) -> [Option<MessageDescriptor>; 2] {
    let found = path
        .strip_prefix('/')
        .and_then(|rest| rest.split_once('/'))
        .and_then(|(service, method)| {
            let service = pool()?.get_service_by_name(service)?;
            let method = service.methods().find(|m| m.name() == method)?;
            Some([Some(method.input()), Some(method.output())])
        });
    found.unwrap_or([None, None])
}

impl Conversation {
    /// A conversation that has seen nothing yet (the client preface comes
    /// first).
    pub fn new(mode: Mode) -> Self {
        Conversation {
            mode,
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
            let Some(header) = FrameHeader::parse(&state.buffer) else {
                break;
            };
            let length = header.length as usize;
            if length > MAX_TRACED_FRAME {
                state.failed = true;
                records.push(self.note(direction, "frame too large to trace: trace stopped"));
                break;
            }
            let total = FRAME_HEADER_LEN + length;
            if state.buffer.len() < total {
                break;
            }
            let frame: Vec<u8> = state.buffer.drain(..total).collect();
            let payload = frame.get(FRAME_HEADER_LEN..).unwrap_or_default();
            let record = self.frame(direction, header, &frame, payload);
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

    fn frame(
        &mut self,
        direction: Direction,
        header: FrameHeader,
        frame: &[u8],
        payload: &[u8],
    ) -> Record {
        let flags = header.flag_names();
        let mut text = format!(
            "{}  {}  stream {}{}{}  ({} bytes)\n",
            direction.arrow(),
            header.kind_name(),
            header.stream,
            if flags.is_empty() { "" } else { "  " },
            flags.join(" "),
            header.length
        );
        if self.mode == Mode::Hex {
            let head = frame.get(..FRAME_HEADER_LEN).unwrap_or_default();
            let _ = writeln!(
                text,
                "  {}  frame header: length {} · type 0x{:x} · flags 0x{:02x} · stream {}",
                hex(head),
                header.length,
                header.kind,
                header.flags,
                header.stream
            );
        }
        match header.kind {
            DATA => self.data(direction, header, payload, &mut text),
            HEADERS => {
                let block = strip_padding_and_priority(header, payload);
                match block {
                    Some(block) => self.header_block(direction, header, block, &mut text),
                    None => text.push_str("  (malformed padding)\n"),
                }
            }
            CONTINUATION => self.continuation(direction, header, payload, &mut text),
            SETTINGS => settings(header, payload, self.mode, &mut text),
            WINDOW_UPDATE => {
                let increment = payload
                    .first_chunk::<4>()
                    .map(|b| u32::from_be_bytes(*b) & 0x7fff_ffff);
                match increment {
                    Some(n) if header.stream == 0 => {
                        let _ = writeln!(text, "  the connection's window grows by {n} bytes");
                    }
                    Some(n) => {
                        let _ = writeln!(text, "  this stream's window grows by {n} bytes");
                    }
                    None => text.push_str("  (malformed)\n"),
                }
            }
            PING => {
                let what = if header.flags & ACK != 0 {
                    "answer to a PING, same 8 bytes"
                } else {
                    "are you there? (8 opaque bytes, echoed in the answer)"
                };
                let _ = writeln!(text, "  {what}: {}", hex(payload));
            }
            RST_STREAM => {
                let code = payload.first_chunk::<4>().map(|b| u32::from_be_bytes(*b));
                match code {
                    Some(code) => {
                        let _ = writeln!(text, "  stream reset: {}", error_code(code));
                    }
                    None => text.push_str("  (malformed)\n"),
                }
            }
            GOAWAY => {
                let last = payload
                    .first_chunk::<4>()
                    .map(|b| u32::from_be_bytes(*b) & 0x7fff_ffff);
                let code = payload
                    .get(4..8)
                    .and_then(|b| b.first_chunk::<4>())
                    .map(|b| u32::from_be_bytes(*b));
                if let (Some(last), Some(code)) = (last, code) {
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
                } else {
                    text.push_str("  (malformed)\n");
                }
            }
            _ => {
                if self.mode == Mode::Hex {
                    hex_rows(&mut text, "  ", payload, 16);
                }
            }
        }
        Record {
            direction,
            header: Some(header),
            text,
        }
    }

    fn header_block(
        &mut self,
        direction: Direction,
        header: FrameHeader,
        fragment: &[u8],
        text: &mut String,
    ) {
        if header.flags & END_HEADERS == 0 {
            // RFC 9113 §6.10: the block goes on in CONTINUATION frames;
            // HPACK can only decode it whole.
            if let Some(state) = self.directions.get_mut(direction.index()) {
                state.pending_block = Some((header.stream, header.flags, fragment.to_vec()));
            }
            if self.mode == Mode::Hex {
                text.push_str("  header block fragment (HPACK), continued:\n");
                hex_rows(text, "    ", fragment, 16);
            }
            return;
        }
        self.decode_block(direction, header.stream, header.flags, fragment, text);
    }

    fn continuation(
        &mut self,
        direction: Direction,
        header: FrameHeader,
        payload: &[u8],
        text: &mut String,
    ) {
        let Some(state) = self.directions.get_mut(direction.index()) else {
            return;
        };
        let Some((stream, flags, mut block)) = state.pending_block.take() else {
            text.push_str("  (CONTINUATION without a header block in progress)\n");
            return;
        };
        block.extend_from_slice(payload);
        if header.flags & END_HEADERS == 0 {
            state.pending_block = Some((stream, flags, block));
            if self.mode == Mode::Hex {
                hex_rows(text, "    ", payload, 16);
            }
            return;
        }
        self.decode_block(direction, stream, flags, &block, text);
    }

    fn decode_block(
        &mut self,
        direction: Direction,
        stream: u32,
        flags: u8,
        block: &[u8],
        text: &mut String,
    ) {
        let d = direction.index();
        let Some(state) = self.directions.get_mut(d) else {
            return;
        };
        // A tracer must never take the connection down: should the HPACK
        // decoder panic on bytes it does not expect, the trace of this
        // direction stops and the connection carries on.
        let hpack = &mut state.hpack;
        let decoded =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hpack.decode(block)));
        let fields = match decoded {
            Ok(Ok(fields)) => fields,
            Ok(Err(e)) => {
                state.failed = true;
                let _ = writeln!(
                    text,
                    "  (HPACK error {e:?}: trace of this direction stopped)"
                );
                return;
            }
            Err(_) => {
                state.failed = true;
                text.push_str("  (HPACK decoder failed: trace of this direction stopped)\n");
                return;
            }
        };
        let stream_state = self.streams.entry(stream).or_default();
        let seen = stream_state.header_blocks.get(d).copied().unwrap_or(0);
        if let Some(count) = stream_state.header_blocks.get_mut(d) {
            *count += 1;
        }
        let end_stream = flags & END_STREAM != 0;
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
        let field_text = |(name, value): &(Vec<u8>, Vec<u8>)| {
            format!(
                "{}: {}",
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(value)
            )
        };
        let parts = match self.mode {
            Mode::Hex => hpack_parts(block)
                .filter(|parts| parts.iter().filter(|p| p.emits).count() == fields.len()),
            Mode::Text => None,
        };
        match parts {
            Some(parts) => {
                // Each representation in the block, with the field it
                // decodes to (RFC 7541 §6).
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
                if self.mode == Mode::Hex {
                    let _ = writeln!(text, "  header block (HPACK, {} bytes):", block.len());
                    hex_rows(text, "    ", block, 16);
                }
                for field in &fields {
                    let _ = writeln!(text, "    {}", field_text(field));
                }
            }
        }
        if direction == Direction::ClientToServer && seen == 0 {
            let path = fields
                .iter()
                .find(|(name, _)| name.as_slice() == b":path")
                .map(|(_, value)| String::from_utf8_lossy(value).into_owned());
            if let Some(path) = path {
                stream_state.types = method_types(&path);
                stream_state.path = Some(path);
            }
        }
    }

    fn data(
        &mut self,
        direction: Direction,
        header: FrameHeader,
        payload: &[u8],
        text: &mut String,
    ) {
        let d = direction.index();
        let Some(data) = strip_padding(header, payload) else {
            text.push_str("  (malformed padding)\n");
            return;
        };
        let mode = self.mode;
        let stream = self.streams.entry(header.stream).or_default();
        let message_type = stream.types.get(d).cloned().flatten();
        let (Some(partial), Some(skip)) = (stream.partial.get_mut(d), stream.skip.get_mut(d))
        else {
            return;
        };
        let mut data = data;
        if *skip > 0 {
            let n = (*skip).min(data.len());
            *skip -= n;
            data = data.get(n..).unwrap_or_default();
            let _ = writeln!(text, "  ({n} more bytes of a message too large to trace)");
        }
        partial.extend_from_slice(data);
        while let Some(&[flag, l0, l1, l2, l3]) = partial.first_chunk::<5>() {
            let length = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
            if length > MAX_TRACED_MESSAGE {
                let _ = writeln!(
                    text,
                    "  gRPC message  flag {flag} | length {length} | (too large to trace)"
                );
                let have = partial.len().saturating_sub(5);
                *skip = length.saturating_sub(have);
                partial.clear();
                break;
            }
            let Some(body) = partial.get(5..5 + length) else {
                break;
            };
            render_message(
                text,
                mode,
                flag,
                [flag, l0, l1, l2, l3],
                body,
                message_type.as_ref(),
            );
            partial.drain(..5 + length);
        }
        if !partial.is_empty() {
            let _ = writeln!(
                text,
                "  ({} bytes of a gRPC message that goes on in the next DATA frame)",
                partial.len()
            );
        }
        if data.is_empty() && header.flags & END_STREAM != 0 {
            let side = match direction {
                Direction::ClientToServer => "client",
                Direction::ServerToClient => "server",
            };
            let _ = writeln!(
                text,
                "  (no data: END_STREAM closes the {side}'s side of the stream)"
            );
        }
    }
}

/// One representation in an HPACK header block.
struct HpackPart {
    /// Its bytes in the block.
    range: std::ops::Range<usize>,
    /// What kind of representation it is, for a reader.
    description: String,
    /// Whether it decodes to a header field (a table size update does not).
    emits: bool,
}

/// The last entry of HPACK's static table (RFC 7541 Appendix A); indices
/// above it name the dynamic table.
const STATIC_TABLE_LEN: u64 = 61;

/// An HPACK integer with an `n`-bit prefix at `at` (RFC 7541 §5.1): its
/// value and where it ends.
fn hpack_int(block: &[u8], at: usize, n: u32) -> Option<(u64, usize)> {
    let mask = (1u64 << n) - 1;
    let first = u64::from(*block.get(at)?) & mask;
    if first < mask {
        return Some((first, at + 1));
    }
    let mut value = mask;
    let mut at = at + 1;
    for shift in (0..56).step_by(7) {
        let byte = *block.get(at)?;
        at += 1;
        value = value.checked_add(u64::from(byte & 0x7f) << shift)?;
        if byte & 0x80 == 0 {
            return Some((value, at));
        }
    }
    None
}

/// A string literal at `at` (RFC 7541 §5.2): Huffman-coded or not, its
/// length, and where it ends.
fn hpack_string(block: &[u8], at: usize) -> Option<(bool, u64, usize)> {
    let huffman = block.get(at)? & 0x80 != 0;
    let (len, start) = hpack_int(block, at, 7)?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    (end <= block.len()).then_some((huffman, len, end))
}

fn table_entry(index: u64) -> String {
    if index <= STATIC_TABLE_LEN {
        format!("static table entry {index}")
    } else {
        format!("dynamic table entry {index}")
    }
}

/// Splits a header block into its representations (RFC 7541 §6), without
/// decoding them (the decoder does that); `None` if the block does not parse.
fn hpack_parts(block: &[u8]) -> Option<Vec<HpackPart>> {
    let mut parts = Vec::new();
    let mut at = 0;
    while at < block.len() {
        let first = *block.get(at)?;
        let start = at;
        let (description, emits) = if first & 0x80 != 0 {
            // §6.1: "1" then a 7-bit index.
            let (index, end) = hpack_int(block, at, 7)?;
            at = end;
            (format!("indexed: {}", table_entry(index)), true)
        } else if first & 0xe0 == 0x20 {
            // §6.3: "001" then the new size (5-bit prefix).
            let (size, end) = hpack_int(block, at, 5)?;
            at = end;
            (format!("dynamic table size update: {size} bytes"), false)
        } else {
            // §6.2: "01" (6-bit index, added to the dynamic table), "0000"
            // (not added), "0001" (never indexed, not even by proxies).
            let (prefix, kind) = match first & 0xf0 {
                _ if first & 0xc0 == 0x40 => (6, "literal, added to the dynamic table"),
                0x10 => (4, "literal, never indexed"),
                _ => (4, "literal, not indexed"),
            };
            let (index, end) = hpack_int(block, at, prefix)?;
            at = end;
            let name = if index == 0 {
                let (huffman, len, end) = hpack_string(block, at)?;
                at = end;
                format!(
                    "new name ({len} bytes{})",
                    if huffman { ", Huffman-coded" } else { "" }
                )
            } else {
                format!("name from {}", table_entry(index))
            };
            let (huffman, len, end) = hpack_string(block, at)?;
            at = end;
            (
                format!(
                    "{kind}; {name}; value {len} bytes{}",
                    if huffman { ", Huffman-coded" } else { "" }
                ),
                true,
            )
        };
        parts.push(HpackPart {
            range: start..at,
            description,
            emits,
        });
    }
    Some(parts)
}

/// The payload of a DATA frame without its padding (RFC 9113 §6.1).
fn strip_padding(header: FrameHeader, payload: &[u8]) -> Option<&[u8]> {
    if header.flags & PADDED == 0 {
        return Some(payload);
    }
    let (&pad, rest) = payload.split_first()?;
    rest.get(..rest.len().checked_sub(pad as usize)?)
}

/// The header block fragment of a HEADERS frame: without padding and the
/// priority fields (RFC 9113 §6.2).
fn strip_padding_and_priority(header: FrameHeader, payload: &[u8]) -> Option<&[u8]> {
    let unpadded = strip_padding(header, payload)?;
    if header.flags & PRIORITY_FLAG != 0 {
        unpadded.get(5..)
    } else {
        Some(unpadded)
    }
}

fn settings(header: FrameHeader, payload: &[u8], mode: Mode, text: &mut String) {
    if header.flags & ACK != 0 {
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
        let name = match id {
            0x1 => "HEADER_TABLE_SIZE".to_owned(),
            0x2 => "ENABLE_PUSH".to_owned(),
            0x3 => "MAX_CONCURRENT_STREAMS".to_owned(),
            0x4 => "INITIAL_WINDOW_SIZE".to_owned(),
            0x5 => "MAX_FRAME_SIZE".to_owned(),
            0x6 => "MAX_HEADER_LIST_SIZE".to_owned(),
            0x8 => "ENABLE_CONNECT_PROTOCOL".to_owned(),
            other => format!("0x{other:x}"),
        };
        if mode == Mode::Hex {
            let _ = writeln!(text, "  {}  {name} = {value}", hex(entry));
        } else {
            let _ = writeln!(text, "  {name} = {value}");
        }
    }
}

/// RFC 9113 §7 error codes.
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

/// One gRPC message: `flag | length | protobuf as text`, and in hex mode its
/// prefix and fields byte by byte.
fn render_message(
    text: &mut String,
    mode: Mode,
    flag: u8,
    prefix: [u8; 5],
    body: &[u8],
    message_type: Option<&MessageDescriptor>,
) {
    let type_name = message_type.map_or("(unknown type)", |t| t.full_name());
    if flag != 0 {
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

/// Appends one line per protobuf field of `bytes`: its bytes (tag, length,
/// value), its number and name, and its value. Nested messages are walked
/// with more indent.
fn annotate_fields(
    text: &mut String,
    indent: &str,
    bytes: &[u8],
    message_type: Option<&MessageDescriptor>,
    depth: usize,
) {
    let mut at = 0;
    while at < bytes.len() {
        let start = at;
        let Some((tag, after_tag)) = varint(bytes, at) else {
            let _ = writeln!(text, "{indent}(truncated tag)");
            return;
        };
        at = after_tag;
        let number = tag >> 3;
        let wire_type = tag & 7;
        let field =
            message_type.and_then(|m| u32::try_from(number).ok().and_then(|n| m.get_field(n)));
        let name = field
            .as_ref()
            .map_or(String::new(), |f| format!(" {}", f.name()));
        let kind = field.as_ref().map(|f| f.kind());
        let (value, end) = match wire_type {
            0 => match varint(bytes, at) {
                Some((v, end)) => (varint_value(v, kind.as_ref()), end),
                None => ("(truncated varint)".to_owned(), bytes.len()),
            },
            1 => match bytes.get(at..at + 8).and_then(|b| b.first_chunk::<8>()) {
                Some(b) => (format!("{} (64-bit)", u64::from_le_bytes(*b)), at + 8),
                None => ("(truncated)".to_owned(), bytes.len()),
            },
            5 => match bytes.get(at..at + 4).and_then(|b| b.first_chunk::<4>()) {
                Some(b) => (format!("{} (32-bit)", u32::from_le_bytes(*b)), at + 4),
                None => ("(truncated)".to_owned(), bytes.len()),
            },
            2 => {
                let Some((len, body_start)) = varint(bytes, at) else {
                    let _ = writeln!(text, "{indent}(truncated length)");
                    return;
                };
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|len| body_start.checked_add(len))
                    .filter(|&end| end <= bytes.len());
                let Some(end) = end else {
                    let _ = writeln!(text, "{indent}(length {len} runs past the message)");
                    return;
                };
                let body = bytes.get(body_start..end).unwrap_or_default();
                if let Some(Kind::Message(nested)) = &kind {
                    if depth < 16 {
                        let _ = writeln!(
                            text,
                            "{indent}{:<35}  {number}{name}: {} (length {len})",
                            hex(bytes.get(start..body_start).unwrap_or_default()),
                            nested.full_name()
                        );
                        annotate_fields(
                            text,
                            &format!("{indent}  "),
                            body,
                            Some(nested),
                            depth + 1,
                        );
                        at = end;
                        continue;
                    }
                }
                let shown = match (&kind, std::str::from_utf8(body)) {
                    (Some(Kind::String), Ok(s)) => format!("{s:?}"),
                    // Without a schema, text that looks like text is shown
                    // as text.
                    (None, Ok(s)) if !s.chars().any(char::is_control) => format!("{s:?}"),
                    _ => format!("{} bytes", body.len()),
                };
                (shown, end)
            }
            _ => {
                let _ = writeln!(text, "{indent}(wire type {wire_type} not traced)");
                return;
            }
        };
        let element = bytes.get(start..end).unwrap_or_default();
        let mut rows = element.chunks(12);
        let first = rows.next().unwrap_or_default();
        let _ = writeln!(text, "{indent}{:<35}  {number}{name}: {value}", hex(first));
        for (i, row) in rows.enumerate() {
            if i * 12 >= MAX_HEX_BYTES {
                let _ = writeln!(
                    text,
                    "{indent}… ({} more bytes)",
                    element.len().saturating_sub(12 + i * 12)
                );
                break;
            }
            let _ = writeln!(text, "{indent}{}", hex(row));
        }
        at = end;
    }
}

/// A varint value shown as its field's type says (RFC: protobuf encoding).
fn varint_value(v: u64, kind: Option<&Kind>) -> String {
    match kind {
        Some(Kind::Bool) => (v != 0).to_string(),
        Some(Kind::Sint32) | Some(Kind::Sint64) => {
            (((v >> 1) as i64) ^ -((v & 1) as i64)).to_string()
        }
        Some(Kind::Int32) | Some(Kind::Int64) => (v as i64).to_string(),
        Some(Kind::Enum(e)) => match e.get_value(v as i32) {
            Some(value) => format!("{} ({v})", value.name()),
            None => v.to_string(),
        },
        _ => v.to_string(),
    }
}

/// A protobuf varint at `at`: its value and where it ends.
fn varint(bytes: &[u8], mut at: usize) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(at)?;
        at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((value, at));
        }
    }
    None
}

/// `text` cut after `max` characters, saying how much was left out.
fn truncate(text: String, max: usize) -> String {
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
fn hex_rows(text: &mut String, indent: &str, bytes: &[u8], width: usize) {
    for (i, row) in bytes.chunks(width).enumerate() {
        if i * width >= MAX_HEX_BYTES {
            let _ = writeln!(text, "{indent}… ({} more bytes)", bytes.len() - i * width);
            break;
        }
        let _ = writeln!(text, "{indent}{}", hex(row));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(conversation: &mut Conversation, direction: Direction, bytes: &[u8]) -> String {
        conversation
            .feed(direction, bytes)
            .into_iter()
            .map(|r| r.text)
            .collect()
    }

    #[test]
    fn frame_header_fields() {
        // length 0x000012 = 18 · type 0x4 SETTINGS · flags 0 · stream 0
        let header = FrameHeader::parse(&[0, 0, 0x12, 0x04, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(
            header,
            FrameHeader {
                length: 18,
                kind: SETTINGS,
                flags: 0,
                stream: 0
            }
        );
        // The reserved bit is ignored.
        let header = FrameHeader::parse(&[0, 0, 0, 0, 0x01, 0x80, 0, 0, 0x03]).unwrap();
        assert_eq!((header.kind_name().as_str(), header.stream), ("DATA", 3));
        assert_eq!(header.flag_names(), ["END_STREAM"]);
        assert_eq!(FrameHeader::parse(&[0; 8]), None);
    }

    #[test]
    fn preface_settings_and_split_frames() {
        let mut c = Conversation::new(Mode::Text);
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
        let mut c = Conversation::new(Mode::Text);
        let mut bytes = PREFACE.to_vec();
        // HEADERS, stream 1, END_HEADERS: HPACK literal without indexing,
        // new name ":path" (0x00, length 5, ":path", length 28, the path).
        let path = b"/chat.ChatService/ChatStream";
        let mut block = vec![0x00, 5];
        block.extend_from_slice(b":path");
        block.push(path.len() as u8);
        block.extend_from_slice(path);
        bytes.extend_from_slice(&[0, 0, block.len() as u8, HEADERS, END_HEADERS, 0, 0, 0, 1]);
        bytes.extend_from_slice(&block);
        // The message: prefix 0 | length 7, then field 1 (user) = "alice".
        let message = [0, 0, 0, 0, 7, 0x0a, 5, b'a', b'l', b'i', b'c', b'e'];
        // First DATA frame: the prefix and 2 bytes; the second: the rest.
        bytes.extend_from_slice(&[0, 0, 7, DATA, 0, 0, 0, 0, 1]);
        bytes.extend_from_slice(&message[..7]);
        bytes.extend_from_slice(&[0, 0, 5, DATA, END_STREAM, 0, 0, 0, 1]);
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
    fn hex_mode_annotates_fields() {
        let descriptor = pool()
            .unwrap()
            .get_message_by_name("chat.ChatMessage")
            .unwrap();
        let mut text = String::new();
        // field 1 "al" · field 3 varint 300 (ac 02) · field 4 varint 2
        let body = [0x0a, 2, b'a', b'l', 0x18, 0xac, 0x02, 0x20, 0x02];
        annotate_fields(&mut text, "", &body, Some(&descriptor), 0);
        assert_eq!(
            text,
            format!(
                "{:<35}  1 user: \"al\"\n{:<35}  3 timestamp: 300\n{:<35}  4 id: 2\n",
                "0a 02 61 6c", "18 ac 02", "20 02"
            )
        );
    }

    #[test]
    fn hpack_representations_are_told_apart() {
        // 82: indexed, static 2 (:method GET) · 3f e1 1f: size update 4096 ·
        // 44 03 "/ab": literal added, name static 4 (:path), raw value ·
        // 10 01 "k" 01 "v": never indexed, new name · c0: dynamic 64.
        let block = [
            0x82, 0x3f, 0xe1, 0x1f, 0x44, 0x03, b'/', b'a', b'b', 0x10, 0x01, b'k', 0x01, b'v',
            0xc0,
        ];
        let parts = hpack_parts(&block).unwrap();
        let described: Vec<(&str, bool)> = parts
            .iter()
            .map(|p| (p.description.as_str(), p.emits))
            .collect();
        assert_eq!(
            described,
            [
                ("indexed: static table entry 2", true),
                ("dynamic table size update: 4096 bytes", false),
                (
                    "literal, added to the dynamic table; name from static table entry 4; value 3 bytes",
                    true
                ),
                (
                    "literal, never indexed; new name (1 bytes); value 1 bytes",
                    true
                ),
                ("indexed: dynamic table entry 64", true),
            ]
        );
        assert_eq!(parts[2].range, 4..9);
        // A string running past the end.
        assert!(hpack_parts(&[0x44, 0x05, b'x']).is_none());
        assert!(hpack_parts(&[0xff, 0xff, 0xff]).is_none());
    }

    #[test]
    fn garbage_stops_the_trace_without_panicking() {
        let mut c = Conversation::new(Mode::Hex);
        let out = feed_all(
            &mut c,
            Direction::ClientToServer,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        assert!(out.contains("not an HTTP/2 connection preface"), "{out}");
        assert!(c.feed(Direction::ClientToServer, &[0; 100]).is_empty());
        // A bad HPACK block in the other direction.
        let bad = [0, 0, 2, HEADERS, END_HEADERS, 0, 0, 0, 1, 0xff, 0xff];
        let out = feed_all(&mut c, Direction::ServerToClient, &bad);
        assert!(out.contains("HPACK"), "{out}");
        // Every prefix of a frame with bogus lengths.
        let mut c = Conversation::new(Mode::Hex);
        let _ = c.feed(Direction::ClientToServer, PREFACE);
        let data = [
            0, 0, 9, DATA, PADDED, 0, 0, 0, 1, 200, 0, 0, 0, 0, 0xff, 0, 0, 0,
        ];
        let out = feed_all(&mut c, Direction::ClientToServer, &data);
        assert!(out.contains("malformed padding"), "{out}");
    }
}
