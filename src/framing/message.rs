//! The Length-Prefixed-Message prefix: the 5 bytes in front of every gRPC message.
//!
//! ```text
//!  byte:  0          1    2    3    4         5 ...
//!        +----------+-------------------+-------------------------+
//!        | Flag     | Message-Length    | Message                 |
//!        | 0 or 1   | u32, big endian   | Message-Length bytes    |
//!        +----------+-------------------+-------------------------+
//!
//!  e.g.   00          00 00 00 03          61 62 63        "abc", not compressed
//! ```
//!
//! The prefix is gRPC's own framing *inside* the HTTP/2 DATA stream. It exists
//! because HTTP/2 gives a byte stream per call, not a message stream: DATA frame
//! boundaries are chosen by flow control and by the sender's buffering, so a message
//! may be cut across many frames and one frame may carry several messages. Only this
//! length says where a message ends.
//!
//! This file only reads and writes the 5 bytes. Buffering, size limits and
//! decompression live in [`decoder`](super::decoder) and [`encoder`](super::encoder).

use bytes::BufMut;

use super::decode_error::DecodeError;

/// The `content-type` of a body made of Length-Prefixed-Messages with
/// protobuf inside. PROTOCOL-HTTP2.md: "Content-Type → "content-type"
/// "application/grpc" [("+proto" / "+json" / {custom})]".
pub const CONTENT_TYPE_GRPC: &str = "application/grpc";

/// Size of the prefix: 1 flag byte + 4 length bytes.
pub const PREFIX_LEN: usize = 5;

/// A parsed Length-Prefixed-Message prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    /// The Compressed-Flag: the payload is compressed with the call's `grpc-encoding`.
    pub compressed: bool,
    /// Message-Length: the number of payload bytes that follow the prefix on the wire
    /// (after compression, when `compressed`).
    pub len: u32,
}

impl Prefix {
    /// Reads a prefix from the start of `src`.
    ///
    /// `Ok(None)` when fewer than [`PREFIX_LEN`] bytes are available: the rest of the
    /// prefix is simply still in flight, possibly in the next DATA frame. A flag byte
    /// other than 0 or 1 is `Err(DecodeError::InvalidFlag)`. `src` is not consumed.
    pub fn parse(src: &[u8]) -> Result<Option<Prefix>, DecodeError> {
        let Some(&[flag, l0, l1, l2, l3]) = src.first_chunk::<PREFIX_LEN>() else {
            return Ok(None);
        };
        let compressed = match flag {
            0 => false,
            1 => true,
            // "Compressed-Flag → 0 / 1   # encoded as 1 byte unsigned integer"
            other => return Err(DecodeError::InvalidFlag(other)),
        };
        Ok(Some(Prefix {
            compressed,
            len: u32::from_be_bytes([l0, l1, l2, l3]),
        }))
    }

    /// Writes the 5 prefix bytes.
    pub fn encode(&self, dst: &mut impl BufMut) {
        dst.put_slice(&self.to_bytes());
    }

    /// The 5 prefix bytes as an array: handy to patch a placeholder written before the
    /// payload length was known.
    pub fn to_bytes(&self) -> [u8; PREFIX_LEN] {
        let [l0, l1, l2, l3] = self.len.to_be_bytes();
        [u8::from(self.compressed), l0, l1, l2, l3]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uncompressed_prefix() {
        // flag=0 | len=0x00000003 | "abc"
        let bytes = [0x00, 0x00, 0x00, 0x00, 0x03, b'a', b'b', b'c'];
        let prefix = Prefix::parse(&bytes).unwrap().unwrap();
        assert_eq!(
            prefix,
            Prefix {
                compressed: false,
                len: 3
            }
        );
    }

    #[test]
    fn parses_compressed_prefix_big_endian() {
        // flag=1 | len=0x01020304 (16909060), body not needed to read the prefix
        let bytes = [0x01, 0x01, 0x02, 0x03, 0x04];
        let prefix = Prefix::parse(&bytes).unwrap().unwrap();
        assert!(prefix.compressed);
        assert_eq!(prefix.len, 0x0102_0304);
    }

    #[test]
    fn short_input_needs_more_bytes() {
        // flag=0 | len=0x0000.. (only 2 of 4 length bytes arrived)
        for n in 0..PREFIX_LEN {
            let bytes = [0x00, 0x00, 0x00, 0x00, 0x03];
            assert_eq!(Prefix::parse(&bytes[..n]).unwrap(), None, "{n} bytes");
        }
    }

    #[test]
    fn rejects_flag_other_than_zero_or_one() {
        // flag=2 | len=0x00000000
        let bytes = [0x02, 0x00, 0x00, 0x00, 0x00];
        assert!(matches!(
            Prefix::parse(&bytes),
            Err(DecodeError::InvalidFlag(2))
        ));
        // flag=0x80 (a "reserved bit" some other protocol might set) | len=0
        let bytes = [0x80, 0x00, 0x00, 0x00, 0x00];
        assert!(matches!(
            Prefix::parse(&bytes),
            Err(DecodeError::InvalidFlag(0x80))
        ));
    }

    #[test]
    fn encodes_and_round_trips() {
        let prefix = Prefix {
            compressed: true,
            len: u32::MAX,
        };
        let mut out = Vec::new();
        prefix.encode(&mut out);
        // flag=1 | len=0xFFFFFFFF
        assert_eq!(out, [0x01, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert_eq!(Prefix::parse(&out).unwrap(), Some(prefix));
    }
}
