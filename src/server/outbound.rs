//! Where a response goes: an HTTP/2 stream (`h2`), or a call served in
//! process ([`local`](super::local), the gRPC-Web gateway's way in).
//!
//! `sink.rs` writes every response the same way — headers, flow-controlled
//! DATA, trailers or a reset — through the two enums here, which hand each
//! step to the transport the call arrived on:
//!
//! ```text
//!   Opening ──send_response(headers, end=false)──▶ Outgoing ──send_trailers──▶ done
//!      │                                              └──────send_reset───────▶ done
//!      └──send_response(headers, end=true): trailers-only, or send_reset──────▶ done
//! ```
//!
//! Both transports report capacity the way `h2` does: `capacity()` answers
//! on the spot, `poll_capacity` wakes the sender when it grew.

use std::task::{Context, Poll};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, SendStream};
use http::HeaderMap;

use super::pipe::{LocalOpening, LocalStream};
use crate::framing::Status;

/// A response whose headers are not sent yet.
pub(crate) enum Opening {
    H2(SendResponse<Bytes>),
    Local(LocalOpening),
}

/// A response whose headers are sent: DATA may follow, then trailers.
pub(crate) enum Outgoing {
    H2(SendStream<Bytes>),
    Local(LocalStream),
}

impl Opening {
    /// Sends the response headers; with `end`, they are the whole response
    /// (trailers-only, or an HTTP error).
    pub(crate) fn send_response(
        &mut self,
        response: http::Response<()>,
        end: bool,
    ) -> Result<Outgoing, Status> {
        match self {
            Opening::H2(respond) => respond
                .send_response(response, end)
                .map(Outgoing::H2)
                .map_err(|e| h2_error_to_status(&e)),
            Opening::Local(local) => local.send_response(response, end).map(Outgoing::Local),
        }
    }

    /// Completes when the client gave up on the call, with its reason.
    pub(crate) fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<Reason> {
        match self {
            Opening::H2(respond) => reason(respond.poll_reset(cx)),
            Opening::Local(local) => local.poll_reset(cx),
        }
    }

    pub(crate) fn send_reset(&mut self, reason: Reason) {
        match self {
            Opening::H2(respond) => respond.send_reset(reason),
            Opening::Local(local) => local.send_reset(reason),
        }
    }

    /// Whether watching for the client's reset costs nothing per message
    /// sent (see `call::drive`): true in process, where only the client's
    /// departure wakes the watcher.
    pub(crate) fn reset_watch_is_cheap(&self) -> bool {
        matches!(self, Opening::Local(_))
    }
}

impl Outgoing {
    pub(crate) fn send_data(&mut self, data: Bytes) -> Result<(), Status> {
        match self {
            Outgoing::H2(stream) => stream
                .send_data(data, false)
                .map_err(|e| h2_error_to_status(&e)),
            Outgoing::Local(local) => local.send_data(data),
        }
    }

    pub(crate) fn send_trailers(&mut self, trailers: HeaderMap) -> Result<(), Status> {
        match self {
            Outgoing::H2(stream) => stream
                .send_trailers(trailers)
                .map_err(|e| h2_error_to_status(&e)),
            Outgoing::Local(local) => local.send_trailers(trailers),
        }
    }

    pub(crate) fn send_reset(&mut self, reason: Reason) {
        match self {
            Outgoing::H2(stream) => stream.send_reset(reason),
            Outgoing::Local(local) => local.send_reset(reason),
        }
    }

    pub(crate) fn reserve_capacity(&mut self, wanted: usize) {
        match self {
            Outgoing::H2(stream) => stream.reserve_capacity(wanted),
            Outgoing::Local(_) => {}
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        match self {
            Outgoing::H2(stream) => stream.capacity(),
            Outgoing::Local(local) => local.capacity(),
        }
    }

    /// Reports an increase of [`Outgoing::capacity`]; `None` when the stream
    /// can take no more data at all.
    pub(crate) fn poll_capacity(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<usize, Status>>> {
        match self {
            Outgoing::H2(stream) => stream
                .poll_capacity(cx)
                .map(|c| c.map(|c| c.map_err(|e| h2_error_to_status(&e)))),
            Outgoing::Local(local) => local.poll_capacity(cx),
        }
    }

    pub(crate) fn poll_reset(&mut self, cx: &mut Context<'_>) -> Poll<Reason> {
        match self {
            Outgoing::H2(stream) => reason(stream.poll_reset(cx)),
            Outgoing::Local(local) => local.poll_reset(cx),
        }
    }
}

/// An `h2` reset notice as a reason: a lost connection is as good as a
/// reset for the call.
fn reason(polled: Poll<Result<Reason, h2::Error>>) -> Poll<Reason> {
    match polled {
        Poll::Ready(Ok(reason)) => Poll::Ready(reason),
        Poll::Ready(Err(e)) => Poll::Ready(e.reason().unwrap_or(Reason::CANCEL)),
        Poll::Pending => Poll::Pending,
    }
}

/// Maps an `h2` stream error to the status a handler sees.
pub(crate) fn h2_error_to_status(e: &h2::Error) -> Status {
    match e.reason() {
        Some(Reason::CANCEL) | Some(Reason::NO_ERROR) => {
            Status::cancelled("the client cancelled the call")
        }
        _ if e.is_io() || e.is_go_away() => Status::unavailable(format!("connection lost: {e}")),
        _ => Status::cancelled(format!("stream ended: {e}")),
    }
}
