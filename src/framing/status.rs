//! The outcome of a call: `Code`, `Status`, and the trailers that carry them.
//!
//! ```text
//!   HEADERS (END_STREAM)                       Trailers (or Trailers-Only)
//!     grpc-status: 5                           decimal Code, no leading zeros
//!     grpc-message: room%20%22x%22%20not%E2%80%A6   percent-encoded UTF-8
//!     grpc-status-details-bin: CAUSB3N0YXR1cw  unpadded base64 of opaque bytes
//!     custom-key: value                        user metadata (metadata.rs)
//! ```
//!
//! "Status must be sent in Trailers even if the status code is OK": a gRPC call's
//! result is not the HTTP status (that is 200 whenever the server speaks gRPC) but
//! these trailers, sent after the last message. When a call fails before any message,
//! the server may send them as the only HEADERS frame ("Trailers-Only").
//!
//! `grpc-message` is percent-encoded because HTTP/2 header values are bytes in
//! 0x20-0x7E in practice while the message is arbitrary Unicode; the encoding is a
//! custom variant of RFC 3986's, defined by the grammar quoted on
//! [`encode_grpc_message`]. Decoding is deliberately lenient: a broken escape from a
//! peer must never turn an error report into a second error.
//!
//! When `grpc-status` is absent (a proxy or a non-gRPC server answered) the code is
//! synthesised from the HTTP status by [`Code::from_http_status`].

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};

use super::metadata::{BASE64, MetadataMap};

/// Trailer carrying the decimal status code.
pub const GRPC_STATUS: &str = "grpc-status";
/// Trailer carrying the percent-encoded status message.
pub const GRPC_MESSAGE: &str = "grpc-message";
/// Trailer carrying opaque status details (conventionally a `google.rpc.Status`).
pub const GRPC_STATUS_DETAILS_BIN: &str = "grpc-status-details-bin";

/// gRPC status codes, with their wire values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum Code {
    /// Not an error.
    Ok = 0,
    /// The operation was cancelled, typically by the caller.
    Cancelled = 1,
    /// Unknown error, or an error from a space of codes we do not know.
    Unknown = 2,
    /// The client sent an invalid argument.
    InvalidArgument = 3,
    /// The deadline expired before the operation completed.
    DeadlineExceeded = 4,
    /// Some requested entity was not found.
    NotFound = 5,
    /// The entity the client tried to create already exists.
    AlreadyExists = 6,
    /// The caller may not execute this operation.
    PermissionDenied = 7,
    /// Some resource (quota, memory, message size) has been exhausted.
    ResourceExhausted = 8,
    /// The system is not in a state required for the operation.
    FailedPrecondition = 9,
    /// The operation was aborted, typically by a concurrency conflict.
    Aborted = 10,
    /// The operation was attempted past the valid range.
    OutOfRange = 11,
    /// The operation is not implemented or supported.
    Unimplemented = 12,
    /// An invariant the system relies on is broken.
    Internal = 13,
    /// The service is currently unavailable; retrying may help.
    Unavailable = 14,
    /// Unrecoverable data loss or corruption.
    DataLoss = 15,
    /// The request lacks valid authentication credentials.
    Unauthenticated = 16,
}

impl Code {
    /// The code with wire value `v`; values outside 0..=16 are [`Code::Unknown`].
    pub fn from_i32(v: i32) -> Code {
        match v {
            0 => Code::Ok,
            1 => Code::Cancelled,
            2 => Code::Unknown,
            3 => Code::InvalidArgument,
            4 => Code::DeadlineExceeded,
            5 => Code::NotFound,
            6 => Code::AlreadyExists,
            7 => Code::PermissionDenied,
            8 => Code::ResourceExhausted,
            9 => Code::FailedPrecondition,
            10 => Code::Aborted,
            11 => Code::OutOfRange,
            12 => Code::Unimplemented,
            13 => Code::Internal,
            14 => Code::Unavailable,
            15 => Code::DataLoss,
            16 => Code::Unauthenticated,
            _ => Code::Unknown,
        }
    }

    /// Parses a `grpc-status` value: "Status → "grpc-status" 1*DIGIT ; 0-9".
    ///
    /// Anything that is not 1 or more ASCII digits (empty, signs, spaces) or names no
    /// known code is [`Code::Unknown`]. Leading zeros are tolerated ("007" is 7) even
    /// though senders must not produce them. Arbitrarily long input cannot overflow.
    pub fn from_bytes(v: &[u8]) -> Code {
        if v.is_empty() {
            return Code::Unknown;
        }
        let mut value: i32 = 0;
        for &b in v {
            if !b.is_ascii_digit() {
                return Code::Unknown;
            }
            value = match value
                .checked_mul(10)
                .and_then(|x| x.checked_add(i32::from(b - b'0')))
            {
                Some(x) => x,
                None => return Code::Unknown,
            };
        }
        Code::from_i32(value)
    }

    /// The canonical upper-case name: `"OK"`, `"CANCELLED"`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "OK",
            Code::Cancelled => "CANCELLED",
            Code::Unknown => "UNKNOWN",
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::Aborted => "ABORTED",
            Code::OutOfRange => "OUT_OF_RANGE",
            Code::Unimplemented => "UNIMPLEMENTED",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
            Code::DataLoss => "DATA_LOSS",
            Code::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// The code to report when a response carries no `grpc-status`, from its HTTP
    /// status, per gRPC's http-grpc-status-mapping.md.
    ///
    /// "Implementations must synthesize a Status & Status-Message to propagate to the
    /// application layer when this occurs."
    pub fn from_http_status(status: u16) -> Code {
        match status {
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502 | 503 | 504 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }
}

impl From<i32> for Code {
    fn from(v: i32) -> Code {
        Code::from_i32(v)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of a call: a code, a human-readable message, optional opaque details and
/// trailing metadata. Plain data; [`Status::write_trailers`] and
/// [`Status::from_trailers`] convert it to and from the wire.
///
/// The fields live behind one `Box` so that `Result<T, Status>`, returned all over
/// the call path, stays pointer-sized on the error side instead of ~170 bytes.
#[derive(Clone)]
pub struct Status(Box<Inner>);

#[derive(Clone, Debug)]
struct Inner {
    /// The status code.
    code: Code,
    /// Developer-facing message, unencoded (arbitrary Unicode).
    message: String,
    /// Opaque `grpc-status-details-bin` payload, decoded from base64; empty if none.
    details: Bytes,
    /// Custom trailing metadata sent alongside the status.
    metadata: MetadataMap,
}

macro_rules! status_constructors {
    ($($(#[$doc:meta])* $name:ident => $code:ident,)*) => {
        $(
            $(#[$doc])*
            pub fn $name(message: impl Into<String>) -> Status {
                Status::new(Code::$code, message)
            }
        )*
    };
}

impl Status {
    /// A status with `code` and `message`, no details and no metadata.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status(Box::new(Inner {
            code,
            message: message.into(),
            details: Bytes::new(),
            metadata: MetadataMap::new(),
        }))
    }

    /// The successful status: code OK, empty message.
    pub fn ok() -> Status {
        Status::new(Code::Ok, "")
    }

    status_constructors! {
        /// CANCELLED with `message`.
        cancelled => Cancelled,
        /// UNKNOWN with `message`.
        unknown => Unknown,
        /// INVALID_ARGUMENT with `message`.
        invalid_argument => InvalidArgument,
        /// DEADLINE_EXCEEDED with `message`.
        deadline_exceeded => DeadlineExceeded,
        /// NOT_FOUND with `message`.
        not_found => NotFound,
        /// ALREADY_EXISTS with `message`.
        already_exists => AlreadyExists,
        /// PERMISSION_DENIED with `message`.
        permission_denied => PermissionDenied,
        /// RESOURCE_EXHAUSTED with `message`.
        resource_exhausted => ResourceExhausted,
        /// FAILED_PRECONDITION with `message`.
        failed_precondition => FailedPrecondition,
        /// ABORTED with `message`.
        aborted => Aborted,
        /// OUT_OF_RANGE with `message`.
        out_of_range => OutOfRange,
        /// UNIMPLEMENTED with `message`.
        unimplemented => Unimplemented,
        /// INTERNAL with `message`.
        internal => Internal,
        /// UNAVAILABLE with `message`.
        unavailable => Unavailable,
        /// DATA_LOSS with `message`.
        data_loss => DataLoss,
        /// UNAUTHENTICATED with `message`.
        unauthenticated => Unauthenticated,
    }

    /// The status synthesised for a response without `grpc-status`, from its HTTP
    /// status code (see [`Code::from_http_status`]).
    pub fn from_http_status(status: u16) -> Status {
        Status::new(
            Code::from_http_status(status),
            format!("received HTTP status {status} without grpc-status"),
        )
    }

    /// Attaches opaque details, sent as `grpc-status-details-bin`.
    pub fn with_details(mut self, details: Bytes) -> Self {
        self.0.details = details;
        self
    }

    /// Attaches trailing metadata.
    pub fn with_metadata(mut self, metadata: MetadataMap) -> Self {
        self.0.metadata = metadata;
        self
    }

    /// The status code.
    pub fn code(&self) -> Code {
        self.0.code
    }

    /// The message, decoded.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The opaque details; empty when there are none.
    pub fn details(&self) -> &Bytes {
        &self.0.details
    }

    /// The trailing metadata.
    pub fn metadata(&self) -> &MetadataMap {
        &self.0.metadata
    }

    /// The trailing metadata, to add entries.
    pub fn metadata_mut(&mut self) -> &mut MetadataMap {
        &mut self.0.metadata
    }

    /// Writes `grpc-status`, `grpc-message` (percent-encoded, omitted when empty),
    /// `grpc-status-details-bin` (unpadded base64, omitted when empty) and the
    /// status' metadata into a trailers (or Trailers-Only) header map.
    pub fn write_trailers(&self, dst: &mut HeaderMap) {
        dst.insert(GRPC_STATUS, HeaderValue::from(self.0.code as i32));
        if !self.0.message.is_empty() {
            // The encoded form only contains bytes 0x20..=0x7E, which are always a
            // valid header value; the `if let` only avoids an unwrap.
            if let Ok(value) = HeaderValue::from_str(&encode_grpc_message(&self.0.message)) {
                dst.insert(GRPC_MESSAGE, value);
            }
        }
        if !self.0.details.is_empty() {
            // Base64 output is always a valid header value, as above.
            if let Ok(value) = HeaderValue::from_str(&BASE64.encode(&self.0.details)) {
                dst.insert(GRPC_STATUS_DETAILS_BIN, value);
            }
        }
        self.0.metadata.write_headers(dst);
    }

    /// Reads a status back from trailers; `None` if there is no `grpc-status` (then
    /// use [`Status::from_http_status`]).
    ///
    /// Never fails: an unknown code is UNKNOWN, bad message escapes are kept
    /// literally, details that are not valid base64 are dropped (the caller may log
    /// it: they are present in the map but `details()` is empty). Every non-reserved
    /// header becomes metadata.
    pub fn from_trailers(src: &HeaderMap) -> Option<Status> {
        let code = Code::from_bytes(src.get(GRPC_STATUS)?.as_bytes());
        let message = src
            .get(GRPC_MESSAGE)
            .map(|v| decode_grpc_message(v.as_bytes()))
            .unwrap_or_default();
        let details = src
            .get(GRPC_STATUS_DETAILS_BIN)
            .and_then(|v| BASE64.decode(v.as_bytes()).ok())
            .map(Bytes::from)
            .unwrap_or_default();
        Some(Status(Box::new(Inner {
            code,
            message,
            details,
            metadata: MetadataMap::from_headers(src),
        })))
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Status")
            .field("code", &self.0.code)
            .field("message", &self.0.message)
            .field("details", &self.0.details)
            .field("metadata", &self.0.metadata)
            .finish()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.code)?;
        if !self.0.message.is_empty() {
            write!(f, ": {}", self.0.message)?;
        }
        if !self.0.details.is_empty() {
            write!(f, " ({} bytes of details)", self.0.details.len())?;
        }
        Ok(())
    }
}

impl std::error::Error for Status {}

/// Whether `b` may appear in `grpc-message` as itself.
///
/// "Percent-Byte-Unencoded → 1*( %x20-%x24 / %x26-%x7E ) ; space and VCHAR, except %"
fn is_unreserved(b: u8) -> bool {
    matches!(b, 0x20..=0x24 | 0x26..=0x7E)
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Percent-encodes a status message for `grpc-message`.
///
/// "The value portion of Status-Message is conceptually a Unicode string description
/// of the error, physically encoded as UTF-8 followed by percent-encoding." Every
/// UTF-8 byte outside 0x20-0x7E, and `%` itself, becomes `%XX` with upper-case hex
/// ("Percent-Byte-Encoded → "%" 2HEXDIGIT ; 0-9 A-F"). Borrowed when nothing needs
/// escaping, which is the common case.
pub fn encode_grpc_message(msg: &str) -> Cow<'_, str> {
    if msg.bytes().all(is_unreserved) {
        return Cow::Borrowed(msg);
    }
    let mut out = String::with_capacity(msg.len().saturating_mul(3));
    for b in msg.bytes() {
        if is_unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
            out.push(char::from(HEX_UPPER[usize::from(b & 0x0F)]));
        }
    }
    Cow::Owned(out)
}

/// Decodes a received `grpc-message`. Never fails.
///
/// "When decoding invalid values, implementations MUST NOT error or throw away the
/// message." A `%` not followed by two hex digits (either case) is kept as-is, and
/// decoded bytes that are not valid UTF-8 become U+FFFD.
pub fn decode_grpc_message(raw: &[u8]) -> String {
    if !raw.contains(&b'%') {
        return String::from_utf8_lossy(raw).into_owned();
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some((&b, tail)) = rest.split_first() {
        match (b, escaped_byte(tail)) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                rest = tail.get(2..).unwrap_or_default();
            }
            _ => {
                out.push(b);
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The byte named by the two hex digits at the start of `tail` (what follows a `%`).
fn escaped_byte(tail: &[u8]) -> Option<u8> {
    let &[hi, lo] = tail.first_chunk::<2>()?;
    Some(hex_value(hi)? << 4 | hex_value(lo)?)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_i32_covers_all_codes_and_unknown() {
        for v in 0..=16 {
            assert_eq!(Code::from_i32(v) as i32, v);
        }
        for v in [-1, 17, 100, i32::MIN, i32::MAX] {
            assert_eq!(Code::from_i32(v), Code::Unknown, "{v}");
        }
    }

    #[test]
    fn from_bytes_edge_cases() {
        let cases: &[(&[u8], Code)] = &[
            (b"0", Code::Ok),
            (b"5", Code::NotFound),
            (b"16", Code::Unauthenticated),
            (b"17", Code::Unknown),
            (b"", Code::Unknown),
            (b"-1", Code::Unknown),
            (b"+1", Code::Unknown),
            (b" 1", Code::Unknown),
            (b"1 ", Code::Unknown),
            (b"1a", Code::Unknown),
            (b"0x1", Code::Unknown),
            (b"\xff", Code::Unknown),
            (b"00", Code::Ok),
            (b"013", Code::Internal),
            (b"2147483647", Code::Unknown),
            (b"2147483648", Code::Unknown), // i32 overflow
            (b"99999999999999999999999999999999", Code::Unknown), // u128 overflow
        ];
        for (input, want) in cases {
            assert_eq!(Code::from_bytes(input), *want, "{:?}", input);
        }
    }

    #[test]
    fn code_names() {
        assert_eq!(Code::Ok.as_str(), "OK");
        assert_eq!(Code::DeadlineExceeded.as_str(), "DEADLINE_EXCEEDED");
        assert_eq!(Code::Unauthenticated.to_string(), "UNAUTHENTICATED");
    }

    #[test]
    fn http_status_mapping() {
        let cases = [
            (400, Code::Internal),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (404, Code::Unimplemented),
            (429, Code::Unavailable),
            (502, Code::Unavailable),
            (503, Code::Unavailable),
            (504, Code::Unavailable),
            (200, Code::Unknown),
            (500, Code::Unknown),
            (415, Code::Unknown),
        ];
        for (http, want) in cases {
            assert_eq!(Code::from_http_status(http), want, "{http}");
        }
        assert_eq!(Status::from_http_status(503).code(), Code::Unavailable);
    }

    #[test]
    fn result_with_status_stays_small() {
        assert_eq!(std::mem::size_of::<Status>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn named_constructors() {
        let s = Status::not_found("room x");
        assert_eq!((s.code(), s.message()), (Code::NotFound, "room x"));
        assert_eq!(Status::ok().code(), Code::Ok);
        assert_eq!(Status::unauthenticated("").code(), Code::Unauthenticated);
        assert_eq!(Status::data_loss("").code(), Code::DataLoss);
    }

    /// (unencoded message, grpc-message on the wire)
    const MESSAGE_CASES: &[(&str, &str)] = &[
        ("", ""),
        ("Hello", "Hello"),
        ("room not found", "room not found"),
        // '%' itself must be escaped, or the receiver would decode "%41" as "A"
        ("100%", "100%25"),
        ("%41", "%2541"),
        // control characters are outside 0x20-0x7E
        ("a\tb\nc", "a%09b%0Ac"),
        ("nul\0", "nul%00"),
        ("del\x7f", "del%7F"),
        // all other printable ASCII passes through, including ~ and space
        (
            " !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~",
            " !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~",
        ),
        // non-ASCII: the UTF-8 bytes, upper-case hex
        ("é", "%C3%A9"),
        ("日本", "%E6%97%A5%E6%9C%AC"),
        ("🙂!", "%F0%9F%99%82!"),
    ];

    #[test]
    fn grpc_message_encode_table() {
        for (plain, wire) in MESSAGE_CASES {
            assert_eq!(encode_grpc_message(plain), *wire, "{plain:?}");
            assert_eq!(decode_grpc_message(wire.as_bytes()), *plain, "{wire:?}");
        }
        assert!(matches!(encode_grpc_message("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn grpc_message_decode_is_lenient() {
        let cases: &[(&[u8], &str)] = &[
            (b"%", "%"),                     // lone %
            (b"50%", "50%"),                 // % at end
            (b"%4", "%4"),                   // one hex digit
            (b"%zz", "%zz"),                 // not hex
            (b"%%41", "%A"),                 // first % kept, second is an escape
            (b"%c3%a9", "é"),                // lower-case hex accepted
            (b"%C3", "\u{FFFD}"),            // truncated UTF-8 sequence
            (b"%FF%FE", "\u{FFFD}\u{FFFD}"), // never valid UTF-8
            (b"raw \xc3\xa9", "raw é"),      // raw UTF-8 (not spec-compliant) survives
            (b"raw \xff", "raw \u{FFFD}"),
        ];
        for (wire, want) in cases {
            assert_eq!(decode_grpc_message(wire), *want, "{wire:?}");
        }
    }

    #[test]
    fn trailers_round_trip() {
        let mut md = MetadataMap::new();
        md.insert("retry-after", "5").unwrap();
        let status = Status::unavailable("server 50% busy ✓")
            .with_details(Bytes::from_static(b"\x08\x0e\x12\x04busy"))
            .with_metadata(md);
        let mut trailers = HeaderMap::new();
        status.write_trailers(&mut trailers);

        assert_eq!(trailers[GRPC_STATUS], "14");
        assert_eq!(trailers[GRPC_MESSAGE], "server 50%25 busy %E2%9C%93");
        // 08 0e 12 04 "busy" in base64, without '=' padding
        assert_eq!(trailers[GRPC_STATUS_DETAILS_BIN], "CA4SBGJ1c3k");
        assert_eq!(trailers["retry-after"], "5");

        let back = Status::from_trailers(&trailers).unwrap();
        assert_eq!(back.code(), Code::Unavailable);
        assert_eq!(back.message(), "server 50% busy ✓");
        assert_eq!(back.details(), &b"\x08\x0e\x12\x04busy"[..]);
        assert_eq!(back.metadata().get("retry-after"), Some("5"));
        assert_eq!(back.metadata().len(), 1, "grpc-* trailers are not metadata");
    }

    #[test]
    fn ok_status_writes_only_grpc_status() {
        let mut trailers = HeaderMap::new();
        Status::ok().write_trailers(&mut trailers);
        assert_eq!(trailers.len(), 1);
        assert_eq!(trailers[GRPC_STATUS], "0");
    }

    #[test]
    fn from_trailers_without_grpc_status_is_none() {
        let mut trailers = HeaderMap::new();
        trailers.insert(GRPC_MESSAGE, HeaderValue::from_static("oops"));
        assert!(Status::from_trailers(&trailers).is_none());
    }

    #[test]
    fn from_trailers_accepts_padded_details_and_drops_bad_ones() {
        let mut trailers = HeaderMap::new();
        trailers.insert(GRPC_STATUS, HeaderValue::from_static("3"));
        // "hi" padded: aGk=
        trailers.insert(GRPC_STATUS_DETAILS_BIN, HeaderValue::from_static("aGk="));
        let s = Status::from_trailers(&trailers).unwrap();
        assert_eq!(s.details(), &b"hi"[..]);

        for bad in ["a", "!!!!", "aGk==="] {
            trailers.insert(GRPC_STATUS_DETAILS_BIN, HeaderValue::from_static(bad));
            let s = Status::from_trailers(&trailers).unwrap();
            assert_eq!(s.code(), Code::InvalidArgument);
            assert!(s.details().is_empty(), "{bad}");
        }
    }

    #[test]
    fn from_trailers_unknown_code() {
        let mut trailers = HeaderMap::new();
        trailers.insert(GRPC_STATUS, HeaderValue::from_static("42"));
        assert_eq!(
            Status::from_trailers(&trailers).unwrap().code(),
            Code::Unknown
        );
    }
}
