//! The in-process response pipe: what an HTTP/2 stream's send side is to
//! a network call, for a call served in process ([`local`](super::local)).
//!
//! The server writes through [`LocalOpening`] (headers) and [`LocalStream`]
//! (DATA, trailers, reset), as `outbound.rs` hands them each step; the
//! gateway reads [`LocalEvent`]s from the [`LocalResponse`]. At most
//! `max_send_buffer_size` bytes of DATA wait in the [`Channel`] untaken;
//! beyond that the server's sends wait for room (backpressure). Dropping
//! the `LocalResponse` is the client going away: the call sees a reset.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use h2::Reason;
use http::HeaderMap;
use parking_lot::Mutex;

use crate::framing::Status;

/// A new pipe: the server's end (its headers not sent yet) and the
/// gateway's. At most `window` bytes of DATA wait untaken.
pub(crate) fn pipe(window: usize) -> (LocalOpening, LocalResponse) {
    let channel = Arc::new(Mutex::new(Channel::new(window)));
    let sender = Arc::new(Sender(Arc::clone(&channel)));
    (LocalOpening(sender), LocalResponse { channel })
}

/// What the server sent on an in-process call, in order.
#[derive(Debug)]
pub enum LocalEvent {
    /// The response headers (`:status`, `content-type`, metadata). With
    /// `end`, they are the whole response: a trailers-only status, or an
    /// HTTP error.
    Headers {
        /// Status and headers; no body.
        response: http::Response<()>,
        /// Whether nothing follows.
        end: bool,
    },
    /// Length-prefixed messages, cut wherever the server's flow control cut
    /// them (as DATA frames are).
    Data(Bytes),
    /// The trailers: `grpc-status` and the rest. Nothing follows.
    Trailers(HeaderMap),
    /// The server abandoned the call without a status (as RST_STREAM would
    /// say). Nothing follows.
    Reset,
}

/// The response of an in-process call. Dropping it cancels the call.
pub struct LocalResponse {
    channel: Arc<Mutex<Channel>>,
}

impl std::fmt::Debug for LocalResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalResponse").finish_non_exhaustive()
    }
}

impl LocalResponse {
    /// The next thing the server sent; `None` after the last one.
    /// Taking [`LocalEvent::Data`] gives its bytes' room back to the server.
    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<LocalEvent>> {
        let mut channel = self.channel.lock();
        if let Some(event) = channel.events.pop_front() {
            if let LocalEvent::Data(data) = &event {
                channel.queued = channel.queued.saturating_sub(data.len());
                channel.grown = true;
                if let Some(waker) = channel.capacity_waiter.take() {
                    waker.wake();
                }
            }
            return Poll::Ready(Some(event));
        }
        if channel.finished {
            return Poll::Ready(None);
        }
        if channel.sender_gone {
            // The call's task ended (or was dropped) without a last word.
            channel.finished = true;
            return Poll::Ready(Some(LocalEvent::Reset));
        }
        channel.receiver = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Waits for [`LocalResponse::poll_event`].
    pub async fn event(&mut self) -> Option<LocalEvent> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }
}

impl Drop for LocalResponse {
    fn drop(&mut self) {
        let mut channel = self.channel.lock();
        channel.receiver_gone = true;
        channel.events.clear();
        // Whoever waits to send, or watches for a reset, learns it now.
        if let Some(waker) = channel.capacity_waiter.take() {
            waker.wake();
        }
        if let Some(waker) = channel.reset_waiter.take() {
            waker.wake();
        }
    }
}

/// What the server side and the [`LocalResponse`] share.
struct Channel {
    /// Sent and not yet taken.
    events: VecDeque<LocalEvent>,
    /// DATA bytes in `events`.
    queued: usize,
    /// How many DATA bytes may be queued: the stream's "window".
    window: usize,
    /// Whether room was given back since the sender last asked (what
    /// `poll_capacity` reports, as `h2` reports window increases).
    grown: bool,
    /// Trailers, trailers-only headers or a reset were sent.
    finished: bool,
    /// The server side was dropped.
    sender_gone: bool,
    /// The [`LocalResponse`] was dropped: the client went away.
    receiver_gone: bool,
    receiver: Option<Waker>,
    capacity_waiter: Option<Waker>,
    reset_waiter: Option<Waker>,
}

impl Channel {
    fn new(window: usize) -> Self {
        Channel {
            events: VecDeque::new(),
            queued: 0,
            window: window.max(1),
            grown: false,
            finished: false,
            sender_gone: false,
            receiver_gone: false,
            receiver: None,
            capacity_waiter: None,
            reset_waiter: None,
        }
    }

    fn push(&mut self, event: LocalEvent) -> Result<(), Status> {
        if self.receiver_gone {
            return Err(Status::cancelled("the client cancelled the call"));
        }
        if self.finished {
            return Err(Status::cancelled("call already finished"));
        }
        match &event {
            LocalEvent::Data(data) => self.queued += data.len(),
            LocalEvent::Headers { end: false, .. } => {}
            _ => self.finished = true,
        }
        self.events.push_back(event);
        if let Some(waker) = self.receiver.take() {
            waker.wake();
        }
        Ok(())
    }

    fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<Reason> {
        if self.receiver_gone {
            return Poll::Ready(Reason::CANCEL);
        }
        self.reset_waiter = Some(cx.waker().clone());
        Poll::Pending
    }

    fn reset(&mut self) {
        // Ignored when the client already left, or the call is over.
        let _ = self.push(LocalEvent::Reset);
    }
}

/// The server's end of a [`Channel`], shared by the two phases of the
/// response; when the last one goes, the [`LocalResponse`] is told.
struct Sender(Arc<Mutex<Channel>>);

impl Drop for Sender {
    fn drop(&mut self) {
        let mut channel = self.0.lock();
        channel.sender_gone = true;
        if let Some(waker) = channel.receiver.take() {
            waker.wake();
        }
    }
}

/// An in-process response before its headers (see `outbound::Opening`).
pub(crate) struct LocalOpening(Arc<Sender>);

impl LocalOpening {
    pub(crate) fn send_response(
        &mut self,
        response: http::Response<()>,
        end: bool,
    ) -> Result<LocalStream, Status> {
        self.0
            .0
            .lock()
            .push(LocalEvent::Headers { response, end })?;
        Ok(LocalStream(Arc::clone(&self.0)))
    }

    pub(crate) fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<Reason> {
        self.0.0.lock().poll_reset(cx)
    }

    pub(crate) fn send_reset(&mut self, _reason: Reason) {
        self.0.0.lock().reset();
    }
}

/// An in-process response after its headers (see `outbound::Outgoing`).
pub(crate) struct LocalStream(Arc<Sender>);

impl LocalStream {
    pub(crate) fn send_data(&mut self, data: Bytes) -> Result<(), Status> {
        self.0.0.lock().push(LocalEvent::Data(data))
    }

    pub(crate) fn send_trailers(&mut self, trailers: HeaderMap) -> Result<(), Status> {
        self.0.0.lock().push(LocalEvent::Trailers(trailers))
    }

    pub(crate) fn send_reset(&mut self, _reason: Reason) {
        self.0.0.lock().reset();
    }

    /// Room left before the window is full.
    pub(crate) fn capacity(&self) -> usize {
        let channel = self.0.0.lock();
        channel.window.saturating_sub(channel.queued)
    }

    pub(crate) fn poll_capacity(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<usize, Status>>> {
        let mut channel = self.0.0.lock();
        if channel.receiver_gone || channel.finished {
            return Poll::Ready(None);
        }
        if std::mem::take(&mut channel.grown) {
            return Poll::Ready(Some(Ok(channel.window.saturating_sub(channel.queued))));
        }
        channel.capacity_waiter = Some(cx.waker().clone());
        Poll::Pending
    }

    pub(crate) fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<Reason> {
        self.0.0.lock().poll_reset(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(window: usize) -> (LocalStream, LocalResponse) {
        let channel = Arc::new(Mutex::new(Channel::new(window)));
        let sender = Arc::new(Sender(Arc::clone(&channel)));
        (LocalStream(sender), LocalResponse { channel })
    }

    #[test]
    fn data_taken_gives_room_back() {
        let (mut stream, mut response) = channel(10);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        stream.send_data(Bytes::from_static(b"0123456")).unwrap();
        assert_eq!(stream.capacity(), 3);
        assert!(stream.poll_capacity(&mut cx).is_pending());
        assert!(matches!(
            response.poll_event(&mut cx),
            Poll::Ready(Some(LocalEvent::Data(_)))
        ));
        assert!(matches!(
            stream.poll_capacity(&mut cx),
            Poll::Ready(Some(Ok(10)))
        ));
        assert!(response.poll_event(&mut cx).is_pending());
    }

    #[test]
    fn a_dropped_response_cancels_and_a_dropped_sender_resets() {
        let (mut stream, response) = channel(10);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(stream.poll_reset(&mut cx).is_pending());
        drop(response);
        assert_eq!(stream.poll_reset(&mut cx), Poll::Ready(Reason::CANCEL));
        assert!(stream.send_data(Bytes::from_static(b"x")).is_err());

        let (stream, mut response) = channel(10);
        drop(stream);
        assert!(matches!(
            response.poll_event(&mut cx),
            Poll::Ready(Some(LocalEvent::Reset))
        ));
        assert!(matches!(response.poll_event(&mut cx), Poll::Ready(None)));
    }
}
