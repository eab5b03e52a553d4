//! The incremental message decoder: bytes of DATA frames in, whole messages out.
//!
//! ```text
//!   DATA frame 1           DATA frame 2                  DATA frame 3
//!  +---------------------+-----------------------------+--------------------+
//!  |00 00000003 "abc"    |00 0000000a "0123456"        |"789" 00 00000000  |
//!  +---------------------+-----------------------------+--------------------+
//!   \____message 1_____/  \________message 2, split over two frames___/ \_____/
//!                                                                message 3: empty
//! ```
//!
//! "DATA frame boundaries have no relation to Length-Prefixed-Message boundaries and
//! implementations should make no assumptions about their alignment." A sender's
//! HTTP/2 library cuts DATA frames wherever flow control, its maximum frame size or
//! its write buffer happen to end, so the receiver must treat the stream as a byte
//! stream. The caller appends each DATA frame to one [`BytesMut`] and calls
//! [`Decoder::decode`] until it returns `Ok(None)` ("the next message is not complete
//! yet") — that is the normal way of waiting for more frames, not an error.
//!
//! The decoder is a two-state machine so that the 5-byte prefix is parsed once per
//! message, however many frames the body needs:
//!
//! ```text
//!            prefix complete, limits ok
//!   ReadPrefix ------------------------> ReadBody { compressed, len }
//!       ^                                      |
//!       +------- len bytes buffered: ----------+
//!                split them off, yield message
//! ```
//!
//! The declared length is checked against the receive limit *before* any memory is
//! reserved for it: the length is chosen by the peer, and trusting it would let five
//! bytes make us allocate 4 GiB.

use bytes::{Buf, Bytes, BytesMut};

use super::compression::{Encoding, decompress};
pub use super::decode_error::DecodeError;
use super::message::{PREFIX_LEN, Prefix};

/// Default limit on one received message: 4 MiB, gRPC's usual default. It applies to
/// the length on the wire and again to the decompressed size.
pub const DEFAULT_MAX_RECV_MESSAGE_SIZE: usize = 4 * 1024 * 1024;

/// How much of a declared body the decoder reserves up front. Reserving the whole
/// (already limit-checked) length would avoid reallocations, but would let a peer that
/// sends only a prefix pin the full limit per stream; this keeps the up-front cost to
/// about one flow-control window while the buffer still grows by doubling after it.
const MAX_EAGER_RESERVE: usize = 64 * 1024;

/// Where the decoder is within the current message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for the 5-byte prefix of the next message.
    ReadPrefix,
    /// The prefix was read and consumed; waiting for `len` body bytes.
    ReadBody { compressed: bool, len: usize },
}

/// Incremental decoder for one direction of one call.
///
/// It holds no bytes itself: the caller owns the [`BytesMut`] the DATA frames are
/// appended to, which keeps the decoder free of I/O and lets the caller decide when to
/// read more. After any `Err` the stream is corrupt and should be abandoned.
#[derive(Debug)]
pub struct Decoder {
    /// The call's negotiated `grpc-encoding`; `Identity` when the header was absent.
    encoding: Encoding,
    /// Receive limit, applied to the wire length and to the decompressed length.
    max_message_size: usize,
    /// Progress through the current message.
    state: State,
    /// Whether the last message `decode` returned had Compressed-Flag 1.
    last_compressed: bool,
}

impl Decoder {
    /// A decoder for a call whose `grpc-encoding` is `encoding` (use
    /// [`Encoding::Identity`] when the header is absent), with the receive limit
    /// [`DEFAULT_MAX_RECV_MESSAGE_SIZE`].
    pub fn new(encoding: Encoding) -> Decoder {
        Decoder {
            encoding,
            max_message_size: DEFAULT_MAX_RECV_MESSAGE_SIZE,
            state: State::ReadPrefix,
            last_compressed: false,
        }
    }

    /// Sets the receive limit for one message, compressed or not.
    pub fn max_message_size(&mut self, limit: usize) -> &mut Self {
        self.max_message_size = limit;
        self
    }

    /// The encoding compressed messages are expected in.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Whether the last message [`decode`](Decoder::decode) returned arrived with
    /// Compressed-Flag 1 (`false` before the first message). A sender may compress
    /// some messages of a call and not others; interop tests check which.
    pub fn last_compressed(&self) -> bool {
        self.last_compressed
    }

    /// Takes one message out of the front of `buf`, or `Ok(None)` when the next message
    /// is not complete yet (append the next DATA frame and call again).
    ///
    /// Consumed bytes are removed from `buf`; a partial message stays, except for a
    /// prefix that has already been read. An uncompressed payload is
    /// `buf.split_to(len).freeze()`: it shares `buf`'s allocation, no byte is copied.
    /// A compressed one is decompressed under the same limit.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, DecodeError> {
        if let State::ReadPrefix = self.state {
            let Some(prefix) = Prefix::parse(buf)? else {
                return Ok(None);
            };
            // A u32 always fits in usize on the 32- and 64-bit targets we build for;
            // saturate rather than assume, so the limit check below still rejects it.
            let len = usize::try_from(prefix.len).unwrap_or(usize::MAX);
            if len > self.max_message_size {
                return Err(DecodeError::TooLarge {
                    len,
                    limit: self.max_message_size,
                });
            }
            if prefix.compressed && self.encoding == Encoding::Identity {
                // "If the Message-Encoding header is omitted then the Compressed-Flag
                // must be 0."
                return Err(DecodeError::CompressedWithoutEncoding);
            }
            buf.advance(PREFIX_LEN);
            let missing = len.saturating_sub(buf.len());
            buf.reserve(missing.min(MAX_EAGER_RESERVE));
            self.state = State::ReadBody {
                compressed: prefix.compressed,
                len,
            };
        }

        let State::ReadBody { compressed, len } = self.state else {
            return Ok(None);
        };
        if buf.len() < len {
            return Ok(None);
        }
        let payload = buf.split_to(len).freeze();
        self.state = State::ReadPrefix;
        self.last_compressed = compressed;
        if compressed {
            // "A Compressed-Flag value of 1 indicates that the binary octet sequence of
            // Message is compressed using the mechanism declared by the
            // Message-Encoding header."
            decompress(self.encoding, &payload, self.max_message_size).map(Some)
        } else {
            Ok(Some(payload))
        }
    }

    /// Checks that the stream ended on a message boundary. Call it when the peer ends
    /// the stream (END_STREAM), after `decode` returned `Ok(None)`.
    ///
    /// `Err(Truncated)` when `buf` still holds part of a message, or a prefix was read
    /// whose body never came.
    pub fn finish(&self, buf: &BytesMut) -> Result<(), DecodeError> {
        match self.state {
            State::ReadPrefix if buf.is_empty() => Ok(()),
            State::ReadPrefix => Err(DecodeError::Truncated {
                buffered: buf.len(),
            }),
            State::ReadBody { .. } => Err(DecodeError::Truncated {
                buffered: PREFIX_LEN.saturating_add(buf.len()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::status::{Code, Status};

    fn decode_all(decoder: &mut Decoder, buf: &mut BytesMut) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Some(msg) = decoder.decode(buf).unwrap() {
            out.push(msg);
        }
        out
    }

    #[test]
    fn one_message_in_one_frame() {
        let mut decoder = Decoder::new(Encoding::Identity);
        // flag=0 | len=0x00000003 | "abc"
        let mut buf = BytesMut::from(&b"\x00\x00\x00\x00\x03abc"[..]);
        assert_eq!(decode_all(&mut decoder, &mut buf), vec![&b"abc"[..]]);
        assert!(buf.is_empty());
        decoder.finish(&buf).unwrap();
    }

    #[test]
    fn many_messages_in_one_frame() {
        let mut decoder = Decoder::new(Encoding::Identity);
        let mut buf = BytesMut::new();
        // flag=0 | len=0x00000001 | "x"
        buf.extend_from_slice(b"\x00\x00\x00\x00\x01x");
        // flag=0 | len=0x00000000 | (empty message: a valid, zero-length protobuf)
        buf.extend_from_slice(b"\x00\x00\x00\x00\x00");
        // flag=0 | len=0x00000002 | "yz"
        buf.extend_from_slice(b"\x00\x00\x00\x00\x02yz");
        assert_eq!(
            decode_all(&mut decoder, &mut buf),
            vec![&b"x"[..], &b""[..], &b"yz"[..]]
        );
        decoder.finish(&buf).unwrap();
    }

    #[test]
    fn message_split_over_many_frames_byte_by_byte() {
        let mut decoder = Decoder::new(Encoding::Identity);
        // flag=0 | len=0x00000005 | "hello" — delivered one byte per "DATA frame"
        let wire = b"\x00\x00\x00\x00\x05hello";
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for byte in wire {
            buf.extend_from_slice(&[*byte]);
            if let Some(msg) = decoder.decode(&mut buf).unwrap() {
                out.push(msg);
            }
        }
        assert_eq!(out, vec![&b"hello"[..]]);
        decoder.finish(&buf).unwrap();
    }

    #[test]
    fn uncompressed_payload_is_not_copied() {
        let mut decoder = Decoder::new(Encoding::Identity);
        // flag=0 | len=0x00000004 | "data"
        let mut buf = BytesMut::from(&b"\x00\x00\x00\x00\x04data"[..]);
        let body_addr = buf.as_ptr().wrapping_add(PREFIX_LEN);
        let msg = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!(msg.as_ptr(), body_addr, "payload must share the buffer");
    }

    #[test]
    fn length_over_limit_is_rejected_before_the_body_arrives() {
        let mut decoder = Decoder::new(Encoding::Identity);
        decoder.max_message_size(4);
        // flag=0 | len=0x00000005 | (body not sent yet)
        let mut buf = BytesMut::from(&b"\x00\x00\x00\x00\x05"[..]);
        let err = decoder.decode(&mut buf).unwrap_err();
        assert_eq!(err, DecodeError::TooLarge { len: 5, limit: 4 });
        assert_eq!(Status::from(err).code(), Code::ResourceExhausted);
        // Nothing was reserved for the declared body.
        assert!(buf.capacity() < 1024);
    }

    #[test]
    fn huge_declared_length_does_not_allocate() {
        let mut decoder = Decoder::new(Encoding::Identity);
        // flag=0 | len=0xFFFFFFFF (4 GiB - 1)
        let mut buf = BytesMut::from(&b"\x00\xFF\xFF\xFF\xFF"[..]);
        assert!(matches!(
            decoder.decode(&mut buf),
            Err(DecodeError::TooLarge {
                len: 0xFFFF_FFFF,
                limit: DEFAULT_MAX_RECV_MESSAGE_SIZE
            })
        ));
    }

    #[test]
    fn message_exactly_at_limit_is_accepted() {
        let mut decoder = Decoder::new(Encoding::Identity);
        decoder.max_message_size(3);
        // flag=0 | len=0x00000003 | "abc"
        let mut buf = BytesMut::from(&b"\x00\x00\x00\x00\x03abc"[..]);
        assert_eq!(decoder.decode(&mut buf).unwrap().unwrap(), &b"abc"[..]);
    }

    #[test]
    fn compressed_flag_without_encoding_is_internal() {
        let mut decoder = Decoder::new(Encoding::Identity);
        // flag=1 | len=0x00000003 | "abc" — but the call has no grpc-encoding
        let mut buf = BytesMut::from(&b"\x01\x00\x00\x00\x03abc"[..]);
        let err = decoder.decode(&mut buf).unwrap_err();
        assert_eq!(err, DecodeError::CompressedWithoutEncoding);
        assert_eq!(Status::from(err).code(), Code::Internal);
    }

    #[test]
    fn invalid_flag_is_internal() {
        let mut decoder = Decoder::new(Encoding::Gzip);
        // flag=7 | len=0x00000000
        let mut buf = BytesMut::from(&b"\x07\x00\x00\x00\x00"[..]);
        let err = decoder.decode(&mut buf).unwrap_err();
        assert_eq!(err, DecodeError::InvalidFlag(7));
        assert_eq!(Status::from(err).code(), Code::Internal);
    }

    #[test]
    fn gzip_message_is_decompressed() {
        let mut payload = BytesMut::new();
        crate::framing::compression::compress(Encoding::Gzip, b"hello gzip", &mut payload).unwrap();
        let mut buf = BytesMut::new();
        // flag=1 | len=<gzip length> | <gzip member of "hello gzip">
        buf.extend_from_slice(&[0x01]);
        buf.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
        buf.extend_from_slice(&payload);
        // flag=0 | len=0x00000002 | "ok" — uncompressed messages may be mixed in
        buf.extend_from_slice(b"\x00\x00\x00\x00\x02ok");
        let mut decoder = Decoder::new(Encoding::Gzip);
        assert_eq!(
            decoder.decode(&mut buf).unwrap().unwrap(),
            &b"hello gzip"[..]
        );
        assert!(decoder.last_compressed());
        assert_eq!(decoder.decode(&mut buf).unwrap().unwrap(), &b"ok"[..]);
        assert!(!decoder.last_compressed());
    }

    #[test]
    fn corrupt_gzip_is_internal() {
        let mut decoder = Decoder::new(Encoding::Gzip);
        // flag=1 | len=0x00000004 | "junk" (not a gzip header)
        let mut buf = BytesMut::from(&b"\x01\x00\x00\x00\x04junk"[..]);
        let err = decoder.decode(&mut buf).unwrap_err();
        assert!(matches!(err, DecodeError::Decompress(_)));
        assert_eq!(Status::from(err).code(), Code::Internal);
    }

    #[test]
    fn finish_reports_truncation() {
        let mut decoder = Decoder::new(Encoding::Identity);
        // flag=0 | len=0x0000 (prefix cut after 3 bytes)
        let buf = BytesMut::from(&b"\x00\x00\x00"[..]);
        assert_eq!(
            decoder.finish(&buf),
            Err(DecodeError::Truncated { buffered: 3 })
        );

        // flag=0 | len=0x00000004 | "ab" (2 of 4 body bytes)
        let mut buf = BytesMut::from(&b"\x00\x00\x00\x00\x04ab"[..]);
        assert_eq!(decoder.decode(&mut buf).unwrap(), None);
        let err = decoder.finish(&buf).unwrap_err();
        assert_eq!(err, DecodeError::Truncated { buffered: 7 });
        assert_eq!(Status::from(err).code(), Code::Internal);
    }

    #[test]
    fn finish_on_empty_stream_is_ok() {
        let decoder = Decoder::new(Encoding::Identity);
        decoder.finish(&BytesMut::new()).unwrap();
    }
}
