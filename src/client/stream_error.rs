//! What an `h2` error on a client stream means for the call: the [`Status`]
//! it fails with, saying which side raised it, and the deadline's part in
//! it. One function, [`stream_error`], holds PROTOCOL-HTTP2.md's RST_STREAM
//! table; the request side, the response side and the calls all use it.

use h2::Reason;
use tokio::time::Instant;

use crate::framing::Status;

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
pub(super) fn stream_error_by(deadline: Option<Instant>, e: &h2::Error) -> Status {
    if passed(deadline) {
        Status::deadline_exceeded("deadline exceeded")
    } else {
        stream_error(e)
    }
}

/// Whether the call has a deadline and it has passed.
pub(super) fn passed(deadline: Option<Instant>) -> bool {
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
