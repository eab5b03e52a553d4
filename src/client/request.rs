//! The request side of a client call: request messages sent on the HTTP/2
//! stream as flow control allows ([`RequestSink`]), half-close (END_STREAM)
//! and cancel (RST_STREAM(CANCEL)).
//!
//! A send waits for the server's flow-control window rather than buffering
//! without bound: `h2` would queue any amount, but a client that outruns the
//! server should feel it, as the server's senders do.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use h2::{Reason, SendStream};
use tokio::time::Instant;

use super::stream_error::{passed, stream_error_by};
use crate::framing::{Encoding, Status};

/// Sends `data` on `stream`, waiting for flow-control capacity, optionally
/// ending the stream with the last byte.
pub(super) async fn send_all(
    stream: &mut SendStream<Bytes>,
    mut data: Bytes,
    end: bool,
    deadline: Option<Instant>,
) -> Result<(), Status> {
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let capacity = std::future::poll_fn(|cx| {
            loop {
                let available = stream.capacity();
                if available > 0 {
                    return Poll::Ready(Ok(available));
                }
                // `poll_capacity` reports increases only; re-check `capacity()`.
                match stream.poll_capacity(cx) {
                    Poll::Ready(Some(Ok(_))) => continue,
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(Err(stream_error_by(deadline, &e)));
                    }
                    Poll::Ready(None) => {
                        return Poll::Ready(Err(if passed(deadline) {
                            Status::deadline_exceeded("deadline exceeded")
                        } else {
                            Status::unavailable("stream closed by the server")
                        }));
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await?;
        let chunk = data.split_to(capacity.min(data.len()));
        stream
            .send_data(chunk, end && data.is_empty())
            .map_err(|e| stream_error_by(deadline, &e))?;
    }
    Ok(())
}

/// The sending half of a streaming call: request messages of type `In`.
pub struct RequestSink<In> {
    pub(super) stream: SendStream<Bytes>,
    /// Shared with the call's [`ResponseStream`](super::ResponseStream): set
    /// by [`RequestSink::cancel`].
    pub(super) cancelled: Arc<AtomicBool>,
    pub(super) compression: Option<Encoding>,
    pub(super) max_send_message_size: usize,
    /// The call's deadline: a reset after it is reported as its doing.
    pub(super) deadline: Option<Instant>,
    pub(super) closed: bool,
    pub(super) _message: PhantomData<fn(In)>,
}

impl<In> std::fmt::Debug for RequestSink<In> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestSink")
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl<In: prost::Message> RequestSink<In> {
    /// Sends one message (compressed if the call was opened with compression).
    /// Waits while the server's flow-control window is closed.
    ///
    /// Fails if the server has already ended the call; its status is then
    /// what the response side returns.
    pub async fn send(&mut self, message: &In) -> Result<(), Status> {
        self.send_with(message, self.compression.is_some()).await
    }

    /// Sends one message, choosing whether to compress it. Compression needs
    /// the call to have been opened with
    /// [`Request::set_compression`](crate::rpc::Request::set_compression).
    pub async fn send_with(&mut self, message: &In, compress: bool) -> Result<(), Status> {
        if self.closed {
            return Err(Status::failed_precondition(
                "the request stream is already closed",
            ));
        }
        let mut buf = BytesMut::new();
        let encoding = if compress { self.compression } else { None };
        crate::codec::encode(message, encoding, self.max_send_message_size, &mut buf)?;
        send_all(&mut self.stream, buf.freeze(), false, self.deadline).await
    }

    /// Half-closes the call: tells the server no more messages follow
    /// (END_STREAM).
    ///
    /// If the server has already ended the call there is nothing to close;
    /// that is not an error here: the response carries the server's status.
    pub fn close(&mut self) -> Result<(), Status> {
        if !self.closed {
            self.closed = true;
            if let Err(e) = self.stream.send_data(Bytes::new(), true) {
                tracing::debug!(error = %e, "half-close after the server ended the call");
            }
        }
        Ok(())
    }

    /// Cancels the whole call with RST_STREAM(CANCEL). The response side
    /// reports `CANCELLED` from its next read on, even if messages had
    /// already arrived: after a cancel, nothing more of the call is
    /// delivered (as grpc-go's client behaves).
    pub fn cancel(&mut self) {
        self.closed = true;
        self.cancelled.store(true, Ordering::Release);
        self.stream.send_reset(Reason::CANCEL);
    }
}
