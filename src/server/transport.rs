//! What a server connection's HTTP/2 runs on: a TCP socket, with or without
//! TLS, and a thin watch on the frames passing through it for the PING
//! policy ([`ping_policy`](super::ping_policy)).
//!
//! ```text
//!   h2 ──▶ Watched ──▶ Transport::Plain(TcpStream)
//!            │     └─▶ Transport::Tls(TlsStream<TcpStream>)
//!            └ scans frame headers both ways; too many PINGs → the connection is told
//! ```
//!
//! The watch sits above TLS, so it sees HTTP/2 frames, not TLS records. It
//! never changes a byte: when the policy is broken it only tells the
//! connection's driver, which sends GOAWAY `ENHANCE_YOUR_CALM` through `h2`.
//! It also paces reads: after a read full of small DATA frames, the next
//! read yields to the calls first ([`crate::http2::pace`] says why).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tracing::warn;

use super::ping_policy::{PingPolicy, Verdict};
use super::state::ConnectionState;
use crate::http2::{FrameHead, FrameScanner, ReadPacer, poll_read_joined};
use crate::wire_trace::Tap;

/// A connection's byte stream: plain TCP or TLS over TCP.
pub(crate) enum Transport {
    Plain(TcpStream),
    /// Boxed: a TLS session is large, and plaintext connections should not
    /// pay for its space.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

macro_rules! delegate {
    ($self:ident, $io:ident => $call:expr) => {
        match $self.get_mut() {
            Transport::Plain($io) => {
                let $io = Pin::new($io);
                $call
            }
            Transport::Tls($io) => {
                let $io = Pin::new($io.as_mut());
                $call
            }
        }
    };
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, io => io.poll_read(cx, buf))
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, io => io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, io => io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Plain(io) => io.is_write_vectored(),
            Transport::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, io => io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, io => io.poll_shutdown(cx))
    }
}

/// A [`Transport`] whose frames are watched for the PING policy.
pub(crate) struct Watched {
    /// The socket, tapped for `--trace-wire` (which sees what the peer sent).
    io: Tap<Transport>,
    inbound: FrameScanner,
    outbound: FrameScanner,
    policy: PingPolicy,
    /// Lets the calls read what `h2` has queued for them after a read full
    /// of small DATA frames (see [`crate::http2::pace`]).
    pacer: ReadPacer,
    /// Told once when the policy is broken.
    state: Arc<ConnectionState>,
    tripped: bool,
    peer: SocketAddr,
}

impl Watched {
    /// Watches `io`; `state` is told when the peer breaks `policy`.
    pub(crate) fn new(
        io: Tap<Transport>,
        policy: PingPolicy,
        state: Arc<ConnectionState>,
        peer: SocketAddr,
    ) -> Self {
        Watched {
            io,
            inbound: FrameScanner::from_client(),
            outbound: FrameScanner::from_server(),
            policy,
            pacer: ReadPacer::default(),
            state,
            tripped: false,
            peer,
        }
    }

    /// A frame header the client sent, for the PING policy. (A function of
    /// the fields it needs, so that the scanner, another field, can call it
    /// while it walks the bytes.)
    fn saw_inbound(
        head: FrameHead,
        policy: &mut PingPolicy,
        state: &ConnectionState,
        tripped: &mut bool,
        peer: SocketAddr,
    ) {
        if head.is_ping()
            && policy.on_ping(Instant::now()) == Verdict::TooMany
            && !std::mem::replace(tripped, true)
        {
            // Logged once per connection, not per PING.
            warn!(%peer, "client PINGs too often: GOAWAY ENHANCE_YOUR_CALM");
            state.too_many_pings();
        }
    }

    fn saw_outbound(&mut self, bytes: &[u8]) {
        let Watched {
            outbound, policy, ..
        } = self;
        outbound.scan(bytes, |head| {
            if head.is_response() {
                policy.on_response_sent();
            }
        });
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Watched {
            io,
            inbound,
            policy,
            pacer,
            state,
            tripped,
            peer,
            ..
        } = self.get_mut();
        // Runs of DATA frames are joined on their way to `h2`, and reads
        // paced (`http2::pace`); the PING policy still sees every frame as
        // the client sent it.
        poll_read_joined(io, cx, buf, inbound, pacer, |head| {
            Watched::saw_inbound(head, policy, state, tripped, *peer)
        })
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.saw_outbound(buf.get(..n).unwrap_or(buf));
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(mut n)) = polled {
            // Only the first `n` octets, across the slices, were written.
            for buf in bufs {
                if n == 0 {
                    break;
                }
                let take = n.min(buf.len());
                this.saw_outbound(buf.get(..take).unwrap_or_default());
                n -= take;
            }
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
