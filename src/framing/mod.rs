//! gRPC's wire format, and nothing else: the bytes that travel inside an HTTP/2
//! stream and the header values that travel beside them.
//!
//! A gRPC call is one HTTP/2 stream. This module knows how to read and write what
//! goes *into* that stream; it does not know what a stream, a socket or a future is.
//! The `server` and `client` layers own the `h2` streams, push every DATA frame they
//! receive into a [`BytesMut`](bytes::BytesMut) and ask a [`Decoder`] for messages;
//! they turn [`Status`] and [`MetadataMap`] into header blocks with the helpers here.
//!
//! ```text
//!   HEADERS  :method POST, :path /pkg.Svc/Method, content-type application/grpc,
//!            grpc-timeout 1S (timeout.rs), grpc-encoding gzip (compression.rs),
//!            custom-key value, trace-bin AAEC (metadata.rs)
//!   DATA     +---+---------------+------------------+---+-------...
//!            | F |  Length (BE)  | Message ...      | F |  Length  ...   (message.rs,
//!            +---+---------------+------------------+---+-------...     decoder.rs,
//!             1 B      4 B          Length bytes                        encoder.rs)
//!   HEADERS  grpc-status 0, grpc-message ..., grpc-status-details-bin ... (status.rs)
//! ```
//!
//! Everything here is pure: `&[u8]`/`Buf` in, `Result<Option<T>, E>` out, where
//! `Ok(None)` means "not enough bytes yet" (a normal state of a byte stream, not an
//! error), and encoders write into a `BufMut`. Errors are plain enums; each has one
//! `From<..> for Status` that decides which gRPC code the peer sees.
//!
//! # Layout
//!
//! * [`message`]: the 5-byte Length-Prefixed-Message prefix.
//! * [`decoder`]: incremental decoder turning DATA frame bytes into messages, with the
//!   receive size limit.
//! * [`decode_error`]: [`DecodeError`], what the prefix parser, the decompressor and
//!   the decoder reject, and the gRPC code each becomes.
//! * [`encoder`]: writes one message (optionally compressed) with the send size limit.
//! * [`compression`]: `grpc-encoding` values (identity, gzip), capped decompression.
//! * [`status`]: `Code`, `Status`, and the `grpc-status`/`grpc-message`/
//!   `grpc-status-details-bin` trailers; HTTP status to `Code`.
//! * [`metadata`]: custom metadata (ASCII and `-bin` keys), reserved headers kept out.
//! * [`timeout`]: the `grpc-timeout` header.
//! * [`grpc_web`]: gRPC-Web's differences: trailers as a body frame, base64
//!   text mode, its content types.
//!
//! The normative text quoted in comments throughout is gRPC's
//! [PROTOCOL-HTTP2.md](https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md).

pub mod compression;
pub mod decode_error;
pub mod decoder;
pub mod encoder;
pub mod grpc_web;
pub mod message;
pub mod metadata;
pub mod status;
pub mod timeout;

pub use compression::{
    ACCEPT_ENCODING, Encoding, GRPC_ACCEPT_ENCODING, GRPC_ENCODING, UnsupportedEncoding, compress,
    decompress,
};
pub use decode_error::DecodeError;
pub use decoder::{DEFAULT_MAX_RECV_MESSAGE_SIZE, Decoder};
pub use encoder::{DEFAULT_MAX_SEND_MESSAGE_SIZE, EncodeError, encode_message, encode_with};
pub use message::{CONTENT_TYPE_GRPC, PREFIX_LEN, Prefix};
pub use metadata::{MetadataError, MetadataMap};
pub use status::{
    Code, GRPC_MESSAGE, GRPC_STATUS, GRPC_STATUS_DETAILS_BIN, Status, decode_grpc_message,
    encode_grpc_message,
};
pub use timeout::{GRPC_TIMEOUT, TimeoutError, format_timeout, parse_timeout};
