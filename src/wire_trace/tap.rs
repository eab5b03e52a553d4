//! The I/O side of the trace: [`WireTrace`] (what to show and where to send
//! it) and [`Tap`], a socket wrapper that copies every byte read and written
//! into a [`Conversation`] and sends the frames it completes to the sink.
//!
//! ```text
//!   h2 ◀──▶ Tap ◀──▶ socket          (the bytes pass through unchanged)
//!            │
//!            └─▶ Conversation::feed ─▶ Records ─▶ sink ("[wire 127.0.0.1:5 …] …")
//! ```
//!
//! Nothing is global: a program that wants the trace builds one
//! [`WireTrace`] and hands it to the server and client builders
//! (`server::Builder::wire_trace`, `client::Builder::wire_trace`), which
//! wrap each socket with [`WireTrace::tap`] or, untraced, [`Tap::untraced`].
//! Untraced, the wrapper passes every call straight through.

use std::io::{self, Write as _};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::conversation::Conversation;
use super::direction::{Direction, Side};
use super::protobuf::MessageTypes;
use super::render::Mode;

/// Where traced records go.
pub type Sink = Arc<dyn Fn(&str) + Send + Sync>;

/// What the trace shows ([`Mode`], the message types it can name) and where
/// its records go ([`Sink`]). Cheap to clone: connections share it.
#[derive(Clone)]
pub struct WireTrace {
    mode: Mode,
    sink: Sink,
    types: MessageTypes,
}

impl std::fmt::Debug for WireTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireTrace")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl WireTrace {
    /// Records go to `sink`, one call per record (a whole frame). Messages
    /// are of unknown type until [`WireTrace::with_types`].
    pub fn new(mode: Mode, sink: Sink) -> Self {
        WireTrace {
            mode,
            sink,
            types: MessageTypes::none(),
        }
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

    /// Decodes gRPC messages as `types` (for our services,
    /// `MessageTypes::from_descriptor_set(grpc_chat::pb::FILE_DESCRIPTOR_SET)`).
    pub fn with_types(mut self, types: MessageTypes) -> Self {
        self.types = types;
        self
    }

    /// Wraps `io` so that everything it carries is traced; `label` names the
    /// connection (the peer's address).
    pub fn tap<T>(&self, io: T, side: Side, label: impl std::fmt::Display) -> Tap<T> {
        let trace = Arc::new(Traced {
            conversation: Mutex::new(Conversation::new(self.mode, self.types.clone())),
            sink: Arc::clone(&self.sink),
            label: label.to_string(),
        });
        Tap {
            io,
            side,
            trace: Some(trace),
        }
    }
}

/// One connection's trace: its conversation and where its records go.
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

/// A socket whose traffic may be traced (see [`WireTrace::tap`]).
pub struct Tap<T> {
    io: T,
    side: Side,
    /// `None`: untraced, every call goes straight through.
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
    /// `io` traced by `trace` if there is one, else passed straight through:
    /// what a server or client does with its optional [`WireTrace`].
    pub fn new(
        io: T,
        side: Side,
        label: impl std::fmt::Display,
        trace: Option<&WireTrace>,
    ) -> Self {
        match trace {
            Some(trace) => trace.tap(io, side, label),
            None => Tap::untraced(io, side),
        }
    }

    /// `io`, not traced: the wrapper adds nothing but a branch per call.
    pub fn untraced(io: T, side: Side) -> Self {
        Tap {
            io,
            side,
            trace: None,
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
                trace.feed(self.side.inbound(), new);
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
                trace.feed(self.side.outbound(), written);
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
