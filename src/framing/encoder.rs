//! Writing messages: one serialised payload in, one Length-Prefixed-Message out.
//!
//! ```text
//!   encode_message(b"abc", None, ..)          00 | 00 00 00 03 | 61 62 63
//!   encode_message(b"abc", Some(Gzip), ..)    01 | 00 00 00 17 | 1f 8b 08 00 ... (23 B)
//!   encode_with(dst, .., |dst| prost_msg.encode(dst))
//!       1. write placeholder                  00 | 00 00 00 00 |
//!       2. caller serialises into dst         00 | 00 00 00 00 | 08 96 01
//!       3. patch the length                   00 | 00 00 00 03 | 08 96 01
//! ```
//!
//! The output is a byte stream, not DATA frames: the caller hands `dst` to `h2`, which
//! cuts it into DATA frames as flow control allows. A message larger than the peer's
//! window is fine; it just spans frames (see [`decoder`](super::decoder)).
//!
//! The send limit applies to the bytes that go on the wire, i.e. after compression.
//! Message-Length is a u32, so nothing above 4 GiB - 1 can be framed at all, whatever
//! the configured limit.

use std::fmt;

use bytes::{BufMut, BytesMut};

use super::compression::{Encoding, compress};
use super::message::{PREFIX_LEN, Prefix};
use super::status::Status;

/// Default send limit: none beyond what Message-Length can express (grpc-go's default).
pub const DEFAULT_MAX_SEND_MESSAGE_SIZE: usize = usize::MAX;

/// Why a message could not be framed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The (possibly compressed) payload is larger than `limit`.
    TooLarge { len: usize, limit: usize },
    /// The compressor failed.
    Compress(String),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::TooLarge { len, limit } => write!(
                f,
                "trying to send message larger than max ({len} vs. {limit} bytes)"
            ),
            EncodeError::Compress(reason) => write!(f, "failed to compress message: {reason}"),
        }
    }
}

impl std::error::Error for EncodeError {}

impl From<EncodeError> for Status {
    fn from(err: EncodeError) -> Status {
        let message = err.to_string();
        match err {
            EncodeError::TooLarge { .. } => Status::resource_exhausted(message),
            EncodeError::Compress(_) => Status::internal(message),
        }
    }
}

/// Appends one Length-Prefixed-Message carrying `payload` (an already serialised
/// protobuf message) to `dst`.
///
/// With `Some(encoding)` other than identity, the payload is compressed straight into
/// `dst` and the Compressed-Flag is 1. On error `dst` is left as it was.
pub fn encode_message(
    payload: &[u8],
    compression: Option<Encoding>,
    max: usize,
    dst: &mut BytesMut,
) -> Result<(), EncodeError> {
    match compression {
        None | Some(Encoding::Identity) => {
            let len = check_len(payload.len(), max)?;
            dst.reserve(PREFIX_LEN.saturating_add(payload.len()));
            Prefix {
                compressed: false,
                len,
            }
            .encode(dst);
            dst.put_slice(payload);
            Ok(())
        }
        Some(encoding) => {
            let start = dst.len();
            dst.put_bytes(0, PREFIX_LEN);
            if let Err(err) = compress(encoding, payload, dst) {
                dst.truncate(start);
                return Err(EncodeError::Compress(err.to_string()));
            }
            finish_frame(dst, start, max, true)
        }
    }
}

/// Appends one uncompressed Length-Prefixed-Message whose payload `write` serialises
/// directly into `dst` (e.g. `|dst| msg.encode(dst)` with prost), so the message is
/// never staged in an intermediate buffer.
///
/// A 5-byte placeholder is written first and patched with the real length afterwards.
/// If the payload exceeds `max`, `dst` is truncated back to where it was.
pub fn encode_with(
    dst: &mut BytesMut,
    max: usize,
    write: impl FnOnce(&mut BytesMut),
) -> Result<(), EncodeError> {
    let start = dst.len();
    dst.put_bytes(0, PREFIX_LEN);
    write(dst);
    finish_frame(dst, start, max, false)
}

/// Checks the payload written after the placeholder at `start` and patches the prefix,
/// or removes the whole unfinished frame.
fn finish_frame(
    dst: &mut BytesMut,
    start: usize,
    max: usize,
    compressed: bool,
) -> Result<(), EncodeError> {
    let payload_len = dst.len().saturating_sub(start.saturating_add(PREFIX_LEN));
    let len = match check_len(payload_len, max) {
        Ok(len) => len,
        Err(err) => {
            dst.truncate(start);
            return Err(err);
        }
    };
    let prefix = Prefix { compressed, len }.to_bytes();
    // The 5 placeholder bytes were written by us at `start`, so this range exists.
    if let Some(slot) = dst.get_mut(start..start.saturating_add(PREFIX_LEN)) {
        slot.copy_from_slice(&prefix);
    }
    Ok(())
}

/// The payload length as a Message-Length, if it is within both the caller's limit and
/// what 4 bytes can say.
fn check_len(len: usize, max: usize) -> Result<u32, EncodeError> {
    if len > max {
        return Err(EncodeError::TooLarge { len, limit: max });
    }
    // "Message-Length → {length of Message}  # encoded as 4 byte unsigned integer"
    u32::try_from(len).map_err(|_| EncodeError::TooLarge {
        len,
        limit: u32::MAX as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::compression::decompress;
    use crate::framing::status::Code;

    #[test]
    fn encodes_uncompressed() {
        let mut dst = BytesMut::new();
        encode_message(b"abc", None, DEFAULT_MAX_SEND_MESSAGE_SIZE, &mut dst).unwrap();
        // flag=0 | len=0x00000003 | "abc"
        assert_eq!(&dst[..], b"\x00\x00\x00\x00\x03abc");
    }

    #[test]
    fn identity_is_uncompressed() {
        let mut dst = BytesMut::new();
        encode_message(b"", Some(Encoding::Identity), 0, &mut dst).unwrap();
        // flag=0 | len=0x00000000 (empty message)
        assert_eq!(&dst[..], b"\x00\x00\x00\x00\x00");
    }

    #[test]
    fn appends_after_existing_bytes() {
        // flag=0 | len=1 | "a"   then   flag=0 | len=1 | "b"
        let mut dst = BytesMut::new();
        encode_message(b"a", None, 10, &mut dst).unwrap();
        encode_message(b"b", None, 10, &mut dst).unwrap();
        assert_eq!(&dst[..], b"\x00\x00\x00\x00\x01a\x00\x00\x00\x00\x01b");
    }

    #[test]
    fn encodes_gzip_with_flag_and_compressed_length() {
        let payload = b"hello hello hello hello hello".as_slice();
        let mut dst = BytesMut::new();
        encode_message(payload, Some(Encoding::Gzip), usize::MAX, &mut dst).unwrap();
        let prefix = Prefix::parse(&dst).unwrap().unwrap();
        // flag=1 | len=<bytes after the prefix> | 1f 8b ...
        assert!(prefix.compressed);
        let body = dst.get(PREFIX_LEN..).unwrap();
        assert_eq!(prefix.len as usize, body.len());
        assert_eq!(decompress(Encoding::Gzip, body, 1024).unwrap(), payload);
    }

    #[test]
    fn too_large_leaves_dst_untouched() {
        let mut dst = BytesMut::from(&b"keep"[..]);
        let err = encode_message(b"abcd", None, 3, &mut dst).unwrap_err();
        assert_eq!(err, EncodeError::TooLarge { len: 4, limit: 3 });
        assert_eq!(Status::from(err).code(), Code::ResourceExhausted);
        assert_eq!(&dst[..], b"keep");

        // The limit applies to the compressed size: incompressible data grows.
        let err = encode_message(b"abcd", Some(Encoding::Gzip), 10, &mut dst).unwrap_err();
        assert!(matches!(err, EncodeError::TooLarge { limit: 10, .. }));
        assert_eq!(&dst[..], b"keep");
    }

    #[test]
    fn encode_with_patches_length() {
        let mut dst = BytesMut::from(&b"xy"[..]);
        encode_with(&mut dst, 100, |dst| dst.put_slice(b"\x08\x96\x01")).unwrap();
        // "xy" | flag=0 | len=0x00000003 | 08 96 01 (protobuf: field 1 = 150)
        assert_eq!(&dst[..], b"xy\x00\x00\x00\x00\x03\x08\x96\x01");
    }

    #[test]
    fn encode_with_over_limit_truncates() {
        let mut dst = BytesMut::from(&b"xy"[..]);
        let err = encode_with(&mut dst, 2, |dst| dst.put_slice(b"abc")).unwrap_err();
        assert_eq!(err, EncodeError::TooLarge { len: 3, limit: 2 });
        assert_eq!(&dst[..], b"xy");
    }
}
