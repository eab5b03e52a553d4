//! Why received bytes are not a valid sequence of gRPC messages: [`DecodeError`],
//! and the one place that decides which gRPC code the peer sees for each.
//!
//! The error has a file of its own because three files produce it: the prefix
//! parser ([`message`](super::message): a Compressed-Flag other than 0 or 1), the
//! decompressor ([`compression`](super::compression): a corrupt or oversized
//! payload) and the [`decoder`](super::decoder) that drives both (limits, a stream
//! ending mid-message). Living in the decoder, it made `message.rs` and
//! `compression.rs` import the file that imports them; here it depends only on
//! [`status`](super::status).

use std::fmt;

use super::status::Status;

/// Why a received byte stream is not a valid sequence of gRPC messages.
///
/// These are plain facts about the bytes; `From<DecodeError> for Status` is the one
/// place that decides which gRPC code the peer gets for each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The Compressed-Flag byte was neither 0 nor 1.
    InvalidFlag(u8),
    /// The declared message length exceeds the receive limit.
    TooLarge { len: usize, limit: usize },
    /// Compressed-Flag 1, but the call negotiated no `grpc-encoding` (identity).
    CompressedWithoutEncoding,
    /// The compressed payload could not be decompressed.
    Decompress(String),
    /// The payload decompresses to more than the receive limit.
    DecompressedTooLarge { limit: usize },
    /// The stream ended in the middle of a message; `buffered` bytes of it (prefix
    /// included) had arrived.
    Truncated { buffered: usize },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::InvalidFlag(flag) => {
                write!(f, "invalid compressed flag {flag} in message prefix")
            }
            DecodeError::TooLarge { len, limit } => write!(
                f,
                "received message larger than max ({len} vs. {limit} bytes)"
            ),
            DecodeError::CompressedWithoutEncoding => {
                f.write_str("compressed flag set but no grpc-encoding was negotiated for the call")
            }
            DecodeError::Decompress(reason) => {
                write!(f, "failed to decompress message: {reason}")
            }
            DecodeError::DecompressedTooLarge { limit } => write!(
                f,
                "received message after decompression larger than max ({limit} bytes)"
            ),
            DecodeError::Truncated { buffered } => write!(
                f,
                "stream ended in the middle of a message ({buffered} bytes of it received)"
            ),
        }
    }
}

impl std::error::Error for DecodeError {}

impl From<DecodeError> for Status {
    fn from(err: DecodeError) -> Status {
        let message = err.to_string();
        match err {
            // Limits are the receiver's resource policy, not a broken peer.
            DecodeError::TooLarge { .. } | DecodeError::DecompressedTooLarge { .. } => {
                Status::resource_exhausted(message)
            }
            // The rest means the framing itself is corrupt.
            DecodeError::InvalidFlag(_)
            | DecodeError::CompressedWithoutEncoding
            | DecodeError::Decompress(_)
            | DecodeError::Truncated { .. } => Status::internal(message),
        }
    }
}
