//! Client calls: sending request messages, reading the response headers,
//! messages and trailers, and turning the trailers into a [`Status`].
//!
//! A response can end in three ways, and the client must tell them apart:
//!
//! ```text
//! 1. HEADERS(:status 200) DATA… HEADERS(grpc-status, END_STREAM)   normal
//! 2. HEADERS(:status 200, grpc-status, END_STREAM)                 trailers-only
//! 3. HEADERS(:status 4xx/5xx, no grpc-status)                      not from a gRPC server
//! ```
//!
//! Case 3 happens when a proxy or a plain HTTP server answers; the HTTP status
//! is then mapped to a gRPC code (`Code::from_http_status`).

use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use h2::client::ResponseFuture;
use h2::{Reason, RecvStream, SendStream};
use http::StatusCode;
use tokio::time::{Instant, Sleep};

use super::Channel;
use crate::framing::{CONTENT_TYPE_GRPC, Code, Encoding, GRPC_ENCODING, MetadataMap, Status};
use crate::rpc::{RecvBody, Request, Response, Streaming};

/// Sends `data` on `stream`, waiting for flow-control capacity, optionally
/// ending the stream with the last byte.
async fn send_all(
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

/// [`stream_error`], unless the call's deadline has passed: then the reset
/// is the deadline's doing and the call failed with DEADLINE_EXCEEDED.
///
/// A server that keeps the deadline itself ends the stream when it expires
/// — grpc-go's server sends RST_STREAM(CANCEL) — and that reset can reach
/// us before our own timer has fired (both expire in the same millisecond;
/// the server's a little later, since it started counting when our headers
/// arrived). Reporting CANCELLED then would blame a cancellation nobody
/// asked for. The clock is read here, not the timer's state: a timer that
/// is due is only marked fired when the runtime next turns its wheel.
fn stream_error_by(deadline: Option<Instant>, e: &h2::Error) -> Status {
    if passed(deadline) {
        Status::deadline_exceeded("deadline exceeded")
    } else {
        stream_error(e)
    }
}

/// Whether the call has a deadline and it has passed.
fn passed(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|at| Instant::now() >= at)
}

/// Maps an `h2` error on a client stream to a status whose message says
/// which side raised it: an error the server sent (RST_STREAM or GOAWAY)
/// and one our own `h2` detected in what the server sent call for
/// different fixes, and a bare "enhance your calm" names neither.
///
/// PROTOCOL-HTTP2.md, "Errors": "If the HTTP/2 stream is reset ... the
/// following mapping from RST_STREAM error codes to GRPC error codes is
/// applied": NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR,
/// SETTINGS_TIMEOUT, FRAME_SIZE_ERROR, COMPRESSION_ERROR and CONNECT_ERROR
/// → INTERNAL; "REFUSED_STREAM → UNAVAILABLE - Indicates that no
/// processing occurred and the request can be retried"; "CANCEL →
/// Mapped to CANCELLED when sent by a server"; "ENHANCE_YOUR_CALM →
/// RESOURCE_EXHAUSTED"; "INADEQUATE_SECURITY → PERMISSION_DENIED". That
/// table is for RST_STREAM. A connection that ends (GOAWAY, whatever its
/// code, or an I/O error) fails its calls with UNAVAILABLE, as grpc-go's
/// client does: the call may be retried on a new connection, and the
/// message still carries the code (a server's `too_many_pings`, say).
///
/// Two codes follow grpc-go's client (`http2ErrConvTab` in its
/// `internal/transport/http_util.go`) rather than that table, when the
/// server sent them in a RST_STREAM: FLOW_CONTROL_ERROR is
/// RESOURCE_EXHAUSTED, and a code RFC 9113 §7 does not define is UNKNOWN
/// (PROTOCOL-HTTP2.md has no row for it; RFC 9113 §7: "Unknown or
/// unsupported error codes MUST NOT trigger any special behavior. These
/// MAY be treated by an implementation as being equivalent to
/// INTERNAL_ERROR" — a MAY, which grpc-go does not take). The same bytes
/// then give the same status from either client. `tests/client_h2_edge.rs`
/// checks every code.
pub(crate) fn stream_error(e: &h2::Error) -> Status {
    let who = if e.is_remote() {
        "the server sent"
    } else if e.is_library() {
        "this client's HTTP/2 layer (h2) detected a protocol violation by the server and sent"
    } else {
        "this client sent"
    };
    let frame = if e.is_go_away() {
        "GOAWAY"
    } else {
        "RST_STREAM"
    };
    let Some(reason) = e.reason() else {
        // No HTTP/2 error code: the socket failed or closed, or `h2`
        // refused something we asked of it.
        return if e.is_io() {
            Status::unavailable(format!("connection lost: {e}"))
        } else {
            Status::internal(format!("HTTP/2 error: {e}"))
        };
    };
    let text = format!("{who} {frame} {reason:?} (h2: {e})");
    match reason {
        _ if e.is_go_away() => Status::unavailable(text),
        Reason::ENHANCE_YOUR_CALM => Status::resource_exhausted(text),
        Reason::INADEQUATE_SECURITY => Status::permission_denied(text),
        Reason::REFUSED_STREAM => Status::unavailable(text),
        Reason::CANCEL => Status::cancelled(text),
        Reason::FLOW_CONTROL_ERROR if e.is_remote() => Status::resource_exhausted(text),
        _ if e.is_remote() && u32::from(reason) > LAST_DEFINED_ERROR_CODE => Status::unknown(text),
        _ => Status::internal(text),
    }
}

/// The highest HTTP/2 error code RFC 9113 §7 defines (HTTP_1_1_REQUIRED).
const LAST_DEFINED_ERROR_CODE: u32 = 0xd;

/// The response of a call, up to and including its headers, as a body we
/// can decode messages from.
struct ClientBody {
    recv: RecvStream,
    /// Set for a trailers-only response: how the stream ends, known up front.
    end: Option<Result<MetadataMap, Status>>,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl ClientBody {
    /// A stream error after our own deadline passed is the deadline's doing
    /// (the server or `h2` reset the stream because of it): report that.
    fn stream_error(&self, e: &h2::Error) -> Status {
        stream_error_by(self.deadline.as_ref().map(|sleep| sleep.deadline()), e)
    }

    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Result<(), Status> {
        if let Some(sleep) = self.deadline.as_mut() {
            if sleep.as_mut().poll(cx).is_ready() {
                // Dropping the stream afterwards sends RST_STREAM(CANCEL).
                return Err(Status::deadline_exceeded("deadline exceeded"));
            }
        }
        Ok(())
    }
}

impl RecvBody for ClientBody {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Status>>> {
        if let Err(status) = self.poll_deadline(cx) {
            return Poll::Ready(Some(Err(status)));
        }
        if self.end.is_some() {
            return Poll::Ready(None);
        }
        match self.recv.poll_data(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let _ = self.recv.flow_control().release_capacity(chunk.len());
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(self.stream_error(&e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<Result<MetadataMap, Status>> {
        if let Some(end) = self.end.take() {
            return Poll::Ready(end);
        }
        if let Err(status) = self.poll_deadline(cx) {
            return Poll::Ready(Err(status));
        }
        match self.recv.poll_trailers(cx) {
            Poll::Ready(Ok(Some(trailers))) => Poll::Ready(status_from_trailers(&trailers)),
            Poll::Ready(Ok(None)) => Poll::Ready(Err(Status::internal(
                "the server ended the stream without trailers (no grpc-status)",
            ))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.stream_error(&e))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// `Ok(trailing metadata)` for grpc-status 0, the status otherwise.
fn status_from_trailers(trailers: &http::HeaderMap) -> Result<MetadataMap, Status> {
    match Status::from_trailers(trailers) {
        Some(status) if status.code() == Code::Ok => Ok(status.metadata().clone()),
        Some(status) => Err(status),
        None => Err(Status::internal("trailers without grpc-status")),
    }
}

/// What a call needs to read its response.
#[derive(Clone)]
struct ReadOptions {
    max_recv_message_size: usize,
    deadline: Option<Instant>,
}

/// Waits for the response headers and checks them; returns the initial
/// metadata and a message stream.
async fn read_response<Out: prost::Message + Default>(
    future: ResponseFuture,
    options: &ReadOptions,
) -> Result<(MetadataMap, Streaming<Out>), Status> {
    let response = match options.deadline {
        Some(at) => tokio::time::timeout_at(at, future)
            .await
            .map_err(|_| Status::deadline_exceeded("deadline exceeded"))?,
        None => future.await,
    }
    .map_err(|e| stream_error_by(options.deadline, &e))?;
    let (parts, recv) = response.into_parts();

    // A trailers-only response carries grpc-status in its only HEADERS frame
    // — the one that ends the stream. PROTOCOL-HTTP2.md: "Trailers-Only →
    // HTTP-Status Content-Type Trailers", sent as one HEADERS with
    // END_STREAM. A grpc-status in headers that do *not* end the stream is
    // not a status at all: the real one comes in the trailers (or, if none
    // come, the call has no status and fails as such).
    if let Some(status) = Status::from_trailers(&parts.headers) {
        if recv.is_end_stream() {
            let end = if status.code() == Code::Ok {
                Ok(status.metadata().clone())
            } else {
                Err(status)
            };
            let body = ClientBody {
                recv,
                end: Some(end),
                deadline: None,
            };
            // The stream yields no message and then this end: a non-OK
            // status surfaces on the first read. The frame's metadata is
            // trailing metadata (carried by `end`): the call has no initial
            // metadata, as grpc-go's client reports it too.
            return Ok((
                MetadataMap::new(),
                Streaming::new(Box::new(body), Encoding::Identity, 0),
            ));
        }
    }

    // PROTOCOL-HTTP2.md (http-grpc-status-mapping): without grpc-status, the
    // HTTP status decides the code.
    if parts.status != StatusCode::OK {
        let code = Code::from_http_status(parts.status.as_u16());
        return Err(Status::new(
            code,
            format!("unexpected HTTP status {} from the server", parts.status),
        ));
    }
    let content_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !content_type.starts_with(CONTENT_TYPE_GRPC.as_bytes()) {
        return Err(Status::unknown(format!(
            "unexpected content-type {:?} from the server",
            String::from_utf8_lossy(content_type)
        )));
    }
    let encoding = match parts.headers.get(GRPC_ENCODING) {
        None => Encoding::Identity,
        Some(value) => Encoding::from_header(value.as_bytes()).map_err(|unsupported| {
            Status::internal(format!(
                "the server compressed with {:?}, which we did not offer",
                unsupported.0
            ))
        })?,
    };
    let body = ClientBody {
        recv,
        end: None,
        deadline: options
            .deadline
            .map(|at| Box::pin(tokio::time::sleep_until(at))),
    };
    let metadata = MetadataMap::from_headers(&parts.headers);
    Ok((
        metadata,
        Streaming::new(Box::new(body), encoding, options.max_recv_message_size),
    ))
}

/// Reads the single message of a unary response, then its end.
async fn single_response<Out: prost::Message + Default>(
    metadata: MetadataMap,
    mut stream: Streaming<Out>,
) -> Result<Response<Out>, Status> {
    let message = single_message(&mut stream).await?;
    let trailers = stream.trailers().cloned().unwrap_or_default();
    Ok(Response::from_parts(metadata, message, trailers))
}

/// Reads exactly one message and the clean end after it.
///
/// gRPC's status code table (doc/statuscodes.md) gives a client that gets
/// none or several UNIMPLEMENTED: "Response cardinality violation (method
/// requires exactly one response but server sent some other number of
/// responses)". A non-OK status from the server wins over the count.
async fn single_message<Out: prost::Message + Default>(
    stream: &mut Streaming<Out>,
) -> Result<Out, Status> {
    let Some(message) = stream.message().await? else {
        return Err(Status::unimplemented(
            "response cardinality violation: the server sent no response message",
        ));
    };
    if stream.message().await?.is_some() {
        return Err(Status::unimplemented(
            "response cardinality violation: the server sent more than one response message",
        ));
    }
    Ok(message)
}

/// The sending half of a streaming call: request messages of type `In`.
pub struct RequestSink<In> {
    stream: SendStream<Bytes>,
    /// Shared with the call's [`ResponseStream`]: set by [`RequestSink::cancel`].
    cancelled: Arc<AtomicBool>,
    compression: Option<Encoding>,
    max_send_message_size: usize,
    /// The call's deadline: a reset after it is reported as its doing.
    deadline: Option<Instant>,
    closed: bool,
    _message: PhantomData<fn(In)>,
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
    /// the call to have been opened with [`Request::set_compression`].
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

/// The receiving half of a streaming call: the response headers, messages of
/// type `Out`, and the final status.
pub struct ResponseStream<Out> {
    state: ResponseState<Out>,
    options: ReadOptions,
    /// Set when the client cancelled the call (see [`RequestSink::cancel`]).
    cancelled: Arc<AtomicBool>,
}

enum ResponseState<Out> {
    /// Headers not read yet.
    Waiting(ResponseFuture),
    /// Headers read.
    Reading(MetadataMap, Box<Streaming<Out>>),
    /// The headers failed; the error was returned.
    Failed,
}

impl<Out> std::fmt::Debug for ResponseStream<Out> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseStream").finish_non_exhaustive()
    }
}

impl<Out: prost::Message + Default> ResponseStream<Out> {
    /// `CANCELLED` once the client has cancelled the call.
    fn check_cancelled(&self) -> Result<(), Status> {
        if self.cancelled.load(Ordering::Acquire) {
            return Err(Status::cancelled("the call was cancelled by the client"));
        }
        Ok(())
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.check_cancelled()?;
        if let ResponseState::Waiting(_) = self.state {
            let ResponseState::Waiting(future) =
                std::mem::replace(&mut self.state, ResponseState::Failed)
            else {
                return Ok(());
            };
            let (metadata, stream) = read_response(future, &self.options).await?;
            self.state = ResponseState::Reading(metadata, Box::new(stream));
        }
        self.check_cancelled()
    }

    /// The response headers' custom metadata (waits for the headers).
    pub async fn headers(&mut self) -> Result<&MetadataMap, Status> {
        self.ready().await?;
        match &self.state {
            ResponseState::Reading(metadata, _) => Ok(metadata),
            _ => Err(Status::internal("the response headers failed")),
        }
    }

    /// The next message; `Ok(None)` when the server ended the call with OK;
    /// `Err` with the server's status otherwise.
    pub async fn message(&mut self) -> Result<Option<Out>, Status> {
        self.ready().await?;
        let message = match &mut self.state {
            ResponseState::Reading(_, stream) => stream.message().await,
            _ => Err(Status::internal("the response headers failed")),
        };
        // A cancel that came while this read waited wins over what it read.
        self.check_cancelled()?;
        message
    }

    /// Trailing metadata, after the stream ended with OK.
    pub fn trailers(&self) -> Option<&MetadataMap> {
        match &self.state {
            ResponseState::Reading(_, stream) => stream.trailers(),
            _ => None,
        }
    }

    /// The one message of a call whose method returns exactly one (unary,
    /// client-streaming), read to the end of the call: none or more than
    /// one is `UNIMPLEMENTED`, as gRPC's status codes ask. The headers stay
    /// readable with [`ResponseStream::headers`], the trailers with
    /// [`ResponseStream::trailers`].
    pub async fn single(&mut self) -> Result<Out, Status> {
        self.ready().await?;
        let message = match &mut self.state {
            ResponseState::Reading(_, stream) => single_message(stream).await,
            _ => Err(Status::internal("the response headers failed")),
        };
        self.check_cancelled()?;
        message
    }
}

/// A client-streaming call: send messages, then [`finish`](Self::finish) to
/// get the single response.
#[derive(Debug)]
pub struct ClientStreamingCall<In, Out> {
    sink: RequestSink<In>,
    response: ResponseStream<Out>,
}

impl<In: prost::Message, Out: prost::Message + Default> ClientStreamingCall<In, Out> {
    /// Sends one request message.
    pub async fn send(&mut self, message: &In) -> Result<(), Status> {
        self.sink.send(message).await
    }

    /// Sends one request message, choosing whether to compress it.
    pub async fn send_with(&mut self, message: &In, compress: bool) -> Result<(), Status> {
        self.sink.send_with(message, compress).await
    }

    /// Half-closes and waits for the response and status.
    pub async fn finish(mut self) -> Result<Response<Out>, Status> {
        self.sink.close()?;
        self.response.ready().await?;
        match self.response.state {
            ResponseState::Reading(metadata, stream) => single_response(metadata, *stream).await,
            _ => Err(Status::internal("the response headers failed")),
        }
    }

    /// Cancels the call (RST_STREAM(CANCEL)).
    pub fn cancel(mut self) {
        self.sink.cancel();
    }
}

/// A bidirectional-streaming call. Use it directly, or
/// [`split`](Self::split) it to send and receive from different tasks.
#[derive(Debug)]
pub struct BidiCall<In, Out> {
    sink: RequestSink<In>,
    response: ResponseStream<Out>,
}

impl<In: prost::Message, Out: prost::Message + Default> BidiCall<In, Out> {
    /// Sends one request message.
    pub async fn send(&mut self, message: &In) -> Result<(), Status> {
        self.sink.send(message).await
    }

    /// Sends one request message, choosing whether to compress it.
    pub async fn send_with(&mut self, message: &In, compress: bool) -> Result<(), Status> {
        self.sink.send_with(message, compress).await
    }

    /// Half-closes the request stream.
    pub fn close_send(&mut self) -> Result<(), Status> {
        self.sink.close()
    }

    /// The next response message; `Ok(None)` at a clean end.
    pub async fn message(&mut self) -> Result<Option<Out>, Status> {
        self.response.message().await
    }

    /// The response headers' custom metadata.
    pub async fn headers(&mut self) -> Result<&MetadataMap, Status> {
        self.response.headers().await
    }

    /// Trailing metadata, after the stream ended with OK.
    pub fn trailers(&self) -> Option<&MetadataMap> {
        self.response.trailers()
    }

    /// Cancels the call (RST_STREAM(CANCEL)).
    pub fn cancel(mut self) {
        self.sink.cancel();
    }

    /// The two halves, to use from different tasks.
    pub fn split(self) -> (RequestSink<In>, ResponseStream<Out>) {
        (self.sink, self.response)
    }
}

impl Channel {
    fn read_options(&self, request_timeout: Option<std::time::Duration>) -> ReadOptions {
        ReadOptions {
            max_recv_message_size: self.config().max_recv_message_size,
            deadline: request_timeout.map(|t| Instant::now() + t),
        }
    }

    async fn open_streaming<In, Out>(
        &self,
        path: &str,
        request: &Request<()>,
    ) -> Result<(RequestSink<In>, ResponseStream<Out>), Status> {
        let options = self.read_options(request.timeout());
        let cancelled = Arc::new(AtomicBool::new(false));
        let (future, stream) = self
            .open(
                path,
                request.metadata(),
                request.timeout(),
                request.compression(),
            )
            .await?;
        Ok((
            RequestSink {
                stream,
                cancelled: Arc::clone(&cancelled),
                compression: request.compression().filter(|e| *e != Encoding::Identity),
                max_send_message_size: self.config().max_send_message_size,
                deadline: options.deadline,
                closed: false,
                _message: PhantomData,
            },
            ResponseStream {
                state: ResponseState::Waiting(future),
                options,
                cancelled,
            },
        ))
    }

    /// A unary call: one request, one response.
    pub async fn unary<In, Out>(
        &self,
        path: &str,
        request: Request<In>,
    ) -> Result<Response<Out>, Status>
    where
        In: prost::Message,
        Out: prost::Message + Default,
    {
        let message = request.get_ref();
        let header_only = request.headers_only();
        let (mut sink, mut response) = self.open_streaming::<In, Out>(path, &header_only).await?;
        let deadline = response.options.deadline;
        let work = async {
            // A server may answer before reading the request (an unknown
            // method, say) and close the stream: then the send fails, and the
            // status worth reporting is the server's, from the response.
            let sent = sink.send(message).await;
            sink.close()?;
            response.ready().await?;
            let answer = match std::mem::replace(&mut response.state, ResponseState::Failed) {
                ResponseState::Reading(metadata, stream) => {
                    single_response(metadata, *stream).await
                }
                _ => Err(Status::internal("the response headers failed")),
            };
            match (answer, sent) {
                (Ok(_), Err(send_error)) => Err(send_error),
                (answer, _) => answer,
            }
        };
        match deadline {
            Some(at) => tokio::time::timeout_at(at, work)
                .await
                .unwrap_or_else(|_| Err(Status::deadline_exceeded("deadline exceeded"))),
            None => work.await,
        }
    }

    /// A server-streaming call: one request, then a stream of responses.
    pub async fn server_streaming<In, Out>(
        &self,
        path: &str,
        request: Request<In>,
    ) -> Result<Response<Streaming<Out>>, Status>
    where
        In: prost::Message,
        Out: prost::Message + Default,
    {
        let header_only = request.headers_only();
        let (mut sink, mut response) = self.open_streaming::<In, Out>(path, &header_only).await?;
        // As for unary: if the send fails, the server's status explains why.
        let sent = sink.send(request.get_ref()).await;
        sink.close()?;
        response.ready().await?;
        if let Err(send_error) = sent {
            if let ResponseState::Reading(_, stream) = &mut response.state {
                stream.message().await?;
            }
            return Err(send_error);
        }
        match response.state {
            ResponseState::Reading(metadata, stream) => {
                Ok(Response::from_parts(metadata, *stream, MetadataMap::new()))
            }
            _ => Err(Status::internal("the response headers failed")),
        }
    }

    /// Opens a client-streaming call.
    pub async fn client_streaming<In, Out>(
        &self,
        path: &str,
        request: Request<()>,
    ) -> Result<ClientStreamingCall<In, Out>, Status>
    where
        In: prost::Message,
        Out: prost::Message + Default,
    {
        let (sink, response) = self.open_streaming(path, &request).await?;
        Ok(ClientStreamingCall { sink, response })
    }

    /// Opens a bidirectional-streaming call.
    pub async fn bidi_streaming<In, Out>(
        &self,
        path: &str,
        request: Request<()>,
    ) -> Result<BidiCall<In, Out>, Status>
    where
        In: prost::Message,
        Out: prost::Message + Default,
    {
        let (sink, response) = self.open_streaming(path, &request).await?;
        Ok(BidiCall { sink, response })
    }
}
