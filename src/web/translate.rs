//! One gRPC-Web call, translated to a native gRPC call, served in process,
//! and its response translated back.
//!
//! ```text
//!  browser request                         native request (LocalConnection::call)
//!  POST /chat.ChatService/SendMessage  ─▶  POST /chat.ChatService/SendMessage
//!  content-type: application/grpc-web      content-type: application/grpc+proto
//!  x-grpc-web, grpc-timeout, chat-room …   the same metadata (browser-only headers dropped)
//!  body: frames (base64 in text mode)      body: the same frames, as bytes (a RecvBody)
//!
//!  browser response (HTTP/1.1)             native response (LocalEvent)
//!  200, content-type grpc-web[-text]   ◀─  Headers
//!  body: frames passed through         ◀─  Data: frames
//!        + 80 <len> "grpc-status:0\r\n" ◀─  Trailers (or the status in the
//!        (base64 per chunk in text mode)        Headers: trailers-only)
//! ```
//!
//! How the request body travels depends on the HTTP version the client
//! chose:
//!
//! * **HTTP/1.1** — what a browser's `fetch` uses. A fetch uploads its body
//!   whole before it reads a byte of the answer, so the body is read (and,
//!   in text mode, decoded as it arrives) up to a size cap and a time limit,
//!   then handed to the call in one piece ([`WholeBody`]): a slow or
//!   oversized upload is refused here, before it costs the server anything.
//! * **HTTP/2** — other gRPC-Web clients (and proxies) may stream requests
//!   as native gRPC does, up to full-duplex bidi: each message must reach
//!   the service while responses flow back, so the body is handed over
//!   chunk by chunk ([`StreamingBody`]), read only as the call asks for
//!   messages, so HTTP/2 flow control holds the client back; the server's
//!   per-message limit and the call's deadline bound it, as they bound a
//!   native client.
//!
//! The response flows back as the service sends it: the server may queue
//! only a bounded amount the browser has not taken (`server/local.rs`), so
//! a browser that stops reading makes the call wait; a browser that goes
//! away drops the response, which cancels the call.
//!
//! Errors found here — a bad body — are answered in gRPC-Web form too, so a
//! client always gets a `grpc-status`; one found while streaming ends the
//! call with that status in place of whatever the call then ended with.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use parking_lot::Mutex;

use super::{Browser, ResponseBody};
use crate::framing::grpc_web::{
    Mode, TextDecoder, WebContentType, X_GRPC_WEB, encode_text, encode_trailers,
};
use crate::framing::{
    DEFAULT_MAX_RECV_MESSAGE_SIZE, GRPC_MESSAGE, GRPC_STATUS, GRPC_STATUS_DETAILS_BIN, MetadataMap,
    PREFIX_LEN, Status,
};
use crate::rpc::RecvBody;
use crate::server::{LocalEvent, LocalResponse};

/// An HTTP/1.1 request body, read whole: handed to the call in one piece.
pub(crate) struct WholeBody(Option<Bytes>);

impl RecvBody for WholeBody {
    fn poll_chunk(&mut self, _cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Status>>> {
        Poll::Ready(self.0.take().filter(|b| !b.is_empty()).map(Ok))
    }

    fn poll_end(&mut self, _cx: &mut Context<'_>) -> Poll<Result<MetadataMap, Status>> {
        // gRPC-Web requests have no trailers; the end of the body is the end.
        Poll::Ready(Ok(MetadataMap::new()))
    }
}

/// Where a [`StreamingBody`] leaves the status of a body it could not
/// hand over (bad base64, the client's stream broken), for the response
/// side to report instead of whatever status the call ends with once its
/// request stream failed.
pub(crate) type BodyFailure = Arc<Mutex<Option<Status>>>;

/// A client's HTTP/2 request body handed to the call as it arrives: binary
/// chunks pass through, text-mode chunks are decoded from base64 (cut
/// wherever the network cut them; [`TextDecoder`] keeps the remainder).
pub(crate) struct StreamingBody {
    inner: Incoming,
    text: Option<TextDecoder>,
    failure: BodyFailure,
    done: bool,
}

impl StreamingBody {
    fn fail(&mut self, status: Status) -> Poll<Option<Result<Bytes, Status>>> {
        self.done = true;
        *self.failure.lock() = Some(status.clone());
        // The call's next read fails with it.
        Poll::Ready(Some(Err(status)))
    }
}

impl RecvBody for StreamingBody {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Status>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            let frame = match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                None => {
                    if let Some(Err(e)) = self.text.as_ref().map(TextDecoder::finish) {
                        return self.fail(Status::invalid_argument(e.to_string()));
                    }
                    self.done = true;
                    return Poll::Ready(None);
                }
                Some(Err(e)) => return self.fail(Status::cancelled(format!("request body: {e}"))),
                Some(Ok(frame)) => frame,
            };
            // Request trailers are not part of gRPC-Web: skipped.
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            let Some(decoder) = self.text.as_mut() else {
                if chunk.is_empty() {
                    continue;
                }
                return Poll::Ready(Some(Ok(chunk)));
            };
            let mut out = BytesMut::new();
            if let Err(e) = decoder.push(&chunk, &mut out) {
                return self.fail(Status::invalid_argument(e.to_string()));
            }
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(out.freeze())));
            }
        }
    }

    fn poll_end(&mut self, _cx: &mut Context<'_>) -> Poll<Result<MetadataMap, Status>> {
        Poll::Ready(Ok(MetadataMap::new()))
    }
}

/// Largest HTTP/1.1 request body accepted, before decoding: a message the native
/// server would accept, plus its prefix, in base64 (4 characters per 3
/// bytes) with room for whitespace. Anything larger is refused here rather
/// than buffered.
pub const MAX_REQUEST_BODY: usize = (DEFAULT_MAX_RECV_MESSAGE_SIZE + PREFIX_LEN) / 3 * 4 + 1024;

/// How long an HTTP/1.1 client may take to send its request body. A
/// browser's gRPC-Web request body is one message, sent at once; a client
/// trickling one in is holding a connection for nothing. (Over HTTP/2 the
/// body streams, bounded by the call's own deadline.)
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Request headers that belong to the browser's HTTP/1.1 exchange, not to
/// the call: they are not forwarded as metadata.
fn is_browser_only(name: &HeaderName) -> bool {
    const DROPPED: &[&str] = &[
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te",
        "content-length",
        "content-type",
        "accept",
        "accept-encoding",
        "accept-language",
        "origin",
        "referer",
        "cookie",
        "pragma",
        "cache-control",
        "priority",
        "dnt",
        X_GRPC_WEB,
    ];
    let name = name.as_str();
    DROPPED.contains(&name) || name.starts_with("sec-") || name.starts_with("access-control-")
}

/// Translates one call, serves it in process, and translates its answer.
pub(super) async fn call(
    request: Request<Incoming>,
    web: WebContentType,
    browser: &Browser,
) -> Response<ResponseBody> {
    let (parts, body) = request.into_parts();
    let failure = BodyFailure::default();
    let body: Box<dyn RecvBody> = if parts.version >= http::Version::HTTP_2 {
        Box::new(StreamingBody {
            inner: body,
            text: (web.mode == Mode::Text).then(TextDecoder::new),
            failure: Arc::clone(&failure),
            done: false,
        })
    } else {
        match tokio::time::timeout(BODY_READ_TIMEOUT, read_body(body, web.mode)).await {
            Ok(Ok(body)) => Box::new(WholeBody(Some(body))),
            Ok(Err(status)) => {
                browser.log_refusal(status.message());
                return status_only(web, &status);
            }
            Err(_) => {
                let status = Status::deadline_exceeded(format!(
                    "the request body took longer than {BODY_READ_TIMEOUT:?}"
                ));
                browser.log_refusal(status.message());
                return status_only(web, &status);
            }
        }
    };
    let mut native = Request::new(body);
    *native.method_mut() = http::Method::POST;
    *native.uri_mut() = parts.uri;
    let headers = native.headers_mut();
    for (name, value) in &parts.headers {
        if !is_browser_only(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc+proto"),
    );
    // "te: trailers" is how a gRPC server knows the client can read
    // trailers; this side of the gateway can.
    headers.insert(header::TE, HeaderValue::from_static("trailers"));

    let mut response = browser.calls.call(native);
    match response.event().await {
        Some(LocalEvent::Headers {
            response: head,
            end,
        }) => translate_response(head, end, response, web, failure),
        // No headers: the call was abandoned (or our request body failed).
        _ => {
            let status = failure
                .lock()
                .take()
                .unwrap_or_else(|| Status::internal("the server ended the call without a status"));
            status_only(web, &status)
        }
    }
}

/// Reads the whole request body, decoding base64 as it arrives in text
/// mode. Chunks are cut wherever the network cut them — in text mode rarely
/// on a 4-character boundary — which [`TextDecoder`] takes care of.
async fn read_body(mut body: Incoming, mode: Mode) -> Result<Bytes, Status> {
    let mut raw_len = 0usize;
    let mut out = BytesMut::new();
    let mut text = (mode == Mode::Text).then(TextDecoder::new);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Status::cancelled(format!("request body: {e}")))?;
        let Ok(chunk) = frame.into_data() else {
            // HTTP/1.1 request trailers: not part of gRPC-Web.
            continue;
        };
        raw_len += chunk.len();
        if raw_len > MAX_REQUEST_BODY {
            return Err(Status::resource_exhausted(format!(
                "request body larger than {MAX_REQUEST_BODY} bytes"
            )));
        }
        match &mut text {
            None => out.extend_from_slice(&chunk),
            Some(decoder) => decoder
                .push(&chunk, &mut out)
                .map_err(|e| Status::invalid_argument(e.to_string()))?,
        }
    }
    if let Some(decoder) = &text {
        decoder
            .finish()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
    }
    Ok(out.freeze())
}

/// A response with no message: the status as the body's trailers frame.
/// (The status is in the body, not in headers, so clients read it the one
/// way they read every status.)
fn status_only(web: WebContentType, status: &Status) -> Response<ResponseBody> {
    let mut trailers = HeaderMap::new();
    status.write_trailers(&mut trailers);
    let frame = trailers_frame(&trailers, web.mode);
    let mut response = Response::new(super::full(frame));
    set_content_type(response.headers_mut(), web);
    response
}

fn set_content_type(headers: &mut HeaderMap, web: WebContentType) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(web.response_value()),
    );
}

/// The trailers frame, in the call's mode.
fn trailers_frame(trailers: &HeaderMap, mode: Mode) -> Bytes {
    let mut frame = BytesMut::new();
    encode_trailers(
        trailers
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_bytes())),
        &mut frame,
    );
    match mode {
        Mode::Binary => frame.freeze(),
        Mode::Text => encode_text(&frame),
    }
}

/// Turns the native response into the gRPC-Web one.
fn translate_response(
    head: http::Response<()>,
    end: bool,
    body: LocalResponse,
    web: WebContentType,
    failure: BodyFailure,
) -> Response<ResponseBody> {
    let (parts, ()) = head.into_parts();
    if parts.status != StatusCode::OK {
        // Not a gRPC answer at all (our server answers 200 to every gRPC
        // request): map the HTTP status as a gRPC client would.
        return status_only(web, &Status::from_http_status(parts.status.as_u16()));
    }
    let mut headers = HeaderMap::new();
    // A trailers-only response carries the status in its headers; it moves
    // into the body's trailers frame with the other status fields.
    let mut early = HeaderMap::new();
    for (name, value) in &parts.headers {
        let name_str = name.as_str();
        if [GRPC_STATUS, GRPC_MESSAGE, GRPC_STATUS_DETAILS_BIN].contains(&name_str) {
            early.append(name.clone(), value.clone());
        } else if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            headers.append(name.clone(), value.clone());
        }
    }
    let trailers_only = end || early.contains_key(GRPC_STATUS);
    let pending = trailers_only.then(|| {
        let status = failure.lock().take();
        match status {
            Some(status) => trailers_frame(&status_trailers(&status), web.mode),
            None => trailers_frame(&early, web.mode),
        }
    });
    let mut out = Response::new(
        DownstreamBody {
            inner: (!trailers_only).then_some(body),
            pending,
            mode: web.mode,
            failure,
        }
        .boxed(),
    );
    *out.headers_mut() = headers;
    set_content_type(out.headers_mut(), web);
    // Streaming responses must reach the page as they are written, not when
    // a proxy's buffer fills.
    out.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    out
}

/// The response body: native frames passed through (base64 per chunk in
/// text mode), then the trailers as a frame. Dropping it (the browser went
/// away) drops the [`LocalResponse`], which cancels the call.
struct DownstreamBody {
    /// The native response, until its trailers (or its end) came.
    inner: Option<LocalResponse>,
    /// A frame still to send before the end.
    pending: Option<Bytes>,
    mode: Mode,
    /// Why the request body failed, if it did: the call's real status.
    failure: BodyFailure,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Body for DownstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if let Some(last) = this.pending.take() {
                return Poll::Ready(Some(Ok(Frame::data(last))));
            }
            let Some(inner) = this.inner.as_mut() else {
                return Poll::Ready(None);
            };
            let trailers = match ready!(inner.poll_event(cx)) {
                Some(LocalEvent::Data(data)) if data.is_empty() => continue,
                Some(LocalEvent::Data(data)) => {
                    let data = match this.mode {
                        Mode::Binary => data,
                        Mode::Text => encode_text(&data),
                    };
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                // Headers come once, and were read before the body.
                Some(LocalEvent::Headers { .. }) => continue,
                Some(LocalEvent::Trailers(trailers)) => match this.failure.lock().take() {
                    // Our own request body failed, and with it the call.
                    Some(status) => status_trailers(&status),
                    None => trailers,
                },
                // The call ended without trailers, or was abandoned: the
                // client still deserves a status.
                Some(LocalEvent::Reset) | None => {
                    status_trailers(&this.failure.lock().take().unwrap_or_else(|| {
                        Status::internal("the server ended the call without a status")
                    }))
                }
            };
            this.inner = None;
            this.pending = Some(trailers_frame(&trailers, this.mode));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_none() && self.pending.is_none()
    }
}

fn status_trailers(status: &Status) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    status.write_trailers(&mut trailers);
    trailers
}
