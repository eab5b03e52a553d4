//! What a call carries, independent of the transport: [`Request`], [`Response`]
//! and the inbound message stream [`Streaming`].
//!
//! These types are shared by the server and the client. They know about gRPC
//! messages and metadata but nothing about HTTP/2: the bytes of a stream come
//! from a [`RecvBody`], which `src/server` and `src/client` implement over `h2`.
//!
//! Why a separate decoder per stream? On the wire a gRPC stream is one long
//! byte sequence of length-prefixed messages, cut into HTTP/2 DATA frames
//! wherever the sender's flow-control window happened to end. A DATA frame
//! boundary therefore says nothing about message boundaries: [`Streaming`]
//! keeps the unconsumed bytes in a buffer and asks the pure
//! [`Decoder`] for whole messages.

use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::framing::{Decoder, Encoding, MetadataMap, Status};

/// A request: metadata, a message, and call options.
///
/// For client- and bidi-streaming calls the client sends `Request<()>`: the
/// metadata and options open the call, the messages follow on the call itself.
#[derive(Debug, Clone, Default)]
pub struct Request<T> {
    metadata: MetadataMap,
    message: T,
    timeout: Option<Duration>,
    compression: Option<Encoding>,
    message_compressed: bool,
}

impl<T> Request<T> {
    /// A request with empty metadata and no deadline.
    pub fn new(message: T) -> Self {
        Request {
            metadata: MetadataMap::new(),
            message,
            timeout: None,
            compression: None,
            message_compressed: false,
        }
    }

    /// Custom metadata (request headers that are not reserved by gRPC).
    pub fn metadata(&self) -> &MetadataMap {
        &self.metadata
    }

    /// Custom metadata, to add entries before sending.
    pub fn metadata_mut(&mut self) -> &mut MetadataMap {
        &mut self.metadata
    }

    /// The message.
    pub fn get_ref(&self) -> &T {
        &self.message
    }

    /// The message, mutably.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.message
    }

    /// Takes the message out.
    pub fn into_inner(self) -> T {
        self.message
    }

    /// Splits into metadata and message.
    pub fn into_parts(self) -> (MetadataMap, T) {
        (self.metadata, self.message)
    }

    /// Builds a request from received parts (used by the server).
    pub fn from_parts(metadata: MetadataMap, message: T, timeout: Option<Duration>) -> Self {
        Request {
            metadata,
            message,
            timeout,
            compression: None,
            message_compressed: false,
        }
    }

    /// On the server, for a unary request: whether the message arrived
    /// compressed (its Compressed-Flag was 1).
    pub fn message_compressed(&self) -> bool {
        self.message_compressed
    }

    pub(crate) fn set_message_compressed(&mut self, compressed: bool) {
        self.message_compressed = compressed;
    }

    /// On the client: the deadline, sent as `grpc-timeout`. On the server: the
    /// time the client allowed when the call arrived.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Sets the deadline of the call.
    pub fn set_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.timeout = Some(timeout);
        self
    }

    /// The compression the client uses for its messages (`grpc-encoding`).
    pub fn compression(&self) -> Option<Encoding> {
        self.compression
    }

    /// Compresses the request messages with `encoding`.
    pub fn set_compression(&mut self, encoding: Encoding) -> &mut Self {
        self.compression = Some(encoding);
        self
    }

    /// A copy of the metadata and options, without the message: what opens
    /// the call on the wire.
    pub fn headers_only(&self) -> Request<()> {
        Request {
            metadata: self.metadata.clone(),
            message: (),
            timeout: self.timeout,
            compression: self.compression,
            message_compressed: false,
        }
    }

    /// Replaces the message, keeping metadata and options.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Request<U> {
        Request {
            metadata: self.metadata,
            message: f(self.message),
            timeout: self.timeout,
            compression: self.compression,
            message_compressed: self.message_compressed,
        }
    }
}

impl<T> From<T> for Request<T> {
    fn from(message: T) -> Self {
        Request::new(message)
    }
}

/// A response: initial metadata (headers), a message, trailing metadata.
#[derive(Debug, Clone, Default)]
pub struct Response<T> {
    metadata: MetadataMap,
    message: T,
    trailers: MetadataMap,
    compression: Option<Encoding>,
}

impl<T> Response<T> {
    /// A response with empty metadata.
    pub fn new(message: T) -> Self {
        Response {
            metadata: MetadataMap::new(),
            message,
            trailers: MetadataMap::new(),
            compression: None,
        }
    }

    /// Initial metadata, sent in the response headers.
    pub fn metadata(&self) -> &MetadataMap {
        &self.metadata
    }

    /// Initial metadata, mutably.
    pub fn metadata_mut(&mut self) -> &mut MetadataMap {
        &mut self.metadata
    }

    /// Trailing metadata, sent with the status in the trailers.
    pub fn trailers(&self) -> &MetadataMap {
        &self.trailers
    }

    /// Trailing metadata, mutably.
    pub fn trailers_mut(&mut self) -> &mut MetadataMap {
        &mut self.trailers
    }

    /// The message.
    pub fn get_ref(&self) -> &T {
        &self.message
    }

    /// The message, mutably.
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.message
    }

    /// Takes the message out.
    pub fn into_inner(self) -> T {
        self.message
    }

    /// On the server: compress this response's message with `encoding` (if the
    /// client accepts it). On the client: unused.
    pub fn set_compression(&mut self, encoding: Encoding) -> &mut Self {
        self.compression = Some(encoding);
        self
    }

    /// The compression asked for with [`Response::set_compression`].
    pub fn compression(&self) -> Option<Encoding> {
        self.compression
    }

    /// Builds a response from received parts (used by the client).
    pub fn from_parts(metadata: MetadataMap, message: T, trailers: MetadataMap) -> Self {
        Response {
            metadata,
            message,
            trailers,
            compression: None,
        }
    }

    /// Replaces the message, keeping metadata.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Response<U> {
        Response {
            metadata: self.metadata,
            message: f(self.message),
            trailers: self.trailers,
            compression: self.compression,
        }
    }
}

/// The byte source under a [`Streaming`]: one HTTP/2 stream's DATA frames,
/// then its end. Implemented by the server and the client over `h2`.
pub trait RecvBody: Send + Unpin {
    /// The next chunk of DATA, `None` at END_STREAM. Implementations give the
    /// flow-control window back as soon as they hand a chunk over: [`Streaming`]
    /// only asks for more when it holds no complete message, so the peer can
    /// never get more than one message (bounded by the receive limit) ahead.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Status>>>;

    /// After the last chunk: the trailing metadata, or the non-OK status the
    /// peer ended with (the client reads it from the trailers; the server has
    /// nothing to read and answers `Ok` at once).
    fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<Result<MetadataMap, Status>>;
}

/// An inbound stream of messages of type `T`.
///
/// Read it with [`Streaming::message`] (`Ok(None)` at the clean end), or as a
/// `futures_core::Stream` of `Result<T, Status>`.
pub struct Streaming<T> {
    body: Box<dyn RecvBody>,
    buf: BytesMut,
    decoder: Decoder,
    state: StreamState,
    /// The error the stream ended with, if it did not end cleanly.
    failed: Option<Status>,
    /// Boxed: only a client's stream ever has trailers, and a long-lived
    /// stream should not carry an empty header map inline.
    trailers: Option<Box<MetadataMap>>,
    _message: PhantomData<fn() -> T>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    /// Reading DATA.
    Open,
    /// END_STREAM seen; waiting for the end (trailers) from the body.
    Ending,
    /// Ended, cleanly or with the error in `failed`.
    Done,
}

impl<T> fmt::Debug for Streaming<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Streaming")
            .field("buffered", &self.buf.len())
            .field("state", &self.state)
            .finish()
    }
}

impl<T: prost::Message + Default> Streaming<T> {
    /// Decodes messages out of `body`, decompressing with `encoding`, refusing
    /// any message larger than `max_message_size` bytes.
    pub fn new(body: Box<dyn RecvBody>, encoding: Encoding, max_message_size: usize) -> Self {
        let mut decoder = Decoder::new(encoding);
        decoder.max_message_size(max_message_size);
        Streaming {
            body,
            buf: BytesMut::new(),
            decoder,
            state: StreamState::Open,
            failed: None,
            trailers: None,
            _message: PhantomData,
        }
    }

    /// The next message, `Ok(None)` when the peer ended the stream cleanly.
    pub async fn message(&mut self) -> Result<Option<T>, Status> {
        std::future::poll_fn(|cx| self.poll_message(cx)).await
    }

    /// Whether the last message returned arrived compressed.
    pub fn last_message_compressed(&self) -> bool {
        self.decoder.last_compressed()
    }

    /// Trailing metadata, once the stream has ended (client side).
    pub fn trailers(&self) -> Option<&MetadataMap> {
        self.trailers.as_deref()
    }

    /// Polls for the next message.
    pub fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<T>, Status>> {
        loop {
            match self.state {
                StreamState::Done => {
                    // An error is reported again on every later read: a
                    // caller that stopped at the first one (to finish what it
                    // had) must not take the next read for a clean end.
                    return Poll::Ready(match &self.failed {
                        Some(status) => Err(status.clone()),
                        None => Ok(None),
                    });
                }
                StreamState::Ending => {
                    let end = ready!(self.body.poll_end(cx));
                    return Poll::Ready(match end {
                        Ok(trailers) => {
                            self.state = StreamState::Done;
                            self.trailers = Some(Box::new(trailers));
                            Ok(None)
                        }
                        Err(status) => Err(self.fail(status)),
                    });
                }
                StreamState::Open => {}
            }
            // A whole message may already be buffered: several messages often
            // arrive in one DATA frame.
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(payload)) => {
                    return Poll::Ready(match T::decode(payload) {
                        Ok(message) => Ok(Some(message)),
                        Err(e) => {
                            Err(self
                                .fail(Status::internal(format!("invalid protobuf message: {e}"))))
                        }
                    });
                }
                Ok(None) => {}
                Err(e) => return Poll::Ready(Err(self.fail(e.into()))),
            }
            match ready!(self.body.poll_chunk(cx)) {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(status)) => return Poll::Ready(Err(self.fail(status))),
                None => {
                    // The peer ended the stream. Leftover bytes mean it stopped
                    // in the middle of a message: that is a protocol error, not a
                    // clean end.
                    if let Err(e) = self.decoder.finish(&self.buf) {
                        return Poll::Ready(Err(self.fail(e.into())));
                    }
                    self.state = StreamState::Ending;
                }
            }
        }
    }

    /// Ends the stream with `status`, which later reads report again.
    fn fail(&mut self, status: Status) -> Status {
        self.state = StreamState::Done;
        self.failed = Some(status.clone());
        status
    }
}

impl<T: prost::Message + Default> futures_core::Stream for Streaming<T> {
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // `Streaming` is `Unpin`: every field is.
        let this = self.get_mut();
        this.poll_message(cx).map(Result::transpose)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that hands out fixed chunks, then ends without trailers.
    struct Chunks(Vec<Bytes>);

    impl RecvBody for Chunks {
        fn poll_chunk(&mut self, _cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Status>>> {
            Poll::Ready(if self.0.is_empty() {
                None
            } else {
                Some(Ok(self.0.remove(0)))
            })
        }

        fn poll_end(&mut self, _cx: &mut Context<'_>) -> Poll<Result<MetadataMap, Status>> {
            Poll::Ready(Ok(MetadataMap::new()))
        }
    }

    fn read(stream: &mut Streaming<()>) -> Poll<Result<Option<()>, Status>> {
        stream.poll_message(&mut Context::from_waker(std::task::Waker::noop()))
    }

    #[test]
    fn messages_split_over_chunks_then_a_clean_end() {
        // flag 0 | length 0 (an empty message), cut after two bytes, then a
        // second empty message whole.
        let chunks = vec![
            Bytes::from_static(&[0x00, 0x00]),
            Bytes::from_static(&[0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]),
        ];
        let mut stream = Streaming::<()>::new(Box::new(Chunks(chunks)), Encoding::Identity, 1024);
        assert!(matches!(read(&mut stream), Poll::Ready(Ok(Some(())))));
        assert!(matches!(read(&mut stream), Poll::Ready(Ok(Some(())))));
        assert!(matches!(read(&mut stream), Poll::Ready(Ok(None))));
        assert!(matches!(read(&mut stream), Poll::Ready(Ok(None))));
    }

    #[test]
    fn an_error_is_reported_on_every_later_read() {
        // flag 0 | length 3 | only one byte, then END_STREAM: truncated.
        let chunks = vec![Bytes::from_static(&[0x00, 0x00, 0x00, 0x00, 0x03, 0xaa])];
        let mut stream = Streaming::<()>::new(Box::new(Chunks(chunks)), Encoding::Identity, 1024);
        for _ in 0..3 {
            match read(&mut stream) {
                Poll::Ready(Err(status)) => assert_eq!(status.code(), crate::Code::Internal),
                other => panic!("expected the truncation error, got {other:?}"),
            }
        }
    }
}
