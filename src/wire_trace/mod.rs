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
//! The trace only observes: the bytes go through unchanged, and anything it
//! cannot parse ends the trace of that direction with a note, never the
//! connection.
//!
//! # Layout
//!
//! One idea per file; only `tap.rs` does I/O.
//!
//! * `tap.rs` — [`WireTrace`] (mode, message types, sink) and [`Tap`], the
//!   socket wrapper the server and client builders put on each connection.
//! * `conversation.rs` — [`Conversation`]: bytes of each direction in,
//!   rendered frames ([`Record`]) out; reassembles frames across reads and
//!   remembers each stream's `:path`.
//! * `headers.rs` — header blocks: HEADERS + CONTINUATION put together,
//!   decoded with HPACK (one decoder per direction, RFC 7541 §2.2).
//! * `hpack_view.rs` — a header block split into its representations, for
//!   the hex view.
//! * `messages.rs` — gRPC messages reassembled across DATA frames (a DATA
//!   frame boundary is not a message boundary), read with
//!   [`framing::Prefix`](crate::framing::Prefix).
//! * `protobuf.rs` — [`MessageTypes`]: a method's message types, and each
//!   protobuf field annotated with its bytes.
//! * `control.rs` — SETTINGS (by name), WINDOW_UPDATE, PING, RST_STREAM,
//!   GOAWAY (error codes by name).
//! * `direction.rs` — [`Direction`] and [`Side`].
//! * `render.rs` — [`Mode`], [`hex`] and the display limits.
//!
//! Frame headers are read with the crate's one frame-header parser,
//! [`http2::FrameHead`](crate::http2::FrameHead).

mod control;
mod conversation;
mod direction;
mod headers;
mod hpack_view;
mod messages;
mod protobuf;
mod render;
mod tap;

pub use conversation::{Conversation, PREFACE, Record};
pub use direction::{Direction, Side};
pub use protobuf::MessageTypes;
pub use render::{Mode, hex};
pub use tap::{Sink, Tap, WireTrace};
