//! The response half of one server stream: headers, messages, trailers.
//!
//! A gRPC response on the wire is
//!
//! ```text
//! HEADERS  :status 200, content-type application/grpc, [grpc-encoding], custom metadata
//! DATA     length-prefixed messages (any number, cut into frames by flow control)
//! HEADERS  grpc-status, [grpc-message], [grpc-status-details-bin], custom metadata  (END_STREAM)
//! ```
//!
//! or, when the call fails before any message was sent, a single
//! **trailers-only** HEADERS frame carrying `:status 200`, the content-type and
//! `grpc-status` together, with END_STREAM. Trailers-only exists so that an
//! early error costs one frame, and so a client never has to tell "headers
//! now, trailers later" apart from "no response at all".
//!
//! Sending respects HTTP/2 flow control: [`ResponseSink::send`] waits until the
//! peer has opened its window before handing bytes to `h2`, so a client that
//! stops reading makes its own call wait instead of making the server buffer
//! without bound.

use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use h2::Reason;
use http::{HeaderMap, HeaderValue};
use parking_lot::Mutex;

use super::outbound::{Opening, Outgoing};
use crate::framing::{
    ACCEPT_ENCODING, CONTENT_TYPE_GRPC, Encoding, GRPC_ACCEPT_ENCODING, GRPC_ENCODING, MetadataMap,
    PREFIX_LEN, Prefix, Status,
};

/// Where the response is: before headers, streaming, or done.
enum Phase {
    /// Nothing sent yet: the next frame may be headers or trailers-only.
    Start(Opening),
    /// Headers sent; messages may follow.
    Streaming(Outgoing),
    /// Trailers (or a reset) sent.
    Done,
}

/// State shared by the handler's [`ResponseSink`] and the task that owns the
/// call (which sends the final status and watches for RST_STREAM).
pub(crate) struct Shared {
    phase: Phase,
    /// Initial metadata, sent with the response headers. Boxed, here and
    /// below, because most calls send none: an empty map costs a pointer
    /// instead of a whole `HeaderMap` for the life of the call.
    headers: Option<Box<MetadataMap>>,
    /// Trailing metadata, sent with the status.
    trailers: Option<Box<MetadataMap>>,
    /// The encoding announced in `grpc-encoding`, if responses may be compressed.
    encoding: Option<Encoding>,
    /// Whether the client said it accepts gzip (`grpc-accept-encoding`).
    client_accepts_gzip: bool,
    max_send_message_size: usize,
}

/// A handle on the response of one call, shared with [`ResponseSink`].
#[derive(Clone)]
pub(crate) struct Responder {
    shared: Arc<Mutex<Shared>>,
}

impl Responder {
    pub(crate) fn new(
        respond: Opening,
        client_accepts_gzip: bool,
        max_send_message_size: usize,
    ) -> Self {
        Responder {
            shared: Arc::new(Mutex::new(Shared {
                phase: Phase::Start(respond),
                headers: None,
                trailers: None,
                encoding: None,
                client_accepts_gzip,
                max_send_message_size,
            })),
        }
    }

    pub(crate) fn sink<T>(&self) -> ResponseSink<T> {
        ResponseSink {
            responder: self.clone(),
            _message: PhantomData,
        }
    }

    /// Sets the initial and trailing metadata of a unary response.
    pub(crate) fn set_metadata(&self, headers: MetadataMap, trailers: MetadataMap) {
        let mut shared = self.shared.lock();
        shared.headers = boxed(headers);
        shared.trailers = boxed(trailers);
    }

    /// Asks for responses compressed with `encoding`, if the client accepts it
    /// and headers are not sent yet. Returns whether compression is on.
    pub(crate) fn enable_compression(&self, encoding: Encoding) -> bool {
        let mut shared = self.shared.lock();
        if encoding == Encoding::Identity {
            return false;
        }
        if matches!(shared.phase, Phase::Start(_)) && shared.client_accepts_gzip {
            shared.encoding = Some(encoding);
        }
        shared.encoding == Some(encoding)
    }

    pub(crate) fn max_send_message_size(&self) -> usize {
        self.shared.lock().max_send_message_size
    }

    /// Sends the response headers now, if not sent yet.
    pub(crate) fn flush_headers(&self) -> Result<(), Status> {
        self.shared.lock().send_headers()
    }

    /// Sends already length-prefixed message bytes, waiting for flow-control
    /// capacity as needed. Several messages may be concatenated in `data`:
    /// they then go out in as few DATA frames as the window allows.
    pub(crate) async fn send_frames(&self, mut data: Bytes) -> Result<(), Status> {
        self.shared.lock().send_headers()?;
        while !data.is_empty() {
            // Cut DATA at message boundaries whenever a whole message fits,
            // and wait for room for a whole (small) message rather than
            // splitting it: if this send is then abandoned — the call is
            // ended because the client stopped reading — the client has
            // received whole messages only, and can read the status that
            // follows instead of a truncated message.
            let first = first_message_len(&data).unwrap_or(data.len());
            let needed = first.clamp(1, WHOLE_MESSAGE_LIMIT);
            let capacity =
                std::future::poll_fn(|cx| self.poll_capacity(cx, data.len(), needed)).await?;
            let cut = if capacity >= data.len() {
                // Everything fits: no need to look for message boundaries.
                data.len()
            } else {
                match whole_messages_within(&data, capacity) {
                    0 => capacity,
                    whole => whole,
                }
            };
            let chunk = data.split_to(cut);
            let mut shared = self.shared.lock();
            let Phase::Streaming(stream) = &mut shared.phase else {
                return Err(Status::cancelled("stream closed"));
            };
            stream.send_data(chunk)?;
        }
        Ok(())
    }

    /// Sends `data` now if the peer's window (and `h2`'s buffer for the
    /// stream) has room for all of it; gives it back untouched otherwise.
    /// Never waits. See [`ResponseSink::try_send_encoded`].
    pub(crate) fn try_send_frames(&self, data: Bytes) -> Result<Option<Bytes>, Status> {
        if data.is_empty() {
            return Ok(None);
        }
        let mut shared = self.shared.lock();
        shared.send_headers()?;
        let Phase::Streaming(stream) = &mut shared.phase else {
            return Err(Status::cancelled("stream closed"));
        };
        // `reserve_capacity` assigns window from the connection at once when
        // there is some, so `capacity()` answers on the spot; it also counts
        // bytes `h2` has not written yet, so a stream whose socket is backed
        // up is refused here rather than queued without bound.
        stream.reserve_capacity(data.len());
        if stream.capacity() < data.len() {
            return Ok(Some(data));
        }
        stream.send_data(data)?;
        Ok(None)
    }

    /// Waits until the peer's window lets at least `needed` bytes through,
    /// having asked `h2` for `wanted` bytes of capacity.
    fn poll_capacity(
        &self,
        cx: &mut Context<'_>,
        wanted: usize,
        needed: usize,
    ) -> Poll<Result<usize, Status>> {
        let mut shared = self.shared.lock();
        let Phase::Streaming(stream) = &mut shared.phase else {
            return Poll::Ready(Err(Status::cancelled("stream closed")));
        };
        stream.reserve_capacity(wanted);
        loop {
            let available = stream.capacity();
            if available >= needed {
                return Poll::Ready(Ok(available));
            }
            // `poll_capacity` only reports increases, so check `capacity()`
            // first and come back here until there is enough.
            match stream.poll_capacity(cx) {
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Ready(Some(Err(status))) => return Poll::Ready(Err(status)),
                Poll::Ready(None) => return Poll::Ready(Err(Status::cancelled("stream closed"))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Completes when the client resets the stream (RST_STREAM), with its reason.
    pub(crate) fn poll_reset(&self, cx: &mut Context<'_>) -> Poll<Reason> {
        let mut shared = self.shared.lock();
        match &mut shared.phase {
            Phase::Start(respond) => respond.poll_reset(cx),
            Phase::Streaming(stream) => stream.poll_reset(cx),
            Phase::Done => Poll::Pending,
        }
    }

    /// Whether the call is served in process, where watching for the
    /// client's departure costs nothing per message sent.
    pub(crate) fn reset_watch_is_cheap(&self) -> bool {
        match &self.shared.lock().phase {
            Phase::Start(respond) => respond.reset_watch_is_cheap(),
            Phase::Streaming(stream) => matches!(stream, Outgoing::Local(_)),
            Phase::Done => false,
        }
    }

    /// Ends the call with `status`: trailers after headers, or trailers-only.
    pub(crate) fn finish(&self, status: &Status) {
        let mut shared = self.shared.lock();
        // Initial metadata the handler set goes out as initial metadata —
        // a HEADERS frame of its own — even when no message follows: a
        // client reads headers and trailers apart, and must find each entry
        // where the handler put it. Trailers-only is for calls with no
        // initial metadata to send (PROTOCOL-HTTP2.md: "Trailers-Only is
        // permitted for calls that produce an immediate error"); grpc-go's
        // server makes the same choice.
        if matches!(shared.phase, Phase::Start(_)) && shared.headers.is_some() {
            if let Err(e) = shared.send_headers() {
                tracing::debug!(error = %e, "could not send the response headers (peer gone)");
            }
        }
        let phase = std::mem::replace(&mut shared.phase, Phase::Done);
        let result = match phase {
            Phase::Start(mut respond) => {
                // Nothing sent yet: one HEADERS frame carries everything.
                let mut response = http::Response::new(());
                let headers = response.headers_mut();
                response_headers(headers, None);
                if let Some(metadata) = &shared.headers {
                    metadata.write_headers(headers);
                }
                if let Some(metadata) = &shared.trailers {
                    metadata.write_headers(headers);
                }
                status.write_trailers(headers);
                never_indexed(headers);
                respond.send_response(response, true).map(drop)
            }
            Phase::Streaming(mut stream) => {
                let mut trailers = HeaderMap::new();
                if let Some(metadata) = &shared.trailers {
                    metadata.write_headers(&mut trailers);
                }
                status.write_trailers(&mut trailers);
                never_indexed(&mut trailers);
                stream.send_trailers(trailers)
            }
            Phase::Done => Ok(()),
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "could not send the final status (peer gone)");
        }
    }

    /// Abandons the call with RST_STREAM (used when the client already reset it,
    /// or on a deadline after headers when trailers cannot go out).
    pub(crate) fn reset(&self, reason: Reason) {
        let mut shared = self.shared.lock();
        match std::mem::replace(&mut shared.phase, Phase::Done) {
            Phase::Start(mut respond) => respond.send_reset(reason),
            Phase::Streaming(mut stream) => stream.send_reset(reason),
            Phase::Done => {}
        }
    }
}

impl Shared {
    fn send_headers(&mut self) -> Result<(), Status> {
        let Phase::Start(respond) = &mut self.phase else {
            return match self.phase {
                Phase::Streaming(_) => Ok(()),
                _ => Err(Status::cancelled("call already finished")),
            };
        };
        let mut response = http::Response::new(());
        response_headers(response.headers_mut(), self.encoding);
        // Taken, not copied: once the headers are out they are never needed
        // again, and a long-lived call (a chat member) would otherwise keep
        // its header map for its whole life.
        if let Some(metadata) = self.headers.take() {
            metadata.write_headers(response.headers_mut());
        }
        never_indexed(response.headers_mut());
        let stream = respond.send_response(response, false)?;
        self.phase = Phase::Streaming(stream);
        Ok(())
    }
}

/// `metadata`, boxed, or `None` if it is empty.
fn boxed(metadata: MetadataMap) -> Option<Box<MetadataMap>> {
    (!metadata.is_empty()).then(|| Box::new(metadata))
}

/// The headers every response starts with.
fn response_headers(headers: &mut HeaderMap, encoding: Option<Encoding>) {
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(CONTENT_TYPE_GRPC),
    );
    headers.insert(
        GRPC_ACCEPT_ENCODING,
        HeaderValue::from_static(ACCEPT_ENCODING),
    );
    if let Some(encoding) = encoding {
        headers.insert(GRPC_ENCODING, HeaderValue::from_static(encoding.as_str()));
    }
}

/// Marks every header we are about to send "never indexed" (RFC 7541
/// §6.2.3; `h2`'s only way to keep a header out of its HPACK encoder's
/// dynamic table is `set_sensitive`), so no header block we send refers to
/// a dynamic-table entry.
///
/// Why: HPACK gives each direction of a connection its own dynamic table.
/// Ours, for what we send, is sized by the *client's*
/// SETTINGS_HEADER_TABLE_SIZE (4096 unless it says otherwise); the one for
/// what clients send us is sized by ours, which is 0
/// ([`super::DEFAULT_HEADER_TABLE_SIZE`]). grpc-java's OkHttp transport
/// (the one Android apps use) mixes the two up: it shrinks its own
/// *decoder* to our 0, so a response that refers to an entry an earlier
/// response added fails there with "Header index too large" — on every
/// connection's second call. Never indexing costs a few dozen bytes per
/// response (`content-type` and friends spelled out each time) and keeps
/// every client working; it also means our encoder holds no table for any
/// connection. (`h2` itself still indexes a `:status` outside HPACK's
/// static table, such as 415 or 405, which only non-gRPC requests get.)
pub(crate) fn never_indexed(headers: &mut HeaderMap) {
    for value in headers.values_mut() {
        value.set_sensitive(true);
    }
}

/// Messages up to this size are never split across DATA frames on purpose
/// (see [`Responder::send_frames`]). HTTP/2's default window (65,535 bytes)
/// always has room for one.
const WHOLE_MESSAGE_LIMIT: usize = 16 * 1024;

/// Length of the first length-prefixed message of `data` (prefix included),
/// if its prefix is there.
fn first_message_len(data: &[u8]) -> Option<usize> {
    let prefix = Prefix::parse(data).ok()??;
    usize::try_from(prefix.len).ok()?.checked_add(PREFIX_LEN)
}

/// Length of the longest run of whole length-prefixed messages at the front
/// of `data` that fits in `limit` bytes (0 if not even the first fits).
fn whole_messages_within(data: &[u8], limit: usize) -> usize {
    let mut end = 0;
    while let Some(len) = data.get(end..).and_then(first_message_len) {
        match end.checked_add(len) {
            Some(next) if next <= limit && next <= data.len() => end = next,
            _ => break,
        }
    }
    end
}

/// The server's side of a streaming response: send messages of type `T`.
///
/// Response headers go out with the first message (or on
/// [`ResponseSink::flush_headers`]); the status and trailing metadata go out
/// when the handler returns.
pub struct ResponseSink<T> {
    responder: Responder,
    _message: PhantomData<fn(T)>,
}

impl<T> std::fmt::Debug for ResponseSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseSink").finish_non_exhaustive()
    }
}

impl<T: prost::Message> ResponseSink<T> {
    /// Sends one message, uncompressed unless [`ResponseSink::set_compression`]
    /// turned compression on. Waits while the client's flow-control window is
    /// closed. Fails with `CANCELLED` once the client has gone.
    pub async fn send(&mut self, message: &T) -> Result<(), Status> {
        let compress = self.responder.shared.lock().encoding;
        self.send_with(message, compress.is_some()).await
    }

    /// Sends one message, choosing per message whether to compress it (only
    /// possible if [`ResponseSink::set_compression`] succeeded).
    pub async fn send_with(&mut self, message: &T, compress: bool) -> Result<(), Status> {
        let encoding = if compress {
            self.responder.shared.lock().encoding
        } else {
            None
        };
        let max = self.responder.max_send_message_size();
        let mut buf = BytesMut::new();
        crate::codec::encode(message, encoding, max, &mut buf)?;
        self.responder.send_frames(buf.freeze()).await
    }

    /// Sends bytes that already hold one or more length-prefixed messages of
    /// type `T` — for servers that encode a message once and send it to many
    /// clients. The caller vouches for the framing.
    pub async fn send_encoded(&mut self, frames: Bytes) -> Result<(), Status> {
        self.responder.send_frames(frames).await
    }

    /// Sends already-encoded frames (as [`ResponseSink::send_encoded`]) if
    /// that needs no waiting: the client's window has room for all of them.
    /// Returns `Ok(None)` when they are sent, `Ok(Some(frames))` — the same
    /// bytes, back — when there is no room now (send them with
    /// `send_encoded`, which waits), and an error once the client has gone.
    ///
    /// For callers that keep a future per stream for a long time: a send
    /// that completes at once needs no future, so the caller's own future
    /// need not make room for one — only the rare send that must wait does.
    pub fn try_send_encoded(&mut self, frames: Bytes) -> Result<Option<Bytes>, Status> {
        self.responder.try_send_frames(frames)
    }

    /// Turns on compression of the messages sent with [`ResponseSink::send`], if
    /// the client accepts `encoding` and no header is sent yet. Returns
    /// whether it is on.
    pub fn set_compression(&mut self, encoding: Encoding) -> bool {
        self.responder.enable_compression(encoding)
    }

    /// Initial metadata to send with the response headers (before the first
    /// message).
    pub fn set_header_metadata(&mut self, metadata: MetadataMap) {
        self.responder.shared.lock().headers = boxed(metadata);
    }

    /// Trailing metadata to send with the status.
    pub fn set_trailer_metadata(&mut self, metadata: MetadataMap) {
        self.responder.shared.lock().trailers = boxed(metadata);
    }

    /// Sends the response headers now, so the client sees the call accepted
    /// before the first message.
    pub fn flush_headers(&mut self) -> Result<(), Status> {
        self.responder.flush_headers()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two messages: flag 0 | length 2 | "hi", then flag 0 | length 3 | "abc".
    const TWO: &[u8] = &[0, 0, 0, 0, 2, b'h', b'i', 0, 0, 0, 0, 3, b'a', b'b', b'c'];

    #[test]
    fn every_header_we_send_is_never_indexed() {
        let mut headers = HeaderMap::new();
        response_headers(&mut headers, Some(Encoding::Gzip));
        headers.insert("x-custom", HeaderValue::from_static("value"));
        never_indexed(&mut headers);
        assert_eq!(headers.len(), 4);
        assert_eq!(headers["content-type"], "application/grpc");
        assert!(headers.values().all(HeaderValue::is_sensitive));
    }

    #[test]
    fn cuts_fall_on_message_boundaries() {
        assert_eq!(first_message_len(TWO), Some(7));
        assert_eq!(whole_messages_within(TWO, 100), 15);
        assert_eq!(whole_messages_within(TWO, 14), 7);
        assert_eq!(whole_messages_within(TWO, 7), 7);
        assert_eq!(whole_messages_within(TWO, 6), 0);
        // A half-present second message is not counted.
        assert_eq!(whole_messages_within(&TWO[..10], 100), 7);
        assert_eq!(first_message_len(&TWO[..3]), None);
    }
}
