//! The response side of a client call: the headers checked (trailers-only,
//! HTTP status, content-type, `grpc-encoding`), the messages decoded from
//! DATA frames, the trailers turned into a [`Status`] ([`ResponseStream`]),
//! and the one-message rule of unary and client-streaming responses.
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

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use h2::RecvStream;
use h2::client::ResponseFuture;
use http::StatusCode;
use tokio::time::{Instant, Sleep};

use super::stream_error::stream_error_by;
use crate::framing::{CONTENT_TYPE_GRPC, Code, Encoding, GRPC_ENCODING, MetadataMap, Status};
use crate::rpc::{RecvBody, Response, Streaming};

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
pub(super) struct ReadOptions {
    pub(super) max_recv_message_size: usize,
    pub(super) deadline: Option<Instant>,
}

/// Waits for the response headers and checks them; returns the initial
/// metadata and a message stream.
async fn read_response<Out: prost::Message + Default>(
    future: &mut ResponseFuture,
    options: &ReadOptions,
) -> Result<(MetadataMap, Streaming<Out>), Status> {
    let response = match options.deadline {
        Some(at) => tokio::time::timeout_at(at, &mut *future)
            .await
            .map_err(|_| Status::deadline_exceeded("deadline exceeded"))?,
        None => (&mut *future).await,
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
pub(super) async fn single_response<Out: prost::Message + Default>(
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

/// The receiving half of a streaming call: the response headers, messages of
/// type `Out`, and the final status.
pub struct ResponseStream<Out> {
    pub(super) state: ResponseState<Out>,
    pub(super) options: ReadOptions,
    /// Set when the client cancelled the call (see
    /// [`RequestSink::cancel`](super::RequestSink::cancel)).
    pub(super) cancelled: Arc<AtomicBool>,
}

/// Where a response is: before, at or after its headers.
pub(super) enum ResponseState<Out> {
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

    /// Reads the response headers if that has not been done yet.
    pub(super) async fn ready(&mut self) -> Result<(), Status> {
        self.check_cancelled()?;
        if let ResponseState::Waiting(future) = &mut self.state {
            // Polled where it lies: a read given up while the headers are
            // awaited (a `select!` branch not taken, a timeout) leaves the
            // call as it was, and the next read waits on.
            match read_response(future, &self.options).await {
                Ok((metadata, stream)) => {
                    self.state = ResponseState::Reading(metadata, Box::new(stream));
                }
                Err(status) => {
                    self.state = ResponseState::Failed;
                    return Err(status);
                }
            }
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
