//! Small DATA frames: serving a peer that cuts its data small, without
//! letting one make us hold unbounded memory.
//!
//! HTTP/2 lets a sender cut its data into DATA frames as small as it likes,
//! and real senders do: grpc's own HTTP/2 tests send a message as 5-byte
//! frames. Each frame `h2` has received but a call has not read yet costs
//! memory beyond its bytes (measured here: about 200 bytes held per
//! one-byte frame), which flow control does not count. So `h2` (0.4.20 on)
//! keeps a *DATA-frame budget*: every unread frame under 256 bytes costs
//! `256 - its length`, paid back when the call reads it, and a connection
//! that overspends gets `GOAWAY(ENHANCE_YOUR_CALM)`. Left at that, a 270 kB
//! request in 5-byte frames (54,000 of them, 13.6 MB of budget) is refused:
//! `h2` reads as long as the socket has bytes, and the whole request arrives
//! before the call's task has run once, however eagerly it reads.
//!
//! Three things make an honest peer fit, and keep the limit for the rest:
//!
//! * **Joining** ([`super::coalesce`]): a run of DATA frames of one stream
//!   within one socket read reaches `h2` as one frame. A burst of tiny
//!   frames, the pattern real peers produce, costs `h2` one or two frames
//!   per read instead of thousands.
//! * **Pacing** ([`ReadPacer`]): after a read that carried 64 or more
//!   small DATA frames, the connection's next read yields to the other tasks
//!   first, so the calls take what was read before more comes. This covers
//!   what joining cannot (tiny frames of several streams interleaved).
//! * **The budget itself**, [`data_frame_budget`]: twice the connection
//!   window. That still bounds what a peer gains from a call that does not
//!   read: at most `2 × window / 255` frames, 16,448 for our 2 MiB window,
//!   about 3.4 MB — the same order as the 2 MiB of data bytes flow control
//!   already lets it make us hold (without a budget, the whole window of
//!   one-byte frames: about 400 MB).
//!
//! [`Paced`] is the client's wrapper; the server's transport
//! (`server::transport`) does the same inside the watch it already keeps on
//! its frames.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::frame::{DATA, FrameHead};
use super::scan::FrameScanner;

/// `h2` counts a received DATA frame shorter than this as framing overhead
/// (its private `DEFAULT_DATA_FRAME_OVERHEAD_THRESHOLD`, 256 in 0.4).
pub const SMALL_DATA_FRAME: usize = 256;

/// Small DATA frames after which a connection's next read yields first.
/// Low enough that a read full of them is followed by the calls' turn;
/// high enough that ordinary traffic (a few small messages) never yields.
const YIELD_AFTER_SMALL_FRAMES: u32 = 64;

/// The DATA-frame budget for a connection whose receive window is
/// `window` bytes: `2 × window` (see the module documentation for why).
pub fn data_frame_budget(window: u32) -> usize {
    usize::try_from(window)
        .unwrap_or(usize::MAX)
        .saturating_mul(2)
}

/// Counts the small DATA frames read since the connection last yielded,
/// and says when to yield. Pure: frame headers in, a yes or no out.
#[derive(Debug, Default, Clone)]
pub struct ReadPacer {
    small_frames: u32,
}

impl ReadPacer {
    /// A frame header just read.
    pub fn saw(&mut self, head: FrameHead) {
        let small = head.length > 0 && (head.length as usize) < SMALL_DATA_FRAME;
        if head.kind == DATA && small {
            self.small_frames = self.small_frames.saturating_add(1);
        }
    }

    /// Whether the next read should let other tasks run first. Saying yes
    /// starts the count again.
    pub fn should_yield(&mut self) -> bool {
        if self.small_frames >= YIELD_AFTER_SMALL_FRAMES {
            self.small_frames = 0;
            true
        } else {
            false
        }
    }

    /// For `poll_read`: `Some(Pending)` to yield now. The task wakes itself
    /// first, so it runs again as soon as the tasks already queued have had
    /// their turn (tokio queues a task that wakes itself behind them).
    pub fn poll_yield(&mut self, cx: &mut Context<'_>) -> Option<Poll<io::Result<()>>> {
        self.should_yield().then(|| {
            cx.waker().wake_by_ref();
            Poll::Pending
        })
    }
}

/// An I/O object whose reads have their runs of DATA frames joined
/// ([`FrameScanner::scan_joining`]) and are paced by a [`ReadPacer`]: what
/// the client puts under its `h2` connection. Writes pass straight through.
#[derive(Debug)]
pub struct Paced<IO> {
    io: IO,
    scanner: FrameScanner,
    pacer: ReadPacer,
}

impl<IO> Paced<IO> {
    /// Paces reads of frames a server sends (no preface before them).
    pub fn from_server(io: IO) -> Self {
        Paced {
            io,
            scanner: FrameScanner::from_server(),
            pacer: ReadPacer::default(),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Paced<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Paced { io, scanner, pacer } = self.get_mut();
        poll_read_joined(io, cx, buf, scanner, pacer, |_| {})
    }
}

/// One read under `h2`, as both sides' transports do it: yield first if
/// `pacer` says so; otherwise read from `io` and join the runs of DATA
/// frames in what arrived ([`FrameScanner::scan_joining`]), with `pacer`
/// and `on_head` told of every frame header as the peer sent it.
///
/// The bytes left are never none when the read brought some: joining only
/// drops the headers of frames joined to an earlier one, so a read that
/// returned bytes never looks like the end of the stream to `h2`.
pub fn poll_read_joined<IO: AsyncRead + Unpin>(
    io: &mut IO,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
    scanner: &mut FrameScanner,
    pacer: &mut ReadPacer,
    mut on_head: impl FnMut(FrameHead),
) -> Poll<io::Result<()>> {
    if let Some(yielded) = pacer.poll_yield(cx) {
        return yielded;
    }
    let before = buf.filled().len();
    let polled = Pin::new(io).poll_read(cx, buf);
    if let Poll::Ready(Ok(())) = polled {
        let kept = match buf.filled_mut().get_mut(before..) {
            Some(new) => scanner.scan_joining(new, |head| {
                pacer.saw(head);
                on_head(head);
            }),
            None => 0,
        };
        buf.set_filled(before + kept);
    }
    polled
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Paced<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn data(length: u32) -> FrameHead {
        FrameHead {
            length,
            kind: DATA,
            flags: 0,
            stream: 1,
        }
    }

    #[test]
    fn yields_after_a_run_of_small_data_frames_only() {
        let mut pacer = ReadPacer::default();
        // Large DATA, empty DATA (limited apart by h2) and other frames
        // never count.
        for _ in 0..1000 {
            pacer.saw(data(256));
            pacer.saw(data(0));
            pacer.saw(FrameHead {
                length: 8,
                kind: 0x6,
                flags: 0,
                stream: 0,
            });
        }
        assert!(!pacer.should_yield());
        for _ in 0..YIELD_AFTER_SMALL_FRAMES - 1 {
            pacer.saw(data(5));
        }
        assert!(!pacer.should_yield());
        pacer.saw(data(255));
        assert!(pacer.should_yield());
        // The count starts again.
        assert!(!pacer.should_yield());
    }

    #[test]
    fn the_budget_is_twice_the_window() {
        assert_eq!(data_frame_budget(2 * 1024 * 1024), 4 * 1024 * 1024);
        // One socket read of 32 KiB in one-byte frames (10 octets each on
        // the wire) fits several times over.
        let one_read = (32 * 1024 / 10) * (SMALL_DATA_FRAME - 1);
        assert!(data_frame_budget(2 * 1024 * 1024) > 4 * one_read);
        assert!(data_frame_budget(u32::MAX) > 0);
    }
}
