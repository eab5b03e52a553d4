//! One server stream, from its request headers to its final status.
//!
//! [`serve_stream`] checks the request headers and finds the service; the
//! generated router then picks one of the four call shapes below ([`unary`],
//! [`server_streaming`], [`client_streaming`], [`bidi_streaming`]), which all
//! end in [`drive`]: run the handler, but stop early when the client resets the
//! stream or the deadline passes, then send the status.
//!
//! Errors found in the request headers are answered before any handler runs,
//! as a trailers-only response (or a plain HTTP status where the peer may not
//! be a gRPC client at all).

use std::future::Future;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use http::{HeaderValue, Method, StatusCode};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::outbound::{Opening, h2_error_to_status};
use super::sink::{Responder, ResponseSink};
use super::state::ActiveCall;
use super::{Dispatch, Inner};
use crate::framing::{
    ACCEPT_ENCODING, CONTENT_TYPE_GRPC, Code, Encoding, GRPC_ACCEPT_ENCODING, GRPC_ENCODING,
    GRPC_MESSAGE, GRPC_STATUS, GRPC_TIMEOUT, MetadataMap, Status, parse_timeout,
};
use crate::rpc::{RecvBody, Request, Response, Streaming};

/// An accepted call, handed to the service that owns its path.
pub struct ServerCall {
    /// The request's DATA: an `h2` stream, or a body handed over in process.
    body: Box<dyn RecvBody>,
    responder: Responder,
    metadata: MetadataMap,
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    request_encoding: Encoding,
    max_recv_message_size: usize,
    path: String,
    peer: SocketAddr,
    /// Counts the call as active on its connection while it lives.
    call: ActiveCall,
}

impl std::fmt::Debug for ServerCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCall")
            .field("path", &self.path)
            .field("peer", &self.peer)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ServerCall {
    /// The `:path` of the call, `/package.Service/Method`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Answers `UNIMPLEMENTED` for a method the service does not have.
    pub fn unimplemented_method(self) -> Dispatch {
        let status = Status::unimplemented(format!("unknown method {}", self.path));
        Box::pin(async move {
            debug!(path = %self.path, "unimplemented method");
            self.responder.finish(&status);
        })
    }

    fn into_parts<In: prost::Message + Default>(self) -> (Request<Streaming<In>>, CallEnd) {
        let streaming =
            Streaming::new(self.body, self.request_encoding, self.max_recv_message_size);
        let request = Request::from_parts(self.metadata, streaming, self.timeout);
        let end = CallEnd {
            responder: self.responder,
            deadline: self.deadline,
            path: self.path,
            peer: self.peer,
            call: self.call,
        };
        (request, end)
    }
}

/// What stays with the task after the request is handed to the handler.
struct CallEnd {
    responder: Responder,
    deadline: Option<Instant>,
    path: String,
    peer: SocketAddr,
    /// Counts the call as active on its connection while it lives.
    call: ActiveCall,
}

/// The request stream of a call, as a [`RecvBody`].
struct ServerBody {
    recv: RecvStream,
}

impl RecvBody for ServerBody {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Status>>> {
        match self.recv.poll_data(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                // Give the window back at once: `Streaming` asks for the next
                // chunk only when it has no whole message buffered.
                let _ = self.recv.flow_control().release_capacity(chunk.len());
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(h2_error_to_status(&e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_end(&mut self, _cx: &mut Context<'_>) -> Poll<Result<MetadataMap, Status>> {
        // Clients do not send trailers in gRPC; END_STREAM is the end.
        Poll::Ready(Ok(MetadataMap::new()))
    }
}

/// Checks one HTTP/2 stream's request and returns the future that serves
/// it; `None` when the request was answered here (an error in its headers).
///
/// This runs on the connection's task and does not wait for anything, so
/// that the request headers are dropped before the call starts: an idle
/// call keeps only what its handler needs (see docs/benchmarks.md, memory
/// per idle member).
pub(crate) fn serve_stream(
    request: http::Request<RecvStream>,
    respond: SendResponse<Bytes>,
    server: &Inner,
    peer: SocketAddr,
    call: ActiveCall,
) -> Option<Dispatch> {
    let (parts, recv) = request.into_parts();
    serve(
        parts,
        Box::new(ServerBody { recv }),
        Opening::H2(respond),
        server,
        peer,
        call,
    )
}

/// [`serve_stream`] for any transport: an HTTP/2 stream's request, or one
/// served in process (`local.rs`). Everything from the header checks on is
/// the same for both.
pub(crate) fn serve(
    parts: http::request::Parts,
    body: Box<dyn RecvBody>,
    mut respond: Opening,
    server: &Inner,
    peer: SocketAddr,
    call: ActiveCall,
) -> Option<Dispatch> {
    // Every refusal below is the peer's doing: logged once per connection.
    let refused = |why: &str, detail: &dyn std::fmt::Display| {
        if call.connection().first_offence() {
            info!(%peer, detail = %detail, "{why}: request refused (further refusals on this connection are logged at debug)");
        } else {
            debug!(%peer, detail = %detail, "{why}: request refused");
        }
    };

    // PROTOCOL-HTTP2.md: "Request-Headers → Call-Definition ..." with
    // "Method → ":method POST"". Anything else is not a gRPC call.
    if parts.method != Method::POST {
        refused("non-POST request (405)", &parts.method);
        http_error(
            &mut respond,
            StatusCode::METHOD_NOT_ALLOWED,
            "gRPC requires POST",
        );
        return None;
    }

    // PROTOCOL-HTTP2.md: "If Content-Type does not begin with
    // "application/grpc", gRPC servers SHOULD respond with HTTP status of 415
    // (Unsupported Media Type). This will prevent other HTTP/2 clients from
    // interpreting a gRPC error response, which uses status 200 (OK), as
    // successful."
    let content_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    if !is_grpc_content_type(content_type) {
        refused(
            "not a gRPC content-type (415)",
            &String::from_utf8_lossy(content_type),
        );
        http_error(
            &mut respond,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content-type must be application/grpc",
        );
        return None;
    }

    if !is_proto_codec(content_type) {
        refused(
            "unsupported gRPC codec (415)",
            &String::from_utf8_lossy(content_type),
        );
        http_error(
            &mut respond,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "only application/grpc and application/grpc+proto are supported",
        );
        return None;
    }

    let responder = Responder::new(
        respond,
        accepts_gzip(&parts.headers),
        server.config.max_send_message_size,
    );

    // PROTOCOL-HTTP2.md: "Path → ":path" "/" Service-Name "/" {method name}".
    let path = parts.uri.path().to_owned();
    let Some((service_name, method)) = split_path(&path) else {
        refused("malformed :path", &path);
        responder.finish(&Status::unimplemented(format!(
            "malformed method path {path:?}"
        )));
        return None;
    };

    // PROTOCOL-HTTP2.md: "Timeout → "grpc-timeout" TimeoutValue TimeoutUnit".
    let timeout = match parts.headers.get(GRPC_TIMEOUT) {
        None => None,
        Some(value) => match parse_timeout(value.as_bytes()) {
            Ok(t) => Some(t),
            Err(e) => {
                refused("malformed grpc-timeout", &format_args!("{e:?}"));
                responder.finish(&Status::internal(format!(
                    "malformed grpc-timeout {:?}",
                    String::from_utf8_lossy(value.as_bytes())
                )));
                return None;
            }
        },
    };

    // PROTOCOL-HTTP2.md: "If a client message is compressed with an algorithm
    // that is not supported by a server, the message will be rejected with
    // UNIMPLEMENTED status on the server. The server will then include a
    // grpc-accept-encoding response header which specifies the algorithms
    // that the server accepts." We reject at the header: the encoding applies
    // to every message of the stream.
    let request_encoding = match parts.headers.get(GRPC_ENCODING) {
        None => Encoding::Identity,
        Some(value) => match Encoding::from_header(value.as_bytes()) {
            Ok(encoding) => encoding,
            Err(unsupported) => {
                refused("unsupported grpc-encoding", &unsupported.0);
                let mut status: Status = unsupported.into();
                if let Err(e) = status
                    .metadata_mut()
                    .insert(GRPC_ACCEPT_ENCODING, ACCEPT_ENCODING)
                {
                    debug!(error = ?e, "grpc-accept-encoding not added");
                }
                responder.finish(&status);
                return None;
            }
        },
    };

    let Some(service) = server.services.get(service_name).cloned() else {
        refused("unknown service", &path);
        responder.finish(&Status::unimplemented(format!(
            "unknown service {service_name}"
        )));
        return None;
    };
    let method = method.to_owned();

    let call = ServerCall {
        body,
        responder,
        metadata: MetadataMap::from_headers(&parts.headers),
        timeout,
        deadline: timeout.map(|t| Instant::now() + t),
        request_encoding,
        max_recv_message_size: server.config.max_recv_message_size,
        path,
        peer,
        call,
    };
    Some(service.call(&method, call))
}

/// `application/grpc`, optionally followed by `+subtype` and `;…`
/// parameters.
fn is_grpc_content_type(value: &[u8]) -> bool {
    match value.strip_prefix(CONTENT_TYPE_GRPC.as_bytes()) {
        Some(rest) => rest.is_empty() || rest.starts_with(b"+") || rest.starts_with(b";"),
        None => false,
    }
}

/// Whether a gRPC content-type names the one message codec we speak:
/// protobuf, the default (`application/grpc`) or named (`+proto`).
/// PROTOCOL-HTTP2.md: "Content-Type → "content-type" "application/grpc"
/// [("+proto" / "+json" / {custom})]" — the subtype says how messages are
/// encoded, so one we cannot decode must be refused before any message is
/// misread as protobuf.
fn is_proto_codec(value: &[u8]) -> bool {
    let Some(rest) = value.strip_prefix(CONTENT_TYPE_GRPC.as_bytes()) else {
        return false;
    };
    let subtype = rest.split(|&b| b == b';').next().unwrap_or_default();
    subtype.is_empty() || subtype.eq_ignore_ascii_case(b"+proto")
}

/// `/package.Service/Method` → (`package.Service`, `Method`).
fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    if service.is_empty() || method.is_empty() || method.contains('/') {
        return None;
    }
    Some((service, method))
}

/// Whether the client listed gzip in `grpc-accept-encoding` (or sent gzip
/// itself, which implies it can read it).
fn accepts_gzip(headers: &http::HeaderMap) -> bool {
    let listed = headers
        .get_all(GRPC_ACCEPT_ENCODING)
        .iter()
        .any(|v| Encoding::negotiate(v.as_bytes()) == Some(Encoding::Gzip));
    listed
        || headers
            .get(GRPC_ENCODING)
            .is_some_and(|v| v.as_bytes() == b"gzip")
}

/// A plain HTTP error response, for requests that are not gRPC calls.
fn http_error(respond: &mut Opening, status: StatusCode, message: &'static str) {
    let mut response = http::Response::new(());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(http::header::ALLOW, HeaderValue::from_static("POST"));
    }
    // A gRPC client that reached us by mistake still gets a readable status.
    headers.insert(GRPC_STATUS, HeaderValue::from_static("13"));
    headers.insert(GRPC_MESSAGE, HeaderValue::from_static(message));
    super::sink::never_indexed(headers);
    if let Err(e) = respond.send_response(response, true) {
        debug!(error = %e, "could not send HTTP error");
    }
}

/// Runs `work` (the handler plus sending its response) and ends the call:
///
/// * `work` finished → its status goes out as trailers;
/// * the deadline passed → `DEADLINE_EXCEEDED`, and `work` is dropped, which
///   cancels the handler wherever it was waiting;
/// * the client reset the stream (RST_STREAM) → `work` is dropped at once and
///   nothing more is sent.
///
/// `work` arrives boxed (or otherwise `Unpin`) and the call's end is used
/// in place, never moved into locals: this future is what a long-lived call
/// (a chat member) keeps for its whole life, and anything moved inside an
/// `async` block would be stored twice.
///
/// `watch_reset` is for handlers that do not read the request stream (unary,
/// server-streaming): `h2` reports a reset to whoever waits on the *send*
/// side, so this task listens there. Handlers that read the request stream
/// learn of a reset from it (the next read fails) and need no listener —
/// which matters for long-lived streams: a listener on the send side is
/// woken by every flow-control change of the stream, once per message sent.
fn drive<W>(end: CallEnd, mut work: W, watch_reset: bool) -> Dispatch
where
    W: Future<Output = Result<(), Status>> + Unpin + Send + 'static,
{
    // In process, the watch costs nothing per message, and it is the only
    // way to learn that a client whose request body was read whole has gone.
    let watch_reset = watch_reset || end.responder.reset_watch_is_cheap();
    Box::pin(async move {
        let outcome = {
            let reset = std::future::poll_fn(|cx| {
                if watch_reset {
                    end.responder.poll_reset(cx)
                } else {
                    Poll::Pending
                }
            });
            // Boxed, and only when there is a deadline: a timer is large (it
            // is cache-line aligned), and every long-lived call would carry
            // one inline.
            let mut timer = end
                .deadline
                .map(|at| Box::pin(tokio::time::sleep_until(at)));
            let expired = std::future::poll_fn(|cx| match timer.as_mut() {
                Some(timer) => timer.as_mut().poll(cx),
                None => Poll::Pending,
            });
            tokio::select! {
                result = &mut work => Some(result),
                () = expired => Some(Err(Status::deadline_exceeded("deadline exceeded"))),
                reason = reset => {
                    debug!(peer = %end.peer, path = %end.path, ?reason, "client reset the stream: handler cancelled");
                    None
                }
            }
        };
        let (peer, path) = (&end.peer, &end.path);
        match outcome {
            Some(Ok(())) => end.responder.finish(&Status::ok()),
            Some(Err(status)) => {
                let code = status.code();
                let message = status.message();
                // A deadline, a cancellation or the server going away
                // (UNAVAILABLE: shutting down, or the connection lost) is the
                // normal end of some calls — a shutdown with 10,000 members
                // must not log 10,000 lines. Anything else is a failure worth
                // one line per connection: the peer's bad bytes (INTERNAL), a
                // limit it hit (RESOURCE_EXHAUSTED), input the service
                // refused. Repeats on the same connection go to debug so a
                // peer cannot flood the log.
                let routine = matches!(
                    code,
                    Code::DeadlineExceeded | Code::Cancelled | Code::Unavailable
                );
                if !routine && end.call.connection().first_offence() {
                    if code == Code::Internal || code == Code::Unknown {
                        warn!(%peer, %path, ?code, message, "call failed (further failures on this connection are logged at debug)");
                    } else {
                        info!(%peer, %path, ?code, message, "call refused (further failures on this connection are logged at debug)");
                    }
                } else {
                    debug!(%peer, %path, ?code, message, "call ended with error");
                }
                end.responder.finish(&status);
            }
            None => end.responder.reset(Reason::CANCEL),
        }
    })
}

/// Turns the request stream of a unary or server-streaming call into the
/// request its handler takes: the same metadata and deadline, its one
/// message.
async fn single_request<In: prost::Message + Default>(
    request: Request<Streaming<In>>,
) -> Result<Request<In>, Status> {
    let timeout = request.timeout();
    let (metadata, mut stream) = request.into_parts();
    let message = single_message(&mut stream).await?;
    let mut request = Request::from_parts(metadata, message, timeout);
    request.set_message_compressed(stream.last_message_compressed());
    Ok(request)
}

/// Reads the single request message of a unary or server-streaming call.
///
/// gRPC's status code table (doc/statuscodes.md) names the code for a
/// client that sends none or several: UNIMPLEMENTED, "Request cardinality
/// violation (method requires exactly one request but client sent some
/// other number of requests)".
async fn single_message<In: prost::Message + Default>(
    stream: &mut Streaming<In>,
) -> Result<In, Status> {
    let Some(message) = stream.message().await? else {
        return Err(Status::unimplemented(
            "request cardinality violation: the client sent no request message",
        ));
    };
    if stream.message().await?.is_some() {
        return Err(Status::unimplemented(
            "request cardinality violation: the client sent more than one request message",
        ));
    }
    Ok(message)
}

/// Sends a handler's unary response: headers, one message, trailing metadata.
async fn send_unary<Out: prost::Message>(
    responder: &Responder,
    response: Response<Out>,
) -> Result<(), Status> {
    let compression = response
        .compression()
        .filter(|&e| responder.enable_compression(e));
    let mut sink = responder.sink::<Out>();
    let headers = response.metadata().clone();
    let trailers = response.trailers().clone();
    responder.set_metadata(headers, trailers);
    sink.send_with(response.get_ref(), compression.is_some())
        .await
}

/// Serves a unary call: one request, one response.
pub fn unary<In, Out, F, Fut>(call: ServerCall, handler: F) -> Dispatch
where
    In: prost::Message + Default + 'static,
    Out: prost::Message + 'static,
    F: FnOnce(Request<In>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Response<Out>, Status>> + Send + 'static,
{
    let (request, end) = call.into_parts::<In>();
    let responder = end.responder.clone();
    let work = Box::pin(async move {
        let response = handler(single_request(request).await?).await?;
        send_unary(&responder, response).await
    });
    drive(end, work, true)
}

/// Serves a server-streaming call: one request, a stream of responses.
pub fn server_streaming<In, Out, F, Fut>(call: ServerCall, handler: F) -> Dispatch
where
    In: prost::Message + Default + 'static,
    Out: prost::Message + 'static,
    F: FnOnce(Request<In>, ResponseSink<Out>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), Status>> + Send + 'static,
{
    let (request, end) = call.into_parts::<In>();
    let sink = end.responder.sink::<Out>();
    let work = Box::pin(async move { handler(single_request(request).await?, sink).await });
    drive(end, work, true)
}

/// Serves a client-streaming call: a stream of requests, one response.
pub fn client_streaming<In, Out, F, Fut>(call: ServerCall, handler: F) -> Dispatch
where
    In: prost::Message + Default + 'static,
    Out: prost::Message + 'static,
    F: FnOnce(Request<Streaming<In>>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Response<Out>, Status>> + Send + 'static,
{
    let (request, end) = call.into_parts::<In>();
    let responder = end.responder.clone();
    let work = Box::pin(async move {
        let response = handler(request).await?;
        send_unary(&responder, response).await
    });
    drive(end, work, false)
}

/// Serves a bidirectional-streaming call: both sides stream.
pub fn bidi_streaming<In, Out, F, Fut>(call: ServerCall, handler: F) -> Dispatch
where
    In: prost::Message + Default + 'static,
    Out: prost::Message + 'static,
    F: FnOnce(Request<Streaming<In>>, ResponseSink<Out>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), Status>> + Send + 'static,
{
    // The handler's future is made here and boxed on its own: the call's
    // future then holds it behind one pointer, instead of also keeping the
    // (dead) `ServerCall` and request it was made from — long-lived streams
    // (chat members) pay for every byte of their state while idle.
    let (request, end) = call.into_parts::<In>();
    let sink = end.responder.sink::<Out>();
    drive(end, Box::pin(handler(request, sink)), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types() {
        assert!(is_grpc_content_type(b"application/grpc"));
        assert!(is_grpc_content_type(b"application/grpc+proto"));
        assert!(is_grpc_content_type(b"application/grpc;charset=utf-8"));
        assert!(!is_grpc_content_type(b"application/grpcx"));
        assert!(!is_grpc_content_type(b"application/json"));
        assert!(!is_grpc_content_type(b""));
    }

    #[test]
    fn only_the_proto_codec_is_served() {
        assert!(is_proto_codec(b"application/grpc"));
        assert!(is_proto_codec(b"application/grpc+proto"));
        assert!(is_proto_codec(b"application/grpc;charset=utf-8"));
        assert!(is_proto_codec(b"application/grpc+proto;x=1"));
        assert!(!is_proto_codec(b"application/grpc+json"));
        assert!(!is_proto_codec(b"application/grpc+foo"));
    }

    #[test]
    fn paths() {
        assert_eq!(
            split_path("/grpc.testing.TestService/EmptyCall"),
            Some(("grpc.testing.TestService", "EmptyCall"))
        );
        assert_eq!(split_path("grpc.testing.TestService/EmptyCall"), None);
        assert_eq!(split_path("/onlyservice"), None);
        assert_eq!(split_path("//Method"), None);
        assert_eq!(split_path("/a/b/c"), None);
        assert_eq!(split_path("/a/"), None);
    }
}
